//! Loopback HTTP benchmark of one `synod serve` node.
//!
//! `cargo bench --bench http_bench` starts the real synod binary on `127.0.0.1:0` with a fresh
//! data directory, drives it over loopback with a lean keep-alive HTTP/1.1 load generator (one
//! connection per simulated client, closed loop: each connection waits for its response before
//! sending the next request) and prints throughput and p50/p99 latency per workload:
//!
//! * `ceiling`: a minimal axum GET handler in a separate process (this binary re-executed with
//!   `SYNOD_BENCH_BASELINE=1`), driven by the same client at the same concurrency. Every other
//!   workload is also shown as a ratio to it: what this machine and load generator can do at all
//!   in the same run.
//! * `register`: `POST /eureka/apps/{APP}` with a ~1 KB JSON instance, distinct ids, expect 204.
//! * `renew`: `PUT /eureka/apps/{APP}/{ID}` on registered instances, expect 200.
//! * `register plain|basic|tls`, `renew plain|basic|tls`: the same on an open node, on a node
//!   with an auth file with every request carrying HTTP Basic credentials (verified once, then
//!   cached), and the latter over HTTPS (keep-alive: one handshake per connection); the three
//!   alternate run by run.
//! * `fetch 1k` / `fetch 10k`: `GET /eureka/apps` (JSON, gzip) with that many instances.
//! * `delta 20`: `GET /eureka/apps/delta` (JSON, gzip) in steady state: 1k instances registered,
//!   20 of them changed within the delta window.
//! * `zk create` / `zk ping`: the same machine's ZooKeeper, standalone (Debian package
//!   `zookeeper`, skipped when it or `java` is missing): one session per connection creating
//!   distinct ephemeral nodes that hold a register body, and session pings. `register` is
//!   judged against `zk create` of the same run; the first run of each gets 5 s more warm-up for
//!   the JVM's compiler.
//!
//! Settings (environment): `SYNOD_BENCH_CONNS` (64), `SYNOD_BENCH_SECS` (5),
//! `SYNOD_BENCH_RUNS` (3), `SYNOD_BENCH_WARMUP_SECS` (1), `SYNOD_BENCH_CLIENT_THREADS` (2),
//! `SYNOD_BENCH_SERVER_LOG` (RUST_LOG for the server, `warn`), `SYNOD_BENCH_ONLY` (comma-separated
//! workload names or prefixes, e.g. `ceiling,renew`; all by default), `SYNOD_BENCH_BIN` (the
//! synod binary to run, for comparing two builds in alternating runs; default: this build's).
//!
//! Without a `--bench` argument (as under `cargo test --all-targets`) it only runs a smoke of a
//! couple of seconds (every workload, tiny registry, 0.2 s each) so test runs stay fast; it fails
//! only on wrong answers. Nothing is asserted about timing: the output is a report.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[path = "common/lean_http.rs"]
mod lean_http;
#[path = "common/proc_stat.rs"]
mod proc_stat;
#[path = "common/secure.rs"]
mod secure;
#[path = "common/zookeeper.rs"]
mod zookeeper;

use bytes::Bytes;
use lean_http::{Conn, Response};
use proc_stat::cpu_seconds;
use tokio::runtime::Runtime;
use zookeeper::Ensemble;

/// Set in the environment of the re-executed child that serves the ceiling handler.
const BASELINE_ENV: &str = "SYNOD_BENCH_BASELINE";

/// Both children announce their address with this prefix on stdout.
const SYNOD_BANNER: &str = "synod listening on http://";
const SYNOD_TLS_BANNER: &str = "synod listening on https://";
const BASELINE_BANNER: &str = "baseline listening on http://";

/// How many distinct applications the instances are spread over, so per-app work in the server
/// looks like a small fleet rather than one giant app or thousands of singletons.
const APPS: usize = 100;

/// Figures measured earlier on this machine, printed for context only.
const REFERENCE_FIGURES: &[(&str, &str)] = &[
    ("minimal axum GET", "~170k req/s"),
    ("parse 1 KB JSON + 204 (axum)", "~77k req/s"),
    ("one fdatasync per write", "~5-7k/s"),
    ("etcd single-node put-with-lease", "~11k/s"),
    ("ZooKeeper standalone ephemeral create", "~26k/s"),
];

/// ZooKeeper standalone ephemeral creates per second, measured when the targets were set: the
/// bar a durable register should clear when ZooKeeper cannot run in the same bench run.
const ZOOKEEPER_CREATES_PER_SEC: f64 = 26_000.0;

/// Renew should cost little more than an empty request: its target as a fraction of the ceiling.
const RENEW_TARGET_RATIO: f64 = 0.7;

fn main() {
    if std::env::var_os(BASELINE_ENV).is_some() {
        run_baseline_server();
        return;
    }
    let full = std::env::args().any(|a| a == "--bench");
    let cfg = if full { Config::from_env() } else { Config::smoke() };
    if !full {
        println!("http_bench: no --bench argument, running a quick smoke (use `cargo bench --bench http_bench`)");
    }
    let report = run_all(&cfg);
    report.print(&cfg);
    if !full {
        // The smoke exists to catch a broken bench or server, so wrong answers fail it.
        let bad: Vec<_> = report.rows.iter().filter(|r| r.errors > 0).collect();
        assert!(
            bad.is_empty(),
            "smoke saw errors: {:?}",
            bad.iter().map(|r| (&r.name, &r.first_error)).collect::<Vec<_>>()
        );
        println!("http_bench smoke: ok");
    }
}

