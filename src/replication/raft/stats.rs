//! Raft figures for `/metrics`: openraft's own metrics (term, leader, indexes, what each
//! follower has matched), the log's growth and the snapshot's size, the sled syncs, and what
//! this node counted itself (leader changes, forwarded writes, relayed renewals).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use openraft::ServerState;

use super::log_store::LogGrowth;
use super::types::NodeId;
use super::RaftShared;
use crate::metrics::{Exposition, Histogram};
use crate::store::SyncStats;

/// What this node counts about its own raft traffic.
pub struct RaftStats {
    /// Times the known leader changed to another node (or to this one).
    pub leader_changes: AtomicU64,
    /// Write batches forwarded to the leader, by outcome.
    pub forwarded_ok: AtomicU64,
    pub forwarded_retried: AtomicU64,
    pub forwarded_failed: AtomicU64,
    /// Time to forward a batch and read the leader's answer.
    pub forward_latency: Histogram,
    /// Renewals relayed to the leader, and those whose relay failed (kept for the next round).
    pub relayed: AtomicU64,
    pub relay_failed: AtomicU64,
    /// Renewals received from followers' relays (leader).
    pub relays_received: AtomicU64,
    /// The sled database's syncs (log appends, votes, purges).
    pub syncs: Arc<SyncStats>,
    /// Log bytes since the last snapshot, and the snapshot's size.
    pub growth: Arc<LogGrowth>,
}

impl RaftStats {
    /// Counters at zero over the database's sync figures and the log's growth.
    pub fn new(syncs: Arc<SyncStats>, growth: Arc<LogGrowth>) -> RaftStats {
        RaftStats {
            leader_changes: AtomicU64::new(0),
            forwarded_ok: AtomicU64::new(0),
            forwarded_retried: AtomicU64::new(0),
            forwarded_failed: AtomicU64::new(0),
            forward_latency: Histogram::latency(),
            relayed: AtomicU64::new(0),
            relay_failed: AtomicU64::new(0),
            relays_received: AtomicU64::new(0),
            syncs,
            growth,
        }
    }

    /// Adds `n` to a counter.
    pub fn bump(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
}

/// The highest index a majority of `voters` has: what the leader may commit (`matched`
/// holds what each member has; the leader's own entry is its last log index).
pub fn quorum_index(voters: &[NodeId], matched: &BTreeMap<NodeId, u64>) -> Option<u64> {
    let mut have: Vec<u64> = voters.iter().map(|v| matched.get(v).copied().unwrap_or(0)).collect();
    if have.is_empty() {
        return None;
    }
    have.sort_unstable_by(|a, b| b.cmp(a));
    have.get(voters.len() / 2).copied()
}

/// Writes the raft figures.
pub fn expose(shared: &RaftShared, e: &mut Exposition<'_>) -> fmt::Result {
    let m = shared.raft.metrics().borrow().clone();
    let s = &shared.stats;
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    e.gauge("synod_raft_term", "Current raft term.", m.current_term as i64)?;
    let leader = shared.live_leader_id();
    e.gauge(
        "synod_raft_has_leader",
        "1 while a leader is known and was heard from recently.",
        i64::from(leader.is_some()),
    )?;
    e.gauge("synod_raft_leader_id", "Node id of the live leader (0: none).", leader.unwrap_or(0) as i64)?;
    e.gauge(
        "synod_raft_is_leader",
        "1 if this node leads with its quorum.",
        i64::from(m.state == ServerState::Leader && leader == Some(shared.id)),
    )?;
    e.counter("synod_raft_leader_changes", "Times the known leader changed.", load(&s.leader_changes))?;
    let index = |i: Option<u64>| i.unwrap_or(0) as i64;
    e.gauge("synod_raft_last_log_index", "Index of the last entry in this node's log.", index(m.last_log_index))?;
    e.gauge(
        "synod_raft_applied_index",
        "Index of the last entry applied to this node's registry.",
        index(m.last_applied.map(|l| l.index)),
    )?;
    e.gauge(
        "synod_raft_snapshot_index",
        "Last index the current snapshot covers.",
        index(m.snapshot.map(|l| l.index)),
    )?;
    e.gauge("synod_raft_purged_index", "Last index purged from the log.", index(m.purged.map(|l| l.index)))?;
    e.gauge(
        "synod_raft_log_entries",
        "Entries kept in the log (last index minus purged index).",
        (m.last_log_index.unwrap_or(0)).saturating_sub(m.purged.map_or(0, |l| l.index)) as i64,
    )?;
    e.gauge(
        "synod_raft_log_bytes",
        "Log bytes appended since the last snapshot.",
        s.growth.bytes_since_snapshot() as i64,
    )?;
    e.gauge("synod_raft_snapshot_bytes", "Size of the current snapshot.", s.growth.snapshot_bytes() as i64)?;
    if let Some(replication) = &m.replication {
        // Leader only: what each member holds, and from that what a quorum holds.
        let mut matched: BTreeMap<NodeId, u64> =
            replication.iter().map(|(id, log)| (*id, log.map_or(0, |l| l.index))).collect();
        matched.insert(shared.id, m.last_log_index.unwrap_or(0));
        let voters: Vec<NodeId> = m.membership_config.membership().voter_ids().collect();
        if let Some(commit) = quorum_index(&voters, &matched) {
            e.gauge("synod_raft_commit_index", "Highest index held by a quorum (leader only).", commit as i64)?;
        }
        let ids: Vec<(String, u64)> = matched.iter().map(|(id, i)| (id.to_string(), *i)).collect();
        let last = m.last_log_index.unwrap_or(0);
        e.gauges(
            "synod_raft_member_matched_index",
            "Last index each member holds, as the leader knows it (leader only).",
            ids.iter().map(|(id, i)| ([("member", id.as_str())], *i as i64)),
        )?;
        e.gauges(
            "synod_raft_member_lag_entries",
            "Entries each member is behind the leader's log (leader only).",
            ids.iter().map(|(id, i)| ([("member", id.as_str())], last.saturating_sub(*i) as i64)),
        )?;
    }
    e.counters(
        "synod_raft_forwarded_batches",
        "Write batches a follower forwarded to the leader, by result.",
        [("ok", &s.forwarded_ok), ("retried", &s.forwarded_retried), ("failed", &s.forwarded_failed)]
            .map(|(result, c)| ([("result", result)], load(c))),
    )?;
    e.histogram(
        "synod_raft_forward_duration_seconds",
        "Time to forward a write batch to the leader and read its answer.",
        &s.forward_latency,
    )?;
    e.counters(
        "synod_raft_relayed_renewals",
        "Renewals a follower relayed to the leader, by result (failed ones are kept for the next round).",
        [("ok", &s.relayed), ("failed", &s.relay_failed)].map(|(result, c)| ([("result", result)], load(c))),
    )?;
    e.counter(
        "synod_raft_relayed_renewals_received",
        "Renewals received from followers (leader).",
        load(&s.relays_received),
    )?;
    let running = m.running_state.is_ok();
    s.syncs.expose(running, e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quorum_index_is_what_a_majority_holds() {
        let matched: BTreeMap<NodeId, u64> = [(1, 10), (2, 7), (3, 3)].into();
        assert_eq!(quorum_index(&[1, 2, 3], &matched), Some(7));
        assert_eq!(quorum_index(&[1], &matched), Some(10));
        assert_eq!(quorum_index(&[1, 2, 3, 4], &matched), Some(3), "4 voters: 3 must hold it");
        assert_eq!(quorum_index(&[], &matched), None);
    }
}
