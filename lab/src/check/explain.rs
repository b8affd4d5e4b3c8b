//! Every anomaly with its cause. A lost write is listed one by one with the fault that
//! explains it; stale reads are many, so they are counted by cause. An anomaly no fault
//! explains is named as such: on raft it is a bug to fix, on p2p a gap in this account.

use std::collections::BTreeMap;

use serde::Serialize;

use super::stale::Missed;
use super::Side;
use crate::history::{Fault, Kind, Micros, Op, Outcome};

/// How long after a heal a stale read still counts as the heal's catch-up.
const CATCH_UP: Micros = 10_000_000;

/// How long before a kill an acknowledged write may still be in the killed node's unsent
/// replication batch.
const UNSENT: Micros = 2_000_000;

/// The most a healthy node may lag without a fault: a replication round (batches leave
/// within milliseconds; raft followers apply on the next heartbeat at the latest).
const LAG_MS: f64 = 1_000.0;

/// One lost acknowledged write and why it was lost.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LostWrite {
    pub key: String,
    /// "register" or "cancel".
    pub kind: String,
    /// The node (1-based) that acknowledged it.
    pub node: u8,
    /// When it was acknowledged, s from the start of the run.
    pub acknowledged_s: f64,
    pub cause: String,
    /// Whether a fault explains it.
    pub explained: bool,
}

/// Stale reads of one cause.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StaleCause {
    pub cause: String,
    pub reads: usize,
    pub max_ms: f64,
    /// Whether a fault or replication's design explains it.
    pub explained: bool,
}

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::Cancel => "cancel",
        _ => "register",
    }
}

/// Why `w`, an acknowledged write that no node held later, was lost (`ops`: the whole
/// history, for what its client heard next).
pub fn lost_write(w: &Op, ops: &[Op], faults: &[Fault], raft: bool) -> LostWrite {
    let killed = faults.iter().find_map(|f| {
        let k = f.killed_at()?;
        (f.minority.contains(&w.node) && (k.saturating_sub(UNSENT)..=k).contains(&w.complete)).then_some((f, k))
    });
    // On a CP backend, where every node holds what was committed, the cluster itself removed
    // the instance if its client, still heartbeating, was told it is unknown: an eviction of
    // a live instance, not a write the storage dropped. (On p2p a 404 heartbeat is the
    // ordinary way a node that missed a registration asks for it again.)
    let evicted = ops.iter().filter(|_| raft).find(|o| {
        o.kind == Kind::Renew && o.key == w.key && o.status == 404 && o.outcome == Outcome::Ok && o.invoke > w.complete
    });
    let (cause, explained) = match killed {
        Some((f, k)) if !raft => (
            format!(
                "node {} acknowledged it {} ms before it was killed (`{}`) and died before its replication \
                 batch left; the instance returns when its client's next heartbeat gets 404 and re-registers",
                w.node + 1,
                (k - w.complete) / 1000,
                f.what
            ),
            true,
        ),
        _ if evicted.is_some() => (
            format!(
                "evicted while its client heartbeated: the cluster removed the instance and the heartbeat at {:.2} s \
                 answered 404 (a spurious eviction; a bug of the backend)",
                evicted.map_or(0.0, |e| e.invoke as f64 / 1e6)
            ),
            false,
        ),
        _ if raft => ("a write raft acknowledged is committed on a majority: this is a bug".to_string(), false),
        _ => ("no fault explains it".to_string(), false),
    };
    LostWrite {
        key: w.key.clone(),
        kind: kind_name(w.kind).into(),
        node: w.node + 1,
        acknowledged_s: w.complete as f64 / 1e6,
        cause,
        explained,
    }
}

