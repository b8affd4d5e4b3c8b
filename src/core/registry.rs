//! The thread-safe registry every backend drives: the state behind one lock, the response
//! cache invalidated under that lock, the clock, and the periodic decisions (eviction,
//! self-preservation) that need the current time.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::watch;

use super::cache::{Payload, ResponseCache};
use super::clock::Clock;
use super::command::Command;
use super::counters::{ChangeSlot, Counters};
use super::eviction::{self, EvictionClock};
use super::fragments::{AppsCodec, DeltaWindow, Fragments};
use super::model::InstanceKey;
use super::preservation::{self, PreservationConfig, PreservationStatus};
use super::state::{Applied, CoreConfig, PersistedEntry, RegistryState, RenewOutcome};

/// What a cached response shows.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ViewKind {
    Apps,
    Delta,
    /// The changes after a registry version (long-polled deltas): every waiter woken by one
    /// change shares one encoding.
    DeltaSince(u64),
    App(String),
    Vip(String),
    Svip(String),
}

/// Encoding of a cached response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    Json,
    Xml,
}

/// Key of a cached response.
pub type ViewKey = (ViewKind, Format);

/// Most cached payloads kept at once.
const CACHE_ENTRIES: usize = 2048;

/// The registry shared by the HTTP layer and the replication backend.
pub struct Registry {
    state: Mutex<RegistryState>,
    cache: ResponseCache<ViewKey>,
    /// Applications encoded for the full registry document.
    fragments: Fragments,
    clock: Arc<dyn Clock>,
    preservation: PreservationConfig,
    eviction_clock: Mutex<EvictionClock>,
    /// Last self-preservation state, to log transitions once.
    preserving: AtomicBool,
    /// Times self-preservation engaged since start.
    engagements: AtomicU64,
    /// Changes applied since start.
    counters: Counters,
    /// The registry version after every change, for waiters (long-polled deltas).
    version_tx: watch::Sender<u64>,
}

impl Registry {
    /// An empty registry.
    pub fn new(core: CoreConfig, preservation: PreservationConfig, clock: Arc<dyn Clock>) -> Self {
        Registry {
            state: Mutex::new(RegistryState::new(core)),
            cache: ResponseCache::new(CACHE_ENTRIES),
            fragments: Fragments::default(),
            clock,
            preservation,
            eviction_clock: Mutex::new(EvictionClock::default()),
            preserving: AtomicBool::new(false),
            engagements: AtomicU64::new(0),
            counters: Counters::default(),
            version_tx: watch::channel(0).0,
        }
    }

    /// Current time from the registry's clock.
    pub fn now(&self) -> u64 {
        self.clock.now_ms()
    }

    /// Loads persisted entries (each with a fresh lease from now), tombstones and the change
    /// counter.
    pub fn restore(&self, entries: Vec<PersistedEntry>, tombstones: Vec<(InstanceKey, u64)>, version: u64) {
        let now = self.now();
        let mut st = self.state.lock();
        st.restore(entries, tombstones, version, now);
        self.fragments.clear(self.cache.invalidate());
        self.version_tx.send_replace(st.version());
    }

    /// Replaces the whole registry (installing a replicated snapshot); see
    /// [`RegistryState::replace`]. `after` runs under the same lock.
    pub fn replace(&self, entries: Vec<PersistedEntry>, version: u64, after: impl FnOnce()) {
        let now = self.now();
        let mut st = self.state.lock();
        st.replace(entries, version, now);
        self.fragments.clear(self.cache.invalidate());
        self.version_tx.send_replace(st.version());
        after();
    }

    /// Grants every instance a fresh lease from now.
    pub fn refresh_leases(&self) {
        let now = self.now();
        self.state.lock().refresh_leases(now);
    }

    /// Applies a command, then runs `after` under the same lock (backends use it to hand the
    /// changed records to the store in apply order).
    pub fn apply<R>(&self, cmd: Command, after: impl FnOnce(&RegistryState, &Applied) -> R) -> (Applied, R) {
        let slot = ChangeSlot::of(&cmd);
        let mut st = self.state.lock();
        let applied = st.apply(cmd);
        self.counters.applied(slot, applied.outcome);
        if !applied.changed.is_empty() {
            let generation = self.cache.invalidate();
            for key in &applied.changed {
                self.fragments.touch(&key.app, generation);
            }
            self.version_tx.send_replace(st.version());
        }
        let r = after(&st, &applied);
        (applied, r)
    }

    /// Watches the registry version (the `versions__delta` of the next delta): it changes
    /// with every command that changed something.
    pub fn watch_version(&self) -> watch::Receiver<u64> {
        self.version_tx.subscribe()
    }

    /// Heartbeat at the current time.
    pub fn renew(&self, key: &InstanceKey, last_dirty: Option<u64>) -> RenewOutcome {
        let now = self.now();
        self.state.lock().renew(key, now, last_dirty)
    }

    /// Heartbeat at the current time, then `f` on the state under the same lock.
    pub fn renew_then<R>(&self, key: &InstanceKey, f: impl FnOnce(&RegistryState) -> R) -> (RenewOutcome, R) {
        let now = self.now();
        let mut st = self.state.lock();
        let outcome = st.renew(key, now, None);
        (outcome, f(&st))
    }

