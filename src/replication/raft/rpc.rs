//! The raft backend's node-to-node surface, on the node's one listener (bincode bodies):
//!
//! - `POST /v1/raft/{append,vote,snapshot}`: raft RPCs (bincode `Result` out);
//! - `POST /v1/raft/forward`: a follower's batch of commands, proposed by the leader;
//! - `POST /v1/raft/renew`: a follower's relayed renewals;
//! - `GET /v1/raft/read-index`: the leader confirms its quorum and names the index a
//!   linearizable read must reach;
//! - `GET /v1/raft/init`: whether this node belongs to an initialized cluster (cluster
//!   formation, see [`super::init`]).
//!
//! Every body is decoded with a bound ([`super::types::decode`]) and checked by
//! [`super::admission`] before openraft or the registry sees it; anything malformed answers
//! 400, a sender that is not a member 403, and neither changes any state.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, VoteRequest};
use serde::{Deserialize, Serialize};

use super::admission::{self, Refusal};
use super::proposer::{read_index_local, Attempt, ForwardReply, Refused};
use super::types::{decode, encode, NodeId, Proposal, TypeConfig};
use super::RaftShared;
use crate::core::command::Command;
use crate::core::limits::{check_instance, check_key, check_metadata_map};
use crate::core::model::InstanceKey;
use crate::replication::refusal;

/// Every path of the raft backend, in one place (routes and the clients that call them).
pub mod paths {
    /// Raft AppendEntries.
    pub const APPEND: &str = "/v1/raft/append";
    /// Raft RequestVote.
    pub const VOTE: &str = "/v1/raft/vote";
    /// Raft InstallSnapshot (one chunk).
    pub const SNAPSHOT: &str = "/v1/raft/snapshot";
    /// A follower's commands for the leader to propose.
    pub const FORWARD: &str = "/v1/raft/forward";
    /// A follower's relayed renewals.
    pub const RENEW: &str = "/v1/raft/renew";
    /// The leader's read index.
    pub const READ_INDEX: &str = "/v1/raft/read-index";
    /// Cluster formation state.
    pub const INIT: &str = "/v1/raft/init";
    /// Membership and status (JSON).
    pub const CLUSTER: &str = "/v1/cluster";
    /// Adding a node (JSON).
    pub const NODES: &str = "/v1/cluster/nodes";
}

/// Largest raft request body. The largest legal messages are snapshot chunks (openraft's
/// default chunk is 3 MiB) and appends of `max_payload_entries` log entries, each a batch
/// bounded by the proposer (or one command of at most `--max-body-size`).
pub const RAFT_BODY_LIMIT: usize = 64 * 1024 * 1024;

/// Most renewals in one relayed batch (what a follower sends at most, see [`super::lease`]).
pub const MAX_RELAYED_RENEWALS: usize = 20_000;
/// Most commands in one forwarded batch (the proposer sends at most 256).
pub const MAX_FORWARDED_COMMANDS: usize = 4096;

type Shared = Arc<RaftShared>;

/// The RPC routes.
pub fn router(shared: Shared) -> Router {
    Router::new()
        .route(paths::APPEND, post(append))
        .route(paths::VOTE, post(vote))
        .route(paths::SNAPSHOT, post(snapshot))
        .route(paths::FORWARD, post(forward))
        .route(paths::RENEW, post(renew))
        .route(paths::READ_INDEX, get(read_index))
        .route(paths::INIT, get(init_state))
        .layer(DefaultBodyLimit::max(RAFT_BODY_LIMIT))
        .with_state(shared)
}

fn octets(body: Vec<u8>) -> Response {
    ([("content-type", "application/octet-stream")], body).into_response()
}

