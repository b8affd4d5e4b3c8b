//! One peer: its queue, its health figures, and the task that sends it batches.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;

use super::copies::{self, WireItem};
use super::protocol::{self, Action};
use super::queue::{PeerQueue, Pending};
use crate::core::command::Command;
use crate::core::model::InstanceKey;
use crate::replication::local::LocalNode;

/// Most items in one batch (Eureka's batch size).
const BATCH_SIZE: usize = 250;
/// How long the first item of a batch may wait for others to join it. Short, so a change is
/// visible on the peers well within a second (Eureka waits up to 500 ms, then its caches add
/// tens of seconds).
const BATCH_WINDOW: Duration = Duration::from_millis(10);
/// Most pending items per peer before the backlog is dropped for a resync.
const QUEUE_CAPACITY: usize = 100_000;
/// Retry pauses after a failed batch grow up to this.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

pub use crate::replication::PeerStatus;

/// The link to one peer.
pub struct PeerLink {
    pub id: u64,
    /// The peer's base URL (e.g. `http://10.0.0.2:8761`).
    pub url: String,
    queue: Mutex<PeerQueue>,
    wake: Notify,
    reachable: AtomicBool,
    last_success_ms: AtomicU64,
    /// Last anti-entropy round: (digests agreed, when).
    anti_entropy: Mutex<Option<(bool, u64)>>,
    /// Wakes this peer's anti-entropy task for a repair round now.
    repair: Notify,
    /// Counters and latencies of the link, for `/metrics`.
    pub stats: PeerStats,
}

/// What the link to one peer did since start.
#[derive(Debug)]
pub struct PeerStats {
    /// Time to send a batch and read the peer's answer (every attempt).
    pub batch_latency: crate::metrics::Histogram,
    /// Batches the peer accepted.
    pub batches_ok: AtomicU64,
    /// Attempts that failed in transit or with 5xx, and were kept for a retry.
    pub batches_retried: AtomicU64,
    /// Batches the peer refused outright (left to anti-entropy).
    pub batches_dropped: AtomicU64,
    /// Anti-entropy rounds whose digests agreed, and those that differed.
    pub rounds_agreed: AtomicU64,
    pub rounds_differed: AtomicU64,
    /// Instances adopted from the peer by anti-entropy and start-up sync, and queued for it.
    pub repairs_adopted: AtomicU64,
    pub repairs_sent: AtomicU64,
}

impl Default for PeerStats {
    fn default() -> Self {
        PeerStats {
            batch_latency: crate::metrics::Histogram::latency(),
            batches_ok: AtomicU64::new(0),
            batches_retried: AtomicU64::new(0),
            batches_dropped: AtomicU64::new(0),
            rounds_agreed: AtomicU64::new(0),
            rounds_differed: AtomicU64::new(0),
            repairs_adopted: AtomicU64::new(0),
            repairs_sent: AtomicU64::new(0),
        }
    }
}

fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

impl PeerLink {
    /// A link with an empty queue.
    pub fn new(id: u64, url: String) -> Self {
        PeerLink {
            id,
            url,
            queue: Mutex::new(PeerQueue::new(QUEUE_CAPACITY)),
            wake: Notify::new(),
            reachable: AtomicBool::new(false),
            last_success_ms: AtomicU64::new(0),
            anti_entropy: Mutex::new(None),
            repair: Notify::new(),
            stats: PeerStats::default(),
        }
    }

    /// Asks for an anti-entropy round against this peer now (one wake-up is kept if the
    /// task is busy, so a request during a round is served right after it).
    pub fn want_repair(&self) {
        self.repair.notify_one();
    }

    /// Resolves when a repair round is wanted.
    pub async fn repair_wanted(&self) {
        self.repair.notified().await
    }

    /// Records an anti-entropy round. Agreement also settles a dropped backlog: the peer has
    /// everything this node has.
    pub fn record_anti_entropy(&self, agreed: bool, now: u64) {
        *self.anti_entropy.lock() = Some((agreed, now));
        bump(if agreed { &self.stats.rounds_agreed } else { &self.stats.rounds_differed }, 1);
        if agreed {
            self.queue.lock().needs_resync = false;
        }
    }

    /// Queues an action for this peer.
    pub fn enqueue(&self, action: Action, key: InstanceKey) {
        let overflowed = self.queue.lock().push(action, key);
        self.wake.notify_one();
        if overflowed {
            // The dropped backlog is repaired by comparison, as soon as the peer answers.
            self.want_repair();
        }
    }

    /// Current health figures.
    pub fn status(&self) -> PeerStatus {
        let q = self.queue.lock();
        let ae = *self.anti_entropy.lock();
        PeerStatus {
            digests_agree: ae.map(|(agreed, _)| agreed),
            last_anti_entropy_ms: ae.map_or(0, |(_, at)| at),
            id: self.id,
            url: self.url.clone(),
            reachable: self.reachable.load(Ordering::Relaxed),
            queue_depth: q.len(),
            last_success_ms: self.last_success_ms.load(Ordering::Relaxed),
            needs_resync: q.needs_resync,
        }
    }

    fn batch_url(&self) -> String {
        format!("{}/eureka/peerreplication/batch/", self.url)
    }

