//! Leases in raft mode. Renewals never enter the log (that would cost a log entry per
//! heartbeat); the leader's registry holds the authoritative lease table.
//!
//! - A renew on the leader touches its lease table directly.
//! - A renew on a follower is answered from the follower's replicated copy (404 for an
//!   unknown instance, so the client re-registers through the log) and relayed: every
//!   [`RELAY_INTERVAL`] the follower sends the leader one batch of the keys renewed since
//!   the last batch, each with its age, so no clocks are compared across nodes.
//! - A follower that has not heard from a leader for longer than the longest election
//!   timeout answers renewals with 503: its clients fail over to another server instead of
//!   being told "OK" while the majority side lets their leases run out.
//! - On becoming leader a node waits until it has applied everything committed before its
//!   term, then grants every instance a fresh lease of its own duration (it has not seen the
//!   renewals that went to its predecessor), and evicts each one once that lease runs out
//!   (the etcd way), after a grace of one relay interval and one election timeout for the
//!   renewals still on their way. Killing the leader therefore never evicts a live instance;
//!   the price is that a dead instance may be evicted up to one of its own lease durations
//!   later than without the change, and one client with a long lease delays nobody else.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::ServerState;
use parking_lot::Mutex;

use super::stats::RaftStats;
use super::types::{encode, Raft};
use super::{since, RaftShared};
use crate::core::model::InstanceKey;
use crate::core::state::RenewOutcome;
use crate::replication::ReplicationError;

/// How often a follower relays the renewals it received to the leader.
pub const RELAY_INTERVAL: Duration = Duration::from_millis(250);

/// Most renewals relayed in one request.
const RELAY_BATCH: usize = super::rpc::MAX_RELAYED_RENEWALS;

/// Lease bookkeeping of one node.
pub struct Leases {
    epoch: Instant,
    /// Milliseconds after `epoch` of the last append request accepted from a leader (0: never).
    leader_contact_ms: AtomicU64,
    /// Renewals waiting to be relayed: key → when it was received.
    pending: Mutex<HashMap<InstanceKey, Instant>>,
    /// Set once this node, as leader of `term`, refreshed every lease.
    promotion: Mutex<Option<Promotion>>,
    /// The leader's commit index in the first append this node accepted after starting (0:
    /// none yet): once applied that far, its registry is complete enough to serve.
    first_leader_commit: AtomicU64,
    caught_up: std::sync::atomic::AtomicBool,
}

#[derive(Debug, Clone, Copy)]
struct Promotion {
    term: u64,
    at: Instant,
}

impl Default for Leases {
    fn default() -> Self {
        Self::new()
    }
}

