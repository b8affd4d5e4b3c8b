//! Cluster formation without an extra step.
//!
//! A node that has never been part of a cluster (empty log, no vote) asks every other
//! configured member whether it already belongs to an initialized cluster. If one does,
//! this node waits for the leader to replicate to it (it was started late, or is being
//! added). Otherwise it initializes the cluster with the configured member list. Several
//! nodes doing so at once is safe because they all use the same list (openraft: identical
//! initial memberships elect one leader); a peer that reports a different list stops
//! initialization with an error instead of risking two clusters. A restarted node has a
//! log and a vote, so it never initializes again. `--raft-join` skips initialization.

use std::sync::Arc;
use std::time::Duration;

use openraft::error::{InitializeError, RaftError};

use super::member_map;
use super::rpc::{paths, InitState};
use super::RaftShared;

/// Starts the formation task.
pub fn spawn(shared: Arc<RaftShared>) {
    tokio::spawn(async move {
        if let Err(e) = form(&shared).await {
            tracing::error!(error = %e, "raft cluster formation stopped");
        }
    });
}

async fn form(shared: &RaftShared) -> anyhow::Result<()> {
    if shared.raft.is_initialized().await? {
        return follow_own_address(shared).await;
    }
    if shared.tuning.join {
        tracing::info!("raft: waiting to be added to a cluster (--raft-join)");
        return Ok(());
    }
    let mine: Vec<(u64, String)> = shared.configured.iter().map(|p| (p.id, p.url.clone())).collect();
    let mut delay = Duration::from_millis(200);
    loop {
        let mut mismatch = None;
        let mut existing = None;
        for p in shared.configured.iter().filter(|p| p.id != shared.id) {
            let resp =
                shared.client.get(format!("{}{}", p.url, paths::INIT)).timeout(Duration::from_secs(1)).send().await;
            let Ok(resp) = resp else { continue };
            let Ok(body) = crate::replication::read_answer(resp, crate::replication::MAX_SMALL_ANSWER).await else {
                continue;
            };
            let Ok(state) = serde_json::from_slice::<InitState>(&body) else { continue };
            if state.initialized {
                existing = Some(p.id);
                break;
            }
            let mut theirs = state.configured.clone();
            theirs.sort();
            let mut ours = mine.clone();
            ours.sort();
            if theirs != ours {
                mismatch = Some((p.id, theirs));
            }
        }
        if let Some(peer) = existing {
            tracing::info!(peer, "raft: a cluster already exists; waiting for its leader to replicate to this node");
            return Ok(());
        }
        if let Some((peer, theirs)) = mismatch {
            tracing::error!(
                peer,
                ?theirs,
                ours = ?mine,
                "raft: member lists differ between nodes; not initializing (start every node with the same --peer list)"
            );
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(10));
            continue;
        }
        return match shared.raft.initialize(member_map(&shared.configured)).await {
            Ok(()) => {
                tracing::info!(members = shared.configured.len(), "raft: cluster initialized");
                Ok(())
            }
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
            Err(e) => Err(e.into()),
        };
    }
}

/// A single-node cluster started without `--peer` names itself by its listen address; when
/// that changed since the last start (e.g. `--listen 127.0.0.1:0`), the membership follows.
/// Members of larger clusters change URLs through `synod cluster set-url`.
async fn follow_own_address(shared: &RaftShared) -> anyhow::Result<()> {
    let [me] = shared.configured.as_slice() else { return Ok(()) };
    if me.id != shared.id {
        return Ok(());
    }
    let wait = shared.raft.wait(Some(Duration::from_secs(30)));
    if wait.state(openraft::ServerState::Leader, "single node leads").await.is_err() {
        return Ok(());
    }
    let membership = shared.raft.metrics().borrow().membership_config.membership().clone();
    let alone = membership.voter_ids().count() == 1 && membership.get_node(&me.id).is_some();
    if alone && membership.get_node(&me.id).is_some_and(|n| n.url != me.url) {
        let nodes = std::collections::BTreeMap::from([(me.id, super::types::Member { url: me.url.clone() })]);
        shared.raft.change_membership(openraft::ChangeMembers::SetNodes(nodes), false).await?;
        tracing::info!(url = me.url, "raft: this single node's URL updated");
    }
    Ok(())
}
