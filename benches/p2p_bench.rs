//! Three-node p2p cluster benchmark on loopback: register and renew throughput through one
//! node and spread over all three, time-to-visibility (register on one node until visible on
//! all three) at low and high load, and server CPU per renew summed over the three processes.
//!
//! `cargo bench --bench p2p_bench`. Settings: `SYNOD_BENCH_CONNS` (32), `SYNOD_BENCH_SECS`
//! (5), `SYNOD_BENCH_SAMPLES` (200). Without `--bench` (as under `cargo test --all-targets`)
//! it only prints how to run it. The figures are a report, never asserted.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A `synod serve` child, killed on drop.
struct Node {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Node {
    /// user+system CPU seconds of the process so far.
    fn cpu_secs(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
        let tick = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
        (tick(11) + tick(12)) / 100.0
    }
}

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").to_string()
}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn start_cluster() -> Vec<Node> {
    let addrs: Vec<String> = (0..3).map(|_| free_addr()).collect();
    let peers: Vec<String> = addrs.iter().enumerate().map(|(i, a)| format!("{}=http://{a}", i + 1)).collect();
    (0..3)
        .map(|i| {
            let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_synod"));
            cmd.args(["serve", "--listen", &addrs[i], "--replication", "p2p", "--peer-sync-wait", "2s"])
                .args(["--node-id", &(i + 1).to_string()])
                .arg("--data-dir")
                .arg(dir.path())
                .env("RUST_LOG", "warn")
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit());
            for p in &peers {
                cmd.args(["--peer", p]);
            }
            let mut child = cmd.spawn().expect("start synod");
            let out = child.stdout.take().expect("stdout");
            // Keep draining stdout so the server never blocks on a full pipe.
            std::thread::spawn(move || for _ in BufReader::new(out).lines() {});
            Node { child, base: format!("http://{}", addrs[i]), _dir: dir }
        })
        .collect()
}

fn body(app: &str, n: u64) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
    let host = format!("10.{}.{}.{}", (n >> 16) & 255, (n >> 8) & 255, n & 255);
    serde_json::json!({"instance": {
        "instanceId": format!("{host}:{app}:8080"), "hostName": host, "app": app.to_uppercase(), "ipAddr": host,
        "status": "UP", "overriddenstatus": "UNKNOWN", "port": {"$": 8080, "@enabled": "true"},
        "securePort": {"$": 443, "@enabled": "false"}, "countryId": 1,
        "dataCenterInfo": {"@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo", "name": "MyOwn"},
        "leaseInfo": {"renewalIntervalInSecs": 30, "durationInSecs": 90},
        "metadata": {"management.port": "8080", "zone": "zone-a"},
        "homePageUrl": format!("http://{host}:8080/"), "statusPageUrl": format!("http://{host}:8080/info"),
        "healthCheckUrl": format!("http://{host}:8080/health"), "vipAddress": app, "secureVipAddress": app,
        "isCoordinatingDiscoveryServer": "false", "lastUpdatedTimestamp": now.to_string(),
        "lastDirtyTimestamp": now.to_string()}})
    .to_string()
}

fn id(app: &str, n: u64) -> String {
    format!("10.{}.{}.{}:{app}:8080", (n >> 16) & 255, (n >> 8) & 255, n & 255)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// What the load workers send.
#[derive(Clone, Copy)]
struct Workload {
    /// Registrations (true) or renewals of preloaded instances (false).
    write: bool,
    app: &'static str,
    /// Round-robin over the three nodes (true) or all through node 1.
    spread: bool,
    /// Instances registered beforehand, for renewals.
    preloaded: u64,
}

/// Runs `conns` closed-loop workers for `secs`. Returns requests per second and sorted
/// latencies in ms.
async fn load(client: &reqwest::Client, bases: &[String], conns: u64, secs: u64, wl: Workload) -> (f64, Vec<f64>) {
    let Workload { write, app, spread, preloaded } = wl;
    let stop = Arc::new(AtomicBool::new(false));
    let counter = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for w in 0..conns {
        let (client, bases, stop, counter) = (client.clone(), bases.to_vec(), stop.clone(), counter.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let node = if spread { ((w + i) % 3) as usize } else { 0 };
                let t = Instant::now();
                let ok = if write {
                    let n = counter.fetch_add(1, Ordering::Relaxed) + 1_000_000;
                    let r = client
                        .post(format!("{}/eureka/apps/{app}", bases[node]))
                        .header("content-type", "application/json")
                        .body(body(app, n))
                        .send()
                        .await;
                    r.is_ok_and(|r| r.status() == 204)
                } else {
                    let n = (w * 7919 + i) % preloaded.max(1);
                    let r = client.put(format!("{}/eureka/apps/{app}/{}", bases[node], id(app, n))).send().await;
                    r.is_ok_and(|r| r.status() == 200)
                };
                if ok {
                    lat.push(t.elapsed().as_secs_f64() * 1000.0);
                }
                i += 1;
            }
            lat
        }));
    }
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap_or_default());
    }
    all.sort_by(f64::total_cmp);
    (all.len() as f64 / secs as f64, all)
}

