//! Drives the real third-party Node.js client eureka-js-client 4.5.0
//! (tests/js_client/scenario.js) against secured three-node clusters of each replicating
//! backend: HTTP Basic credentials in its service URL, HTTPS with a test CA (trusted through
//! `NODE_EXTRA_CA_CERTS`), TLS and the cluster secret between the members. It registers,
//! heartbeats, discovers itself through its own registry fetches and cancels; every node is
//! checked to hold the instance while it runs and to drop it after the cancel.
//!
//! The client is installed by `./test.sh` under tests/js_client/node_modules; without it (or
//! without `node`) the test fails with the set-up hint instead of skipping.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::secured::Cluster;
use common::wait_until;

const APP: &str = "JS-ALPHA";
const ID: &str = "127.0.0.1:js-alpha:18091";
const LIMIT: Duration = Duration::from_secs(30);
const SETUP_HINT: &str = "run ./test.sh, which installs eureka-js-client 4.5.0 under tests/js_client/node_modules";

/// Reads from the nodes as root, trusting the test CA.
struct Reader {
    rt: tokio::runtime::Runtime,
    http: reqwest::Client,
}

impl Reader {
    fn new(ca: &Path) -> Reader {
        let ca = reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap();
        let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(5)).add_root_certificate(ca);
        Reader {
            rt: tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap(),
            http: http.build().unwrap(),
        }
    }

    fn json(&self, url: String) -> Option<(reqwest::StatusCode, serde_json::Value)> {
        self.rt.block_on(async {
            let resp =
                self.http.get(url).basic_auth("root", Some("root-password")).header("accept", "application/json");
            let resp = resp.send().await.ok()?;
            let status = resp.status();
            Some((status, resp.json().await.unwrap_or_default()))
        })
    }

    /// Whether the node at `base` holds the instance as `UP` (`Some(true)`), with another
    /// status (`Some(false)`), or not at all (`None`).
    fn instance_up(&self, base: &str) -> Option<bool> {
        match self.json(format!("{base}/eureka/apps/{APP}/{ID}"))? {
            (reqwest::StatusCode::NOT_FOUND, _) => None,
            (_, v) => Some(v["instance"]["status"] == "UP"),
        }
    }
}

#[test]
fn eureka_js_client_uses_basic_auth_over_https_on_secured_clusters() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js_client");
    let module = dir.join("node_modules/eureka-js-client/package.json");
    let installed =
        std::fs::read_to_string(&module).unwrap_or_else(|e| panic!("{}: {e}; {SETUP_HINT}", module.display()));
    assert!(installed.contains("\"version\": \"4.5.0\""), "eureka-js-client is not 4.5.0; {SETUP_HINT}");
    for mode in ["p2p", "raft"] {
        let files = tempfile::tempdir().unwrap();
        let cluster = Cluster::start(files.path(), mode, 3);
        let reader = Reader::new(&cluster.ca);
        let entry = cluster.nodes.last().unwrap();
        let bases: Vec<String> = cluster.nodes.iter().map(|n| n.base()).collect();
        if mode == "raft" {
            let ready = wait_until(LIMIT, || {
                reader.json(format!("{}/v1/status", entry.base())).is_some_and(|s| s.1["leader"].is_u64())
            });
            assert!(ready, "{mode}: no leader");
        }
        let url = format!("https://svc:svc-password@{}/eureka", entry.addr);
        let mut child = Command::new(std::env::var("SYNOD_NODE").unwrap_or_else(|_| "node".into()))
            .arg(dir.join("scenario.js"))
            .arg(&url)
            .env("NODE_EXTRA_CA_CERTS", &cluster.ca)
            .env_remove("HTTP_PROXY")
            .env_remove("HTTPS_PROXY")
            .env_remove("http_proxy")
            .env_remove("https_proxy")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run node: {e}; {SETUP_HINT}"));
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        let mut stdin = child.stdin.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut expect = |want: &str| loop {
            match lines.recv_timeout(LIMIT) {
                Ok(line) if line == want => return,
                Ok(line) if line.starts_with("FAIL") => {
                    let _ = child.kill();
                    panic!("{mode}: the client failed: {line}");
                }
                Ok(_) => {}
                Err(_) => {
                    let _ = child.kill();
                    panic!("{mode}: no {want} from the client within {LIMIT:?}");
                }
            }
        };
        expect("REGISTERED");
        expect("DISCOVERED");
        for base in &bases {
            assert!(
                wait_until(LIMIT, || reader.instance_up(base) == Some(true)),
                "{mode}: {base} does not hold {APP}/{ID}"
            );
        }
        stdin.write_all(b"STOP\n").unwrap();
        expect("STOPPED");
        let status = child.wait().unwrap();
        assert!(status.success(), "{mode}: the client exited with {status}");
        for base in &bases {
            assert!(wait_until(LIMIT, || reader.instance_up(base).is_none()), "{mode}: {base} still holds {APP}/{ID}");
        }
    }
}
