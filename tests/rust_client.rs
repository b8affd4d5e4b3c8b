//! The Rust client library (`synod-client`) against running synod servers: registration,
//! heartbeats, re-registration after the server forgets it, long-polled and periodic deltas
//! with the hash check and the full-fetch fallback, discovery and round robin, the cache
//! answering while every server is down, failover between servers, and graceful cancel.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{py_instance, ServerProcess};
use reqwest::{Client, StatusCode};
use synod_client::{ClientConfig, EurekaClient, InstanceConfig, Server, Status};

const LIMIT: Duration = Duration::from_secs(15);

fn instance(app: &str, port: u16) -> InstanceConfig {
    let mut i = InstanceConfig::new(app, "127.0.0.1", port);
    i.renewal_interval_secs = 1;
    i.lease_duration_secs = 5;
    i
}

async fn server_has(c: &Client, eureka: &str, app: &str, id: &str) -> bool {
    c.get(format!("{eureka}/apps/{app}/{id}")).send().await.is_ok_and(|r| r.status() == StatusCode::OK)
}

async fn eventually<F: std::future::Future<Output = bool>>(what: &str, mut cond: impl FnMut() -> F) -> Duration {
    let start = Instant::now();
    while !cond().await {
        assert!(start.elapsed() < LIMIT, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    start.elapsed()
}

async fn last_renewal(c: &Client, eureka: &str, app: &str, id: &str) -> u64 {
    let v: serde_json::Value = c
        .get(format!("{eureka}/apps/{app}/{id}"))
        .header("Accept", "application/json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ts = &v["instance"]["leaseInfo"]["lastRenewalTimestamp"];
    ts.as_u64().or_else(|| ts.as_str().and_then(|s| s.parse().ok())).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_renews_discovers_by_long_poll_round_robins_and_cancels() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &[]);
    let e = server.eureka_url();
    let c = Client::new();
    let orders = EurekaClient::start(ClientConfig::new(vec![e.clone()]), instance("orders", 8080)).await.unwrap();
    let id = "127.0.0.1:orders:8080";
    assert!(server_has(&c, &e, "ORDERS", id).await, "registered on start");
    let first = last_renewal(&c, &e, "ORDERS", id).await;
    eventually("a heartbeat", || async { last_renewal(&c, &e, "ORDERS", id).await > first }).await;

    // Another service appears: the long-polled delta brings it into the cache in milliseconds.
    let t = Instant::now();
    let r = c.post(format!("{e}/apps/billing")).json(&py_instance("billing", "127.0.0.1", 9001)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    eventually("billing in the cache", || async { !orders.instances("billing").is_empty() }).await;
    let took = t.elapsed();
    assert!(took < Duration::from_secs(2), "long-polled delta took {took:?}");
    let r = c.post(format!("{e}/apps/billing")).json(&py_instance("billing", "127.0.0.2", 9002)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    eventually("two billing instances", || async { orders.instances("billing").len() == 2 }).await;
    let picks: Vec<String> = (0..4).map(|_| orders.choose("billing").unwrap().ip_addr).collect();
    assert_eq!(picks[0], picks[2]);
    assert_eq!(picks[1], picks[3]);
    assert_ne!(picks[0], picks[1]);
    assert_eq!(orders.instances_by_vip("billing").len(), 2);
    assert_eq!(orders.registry().hash_code(), "UP_3_");

    // Status and metadata changes reach the server.
    orders.set_status(Status::OutOfService).await.unwrap();
    orders.set_metadata("version", "2.1").await.unwrap();
    let v: serde_json::Value = c
        .get(format!("{e}/apps/ORDERS/{id}"))
        .header("Accept", "application/json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["instance"]["status"], "OUT_OF_SERVICE");
    assert_eq!(v["instance"]["metadata"]["version"], "2.1");
    // Not UP: not offered for calls.
    eventually("orders leaves the UP list", || async { orders.instances("orders").is_empty() }).await;

    // A cancel on the server leaves the cache as fast.
    let r = c.delete(format!("{e}/apps/BILLING/127.0.0.1:billing:9001")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    eventually("billing cancel in the cache", || async { orders.instances("billing").len() == 1 }).await;

    orders.shutdown().await;
    assert!(!server_has(&c, &e, "ORDERS", id).await, "graceful shutdown cancels");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_again_when_the_server_forgets_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &[]);
    let e = server.eureka_url();
    let c = Client::new();
    let client = EurekaClient::start(ClientConfig::new(vec![e.clone()]), instance("forgotten", 8080)).await.unwrap();
    let id = "127.0.0.1:forgotten:8080";
    let r = c.delete(format!("{e}/apps/FORGOTTEN/{id}")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // The next heartbeat gets 404 and registers again.
    eventually("re-registered", || async { server_has(&c, &e, "FORGOTTEN", id).await }).await;
    drop(client);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_deltas_fall_back_to_a_full_fetch_when_the_hash_differs() {
    // With 1 s delta retention and a 2 s fetch interval, changes age out of the delta before
    // the client asks: the delta is empty but the server's hash counts them, so the client
    // must notice the mismatch and fetch the registry whole.
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &["--delta-retention", "1s"]);
    let e = server.eureka_url();
    let c = Client::new();
    let mut cfg = ClientConfig::new(vec![e.clone()]);
    cfg.long_poll = false;
    cfg.register = false;
    cfg.registry_fetch_interval = Duration::from_secs(2);
    let client = EurekaClient::start(cfg, instance("watcher", 1)).await.unwrap();
    // Wait for the client's first delta round, so the next one comes after the retention.
    eventually("the first delta", || async { client.registry().delta_version().is_some() }).await;
    let r = c.post(format!("{e}/apps/late")).json(&py_instance("late", "127.0.0.1", 7000)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let took = eventually("late instance via the fallback", || async { client.instances("late").len() == 1 }).await;
    assert!(took > Duration::from_millis(500), "periodic mode should not see it at once ({took:?})");
    assert_eq!(client.registry().hash_code(), "UP_1_");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fails_over_between_servers_and_the_cache_outlives_them() {
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut s1 = ServerProcess::start(d1.path(), &[]);
    let mut s2 = ServerProcess::start(d2.path(), &[]);
    let (e1, e2) = (s1.eureka_url(), s2.eureka_url());
    let c = Client::new();
    // "peer" is registered on both servers, as replication would have it.
    for e in [&e1, &e2] {
        let r = c.post(format!("{e}/apps/peer")).json(&py_instance("peer", "127.0.0.1", 7000)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
    }
    let mut cfg = ClientConfig::new(vec![e1.clone(), e2.clone()]);
    cfg.server_backoff = Duration::from_secs(60);
    let client = EurekaClient::start(cfg, instance("mobile", 8080)).await.unwrap();
    let id = "127.0.0.1:mobile:8080";
    assert!(server_has(&c, &e1, "MOBILE", id).await, "first server preferred");
    assert_eq!(client.instances("peer").len(), 1);

    // The first server dies: heartbeats move to the second, which does not know the
    // instance (404), so the client registers there.
    s1.kill9();
    eventually("registered on the second server", || async { server_has(&c, &e2, "MOBILE", id).await }).await;

    // Every server down: refreshes fail, and the cached registry still answers.
    s2.kill9();
    eventually("failed refreshes", || async { client.refresh_failures() >= 2 }).await;
    assert_eq!(client.instances("peer").len(), 1, "cache must keep answering");
    assert!(client.choose("peer").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_in_the_clients_zone_are_tried_first_also_on_failover() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut s: Vec<ServerProcess> = dirs.iter().map(|d| ServerProcess::start(d.path(), &[])).collect();
    let e: Vec<String> = s.iter().map(ServerProcess::eureka_url).collect();
    let c = Client::new();
    // The other zone's server is listed first; the client's zone has the second and third.
    let cfg = ClientConfig::with_zones(
        Some("zone-b"),
        vec![Server::in_zone(&e[0], "zone-a"), Server::in_zone(&e[1], "zone-b"), Server::in_zone(&e[2], "zone-b")],
    );
    let client = EurekaClient::start(cfg, instance("zoned", 8080)).await.unwrap();
    let id = "127.0.0.1:zoned:8080";
    let on = |i: usize| server_has(&c, &e[i], "ZONED", id);
    assert!(on(1).await, "registered in its own zone");
    assert!(!on(0).await && !on(2).await, "only on the first server of its zone");

    // Its zone's first server dies: the heartbeats move to the zone's other server (which
    // answers 404, so the client registers there), not to the other zone's.
    s[1].kill9();
    eventually("registered on the zone's second server", || on(2)).await;
    assert!(!on(0).await, "not on the other zone's server while its own zone has one");

    // Its whole zone down: only then the other zone.
    s[2].kill9();
    eventually("registered in the other zone", || on(0)).await;
    drop(client);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_without_a_free_slot_is_answered_by_a_plain_delta_not_a_failover() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &["--max-long-polls", "1"]);
    let e = server.eureka_url();
    let root = format!("http://{}", server.addr);
    let c = Client::new();
    let r = c.post(format!("{e}/apps/held")).json(&py_instance("held", "127.0.0.1", 7000)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let status = |c: Client, root: String| async move {
        c.get(format!("{root}/v1/status")).send().await.unwrap().json::<serde_json::Value>().await.unwrap()
    };
    // The only slot is taken (nothing changes while the test runs, so it stays taken).
    let version = status(c.clone(), root.clone()).await["registry_version"].as_u64().unwrap();
    let holder = {
        let (c, e) = (c.clone(), e.clone());
        tokio::spawn(async move { c.get(format!("{e}/apps/delta?waitMs=60000&since={version}")).send().await })
    };
    eventually("the slot taken", || async { status(c.clone(), root.clone()).await["long_polls_waiting"] == 1 }).await;
    // A second server, which a client that took "busy" for a failure would move to.
    let (other, counted) = plain_eureka(Some("1"), "").await;
    let mut cfg = ClientConfig::new(vec![e.clone(), other]);
    cfg.register = false;
    let start = Instant::now();
    let client = EurekaClient::start(cfg, instance("watcher", 1)).await.unwrap();
    eventually("three refused long polls", || async {
        status(c.clone(), root.clone()).await["long_polls_refused"].as_u64() >= Some(3)
    })
    .await;
    // Each refusal is followed by a plain delta and a pause before the next long poll.
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(1900), "three refusals in {took:?}");
    assert_eq!(counted.requests(), 0, "the busy server was treated as failed");
    assert_eq!(client.refresh_failures(), 0, "a busy answer is no server failure");
    assert_eq!(client.instances("held").len(), 1);
    holder.abort();
}

/// A stand-in for a Eureka server without long-poll support (Netflix Eureka answers
/// `waitMs` requests as plain deltas, without `x-synod-long-poll`): an empty registry, with
/// or without a delta version and with a fixed hash; counts the requests and can fail the
/// next deltas.
#[derive(Default)]
struct PlainEureka {
    full: AtomicU64,
    deltas: AtomicU64,
    waits: AtomicU64,
    fail_deltas: AtomicU64,
}

impl PlainEureka {
    fn requests(&self) -> u64 {
        self.full.load(Ordering::Relaxed) + self.deltas.load(Ordering::Relaxed) + self.waits.load(Ordering::Relaxed)
    }
}

/// Serves a [`PlainEureka`] on an ephemeral loopback port until the test's runtime ends.
/// `version`: the `versions__delta` of every answer, or none; `hash`: its `apps__hashcode`.
async fn plain_eureka(version: Option<&str>, hash: &str) -> (String, Arc<PlainEureka>) {
    use axum::extract::{Query, State};
    use axum::http::StatusCode as Code;
    use axum::routing::get;
    use axum::Json;
    use std::collections::HashMap;
    let mut body = serde_json::json!({"applications": {"apps__hashcode": hash, "application": []}});
    if let Some(v) = version {
        body["applications"]["versions__delta"] = v.into();
    }
    let full_body = body.clone();
    let state = Arc::new(PlainEureka::default());
    let app = axum::Router::new()
        .route(
            "/eureka/apps",
            get(move |State(s): State<Arc<PlainEureka>>| {
                s.full.fetch_add(1, Ordering::Relaxed);
                std::future::ready(Json(full_body.clone()))
            }),
        )
        .route(
            "/eureka/apps/delta",
            get(move |State(s): State<Arc<PlainEureka>>, Query(q): Query<HashMap<String, String>>| {
                if q.contains_key("waitMs") {
                    s.waits.fetch_add(1, Ordering::Relaxed);
                } else {
                    s.deltas.fetch_add(1, Ordering::Relaxed);
                }
                let failed =
                    s.fail_deltas.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)).is_ok();
                std::future::ready(if failed { Err(Code::INTERNAL_SERVER_ERROR) } else { Ok(Json(body.clone())) })
            }),
        )
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/eureka"), state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn against_a_server_without_long_poll_it_polls_periodically_and_refetches_after_a_failure() {
    let (url, s) = plain_eureka(Some("1"), "").await;
    let mut cfg = ClientConfig::new(vec![url]);
    cfg.register = false;
    cfg.registry_fetch_interval = Duration::from_millis(300);
    let start = Instant::now();
    let client = EurekaClient::start(cfg, instance("plain", 1)).await.unwrap();
    eventually("four periodic deltas", || async { s.deltas.load(Ordering::Relaxed) >= 4 }).await;
    // One delta learns the version, one long poll finds it unsupported, then a delta every
    // interval: the fourth comes three intervals after the first, never in a busy loop.
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(850), "four deltas in {took:?}");
    assert_eq!(s.waits.load(Ordering::Relaxed), 1, "long poll tried once");
    // A failed delta: the next round fetches the registry whole.
    let fulls = s.full.load(Ordering::Relaxed);
    s.fail_deltas.store(1, Ordering::Relaxed);
    eventually("a full fetch after the failed delta", || async { s.full.load(Ordering::Relaxed) > fulls }).await;
    eventually("refresh healthy again", || async { client.refresh_failures() == 0 }).await;
    // After a failure it may be talking to another server: one long poll finds out again,
    // then deltas go back to one per interval.
    eventually("one new long-poll attempt", || async { s.waits.load(Ordering::Relaxed) == 2 }).await;
    let deltas = s.deltas.load(Ordering::Relaxed);
    eventually("two more deltas", || async { s.deltas.load(Ordering::Relaxed) >= deltas + 2 }).await;
    assert_eq!(s.waits.load(Ordering::Relaxed), 2, "no more long polls against this server");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn against_a_server_whose_deltas_carry_no_version_it_polls_every_interval() {
    // No version to long-poll on, and a hash the copy never matches: every delta is followed
    // by a full fetch, and the next round still waits the whole interval.
    let (url, s) = plain_eureka(None, "UP_1_").await;
    let interval = Duration::from_millis(1500);
    let mut cfg = ClientConfig::new(vec![url]);
    cfg.register = false;
    cfg.registry_fetch_interval = interval;
    let start = Instant::now();
    let client = EurekaClient::start(cfg, instance("plain", 1)).await.unwrap();
    eventually("three deltas", || async { s.deltas.load(Ordering::Relaxed) >= 3 }).await;
    let took = start.elapsed();
    // The first delta follows the initial fetch at once; the others one interval apart.
    assert!(took >= interval * 2 - Duration::from_millis(50), "three deltas in {took:?}");
    let deltas = s.deltas.load(Ordering::Relaxed);
    assert_eq!(s.waits.load(Ordering::Relaxed), 0, "nothing to long-poll on");
    // The start's fetch, then a full fetch after each mismatching delta.
    assert!(s.requests() <= 2 * deltas + 1, "{} requests for {deltas} deltas", s.requests());
    assert_eq!(client.refresh_failures(), 0);
}

/// Against a node with an auth file over HTTPS with a private CA: credentials in the service
/// URL, the CA trusted through the config; it registers, renews, discovers and cancels.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn works_with_basic_auth_over_https_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let files = common::secured::Files::write(dir.path());
    let data = tempfile::tempdir().unwrap();
    let mut args = vec!["--auth-file".to_string(), files.auth.display().to_string()];
    args.extend(files.tls_args());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = ServerProcess::start(data.path(), &args);
    let ca = std::fs::read(&files.ca.pem).unwrap();
    let eureka = format!("https://svc:svc-password@{}/eureka", server.addr);
    let c = Client::builder().add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap()).build().unwrap();
    let client =
        EurekaClient::start(ClientConfig::new(vec![eureka.clone()]).trusting(&ca), instance("rust-alpha", 9001))
            .await
            .expect("start");
    let id = "127.0.0.1:rust-alpha:9001";
    eventually("registered", || server_has(&c, &eureka, "RUST-ALPHA", id)).await;
    let first = last_renewal(&c, &eureka, "RUST-ALPHA", id).await;
    eventually("renewed", || async { last_renewal(&c, &eureka, "RUST-ALPHA", id).await > first }).await;
    eventually("discovered", || async { client.instances("RUST-ALPHA").iter().any(|i| i.instance_id == id) }).await;
    // Without the CA the same client cannot reach the node.
    let stranger = EurekaClient::start(ClientConfig::new(vec![eureka.clone()]), instance("rust-beta", 9002)).await;
    if let Ok(s) = stranger {
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            !server_has(&c, &eureka, "RUST-BETA", "127.0.0.1:rust-beta:9002").await,
            "registered without trusting the CA"
        );
        s.shutdown().await;
    }
    client.shutdown().await;
    eventually("cancelled", || async { !server_has(&c, &eureka, "RUST-ALPHA", id).await }).await;
}
