//! Operator endpoints: liveness, readiness and `/v1/status`.

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use super::respond::error;
use super::AppState;
use crate::core::preservation::PreservationStatus;

/// `GET /healthz`: the process is up.
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// `GET /readyz`: the node can serve the registry.
pub async fn readyz(State(s): State<AppState>) -> Response {
    if s.replicator.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

/// Body of `GET /v1/status`.
#[derive(Debug, Serialize)]
pub struct StatusBody {
    pub node_id: u64,
    pub replication: &'static str,
    pub role: &'static str,
    pub instances: usize,
    pub applications: usize,
    pub registry_version: u64,
    /// Long-polled delta requests waiting now (at most `--max-long-polls`).
    pub long_polls_waiting: usize,
    /// Long polls refused (503) for want of a slot since start.
    pub long_polls_refused: u64,
    /// Client connections open now (long polls included).
    pub connections_open: usize,
    /// Most client connections open at once (`--max-connections`, fitted to the
    /// file-descriptor limit).
    pub max_connections: usize,
    pub self_preservation: PreservationStatus,
    /// Times self-preservation engaged on this node since start.
    pub self_preservation_engagements: u64,
    /// Instances removed by eviction on this node since start.
    pub evicted_instances: u64,
    /// Renewals per calendar minute over the last quarter hour, oldest first (the last
    /// minute is under way).
    pub renewals_per_minute: Vec<u64>,
    /// Milliseconds since the epoch on this node's clock.
    pub now_ms: u64,
    /// Seconds since this node started serving.
    pub uptime_seconds: u64,
    /// Links to the other nodes (p2p).
    pub peers: Vec<crate::replication::PeerStatus>,
    /// Backend figures (raft: leader, leader_url, term, commit/applied index, members).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<serde_json::Value>,
}

/// `GET /v1/status`: node, registry and self-preservation numbers.
pub async fn status(State(s): State<AppState>) -> Json<StatusBody> {
    let now = s.registry.now();
    let (instances, applications, registry_version, renewals) =
        s.registry.read(|st| (st.len(), st.apps().count(), st.version(), st.renews_per_minute(now)));
    Json(StatusBody {
        node_id: s.node_id,
        replication: s.replicator.name(),
        role: s.replicator.role().as_str(),
        instances,
        applications,
        registry_version,
        long_polls_waiting: s.max_long_polls.saturating_sub(s.long_polls.available_permits()),
        long_polls_refused: s.long_polls_refused.load(std::sync::atomic::Ordering::Relaxed),
        connections_open: s.connections.open(),
        max_connections: s.connections.max(),
        self_preservation: s.registry.preservation(),
        self_preservation_engagements: s.registry.preservation_engagements(),
        evicted_instances: s.registry.evicted(),
        renewals_per_minute: renewals.to_vec(),
        now_ms: now,
        uptime_seconds: s.started.elapsed().as_secs(),
        peers: s.replicator.peers(),
        cluster: s.replicator.cluster_status(),
    })
}

/// `GET /v1/snapshot`: a backup of this node's registry (see [`crate::snapshot`]). A raft
/// node first waits until it has applied every write acknowledged before the request, so
/// the backup is linearizable; `?consistency=local` takes what this node has applied
/// instead, which a node cut off from its majority can still give (disaster recovery).
/// Encoding runs off the async workers.
pub async fn snapshot(State(s): State<AppState>, uri: Uri) -> Response {
    use crate::replication::Consistency;
    let level = match uri.query() {
        None | Some("consistency=linearizable") => Consistency::Linearizable,
        Some("consistency=local") => Consistency::Local,
        Some(q) => {
            return error(StatusCode::BAD_REQUEST, format!("unknown query {q:?}: consistency=local or linearizable"))
        }
    };
    if let Err(e) = s.replicator.read_barrier(level).await {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{e}; a node without a quorum can give its own copy with consistency=local"),
        );
    }
    if !s.replicator.registry_complete() {
        return error(StatusCode::SERVICE_UNAVAILABLE, "this node's registry is not complete yet (start-up sync)");
    }
    let (registry, node_id, mode) = (s.registry.clone(), s.node_id, s.replicator.name());
    match tokio::task::spawn_blocking(move || crate::snapshot::take(&registry, node_id, mode)).await {
        Ok(Ok(bytes)) => ([(axum::http::header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response(),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("snapshot task failed: {e}")),
    }
}

/// Anything else.
pub async fn not_found(uri: Uri) -> Response {
    error(StatusCode::NOT_FOUND, format!("no resource at {}", uri.path()))
}
