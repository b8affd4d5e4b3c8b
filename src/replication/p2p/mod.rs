//! `--replication p2p`: Eureka-style peer-to-peer replication (AP). Every node accepts
//! writes, applies them locally (durably, in its own store), and replicates them to every
//! peer in batches over Eureka's peer replication endpoint; items received from a peer are
//! applied but never forwarded (a full mesh, one hop). Evictions are not replicated: each
//! node evicts on its own numbers, counting direct and replicated renewals alike.
//!
//! Peers are known by node id and URL (`--peer ID=URL`), so several nodes on one host
//! replicate to each other, which Eureka's host-name self-detection prevents.
//!
//! Nodes agree by last-writer-wins on each instance's version ([`crate::core::version`]):
//! every change is stamped by the node that accepts it, cancels leave durable tombstones,
//! and batches, anti-entropy and start-up sync all adopt another node's copy only when it
//! ranks above their own ([`Command::Adopt`]).
//!
//! A renew on this node: [`P2p::renew`] renews the local lease and queues a `Heartbeat` for
//! every peer; a peer's heartbeat arrives through [`receiver::batch`].

pub mod antientropy;
pub mod copies;
pub mod peer;
pub mod protocol;
pub mod queue;
pub mod receiver;
pub mod sync;

#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Json;
use axum::Router;

use crate::config::Peer;
use crate::core::command::{Command, Outcome};
use crate::core::model::InstanceKey;
use crate::core::registry::Registry;
use crate::core::state::RenewOutcome;
use crate::store::{Store, StoreError};

use super::local::LocalNode;
use super::{BoxFuture, Consistency, Origin, ReplicationError, Replicator, Role, COMPLETE_HEADER};
use copies::Holdings;
use peer::{PeerLink, PeerStatus};
use protocol::Action;

/// Largest accepted replication batch body: 250 items of at most ~100 KiB each fit.
const BATCH_BODY_LIMIT: usize = 32 * 1024 * 1024;

/// State shared by the backend, its sender tasks and the batch endpoint.
pub struct P2pShared {
    pub local: Arc<LocalNode>,
    pub peers: Vec<Arc<PeerLink>>,
    /// Set once the start-up sync finished; until then the registry is not served as complete.
    pub complete: AtomicBool,
}

/// The p2p backend.
pub struct P2p {
    shared: Arc<P2pShared>,
}

impl P2p {
    /// Restores this node's registry from its store and starts one sender per peer
    /// (`members` lists every node, this one included). Must run inside a tokio runtime.
    pub fn start(
        registry: Arc<Registry>,
        store: Store,
        self_id: u64,
        members: &[Peer],
        sync_wait: Duration,
        anti_entropy_interval: Duration,
        outgoing: &crate::replication::outgoing::Outgoing,
    ) -> Result<Self, StoreError> {
        let local = Arc::new(LocalNode::restore(registry, store)?);
        let peers: Vec<Arc<PeerLink>> =
            members.iter().filter(|p| p.id != self_id).map(|p| Arc::new(PeerLink::new(p.id, p.url.clone()))).collect();
        let client =
            outgoing.builder().timeout(Duration::from_secs(5)).build().map_err(|e| {
                StoreError::Io(std::io::Error::other(format!("cannot build the peer HTTP client: {e}")))
            })?;
        for p in &peers {
            tokio::spawn(p.clone().run(local.clone(), client.clone()));
        }
        tracing::info!(self_id, peers = peers.len(), "p2p replication started");
        let shared = Arc::new(P2pShared { local, peers, complete: AtomicBool::new(false) });
        tokio::spawn(sync::initial(shared.clone(), client.clone(), sync_wait));
        for p in &shared.peers {
            tokio::spawn(antientropy::run(shared.clone(), p.clone(), client.clone(), anti_entropy_interval));
        }
        Ok(P2p { shared })
    }