/// The cause of one stale local read `r` that missed `m`, and whether it is explained.
fn stale_cause(r: &Op, m: &Missed<'_>, faults: &[Fault], raft: bool) -> (&'static str, bool) {
    let missed_on_minority =
        faults.iter().any(|f| f.minority.contains(&m.first.node) && (f.start..f.heal).contains(&m.first.complete));
    let after_heal = faults.iter().any(|f| (f.heal..f.heal + CATCH_UP).contains(&r.invoke));
    match (Side::of(r, faults), raft) {
        (Side::Minority, false) => {
            ("served by the faulty node from its own copy, which misses what the others accepted since the fault", true)
        }
        (Side::Minority, true) => (
            "served by the faulty node from its last applied state, while the fault keeps it from applying the log",
            true,
        ),
        (Side::Majority, false) if missed_on_minority => {
            ("missed a write the faulty node accepted; it reaches the others after the heal", true)
        }
        (Side::Majority, _) | (Side::Steady, _) if !after_heal && m.ms > LAG_MS => {
            ("stale by more than a replication round with no fault near: unexplained", false)
        }
        (Side::Majority, _) | (Side::Steady, _) if !after_heal => (
            if raft {
                "follower lag: the leader acknowledged the write before this follower applied it"
            } else {
                "replication lag: another node acknowledged the write and its batch had not arrived"
            },
            true,
        ),
        (Side::Steady, false) if missed_on_minority => (
            "after a heal: missed a write the faulty node accepted, before anti-entropy or its batch repaired it",
            true,
        ),
        (_, false) => ("after a heal: the healed node catching up on what it missed", true),
        (_, true) => ("after a heal: the restarted or rejoined follower catching up on the log", true),
    }
}

/// How long after a stale read its key's client may learn, from a heartbeat answered 404,
/// that the cluster removed the instance (a renewal interval and a request's timeout).
const EVICTION_NOTICE: Micros = 2_000_000;

