//! The replication layer: one trait between the HTTP layer and the backends. `--replication`
//! picks the backend at start-up; handlers only ever talk to `dyn Replicator`.
//!
//! Who owns what, per backend:
//! - `none` ([`standalone`]): applies commands locally and makes them durable in the
//!   [`crate::store::Store`] before acknowledging; renewals touch the local lease table; this
//!   node always runs eviction.
//! - `p2p` ([`p2p`]): every node applies and persists locally, replicates to its peers in
//!   batches, counts replicated renewals and evicts on its own numbers.
//! - `raft` ([`raft`]): commands go through the raft log before they are acknowledged; the
//!   leader owns the lease table, relayed renewals and eviction.

pub mod local;
pub mod outgoing;
pub mod p2p;
pub mod raft;
pub mod standalone;

use std::future::Future;
use std::pin::Pin;

use serde::Serialize;

use crate::core::command::{Command, Outcome};
use crate::core::model::InstanceKey;
use crate::core::state::RenewOutcome;

/// Response header on registry reads by a peer: whether this node's registry is complete
/// (see [`Replicator::registry_complete`]).
pub const COMPLETE_HEADER: &str = "x-synod-registry-complete";

/// Response header on registry reads: the applied log position (raft).
pub const APPLIED_INDEX_HEADER: &str = "x-synod-applied-index";

/// Request header asking for a linearizable read (`linearizable`); the query parameter
/// `consistency=linearizable` does the same.
pub const CONSISTENCY_HEADER: &str = "x-synod-consistency";

/// A boxed, sendable future (the trait is used as a trait object).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Replication failures surfaced to clients (as 503).
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReplicationError {
    /// The change could not be made durable; it was not acknowledged.
    #[error("write not durable: {0}")]
    Storage(String),
    /// The backend cannot take this request now.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

/// Where a request comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A registry client (or an operator).
    Client,
    /// Another registry node replicating to this one (Eureka's
    /// `x-netflix-discovery-replication: true`, or the batch endpoint): applied, never
    /// replicated further.
    Peer,
}

/// How fresh a read must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consistency {
    /// Whatever this node has applied.
    Local,
    /// Everything acknowledged anywhere before the read started.
    Linearizable,
}

/// This node's role in its replication group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Single node, no replication.
    Standalone,
    /// One of several equal p2p nodes.
    Peer,
    /// Raft leader.
    Leader,
    /// Raft follower.
    Follower,
    /// Raft candidate (an election is under way).
    Candidate,
    /// Raft learner (receives the log, does not vote).
    Learner,
    /// Raft stopped (a storage failure stops the node).
    Stopped,
}

impl Role {
    /// Name shown in `/v1/status`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Standalone => "standalone",
            Role::Peer => "peer",
            Role::Leader => "leader",
            Role::Follower => "follower",
            Role::Candidate => "candidate",
            Role::Learner => "learner",
            Role::Stopped => "stopped",
        }
    }
}

/// Health of the link to one peer, as shown in `/v1/status` and on the dashboard.
#[derive(Debug, Clone, Serialize)]
pub struct PeerStatus {
    pub id: u64,
    pub url: String,
    pub reachable: bool,
    /// Changes and heartbeats queued for the peer.
    pub queue_depth: usize,
    /// Wall-clock milliseconds of the last batch the peer accepted (0: none yet).
    pub last_success_ms: u64,
    /// The queue overflowed and the registries were not yet found to agree since.
    pub needs_resync: bool,
    /// Whether the registry digests agreed at the last anti-entropy round (none yet: null).
    pub digests_agree: Option<bool>,
    /// Wall-clock milliseconds of the last anti-entropy round (0: none yet).
    pub last_anti_entropy_ms: u64,
}

