//! The clusters a run puts under faults: `none` (one node), three-node `p2p` and three-node
//! `raft`, each node a `synod serve` process on loopback with its own data folder. Nodes are
//! killed (SIGKILL), restarted on the same folder, paused (SIGSTOP) and resumed (SIGCONT).
//!
//! Every child is started with a parent-death signal, and its pid is kept in [`LIVE`] so an
//! interrupted lab stops them all (see [`stop_all`]); nothing outlives the lab.

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::net::Net;

/// A replication backend under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// One node, nothing replicated: the baseline.
    None,
    /// Three nodes, Eureka's peer-to-peer replication (AP).
    P2p,
    /// Three nodes, a raft log (CP).
    Raft,
}

impl Backend {
    /// All backends, in report order.
    pub const ALL: [Backend; 3] = [Backend::None, Backend::P2p, Backend::Raft];

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Backend::None => "none",
            Backend::P2p => "p2p",
            Backend::Raft => "raft",
        }
    }

    /// Nodes in its cluster.
    pub fn size(self) -> usize {
        match self {
            Backend::None => 1,
            Backend::P2p | Backend::Raft => 3,
        }
    }
}

/// Pids of the running children, for [`stop_all`].
static LIVE: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());

/// Stops every child still running (resumed first, so a paused one dies at once). Called on
/// interruption; a cluster that is dropped stops its own.
pub fn stop_all() {
    let pids: Vec<u32> = LIVE.lock().map(|l| l.iter().copied().collect()).unwrap_or_default();
    for pid in pids {
        signal(pid, libc::SIGCONT);
        signal(pid, libc::SIGKILL);
    }
}

fn signal(pid: u32, sig: libc::c_int) -> bool {
    // SAFETY: kill(2) with a pid this process started; no memory is shared.
    unsafe { libc::kill(pid as libc::pid_t, sig) == 0 }
}

/// One node of a cluster.
pub struct Node {
    /// 0-based position in the cluster (its raft/p2p node id is `index + 1`).
    pub index: u8,
    base: String,
    log: PathBuf,
    /// The network namespace it runs in, if any.
    netns: Option<PathBuf>,
    args: Vec<String>,
    child: Option<Child>,
    paused: bool,
}

impl Node {
    /// The node's base URL.
    pub fn base(&self) -> String {
        self.base.clone()
    }

    /// Whether its process runs (paused or not).
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    fn spawn(&mut self, bin: &Path) -> Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let mut cmd = Command::new(bin);
        cmd.arg("serve").args(&self.args).stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
        let netns = self.netns.as_ref().map(std::fs::File::open).transpose()?;
        let fd = netns.as_ref().map(|f| f.as_raw_fd());
        // SAFETY: prctl and setns in the child before exec; both are plain system calls.
        unsafe {
            cmd.pre_exec(move || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                if let Some(fd) = fd {
                    if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let child = cmd.spawn().with_context(|| format!("starting {}", bin.display()))?;
        drop(netns);
        if let Ok(mut l) = LIVE.lock() {
            l.insert(child.id());
        }
        self.child = Some(child);
        self.paused = false;
        Ok(())
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal(c.id(), libc::SIGCONT);
            let _ = c.kill();
            let _ = c.wait();
            if let Ok(mut l) = LIVE.lock() {
                l.remove(&c.id());
            }
        }
        self.paused = false;
    }
}

/// Lease and eviction settings shared by the servers and the fleet: Eureka's 30 s / 90 s
/// scaled down so that a minute-long run sees many lease periods.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Timing {
    pub renew_interval: Duration,
    pub lease_duration: Duration,
    pub eviction_interval: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            renew_interval: Duration::from_secs(1),
            lease_duration: Duration::from_secs(3),
            eviction_interval: Duration::from_secs(1),
        }
    }
}

/// A running cluster.
pub struct Cluster {
    pub backend: Backend,
    pub nodes: Vec<Node>,
    bin: PathBuf,
    http: reqwest::Client,
}

/// A free loopback port (bound then released; the lab is the only one picking ports here).
fn free_addr() -> Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?)
}

