//! `--replication raft`: the registry as a replicated state machine over an openraft log kept
//! in sled (CP). Every registry command is committed through the log before it is
//! acknowledged; every node applies the same commands in the same order to its own
//! [`Registry`], so all nodes reach the same registry, delta queue and hash code.
//!
//! Where things happen:
//! - a write on any node: [`proposer`] batches it and proposes it on the leader, forwarding
//!   the batch over HTTP when this node follows ([`rpc`] `/v1/raft/forward`);
//! - a renew on any node: [`lease`] answers from the local copy and relays the renewal to the
//!   leader, which alone holds the authoritative lease table and evicts;
//! - raft RPCs: [`rpc`], checked first by [`admission`]; the cluster admin API:
//!   [`membership`]; the log and the snapshot store:
//!   [`log_store`], [`state_machine`]; cluster formation: [`init`].

pub mod admission;
pub mod init;
pub mod lease;
pub mod log_store;
pub mod membership;
pub mod network;
pub mod proposer;
pub mod rpc;
pub mod seed;
pub mod state_machine;
pub mod stats;
pub mod types;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::{Config as OpenraftConfig, ServerState, SnapshotPolicy};
use serde::Serialize;

use crate::config::{Peer, RaftTuning};
use crate::core::command::{Command, Outcome};
use crate::core::model::InstanceKey;
use crate::core::registry::Registry;
use crate::core::state::RenewOutcome;
use crate::store::SyncedDb;

use super::{BoxFuture, Consistency, Origin, ReplicationError, Replicator, Role};
use lease::Leases;
use log_store::{LogGrowth, LogStore};
use network::Network;
use proposer::Proposer;
use state_machine::StateMachine;
use types::{Member, NodeId, Raft};

/// Everything the backend's tasks and routes share.
pub struct RaftShared {
    pub id: NodeId,
    pub raft: Raft,
    pub registry: Arc<Registry>,
    pub sm: StateMachine,
    pub tuning: RaftTuning,
    /// For forwarded writes, relayed renewals, read indexes and admin calls: the same client
    /// (and connection pool) as the raft RPCs, so every internal request carries this node's
    /// id and the cluster secret.
    pub client: reqwest::Client,
    /// The member list this node was started with.
    pub configured: Vec<Peer>,
    pub leases: Leases,
    pub proposer: Proposer,
    /// Members' word on senders this node does not know yet.
    pub strangers: admission::Strangers,
    /// The snapshot stream being received.
    pub snapshot_intake: admission::SnapshotIntake,
    /// Counters for `/metrics`.
    pub stats: stats::RaftStats,
    /// Set while a restored registry is still being proposed ([`seed`]): not ready.
    pub seeding: std::sync::atomic::AtomicBool,
}

impl RaftShared {
    /// Longest election timeout: after this long without a leader a new one should exist.
    pub fn election_max(&self) -> Duration {
        self.tuning.election_timeout * 3 / 2
    }

    /// How long a write may wait for a leader and a commit before it is refused with 503.
    pub fn write_timeout(&self) -> Duration {
        self.election_max() * 2 + self.tuning.heartbeat * 4
    }

    /// The leader as this node currently sees it, if one is known and was heard from recently
    /// (a follower cut off from its leader reports none instead of a stale one).
    pub fn live_leader(&self) -> Option<(NodeId, String)> {
        self.live_leader_id().map(|id| (id, self.url_of(id)))
    }

    /// [`Self::live_leader`] without the URL; on the renewal path, so it reads the metrics in
    /// place instead of cloning them.
    pub fn live_leader_id(&self) -> Option<NodeId> {
        let rx = self.raft.metrics();
        let m = rx.borrow();
        let leader = m.current_leader?;
        if leader == self.id {
            let fresh = m.millis_since_quorum_ack.is_some_and(|ms| ms <= self.election_max().as_millis() as u64);
            // A single voter acknowledges itself.
            let alone = || m.membership_config.membership().voter_ids().count() == 1;
            return (m.state == ServerState::Leader && (fresh || alone())).then_some(leader);
        }
        self.leases.heard_from_leader_within(self.election_max()).then_some(leader)
    }

