//! A node's own copy of the registry made durable: apply a command in memory and hand the
//! changed records to the [`Store`] under the registry lock (so the store sees changes in
//! apply order), then wait for the group commit. Shared by every backend that keeps the
//! registry itself (`none`, and each `p2p` node).

use std::sync::Arc;

use tokio::sync::oneshot;

use crate::core::command::{Command, Outcome};
use crate::core::registry::Registry;
use crate::store::{Change, Store, StoreError};

use super::ReplicationError;

/// A pending durability acknowledgement.
pub struct Durable(Option<oneshot::Receiver<Result<(), String>>>);

impl Durable {
    /// Resolves once the change is on disk.
    pub async fn wait(self) -> Result<(), ReplicationError> {
        match self.0 {
            None => Ok(()),
            Some(rx) => match rx.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(ReplicationError::Storage(e)),
                Err(_) => Err(ReplicationError::Storage("store writer stopped".into())),
            },
        }
    }
}

/// The registry plus its durable store.
pub struct LocalNode {
    pub registry: Arc<Registry>,
    store: Store,
}

impl LocalNode {
    /// Restores the registry from `store` (fresh leases, change counter) and wraps both.
    pub fn restore(registry: Arc<Registry>, store: Store) -> Result<Self, StoreError> {
        let restored = store.load()?;
        tracing::info!(
            instances = restored.entries.len(),
            tombstones = restored.tombstones.len(),
            version = restored.version,
            "registry restored from disk"
        );
        registry.restore(restored.entries, restored.tombstones, restored.version);
        Ok(LocalNode { registry, store })
    }

    /// Applies a command now; the returned [`Durable`] resolves once it is on disk. Several
    /// commands can be applied before waiting, so they share one group commit.
    pub fn apply_queued(&self, cmd: Command) -> (Outcome, Durable) {
        let (applied, rx) = self.registry.apply(cmd, |st, applied| {
            if applied.is_empty() {
                return None;
            }
            let instances = applied.changed.iter().map(|k| Change::Instance(k, st.persisted_ref(k)));
            let tombstones = applied.buried.iter().map(|k| Change::Tombstone(k, st.tombstones().get(k)));
            let changes = instances.chain(tombstones).collect();
            Some(self.store.submit(changes, st.version()))
        });
        (applied.outcome, Durable(rx))
    }

    /// Applies a command and waits until it is durable. A store that has failed refuses the
    /// command before it is applied, so memory does not run ahead of what a restart restores.
    pub async fn apply(&self, cmd: Command) -> Result<Outcome, ReplicationError> {
        if let Some(e) = self.store.failure() {
            return Err(ReplicationError::Storage(e.to_string()));
        }
        let (outcome, durable) = self.apply_queued(cmd);
        durable.wait().await?;
        Ok(outcome)
    }

    /// The store's figures, for `/metrics`.
    pub fn expose_metrics(&self, e: &mut crate::metrics::Exposition<'_>) -> std::fmt::Result {
        self.store.sync_stats().expose(self.is_healthy(), e)
    }

    /// Whether the store accepts writes.
    pub fn is_healthy(&self) -> bool {
        self.store.failure().is_none()
    }
}
