//! p2p under faults, with three nodes as separate processes on loopback. Every link from one
//! node to another runs through its own proxy, so a test can cut any set of links (a
//! partition) while clients still reach every node directly. Each test reproduces one way
//! nodes used to disagree, and checks they now agree on the last write within seconds, at
//! the default anti-entropy interval unless it says otherwise.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::history::{allowed, fate, Fate, Write};
use common::proxy::Proxy;
use common::{py_instance, ServerProcess};
use reqwest::{Client, StatusCode};
use serde_json::Value;

/// How long nodes may take to agree after a heal or a last write.
const AGREE_WITHIN: Duration = Duration::from_secs(5);

use common::free_addr;

/// Three p2p nodes; `links[i][j]` carries node i's requests to node j.
struct Cluster {
    addrs: Vec<String>,
    dirs: Vec<tempfile::TempDir>,
    links: Vec<Vec<Option<Proxy>>>,
    nodes: Vec<Option<ServerProcess>>,
    extra: Vec<String>,
}

impl Cluster {
    async fn start(extra: &[&str]) -> Cluster {
        let addrs: Vec<String> = (0..3).map(|_| free_addr()).collect();
        let mut links = Vec::new();
        for i in 0..3 {
            let mut row = Vec::new();
            for (j, addr) in addrs.iter().enumerate() {
                row.push(if i == j { None } else { Some(Proxy::start(addr.clone()).await) });
            }
            links.push(row);
        }
        let dirs = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        let mut c = Cluster {
            addrs,
            dirs,
            links,
            nodes: vec![None, None, None],
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        for i in 0..3 {
            c.start_node(i);
        }
        c
    }

    fn start_node(&mut self, i: usize) {
        let id = (i + 1).to_string();
        let peers: Vec<String> = (0..3)
            .map(|j| match &self.links[i][j] {
                Some(p) => format!("{}=http://{}", j + 1, p.addr),
                None => format!("{}=http://{}", j + 1, self.addrs[j]),
            })
            .collect();
        let mut args: Vec<&str> = vec!["--replication", "p2p", "--node-id", &id, "--peer-sync-wait", "3s"];
        for p in &peers {
            args.extend(["--peer", p.as_str()]);
        }
        args.extend(self.extra.iter().map(String::as_str));
        self.nodes[i] = Some(ServerProcess::start_at(&self.addrs[i], self.dirs[i].path(), &args));
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut n) = self.nodes[i].take() {
            n.kill9();
        }
    }

    /// Cuts (or restores) every link between node `i` and the others, both ways.
    fn isolate(&self, i: usize, cut: bool) {
        for j in 0..3 {
            if let Some(p) = &self.links[i][j] {
                p.set_blocked(cut);
            }
            if let Some(p) = &self.links[j][i] {
                p.set_blocked(cut);
            }
        }
    }

    fn base(&self, i: usize) -> String {
        format!("http://{}/eureka", self.addrs[i])
    }

    fn bases(&self) -> Vec<String> {
        (0..3).map(|i| self.base(i)).collect()
    }
}

/// instance id → status, as node `base` reports it (`None` while it does not answer); an
/// instance with a `seq` in its metadata shows it too (`UP seq=4`).
async fn registry(c: &Client, base: &str) -> Option<BTreeMap<String, String>> {
    let r = c.get(format!("{base}/apps")).header("Accept", "application/json").send().await.ok()?;
    if !r.status().is_success() {
        return None;
    }
    let v: Value = r.json().await.ok()?;
    let mut out = BTreeMap::new();
    let apps = match &v["applications"]["application"] {
        Value::Array(a) => a.clone(),
        _ => Vec::new(),
    };
    for app in apps {
        for i in app["instance"].as_array()? {
            let mut shown = i["status"].as_str()?.to_string();
            if let Some(seq) = i["metadata"]["seq"].as_str() {
                shown = format!("{shown} seq={seq}");
            }
            out.insert(i["instanceId"].as_str()?.to_string(), shown);
        }
    }
    Some(out)
}

