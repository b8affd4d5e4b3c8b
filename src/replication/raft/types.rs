//! openraft type configuration and the log's own command model.
//!
//! Log entries carry [`Proposal`]s: batches of core [`Command`]s. The core command types are
//! plain structs and enums (no flatten, untagged or skipped fields), so they round-trip
//! through bincode; the Eureka JSON/XML shapes never enter the log.

use std::io::Cursor;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::core::command::{Command, Outcome};

/// A member of the raft group as the log records it: its id is the map key, this is how to
/// reach it. Changing the URL keeps the identity.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Base URL of the node's HTTP listener (the same listener serves the Eureka API, the
    /// raft RPCs and the admin API).
    pub url: String,
}

/// One log entry's payload: commands that arrived together, applied in order. Batching is
/// what makes the log fast: one append, one flush and one replication round per batch.
///
/// The commands sit behind an `Arc` because an entry is copied several times on its way (to
/// the log store's cache of recent entries, to each follower's replication stream); those
/// copies share one allocation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Proposal {
    pub commands: Arc<Vec<Command>>,
}

impl From<Vec<Command>> for Proposal {
    fn from(commands: Vec<Command>) -> Proposal {
        Proposal { commands: Arc::new(commands) }
    }
}

openraft::declare_raft_types!(
    /// The registry's raft types.
    pub TypeConfig:
        D = Proposal,
        R = Vec<Outcome>,
        NodeId = u64,
        Node = Member,
        SnapshotData = Cursor<Vec<u8>>,
);

/// Node id.
pub type NodeId = u64;
/// The raft handle.
pub type Raft = openraft::Raft<TypeConfig>;
/// A log entry.
pub type Entry = openraft::Entry<TypeConfig>;
/// A log id.
pub type LogId = openraft::LogId<NodeId>;
/// A vote.
pub type Vote = openraft::Vote<NodeId>;
/// Storage error.
pub type StorageError = openraft::StorageError<NodeId>;
/// Membership as stored with its log id.
pub type StoredMembership = openraft::StoredMembership<NodeId, Member>;
/// Snapshot metadata.
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, Member>;
/// Metrics.
pub type Metrics = openraft::RaftMetrics<NodeId, Member>;

/// bincode configuration for everything the backend stores or sends.
pub fn codec() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Encodes a value with bincode.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, bincode::error::EncodeError> {
    bincode::serde::encode_to_vec(value, codec())
}

/// Decodes a value encoded by [`encode`]; trailing bytes are an error.
pub fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, bincode::error::DecodeError> {
    let (value, used) = bincode::serde::decode_from_slice(bytes, codec())?;
    if used != bytes.len() {
        return Err(bincode::error::DecodeError::OtherString(format!("{} trailing bytes", bytes.len() - used)));
    }
    Ok(value)
}
