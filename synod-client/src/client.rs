//! The client: registration and heartbeats, the registry copy and its refresh, discovery.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use tokio::task::JoinHandle;

use crate::instance::{now_ms, InstanceConfig, Status};
use crate::registry::{self, Instance, Registry};
use crate::servers::{Server, ServerList};
use crate::Error;

/// Response header by which a server says it honoured `waitMs` (synod does), or, on a 503,
/// that it has no waiter slot free (`busy`).
const LONG_POLL_HEADER: &str = "x-synod-long-poll";

/// Pause before long-polling again after a round that could not long-poll: the server had
/// no waiter slot free, or the copy had to be fetched whole (its delta position is lost).
/// Short, so changes still arrive within about a second; not zero, so a server that is
/// busy or whose hash never matches is not asked in a loop.
const RESUME_PAUSE: Duration = Duration::from_secs(1);

/// When the next refresh round starts.
enum Next {
    /// At once (the server long-polled this round, or it taught the version to wait on).
    Now,
    /// After this pause.
    After(Duration),
}

/// Whether `r` is a server's "no long-poll slot free" answer (not a failure of the server).
fn long_poll_busy(r: &reqwest::Response) -> bool {
    r.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE
        && r.headers().get(LONG_POLL_HEADER).is_some_and(|v| v.as_bytes() == b"busy")
}

/// Client settings; `new` gives Eureka's defaults.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Eureka service URLs (e.g. `http://10.0.0.1:8761/eureka`).
    pub servers: Vec<Server>,
    /// This client's zone: servers in it are tried first.
    pub zone: Option<String>,
    /// Register this instance (and heartbeat, and cancel on shutdown).
    pub register: bool,
    /// Keep a copy of the registry.
    pub fetch_registry: bool,
    /// Delta fetch interval when the server cannot long-poll (Eureka default 30 s).
    pub registry_fetch_interval: Duration,
    /// Use long-polled deltas when the server supports them.
    pub long_poll: bool,
    /// How long one long-polled delta may wait on the server.
    pub long_poll_wait: Duration,
    /// How long a failing server is skipped.
    pub server_backoff: Duration,
    /// Deadline of one ordinary request.
    pub request_timeout: Duration,
    /// PEM certificates of CAs trusted for https servers, besides the public web PKI roots
    /// (a registry with a private CA). Credentials go in the service URL
    /// (`https://user:password@host:8761/eureka`) and are sent as HTTP Basic.
    pub root_certificates: Vec<Vec<u8>>,
}

impl ClientConfig {
    /// Defaults for the given service URLs (in no zone: tried in the given order).
    pub fn new(urls: Vec<String>) -> ClientConfig {
        ClientConfig::with_zones(None, urls.iter().map(|u| Server::new(u)).collect())
    }

    /// Defaults for servers in zones: those in `zone` (this client's) are tried first, then
    /// the others, each group in the given order.
    pub fn with_zones(zone: Option<&str>, servers: Vec<Server>) -> ClientConfig {
        ClientConfig {
            servers,
            zone: zone.map(str::to_string),
            register: true,
            fetch_registry: true,
            registry_fetch_interval: Duration::from_secs(30),
            long_poll: true,
            long_poll_wait: Duration::from_secs(30),
            server_backoff: Duration::from_secs(30),
            request_timeout: Duration::from_secs(5),
            root_certificates: Vec::new(),
        }
    }

    /// These settings, also trusting the CA certificates in `pem` for https servers.
    pub fn trusting(mut self, pem: &[u8]) -> ClientConfig {
        self.root_certificates.push(pem.to_vec());
        self
    }
}

struct Inner {
    cfg: ClientConfig,
    servers: ServerList,
    http: reqwest::Client,
    /// This instance and its `lastDirtyTimestamp`.
    me: Mutex<(InstanceConfig, u64)>,
    registry: RwLock<Registry>,
    round_robin: Mutex<HashMap<String, usize>>,
    long_poll: AtomicBool,
    /// Refresh rounds failed in a row.
    refresh_failures: AtomicU64,
}

