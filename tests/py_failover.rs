//! py-eureka-client 0.13.3, configured with all three nodes of a p2p cluster, keeps working
//! when the node it uses is killed: its heartbeats move to another node (and keep the
//! instance alive on every survivor), and its registry refreshes still bring news.
//!
//! Python is `$SYNOD_PYTHON`, or else `.venv/bin/python` next to Cargo.toml (made by `./test.sh`).

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{py_instance, ServerProcess};
use reqwest::Client;
use serde_json::Value;

const INSTANCE: &str = "apps/PY-FAILOVER/127.0.0.1:py-failover:18091";

fn python() -> PathBuf {
    let p = std::env::var_os("SYNOD_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"));
    assert!(p.exists(), "no Python at {}: run ./test.sh, which creates .venv with py-eureka-client", p.display());
    p
}

use common::free_addr;

/// The client script; killed on drop.
struct PyClient {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl PyClient {
    /// Waits (bounded) for a line of output satisfying `pred`.
    fn wait_line(&self, what: &str, pred: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if pred(&line) => return,
                Ok(_) => {}
                Err(_) => panic!("the client never reported {what}"),
            }
        }
    }
}

impl Drop for PyClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn last_renewal(c: &Client, base: &str) -> Option<u64> {
    let r = c.get(format!("{base}/{INSTANCE}")).header("Accept", "application/json").send().await.ok()?;
    let v: Value = r.json().await.ok()?;
    v["instance"]["leaseInfo"]["lastRenewalTimestamp"].as_u64()
}

#[tokio::test]
async fn client_survives_the_loss_of_its_node() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let addrs: Vec<String> = (0..3).map(|_| free_addr()).collect();
    let peers: Vec<String> = addrs.iter().enumerate().map(|(i, a)| format!("{}=http://{a}", i + 1)).collect();
    let mut nodes: Vec<ServerProcess> = (0..3)
        .map(|i| {
            let id = (i + 1).to_string();
            let mut args = vec!["--replication", "p2p", "--node-id", &id, "--peer-sync-wait", "3s"];
            for p in &peers {
                args.push("--peer");
                args.push(p);
            }
            ServerProcess::start_at(&addrs[i], dirs[i].path(), &args)
        })
        .collect();
    let bases: Vec<String> = nodes.iter().map(|n| n.eureka_url()).collect();
    let c = Client::new();
    for b in &bases {
        common::eventually("every node ready", Duration::from_secs(20), || async {
            let url = b.replace("/eureka", "/readyz");
            c.get(&url).send().await.is_ok_and(|r| r.status() == 200)
        })
        .await;
    }

    // The client uses the first URL of its list: node 1.
    let urls: Vec<String> = bases.iter().map(|b| format!("{b}/")).collect();
    let mut child = Command::new(python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py_client/failover.py"))
        .args([&urls.join(","), "18091", "py-late"])
        .env_remove("HTTP_PROXY")
        .env_remove("http_proxy")
        .env_remove("ALL_PROXY")
        .env_remove("all_proxy")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the client script");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let client = PyClient { child, lines };
    client.wait_line("STARTED", |l| l == "STARTED");
    for b in &bases {
        common::eventually("the instance on every node", Duration::from_secs(20), || async {
            last_renewal(&c, b).await.is_some()
        })
        .await;
    }

    nodes[0].kill9();
    // Heartbeats now reach node 2 or 3 and are replicated to the other: the lease keeps
    // being renewed on both survivors.
    for b in &bases[1..] {
        let before = last_renewal(&c, b).await.expect("instance present");
        common::eventually("renewals after the kill", Duration::from_secs(20), || async {
            last_renewal(&c, b).await.is_some_and(|t| t > before + 1500)
        })
        .await;
    }
    // Discovery too: an application registered after the kill shows up in the client's own
    // registry, which it can only have fetched from a surviving node.
    let r = c.post(format!("{}/apps/py-late", bases[1])).json(&py_instance("py-late", "10.0.0.66", 80)).send().await;
    assert_eq!(r.unwrap().status(), 204);
    client.wait_line("PY-LATE in its registry", |l| l.strip_prefix("SEEN ").is_some_and(|n| n != "0"));
}
