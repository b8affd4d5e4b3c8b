//! A node against clients that misbehave on purpose: slow or idle sockets, oversized or
//! hostile requests. The node must stay up and answer, refuse with a clear 4xx (or 503 under
//! overload), and keep its registry unchanged.

mod common;

use std::time::{Duration, Instant};

use common::ServerProcess;
use reqwest::{Client, StatusCode};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Bound on every wait in these tests.
const LIMIT: Duration = Duration::from_secs(20);

/// Whether the server closed `s` (a read returns end of stream or an error) within `within`.
async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

/// Reads one response head from `s`; its status code.
async fn status_of(s: &mut TcpStream, within: Duration) -> Option<u16> {
    let mut buf = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return None,
        }
    }
    let line = String::from_utf8_lossy(&buf);
    line.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_connections_are_closed_and_the_cap_holds() {
    let dir = tempfile::tempdir().unwrap();
    let p = ServerProcess::start(
        dir.path(),
        &[
            "--max-connections",
            "16",
            "--max-long-polls",
            "4",
            "--header-timeout",
            "1s",
            "--idle-timeout",
            "1s",
            "--body-timeout",
            "1s",
        ],
    );
    let c = Client::builder().timeout(LIMIT).build().unwrap();
    // Open connections are counted, the one asking included.
    let mut idle_ones = Vec::new();
    for _ in 0..5 {
        idle_ones.push(TcpStream::connect(&p.addr).await.unwrap());
    }
    let status: Value = c.get(format!("http://{}/v1/status", p.addr)).send().await.unwrap().json().await.unwrap();
    assert_eq!(status["max_connections"], 16, "{status}");
    assert!(status["connections_open"].as_u64().is_some_and(|n| n >= 6), "{status}");
    drop(idle_ones);

    // Twice the cap in connections that never finish their request head (one byte, then
    // silence), plus idle ones that send nothing at all.
    let mut slow = Vec::new();
    for i in 0..32 {
        let mut s = TcpStream::connect(&p.addr).await.unwrap();
        if i % 2 == 0 {
            s.write_all(b"G").await.unwrap();
        }
        slow.push(s);
    }
    // The node still answers a new client once the stalled connections time out.
    let started = Instant::now();
    let r = c.get(format!("http://{}/healthz", p.addr)).send().await.expect("healthz answered");
    assert_eq!(r.status(), StatusCode::OK);
    assert!(started.elapsed() < LIMIT);
    // Every stalled connection was closed by the server.
    for s in &mut slow {
        assert!(closed_within(s, LIMIT).await, "a stalled connection was kept open");
    }

    // A keep-alive connection left idle after a response is closed too.
    let mut idle = TcpStream::connect(&p.addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    assert_eq!(status_of(&mut idle, LIMIT).await, Some(200));
    assert!(closed_within(&mut idle, LIMIT).await, "an idle keep-alive connection was kept open");

    // A body that stops arriving is answered 408 and registers nothing.
    let mut body = TcpStream::connect(&p.addr).await.unwrap();
    body.write_all(
        b"POST /eureka/apps/SLOW HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"instance\":",
    )
    .await
    .unwrap();
    assert_eq!(status_of(&mut body, LIMIT).await, Some(408));
    let r = c.get(format!("{}/apps/SLOW", p.eureka_url())).header("accept", "application/json").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

/// The process's peak resident memory so far, in KiB (Linux).
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM");
    line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).expect("VmHWM value")
}

/// A p2p node whose only peer is an address nothing listens on.
fn lone_p2p_node(dir: &std::path::Path) -> ServerProcess {
    lone_p2p_node_with(dir, &[])
}

