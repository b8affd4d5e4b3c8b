//! What clients got during faults: availability by side, and recovery (the time from a
//! fault's start to the first write accepted after it).

use std::collections::BTreeMap;

use super::Side;
use crate::history::{Fault, Kind, Op, Outcome};
use crate::workload::OBSERVER;

/// Groups of operations whose availability is reported apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Group {
    Writes,
    Heartbeats,
    Reads,
}

impl Group {
    fn of(kind: Kind) -> Group {
        match kind {
            Kind::Register | Kind::Cancel => Group::Writes,
            Kind::Renew => Group::Heartbeats,
            _ => Group::Reads,
        }
    }
}

/// Served and sent, per (side, group), over every fault window.
pub type Availability = BTreeMap<(Side, Group), (usize, usize)>;

/// Counts the requests sent during each fault window (the observer's excepted) by the side
/// of the node they went to.
pub fn availability(ops: &[Op], faults: &[Fault]) -> Availability {
    let mut out = Availability::new();
    for op in ops.iter().filter(|o| o.process != OBSERVER) {
        let side = Side::of(op, faults);
        if side == Side::Steady {
            continue;
        }
        let e = out.entry((side, Group::of(op.kind))).or_default();
        e.1 += 1;
        if op.outcome == Outcome::Ok {
            e.0 += 1;
        }
    }
    out
}

/// For each fault: ms from its start to the completion of the first write sent after it
/// started that the cluster accepted (`None` if none was).
pub fn recovery(ops: &[Op], faults: &[Fault]) -> Vec<Option<f64>> {
    faults
        .iter()
        .map(|f| {
            ops.iter()
                .filter(|o| o.kind.is_write() && o.outcome == Outcome::Ok && o.invoke >= f.start)
                .map(|o| o.complete)
                .min()
                .map(|c| c.saturating_sub(f.start) as f64 / 1000.0)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::keys::tests::op;

    #[test]
    fn availability_by_side_and_recovery() {
        let f =
            Fault { fault: "kill".into(), what: "kill leader".into(), minority: vec![0], start: 1_000, heal: 9_000 };
        let at = |node: u8, kind: Kind, invoke: u64, complete: u64, outcome: Outcome| {
            let mut o = op(kind, "A/1", Some(1), invoke, complete, outcome);
            o.node = node;
            o
        };
        let ops = vec![
            at(0, Kind::Register, 500, 600, Outcome::Ok),
            at(0, Kind::Register, 1_500, 1_600, Outcome::Fail),
            at(1, Kind::Register, 1_500, 2_600, Outcome::Unknown),
            at(1, Kind::Register, 2_000, 4_000, Outcome::Ok),
            at(1, Kind::Renew, 2_000, 2_100, Outcome::Ok),
            at(2, Kind::Read, 2_000, 2_100, Outcome::Ok),
        ];
        let a = availability(&ops, std::slice::from_ref(&f));
        assert_eq!(a[&(Side::Minority, Group::Writes)], (0, 1));
        assert_eq!(a[&(Side::Majority, Group::Writes)], (1, 2));
        assert_eq!(a[&(Side::Majority, Group::Heartbeats)], (1, 1));
        assert_eq!(a[&(Side::Majority, Group::Reads)], (1, 1));
        assert_eq!(recovery(&ops, &[f]), vec![Some(3.0)]);
    }
}
