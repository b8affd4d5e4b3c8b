//! Convergence: the time from a heal until every node has caught up with every write
//! acknowledged before it — the first observer round, sent after the heal, in which each
//! node lists each key at that rank or newer. (With the workload still writing, the nodes'
//! listings are rarely identical at one instant; "caught up with the heal" is what a reader
//! relies on.)

use super::keys::{listing_ranks, Keys};
use super::rounds::complete_rounds;
use crate::history::{Fault, Micros, Op};

/// For each fault, in order: milliseconds from its heal to the first caught-up round, or
/// `None` when no round caught up before `until` (the next fault, or the end of the run).
pub fn check(ops: &[Op], faults: &[Fault], nodes: usize, end: Micros) -> Vec<Option<f64>> {
    let keys = Keys::new(ops);
    let rounds = complete_rounds(ops, nodes);
    faults
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let until = faults.get(i + 1).map_or(end, |n| n.start);
            let wanted: Vec<(&str, u64)> =
                keys.keys().filter_map(|k| keys.expected(k, f.heal).map(|(r, _)| (k, r))).collect();
            rounds.iter().filter(|r| r.invoke >= f.heal && r.complete <= until).find_map(|r| {
                let ranks: Vec<_> = r.listings.iter().map(|l| listing_ranks(&keys, l)).collect();
                let caught_up =
                    ranks.iter().all(|node| wanted.iter().all(|(k, want)| node.get(k).is_some_and(|got| got >= want)));
                caught_up.then(|| r.complete.saturating_sub(f.heal) as f64 / 1000.0)
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::keys::tests::op;
    use crate::history::{Kind, Outcome};
    use crate::workload::OBSERVER;

    fn listing(node: u8, invoke: Micros, listed: &[(&str, u64)]) -> Op {
        let mut o = op(Kind::ReadAll, "", None, invoke, invoke + 2_000, Outcome::Ok);
        o.process = OBSERVER;
        o.node = node;
        o.listed = listed.iter().map(|(k, g)| (k.to_string(), *g)).collect();
        o
    }

    #[test]
    fn converged_when_every_node_caught_up_with_the_heal() {
        let f = Fault {
            fault: "partition".into(),
            what: "isolate node 2".into(),
            minority: vec![1],
            start: 0,
            heal: 100_000,
        };
        let ops = vec![
            op(Kind::Register, "A/1", Some(1), 0, 10_000, Outcome::Ok),
            op(Kind::Register, "A/1", Some(2), 50_000, 60_000, Outcome::Ok),
            // Written after the heal: not waited for.
            op(Kind::Register, "B/1", Some(1), 150_000, 160_000, Outcome::Ok),
            listing(0, 120_000, &[("A/1", 2)]),
            listing(1, 120_000, &[("A/1", 1)]),
            listing(0, 300_000, &[("A/1", 2)]),
            listing(1, 300_000, &[("A/1", 2)]),
        ];
        assert_eq!(check(&ops, std::slice::from_ref(&f), 2, 1_000_000), vec![Some(202.0)]);
        assert_eq!(check(&ops, &[f], 2, 250_000), vec![None], "not within the window");
    }
}
