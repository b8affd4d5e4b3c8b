//! Stale reads: a read that shows a key older than the newest write acknowledged before the
//! read was sent. How stale: the time since the first write it missed was acknowledged, and
//! how many writes (versions) it missed. A full fetch counts once, at its stalest key.

use std::collections::{BTreeMap, BTreeSet};

use super::keys::{listing_ranks, Keys};
use super::Side;
use crate::history::{Fault, Kind, Op, Outcome};
use crate::workload::OBSERVER;

/// Stale reads of one kind of read on one side.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Staleness {
    /// Reads served.
    pub reads: usize,
    /// Of which stale.
    pub stale: usize,
    /// How stale each stale read was, in ms.
    pub ms: Vec<f64>,
    /// Most writes one read missed.
    pub max_versions: usize,
}

impl Staleness {
    fn add(&mut self, missed: Option<(f64, usize)>) {
        self.reads += 1;
        if let Some((ms, versions)) = missed {
            self.stale += 1;
            self.ms.push(ms);
            self.max_versions = self.max_versions.max(versions);
        }
    }
}

/// Staleness of the discoverers' reads by side, for local reads (single and full) and for
/// linearizable reads apart.
#[derive(Debug, Default)]
pub struct Stale {
    pub local: BTreeMap<Side, Staleness>,
    pub linearizable: Staleness,
}

/// What a stale read missed.
#[derive(Debug, Clone, Copy)]
pub struct Missed<'a> {
    /// Time since the first missed write was acknowledged, ms.
    pub ms: f64,
    /// Distinct versions missed.
    pub versions: usize,
    /// The first missed write.
    pub first: &'a Op,
}

/// What a read of `key` showing rank `seen`, sent at `invoke`, missed.
fn missed<'a>(keys: &Keys<'a>, key: &str, seen: u64, invoke: u64) -> Option<Missed<'a>> {
    let missed: Vec<&Op> = keys.missed(key, seen, invoke).collect();
    let first = missed.iter().copied().min_by_key(|w| w.complete)?;
    let versions = missed.iter().map(|w| super::keys::rank(w)).collect::<BTreeSet<_>>().len();
    Some(Missed { ms: invoke.saturating_sub(first.complete) as f64 / 1000.0, versions, first })
}

/// Every discoverer read of `ops` that was served, with what it missed (`None`: it was fresh).
pub fn reads(ops: &[Op]) -> Vec<(&Op, Option<Missed<'_>>)> {
    let keys = Keys::new(ops);
    let mut out = Vec::new();
    for op in ops.iter().filter(|o| o.outcome == Outcome::Ok && o.process != OBSERVER) {
        let found = match op.kind {
            Kind::Read | Kind::ReadLinearizable => {
                let Some(seen) = op.seen else { continue };
                missed(&keys, &op.key, keys.rank_seen(&op.key, seen, op.complete), op.invoke)
            }
            Kind::ReadAll => listing_ranks(&keys, op)
                .into_iter()
                .filter_map(|(k, seen)| missed(&keys, k, seen, op.invoke))
                .max_by(|a, b| a.ms.total_cmp(&b.ms)),
            _ => continue,
        };
        out.push((op, found));
    }
    out
}

/// Checks the discoverers' reads of `ops`; `faults` decide each read's side.
pub fn check(ops: &[Op], faults: &[Fault]) -> Stale {
    let mut out = Stale::default();
    for (op, found) in reads(ops) {
        let found = found.map(|m| (m.ms, m.versions));
        if op.kind == Kind::ReadLinearizable {
            out.linearizable.add(found);
        } else {
            out.local.entry(Side::of(op, faults)).or_default().add(found);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::keys::tests::op;

    fn read(kind: Kind, node: u8, seen: Option<u64>, invoke: u64) -> Op {
        let mut o = op(kind, "A/1", None, invoke, invoke + 10, Outcome::Ok);
        o.process = 7;
        o.node = node;
        o.seen = Some(seen);
        o
    }

    #[test]
    fn reads_older_than_an_acknowledged_write_are_stale_by_time_and_versions() {
        let fault =
            Fault { fault: "pause".into(), what: "pause node 2".into(), minority: vec![1], start: 0, heal: 1_000_000 };
        let ops = vec![
            op(Kind::Register, "A/1", Some(1), 0, 10_000, Outcome::Ok),
            op(Kind::Register, "A/1", Some(2), 20_000, 30_000, Outcome::Ok),
            op(Kind::Register, "A/1", Some(3), 40_000, 50_000, Outcome::Ok),
            read(Kind::Read, 0, Some(3), 60_000),
            // 50 ms after generation 2 was acknowledged, two versions behind.
            read(Kind::Read, 1, Some(1), 80_000),
            // Sent before generation 3 completed: seeing 2 is not stale.
            read(Kind::Read, 1, Some(2), 45_000),
            read(Kind::ReadLinearizable, 0, Some(2), 70_000),
        ];
        let s = check(&ops, &[fault]);
        let minority = &s.local[&Side::Minority];
        assert_eq!((minority.reads, minority.stale, minority.max_versions), (2, 1, 2));
        assert_eq!(minority.ms, vec![50.0]);
        assert_eq!(s.local[&Side::Majority].stale, 0);
        assert_eq!(s.linearizable.stale, 1, "a linearizable read that missed generation 3");
    }

    #[test]
    fn a_full_fetch_counts_once_at_its_stalest_key() {
        let mut ops = vec![
            op(Kind::Register, "A/1", Some(1), 0, 10_000, Outcome::Ok),
            op(Kind::Register, "B/1", Some(1), 0, 20_000, Outcome::Ok),
            op(Kind::Cancel, "B/1", None, 30_000, 40_000, Outcome::Ok),
        ];
        let mut all = op(Kind::ReadAll, "", None, 100_000, 110_000, Outcome::Ok);
        all.process = 3;
        all.listed = vec![("B/1".into(), 1)];
        ops.push(all);
        let s = check(&ops, &[]);
        let steady = &s.local[&Side::Steady];
        assert_eq!((steady.reads, steady.stale), (1, 1));
        assert_eq!(steady.ms, vec![90.0], "A/1 missing since 10 ms, B/1's cancel since 40 ms");
    }
}
