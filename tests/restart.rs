//! Persistence across a hard crash: register instances (concurrently, so group commits
//! batch them), set overrides and metadata, `kill -9` the server, start it again on the same
//! data dir, and check that every acknowledged write is back. Also checks that a second
//! process on a data dir in use fails with a clear message.

mod common;

use common::{py_instance, ServerProcess};
use serde_json::Value;
use std::process::Command;

fn instances(v: &Value) -> Vec<Value> {
    v["applications"]["application"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|a| a["instance"].as_array().unwrap().clone())
        .collect()
}

#[tokio::test]
async fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(dir.path(), &[]);
    let base = server.eureka_url();
    let c = reqwest::Client::new();

    // 200 registrations from 20 concurrent writers.
    let mut tasks = Vec::new();
    for w in 0..20u16 {
        let c = c.clone();
        let base = base.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..10u16 {
                let app = format!("svc{}", (w + n) % 4);
                let body = py_instance(&app, &format!("10.0.{w}.{n}"), 8000 + n);
                let r = c.post(format!("{base}/apps/{app}")).json(&body).send().await.unwrap();
                assert_eq!(r.status(), 204);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // An override, a metadata update and a cancel, each acknowledged.
    let r = c.put(format!("{base}/apps/SVC0/10.0.0.0:svc0:8000/status?value=OUT_OF_SERVICE")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = c.put(format!("{base}/apps/SVC1/10.0.0.1:svc1:8001/metadata?weight=7")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = c.delete(format!("{base}/apps/SVC2/10.0.0.2:svc2:8002")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let before = common::get_json(&reqwest::Client::new(), &format!("{base}/apps")).await.1;
    assert_eq!(instances(&before).len(), 199);

    server.kill9();
    let restarted = ServerProcess::start(dir.path(), &[]);
    let base = restarted.eureka_url();
    let after = common::get_json(&reqwest::Client::new(), &format!("{base}/apps")).await.1;
    let key = |i: &Value| i["instanceId"].as_str().unwrap().to_string();
    let mut ids_before: Vec<_> = instances(&before).iter().map(key).collect();
    let mut ids_after: Vec<_> = instances(&after).iter().map(key).collect();
    ids_before.sort();
    ids_after.sort();
    assert_eq!(ids_before, ids_after);
    assert_eq!(after["applications"]["apps__hashcode"], "OUT_OF_SERVICE_1_UP_198_");
    let one = |id: &str| instances(&after).into_iter().find(|i| i["instanceId"] == id).unwrap();
    assert_eq!(one("10.0.0.0:svc0:8000")["overriddenStatus"], "OUT_OF_SERVICE");
    assert_eq!(one("10.0.0.1:svc1:8001")["metadata"]["weight"], "7");
    // The override is still in force: a re-registration with UP stays OUT_OF_SERVICE.
    c.post(format!("{base}/apps/svc0")).json(&py_instance("svc0", "10.0.0.0", 8000)).send().await.unwrap();
    let v = common::get_json(&reqwest::Client::new(), &format!("{base}/apps/SVC0/10.0.0.0:svc0:8000")).await.1;
    assert_eq!(v["instance"]["status"], "OUT_OF_SERVICE");
    // Restored leases are fresh: renewals work right away.
    let r = c.put(format!("{base}/apps/SVC3/10.0.0.3:svc3:8003")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[test]
fn second_process_on_the_same_data_dir_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let _first = ServerProcess::start(dir.path(), &[]);
    let out = Command::new(env!("CARGO_BIN_EXE_synod"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("in use by another synod process"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn invalid_config_stops_startup_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    for (args, option) in [
        (vec!["--renewal-percent-threshold", "2"], "--renewal-percent-threshold"),
        (vec!["--eviction-interval", "0s"], "--eviction-interval"),
        (vec!["--raft-election-timeout", "150ms"], "--raft-election-timeout"),
        (vec!["--peer", "1=ftp://x"], "--peer"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_synod"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path())
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
        assert!(stderr.contains(option), "{stderr}");
    }
    // The environment works too, and the command line beats it.
    let out = Command::new(env!("CARGO_BIN_EXE_synod"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("SYNOD_DELTA_RETENTION", "forever")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("--delta-retention"));
}

#[tokio::test]
async fn kill_9_during_concurrent_writes_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    // A tiny compaction threshold: the journal is folded into snapshots all the time, so the
    // kill also lands in the middle of compactions.
    let args = ["--store-compact-bytes", "65536"];
    for round in 0..3u32 {
        let mut server = ServerProcess::start(dir.path(), &args);
        let base = server.eureka_url();
        let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let mut writers = Vec::new();
        for w in 0..16u32 {
            let (base, acked) = (base.clone(), acked.clone());
            writers.push(tokio::spawn(async move {
                let c = reqwest::Client::new();
                for n in 0..10_000u32 {
                    let host = format!("10.{round}.{w}.{}", n % 250);
                    let port = 1000 + (n / 250) as u16;
                    let body = py_instance("crash", &host, port);
                    match c.post(format!("{base}/apps/crash")).json(&body).send().await {
                        Ok(r) if r.status() == 204 => acked.lock().unwrap().push(format!("{host}:crash:{port}")),
                        _ => return,
                    }
                }
            }));
        }
        // Kill at a different point each round, while writes are in flight.
        let target = 100 + 150 * round as usize;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while acked.lock().unwrap().len() < target && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        server.kill9();
        for w in writers {
            let _ = w.await;
        }
        let acked = acked.lock().unwrap().clone();
        assert!(acked.len() >= target, "only {} writes acknowledged", acked.len());

        let restarted = ServerProcess::start(dir.path(), &args);
        let after = common::get_json(&reqwest::Client::new(), &format!("{}/apps", restarted.eureka_url())).await.1;
        let present: std::collections::HashSet<String> =
            instances(&after).iter().map(|i| i["instanceId"].as_str().unwrap().to_string()).collect();
        let lost: Vec<_> = acked.iter().filter(|id| !present.contains(*id)).collect();
        assert!(
            lost.is_empty(),
            "round {round}: {} acknowledged registrations lost, e.g. {:?}",
            lost.len(),
            lost.first()
        );
    }
}
