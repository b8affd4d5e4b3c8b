//! A restored registry entering a raft cluster. `synod snapshot restore` leaves the backup as
//! a seed file in the raft directory; once this node leads its cluster, it proposes every
//! instance of the backup through the log (as `Adopt` commands, which take a copy whole and
//! are idempotent, so a restart half-way simply proposes them again), then removes the seed.
//! Until then the node does not report ready, so no client reads a half-restored registry.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use super::RaftShared;
use crate::core::command::{Command, Replica};

/// Name of the seed file in the raft directory.
pub const FILE: &str = "restore.synod";

/// Most proposals in flight at once while seeding.
const IN_FLIGHT: usize = 256;

/// Starts seeding from `path` if it exists; the node reports not ready until it is done.
pub fn spawn(shared: Arc<RaftShared>, path: PathBuf) {
    if !path.exists() {
        return;
    }
    shared.seeding.store(true, Ordering::Release);
    tokio::spawn(async move {
        loop {
            if shared.leads() {
                match seed(&shared, &path).await {
                    Ok(n) => {
                        shared.seeding.store(false, Ordering::Release);
                        tracing::info!(instances = n, "restored registry proposed through the raft log; seed removed");
                        return;
                    }
                    Err(e) => tracing::warn!(error = %e, "seeding the restored registry failed; retrying"),
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
}

async fn seed(shared: &RaftShared, path: &std::path::Path) -> anyhow::Result<usize> {
    let file = path.to_path_buf();
    let backup = tokio::task::spawn_blocking(move || {
        std::fs::read(&file).map_err(anyhow::Error::from).and_then(|b| Ok(crate::snapshot::read(&b)?))
    })
    .await??;
    let now = shared.registry.now();
    let cmds: Vec<Command> = backup
        .entries
        .into_iter()
        .map(|entry| Command::Adopt {
            key: entry.key(),
            replica: Replica::Live { entry: Box::new(entry), renewed: now },
            now,
        })
        .collect();
    let n = cmds.len();
    let mut results =
        futures::stream::iter(cmds.into_iter().map(|c| shared.proposer.submit(c))).buffer_unordered(IN_FLIGHT);
    while let Some(r) = results.next().await {
        r?;
    }
    std::fs::remove_file(path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(n)
}
