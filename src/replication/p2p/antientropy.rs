//! Anti-entropy, which Eureka lacks: every node periodically compares a digest of its
//! registry with each peer's and repairs the difference by pulling, so two nodes cannot
//! disagree forever after a partition, a dropped backlog or a lost batch.
//!
//! The digest holds one hash per application (over each instance's id, `lastDirtyTimestamp`,
//! status and override) and the recent cancellations and evictions ("tombstones", taken from
//! the delta queue: instances whose latest change is a deletion within the delta retention).
//! A round against one peer:
//! 1. the peer's tombstones remove local copies that are not newer than the deleted one;
//! 2. for each application whose hash differs, the peer's instances are fetched and every
//!    one that is newer there (by `lastDirtyTimestamp`; on a tie with a different status the
//!    lower node id wins) or missing here is registered here, unless a local tombstone
//!    says it was deleted at or after that version.
//!
//! Every node pulls from every peer, so repairs flow both ways; nothing is pushed, and
//! nothing pulled is replicated further.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::peer::PeerLink;
use super::P2pShared;
use crate::codec::{decode, json};
use crate::core::command::Command;
use crate::core::model::{ActionType, InstanceInfo, InstanceKey};
use crate::core::state::RegistryState;

/// A deleted instance and the version deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tombstone {
    pub app: String,
    pub id: String,
    pub dirty: u64,
}

/// A node's registry summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    /// Application → hash of its instances.
    pub apps: BTreeMap<String, String>,
    pub tombstones: Vec<Tombstone>,
}

/// FNV-1a: small, stable across builds and platforms (std's hasher is not guaranteed to be).
fn fnv(bytes: &[u8], mut h: u64) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// The digest of a registry at `now`.
pub fn digest(st: &RegistryState, now: u64) -> Digest {
    let apps = st
        .apps()
        .map(|(name, instances)| {
            let mut h = 0xcbf2_9ce4_8422_2325;
            for (id, e) in instances {
                let status = e.info.status.as_str();
                let ov = e.status_override.map_or("", |s| s.as_str());
                let line = format!("{id}\0{}\0{status}\0{ov}\n", e.info.last_dirty_timestamp);
                h = fnv(line.as_bytes(), h);
            }
            (name.clone(), format!("{h:016x}"))
        })
        .collect();
    Digest { apps, tombstones: tombstones(st, now) }
}

/// Instances whose latest change within the delta retention is a deletion, and that are not
/// registered again.
fn tombstones(st: &RegistryState, now: u64) -> Vec<Tombstone> {
    st.delta()
        .latest_per_instance(now, st.delta_retention_ms())
        .into_iter()
        .filter(|i| i.info.action_type == Some(ActionType::Deleted) && st.get(&i.key).is_none())
        .map(|i| Tombstone { app: i.key.app.clone(), id: i.key.id.clone(), dirty: i.info.last_dirty_timestamp })
        .collect()
}

/// Which of a peer's `instances` this node should adopt, decided on the registry as it is
/// now: those missing here or newer there (on a tie with a different status the lower node
/// id wins), unless this node deleted them at or after that version.
///
/// The tombstones are read from `st` in the same critical section as the decision: a cancel
/// that landed while the peer's list was being fetched must count, or the round registers
/// the cancelled instance again (and, being the newest change, it then spreads everywhere).
pub fn plan_pulls(
    st: &RegistryState,
    now: u64,
    peer_id: u64,
    self_id: u64,
    instances: Vec<InstanceInfo>,
) -> Vec<InstanceInfo> {
    let deleted: std::collections::HashMap<(String, String), u64> =
        tombstones(st, now).into_iter().map(|t| ((t.app, t.id), t.dirty)).collect();
    instances
        .into_iter()
        .filter(|i| {
            let key = InstanceKey { app: i.app.clone(), id: i.instance_id.clone() };
            if deleted.get(&(key.app.clone(), key.id.clone())).is_some_and(|d| *d >= i.last_dirty_timestamp) {
                return false;
            }
            match st.get(&key) {
                None => true,
                Some(e) => {
                    let mine = &e.info;
                    i.last_dirty_timestamp > mine.last_dirty_timestamp
                        || (i.last_dirty_timestamp == mine.last_dirty_timestamp
                            && (i.status != mine.status || i.overridden_status != mine.overridden_status)
                            && peer_id < self_id)
                }
            }
        })
        .collect()
}

