//! Three p2p nodes as separate processes on loopback: a node killed and restarted on its
//! data dir converges with the others, and so does a node cut off from its peers (through
//! pausable proxies) while both sides change the registry.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::proxy::Proxy;
use common::{py_instance, ServerProcess};
use reqwest::Client;
use serde_json::Value;

use common::free_addr;

/// Starts node `id` listening on `addr`, with `peers` as its member list (ID=URL).
fn start_node(id: u64, addr: &str, dir: &Path, peers: &[String]) -> ServerProcess {
    let id = id.to_string();
    let mut args = vec!["--replication", "p2p", "--node-id", &id, "--peer-sync-wait", "3s"];
    for p in peers {
        args.push("--peer");
        args.push(p);
    }
    ServerProcess::start_at(addr, dir, &args)
}

/// instance id → status, as node `base` reports it (`None` while it is not serving).
async fn registry(c: &Client, base: &str) -> Option<BTreeMap<String, String>> {
    let r = c.get(format!("{base}/apps")).header("Accept", "application/json").send().await.ok()?;
    if !r.status().is_success() {
        return None;
    }
    let v: Value = r.json().await.ok()?;
    let mut out = BTreeMap::new();
    for app in v["applications"]["application"].as_array()? {
        for i in app["instance"].as_array()? {
            out.insert(i["instanceId"].as_str()?.to_string(), i["status"].as_str()?.to_string());
        }
    }
    Some(out)
}

/// Waits until every node reports exactly `expected`.
async fn converge(c: &Client, nodes: &[&str], expected: &BTreeMap<String, String>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    for base in nodes {
        loop {
            let got = registry(c, base).await;
            if got.as_ref() == Some(expected) {
                break;
            }
            assert!(Instant::now() < deadline, "{base} did not converge: {got:?}, expected {expected:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn expect(items: &[(&str, &str)]) -> BTreeMap<String, String> {
    items.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

async fn register(c: &Client, base: &str, app: &str, host: &str) {
    let r = c.post(format!("{base}/apps/{app}")).json(&py_instance(app, host, 80)).send().await.unwrap();
    assert_eq!(r.status(), 204);
}

#[tokio::test]
async fn restarted_node_converges() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let addrs: Vec<String> = (0..3).map(|_| free_addr()).collect();
    let peers: Vec<String> = addrs.iter().enumerate().map(|(i, a)| format!("{}=http://{a}", i + 1)).collect();
    let mut nodes: Vec<ServerProcess> =
        (0..3).map(|i| start_node(i as u64 + 1, &addrs[i], dirs[i].path(), &peers)).collect();
    let bases: Vec<String> = nodes.iter().map(|n| n.eureka_url()).collect();
    let all: Vec<&str> = bases.iter().map(String::as_str).collect();
    let c = Client::new();
    register(&c, all[0], "a", "10.0.0.1").await;
    register(&c, all[0], "b", "10.0.0.2").await;
    converge(&c, &all, &expect(&[("10.0.0.1:a:80", "UP"), ("10.0.0.2:b:80", "UP")])).await;

    nodes[2].kill9();
    assert_eq!(c.delete(format!("{}/apps/A/10.0.0.1:a:80", all[0])).send().await.unwrap().status(), 200);
    register(&c, all[0], "d", "10.0.0.4").await;
    let r = c.put(format!("{}/apps/B/10.0.0.2:b:80/status?value=OUT_OF_SERVICE", all[1])).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let want = expect(&[("10.0.0.2:b:80", "OUT_OF_SERVICE"), ("10.0.0.4:d:80", "UP")]);
    converge(&c, &all[..2], &want).await;

    nodes[2] = start_node(3, &addrs[2], dirs[2].path(), &peers);
    converge(&c, &all, &want).await;
}

#[tokio::test]
async fn partitioned_node_converges_after_healing() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let addrs: Vec<String> = (0..3).map(|_| free_addr()).collect();
    // Every link to or from node 3 goes through a proxy the test can cut.
    let to3 = Proxy::start(addrs[2].clone()).await;
    let from3_to1 = Proxy::start(addrs[0].clone()).await;
    let from3_to2 = Proxy::start(addrs[1].clone()).await;
    let view12 =
        vec![format!("1=http://{}", addrs[0]), format!("2=http://{}", addrs[1]), format!("3=http://{}", to3.addr)];
    let view3 = vec![
        format!("1=http://{}", from3_to1.addr),
        format!("2=http://{}", from3_to2.addr),
        format!("3=http://{}", addrs[2]),
    ];
    let _n1 = start_node(1, &addrs[0], dirs[0].path(), &view12);
    let _n2 = start_node(2, &addrs[1], dirs[1].path(), &view12);
    let _n3 = start_node(3, &addrs[2], dirs[2].path(), &view3);
    let bases: Vec<String> = addrs.iter().map(|a| format!("http://{a}/eureka")).collect();
    let all: Vec<&str> = bases.iter().map(String::as_str).collect();
    let c = Client::new();
    register(&c, all[0], "a", "10.0.0.1").await;
    register(&c, all[2], "b", "10.0.0.2").await;
    converge(&c, &all, &expect(&[("10.0.0.1:a:80", "UP"), ("10.0.0.2:b:80", "UP")])).await;

    for p in [&to3, &from3_to1, &from3_to2] {
        p.set_blocked(true);
    }
    // Majority side: cancel A, add C. Isolated node 3: mark B down, add D.
    assert_eq!(c.delete(format!("{}/apps/A/10.0.0.1:a:80", all[0])).send().await.unwrap().status(), 200);
    register(&c, all[1], "c", "10.0.0.3").await;
    let r = c.put(format!("{}/apps/B/10.0.0.2:b:80/status?value=DOWN", all[2])).send().await.unwrap();
    assert_eq!(r.status(), 200);
    register(&c, all[2], "d", "10.0.0.4").await;
    converge(&c, &all[..2], &expect(&[("10.0.0.2:b:80", "UP"), ("10.0.0.3:c:80", "UP")])).await;
    converge(&c, &all[2..], &expect(&[("10.0.0.1:a:80", "UP"), ("10.0.0.2:b:80", "DOWN"), ("10.0.0.4:d:80", "UP")]))
        .await;

    for p in [&to3, &from3_to1, &from3_to2] {
        p.set_blocked(false);
    }
    let want = expect(&[("10.0.0.2:b:80", "DOWN"), ("10.0.0.3:c:80", "UP"), ("10.0.0.4:d:80", "UP")]);
    converge(&c, &all, &want).await;
}