/// [`lone_p2p_node`] with more arguments.
fn lone_p2p_node_with(dir: &std::path::Path, more: &[&str]) -> ServerProcess {
    let addr = common::free_addr();
    let nowhere = common::free_addr();
    ServerProcess::start_at(
        &addr,
        dir,
        &[
            "--replication",
            "p2p",
            "--node-id",
            "1",
            "--peer",
            &format!("1=http://{addr}"),
            "--peer",
            &format!("2=http://{nowhere}"),
            "--peer-sync-wait",
            "1s",
        ]
        .into_iter()
        .chain(more.iter().copied())
        .collect::<Vec<_>>(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_peer_batches_are_refused_with_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let p = lone_p2p_node(dir.path());
    let c = Client::builder().timeout(LIMIT).build().unwrap();
    let url = format!("http://{}/eureka/peerreplication/batch/", p.addr);
    let base = peak_rss_kib(p.child.id());

    // ~8 MiB: a thousand items of a thousand members each, none a valid change.
    let members: String = (0..1000).map(|i| format!("\"a{i}\":\"1\",")).collect();
    let item = format!("{{\"action\":\"Register\",\"instanceInfo\":{{\"metadata\":{{{members}\"z\":\"1\"}}}}}},");
    let mut body = String::from("{\"replicationList\":[");
    for _ in 0..999 {
        body.push_str(&item);
    }
    body.push_str("{}]}");
    assert!(body.len() > 7 << 20);
    let r = c.post(&url).header("content-type", "application/json").body(body).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    let codes = v["responseList"].as_array().unwrap();
    assert_eq!(codes.len(), 1000);
    assert!(codes.iter().all(|c| c["statusCode"] == 400), "every junk item refused");

    // ~2 MiB of empty items: too many for one batch, refused whole.
    let many = format!("{{\"replicationList\":[{}{{}}]}}", "{},".repeat(700_000));
    let r = c.post(&url).header("content-type", "application/json").body(many).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await.unwrap().contains("items in one batch"));

    // Memory grew by a small multiple of the bodies, not by gigabytes.
    let grown = peak_rss_kib(p.child.id()).saturating_sub(base);
    assert!(grown < 96 * 1024, "peak memory grew by {grown} KiB for 10 MiB of junk batches");
    let status: Value = c.get(format!("http://{}/v1/status", p.addr)).send().await.unwrap().json().await.unwrap();
    assert_eq!(status["instances"], 0, "{status}");
}

/// A registration of `id` carrying ~30 KiB of metadata.
fn heavy_instance(app: &str, id: u16, dirty: u64) -> Value {
    let mut body = common::py_instance(app, &format!("10.0.{}.{}", id / 250, id % 250 + 1), 8080);
    let meta: serde_json::Map<String, Value> =
        (0..4).map(|n| (format!("k{n}"), Value::String("v".repeat(7500)))).collect();
    body["instance"]["metadata"] = Value::Object(meta);
    body["instance"]["lastDirtyTimestamp"] = Value::String(dirty.to_string());
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_large_registrations_keep_memory_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let p = ServerProcess::start(dir.path(), &["--delta-max-bytes", "2097152"]);
    let c = Client::builder().timeout(LIMIT).build().unwrap();
    let url = format!("{}/apps/HEAVY", p.eureka_url());
    let body = heavy_instance("HEAVY", 1, 1_700_000_000_000);
    assert_eq!(c.post(&url).json(&body).send().await.unwrap().status(), StatusCode::NO_CONTENT);
    let base = peak_rss_kib(p.child.id());
    // 4,000 re-registrations of one ~30 KiB instance within the delta retention: the delta
    // queue used to keep every copy (~120 MiB). What may grow: the store's page cache (sled,
    // capped at 64 MiB) and the delta queue's 2 MiB.
    let mut tasks = Vec::new();
    for w in 0..16u64 {
        let (c, url) = (c.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            for n in 0..250u64 {
                let body = heavy_instance("HEAVY", 1, 1_700_000_000_001 + w * 1000 + n);
                let s = c.post(&url).json(&body).send().await.unwrap().status();
                assert_eq!(s, StatusCode::NO_CONTENT);
                // Deltas are read meanwhile, as clients do.
                if n % 50 == 0 {
                    let d = c.get(format!("{url}/../delta")).send().await.unwrap();
                    assert!(d.status().is_success());
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let grown = peak_rss_kib(p.child.id()).saturating_sub(base);
    assert!(grown < 100 * 1024, "peak memory grew by {grown} KiB");
    let status: Value = c.get(format!("http://{}/v1/status", p.addr)).send().await.unwrap().json().await.unwrap();
    assert_eq!(status["instances"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_refuses_new_instances_past_its_limit() {
    let s = common::InProcess::start_with(|c| c.max_instances = 3).await;
    let c = Client::new();
    let reg = |id: u16| {
        let c = c.clone();
        let url = s.url("apps/CAPPED");
        async move { c.post(url).json(&common::py_instance("CAPPED", &format!("10.0.0.{id}"), 80)).send().await.unwrap() }
    };
    for id in 1..=3 {
        assert_eq!(reg(id).await.status(), StatusCode::NO_CONTENT);
    }
    let v = s.version();
    let r = reg(4).await;
    assert_eq!(r.status(), StatusCode::INSUFFICIENT_STORAGE);
    assert!(r.text().await.unwrap().contains("--max-instances"));
    assert_eq!(s.version(), v, "a refused registration changed the registry");
    // Re-registering a known instance still works.
    assert_eq!(reg(2).await.status(), StatusCode::NO_CONTENT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xml_attribute_floods_are_refused_quickly() {
    let s = common::InProcess::start().await;
    let c = Client::new();
    // ~20k attributes on one element (under the body limit): the duplicate check used to be
    // quadratic, about a second of CPU per request on an async worker.
    let attrs: String = (0..20_000).map(|i| format!(" a{i}=\"v\"")).collect();
    let body = format!("<instance{attrs}><app>A</app></instance>");
    assert!(body.len() < 256 * 1024);
    let v = s.version();
    let posts =
        (0..4).map(|_| c.post(s.url("apps/A")).header("content-type", "application/xml").body(body.clone()).send());
    for r in futures::future::join_all(posts).await {
        let r = r.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert!(r.text().await.unwrap().contains("attributes on one element"));
    }
    assert_eq!(s.version(), v);
    assert_eq!(c.get(format!("{}/healthz", s.base)).send().await.unwrap().status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_dripped_to_a_peer_route_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let p = lone_p2p_node_with(dir.path(), &["--body-timeout", "1s"]);
    let (mut rd, mut wr) = TcpStream::connect(&p.addr).await.unwrap().into_split();
    wr.write_all(
        b"POST /eureka/peerreplication/batch/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n",
    )
    .await
    .unwrap();
    // A byte every 200 ms: each arrives well within the timeout, the whole body never does.
    let drip = tokio::spawn(async move {
        for _ in 0..100 {
            if wr.write_all(b" ").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let mut head = Vec::new();
    let mut chunk = [0u8; 512];
    let deadline = tokio::time::Instant::now() + LIMIT;
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout_at(deadline, rd.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => head.extend_from_slice(&chunk[..n]),
            other => panic!("no answer to the dripped body: {other:?}"),
        }
    }
    drip.abort();
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_polls_far_behind_get_the_cached_window_not_copies_of_their_own() {
    let s = common::InProcess::start().await;
    let c = Client::new();
    for n in 1..=80u16 {
        let r = c.post(s.url("apps/LP")).json(&common::py_instance("LP", &format!("10.1.0.{n}"), 80)).send().await;
        assert_eq!(r.unwrap().status(), StatusCode::NO_CONTENT);
    }
    let get = |q: String| {
        let c = c.clone();
        let url = s.url(&format!("apps/delta?{q}"));
        async move { c.get(url).header("accept", "application/json").send().await.unwrap().bytes().await.unwrap() }
    };
    let window = get(String::new()).await;
    // Positions far behind (and ahead) are answered with exactly the plain, cached delta.
    let v = s.version();
    for since in [0, 1, v - 70, v + 1000] {
        assert_eq!(get(format!("waitMs=0&since={since}")).await, window, "since={since}");
    }
    // A recent position still gets only the changes after it.
    let recent: Value = serde_json::from_slice(&get(format!("waitMs=0&since={}", v - 2)).await).unwrap();
    let n: usize = recent["applications"]["application"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["instance"].as_array().map_or(0, Vec::len))
        .sum();
    assert_eq!(n, 2, "{recent}");
}
