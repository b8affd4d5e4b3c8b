//! The accept loop: HTTP/1.1 connections with a cap on how many are open and timeouts on
//! what a client may hold open, so that slow or idle sockets cannot starve the node of file
//! descriptors (a few hundred such connections once made `/healthz` time out).
//!
//! - At most `max_connections` are open; past it the loop stops accepting (new connections
//!   wait in the kernel's backlog) until one closes. Long polls hold a connection each, so
//!   they count against the cap.
//! - A connection must deliver a complete request head within `idle_timeout` of opening or of
//!   its previous response, else it is closed: this is both the keep-alive idle timeout and
//!   the header-read timeout (hyper runs one timer from the moment it waits for a head, as
//!   Tomcat's `connectionTimeout` does for Eureka servers).
//! - Request bodies must arrive within the body timeout (applied where bodies are read).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::HttpService;

/// Room kept for everything but client connections: storage files, peer connections,
/// standard streams.
pub const RESERVED_FDS: u64 = 256;

/// Open client connections, for `/v1/status`.
#[derive(Debug)]
pub struct Connections {
    slots: Arc<Semaphore>,
    max: usize,
}

impl Connections {
    /// Room for `max` connections.
    pub fn new(max: usize) -> Arc<Connections> {
        Arc::new(Connections { slots: Arc::new(Semaphore::new(max)), max })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.max.saturating_sub(self.slots.available_permits())
    }

    /// The cap.
    pub fn max(&self) -> usize {
        self.max
    }
}

/// How many connections fit under the process's file-descriptor limit, after raising its
/// soft limit to the hard one (what a node serving many clients needs; systemd starts
/// services at 1024). Says so when `wanted` connections or `long_polls` do not fit.
pub fn fit_connections(wanted: usize, long_polls: usize) -> usize {
    let limit = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the file-descriptor limit; keeping --max-connections");
            return wanted;
        }
    };
    let room = limit.saturating_sub(RESERVED_FDS).max(16) as usize;
    let fitted = if wanted > room {
        tracing::warn!(
            fd_limit = limit,
            max_connections = wanted,
            "the file-descriptor limit leaves room for {room} connections only (after {RESERVED_FDS} for storage \
             and peers); serving at most {room}. Raise the limit (systemd: LimitNOFILE=, shell: ulimit -n) or \
             lower --max-connections"
        );
        room
    } else {
        wanted
    };
    if long_polls >= fitted {
        tracing::warn!(
            max_long_polls = long_polls,
            max_connections = fitted,
            "long polls could take every connection and lock out heartbeats; keep --max-long-polls well below \
             --max-connections"
        );
    }
    fitted
}

/// Serves `service` on `listener`, with at most `connections`' cap open at once and each
/// closed after `idle_timeout` without a request head, until `shutdown` resolves; then lets
/// open requests finish for up to `drain`.
pub async fn serve(
    listener: TcpListener,
    service: HttpService,
    connections: Arc<Connections>,
    idle_timeout: Duration,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) {
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(idle_timeout).keep_alive(true);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            s = connections.slots.clone().acquire_owned() => match s {
                Ok(s) => s,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors or a connection reset before accept: back off
                    // briefly instead of spinning.
                    tracing::debug!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let svc = service.clone();
        let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            tower::Service::call(&mut svc.clone(), req.map(axum::body::Body::new))
        });
        let conn = http.serve_connection(TokioIo::new(stream), svc);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::trace!(error = %e, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(drain, graceful.shutdown()).await.is_err() {
        tracing::debug!("connections still open after the drain period; closing them");
    }
}
