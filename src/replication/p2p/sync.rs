//! Start-up sync: before this node serves its registry as complete, it exchanges everything
//! with its peers: it adopts what each peer holds newer (copies and tombstones), and queues
//! for each peer what it holds newer itself (say, a change it acknowledged just before it
//! was stopped), by the same rule as anti-entropy.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::antientropy::{get, p2p_url, read_listing, reconcile};
use super::peer::PeerLink;
use super::P2pShared;
use crate::codec::{decode, json};
use crate::core::command::Command;
use crate::core::model::InstanceInfo;
use crate::replication::local::LocalNode;
use crate::replication::COMPLETE_HEADER;

/// Exchanges everything with one peer; returns how many items it listed and whether the peer
/// had finished its own start-up sync.
async fn exchange(local: &LocalNode, peer: &PeerLink, client: &reqwest::Client) -> Result<(usize, bool), String> {
    let Some(resp) = get(client, p2p_url(&peer.url, &["apps"])?).await? else {
        // Not a synod node: take its registry as Eureka's replicated registrations.
        return eureka_merge(local, peer, client).await;
    };
    let complete = is_complete(&resp);
    let listed = read_listing(resp, local.registry.now()).await?;
    reconcile(local, peer, None, &listed).await?;
    Ok((listed.len(), complete))
}

fn is_complete(resp: &reqwest::Response) -> bool {
    resp.headers().get(COMPLETE_HEADER).is_none_or(|v| v.as_bytes() != b"false")
}

/// A Netflix Eureka peer's registry (`GET /eureka/apps`), applied as Eureka applies
/// replicated registrations: the copy with the later `lastDirtyTimestamp` wins.
async fn eureka_merge(local: &LocalNode, peer: &PeerLink, client: &reqwest::Client) -> Result<(usize, bool), String> {
    let url = reqwest::Url::parse(&format!("{}/eureka/apps", peer.url)).map_err(|e| e.to_string())?;
    let resp = get(client, url).await?.ok_or("HTTP 404 Not Found")?;
    let complete = is_complete(&resp);
    let body =
        crate::replication::read_answer(resp, crate::replication::MAX_PEER_ANSWER).await.map_err(|e| e.to_string())?;
    let root = json::parse(&body).map_err(|e| e.0)?;
    let now = local.registry.now();
    let mut instances: Vec<InstanceInfo> = Vec::new();
    for app in array(&root["applications"]["application"]) {
        for v in array(&app["instance"]) {
            match decode::instance(v, now) {
                Ok(i) => instances.push(i),
                Err(e) => tracing::debug!(error = %e, "skipping an unreadable instance from a peer"),
            }
        }
    }
    let n = instances.len();
    let pending: Vec<_> = instances
        .into_iter()
        .map(|i| local.apply_queued(Command::Register { instance: Box::new(i), now, from_peer: true }).1)
        .collect();
    for d in pending {
        d.wait().await.map_err(|e| e.to_string())?;
    }
    Ok((n, complete))
}

fn array(v: &Value) -> Vec<&Value> {
    match v {
        Value::Array(items) => items.iter().collect(),
        Value::Null => Vec::new(),
        other => vec![other],
    }
}

/// Start-up: exchange with every peer until one with a complete registry answered, or every
/// peer answered but none was complete (the whole cluster is starting: nobody knows more
/// than its own disk), or `wait` passed. Only then is this node's registry served as
/// complete.
pub async fn initial(shared: Arc<P2pShared>, client: reqwest::Client, wait: Duration) {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let mut answered = 0;
        let mut got_complete = false;
        for peer in &shared.peers {
            match exchange(&shared.local, peer, &client).await {
                Ok((n, complete)) => {
                    answered += 1;
                    got_complete |= complete;
                    tracing::info!(peer = peer.id, items = n, complete, "exchanged registries with peer");
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
