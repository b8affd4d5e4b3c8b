//! Assembles a node from its configuration: store, registry, backend, HTTP server and the
//! periodic eviction task.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::auth::Auth;
use crate::config::{Config, Peer, ReplicationMode};
use crate::core::clock::{Clock, SystemClock};
use crate::core::preservation::PreservationConfig;
use crate::core::registry::Registry;
use crate::core::state::CoreConfig;
use crate::http::{serve, AppState, HttpService};
use crate::replication::outgoing::Outgoing;
use crate::replication::p2p::P2p;
use crate::replication::raft::RaftBackend;
use crate::replication::standalone::Standalone;
use crate::replication::{Origin, Replicator};
use crate::store::Store;
use crate::tls::Tls;

/// A running node's parts.
pub struct Node {
    pub registry: Arc<Registry>,
    pub replicator: Arc<dyn Replicator>,
    pub config: Config,
    /// Who may do what (reloaded on SIGHUP).
    pub auth: Arc<Auth>,
    /// The listener's and the peer clients' TLS, if configured (reloaded on SIGHUP).
    pub tls: Option<Arc<Tls>>,
}

impl Node {
    /// Opens the data dir, restores the registry and starts the backend. `config.listen`
    /// must be the bound address (a single raft node names itself by it).
    pub async fn open(config: Config, clock: Arc<dyn Clock>) -> anyhow::Result<Node> {
        let security = &config.security;
        let tls = match &security.tls {
            Some(files) => Some(Tls::load(files.clone()).map_err(anyhow::Error::msg)?),
            None => None,
        };
        let auth = Arc::new(
            Auth::load(
                security.auth_file.clone(),
                security.cluster_secret_file.clone(),
                tls.as_ref().is_some_and(|t| t.verifies_clients()),
            )
            .map_err(anyhow::Error::msg)?,
        );
        let outgoing = Outgoing::new(config.node_id, &auth, tls.as_ref()).map_err(anyhow::Error::msg)?;
        let registry = Arc::new(Registry::new(
            CoreConfig {
                delta_retention_ms: config.delta_retention.as_millis() as u64,
                delta_max_bytes: config.delta_max_bytes,
                // Only p2p nodes need tombstones: one node has no replica to resurrect from,
                // and raft's log orders every change.
                tombstone_retention_ms: match config.replication {
                    ReplicationMode::P2p => config.tombstone_retention.as_millis() as u64,
                    _ => 0,
                },
                max_tombstones: config.max_instances,
                digests: config.replication == ReplicationMode::P2p,
            },
            PreservationConfig {
                enabled: config.self_preservation,
                percent_threshold: config.renewal_percent_threshold,
                window_ms: config.renewal_threshold_update_interval.as_millis() as u64,
            },
            clock,
        ));
        let replicator: Arc<dyn Replicator> = match config.replication {
            ReplicationMode::None => {
                let store = Store::open_with(&config.data_dir.join("registry"), config.store_compact_bytes)?;
                Arc::new(Standalone::start(registry.clone(), store)?)
            }
            ReplicationMode::P2p => {
                let store = Store::open_with(&config.data_dir.join("registry"), config.store_compact_bytes)?;
                Arc::new(P2p::start(
                    registry.clone(),
                    store,
                    config.node_id,
                    &config.peers,
                    config.peer_sync_wait,
                    config.anti_entropy_interval,
                    &outgoing,
                )?)
            }
            ReplicationMode::Raft => {
                let mut members = config.peers.clone();
                if members.is_empty() {
                    members.push(Peer { id: config.node_id, url: format!("http://{}", config.listen) });
                }
                Arc::new(
                    RaftBackend::start(
                        registry.clone(),
                        &config.data_dir.join("raft"),
                        config.node_id,
                        members,
                        config.raft.clone(),
                        &outgoing,
                    )
                    .await?,
                )
            }
        };
        Ok(Node { registry, replicator, config, auth, tls })
    }

    /// The HTTP service for this node (`axum::serve(listener, node.http().into_make_service())`).
    pub fn http(&self) -> HttpService {
        self.http_with(crate::http::serve::Connections::new(self.config.max_connections))
    }

