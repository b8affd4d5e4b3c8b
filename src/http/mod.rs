//! The HTTP layer: Eureka's REST API, the operator endpoints and the backend's own routes.
//! Handlers turn requests into commands for the [`Replicator`] and read views from the
//! [`Registry`]; they never look at which backend is running.

pub mod admin;
pub mod dashboard;
pub mod eureka;
pub mod guard;
pub mod metrics;
pub mod path;
pub mod respond;
pub mod serve;

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
    /// When this node started serving.
    pub started: std::time::Instant,
    /// Largest accepted request body.
    pub max_body_size: usize,
    /// Most instances the registry takes; registering a new one past it answers 507.
    pub max_instances: usize,
    /// Longest lease a registration keeps, in seconds (`--max-lease-duration`).
    pub max_lease_secs: u32,
    /// Longest a request body may take to arrive.
    pub body_timeout: std::time::Duration,
    /// Open client connections and their cap.
    pub connections: Arc<serve::Connections>,
    /// Slots for long-polled deltas (`GET apps/delta?waitMs=…`); a request that finds none
    /// free gets 503 instead of queueing.
    pub long_polls: Arc<tokio::sync::Semaphore>,
    /// How many slots `long_polls` started with.
    pub max_long_polls: usize,
    /// Long polls refused for want of a slot since start.
    pub long_polls_refused: Arc<std::sync::atomic::AtomicU64>,
    /// Who may do what.
    pub auth: Arc<crate::auth::Auth>,
    /// Requests answered per route, with their latencies.
    pub http_metrics: Arc<metrics::HttpMetrics>,
}

/// Requests no route matched: Eureka resources under `/eureka/` (those not sent straight
/// to `dispatch` by [`HttpService`]), or 404.
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

/// The server's HTTP service: requests for Eureka resources go straight to
/// [`eureka::dispatch`], everything else through the router.
///
/// Why not only the router: it would match a Eureka path against its fallback, percent-decode
/// and allocate the captured tail (which `dispatch` never reads: it splits the raw path
/// itself) and pass the request through several wrapping services, which together cost a
/// heartbeat ~15 % of its instructions (measured with callgrind). The router serves the same
/// paths with the same handler, so a path this shortcut does not recognise gets the same
/// answer, only slower.
#[derive(Clone)]
pub struct HttpService {
    state: AppState,
    router: Router,
    /// Off while tower-http's request logging is enabled, so every request passes the
    /// router's trace layer.
    direct: bool,
}

impl HttpService {
    pub fn new(state: AppState) -> HttpService {
        HttpService { router: router(state.clone()), state, direct: !request_tracing() }
    }

    /// What `axum::serve` takes: this service for every connection.
    pub fn into_make_service(self) -> axum::routing::IntoMakeService<HttpService> {
        axum::ServiceExt::<axum::extract::Request>::into_make_service(self)
    }
}

impl tower::Service<axum::extract::Request> for HttpService {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = crate::replication::BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: axum::extract::Request) -> Self::Future {
        use futures::future::{ready, Either};
        use futures::FutureExt;
        let route = metrics::Route::of(req.method(), req.uri().path(), req.uri().query());
        let (started, http_metrics) = (std::time::Instant::now(), self.state.http_metrics.clone());
        // An open node has nothing to decide and no principal to audit; on a guarded one, a
        // request whose credentials are known is decided here, without another future.
        let decision = if self.state.auth.is_open() { guard::Decision::Run } else { guard::decide(self, &mut req) };
        let handled = match decision {
            guard::Decision::Run => Either::Left(self.handle(req)),
            guard::Decision::Refuse(resp) => Either::Right(Either::Left(ready(Ok(resp)))),
            guard::Decision::Check => Either::Right(Either::Right(guard::checked(self.clone(), req))),
        };
        // A bug that panics in a handler costs that request a 500, never the process or the
        // connection's other requests.
        Box::pin(std::panic::AssertUnwindSafe(handled).catch_unwind().map(move |r| {
            let r = r.unwrap_or_else(|_| {
                tracing::error!("a request handler panicked; answered 500");
                Ok(respond::error(axum::http::StatusCode::INTERNAL_SERVER_ERROR, "internal error"))
            });
            if let Ok(resp) = &r {
                http_metrics.record(route, resp.status().as_u16(), started.elapsed());
            }
            r
        }))
    }
}

impl HttpService {
    /// Runs a request that may run: Eureka resources straight to `dispatch`, the rest
    /// through the router.
    fn handle(
        &mut self,
        req: axum::extract::Request,
    ) -> impl std::future::Future<Output = Result<axum::response::Response, std::convert::Infallible>> + Send + 'static
    {
        use futures::future::Either;
        if self.direct && is_eureka_resource(req.uri().path()) {
            let state = axum::extract::State(self.state.clone());
            Either::Left(async move { Ok(eureka::dispatch(state, req).await) })
        } else {
            Either::Right(tower::Service::call(&mut self.router, req))
        }
    }

