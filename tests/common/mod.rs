//! Shared helpers for the integration tests: start a real `synod serve` process on an
//! ephemeral loopback port with its own temporary data directory, and stop it on drop.
#![allow(dead_code)]

pub mod certs;
pub mod history;
pub mod proxy;
pub mod secured;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A running `synod serve` child process.
pub struct ServerProcess {
    pub child: Child,
    /// `127.0.0.1:PORT` the server is listening on.
    pub addr: String,
    /// `http` or `https`.
    pub scheme: String,
    pub data_dir: PathBuf,
}

impl ServerProcess {
    /// Starts the synod binary with `serve --listen 127.0.0.1:0 --data-dir DIR` plus `extra`
    /// arguments and waits (bounded) until it reports its bound address on stdout.
    pub fn start(data_dir: &Path, extra: &[&str]) -> ServerProcess {
        let mut args = vec!["--listen", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        Self::spawn(data_dir, &args)
    }

    fn spawn(data_dir: &Path, args: &[&str]) -> ServerProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_synod"))
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .args(args)
            .env("RUST_LOG", "synod=info")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn synod");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            while let Some(Ok(line)) = lines.next() {
                if let Some(url) = line.strip_prefix("synod listening on ") {
                    let _ = tx.send(url.trim().to_string());
                }
            }
        });
        let url = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                panic!("synod did not report its listening address within 30 s");
            }
        };
        let (scheme, addr) = url.split_once("://").expect("scheme://addr");
        ServerProcess { child, addr: addr.to_string(), scheme: scheme.to_string(), data_dir: data_dir.to_path_buf() }
    }

    /// Starts the synod binary listening on a given `addr` (cluster members need each
    /// other's addresses before they start) with `extra` arguments.
    pub fn start_at(addr: &str, data_dir: &Path, extra: &[&str]) -> ServerProcess {
        let mut args = vec!["--listen", addr];
        args.extend_from_slice(extra);
        Self::spawn(data_dir, &args)
    }

    /// Base URL of the Eureka API, e.g. `http://127.0.0.1:1234/eureka`.
    pub fn eureka_url(&self) -> String {
        format!("{}/eureka", self.base())
    }

    /// `http(s)://127.0.0.1:PORT`.
    pub fn base(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    /// Sends SIGHUP (reload the auth and TLS files).
    pub fn hangup(&self) {
        let ok = Command::new("kill").arg("-HUP").arg(self.child.id().to_string()).status().expect("kill");
        assert!(ok.success());
    }

    /// Sends SIGKILL and reaps the process.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A loopback address for a server that the test starts later (cluster members must know each
/// other's addresses before they start). The port is taken below the kernel's ephemeral port
/// range: a port picked by binding port 0 lies in that range, where every outgoing connection
/// of the tests running alongside takes its local port, and one of them could take it before
/// the server binds it. Picks go round the range from a start that differs per process, each
/// checked by binding it.
pub fn free_addr() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|p| p.parse::<u32>().ok()))
        .unwrap_or(32768);
    let (lo, hi) = (10_000u32, ephemeral_low.min(65_535));
    if hi <= lo + 1000 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        return l.local_addr().expect("addr").to_string();
    }
    let seed = std::process::id().wrapping_mul(7919)
        ^ std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    for _ in 0..(hi - lo) {
        let port = lo + (seed.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed).wrapping_mul(37))) % (hi - lo);
        let addr = format!("127.0.0.1:{port}");
        if std::net::TcpListener::bind(&addr).is_ok() {
            return addr;
        }
    }
    panic!("no free loopback port between {lo} and {hi}");
}

/// Polls `cond` every 50 ms until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    cond()
}

/// Polls the async `cond` every 50 ms until it holds, or panics naming `what` after `timeout`.
pub async fn eventually<F: std::future::Future<Output = bool>>(
    what: &str,
    timeout: Duration,
    mut cond: impl FnMut() -> F,
) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("not within {timeout:?}: {what}");
}

/// GETs `url` asking for JSON: the status and the body (null when it is empty or not JSON).
pub async fn get_json(c: &reqwest::Client, url: &str) -> (reqwest::StatusCode, serde_json::Value) {
    let r = c.get(url).header("Accept", "application/json").send().await.expect("GET");
    let status = r.status();
    let text = r.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
}

/// An in-process node serving on an ephemeral loopback port.
pub struct InProcess {
    pub base: String,
    pub node_registry: std::sync::Arc<synod::core::registry::Registry>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl InProcess {
    /// Starts a standalone node with default settings in a temp dir.
    pub async fn start() -> InProcess {
        Self::start_with(|_| {}).await
    }

    /// Starts a standalone node, letting `tweak` adjust the config first.
    pub async fn start_with(tweak: impl FnOnce(&mut synod::config::Config)) -> InProcess {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        Self::start_on(listener, tweak).await
    }

    /// Starts a node serving on an already bound listener (cluster tests bind every node's
    /// port first, so each config can list all members).
    pub async fn start_on(
        listener: tokio::net::TcpListener,
        tweak: impl FnOnce(&mut synod::config::Config),
    ) -> InProcess {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = synod::config::Config {
            data_dir: dir.path().to_path_buf(),
            listen: listener.local_addr().expect("addr"),
            ..Default::default()
        };
        tweak(&mut config);
        let node = synod::server::Node::open(config, std::sync::Arc::new(synod::core::clock::SystemClock))
            .await
            .expect("open node");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let registry = node.registry.clone();
        let service = node.http();
        let task = tokio::spawn(async move {
            let eviction = node.spawn_eviction();
            let _ = axum::serve(listener, service.into_make_service()).await;
            eviction.abort();
        });
        InProcess { base, node_registry: registry, task, _dir: dir }
    }

    /// URL under the Eureka prefix.
    pub fn url(&self, path: &str) -> String {
        format!("{}/eureka/{}", self.base, path.trim_start_matches('/'))
    }

    /// Number of applied registry changes, to check that rejected requests changed nothing.
    pub fn version(&self) -> u64 {
        self.node_registry.read(|st| st.version())
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A registration body in py-eureka-client's shape.
pub fn py_instance(app: &str, host: &str, port: u16) -> serde_json::Value {
    let app_upper = app.to_ascii_uppercase();
    let app_lower = app.to_ascii_lowercase();
    serde_json::json!({"instance": {
        "instanceId": format!("{host}:{app_lower}:{port}"),
        "hostName": host,
        "app": app_upper,
        "ipAddr": host,
        "status": "UP",
        "overriddenstatus": "UNKNOWN",
        "port": {"$": port, "@enabled": "true"},
        "securePort": {"$": 443, "@enabled": "false"},
        "countryId": 1,
        "dataCenterInfo": {"@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo", "name": "MyOwn"},
        "leaseInfo": {"renewalIntervalInSecs": 30, "durationInSecs": 90, "registrationTimestamp": 0,
                      "lastRenewalTimestamp": 0, "evictionTimestamp": 0, "serviceUpTimestamp": 0},
        "metadata": {"management.port": port.to_string(), "zone": "default"},
        "homePageUrl": format!("http://{host}:{port}/"),
        "statusPageUrl": format!("http://{host}:{port}/info"),
        "healthCheckUrl": format!("http://{host}:{port}/health"),
        "vipAddress": app_lower,
        "secureVipAddress": app_lower,
        "isCoordinatingDiscoveryServer": "false",
        "lastUpdatedTimestamp": "1700000000000",
        "lastDirtyTimestamp": "1700000000000"
    }})
}
