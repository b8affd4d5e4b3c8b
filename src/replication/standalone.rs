//! `--replication none`: one node whose registry is persisted in a local [`Store`]; a write
//! is acknowledged once it is durable (see [`LocalNode`]).

use std::sync::Arc;

use crate::core::command::{Command, Outcome};
use crate::core::model::InstanceKey;
use crate::core::registry::Registry;
use crate::core::state::RenewOutcome;
use crate::store::Store;

use super::local::LocalNode;
use super::{BoxFuture, Consistency, Origin, ReplicationError, Replicator, Role};

/// The single-node backend.
pub struct Standalone {
    local: LocalNode,
}

impl Standalone {
    /// Restores the registry from `store` and wraps both.
    pub fn start(registry: Arc<Registry>, store: Store) -> Result<Self, crate::store::StoreError> {
        Ok(Standalone { local: LocalNode::restore(registry, store)? })
    }
}

impl Replicator for Standalone {
    fn name(&self) -> &'static str {
        "none"
    }

    fn submit(&self, cmd: Command, _origin: Origin) -> BoxFuture<'_, Result<Outcome, ReplicationError>> {
        Box::pin(self.local.apply(cmd))
    }

    fn renew<'a>(
        &'a self,
        key: &'a InstanceKey,
        last_dirty: Option<u64>,
        _origin: Origin,
    ) -> BoxFuture<'a, Result<RenewOutcome, ReplicationError>> {
        Box::pin(async move { Ok(self.local.registry.renew(key, last_dirty)) })
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
        self.local.is_healthy()
    }

    fn role(&self) -> Role {
        Role::Standalone
    }

    fn expose_metrics(&self, e: &mut crate::metrics::Exposition<'_>) -> std::fmt::Result {
        self.local.expose_metrics(e)
    }
}
