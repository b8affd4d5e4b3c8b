//! Where the nodes live on the network, and how a partition is made.
//!
//! As root, the lab builds its own network (`Net::Namespaces`), so partitions cut real
//! traffic and nothing outside is touched: it moves itself into a fresh namespace (the
//! hub) before any thread starts, gives each of three nodes a namespace of its own, and
//! links every node to the hub twice, through two bridges inside the hub — one carrying
//! peer traffic (10.213.1.0/24), one carrying client traffic (10.213.2.0/24, the hub's own
//! address 10.213.2.1 is where the workload runs). Isolating a node unplugs its peer link
//! from the bridge: packets to and from its peers are dropped silently, as in a real
//! partition, while its clients still reach it. Every namespace is deleted at the end, on
//! interruption too, and ones left by a lab that was killed are removed on the next start.
//!
//! Without root, nodes listen on 127.0.0.1 ports (`Net::Loopback`) and partition runs are
//! skipped.

use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::Mutex;

use anyhow::{bail, Context, Result};

/// Namespaces to delete on exit or interruption.
static CREATED: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Nodes a namespaced network has room for.
pub const NODES: usize = 3;

/// The network the nodes run on.
pub enum Net {
    /// 127.0.0.1, a port per node; no partitions.
    Loopback,
    /// A namespace per node, linked to the lab's hub namespace.
    Namespaces(Namespaces),
}

/// The namespaced network's names.
pub struct Namespaces {
    /// Prefix of every name: `sl` and the lab's pid (interface names have 15 bytes).
    prefix: String,
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip").args(args).output().context("running ip (iproute2)")?;
    if !out.status.success() {
        bail!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

fn remember(ns: &str) {
    if let Ok(mut c) = CREATED.lock() {
        c.push(ns.to_string());
    }
}

/// Deletes every namespace this lab created.
pub fn cleanup() {
    let names: Vec<String> = CREATED.lock().map(|mut c| std::mem::take(&mut *c)).unwrap_or_default();
    for ns in names.iter().rev() {
        let _ = Command::new("ip").args(["netns", "del", ns]).output();
    }
}

/// Deletes namespaces left by labs that are no longer running.
fn remove_stale() {
    let Ok(dir) = std::fs::read_dir("/run/netns") else { return };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let Some(pid) = name.strip_prefix("sl").and_then(|r| r.split('-').next()).and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Command::new("ip").args(["netns", "del", &name]).output();
        }
    }
}

impl Net {
    /// Builds the namespaced network when running as root and `ip` works; otherwise
    /// loopback with the reason. Must run before any other thread starts: it moves the
    /// calling thread (and so every thread it starts later) into the hub namespace.
    pub fn setup() -> (Net, Option<String>) {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return (Net::Loopback, Some("not running as root: partition runs are skipped".into()));
        }
        match Namespaces::build() {
            Ok(ns) => (Net::Namespaces(ns), None),
            Err(e) => {
                cleanup();
                (Net::Loopback, Some(format!("network namespaces unavailable ({e:#}): partition runs are skipped")))
            }
        }
    }

    /// Whether partitions can be made.
    pub fn partitions(&self) -> bool {
        matches!(self, Net::Namespaces(_))
    }

    /// For node `i`: its address for clients and its address for peers (it listens on
    /// both, on any port). `None` on loopback, where the cluster picks ports.
    pub fn hosts(&self, i: usize) -> Option<(String, String)> {
        match self {
            Net::Loopback => None,
            Net::Namespaces(_) => Some((format!("10.213.2.{}", 11 + i), format!("10.213.1.{}", 11 + i))),
        }
    }

    /// The namespace file node `i` runs in (`None` on loopback).
    pub fn namespace(&self, i: usize) -> Option<std::path::PathBuf> {
        match self {
            Net::Loopback => None,
            Net::Namespaces(ns) => Some(format!("/run/netns/{}", ns.node(i)).into()),
        }
    }

    /// Cuts node `i` off from its peers (clients still reach it).
    pub fn isolate(&self, i: usize) -> Result<()> {
        let Net::Namespaces(ns) = self else { bail!("partitions need the namespaced network") };
        ip(&["link", "set", &ns.peer_link(i), "nomaster"])
    }

    /// Joins node `i` to its peers again.
    pub fn join(&self, i: usize) -> Result<()> {
        let Net::Namespaces(ns) = self else { bail!("partitions need the namespaced network") };
        ip(&["link", "set", &ns.peer_link(i), "master", &ns.bridge("p")])
    }
}

impl Namespaces {
    fn hub(&self) -> String {
        format!("{}-hub", self.prefix)
    }

    fn node(&self, i: usize) -> String {
        format!("{}-n{}", self.prefix, i + 1)
    }

    fn bridge(&self, kind: &str) -> String {
        format!("{}{kind}b", self.prefix)
    }

    fn peer_link(&self, i: usize) -> String {
        format!("{}p{}", self.prefix, i + 1)
    }

    fn build() -> Result<Namespaces> {
        remove_stale();
        let ns = Namespaces { prefix: format!("sl{}", std::process::id()) };
        let hub = ns.hub();
        ip(&["netns", "add", &hub])?;
        remember(&hub);
        let file = std::fs::File::open(format!("/run/netns/{hub}"))?;
        // SAFETY: setns(2) on the calling thread, before any other thread exists.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            bail!("setns: {}", std::io::Error::last_os_error());
        }
        // From here on every `ip` runs in the hub.
        ip(&["link", "set", "lo", "up"])?;
        for kind in ["p", "c"] {
            ip(&["link", "add", &ns.bridge(kind), "type", "bridge"])?;
            ip(&["link", "set", &ns.bridge(kind), "up"])?;
        }
        ip(&["addr", "add", "10.213.2.1/24", "dev", &ns.bridge("c")])?;
        for i in 0..NODES {
            let node = ns.node(i);
            ip(&["netns", "add", &node])?;
            remember(&node);
            for (kind, inside, net) in [("p", "peer", 1), ("c", "client", 2)] {
                let outside = format!("{}{kind}{}", ns.prefix, i + 1);
                ip(&["link", "add", &outside, "type", "veth", "peer", "name", inside, "netns", &node])?;
                ip(&["link", "set", &outside, "master", &ns.bridge(kind), "up"])?;
                ip(&["-n", &node, "addr", "add", &format!("10.213.{net}.{}/24", 11 + i), "dev", inside])?;
                ip(&["-n", &node, "link", "set", inside, "up"])?;
            }
            ip(&["-n", &node, "link", "set", "lo", "up"])?;
        }
        Ok(ns)
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        cleanup();
    }
}
