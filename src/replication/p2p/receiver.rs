//! The batch endpoint, `POST {base}/peerreplication/batch/`: applies each item as a
//! replication (never forwarded again) and answers one status per item, in order.
//!
//! Items from synod nodes carry versions: a copy or tombstone is adopted when it ranks above
//! what this node holds (200), and answered 409 when this node holds something newer, which
//! sends the sender to fetch it. Items from Netflix Eureka peers are applied by Eureka's
//! rules.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use super::protocol::{self, Action, Item, ItemResult};
use super::{copies, P2pShared};
use crate::core::command::{Command, Outcome};
use crate::core::model::{InstanceKey, Status};
use crate::core::state::RenewOutcome;
use crate::core::views;
use crate::replication::local::{Durable, LocalNode};
use crate::replication::refusal;

/// Handles one batch.
pub async fn batch(State(shared): State<Arc<P2pShared>>, body: Bytes) -> Response {
    let local = &shared.local;
    let now = local.registry.now();
    let items = match protocol::decode_batch(&body, now) {
        Ok(items) => items,
        Err(e) => return refusal(StatusCode::BAD_REQUEST, e),
    };
    let mut results = Vec::with_capacity(items.len());
    let mut pending: Vec<Durable> = Vec::new();
    for item in items {
        let result = match item {
            Err(e) => {
                tracing::debug!(error = %e, "invalid replication item");
                ItemResult::code(400)
            }
            Ok(item) => apply(local, item, now, &mut pending),
        };
        results.push(result);
    }
    // Every item was applied in memory; answer once all of them are durable.
    for d in pending {
        if let Err(e) = d.wait().await {
            return refusal(StatusCode::SERVICE_UNAVAILABLE, e);
        }
    }
    ([(header::CONTENT_TYPE, "application/json")], protocol::encode_results(&results)).into_response()
}

fn code(outcome: Outcome) -> u16 {
    match outcome {
        Outcome::NotFound => 404,
        Outcome::Rejected => 400,
        Outcome::Stale => 409,
        Outcome::Applied | Outcome::Evicted(_) => 200,
    }
}

/// A versioned heartbeat: renews the lease whatever the versions say (the instance is
/// alive), then compares the sender's version with this node's. Equal: 200. This node's
/// copy or tombstone is newer: 409, so the sender fetches it. Older or absent: 404, so the
/// sender sends its copy.
fn versioned_heartbeat(local: &LocalNode, key: &InstanceKey, version: u64) -> ItemResult {
    let (_, (mine, live)) = local.registry.renew_then(key, |st| match st.get(key) {
        Some(e) => (Some(e.info.last_updated_timestamp), true),
        None => (st.tombstones().get(key), false),
    });
    match mine {
        // On equal versions a deletion ranks above a copy.
        Some(v) if v > version || (v == version && !live) => newer_here(local, key),
        Some(v) if v == version => ItemResult::code(200),
        _ => ItemResult::code(404),
    }
}

/// 409 with what this node holds for `key`, for the sender to adopt.
fn newer_here(local: &LocalNode, key: &InstanceKey) -> ItemResult {
    let newer = local.registry.read(|st| copies::held(st, key));
    ItemResult { status_code: 409, entity: None, newer }
}

fn apply(local: &LocalNode, item: Item, now: u64, pending: &mut Vec<Durable>) -> ItemResult {
    let key = item.key();
    if let Some(v) = &item.synod {
        if item.action == Action::Heartbeat {
            return versioned_heartbeat(local, &key, v.version);
        }
        if let Some(replica) = item.replica() {
            let (outcome, durable) = local.apply_queued(Command::Adopt { key: key.clone(), replica, now });
            pending.push(durable);
            return match outcome {
                Outcome::Stale => newer_here(local, &key),
                other => ItemResult::code(code(other)),
            };
        }
    }
    let mut run = |cmd: Command| {
        let (outcome, durable) = local.apply_queued(cmd);
        pending.push(durable);
        ItemResult::code(code(outcome))
    };
    match item.action {
        Action::Register => match item.instance {
            Some(instance) => run(Command::Register { instance, now, from_peer: true }),
            None => ItemResult::code(400),
        },
        Action::Cancel => run(Command::Cancel { key, now }),
        Action::StatusUpdate => match item.status {
            Some(status) => run(Command::SetStatusOverride { key, status, last_dirty: item.last_dirty_timestamp, now }),
            None => ItemResult::code(400),
        },
        Action::DeleteStatusOverride => run(Command::DeleteStatusOverride {
            key,
            status: item.status.unwrap_or(Status::Unknown),
            last_dirty: item.last_dirty_timestamp,
            now,
        }),
        Action::Heartbeat => match local.registry.renew(&key, item.last_dirty_timestamp) {
            RenewOutcome::Renewed => ItemResult::code(200),
            RenewOutcome::NotFound | RenewOutcome::ClientNewer => ItemResult::code(404),
            RenewOutcome::ServerNewer => {
                let entity = local.registry.read(|st| st.get(&key).map(views::instance));
                ItemResult { status_code: 409, entity, newer: None }
            }
        },
    }
}