/// A refused request, by a backend route or the HTTP layer alike: the status and a one-line
/// reason as plain text (what clients and peers log).
pub fn refusal(status: axum::http::StatusCode, reason: impl std::fmt::Display) -> axum::response::Response {
    use axum::response::IntoResponse;
    let reason = reason.to_string().replace(['\n', '\r'], " ");
    tracing::debug!(status = status.as_u16(), %reason, "request rejected");
    (status, [(axum::http::header::CONTENT_TYPE, "text/plain; charset=utf-8")], reason + "\n").into_response()
}

/// The backend interface.
pub trait Replicator: Send + Sync + 'static {
    /// Backend name (`none`, `p2p`, `raft`).
    fn name(&self) -> &'static str;

    /// Submits a registry change; resolves once it is applied and as durable as the backend
    /// promises (acknowledged writes survive a crash).
    fn submit(&self, cmd: Command, origin: Origin) -> BoxFuture<'_, Result<Outcome, ReplicationError>>;

    /// Renews a lease.
    fn renew<'a>(
        &'a self,
        key: &'a InstanceKey,
        last_dirty: Option<u64>,
        origin: Origin,
    ) -> BoxFuture<'a, Result<RenewOutcome, ReplicationError>>;

    /// Resolves once the local registry reflects every write acknowledged before the call
    /// (for [`Consistency::Linearizable`]); `Local` returns at once.
    fn read_barrier(&self, level: Consistency) -> BoxFuture<'_, Result<(), ReplicationError>>;

    /// Whether this node may run eviction now.
    fn may_evict(&self) -> bool;

    /// Whether this node is ready to serve.
    fn is_ready(&self) -> bool;

    /// Whether the local registry may be served to clients as complete (false while a p2p
    /// node is still pulling its peers' registries at start-up: an empty or partial registry
    /// would make clients drop instances that exist).
    fn registry_complete(&self) -> bool {
        true
    }

    /// This node's role.
    fn role(&self) -> Role;

    /// Health of the links to the other nodes (empty for a single node).
    fn peers(&self) -> Vec<PeerStatus> {
        Vec::new()
    }

    /// Position of the last change applied here, when the backend has one (raft: the log
    /// index), sent as [`APPLIED_INDEX_HEADER`] on reads.
    fn applied_index(&self) -> Option<u64> {
        None
    }

    /// Backend figures merged into `/v1/status` (raft: leader, term, indexes, members).
    fn cluster_status(&self) -> Option<serde_json::Value> {
        None
    }

    /// Writes the backend's figures (replication, its store) for `/metrics`.
    fn expose_metrics(&self, _out: &mut crate::metrics::Exposition<'_>) -> std::fmt::Result {
        Ok(())
    }

    /// Backend-specific HTTP routes (peer replication, raft RPCs), merged into the server.
    fn routes(&self) -> axum::Router {
        axum::Router::new()
    }
}

/// Most bytes read from another node's answer: a whole registry (p2p start-up sync and
/// anti-entropy pull one); everything else a node answers is far smaller.
pub const MAX_PEER_ANSWER: usize = u32::MAX as usize;
/// Most bytes read from another node's answer to a raft RPC, forward, relay or lookup.
pub const MAX_SMALL_ANSWER: usize = 64 << 20;

/// Why another node's answer could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AnswerError {
    #[error(transparent)]
    Transport(#[from] reqwest::Error),
    #[error("answer exceeds the limit of {0} bytes")]
    TooLarge(usize),
}

/// Reads another node's answer, refusing one larger than `limit` bytes (by its declared
/// length, or as it streams in) instead of buffering whatever arrives.
pub async fn read_answer(mut resp: reqwest::Response, limit: usize) -> Result<bytes::Bytes, AnswerError> {
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(AnswerError::TooLarge(limit));
    }
    let mut out = bytes::BytesMut::new();
    while let Some(chunk) = resp.chunk().await? {
        if out.len() + chunk.len() > limit {
            return Err(AnswerError::TooLarge(limit));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out.freeze())
}
