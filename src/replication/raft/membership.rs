//! Cluster membership admin (JSON), proxied to the leader when called on another node:
//! `GET /v1/cluster`, `POST /v1/cluster/nodes`, `PUT|DELETE /v1/cluster/nodes/{id}`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use openraft::error::{ClientWriteError, RaftError};
use openraft::ChangeMembers;
use serde::{Deserialize, Serialize};

use super::rpc::{not_leader, paths};
use super::types::{Member, NodeId};
use super::RaftShared;
use crate::replication::refusal;

type Shared = Arc<RaftShared>;

/// The membership routes.
pub fn router(shared: Shared) -> Router {
    Router::new()
        .route(paths::CLUSTER, get(cluster))
        .route(paths::NODES, axum::routing::post(add_node))
        .route("/v1/cluster/nodes/{id}", put(set_node).delete(remove_node))
        .with_state(shared)
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
    refusal(r.0, r.1)
}

fn check_url(url: &str) -> Result<String, Refusal> {
    crate::config::member_url(url).map_err(|e| (StatusCode::BAD_REQUEST, format!("{url:?}: {e}")))
}

fn parse_spec(body: &Bytes) -> Result<NodeSpec, Refusal> {
    serde_json::from_slice(body)
        .map_err(|e| (StatusCode::BAD_REQUEST, format!("expected JSON {{\"id\": N, \"url\": \"http://…\"}}: {e}")))
}

/// Runs `op` on the leader: here if this node leads, else by proxying the request.
async fn on_leader(s: &RaftShared, method: Method, path: String, body: Bytes) -> Option<Response> {
    if s.leads() {
        return None;
    }
    let Some((_, url)) = s.live_leader() else {
        return Some(refusal(StatusCode::SERVICE_UNAVAILABLE, "no raft leader reachable from this node"));
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
            let bytes =
                crate::replication::read_answer(r, crate::replication::MAX_SMALL_ANSWER).await.unwrap_or_default();
            (status, [("content-type", "application/json")], bytes).into_response()
        }
        Err(e) => refusal(StatusCode::SERVICE_UNAVAILABLE, format!("leader at {url} unreachable: {e}")),
    })
}

fn membership_error(e: RaftError<NodeId, ClientWriteError<NodeId, Member>>) -> Response {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => not_leader(),
        RaftError::APIError(ClientWriteError::ChangeMembershipError(c)) => refusal(StatusCode::CONFLICT, c.to_string()),
        RaftError::Fatal(f) => refusal(StatusCode::SERVICE_UNAVAILABLE, format!("raft stopped: {f}")),
    }
}

async fn add_node(State(s): State<Shared>, body: Bytes) -> Response {
    let spec = match parse_spec(&body) {
        Ok(v) => v,
        Err(r) => return refused(r),
    };
    let Some(id) = spec.id.filter(|i| *i > 0) else {
        return refusal(StatusCode::BAD_REQUEST, "\"id\" must be a positive integer");
    };
    let url = match check_url(&spec.url) {
        Ok(u) => u,
        Err(r) => return refused(r),
    };
    if let Some(r) = on_leader(&s, Method::POST, paths::NODES.into(), body).await {
        return r;
    }
    let membership = s.raft.metrics().borrow().membership_config.membership().clone();
    if membership.voter_ids().any(|v| v == id) {
        return refusal(
            StatusCode::CONFLICT,
            format!("node {id} is already a voting member (PUT /v1/cluster/nodes/{id} changes its URL)"),
        );
    }
    if let Some(existing) = membership.get_node(&id) {
        if existing.url != url {
            return refusal(
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
            return refusal(
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
        return refusal(StatusCode::BAD_REQUEST, "the id in the body contradicts the path");
    }
    let url = match check_url(&spec.url) {
        Ok(u) => u,
        Err(r) => return refused(r),
    };
    if let Some(r) = on_leader(&s, Method::PUT, format!("{}/{id}", paths::NODES), body).await {
        return r;
    }
    let membership = s.raft.metrics().borrow().membership_config.membership().clone();
    if membership.get_node(&id).is_none() {
        return refusal(StatusCode::NOT_FOUND, format!("node {id} is not a member"));
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
    if let Some(r) = on_leader(&s, Method::DELETE, format!("{}/{id}", paths::NODES), Bytes::new()).await {
        return r;
    }
    let membership = s.raft.metrics().borrow().membership_config.membership().clone();
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    let change = if voters.contains(&id) {
        if voters.len() == 1 {
            return refusal(
                StatusCode::BAD_REQUEST,
                format!("node {id} is the only voter; a cluster cannot remove its last voter"),
            );
        }
        ChangeMembers::RemoveVoters(BTreeSet::from([id]))
    } else if membership.get_node(&id).is_some() {
        ChangeMembers::RemoveNodes(BTreeSet::from([id]))
    } else {
        return refusal(StatusCode::NOT_FOUND, format!("node {id} is not a member"));
    };
    match s.raft.change_membership(change, false).await {
        Ok(_) => {
            tracing::info!(id, "raft node removed");
            cluster(State(s)).await
        }
        Err(e) => membership_error(e),
    }
}
