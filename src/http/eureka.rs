//! Eureka's REST resources, served under `/eureka/` and `/eureka/v2/`.
//!
//! Where a renew is handled: [`renew`] here calls `Replicator::renew`, which in every backend
//! ends in `RegistryState::renew` (core/state.rs) on the node(s) holding the lease.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};

use super::guard::RegisterScope;
use super::path::segments;
use super::respond::{self, empty, error, Reject};
use super::AppState;
use crate::codec::{self, decode, json, tree, xml};
use crate::core::cache::Payload;
use crate::core::command::{Command, Outcome};
use crate::core::model::{InstanceInfo, InstanceKey, Status};
use crate::core::registry::{Format, Registry, ViewKey, ViewKind};
use crate::core::state::RenewOutcome;
use crate::core::views;
use crate::replication::{
    Consistency, Origin, ReplicationError, APPLIED_INDEX_HEADER, COMPLETE_HEADER, CONSISTENCY_HEADER,
};

/// Routes every `/eureka/…` request by its decoded path segments.
///
/// The request is taken whole (not through extractors) so headers are not copied and a body
/// is only read by the one resource that has one.
pub async fn dispatch(State(s): State<AppState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let (method, uri, headers) = (&parts.method, &parts.uri, &parts.headers);
    let rest = uri.path().strip_prefix("/eureka").unwrap_or("");
    let segs = match segments(rest) {
        Ok(segs) => segs,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let seg: Vec<&str> = segs.iter().map(|s| s.as_ref()).collect();
    let query = Query::parse(uri.query());
    let o = origin(headers);
    // Reads: optionally linearizable, and stamped with the applied position read before the
    // view is built (the view reflects at least that much).
    let applied = if method == Method::GET {
        match query.consistency(headers) {
            Ok(Consistency::Local) => {}
            Ok(Consistency::Linearizable) => {
                if let Err(e) = s.replicator.read_barrier(Consistency::Linearizable).await {
                    return error(StatusCode::SERVICE_UNAVAILABLE, e);
                }
            }
            Err(r) => return r.into_response(),
        }
        s.replicator.applied_index()
    } else {
        None
    };
    let mut resp = match (method, seg.as_slice()) {
        (&Method::GET, ["apps"]) => registry_read(&s, ViewKind::Apps, headers, o).await,
        (&Method::GET, ["apps", "delta"]) if query.get("waitMs").is_some() => {
            long_poll_delta(&s, &query, headers, o).await
        }
        (&Method::GET, ["apps", "delta"]) => registry_read(&s, ViewKind::Delta, headers, o).await,
        (&Method::GET, ["apps", app]) => registry_read(&s, ViewKind::App(app.to_ascii_uppercase()), headers, o).await,
        (&Method::POST, ["apps", app]) => match read_body(headers, body, s.max_body_size, s.body_timeout).await {
            Ok(bytes) => register(&s, app, headers, bytes, o, parts.extensions.get::<RegisterScope>()).await,
            Err(r) => r.into_response(),
        },
        (&Method::GET, ["apps", app, id]) => get_instance(&s, Some(app), id, headers),
        (&Method::PUT, ["apps", app, id]) => renew(&s, InstanceKey::new(app, id), &query, headers, o).await,
        (&Method::DELETE, ["apps", app, id]) => cancel(&s, InstanceKey::new(app, id), o).await,
        (&Method::PUT, ["apps", app, id, "status"]) => set_status(&s, InstanceKey::new(app, id), &query, o).await,
        (&Method::DELETE, ["apps", app, id, "status"]) => delete_status(&s, InstanceKey::new(app, id), &query, o).await,
        (&Method::PUT, ["apps", app, id, "metadata"]) => metadata(&s, InstanceKey::new(app, id), &query, o).await,
        (&Method::GET, ["instances", id]) => get_instance(&s, None, id, headers),
        (&Method::GET, ["vips", vip]) => registry_read(&s, ViewKind::Vip(vip.to_string()), headers, o).await,
        (&Method::GET, ["svips", svip]) => registry_read(&s, ViewKind::Svip(svip.to_string()), headers, o).await,
        (&Method::GET, ["serverinfo", "statusoverrides"]) => status_overrides(&s),
        (_, ["apps"] | ["apps", _] | ["apps", _, _] | ["apps", _, _, "status" | "metadata"])
        | (_, ["instances" | "vips" | "svips", _] | ["serverinfo", "statusoverrides"]) => {
            error(StatusCode::METHOD_NOT_ALLOWED, format!("{method} is not supported on {}", uri.path()))
        }
        _ => error(StatusCode::NOT_FOUND, format!("no Eureka resource at {}", uri.path())),
    };
    if let Some(index) = applied {
        resp.headers_mut().insert(APPLIED_INDEX_HEADER, axum::http::HeaderValue::from(index));
    }
    resp
}

/// Reads a request body of at most `limit` bytes, gunzipping it when it is sent with
/// `Content-Encoding: gzip` (the limit then applies to the decompressed body too). Done here
/// rather than by a decompression layer in front of every route: only this body is read, and
/// the layer's request wrapping cost every heartbeat a few percent of its CPU.
async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    timeout: std::time::Duration,
) -> Result<Bytes, Reject> {
    let encoding = headers.get(header::CONTENT_ENCODING).map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase());
    let gzip = match encoding.as_deref() {
        None | Some("" | "identity") => false,
        Some("gzip" | "x-gzip") => true,
        Some(other) => {
            return Err(Reject(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("unsupported Content-Encoding {other:?} (gzip and identity are)"),
            ))
        }
    };
    let too_large = || Reject(StatusCode::PAYLOAD_TOO_LARGE, format!("request body larger than {limit} bytes"));
    let Ok(raw) = tokio::time::timeout(timeout, axum::body::to_bytes(body, limit)).await else {
        return Err(Reject(StatusCode::REQUEST_TIMEOUT, format!("request body not received within {timeout:?}")));
    };
    let raw = raw.map_err(|e| {
        if respond::over_limit(&e) {
            too_large()
        } else {
            Reject::bad_request(format!("cannot read request body: {e}"))
        }
    })?;
    if !gzip {
        return Ok(raw);
    }
    let mut out = Vec::new();
    let mut decoder = std::io::Read::take(flate2::read::GzDecoder::new(&raw[..]), limit as u64 + 1);
    std::io::Read::read_to_end(&mut decoder, &mut out)
        .map_err(|e| Reject::bad_request(format!("cannot gunzip request body: {e}")))?;
    if out.len() > limit {
        return Err(too_large());
    }
    Ok(Bytes::from(out))
}

