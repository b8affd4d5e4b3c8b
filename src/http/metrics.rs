//! `GET /metrics`: the node's figures in Prometheus (OpenMetrics) text, and the per-route
//! request counts and latencies recorded for every request by [`super::HttpService`].

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, Method};
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::core::counters::{CHANGE_KINDS, RENEW_RESULTS};
use crate::core::model::Status;
use crate::metrics::{Exposition, Histogram, LATENCY_BOUNDS_NS};

/// What a request did, as the `route` label says it: a bounded set, so that neither
/// application names nor junk paths can grow the number of series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Register,
    Renew,
    Cancel,
    StatusOverride,
    DeleteStatusOverride,
    Metadata,
    Apps,
    Delta,
    /// A long-polled delta (`waitMs`): its latency is mostly the wait.
    DeltaWait,
    App,
    Instance,
    Vip,
    Svip,
    StatusOverrides,
    /// Other requests under `/eureka/` (refused with 404 or 405).
    EurekaOther,
    PeerBatch,
    P2p,
    Raft,
    Cluster,
    Dashboard,
    Metrics,
    Status,
    Snapshot,
    Healthz,
    Readyz,
    Other,
}

const ROUTES: [Route; 26] = [
    Route::Register,
    Route::Renew,
    Route::Cancel,
    Route::StatusOverride,
    Route::DeleteStatusOverride,
    Route::Metadata,
    Route::Apps,
    Route::Delta,
    Route::DeltaWait,
    Route::App,
    Route::Instance,
    Route::Vip,
    Route::Svip,
    Route::StatusOverrides,
    Route::EurekaOther,
    Route::PeerBatch,
    Route::P2p,
    Route::Raft,
    Route::Cluster,
    Route::Dashboard,
    Route::Metrics,
    Route::Status,
    Route::Snapshot,
    Route::Healthz,
    Route::Readyz,
    Route::Other,
];

impl Route {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Route::Register => "register",
            Route::Renew => "renew",
            Route::Cancel => "cancel",
            Route::StatusOverride => "status_override",
            Route::DeleteStatusOverride => "delete_status_override",
            Route::Metadata => "metadata",
            Route::Apps => "apps",
            Route::Delta => "delta",
            Route::DeltaWait => "delta_wait",
            Route::App => "app",
            Route::Instance => "instance",
            Route::Vip => "vip",
            Route::Svip => "svip",
            Route::StatusOverrides => "status_overrides",
            Route::EurekaOther => "eureka_other",
            Route::PeerBatch => "peer_batch",
            Route::P2p => "p2p",
            Route::Raft => "raft",
            Route::Cluster => "cluster",
            Route::Dashboard => "dashboard",
            Route::Metrics => "metrics",
            Route::Status => "status",
            Route::Snapshot => "snapshot",
            Route::Healthz => "healthz",
            Route::Readyz => "readyz",
            Route::Other => "other",
        }
    }

    /// The route of a request. Eureka paths are split on `/` without decoding: a label needs
    /// no more, and the handlers decide what the request means.
    pub fn of(method: &Method, path: &str, query: Option<&str>) -> Route {
        // Eureka resources first: nearly every request is one.
        if let Some(rest) = path.strip_prefix("/eureka/") {
            return Route::eureka(method, rest, query);
        }
        match path {
            "/" | "/favicon.ico" => Route::Dashboard,
            "/metrics" => Route::Metrics,
            "/v1/status" => Route::Status,
            "/v1/snapshot" => Route::Snapshot,
            "/healthz" => Route::Healthz,
            "/readyz" => Route::Readyz,
            "/v1/cluster" => Route::Cluster,
            _ if path.starts_with("/ui/") => Route::Dashboard,
            _ if path.starts_with("/v1/raft/") => Route::Raft,
            _ if path.starts_with("/v1/p2p/") => Route::P2p,
            _ if path.starts_with("/v1/cluster/") => Route::Cluster,
            _ => Route::Other,
        }
    }

    /// The route of a path under `/eureka/` (`rest` follows that prefix).
    fn eureka(method: &Method, rest: &str, query: Option<&str>) -> Route {
        let mut seg = [""; 5];
        let mut n = 0;
        for s in rest.split('/') {
            if s.is_empty() {
                continue;
            }
            if n == seg.len() {
                return Route::EurekaOther;
            }
            seg[n] = s;
            n += 1;
        }
        let seg = match seg[0] {
            "v2" | "v1" => &seg[1..n],
            _ if n == seg.len() => return Route::EurekaOther,
            _ => &seg[..n],
        };
        let long_poll = || query.is_some_and(|q| q.split('&').any(|p| p.starts_with("waitMs=")));
        match (method, seg) {
            (&Method::GET, ["apps"]) => Route::Apps,
            (&Method::GET, ["apps", "delta"]) if long_poll() => Route::DeltaWait,
            (&Method::GET, ["apps", "delta"]) => Route::Delta,
            (&Method::GET, ["apps", _]) => Route::App,
            (&Method::POST, ["apps", _]) => Route::Register,
            (&Method::GET, ["apps", _, _] | ["instances", _]) => Route::Instance,
            (&Method::PUT, ["apps", _, _]) => Route::Renew,
            (&Method::DELETE, ["apps", _, _]) => Route::Cancel,
            (&Method::PUT, ["apps", _, _, "status"]) => Route::StatusOverride,
            (&Method::DELETE, ["apps", _, _, "status"]) => Route::DeleteStatusOverride,
            (&Method::PUT, ["apps", _, _, "metadata"]) => Route::Metadata,
            (&Method::GET, ["vips", _]) => Route::Vip,
            (&Method::GET, ["svips", _]) => Route::Svip,
            (&Method::GET, ["serverinfo", "statusoverrides"]) => Route::StatusOverrides,
            (&Method::POST, ["peerreplication", "batch"]) => Route::PeerBatch,
            _ => Route::EurekaOther,
        }
    }
}

