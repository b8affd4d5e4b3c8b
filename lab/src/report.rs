//! `report.json`, `report.md` and the summary charts of a lab run.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use serde::Serialize;

use crate::check::Side;
use crate::cluster::{Backend, Timing};
use crate::run::RunResult;

/// What the report says about how it was made.
#[derive(Debug, Serialize)]
pub struct Meta {
    /// The command line that made it.
    pub command: String,
    pub network: String,
    pub timing: Timing,
    /// Runs skipped, and why.
    pub notes: Vec<String>,
    pub cores: usize,
}

#[derive(Serialize)]
struct Json<'a> {
    meta: &'a Meta,
    runs: &'a [RunResult],
}

fn pct(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| format!("{:.1} %", v * 100.0))
}

fn ms(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| if v >= 10.0 { format!("{v:.0}") } else { format!("{v:.1}") })
}

/// Writes `report.json`, `report.md`, `availability.svg` and `staleness.svg` into `out`.
pub fn write(out: &Path, runs: &[RunResult], meta: &Meta, staleness: &BTreeMap<String, Vec<f64>>) -> Result<()> {
    std::fs::write(out.join("report.json"), serde_json::to_string_pretty(&Json { meta, runs })?)?;
    let rows: Vec<(String, Option<f64>, Option<f64>)> = runs
        .iter()
        .map(|r| {
            (
                format!("{} · {}", r.backend.name(), r.fault.name()),
                r.checks.majority_write_availability,
                r.checks.minority_write_availability,
            )
        })
        .collect();
    crate::charts::availability(&out.join("availability.svg"), "Writes served during faults, by side", &rows)?;
    let series: Vec<(String, Vec<f64>)> = staleness.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    crate::charts::staleness(&out.join("staleness.svg"), "How stale the stale reads were", &series)?;
    std::fs::write(out.join("report.md"), markdown(runs, meta, out))?;
    Ok(())
}

fn markdown(runs: &[RunResult], meta: &Meta, out: &Path) -> String {
    let mut m = String::new();
    let _ = writeln!(m, "# synod lab: what each backend gives up under faults\n");
    let _ = writeln!(
        m,
        "Made by `{}` on a machine with {} cores. Network: {}. Leases are Eureka's 30 s / 90 s scaled \
         down: every instance renews each {} s and expires after {} s; servers evict every {} s. \
         Faults, each on one node for a few seconds, alternating between the leader and a follower where \
         there is a leader: **kill** (SIGKILL, then a restart on its data), **pause** (SIGSTOP, then SIGCONT), \
         **partition** (its peer link unplugged while clients still reach it) and **disk** (its own small \
         disk filled to the last byte; then the space is freed and the node restarted, as an operator \
         would). Every fault is healed before the final checks.\n",
        meta.command,
        meta.cores,
        meta.network,
        meta.timing.renew_interval.as_secs_f64(),
        meta.timing.lease_duration.as_secs_f64(),
        meta.timing.eviction_interval.as_secs_f64()
    );
    for n in &meta.notes {
        let _ = writeln!(m, "- {n}");
    }
    if !meta.notes.is_empty() {
        m.push('\n');
    }
    let _ = writeln!(m, "## Safety\n");
    let _ = writeln!(
        m,
        "| backend | fault | faults | ops | acknowledged writes | lost | linearizability violations | stale local reads | stale p99 ms | most versions behind | spurious evictions | self-preservation |"
    );
    let _ = writeln!(m, "|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in runs {
        let c = &r.checks;
        let p99 = c.stale_reads_by_side.values().filter_map(|s| s.p99_ms).reduce(f64::max);
        let versions = c.stale_reads_by_side.values().map(|s| s.max_versions).max().unwrap_or(0);
        let _ = writeln!(
            m,
            "| {} | {} | {} | {} | {} | {} | {} | {} / {} | {} | {} | {} | {} |",
            r.backend.name(),
            r.fault.name(),
            r.faults.len(),
            c.operations,
            c.acknowledged_writes,
            c.lost_acknowledged_writes,
            c.linearizability_violations
                .map_or("n/a".into(), |v| format!("{v} ({} reads)", c.linearizable_reads_checked)),
            c.stale_reads,
            c.local_reads,
            ms(p99),
            versions,
            c.spurious_evictions,
            c.self_preservation_activations
        );
    }
    let _ = writeln!(m, "\n## Availability and timing during faults\n");
    let _ = writeln!(m, "Share of requests served, by the side of the node they were sent to (majority: nodes the fault left alone; minority: the killed, paused, cut-off or full-disk node).\n");
    let _ = writeln!(m, "| backend | fault | writes maj. | writes min. | heartbeats maj. | heartbeats min. | reads maj. | reads min. | recovery ms (slowest) | convergence ms (slowest) |");
    let _ = writeln!(m, "|---|---|---|---|---|---|---|---|---|---|");
    for r in runs {
        let c = &r.checks;
        let conv = if c.convergence_ms_each.iter().any(Option::is_none) {
            format!(
                "not within the window ({} of {})",
                c.convergence_ms_each.iter().filter(|v| v.is_none()).count(),
                c.convergence_ms_each.len()
            )
        } else {
            ms(c.convergence_ms)
        };
        let _ = writeln!(
            m,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.backend.name(),
            r.fault.name(),
            pct(c.majority_write_availability),
            pct(c.minority_write_availability),
            pct(c.majority_heartbeat_availability),
            pct(c.minority_heartbeat_availability),
            pct(c.majority_read_availability),
            pct(c.minority_read_availability),
            ms(c.recovery_ms),
            conv
        );
    }
    let _ = writeln!(m, "\n## Stale reads by side\n");
    let _ = writeln!(m, "| backend | fault | side | reads | stale | p50 ms | p99 ms | max ms | most versions behind |");
    let _ = writeln!(m, "|---|---|---|---|---|---|---|---|---|");
    for r in runs {
        for (side, s) in &r.checks.stale_reads_by_side {
            let _ = writeln!(
                m,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                r.backend.name(),
                r.fault.name(),
                side.name(),
                s.reads,
                s.stale,
                ms(s.p50_ms),
                ms(s.p99_ms),
                ms(s.max_ms),
                s.max_versions
            );
        }
    }
    m.push_str(&anomalies(runs));
    let _ = writeln!(m, "\n## Reading\n");
    m.push_str(&reading(runs));
    let _ = writeln!(m, "\n## Charts\n");
    let _ = writeln!(m, "![writes served during faults](availability.svg)\n\n![staleness](staleness.svg)\n");
    for r in runs {
        let rel = r.dir.strip_prefix(out).unwrap_or(&r.dir).display().to_string();
        let _ = writeln!(
            m,
            "- {} · {}: [timeline]({rel}/timeline.svg), [history]({rel}/history.jsonl)",
            r.backend.name(),
            r.fault.name()
        );
    }
    let _ = writeln!(m, "\n## How each number is measured\n");
    m.push_str(METHOD);
    m
}

