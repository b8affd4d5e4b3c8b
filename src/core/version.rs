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

/// A small word-at-a-time hash (FxHash's mixing step): stable across builds and
/// platforms, as hashes compared between nodes must be (std's hasher is not guaranteed to
/// be), and fast enough to run over a whole registry under its lock.
#[derive(Debug, Clone, Copy)]
pub struct StableHasher(u64);

const SEED: u64 = 0xcbf2_9ce4_8422_2325;
const K: u64 = 0x517c_c1b7_2722_0a95;

impl Default for StableHasher {
    fn default() -> Self {
        StableHasher(SEED)
    }
}

impl StableHasher {
    fn word(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(K);
    }

    /// Adds a number.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.word(v);
        self
    }

    /// Adds a byte string, length included (so `"ab","c"` and `"a","bc"` differ).
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        let mut chunks = b.chunks_exact(8);
        for c in &mut chunks {
            self.word(u64::from_le_bytes(c.try_into().unwrap_or_default()));
        }
        let mut last = [0u8; 8];
        last[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
        self.word(u64::from_le_bytes(last));
        self.word(b.len() as u64);
        self
    }

    /// The hash.
    pub fn finish(&self) -> u64 {
        // A final avalanche, so sums of hashes (order-independent digests) stay well mixed.
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h
    }
}

/// A hash of what a change can make differ between two copies of one version: status,
/// override, the client's dirty time, address and metadata. Only fields that survive the
/// JSON round trip between nodes unchanged take part.
pub fn fingerprint(info: &InstanceInfo, metadata_override: &BTreeMap<String, String>) -> u64 {
    let mut h = StableHasher::default();
    let status = |s: Status| s.as_str().as_bytes();
    h.bytes(status(info.status)).bytes(status(info.overridden_status));
    h.bytes(info.host_name.as_bytes()).bytes(info.ip_addr.as_bytes());
    h.u64(info.last_dirty_timestamp).u64(u64::from(info.port.port));
    for m in [&info.metadata, metadata_override] {
        for (k, v) in m {
            h.bytes(k.as_bytes()).bytes(v.as_bytes());
        }
        h.u64(m.len() as u64);
    }
    h.finish()
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