    /// Whether this node is the leader and still has its quorum.
    pub fn leads(&self) -> bool {
        self.live_leader_id() == Some(self.id)
    }

    /// Whether this node is still in openraft's leader state but no quorum acknowledged it
    /// within the longest election timeout: cut off from the majority, it can commit nothing
    /// and will not hear of a new leader until the partition heals.
    pub fn leads_without_quorum(&self) -> bool {
        // The metrics borrow ends before `leads` borrows them again.
        let leader_state = self.raft.metrics().borrow().state == ServerState::Leader;
        leader_state && !self.leads()
    }

    /// The URL a member is reachable at, from the replicated membership (else the start-up
    /// list).
    pub fn url_of(&self, id: NodeId) -> String {
        let m = self.raft.metrics().borrow().membership_config.clone();
        if let Some(node) = m.membership().get_node(&id) {
            return node.url.clone();
        }
        self.configured.iter().find(|p| p.id == id).map(|p| p.url.clone()).unwrap_or_default()
    }

    /// Cluster figures for `/v1/status` and `/v1/cluster`.
    pub fn status(&self) -> ClusterStatus {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: Vec<NodeId> = membership.voter_ids().collect();
        let matched = |id: &NodeId| -> Option<u64> {
            if *id == self.id {
                return m.replication.as_ref().map(|_| m.last_log_index.unwrap_or(0));
            }
            m.replication.as_ref()?.get(id).map(|l| l.map_or(0, |l| l.index))
        };
        let members = membership
            .nodes()
            .map(|(id, node)| {
                let matched_index = matched(id);
                MemberStatus {
                    id: *id,
                    url: node.url.clone(),
                    voter: voters.contains(id),
                    matched_index,
                    lag: matched_index.map(|i| m.last_log_index.unwrap_or(0).saturating_sub(i)),
                }
            })
            .collect();
        let leader = m.current_leader;
        // openraft 0.9 keeps a leader that lost its quorum in the leader state until it hears
        // a higher term; it can commit nothing, so it does not say it leads.
        let quorum_lost = self.leads_without_quorum();
        ClusterStatus {
            state: if quorum_lost {
                "leader-without-quorum".into()
            } else {
                format!("{:?}", m.state).to_ascii_lowercase()
            },
            leader,
            leader_url: leader.map(|l| self.url_of(l)),
            term: m.current_term,
            commit_index: m.last_applied.map(|l| l.index),
            applied_index: m.last_applied.map(|l| l.index),
            last_log_index: m.last_log_index,
            snapshot_index: m.snapshot.map(|l| l.index),
            purged_index: m.purged.map(|l| l.index),
            members,
            lease_owner: self.leases.is_promoted(&self.raft) && !quorum_lost,
            accepts_writes: self.live_leader_id().is_some(),
        }
    }
}

/// One member in `/v1/status`.
#[derive(Debug, Clone, Serialize)]
pub struct MemberStatus {
    pub id: NodeId,
    pub url: String,
    /// Voter (counts for the quorum) or learner.
    pub voter: bool,
    /// Last log index the member holds, as the leader knows it (on the leader only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matched_index: Option<u64>,
    /// Entries the member is behind the leader's log (on the leader only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lag: Option<u64>,
}

/// Raft figures in `/v1/status`.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterStatus {
    /// `leader`, `leader-without-quorum` (no quorum acknowledged it within the longest
    /// election timeout: it commits nothing and refuses writes), `follower`, `candidate`,
    /// `learner` or `shutdown`.
    pub state: String,
    pub leader: Option<NodeId>,
    pub leader_url: Option<String>,
    pub term: u64,
    /// Highest index known committed here (this node applies as soon as it learns of a
    /// commit, so it is the applied index).
    pub commit_index: Option<u64>,
    pub applied_index: Option<u64>,
    pub last_log_index: Option<u64>,
    pub snapshot_index: Option<u64>,
    pub purged_index: Option<u64>,
    pub members: Vec<MemberStatus>,
    /// This node is the leader and owns the lease table (after its promotion).
    pub lease_owner: bool,
    /// A write sent here now would find a leader.
    pub accepts_writes: bool,
}

