//! The clusters a run puts under faults: `none` (one node), three-node `p2p` and three-node
//! `raft`, each node a `synod serve` process with its own data folder, and three-node `etcd`
//! (the Debian package's `etcd`) as a yardstick. Nodes are killed (SIGKILL), restarted on the
//! same folder, paused (SIGSTOP) and resumed (SIGCONT).
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
    /// Three etcd members, the registry mapped to leases (CP): the yardstick.
    Etcd,
}

impl Backend {
    /// All backends, in report order.
    pub const ALL: [Backend; 4] = [Backend::None, Backend::P2p, Backend::Raft, Backend::Etcd];

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Backend::None => "none",
            Backend::P2p => "p2p",
            Backend::Raft => "raft",
            Backend::Etcd => "etcd",
        }
    }

    /// Whether one elected leader orders every write (the nemesis then aims at the leader
    /// and a follower in turn).
    pub fn has_leader(self) -> bool {
        matches!(self, Backend::Raft | Backend::Etcd)
    }

    /// Whether an acknowledged write must never be lost and linearizable reads are offered:
    /// every lost write and every unexplained stale read is then a bug.
    pub fn is_cp(self) -> bool {
        self.has_leader()
    }

    /// Nodes in its cluster.
    pub fn size(self) -> usize {
        match self {
            Backend::None => 1,
            Backend::P2p | Backend::Raft | Backend::Etcd => 3,
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
    program: PathBuf,
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

    fn spawn(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args).stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
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
        let child = cmd.spawn().with_context(|| format!("starting {}", self.program.display()))?;
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
    /// Each node's data folder.
    data: Vec<PathBuf>,
    /// Whether each data folder lies on a disk of its own (a disk run).
    disks: bool,
    http: reqwest::Client,
}

/// Node `i`'s data folder under `data`: on a disk of its own (a tmpfs) when `disks`.
fn data_dir(data: &Path, i: usize, disks: bool) -> Result<PathBuf> {
    if disks {
        return crate::disk::mount(&data.join(format!("disk-{}", i + 1)));
    }
    let dir = data.join(format!("node-{}", i + 1));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// A free loopback port (bound then released; the lab is the only one picking ports here).
fn free_addr() -> Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?)
}

/// `etcd` on the `PATH` (the Debian package `etcd-server` installs `/usr/bin/etcd`).
pub fn etcd_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join("etcd")).find(|p| p.is_file())
}

/// Where node `i` listens and is reached: (listen address, client base URL, peer URL).
/// `port` is its port inside its own namespace; on loopback a free port is picked.
fn place(net: &Net, i: usize, port: u16) -> Result<(String, String, String)> {
    Ok(match net.hosts(i) {
        Some((client, peer)) => {
            (format!("0.0.0.0:{port}"), format!("http://{client}:{port}"), format!("http://{peer}:{port}"))
        }
        None => {
            let a = free_addr()?;
            (a.to_string(), format!("http://{a}"), format!("http://{a}"))
        }
    })
}

