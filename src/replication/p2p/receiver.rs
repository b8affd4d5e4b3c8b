//! The batch endpoint, `POST {base}/peerreplication/batch/`: applies each item as a
//! replication (never forwarded again) and answers one status per item, in order.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use super::protocol::{self, Action, Item, ItemResult};
use super::P2pShared;
use crate::core::command::{Command, Outcome};
use crate::core::model::{InstanceKey, Status};
use crate::core::state::RenewOutcome;
use crate::core::views;
use crate::http::respond::error;
use crate::replication::local::Durable;

/// Handles one batch.
pub async fn batch(State(shared): State<Arc<P2pShared>>, body: Bytes) -> Response {
    let local = &shared.local;
    let now = local.registry.now();
    let items = match protocol::decode_batch(&body, now) {
        Ok(items) => items,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let mut results = Vec::with_capacity(items.len());
    let mut pending: Vec<Durable> = Vec::new();
    for item in items {
        let result = match item {
            Err(e) => {
                tracing::debug!(error = %e, "invalid replication item");
                ItemResult { status_code: 400, entity: None }
            }
            Ok(item) => apply(local, item, now, &mut pending),
        };
        results.push(result);
    }
    // Every item was applied in memory; answer once all of them are durable.
    for d in pending {
        if let Err(e) = d.wait().await {
            return error(StatusCode::SERVICE_UNAVAILABLE, e);
        }
    }
    ([(header::CONTENT_TYPE, "application/json")], protocol::encode_results(&results)).into_response()
}

fn code(outcome: Outcome) -> u16 {
    match outcome {
        Outcome::NotFound => 404,
        Outcome::Rejected => 400,
        Outcome::Applied | Outcome::Evicted(_) => 200,
    }
}

fn apply(local: &crate::replication::local::LocalNode, item: Item, now: u64, pending: &mut Vec<Durable>) -> ItemResult {
    let key = InstanceKey { app: item.app, id: item.id };
    let mut run = |cmd: Command| {
        let (outcome, durable) = local.apply_queued(cmd);
        pending.push(durable);
        ItemResult { status_code: code(outcome), entity: None }
    };
    match item.action {
        Action::Register => match item.instance {
            Some(instance) => run(Command::Register { instance, now, from_peer: true }),
            None => ItemResult { status_code: 400, entity: None },
        },
        Action::Cancel => run(Command::Cancel { key, now }),
        Action::StatusUpdate => match item.status {
            Some(status) => run(Command::SetStatusOverride { key, status, last_dirty: item.last_dirty_timestamp, now }),
            None => ItemResult { status_code: 400, entity: None },
        },
        Action::DeleteStatusOverride => run(Command::DeleteStatusOverride {
            key,
            status: item.status.unwrap_or(Status::Unknown),
            last_dirty: item.last_dirty_timestamp,
            now,
        }),
        Action::Heartbeat => match local.registry.renew(&key, item.last_dirty_timestamp) {
            RenewOutcome::Renewed => ItemResult { status_code: 200, entity: None },
            RenewOutcome::NotFound | RenewOutcome::ClientNewer => ItemResult { status_code: 404, entity: None },
            RenewOutcome::ServerNewer => {
                let entity = local.registry.read(|st| st.get(&key).map(views::instance));
                ItemResult { status_code: 409, entity }
            }
        },
    }
}
