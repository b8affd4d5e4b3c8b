//! Scale benchmark: a three-node cluster filled with a large fleet (default one million
//! instances of ~1 KB over 2,000 applications), per backend, reporting in one run:
//!
//! - fill rate, resident memory per node (and per instance), disk per node;
//! - full fetch (`GET apps`, JSON, gzip) latency: the first build, then at rest;
//! - under a steady churn (default 100 changes/s: registrations and cancels) with 16
//!   concurrent full fetchers (each fetching again 1 s after its last fetch ended: in a
//!   closed loop, 16 fetchers of a 25 MB body keep both cores busy copying through the
//!   loopback, which measures the kernel rather than the registry) and 4 delta fetchers
//!   (every 50 ms): full and delta fetch latency, and heartbeat latency from a steady
//!   stream of renewals (8 connections, one every 5 ms each), all as p50/p99/max;
//! - restart of one node (kill -9) to ready with the registry;
//! - a fresh fourth node caught up: raft by snapshot install after `cluster add`, p2p by
//!   its start-up sync from the peers.
//!
//! `cargo bench --bench scale_bench`. Settings: `SYNOD_SCALE_INSTANCES` (1000000),
//! `SYNOD_SCALE_APPS` (2000), `SYNOD_SCALE_MODES` (`raft,p2p`; also `none`, one node),
//! `SYNOD_SCALE_SECS` (20, the churn phase), `SYNOD_SCALE_CHURN` (100 changes/s),
//! `SYNOD_SCALE_FETCHERS` (16), `SYNOD_SCALE_FETCH_PAUSE_MS` (1000),
//! `SYNOD_SCALE_SERVER_ARGS` (extra `synod serve` arguments, space-separated), `SYNOD_BENCH_BIN` (the synod binary, for comparing builds).
//! Without `--bench` (as under `cargo test --all-targets`) it only prints how to run it.
//! The figures are a report, never asserted.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

#[path = "common/cluster.rs"]
mod cluster;
#[path = "common/lean_http.rs"]
mod lean_http;
#[path = "common/proc_stat.rs"]
mod proc_stat;

use cluster::*;
use lean_http::Conn;

/// Settings of one run.
#[derive(Clone, Copy)]
struct Settings {
    instances: u64,
    apps: u64,
    churn_secs: u64,
    churn_per_sec: u64,
    fetchers: u64,
    fetch_pause: Duration,
}

/// Extra `synod serve` arguments for every node (`SYNOD_SCALE_SERVER_ARGS`).
fn server_args() -> Vec<String> {
    std::env::var("SYNOD_SCALE_SERVER_ARGS").unwrap_or_default().split_whitespace().map(String::from).collect()
}

fn app_of(n: u64, apps: u64) -> String {
    format!("svc-{:04}", n % apps)
}

/// Registration body of instance `n` (~1 KB, as a Spring Cloud client's).
fn registration(n: u64, apps: u64) -> String {
    body(&app_of(n, apps), n)
}

fn get(addr: &SocketAddr, path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: application/json\r\nAccept-Encoding: gzip\r\n\r\n")
        .into_bytes()
}