/// One decoded component of a form-encoded query (`+` is a space, then percent-decoding,
/// invalid UTF-8 replaced), borrowed when it holds neither.
fn form_component(s: &str) -> Cow<'_, str> {
    if !s.bytes().any(|b| b == b'%' || b == b'+') {
        return Cow::Borrowed(s);
    }
    let spaced: Vec<u8> = s.bytes().map(|b| if b == b'+' { b' ' } else { b }).collect();
    Cow::Owned(percent_encoding::percent_decode(&spaced).decode_utf8_lossy().into_owned())
}

/// Query parameters, first value winning for repeated keys (as Eureka's metadata PUT).
/// Parsed lazily: a heartbeat's query is scanned without building a map.
struct Query<'a>(&'a str);

impl<'a> Query<'a> {
    fn parse(q: Option<&'a str>) -> Query<'a> {
        Query(q.unwrap_or(""))
    }

    fn pairs(&self) -> form_urlencoded::Parse<'a> {
        form_urlencoded::parse(self.0.as_bytes())
    }

    /// The first value of `key`, decoded as `application/x-www-form-urlencoded` (as
    /// [`Self::pairs`] decodes it), without decoding the components that hold no escapes.
    fn get(&self, key: &str) -> Option<Cow<'a, str>> {
        self.0.split('&').filter(|p| !p.is_empty()).find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (form_component(k) == key).then(|| form_component(v))
        })
    }

    /// Requested read consistency: `?consistency=` or the [`CONSISTENCY_HEADER`] header,
    /// `local` (default) or `linearizable`.
    fn consistency(&self, headers: &HeaderMap) -> Result<Consistency, Reject> {
        let q = self.get("consistency");
        let h = headers.get(CONSISTENCY_HEADER).and_then(|v| v.to_str().ok());
        match q.as_deref().or(h).map(|v| v.trim().to_ascii_lowercase()) {
            None => Ok(Consistency::Local),
            Some(v) if v.is_empty() || v == "local" => Ok(Consistency::Local),
            Some(v) if v == "linearizable" => Ok(Consistency::Linearizable),
            Some(v) => Err(Reject::bad_request(format!("consistency {v:?} must be local or linearizable"))),
        }
    }

    /// `lastDirtyTimestamp`, which must be a decimal number of milliseconds when present.
    fn last_dirty(&self) -> Result<Option<u64>, Reject> {
        match self.get("lastDirtyTimestamp").as_deref().map(str::trim) {
            None | Some("") => Ok(None),
            Some(v) => v
                .parse::<u64>()
                .map(Some)
                .map_err(|_| Reject::bad_request(format!("lastDirtyTimestamp {v:?} is not a number of milliseconds"))),
        }
    }

    /// `lastDirtyTimestamp` for a change that stores it: also bounded in the future.
    fn stored_dirty(&self, now: u64) -> Result<Option<u64>, Reject> {
        match self.last_dirty()? {
            None => Ok(None),
            Some(t) => decode::dirty_timestamp(Some(t), now).map(Some).map_err(Reject::bad_request),
        }
    }
}