/// The raft backend.
pub struct RaftBackend {
    shared: Arc<RaftShared>,
}

impl RaftBackend {
    /// Opens the log and snapshot store under `dir`, rebuilds the registry from the last
    /// snapshot, starts raft and the backend's tasks, and initializes the cluster if this is
    /// its first start (see [`init`]). `members` lists every node, this one included.
    pub async fn start(
        registry: Arc<Registry>,
        dir: &std::path::Path,
        id: NodeId,
        members: Vec<Peer>,
        tuning: RaftTuning,
        outgoing: &crate::replication::outgoing::Outgoing,
    ) -> anyhow::Result<RaftBackend> {
        let db = Arc::new(SyncedDb::open(dir)?);
        let growth = Arc::new(LogGrowth::new(tuning.snapshot_log_bytes));
        let log = LogStore::open(db.clone(), growth.clone())?;
        let sm = StateMachine::open(&db, dir, registry.clone(), growth.clone())?;
        let election_ms = tuning.election_timeout.as_millis() as u64;
        let config = OpenraftConfig {
            cluster_name: "synod".into(),
            heartbeat_interval: tuning.heartbeat.as_millis() as u64,
            election_timeout_min: election_ms,
            election_timeout_max: election_ms * 3 / 2,
            install_snapshot_timeout: tuning.snapshot_timeout.as_millis() as u64,
            max_payload_entries: 8,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(tuning.snapshot_every),
            // Keep at most one snapshot interval of log behind a snapshot for briefly lagging
            // followers; older entries go, so disk use follows the registry, not its history.
            max_in_snapshot_log_to_keep: tuning.snapshot_every.min(1000),
            purge_batch_size: tuning.snapshot_every.min(256),
            replication_lag_threshold: tuning.snapshot_every * 2,
            ..Default::default()
        }
        .validate()?;
        let client = outgoing.builder().build()?;
        let raft = Raft::new(id, Arc::new(config), Network::new(id, client.clone()), log, sm.clone()).await?;
        let shared = Arc::new(RaftShared {
            id,
            raft,
            registry,
            sm,
            tuning,
            client,
            configured: members,
            leases: Leases::new(),
            proposer: Proposer::new(),
            strangers: Default::default(),
            snapshot_intake: Default::default(),
            stats: stats::RaftStats::new(db.stats.clone(), growth.clone()),
            seeding: Default::default(),
        });
        seed::spawn(shared.clone(), dir.join(seed::FILE));
        spawn_snapshots_by_size(shared.raft.clone(), growth);
        proposer::spawn(shared.clone());
        lease::spawn(shared.clone());
        init::spawn(shared.clone());
        admission::spawn_membership_watch(shared.clone());
        Ok(RaftBackend { shared })
    }

    /// The shared state (tests and the admin API).
    pub fn shared(&self) -> &Arc<RaftShared> {
        &self.shared
    }

    /// Stops raft (tests restarting a node in-process must do this before reopening).
    pub async fn shutdown(&self) {
        let _ = self.shared.raft.shutdown().await;
    }
}

/// Builds a snapshot whenever the log has grown enough since the last one (see
/// [`LogGrowth`]); openraft's own policy builds one every `--raft-snapshot-every` entries.
fn spawn_snapshots_by_size(raft: Raft, growth: Arc<LogGrowth>) {
    tokio::spawn(async move {
        loop {
            growth.due().await;
            tracing::debug!("raft log outgrew the last snapshot: building one");
            if let Err(e) = raft.trigger().snapshot().await {
                tracing::debug!(error = %e, "raft stopped: no more snapshots by size");
                return;
            }
        }
    });
}

