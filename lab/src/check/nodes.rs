//! Counters the nodes keep: instances evicted and self-preservation engagements, from the
//! sampler's readings of `/v1/status`. A restarted node starts its counters again (and a
//! raft node replays evictions from its log), so a reading below the last one starts a new
//! baseline instead of counting.

use std::collections::BTreeMap;

use crate::history::{Micros, Sample};

/// Increments of one counter per node, up to `end`.
fn increments(samples: &[Sample], end: Micros, value: impl Fn(&Sample) -> u64) -> BTreeMap<u8, u64> {
    let mut last: BTreeMap<u8, u64> = BTreeMap::new();
    let mut total: BTreeMap<u8, u64> = BTreeMap::new();
    let mut restarted: BTreeMap<u8, bool> = BTreeMap::new();
    for s in samples.iter().filter(|s| s.at <= end) {
        if !s.up {
            restarted.insert(s.node, true);
            continue;
        }
        let v = value(s);
        let prev = last.insert(s.node, v);
        let fresh = restarted.insert(s.node, false).unwrap_or(false);
        if let Some(p) = prev.filter(|_| !fresh) {
            *total.entry(s.node).or_default() += v.saturating_sub(p);
        }
    }
    total
}

/// Instances evicted: the most any one node evicted (raft replicas all apply the leader's
/// evictions; a p2p node evicts on its own).
pub fn evictions(samples: &[Sample], end: Micros) -> u64 {
    increments(samples, end, |s| s.evicted_instances).into_values().max().unwrap_or(0)
}

/// Self-preservation engagements, summed over the nodes.
pub fn preservation_engagements(samples: &[Sample], end: Micros) -> u64 {
    increments(samples, end, |s| s.self_preservation_engagements).into_values().sum()
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

    #[test]
    fn counts_increments_across_restarts() {
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
        assert_eq!(evictions(&samples, 5), 3);
        assert_eq!(preservation_engagements(&samples, 5), 1);
    }
}