fn unavailable(e: ReplicationError) -> Response {
    tracing::warn!(error = %e, "write not acknowledged");
    error(StatusCode::SERVICE_UNAVAILABLE, e)
}

/// A registry read. While the backend says the local registry is not complete yet (a p2p
/// node still pulling from its peers), clients get 503 rather than a partial registry that
/// would make them drop live instances; peers are answered, with a header saying so.
async fn registry_read(s: &AppState, kind: ViewKind, headers: &HeaderMap, origin: Origin) -> Response {
    let complete = s.replicator.registry_complete();
    if !complete && origin == Origin::Client {
        return error(StatusCode::SERVICE_UNAVAILABLE, "registry is still being synced from peers; retry shortly");
    }
    let mut resp = cached(s, kind, headers).await;
    if origin == Origin::Peer {
        let flag = if complete { "true" } else { "false" };
        resp.headers_mut().insert(COMPLETE_HEADER, axum::http::HeaderValue::from_static(flag));
    }
    resp
}

/// Longest accepted `waitMs`.
const MAX_WAIT_MS: u64 = 5 * 60 * 1000;

/// `GET apps/delta?waitMs=W[&since=V]`: answers as soon as the registry version differs from
/// `V` (default: the version now) with the changes after `V` (the whole window when `V` is
/// ahead of this node), or after `W` ms with an empty delta; both carry the current version
/// and the whole registry's hash. Clients pass the `versions__delta` of their last answer as
/// `since`, so a change between two polls is never missed. Stock Eureka clients
/// never send `waitMs` and get the ordinary delta. Waiters are capped; nothing is kept once
/// a request ends.
async fn long_poll_delta(s: &AppState, query: &Query<'_>, headers: &HeaderMap, origin: Origin) -> Response {
    let number = |name: &str| -> Result<Option<u64>, Reject> {
        match query.get(name) {
            None => Ok(None),
            Some(v) => v
                .trim()
                .parse::<u64>()
                .map(Some)
                .map_err(|_| Reject::bad_request(format!("{name} {v:?} is not a non-negative integer"))),
        }
    };
    let (wait_ms, since) = match (number("waitMs"), number("since")) {
        (Ok(w), Ok(v)) => (w.unwrap_or(0), v),
        (Err(r), _) | (_, Err(r)) => return r.into_response(),
    };
    if wait_ms > MAX_WAIT_MS {
        return error(StatusCode::BAD_REQUEST, format!("waitMs {wait_ms} exceeds the maximum of {MAX_WAIT_MS}"));
    }
    if !s.replicator.registry_complete() && origin == Origin::Client {
        return error(StatusCode::SERVICE_UNAVAILABLE, "registry is still being synced from peers; retry shortly");
    }
    let Ok(_slot) = s.long_polls.clone().try_acquire_owned() else {
        s.long_polls_refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut resp = error(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many long-polled delta requests waiting; retry later or poll without waitMs",
        );
        // Lets a client tell "no waiter slot" from a failing server: it polls without
        // waitMs instead of failing over.
        resp.headers_mut().insert(LONG_POLL_HEADER, axum::http::HeaderValue::from_static("busy"));
        return resp;
    };
    let mut rx = s.registry.watch_version();
    let since = since.unwrap_or_else(|| *rx.borrow());
    // Both answers carry only what came after `since` (nothing, at the deadline): a long
    // polling client has applied everything before it, so it never re-reads the window.
    // A `since` ahead of this node's version (learnt from another node, or before a restart
    // of a node without a store) is answered at once: it is a position in another numbering,
    // so the client gets the whole window, as a plain delta, and this node's version to go on
    // from; the hash tells it whether it must fetch the registry whole.
    let _ = tokio::time::timeout(std::time::Duration::from_millis(wait_ms), rx.wait_for(|v| *v != since)).await;
    // Answered from the response cache, so waiters woken by the same change share one
    // encoding. A position ahead of this node, or far behind it, gets the whole window (a
    // superset: every item is an instance's latest state, which clients apply idempotently)
    // from the one cached plain delta; only the few positions a woken waiter can hold get
    // entries of their own, so no run of `since` values can fill the cache with copies.
    let version = s.registry.read(|st| st.version());
    let kind = if since > version || version - since > RECENT_POSITIONS {
        ViewKind::Delta
    } else {
        ViewKind::DeltaSince(since)
    };
    let mut resp = cached(s, kind, headers).await;
    // Tells clients the wait was honoured (servers without long-poll answer at once).
    resp.headers_mut().insert(LONG_POLL_HEADER, axum::http::HeaderValue::from_static("1"));
    resp
}

