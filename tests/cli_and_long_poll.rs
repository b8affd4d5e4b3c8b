//! The operator CLI (`synod apps|app|instance|status|watch`) against a running server, in
//! both output forms, and the long-polled delta behind `watch`.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{py_instance, ServerProcess};
use reqwest::{Client, StatusCode};
use serde_json::Value;

fn synod(args: &[&str]) -> (Option<i32>, String, String) {
    synod_env(args, None)
}

/// Runs the CLI with `SYNOD_SERVER` set to `server`, or unset.
fn synod_env(args: &[&str], server: Option<&str>) -> (Option<i32>, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_synod"));
    cmd.args(args).env_remove("SYNOD_SERVER");
    if let Some(server) = server {
        cmd.env("SYNOD_SERVER", server);
    }
    let out = cmd.output().expect("run synod");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn register(c: &Client, eureka: &str, app: &str, port: u16) {
    let r = c.post(format!("{eureka}/apps/{app}")).json(&py_instance(app, "127.0.0.1", port)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_lists_changes_and_reports_in_both_forms() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &[]);
    let e = server.eureka_url();
    let c = Client::new();
    register(&c, &e, "orders", 8081).await;
    register(&c, &e, "orders", 8082).await;
    register(&c, &e, "billing", 9090).await;

    let (code, out, err) = synod(&["apps", "--server", &e]);
    assert_eq!(code, Some(0), "{err}");
    let orders = out.lines().find(|l| l.starts_with("ORDERS")).unwrap_or_else(|| panic!("{out}"));
    assert_eq!(orders.split_whitespace().take(3).collect::<Vec<_>>(), ["ORDERS", "2", "2"], "{out}");
    let (code, out, _) = synod(&["apps", "--output", "json", "--server", &e]);
    assert_eq!(code, Some(0));
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["applications"]["application"].as_array().map(Vec::len), Some(2));

    // A base URL without /eureka works too.
    let root = format!("http://{}", server.addr);
    let (code, out, _) = synod(&["app", "orders", "--server", &root]);
    assert_eq!(code, Some(0));
    assert!(out.contains("127.0.0.1:orders:8081") && out.contains("127.0.0.1:8082") && out.contains("UP"), "{out}");
    // Lease age: time since registration, a few seconds at most here.
    assert!(out.lines().next().is_some_and(|h| h.contains("LEASE AGE")), "{out}");
    let row = out.lines().find(|l| l.contains(":orders:8081")).unwrap();
    let age = row.split_whitespace().last().unwrap();
    assert!(age.ends_with('s') && age.trim_end_matches('s').parse::<u64>().is_ok_and(|s| s < 60), "{row}");
    // The server URL from the environment.
    let (code, out, err) = synod_env(&["app", "orders"], Some(&e));
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("127.0.0.1:orders:8081"), "{out}");

    // Each instance command in both forms: table, then JSON.
    let id = "127.0.0.1:orders:8081";
    let app_status = |out: &str| -> String {
        let v: Value = serde_json::from_str(out).unwrap();
        let inst =
            v["application"]["instance"].as_array().unwrap().iter().find(|i| i["instanceId"] == id).cloned().unwrap();
        inst["status"].as_str().unwrap().to_string()
    };
    let (code, out, err) = synod(&["instance", "status", "ORDERS", id, "OUT_OF_SERVICE", "--server", &e]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out.trim(), format!("ORDERS/{id}: status override OUT_OF_SERVICE"));
    let (_, out, _) = synod(&["app", "ORDERS", "--output", "json", "--server", &e]);
    assert_eq!(app_status(&out), "OUT_OF_SERVICE");
    let (code, out, _) = synod(&["instance", "delete-override", "ORDERS", id, "--server", &e]);
    assert_eq!(code, Some(0));
    assert_eq!(out.trim(), format!("ORDERS/{id}: status override removed"));
    // As in Eureka: without the override the status is UNKNOWN until the next heartbeat.
    let (_, out, _) = synod(&["app", "ORDERS", "--output", "json", "--server", &e]);
    assert_eq!(app_status(&out), "UNKNOWN");
    let (code, out, err) = synod(&["instance", "status", "orders", id, "down", "--output", "json", "--server", &e]);
    assert_eq!(code, Some(0), "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!((v["app"].as_str(), v["id"].as_str()), (Some("ORDERS"), Some(id)));
    assert_eq!(v["result"], "status override DOWN");
    let (_, out, _) = synod(&["app", "ORDERS", "--output", "json", "--server", &e]);
    assert_eq!(app_status(&out), "DOWN");
    let (code, out, _) = synod(&["instance", "delete-override", "ORDERS", id, "--output", "json", "--server", &e]);
    assert_eq!(code, Some(0));
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["id"], id);
    let (code, out, _) = synod(&["instance", "cancel", "ORDERS", id, "--server", &e]);
    assert_eq!(code, Some(0));
    assert_eq!(out.trim(), format!("ORDERS/{id}: cancelled"));
    let (_, out, _) = synod(&["app", "orders", "--server", &e]);
    assert!(!out.contains("8081"), "{out}");
    let other = "127.0.0.1:orders:8082";
    let (code, out, _) = synod(&["instance", "cancel", "ORDERS", other, "--output", "json", "--server", &e]);
    assert_eq!(code, Some(0));
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["result"], "cancelled");
    let (_, out, _) = synod(&["app", "orders", "--server", &e]);
    assert!(!out.contains("8082"), "{out}");

    // Errors: one line naming the server and the cause, exit code 1.
    let (code, _, err) = synod(&["instance", "cancel", "ORDERS", id, "--server", &e]);
    assert_eq!(code, Some(1));
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains(&server.addr) && err.contains("404"), "{err}");
    let (code, _, err) = synod(&["apps", "--server", "http://127.0.0.1:9/eureka"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("127.0.0.1:9") && err.contains("unreachable"), "{err}");
    // Without --server or SYNOD_SERVER: the default URL (whatever listens there, the answer
    // or the error names it, and nothing else was asked).
    let (code, out, err) = synod(&["status", "--output", "json"]);
    if code == Some(0) {
        assert!(serde_json::from_str::<Value>(&out).is_ok(), "{out}");
    } else {
        assert!(err.contains("http://127.0.0.1:8761"), "{err}");
    }

    let (code, out, _) = synod(&["status", "--server", &e]);
    assert_eq!(code, Some(0));
    assert!(out.contains("replication: none") && out.contains("instances: 1"), "{out}");
    let (code, out, _) = synod(&["status", "--output", "json", "--server", &e]);
    assert_eq!(code, Some(0));
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["instances"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_shows_the_lease_age_since_registration_not_the_last_renewal() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &[]);
    let e = server.eureka_url();
    let c = Client::new();
    register(&c, &e, "aged", 7300).await;
    let id = "127.0.0.1:aged:7300";
    // Renewed right before each look, the instance keeps a last renewal under a second,
    // while its lease age grows with the time since registration.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = c.put(format!("{e}/apps/AGED/{id}")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let (code, out, err) = synod(&["app", "aged", "--server", &e]);
        assert_eq!(code, Some(0), "{err}");
        assert_eq!(
            out.lines().next().map(|h| h.split_whitespace().collect::<Vec<_>>()),
            Some(vec!["ID", "STATUS", "ADDRESS", "LEASE", "AGE"])
        );
        let row = out.lines().find(|l| l.starts_with(id)).unwrap_or_else(|| panic!("{out}"));
        let age = row.split_whitespace().last().unwrap_or("");
        let secs: u64 = age.strip_suffix('s').and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("{row}"));
        if secs >= 2 {
            break;
        }
        assert!(Instant::now() < deadline, "lease age never reached 2 s: {row}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs `synod ARGS`; its stdout and stderr lines arrive on the receiver.
fn spawn_lines(args: &[&str]) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_synod"))
        .args(args)
        .env_remove("SYNOD_SERVER")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let tx2 = tx.clone();
    std::thread::spawn(move || BufReader::new(stdout).lines().map_while(Result::ok).for_each(|l| drop(tx.send(l))));
    std::thread::spawn(move || BufReader::new(stderr).lines().map_while(Result::ok).for_each(|l| drop(tx2.send(l))));
    (child, rx)
}

