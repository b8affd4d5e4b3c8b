//! Each instance's writes in order. A key moves one way only: absent (never registered),
//! then registered with increasing generations, then cancelled (absent for good: the fleet
//! never reuses an id). So every state has a rank, and "at least as new as" is a comparison.

use std::collections::HashMap;

use crate::history::{Kind, Micros, Op, Outcome};

/// Rank of a cancelled key: above every generation.
pub const CANCELLED: u64 = u64::MAX;

/// The writes of every key (outcomes `Ok` and `Unknown`; a failed write had no effect).
pub struct Keys<'a> {
    by_key: HashMap<&'a str, Vec<&'a Op>>,
}

impl<'a> Keys<'a> {
    /// Indexes the writes of `ops`.
    pub fn new(ops: &'a [Op]) -> Keys<'a> {
        let mut by_key: HashMap<&str, Vec<&Op>> = HashMap::new();
        for op in ops.iter().filter(|o| o.kind.is_write() && o.outcome != Outcome::Fail) {
            by_key.entry(op.key.as_str()).or_default().push(op);
        }
        for w in by_key.values_mut() {
            w.sort_by_key(|o| o.complete);
        }
        Keys { by_key }
    }

    /// Every key written.
    pub fn keys(&self) -> impl Iterator<Item = &'a str> + '_ {
        self.by_key.keys().copied()
    }

    fn writes(&self, key: &str) -> &[&'a Op] {
        self.by_key.get(key).map_or(&[], Vec::as_slice)
    }

    /// The rank a read completed at `complete` shows when it lists `seen` for `key`: an
    /// absent key counts as cancelled once a cancel was sent before the read completed.
    pub fn rank_seen(&self, key: &str, seen: Option<u64>, complete: Micros) -> u64 {
        match seen {
            Some(g) => g,
            None if self.writes(key).iter().any(|w| w.kind == Kind::Cancel && w.invoke <= complete) => CANCELLED,
            None => 0,
        }
    }

    /// The newest acknowledged write of `key` completed at or before `t`: its rank and op.
    pub fn expected(&self, key: &str, t: Micros) -> Option<(u64, &'a Op)> {
        self.writes(key)
            .iter()
            .filter(|w| w.outcome == Outcome::Ok && w.complete <= t)
            .map(|w| (rank(w), *w))
            .max_by_key(|(r, w)| (*r, std::cmp::Reverse(w.complete)))
    }

    /// The acknowledged writes of `key` completed at or before `t` with a rank above `seen`:
    /// what a read showing `seen` at `t` missed.
    pub fn missed(&self, key: &str, seen: u64, t: Micros) -> impl Iterator<Item = &'a Op> + '_ {
        self.writes(key).iter().copied().filter(move |w| w.outcome == Outcome::Ok && w.complete <= t && rank(w) > seen)
    }
}

/// The rank a write leaves its key at.
pub fn rank(w: &Op) -> u64 {
    match w.kind {
        Kind::Cancel => CANCELLED,
        _ => w.value.unwrap_or(0),
    }
}

/// The ranks a full listing shows for every key in `keys`.
pub fn listing_ranks<'k>(keys: &Keys<'k>, listing: &Op) -> HashMap<&'k str, u64> {
    let listed: HashMap<&str, u64> = listing.listed.iter().map(|(k, g)| (k.as_str(), *g)).collect();
    keys.keys().map(|k| (k, keys.rank_seen(k, listed.get(k).copied(), listing.complete))).collect()
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A hand-made op.
    pub fn op(kind: Kind, key: &str, value: Option<u64>, invoke: Micros, complete: Micros, outcome: Outcome) -> Op {
        Op {
            process: 1,
            node: 0,
            kind,
            key: key.into(),
            value,
            seen: None,
            listed: Vec::new(),
            invoke,
            complete,
            outcome,
            status: 200,
        }
    }

    #[test]
    fn ranks_follow_the_life_of_a_key() {
        let ops = vec![
            op(Kind::Register, "A/1", Some(1), 0, 10, Outcome::Ok),
            op(Kind::Register, "A/1", Some(2), 20, 30, Outcome::Ok),
            op(Kind::Register, "A/1", Some(3), 40, 50, Outcome::Fail),
            op(Kind::Cancel, "A/1", None, 60, 70, Outcome::Ok),
        ];
        let k = Keys::new(&ops);
        assert_eq!(k.expected("A/1", 5), None);
        assert_eq!(k.expected("A/1", 35).map(|e| e.0), Some(2));
        assert_eq!(k.expected("A/1", 55).map(|e| e.0), Some(2), "a failed write changes nothing");
        assert_eq!(k.expected("A/1", 80).map(|e| e.0), Some(CANCELLED));
        assert_eq!(k.rank_seen("A/1", None, 50), 0);
        assert_eq!(k.rank_seen("A/1", None, 65), CANCELLED);
        assert_eq!(k.missed("A/1", 1, 35).count(), 1);
    }
}