/// How far behind the current version a long poll's `since` may be and still be answered
/// with only the changes after it.
const RECENT_POSITIONS: u64 = 64;

/// Response header on long-polled deltas.
pub const LONG_POLL_HEADER: &str = "x-synod-long-poll";

/// Full registry, delta, one app, or a VIP: served from the response cache. A payload that
/// is current and already in the wanted encoding is answered on this thread; building one,
/// waiting for another request's build of it, or compressing it happens on a blocking
/// thread, as each can take long enough at scale to stall every request on this worker.
async fn cached(s: &AppState, kind: ViewKind, headers: &HeaderMap) -> Response {
    let fmt = respond::format(headers);
    let gzip = respond::accepts_gzip(headers);
    let key = (kind, fmt);
    if let Some(body) = s.registry.cached_now(&key).and_then(|p| p.encoded(gzip)) {
        return respond::encoded(body, gzip, fmt);
    }
    let registry = s.registry.clone();
    let build = move || {
        let p = build_payload(&registry, key, fmt)?;
        Some(if gzip { p.gzipped() } else { p.body() })
    };
    // A small registry's documents (encoded whole, about a millisecond): built here. A large
    // one's take long enough to stall every request on this worker: built on a blocking
    // thread, two at a time (more would not finish sooner on two cores, and each thread
    // the pool adds keeps memory of its own); readers waiting for a turn hold no thread.
    let built = if s.registry.read(|st| st.len()) <= crate::core::fragments::WHOLE_UP_TO {
        Ok(build())
    } else {
        let Ok(_permit) = BUILDERS.acquire().await else {
            return error(StatusCode::SERVICE_UNAVAILABLE, "the server is shutting down");
        };
        tokio::task::spawn_blocking(build).await
    };
    match built {
        Ok(Some(body)) => respond::encoded(body, gzip, fmt),
        Ok(None) => empty(StatusCode::NOT_FOUND),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("building the response failed: {e}")),
    }
}