/// Run parameters, from the environment for a real run or tiny for the smoke.
struct Config {
    conns: usize,
    warmup: Duration,
    measure: Duration,
    runs: usize,
    client_threads: usize,
    small_registry: usize,
    large_registry: usize,
    server_log: String,
    /// Workload names (or prefixes such as `fetch`) to run; all when empty.
    only: Vec<String>,
    smoke: bool,
}

impl Config {
    fn from_env() -> Config {
        Config {
            conns: (env_num("SYNOD_BENCH_CONNS", 64.0) as usize).max(1),
            warmup: Duration::from_secs_f64(env_num("SYNOD_BENCH_WARMUP_SECS", 1.0)),
            measure: Duration::from_secs_f64(env_num("SYNOD_BENCH_SECS", 5.0)),
            runs: (env_num("SYNOD_BENCH_RUNS", 3.0) as usize).max(1),
            client_threads: (env_num("SYNOD_BENCH_CLIENT_THREADS", 2.0) as usize).max(1),
            small_registry: 1_000,
            large_registry: 10_000,
            server_log: std::env::var("SYNOD_BENCH_SERVER_LOG").unwrap_or_else(|_| "warn".into()),
            only: std::env::var("SYNOD_BENCH_ONLY")
                .unwrap_or_default()
                .split(',')
                .map(|w| w.trim().to_string())
                .filter(|w| !w.is_empty())
                .collect(),
            smoke: false,
        }
    }

    fn smoke() -> Config {
        Config {
            conns: 4,
            warmup: Duration::from_millis(50),
            measure: Duration::from_millis(200),
            runs: 1,
            client_threads: 1,
            small_registry: 40,
            large_registry: 120,
            server_log: "warn".into(),
            only: Vec::new(),
            smoke: true,
        }
    }

    /// Whether the workload called `name` is selected by `SYNOD_BENCH_ONLY`.
    fn wants(&self, name: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|w| name.starts_with(w.as_str()))
    }
}

fn env_num(name: &str, default: f64) -> f64 {
    match std::env::var(name) {
        Ok(v) => v.trim().parse().unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

// ---------------------------------------------------------------------------------------------
// Child processes
// ---------------------------------------------------------------------------------------------

/// A child server that is killed and reaped when dropped, including while unwinding from a
/// panic, so no bench run leaves a server behind.
struct ChildGuard {
    child: Child,
    addr: SocketAddr,
    /// Declared after `child` so the directory is removed only once the server is gone.
    _data_dir: Option<tempfile::TempDir>,
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Spawns `cmd`, waits (bounded) for the line `banner ADDR` on its stdout and keeps draining
/// stdout afterwards so a chatty child never blocks on a full pipe.
fn spawn_server(mut cmd: Command, banner: &'static str, data_dir: Option<tempfile::TempDir>) -> ChildGuard {
    let mut child = cmd.stdout(Stdio::piped()).spawn().expect("spawn server child");
    let stdout = child.stdout.take().expect("child stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(addr) = line.strip_prefix(banner) {
                let _ = tx.send(addr.trim().trim_end_matches('/').to_string());
            }
        }
    });
    // Build the guard first so a timeout below still kills the child.
    let mut guard = ChildGuard { child, addr: SocketAddr::from(([127, 0, 0, 1], 0)), _data_dir: data_dir };
    let addr = match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(addr) => addr,
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            // Closed stdout almost always means it exited; give it a moment to be reapable.
            std::thread::sleep(Duration::from_millis(200));
            panic!("child closed stdout without printing `{banner}ADDR` (status: {:?})", guard.child.try_wait())
        }
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("child did not print `{banner}ADDR` within 60 s"),
    };
    guard.addr = addr.parse().unwrap_or_else(|e| panic!("bad address {addr:?} from child: {e}"));
    guard
}

/// Starts `synod serve` with the bench auth file (and over TLS with `tls`), and the target
/// whose requests carry the bench user's credentials.
fn start_secured(cfg: &Config, secure: &secure::Secure, tls: bool) -> (ChildGuard, Arc<Target>) {
    let mut args = secure.auth_args();
    if tls {
        args.extend(secure.tls_args());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let node = start_synod_with(cfg, &args, if tls { SYNOD_TLS_BANNER } else { SYNOD_BANNER });
    if tls {
        lean_http::use_tls(node.addr, secure.client.clone());
    }
    let t = Arc::new(Target::with_auth(node.addr, secure));
    (node, t)
}

/// Starts `synod serve` on an ephemeral loopback port with a fresh data directory.
fn start_synod(cfg: &Config, extra: &[&str]) -> ChildGuard {
    start_synod_with(cfg, extra, SYNOD_BANNER)
}

fn start_synod_with(cfg: &Config, extra: &[&str], banner: &'static str) -> ChildGuard {
    let dir = tempfile::Builder::new().prefix("synod-bench-").tempdir_in(bench_tmp()).expect("tempdir");
    let bin = std::env::var("SYNOD_BENCH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_synod").to_string());
    let mut cmd = Command::new(bin);
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .args(extra)
        .env("RUST_LOG", &cfg.server_log)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit());
    spawn_server(cmd, banner, Some(dir))
}

/// Where servers keep their data: under cargo's target tmp dir rather than /tmp, which may be a
/// tmpfs where fsync costs nothing and durable writes would look cheaper than they are.
fn bench_tmp() -> std::path::PathBuf {
    let base = option_env!("CARGO_TARGET_TMPDIR").map(Into::into).unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&base).expect("create bench tmp dir");
    base
}

