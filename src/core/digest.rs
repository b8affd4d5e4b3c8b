//! Per-application digests of what a registry holds: for each application, a sum of one
//! hash per instance and tombstone over its last-writer-wins rank. Kept up to date as
//! commands apply (when enabled: p2p nodes compare them in anti-entropy), so reading them
//! costs one entry per application instead of a pass over the whole registry under its lock.

use std::collections::{BTreeMap, HashMap};

use super::version::{Rank, StableHasher};

/// One instance's or tombstone's share of its application's digest.
pub fn part(id: &str, rank: Rank) -> u64 {
    let mut h = StableHasher::default();
    h.bytes(id.as_bytes()).u64(rank.version).u64(u64::from(rank.deleted)).u64(rank.fingerprint);
    h.finish()
}

/// Application → (sum of parts, number of parts).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppDigests {
    sums: HashMap<String, (u64, u64)>,
}

impl AppDigests {
    /// Adds a part to `app`'s digest.
    pub fn add(&mut self, app: &str, part: u64) {
        match self.sums.get_mut(app) {
            Some((sum, n)) => {
                *sum = sum.wrapping_add(part);
                *n += 1;
            }
            None => {
                self.sums.insert(app.to_string(), (part, 1));
            }
        }
    }

    /// Takes a part out of `app`'s digest; an application left with no parts is dropped.
    pub fn sub(&mut self, app: &str, part: u64) {
        if let Some((sum, n)) = self.sums.get_mut(app) {
            *sum = sum.wrapping_sub(part);
            *n -= 1;
            if *n == 0 {
                self.sums.remove(app);
            }
        }
    }

    /// Application → digest, as exchanged between nodes.
    pub fn hex(&self) -> BTreeMap<String, String> {
        self.sums.iter().map(|(a, (sum, _))| (a.clone(), format!("{sum:016x}"))).collect()
    }
}