/// Responses built (or waited for, or compressed) at once on blocking threads.
static BUILDERS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// The payload for `key`, from the cache or built (may wait for another build of it).
fn build_payload(registry: &Registry, key: ViewKey, fmt: Format) -> Option<Arc<Payload>> {
    let codec = match fmt {
        Format::Json => &json::APPS,
        Format::Xml => &xml::APPS,
    };
    match key.0.clone() {
        ViewKind::Apps => Some(registry.cached_apps(fmt, codec)),
        ViewKind::Delta => Some(registry.cached_delta(fmt, codec)),
        ViewKind::DeltaSince(since) => {
            registry.cached(key, |st, now| Some(views::delta_since(st, now, since)), |v| encode_apps(&v, fmt))
        }
        ViewKind::Vip(vip) => registry.cached(key, |st, _| Some(views::vip(st, &vip, false)), |v| encode_apps(&v, fmt)),
        ViewKind::Svip(vip) => registry.cached(key, |st, _| Some(views::vip(st, &vip, true)), |v| encode_apps(&v, fmt)),
        ViewKind::App(name) => registry.cached(
            key,
            |st, _| views::app(st, &name),
            |v| match fmt {
                Format::Json => json::app(&v),
                Format::Xml => xml::app(&v),
            },
        ),
    }
}

fn encode_apps(v: &views::AppsView, fmt: Format) -> Vec<u8> {
    match fmt {
        Format::Json => json::apps(v),
        Format::Xml => xml::apps(v),
    }
}

fn get_instance(s: &AppState, app: Option<&str>, id: &str, headers: &HeaderMap) -> Response {
    let view = s.registry.read(|st| match app {
        Some(app) => st.get(&InstanceKey::new(app, id)).map(views::instance),
        None => st.get_by_id(id).map(views::instance),
    });
    let Some(view) = view else { return empty(StatusCode::NOT_FOUND) };
    let fmt = respond::format(headers);
    let body = match fmt {
        Format::Json => json::instance(&view),
        Format::Xml => xml::instance(&view),
    };
    respond::payload(&crate::core::cache::Payload::new(body), fmt, headers)
}

/// Decodes a registration body as JSON or XML according to its Content-Type.
fn decode_registration(headers: &HeaderMap, body: &[u8], now: u64) -> Result<InstanceInfo, Reject> {
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_ascii_lowercase();
    let decoded = if ctype.contains("json") {
        tree::parse_json(body).and_then(|t| decode::registration(&t, now))
    } else if ctype.contains("xml") {
        xml::parse(body).and_then(|t| decode::registration(&t, now))
    } else {
        return Err(Reject(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Content-Type {ctype:?} is not supported; use application/json or application/xml"),
        ));
    };
    decoded.map_err(Reject::bad_request)
}

/// Eureka's replication header: a peer's call is applied but not replicated onward.
fn origin(headers: &HeaderMap) -> Origin {
    match headers.get("x-netflix-discovery-replication").map(|v| v.as_bytes()) {
        Some(b"true") => Origin::Peer,
        _ => Origin::Client,
    }
}

/// Bodies larger than this are decoded on a blocking thread: a large document takes
/// milliseconds to parse, which would stall every other request on the async worker.
const DECODE_INLINE_BYTES: usize = 16 * 1024;