/// The first line within 15 s that `pred` accepts.
fn wait_line(rx: &std::sync::mpsc::Receiver<String>, pred: &dyn Fn(&str) -> bool) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    while let Ok(l) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        if pred(&l) {
            return Some(l);
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_keeps_watching_across_a_server_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(dir.path(), &[]);
    let (e, addr) = (server.eureka_url(), server.addr.clone());
    let (mut child, rx) = spawn_lines(&["watch", "--server", &e]);
    assert!(wait_line(&rx, &|l| l.starts_with("watching")).is_some(), "watch did not start");
    server.kill9();
    let err = wait_line(&rx, &|l| l.contains("retrying")).expect("a failed poll is reported");
    assert!(err.contains(&addr), "{err}");
    assert!(child.try_wait().unwrap().is_none(), "watch ended on a failed poll");
    let server = ServerProcess::start_at(&addr, dir.path(), &[]);
    register(&Client::new(), &server.eureka_url(), "back", 7100).await;
    let line = wait_line(&rx, &|l| l.contains("127.0.0.1:back:7100")).expect("watch printed the registration");
    assert!(line.starts_with("ADDED"), "{line}");
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_prints_a_registration_as_it_happens() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &[]);
    let e = server.eureka_url();
    let c = Client::new();
    register(&c, &e, "before", 7000).await;
    for (port, json) in [(7001u16, false), (7002, true)] {
        let mut args = vec!["watch", "--server", e.as_str()];
        if json {
            args.extend(["--output", "json"]);
        }
        let (mut child, rx) = spawn_lines(&args);
        let wait_line = |pred: &dyn Fn(&str) -> bool| wait_line(&rx, pred);
        assert!(wait_line(&|l| l.starts_with("watching")).is_some(), "watch did not start");
        let t = Instant::now();
        register(&c, &e, "after", port).await;
        let id = format!("127.0.0.1:after:{port}");
        let line = wait_line(&|l| l.contains(&id)).expect("watch printed the registration");
        if json {
            let v: Value = serde_json::from_str(&line).unwrap();
            assert_eq!(
                (v["action"].as_str(), v["app"].as_str(), v["status"].as_str()),
                (Some("ADDED"), Some("AFTER"), Some("UP"))
            );
        } else {
            assert!(line.starts_with("ADDED") && line.contains("AFTER") && line.contains("UP"), "{line}");
        }
        assert!(t.elapsed() < Duration::from_secs(5), "took {:?}", t.elapsed());
        // Changes from before the watch started are not printed.
        assert!(rx.try_iter().all(|l| !l.contains("BEFORE")));
        let _ = child.kill();
        let _ = child.wait();
    }
}

