//! The workload, through the Eureka API only, every request recorded as an [`Op`]:
//! - a **fleet** of instances, each a client that registers, heartbeats every renewal
//!   interval, now and then changes status (a re-registration, as Eureka's Java client sends
//!   it) and sometimes cancels and comes back under a new id. It keeps to one node and fails
//!   over to the next on an error, as Eureka clients do, and re-registers when a heartbeat
//!   answers 404;
//! - **discoverers**, each tied to one node (so reads can be told apart by side), doing full
//!   and delta fetches, single-instance reads and, on raft, linearizable reads;
//! - an **observer** that reads every node's full registry at the same moment (a round),
//!   often after a heal, for the convergence and lost-write checks.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

use crate::cluster::{Backend, Timing};
use crate::history::{Kind, Micros, Op, Outcome};

/// The observer's process id.
pub const OBSERVER: u32 = u32::MAX;
/// Metadata key carrying an instance's generation.
pub const GEN_KEY: &str = "lab-gen";
/// Applications the fleet spreads over.
const APPS: usize = 5;
/// Longest wait for one request.
const REQUEST_TIMEOUT: Duration = Duration::from_millis(1000);

/// The shared record of a run.
pub struct Recorder {
    start: Instant,
    ops: Mutex<Vec<Op>>,
}

impl Recorder {
    /// A recorder whose clock starts now.
    pub fn new() -> Arc<Recorder> {
        Arc::new(Recorder { start: Instant::now(), ops: Mutex::new(Vec::new()) })
    }

    /// Microseconds since the start.
    pub fn now(&self) -> Micros {
        self.start.elapsed().as_micros() as Micros
    }

    fn push(&self, op: Op) {
        if let Ok(mut ops) = self.ops.lock() {
            ops.push(op);
        }
    }

    /// Everything recorded so far.
    pub fn ops(&self) -> Vec<Op> {
        self.ops.lock().map(|o| o.clone()).unwrap_or_default()
    }
}

/// What the workload's tasks share.
pub struct Shared {
    pub rec: Arc<Recorder>,
    pub bases: Vec<String>,
    pub backend: Backend,
    pub timing: Timing,
    http: reqwest::Client,
    /// Fleet writes stop (heartbeats go on) once this is set: the quiet end of a run.
    pub writes_stopped: AtomicBool,
    /// Every task returns once this is set.
    pub stopped: AtomicBool,
    /// The observer reads every 100 ms until this time (µs), every 500 ms after it.
    pub observe_fast_until: AtomicU64,
    /// Every instance key ever registered, for the discoverers' single reads.
    keys: Mutex<Vec<(String, String)>>,
}

impl Shared {
    /// Shared state for a workload against `bases`.
    pub fn new(
        rec: Arc<Recorder>,
        bases: Vec<String>,
        backend: Backend,
        timing: Timing,
    ) -> anyhow::Result<Arc<Shared>> {
        let http = reqwest::Client::builder().timeout(REQUEST_TIMEOUT).pool_max_idle_per_host(64).build()?;
        Ok(Arc::new(Shared {
            rec,
            bases,
            backend,
            timing,
            http,
            writes_stopped: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            observe_fast_until: AtomicU64::new(0),
            keys: Mutex::new(Vec::new()),
        }))
    }

    fn stopped(&self) -> bool {
        self.stopped.load(Ordering::Relaxed)
    }
}

/// A request's answer as the history sees it.
struct Answer {
    outcome: Outcome,
    status: u16,
    body: Option<Value>,
}

/// Sends one request and classifies its answer. `write` decides what an ambiguous failure
/// means: a write that timed out or got a 5xx may still be applied (unknown); a read that
/// did the same simply was not served.
async fn send(req: reqwest::RequestBuilder, write: bool, want_body: bool) -> Answer {
    match req.header("accept", "application/json").send().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let outcome = match status {
                200..=299 => Outcome::Ok,
                // A definite answer: the node does not know the instance.
                404 => Outcome::Ok,
                500..=599 if write => Outcome::Unknown,
                _ => Outcome::Fail,
            };
            let body = if want_body && status == 200 { resp.json::<Value>().await.ok() } else { None };
            // A body that could not be read leaves a read unserved.
            let outcome = if want_body && status == 200 && body.is_none() { Outcome::Fail } else { outcome };
            Answer { outcome, status, body }
        }
        Err(e) if e.is_connect() => Answer { outcome: Outcome::Fail, status: 0, body: None },
        Err(_) if write => Answer { outcome: Outcome::Unknown, status: 0, body: None },
        Err(_) => Answer { outcome: Outcome::Fail, status: 0, body: None },
    }
}

/// The generation in an instance's metadata.
fn generation(instance: &Value) -> Option<u64> {
    instance["metadata"][GEN_KEY].as_str().and_then(|g| g.parse().ok())
}