async fn register(
    s: &AppState,
    path_app: &str,
    headers: &HeaderMap,
    body: Bytes,
    origin: Origin,
    scope: Option<&RegisterScope>,
) -> Response {
    let now = s.registry.now();
    let decoded = if body.len() <= DECODE_INLINE_BYTES {
        decode_registration(headers, &body, now)
    } else {
        let headers = headers.clone();
        tokio::task::spawn_blocking(move || decode_registration(&headers, &body, now))
            .await
            .unwrap_or_else(|e| Err(Reject(StatusCode::INTERNAL_SERVER_ERROR, format!("decoding failed: {e}"))))
    };
    let mut instance = match decoded {
        Ok(i) => i,
        Err(reject) => return reject.into_response(),
    };
    // Shortened, not refused: stock clients cannot react to a refused registration except by
    // retrying it. One instance's long lease no longer delays anyone else's eviction (leases
    // are per instance in every mode), but it keeps a dead instance listed for that long.
    instance.lease.duration_secs = instance.lease.duration_secs.min(s.max_lease_secs);
    instance.lease.renewal_interval_secs = instance.lease.renewal_interval_secs.min(s.max_lease_secs);
    // A soft cap (registrations in flight may pass it together): it keeps one runaway client
    // from growing the registry until the node runs out of memory.
    let full = s.registry.read(|st| {
        st.len() >= s.max_instances
            && st.get(&InstanceKey { app: instance.app.clone(), id: instance.instance_id.clone() }).is_none()
    });
    if full {
        return error(
            StatusCode::INSUFFICIENT_STORAGE,
            format!("the registry holds its maximum of {} instances (--max-instances)", s.max_instances),
        );
    }
    let expected = path_app.to_ascii_uppercase();
    if instance.app != expected {
        return error(
            StatusCode::BAD_REQUEST,
            format!("Mismatched appName, expecting {expected} but was {}", instance.app),
        );
    }
    if let Some(scope) = scope {
        if let Err(r) = within_scope(s, &instance, scope) {
            return r.into_response();
        }
    }
    let from_peer = origin == Origin::Peer;
    match s.replicator.submit(Command::Register { instance: Box::new(instance), now, from_peer }, origin).await {
        Ok(_) => empty(StatusCode::NO_CONTENT),
        Err(e) => unavailable(e),
    }
}

/// What a client with only `register:` roles may not do through its registration body: claim
/// a VIP address outside its patterns (clients that look services up by VIP would be sent to
/// it), or reuse an instance id another application holds (`GET instances/{id}` would answer
/// with either).
fn within_scope(s: &AppState, instance: &InstanceInfo, scope: &RegisterScope) -> Result<(), Reject> {
    for list in [&instance.vip_address, &instance.secure_vip_address].into_iter().flatten() {
        if let Some(vip) = list.split(',').map(str::trim).find(|v| !v.is_empty() && !scope.0.may_announce(v)) {
            return Err(Reject(
                StatusCode::FORBIDDEN,
                format!("VIP address {vip:?} is outside this user's register roles"),
            ));
        }
    }
    let taken = s.registry.read(|st| {
        st.apps()
            .find(|(app, m)| **app != instance.app && m.contains_key(&instance.instance_id))
            .map(|(a, _)| a.clone())
    });
    match taken {
        Some(app) => Err(Reject(
            StatusCode::CONFLICT,
            format!("instance id {:?} is registered under application {app}", instance.instance_id),
        )),
        None => Ok(()),
    }
}

async fn renew(s: &AppState, key: InstanceKey, q: &Query<'_>, headers: &HeaderMap, origin: Origin) -> Response {
    let last_dirty = match q.last_dirty() {
        Ok(d) => d,
        Err(reject) => return reject.into_response(),
    };
    match s.replicator.renew(&key, last_dirty, origin).await {
        // A peer holding older data gets this node's copy with a 409, so it can adopt it.
        Ok(RenewOutcome::ServerNewer) if origin == Origin::Peer => {
            let mut resp = get_instance(s, Some(&key.app), &key.id, headers);
            if resp.status() == StatusCode::OK {
                *resp.status_mut() = StatusCode::CONFLICT;
            }
            resp
        }
        Ok(RenewOutcome::Renewed | RenewOutcome::ServerNewer) => empty(StatusCode::OK),
        Ok(RenewOutcome::NotFound | RenewOutcome::ClientNewer) => empty(StatusCode::NOT_FOUND),
        Err(e) => unavailable(e),
    }
}

/// Submits a command addressed to one instance: 200 when applied, 404 when unknown, both
/// with empty bodies.
async fn submit_for_instance(s: &AppState, cmd: Command, origin: Origin) -> Response {
    match s.replicator.submit(cmd, origin).await {
        Ok(Outcome::NotFound) => empty(StatusCode::NOT_FOUND),
        Ok(Outcome::Rejected) => error(
            StatusCode::BAD_REQUEST,
            format!(
                "metadata would exceed {} entries or {} bytes",
                codec::limits::MAX_METADATA_ENTRIES,
                codec::limits::MAX_METADATA_BYTES
            ),
        ),
        Ok(_) => empty(StatusCode::OK),
        Err(e) => unavailable(e),
    }
}

