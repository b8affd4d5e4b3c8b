//! Three p2p nodes in one process, each on its own loopback socket, replicating through
//! Eureka's batch endpoint.

mod common;

use std::time::{Duration, Instant};

use common::{py_instance, InProcess};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use synod::config::{Peer, ReplicationMode};

async fn cluster(n: u64) -> Vec<InProcess> {
    cluster_with(n, |_| {}).await
}

async fn cluster_with(n: u64, tweak: impl Fn(&mut synod::config::Config)) -> Vec<InProcess> {
    let mut listeners = Vec::new();
    for _ in 0..n {
        listeners.push(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
    }
    let peers: Vec<Peer> = listeners
        .iter()
        .enumerate()
        .map(|(i, l)| Peer { id: i as u64 + 1, url: format!("http://{}", l.local_addr().unwrap()) })
        .collect();
    let mut nodes = Vec::new();
    for (i, l) in listeners.into_iter().enumerate() {
        let peers = peers.clone();
        nodes.push(
            InProcess::start_on(l, |c| {
                c.replication = ReplicationMode::P2p;
                c.node_id = i as u64 + 1;
                c.peers = peers;
                tweak(c);
            })
            .await,
        );
    }
    nodes
}

/// Polls `url` on every node until `check` holds everywhere (bounded).
async fn wait_all(c: &Client, nodes: &[InProcess], path: &str, check: impl Fn(StatusCode, &Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    for (i, n) in nodes.iter().enumerate() {
        loop {
            let (st, v) = common::get_json(c, &n.url(path)).await;
            if check(st, &v) {
                break;
            }
            assert!(Instant::now() < deadline, "node {} never satisfied the check on {path}: {st} {v}", i + 1);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test]
async fn writes_on_any_node_reach_all_nodes() {
    let nodes = cluster(3).await;
    let c = Client::new();
    let r = c.post(nodes[0].url("apps/orders")).json(&py_instance("orders", "10.0.0.5", 8080)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let inst = "apps/ORDERS/10.0.0.5:orders:8080";
    wait_all(&c, &nodes, inst, |st, v| st == 200 && v["instance"]["status"] == "UP").await;

    // Renewals sent only to node 2 are counted on every node.
    for _ in 0..5 {
        assert_eq!(c.put(nodes[1].url(inst)).send().await.unwrap().status(), StatusCode::OK);
    }
    for n in &nodes {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (_, v) = common::get_json(&c, &format!("{}/v1/status", n.base)).await;
            if v["self_preservation"]["renews_last_min"].as_u64().unwrap_or(0) >= 1 {
                break;
            }
            assert!(Instant::now() < deadline, "replicated renewals not counted: {v}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    // A status override on node 3 and metadata on node 1 propagate.
    let r = c.put(nodes[2].url(&format!("{inst}/status?value=OUT_OF_SERVICE"))).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    wait_all(&c, &nodes, inst, |_, v| v["instance"]["status"] == "OUT_OF_SERVICE").await;
    let r = c.put(nodes[0].url(&format!("{inst}/metadata?weight=9"))).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    wait_all(&c, &nodes, inst, |_, v| v["instance"]["metadata"]["weight"] == "9").await;
    let r = c.delete(nodes[1].url(&format!("{inst}/status"))).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    wait_all(&c, &nodes, inst, |_, v| v["instance"]["status"] == "UNKNOWN").await;

    // A cancel on node 2 removes it everywhere.
    assert_eq!(c.delete(nodes[1].url(inst)).send().await.unwrap().status(), StatusCode::OK);
    wait_all(&c, &nodes, inst, |st, _| st == StatusCode::NOT_FOUND).await;

    let (_, v) = common::get_json(&c, &format!("{}/v1/status", nodes[0].base)).await;
    assert_eq!(v["replication"], "p2p");
    assert_eq!(v["role"], "peer");
    let peers = v["peers"].as_array().unwrap();
    assert_eq!(peers.len(), 2);
    assert!(peers.iter().all(|p| p["reachable"] == true && p["last_success_ms"].as_u64().unwrap() > 0));
}

#[tokio::test]
async fn replicated_calls_are_not_forwarded_and_heartbeats_repair_missing_instances() {
    let nodes = cluster(3).await;
    let c = Client::new();
    // Every node has finished its start-up exchange with its peers.
    for n in &nodes {
        let deadline = Instant::now() + Duration::from_secs(10);
        while c.get(format!("{}/readyz", n.base)).send().await.unwrap().status() != StatusCode::OK {
            assert!(Instant::now() < deadline, "node never ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // A registration marked as replication lands on node 2 only.
    let r = c
        .post(nodes[1].url("apps/solo"))
        .header("x-netflix-discovery-replication", "true")
        .json(&py_instance("solo", "10.0.0.9", 80))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(common::get_json(&c, &nodes[0].url("apps/SOLO")).await.0, StatusCode::NOT_FOUND);
    // A client heartbeat on node 2 reaches nodes 1 and 3, which answer 404; node 2 then sends
    // them the instance.
    assert_eq!(c.put(nodes[1].url("apps/SOLO/10.0.0.9:solo:80")).send().await.unwrap().status(), StatusCode::OK);
    wait_all(&c, &nodes, "apps/SOLO/10.0.0.9:solo:80", |st, _| st == StatusCode::OK).await;
}

#[tokio::test]
async fn renew_from_a_peer_with_older_data_gets_409_and_the_newer_copy() {
    let nodes = cluster(2).await;
    let c = Client::new();
    c.post(nodes[0].url("apps/a")).json(&py_instance("a", "10.0.0.1", 80)).send().await.unwrap();
    let url = nodes[0].url("apps/A/10.0.0.1:a:80?status=UP&lastDirtyTimestamp=1600000000000");
    let r = c.put(&url).header("x-netflix-discovery-replication", "true").header("Accept", "application/json").send();
    let r = r.await.unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["instance"]["lastDirtyTimestamp"], "1700000000000");
    // The same call from a client is a plain 200.
    assert_eq!(c.put(&url).send().await.unwrap().status(), StatusCode::OK);
}

#[tokio::test]
async fn batch_endpoint_formats() {
    let nodes = cluster(2).await;
    let c = Client::new();
    let node = &nodes[0];
    let before = node.version();
    for body in ["{not json", "{\"replicationList\": 3}", "[]"] {
        let r = c.post(node.url("peerreplication/batch/")).header("content-type", "application/json").body(body);
        let r = r.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{body}");
    }
    assert_eq!(node.version(), before, "a malformed batch applies nothing");

    // Each endpoint spelling gets its own instance, so the two passes do not interact.
    for (host, path) in [("10.0.0.3", "peerreplication/batch/"), ("10.0.0.4", "v2/peerreplication/batch")] {
        let id = format!("{host}:mixed:80");
        let mut instance = py_instance("mixed", host, 80)["instance"].clone();
        instance["lastDirtyTimestamp"] = json!("1700000000000");
        let batch = json!({"replicationList": [
            {"appName": "MIXED", "id": id, "instanceInfo": instance, "action": "Register"},
            {"appName": "MIXED", "id": id, "lastDirtyTimestamp": 1700000000000u64, "status": "UP", "action": "Heartbeat"},
            {"appName": "MIXED", "id": "nope", "lastDirtyTimestamp": 1u64, "status": "UP", "action": "Heartbeat"},
            {"appName": "MIXED", "id": id, "lastDirtyTimestamp": 1600000000000u64, "status": "UP", "action": "Heartbeat"},
            {"appName": "MIXED", "id": id, "status": "SIDEWAYS", "action": "StatusUpdate"},
            {"appName": "MIXED", "id": id, "action": "Explode"},
            {"appName": "MIXED", "id": id, "status": "DOWN", "lastDirtyTimestamp": 1700000000001u64, "action": "StatusUpdate"},
            {"appName": "MIXED", "id": "nope", "action": "Cancel"}
        ]});
        let r = c.post(node.url(path)).json(&batch).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        let v: Value = r.json().await.unwrap();
        let codes: Vec<u64> =
            v["responseList"].as_array().unwrap().iter().map(|r| r["statusCode"].as_u64().unwrap()).collect();
        assert_eq!(codes, vec![200, 200, 404, 409, 400, 400, 200, 404], "{path}");
        assert_eq!(v["responseList"][3]["responseEntity"]["instanceId"], id);
    }
    let (_, v) = common::get_json(&c, &node.url("apps/MIXED/10.0.0.3:mixed:80")).await;
    assert_eq!(v["instance"]["status"], "DOWN");
}

#[tokio::test]
async fn anti_entropy_repairs_what_replication_missed() {
    let nodes = cluster_with(3, |c| c.anti_entropy_interval = Duration::from_millis(200)).await;
    let c = Client::new();
    // Registered on node 2 as if replicated: no batch ever carries it, no heartbeat either.
    let r = c
        .post(nodes[1].url("apps/quiet"))
        .header("x-netflix-discovery-replication", "true")
        .json(&py_instance("quiet", "10.0.0.7", 80))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let inst = "apps/QUIET/10.0.0.7:quiet:80";
    wait_all(&c, &nodes, inst, |st, _| st == StatusCode::OK).await;

    // Cancelled on node 1 alone: its tombstone removes the copies elsewhere, and the copies
    // elsewhere do not bring it back to node 1.
    let r = c.delete(nodes[0].url(inst)).header("x-netflix-discovery-replication", "true").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    wait_all(&c, &nodes, inst, |st, _| st == StatusCode::NOT_FOUND).await;

    // Digests agree everywhere afterwards, as /v1/status shows.
    for n in &nodes {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (_, v) = common::get_json(&c, &format!("{}/v1/status", n.base)).await;
            let peers = v["peers"].as_array().cloned().unwrap_or_default();
            if peers.len() == 2 && peers.iter().all(|p| p["digests_agree"] == true) {
                break;
            }
            assert!(Instant::now() < deadline, "digests never agreed: {v}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(common::get_json(&c, &nodes[0].url(inst)).await.0, StatusCode::NOT_FOUND, "not resurrected");
}

#[tokio::test]
async fn renewals_on_one_node_keep_the_instance_alive_everywhere() {
    let nodes = cluster_with(3, |c| {
        c.eviction_interval = Duration::from_millis(200);
        c.self_preservation = false;
    })
    .await;
    let c = Client::new();
    let mut body = py_instance("short", "10.0.0.8", 80);
    body["instance"]["leaseInfo"] = json!({"renewalIntervalInSecs": 1, "durationInSecs": 2});
    assert_eq!(c.post(nodes[0].url("apps/short")).json(&body).send().await.unwrap().status(), 204);
    let inst = "apps/SHORT/10.0.0.8:short:80";
    wait_all(&c, &nodes, inst, |st, _| st == StatusCode::OK).await;
    // Renew only through node 2 for twice the lease duration: every node keeps it.
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        assert_eq!(c.put(nodes[1].url(inst)).send().await.unwrap().status(), StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    for (i, n) in nodes.iter().enumerate() {
        assert_eq!(
            common::get_json(&c, &n.url(inst)).await.0,
            StatusCode::OK,
            "node {} evicted a renewed instance",
            i + 1
        );
    }
    // Once renewals stop, every node evicts it on its own.
    wait_all(&c, &nodes, inst, |st, _| st == StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn full_batches_of_large_instances_replicate() {
    // 300 registrations of ~2 KB each make batches far larger than one request body may be.
    let nodes = cluster(2).await;
    let c = Client::new();
    let mut tasks = Vec::new();
    for n in 0..300u32 {
        let c = c.clone();
        let url = nodes[0].url("apps/bulk");
        tasks.push(tokio::spawn(async move {
            let mut body = py_instance("bulk", &format!("10.1.{}.{}", n / 250, n % 250), 80);
            body["instance"]["metadata"]["padding"] = json!("x".repeat(1500));
            assert_eq!(c.post(url).json(&body).send().await.unwrap().status(), StatusCode::NO_CONTENT);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, v) = common::get_json(&c, &nodes[1].url("apps/BULK")).await;
        let n = v["application"]["instance"].as_array().map_or(0, Vec::len);
        if n == 300 {
            break;
        }
        assert!(Instant::now() < deadline, "only {n} of 300 instances replicated");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