/// Every lost write one by one, and stale reads by cause, each with what explains it.
fn anomalies(runs: &[RunResult]) -> String {
    let mut m = String::new();
    let _ = writeln!(m, "\n## Every anomaly and its cause\n");
    let lost: Vec<_> = runs.iter().flat_map(|r| r.checks.lost_writes.iter().map(move |w| (r, w))).collect();
    if lost.is_empty() {
        let _ = writeln!(m, "No acknowledged write was lost in any run.\n");
    } else {
        let _ = writeln!(m, "Lost acknowledged writes:\n");
        let _ = writeln!(m, "| backend | fault | instance | write | node | acknowledged at s | cause |");
        let _ = writeln!(m, "|---|---|---|---|---|---|---|");
        for (r, w) in lost {
            let _ = writeln!(
                m,
                "| {} | {} | `{}` | {} | {} | {:.2} | {}{} |",
                r.backend.name(),
                r.fault.name(),
                w.key,
                w.kind,
                w.node,
                w.acknowledged_s,
                if w.explained { "" } else { "**unexplained**: " },
                w.cause
            );
        }
        m.push('\n');
    }
    let _ = writeln!(m, "Stale local reads by cause (a read counts once, at the stalest instance it showed):\n");
    let _ = writeln!(m, "| backend | fault | cause | reads | max ms |");
    let _ = writeln!(m, "|---|---|---|---|---|");
    for r in runs {
        for c in &r.checks.stale_causes {
            let cause = if c.explained { c.cause.clone() } else { format!("**{}**", c.cause) };
            let _ = writeln!(
                m,
                "| {} | {} | {} | {} | {} |",
                r.backend.name(),
                r.fault.name(),
                cause,
                c.reads,
                ms(Some(c.max_ms))
            );
        }
    }
    let unexplained: usize = runs.iter().map(|r| r.checks.unexplained_anomalies).sum();
    let _ = writeln!(
        m,
        "\nAnomalies no fault explains: {unexplained}{}",
        if unexplained == 0 { "." } else { " (in bold above; each is a bug to trace)." }
    );
    m
}

