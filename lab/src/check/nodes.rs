//! Counters the nodes keep: instances evicted and self-preservation engagements, from the
//! sampler's readings. A node killed and restarted starts its counters again (and a raft
//! node replays evictions from its log), so the first reading after a kill of that node, or
//! a reading below the last one, starts a new baseline instead of counting. A paused node
//! keeps its counters: what it counts on resuming is counted.

use std::collections::BTreeMap;

use crate::history::{Fault, Micros, Sample};

/// Increments of one counter per node, up to `end`.
fn increments(samples: &[Sample], faults: &[Fault], end: Micros, value: impl Fn(&Sample) -> u64) -> BTreeMap<u8, u64> {
    // (value, time) of each node's last reading.
    let mut last: BTreeMap<u8, (u64, Micros)> = BTreeMap::new();
    let mut total: BTreeMap<u8, u64> = BTreeMap::new();
    let killed_between = |node: u8, from: Micros, to: Micros| {
        faults.iter().any(|f| f.minority.contains(&node) && f.killed_at().is_some_and(|k| (from..=to).contains(&k)))
    };
    for s in samples.iter().filter(|s| s.at <= end && s.up) {
        let v = value(s);
        if let Some((p, at)) = last.insert(s.node, (v, s.at)) {
            if v >= p && !killed_between(s.node, at, s.at) {
                *total.entry(s.node).or_default() += v - p;
            }
        }
    }
    total
}

/// Instances evicted: the most any one node evicted (raft replicas all apply the leader's
/// evictions; a p2p node evicts on its own), or with `by_leader_only` (etcd, where only the
/// leader of the moment counts the leases it expires) the sum over the nodes.
pub fn evictions(samples: &[Sample], faults: &[Fault], end: Micros, by_leader_only: bool) -> u64 {
    let each = increments(samples, faults, end, |s| s.evicted_instances).into_values();
    if by_leader_only {
        each.sum()
    } else {
        each.max().unwrap_or(0)
    }
}

/// Self-preservation engagements, summed over the nodes.
pub fn preservation_engagements(samples: &[Sample], faults: &[Fault], end: Micros) -> u64 {
    increments(samples, faults, end, |s| s.self_preservation_engagements).into_values().sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(at: Micros, node: u8, up: bool, evicted: u64) -> Sample {
        Sample {
            at,
            node,
            up,
            applied_index: None,
            evicted_instances: evicted,
            self_preservation_active: false,
            self_preservation_engagements: evicted / 2,
        }
    }

    fn fault(kind: &str, node: u8, start: Micros) -> Fault {
        Fault { fault: kind.into(), what: String::new(), minority: vec![node], start, heal: start + 1 }
    }

    #[test]
    fn counts_increments_across_restarts_and_pauses() {
        let samples = vec![
            s(0, 0, true, 4),
            s(1, 0, true, 6),
            s(2, 0, false, 0),
            // Replayed after the restart: a new baseline, not new evictions.
            s(3, 0, true, 6),
            s(4, 0, true, 7),
            s(1, 1, true, 0),
            s(2, 1, true, 1),
            s(9, 0, true, 100),
        ];
        let killed = [fault("kill", 0, 2)];
        assert_eq!(evictions(&samples, &killed, 5, false), 3);
        assert_eq!(evictions(&samples, &killed, 5, true), 4);
        assert_eq!(preservation_engagements(&samples, &killed, 5), 1);
        // Paused, not killed: what it counted on resuming is counted.
        let paused = [fault("pause", 0, 2)];
        assert_eq!(evictions(&samples, &paused, 5, false), 3, "node 0: 4 → 6 → 6 → 7");
        let jumped = vec![s(0, 0, true, 4), s(1, 0, false, 0), s(3, 0, true, 9)];
        assert_eq!(evictions(&jumped, &paused, 5, false), 5);
        assert_eq!(evictions(&jumped, &killed, 5, false), 0);
        // A counter that went down restarted, whatever the faults say.
        let reset = vec![s(0, 0, true, 4), s(1, 0, true, 2), s(2, 0, true, 3)];
        assert_eq!(evictions(&reset, &[], 5, false), 1);
    }
}
