//! Checkers: each reads a [`History`] and gives numbers for the report; [`evaluate`] runs
//! them all.

pub mod convergence;
pub mod explain;
pub mod faults;
pub mod keys;
pub mod linear;
pub mod lost;
pub mod nodes;
pub mod rounds;
pub mod stale;

use std::collections::BTreeMap;

use serde::Serialize;

use crate::cluster::Backend;
use crate::history::{Fault, History, Micros, Op, Outcome};
use faults::Group;

/// Which side of a fault a request went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// No fault was active when it was sent.
    Steady,
    /// A node the fault left alone.
    Majority,
    /// A killed, paused or cut-off node.
    Minority,
}

impl Side {
    /// The side of `op`'s node at the moment `op` was sent.
    pub fn of(op: &Op, faults: &[Fault]) -> Side {
        match faults.iter().find(|f| (f.start..f.heal).contains(&op.invoke)) {
            None => Side::Steady,
            Some(f) if f.minority.contains(&op.node) => Side::Minority,
            Some(_) => Side::Majority,
        }
    }

    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Side::Steady => "steady",
            Side::Majority => "majority",
            Side::Minority => "minority",
        }
    }
}

/// Stale reads of one side, summarized.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StaleSummary {
    pub reads: usize,
    pub stale: usize,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub max_versions: usize,
}

impl StaleSummary {
    fn of(s: &stale::Staleness) -> StaleSummary {
        let mut ms = s.ms.clone();
        ms.sort_by(f64::total_cmp);
        StaleSummary {
            reads: s.reads,
            stale: s.stale,
            p50_ms: percentile(&ms, 0.50),
            p99_ms: percentile(&ms, 0.99),
            max_ms: ms.last().copied(),
            max_versions: s.max_versions,
        }
    }
}

/// The `p` quantile of sorted `v` (nearest rank).
pub fn percentile(v: &[f64], p: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let i = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
    Some(v[i])
}

/// Every number a run gives, as `report.json` carries it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Checks {
    pub operations: usize,
    pub acknowledged_writes: usize,
    pub lost_acknowledged_writes: usize,
    /// `None` where no linearizable read was made (backends other than raft).
    pub linearizability_violations: Option<usize>,
    pub linearizable_reads_checked: usize,
    /// Keys whose search ran out of budget (neither passed nor failed).
    pub linearizability_unknown_keys: usize,
    /// Linearizable reads that missed an acknowledged write.
    pub stale_linearizable_reads: usize,
    /// Local reads (single instances and full fetches) that missed an acknowledged write.
    pub stale_reads: usize,
    pub local_reads: usize,
    pub stale_reads_by_side: BTreeMap<Side, StaleSummary>,
    pub majority_write_availability: Option<f64>,
    pub minority_write_availability: Option<f64>,
    pub majority_heartbeat_availability: Option<f64>,
    pub minority_heartbeat_availability: Option<f64>,
    pub majority_read_availability: Option<f64>,
    pub minority_read_availability: Option<f64>,
    /// Slowest convergence after a heal, ms (`None` if a heal never converged in its window).
    pub convergence_ms: Option<f64>,
    pub convergence_ms_each: Vec<Option<f64>>,
    /// Slowest recovery (fault start to the first accepted write), ms.
    pub recovery_ms: Option<f64>,
    pub recovery_ms_each: Vec<Option<f64>>,
    /// Instances evicted while their clients heartbeated (every lab instance heartbeats
    /// until it cancels, so every eviction is spurious).
    pub spurious_evictions: u64,
    pub self_preservation_activations: u64,
    /// Every lost write, with its cause.
    pub lost_writes: Vec<explain::LostWrite>,
    /// Stale local reads counted by cause.
    pub stale_causes: Vec<explain::StaleCause>,
    /// Anomalies no fault explains (lost writes and stale reads): each is a bug to trace.
    pub unexplained_anomalies: usize,
}

fn fraction(a: &faults::Availability, side: Side, group: Group) -> Option<f64> {
    a.get(&(side, group)).filter(|(_, sent)| *sent > 0).map(|(ok, sent)| *ok as f64 / *sent as f64)
}

/// Grace after an acknowledgement before the lost-write check judges a write: long enough
/// for the accepting node to apply what it acknowledged.
const LOST_GRACE: Micros = 1_000_000;

/// Runs every checker on `h`, a history of a `backend` cluster (where the backend is CP,
/// every lost write and any unexplained stale read is a bug).
pub fn evaluate(h: &History, backend: Backend) -> (Checks, linear::Report) {
    let (nodes, raft) = (backend.size(), backend.is_cp());
    let lost = lost::check(&h.ops, nodes, LOST_GRACE);
    let lin = linear::check(&h.ops);
    let stale = stale::check(&h.ops, &h.faults);
    let lost_writes: Vec<_> = lost.lost.values().map(|w| explain::lost_write(w, &h.ops, &h.faults, raft)).collect();
    let stale_causes = explain::stale_reads(&stale::reads(&h.ops), &h.ops, &h.faults, raft);
    let avail = faults::availability(&h.ops, &h.faults);
    let convergence = convergence::check(&h.ops, &h.faults, nodes, h.end);
    let recovery = faults::recovery(&h.ops, &h.faults);
    let has_linear = h.ops.iter().any(|o| o.kind == crate::history::Kind::ReadLinearizable && o.outcome == Outcome::Ok);
    let slowest = |v: &[Option<f64>]| {
        if v.iter().any(Option::is_none) {
            None
        } else {
            v.iter().flatten().copied().reduce(f64::max)
        }
    };
    let checks = Checks {
        operations: h.ops.len(),
        acknowledged_writes: lost.acknowledged,
        lost_acknowledged_writes: lost.lost.len(),
        linearizability_violations: has_linear.then_some(lin.violations.len()),
        linearizable_reads_checked: lin.reads_checked,
        linearizability_unknown_keys: lin.unknown_keys.len(),
        stale_linearizable_reads: stale.linearizable.stale,
        stale_reads: stale.local.values().map(|s| s.stale).sum(),
        local_reads: stale.local.values().map(|s| s.reads).sum(),
        stale_reads_by_side: stale.local.iter().map(|(side, s)| (*side, StaleSummary::of(s))).collect(),
        majority_write_availability: fraction(&avail, Side::Majority, Group::Writes),
        minority_write_availability: fraction(&avail, Side::Minority, Group::Writes),
        majority_heartbeat_availability: fraction(&avail, Side::Majority, Group::Heartbeats),
        minority_heartbeat_availability: fraction(&avail, Side::Minority, Group::Heartbeats),
        majority_read_availability: fraction(&avail, Side::Majority, Group::Reads),
        minority_read_availability: fraction(&avail, Side::Minority, Group::Reads),
        convergence_ms: slowest(&convergence),
        convergence_ms_each: convergence,
        recovery_ms: slowest(&recovery),
        recovery_ms_each: recovery,
        spurious_evictions: nodes::evictions(&h.samples, &h.faults, h.end, backend == Backend::Etcd),
        self_preservation_activations: nodes::preservation_engagements(&h.samples, &h.faults, h.end),
        unexplained_anomalies: lost_writes.iter().filter(|w| !w.explained).count()
            + stale_causes.iter().filter(|c| !c.explained).map(|c| c.reads).sum::<usize>(),
        lost_writes,
        stale_causes,
    };
    (checks, lin)
}

/// Stale-read samples (ms) by side, for the staleness chart.
pub fn staleness_samples(h: &History) -> BTreeMap<Side, Vec<f64>> {
    stale::check(&h.ops, &h.faults).local.into_iter().map(|(side, s)| (side, s.ms)).collect()
}