/// Runs rounds against every peer, about every `interval`, for as long as the node runs.
/// Each wait is drawn between half and one and a half intervals, so nodes started together
/// do not run their rounds in lockstep (and pull the same stale copy from each other at the
/// same moment).
pub async fn run(shared: Arc<P2pShared>, client: reqwest::Client, interval: Duration, self_id: u64) {
    use rand::Rng;
    loop {
        // The first round waits too: the start-up sync has just pulled everything.
        let wait = interval.mul_f64(rand::thread_rng().gen_range(0.5..1.5));
        tokio::time::sleep(wait).await;
        for peer in &shared.peers {
            match round(&shared, peer, &client, self_id).await {
                Ok(agreed) => peer.record_anti_entropy(agreed, shared.local.registry.now()),
                Err(e) => tracing::debug!(peer = peer.id, error = %e, "anti-entropy round failed"),
            }
        }
    }
}

async fn get_json(client: &reqwest::Client, url: String) -> Result<Option<Value>, String> {
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
    let body =
        crate::replication::read_answer(resp, crate::replication::MAX_PEER_ANSWER).await.map_err(|e| e.to_string())?;
    json::parse(&body).map(Some).map_err(|e| e.0)
}

/// One round against one peer; returns whether the digests agreed before any repair.
async fn round(shared: &P2pShared, peer: &PeerLink, client: &reqwest::Client, self_id: u64) -> Result<bool, String> {
    let local = &shared.local;
    let theirs: Digest = match get_json(client, format!("{}/v1/p2p/digest", peer.url)).await? {
        Some(v) => serde_json::from_value(v).map_err(|e| e.to_string())?,
        None => return Err("peer has no digest endpoint".into()),
    };
    // 1. Deletions the peer saw.
    let stale: Vec<InstanceKey> = local.registry.read(|st| {
        theirs
            .tombstones
            .iter()
            .filter_map(|t| {
                let key = InstanceKey { app: t.app.clone(), id: t.id.clone() };
                st.get(&key).is_some_and(|e| e.info.last_dirty_timestamp <= t.dirty).then_some(key)
            })
            .collect()
    });
    let mut pending = Vec::new();
    for key in stale {
        let now = local.registry.now();
        pending.push(local.apply_queued(Command::Cancel { key, now }).1);
    }
    // 2. Applications that differ.
    let ours = local.registry.read(|st| digest(st, local.registry.now()));
    let agreed = ours.apps == theirs.apps;
    let differing: Vec<&String> =
        theirs.apps.iter().filter(|(app, h)| ours.apps.get(*app) != Some(h)).map(|(a, _)| a).collect();
    for app in differing {
        let Some(v) = get_json(client, format!("{}/eureka/apps/{app}", peer.url)).await? else { continue };
        let now = local.registry.now();
        let instances: Vec<InstanceInfo> = match &v["application"]["instance"] {
            Value::Array(items) => items.iter().filter_map(|i| decode::instance(i, now).ok()).collect(),
            _ => Vec::new(),
        };
        let pulls = local.registry.read(|st| plan_pulls(st, now, peer.id, self_id, instances));
        for i in pulls {
            tracing::debug!(peer = peer.id, app = %i.app, id = %i.instance_id, "anti-entropy: pulling newer copy");
            pending.push(local.apply_queued(Command::Register { instance: Box::new(i), now, from_peer: true }).1);
        }
    }
    for d in pending {
        d.wait().await.map_err(|e| e.to_string())?;
    }
    Ok(agreed)
}