impl Cluster {
    /// Starts the backend's nodes on `net` with data folders under `data` and logs under
    /// `logs`, and waits until they serve (raft: until a leader is elected).
    pub async fn start(
        backend: Backend,
        bin: &Path,
        data: &Path,
        logs: &Path,
        timing: Timing,
        net: &Net,
    ) -> Result<Cluster> {
        let n = backend.size();
        // (listen address, client base URL, peer URL) per node.
        let mut places = Vec::new();
        for i in 0..n {
            places.push(match net.addresses(i) {
                Some(p) => p,
                None => {
                    let a = free_addr()?;
                    (a.to_string(), format!("http://{a}"), format!("http://{a}"))
                }
            });
        }
        let peers: Vec<String> = places.iter().enumerate().map(|(i, p)| format!("{}={}", i + 1, p.2)).collect();
        // Beyond loopback, synod requires peers to prove themselves and an explicit choice
        // to serve clients without credentials; the lab's network is its own.
        let secret = data.join("cluster-secret");
        std::fs::write(&secret, format!("lab-{}-{}", std::process::id(), rand::random::<u64>()))?;
        let mut nodes = Vec::new();
        for (i, (listen, base, _)) in places.into_iter().enumerate() {
            let dir = data.join(format!("node-{}", i + 1));
            std::fs::create_dir_all(&dir)?;
            let mut args: Vec<String> = vec![
                "--listen".into(),
                listen,
                "--data-dir".into(),
                dir.display().to_string(),
                "--node-id".into(),
                (i + 1).to_string(),
                "--eviction-interval".into(),
                format!("{}ms", timing.eviction_interval.as_millis()),
                "--log".into(),
                "warn,synod=info".into(),
                "--replication".into(),
                backend.name().into(),
            ];
            if net.namespace(i).is_some() {
                args.extend(["--allow-anonymous".into(), "--cluster-secret-file".into(), secret.display().to_string()]);
            }
            if backend != Backend::None {
                for p in &peers {
                    args.extend(["--peer".into(), p.clone()]);
                }
            }
            if backend == Backend::P2p {
                args.extend(["--peer-sync-wait".into(), "3s".into()]);
            }
            nodes.push(Node {
                index: i as u8,
                base,
                log: logs.join(format!("node-{}.log", i + 1)),
                netns: net.namespace(i),
                args,
                child: None,
                paused: false,
            });
        }
        let http = reqwest::Client::builder().timeout(Duration::from_millis(500)).build()?;
        let mut cluster = Cluster { backend, nodes, bin: bin.to_path_buf(), http };
        for i in 0..n {
            cluster.nodes[i].spawn(&cluster.bin)?;
        }
        cluster.wait_serving(Duration::from_secs(30)).await?;
        Ok(cluster)
    }

    /// Waits until every running node is ready (and a raft cluster has a leader).
    pub async fn wait_serving(&self, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            let mut ready = true;
            for node in self.nodes.iter().filter(|n| n.running() && !n.paused) {
                let ok = self
                    .http
                    .get(format!("{}/readyz", node.base()))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                ready &= ok;
            }
            if ready && (self.backend != Backend::Raft || self.leader().await.is_some()) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{} cluster not serving after {limit:?}; see the node logs", self.backend.name());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `/v1/status` of one node, if it answers.
    pub async fn status(&self, i: usize) -> Option<serde_json::Value> {
        let r = self.http.get(format!("{}/v1/status", self.nodes[i].base())).send().await.ok()?;
        r.json().await.ok()
    }

    /// The raft leader (0-based) that a running node names and that itself claims to lead.
    pub async fn leader(&self) -> Option<u8> {
        for node in self.nodes.iter().filter(|n| n.running() && !n.paused) {
            let Some(s) = self.status(node.index as usize).await else { continue };
            let Some(l) = s["leader"].as_u64().filter(|l| (1..=self.nodes.len() as u64).contains(l)) else { continue };
            let idx = (l - 1) as usize;
            if self.status(idx).await.is_some_and(|ls| ls["role"] == "leader") {
                return Some(idx as u8);
            }
        }
        None
    }

    /// SIGKILL.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].kill();
    }

    /// Starts a killed node again on its data folder.
    pub fn restart(&mut self, i: usize) -> Result<()> {
        if !self.nodes[i].running() {
            self.nodes[i].spawn(&self.bin)?;
        }
        Ok(())
    }

    /// SIGSTOP.
    pub fn pause(&mut self, i: usize) {
        if let Some(c) = &self.nodes[i].child {
            signal(c.id(), libc::SIGSTOP);
            self.nodes[i].paused = true;
        }
    }

    /// SIGCONT.
    pub fn resume(&mut self, i: usize) {
        if let Some(c) = &self.nodes[i].child {
            signal(c.id(), libc::SIGCONT);
            self.nodes[i].paused = false;
        }
    }

    /// Base URLs of the nodes.
    pub fn bases(&self) -> Vec<String> {
        self.nodes.iter().map(Node::base).collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            n.kill();
        }
    }
}
