//! The recently-changed queue behind `GET apps/delta` (Eureka's `recentlyChangedQueue`).
//! Each item is a snapshot of the instance right after the change; generation keeps the last
//! item per instance, so every changed instance appears once with its latest action.

use std::collections::VecDeque;
use std::sync::Arc;

use super::model::{InstanceInfo, InstanceKey, LeaseStamps};

/// One change.
#[derive(Debug, Clone)]
pub struct DeltaItem {
    /// Timestamp of the command that made the change.
    pub at: u64,
    /// Registry version the change produced (`versions__delta` once it is applied).
    pub version: u64,
    pub key: InstanceKey,
    pub info: Arc<InstanceInfo>,
    pub stamps: LeaseStamps,
}

/// FIFO of changes, trimmed by age using command timestamps and by size (oldest first), so
/// replicas applying the same commands trim identically.
///
/// The size cap matters because every item keeps its instance snapshot alive: re-registering
/// one large instance thousands of times within the retention would otherwise hold thousands
/// of copies. A client whose delta then misses a dropped change sees the hash code differ and
/// fetches the registry whole, as Eureka clients do.
#[derive(Debug, Default, Clone)]
pub struct DeltaQueue {
    /// Shared, so a reader can take the window under the registry lock at the cost of a
    /// reference count per item and sift it outside the lock.
    items: VecDeque<Arc<DeltaItem>>,
    /// Sum of the items' [`InstanceInfo::approx_bytes`].
    bytes: usize,
}

impl DeltaQueue {
    /// Appends a change, then drops the oldest until the queue holds at most `max_bytes`
    /// (the newest change always stays).
    pub fn push(&mut self, item: DeltaItem, max_bytes: usize) {
        self.bytes += item.info.approx_bytes();
        self.items.push_back(Arc::new(item));
        while self.bytes > max_bytes && self.items.len() > 1 {
            self.pop();
        }
    }

    fn pop(&mut self) {
        if let Some(i) = self.items.pop_front() {
            self.bytes -= i.info.approx_bytes();
        }
    }

    /// Drops changes older than `retention_ms` before `now`.
    pub fn prune(&mut self, now: u64, retention_ms: u64) {
        let cutoff = now.saturating_sub(retention_ms);
        while self.items.front().is_some_and(|i| i.at < cutoff) {
            self.pop();
        }
    }

    /// Approximate memory the queued changes hold.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Number of queued changes.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether the queue is empty.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Every change not older than `retention_ms` before `now`, in order, repeats included
    /// (sift them with [`latest`] outside the registry lock).
    pub fn window(&self, now: u64, retention_ms: u64) -> Vec<Arc<DeltaItem>> {
        let cutoff = now.saturating_sub(retention_ms);
        self.items.iter().filter(|i| i.at >= cutoff).cloned().collect()
    }

    /// The latest change per instance among those not older than `retention_ms`, in the order
    /// each instance last changed.
    pub fn latest_per_instance(&self, now: u64, retention_ms: u64) -> Vec<&DeltaItem> {
        self.latest_since(now, retention_ms, 0)
    }

    /// Like [`Self::latest_per_instance`], limited to changes that produced a version after
    /// `since` (what a client that has applied everything up to `since` is missing).
    pub fn latest_since(&self, now: u64, retention_ms: u64, since: u64) -> Vec<&DeltaItem> {
        let cutoff = now.saturating_sub(retention_ms);
        let recent = self.items.iter().rev().take_while(|i| i.version > since).filter(|i| i.at >= cutoff);
        let mut out = latest_of(recent.map(|i| &**i));
        out.reverse();
        out
    }
}

/// The latest change per instance of `window` (in order), in the order each instance last
/// changed.
pub fn latest(window: &[Arc<DeltaItem>]) -> Vec<&DeltaItem> {
    let mut out = latest_of(window.iter().rev().map(|i| &**i));
    out.reverse();
    out
}

/// The first of each instance's items in `newest_first`.
fn latest_of<'a>(newest_first: impl Iterator<Item = &'a DeltaItem>) -> Vec<&'a DeltaItem> {
    let mut seen = std::collections::HashSet::new();
    newest_first.filter(|i| seen.insert(&i.key)).collect()
}