/// Stale local reads of `reads` counted by cause (`ops`: the whole history). On a CP
/// backend a read that missed an instance the cluster itself removed, as its still
/// heartbeating client learned from a 404, shows an eviction rather than lag.
pub fn stale_reads(reads: &[(&Op, Option<Missed<'_>>)], ops: &[Op], faults: &[Fault], raft: bool) -> Vec<StaleCause> {
    let mut told_unknown: BTreeMap<&str, Vec<Micros>> = BTreeMap::new();
    for o in ops.iter().filter(|o| o.kind == Kind::Renew && o.status == 404 && o.outcome == Outcome::Ok) {
        told_unknown.entry(o.key.as_str()).or_default().push(o.invoke);
    }
    let evicted = |r: &Op, m: &Missed<'_>| {
        told_unknown
            .get(m.first.key.as_str())
            .is_some_and(|ts| ts.iter().any(|t| (m.first.complete..=r.complete + EVICTION_NOTICE).contains(t)))
    };
    let mut by: BTreeMap<&'static str, StaleCause> = BTreeMap::new();
    for (r, m) in reads {
        let Some(m) = m else { continue };
        if r.kind == Kind::ReadLinearizable {
            continue;
        }
        let (cause, explained) = if raft && evicted(r, m) {
            ("evicted while its client heartbeated: the cluster removed the instance (a bug of the backend)", false)
        } else {
            stale_cause(r, m, faults, raft)
        };
        let e = by.entry(cause).or_insert_with(|| StaleCause { cause: cause.into(), reads: 0, max_ms: 0.0, explained });
        e.reads += 1;
        e.max_ms = e.max_ms.max(m.ms);
    }
    let mut out: Vec<StaleCause> = by.into_values().collect();
    out.sort_by_key(|c| std::cmp::Reverse(c.reads));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::keys::tests::op;
    use crate::history::Outcome;

    fn kill(node: u8, start: Micros, heal: Micros) -> Fault {
        Fault { fault: "kill".into(), what: format!("kill node {}", node + 1), minority: vec![node], start, heal }
    }

    #[test]
    fn a_write_acknowledged_just_before_its_node_died_is_explained_on_p2p_only() {
        let mut w = op(Kind::Register, "A/1", Some(2), 900_000, 1_000_000, Outcome::Ok);
        w.node = 1;
        let f = [kill(1, 1_300_000, 5_000_000)];
        let p2p = lost_write(&w, &[], &f, false);
        assert!(p2p.explained, "{}", p2p.cause);
        assert!(p2p.cause.contains("300 ms before it was killed (`kill node 2`)"), "{}", p2p.cause);
        assert!(!lost_write(&w, &[], &f, true).explained, "raft never loses an acknowledged write");
        // A kill of another node, or long after, explains nothing.
        assert!(!lost_write(&w, &[], &[kill(0, 1_300_000, 5_000_000)], false).explained);
        assert!(!lost_write(&w, &[], &[kill(1, 9_000_000, 12_000_000)], false).explained);
    }

    #[test]
    fn a_write_the_cluster_removed_under_a_heartbeating_client_is_an_eviction() {
        let w = op(Kind::Register, "A/1", Some(1), 900_000, 1_000_000, Outcome::Ok);
        let mut told_unknown = op(Kind::Renew, "A/1", None, 9_000_000, 9_000_500, Outcome::Ok);
        told_unknown.status = 404;
        let mut other_key = told_unknown.clone();
        other_key.key = "B/1".into();
        let l = lost_write(&w, &[w.clone(), other_key.clone(), told_unknown], &[], true);
        assert!(!l.explained);
        assert!(l.cause.starts_with("evicted while its client heartbeated"), "{}", l.cause);
        assert!(l.cause.contains("9.00 s"), "{}", l.cause);
        let l = lost_write(&w, &[w.clone(), other_key], &[], true);
        assert!(l.cause.contains("this is a bug"), "{}", l.cause);
    }

    #[test]
    fn stale_reads_are_counted_by_cause() {
        let f = [kill(1, 10_000_000, 20_000_000)];
        let mut during = op(Kind::Register, "A/1", Some(2), 11_000_000, 11_000_100, Outcome::Ok);
        during.node = 1;
        let steady = op(Kind::Register, "B/1", Some(1), 40_000_000, 40_000_100, Outcome::Ok);
        let read = |node: u8, invoke: Micros| {
            let mut r = op(Kind::Read, "A/1", None, invoke, invoke + 100, Outcome::Ok);
            r.node = node;
            r
        };
        let m = |first: &'static Op| Missed { ms: 5.0, versions: 1, first };
        let during: &'static Op = Box::leak(Box::new(during));
        let steady: &'static Op = Box::leak(Box::new(steady));
        let (r1, r2, r3) = (read(0, 12_000_000), read(0, 22_000_000), read(2, 45_000_000));
        let r4 = read(2, 50_000_000);
        let old = Missed { ms: 4_000.0, versions: 1, first: steady };
        let reads = vec![(&r1, Some(m(during))), (&r2, Some(m(during))), (&r3, Some(m(steady))), (&r4, Some(old))];
        let causes = stale_reads(&reads, &[], &f, false);
        assert_eq!(causes.len(), 4, "{causes:?}");
        assert!(causes.iter().all(|c| c.reads == 1));
        assert_eq!(causes.iter().filter(|c| !c.explained).count(), 1, "4 s behind with no fault near");
        assert!(causes.iter().any(|c| c.cause.starts_with("missed a write the faulty node accepted")));
        assert!(causes.iter().any(|c| c.cause.starts_with("after a heal: missed")));
        assert!(causes.iter().any(|c| c.cause.starts_with("replication lag")));
        // On a CP backend, a read that missed an instance whose client then heard 404 shows
        // an eviction; on p2p the 404 is how a node asks for a missed registration.
        let mut told_unknown = op(Kind::Renew, "B/1", None, 45_500_000, 45_500_100, Outcome::Ok);
        told_unknown.status = 404;
        let ops = [told_unknown];
        let cp = stale_reads(&reads[2..3], &ops, &[], true);
        assert!(cp[0].cause.starts_with("evicted while its client heartbeated") && !cp[0].explained, "{cp:?}");
        let ap = stale_reads(&reads[2..3], &ops, &[], false);
        assert!(ap[0].cause.starts_with("replication lag"), "{ap:?}");
    }
}