/// Resident memory of a process, bytes.
fn rss(p: &Proc) -> u64 {
    let Some(c) = &p.child else { return 0 };
    let status = std::fs::read_to_string(format!("/proc/{}/status", c.id())).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn stats(name: &str, sorted: &[f64]) {
    println!(
        "  {name:<40} n={:<6} p50 {:>8.2} ms  p99 {:>8.2} ms  max {:>8.2} ms",
        sorted.len(),
        pct(sorted, 0.5),
        pct(sorted, 0.99),
        sorted.last().copied().unwrap_or(f64::NAN)
    );
}

struct Cluster {
    c: reqwest::Client,
    nodes: Vec<Proc>,
    mode: String,
}

impl Cluster {
    fn start(mode: &str, n: usize) -> Cluster {
        let addrs: Vec<String> = (0..n).map(|_| free_addr()).collect();
        let peers: Vec<String> = addrs.iter().enumerate().map(|(i, a)| format!("{}=http://{a}", i + 1)).collect();
        let nodes = (0..n)
            .map(|i| {
                let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
                let mut args: Vec<String> = vec![
                    "serve".into(),
                    "--listen".into(),
                    addrs[i].clone(),
                    "--replication".into(),
                    mode.into(),
                    "--node-id".into(),
                    (i + 1).to_string(),
                    "--data-dir".into(),
                    dir.path().display().to_string(),
                ];
                args.extend(server_args());
                if n > 1 {
                    for p in &peers {
                        args.extend(["--peer".to_string(), p.clone()]);
                    }
                }
                let mut p = Proc { child: None, addr: addrs[i].clone(), scheme: "http", dir, args };
                p.spawn(&synod_bin());
                p
            })
            .collect();
        Cluster { c: reqwest::Client::new(), nodes, mode: mode.into() }
    }

    fn addrs(&self) -> Vec<SocketAddr> {
        self.nodes.iter().filter_map(|n| n.addr.parse().ok()).collect()
    }

    async fn status(&self, i: usize) -> Option<Value> {
        let r = self.c.get(format!("{}/v1/status", self.nodes[i].base())).send().await.ok()?;
        r.json().await.ok()
    }

    async fn ready(&self, i: usize) -> bool {
        let url = format!("{}/readyz", self.nodes[i].base());
        self.c.get(url).send().await.is_ok_and(|r| r.status() == 200)
    }

    /// Waits until node `i` is ready and holds `instances` instances; the time it took.
    async fn wait_holding(&self, i: usize, instances: u64, limit: Duration) -> Option<Duration> {
        let t = Instant::now();
        while t.elapsed() < limit {
            if self.ready(i).await && self.status(i).await.is_some_and(|s| s["instances"] == instances) {
                return Some(t.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    /// Registers instances `from..to` with `conns` connections spread over the nodes.
    async fn fill(&self, from: u64, to: u64, apps: u64, conns: u64) {
        let next = Arc::new(AtomicU64::new(from));
        let addrs = self.addrs();
        let mut tasks = Vec::new();
        for w in 0..conns {
            let (next, addr) = (next.clone(), addrs[(w as usize) % addrs.len()]);
            tasks.push(tokio::spawn(async move {
                let mut conn: Option<Conn> = None;
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= to {
                        return;
                    }
                    let app = app_of(n, apps);
                    let req = request("POST", &addr, &format!("/eureka/apps/{app}"), Some(&registration(n, apps)));
                    loop {
                        if conn.is_none() {
                            conn = Conn::connect(addr).await.ok();
                        }
                        let Some(c) = conn.as_mut() else {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        };
                        match c.exchange(&req, None).await {
                            Ok(r) if r.status == 204 => break,
                            Ok(r) if !r.close => tokio::time::sleep(Duration::from_millis(20)).await,
                            _ => conn = None,
                        }
                    }
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    }

    fn report_memory(&self, label: &str, instances: u64) {
        for (i, n) in self.nodes.iter().enumerate().filter(|(_, n)| n.child.is_some()) {
            let r = rss(n);
            println!(
                "  memory {label:<22} node {} {:>8.1} MiB  {:>6.0} bytes/instance",
                i + 1,
                mb(r),
                r as f64 / instances.max(1) as f64
            );
        }
    }
}

/// One timed exchange on a (re)connected connection; the latency in ms when the status is
/// `expect`.
async fn timed(conn: &mut Option<Conn>, addr: SocketAddr, req: &[u8], expect: u16) -> Option<f64> {
    if conn.is_none() {
        *conn = Conn::connect(addr).await.ok();
    }
    let c = conn.as_mut()?;
    let t = Instant::now();
    match c.exchange(req, None).await {
        Ok(r) => {
            if r.close {
                *conn = None;
            }
            (r.status == expect).then(|| t.elapsed().as_secs_f64() * 1000.0)
        }
        Err(_) => {
            *conn = None;
            None
        }
    }
}

/// A task that repeats `make(i)` on one connection until `stop`, pausing `pause` between
/// requests; returns the sorted latencies.
fn repeat(
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    pause: Duration,
    expect: u16,
    make: impl Fn(u64) -> Vec<u8> + Send + 'static,
) -> tokio::task::JoinHandle<Vec<f64>> {
    tokio::spawn(async move {
        let mut conn = None;
        let mut out = Vec::new();
        let mut i = 0;
        while !stop.load(Ordering::Relaxed) {
            let req = make(i);
            i += 1;
            if let Some(ms) = timed(&mut conn, addr, &req, expect).await {
                out.push(ms);
            }
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
        }
        out
    })
}

async fn collect(tasks: Vec<tokio::task::JoinHandle<Vec<f64>>>) -> Vec<f64> {
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap_or_default());
    }
    all.sort_by(f64::total_cmp);
    all
}

async fn bench(mode: &str, s: Settings) {
    let n_nodes = if mode == "none" { 1 } else { 3 };
    println!("\n{mode}: {n_nodes} node(s), {} instances over {} applications", s.instances, s.apps);
    let mut cl = Cluster::start(mode, n_nodes);
    for i in 0..n_nodes {
        assert!(cl.wait_holding(i, 0, Duration::from_secs(60)).await.is_some(), "node {} not ready", i + 1);
    }

    let t = Instant::now();
    cl.fill(0, s.instances, s.apps, 32).await;
    let fill = t.elapsed();
    println!(
        "  fill                                     {:>8.0} registrations/s",
        s.instances as f64 / fill.as_secs_f64()
    );
    for i in 0..n_nodes {
        if cl.wait_holding(i, s.instances, Duration::from_secs(300)).await.is_none() {
            println!("  node {} never held all {} instances", i + 1, s.instances);
        }
    }
    cl.report_memory("after fill", s.instances);

    // Full fetch: the first build on every node, then at rest.
    let addrs = cl.addrs();
    let full = get(&addrs[0], "/eureka/apps/");
    for (i, addr) in addrs.iter().enumerate() {
        let mut conn = None;
        let first = timed(&mut conn, *addr, &get(addr, "/eureka/apps/"), 200).await.unwrap_or(f64::NAN);
        println!("  full fetch, first build on node {}         {first:>8.0} ms", i + 1);
    }
    let mut conn = None;
    let mut size = 0;
    let mut rest = Vec::new();
    for _ in 0..5 {
        rest.extend(timed(&mut conn, addrs[0], &full, 200).await);
    }
    if let Some(c) = conn.as_mut() {
        size = c.exchange(&full, None).await.map_or(0, |r| r.body_len);
    }
    rest.sort_by(f64::total_cmp);
    println!("  full document                            {:>8.1} MiB gzip", mb(size));
    stats("full fetch at rest", &rest);

    // Churn with concurrent full fetchers, delta fetchers and heartbeats.
    let stop = Arc::new(AtomicBool::new(false));
    let apps = s.apps;
    let churn_base = 10_000_000u64;
    // Four writers, each registering a new instance and cancelling it on alternate ticks,
    // so the registry's size stays put.
    let writers = 4u64;
    let churn: Vec<_> = (0..writers)
        .map(|w| {
            let (stop, addr) = (stop.clone(), addrs[(w as usize) % addrs.len()]);
            let tick = Duration::from_micros(1_000_000 * writers / s.churn_per_sec.max(1));
            tokio::spawn(async move {
                let mut conn = None;
                let mut ticker = tokio::time::interval(tick);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut lat = Vec::new();
                let mut k = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    ticker.tick().await;
                    let n = churn_base + w * 1_000_000 + k / 2;
                    let app = app_of(n, apps);
                    let (req, expect) = if k.is_multiple_of(2) {
                        (request("POST", &addr, &format!("/eureka/apps/{app}"), Some(&registration(n, apps))), 204)
                    } else {
                        (request("DELETE", &addr, &format!("/eureka/apps/{app}/{}", id(&app, n)), None), 200)
                    };
                    lat.extend(timed(&mut conn, addr, &req, expect).await);
                    k += 1;
                }
                (k, lat)
            })
        })
        .collect();
    let fetchers: Vec<_> = (0..s.fetchers)
        .map(|w| {
            let addr = addrs[(w as usize) % addrs.len()];
            repeat(addr, stop.clone(), s.fetch_pause, 200, move |_| get(&addr, "/eureka/apps/"))
        })
        .collect();
    let deltas: Vec<_> = (0..4)
        .map(|w| {
            let addr = addrs[(w as usize) % addrs.len()];
            repeat(addr, stop.clone(), Duration::from_millis(50), 200, move |_| get(&addr, "/eureka/apps/delta"))
        })
        .collect();
    let heartbeats: Vec<_> = (0..8u64)
        .map(|w| {
            let addr = addrs[(w as usize) % addrs.len()];
            let instances = s.instances;
            repeat(addr, stop.clone(), Duration::from_millis(5), 200, move |i| {
                let n = (w * 104_729 + i * 7_919) % instances;
                let app = app_of(n, apps);
                request("PUT", &addr, &format!("/eureka/apps/{app}/{}", id(&app, n)), None)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(s.churn_secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut changes = 0;
    let mut churn_lat = Vec::new();
    for t in churn {
        let (k, lat) = t.await.unwrap_or_default();
        changes += k;
        churn_lat.extend(lat);
    }
    churn_lat.sort_by(f64::total_cmp);
    let full_lat = collect(fetchers).await;
    let delta_lat = collect(deltas).await;
    let beat_lat = collect(heartbeats).await;
    println!(
        "  under churn: {:.0} changes/s, {} full fetchers, {} s",
        changes as f64 / s.churn_secs as f64,
        s.fetchers,
        s.churn_secs
    );
    stats("full fetch under churn", &full_lat);
    stats("delta fetch under churn", &delta_lat);
    stats("heartbeat under churn", &beat_lat);
    stats("change (register/cancel) under churn", &churn_lat);
    cl.report_memory("after churn", s.instances);
    for (i, n) in cl.nodes.iter().enumerate() {
        println!("  disk node {}                              {:>8.1} MiB", i + 1, mb(dir_bytes(n.dir.path())));
    }

    // Let the churn's last changes reach every node, then restart one of them.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let total = cl.status(0).await.and_then(|st| st["instances"].as_u64()).unwrap_or(s.instances);
    for i in 0..n_nodes {
        cl.wait_holding(i, total, Duration::from_secs(60)).await;
    }
    let victim = n_nodes - 1;
    cl.nodes[victim].kill();
    let t = Instant::now();
    cl.nodes[victim].spawn(&synod_bin());
    while !cl.ready(victim).await && t.elapsed() < Duration::from_secs(300) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let held = cl.status(victim).await.and_then(|st| st["instances"].as_u64()).unwrap_or(0);
    println!(
        "  restart (kill -9) to ready               {:>8.2} s  (holding {held} of {total})",
        t.elapsed().as_secs_f64()
    );

    if n_nodes == 3 {
        fresh_node(&mut cl, total).await;
    }
}

/// Starts a fourth node and times it to ready with the whole registry.
async fn fresh_node(cl: &mut Cluster, total: u64) {
    let addr = free_addr();
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let mut args: Vec<String> = vec![
        "serve".into(),
        "--listen".into(),
        addr.clone(),
        "--replication".into(),
        cl.mode.clone(),
        "--node-id".into(),
        "4".into(),
        "--data-dir".into(),
        dir.path().display().to_string(),
    ];
    let mut peers: Vec<String> =
        cl.nodes.iter().enumerate().map(|(i, n)| format!("{}=http://{}", i + 1, n.addr)).collect();
    peers.push(format!("4=http://{addr}"));
    args.extend(server_args());
    if cl.mode == "raft" {
        args.push("--raft-join".into());
    }
    for p in &peers {
        args.extend(["--peer".to_string(), p.clone()]);
    }
    let t = Instant::now();
    let mut p = Proc { child: None, addr: addr.clone(), scheme: "http", dir, args };
    p.spawn(&synod_bin());
    cl.nodes.push(p);
    if cl.mode == "raft" {
        let added = std::process::Command::new(synod_bin())
            .args(["cluster", "add", "4", &format!("http://{addr}"), "--server", &cl.nodes[0].base()])
            .output();
        if !added.as_ref().is_ok_and(|o| o.status.success()) {
            println!("  fresh node: cluster add failed: {added:?}");
            return;
        }
    }
    let how = if cl.mode == "raft" { "snapshot install" } else { "start-up sync" };
    match cl.wait_holding(3, total, Duration::from_secs(300)).await {
        Some(_) => println!("  fresh fourth node to ready ({how:<16}) {:>8.2} s", t.elapsed().as_secs_f64()),
        None => println!("  fresh node: not ready with {total} instances within 300 s"),
    }
    cl.report_memory("with a fourth node", total);
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("scale_bench: run with `cargo bench --bench scale_bench` (settings in the file's header)");
        return;
    }
    let s = Settings {
        instances: env_num("SYNOD_SCALE_INSTANCES", 1_000_000),
        apps: env_num("SYNOD_SCALE_APPS", 2_000).max(1),
        churn_secs: env_num("SYNOD_SCALE_SECS", 20),
        churn_per_sec: env_num("SYNOD_SCALE_CHURN", 100),
        fetchers: env_num("SYNOD_SCALE_FETCHERS", 16),
        fetch_pause: Duration::from_millis(env_num("SYNOD_SCALE_FETCH_PAUSE_MS", 1000)),
    };
    let modes = std::env::var("SYNOD_SCALE_MODES").unwrap_or_else(|_| "raft,p2p".into());
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    for mode in modes.split(',').map(str::trim).filter(|m| !m.is_empty()) {
        rt.block_on(bench(mode, s));
    }
}
