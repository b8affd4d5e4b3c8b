//! Raft clusters of separate `synod serve` processes on loopback. Every member is known to
//! the others by the address of a pausable proxy in front of it, so a test can cut a node
//! off from the rest (its inbound proxy refuses everything, the others' proxies refuse its
//! connections).

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use common::proxy::Proxy;
use common::{py_instance, ServerProcess};
use reqwest::{Client, StatusCode};
use serde_json::Value;

/// Bound on every wait in these tests.
const LIMIT: Duration = Duration::from_secs(30);

use common::free_addr;

/// A node: its process (None while stopped), listen address, proxy and data dir.
struct Member {
    id: u64,
    addr: String,
    proxy: Proxy,
    dir: tempfile::TempDir,
    process: Option<ServerProcess>,
}

impl Member {
    /// The URL the cluster knows this node by (its proxy).
    fn url(&self) -> String {
        format!("http://{}", self.proxy.addr)
    }

    /// Direct base URL (bypassing the proxy), as a client next to the node would use.
    fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn eureka(&self) -> String {
        format!("{}/eureka", self.base())
    }
}

struct Cluster {
    members: Vec<Member>,
    extra: Vec<String>,
    c: Client,
}

impl Cluster {
    /// Starts `n` raft nodes with `extra` arguments each.
    async fn start(n: u64, extra: &[&str]) -> Cluster {
        let mut members = Vec::new();
        for id in 1..=n {
            let addr = free_addr();
            let proxy = Proxy::start(addr.clone()).await;
            members.push(Member { id, addr, proxy, dir: tempfile::tempdir().unwrap(), process: None });
        }
        let mut cluster = Cluster {
            members,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            c: Client::builder().timeout(Duration::from_secs(15)).build().unwrap(),
        };
        for id in 1..=n {
            cluster.spawn(id, &[]);
        }
        cluster
    }

    fn member(&self, id: u64) -> &Member {
        self.members.iter().find(|m| m.id == id).expect("member")
    }

    fn peer_args(&self) -> Vec<String> {
        self.members.iter().flat_map(|m| ["--peer".to_string(), format!("{}={}", m.id, m.url())]).collect()
    }

    /// Starts (or restarts) node `id` on its data dir.
    fn spawn(&mut self, id: u64, more: &[&str]) {
        let mut args: Vec<String> = vec!["--replication".into(), "raft".into(), "--node-id".into(), id.to_string()];
        args.extend(self.peer_args());
        args.extend(self.extra.iter().cloned());
        args.extend(more.iter().map(|s| s.to_string()));
        let m = self.members.iter_mut().find(|m| m.id == id).expect("member");
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        m.process = Some(ServerProcess::start_at(&m.addr, m.dir.path(), &argv));
    }

    fn kill9(&mut self, id: u64) {
        let m = self.members.iter_mut().find(|m| m.id == id).expect("member");
        if let Some(mut p) = m.process.take() {
            p.kill9();
        }
    }

    /// Adds a member entry (proxy, dir) for a node not yet started.
    async fn add_member(&mut self, id: u64) {
        let addr = free_addr();
        let proxy = Proxy::start(addr.clone()).await;
        self.members.push(Member { id, addr, proxy, dir: tempfile::tempdir().unwrap(), process: None });
    }

    async fn status(&self, id: u64) -> Option<Value> {
        let r = self.c.get(format!("{}/v1/status", self.member(id).base())).send().await.ok()?;
        r.json().await.ok()
    }

