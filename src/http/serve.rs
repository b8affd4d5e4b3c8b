//! The accept loop: HTTP/1.1 connections with a cap on how many are open and timeouts on
//! what a client may hold open, so that slow or idle sockets cannot starve the node of file
//! descriptors (a few hundred such connections once made `/healthz` time out).
//!
//! - At most `max_connections` are open; past it the loop stops accepting (new connections
//!   wait in the kernel's backlog) until one closes. Long polls hold a connection each, so
//!   they count against the cap.
//! - A new connection must deliver its first complete request head within `header_timeout`
//!   (Tomcat's `connectionTimeout`, which Eureka servers run with), and a kept-alive one its
//!   next head within `idle_timeout` of its previous response (Tomcat's `keepAliveTimeout`),
//!   else it is closed. Slow headers are covered by the same clocks, which start when the
//!   connection begins to wait for a head, and so is a client that stops reading its answer. One watchdog timer per connection keeps them, to
//!   within half a timeout: hyper's own header timer arms and drops a timer for every request,
//!   which cost a heartbeat ~10 % more instructions.
//! - Request bodies must arrive within the body timeout (applied where bodies are read).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
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

/// What the idle watchdog of one connection knows, in one word: handlers running (low 32
/// bits) and a progress count (high 32 bits) that moves when a handler returns, when a frame
/// of a response body is taken for writing, and when hyper is done with a body. One atomic
/// add per event; no clock is read on the request path.
struct Activity(AtomicU64);

const PROGRESS: u64 = 1 << 32;

impl Activity {
    fn started(&self) {
        self.0.fetch_add(1, Ordering::AcqRel);
    }

    fn handled(&self) {
        // One handler fewer, and progress.
        self.0.fetch_add(PROGRESS - 1, Ordering::AcqRel);
    }

    fn progressed(&self) {
        self.0.fetch_add(PROGRESS, Ordering::AcqRel);
    }

    /// Resolves once no handler has been running and nothing has moved for two consecutive
    /// checks half a timeout apart: the connection then waited between one and 1.5 timeouts
    /// for a request head (`first` before its first request, `next` after), or for a client
    /// that stopped reading its answer. A running handler (a long poll, a write waiting for
    /// its commit) is never cut: each bounds its own time.
    async fn idle_expired(&self, first: Duration, next: Duration) {
        let mut last = self.0.load(Ordering::Acquire);
        let mut quiet = 0;
        loop {
            let limit = if last < PROGRESS { first } else { next };
            tokio::time::sleep(limit / 2).await;
            let now = self.0.load(Ordering::Acquire);
            let idle = now & (PROGRESS - 1) == 0;
            quiet = if idle && now == last { quiet + 1 } else { 0 };
            if quiet >= 2 {
                return;
            }
            last = now;
        }
    }
}

/// A response body that tells the watchdog about the writing of the answer: a large answer
/// that is still being written is not an idle connection, and one the client stopped reading
/// is.
struct Tracked {
    body: axum::body::Body,
    activity: Arc<Activity>,
}

impl http_body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = std::pin::Pin::new(&mut self.body).poll_frame(cx);
        if matches!(polled, std::task::Poll::Ready(Some(Ok(_)))) {
            self.activity.progressed();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.activity.progressed();
    }
}

/// How long a connection may wait for a request head.
#[derive(Debug, Clone, Copy)]
pub struct HeadTimeouts {
    /// For the first request of a new connection.
    pub first: Duration,
    /// For each next request of a kept-alive connection.
    pub next: Duration,
}

/// Marks the requests of a TLS connection whose client presented a certificate that
/// `--tls-client-ca` verified.
#[derive(Debug, Clone, Copy)]
pub struct ClientCertificate;

/// Serves `service` on `listener` (over TLS with `tls`), with at most `connections`' cap open
/// at once and each closed when it waits for a request head (or a TLS handshake) longer than
/// `timeouts` allow, until `shutdown` resolves; then lets open requests finish for up to
/// `drain`.
pub async fn serve(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    service: HttpService,
    connections: Arc<Connections>,
    timeouts: HeadTimeouts,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) {
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    // No hyper header timer: the watchdog below covers it (see the module comment).
    http.header_read_timeout(None).keep_alive(true);
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
        let (service, http, watcher) = (service.clone(), http.clone(), graceful.watcher());
        match &tls {
            None => {
                tokio::spawn(async move {
                    serve_connection(stream, false, service, &http, watcher, timeouts).await;
                    drop(slot);
                });
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    // The handshake is bounded by the first-request clock: a client that
                    // opens a connection and never completes it holds a slot no longer.
                    match tokio::time::timeout(timeouts.first, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let cert = tls.get_ref().1.peer_certificates().is_some_and(|c| !c.is_empty());
                            serve_connection(tls, cert, service, &http, watcher, timeouts).await;
                        }
                        Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!("TLS handshake not completed in time"),
                    }
                    drop(slot);
                });
            }
        }
    }
    drop(listener);
    if tokio::time::timeout(drain, graceful.shutdown()).await.is_err() {
        tracing::debug!("connections still open after the drain period; closing them");
    }
}

/// Serves one connection until it ends, its client goes idle past `timeouts`, or the server
/// shuts down. `client_cert` marks every request of a connection whose client certificate
/// was verified.
async fn serve_connection<I>(
    io: I,
    client_cert: bool,
    service: HttpService,
    http: &hyper::server::conn::http1::Builder,
    watcher: hyper_util::server::graceful::Watcher,
    timeouts: HeadTimeouts,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity(AtomicU64::new(0)));
    let act = activity.clone();
    let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        act.started();
        let mut req = req.map(axum::body::Body::new);
        if client_cert {
            req.extensions_mut().insert(ClientCertificate);
        }
        let handled = tower::Service::call(&mut service.clone(), req);
        let activity = act.clone();
        async move {
            let resp = handled.await;
            activity.handled();
            resp.map(|r| r.map(|body| Tracked { body, activity }))
        }
    });
    let conn = watcher.watch(http.serve_connection(TokioIo::new(io), svc));
    tokio::select! {
        r = conn => if let Err(e) = r {
            tracing::trace!(error = %e, "connection ended with an error");
        },
        () = activity.idle_expired(timeouts.first, timeouts.next) => {
            tracing::trace!("connection closed: no request head in time");
        }
    }
}