async fn delta(c: &Client, e: &str, query: &str) -> (StatusCode, Value) {
    let r = c.get(format!("{e}/apps/delta?{query}")).header("Accept", "application/json").send().await.unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Waits until the server reports `n` long polls waiting.
async fn until_waiting(c: &Client, root: &str, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v: Value = c.get(format!("{root}/v1/status")).send().await.unwrap().json().await.unwrap();
        if v["long_polls_waiting"].as_u64() == Some(n) {
            return;
        }
        assert!(Instant::now() < deadline, "never {n} long polls waiting: {v}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn version(v: &Value) -> u64 {
    v["applications"]["versions__delta"].as_str().and_then(|s| s.parse().ok()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_polled_delta_wakes_on_change_times_out_empty_and_caps_waiters() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &["--max-long-polls", "2"]);
    let e = server.eureka_url();
    let root = format!("http://{}", server.addr);
    let c = Client::new();
    register(&c, &e, "one", 7000).await;
    let (_, first) = delta(&c, &e, "").await;
    let v = version(&first);

    // Nothing changes: an empty delta with the current version and hash after the wait.
    let t = Instant::now();
    let (code, body) = delta(&c, &e, &format!("waitMs=300&since={v}")).await;
    assert_eq!(code, StatusCode::OK);
    assert!(t.elapsed() >= Duration::from_millis(290));
    assert_eq!(version(&body), v);
    assert_eq!(body["applications"]["application"].as_array().map(Vec::len), Some(0));
    assert_eq!(body["applications"]["apps__hashcode"], "UP_1_");

    // A registration during the wait answers at once with the delta.
    let waiter = {
        let (c, e) = (c.clone(), e.clone());
        tokio::spawn(async move {
            let t = Instant::now();
            let (code, body) = delta(&c, &e, &format!("waitMs=20000&since={v}")).await;
            (code, body, t.elapsed())
        })
    };
    until_waiting(&c, &root, 1).await;
    register(&c, &e, "two", 7001).await;
    let (code, body, took) = waiter.await.unwrap();
    assert_eq!(code, StatusCode::OK);
    assert!(took < Duration::from_secs(5), "long poll took {took:?}");
    assert!(version(&body) > v);
    assert!(body.to_string().contains("127.0.0.1:two:7001"), "{body}");

    // A version already passed answers at once.
    let t = Instant::now();
    let (_, body) = delta(&c, &e, &format!("waitMs=20000&since={v}")).await;
    assert!(t.elapsed() < Duration::from_secs(2));
    assert!(version(&body) > v);
    // So does a version this node has not reached (learnt from another node, or from before
    // a restart): the answer is the whole window, as a plain delta, with this node's version
    // to go on from.
    let t = Instant::now();
    let (code, ahead) = delta(&c, &e, &format!("waitMs=20000&since={}", version(&body) + 1000)).await;
    assert_eq!(code, StatusCode::OK);
    assert!(t.elapsed() < Duration::from_secs(2), "took {:?}", t.elapsed());
    assert_eq!(version(&ahead), version(&body));
    assert_eq!(ahead["applications"]["apps__hashcode"], "UP_2_");
    let (_, window) = delta(&c, &e, "").await;
    assert_eq!(ahead["applications"]["application"], window["applications"]["application"]);
    for id in ["127.0.0.1:one:7000", "127.0.0.1:two:7001"] {
        assert!(ahead.to_string().contains(id), "{ahead}");
    }

    // The cap: two waiters hold the slots, a third is refused with a reason.
    let now_v = version(&body);
    let mut holders = Vec::new();
    for _ in 0..2 {
        let (c, e) = (c.clone(), e.clone());
        holders.push(tokio::spawn(async move { delta(&c, &e, &format!("waitMs=3000&since={now_v}")).await.0 }));
    }
    until_waiting(&c, &root, 2).await;
    let r = c.get(format!("{e}/apps/delta?waitMs=3000&since={now_v}")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    // Marked, so a client polls without waitMs rather than failing over.
    assert_eq!(r.headers().get("x-synod-long-poll").map(|v| v.as_bytes()), Some(&b"busy"[..]));
    assert!(r.text().await.unwrap().contains("long-poll"));
    // A plain delta still answers.
    assert_eq!(delta(&c, &e, "").await.0, StatusCode::OK);
    for h in holders {
        assert_eq!(h.await.unwrap(), StatusCode::OK);
    }
    // Slots are free again once those ended.
    assert_eq!(delta(&c, &e, &format!("waitMs=10&since={now_v}")).await.0, StatusCode::OK);

    // Bad parameters.
    for q in ["waitMs=soon", "waitMs=999999999", "waitMs=10&since=-1"] {
        let r = c.get(format!("{e}/apps/delta?{q}")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{q}");
    }
}