    /// Waits until the running nodes in `among` agree on a leader among them; returns it.
    async fn leader(&self, among: &[u64]) -> u64 {
        let deadline = Instant::now() + LIMIT;
        loop {
            let mut seen = BTreeSet::new();
            for id in among {
                let l = self.status(*id).await.and_then(|s| s["leader"].as_u64());
                seen.insert(l);
            }
            if seen.len() == 1 {
                if let Some(Some(l)) = seen.into_iter().next() {
                    if among.contains(&l) && self.status(l).await.is_some_and(|s| s["role"] == "leader") {
                        return l;
                    }
                }
            }
            assert!(Instant::now() < deadline, "no agreed leader among {among:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Registers `id` of app `app` through node `via`, with a short lease.
    async fn register(&self, via: u64, app: &str, id: &str) -> StatusCode {
        register_at(&self.c, &self.member(via).eureka(), app, id).await
    }

    /// Instance ids of `app` on node `on` (None on an error answer).
    async fn ids(&self, on: u64, app: &str, linearizable: bool) -> Option<BTreeSet<String>> {
        ids_at(&self.c, &self.member(on).eureka(), app, linearizable).await
    }

    /// Waits until node `on` holds exactly `expected` for `app`.
    async fn converge(&self, on: u64, app: &str, expected: &BTreeSet<String>) {
        let deadline = Instant::now() + LIMIT;
        loop {
            let got = self.ids(on, app, false).await;
            if got.as_ref() == Some(expected) {
                return;
            }
            assert!(Instant::now() < deadline, "node {on} did not converge: {got:?}, expected {expected:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Cuts node `id` off from every other member, or heals it.
    fn isolate(&self, id: u64, cut: bool) {
        for m in &self.members {
            if m.id == id {
                m.proxy.set_blocked(cut);
            } else {
                m.proxy.set_blocked_from(id, cut);
            }
        }
    }
}

/// A registration with a 3 s lease renewed every second.
fn short_lease_instance(app: &str, id: &str) -> Value {
    let mut v = py_instance(app, "127.0.0.1", 8080);
    v["instance"]["instanceId"] = Value::from(id);
    v["instance"]["leaseInfo"]["renewalIntervalInSecs"] = Value::from(1);
    v["instance"]["leaseInfo"]["durationInSecs"] = Value::from(3);
    v
}

async fn register_at(c: &Client, eureka: &str, app: &str, id: &str) -> StatusCode {
    match c.post(format!("{eureka}/apps/{app}")).json(&short_lease_instance(app, id)).send().await {
        Ok(r) => r.status(),
        Err(_) => StatusCode::BAD_GATEWAY,
    }
}

async fn ids_at(c: &Client, eureka: &str, app: &str, linearizable: bool) -> Option<BTreeSet<String>> {
    let mut req = c.get(format!("{eureka}/apps/{app}")).header("Accept", "application/json");
    if linearizable {
        req = req.query(&[("consistency", "linearizable")]);
    }
    let r = req.send().await.ok()?;
    if r.status() == StatusCode::NOT_FOUND {
        return Some(BTreeSet::new());
    }
    if !r.status().is_success() {
        return None;
    }
    let v: Value = r.json().await.ok()?;
    Some(
        v["application"]["instance"]
            .as_array()?
            .iter()
            .filter_map(|i| i["instanceId"].as_str().map(String::from))
            .collect(),
    )
}

async fn renew(c: &Client, eureka: &str, app: &str, id: &str) -> Option<StatusCode> {
    c.put(format!("{eureka}/apps/{app}/{id}?status=UP")).send().await.ok().map(|r| r.status())
}

/// Runs the synod binary with `args`; returns exit code, stdout and stderr.
async fn cli(args: &[&str]) -> (Option<i32>, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_synod"))
        .args(args)
        .env_remove("SYNOD_SERVER")
        .output()
        .await
        .expect("run synod");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

fn others(all: &[u64], not: u64) -> Vec<u64> {
    all.iter().copied().filter(|i| *i != not).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_through_followers_linearizable_reads_and_leader_failover_without_eviction() {
    // Eviction every second with self-preservation off, so a wrongly expired lease would be
    // evicted within this test.
    let mut cl = Cluster::start(3, &["--eviction-interval", "1s", "--self-preservation", "false"]).await;
    let leader = cl.leader(&[1, 2, 3]).await;
    let followers = others(&[1, 2, 3], leader);

    // A write through a follower is visible everywhere.
    assert_eq!(cl.register(followers[0], "ORDERS", "o1").await, StatusCode::NO_CONTENT);
    for id in [1, 2, 3] {
        cl.converge(id, "ORDERS", &set(&["o1"])).await;
    }
    // Linearizable read on the other follower right after a write: no waiting allowed.
    assert_eq!(cl.register(followers[0], "ORDERS", "o2").await, StatusCode::NO_CONTENT);
    assert_eq!(cl.ids(followers[1], "ORDERS", true).await, Some(set(&["o1", "o2"])));
    let resp = cl.c.get(format!("{}/apps", cl.member(followers[1]).eureka())).send().await.unwrap();
    assert!(resp.headers().contains_key("x-synod-applied-index"));
    let st = cl.status(followers[1]).await.unwrap();
    // A loaded machine may hold an election at any time: any member is a valid answer.
    assert!(st["leader"].as_u64().is_some_and(|l| (1..=3).contains(&l)), "{st}");
    assert_eq!(st["members"].as_array().map(Vec::len), Some(3));
    for key in ["leader_url", "term", "commit_index", "applied_index"] {
        assert!(!st[key].is_null(), "/v1/status lacks {key}: {st}");
    }

    // Heartbeats for both instances from a client that spreads them over all nodes.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let urls: Vec<String> = cl.members.iter().map(Member::eureka).collect();
    let heartbeat = {
        let c = cl.c.clone();
        tokio::spawn(async move {
            let mut n = 0usize;
            while !*stop_rx.borrow() {
                for id in ["o1", "o2"] {
                    // Like a Eureka client: try the next server when one fails.
                    for k in 0..urls.len() {
                        let url = &urls[(n + k) % urls.len()];
                        if renew(&c, url, "ORDERS", id).await == Some(StatusCode::OK) {
                            break;
                        }
                    }
                }
                n += 1;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        })
    };

    // Kill the leader (as of now: elections may have happened since the start): a new one is
    // elected, writes continue.
    let leader = cl.leader(&[1, 2, 3]).await;
    cl.kill9(leader);
    let killed_at = Instant::now();
    let survivors = others(&[1, 2, 3], leader);
    let deadline = Instant::now() + LIMIT;
    loop {
        if cl.register(survivors[1], "ORDERS", "o3").await == StatusCode::NO_CONTENT {
            break;
        }
        assert!(Instant::now() < deadline, "no write accepted after the leader was killed");
    }
    eprintln!("first write accepted {:?} after the leader was killed", killed_at.elapsed());
    let new_leader = cl.leader(&survivors).await;
    assert_ne!(new_leader, leader);

    // o3 gets no heartbeats: it must be evicted (3 s lease + the new leader's grace), while
    // o1 and o2, renewed throughout, stay.
    let deadline = Instant::now() + LIMIT;
    loop {
        let got = cl.ids(new_leader, "ORDERS", false).await.unwrap_or_default();
        assert!(got.contains("o1") && got.contains("o2"), "a renewed instance was evicted after failover: {got:?}");
        if !got.contains("o3") {
            break;
        }
        assert!(Instant::now() < deadline, "o3 was never evicted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for id in &survivors {
        cl.converge(*id, "ORDERS", &set(&["o1", "o2"])).await;
    }

    // The old leader comes back as a follower and catches up.
    cl.spawn(leader, &[]);
    cl.converge(leader, "ORDERS", &set(&["o1", "o2"])).await;
    let _ = stop_tx.send(true);
    let _ = heartbeat.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn isolated_node_refuses_writes_and_renewals_keeps_reading_and_catches_up() {
    let cl = Cluster::start(3, &[]).await;
    let leader = cl.leader(&[1, 2, 3]).await;
    let cut = others(&[1, 2, 3], leader)[0];
    let majority = others(&[1, 2, 3], cut);
    assert_eq!(cl.register(leader, "PAY", "p1").await, StatusCode::NO_CONTENT);
    cl.converge(cut, "PAY", &set(&["p1"])).await;

    cl.isolate(cut, true);
    // Within a few election timeouts the isolated node stops acknowledging renewals (so its
    // clients fail over) ...
    let deadline = Instant::now() + LIMIT;
    while renew(&cl.c, &cl.member(cut).eureka(), "PAY", "p1").await != Some(StatusCode::SERVICE_UNAVAILABLE) {
        assert!(Instant::now() < deadline, "isolated node kept acknowledging renewals");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // ... and refuses writes with 503 and a reason, in bounded time rather than hanging.
    let started = Instant::now();
    let r =
        cl.c.post(format!("{}/apps/PAY", cl.member(cut).eureka()))
            .json(&short_lease_instance("PAY", "px"))
            .send()
            .await
            .unwrap();
    let took = started.elapsed();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = r.text().await.unwrap();
    assert!(body.contains("leader"), "503 without a reason: {body:?}");
    assert!(took < Duration::from_secs(10), "refusal took {took:?}");
    // Reads keep working from the local copy.
    assert_eq!(cl.ids(cut, "PAY", false).await, Some(set(&["p1"])));
    // A linearizable read cannot be served there.
    assert_eq!(cl.ids(cut, "PAY", true).await, None);

    // The majority keeps working.
    let leader2 = cl.leader(&majority).await;
    assert_eq!(cl.register(leader2, "PAY", "p2").await, StatusCode::NO_CONTENT);
    let other = others(&majority, leader2)[0];
    assert_eq!(cl.register(other, "PAY", "p3").await, StatusCode::NO_CONTENT);
    assert_eq!(renew(&cl.c, &cl.member(other).eureka(), "PAY", "p1").await, Some(StatusCode::OK));
    assert!(!cl.ids(cut, "PAY", false).await.unwrap().contains("p2"), "isolated node saw a write it cannot have");

    cl.isolate(cut, false);
    cl.converge(cut, "PAY", &set(&["p1", "p2", "p3"])).await;
    let deadline = Instant::now() + LIMIT;
    while cl.register(cut, "PAY", "p4").await != StatusCode::NO_CONTENT {
        assert!(Instant::now() < deadline, "healed node does not accept writes");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for id in [1, 2, 3] {
        cl.converge(id, "PAY", &set(&["p1", "p2", "p3", "p4"])).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_acknowledged_registration_survives_kill9_of_all_nodes() {
    let mut cl = Cluster::start(3, &[]).await;
    cl.leader(&[1, 2, 3]).await;
    let urls: Vec<String> = cl.members.iter().map(Member::eureka).collect();
    let acked = std::sync::Arc::new(std::sync::Mutex::new(BTreeSet::new()));
    let mut writers = Vec::new();
    for w in 0..6usize {
        let (c, url, acked) = (cl.c.clone(), urls[w % 3].clone(), acked.clone());
        writers.push(tokio::spawn(async move {
            for i in 0.. {
                let id = format!("w{w}-{i}");
                if register_at(&c, &url, "STREAM", &id).await == StatusCode::NO_CONTENT {
                    acked.lock().unwrap().insert(id);
                } else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }));
    }
    // Kill every node in the middle of the stream.
    let deadline = Instant::now() + LIMIT;
    while acked.lock().unwrap().len() < 300 {
        assert!(Instant::now() < deadline, "registrations too slow");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for id in [1, 2, 3] {
        cl.kill9(id);
    }
    for w in &writers {
        w.abort();
    }
    let acked: BTreeSet<String> = acked.lock().unwrap().clone();
    for id in [1, 2, 3] {
        cl.spawn(id, &[]);
    }
    let leader = cl.leader(&[1, 2, 3]).await;
    let got = cl.ids(leader, "STREAM", true).await.expect("linearizable read after restart");
    let lost: Vec<&String> = acked.difference(&got).collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged registrations lost: {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(10)]
    );
    eprintln!("{} acknowledged registrations, all present after kill -9 of every node", acked.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn add_a_fourth_node_by_snapshot_then_remove_one() {
    // Snapshots every 20 entries, so the log the new node needs has been purged and it is
    // caught up by snapshot installation.
    let mut cl = Cluster::start(3, &["--raft-snapshot-every", "20"]).await;
    let leader = cl.leader(&[1, 2, 3]).await;
    let mut expected = Vec::new();
    for i in 0..1200 {
        let id = format!("m{i}");
        assert_eq!(cl.register(leader, "MEMBERS", &id).await, StatusCode::NO_CONTENT);
        expected.push(id);
    }
    let expected: BTreeSet<String> = expected.into_iter().collect();
    let st = cl.status(leader).await.unwrap();
    assert!(st["purged_index"].as_u64().is_some(), "log was not purged behind a snapshot: {st}");

    cl.add_member(4).await;
    cl.spawn(4, &["--raft-join"]);
    // Not yet a member: it must not show clients an empty registry.
    let r = cl.c.get(format!("{}/apps", cl.member(4).eureka())).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let r = cl.c.get(format!("{}/readyz", cl.member(4).base())).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let follower = others(&[1, 2, 3], leader)[0];
    // Added with the CLI through a follower: the admin API forwards to the leader.
    let (code, out, err) =
        cli(&["cluster", "add", "4", &cl.member(4).url(), "--server", &cl.member(follower).eureka()]).await;
    assert_eq!(code, Some(0), "cluster add failed: {err}");
    assert!(out.contains("ROLE") && out.lines().count() >= 5, "{out}");
    cl.converge(4, "MEMBERS", &expected).await;
    let st = cl.status(4).await.unwrap();
    let voters = st["members"].as_array().unwrap().iter().filter(|m| m["voter"] == true).count();
    assert_eq!(voters, 4, "{st}");
    let (code, out, _) = cli(&["cluster", "status", "--output", "json", "--server", &cl.member(4).base()]).await;
    assert_eq!(code, Some(0));
    let v: Value = serde_json::from_str(&out).expect("json output");
    assert_eq!(v["members"].as_array().map(Vec::len), Some(4));
    assert!(v["leader"].as_u64().is_some_and(|l| (1..=4).contains(&l)), "{v}");
    let (code, out, _) = cli(&["cluster", "status", "--server", &cl.member(4).base()]).await;
    assert_eq!(code, Some(0));
    assert!(out.contains("; leader ") && out.contains("voter"), "{out}");
    // Errors are one line naming the server, with a non-zero exit.
    let (code, _, err) = cli(&["cluster", "remove", "99", "--server", &cl.member(4).base()]).await;
    assert_eq!(code, Some(1));
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains(&cl.member(4).base()) && err.contains("404"), "{err}");
    let (code, _, err) = cli(&["cluster", "status", "--server", "http://127.0.0.1:9"]).await;
    assert_eq!(code, Some(1));
    assert!(err.contains("http://127.0.0.1:9") && err.contains("unreachable"), "{err}");

    // Bad input is refused with a reason.
    let r =
        cl.c.post(format!("{}/v1/cluster/nodes", cl.member(leader).base()))
            .json(&serde_json::json!({"id": 5, "url": "ftp://x"}))
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    // Remove the current leader (through another node): the others go on with three voters.
    let leader = cl.leader(&[1, 2, 3, 4]).await;
    let rest: Vec<u64> = others(&[1, 2, 3, 4], leader);
    let r = cl.c.delete(format!("{}/v1/cluster/nodes/{leader}", cl.member(rest[0]).base())).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    cl.kill9(leader);
    let new_leader = cl.leader(&rest).await;
    assert_eq!(cl.register(rest[0], "MEMBERS", "after").await, StatusCode::NO_CONTENT);
    let st = cl.status(new_leader).await.unwrap();
    let ids: BTreeSet<u64> = st["members"].as_array().unwrap().iter().filter_map(|m| m["id"].as_u64()).collect();
    assert_eq!(ids, rest.iter().copied().collect());

    // A member's URL changes without it losing its identity.
    let moved = rest.iter().copied().find(|i| *i != new_leader).unwrap();
    let url = cl.member(moved).base();
    let r =
        cl.c.put(format!("{}/v1/cluster/nodes/{moved}", cl.member(new_leader).base()))
            .json(&serde_json::json!({"url": url}))
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    let st = cl.status(new_leader).await.unwrap();
    let m = st["members"].as_array().unwrap().iter().find(|m| m["id"].as_u64() == Some(moved)).cloned().unwrap();
    assert_eq!(m["url"], Value::from(url));
    assert_eq!(m["voter"], true);
    assert_eq!(cl.register(moved, "MEMBERS", "after2").await, StatusCode::NO_CONTENT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_node_raft_cluster_persists() {
    let dir = tempfile::tempdir().unwrap();
    let c = Client::new();
    let start = |dir: &Path| ServerProcess::start(dir, &["--replication", "raft"]);
    let mut p = start(dir.path());
    let eureka = p.eureka_url();
    let deadline = Instant::now() + LIMIT;
    while register_at(&c, &eureka, "SOLO", "s1").await != StatusCode::NO_CONTENT {
        assert!(Instant::now() < deadline, "single raft node never accepted a write");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(ids_at(&c, &eureka, "SOLO", true).await, Some(set(&["s1"])));
    p.kill9();
    // Restarted on another port: the registration is back, and the node's own URL follows.
    let p = start(dir.path());
    let eureka = p.eureka_url();
    let deadline = Instant::now() + LIMIT;
    loop {
        let st: Option<Value> = match c.get(format!("http://{}/v1/status", p.addr)).send().await {
            Ok(r) => r.json().await.ok(),
            Err(_) => None,
        };
        let url_ok = st.is_some_and(|s| s["leader_url"].as_str() == Some(format!("http://{}", p.addr).as_str()));
        if url_ok && ids_at(&c, &eureka, "SOLO", true).await == Some(set(&["s1"])) {
            break;
        }
        assert!(Instant::now() < deadline, "registration lost across restart, or stale own URL");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_is_built_once_the_log_outgrows_the_size_limit() {
    // The entry count that would trigger one is out of reach: only the size rule can.
    let dir = tempfile::tempdir().unwrap();
    let c = Client::new();
    let p = ServerProcess::start(
        dir.path(),
        &["--replication", "raft", "--raft-snapshot-every", "10000000", "--store-compact-bytes", "65536"],
    );
    let eureka = p.eureka_url();
    let status = || async {
        let r = c.get(format!("http://{}/v1/status", p.addr)).send().await.ok()?;
        r.json::<Value>().await.ok()
    };
    let deadline = Instant::now() + LIMIT;
    let mut registered = 0;
    // Each registration is one entry of a few hundred bytes: 64 KiB takes a few hundred.
    while status().await.is_none_or(|s| s["snapshot_index"].is_null()) {
        assert!(registered < 2000, "no snapshot after {registered} registrations");
        assert!(Instant::now() < deadline, "no snapshot within {LIMIT:?}");
        if register_at(&c, &eureka, "GROW", &format!("g{registered}")).await == StatusCode::NO_CONTENT {
            registered += 1;
        } else {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert!(registered >= 20, "a snapshot after only {registered} registrations: not by size");
}

/// Posts raw bytes to a node's raft route; the status, or None if the node did not answer.
async fn post_raw(c: &Client, base: &str, path: &str, body: Vec<u8>) -> Option<StatusCode> {
    c.post(format!("{base}{path}")).body(body).send().await.ok().map(|r| r.status())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_raft_messages_are_refused_and_change_nothing() {
    use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
    use openraft::{CommittedLeaderId, LogId, SnapshotMeta, StoredMembership, Vote};
    use synod::core::command::Command;
    use synod::core::model::InstanceKey;
    use synod::replication::raft::types::{encode, Proposal, TypeConfig};

    let cl = Cluster::start(3, &[]).await;
    let leader = cl.leader(&[1, 2, 3]).await;
    let follower = others(&[1, 2, 3], leader)[0];
    assert_eq!(cl.register(follower, "HOSTILE", "h1").await, StatusCode::NO_CONTENT);
    let term = cl.status(leader).await.unwrap()["term"].as_u64().unwrap();
    let base = cl.member(follower).base();
    let c = &cl.c;
    let bad = StatusCode::BAD_REQUEST;

    // A relayed renewal claiming a 2^62-byte name (aborted the process), one claiming 2^63
    // (panicked), and an append with term 2^64-1 from node 99 (wrapped the term for good).
    let renew_bomb = b"\x01\xfd\x00\x00\x00\x00\x00\x00\x00\x40".to_vec();
    assert_eq!(post_raw(c, &base, "/v1/raft/renew", renew_bomb).await, Some(bad));
    let renew_bomb = b"\x01\xfd\x00\x00\x00\x00\x00\x00\x00\x80".to_vec();
    assert_eq!(post_raw(c, &base, "/v1/raft/renew", renew_bomb).await, Some(bad));
    let wrap = b"\xfd\xff\xff\xff\xff\xff\xff\xff\xff\x63\x01\x00\x00\x00".to_vec();
    assert_eq!(post_raw(c, &base, "/v1/raft/append", wrap).await, Some(bad));

    // Well-formed messages from a node that is not a member, with a term that would depose
    // the leader: refused.
    let stranger = Vote::new_committed(term + 5, 99);
    let append =
        AppendEntriesRequest::<TypeConfig> { vote: stranger, prev_log_id: None, entries: vec![], leader_commit: None };
    let forbidden = Some(StatusCode::FORBIDDEN);
    assert_eq!(post_raw(c, &base, "/v1/raft/append", encode(&append).unwrap()).await, forbidden);
    let vote = VoteRequest::<u64> { vote: Vote::new(term + 5, 99), last_log_id: None };
    assert_eq!(post_raw(c, &base, "/v1/raft/vote", encode(&vote).unwrap()).await, forbidden);
    // An append in the receiver's own name (openraft would take it as an election won).
    let own = AppendEntriesRequest::<TypeConfig> {
        vote: Vote::new_committed(term, follower),
        prev_log_id: None,
        entries: vec![],
        leader_commit: None,
    };
    assert_eq!(post_raw(c, &base, "/v1/raft/append", encode(&own).unwrap()).await, Some(bad));
    // A member's id with a term near overflow.
    let vote = VoteRequest::<u64> { vote: Vote::new(1 << 60, leader), last_log_id: None };
    assert_eq!(post_raw(c, &base, "/v1/raft/vote", encode(&vote).unwrap()).await, Some(bad));
    // A snapshot chunk far past the start of any stream (would grow a buffer to 1 TiB).
    let chunk = InstallSnapshotRequest::<TypeConfig> {
        vote: Vote::new_committed(term, leader),
        meta: SnapshotMeta {
            last_log_id: Some(LogId::new(CommittedLeaderId::new(term, leader), 1)),
            last_membership: StoredMembership::default(),
            snapshot_id: "forged".into(),
        },
        offset: 1 << 40,
        data: vec![0; 16],
        done: false,
    };
    assert_eq!(post_raw(c, &base, "/v1/raft/snapshot", encode(&chunk).unwrap()).await, Some(bad));

    // Forwarded commands meet the HTTP layer's rules: no control characters, no evictions.
    let leader_base = cl.member(leader).base();
    let key = InstanceKey::new("HOSTILE", "h1");
    let meta = Command::UpdateMetadata { key: key.clone(), entries: [("k".into(), "\u{1}".into())].into(), now: 1 };
    let evict = Command::Evict { keys: vec![key], now: u64::MAX };
    for cmd in [meta, evict] {
        let body = encode(&Proposal::from(vec![cmd])).unwrap();
        assert_eq!(post_raw(c, &leader_base, "/v1/raft/forward", body).await, Some(bad));
    }

    // Nothing changed: every node is up with the same leader and term, the registry is
    // intact, and writes through the follower still commit.
    for id in [1, 2, 3] {
        let st = cl.status(id).await.expect("node still answers");
        assert_eq!(st["leader"].as_u64(), Some(leader), "node {id}: {st}");
        assert_eq!(st["term"].as_u64(), Some(term), "node {id}: {st}");
    }
    assert_eq!(cl.ids(leader, "HOSTILE", true).await, Some(set(&["h1"])));
    let xml = c.get(format!("{}/apps", cl.member(leader).eureka())).send().await.unwrap().text().await.unwrap();
    assert!(!xml.contains('\u{1}'), "a control character reached the registry");
    assert_eq!(cl.register(follower, "HOSTILE", "h2").await, StatusCode::NO_CONTENT);
    cl.converge(follower, "HOSTILE", &set(&["h1", "h2"])).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_a_leader_change_each_lease_expires_on_its_own() {
    // Eviction every second with self-preservation off: an instance whose lease ran out is
    // gone within seconds.
    let mut cl = Cluster::start(3, &["--eviction-interval", "1s", "--self-preservation", "false"]).await;
    let leader = cl.leader(&[1, 2, 3]).await;
    // One client with a ten-minute lease, one with three seconds; neither renews.
    let mut long = short_lease_instance("LONG", "l1");
    long["instance"]["leaseInfo"]["durationInSecs"] = Value::from(600);
    let r = cl.c.post(format!("{}/apps/LONG", cl.member(leader).eureka())).json(&long).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(cl.register(leader, "SHORT", "s1").await, StatusCode::NO_CONTENT);
    let survivors = others(&[1, 2, 3], leader);
    for id in &survivors {
        cl.converge(*id, "SHORT", &set(&["s1"])).await;
    }
    cl.kill9(leader);
    let new_leader = cl.leader(&survivors).await;
    // The short lease runs out on its own clock: the long one used to hold every eviction
    // back for its whole ten minutes after the leader change.
    let deadline = Instant::now() + LIMIT;
    while cl.ids(new_leader, "SHORT", false).await != Some(BTreeSet::new()) {
        assert!(Instant::now() < deadline, "the short lease was not evicted after the leader change");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(cl.ids(new_leader, "LONG", false).await, Some(set(&["l1"])));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_isolated_leader_does_not_claim_to_lead() {
    let cl = Cluster::start(3, &[]).await;
    let leader = cl.leader(&[1, 2, 3]).await;
    assert_eq!(cl.register(leader, "ISO", "i1").await, StatusCode::NO_CONTENT);
    cl.isolate(leader, true);
    // It used to report `state: leader` and `lease_owner: true` for the whole partition.
    let deadline = Instant::now() + LIMIT;
    loop {
        let st = cl.status(leader).await.expect("the isolated node still answers");
        if st["state"] != "leader" {
            assert_ne!(st["lease_owner"], true, "{st}");
            assert_eq!(st["accepts_writes"], false, "{st}");
            break;
        }
        assert!(Instant::now() < deadline, "the isolated leader kept claiming to lead: {st}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(cl.register(leader, "ISO", "i2").await, StatusCode::SERVICE_UNAVAILABLE);
    cl.isolate(leader, false);
    let majority = others(&[1, 2, 3], leader);
    let new_leader = cl.leader(&[1, 2, 3]).await;
    assert!(new_leader == leader || majority.contains(&new_leader));
}

/// The state of instance `id` of HIST as node `eureka` reads it linearizably: `Ok(None)`
/// when absent, `Ok(Some("seq=N"))` when present; `Err` when the node cannot answer.
async fn hist_state(c: &Client, eureka: &str, id: &str) -> Result<Option<String>, ()> {
    let r = c
        .get(format!("{eureka}/apps/HIST/{id}?consistency=linearizable"))
        .header("Accept", "application/json")
        .send()
        .await
        .map_err(|_| ())?;
    match r.status() {
        StatusCode::NOT_FOUND => Ok(None),
        s if s.is_success() => {
            let v: Value = r.json().await.map_err(|_| ())?;
            Ok(v["instance"]["metadata"]["seq"].as_str().map(|n| format!("seq={n}")))
        }
        _ => Err(()),
    }
}

/// Registrations and cancels from several writers, each owning its keys, through random
/// nodes while nodes are killed and restarted, paused and cut off at random. Every
/// linearizable read a writer makes of its own key, during the faults and after them on
/// every node, must show its last acknowledged write (or one whose fate is unknown): no
/// acknowledged write is lost or seen undone. `SYNOD_FAULT_SEED` replays a run.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_kills_pauses_and_partitions_lose_no_acknowledged_write() {
    use common::history::{allowed, fate, Fate, Write};
    use rand::{Rng, SeedableRng};
    use std::collections::BTreeMap;
    let seed: u64 = std::env::var("SYNOD_FAULT_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    println!("SYNOD_FAULT_SEED={seed}");
    let mut cl = Cluster::start(3, &[]).await;
    cl.leader(&[1, 2, 3]).await;
    let eurekas: Vec<String> = (1..=3).map(|id| cl.member(id).eureka()).collect();
    let c = Client::builder().timeout(Duration::from_secs(3)).build().unwrap();
    let run_for = Duration::from_secs(15);
    let started = Instant::now();
    let mut writers = Vec::new();
    for w in 0..6u64 {
        let (c, eurekas) = (c.clone(), eurekas.clone());
        writers.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ (w + 1));
            let mut histories: BTreeMap<String, Vec<Write>> = BTreeMap::new();
            let (mut seq, mut reads) = (0u64, 0u64);
            while started.elapsed() < run_for {
                tokio::time::sleep(Duration::from_millis(rng.gen_range(2..15))).await;
                let eureka = &eurekas[rng.gen_range(0..3)];
                let host = format!("10.0.8.{}", w * 3 + rng.gen_range(0..3));
                let id = format!("{host}:hist:80");
                if rng.gen_bool(0.25) {
                    if let Ok(state) = hist_state(&c, eureka, &id).await {
                        let history = histories.get(&id).map(Vec::as_slice).unwrap_or_default();
                        let ok = allowed(history, None);
                        assert!(ok.contains(&state), "{id} read {state:?} from {eureka}; allowed {ok:?} (seed {seed})");
                        reads += 1;
                    }
                    continue;
                }
                let (effect, r) = if rng.gen_bool(0.6) {
                    seq += 1;
                    let mut body = py_instance("hist", &host, 80);
                    body["instance"]["metadata"]["seq"] = Value::String(seq.to_string());
                    body["instance"]["lastDirtyTimestamp"] = Value::String(format!("{}", 1_700_000_000_000u64 + seq));
                    (Some(format!("seq={seq}")), c.post(format!("{eureka}/apps/HIST")).json(&body).send().await)
                } else {
                    (None, c.delete(format!("{eureka}/apps/HIST/{id}")).send().await)
                };
                histories.entry(id).or_default().push(Write { effect, fate: fate(&r) });
            }
            (histories, reads)
        }));
    }

    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut faults = Vec::new();
    while started.elapsed() < run_for {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(800..1600))).await;
        let id = rng.gen_range(1..=3u64);
        let hold = Duration::from_millis(rng.gen_range(400..1500));
        match rng.gen_range(0..3) {
            0 => {
                faults.push(format!("kill {id}"));
                cl.kill9(id);
                tokio::time::sleep(hold).await;
                tokio::task::block_in_place(|| cl.spawn(id, &[]));
            }
            1 => {
                faults.push(format!("pause {id}"));
                let pid = cl.member(id).process.as_ref().map(|p| p.child.id().to_string()).unwrap_or_default();
                let _ = std::process::Command::new("kill").args(["-STOP", &pid]).status();
                tokio::time::sleep(hold).await;
                let _ = std::process::Command::new("kill").args(["-CONT", &pid]).status();
            }
            _ => {
                faults.push(format!("isolate {id}"));
                cl.isolate(id, true);
                tokio::time::sleep(hold).await;
                cl.isolate(id, false);
            }
        }
    }
    println!("faults: {faults:?}");
    let mut histories: BTreeMap<String, Vec<Write>> = BTreeMap::new();
    let mut reads = 0;
    for w in writers {
        let (h, r) = w.await.unwrap();
        histories.extend(h);
        reads += r;
    }
    cl.leader(&[1, 2, 3]).await;
    let acked: usize = histories.values().map(|h| h.iter().filter(|w| w.fate == Fate::Acked).count()).sum();
    for (id, history) in &histories {
        let ok = allowed(history, None);
        for eureka in &eurekas {
            let deadline = Instant::now() + LIMIT;
            let state = loop {
                match hist_state(&c, eureka, id).await {
                    Ok(s) => break s,
                    Err(()) => {
                        assert!(Instant::now() < deadline, "{eureka} never answered a linearizable read");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            };
            assert!(
                ok.contains(&state),
                "{id} ended as {state:?} on {eureka}; allowed {ok:?} (seed {seed}, faults {faults:?}, history {history:?})"
            );
        }
    }
    assert!(acked > 100 && reads > 20, "too little happened to say anything: {acked} writes, {reads} reads");
}

/// A write a follower forwarded, whose answer from the leader is lost (the leader committed
/// it; the follower cannot tell), is not sent again. It used to be re-proposed until the
/// deadline, so one cancel was applied several times, and a retried copy could undo a later
/// write.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_forwarded_write_whose_answer_is_lost_is_not_sent_twice() {
    let cl = Cluster::start(3, &[]).await;
    let leader = cl.leader(&[1, 2, 3]).await;
    let follower = others(&[1, 2, 3], leader)[0];
    assert_eq!(cl.register(leader, "ONCE", "o1").await, StatusCode::NO_CONTENT);
    cl.converge(follower, "ONCE", &set(&["o1"])).await;
    let proxy = &cl.member(leader).proxy;
    proxy.lose_answers_to(Some("/v1/raft/forward"));
    let r = cl.c.delete(format!("{}/apps/ONCE/o1", cl.member(follower).eureka())).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE, "a write in doubt is answered as such");
    let body = r.text().await.unwrap();
    assert!(body.contains("may still be applied"), "{body}");
    proxy.lose_answers_to(None);
    assert_eq!(proxy.answers_lost.load(std::sync::atomic::Ordering::SeqCst), 1, "the forwarded write was sent again");
    // It was carried out, once.
    cl.converge(follower, "ONCE", &set(&[])).await;
}