async fn cancel(s: &AppState, key: InstanceKey, origin: Origin) -> Response {
    let now = s.registry.now();
    submit_for_instance(s, Command::Cancel { key, now }, origin).await
}

fn parse_status(value: &str) -> Result<Status, Reject> {
    value.parse::<Status>().map_err(Reject::bad_request)
}

async fn set_status(s: &AppState, key: InstanceKey, q: &Query<'_>, origin: Origin) -> Response {
    let now = s.registry.now();
    let parsed = q
        .get("value")
        .ok_or_else(|| Reject::bad_request("missing query parameter value (the status to set)"))
        .and_then(|v| parse_status(&v))
        .and_then(|status| Ok((status, q.stored_dirty(now)?)));
    match parsed {
        Ok((status, last_dirty)) => {
            submit_for_instance(s, Command::SetStatusOverride { key, status, last_dirty, now }, origin).await
        }
        Err(r) => r.into_response(),
    }
}

async fn delete_status(s: &AppState, key: InstanceKey, q: &Query<'_>, origin: Origin) -> Response {
    let now = s.registry.now();
    let parsed = q
        .get("value")
        .map_or(Ok(Status::Unknown), |v| parse_status(&v))
        .and_then(|status| Ok((status, q.stored_dirty(now)?)));
    match parsed {
        Ok((status, last_dirty)) => {
            submit_for_instance(s, Command::DeleteStatusOverride { key, status, last_dirty, now }, origin).await
        }
        Err(r) => r.into_response(),
    }
}

async fn metadata(s: &AppState, key: InstanceKey, q: &Query<'_>, origin: Origin) -> Response {
    let mut entries = BTreeMap::new();
    // `@class` is Java's empty-map marker, never a real key (registration drops it too).
    for (k, v) in q.pairs().filter(|(k, _)| k != "@class") {
        if let Err(e) = decode::check_metadata_entry(&k, &v, "metadata") {
            return error(StatusCode::BAD_REQUEST, e);
        }
        entries.entry(k.into_owned()).or_insert_with(|| v.into_owned());
    }
    if let Err(e) = codec::limits::check_metadata(&entries) {
        return error(StatusCode::BAD_REQUEST, e);
    }
    let now = s.registry.now();
    submit_for_instance(s, Command::UpdateMetadata { key, entries, now }, origin).await
}

/// `GET serverinfo/statusoverrides`: instance id → override, as JSON.
fn status_overrides(s: &AppState) -> Response {
    let map: BTreeMap<String, &'static str> = s
        .registry
        .read(|st| st.entries().filter_map(|(id, e)| e.status_override.map(|o| (id.clone(), o.as_str()))).collect());
    axum::Json(map).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `Query::get` must agree with: the first matching pair of a full form decode.
    fn reference(q: &str, key: &str) -> Option<String> {
        form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == key).map(|(_, v)| v.into_owned())
    }

    #[test]
    fn query_get_decodes_as_a_form_parser() {
        let tokens = ["k", "a", "=", "&", "%20", "+", "%2", "%zz", "%C3%A9", "%FF", "1", "a+b", "a%20b"];
        let mut queries = vec![String::new()];
        for _ in 0..4 {
            queries = queries.iter().flat_map(|q| tokens.iter().map(move |t| format!("{q}{t}"))).collect();
            for q in &queries {
                for key in ["k", "a b", "a", ""] {
                    assert_eq!(Query(q).get(key).map(Cow::into_owned), reference(q, key), "query {q:?}, key {key:?}");
                }
            }
        }
        assert_eq!(Query("lastDirtyTimestamp=17&status=UP").get("status").as_deref(), Some("UP"));
        assert_eq!(Query("k=1&k=2").get("k").as_deref(), Some("1"));
    }
}