/// Waits until every node in `bases` reports exactly `expected`, within `within`.
async fn agree(c: &Client, bases: &[String], expected: &BTreeMap<String, String>, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let mut all = Vec::new();
        for b in bases {
            all.push(registry(c, b).await);
        }
        if all.iter().all(|r| r.as_ref() == Some(expected)) {
            return;
        }
        assert!(Instant::now() < deadline, "nodes did not agree on {expected:?} in time: {all:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until every node in `bases` reports the same registry; returns it.
async fn same_everywhere(c: &Client, bases: &[String], within: Duration) -> BTreeMap<String, String> {
    let deadline = Instant::now() + within;
    loop {
        let mut all = Vec::new();
        for b in bases {
            all.push(registry(c, b).await);
        }
        if all.iter().all(|r| r.is_some() && *r == all[0]) {
            return all[0].clone().unwrap_or_default();
        }
        assert!(Instant::now() < deadline, "nodes still disagree: {all:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn expect(items: &[(&str, &str)]) -> BTreeMap<String, String> {
    items.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

async fn register(c: &Client, base: &str, app: &str, host: &str) -> StatusCode {
    c.post(format!("{base}/apps/{app}")).json(&py_instance(app, host, 80)).send().await.unwrap().status()
}

async fn wait_ready(c: &Client, addr: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !c.get(format!("http://{addr}/readyz")).send().await.is_ok_and(|r| r.status() == StatusCode::OK) {
        assert!(Instant::now() < deadline, "{addr} never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Anti-entropy rounds every 200 ms while instances are cancelled through every node: a
/// round that compared a peer's older listing with the live registry used to register the
/// cancelled instances again, everywhere.
#[tokio::test]
async fn cancels_racing_anti_entropy_rounds_stay_cancelled() {
    let cluster = Cluster::start(&["--anti-entropy-interval", "200ms"]).await;
    let c = Client::new();
    let bases = cluster.bases();
    let hosts: Vec<String> = (0..30).map(|n| format!("10.0.1.{n}")).collect();
    for (n, h) in hosts.iter().enumerate() {
        assert_eq!(register(&c, &bases[n % 3], "racer", h).await, StatusCode::NO_CONTENT);
    }
    let all: Vec<(String, String)> = hosts.iter().map(|h| (format!("{h}:racer:80"), "UP".to_string())).collect();
    agree(&c, &bases, &all.iter().cloned().collect(), AGREE_WITHIN).await;
    for (n, h) in hosts.iter().enumerate() {
        let r = c.delete(format!("{}/apps/RACER/{h}:racer:80", bases[(n + 1) % 3])).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    agree(&c, &bases, &BTreeMap::new(), AGREE_WITHIN).await;
    // And it stays so over a dozen more rounds.
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        for b in &bases {
            assert_eq!(registry(&c, b).await, Some(BTreeMap::new()), "a cancelled instance came back on {b}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The case: every node holds an override; node 1, cut off, takes the instance out
/// of service, acknowledges, and is killed; the partition heals and node 1 restarts. Nodes
/// used to stay at [OUT_OF_SERVICE, UP, UP] for good.
#[tokio::test]
async fn an_override_on_an_isolated_node_killed_and_restarted_reaches_everyone() {
    let mut cluster = Cluster::start(&[]).await;
    let c = Client::new();
    let bases = cluster.bases();
    assert_eq!(register(&c, &bases[0], "svc", "10.0.2.1").await, StatusCode::NO_CONTENT);
    agree(&c, &bases, &expect(&[("10.0.2.1:svc:80", "UP")]), AGREE_WITHIN).await;
    let status_url = |b: &str, v: &str| format!("{b}/apps/SVC/10.0.2.1:svc:80/status?value={v}");
    assert_eq!(c.put(status_url(&bases[1], "UP")).send().await.unwrap().status(), StatusCode::OK);
    agree(&c, &bases, &expect(&[("10.0.2.1:svc:80", "UP")]), AGREE_WITHIN).await;

    cluster.isolate(0, true);
    assert_eq!(c.put(status_url(&bases[0], "OUT_OF_SERVICE")).send().await.unwrap().status(), StatusCode::OK);
    cluster.kill(0);
    cluster.isolate(0, false);
    cluster.start_node(0);
    agree(&c, &bases, &expect(&[("10.0.2.1:svc:80", "OUT_OF_SERVICE")]), AGREE_WITHIN).await;
}

/// A re-registration and a cancel of one instance sent to different nodes at the same time
/// can reach the nodes in opposite orders; they must still end in one state everywhere, in
/// seconds, not after an anti-entropy round.
#[tokio::test]
async fn a_register_and_a_cancel_through_different_nodes_agree_within_seconds() {
    let cluster = Cluster::start(&[]).await;
    let c = Client::new();
    let bases = cluster.bases();
    let hosts: Vec<String> = (0..20).map(|n| format!("10.0.3.{n}")).collect();
    for h in &hosts {
        assert_eq!(register(&c, &bases[0], "race", h).await, StatusCode::NO_CONTENT);
    }
    let all: Vec<(String, String)> = hosts.iter().map(|h| (format!("{h}:race:80"), "UP".to_string())).collect();
    agree(&c, &bases, &all.iter().cloned().collect(), AGREE_WITHIN).await;
    for (n, h) in hosts.iter().enumerate() {
        let (reg, del) = (&bases[n % 3], &bases[(n + 1) % 3]);
        let mut body = py_instance("race", h, 80);
        body["instance"]["lastDirtyTimestamp"] = Value::String("1700000000001".into());
        let register = c.post(format!("{reg}/apps/RACE")).json(&body).send();
        let cancel = c.delete(format!("{del}/apps/RACE/{h}:race:80")).send();
        let (r, d) = tokio::join!(register, cancel);
        assert_eq!(r.unwrap().status(), StatusCode::NO_CONTENT);
        assert_eq!(d.unwrap().status(), StatusCode::OK);
    }
    same_everywhere(&c, &bases, AGREE_WITHIN).await;
}

/// Tombstones survive restarts: node 3, cut off, still holds an instance the others
/// cancelled; they restart (their memory of the cancel would be gone without durable
/// tombstones) before the partition heals. The instance must not come back.
#[tokio::test]
async fn a_cancel_is_remembered_across_restarts_and_wins_over_a_healed_nodes_copy() {
    let mut cluster = Cluster::start(&[]).await;
    let c = Client::new();
    let bases = cluster.bases();
    assert_eq!(register(&c, &bases[0], "gone", "10.0.4.1").await, StatusCode::NO_CONTENT);
    assert_eq!(register(&c, &bases[0], "kept", "10.0.4.2").await, StatusCode::NO_CONTENT);
    let both = expect(&[("10.0.4.1:gone:80", "UP"), ("10.0.4.2:kept:80", "UP")]);
    agree(&c, &bases, &both, AGREE_WITHIN).await;

    cluster.isolate(2, true);
    let r = c.delete(format!("{}/apps/GONE/10.0.4.1:gone:80", bases[0])).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let kept = expect(&[("10.0.4.2:kept:80", "UP")]);
    agree(&c, &bases[..2], &kept, AGREE_WITHIN).await;
    for i in 0..2 {
        cluster.kill(i);
    }
    for i in 0..2 {
        cluster.start_node(i);
    }
    for i in 0..2 {
        wait_ready(&c, &cluster.addrs[i]).await;
    }
    assert_eq!(registry(&c, &bases[2]).await, Some(both));
    cluster.isolate(2, false);
    agree(&c, &bases, &kept, AGREE_WITHIN).await;
}

/// Registrations, cancels and status changes from several writers, each owning its keys,
/// while nodes are killed and restarted, paused and cut off at random. Afterwards every node
/// must hold the same registry within seconds, and each key must be in the state of its
/// last acknowledged write (or of a write whose fate is unknown). Set `SYNOD_FAULT_SEED` to
/// replay a run; the seed is printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_kills_pauses_and_partitions_end_in_the_last_acknowledged_writes() {
    use rand::{Rng, SeedableRng};
    let seed: u64 = std::env::var("SYNOD_FAULT_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    println!("SYNOD_FAULT_SEED={seed}");
    let mut cluster = Cluster::start(&[]).await;
    let bases = cluster.bases();
    let c = Client::builder().timeout(Duration::from_secs(2)).build().unwrap();
    // Keys whose status the writers change: registered once, before the faults.
    let status_hosts: Vec<String> = (0..4).map(|n| format!("10.0.6.{n}")).collect();
    for h in &status_hosts {
        assert_eq!(register(&c, &bases[0], "flip", h).await, StatusCode::NO_CONTENT);
    }
    let initial: BTreeMap<String, String> =
        status_hosts.iter().map(|h| (format!("{h}:flip:80"), "UP".to_string())).collect();
    agree(&c, &bases, &initial, AGREE_WITHIN).await;

    let run_for = Duration::from_secs(15);
    let started = Instant::now();
    let mut writers = Vec::new();
    for w in 0..6u64 {
        let (c, bases) = (c.clone(), bases.clone());
        let status_host = status_hosts[w as usize % status_hosts.len()].clone();
        writers.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ (w + 1));
            let mut histories: BTreeMap<String, Vec<Write>> = BTreeMap::new();
            let mut seq = 0u64;
            while started.elapsed() < run_for {
                let base = &bases[rng.gen_range(0..3)];
                // Writes to one key at least 2 ms apart: versions are milliseconds, and two
                // writes in the same millisecond through different nodes are concurrent.
                tokio::time::sleep(Duration::from_millis(rng.gen_range(2..15))).await;
                if w < 4 && rng.gen_bool(0.3) {
                    let status = if rng.gen_bool(0.5) { "OUT_OF_SERVICE" } else { "UP" };
                    let id = format!("{status_host}:flip:80");
                    let r = c.put(format!("{base}/apps/FLIP/{id}/status?value={status}")).send().await;
                    histories.entry(id).or_default().push(Write { effect: Some(status.into()), fate: fate(&r) });
                    continue;
                }
                let host = format!("10.0.7.{}", w * 3 + rng.gen_range(0..3));
                let id = format!("{host}:hist:80");
                let (effect, r) = if rng.gen_bool(0.6) {
                    seq += 1;
                    let mut body = py_instance("hist", &host, 80);
                    body["instance"]["metadata"]["seq"] = Value::String(seq.to_string());
                    body["instance"]["lastDirtyTimestamp"] = Value::String(format!("{}", 1_700_000_000_000u64 + seq));
                    (Some(format!("UP seq={seq}")), c.post(format!("{base}/apps/HIST")).json(&body).send().await)
                } else {
                    (None, c.delete(format!("{base}/apps/HIST/{id}")).send().await)
                };
                histories.entry(id).or_default().push(Write { effect, fate: fate(&r) });
            }
            histories
        }));
    }

    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut faults = Vec::new();
    while started.elapsed() < run_for {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(800..1600))).await;
        let node = rng.gen_range(0..3);
        let hold = Duration::from_millis(rng.gen_range(400..1500));
        match rng.gen_range(0..3) {
            0 => {
                faults.push(format!("kill {}", node + 1));
                cluster.kill(node);
                tokio::time::sleep(hold).await;
                tokio::task::block_in_place(|| cluster.start_node(node));
            }
            1 => {
                faults.push(format!("pause {}", node + 1));
                let pid = cluster.nodes[node].as_ref().map(|n| n.child.id().to_string()).unwrap_or_default();
                let _ = std::process::Command::new("kill").args(["-STOP", &pid]).status();
                tokio::time::sleep(hold).await;
                let _ = std::process::Command::new("kill").args(["-CONT", &pid]).status();
            }
            _ => {
                faults.push(format!("isolate {}", node + 1));
                cluster.isolate(node, true);
                tokio::time::sleep(hold).await;
                cluster.isolate(node, false);
            }
        }
    }
    println!("faults: {faults:?}");
    let mut histories: BTreeMap<String, Vec<Write>> = BTreeMap::new();
    for w in writers {
        histories.extend(w.await.unwrap());
    }
    for a in &cluster.addrs {
        wait_ready(&c, a).await;
    }
    let fin = same_everywhere(&c, &bases, AGREE_WITHIN).await;

    let mut acked = 0;
    for (id, history) in &histories {
        acked += history.iter().filter(|w| w.fate == Fate::Acked).count();
        let initial = id.ends_with(":flip:80").then(|| "UP".to_string());
        let allowed = allowed(history, initial);
        let state = fin.get(id).cloned();
        assert!(
            allowed.contains(&state),
            "{id} ended as {state:?}; allowed {allowed:?} (seed {seed}, faults {faults:?}, history {history:?})"
        );
    }
    assert!(acked > 100, "too few acknowledged writes to say anything: {acked}");
}