/// Registers on a random node and polls all three until it is visible; milliseconds.
async fn visibility(client: &reqwest::Client, bases: &[String], samples: u64, offset: u64) -> Vec<f64> {
    let mut out = Vec::new();
    for s in 0..samples {
        let n = 5_000_000 + offset + s;
        let origin = (s % 3) as usize;
        let t = Instant::now();
        let r = client
            .post(format!("{}/eureka/apps/ttv", bases[origin]))
            .header("content-type", "application/json")
            .body(body("ttv", n))
            .send()
            .await;
        if !r.is_ok_and(|r| r.status() == 204) {
            continue;
        }
        let deadline = t + Duration::from_secs(10);
        let mut seen = [false; 3];
        while !seen.iter().all(|s| *s) && Instant::now() < deadline {
            for (i, b) in bases.iter().enumerate() {
                if !seen[i] {
                    let url = format!("{b}/eureka/apps/TTV/{}", id("ttv", n));
                    seen[i] = client.get(url).send().await.is_ok_and(|r| r.status() == 200);
                }
            }
        }
        if seen.iter().all(|s| *s) {
            out.push(t.elapsed().as_secs_f64() * 1000.0);
        }
    }
    out.sort_by(f64::total_cmp);
    out
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("p2p_bench: run with `cargo bench --bench p2p_bench`");
        return;
    }
    let conns = env_num("SYNOD_BENCH_CONNS", 32);
    let secs = env_num("SYNOD_BENCH_SECS", 5);
    let samples = env_num("SYNOD_BENCH_SAMPLES", 200);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async {
        let mut nodes = start_cluster();
        let bases: Vec<String> = nodes.iter().map(|n| n.base.clone()).collect();
        let client = reqwest::Client::builder().no_proxy().pool_max_idle_per_host(256).build().expect("client");
        for b in &bases {
            let deadline = Instant::now() + Duration::from_secs(30);
            while !client.get(format!("{b}/readyz")).send().await.is_ok_and(|r| r.status() == 200) {
                assert!(Instant::now() < deadline, "node {b} not ready");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        // Instances for the renew workloads.
        let preload = 1000u64;
        for n in 0..preload {
            let _ = client
                .post(format!("{}/eureka/apps/renewed", bases[0]))
                .header("content-type", "application/json")
                .body(body("renewed", n))
                .send()
                .await;
        }
        println!("p2p_bench: 3 nodes, {conns} connections, {secs} s per workload (reqwest load generator)");
        println!("{:<28} {:>10} {:>8} {:>8} {:>14}", "workload", "req/s", "p50 ms", "p99 ms", "cluster CPU µs");
        for (name, write, app, spread) in [
            ("register via node 1", true, "regone", false),
            ("register spread over 3", true, "regall", true),
            ("renew via node 1", false, "renewed", false),
            ("renew spread over 3", false, "renewed", true),
        ] {
            let cpu0: f64 = nodes.iter().map(Node::cpu_secs).sum();
            let wl = Workload { write, app, spread, preloaded: preload };
            let (rate, lat) = load(&client, &bases, conns, secs, wl).await;
            let cpu1: f64 = nodes.iter().map(Node::cpu_secs).sum();
            let per = (cpu1 - cpu0) * 1e6 / (rate * secs as f64).max(1.0);
            println!("{name:<28} {rate:>10.0} {:>8.2} {:>8.2} {per:>14.1}", pct(&lat, 0.5), pct(&lat, 0.99));
        }
        // Let replication queues drain before measuring visibility at rest.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let low = visibility(&client, &bases, samples, 0).await;
        let stop_bg = Arc::new(AtomicBool::new(false));
        let bg = {
            let (client, bases, stop_bg) = (client.clone(), bases.clone(), stop_bg.clone());
            tokio::spawn(async move {
                let mut rounds = 0u64;
                while !stop_bg.load(Ordering::Relaxed) {
                    let wl = Workload { write: false, app: "renewed", spread: true, preloaded: 1000 };
                    load(&client, &bases, conns, 1, wl).await;
                    rounds += 1;
                }
                rounds
            })
        };
        let high = visibility(&client, &bases, samples, 100_000).await;
        stop_bg.store(true, Ordering::Relaxed);
        let _ = bg.await;
        println!("\ntime-to-visibility (register on one node until GET succeeds on all three):");
        for (name, v) in [("at rest", &low), (&*format!("under renew load ({conns} conns)"), &high)] {
            println!("  {name:<28} n={:<4} p50 {:.1} ms  p99 {:.1} ms", v.len(), pct(v, 0.5), pct(v, 0.99));
        }
        let p99 = pct(&high, 0.99);
        println!(
            "\ntarget (reported, not asserted): time-to-visibility p99 < 200 ms under load: {:.1} ms  {}",
            p99,
            if p99 < 200.0 { "PASS" } else { "MISS" }
        );

        // Replication cost per renew with a dead peer: its backlog must not make renewals
        // dearer (the queue keeps one pending heartbeat per instance, however many arrive).
        let renew_one = Workload { write: false, app: "renewed", spread: false, preloaded: preload };
        let cost = |nodes: &[Node], cpu0: f64, rate: f64| {
            let cpu1: f64 = nodes[..2].iter().map(Node::cpu_secs).sum();
            (cpu1 - cpu0) * 1e6 / (rate * secs as f64).max(1.0)
        };
        let cpu0: f64 = nodes[..2].iter().map(Node::cpu_secs).sum();
        let (rate, _) = load(&client, &bases, conns, secs, renew_one).await;
        let healthy = cost(&nodes, cpu0, rate);
        nodes.pop();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut rounds = Vec::new();
        for _ in 0..3 {
            let cpu0: f64 = nodes[..2].iter().map(Node::cpu_secs).sum();
            let (rate, _) = load(&client, &bases, conns, secs, renew_one).await;
            rounds.push((rate, cost(&nodes, cpu0, rate)));
        }
        println!(
            "
renew via node 1, CPU µs per renew on nodes 1+2:"
        );
        println!("  all peers up                 {healthy:.1}");
        for (i, (rate, c)) in rounds.iter().enumerate() {
            println!("  node 3 down, round {}        {c:.1}  ({rate:.0} req/s, backlog growing)", i + 1);
        }
    });
}
