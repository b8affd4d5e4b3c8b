//! Change notification benchmark: how long from a registration's 204 until a
//! `synod-client` cache shows it, with long-polled deltas and with periodic deltas at
//! Eureka's default 30 s interval, side by side; and what 1,000 idle long-poll waiters cost
//! the server (memory and CPU).
//!
//! `cargo bench --bench client_bench`. Settings: `SYNOD_BENCH_SAMPLES` (200 long-poll
//! samples), `SYNOD_BENCH_PERIODIC_SECS` (60: one registration a second for this long, for
//! the periodic figures; 0 skips them), `SYNOD_BENCH_WAITERS` (1000). Without `--bench` it
//! only prints how to run it. Figures are a report, never asserted.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use synod_client::{ClientConfig, EurekaClient, InstanceConfig};

struct Server {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(extra: &[&str]) -> Server {
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
        let mut child = Command::new(env!("CARGO_BIN_EXE_synod"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path())
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start synod");
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(a) = line.strip_prefix("synod listening on ") {
                    let _ = tx.send(a.trim().to_string());
                }
            }
        });
        let base = rx.recv_timeout(Duration::from_secs(30)).expect("server address");
        Server { child, base, _dir: dir }
    }

    fn stat(&self) -> (f64, u64) {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        let f: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
        let num = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
        // utime + stime (ticks), rss (pages)
        ((num(11) + num(12)) / 100.0, (num(21) as u64) * 4096)
    }
}

fn body(app: &str, n: u64) -> serde_json::Value {
    serde_json::json!({"instance": {
        "instanceId": format!("10.0.{}.{}:{app}:8080", n / 256, n % 256), "hostName": "h", "app": app.to_uppercase(),
        "ipAddr": format!("10.0.{}.{}", n / 256, n % 256), "status": "UP", "port": {"$": 8080, "@enabled": "true"},
        "dataCenterInfo": {"@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo", "name": "MyOwn"}}})
}

