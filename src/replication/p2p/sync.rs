//! Pulling a peer's registry: at start-up, before this node serves its registry as complete,
//! and whenever a peer's link needs a full resync.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::P2pShared;
use crate::codec::{decode, json};
use crate::core::command::Command;
use crate::core::model::InstanceInfo;
use crate::replication::local::LocalNode;
use crate::replication::COMPLETE_HEADER;

/// A peer's registry as fetched.
pub struct PeerRegistry {
    pub instances: Vec<InstanceInfo>,
    /// The peer itself had finished its own start-up sync.
    pub complete: bool,
}

/// Fetches `GET {url}/eureka/apps` as a replicating peer (so an incomplete peer answers
/// too, saying so in a header).
pub async fn fetch(client: &reqwest::Client, url: &str, now: u64) -> Result<PeerRegistry, String> {
    let resp = client
        .get(format!("{url}/eureka/apps"))
        .header("accept", "application/json")
        .header("x-netflix-discovery-replication", "true")
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("HTTP {}", resp.status()));
    }
    let complete = resp.headers().get(COMPLETE_HEADER).is_none_or(|v| v.as_bytes() != b"false");
    let body =
        crate::replication::read_answer(resp, crate::replication::MAX_PEER_ANSWER).await.map_err(|e| e.to_string())?;
    let root = json::parse(&body).map_err(|e| e.0)?;
    let mut instances = Vec::new();
    for app in array(&root["applications"]["application"]) {
        for v in array(&app["instance"]) {
            match decode::instance(v, now) {
                Ok(i) => instances.push(i),
                Err(e) => tracing::debug!(error = %e, "skipping an unreadable instance from a peer"),
            }
        }
    }
    Ok(PeerRegistry { instances, complete })
}

fn array(v: &Value) -> Vec<&Value> {
    match v {
        Value::Array(items) => items.iter().collect(),
        Value::Null => Vec::new(),
        other => vec![other],
    }
}

/// Applies a peer's instances as replicated registrations: the copy with the later
/// `lastDirtyTimestamp` wins, as for any replicated register. Waits until durable.
pub async fn merge(local: &LocalNode, instances: Vec<InstanceInfo>) -> usize {
    let now = local.registry.now();
    let mut pending = Vec::with_capacity(instances.len());
    let n = instances.len();
    for i in instances {
        let (_, durable) = local.apply_queued(Command::Register { instance: Box::new(i), now, from_peer: true });
        pending.push(durable);
    }
    for d in pending {
        if let Err(e) = d.wait().await {
            tracing::warn!(error = %e, "instance pulled from a peer is not durable");
        }
    }
    n
}

/// Start-up: pull from every peer until one with a complete registry answered, or every
/// peer answered but none was complete (the whole cluster is starting: nobody knows more
/// than its own disk), or `wait` passed. Only then is this node's registry served as
/// complete.
pub async fn initial(shared: Arc<P2pShared>, client: reqwest::Client, wait: Duration) {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let mut answered = 0;
        let mut got_complete = false;
        for peer in &shared.peers {
            match fetch(&client, &peer.url, shared.local.registry.now()).await {
                Ok(reg) => {
                    answered += 1;
                    got_complete |= reg.complete;
                    let n = merge(&shared.local, reg.instances).await;
                    tracing::info!(peer = peer.id, instances = n, complete = reg.complete, "pulled registry from peer");
                }
                Err(e) => tracing::info!(peer = peer.id, error = %e, "peer not reachable for the start-up sync"),
            }
        }
        if got_complete || answered == shared.peers.len() {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!("start-up sync incomplete after the wait; serving this node's own registry");
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    shared.complete.store(true, Ordering::Release);
    tracing::info!(instances = shared.local.registry.read(|st| st.len()), "registry complete; serving");
}