impl Leases {
    /// Empty bookkeeping.
    pub fn new() -> Leases {
        Leases {
            epoch: Instant::now(),
            leader_contact_ms: AtomicU64::new(0),
            pending: Mutex::new(HashMap::new()),
            promotion: Mutex::new(None),
            first_leader_commit: AtomicU64::new(0),
            caught_up: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Records a leader's commit index seen in an accepted append (only the first counts).
    pub fn saw_leader_commit(&self, index: Option<u64>) {
        if let Some(i) = index {
            let _ = self.first_leader_commit.compare_exchange(0, i.max(1), Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    /// Whether this node's registry may be served to clients: it has applied what the leader
    /// had committed when this node first heard from it, or it leads; or, with no leader
    /// heard since start-up, it holds an initialized log and the longest election timeout
    /// has passed twice (a restart while the rest of the cluster is down: serve what was
    /// committed here). A node that joins empty serves nothing until it has caught up, so
    /// clients are never shown an empty registry that would make them drop live instances.
    pub fn registry_complete(&self, shared: &RaftShared) -> bool {
        if self.caught_up.load(Ordering::Relaxed) {
            return true;
        }
        let m = shared.raft.metrics().borrow().clone();
        let applied = m.last_applied.map_or(0, |l| l.index);
        let target = self.first_leader_commit.load(Ordering::Relaxed);
        let done = if m.state == ServerState::Leader {
            true
        } else if target != 0 {
            applied >= target
        } else {
            let initialized = m.membership_config.membership().voter_ids().next().is_some();
            initialized && since(self.epoch) >= shared.election_max() * 2
        };
        if done {
            self.caught_up.store(true, Ordering::Relaxed);
        }
        done
    }

    /// Records that a leader's append request was accepted just now.
    pub fn touch_leader(&self) {
        let ms = since(self.epoch).as_millis() as u64;
        self.leader_contact_ms.store(ms.max(1), Ordering::Relaxed);
    }

    /// Whether a leader was heard from within `window`.
    pub fn heard_from_leader_within(&self, window: Duration) -> bool {
        let last = self.leader_contact_ms.load(Ordering::Relaxed);
        last != 0 && (since(self.epoch).as_millis() as u64).saturating_sub(last) <= window.as_millis() as u64
    }

    /// Whether this node is the leader of the current term and owns the lease table.
    pub fn is_promoted(&self, raft: &Raft) -> bool {
        let m = raft.metrics().borrow().clone();
        m.state == ServerState::Leader && self.promotion.lock().is_some_and(|p| p.term == m.current_term)
    }

    /// Whether this node may evict now: it is a promoted leader with a live quorum, and the
    /// grace period after its promotion has passed. Each lease was refreshed at promotion, so
    /// what expires after that is an instance silent for its own whole duration.
    pub fn may_evict(&self, shared: &RaftShared) -> bool {
        let Some(p) = *self.promotion.lock() else { return false };
        let m = shared.raft.metrics().borrow().clone();
        if m.state != ServerState::Leader || m.current_term != p.term {
            return false;
        }
        if !shared.leads() {
            return false;
        }
        since(p.at) >= RELAY_INTERVAL + shared.election_max()
    }
}

/// A heartbeat on this node.
pub fn renew(
    shared: &RaftShared,
    key: &InstanceKey,
    last_dirty: Option<u64>,
) -> Result<RenewOutcome, ReplicationError> {
    let leader = shared.live_leader_id();
    let is_leader = leader == Some(shared.id);
    if leader.is_none() {
        return Err(ReplicationError::Unavailable(
            "no raft leader reachable from this node: renewals are refused so clients fail over to another server"
                .into(),
        ));
    }
    let outcome = shared.registry.renew(key, last_dirty);
    if !is_leader && outcome != RenewOutcome::NotFound {
        shared.leases.pending.lock().insert(key.clone(), Instant::now());
    }
    Ok(outcome)
}

/// Starts the relay task (followers) and the promotion watcher (leader).
pub fn spawn(shared: Arc<RaftShared>) {
    let relay = shared.clone();
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(RELAY_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            relay_once(&relay).await;
        }
    });
    tokio::spawn(async move {
        let mut metrics = shared.raft.metrics();
        let mut last_leader = None;
        loop {
            let (state, term, leader) = {
                let m = metrics.borrow_and_update();
                (m.state, m.current_term, m.current_leader)
            };
            if leader.is_some() && leader != last_leader {
                if last_leader.is_some() {
                    RaftStats::bump(&shared.stats.leader_changes, 1);
                }
                last_leader = leader;
            }
            if state == ServerState::Leader {
                let promoted = shared.leases.promotion.lock().is_some_and(|p| p.term == term);
                if !promoted {
                    promote(&shared, term).await;
                }
            } else if shared.leases.promotion.lock().take().is_some() {
                tracing::info!(term, "no longer the raft leader: lease ownership and eviction stop here");
            }
            if metrics.changed().await.is_err() {
                return;
            }
        }
    });
}

/// Takes over the lease table as leader of `term`.
async fn promote(shared: &RaftShared, term: u64) {
    // Applied everything committed before this term (the registry is complete) and still
    // leading: ensure_linearizable checks both.
    if shared.raft.ensure_linearizable().await.is_err() {
        return;
    }
    let m = shared.raft.metrics().borrow().clone();
    if m.state != ServerState::Leader || m.current_term != term {
        return;
    }
    shared.registry.refresh_leases();
    *shared.leases.promotion.lock() = Some(Promotion { term, at: Instant::now() });
    shared.leases.pending.lock().clear();
    tracing::info!(
        term,
        instances = shared.registry.read(|st| st.len()),
        "raft leader: every lease refreshed; each instance expires one of its own lease durations from now"
    );
}

/// Sends the renewals received since the last round to the leader.
async fn relay_once(shared: &RaftShared) {
    let leader = shared.live_leader();
    let url = match leader {
        Some((id, _)) if id == shared.id => {
            shared.leases.pending.lock().clear();
            return;
        }
        Some((_, url)) => url,
        None => return,
    };
    let batch: Vec<(InstanceKey, Instant)> = {
        let mut p = shared.leases.pending.lock();
        if p.is_empty() {
            return;
        }
        let keys: Vec<InstanceKey> = p.keys().take(RELAY_BATCH).cloned().collect();
        keys.into_iter().filter_map(|k| p.remove(&k).map(|t| (k, t))).collect()
    };
    let now = Instant::now();
    let items: Vec<(InstanceKey, u64)> =
        batch.iter().map(|(k, t)| (k.clone(), now.saturating_duration_since(*t).as_millis() as u64)).collect();
    let Ok(body) = encode(&items) else { return };
    let sent = shared
        .client
        .post(format!("{url}{}", super::rpc::paths::RENEW))
        .header("content-type", "application/octet-stream")
        .timeout(shared.election_max())
        .body(body)
        .send()
        .await
        .is_ok_and(|r| r.status().is_success());
    RaftStats::bump(if sent { &shared.stats.relayed } else { &shared.stats.relay_failed }, items.len() as u64);
    if !sent {
        // Keep them for the next round (or the next leader), unless renewed again meanwhile.
        let mut p = shared.leases.pending.lock();
        for (k, t) in batch {
            p.entry(k).or_insert(t);
        }
        tracing::debug!(url, n = items.len(), "relaying renewals to the leader failed; will retry");
    }
}