/// The plain-language reading: what the numbers say per backend.
fn reading(runs: &[RunResult]) -> String {
    let mut m = String::new();
    for b in Backend::ALL {
        let mine: Vec<&RunResult> = runs.iter().filter(|r| r.backend == b).collect();
        if mine.is_empty() {
            continue;
        }
        let lost: usize = mine.iter().map(|r| r.checks.lost_acknowledged_writes).sum();
        let stale: usize = mine.iter().map(|r| r.checks.stale_reads).sum();
        let reads: usize = mine.iter().map(|r| r.checks.local_reads).sum();
        let violations: Option<usize> =
            mine.iter().filter_map(|r| r.checks.linearizability_violations).reduce(|a, b| a + b);
        let evicted: u64 = mine.iter().map(|r| r.checks.spurious_evictions).sum();
        let minority_writes: Vec<f64> = mine.iter().filter_map(|r| r.checks.minority_write_availability).collect();
        let worst_stale =
            mine.iter().flat_map(|r| r.checks.stale_reads_by_side.values().filter_map(|s| s.max_ms)).reduce(f64::max);
        let _ = write!(m, "- **{}**: ", b.name());
        let _ = write!(m, "{lost} acknowledged writes lost, ");
        if let Some(v) = violations {
            let _ = write!(m, "{v} linearizability violations, ");
        }
        let _ = write!(m, "{stale} of {reads} local reads stale");
        if let Some(w) = worst_stale {
            let _ = write!(m, " (the stalest {w:.0} ms behind)");
        }
        let _ = write!(m, ", {evicted} heartbeating instances evicted");
        if !minority_writes.is_empty() {
            let lo = minority_writes.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = minority_writes.iter().copied().fold(0.0, f64::max);
            let _ = write!(
                m,
                "; writes sent to the faulty node were served {:.0}–{:.0} % of the time",
                lo * 100.0,
                hi * 100.0
            );
        }
        m.push_str(".\n");
        let _ = writeln!(m, "  {}", explain(b, lost, stale, evicted));
    }
    m
}

/// Why a backend shows what it shows.
fn explain(b: Backend, lost: usize, stale: usize, evicted: u64) -> String {
    let mut out = Vec::new();
    match b {
        Backend::None => out.push(
            "One node: while it is down or paused nothing is served; it keeps every acknowledged write on disk, and its reads are never stale because there is no other copy to lag behind."
                .to_string(),
        ),
        Backend::P2p => {
            out.push("Every node accepts writes and serves reads from its own copy, so the faulty node's side keeps serving (AP).".to_string());
            if stale > 0 {
                out.push("Stale reads come from asynchronous replication: a write reaches the other nodes in the next batch, and a paused or cut-off node misses batches until anti-entropy repairs it after the heal.".to_string());
            }
            if lost > 0 {
                out.push("A lost write is one a node acknowledged and no node held afterwards: the write was acknowledged by a node that was killed or cut off before its batch left, or overwritten by an older copy that ranked higher; it comes back when its client re-registers after a 404 heartbeat.".to_string());
            }
        }
        Backend::Raft => {
            out.push("Writes need a majority: the cut-off or paused node refuses writes (or they time out) while the majority elects a leader and goes on (CP). Local reads on a follower may lag the leader by a few milliseconds, and a restarted or resumed follower serves what it last applied until it has caught up on the log; linearizable reads go through the leader and are never stale.".to_string());
        }
        Backend::Etcd => {
            out.push("The yardstick, with the same workload mapped to leases: a register is a lease and a put on it, a heartbeat a keep-alive, a cancel a revoke. Like raft, writes need a majority (CP); serializable reads are served from the member's own state and may lag, default reads are linearizable. A new leader extends every lease before it expires any.".to_string());
            if evicted > 0 || lost > 0 {
                out.push("Where it evicted heartbeating instances, their registrations show as lost writes and, for keys read linearizably around the removal, as linearizability violations: the key became absent although no client removed it. A leader that stalled (paused) and resumes revokes the leases it believes expired, although their keep-alives went to the new leader meanwhile: a known etcd bug (etcd-io/etcd#15247, fixed upstream by #16822 in later 3.4 and 3.5 releases).".to_string());
            }
        }
    }
    if evicted > 0 {
        out.push(format!("{evicted} instances were evicted while their clients were heartbeating: see the node logs of the run for the eviction, and the timeline for the fault it followed."));
    }
    out.join(" ")
}

const METHOD: &str = "\
- **Acknowledged writes lost**: a register or cancel answered 2xx that, in a later observer round (every node's full registry read at one moment, every node answering, at least 1 s after the acknowledgement), no node shows at that write's generation or newer.
- **Linearizability**: each instance is a register (absent, or the generation its last registration wrote); its writes and its `?consistency=linearizable` reads must have a linearization (a Wing–Gong search per key; writes with no answer may take effect at any time after they were sent, or never).
- **Stale reads**: a local read (a single instance or a full fetch) that shows an instance older than the newest write acknowledged before the read was sent; how stale is the time since the first write it missed was acknowledged, and how many writes it missed.
- **Availability**: requests sent during a fault window answered with a result (2xx, or 404 for an unknown instance), by the side of the node they went to. Fleet clients fail over to the next node, so a write that failed on the faulty node usually succeeded on the next one; these numbers are per request, not per client.
- **Recovery**: time from a fault's start to the completion of the first write sent after it that the cluster accepted.
- **Convergence**: time from a heal to the first observer round in which every node shows every instance at least as new as the writes acknowledged before the heal.
- **Spurious evictions**: instances the nodes evicted (from `/v1/status`); every lab instance heartbeats until it cancels, so every eviction is of a live instance. Self-preservation: times it engaged, over all nodes.
";

/// Stale-read samples keyed by "backend side" for the staleness chart.
pub fn staleness_key(backend: Backend, side: Side) -> String {
    format!("{} · {}", backend.name(), side.name())
}
