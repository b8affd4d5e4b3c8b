//! The HTTP layer: Eureka's REST API, the operator endpoints and the backend's own routes.
//! Handlers turn requests into commands for the [`Replicator`] and read views from the
//! [`Registry`]; they never look at which backend is running.

pub mod admin;
pub mod dashboard;
pub mod eureka;
pub mod path;
pub mod respond;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{any, get};
use axum::Router;
use tower_http::decompression::RequestDecompressionLayer;
use tower_http::trace::{DefaultOnFailure, TraceLayer};

use crate::core::registry::Registry;
use crate::replication::Replicator;

/// What every handler needs.
#[derive(Clone)]
pub struct AppState {
    pub registry: Arc<Registry>,
    pub replicator: Arc<dyn Replicator>,
    pub node_id: u64,
    /// Cluster members as (id, URL), for the dashboard.
    pub peers: Vec<(u64, String)>,
    /// When this node started serving.
    pub started: std::time::Instant,
    /// Largest accepted request body.
    pub max_body_size: usize,
    /// Slots for long-polled deltas (`GET apps/delta?waitMs=…`); a request that finds none
    /// free gets 503 instead of queueing.
    pub long_polls: Arc<tokio::sync::Semaphore>,
    /// How many slots `long_polls` started with.
    pub max_long_polls: usize,
    /// Long polls refused for want of a slot since start.
    pub long_polls_refused: Arc<std::sync::atomic::AtomicU64>,
}

/// Requests no route matched: Eureka resources under `/eureka/`, or 404.
async fn eureka_or_not_found(
    state: axum::extract::State<AppState>,
    req: axum::extract::Request,
) -> axum::response::Response {
    if req.uri().path().starts_with("/eureka/") {
        eureka::dispatch(state, req).await
    } else {
        admin::not_found(req.uri().clone()).await
    }
}

/// Builds the server's router.
pub fn router(state: AppState, max_body_size: usize) -> Router {
    let backend_routes = state.replicator.routes();
    let router = Router::new()
        .route("/", get(dashboard::page))
        .route("/healthz", get(admin::healthz))
        .route("/readyz", get(admin::readyz))
        .route("/v1/status", get(admin::status))
        .route("/eureka", any(eureka::dispatch))
        // Everything else under /eureka/ reaches `dispatch` as the fallback rather than as a
        // `{*rest}` route: axum percent-decodes and allocates a captured parameter for every
        // request, which `dispatch` (it splits the raw path itself) never reads.
        .fallback(eureka_or_not_found)
        .with_state(state)
        .merge(backend_routes)
        // Peers may gzip request bodies; the limit applies to the decompressed body.
        .layer(RequestDecompressionLayer::new())
        .layer(DefaultBodyLimit::max(max_body_size));
    // Request spans and response status at debug level (`--log synod=debug,tower_http=debug`),
    // which also covers rejections produced by axum itself (e.g. 413). Only where that level
    // is enabled (the filter is fixed at start-up): otherwise the layer would log nothing and
    // still cost ~5 % of a heartbeat's server CPU (measured).
    if !tracing::enabled!(target: "tower_http::trace", tracing::Level::DEBUG) {
        return router;
    }
    // 5xx answers are expected states here (503 while syncing or while the disk refuses
    // writes) and are logged where they arise; keep tower-http's at debug.
    router.layer(TraceLayer::new_for_http().on_failure(DefaultOnFailure::new().level(tracing::Level::DEBUG)))
}