/// Starts this binary again as the ceiling server.
fn start_baseline() -> ChildGuard {
    let exe = std::env::current_exe().expect("current_exe");
    let mut cmd = Command::new(exe);
    // Its stdin is a pipe that closes when this process dies, however it dies.
    cmd.env(BASELINE_ENV, "1").stdin(Stdio::piped()).stderr(Stdio::inherit());
    spawn_server(cmd, BASELINE_BANNER, None)
}

/// Body of the ceiling child: the cheapest useful axum GET, on the same kind of runtime a
/// `#[tokio::main]` server gets.
fn run_baseline_server() {
    // Exit when the parent goes away even if it could not kill us (e.g. it was SIGKILLed).
    std::thread::spawn(|| {
        let mut sink = [0u8; 64];
        let mut stdin = std::io::stdin();
        while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
        std::process::exit(0);
    });
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind baseline");
        let addr = listener.local_addr().expect("local_addr");
        {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{BASELINE_BANNER}{addr}").expect("stdout");
            out.flush().expect("flush");
        }
        let app = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
        axum::serve(listener, app).await.expect("serve baseline");
    });
}

// ---------------------------------------------------------------------------------------------
// Load generator
// ---------------------------------------------------------------------------------------------

/// Builds the request (fully encoded) a connection sends as its `seq`-th request.
type MakeRequest = Arc<dyn Fn(usize, u64) -> Bytes + Send + Sync>;

/// One kind of request and the status it must answer with.
#[derive(Clone)]
struct Workload {
    make: MakeRequest,
    expect: u16,
}

/// What one connection saw.
#[derive(Default)]
struct ConnStats {
    ok: u64,
    errors: u64,
    bytes: u64,
    latencies_us: Vec<u32>,
    first_error: Option<String>,
}

impl ConnStats {
    fn error(&mut self, msg: impl FnOnce() -> String) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(msg());
        }
    }
}

/// The outcome of one timed run of a workload.
struct RunResult {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
    bytes_per_resp: f64,
    /// Server CPU time per measured request, in microseconds.
    server_cpu_us: f64,
    /// Load generator CPU time per measured request, in microseconds.
    client_cpu_us: f64,
    first_error: Option<String>,
}