    /// Sends batches to the peer for as long as the node runs.
    pub async fn run(self: Arc<Self>, local: Arc<LocalNode>, client: reqwest::Client) {
        let mut backoff = Duration::from_millis(100);
        loop {
            if self.queue.lock().is_empty() {
                self.wake.notified().await;
                continue;
            }
            tokio::time::sleep(BATCH_WINDOW).await;
            let pending = self.queue.lock().take(BATCH_SIZE);
            let items = build_items(&local, &pending);
            if items.is_empty() {
                continue;
            }
            let started = std::time::Instant::now();
            let sent = self.send(&client, &items, &local).await;
            self.stats.batch_latency.observe_duration(started.elapsed());
            match sent {
                Ok(results) => {
                    bump(&self.stats.batches_ok, 1);
                    if !self.reachable.swap(true, Ordering::Relaxed) {
                        // Back after a failure (or the first contact): whatever went wrong
                        // meanwhile, one round brings both sides up to date at once.
                        self.want_repair();
                    }
                    self.last_success_ms.store(local.registry.now(), Ordering::Relaxed);
                    backoff = Duration::from_millis(100);
                    self.handle_results(&local, &items, results).await;
                }
                Err(SendError::Retry(why)) => {
                    bump(&self.stats.batches_retried, 1);
                    if self.reachable.swap(false, Ordering::Relaxed) {
                        tracing::warn!(peer = self.id, url = %self.url, error = %why, "peer unreachable; retrying");
                    }
                    self.queue.lock().requeue_front(pending);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Err(SendError::Drop(why)) => {
                    bump(&self.stats.batches_dropped, 1);
                    tracing::error!(peer = self.id, error = %why, items = items.len(), "peer rejected a batch; dropped");
                    self.want_repair();
                }
            }
        }
    }

    async fn send(
        &self,
        client: &reqwest::Client,
        items: &[WireItem],
        local: &LocalNode,
    ) -> Result<Vec<protocol::Answer>, SendError> {
        let resp = client
            .post(self.batch_url())
            .header("content-type", "application/json")
            .header("accept", "application/json")
            .body(protocol::encode_batch(items))
            .send()
            .await
            .map_err(|e| SendError::Retry(e.to_string()))?;
        let status = resp.status();
        let body = crate::replication::read_answer(resp, crate::replication::MAX_SMALL_ANSWER)
            .await
            .map_err(|e| SendError::Retry(e.to_string()))?;
        if status.is_server_error() {
            return Err(SendError::Retry(format!("HTTP {status}")));
        }
        if !status.is_success() {
            return Err(SendError::Drop(format!("HTTP {status}: {}", String::from_utf8_lossy(&body))));
        }
        let results = protocol::decode_results(&body, local.registry.now()).map_err(|e| SendError::Drop(e.0))?;
        if results.len() != items.len() {
            return Err(SendError::Drop(format!("{} results for {} items", results.len(), items.len())));
        }
        Ok(results)
    }

    /// Reacts to per-item results: a heartbeat the peer could not apply (404) becomes a
    /// copy of the instance; a 409 carries what the peer holds that ranks higher, which this
    /// node adopts (a Netflix Eureka peer sends its newer copy, adopted by Eureka's rules).
    async fn handle_results(&self, local: &LocalNode, items: &[WireItem], answers: Vec<protocol::Answer>) {
        for ((item, _), answer) in items.iter().zip(answers) {
            match (item.action, answer.status_code, answer.entity, answer.newer) {
                (_, 200..=299, _, _) => {}
                (Action::Heartbeat, 404, _, _) => self.enqueue(Action::Register, item.key()),
                (_, 409, _, Some(newer)) => match newer.replica() {
                    Some(replica) => {
                        let cmd = Command::Adopt { key: newer.key(), replica, now: local.registry.now() };
                        if let Err(e) = local.apply(cmd).await {
                            tracing::warn!(peer = self.id, error = %e, "could not adopt the peer's newer copy");
                        }
                    }
                    None => self.want_repair(),
                },
                (_, 409, _, None) if item.synod.is_some() => self.want_repair(),
                (Action::Heartbeat, 409, Some(newer), None) => {
                    let now = local.registry.now();
                    let cmd = Command::Register { instance: Box::new(newer), now, from_peer: true };
                    if let Err(e) = local.apply(cmd).await {
                        tracing::warn!(peer = self.id, error = %e, "could not adopt the peer's newer copy");
                    }
                }
                (action, code, _, _) => {
                    tracing::debug!(peer = self.id, ?action, code, app = %item.app, id = %item.id, "peer did not apply item")
                }
            }
        }
    }
}

enum SendError {
    /// Transport failure or 5xx: keep the items and try again later.
    Retry(String),
    /// The peer refused the batch itself: retrying would fail the same way.
    Drop(String),
}

/// Reads the current state of each pending instance into versioned items: a whole copy for
/// a change, the version for a heartbeat, the tombstone for a cancel. Instances that are gone
/// by now are skipped (their cancel is queued behind), as are cancels of instances
/// registered again since (their copy is queued behind).
fn build_items(local: &LocalNode, pending: &[Pending]) -> Vec<WireItem> {
    local.registry.read(|st| {
        pending
            .iter()
            .filter_map(|p| match (p.action, st.get(&p.key)) {
                (Action::Cancel, None) => Some(match st.tombstones().get(&p.key) {
                    Some(v) => copies::tombstone(&p.key, v),
                    // Tombstones are not kept (`--tombstone-retention 0s`): Eureka's cancel.
                    None => copies::unversioned_cancel(&p.key),
                }),
                (Action::Cancel, Some(_)) => None,
                (Action::Heartbeat, Some(e)) => Some(copies::heartbeat(&p.key, e)),
                (action, Some(e)) => Some(copies::copy(action, &p.key, e)),
                (_, None) => None,
            })
            .collect()
    })
}