/// Status codes counted one by one; any other is counted as `other`.
const CODES: [u16; 35] = [
    200, 201, 202, 204, 206, 301, 302, 303, 304, 307, 308, 400, 401, 403, 404, 405, 406, 408, 409, 410, 411, 412, 413,
    414, 415, 416, 421, 422, 429, 431, 500, 501, 502, 503, 507,
];

/// Latency buckets per route: one per bound, and one above them all.
const BUCKETS: usize = LATENCY_BOUNDS_NS.len() + 1;

/// Copies of the counters that request threads write (one per thread, round robin), so two
/// cores answering requests at once do not fight over one cache line per counter.
const STRIPES: usize = 8;

/// Requests answered on one route by one stripe: how long they took (until the response
/// head; a body streams after) and their status codes. Aligned so that no two share a cache
/// line.
#[repr(align(128))]
struct RouteStats {
    buckets: [AtomicU64; BUCKETS],
    sum_ns: AtomicU64,
    /// Per [`CODES`], then every other code.
    by_status: [AtomicU64; CODES.len() + 1],
}

impl Default for RouteStats {
    fn default() -> Self {
        RouteStats {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_ns: AtomicU64::new(0),
            by_status: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// Request counts and latencies of every route.
pub struct HttpMetrics {
    /// `STRIPES × ROUTES` route figures.
    stats: Box<[RouteStats]>,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        HttpMetrics { stats: (0..STRIPES * ROUTES.len()).map(|_| RouteStats::default()).collect() }
    }
}

/// This thread's stripe.
fn stripe() -> usize {
    use std::sync::atomic::AtomicUsize;
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local!(static STRIPE: usize = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES);
    STRIPE.with(|s| *s)
}

impl HttpMetrics {
    /// Records one answered request.
    pub fn record(&self, route: Route, status: u16, took: Duration) {
        let r = &self.stats[stripe() * ROUTES.len() + route as usize];
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        r.buckets[LATENCY_BOUNDS_NS.partition_point(|b| *b < ns)].fetch_add(1, Ordering::Relaxed);
        r.sum_ns.fetch_add(ns, Ordering::Relaxed);
        let code = CODES.iter().position(|c| *c == status).unwrap_or(CODES.len());
        r.by_status[code].fetch_add(1, Ordering::Relaxed);
    }

    /// One route's figures over every stripe: latency histogram and counts per status.
    fn route(&self, route: Route) -> (Histogram, [u64; CODES.len() + 1]) {
        let (mut buckets, mut sum, mut codes) = ([0u64; BUCKETS], 0u64, [0u64; CODES.len() + 1]);
        for stripe in 0..STRIPES {
            let r = &self.stats[stripe * ROUTES.len() + route as usize];
            for (total, b) in buckets.iter_mut().zip(&r.buckets) {
                *total += b.load(Ordering::Relaxed);
            }
            sum = sum.wrapping_add(r.sum_ns.load(Ordering::Relaxed));
            for (total, c) in codes.iter_mut().zip(&r.by_status) {
                *total += c.load(Ordering::Relaxed);
            }
        }
        (Histogram::from_counts(LATENCY_BOUNDS_NS, 1e-9, &buckets, sum), codes)
    }

    fn expose(&self, e: &mut Exposition<'_>) -> fmt::Result {
        let answered: Vec<(Route, Histogram, [u64; CODES.len() + 1])> = ROUTES
            .iter()
            .map(|r| {
                let (latency, codes) = self.route(*r);
                (*r, latency, codes)
            })
            .filter(|(_, latency, _)| latency.count() > 0)
            .collect();
        let code_label = |i: usize| CODES.get(i).map_or_else(|| "other".to_string(), |c| c.to_string());
        e.counters(
            "synod_http_requests",
            "HTTP requests answered, by route and status code.",
            answered.iter().flat_map(|(route, _, codes)| {
                codes
                    .iter()
                    .enumerate()
                    .filter(|(_, n)| **n > 0)
                    .map(move |(i, n)| (([("route", route.as_str())], [("status", code_label(i))]), *n))
            }),
        )?;
        e.histograms(
            "synod_http_request_duration_seconds",
            "Time to answer an HTTP request (until the response head), by route.",
            answered.iter().map(|(route, latency, _)| ([("route", route.as_str())], latency)),
        )
    }
}

/// `GET /metrics`.
pub async fn page(State(s): State<AppState>) -> Response {
    let body = crate::metrics::render(move |e| expose(&s, e));
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], body).into_response()
}

