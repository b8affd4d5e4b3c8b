//! `--replication none`: one node whose registry is persisted in a local [`Store`]. A write
//! is applied in memory, handed to the store under the registry lock (so the store sees
//! writes in apply order) and acknowledged once the store's group commit made it durable.

use std::sync::Arc;

use crate::core::command::{Command, Outcome};
use crate::core::model::InstanceKey;
use crate::core::registry::Registry;
use crate::core::state::RenewOutcome;
use crate::store::Store;

use super::{BoxFuture, Consistency, ReplicationError, Replicator, Role};

/// The single-node backend.
pub struct Standalone {
    registry: Arc<Registry>,
    store: Store,
}

impl Standalone {
    /// Restores the registry from `store` and wraps both.
    pub fn start(registry: Arc<Registry>, store: Store) -> Result<Self, crate::store::StoreError> {
        let restored = store.load()?;
        tracing::info!(instances = restored.entries.len(), version = restored.version, "registry restored from disk");
        registry.restore(restored.entries, restored.version);
        Ok(Standalone { registry, store })
    }
}

impl Replicator for Standalone {
    fn name(&self) -> &'static str {
        "none"
    }

    fn submit(&self, cmd: Command) -> BoxFuture<'_, Result<Outcome, ReplicationError>> {
        Box::pin(async move {
            let (applied, durable) = self.registry.apply(cmd, |st, applied| {
                if applied.changed.is_empty() {
                    return None;
                }
                let changes = applied.changed.iter().map(|k| (k, st.persisted_ref(k))).collect();
                Some(self.store.submit(changes, st.version()))
            });
            if let Some(durable) = durable {
                match durable.await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return Err(ReplicationError::Storage(e)),
                    Err(_) => return Err(ReplicationError::Storage("store writer stopped".into())),
                }
            }
            Ok(applied.outcome)
        })
    }

    fn renew(
        &self,
        key: InstanceKey,
        last_dirty: Option<u64>,
    ) -> BoxFuture<'_, Result<RenewOutcome, ReplicationError>> {
        Box::pin(async move { Ok(self.registry.renew(&key, last_dirty)) })
    }

    fn read_barrier(&self, _level: Consistency) -> BoxFuture<'_, Result<(), ReplicationError>> {
        // One node: everything acknowledged is already applied here.
        Box::pin(async { Ok(()) })
    }

    fn may_evict(&self) -> bool {
        true
    }

    fn is_ready(&self) -> bool {
        // Not ready while the disk refuses writes: nothing could be acknowledged.
        self.store.is_healthy()
    }

    fn role(&self) -> Role {
        Role::Standalone
    }
}
