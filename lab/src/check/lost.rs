//! Lost acknowledged writes: a write the cluster acknowledged that, later, no node has — in
//! an observer round where every node answered, at least `grace` after the acknowledgement,
//! no node lists the key at that write's rank or newer. Such a write is gone from the
//! cluster until its client writes it again (a re-registration after a 404 heartbeat).

use std::collections::BTreeMap;

use super::keys::{listing_ranks, Keys};
use super::rounds::complete_rounds;
use crate::history::{Micros, Op, Outcome};

/// What the check found.
#[derive(Debug, Default)]
pub struct Lost<'a> {
    /// Writes acknowledged in the run.
    pub acknowledged: usize,
    /// The acknowledged writes found lost, each once, by (key, invoke).
    pub lost: BTreeMap<(&'a str, Micros), &'a Op>,
}

/// Checks the writes of `ops` against the observer's rounds over `nodes` nodes.
pub fn check(ops: &[Op], nodes: usize, grace: Micros) -> Lost<'_> {
    let keys = Keys::new(ops);
    let mut out = Lost {
        acknowledged: ops.iter().filter(|o| o.kind.is_write() && o.outcome == Outcome::Ok).count(),
        ..Lost::default()
    };
    for round in complete_rounds(ops, nodes) {
        let ranks: Vec<_> = round.listings.iter().map(|l| listing_ranks(&keys, l)).collect();
        for key in keys.keys() {
            let Some((want, w)) = keys.expected(key, round.invoke.saturating_sub(grace)) else { continue };
            let best = ranks.iter().filter_map(|r| r.get(key)).copied().max().unwrap_or(0);
            if best < want {
                out.lost.insert((key, w.invoke), w);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::keys::tests::op;
    use crate::history::Kind;
    use crate::workload::OBSERVER;

    fn listing(node: u8, invoke: Micros, listed: &[(&str, u64)]) -> Op {
        let mut o = op(Kind::ReadAll, "", None, invoke, invoke + 5, Outcome::Ok);
        o.process = OBSERVER;
        o.node = node;
        o.listed = listed.iter().map(|(k, g)| (k.to_string(), *g)).collect();
        o
    }

    #[test]
    fn a_write_no_node_has_is_lost() {
        let ops = vec![
            op(Kind::Register, "A/1", Some(1), 0, 10, Outcome::Ok),
            op(Kind::Register, "A/1", Some(2), 20, 30, Outcome::Ok),
            // Every node still shows generation 1 well after 2 was acknowledged.
            listing(0, 1_000, &[("A/1", 1)]),
            listing(1, 1_000, &[("A/1", 1)]),
        ];
        let l = check(&ops, 2, 100);
        assert_eq!(l.acknowledged, 2);
        assert_eq!(l.lost.len(), 1);
        assert_eq!(l.lost.keys().next().map(|k| k.1), Some(20));
    }

    #[test]
    fn a_write_one_node_has_is_not_lost_and_partial_rounds_do_not_count() {
        let ops = vec![
            op(Kind::Register, "A/1", Some(1), 0, 10, Outcome::Ok),
            listing(0, 1_000, &[]),
            listing(1, 1_000, &[("A/1", 1)]),
            // A round a node did not answer says nothing.
            listing(0, 2_000, &[]),
        ];
        assert!(check(&ops, 2, 100).lost.is_empty());
    }

    #[test]
    fn a_cancel_undone_is_lost_and_a_write_within_grace_is_not_judged() {
        let ops = vec![
            op(Kind::Register, "A/1", Some(1), 0, 10, Outcome::Ok),
            op(Kind::Cancel, "A/1", None, 20, 30, Outcome::Ok),
            op(Kind::Register, "B/1", Some(1), 950, 990, Outcome::Ok),
            listing(0, 1_000, &[("A/1", 1)]),
        ];
        let l = check(&ops, 1, 100);
        assert_eq!(l.lost.len(), 1, "the cancel came back, B/1 is too recent to judge");
        assert_eq!(l.lost.keys().next().map(|k| k.0), Some("A/1"));
    }
}
