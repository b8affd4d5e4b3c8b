//! The workload, every request recorded as an [`Op`] (through the Eureka API, or on etcd
//! the same operations mapped to leases; see [`crate::api`]):
//! - a **fleet** of instances, each a client that registers, heartbeats every renewal
//!   interval, now and then changes status (a re-registration, as Eureka's Java client sends
//!   it) and sometimes cancels and comes back under a new id. It keeps to one node and fails
//!   over to the next on an error, as Eureka clients do, and re-registers when a heartbeat
//!   answers 404;
//! - **discoverers**, each tied to one node (so reads can be told apart by side), doing full
//!   and delta fetches, single-instance reads and, on raft and etcd, linearizable reads;
//! - an **observer** that reads every node's full registry at the same moment (a round),
//!   often after a heal, for the convergence and lost-write checks.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::api::{Answer, Api, Instance, REQUEST_TIMEOUT};
use crate::cluster::{Backend, Timing};
use crate::history::{Kind, Micros, Op, Outcome};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The observer's process id.
pub const OBSERVER: u32 = u32::MAX;
/// Applications the fleet spreads over.
const APPS: usize = 5;

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
    api: Api,
    http: reqwest::Client,
    /// Fleet writes stop (heartbeats go on) once this is set: the quiet end of a run.
    pub writes_stopped: AtomicBool,
    /// Every task returns once this is set.
    pub stopped: AtomicBool,
    /// The observer reads every 100 ms until this time (µs), every 500 ms after it.
    pub observe_fast_until: AtomicU64,
    /// Every instance key ever registered, for the discoverers' single reads.
    keys: Mutex<Vec<String>>,
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
            api: Api::of(backend),
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

fn epoch_ms() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis())
}

/// One fleet member: an instance's client.
struct Member {
    process: u32,
    inst: Instance,
    serial: u32,
    /// Set once a registration of the current id was acknowledged.
    registered: bool,
    /// The node it talks to now.
    node: usize,
}

impl Member {
    fn op(&self, kind: Kind, invoke: Micros, a: &Answer, now: Micros) -> Op {
        Op {
            process: self.process,
            node: self.node as u8,
            kind,
            key: self.inst.key(),
            value: (kind == Kind::Register).then_some(self.inst.gen),
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
        let mut last = None;
        for _ in 0..s.bases.len() {
            let invoke = s.rec.now();
            let a = s.api.write(&s.http, &s.bases[self.node], kind, &mut self.inst, &s.timing).await;
            s.rec.push(self.op(kind, invoke, &a, s.rec.now()));
            let served = a.outcome == Outcome::Ok && !(kind == Kind::Cancel && a.status == 404);
            if served || s.stopped() {
                return a;
            }
            last = Some(a);
            self.node = (self.node + 1) % s.bases.len();
        }
        last.unwrap_or_else(Answer::failed)
    }

    async fn register(&mut self, s: &Shared) {
        if self.call(s, Kind::Register).await.outcome == Outcome::Ok {
            self.registered = true;
            if let Ok(mut keys) = s.keys.lock() {
                let key = self.inst.key();
                if keys.last() != Some(&key) {
                    keys.push(key);
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
        inst: Instance {
            app: format!("LAB-{}", process as usize % APPS),
            id: format!("lab-{process}-0"),
            gen: 1,
            up: true,
            dirty: epoch_ms(),
            lease: None,
        },
        serial: 0,
        registered: false,
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
                    m.inst.id = format!("lab-{process}-{}", m.serial);
                    (m.inst.gen, m.inst.up, m.registered, m.inst.dirty) = (1, true, false, epoch_ms());
                } else if roll < 0.10 {
                    m.inst.gen += 1;
                    m.inst.up = !m.inst.up;
                    m.inst.dirty = epoch_ms().max(m.inst.dirty + 1);
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
    let linearizable = s.backend.is_cp();
    let mut since = 0;
    while !s.stopped() {
        let roll: f64 = rng.gen();
        let key = s.keys.lock().ok().and_then(|k| (!k.is_empty()).then(|| k[rng.gen_range(0..k.len())].clone()));
        let (kind, key) = match (roll, key) {
            (r, _) if r < 0.15 => (Kind::ReadAll, String::new()),
            (r, _) if r < 0.30 => (Kind::ReadDelta, String::new()),
            (r, Some(key)) if r < 0.65 || !linearizable => (Kind::Read, key),
            (_, Some(key)) => (Kind::ReadLinearizable, key),
            (_, None) => (Kind::ReadAll, String::new()),
        };
        let invoke = s.rec.now();
        let a = s.api.read(&s.http, &base, kind, &key, &mut since).await;
        let served = a.outcome == Outcome::Ok;
        s.rec.push(Op {
            process,
            node: node as u8,
            kind,
            key,
            value: None,
            seen: (served && matches!(kind, Kind::Read | Kind::ReadLinearizable)).then_some(a.seen),
            listed: a.listed,
            invoke,
            complete: s.rec.now(),
            outcome: a.outcome,
            status: a.status,
        });
        tokio::time::sleep(Duration::from_millis(rng.gen_range(20..60))).await;
    }
}

/// One observer round: every node's full registry, read at the same moment. All the round's
/// ops carry the same invoke time, which is how checkers group them.
pub async fn observe_round(s: &Shared) {
    let invoke = s.rec.now();
    let reads = s.bases.iter().enumerate().map(|(i, base)| {
        let (api, http, base) = (s.api, s.http.clone(), base.clone());
        async move { (i, api.read(&http, &base, Kind::ReadAll, "", &mut 0).await) }
    });
    for (i, a) in futures_join(reads).await {
        s.rec.push(Op {
            process: OBSERVER,
            node: i as u8,
            kind: Kind::ReadAll,
            key: String::new(),
            value: None,
            seen: None,
            listed: a.listed,
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
