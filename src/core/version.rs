//! The per-instance version that orders every change to an instance, and the
//! last-writer-wins rule replicas use to agree on one copy (p2p).
//!
//! An instance's version is its `lastUpdatedTimestamp`: the server time of its last change,
//! stamped by the node that accepted the change as `max(now, previous + 1)`, so a change made
//! after another one was seen always ranks above it, whatever the clocks say. A deletion's
//! version is kept in a tombstone. Two copies are ordered by version; on equal versions a
//! deletion wins, then the larger content fingerprint: every replica picks the same winner
//! from the same two copies, so they converge whatever order copies arrive in.

use std::collections::BTreeMap;

use super::model::{InstanceInfo, Status};

/// The version a change of an instance gets at `now`, when the instance's (or its
/// tombstone's) current version is `previous`.
pub fn next(previous: Option<u64>, now: u64) -> u64 {
    previous.map_or(now, |p| now.max(p.saturating_add(1)))
}

/// A copy's place in last-writer-wins order (greater wins).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Rank {
    pub version: u64,
    pub deleted: bool,
    pub fingerprint: u64,
}

impl Rank {
    /// The rank of a live copy.
    pub fn live(info: &InstanceInfo, metadata_override: &BTreeMap<String, String>) -> Rank {
        Rank { version: info.last_updated_timestamp, deleted: false, fingerprint: fingerprint(info, metadata_override) }
    }

    /// The rank of a deletion.
    pub fn deleted(version: u64) -> Rank {
        Rank { version, deleted: true, fingerprint: 0 }
    }
}

/// FNV-1a: small, and stable across builds and platforms (std's hasher is not guaranteed to
/// be), as hashes compared between nodes must be.
pub fn fnv(bytes: &[u8], mut h: u64) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// FNV-1a's starting value.
pub const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

/// A hash of what a change can make differ between two copies of one version: status,
/// override, the client's dirty time, address and metadata. Only fields that survive the
/// JSON round trip between nodes unchanged take part.
pub fn fingerprint(info: &InstanceInfo, metadata_override: &BTreeMap<String, String>) -> u64 {
    let mut h = FNV_START;
    let status = |s: Status| s.as_str().as_bytes();
    for part in
        [status(info.status), status(info.overridden_status), info.host_name.as_bytes(), info.ip_addr.as_bytes()]
    {
        h = fnv(part, h);
        h = fnv(&[0], h);
    }
    h = fnv(&info.last_dirty_timestamp.to_le_bytes(), h);
    h = fnv(&info.port.port.to_le_bytes(), h);
    for m in [&info.metadata, metadata_override] {
        for (k, v) in m {
            h = fnv(k.as_bytes(), h);
            h = fnv(&[0], h);
            h = fnv(v.as_bytes(), h);
            h = fnv(&[0], h);
        }
        h = fnv(&[1], h);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_always_ranks_above_the_one_it_follows() {
        assert_eq!(next(None, 50), 50);
        assert_eq!(next(Some(10), 50), 50);
        // A clock behind the previous change's still moves the version forward.
        assert_eq!(next(Some(80), 50), 81);
        assert_eq!(next(Some(u64::MAX), 50), u64::MAX);
        assert!(Rank::deleted(5) > Rank { version: 5, deleted: false, fingerprint: u64::MAX });
        assert!(Rank::deleted(5) < Rank { version: 6, deleted: false, fingerprint: 0 });
    }
}
