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
    /// Requests whose path starts with this reach the target, but their answers are dropped
    /// and the connection closed: the sender cannot tell whether they were carried out.
    lost_answers: Arc<Mutex<Option<String>>>,
    /// How many requests had their answers dropped.
    pub answers_lost: Arc<std::sync::atomic::AtomicU64>,
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
        let lost_answers: Arc<Mutex<Option<String>>> = Arc::default();
        let answers_lost: Arc<std::sync::atomic::AtomicU64> = Arc::default();
        let (cut, _) = watch::channel(0u64);
        let task = {
            let (blocked, cut, nodes) = (blocked.clone(), cut.clone(), blocked_nodes.clone());
            let (lost, counter) = (lost_answers.clone(), answers_lost.clone());
            tokio::spawn(async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    if blocked.load(Ordering::SeqCst) {
                        continue; // dropped: the connection is closed at once
                    }
                    let target = target.clone();
                    let mut cut_rx = cut.subscribe();
                    let nodes = nodes.clone();
                    let (lost, counter) = (lost.clone(), counter.clone());
                    tokio::spawn(async move {
                        let refused: HashSet<String> = nodes.lock().unwrap().clone();
                        let lose: Option<String> = lost.lock().unwrap().clone();
                        let mut head = Vec::new();
                        if !refused.is_empty() || lose.is_some() {
                            match read_head(&mut inbound).await {
                                Some(h) if sender(&h).is_some_and(|id| refused.contains(&id)) => return,
                                Some(h) => head = h,
                                None => return,
                            }
                        }
                        let Ok(mut outbound) = TcpStream::connect(&target).await else { return };
                        if lose.as_deref().is_some_and(|p| path(&head).starts_with(p)) {
                            counter.fetch_add(1, Ordering::SeqCst);
                            if outbound.write_all(&head).await.is_err() {
                                return;
                            }
                            // The rest of the request goes through; the first bytes of the
                            // answer end the connection instead.
                            let (mut from_target, mut to_target) = outbound.split();
                            let mut first = [0u8; 1];
                            tokio::select! {
                                _ = tokio::io::copy(&mut inbound, &mut to_target) => {}
                                _ = from_target.read(&mut first) => {}
                            }
                            return;
                        }
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
        Proxy { addr, blocked, blocked_nodes, lost_answers, answers_lost, cut, task }
    }

    /// Drops the answers to requests whose path starts with `prefix` (or stops, for `None`).
    pub fn lose_answers_to(&self, prefix: Option<&str>) {
        *self.lost_answers.lock().unwrap() = prefix.map(str::to_string);
        // Open connections are re-established and classified again.
        self.cut.send_modify(|n| *n += 1);
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

/// The path of a request head's request line.
fn path(head: &[u8]) -> String {
    let text = String::from_utf8_lossy(head);
    text.lines().next().and_then(|l| l.split_whitespace().nth(1)).unwrap_or_default().to_string()
}

/// The `x-synod-node-id` header of a request head.
fn sender(head: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(head);
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case("x-synod-node-id").then(|| v.trim().to_string())
    })
}
