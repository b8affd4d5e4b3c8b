//! Per-peer replication queue. It holds *what* to tell a peer — an action on an instance —
//! not a copy of the data: the payload is read from the registry when the batch is sent, so
//! repeated changes of one instance coalesce into one item carrying its newest state, and
//! the queue's size is bounded by the number of instances, not by the write rate.

use std::collections::{BTreeMap, HashMap};

use super::protocol::Action;
use crate::core::model::InstanceKey;

/// One pending replication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub action: Action,
    pub key: InstanceKey,
}

const ACTIONS: [Action; 5] =
    [Action::Register, Action::Heartbeat, Action::Cancel, Action::StatusUpdate, Action::DeleteStatusOverride];

/// A bounded, coalescing FIFO of pending replications for one peer.
#[derive(Debug)]
pub struct PeerQueue {
    /// Position → pending item; positions below zero are retries put back at the front.
    order: BTreeMap<i64, Pending>,
    index: HashMap<(Action, InstanceKey), i64>,
    next_back: i64,
    next_front: i64,
    capacity: usize,
    /// Set when the backlog was dropped (the peer was unreachable for too long): the peer
    /// must be brought back in sync by a full comparison, not by the lost items.
    pub needs_resync: bool,
}

impl PeerQueue {
    /// An empty queue holding at most `capacity` items.
    pub fn new(capacity: usize) -> Self {
        PeerQueue {
            order: BTreeMap::new(),
            index: HashMap::new(),
            next_back: 0,
            next_front: -1,
            capacity,
            needs_resync: false,
        }
    }

    /// Items waiting.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    fn remove(&mut self, action: Action, key: &InstanceKey) -> bool {
        match self.index.remove(&(action, key.clone())) {
            Some(pos) => {
                self.order.remove(&pos);
                true
            }
            None => false,
        }
    }

    fn has(&self, action: Action, key: &InstanceKey) -> bool {
        self.index.contains_key(&(action, key.clone()))
    }

    /// Queues an action, coalescing with what is already pending for the instance:
    /// a cancel makes every other pending action moot; a register (which sends the whole
    /// current state and refreshes the lease) makes a pending heartbeat moot, and a
    /// heartbeat behind a pending register adds nothing. A repeated action moves to the back.
    /// Returns whether the backlog overflowed and was dropped.
    pub fn push(&mut self, action: Action, key: InstanceKey) -> bool {
        match action {
            Action::Cancel => {
                for a in ACTIONS {
                    self.remove(a, &key);
                }
            }
            Action::Register => {
                self.remove(Action::Heartbeat, &key);
            }
            Action::Heartbeat if self.has(Action::Register, &key) => return false,
            _ => {}
        }
        self.remove(action, &key);
        let pos = self.next_back;
        self.next_back += 1;
        self.index.insert((action, key.clone()), pos);
        self.order.insert(pos, Pending { action, key });
        if self.order.len() > self.capacity {
            self.order.clear();
            self.index.clear();
            self.needs_resync = true;
            return true;
        }
        false
    }

    /// Takes up to `max` items from the front.
    pub fn take(&mut self, max: usize) -> Vec<Pending> {
        let mut out = Vec::with_capacity(max.min(self.order.len()));
        while out.len() < max {
            let Some((_, p)) = self.order.pop_first() else { break };
            self.index.remove(&(p.action, p.key.clone()));
            out.push(p);
        }
        out
    }

    /// Puts items whose sending failed back at the front, in their order, unless a newer
    /// action for the same instance was queued meanwhile.
    pub fn requeue_front(&mut self, items: Vec<Pending>) {
        for p in items.into_iter().rev() {
            let superseded = self.has(p.action, &p.key)
                || self.has(Action::Cancel, &p.key)
                || (p.action == Action::Heartbeat && self.has(Action::Register, &p.key));
            if superseded || self.order.len() >= self.capacity {
                continue;
            }
            let pos = self.next_front;
            self.next_front -= 1;
            self.index.insert((p.action, p.key.clone()), pos);
            self.order.insert(pos, p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(id: &str) -> InstanceKey {
        InstanceKey::new("A", id)
    }

    fn actions(q: &mut PeerQueue) -> Vec<(Action, String)> {
        q.take(usize::MAX).into_iter().map(|p| (p.action, p.key.id)).collect()
    }

    #[test]
    fn coalesces_per_instance() {
        let mut q = PeerQueue::new(100);
        for _ in 0..10 {
            q.push(Action::Heartbeat, k("1"));
        }
        q.push(Action::Register, k("2"));
        q.push(Action::Heartbeat, k("2"));
        q.push(Action::StatusUpdate, k("1"));
        assert_eq!(
            actions(&mut q),
            vec![(Action::Heartbeat, "1".into()), (Action::Register, "2".into()), (Action::StatusUpdate, "1".into())]
        );
    }

    #[test]
    fn cancel_supersedes_everything_pending() {
        let mut q = PeerQueue::new(100);
        q.push(Action::Register, k("1"));
        q.push(Action::StatusUpdate, k("1"));
        q.push(Action::Cancel, k("1"));
        assert_eq!(actions(&mut q), vec![(Action::Cancel, "1".into())]);
        q.push(Action::Heartbeat, k("1"));
        q.push(Action::Register, k("1"));
        assert_eq!(actions(&mut q), vec![(Action::Register, "1".into())]);
    }

    #[test]
    fn overflow_drops_backlog_and_marks_resync() {
        let mut q = PeerQueue::new(3);
        for n in 0..4 {
            q.push(Action::Register, k(&n.to_string()));
        }
        assert!(q.is_empty());
        assert!(q.needs_resync);
    }

    #[test]
    fn failed_items_go_back_in_front_unless_superseded() {
        let mut q = PeerQueue::new(100);
        q.push(Action::Register, k("1"));
        q.push(Action::Register, k("2"));
        q.push(Action::Heartbeat, k("3"));
        let taken = q.take(3);
        q.push(Action::Cancel, k("2"));
        q.push(Action::Register, k("4"));
        q.requeue_front(taken);
        assert_eq!(
            actions(&mut q),
            vec![
                (Action::Register, "1".into()),
                (Action::Heartbeat, "3".into()),
                (Action::Cancel, "2".into()),
                (Action::Register, "4".into())
            ]
        );
    }
}
