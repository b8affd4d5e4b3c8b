//! One run: a backend's cluster, the workload, a sampler and the nemesis, for a set time;
//! then every fault healed, writes stopped, the final rounds read, and the history checked.
//!
//! The nemesis follows a schedule drawn from the seed: after a warm-up, faults of a few
//! seconds each, each followed by a quiet period, alternating between the leader and a
//! follower on raft (a random node on p2p). The run ends with a quiet tail in which the
//! fleet only heartbeats, so the final rounds show where every node settled.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use indicatif::ProgressBar;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::api::Api;
use crate::check::{self, linear, Checks};
use crate::cluster::{Backend, Cluster, Timing};
use crate::history::{Entry, Fault, History, Micros, Sample};
use crate::net::Net;
use crate::workload::{self, Recorder, Shared};

/// A kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// SIGKILL a node, restart it on its data after a while.
    Kill,
    /// SIGSTOP a node, SIGCONT it after a while.
    Pause,
    /// Cut a node off from its peers (clients still reach it), then join it again.
    Partition,
    /// Fill a node's disk; then free the space and restart the node, as an operator would.
    Disk,
}

impl FaultKind {
    /// Every kind, in report order.
    pub const ALL: [FaultKind; 4] = [FaultKind::Kill, FaultKind::Pause, FaultKind::Partition, FaultKind::Disk];

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::Pause => "pause",
            FaultKind::Partition => "partition",
            FaultKind::Disk => "disk",
        }
    }

    /// What the nemesis does, as the start of a sentence about one node.
    fn verb(self) -> &'static str {
        match self {
            FaultKind::Disk => "fill the disk of",
            other => other.name(),
        }
    }
}

/// What one run is.
#[derive(Debug, Clone, Serialize)]
pub struct Spec {
    pub backend: Backend,
    pub fault: FaultKind,
    pub seconds: u64,
    pub seed: u64,
    /// Fleet instances (each one client).
    pub fleet: u32,
    /// Discoverers per node.
    pub discoverers: u32,
}

/// What a run gave.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    pub backend: Backend,
    pub fault: FaultKind,
    pub seed: u64,
    pub seconds: u64,
    pub faults: Vec<Fault>,
    pub checks: Checks,
    /// Keys found not linearizable, with the ops that show it (raft).
    pub violations: Vec<String>,
    /// The run's folder (history, node logs, charts).
    pub dir: PathBuf,
    /// How stale each stale local read was (ms), by side, for the staleness chart.
    #[serde(skip)]
    pub staleness: std::collections::BTreeMap<check::Side, Vec<f64>>,
}

