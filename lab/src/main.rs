//! `synod-lab`: puts every backend through the same faults and reports what each gives up.
//!
//! `synod-lab run --out DIR` starts its own clusters (`none`, three-node `p2p` and `raft`),
//! runs the workload ([`workload`]) under each fault ([`run`]), checks the histories
//! ([`check`]) and writes `DIR/report.md`, `DIR/report.json` and charts ([`report`]).

mod api;
mod charts;
mod check;
mod cluster;
mod disk;
mod history;
mod net;
mod report;
mod run;
mod workload;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use cluster::Backend;
use net::Net;
use run::{FaultKind, Spec};

#[derive(Parser)]
#[command(name = "synod-lab", about = "Puts synod's backends through the same faults and reports what each gives up")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Runs every backend × fault and writes the report into --out.
    Run(RunArgs),
}

#[derive(clap::Args)]
struct RunArgs {
    /// Folder for the report, the histories, charts and node logs.
    #[arg(long)]
    out: PathBuf,
    /// A short run: 20 s per cell and a smaller fleet.
    #[arg(long)]
    quick: bool,
    /// Backends to run (all when omitted).
    #[arg(long, value_enum)]
    backend: Vec<Backend>,
    /// Faults to inject (all when omitted).
    #[arg(long, value_enum)]
    fault: Vec<FaultKind>,
    /// Seconds per backend × fault (default 60, or 20 with --quick).
    #[arg(long)]
    seconds: Option<u64>,
    /// Seed of the fault schedule and the workload's choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The synod server binary (default: next to this program; built if missing).
    #[arg(long)]
    synod: Option<PathBuf>,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let Cmd::Run(args) = cli.command;
    // Before any thread exists: moving into the lab's own network namespace must cover
    // every thread the runtime starts.
    let (net, why_not) = Net::setup();
    let no_disks = disk::setup();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let result = rt.block_on(lab(args, &net, why_not, no_disks));
    cluster::stop_all();
    drop(net);
    result
}

/// The server binary: `--synod`, or `synod` next to this program, built when missing.
fn synod_binary(given: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(p) = given {
        return Ok(p);
    }
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("this program's folder")?;
    let bin = dir.join("synod");
    if !bin.exists() {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut cmd = std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.args(["build", "--bin", "synod", "-p", "synod"]).current_dir(&workspace);
        if dir.ends_with("release") {
            cmd.arg("--release");
        }
        eprintln!("building the synod server ({})", bin.display());
        if !cmd.status().context("running cargo")?.success() {
            bail!("building synod failed");
        }
    }
    if !bin.exists() {
        bail!("no synod binary at {}; pass --synod", bin.display());
    }
    Ok(bin)
}

async fn lab(args: RunArgs, net: &Net, why_not: Option<String>, no_disks: Option<String>) -> Result<()> {
    let bin = synod_binary(args.synod.clone())?;
    std::fs::create_dir_all(&args.out)?;
    // An interrupted lab stops every process and removes every namespace it made.
    tokio::spawn(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let term = async move {
            match term.as_mut() {
                Some(t) => t.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term => {}
        }
        eprintln!("interrupted: stopping the clusters");
        cluster::stop_all();
        net::cleanup();
        std::process::exit(130);
    });
    let mut backends = if args.backend.is_empty() { Backend::ALL.to_vec() } else { args.backend.clone() };
    let mut notes: Vec<String> = Vec::new();
    if backends.contains(&Backend::Etcd) && cluster::etcd_binary().is_none() {
        backends.retain(|b| *b != Backend::Etcd);
        notes.push("etcd skipped: no `etcd` on the PATH (Debian: `apt-get install etcd-server`)".into());
    } else if let Some(etcd) = backends.contains(&Backend::Etcd).then(cluster::etcd_binary).flatten() {
        let version = std::process::Command::new(etcd).arg("--version").output().ok();
        let first = version.map(|o| String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or("").to_string());
        notes.push(format!("etcd: {}", first.unwrap_or_default().trim()));
    }
    let faults = if args.fault.is_empty() { FaultKind::ALL.to_vec() } else { args.fault.clone() };
    let seconds = args.seconds.unwrap_or(if args.quick { 20 } else { 60 });
    if let Some(w) = &why_not {
        if faults.contains(&FaultKind::Partition) {
            notes.push(w.clone());
        }
    }
    if let Some(w) = &no_disks {
        if faults.contains(&FaultKind::Disk) {
            notes.push(w.clone());
        }
    }
    let multi = MultiProgress::new();
    let style = ProgressStyle::with_template("{prefix:>18} [{bar:30}] {pos:>3}/{len}s {msg}")
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    let mut results = Vec::new();
    for &backend in &backends {
        for &fault in &faults {
            if fault == FaultKind::Partition && !net.partitions() {
                continue;
            }
            if fault == FaultKind::Disk && no_disks.is_some() {
                continue;
            }
            if fault == FaultKind::Partition && backend == Backend::None {
                notes.push("none × partition skipped: a single node has no peers to be cut off from".into());
                continue;
            }
            let spec = Spec {
                backend,
                fault,
                seconds,
                seed: args.seed,
                fleet: if args.quick { 24 } else { 48 },
                discoverers: 2,
            };
            let bar = multi.add(ProgressBar::new(seconds));
            bar.set_style(style.clone());
            bar.set_prefix(format!("{} · {}", backend.name(), fault.name()));
            bar.enable_steady_tick(Duration::from_millis(500));
            let dir = args.out.join("runs").join(format!("{}-{}", backend.name(), fault.name()));
            match run::run(&spec, &bin, &dir, net, &bar).await {
                Ok(r) => results.push(r),
                Err(e) => {
                    bar.abandon_with_message(format!("failed: {e:#}"));
                    notes.push(format!("{} × {} failed: {e:#}", backend.name(), fault.name()));
                }
            }
        }
    }
    let mut staleness: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for r in &results {
        for (side, v) in &r.staleness {
            staleness.entry(report::staleness_key(r.backend, *side)).or_default().extend(v);
        }
    }
    let meta = report::Meta {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        network: match net {
            Net::Loopback => "loopback, a port per node".into(),
            Net::Namespaces(_) => "a network namespace per node, peers and clients on separate bridges".into(),
        },
        timing: cluster::Timing::default(),
        notes,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    report::write(&args.out, &results, &meta, &staleness)?;
    println!("report: {}", args.out.join("report.md").display());
    Ok(())
}