/// Closed loop on one keep-alive connection until `until`; only requests that start after
/// `from` and finish before `until` are measured.
async fn timed_conn(addr: SocketAddr, conn: usize, wl: Workload, from: Instant, until: Instant, stats: &mut ConnStats) {
    let mut slot: Option<Conn> = None;
    let mut seq = 0u64;
    while Instant::now() < until {
        let c = match &mut slot {
            Some(c) => c,
            None => match Conn::connect(addr).await {
                Ok(c) => slot.insert(c),
                Err(e) => {
                    stats.error(|| format!("connect: {e}"));
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let req = (wl.make)(conn, seq);
        seq += 1;
        let t0 = Instant::now();
        let result = c.exchange(&req, None).await;
        let t1 = Instant::now();
        match result {
            Ok(resp) => {
                if resp.close {
                    slot = None;
                }
                if resp.status != wl.expect {
                    stats.error(|| format!("status {}, expected {}", resp.status, wl.expect));
                } else if t0 >= from && t1 <= until {
                    stats.ok += 1;
                    stats.bytes += resp.body_len;
                    stats.latencies_us.push((t1 - t0).as_micros().min(u32::MAX as u128) as u32);
                }
            }
            Err(e) => {
                stats.error(|| format!("request: {e}"));
                slot = None;
            }
        }
    }
}

/// How long after the end of a run a request may still be outstanding before the run gives up
/// on it, so a wedged server cannot hang the bench.
const STRAGGLER_GRACE: Duration = Duration::from_secs(10);

/// Bound on setup steps (preloading, one-off fetches).
const SETUP_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs `wl` against `server` on `conns` connections for warm-up plus the measured window.
fn timed_run(rt: &Runtime, server: &ChildGuard, cfg: &Config, wl: &Workload) -> RunResult {
    let addr = server.addr;
    timed_loops(rt, &[server.child.id()], cfg, cfg.warmup, |c, from, until, mut stats| {
        let wl = wl.clone();
        async move {
            timed_conn(addr, c, wl, from, until, &mut stats).await;
            stats
        }
    })
}

/// Runs `conn_loop` for each of `cfg.conns` connections over `warmup` plus the measured window
/// and sums what they saw; `servers` are the processes whose CPU time is charged to the
/// requests. A loop gets its connection index, the measured window and an empty `ConnStats`
/// to fill and hand back.
fn timed_loops<F, Fut>(rt: &Runtime, servers: &[u32], cfg: &Config, warmup: Duration, conn_loop: F) -> RunResult
where
    F: Fn(usize, Instant, Instant, ConnStats) -> Fut,
    Fut: std::future::Future<Output = ConnStats> + Send + 'static,
{
    let server_cpu = || -> Option<f64> { servers.iter().map(|p| cpu_seconds(&p.to_string())).sum() };
    rt.block_on(async {
        let from = Instant::now() + warmup;
        let until = from + cfg.measure;
        // Enough for ~200k req/s spread over all connections without regrowing in the loop.
        let capacity = ((200_000.0 * cfg.measure.as_secs_f64()) as usize / cfg.conns).min(1 << 20);
        let tasks: Vec<_> = (0..cfg.conns)
            .map(|c| {
                let stats = ConnStats { latencies_us: Vec::with_capacity(capacity), ..ConnStats::default() };
                let run = conn_loop(c, from, until, stats);
                tokio::spawn(async move {
                    match tokio::time::timeout_at((until + STRAGGLER_GRACE).into(), run).await {
                        Ok(stats) => stats,
                        Err(_) => {
                            let mut stats = ConnStats::default();
                            stats.error(|| format!("no response {STRAGGLER_GRACE:?} after the run ended"));
                            stats
                        }
                    }
                })
            })
            .collect();
        // CPU time of both sides over exactly the measured window.
        tokio::time::sleep_until(from.into()).await;
        let cpu_from = (cpu_seconds("self"), server_cpu());
        tokio::time::sleep_until(until.into()).await;
        let cpu_until = (cpu_seconds("self"), server_cpu());
        let mut all = ConnStats::default();
        for t in tasks {
            let s = t.await.expect("load task panicked");
            all.ok += s.ok;
            all.errors += s.errors;
            all.bytes += s.bytes;
            all.latencies_us.extend_from_slice(&s.latencies_us);
            if all.first_error.is_none() {
                all.first_error = s.first_error;
            }
        }
        let per_req_us = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if all.ok > 0 => (b - a) * 1e6 / all.ok as f64,
            _ => f64::NAN,
        };
        let mut lat = all.latencies_us;
        RunResult {
            rps: all.ok as f64 / cfg.measure.as_secs_f64(),
            p50_ms: percentile_ms(&mut lat, 0.50),
            p99_ms: percentile_ms(&mut lat, 0.99),
            errors: all.errors,
            bytes_per_resp: if all.ok == 0 { 0.0 } else { all.bytes as f64 / all.ok as f64 },
            server_cpu_us: per_req_us(cpu_from.1, cpu_until.1),
            client_cpu_us: per_req_us(cpu_from.0, cpu_until.0),
            first_error: all.first_error,
        }
    })
}

/// One timed run of `op` against a ZooKeeper ensemble, one session per connection (connection
/// `c` of run `run` creates `/reg/r{run}c{c}-{seq}`, each holding a register body).
fn zk_run(rt: &Runtime, zk: &Ensemble, cfg: &Config, op: zookeeper::Op, run: usize, warmup: Duration) -> RunResult {
    let (app, id, ip) = instance_identity("zk", 0);
    let data: Arc<[u8]> = register_body(&app, &id, &ip, 1_700_000_000_000).into_bytes().into();
    let capacity = ((200_000.0 * cfg.measure.as_secs_f64()) as usize / cfg.conns).min(1 << 20);
    timed_loops(rt, &zk.pids(), cfg, warmup, |c, from, until, mut stats| {
        let (addr, data) = (zk.addrs[c % zk.addrs.len()], data.clone());
        async move {
            let seen = zookeeper::closed_loop(addr, op, format!("/reg/r{run}c{c}"), data, from, until, capacity).await;
            stats.ok = seen.latencies_us.len() as u64;
            stats.latencies_us = seen.latencies_us;
            stats.errors = seen.errors;
            stats.first_error = seen.first_error;
            stats
        }
    })
}

fn percentile_ms(lat_us: &mut [u32], q: f64) -> f64 {
    if lat_us.is_empty() {
        return f64::NAN;
    }
    let idx = ((lat_us.len() as f64 * q).ceil() as usize).clamp(1, lat_us.len()) - 1;
    let (_, v, _) = lat_us.select_nth_unstable(idx);
    *v as f64 / 1000.0
}

/// Sends requests `0..total` (request `i` built as `make(0, i)`) over `conns` connections and
/// panics on any unexpected answer: used to put the registry into a known state.
fn run_exactly(rt: &Runtime, addr: SocketAddr, conns: usize, total: u64, wl: &Workload) {
    let work = async {
        let next = Arc::new(AtomicU64::new(0));
        let tasks: Vec<_> = (0..conns.min(total as usize).max(1))
            .map(|_| {
                let (next, wl) = (next.clone(), wl.clone());
                tokio::spawn(async move {
                    let mut conn = Conn::connect(addr).await.expect("connect for preload");
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= total {
                            break;
                        }
                        let resp = conn.exchange(&(wl.make)(0, i), None).await.expect("preload request");
                        assert_eq!(resp.status, wl.expect, "preload request {i}");
                        if resp.close {
                            conn = Conn::connect(addr).await.expect("reconnect for preload");
                        }
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("preload task panicked");
        }
    };
    rt.block_on(async { tokio::time::timeout(SETUP_TIMEOUT, work).await.expect("preload timed out") });
}

/// One request whose whole body is kept, for checking what the hot loop only counts.
fn fetch_once(rt: &Runtime, addr: SocketAddr, req: &[u8]) -> (Response, Vec<u8>) {
    rt.block_on(async {
        let mut conn = Conn::connect(addr).await.expect("connect");
        let mut body = Vec::new();
        let resp = tokio::time::timeout(SETUP_TIMEOUT, conn.exchange(req, Some(&mut body)))
            .await
            .expect("one-off request timed out")
            .expect("one-off request");
        (resp, body)
    })
}

// ---------------------------------------------------------------------------------------------
// Eureka requests
// ---------------------------------------------------------------------------------------------

/// Identity shared by every request to one server.
struct Target {
    host: String,
    /// `lastDirtyTimestamp` of every registered instance, echoed by renewals as real clients do.
    dirty_ms: u64,
    /// An `Authorization` header line every request carries.
    auth: String,
}

impl Target {
    fn new(addr: SocketAddr) -> Target {
        let dirty_ms = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_millis() as u64;
        Target { host: addr.to_string(), dirty_ms, auth: String::new() }
    }

    /// Requests with the bench user's HTTP Basic credentials.
    fn with_auth(addr: SocketAddr, secure: &secure::Secure) -> Target {
        Target { auth: secure.header_line(), ..Target::new(addr) }
    }

    /// Encodes a request with the headers the Java Eureka client sends; a JSON body when given.
    fn request(&self, method: &str, uri: &str, json_body: Option<&str>) -> Bytes {
        let mut req = format!(
            "{method} {uri} HTTP/1.1\r\nHost: {}\r\nAccept: application/json\r\nAccept-Encoding: gzip\r\n{}",
            self.host, self.auth
        );
        match json_body {
            Some(body) => {
                req.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n\r\n", body.len()));
                req.push_str(body);
            }
            None if method == "GET" => req.push_str("\r\n"),
            None => req.push_str("Content-Length: 0\r\n\r\n"),
        }
        req.into()
    }
}

/// Application, instance id and address of the bench instance with the given key.
fn instance_identity(key: &str, n: u64) -> (String, String, String) {
    let app = format!("BENCH-SVC-{:03}", n as usize % APPS);
    let ip = format!("10.{}.{}.{}", (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff);
    let id = format!("{ip}:{}-{key}-{n}:8080", app.to_ascii_lowercase());
    (app, id, ip)
}

/// A register body shaped like a Spring Cloud / Java client's (protocol spec §4.11), ~1 KB.
fn register_body(app: &str, id: &str, ip: &str, dirty_ms: u64) -> String {
    let vip = app.to_ascii_lowercase();
    format!(
        concat!(
            r#"{{"instance":{{"instanceId":"{id}","hostName":"{ip}","app":"{app}","ipAddr":"{ip}","#,
            r#""status":"UP","overriddenStatus":"UNKNOWN","port":{{"$":8080,"@enabled":"true"}},"#,
            r#""securePort":{{"$":443,"@enabled":"false"}},"countryId":1,"#,
            r#""dataCenterInfo":{{"@class":"com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo","name":"MyOwn"}},"#,
            r#""leaseInfo":{{"renewalIntervalInSecs":30,"durationInSecs":90,"registrationTimestamp":0,"#,
            r#""lastRenewalTimestamp":0,"evictionTimestamp":0,"serviceUpTimestamp":0}},"#,
            r#""metadata":{{"management.port":"8080","zone":"zone-a","version":"2.14.3","git.commit":"5f3c9e1"}},"#,
            r#""homePageUrl":"http://{ip}:8080/","statusPageUrl":"http://{ip}:8080/actuator/info","#,
            r#""healthCheckUrl":"http://{ip}:8080/actuator/health","vipAddress":"{vip}","#,
            r#""secureVipAddress":"{vip}","isCoordinatingDiscoveryServer":"false","#,
            r#""lastUpdatedTimestamp":"{dirty}","lastDirtyTimestamp":"{dirty}"}}}}"#
        ),
        id = id,
        ip = ip,
        app = app,
        vip = vip,
        dirty = dirty_ms,
    )
}

/// Registers instance `n` of family `key`; every `(key, n)` is a distinct instance.
fn register_request(t: &Target, key: &str, n: u64) -> Bytes {
    let (app, id, ip) = instance_identity(key, n);
    t.request("POST", &format!("/eureka/apps/{app}"), Some(&register_body(&app, &id, &ip, t.dirty_ms)))
}

/// Register workload: connection `c` registers ids of its own family, so no two requests (in
/// any run, as `run` is part of the family) hit the same instance.
fn register_workload(t: Arc<Target>, run: usize) -> Workload {
    let make: MakeRequest = Arc::new(move |c, seq| register_request(&t, &format!("r{run}c{c}"), seq));
    Workload { make, expect: 204 }
}

/// Preload workload: request `i` registers instance `offset + i` of the `pre` family.
fn preload_workload(t: Arc<Target>, offset: u64) -> Workload {
    let make: MakeRequest = Arc::new(move |_, i| register_request(&t, "pre", offset + i));
    Workload { make, expect: 204 }
}

/// Renew workload over the first `count` preloaded instances, the way the Java client sends it.
fn renew_workload(t: Arc<Target>, count: u64, conns: usize) -> Workload {
    let make: MakeRequest = Arc::new(move |c, seq| {
        let n = (c as u64 + seq * conns as u64) % count;
        let (app, id, _) = instance_identity("pre", n);
        t.request("PUT", &format!("/eureka/apps/{app}/{id}?status=UP&lastDirtyTimestamp={}", t.dirty_ms), None)
    });
    Workload { make, expect: 200 }
}

fn get_workload(t: &Target, path: &str) -> Workload {
    let req = t.request("GET", path, None);
    let make: MakeRequest = Arc::new(move |_, _| req.clone());
    Workload { make, expect: 200 }
}

/// Fetches `path` once and checks what the timed loop only counts: gzip on the wire and a JSON
/// `applications` document. Returns a one-line description of what came back.
fn verify_fetch(rt: &Runtime, addr: SocketAddr, t: &Target, path: &str) -> String {
    let (resp, wire) = fetch_once(rt, addr, &t.request("GET", path, None));
    assert_eq!(resp.status, 200, "GET {path}");
    let gzip = resp.content_encoding.as_deref().is_some_and(|e| e.eq_ignore_ascii_case("gzip"));
    let raw = if gzip {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&wire[..]).read_to_end(&mut out).expect("gunzip");
        out
    } else {
        wire.clone()
    };
    let doc: serde_json::Value = serde_json::from_slice(&raw).unwrap_or_else(|e| panic!("GET {path}: not JSON: {e}"));
    let apps = doc["applications"]["application"].as_array().cloned().unwrap_or_default();
    let instances: usize = apps.iter().map(|a| a["instance"].as_array().map_or(0, Vec::len)).sum();
    format!(
        "GET {path}: {} on the wire, {} as JSON, {} apps / {} instances",
        if gzip {
            format!("gzip {}", human_bytes(wire.len() as f64))
        } else {
            format!("UNCOMPRESSED {}", human_bytes(wire.len() as f64))
        },
        human_bytes(raw.len() as f64),
        apps.len(),
        instances
    )
}

// ---------------------------------------------------------------------------------------------
// Orchestration and report
// ---------------------------------------------------------------------------------------------

/// One line of the report: the median over runs of each measure.
struct Row {
    name: String,
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    bytes_per_resp: f64,
    server_cpu_us: f64,
    client_cpu_us: f64,
    errors: u64,
    per_run: Vec<f64>,
    first_error: Option<String>,
}

impl Row {
    fn from_runs(name: &str, runs: Vec<RunResult>) -> Row {
        let med = |f: &dyn Fn(&RunResult) -> f64| median(runs.iter().map(f).collect());
        Row {
            name: name.to_string(),
            rps: med(&|r| r.rps),
            p50_ms: med(&|r| r.p50_ms),
            p99_ms: med(&|r| r.p99_ms),
            bytes_per_resp: med(&|r| r.bytes_per_resp),
            server_cpu_us: med(&|r| r.server_cpu_us),
            client_cpu_us: med(&|r| r.client_cpu_us),
            errors: runs.iter().map(|r| r.errors).sum(),
            per_run: runs.iter().map(|r| r.rps).collect(),
            first_error: runs.into_iter().find_map(|r| r.first_error),
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

struct Report {
    rows: Vec<Row>,
    notes: Vec<String>,
    register_body_len: usize,
}

/// Prints progress as each run ends so a long run shows life.
fn runs_of(name: &str, cfg: &Config, mut one: impl FnMut(usize) -> RunResult) -> Row {
    let runs = (0..cfg.runs)
        .map(|i| {
            let r = one(i);
            progress(name, i, cfg, &r);
            r
        })
        .collect();
    Row::from_runs(name, runs)
}

/// One line of progress per finished run.
fn progress(name: &str, run: usize, cfg: &Config, r: &RunResult) {
    eprintln!(
        "  {name:<14} run {}/{}: {:>9.0} req/s  p50 {:.2} ms  p99 {:.2} ms  errors {}",
        run + 1,
        cfg.runs,
        r.rps,
        r.p50_ms,
        r.p99_ms,
        r.errors
    );
}

/// Runs of each workload in `names`, taken in turn (`one(index, run)`), so that the machine's
/// slow and fast spells fall on all of them alike.
fn alternating(names: &[String], cfg: &Config, mut one: impl FnMut(usize, usize) -> RunResult) -> Vec<Row> {
    let mut runs: Vec<Vec<RunResult>> = names.iter().map(|_| Vec::new()).collect();
    for run in 0..cfg.runs {
        for (i, name) in names.iter().enumerate() {
            let r = one(i, run);
            progress(name, run, cfg, &r);
            runs[i].push(r);
        }
    }
    names.iter().zip(runs).map(|(name, r)| Row::from_runs(name, r)).collect()
}

/// Changes made just before the delta runs: modest churn, 2% of a 1k-instance fleet within the
/// delta window.
const DELTA_CHANGES: u64 = 20;

fn run_all(cfg: &Config) -> Report {
    // With a single client thread a current-thread runtime drives every connection without
    // cross-thread wake-ups.
    let rt = if cfg.client_threads == 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(cfg.client_threads).enable_all().build()
    }
    .expect("client runtime");
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    let small = cfg.small_registry as u64;
    let large = cfg.large_registry as u64;

    // A delta right after preloading would list every instance, i.e. be a full fetch under
    // another name. Clients poll deltas in steady state, where the window holds a handful of
    // recent changes; so the read node keeps changes only a little longer than the delta
    // phase lasts, is preloaded first, and the preload has aged out by the time delta runs.
    let phase = (cfg.warmup + cfg.measure).mul_f64(cfg.runs as f64);
    let retention = phase + Duration::from_secs(if cfg.smoke { 1 } else { 5 });
    let fetch_small = format!("fetch {}", count_label(small));
    let fetch_large = format!("fetch {}", count_label(large));
    let delta = format!("delta {DELTA_CHANGES}");
    let reads = ["renew", &fetch_small, &delta, &fetch_large].iter().any(|w| cfg.wants(w));
    let mut read_node = None;
    if reads {
        let node = start_synod(cfg, &["--delta-retention", &format!("{}ms", retention.as_millis())]);
        let t = Arc::new(Target::new(node.addr));
        let started = Instant::now();
        run_exactly(&rt, node.addr, cfg.conns, small, &preload_workload(t.clone(), 0));
        notes.push(format!("read node: preloaded {small} instances in {:.2} s", started.elapsed().as_secs_f64()));
        read_node = Some((node, t, Instant::now()));
    }

    if cfg.wants("ceiling") {
        eprintln!("http_bench: ceiling (minimal axum GET in a child process)");
        let baseline = start_baseline();
        let wl = get_workload(&Target::new(baseline.addr), "/");
        rows.push(runs_of("ceiling", cfg, |_| timed_run(&rt, &baseline, cfg, &wl)));
    }

    if cfg.wants("register") {
        // Each run gets a fresh node so an ever-growing store does not tilt later runs.
        eprintln!("http_bench: register (fresh synod node per run)");
        rows.push(runs_of("register", cfg, |run| {
            let node = start_synod(cfg, &[]);
            let t = Arc::new(Target::new(node.addr));
            timed_run(&rt, &node, cfg, &register_workload(t, run))
        }));
    }

    if cfg.wants("zk") {
        match zookeeper::unavailable() {
            Some(why) => notes.push(format!("ZooKeeper baseline skipped: {why}")),
            None => {
                eprintln!("http_bench: ZooKeeper standalone (one JVM, forceSync on, data under the bench tmp dir)");
                let zk = rt.block_on(Ensemble::start(1, &bench_tmp()));
                rt.block_on(zk.create_parent("/reg"));
                // The first run also gives the JVM time to compile its hot paths.
                let first = if cfg.smoke { cfg.warmup } else { cfg.warmup + zookeeper::JIT_WARMUP };
                let warmup = |run: usize| if run == 0 { first } else { cfg.warmup };
                use zookeeper::Op;
                rows.push(runs_of("zk create", cfg, |run| {
                    zk_run(&rt, &zk, cfg, Op::CreateEphemeral, run, warmup(run))
                }));
                rows.push(runs_of("zk ping", cfg, |run| zk_run(&rt, &zk, cfg, Op::Ping, run, warmup(run))));
            }
        }
    }

    // The same register and renew on an open node, with HTTP Basic credentials on a node with
    // an auth file, and with them over TLS (keep-alive connections: one handshake per
    // connection). The three alternate run by run, so a noisy spell hits all of them alike.
    let variants = [("plain", None), ("basic", Some(false)), ("tls", Some(true))];
    let secure = secure::Secure::new();
    let start_variant = |tls: Option<bool>| match tls {
        None => {
            let node = start_synod(cfg, &[]);
            let t = Arc::new(Target::new(node.addr));
            (node, t)
        }
        Some(tls) => start_secured(cfg, &secure, tls),
    };
    let names: Vec<String> = variants.iter().map(|(v, _)| format!("register {v}")).collect();
    if names.iter().any(|n| cfg.wants(n)) {
        eprintln!("http_bench: register plain / basic / tls, alternating (fresh synod node per run)");
        rows.extend(alternating(&names, cfg, |i, run| {
            let (node, t) = start_variant(variants[i].1);
            timed_run(&rt, &node, cfg, &register_workload(t, run))
        }));
    }
    let names: Vec<String> = variants.iter().map(|(v, _)| format!("renew {v}")).collect();
    if names.iter().any(|n| cfg.wants(n)) {
        let nodes: Vec<_> = variants
            .iter()
            .map(|(_, tls)| {
                let (node, t) = start_variant(*tls);
                run_exactly(&rt, node.addr, cfg.conns, small, &preload_workload(t.clone(), 0));
                let wl = renew_workload(t, small, cfg.conns);
                (node, wl)
            })
            .collect();
        eprintln!("http_bench: renew plain / basic / tls, alternating ({small} instances each)");
        rows.extend(alternating(&names, cfg, |i, _| timed_run(&rt, &nodes[i].0, cfg, &nodes[i].1)));
    }

    let Some((node, t, preloaded_at)) = read_node else {
        return Report { rows, notes, register_body_len: register_body_len() };
    };

    if cfg.wants("renew") {
        eprintln!("http_bench: renew ({small} instances)");
        let wl = renew_workload(t.clone(), small, cfg.conns);
        rows.push(runs_of("renew", cfg, |_| timed_run(&rt, &node, cfg, &wl)));
    }

    if cfg.wants(&fetch_small) {
        eprintln!("http_bench: {fetch_small}");
        notes.push(verify_fetch(&rt, node.addr, &t, "/eureka/apps"));
        let wl = get_workload(&t, "/eureka/apps");
        rows.push(runs_of(&fetch_small, cfg, |_| timed_run(&rt, &node, cfg, &wl)));
    }

    if cfg.wants(&delta) {
        let aged = preloaded_at + retention + Duration::from_millis(200);
        let now = Instant::now();
        if now < aged {
            eprintln!(
                "http_bench: waiting {:.1} s for the preload to leave the delta window",
                (aged - now).as_secs_f64()
            );
            std::thread::sleep(aged - now);
        }
        // Re-registering existing instances puts them in the delta without changing the fleet.
        run_exactly(&rt, node.addr, cfg.conns, DELTA_CHANGES, &preload_workload(t.clone(), 0));
        eprintln!("http_bench: {delta} (changes in the delta window, {small} instances registered)");
        notes.push(verify_fetch(&rt, node.addr, &t, "/eureka/apps/delta"));
        let wl = get_workload(&t, "/eureka/apps/delta");
        rows.push(runs_of(&delta, cfg, |_| timed_run(&rt, &node, cfg, &wl)));
    }

    if cfg.wants(&fetch_large) {
        let started = Instant::now();
        run_exactly(&rt, node.addr, cfg.conns, large - small, &preload_workload(t.clone(), small));
        notes.push(format!("read node: grew to {large} instances in {:.2} s", started.elapsed().as_secs_f64()));
        eprintln!("http_bench: {fetch_large}");
        notes.push(verify_fetch(&rt, node.addr, &t, "/eureka/apps"));
        let wl = get_workload(&t, "/eureka/apps");
        rows.push(runs_of(&fetch_large, cfg, |_| timed_run(&rt, &node, cfg, &wl)));
    }
    drop(node);

    Report { rows, notes, register_body_len: register_body_len() }
}

/// Size of one register body, for the report header.
fn register_body_len() -> usize {
    let (app, id, ip) = instance_identity("pre", 0);
    register_body(&app, &id, &ip, 1_700_000_000_000).len()
}

fn count_label(n: u64) -> String {
    if n >= 1000 && n.is_multiple_of(1000) {
        format!("{}k", n / 1000)
    } else {
        n.to_string()
    }
}

fn human_bytes(b: f64) -> String {
    if b >= 1024.0 * 1024.0 {
        format!("{:.2} MiB", b / (1024.0 * 1024.0))
    } else if b >= 1024.0 {
        format!("{:.1} KiB", b / 1024.0)
    } else {
        format!("{b:.0} B")
    }
}

impl Report {
    fn row(&self, name: &str) -> Option<&Row> {
        self.rows.iter().find(|r| r.name == name)
    }

    fn print(&self, cfg: &Config) {
        let ceiling = self.row("ceiling").map_or(f64::NAN, |r| r.rps);
        println!();
        println!(
            "synod http_bench: {} connections, {:.2} s warm-up + {:.2} s measured, median of {} run(s), {} client thread(s), {} CPU(s)",
            cfg.conns,
            cfg.warmup.as_secs_f64(),
            cfg.measure.as_secs_f64(),
            cfg.runs,
            cfg.client_threads,
            std::thread::available_parallelism().map_or(0, |n| n.get()),
        );
        println!("(server and load generator share the machine; register body {} B)", self.register_body_len);
        println!();
        println!(
            "{:<14} {:>9} {:>7} {:>8} {:>8} {:>8} {:>8} {:>10} {:>8} {:>6}  per-run req/s",
            "workload", "req/s", "x ceil", "p50 ms", "p99 ms", "srv us", "cli us", "resp size", "MiB/s", "errors"
        );
        println!("{}", "-".repeat(112));
        for r in &self.rows {
            let per_run: Vec<String> = r.per_run.iter().map(|v| format!("{v:.0}")).collect();
            println!(
                "{:<14} {:>9.0} {:>7} {:>8.2} {:>8.2} {:>8.1} {:>8.1} {:>10} {:>8.1} {:>6}  {}",
                r.name,
                r.rps,
                if ceiling > 0.0 { format!("{:.3}", r.rps / ceiling) } else { "-".into() },
                r.p50_ms,
                r.p99_ms,
                r.server_cpu_us,
                r.client_cpu_us,
                human_bytes(r.bytes_per_resp),
                r.rps * r.bytes_per_resp / (1024.0 * 1024.0),
                r.errors,
                per_run.join(" / "),
            );
        }
        println!("srv us / cli us: CPU time (user+sys) the server / load generator spent per measured request;");
        println!("  steadier than req/s when the two share a small, noisy machine.");
        for r in self.rows.iter().filter(|r| r.errors > 0) {
            println!("  {}: first error: {}", r.name, r.first_error.as_deref().unwrap_or("?"));
        }
        println!();
        for n in &self.notes {
            println!("  {n}");
        }
        println!();
        if cfg.smoke {
            println!("(smoke run: the numbers above mean nothing)");
            return;
        }
        println!("targets (reported, not asserted):");
        if let Some(r) = self.row("renew").filter(|_| ceiling > 0.0) {
            let ratio = r.rps / ceiling;
            println!(
                "  renew >= {RENEW_TARGET_RATIO} x ceiling: {:.0} req/s = {ratio:.2} x ceiling  {}",
                r.rps,
                verdict(ratio >= RENEW_TARGET_RATIO)
            );
        }
        if let Some(r) = self.row("register") {
            match self.row("zk create") {
                Some(zk) => println!(
                    "  register > ZooKeeper standalone ephemeral create (this run): {:.0} req/s vs {:.0} = {:.2} x ZooKeeper  {}",
                    r.rps,
                    zk.rps,
                    r.rps / zk.rps,
                    verdict(r.rps > zk.rps)
                ),
                None => println!(
                    "  register > {:.0}k/s (ZooKeeper standalone ephemeral create, reference; not measured in this run): {:.0} req/s = {:.2} x  {}",
                    ZOOKEEPER_CREATES_PER_SEC / 1000.0,
                    r.rps,
                    r.rps / ZOOKEEPER_CREATES_PER_SEC,
                    verdict(r.rps > ZOOKEEPER_CREATES_PER_SEC)
                ),
            }
        }
        if let (Some(r), Some(zk)) = (self.row("renew"), self.row("zk ping")) {
            println!(
                "  (context) renew vs ZooKeeper session ping (this run): {:.0} vs {:.0} req/s = {:.2} x",
                r.rps,
                zk.rps,
                r.rps / zk.rps
            );
        }
        println!();
        println!("reference figures measured earlier on this machine (context only):");
        for (what, figure) in REFERENCE_FIGURES {
            println!("  {what:<40} {figure}");
        }
    }
}

fn verdict(pass: bool) -> &'static str {
    if pass {
        "PASS"
    } else {
        "MISS"
    }
}
