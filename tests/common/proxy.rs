//! A loopback TCP proxy that a test can cut: while blocked it closes every open connection
//! and refuses new ones, as a network partition would.
#![allow(dead_code)]

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A running proxy to one target address.
pub struct Proxy {
    /// `127.0.0.1:PORT` to connect to instead of the target.
    pub addr: String,
    blocked: Arc<AtomicBool>,
    /// Node ids (`x-synod-node-id` of a connection's first request) whose connections are
    /// refused.
    blocked_nodes: Arc<Mutex<HashSet<String>>>,
    cut: watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Starts forwarding a fresh loopback port to `target`.
    pub async fn start(target: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        Self::start_on(listener, target)
    }

    /// Forwards connections accepted on `listener` to `target`.
    pub fn start_on(listener: TcpListener, target: String) -> Proxy {
        let addr = listener.local_addr().expect("proxy addr").to_string();
        let blocked = Arc::new(AtomicBool::new(false));
        let blocked_nodes: Arc<Mutex<HashSet<String>>> = Arc::default();
        let (cut, _) = watch::channel(0u64);
        let task = {
            let (blocked, cut, nodes) = (blocked.clone(), cut.clone(), blocked_nodes.clone());
            tokio::spawn(async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    if blocked.load(Ordering::SeqCst) {
                        continue; // dropped: the connection is closed at once
                    }
                    let target = target.clone();
                    let mut cut_rx = cut.subscribe();
                    let nodes = nodes.clone();
                    tokio::spawn(async move {
                        let refused: HashSet<String> = nodes.lock().unwrap().clone();
                        let mut head = Vec::new();
                        if !refused.is_empty() {
                            match read_head(&mut inbound).await {
                                Some(h) if sender(&h).is_some_and(|id| refused.contains(&id)) => return,
                                Some(h) => head = h,
                                None => return,
                            }
                        }
                        let Ok(mut outbound) = TcpStream::connect(&target).await else { return };
                        if outbound.write_all(&head).await.is_err() {
                            return;
                        }
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                            _ = cut_rx.changed() => {}
                        }
                    });
                }
            })
        };
        Proxy { addr, blocked, blocked_nodes, cut, task }
    }

    /// Refuses (true) or admits again (false) connections from synod node `id`, as a
    /// partition between that node and this proxy's target would.
    pub fn set_blocked_from(&self, id: u64, blocked: bool) {
        let mut nodes = self.blocked_nodes.lock().unwrap();
        if blocked {
            nodes.insert(id.to_string());
        } else {
            nodes.remove(&id.to_string());
        }
        drop(nodes);
        // Open connections are re-established and classified again.
        self.cut.send_modify(|n| *n += 1);
    }

    /// Cuts (true) or restores (false) the link.
    pub fn set_blocked(&self, blocked: bool) {
        self.blocked.store(blocked, Ordering::SeqCst);
        if blocked {
            self.cut.send_modify(|n| *n += 1);
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads a connection's first request head (bounded in size and time).
async fn read_head(inbound: &mut TcpStream) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let read = async {
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 64 * 1024 {
            let n = inbound.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        Some(())
    };
    tokio::time::timeout(Duration::from_secs(5), read).await.ok()??;
    Some(buf)
}

/// The `x-synod-node-id` header of a request head.
fn sender(head: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(head);
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case("x-synod-node-id").then(|| v.trim().to_string())
    })
}