    fn replicate(&self, action: Action, key: &InstanceKey) {
        for p in &self.shared.peers {
            p.enqueue(action, key.clone());
        }
    }
}

/// `GET /v1/p2p/digest`: this node's registry digest, for the peers' anti-entropy.
async fn digest(State(shared): State<Arc<P2pShared>>) -> Json<copies::Digest> {
    Json(shared.local.registry.read(copies::digest))
}

/// `GET /v1/p2p/apps[/{app}]`: every copy and tombstone this node holds (of one
/// application), as versioned items, for the peers' anti-entropy and start-up sync.
fn listing(shared: &P2pShared, app: Option<&str>) -> Response {
    let holdings = shared.local.registry.read(|st| Holdings::take(st, app));
    let complete = if shared.complete.load(Ordering::Acquire) { "true" } else { "false" };
    (
        [(header::CONTENT_TYPE, "application/json"), (header::HeaderName::from_static(COMPLETE_HEADER), complete)],
        protocol::encode_batch(&holdings.items()),
    )
        .into_response()
}

async fn list_all(State(shared): State<Arc<P2pShared>>) -> Response {
    listing(&shared, None)
}

async fn list_app(State(shared): State<Arc<P2pShared>>, Path(app): Path<String>) -> Response {
    listing(&shared, Some(&app.to_ascii_uppercase()))
}

/// The links' figures, one series per peer (`peer` is its node id).
fn expose_peers(peers: &[Arc<PeerLink>], e: &mut crate::metrics::Exposition<'_>) -> std::fmt::Result {
    let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let statuses: Vec<(String, PeerStatus, &PeerLink)> =
        peers.iter().map(|p| (p.id.to_string(), p.status(), p.as_ref())).collect();
    let each = || statuses.iter().map(|(id, st, link)| (id.as_str(), st, &link.stats));
    e.gauges(
        "synod_p2p_peer_reachable",
        "1 if the last batch reached the peer.",
        each().map(|(id, st, _)| ([("peer", id)], i64::from(st.reachable))),
    )?;
    e.gauges(
        "synod_p2p_queue_depth",
        "Changes and heartbeats queued for the peer.",
        each().map(|(id, st, _)| ([("peer", id)], st.queue_depth as i64)),
    )?;
    e.gauges(
        "synod_p2p_needs_resync",
        "1 after the peer's queue overflowed, until anti-entropy finds both registries agree.",
        each().map(|(id, st, _)| ([("peer", id)], i64::from(st.needs_resync))),
    )?;
    e.histograms(
        "synod_p2p_batch_duration_seconds",
        "Time to send a replication batch and read the peer's answer.",
        each().map(|(id, _, s)| ([("peer", id)], &s.batch_latency)),
    )?;
    e.counters(
        "synod_p2p_batches",
        "Replication batches by result: ok, retried (transport failure or 5xx), dropped (refused).",
        each().flat_map(|(id, _, s)| {
            [("ok", &s.batches_ok), ("retried", &s.batches_retried), ("dropped", &s.batches_dropped)]
                .map(|(result, c)| ([("peer", id), ("result", result)], load(c)))
        }),
    )?;
    e.counters(
        "synod_p2p_anti_entropy_rounds",
        "Anti-entropy rounds by whether the registry digests agreed.",
        each().flat_map(|(id, _, s)| {
            [("agreed", &s.rounds_agreed), ("differed", &s.rounds_differed)]
                .map(|(result, c)| ([("peer", id), ("result", result)], load(c)))
        }),
    )?;
    e.counters(
        "synod_p2p_anti_entropy_repairs",
        "Instances repaired by anti-entropy and start-up sync: adopted from the peer, or sent to it.",
        each().flat_map(|(id, _, s)| {
            [("adopted", &s.repairs_adopted), ("sent", &s.repairs_sent)]
                .map(|(direction, c)| ([("peer", id), ("direction", direction)], load(c)))
        }),
    )
}