fn pct(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// Registers `samples` instances one by one (spaced by `gap`) and measures, for each, the
/// time from the server's 204 until `client`'s cache shows it (about 0 when the cache had it
/// already: long polls wake as the change is applied, which can be before the 204 arrives).
async fn visibility(
    http: &reqwest::Client,
    eureka: &str,
    client: &EurekaClient,
    app: &str,
    samples: u64,
    gap: Duration,
) -> Vec<f64> {
    let mut out = Vec::new();
    for n in 0..samples {
        let before = client.instances(app).len();
        let ok =
            http.post(format!("{eureka}/apps/{app}")).json(&body(app, n)).send().await.is_ok_and(|r| r.status() == 204);
        let t = Instant::now();
        if !ok {
            continue;
        }
        let deadline = t + Duration::from_secs(120);
        while client.instances(app).len() <= before && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        if client.instances(app).len() > before {
            out.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        tokio::time::sleep(gap).await;
    }
    out.sort_by(f64::total_cmp);
    out
}

/// Registers one instance of `app` per second for `secs`, and records for each the time
/// until `client`'s cache holds it.
async fn spread_visibility(
    http: &reqwest::Client,
    eureka: &str,
    client: &EurekaClient,
    app: &str,
    secs: u64,
) -> Vec<f64> {
    let start = Instant::now();
    let mut registered: Vec<(String, Instant)> = Vec::new();
    let mut seen: Vec<f64> = Vec::new();
    let mut n = 0u64;
    let deadline = start + Duration::from_secs(secs + 40);
    while Instant::now() < deadline && (n < secs || !registered.is_empty()) {
        if n < secs && start.elapsed() >= Duration::from_secs(n) {
            let b = body(app, n);
            let id = b["instance"]["instanceId"].as_str().unwrap_or("").to_string();
            if http.post(format!("{eureka}/apps/{app}")).json(&b).send().await.is_ok_and(|r| r.status() == 204) {
                registered.push((id, Instant::now()));
            }
            n += 1;
        }
        let have: std::collections::HashSet<String> =
            client.instances(app).into_iter().map(|i| i.instance_id).collect();
        let mut i = 0;
        while i < registered.len() {
            if have.contains(&registered[i].0) {
                let (_, t) = registered.swap_remove(i);
                seen.push(t.elapsed().as_secs_f64() * 1000.0);
            } else {
                i += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    seen.sort_by(f64::total_cmp);
    seen
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("client_bench: run with `cargo bench --bench client_bench`");
        return;
    }
    let samples = std::env::var("SYNOD_BENCH_SAMPLES").ok().and_then(|v| v.parse().ok()).unwrap_or(200u64);
    let periodic_secs = std::env::var("SYNOD_BENCH_PERIODIC_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(60u64);
    let waiters = std::env::var("SYNOD_BENCH_WAITERS").ok().and_then(|v| v.parse().ok()).unwrap_or(1000usize);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async {
        let server = Server::start(&["--max-long-polls", &(waiters + 16).to_string()]);
        let eureka = format!("{}/eureka", server.base);
        let http = reqwest::Client::builder().no_proxy().build().expect("client");
        let mut watcher = ClientConfig::new(vec![eureka.clone()]);
        watcher.register = false;
        let long_poll = EurekaClient::start(watcher.clone(), InstanceConfig::new("watcher", "127.0.0.1", 1)).await.expect("client");
        let mut periodic_cfg = watcher;
        periodic_cfg.long_poll = false;
        let periodic = EurekaClient::start(periodic_cfg, InstanceConfig::new("watcher", "127.0.0.1", 2)).await.expect("client");
        tokio::time::sleep(Duration::from_millis(500)).await;

        println!("client_bench: register on the server until visible in a synod-client cache");
        let lp = visibility(&http, &eureka, &long_poll, "lp", samples, Duration::from_millis(20)).await;
        println!(
            "  long-polled deltas            n={:<4} p50 {:>9.2} ms  p99 {:>9.2} ms  max {:>9.2} ms  (target p99 < 50 ms)",
            lp.len(),
            pct(&lp, 0.5),
            pct(&lp, 0.99),
            pct(&lp, 1.0)
        );
        // Periodic: one registration a second over the window, all measured at once until
        // the 30 s delta fetches bring them in (delays spread over the fetch period).
        let pd = spread_visibility(&http, &eureka, &periodic, "pd", periodic_secs).await;
        println!(
            "  periodic deltas, 30 s         n={:<4} p50 {:>9.2} ms  p99 {:>9.2} ms  max {:>9.2} ms",
            pd.len(),
            pct(&pd, 0.5),
            pct(&pd, 0.99),
            pct(&pd, 1.0)
        );
        drop(long_poll);
        drop(periodic);

        // Idle cost of long-poll waiters: each on its own connection, waiting a minute.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (cpu0, rss0) = server.stat();
        let v: serde_json::Value = http
            .get(format!("{eureka}/apps/delta"))
            .header("accept", "application/json")
            .send()
            .await
            .expect("delta")
            .json()
            .await
            .expect("json");
        let version = v["applications"]["versions__delta"].as_str().unwrap_or("0").to_string();
        let url = Arc::new(format!("{eureka}/apps/delta?waitMs=60000&since={version}"));
        let mut tasks = Vec::new();
        for _ in 0..waiters {
            let url = url.clone();
            // A client per waiter: one connection each, as separate services would hold.
            let c = reqwest::Client::builder().no_proxy().build().expect("client");
            tasks.push(tokio::spawn(async move { c.get(url.as_str()).send().await.map(|r| r.status().as_u16()) }));
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (cpu1, rss1) = server.stat();
        tokio::time::sleep(Duration::from_secs(10)).await;
        let (cpu2, rss2) = server.stat();
        println!("\n{waiters} idle long-poll waiters on one server:");
        println!(
            "  memory: {:.1} MiB before, {:.1} MiB with them ({:.1} KiB per waiter)",
            rss0 as f64 / 1048576.0,
            rss2 as f64 / 1048576.0,
            (rss2.max(rss1) as f64 - rss0 as f64) / 1024.0 / waiters as f64
        );
        println!(
            "  CPU: {:.0} ms to accept them, {:.1} ms over the next 10 s idle ({:.2} % of a core)",
            (cpu1 - cpu0) * 1000.0,
            (cpu2 - cpu1) * 1000.0,
            (cpu2 - cpu1) * 100.0 / 10.0
        );
        let t = Instant::now();
        let ok = http.post(format!("{eureka}/apps/wake")).json(&body("wake", 1)).send().await.is_ok_and(|r| r.status() == 204);
        let mut answered = 0;
        for task in tasks {
            if matches!(task.await, Ok(Ok(200))) {
                answered += 1;
            }
        }
        println!("  one registration ({ok}) woke {answered} of them in {:.1} ms", t.elapsed().as_secs_f64() * 1000.0);
    });
}