/// Everything this node exposes: requests, the registry, self-preservation, connections and
/// long polls, then the backend's own figures.
fn expose(s: &AppState, e: &mut Exposition<'_>) -> fmt::Result {
    s.http_metrics.expose(e)?;
    let (by_app, apps, version, renewals) = s.registry.read(|st| {
        let mut by_app: Vec<(String, [u64; 5])> = Vec::new();
        for (app, instances) in st.apps() {
            let mut counts = [0; 5];
            for e in instances.values() {
                counts[e.info.status as usize] += 1;
            }
            by_app.push((app.clone(), counts));
        }
        (by_app, st.apps().count(), st.version(), st.renew_results())
    });
    e.gauges(
        "synod_instances",
        "Registered instances, by application and status.",
        by_app.iter().flat_map(|(app, counts)| {
            Status::HASH_ORDER
                .iter()
                .filter(|s| counts[**s as usize] > 0)
                .map(move |s| ([("app", app.as_str()), ("status", s.as_str())], counts[*s as usize] as i64))
        }),
    )?;
    e.gauge("synod_applications", "Registered applications.", apps as i64)?;
    e.gauge("synod_registry_version", "The registry's change counter (versions__delta).", version as i64)?;
    let counters = s.registry.counters();
    e.counters(
        "synod_registry_changes",
        "Instances changed by applied commands, by kind (each replica counts what it applies).",
        CHANGE_KINDS.iter().zip(counters.changes()).map(|(kind, n)| ([("kind", *kind)], n)),
    )?;
    e.counters(
        "synod_renewals",
        "Lease renewals applied here, by result.",
        RENEW_RESULTS.iter().zip(renewals).map(|(result, n)| ([("result", *result)], n)),
    )?;
    let p = s.registry.preservation();
    e.gauge(
        "synod_self_preservation_expected_renews_per_minute",
        "Renewals per minute the registered instances should send.",
        p.expected_renews_per_min,
    )?;
    e.gauge(
        "synod_self_preservation_threshold_renews_per_minute",
        "Renewals per minute below which eviction is suspended.",
        p.threshold as i64,
    )?;
    e.gauge(
        "synod_self_preservation_renews_last_minute",
        "Renewals received in the last minute.",
        p.renews_last_min as i64,
    )?;
    e.gauge("synod_self_preservation_enabled", "1 if self-preservation may suspend eviction.", i64::from(p.enabled))?;
    e.gauge(
        "synod_self_preservation_active",
        "1 while eviction is suspended by self-preservation.",
        i64::from(p.active),
    )?;
    e.counter(
        "synod_self_preservation_engagements",
        "Times self-preservation engaged since start.",
        s.registry.preservation_engagements(),
    )?;
    e.gauge("synod_connections_open", "Client connections open now.", s.connections.open() as i64)?;
    e.gauge("synod_connections_max", "Most client connections served at once.", s.connections.max() as i64)?;
    e.gauge(
        "synod_long_polls_waiting",
        "Long-polled delta requests waiting now.",
        s.max_long_polls.saturating_sub(s.long_polls.available_permits()) as i64,
    )?;
    e.counter(
        "synod_long_polls_refused",
        "Long polls refused (503) for want of a slot.",
        s.long_polls_refused.load(Ordering::Relaxed),
    )?;
    e.gauge("synod_ready", "1 while the node serves the registry (/readyz).", i64::from(s.replicator.is_ready()))?;
    e.gauge("synod_uptime_seconds", "Seconds since the node started serving.", s.started.elapsed().as_secs_f64())?;
    s.replicator.expose_metrics(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_map_to_bounded_routes() {
        let cases = [
            (Method::POST, "/eureka/apps/ORDERS", None, Route::Register),
            (Method::POST, "/eureka/v2/apps/ORDERS/", None, Route::Register),
            (Method::PUT, "/eureka/apps/ORDERS/i-1", Some("status=UP"), Route::Renew),
            (Method::DELETE, "/eureka//apps/ORDERS/i-1", None, Route::Cancel),
            (Method::PUT, "/eureka/apps/A/i/status", None, Route::StatusOverride),
            (Method::DELETE, "/eureka/apps/A/i/status", None, Route::DeleteStatusOverride),
            (Method::PUT, "/eureka/apps/A/i/metadata", None, Route::Metadata),
            (Method::GET, "/eureka/apps", None, Route::Apps),
            (Method::GET, "/eureka/apps/delta", None, Route::Delta),
            (Method::GET, "/eureka/apps/delta", Some("x=1&waitMs=100"), Route::DeltaWait),
            (Method::GET, "/eureka/apps/A", None, Route::App),
            (Method::GET, "/eureka/instances/i", None, Route::Instance),
            (Method::GET, "/eureka/apps/A/i/x/y", None, Route::EurekaOther),
            (Method::PATCH, "/eureka/apps/A", None, Route::EurekaOther),
            (Method::POST, "/eureka/peerreplication/batch", None, Route::PeerBatch),
            (Method::POST, "/v1/raft/append", None, Route::Raft),
            (Method::GET, "/v1/p2p/digest", None, Route::P2p),
            (Method::DELETE, "/v1/cluster/nodes/2", None, Route::Cluster),
            (Method::GET, "/metrics", None, Route::Metrics),
            (Method::GET, "/favicon.ico", None, Route::Dashboard),
            (Method::GET, "/robots.txt", None, Route::Other),
            (Method::GET, "/eureka/v2/apps/A/i/status/x", None, Route::EurekaOther),
        ];
        for (m, p, q, want) in cases {
            assert_eq!(Route::of(&m, p, q), want, "{m} {p}");
        }
        for (i, r) in ROUTES.iter().enumerate() {
            assert_eq!(*r as usize, i, "ROUTES is in declaration order");
        }
    }

    #[test]
    fn requests_from_every_thread_are_counted_and_rare_codes_grouped() {
        let m = std::sync::Arc::new(HttpMetrics::default());
        m.record(Route::Renew, 200, Duration::from_micros(300));
        let other = m.clone();
        std::thread::spawn(move || other.record(Route::Renew, 999, Duration::from_micros(300))).join().unwrap();
        let text = crate::metrics::render(move |e| m.expose(e));
        assert!(text.contains("synod_http_requests_total{route=\"renew\",status=\"200\"} 1\n"), "{text}");
        assert!(text.contains("synod_http_requests_total{route=\"renew\",status=\"other\"} 1\n"), "{text}");
        assert!(text.contains("synod_http_request_duration_seconds_count{route=\"renew\"} 2\n"), "{text}");
    }
}
