//! Anti-entropy, which Eureka lacks: every node periodically compares a digest of what it
//! holds with each peer's and repairs the difference, so two nodes cannot disagree forever
//! after a partition, a dropped backlog, a lost batch or a restart.
//!
//! The digest holds one hash per application over the rank (version, deletion,
//! fingerprint) of each of its instances and tombstones ([`Holdings::digest`]). For each
//! application whose hash differs, a round fetches the peer's listing of it, adopts every
//! copy or tombstone that ranks above its own ([`Command::Adopt`], the rule every path
//! shares), and queues for the peer what ranks above the peer's. One round against one peer
//! thus repairs both directions.
//!
//! Rounds run about every `--anti-entropy-interval`, jittered so nodes started together do
//! not act in lockstep; within a second after a round that failed (the peer is down or cut
//! off), so a peer is repaired as soon as it is back; and at once when a repair is wanted: a
//! peer answered a batch after being unreachable, refused one, or said it holds something
//! newer than what was sent.

use std::sync::Arc;
use std::time::Duration;

use super::copies::{self, Digest, Holdings};
use super::peer::PeerLink;
use super::protocol::{self, Item};
use super::P2pShared;
use crate::codec::json;
use crate::core::command::{Command, Outcome};
use crate::replication::local::LocalNode;

/// Shortest pause between two rounds against one peer, so a peer that keeps asking for
/// repairs cannot turn them into a busy loop.
const MIN_ROUND_GAP: Duration = Duration::from_millis(500);

/// How soon a round follows one that failed (and the first one): a peer that is down, cut
/// off or not started yet is repaired within about this long of coming back, even when no
/// batch is waiting to notice it.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Runs rounds against `peer` for as long as the node runs.
pub async fn run(shared: Arc<P2pShared>, peer: Arc<PeerLink>, client: reqwest::Client, interval: Duration) {
    use rand::Rng;
    let mut failed = true;
    loop {
        let wait = match failed {
            true => RETRY_AFTER.min(interval),
            false => interval.mul_f64(rand::thread_rng().gen_range(0.5..1.5)),
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = peer.repair_wanted() => {}
        }
        match round(&shared.local, &peer, &client).await {
            Ok(agreed) => {
                failed = false;
                peer.record_anti_entropy(agreed, shared.local.registry.now());
            }
            Err(e) => {
                failed = true;
                tracing::debug!(peer = peer.id, error = %e, "anti-entropy round failed");
            }
        }
        tokio::time::sleep(MIN_ROUND_GAP).await;
    }
}

/// GETs `url` as a replicating peer; `None` on 404.
pub async fn get(client: &reqwest::Client, url: reqwest::Url) -> Result<Option<reqwest::Response>, String> {
    let resp = client
        .get(url)
        .header("accept", "application/json")
        .header("x-netflix-discovery-replication", "true")
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if resp.status() == reqwest::StatusCode::NOT_FOUND {
        return Ok(None);
    }
    if !resp.status().is_success() {
        return Err(format!("HTTP {}", resp.status()));
    }
    Ok(Some(resp))
}

async fn body(resp: reqwest::Response) -> Result<bytes::Bytes, String> {
    crate::replication::read_answer(resp, crate::replication::MAX_PEER_ANSWER).await.map_err(|e| e.to_string())
}

/// `{base}/v1/p2p/{segments…}`, each segment percent-encoded.
pub fn p2p_url(base: &str, segments: &[&str]) -> Result<reqwest::Url, String> {
    let mut url = reqwest::Url::parse(base).map_err(|e| e.to_string())?;
    url.path_segments_mut()
        .map_err(|()| format!("{base} cannot be a base URL"))?
        .pop_if_empty()
        .extend(["v1", "p2p"].iter().chain(segments));
    Ok(url)
}

/// Reads a listing answer into its items; unreadable items are skipped (and logged).
pub async fn read_listing(resp: reqwest::Response, now: u64) -> Result<Vec<Item>, String> {
    let bytes = body(resp).await?;
    let items = protocol::decode_listing(&bytes, now).map_err(|e| e.0)?;
    Ok(items
        .into_iter()
        .filter_map(|i| i.map_err(|e| tracing::debug!(error = %e, "skipping an unreadable listed item")).ok())
        .collect())
}

/// One round against one peer; returns whether the digests agreed before any repair.
async fn round(local: &LocalNode, peer: &PeerLink, client: &reqwest::Client) -> Result<bool, String> {
    let Some(resp) = get(client, p2p_url(&peer.url, &["digest"])?).await? else {
        return Err("peer has no digest endpoint".into());
    };
    let theirs: Digest = serde_json::from_value(json::parse(&body(resp).await?).map_err(|e| e.0)?)
        .map_err(|e: serde_json::Error| e.to_string())?;
    let ours = local.registry.read(copies::digest);
    let differing = ours.differing(&theirs);
    let agreed = differing.is_empty();
    for app in differing {
        let listed = match theirs.apps.contains_key(app) {
            false => Vec::new(),
            true => match get(client, p2p_url(&peer.url, &["apps", app])?).await? {
                Some(resp) => read_listing(resp, local.registry.now()).await?,
                None => Vec::new(),
            },
        };
        reconcile(local, peer, Some(app), &listed).await?;
    }
    Ok(agreed)
}

/// Adopts what a peer listed (of `app`, or of everything) where it ranks above this node's,
/// then queues for the peer what ranks above the peer's; waits until the adopted copies are
/// durable.
pub async fn reconcile(local: &LocalNode, peer: &PeerLink, app: Option<&str>, listed: &[Item]) -> Result<(), String> {
    let now = local.registry.now();
    let mut pending = Vec::new();
    for item in listed {
        let Some(replica) = item.replica() else { continue };
        let key = item.key();
        let (outcome, durable) = local.apply_queued(Command::Adopt { key: key.clone(), replica, now });
        if outcome == Outcome::Applied {
            peer.stats.repairs_adopted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::debug!(peer = peer.id, %key, "adopted the peer's newer copy");
        }
        pending.push(durable);
    }
    let newer = local.registry.read(|st| Holdings::take(st, app)).newer_than(listed, now);
    peer.stats.repairs_sent.fetch_add(newer.len() as u64, std::sync::atomic::Ordering::Relaxed);
    for (action, key) in newer {
        peer.enqueue(action, key);
    }
    for d in pending {
        d.wait().await.map_err(|e| e.to_string())?;
    }
    Ok(())
}