/// Samples every node's counters every 250 ms until the workload stops.
async fn sampler(s: Arc<Shared>, samples: Arc<std::sync::Mutex<Vec<Sample>>>) {
    let http = match reqwest::Client::builder().timeout(Duration::from_millis(250)).build() {
        Ok(h) => h,
        Err(_) => return,
    };
    let api = Api::of(s.backend);
    while !s.stopped.load(Ordering::Relaxed) {
        for (i, base) in s.bases.iter().enumerate() {
            let at = s.rec.now();
            let st = api.sample(&http, base).await;
            let sample = Sample {
                at,
                node: i as u8,
                up: st.is_some(),
                applied_index: st.as_ref().and_then(|v| v.applied_index),
                evicted_instances: st.as_ref().map_or(0, |v| v.evicted),
                self_preservation_active: st.as_ref().is_some_and(|v| v.self_preservation_active),
                self_preservation_engagements: st.as_ref().map_or(0, |v| v.self_preservation_engagements),
            };
            if let Ok(mut all) = samples.lock() {
                all.push(sample);
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Picks the node a fault hits: where a leader orders writes (raft, etcd) the leader and a
/// follower in turn, elsewhere a node drawn from the seed.
async fn target(cluster: &Cluster, round: usize, rng: &mut StdRng) -> (usize, String) {
    let n = cluster.nodes.len();
    if cluster.backend.has_leader() {
        if let Some(leader) = cluster.leader().await {
            let leader = leader as usize;
            return if round.is_multiple_of(2) {
                (leader, format!("leader (node {})", leader + 1))
            } else {
                let f = (leader + 1 + rng.gen_range(0..n - 1)) % n;
                (f, format!("follower (node {})", f + 1))
            };
        }
    }
    let i = rng.gen_range(0..n);
    (i, format!("node {}", i + 1))
}

/// Runs `spec` with the server binary `bin`, keeping what it records under `dir`.
pub async fn run(spec: &Spec, bin: &Path, dir: &Path, net: &Net, bar: &ProgressBar) -> Result<RunResult> {
    std::fs::create_dir_all(dir)?;
    let data = tempfile::Builder::new().prefix("synod-lab-").tempdir()?;
    let timing = Timing::default();
    bar.set_message("starting the cluster");
    let disks = spec.fault == FaultKind::Disk;
    let mut cluster = Cluster::start(spec.backend, bin, data.path(), dir, timing, net, disks).await?;
    let rec = Recorder::new();
    let shared = Shared::new(rec.clone(), cluster.bases(), spec.backend, timing)?;
    let samples = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for p in 0..spec.fleet {
        tasks.push(tokio::spawn(workload::fleet_member(shared.clone(), p, spec.seed)));
    }
    for node in 0..cluster.nodes.len() {
        for d in 0..spec.discoverers {
            let process = 1_000_000 + (node as u32) * 1000 + d;
            tasks.push(tokio::spawn(workload::discoverer(shared.clone(), process, node, spec.seed)));
        }
    }
    tasks.push(tokio::spawn(workload::observer(shared.clone())));
    tasks.push(tokio::spawn(sampler(shared.clone(), samples.clone())));
    let ticker = {
        let (bar, rec, total) = (bar.clone(), rec.clone(), spec.seconds);
        tokio::spawn(async move {
            loop {
                bar.set_position((rec.now() / 1_000_000).min(total));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };

    let mut rng = StdRng::seed_from_u64(spec.seed);
    let total = Duration::from_secs(spec.seconds);
    let short = spec.seconds < 45;
    let warmup = Duration::from_secs(if short { 3 } else { 8 });
    let tail = Duration::from_secs(if short { 5 } else { 8 });
    let mut faults = Vec::new();
    bar.set_message("warm-up");
    tokio::time::sleep(warmup).await;
    let elapsed = |rec: &Recorder| Duration::from_micros(rec.now());
    let mut round = 0;
    loop {
        let hold =
            Duration::from_millis(if short { rng.gen_range(4_000..7_000) } else { rng.gen_range(6_000..12_000) });
        let quiet =
            Duration::from_millis(if short { rng.gen_range(4_000..6_000) } else { rng.gen_range(6_000..10_000) });
        if round > 0 && elapsed(&rec) + hold + quiet + tail > total {
            break;
        }
        let (node, who) = target(&cluster, round, &mut rng).await;
        let what = format!("{} {who}", spec.fault.verb());
        bar.set_message(what.clone());
        let start = rec.now();
        match spec.fault {
            FaultKind::Kill => cluster.kill(node),
            FaultKind::Pause => cluster.pause(node),
            FaultKind::Partition => net.isolate(node)?,
            FaultKind::Disk => cluster.fill_disk(node)?,
        }
        tokio::time::sleep(hold).await;
        match spec.fault {
            FaultKind::Kill => cluster.restart(node)?,
            FaultKind::Pause => cluster.resume(node),
            FaultKind::Partition => net.join(node)?,
            FaultKind::Disk => {
                cluster.free_disk(node)?;
                cluster.kill(node);
                cluster.restart(node)?;
            }
        }
        let heal = rec.now();
        faults.push(Fault { fault: spec.fault.name().into(), what, minority: vec![node as u8], start, heal });
        shared.observe_fast_until.store(heal + 10_000_000, Ordering::Relaxed);
        bar.set_message("healed");
        tokio::time::sleep(quiet).await;
        round += 1;
    }
    // The quiet tail: no more writes, heartbeats go on, the observer reads often.
    bar.set_message("quiet tail");
    shared.writes_stopped.store(true, Ordering::Relaxed);
    shared.observe_fast_until.store(rec.now() + tail.as_micros() as Micros, Ordering::Relaxed);
    tokio::time::sleep(tail.saturating_sub(Duration::from_millis(100))).await;
    let end = rec.now();
    shared.stopped.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    ticker.abort();
    bar.set_position(spec.seconds);
    bar.set_message("checking");
    drop(cluster);

    let mut ops = rec.ops();
    ops.sort_by_key(|o| (o.complete, o.invoke));
    let samples = samples.lock().map(|s| s.clone()).unwrap_or_default();
    let history = History { ops, faults: faults.clone(), samples, end };
    save_history(&dir.join("history.jsonl"), &history)?;
    let (checks, lin) = check::evaluate(&history, spec.backend);
    let violations = lin.violations.iter().map(|v| format!("{}: {}", v.key, v.reason)).collect();
    crate::charts::timeline(
        &dir.join("timeline.svg"),
        &format!("{} · {}", spec.backend.name(), spec.fault.name()),
        &history,
    )?;
    save_violations(dir, &lin)?;
    bar.finish_with_message(summary(&checks));
    Ok(RunResult {
        backend: spec.backend,
        fault: spec.fault,
        seed: spec.seed,
        seconds: spec.seconds,
        faults,
        checks,
        violations,
        dir: dir.to_path_buf(),
        staleness: check::staleness_samples(&history),
    })
}

/// One line for the finished progress bar.
fn summary(c: &Checks) -> String {
    format!(
        "{} ops, lost {}, stale {}/{}, linearizability {}, evicted {}, unexplained {}",
        c.operations,
        c.lost_acknowledged_writes,
        c.stale_reads,
        c.local_reads,
        c.linearizability_violations.map_or("n/a".to_string(), |v| format!("{v} violations")),
        c.spurious_evictions,
        c.unexplained_anomalies
    )
}

/// Writes the history as JSON lines: faults, then samples, then ops.
pub fn save_history(path: &Path, h: &History) -> Result<()> {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let faults = h.faults.iter().cloned().map(Entry::Fault);
    let samples = h.samples.iter().cloned().map(Entry::Sample);
    for e in faults.chain(samples).chain(h.ops.iter().cloned().map(Entry::Op)) {
        serde_json::to_writer(&mut f, &e)?;
        f.write_all(b"\n")?;
    }
    f.flush()?;
    Ok(())
}

/// Writes each non-linearizable key's ops, for a person to read.
fn save_violations(dir: &Path, lin: &linear::Report) -> Result<()> {
    if lin.violations.is_empty() {
        return Ok(());
    }
    let mut out = String::new();
    for v in &lin.violations {
        out.push_str(&format!("# {}: {}\n", v.key, v.reason));
        for op in &v.ops {
            out.push_str(&serde_json::to_string(op)?);
            out.push('\n');
        }
    }
    std::fs::write(dir.join("linearizability-violations.jsonl"), out)?;
    Ok(())
}