    /// Heartbeat received `age_ms` ago (relayed by another node). Counts for
    /// self-preservation like a direct one.
    pub fn renew_aged(&self, key: &InstanceKey, age_ms: u64) -> RenewOutcome {
        let at = self.now().saturating_sub(age_ms);
        self.state.lock().renew(key, at, None)
    }

    /// Runs `f` on the state.
    pub fn read<R>(&self, f: impl FnOnce(&RegistryState) -> R) -> R {
        f(&self.state.lock())
    }

    /// The fragment store, for tests that set its whole-document threshold.
    #[cfg(test)]
    pub(crate) fn fragments_mut(&mut self) -> &mut Fragments {
        &mut self.fragments
    }

    /// A cached payload that is current, if there is one; never waits.
    pub fn cached_now(&self, key: &ViewKey) -> Option<Arc<Payload>> {
        self.cache.get(key)
    }

    /// A payload reflecting every change made before the call: cached, shared with a
    /// caller building it, or built from `build` (run under the lock, should only clone
    /// `Arc`s) and `encode` (run outside it). `build` returning `None` (e.g. an unknown app)
    /// is not cached. May wait for another caller's build: call it where blocking is allowed.
    pub fn cached<V>(
        &self,
        key: ViewKey,
        build: impl FnOnce(&RegistryState, u64) -> Option<V>,
        encode: impl FnOnce(V) -> Vec<u8>,
    ) -> Option<Arc<Payload>> {
        self.cache.get_or_build(&key, || {
            let now = self.now();
            let (generation, view) = {
                let st = self.state.lock();
                (self.cache.generation(), build(&st, now))
            };
            Some((generation, Payload::new(encode(view?))))
        })
    }

    /// The full registry document (`GET apps`) in `fmt`, as [`Registry::cached`] serves
    /// it, built from per-application fragments so that only the applications changed
    /// since the last build are encoded again.
    pub fn cached_apps(&self, fmt: Format, codec: &AppsCodec) -> Arc<Payload> {
        self.built(&(ViewKind::Apps, fmt), || {
            let now = self.now();
            let plan = {
                let st = self.state.lock();
                self.fragments.plan(&st, fmt, self.cache.generation(), now)
            };
            let generation = plan.generation();
            (generation, self.fragments.finish(plan, fmt, codec, now))
        })
    }

    /// The delta (`GET apps/delta`) in `fmt`, as [`Registry::cached`] serves it, built from
    /// per-application parts so that only the applications whose part of the window
    /// changed are encoded again.
    pub fn cached_delta(&self, fmt: Format, codec: &AppsCodec) -> Arc<Payload> {
        self.built(&(ViewKind::Delta, fmt), || {
            let now = self.now();
            let (generation, window) = {
                let st = self.state.lock();
                (self.cache.generation(), DeltaWindow::of(&st, now))
            };
            let plan = self.fragments.plan_delta(&window, fmt);
            (generation, self.fragments.finish_delta(plan, fmt, codec, now))
        })
    }

    /// A payload for `key` from the cache, another caller's build, or `build`, which
    /// always yields one.
    fn built(&self, key: &ViewKey, build: impl FnOnce() -> (u64, Payload)) -> Arc<Payload> {
        let built = self.cache.get_or_build(key, || Some(build()));
        built.unwrap_or_else(|| Arc::new(Payload::new(Vec::new())))
    }

    /// Self-preservation numbers now.
    pub fn preservation(&self) -> PreservationStatus {
        let now = self.now();
        self.read(|st| preservation::evaluate(st, &self.preservation, now))
    }

    /// Instances removed by eviction on this node since start (every replica of a raft
    /// cluster counts the evictions it applies; a p2p node counts its own).
    pub fn evicted(&self) -> u64 {
        self.counters.evicted()
    }

    /// Changes applied on this node since start.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Times self-preservation engaged on this node since start.
    pub fn preservation_engagements(&self) -> u64 {
        self.engagements.load(Ordering::Relaxed)
    }

    /// One eviction run: decides whether eviction may proceed and, if so, which expired
    /// leases to evict. Returns the `Evict` command to submit, if any.
    pub fn plan_eviction(&self, interval_ms: u64) -> Option<Command> {
        let now = self.now();
        let compensation = self.eviction_clock.lock().compensation(now, interval_ms);
        let st = self.state.lock();
        let status = preservation::evaluate(&st, &self.preservation, now);
        if self.preserving.swap(status.active, Ordering::Relaxed) != status.active {
            if status.active {
                self.engagements.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    renews_last_min = status.renews_last_min,
                    threshold = status.threshold,
                    expected_renews_per_min = status.expected_renews_per_min,
                    "self-preservation engaged: renewals below threshold, eviction suspended"
                );
            } else {
                tracing::info!(
                    renews_last_min = status.renews_last_min,
                    threshold = status.threshold,
                    expected_renews_per_min = status.expected_renews_per_min,
                    "self-preservation released: eviction resumes"
                );
            }
        }
        if status.active {
            return None;
        }
        let keys = eviction::plan(&st, now, compensation, self.preservation.percent_threshold, &mut rand::thread_rng());
        (!keys.is_empty()).then_some(Command::Evict { keys, now })
    }
}
