//! What this node's registry applied since start, by kind of change (and the renewal results'
//! names; [`crate::core::state::RegistryState`] counts those under its lock), for `/metrics`. Every replica counts what it applies itself, so on a raft
//! cluster each node reports the whole cluster's changes, and on p2p each node its own plus
//! those replicated to it.

use std::sync::atomic::{AtomicU64, Ordering};

use super::command::{Command, Outcome};
use super::state::RenewOutcome;

/// Kinds of change, in slot order (the names of [`Command::kind`]).
pub const CHANGE_KINDS: [&str; 7] = ["register", "cancel", "status", "delete-status", "metadata", "evict", "adopt"];

/// Renewal results, in slot order.
pub const RENEW_RESULTS: [&str; 4] = ["renewed", "not_found", "client_newer", "server_newer"];

/// Changes counted since start.
#[derive(Debug, Default)]
pub struct Counters {
    /// Instances changed per kind (an eviction counts every instance it removed).
    changes: [AtomicU64; CHANGE_KINDS.len()],
}

/// The eviction slot in [`CHANGE_KINDS`].
const EVICT: usize = 5;

fn change_slot(cmd: &Command) -> usize {
    match cmd {
        Command::Register { .. } => 0,
        Command::Cancel { .. } => 1,
        Command::SetStatusOverride { .. } => 2,
        Command::DeleteStatusOverride { .. } => 3,
        Command::UpdateMetadata { .. } => 4,
        Command::Evict { .. } => EVICT,
        Command::Adopt { .. } => 6,
    }
}

/// The slot of a renewal result in [`RENEW_RESULTS`].
pub fn renew_slot(outcome: RenewOutcome) -> usize {
    match outcome {
        RenewOutcome::Renewed => 0,
        RenewOutcome::NotFound => 1,
        RenewOutcome::ClientNewer => 2,
        RenewOutcome::ServerNewer => 3,
    }
}

/// Where a command's outcome is counted, taken before the command is consumed by `apply`.
#[derive(Debug, Clone, Copy)]
pub struct ChangeSlot(usize);

impl ChangeSlot {
    /// The slot of `cmd`'s kind.
    pub fn of(cmd: &Command) -> ChangeSlot {
        ChangeSlot(change_slot(cmd))
    }
}

impl Counters {
    /// Counts an applied command: nothing unless it took effect.
    pub fn applied(&self, slot: ChangeSlot, outcome: Outcome) {
        let n = match outcome {
            Outcome::Applied => 1,
            Outcome::Evicted(n) => n as u64,
            Outcome::NotFound | Outcome::Rejected | Outcome::Stale => return,
        };
        self.changes[slot.0].fetch_add(n, Ordering::Relaxed);
    }

    /// Instances changed by kind, in [`CHANGE_KINDS`] order.
    pub fn changes(&self) -> [u64; CHANGE_KINDS.len()] {
        std::array::from_fn(|i| self.changes[i].load(Ordering::Relaxed))
    }

    /// Instances removed by eviction.
    pub fn evicted(&self) -> u64 {
        self.changes[EVICT].load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::model::InstanceKey;

    #[test]
    fn slots_follow_the_command_names() {
        let key = InstanceKey::new("A", "1");
        let cmds = [
            Command::Cancel { key: key.clone(), now: 0 },
            Command::Evict { keys: vec![key.clone()], now: 0 },
            Command::UpdateMetadata { key, entries: Default::default(), now: 0 },
        ];
        for c in &cmds {
            assert_eq!(CHANGE_KINDS[change_slot(c)], c.kind());
        }
        let c = Counters::default();
        c.applied(ChangeSlot::of(&cmds[1]), Outcome::Evicted(3));
        c.applied(ChangeSlot::of(&cmds[0]), Outcome::NotFound);
        assert_eq!(c.evicted(), 3);
        assert_eq!(c.changes()[1], 0, "a cancel of nothing changed nothing");
        assert_eq!(RENEW_RESULTS[renew_slot(RenewOutcome::ClientNewer)], "client_newer");
    }
}