/// A running client. Dropping it stops its tasks without cancelling the registration; call
/// [`EurekaClient::shutdown`] for a graceful exit.
pub struct EurekaClient {
    inner: Arc<Inner>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for EurekaClient {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn seg(s: &str) -> String {
    utf8_percent_encode(s, NON_ALPHANUMERIC).to_string()
}

impl EurekaClient {
    /// Registers `instance` (if configured), fetches the registry once and starts the
    /// heartbeat and refresh tasks. Unreachable servers do not fail the start: the tasks keep
    /// trying, as the Java client does.
    pub async fn start(cfg: ClientConfig, instance: InstanceConfig) -> Result<EurekaClient, Error> {
        if cfg.servers.is_empty() {
            return Err(Error::Unavailable("no server URL configured".into()));
        }
        let mut http = reqwest::Client::builder().no_proxy().connect_timeout(Duration::from_secs(2));
        for pem in &cfg.root_certificates {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| Error::Unavailable(format!("unusable CA certificate: {e}")))?;
            for cert in certs {
                http = http.add_root_certificate(cert);
            }
        }
        let http = http.build().map_err(|e| Error::Unavailable(e.to_string()))?;
        let servers = ServerList::new(cfg.servers.clone(), cfg.zone.as_deref(), cfg.server_backoff);
        let inner = Arc::new(Inner {
            servers,
            http,
            me: Mutex::new((instance, now_ms())),
            registry: RwLock::new(Registry::default()),
            round_robin: Mutex::new(HashMap::new()),
            long_poll: AtomicBool::new(cfg.long_poll),
            refresh_failures: AtomicU64::new(0),
            cfg,
        });
        let mut tasks = Vec::new();
        if inner.cfg.register {
            if let Err(e) = inner.register().await {
                tracing::warn!(error = %e, "registration failed; will retry with the heartbeats");
            }
            let i = inner.clone();
            tasks.push(tokio::spawn(async move { i.heartbeats().await }));
        }
        if inner.cfg.fetch_registry {
            if let Err(e) = inner.full_fetch().await {
                tracing::warn!(error = %e, "initial registry fetch failed; will retry");
            }
            let i = inner.clone();
            tasks.push(tokio::spawn(async move { i.refresh().await }));
        }
        Ok(EurekaClient { inner, tasks })
    }

    /// Registry refresh rounds that failed in a row (0 after a success): while every server
    /// is down this grows and the local copy keeps answering.
    pub fn refresh_failures(&self) -> u64 {
        self.inner.refresh_failures.load(Ordering::Relaxed)
    }

    /// A copy of the local registry.
    pub fn registry(&self) -> Registry {
        self.inner.registry.read().clone()
    }

    /// UP instances of `app`, from the local copy (answers while every server is down).
    pub fn instances(&self, app: &str) -> Vec<Instance> {
        self.inner.registry.read().application(app).into_iter().filter(|i| i.status == Status::Up).collect()
    }

    /// UP instances whose VIP address list contains `vip`.
    pub fn instances_by_vip(&self, vip: &str) -> Vec<Instance> {
        self.inner.registry.read().by_vip(vip)
    }

    /// The next UP instance of `app`, round robin (Ribbon's default rule).
    pub fn choose(&self, app: &str) -> Option<Instance> {
        let mut list = self.instances(app);
        if list.is_empty() {
            return None;
        }
        list.sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
        let mut rr = self.inner.round_robin.lock();
        let n = rr.entry(app.to_ascii_uppercase()).or_insert(0);
        let pick = list.swap_remove(*n % list.len());
        *n = n.wrapping_add(1);
        Some(pick)
    }

    /// Reports a new status for this instance through the status endpoint (as
    /// py-eureka-client does: a re-registration could not move an UP instance to
    /// OUT_OF_SERVICE, Eureka's rules keep the existing status); later heartbeats carry it.
    pub async fn set_status(&self, status: Status) -> Result<(), Error> {
        let (app, id, dirty) = {
            let mut me = self.inner.me.lock();
            me.0.status = status;
            me.1 = now_ms();
            (me.0.app.clone(), me.0.instance_id.clone(), me.1)
        };
        let r = self
            .inner
            .send(self.inner.cfg.request_timeout, |c, base| {
                c.put(format!(
                    "{base}/apps/{}/{}/status?value={status}&lastDirtyTimestamp={dirty}",
                    seg(&app),
                    seg(&id)
                ))
            })
            .await?;
        match r.status() {
            s if s.is_success() => Ok(()),
            // Not registered there (yet): register with the new status.
            reqwest::StatusCode::NOT_FOUND => self.inner.register().await,
            s => Err(Error::Protocol { url: r.url().to_string(), reason: format!("status update answered {s}") }),
        }
    }

    /// Sets a metadata entry of this instance (re-registers with it).
    pub async fn set_metadata(&self, key: &str, value: &str) -> Result<(), Error> {
        {
            let mut me = self.inner.me.lock();
            me.0.metadata.insert(key.to_string(), value.to_string());
            me.1 = now_ms();
        }
        self.inner.register().await
    }

    /// Fetches the whole registry now (normally done by the refresh task).
    pub async fn refresh_now(&self) -> Result<(), Error> {
        self.inner.full_fetch().await
    }

    /// Stops the tasks and cancels the registration.
    pub async fn shutdown(mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
        if self.inner.cfg.register {
            if let Err(e) = self.inner.cancel().await {
                tracing::warn!(error = %e, "cancel at shutdown failed");
            }
        }
    }
}

impl Inner {
    /// Sends a request to the first server that answers without a transport error or 5xx
    /// (a long poll's "busy" 503 is an answer: the server works, it has no waiter slot).
    async fn send(
        &self,
        timeout: Duration,
        build: impl Fn(&reqwest::Client, &str) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, Error> {
        let mut last = String::from("no server tried");
        for (i, url) in self.servers.order() {
            match build(&self.http, &url).timeout(timeout).send().await {
                Ok(r) if !r.status().is_server_error() || long_poll_busy(&r) => {
                    self.servers.succeeded(i);
                    return Ok(r);
                }
                Ok(r) => last = format!("{url}: HTTP {}", r.status()),
                Err(e) => last = format!("{url}: {e}"),
            }
            self.servers.failed(i);
        }
        Err(Error::Unavailable(last))
    }

    async fn register(&self) -> Result<(), Error> {
        let (app, body) = {
            let me = self.me.lock();
            (me.0.app.clone(), me.0.to_json(me.1))
        };
        let r = self
            .send(self.cfg.request_timeout, |c, base| c.post(format!("{base}/apps/{}", seg(&app))).json(&body))
            .await?;
        if r.status().is_success() {
            Ok(())
        } else {
            Err(Error::Protocol { url: r.url().to_string(), reason: format!("register answered {}", r.status()) })
        }
    }

    async fn cancel(&self) -> Result<(), Error> {
        let (app, id) = {
            let me = self.me.lock();
            (me.0.app.clone(), me.0.instance_id.clone())
        };
        self.send(self.cfg.request_timeout, |c, base| c.delete(format!("{base}/apps/{}/{}", seg(&app), seg(&id))))
            .await?;
        Ok(())
    }

    /// Renews every renewal interval; a 404 (the server forgot us) re-registers.
    async fn heartbeats(&self) {
        loop {
            let interval = Duration::from_secs(u64::from(self.me.lock().0.renewal_interval_secs.max(1)));
            tokio::time::sleep(interval).await;
            let (app, id, status, dirty) = {
                let me = self.me.lock();
                (me.0.app.clone(), me.0.instance_id.clone(), me.0.status, me.1)
            };
            let result = self
                .send(self.cfg.request_timeout, |c, base| {
                    c.put(format!("{base}/apps/{}/{}?status={status}&lastDirtyTimestamp={dirty}", seg(&app), seg(&id)))
                })
                .await;
            match result {
                Ok(r) if r.status() == reqwest::StatusCode::NOT_FOUND => {
                    tracing::info!(app, id, "server does not know this instance; registering again");
                    if let Err(e) = self.register().await {
                        tracing::warn!(error = %e, "re-registration failed");
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
            }
        }
    }

    /// GETs `path` as JSON; also says whether the server long-polled it. `Ok(None)`: a long
    /// poll the server had no waiter slot for.
    async fn get_json(&self, path: &str, timeout: Duration) -> Result<Option<(serde_json::Value, bool)>, Error> {
        let r =
            self.send(timeout, |c, base| c.get(format!("{base}/{path}")).header("accept", "application/json")).await?;
        let url = r.url().to_string();
        if long_poll_busy(&r) {
            return Ok(None);
        }
        if !r.status().is_success() {
            return Err(Error::Protocol { url, reason: format!("HTTP {}", r.status()) });
        }
        let long_poll = r.headers().contains_key(LONG_POLL_HEADER);
        let v = r.json().await.map_err(|e| Error::Protocol { url, reason: e.to_string() })?;
        Ok(Some((v, long_poll)))
    }

    /// [`Inner::get_json`] of a request that is never long-polled.
    async fn get_plain(&self, path: &str) -> Result<serde_json::Value, Error> {
        match self.get_json(path, self.cfg.request_timeout).await? {
            Some((v, _)) => Ok(v),
            None => Err(Error::Protocol { url: path.into(), reason: "busy answer to a plain request".into() }),
        }
    }

    async fn full_fetch(&self) -> Result<(), Error> {
        let v = self.get_plain("apps").await?;
        let doc = registry::parse(&v)
            .ok_or_else(|| Error::Protocol { url: "apps".into(), reason: "no applications".into() })?;
        self.registry.write().replace(doc);
        Ok(())
    }

    /// One delta round. The first delta after a full fetch is not long-polled: it learns the
    /// registry's version to wait on. A server that did not honour `waitMs` (not synod, e.g.
    /// Netflix Eureka), or whose deltas carry no version, is polled every fetch interval from
    /// then on; one without a waiter slot free is asked for a plain delta, and long-polled
    /// again after a short pause.
    async fn delta_round(&self) -> Result<Next, Error> {
        let since = self.registry.read().version;
        let long_poll = self.long_poll.load(Ordering::Relaxed);
        let polling = long_poll && since.is_some();
        let path = match since {
            Some(v) if polling => format!("apps/delta?waitMs={}&since={v}", self.cfg.long_poll_wait.as_millis()),
            _ => "apps/delta".to_string(),
        };
        let timeout =
            if polling { self.cfg.long_poll_wait + self.cfg.request_timeout } else { self.cfg.request_timeout };
        let (v, polled, busy) = match self.get_json(&path, timeout).await? {
            Some((v, polled)) => (v, polled, false),
            None => (self.get_plain("apps/delta").await?, false, true),
        };
        if polling && !busy {
            self.long_poll.store(polled, Ordering::Relaxed);
        }
        let doc = registry::parse(&v)
            .ok_or_else(|| Error::Protocol { url: path.clone(), reason: "no applications".into() })?;
        if doc.version.is_none() {
            // No `versions__delta`: nothing to pass as `since`, so this server can only be
            // polled, every fetch interval.
            self.long_poll.store(false, Ordering::Relaxed);
        }
        let consistent = self.registry.write().apply_delta(doc);
        if !consistent {
            tracing::debug!("registry hash differs from the server's after a delta; fetching it whole");
            self.full_fetch().await?;
        }
        let resume = RESUME_PAUSE.min(self.cfg.registry_fetch_interval);
        let learnt_version = !polling && long_poll && self.registry.read().version.is_some();
        Ok(if busy || (!consistent && self.long_poll.load(Ordering::Relaxed)) {
            Next::After(resume)
        } else if polled || learnt_version {
            Next::Now
        } else {
            Next::After(self.cfg.registry_fetch_interval)
        })
    }

    /// Keeps the registry copy current: long-polled deltas when the server supports them,
    /// else a delta every fetch interval. After a failed round the next one is a full
    /// fetch (as the Java client does when a delta cannot be had): the failure may have
    /// moved the client to another server, whose deltas the copy cannot be trusted with.
    async fn refresh(&self) {
        let mut full = false;
        loop {
            let result = if full || !self.registry.read().loaded {
                if full {
                    // The failure may have moved the client to another server: find out
                    // afresh whether it long-polls.
                    self.long_poll.store(self.cfg.long_poll, Ordering::Relaxed);
                }
                // A delta round follows at once when long-polling (it waits on the server).
                let long_poll = self.long_poll.load(Ordering::Relaxed);
                self.full_fetch().await.map(|()| {
                    if long_poll {
                        Next::Now
                    } else {
                        Next::After(self.cfg.registry_fetch_interval)
                    }
                })
            } else {
                self.delta_round().await
            };
            full = result.is_err();
            if full {
                self.refresh_failures.fetch_add(1, Ordering::Relaxed);
            } else {
                self.refresh_failures.store(0, Ordering::Relaxed);
            }
            match result {
                Ok(Next::Now) => {}
                Ok(Next::After(pause)) => tokio::time::sleep(pause).await,
                Err(e) => {
                    tracing::warn!(error = %e, "registry refresh failed; keeping the local copy");
                    tokio::time::sleep(self.cfg.registry_fetch_interval.min(Duration::from_secs(1))).await;
                }
            }
        }
    }
}