/// What a locally accepted command tells the peers. Evictions tell them nothing.
fn replicated(cmd: &Command) -> Option<(Action, InstanceKey)> {
    match cmd {
        Command::Register { instance, .. } => {
            Some((Action::Register, InstanceKey { app: instance.app.clone(), id: instance.instance_id.clone() }))
        }
        Command::Cancel { key, .. } => Some((Action::Cancel, key.clone())),
        Command::SetStatusOverride { key, .. } => Some((Action::StatusUpdate, key.clone())),
        Command::DeleteStatusOverride { key, .. } => Some((Action::DeleteStatusOverride, key.clone())),
        // Metadata travels as a register carrying the whole current instance, as in Eureka.
        Command::UpdateMetadata { key, .. } => Some((Action::Register, key.clone())),
        Command::Evict { .. } | Command::Adopt { .. } => None,
    }
}

impl Replicator for P2p {
    fn name(&self) -> &'static str {
        "p2p"
    }

    fn submit(&self, cmd: Command, origin: Origin) -> BoxFuture<'_, Result<Outcome, ReplicationError>> {
        Box::pin(async move {
            let target = if origin == Origin::Client { replicated(&cmd) } else { None };
            let outcome = self.shared.local.apply(cmd).await?;
            if let (Some((action, key)), Outcome::Applied) = (target, outcome) {
                self.replicate(action, &key);
            }
            Ok(outcome)
        })
    }

    fn renew<'a>(
        &'a self,
        key: &'a InstanceKey,
        last_dirty: Option<u64>,
        origin: Origin,
    ) -> BoxFuture<'a, Result<RenewOutcome, ReplicationError>> {
        Box::pin(async move {
            let outcome = self.shared.local.registry.renew(key, last_dirty);
            if origin == Origin::Client && matches!(outcome, RenewOutcome::Renewed | RenewOutcome::ServerNewer) {
                self.replicate(Action::Heartbeat, key);
            }
            Ok(outcome)
        })
    }

    fn read_barrier(&self, _level: Consistency) -> BoxFuture<'_, Result<(), ReplicationError>> {
        // AP: every read is local; there is no cluster-wide order to wait for.
        Box::pin(async { Ok(()) })
    }

    fn may_evict(&self) -> bool {
        true
    }

    fn is_ready(&self) -> bool {
        self.shared.local.is_healthy() && self.registry_complete()
    }

    fn registry_complete(&self) -> bool {
        self.shared.complete.load(Ordering::Acquire)
    }

    fn role(&self) -> Role {
        Role::Peer
    }

    fn peers(&self) -> Vec<PeerStatus> {
        self.shared.peers.iter().map(|p| p.status()).collect()
    }

    fn expose_metrics(&self, e: &mut crate::metrics::Exposition<'_>) -> std::fmt::Result {
        self.shared.local.expose_metrics(e)?;
        e.gauge(
            "synod_p2p_registry_complete",
            "1 once the start-up sync finished and the registry is served as complete.",
            i64::from(self.registry_complete()),
        )?;
        expose_peers(&self.shared.peers, e)
    }

    fn routes(&self) -> Router {
        Router::new()
            .route("/eureka/peerreplication/batch", post(receiver::batch))
            .route("/eureka/peerreplication/batch/", post(receiver::batch))
            .route("/eureka/v2/peerreplication/batch", post(receiver::batch))
            .route("/eureka/v2/peerreplication/batch/", post(receiver::batch))
            .route("/v1/p2p/digest", get(digest))
            .route("/v1/p2p/apps", get(list_all))
            .route("/v1/p2p/apps/{app}", get(list_app))
            // A batch carries up to 250 whole instances, far more than one registration, so
            // it gets its own body limit (the inner limit wins over the server-wide one).
            .layer(DefaultBodyLimit::max(BATCH_BODY_LIMIT))
            .with_state(self.shared.clone())
    }
}
