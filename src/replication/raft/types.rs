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

/// bincode configuration for everything the backend stores or sends.
pub fn codec() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Encodes a value with bincode.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, bincode::error::EncodeError> {
    bincode::serde::encode_to_vec(value, codec())
}

/// Decodes a value encoded by [`encode`]; trailing bytes are an error.
///
/// Bytes come from the network and the disk, so a length prefix is never trusted: bincode
/// allocates a string's claimed length before reading it, and without a limit a 10-byte
/// message claiming 2^62 bytes aborts the process. The limit is a budget for everything the
/// decode claims, and bincode claims every value at its size in memory (8 bytes for a `u64`
/// written as one varint byte), so a registry snapshot claims more than its encoded size. So
/// the budget is [`DECODE_HEADROOM`] times the input, rounded up to the
/// next of a few tiers (a const generic, hence tiers, 4x apart, at least 1 MiB): a forged
/// length claims at most 4 × [`DECODE_HEADROOM`] times the input before the decode fails.
pub fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, bincode::error::DecodeError> {
    fn with<T: serde::de::DeserializeOwned, const N: usize>(
        bytes: &[u8],
    ) -> Result<(T, usize), bincode::error::DecodeError> {
        bincode::serde::decode_from_slice(bytes, codec().with_limit::<N>())
    }
    let budget = bytes.len().saturating_mul(DECODE_HEADROOM);
    let (value, used) = match budget {
        n if n <= 1 << 20 => with::<T, { 1 << 20 }>(bytes)?,
        n if n <= 1 << 22 => with::<T, { 1 << 22 }>(bytes)?,
        n if n <= 1 << 24 => with::<T, { 1 << 24 }>(bytes)?,
        n if n <= 1 << 26 => with::<T, { 1 << 26 }>(bytes)?,
        n if n <= 1 << 28 => with::<T, { 1 << 28 }>(bytes)?,
        n if n <= 1 << 30 => with::<T, { 1 << 30 }>(bytes)?,
        n if n <= 1 << 32 => with::<T, { 1 << 32 }>(bytes)?,
        n if n <= 1 << 34 => with::<T, { 1 << 34 }>(bytes)?,
        n if n <= 1 << 36 => with::<T, { 1 << 36 }>(bytes)?,
        n if n <= 1 << 38 => with::<T, { 1 << 38 }>(bytes)?,
        _ => with::<T, { 1 << 40 }>(bytes)?,
    };
    if used != bytes.len() {
        return Err(bincode::error::DecodeError::OtherString(format!("{} trailing bytes", bytes.len() - used)));
    }
    Ok(value)
}

/// How many times its encoded size a decoded value may claim in memory (see [`decode`]).
pub const DECODE_HEADROOM: usize = 16;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::model::InstanceKey;

    #[test]
    fn forged_lengths_are_refused_without_allocating_them() {
        // A renew relay whose first key claims 2^62 bytes of application name, and one
        // claiming 2^63 (which overflowed a capacity computation before).
        for body in [
            &b"\x01\xfd\x00\x00\x00\x00\x00\x00\x00\x40"[..],
            &b"\x01\xfd\x00\x00\x00\x00\x00\x00\x00\x80"[..],
            &b"\xfd\xff\xff\xff\xff\xff\xff\xff\xff"[..],
        ] {
            assert!(decode::<Vec<(InstanceKey, u64)>>(body).is_err());
            assert!(decode::<String>(body).is_err());
        }
    }

    /// Registry entries claim more than their encoded size (small integers are one varint
    /// byte, claimed at eight); a snapshot of a million instances failed to load at start-up
    /// with the limit at the input's size, so a restarted raft node never came back.
    #[test]
    fn values_larger_in_memory_than_encoded_decode() {
        let entry = crate::core::state::PersistedEntry {
            info: crate::core::tests::instance("app", "i"),
            registration_ts: 1,
            service_up_ts: 1,
            status_override: None,
            metadata_override: Default::default(),
        };
        let encoded = encode(&entry).expect("encode").len();
        // Just under 16 MiB encoded, more than that claimed.
        let entries = vec![entry; (1 << 24) / encoded - 1];
        let bytes = encode(&entries).expect("encode");
        let back = decode::<Vec<crate::core::state::PersistedEntry>>(&bytes).expect("decode");
        assert_eq!(back.len(), entries.len());
    }

    #[test]
    fn values_round_trip_at_every_tier() {
        for len in [0, 10, (1 << 20) + 1, (1 << 24) + 1] {
            let s = "x".repeat(len);
            let bytes = encode(&s).expect("encode");
            assert_eq!(decode::<String>(&bytes).expect("decode"), s);
        }
    }
}