/// Every lab instance of a full fetch, as (`APP/ID`, generation).
fn listed(body: &Value) -> Vec<(String, u64)> {
    let as_list = |v: &Value| match v {
        Value::Array(a) => a.clone(),
        Value::Null => Vec::new(),
        other => vec![other.clone()],
    };
    let mut out = Vec::new();
    for app in as_list(&body["applications"]["application"]) {
        for inst in as_list(&app["instance"]) {
            if let (Some(a), Some(id), Some(g)) = (inst["app"].as_str(), inst["instanceId"].as_str(), generation(&inst))
            {
                out.push((format!("{a}/{id}"), g));
            }
        }
    }
    out.sort();
    out
}

fn register_body(app: &str, id: &str, gen: u64, status: &str, dirty: u128, timing: &Timing) -> Value {
    serde_json::json!({"instance": {
        "instanceId": id, "hostName": "127.0.0.1", "app": app, "ipAddr": "127.0.0.1",
        "status": status, "overriddenstatus": "UNKNOWN", "port": {"$": 8080, "@enabled": "true"},
        "securePort": {"$": 443, "@enabled": "false"}, "countryId": 1,
        "dataCenterInfo": {"@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo", "name": "MyOwn"},
        "leaseInfo": {"renewalIntervalInSecs": timing.renew_interval.as_secs().max(1),
                      "durationInSecs": timing.lease_duration.as_secs().max(1)},
        "metadata": {GEN_KEY: gen.to_string()},
        "vipAddress": app.to_lowercase(), "lastDirtyTimestamp": dirty.to_string()}})
}

fn epoch_ms() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis())
}

/// One fleet member: an instance's client.
struct Member {
    process: u32,
    app: String,
    id: String,
    serial: u32,
    gen: u64,
    /// Set once a registration of the current id was acknowledged.
    registered: bool,
    up: bool,
    dirty: u128,
    /// The node it talks to now.
    node: usize,
}

impl Member {
    fn key(&self) -> String {
        format!("{}/{}", self.app, self.id)
    }

    fn op(&self, kind: Kind, invoke: Micros, a: &Answer, now: Micros) -> Op {
        Op {
            process: self.process,
            node: self.node as u8,
            kind,
            key: self.key(),
            value: (kind == Kind::Register).then_some(self.gen),
            seen: None,
            listed: Vec::new(),
            invoke,
            complete: now,
            outcome: a.outcome,
            status: a.status,
        }
    }

    /// Sends one request to the current node, failing over to the next one for each
    /// attempt that was not served, at most once per node. Returns the last answer.
    async fn call(&mut self, s: &Shared, kind: Kind) -> Answer {
        let mut last = Answer { outcome: Outcome::Fail, status: 0, body: None };
        for _ in 0..s.bases.len() {
            let base = &s.bases[self.node];
            let req = match kind {
                Kind::Register => s.http.post(format!("{base}/eureka/apps/{}", self.app)).json(&register_body(
                    &self.app,
                    &self.id,
                    self.gen,
                    if self.up { "UP" } else { "OUT_OF_SERVICE" },
                    self.dirty,
                    &s.timing,
                )),
                Kind::Cancel => s.http.delete(format!("{base}/eureka/apps/{}/{}", self.app, self.id)),
                _ => s.http.put(format!(
                    "{base}/eureka/apps/{}/{}?status={}&lastDirtyTimestamp={}",
                    self.app,
                    self.id,
                    if self.up { "UP" } else { "OUT_OF_SERVICE" },
                    self.dirty
                )),
            };
            let invoke = s.rec.now();
            let a = send(req, kind.is_write(), false).await;
            s.rec.push(self.op(kind, invoke, &a, s.rec.now()));
            let served = a.outcome == Outcome::Ok && !(kind == Kind::Cancel && a.status == 404);
            if served || s.stopped() {
                return a;
            }
            last = a;
            self.node = (self.node + 1) % s.bases.len();
        }
        last
    }

    async fn register(&mut self, s: &Shared) {
        if self.call(s, Kind::Register).await.outcome == Outcome::Ok {
            self.registered = true;
            if let Ok(mut keys) = s.keys.lock() {
                if keys.last().is_none_or(|(a, i)| (a, i) != (&self.app, &self.id)) {
                    keys.push((self.app.clone(), self.id.clone()));
                }
            }
        }
    }
}