/// `synod serve` arguments of every node.
fn synod_args(
    backend: Backend,
    data: &Path,
    dirs: &[PathBuf],
    timing: Timing,
    net: &Net,
) -> Result<Vec<(Vec<String>, String)>> {
    let n = backend.size();
    let places = (0..n).map(|i| place(net, i, 8761)).collect::<Result<Vec<_>>>()?;
    let peers: Vec<String> = places.iter().enumerate().map(|(i, p)| format!("{}={}", i + 1, p.2)).collect();
    // Beyond loopback, synod requires peers to prove themselves and an explicit choice
    // to serve clients without credentials; the lab's network is its own.
    let secret = data.join("cluster-secret");
    std::fs::write(&secret, format!("lab-{}-{}", std::process::id(), rand::random::<u64>()))?;
    let mut out = Vec::new();
    for (i, (listen, base, _)) in places.into_iter().enumerate() {
        let dir = &dirs[i];
        let mut args: Vec<String> = vec![
            "serve".into(),
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
        if net.hosts(i).is_some() {
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
        out.push((args, base));
    }
    Ok(out)
}

/// `etcd` arguments of three members: clients on one address, peers on another (each its
/// own port on loopback), default heartbeat (100 ms) and election timeout (1 s).
fn etcd_args(dirs: &[PathBuf], net: &Net) -> Result<Vec<(Vec<String>, String)>> {
    let n = Backend::Etcd.size();
    let clients = (0..n).map(|i| place(net, i, 2379)).collect::<Result<Vec<_>>>()?;
    let peers = (0..n).map(|i| place(net, i, 2380)).collect::<Result<Vec<_>>>()?;
    let cluster: Vec<String> = peers.iter().enumerate().map(|(i, p)| format!("n{}={}", i + 1, p.2)).collect();
    let mut out = Vec::new();
    for (i, dir) in dirs.iter().enumerate().take(n) {
        let args = [
            "--name",
            &format!("n{}", i + 1),
            "--data-dir",
            &dir.display().to_string(),
            "--listen-client-urls",
            &format!("http://{}", clients[i].0),
            "--advertise-client-urls",
            &clients[i].1,
            "--listen-peer-urls",
            &format!("http://{}", peers[i].0),
            "--initial-advertise-peer-urls",
            &peers[i].2,
            "--initial-cluster",
            &cluster.join(","),
            "--initial-cluster-state",
            "new",
            "--initial-cluster-token",
            "synod-lab",
            "--logger",
            "zap",
            "--log-outputs",
            "stderr",
            "--log-level",
            "warn",
        ];
        out.push((args.iter().map(|a| a.to_string()).collect(), clients[i].1.clone()));
    }
    Ok(out)
}

impl Cluster {
    /// Starts the backend's nodes on `net` (`bin`: the synod server) with data folders
    /// under `data` (each on a disk of its own when `disks`) and logs under `logs`, and
    /// waits until they serve (and have a leader).
    pub async fn start(
        backend: Backend,
        bin: &Path,
        data: &Path,
        logs: &Path,
        timing: Timing,
        net: &Net,
        disks: bool,
    ) -> Result<Cluster> {
        let dirs = (0..backend.size()).map(|i| data_dir(data, i, disks)).collect::<Result<Vec<_>>>()?;
        let (program, members) = match backend {
            Backend::Etcd => {
                (etcd_binary().context("no etcd on the PATH (Debian: etcd-server)")?, etcd_args(&dirs, net)?)
            }
            _ => (bin.to_path_buf(), synod_args(backend, data, &dirs, timing, net)?),
        };
        let nodes = members
            .into_iter()
            .enumerate()
            .map(|(i, (args, base))| Node {
                index: i as u8,
                base,
                log: logs.join(format!("node-{}.log", i + 1)),
                netns: net.namespace(i),
                program: program.clone(),
                args,
                child: None,
                paused: false,
            })
            .collect();
        let http = reqwest::Client::builder().timeout(Duration::from_millis(500)).build()?;
        let mut cluster = Cluster { backend, nodes, data: dirs, disks, http };
        for node in &mut cluster.nodes {
            node.spawn()?;
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
                let path = if self.backend == Backend::Etcd { "health" } else { "readyz" };
                let ok = self
                    .http
                    .get(format!("{}/{path}", node.base()))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                ready &= ok;
            }
            if ready && (!self.backend.has_leader() || self.leader().await.is_some()) {
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

    /// The leader (0-based) that a running node names and that itself claims to lead.
    pub async fn leader(&self) -> Option<u8> {
        if self.backend == Backend::Etcd {
            return self.etcd_leader().await;
        }
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

    /// The etcd member that names itself leader.
    async fn etcd_leader(&self) -> Option<u8> {
        for node in self.nodes.iter().filter(|n| n.running() && !n.paused) {
            let Some(s) = crate::api::etcd_status(&self.http, &node.base()).await else { continue };
            if s.leader != 0 && s.leader == s.member {
                return Some(node.index);
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
            self.nodes[i].spawn()?;
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

    /// Fills node `i`'s disk.
    pub fn fill_disk(&self, i: usize) -> Result<()> {
        crate::disk::fill(&self.data[i])
    }

    /// Frees node `i`'s disk.
    pub fn free_disk(&self, i: usize) -> Result<()> {
        crate::disk::free(&self.data[i])
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
        if self.disks {
            for d in &self.data {
                if let Some(disk) = d.parent() {
                    crate::disk::unmount(disk);
                }
            }
        }
    }
}
