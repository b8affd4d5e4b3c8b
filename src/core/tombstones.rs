//! Cancelled instances remembered with the version that deleted them, so a replica that
//! still holds an older copy cannot bring the instance back (p2p: a late batch, an
//! anti-entropy pull or a start-up sync). Kept for a retention period and up to a count, both
//! measured against command timestamps, so replicas applying the same commands keep the same
//! tombstones.

use std::collections::{BTreeMap, BTreeSet};

use super::model::InstanceKey;

/// The tombstones of one registry.
#[derive(Debug, Clone, Default)]
pub struct Tombstones {
    /// Ordered by key, so one application's tombstones are one range.
    by_key: BTreeMap<InstanceKey, u64>,
    /// (version, key), oldest first: what pruning drops.
    by_age: BTreeSet<(u64, InstanceKey)>,
}

impl Tombstones {
    /// The version that deleted `key`, if it is remembered.
    pub fn get(&self, key: &InstanceKey) -> Option<u64> {
        self.by_key.get(key).copied()
    }

    /// Remembers that `key` was deleted at `version` (replacing an older tombstone).
    pub fn bury(&mut self, key: InstanceKey, version: u64) {
        if let Some(old) = self.by_key.insert(key.clone(), version) {
            self.by_age.remove(&(old, key.clone()));
        }
        self.by_age.insert((version, key));
    }

    /// Forgets `key`'s tombstone (the instance exists again); whether there was one.
    pub fn lift(&mut self, key: &InstanceKey) -> bool {
        match self.by_key.remove(key) {
            Some(v) => {
                self.by_age.remove(&(v, key.clone()));
                true
            }
            None => false,
        }
    }

    /// Drops tombstones older than `retention_ms` before `now`, then the oldest beyond `max`;
    /// returns those dropped.
    pub fn prune(&mut self, now: u64, retention_ms: u64, max: usize) -> Vec<(InstanceKey, u64)> {
        let cutoff = now.saturating_sub(retention_ms);
        let mut dropped = Vec::new();
        while let Some((v, _)) = self.by_age.first() {
            if *v >= cutoff && self.by_key.len() <= max {
                break;
            }
            if let Some((v, key)) = self.by_age.pop_first() {
                self.by_key.remove(&key);
                dropped.push((key, v));
            }
        }
        dropped
    }

    /// Number of tombstones.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// Every tombstone, by key.
    pub fn iter(&self) -> impl Iterator<Item = (&InstanceKey, u64)> {
        self.by_key.iter().map(|(k, v)| (k, *v))
    }

    /// The tombstones of one application, by id.
    pub fn of_app<'a>(&'a self, app: &'a str) -> impl Iterator<Item = (&'a InstanceKey, u64)> + 'a {
        let from = InstanceKey { app: app.to_string(), id: String::new() };
        self.by_key.range(from..).take_while(move |(k, _)| k.app == app).map(|(k, v)| (k, *v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pruning_drops_the_old_and_the_excess_oldest_first() {
        let mut t = Tombstones::default();
        for (id, v) in [("a", 10), ("b", 20), ("c", 30), ("d", 40)] {
            t.bury(InstanceKey::new("A", id), v);
        }
        t.bury(InstanceKey::new("A", "a"), 35);
        assert_eq!(t.prune(50, 25, 10), vec![(InstanceKey::new("A", "b"), 20)]);
        assert_eq!(t.prune(50, 25, 2), vec![(InstanceKey::new("A", "c"), 30)]);
        assert_eq!(t.get(&InstanceKey::new("A", "a")), Some(35));
        assert!(t.lift(&InstanceKey::new("A", "a")));
        assert!(!t.lift(&InstanceKey::new("A", "a")));
        assert_eq!(t.len(), 1);
    }
}