/// Splits eviction keys into slices of at most ~32 KiB of names.
fn evict_slices(keys: Vec<InstanceKey>) -> Vec<Vec<InstanceKey>> {
    const SLICE_BYTES: usize = 32 * 1024;
    let mut out: Vec<Vec<InstanceKey>> = Vec::new();
    let mut bytes = 0;
    for k in keys {
        let size = k.app.len() + k.id.len() + 8;
        if out.is_empty() || bytes + size > SLICE_BYTES {
            out.push(Vec::new());
            bytes = 0;
        }
        bytes += size;
        if let Some(last) = out.last_mut() {
            last.push(k);
        }
    }
    out
}

/// The member map a configured list describes.
pub fn member_map(members: &[Peer]) -> BTreeMap<NodeId, Member> {
    members.iter().map(|p| (p.id, Member { url: p.url.clone() })).collect()
}

impl Replicator for RaftBackend {
    fn name(&self) -> &'static str {
        "raft"
    }

    fn submit(&self, cmd: Command, _origin: Origin) -> BoxFuture<'_, Result<Outcome, ReplicationError>> {
        Box::pin(async move {
            match cmd {
                // A large eviction round goes through the log in slices that each fit one
                // entry (see `proposer::MAX_ENTRY_BYTES`); each slice is compare-and-delete on
                // its own, so a partial round is still correct.
                Command::Evict { keys, now } => {
                    let mut evicted = 0;
                    for slice in evict_slices(keys) {
                        if let Outcome::Evicted(n) =
                            self.shared.proposer.submit(Command::Evict { keys: slice, now }).await?
                        {
                            evicted += n;
                        }
                    }
                    Ok(Outcome::Evicted(evicted))
                }
                cmd => self.shared.proposer.submit(cmd).await,
            }
        })
    }

    fn renew<'a>(
        &'a self,
        key: &'a InstanceKey,
        last_dirty: Option<u64>,
        _origin: Origin,
    ) -> BoxFuture<'a, Result<RenewOutcome, ReplicationError>> {
        Box::pin(async move { lease::renew(&self.shared, key, last_dirty) })
    }

    fn read_barrier(&self, level: Consistency) -> BoxFuture<'_, Result<(), ReplicationError>> {
        Box::pin(async move {
            match level {
                Consistency::Local => Ok(()),
                Consistency::Linearizable => proposer::read_barrier(&self.shared).await,
            }
        })
    }

    fn may_evict(&self) -> bool {
        self.shared.leases.may_evict(&self.shared)
    }

    fn is_ready(&self) -> bool {
        // Ready = can take writes and renewals, and serves a complete registry.
        let running = self.shared.raft.metrics().borrow().running_state.is_ok();
        running && self.shared.live_leader_id().is_some() && self.registry_complete()
    }

    fn registry_complete(&self) -> bool {
        !self.shared.seeding.load(std::sync::atomic::Ordering::Acquire)
            && self.shared.leases.registry_complete(&self.shared)
    }

    fn role(&self) -> Role {
        match self.shared.raft.metrics().borrow().state {
            ServerState::Leader => Role::Leader,
            ServerState::Follower => Role::Follower,
            ServerState::Candidate => Role::Candidate,
            ServerState::Learner => Role::Learner,
            ServerState::Shutdown => Role::Stopped,
        }
    }

    fn applied_index(&self) -> Option<u64> {
        Some(*self.shared.sm.applied_index().borrow())
    }

    fn expose_metrics(&self, e: &mut crate::metrics::Exposition<'_>) -> std::fmt::Result {
        stats::expose(&self.shared, e)
    }

    fn cluster_status(&self) -> Option<serde_json::Value> {
        serde_json::to_value(self.shared.status()).ok()
    }

    fn routes(&self) -> axum::Router {
        rpc::router(self.shared.clone()).merge(membership::router(self.shared.clone()))
    }
}

/// Time since `t`, saturating.
pub(crate) fn since(t: Instant) -> Duration {
    Instant::now().saturating_duration_since(t)
}