/// Runs fleet member `process` until the workload stops.
pub async fn fleet_member(s: Arc<Shared>, process: u32, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed ^ (process as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut m = Member {
        process,
        app: format!("LAB-{}", process as usize % APPS),
        id: format!("lab-{process}-0"),
        serial: 0,
        gen: 1,
        registered: false,
        up: true,
        dirty: epoch_ms(),
        node: process as usize % s.bases.len(),
    };
    // Spread the fleet's heartbeats over the interval.
    let interval = s.timing.renew_interval;
    tokio::time::sleep(interval.mul_f64(rng.gen::<f64>())).await;
    while !s.stopped() {
        if !m.registered {
            m.register(&s).await;
        } else {
            let a = m.call(&s, Kind::Renew).await;
            if a.outcome == Outcome::Ok && a.status == 404 && !s.stopped() {
                // The node does not know this instance (or knows an older copy): register
                // again, as Eureka clients do.
                m.register(&s).await;
            }
            if !s.writes_stopped.load(Ordering::Relaxed) {
                let roll: f64 = rng.gen();
                if roll < 0.03 {
                    m.call(&s, Kind::Cancel).await;
                    m.serial += 1;
                    m.id = format!("lab-{process}-{}", m.serial);
                    (m.gen, m.up, m.registered, m.dirty) = (1, true, false, epoch_ms());
                } else if roll < 0.10 {
                    m.gen += 1;
                    m.up = !m.up;
                    m.dirty = epoch_ms().max(m.dirty + 1);
                    m.register(&s).await;
                }
            }
        }
        tokio::time::sleep(interval).await;
    }
}

/// Runs discoverer `process`, tied to node `node`, until the workload stops.
pub async fn discoverer(s: Arc<Shared>, process: u32, node: usize, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed ^ 0xD15C ^ (process as u64) << 20);
    let base = s.bases[node].clone();
    while !s.stopped() {
        let roll: f64 = rng.gen();
        let key = s.keys.lock().ok().and_then(|k| (!k.is_empty()).then(|| k[rng.gen_range(0..k.len())].clone()));
        let (kind, url) = match (roll, key) {
            (r, _) if r < 0.15 => (Kind::ReadAll, format!("{base}/eureka/apps")),
            (r, _) if r < 0.30 => (Kind::ReadDelta, format!("{base}/eureka/apps/delta")),
            (r, Some((app, id))) if r < 0.65 || s.backend != Backend::Raft => {
                (Kind::Read, format!("{base}/eureka/apps/{app}/{id}"))
            }
            (_, Some((app, id))) => {
                (Kind::ReadLinearizable, format!("{base}/eureka/apps/{app}/{id}?consistency=linearizable"))
            }
            (_, None) => (Kind::ReadAll, format!("{base}/eureka/apps")),
        };
        let key = match kind {
            Kind::Read | Kind::ReadLinearizable => {
                url.rsplit("/eureka/apps/").next().unwrap_or("").split('?').next().unwrap_or("").to_string()
            }
            _ => String::new(),
        };
        let invoke = s.rec.now();
        let a = send(s.http.get(&url), false, kind != Kind::ReadDelta).await;
        let mut op = Op {
            process,
            node: node as u8,
            kind,
            key,
            value: None,
            seen: None,
            listed: Vec::new(),
            invoke,
            complete: s.rec.now(),
            outcome: a.outcome,
            status: a.status,
        };
        if a.outcome == Outcome::Ok {
            match kind {
                Kind::ReadAll => op.listed = a.body.as_ref().map(listed).unwrap_or_default(),
                Kind::Read | Kind::ReadLinearizable => {
                    op.seen = Some(a.body.as_ref().and_then(|b| generation(&b["instance"])));
                }
                _ => {}
            }
        }
        s.rec.push(op);
        tokio::time::sleep(Duration::from_millis(rng.gen_range(20..60))).await;
    }
}

/// One observer round: every node's full registry, read at the same moment. All the round's
/// ops carry the same invoke time, which is how checkers group them.
pub async fn observe_round(s: &Shared) {
    let invoke = s.rec.now();
    let reads = s.bases.iter().enumerate().map(|(i, base)| {
        let req = s.http.get(format!("{base}/eureka/apps"));
        async move { (i, send(req, false, true).await) }
    });
    for (i, a) in futures_join(reads).await {
        s.rec.push(Op {
            process: OBSERVER,
            node: i as u8,
            kind: Kind::ReadAll,
            key: String::new(),
            value: None,
            seen: None,
            listed: if a.outcome == Outcome::Ok { a.body.as_ref().map(listed).unwrap_or_default() } else { Vec::new() },
            invoke,
            complete: s.rec.now(),
            outcome: a.outcome,
            status: a.status,
        });
    }
}

/// Runs `futs` concurrently and returns their outputs in order.
async fn futures_join<F>(futs: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        if let Ok(v) = h.await {
            out.push(v);
        }
    }
    out
}

/// Runs the observer until the workload stops: a round every 100 ms while
/// `observe_fast_until` lies ahead, every 500 ms otherwise.
pub async fn observer(s: Arc<Shared>) {
    while !s.stopped() {
        observe_round(&s).await;
        let fast = s.rec.now() < s.observe_fast_until.load(Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(if fast { 100 } else { 500 })).await;
    }
}
