//! HTTP endpoints of the raft backend, on the node's one listener:
//!
//! - `POST /v1/raft/{append,vote,snapshot}`: raft RPCs (bincode in, bincode `Result` out);
//! - `POST /v1/raft/forward`: a follower's batch of commands, proposed by the leader;
//! - `POST /v1/raft/renew`: a follower's relayed renewals;
//! - `GET /v1/raft/read-index`: the leader confirms its quorum and names the index a
//!   linearizable read must reach;
//! - `GET /v1/raft/init`: whether this node belongs to an initialized cluster (cluster
//!   formation, see [`super::init`]);
//! - `/v1/cluster` and `/v1/cluster/nodes[/{id}]`: membership admin (JSON), proxied to the
//!   leader when called on another node.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use openraft::error::{ClientWriteError, RaftError};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse};
use openraft::ChangeMembers;
use serde::{Deserialize, Serialize};

use super::proposer::{read_index_local, Attempt, ForwardReply, Refused};
use super::types::{decode, encode, Member, NodeId, Proposal, TypeConfig};
use super::RaftShared;
use crate::core::model::InstanceKey;

/// Largest raft request body: a full append payload of large batches, or a snapshot chunk.
const RAFT_BODY_LIMIT: usize = 256 * 1024 * 1024;

type Shared = Arc<RaftShared>;

/// The backend's router.
pub fn router(shared: Shared) -> Router {
    let internal = Router::new()
        .route("/v1/raft/append", post(append))
        .route("/v1/raft/vote", post(vote))
        .route("/v1/raft/snapshot", post(snapshot))
        .route("/v1/raft/forward", post(forward))
        .route("/v1/raft/renew", post(renew))
        .route("/v1/raft/read-index", get(read_index))
        .route("/v1/raft/init", get(init_state))
        .layer(DefaultBodyLimit::max(RAFT_BODY_LIMIT));
    let admin = Router::new()
        .route("/v1/cluster", get(cluster))
        .route("/v1/cluster/nodes", post(add_node))
        .route("/v1/cluster/nodes/{id}", put(set_node).delete(remove_node));
    internal.merge(admin).with_state(shared)
}

fn octets(body: Vec<u8>) -> Response {
    ([("content-type", "application/octet-stream")], body).into_response()
}

fn text(status: StatusCode, msg: impl Into<String>) -> Response {
    let mut m = msg.into();
    m.push('\n');
    (status, m).into_response()
}

fn encoded<T: Serialize>(value: &T) -> Response {
    match encode(value) {
        Ok(b) => octets(b),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot encode reply: {e}")),
    }
}

fn bad_body(e: impl std::fmt::Display) -> Response {
    text(StatusCode::BAD_REQUEST, format!("undecodable raft message: {e}"))
}