    /// [`Self::http`] with the listener's connection count.
    pub fn http_with(&self, connections: Arc<crate::http::serve::Connections>) -> HttpService {
        HttpService::new(AppState {
            registry: self.registry.clone(),
            replicator: self.replicator.clone(),
            node_id: self.config.node_id,
            started: std::time::Instant::now(),
            max_body_size: self.config.max_body_size,
            max_instances: self.config.max_instances,
            max_lease_secs: u32::try_from(self.config.max_lease_duration.as_secs()).unwrap_or(u32::MAX),
            body_timeout: self.config.body_timeout,
            connections,
            long_polls: Arc::new(tokio::sync::Semaphore::new(self.config.max_long_polls)),
            max_long_polls: self.config.max_long_polls,
            long_polls_refused: Arc::default(),
            http_metrics: Arc::default(),
            auth: self.auth.clone(),
        })
    }

    /// Starts the eviction task: every interval, if the backend lets this node evict and
    /// self-preservation allows it, evict a capped random choice of expired leases.
    pub fn spawn_eviction(&self) -> JoinHandle<()> {
        let registry = self.registry.clone();
        let replicator = self.replicator.clone();
        let interval = self.config.eviction_interval;
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                if !replicator.may_evict() {
                    continue;
                }
                let Some(cmd) = registry.plan_eviction(interval.as_millis() as u64) else { continue };
                match replicator.submit(cmd, Origin::Client).await {
                    Ok(outcome) => tracing::info!(?outcome, "evicted expired leases"),
                    Err(e) => tracing::warn!(error = %e, "eviction not applied"),
                }
            }
        })
    }
}

/// How long open requests may finish after a shutdown signal.
const DRAIN: Duration = Duration::from_secs(5);

/// Runs a node until Ctrl-C / SIGTERM.
pub async fn run(mut config: Config) -> anyhow::Result<()> {
    let listener =
        TcpListener::bind(config.listen).await.with_context(|| format!("cannot listen on {}", config.listen))?;
    config.listen = listener.local_addr()?;
    let node = Node::open(config, Arc::new(SystemClock)).await?;
    let eviction = node.spawn_eviction();
    let addr = listener.local_addr()?;
    tracing::info!(%addr, replication = node.replicator.name(), data_dir = %node.config.data_dir.display(), "synod started");
    let acceptor = match &node.tls {
        Some(tls) => Some(tokio_rustls::TlsAcceptor::from(tls.server_config().map_err(anyhow::Error::msg)?)),
        None => None,
    };
    // Tests and scripts read the bound address (with --listen …:0) from this line.
    println!("synod listening on {}://{addr}", if acceptor.is_some() { "https" } else { "http" });
    if node.auth.is_open() {
        tracing::warn!("no --auth-file: every request may change the registry");
    }
    if node.auth.peer_proof().secret {
        for p in node.config.peers.iter().filter(|p| p.id != node.config.node_id) {
            if p.url.starts_with("http://") && !loopback_url(&p.url) {
                tracing::warn!(
                    peer = p.id,
                    url = %p.url,
                    "the cluster secret travels to this member over plain HTTP, readable on the way; use https"
                );
            }
        }
    }
    let reload = tokio::spawn(reload_on_hangup(node.auth.clone(), node.tls.clone()));
    let max_connections = serve::fit_connections(node.config.max_connections, node.config.max_long_polls);
    let connections = serve::Connections::new(max_connections);
    let http = node.http_with(connections.clone());
    let timeouts = serve::HeadTimeouts { first: node.config.header_timeout, next: node.config.idle_timeout };
    serve::serve(listener, acceptor, http, connections, timeouts, shutdown_signal(), DRAIN).await;
    eviction.abort();
    reload.abort();
    tracing::info!("synod stopped");
    Ok(())
}

/// Whether an http(s) URL names a loopback host.
fn loopback_url(url: &str) -> bool {
    let host = url.split("://").nth(1).unwrap_or("").split('/').next().unwrap_or("");
    let host = host.rsplit_once(':').map_or(host, |(h, _)| h).trim_matches(['[', ']']);
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Reads the auth file and the TLS files again on every SIGHUP; a file that does not load
/// keeps the previous one and says why.
async fn reload_on_hangup(auth: Arc<Auth>, tls: Option<Arc<Tls>>) {
    #[cfg(unix)]
    {
        let Ok(mut hangups) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP; the auth and TLS files are read at start only");
            return;
        };
        while hangups.recv().await.is_some() {
            match auth.reload() {
                Ok(Some(users)) => tracing::info!(users, "auth file reloaded"),
                Ok(None) => {}
                Err(e) => tracing::error!(error = %e, "auth file not reloaded; the previous one stays in use"),
            }
            if let Some(tls) = &tls {
                match tls.reload() {
                    Ok(()) => tracing::info!("TLS certificates reloaded"),
                    Err(e) => tracing::error!(error = %e, "TLS files not reloaded; the previous ones stay in use"),
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (auth, tls);
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