fn encoded<T: Serialize>(value: &T) -> Response {
    match encode(value) {
        Ok(b) => octets(b),
        Err(e) => refusal(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot encode reply: {e}")),
    }
}

fn admission_refusal(r: Refusal) -> Response {
    let status = match r {
        Refusal::Invalid(_) => StatusCode::BAD_REQUEST,
        Refusal::Stranger(_) => StatusCode::FORBIDDEN,
    };
    tracing::debug!(reason = %r, "raft message refused");
    refusal(status, format!("raft message refused: {r}"))
}

/// Decodes a body.
fn body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, Refusal> {
    decode(bytes).map_err(|e| Refusal::Invalid(format!("undecodable: {e}")))
}

/// Admits a message whose content passed its checks (`checked` names the sender) if the
/// sender is a member, or a member this node knows listed it lately.
fn admit(s: &RaftShared, checked: Result<NodeId, Refusal>, vote: &super::types::Vote) -> Result<(), Refusal> {
    let sender = checked?;
    let m = s.raft.metrics();
    let m = m.borrow();
    admission::check_vote_against(vote, s.id, m.current_term)?;
    let membership = m.membership_config.membership();
    // Never initialized: no configuration to protect yet (it arrives with the first append).
    if membership.get_node(&sender).is_some() || membership.nodes().next().is_none() {
        return Ok(());
    }
    if s.strangers.vouched_for(sender) {
        return Ok(());
    }
    Err(Refusal::Stranger(sender))
}

/// Decodes a raft RPC and admits it: `check` checks its content and names its sender,
/// `vote` is the vote it carries.
fn admitted<T: serde::de::DeserializeOwned>(
    s: &RaftShared,
    bytes: &[u8],
    check: impl Fn(&T) -> Result<NodeId, Refusal>,
    vote: impl Fn(&T) -> &super::types::Vote,
) -> Result<T, Refusal> {
    let req: T = body(bytes)?;
    admit(s, check(&req), vote(&req))?;
    Ok(req)
}

async fn append(State(s): State<Shared>, bytes: Bytes) -> Response {
    let req: AppendEntriesRequest<TypeConfig> = match admitted(&s, &bytes, admission::check_append, |r| &r.vote) {
        Ok(r) => r,
        Err(r) => return admission_refusal(r),
    };
    let leader_commit = req.leader_commit.map(|l| l.index);
    let result = s.raft.append_entries(req).await;
    if let Ok(resp) = &result {
        if !matches!(resp, AppendEntriesResponse::HigherVote(_)) {
            s.leases.touch_leader();
            s.leases.saw_leader_commit(leader_commit);
        }
    }
    encoded(&result)
}

async fn vote(State(s): State<Shared>, bytes: Bytes) -> Response {
    let req: VoteRequest<NodeId> = match admitted(&s, &bytes, admission::check_vote_request, |r| &r.vote) {
        Ok(r) => r,
        Err(r) => return admission_refusal(r),
    };
    encoded(&s.raft.vote(req).await)
}

async fn snapshot(State(s): State<Shared>, bytes: Bytes) -> Response {
    let req: InstallSnapshotRequest<TypeConfig> = match admitted(&s, &bytes, admission::check_snapshot, |r| &r.vote) {
        Ok(r) => r,
        Err(r) => return admission_refusal(r),
    };
    if let Err(r) = s.snapshot_intake.admit(&req.meta.snapshot_id, req.offset, req.data.len()) {
        return admission_refusal(r);
    }
    let result = s.raft.install_snapshot(req).await;
    if result.is_ok() {
        s.leases.touch_leader();
    }
    encoded(&result)
}

/// 421: the request needs the leader.
pub fn not_leader() -> Response {
    refusal(StatusCode::MISDIRECTED_REQUEST, "this node is not the raft leader")
}

/// Checks forwarded commands with the rules the HTTP layer applies to the same requests, so
/// nothing reaches the log by this route that a client could not have written. Evictions are
/// the leader's own decision and never arrive from another node.
pub fn check_forwarded(cmds: &[Command]) -> Result<(), String> {
    if cmds.len() > MAX_FORWARDED_COMMANDS {
        return Err(format!("more than {MAX_FORWARDED_COMMANDS} commands in one forward"));
    }
    for c in cmds {
        match c {
            Command::Register { instance, .. } => check_instance(instance),
            Command::Cancel { key, .. }
            | Command::SetStatusOverride { key, .. }
            | Command::DeleteStatusOverride { key, .. } => check_key(key),
            Command::UpdateMetadata { key, entries, .. } => {
                check_key(key).and_then(|()| check_metadata_map(entries, "metadata"))
            }
            Command::Evict { .. } => Err("evictions are decided by the leader, not forwarded".into()),
            Command::Adopt { .. } => Err("adopting another node's copy is p2p replication, not raft".into()),
        }
        .map_err(|e| format!("{} command refused: {e}", c.kind()))?;
    }
    Ok(())
}

async fn forward(State(s): State<Shared>, bytes: Bytes) -> Response {
    let proposal: Proposal = match body(&bytes) {
        Ok(p) => p,
        Err(r) => return admission_refusal(r),
    };
    if let Err(e) = check_forwarded(&proposal.commands) {
        return refusal(StatusCode::BAD_REQUEST, e);
    }
    if !s.leads() {
        return not_leader();
    }
    // Into this node's own queue: forwarded writes share log entries with local ones.
    let results = s.proposer.submit_forwarded(Arc::unwrap_or_clone(proposal.commands)).await;
    // The commands may have been split over several log entries: the answer covers them
    // all, and the follower may only ask another leader if none of them was proposed, or a
    // command would be in the log twice.
    let none_proposed = results.iter().all(|r| matches!(r, Err(Refused::NotLeader)));
    let mut reply = ForwardReply { index: 0, outcomes: Vec::with_capacity(results.len()) };
    for r in results {
        match r {
            Ok((outcome, index)) => {
                reply.index = reply.index.max(index);
                reply.outcomes.push(outcome);
            }
            // Refused before it was proposed (this node stopped leading while it waited in
            // the queue).
            Err(Refused::NotLeader) if none_proposed => return not_leader(),
            Err(Refused::NotLeader) => {
                return refusal(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "leadership changed while the write was in flight; part of it may be applied",
                )
            }
            // Its fate may be unknown: answered 503, which the follower does not retry.
            Err(Refused::Failed(e)) => return refusal(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        }
    }
    encoded(&reply)
}

/// Checks relayed renewals: a bounded batch of well-formed keys.
pub fn check_relayed(items: &[(InstanceKey, u64)]) -> Result<(), String> {
    if items.len() > MAX_RELAYED_RENEWALS {
        return Err(format!("more than {MAX_RELAYED_RENEWALS} renewals in one relay"));
    }
    items.iter().try_for_each(|(key, _)| check_key(key)).map_err(|e| format!("relayed renewal refused: {e}"))
}

async fn renew(State(s): State<Shared>, bytes: Bytes) -> Response {
    let items: Vec<(InstanceKey, u64)> = match body(&bytes) {
        Ok(i) => i,
        Err(r) => return admission_refusal(r),
    };
    if let Err(e) = check_relayed(&items) {
        return refusal(StatusCode::BAD_REQUEST, e);
    }
    if !s.leads() {
        return not_leader();
    }
    for (key, age) in &items {
        s.registry.renew_aged(key, *age);
    }
    super::stats::RaftStats::bump(&s.stats.relays_received, items.len() as u64);
    StatusCode::NO_CONTENT.into_response()
}

async fn read_index(State(s): State<Shared>) -> Response {
    if !s.leads() {
        return not_leader();
    }
    match read_index_local(&s, Instant::now() + s.write_timeout()).await {
        Attempt::Done(index) => encoded(&index),
        Attempt::Retry => not_leader(),
        Attempt::Failed(e) => refusal(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

/// Answer of `GET /v1/raft/init`.
#[derive(Debug, Serialize, Deserialize)]
pub struct InitState {
    pub node_id: NodeId,
    pub initialized: bool,
    /// The member list the node was started with, as (id, URL).
    pub configured: Vec<(NodeId, String)>,
}

async fn init_state(State(s): State<Shared>) -> Response {
    let initialized = s.raft.is_initialized().await.unwrap_or(false);
    Json(InitState {
        node_id: s.id,
        initialized,
        configured: s.configured.iter().map(|p| (p.id, p.url.clone())).collect(),
    })
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    fn register(host: &str) -> Command {
        let mut instance = crate::core::tests::instance("APP", "i-1");
        instance.host_name = host.into();
        Command::Register { instance: Box::new(instance), now: 1, from_peer: false }
    }
    #[test]
    fn forwarded_commands_meet_the_http_rules() {
        assert_eq!(check_forwarded(&[register("h")]), Ok(()));
        let e = check_forwarded(&[register("h\u{1}")]).unwrap_err();
        assert!(e.contains("hostName contains control characters"), "{e}");
        assert!(check_forwarded(&[register(&"h".repeat(5000))]).is_err());
        let evict = Command::Evict { keys: vec![InstanceKey::new("APP", "i-1")], now: u64::MAX };
        assert!(check_forwarded(&[evict]).unwrap_err().contains("evictions"));
        let meta = Command::UpdateMetadata {
            key: InstanceKey::new("APP", "i-1"),
            entries: [("k".to_string(), "\u{0}".to_string())].into(),
            now: 1,
        };
        assert!(check_forwarded(&[meta]).is_err());
        let cancel = Command::Cancel { key: InstanceKey { app: String::new(), id: "x".into() }, now: 1 };
        assert!(check_forwarded(&[cancel]).is_err());
    }

    #[test]
    fn relayed_renewals_are_bounded_and_well_formed() {
        assert_eq!(check_relayed(&[(InstanceKey::new("APP", "i-1"), 5)]), Ok(()));
        assert!(check_relayed(&[(InstanceKey::new("APP", "bad\u{7}"), 5)]).is_err());
        let many = vec![(InstanceKey::new("APP", "i"), 0); MAX_RELAYED_RENEWALS + 1];
        assert!(check_relayed(&many).is_err());
    }
}