async fn append(State(s): State<Shared>, body: Bytes) -> Response {
    let req: AppendEntriesRequest<TypeConfig> = match decode(&body) {
        Ok(r) => r,
        Err(e) => return bad_body(e),
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

async fn vote(State(s): State<Shared>, body: Bytes) -> Response {
    match decode(&body) {
        Ok(req) => encoded(&s.raft.vote(req).await),
        Err(e) => bad_body(e),
    }
}

async fn snapshot(State(s): State<Shared>, body: Bytes) -> Response {
    match decode(&body) {
        Ok(req) => {
            let result = s.raft.install_snapshot(req).await;
            if result.is_ok() {
                s.leases.touch_leader();
            }
            encoded(&result)
        }
        Err(e) => bad_body(e),
    }
}

fn not_leader() -> Response {
    text(StatusCode::MISDIRECTED_REQUEST, "this node is not the raft leader")
}

fn is_leader(s: &RaftShared) -> bool {
    s.leads()
}

async fn forward(State(s): State<Shared>, body: Bytes) -> Response {
    let proposal: Proposal = match decode(&body) {
        Ok(p) => p,
        Err(e) => return bad_body(e),
    };
    if !is_leader(&s) {
        return not_leader();
    }
    // Into this node's own queue: forwarded writes share log entries with local ones.
    let results = s.proposer.submit_forwarded(std::sync::Arc::unwrap_or_clone(proposal.commands)).await;
    let mut reply = ForwardReply { index: 0, outcomes: Vec::with_capacity(results.len()) };
    for r in results {
        match r {
            Ok((outcome, index)) => {
                reply.index = reply.index.max(index);
                reply.outcomes.push(outcome);
            }
            // Partly committed batches are answered as a whole: the follower retries the
            // batch, which is harmless because every command is idempotent.
            Err(Refused::NotLeader) => return not_leader(),
            Err(Refused::Failed(e)) => return text(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        }
    }
    encoded(&reply)
}

async fn renew(State(s): State<Shared>, body: Bytes) -> Response {
    let items: Vec<(InstanceKey, u64)> = match decode(&body) {
        Ok(i) => i,
        Err(e) => return bad_body(e),
    };
    if !is_leader(&s) {
        return not_leader();
    }
    for (key, age) in &items {
        s.registry.renew_aged(key, *age);
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn read_index(State(s): State<Shared>) -> Response {
    if !is_leader(&s) {
        return not_leader();
    }
    match read_index_local(&s, Instant::now() + s.write_timeout()).await {
        Attempt::Done(index) => encoded(&index),
        Attempt::Retry => not_leader(),
        Attempt::Failed(e) => text(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
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

#[derive(Serialize)]
struct ClusterBody {
    node_id: NodeId,
    #[serde(flatten)]
    status: super::ClusterStatus,
}

async fn cluster(State(s): State<Shared>) -> Response {
    Json(ClusterBody { node_id: s.id, status: s.status() }).into_response()
}

/// Body of `POST /v1/cluster/nodes` and `PUT /v1/cluster/nodes/{id}`.
#[derive(Debug, Serialize, Deserialize)]
pub struct NodeSpec {
    #[serde(default)]
    pub id: Option<NodeId>,
    pub url: String,
}

/// A refusal: status and one-line reason.
type Refusal = (StatusCode, String);

fn refused(r: Refusal) -> Response {
    text(r.0, r.1)
}

fn check_url(url: &str) -> Result<String, Refusal> {
    let u = url.trim().trim_end_matches('/');
    if !(u.starts_with("http://") || u.starts_with("https://")) || u.len() <= "https://".len() {
        return Err((StatusCode::BAD_REQUEST, format!("{url:?}: URL must start with http:// or https://")));
    }
    Ok(u.to_string())
}

fn parse_spec(body: &Bytes) -> Result<NodeSpec, Refusal> {
    serde_json::from_slice(body)
        .map_err(|e| (StatusCode::BAD_REQUEST, format!("expected JSON {{\"id\": N, \"url\": \"http://…\"}}: {e}")))
}

/// Runs `op` on the leader: here if this node leads, else by proxying the request.
async fn on_leader(s: &RaftShared, method: Method, path: String, body: Bytes) -> Option<Response> {
    if is_leader(s) {
        return None;
    }
    let Some((_, url)) = s.live_leader() else {
        return Some(text(StatusCode::SERVICE_UNAVAILABLE, "no raft leader reachable from this node"));
    };
    let resp = s
        .client
        .request(method, format!("{url}{path}"))
        .header("content-type", "application/json")
        .timeout(Duration::from_secs(120))
        .body(body)
        .send()
        .await;
    Some(match resp {
        Ok(r) => {
            let status = StatusCode::from_u16(r.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            let bytes = r.bytes().await.unwrap_or_default();
            (status, [("content-type", "application/json")], bytes).into_response()
        }
        Err(e) => text(StatusCode::SERVICE_UNAVAILABLE, format!("leader at {url} unreachable: {e}")),
    })
}

fn membership_error(e: RaftError<NodeId, ClientWriteError<NodeId, Member>>) -> Response {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => not_leader(),
        RaftError::APIError(ClientWriteError::ChangeMembershipError(c)) => text(StatusCode::CONFLICT, c.to_string()),
        RaftError::Fatal(f) => text(StatusCode::SERVICE_UNAVAILABLE, format!("raft stopped: {f}")),
    }
}

async fn add_node(State(s): State<Shared>, body: Bytes) -> Response {
    let spec = match parse_spec(&body) {
        Ok(v) => v,
        Err(r) => return refused(r),
    };
    let Some(id) = spec.id.filter(|i| *i > 0) else {
        return text(StatusCode::BAD_REQUEST, "\"id\" must be a positive integer");
    };
    let url = match check_url(&spec.url) {
        Ok(u) => u,
        Err(r) => return refused(r),
    };
    if let Some(r) = on_leader(&s, Method::POST, "/v1/cluster/nodes".into(), body).await {
        return r;
    }
    let membership = s.raft.metrics().borrow().membership_config.membership().clone();
    if membership.voter_ids().any(|v| v == id) {
        return text(
            StatusCode::CONFLICT,
            format!("node {id} is already a voting member (PUT /v1/cluster/nodes/{id} changes its URL)"),
        );
    }
    if let Some(existing) = membership.get_node(&id) {
        if existing.url != url {
            return text(
                StatusCode::CONFLICT,
                format!("node {id} is a learner at {}; change its URL first", existing.url),
            );
        }
    } else if let Err(e) = s.raft.add_learner(id, Member { url: url.clone() }, false).await {
        return membership_error(e);
    }
    tracing::info!(id, url, "added raft learner; waiting for it to catch up");
    // add_learner's own "blocking" mode returns before a learner with a short log received
    // anything; wait on the leader's replication progress instead.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let m = s.raft.metrics().borrow().clone();
        let target = m.last_log_index.unwrap_or(0);
        let matched = m.replication.as_ref().and_then(|r| r.get(&id).cloned().flatten()).map(|l| l.index);
        if matched.is_some_and(|i| i + 1 >= target) {
            break;
        }
        if Instant::now() >= deadline {
            return text(
                StatusCode::GATEWAY_TIMEOUT,
                format!("node {id} did not catch up within 60 s (is it running at {url}?); it stays a learner"),
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    match s.raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false).await {
        Ok(_) => {
            tracing::info!(id, url, "raft node promoted to voter");
            cluster(State(s)).await
        }
        Err(e) => membership_error(e),
    }
}

async fn set_node(State(s): State<Shared>, Path(id): Path<NodeId>, body: Bytes) -> Response {
    let spec = match parse_spec(&body) {
        Ok(v) => v,
        Err(r) => return refused(r),
    };
    if spec.id.is_some_and(|i| i != id) {
        return text(StatusCode::BAD_REQUEST, "the id in the body contradicts the path");
    }
    let url = match check_url(&spec.url) {
        Ok(u) => u,
        Err(r) => return refused(r),
    };
    if let Some(r) = on_leader(&s, Method::PUT, format!("/v1/cluster/nodes/{id}"), body).await {
        return r;
    }
    let membership = s.raft.metrics().borrow().membership_config.membership().clone();
    if membership.get_node(&id).is_none() {
        return text(StatusCode::NOT_FOUND, format!("node {id} is not a member"));
    }
    match s
        .raft
        .change_membership(ChangeMembers::SetNodes(BTreeMap::from([(id, Member { url: url.clone() })])), false)
        .await
    {
        Ok(_) => {
            tracing::info!(id, url, "raft member URL changed");
            cluster(State(s)).await
        }
        Err(e) => membership_error(e),
    }
}

async fn remove_node(State(s): State<Shared>, Path(id): Path<NodeId>) -> Response {
    if let Some(r) = on_leader(&s, Method::DELETE, format!("/v1/cluster/nodes/{id}"), Bytes::new()).await {
        return r;
    }
    let membership = s.raft.metrics().borrow().membership_config.membership().clone();
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    let change = if voters.contains(&id) {
        if voters.len() == 1 {
            return text(
                StatusCode::BAD_REQUEST,
                format!("node {id} is the only voter; a cluster cannot remove its last voter"),
            );
        }
        ChangeMembers::RemoveVoters(BTreeSet::from([id]))
    } else if membership.get_node(&id).is_some() {
        ChangeMembers::RemoveNodes(BTreeSet::from([id]))
    } else {
        return text(StatusCode::NOT_FOUND, format!("node {id} is not a member"));
    };
    match s.raft.change_membership(change, false).await {
        Ok(_) => {
            tracing::info!(id, "raft node removed");
            cluster(State(s)).await
        }
        Err(e) => membership_error(e),
    }
}