    /// [`Self::handle`] for a service of its own (the guarded path owns a clone).
    fn handle_owned(
        mut self,
        req: axum::extract::Request,
    ) -> impl std::future::Future<Output = Result<axum::response::Response, std::convert::Infallible>> + Send + 'static
    {
        use futures::future::Either;
        if self.direct && is_eureka_resource(req.uri().path()) {
            let state = axum::extract::State(self.state);
            Either::Left(async move { Ok(eureka::dispatch(state, req).await) })
        } else {
            Either::Right(tower::Service::call(&mut self.router, req))
        }
    }
}

/// Whether `path` names one of the resources [`eureka::dispatch`] serves: `/eureka/`, an
/// optional version segment, then `apps`, `instances`, `vips`, `svips` or `serverinfo`
/// (other paths under `/eureka/`, such as a backend's `peerreplication`, are the router's).
fn is_eureka_resource(path: &str) -> bool {
    let Some(rest) = path.strip_prefix("/eureka/") else { return false };
    let mut segs = rest.split('/').filter(|s| !s.is_empty());
    let first = match segs.next() {
        Some("v2" | "v1") => segs.next(),
        other => other,
    };
    matches!(first, Some("apps" | "instances" | "vips" | "svips" | "serverinfo"))
}

/// Whether tower-http's request spans and status lines are logged (`tower_http=debug`).
fn request_tracing() -> bool {
    tracing::enabled!(target: "tower_http::trace", tracing::Level::DEBUG)
}

/// Largest raw body any backend route reads (raft RPCs; the routes' own limits apply to the
/// decompressed body after this).
const BACKEND_BODY_CAP: usize = 64 * 1024 * 1024;

/// Reads a backend route's whole body within `timeout` before the route sees it: a timeout
/// that restarts with every frame would let a client keep a request (and its connection)
/// open forever by sending a byte now and then.
async fn whole_body_within(
    axum::extract::State(timeout): axum::extract::State<std::time::Duration>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::StatusCode;
    let (parts, body) = req.into_parts();
    let bytes = match tokio::time::timeout(timeout, axum::body::to_bytes(body, BACKEND_BODY_CAP)).await {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => {
            let status = if respond::over_limit(&e) { StatusCode::PAYLOAD_TOO_LARGE } else { StatusCode::BAD_REQUEST };
            return respond::error(status, format!("cannot read request body: {e}"));
        }
        Err(_) => {
            return respond::error(StatusCode::REQUEST_TIMEOUT, format!("request body not received within {timeout:?}"))
        }
    };
    next.run(axum::extract::Request::from_parts(parts, axum::body::Body::from(bytes))).await
}

/// Builds the server's router.
pub fn router(state: AppState) -> Router {
    let backend_routes = state.replicator.routes();
    let (max_body_size, body_timeout) = (state.max_body_size, state.body_timeout);
    let router = Router::new()
        .route("/", get(dashboard::page))
        .route("/ui/dashboard.js", get(dashboard::script))
        .route("/ui/dashboard.css", get(dashboard::style))
        .route("/ui/icon.svg", get(dashboard::icon))
        .route("/favicon.ico", get(dashboard::icon))
        .route("/healthz", get(admin::healthz))
        .route("/readyz", get(admin::readyz))
        .route("/v1/status", get(admin::status))
        .route("/metrics", get(metrics::page))
        .route("/v1/snapshot", get(admin::snapshot))
        .route("/eureka", any(eureka::dispatch))
        // Everything else under /eureka/ reaches `dispatch` as the fallback.
        .fallback(eureka_or_not_found)
        .with_state(state)
        // The backend's routes read bodies through axum's extractors: peers may gzip them, and
        // the limit applies to the decompressed body. Eureka's register reads its own body
        // (`eureka::read_body`, with the same rules), so no other route pays for the layers.
        .merge(
            backend_routes
                .layer(RequestDecompressionLayer::new())
                .layer(DefaultBodyLimit::max(max_body_size))
                .layer(axum::middleware::from_fn_with_state(body_timeout, whole_body_within)),
        );
    // Request spans and response status at debug level (`--log synod=debug,tower_http=debug`),
    // which also covers rejections produced by axum itself (e.g. 413). Only where that level
    // is enabled (the filter is fixed at start-up): otherwise the layer would log nothing and
    // still cost ~5 % of a heartbeat's server CPU (measured).
    if !request_tracing() {
        return router;
    }
    // 5xx answers are expected states here (503 while syncing or while the disk refuses
    // writes) and are logged where they arise; keep tower-http's at debug.
    router.layer(TraceLayer::new_for_http().on_failure(DefaultOnFailure::new().level(tracing::Level::DEBUG)))
}

#[cfg(test)]
mod tests {
    use super::is_eureka_resource;

    #[test]
    fn eureka_resources_are_recognised() {
        for p in ["/eureka/apps", "/eureka/apps/A/i", "/eureka/v2/apps/", "/eureka//apps", "/eureka/v1/vips/x"] {
            assert!(is_eureka_resource(p), "{p}");
        }
        for p in [
            "/eureka",
            "/eureka/",
            "/eureka/peerreplication/batch",
            "/eureka/v2/peerreplication/batch",
            "/v1/status",
            "/eurekaapps",
            "/eureka/v2",
            "/eureka/%61pps",
        ] {
            assert!(!is_eureka_resource(p), "{p}");
        }
    }
}
