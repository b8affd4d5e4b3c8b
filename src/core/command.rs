//! Registry commands: every change to the registry is one of these. A command carries its own
//! timestamp (`now`, milliseconds since the epoch, stamped once by the node that accepted the
//! request), so any replica that applies the same commands in the same order reaches the
//! same registry, delta queue and hash code. Renewals are deliberately not commands: they
//! only touch the lease table (see [`crate::core::state::RegistryState::renew`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::model::{InstanceInfo, InstanceKey, Status};
use super::state::PersistedEntry;

/// A deterministic registry change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// `POST apps/{app}`: register or re-register.
    Register {
        instance: Box<InstanceInfo>,
        now: u64,
        /// Replicated from a peer: skips the lease-exists status rule, as Eureka does.
        from_peer: bool,
    },
    /// `DELETE apps/{app}/{id}`.
    Cancel { key: InstanceKey, now: u64 },
    /// `PUT apps/{app}/{id}/status?value=S`: set a status override.
    SetStatusOverride { key: InstanceKey, status: Status, last_dirty: Option<u64>, now: u64 },
    /// `DELETE apps/{app}/{id}/status[?value=S]`: drop the override, leaving status `S`
    /// (default `UNKNOWN`, which makes the next heartbeat answer 404 so the client re-registers).
    DeleteStatusOverride { key: InstanceKey, status: Status, last_dirty: Option<u64>, now: u64 },
    /// `PUT apps/{app}/{id}/metadata?k=v`: merge server-side metadata.
    UpdateMetadata { key: InstanceKey, entries: BTreeMap<String, String>, now: u64 },
    /// Expired leases chosen by the eviction task.
    Evict { keys: Vec<InstanceKey>, now: u64 },
    /// Another node's copy of an instance (p2p): taken only if it ranks above this node's
    /// copy or tombstone (see [`crate::core::version`]), and then taken whole.
    Adopt { key: InstanceKey, replica: Replica, now: u64 },
}

/// One node's copy of an instance, as another node adopts it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Replica {
    /// The instance, with its version in `lastUpdatedTimestamp`, and when the sending node
    /// last saw it renewed: the adopted lease runs from there, so a copy passed between
    /// nodes never keeps an instance alive by itself.
    Live { entry: Box<PersistedEntry>, renewed: u64 },
    /// Deleted by the change with this version.
    Deleted { version: u64 },
}

impl Replica {
    /// The copy's place in last-writer-wins order.
    pub fn rank(&self) -> super::version::Rank {
        match self {
            Replica::Live { entry, .. } => super::version::Rank::live(&entry.info, &entry.metadata_override),
            Replica::Deleted { version } => super::version::Rank::deleted(*version),
        }
    }
}

impl Command {
    /// The command's own timestamp.
    pub fn now(&self) -> u64 {
        match self {
            Command::Register { now, .. }
            | Command::Cancel { now, .. }
            | Command::SetStatusOverride { now, .. }
            | Command::DeleteStatusOverride { now, .. }
            | Command::UpdateMetadata { now, .. }
            | Command::Evict { now, .. }
            | Command::Adopt { now, .. } => *now,
        }
    }

    /// Restamps the command (a raft leader stamps what it proposes with its own clock, so the
    /// log's timestamps come from one clock per term).
    pub fn set_now(&mut self, t: u64) {
        match self {
            Command::Register { now, .. }
            | Command::Cancel { now, .. }
            | Command::SetStatusOverride { now, .. }
            | Command::DeleteStatusOverride { now, .. }
            | Command::UpdateMetadata { now, .. }
            | Command::Adopt { now, .. } => *now = t,
            // An eviction's time is the decision's: it removes only registrations older
            // than it.
            Command::Evict { .. } => {}
        }
    }

    /// The instances the command may change.
    pub fn keys(&self) -> Vec<InstanceKey> {
        match self {
            Command::Register { instance, .. } => {
                vec![InstanceKey { app: instance.app.clone(), id: instance.instance_id.clone() }]
            }
            Command::Cancel { key, .. }
            | Command::SetStatusOverride { key, .. }
            | Command::DeleteStatusOverride { key, .. }
            | Command::UpdateMetadata { key, .. }
            | Command::Adopt { key, .. } => vec![key.clone()],
            Command::Evict { keys, .. } => keys.clone(),
        }
    }

    /// Short name for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Command::Register { .. } => "register",
            Command::Cancel { .. } => "cancel",
            Command::SetStatusOverride { .. } => "status",
            Command::DeleteStatusOverride { .. } => "delete-status",
            Command::UpdateMetadata { .. } => "metadata",
            Command::Evict { .. } => "evict",
            Command::Adopt { .. } => "adopt",
        }
    }
}

/// What applying a command did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// The command took effect (or was a no-op on an existing instance).
    Applied,
    /// The addressed instance does not exist.
    NotFound,
    /// Eviction: how many instances were removed.
    Evicted(usize),
    /// Refused because the result would exceed a limit (merged metadata too large).
    Rejected,
    /// An adopted copy was not newer than this node's (see [`Command::Adopt`]).
    Stale,
}
