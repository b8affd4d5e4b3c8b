//! Last-writer-wins between replicas (p2p): copies and tombstones adopted in any order
//! leave every replica with the same registry, and an older copy never undoes a newer change.

use super::command::{Command, Outcome, Replica};
use super::model::{InstanceKey, Status};
use super::state::{CoreConfig, RegistryState, MAX_VERSION_AHEAD_MS};
use super::tests::instance;
use super::version::Rank;

const T0: u64 = 1_700_000_000_000;
const HOUR: u64 = 3_600_000;

fn replica_node() -> RegistryState {
    RegistryState::new(CoreConfig { tombstone_retention_ms: HOUR, ..CoreConfig::default() })
}

fn key() -> InstanceKey {
    InstanceKey::new("A", "1")
}

fn register(st: &mut RegistryState, now: u64) {
    st.apply(Command::Register { instance: Box::new(instance("a", "1")), now, from_peer: false });
}

/// What `st` holds for the instance, as another node would receive it.
fn copy_of(st: &RegistryState) -> Replica {
    match st.get(&key()) {
        Some(e) => Replica::Live { entry: Box::new(st.persisted(&key()).unwrap()), renewed: e.last_renewal_ts },
        None => Replica::Deleted { version: st.tombstones().get(&key()).unwrap() },
    }
}

fn adopt(st: &mut RegistryState, replica: Replica, now: u64) -> Outcome {
    st.apply(Command::Adopt { key: key(), replica, now }).outcome
}

#[test]
fn a_cancelled_instance_is_not_brought_back_by_an_older_copy() {
    let mut node = replica_node();
    register(&mut node, T0);
    let before_cancel = copy_of(&node);
    // A cancel lands while a peer's listing, taken before it, is on its way.
    let applied = node.apply(Command::Cancel { key: key(), now: T0 + 10 });
    assert_eq!(applied.buried, vec![key()], "the tombstone is written to the store");
    assert_eq!(adopt(&mut node, before_cancel, T0 + 20), Outcome::Stale);
    assert!(node.get(&key()).is_none());
    // A registration made after the cancel elsewhere is newer, and taken.
    let mut other = replica_node();
    register(&mut other, T0 + 30);
    assert_eq!(adopt(&mut node, copy_of(&other), T0 + 40), Outcome::Applied);
    assert!(node.get(&key()).is_some());
    assert_eq!(node.tombstones().get(&key()), None);
}

#[test]
fn an_override_set_on_one_node_wins_over_older_copies_in_both_directions() {
    let mut one = replica_node();
    register(&mut one, T0);
    let mut two = replica_node();
    assert_eq!(adopt(&mut two, copy_of(&one), T0 + 1), Outcome::Applied);
    // Node one alone takes the instance out of service.
    one.apply(Command::SetStatusOverride { key: key(), status: Status::OutOfService, last_dirty: None, now: T0 + 50 });
    // Node two's copy (same lastDirtyTimestamp, older version) does not undo it...
    assert_eq!(adopt(&mut one, copy_of(&two), T0 + 60), Outcome::Stale);
    // ...and node one's copy carries the override to node two whole.
    assert_eq!(adopt(&mut two, copy_of(&one), T0 + 60), Outcome::Applied);
    let e = two.get(&key()).unwrap();
    assert_eq!((e.info.status, e.status_override), (Status::OutOfService, Some(Status::OutOfService)));
    assert_eq!(one.rank(&key()), two.rank(&key()));
    // A client re-registering on node two keeps the override, as Eureka does.
    register(&mut two, T0 + 70);
    assert_eq!(two.get(&key()).unwrap().info.status, Status::OutOfService);
}

#[test]
fn a_change_after_a_newer_tombstone_ranks_above_it_whatever_the_clock_says() {
    let mut node = replica_node();
    // A peer whose clock runs ahead deleted the instance "in the future".
    assert_eq!(adopt(&mut node, Replica::Deleted { version: T0 + 5_000 }, T0), Outcome::Applied);
    register(&mut node, T0 + 1);
    let v = node.get(&key()).unwrap().info.last_updated_timestamp;
    assert_eq!(v, T0 + 5_001);
    // Versions further ahead than any sane clock skew are refused.
    let far = Replica::Deleted { version: T0 + MAX_VERSION_AHEAD_MS + 10 };
    assert_eq!(adopt(&mut node, far, T0 + 2), Outcome::Rejected);
    assert!(node.get(&key()).is_some());
}

#[test]
fn an_adopted_copy_keeps_the_senders_lease_time() {
    let mut one = replica_node();
    register(&mut one, T0);
    let mut two = replica_node();
    adopt(&mut two, copy_of(&one), T0 + 60_000);
    assert_eq!(two.get(&key()).unwrap().last_renewal_ts, T0, "a copy does not renew the lease");
    // A copy whose lease already ran out is not taken where the instance is absent.
    let mut three = replica_node();
    assert_eq!(adopt(&mut three, copy_of(&one), T0 + 91_000), Outcome::Applied);
    assert!(three.get(&key()).is_none());
}

#[test]
fn tombstones_expire_after_their_retention_and_the_oldest_go_past_the_cap() {
    let mut node =
        RegistryState::new(CoreConfig { tombstone_retention_ms: 1000, max_tombstones: 2, ..Default::default() });
    for (i, id) in ["1", "2", "3"].iter().enumerate() {
        let k = InstanceKey::new("A", id);
        node.apply(Command::Register { instance: Box::new(instance("a", id)), now: T0, from_peer: false });
        node.apply(Command::Cancel { key: k, now: T0 + i as u64 });
    }
    assert_eq!(node.tombstones().len(), 3);
    // The next command prunes: the cap first drops the oldest.
    let applied = node.apply(Command::Cancel { key: InstanceKey::new("A", "none"), now: T0 + 3 });
    assert_eq!(applied.buried, vec![InstanceKey::new("A", "1")]);
    let applied = node.apply(Command::Cancel { key: InstanceKey::new("A", "none"), now: T0 + 1_002 });
    assert_eq!(applied.buried, vec![InstanceKey::new("A", "2")]);
    assert_eq!(node.tombstones().len(), 1);
    // No tombstones where none are kept (a single node, raft).
    let mut single = RegistryState::new(CoreConfig::default());
    register(&mut single, T0);
    assert!(single.apply(Command::Cancel { key: key(), now: T0 + 1 }).buried.is_empty());
}

/// Every order of the same copies, including two different changes with the same version
/// and a deletion with that version, ends in the same place on every replica.
#[test]
fn replicas_converge_whatever_order_copies_arrive_in() {
    let mut copies = Vec::new();
    let mut a = replica_node();
    register(&mut a, T0);
    copies.push(copy_of(&a));
    a.apply(Command::SetStatusOverride { key: key(), status: Status::Down, last_dirty: None, now: T0 + 10 });
    copies.push(copy_of(&a));
    let mut b = replica_node();
    register(&mut b, T0);
    b.apply(Command::SetStatusOverride { key: key(), status: Status::OutOfService, last_dirty: None, now: T0 + 10 });
    copies.push(copy_of(&b));
    copies.push(Replica::Deleted { version: T0 + 5 });
    let tie = Replica::Deleted { version: T0 + 10 };
    copies.push(tie);
    let n = copies.len();
    let mut results: Vec<Option<Rank>> = Vec::new();
    // Heap's algorithm over every permutation.
    let mut order: Vec<usize> = (0..n).collect();
    let mut c = vec![0; n];
    let mut run = |order: &[usize]| {
        let mut node = replica_node();
        for &i in order {
            adopt(&mut node, copies[i].clone(), T0 + 20);
        }
        results.push(node.rank(&key()));
    };
    run(&order);
    let mut i = 0;
    while i < n {
        if c[i] < i {
            if i % 2 == 0 {
                order.swap(0, i);
            } else {
                order.swap(c[i], i);
            }
            run(&order);
            c[i] += 1;
            i = 0;
        } else {
            c[i] = 0;
            i += 1;
        }
    }
    assert_eq!(results.len(), 120);
    assert!(results.iter().all(|r| *r == results[0]), "replicas disagree: {results:?}");
    assert_eq!(results[0], Some(Rank::deleted(T0 + 10)), "on equal versions the deletion wins");
}

/// A write that changes nothing where it lands (the override is already in force there)
/// is still the last write: it must outrank a different, older override from another node.
#[test]
fn a_write_that_changes_nothing_here_still_outranks_an_older_one_from_elsewhere() {
    let mut one = replica_node();
    register(&mut one, T0);
    one.apply(Command::SetStatusOverride { key: key(), status: Status::Up, last_dirty: None, now: T0 + 1 });
    let mut two = replica_node();
    adopt(&mut two, copy_of(&one), T0 + 2);
    one.apply(Command::SetStatusOverride { key: key(), status: Status::OutOfService, last_dirty: None, now: T0 + 10 });
    // Node two has not heard of it and is told UP, which it already holds.
    two.apply(Command::SetStatusOverride { key: key(), status: Status::Up, last_dirty: None, now: T0 + 20 });
    assert_eq!(adopt(&mut two, copy_of(&one), T0 + 30), Outcome::Stale);
    assert_eq!(adopt(&mut one, copy_of(&two), T0 + 30), Outcome::Applied);
    assert_eq!(one.get(&key()).unwrap().info.status, Status::Up);
    // The same for removing an override that is not there.
    let mut three = replica_node();
    adopt(&mut three, copy_of(&two), T0 + 41);
    three.apply(Command::DeleteStatusOverride { key: key(), status: Status::Up, last_dirty: None, now: T0 + 42 });
    one.apply(Command::SetStatusOverride { key: key(), status: Status::Down, last_dirty: None, now: T0 + 45 });
    three.apply(Command::DeleteStatusOverride { key: key(), status: Status::Up, last_dirty: None, now: T0 + 50 });
    assert_eq!(adopt(&mut one, copy_of(&three), T0 + 60), Outcome::Applied);
    assert_eq!(one.get(&key()).unwrap().status_override, None);
}

/// The digests and status counts the core keeps up to date command by command equal those
/// computed afresh, through every kind of command, tombstone pruning and the cap.
#[test]
fn kept_digests_and_status_counts_match_those_computed_afresh() {
    use rand::{Rng, SeedableRng};
    use std::collections::BTreeMap;
    let config =
        CoreConfig { tombstone_retention_ms: 5_000, max_tombstones: 4, digests: true, ..CoreConfig::default() };
    let mut st = RegistryState::new(config.clone());
    let mut other = RegistryState::new(config);
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut now = T0;
    for step in 0..5_000 {
        now += rng.gen_range(0..400);
        let app = ["a", "b"][rng.gen_range(0..2)];
        let id = rng.gen_range(0..6).to_string();
        let k = InstanceKey::new(app, &id);
        let status = [Status::Up, Status::Down, Status::OutOfService][rng.gen_range(0..3)];
        let cmd = match rng.gen_range(0..8) {
            0 | 1 => {
                let mut i = instance(app, &id);
                i.status = status;
                Command::Register { instance: Box::new(i), now, from_peer: false }
            }
            2 => Command::Cancel { key: k, now },
            3 => Command::SetStatusOverride { key: k, status, last_dirty: None, now },
            4 => Command::DeleteStatusOverride { key: k, status, last_dirty: None, now },
            5 => Command::UpdateMetadata { key: k, entries: BTreeMap::from([("w".into(), step.to_string())]), now },
            6 => Command::Evict { keys: vec![k], now },
            _ => {
                // Another node's copy or tombstone of the same key.
                other.apply(Command::Register {
                    instance: Box::new(instance(app, &id)),
                    now: now - 1,
                    from_peer: false,
                });
                if rng.gen_bool(0.3) {
                    other.apply(Command::Cancel { key: k.clone(), now });
                }
                let replica = match other.get(&k) {
                    Some(e) => {
                        Replica::Live { entry: Box::new(other.persisted(&k).unwrap()), renewed: e.last_renewal_ts }
                    }
                    None => Replica::Deleted { version: other.tombstones().get(&k).unwrap_or(now) },
                };
                Command::Adopt { key: k, replica, now }
            }
        };
        st.apply(cmd);
        assert_eq!(*st.digests(), st.compute_digests(), "after step {step}");
        let counted = crate::core::state::hash_code(st.entries().map(|(_, e)| e.info.status));
        assert_eq!(st.hash_code(), counted, "after step {step}");
    }
    // Replacing the registry with its own records counts the same.
    let persisted: Vec<_> = st
        .apps()
        .flat_map(|(app, m)| m.keys().map(move |id| InstanceKey { app: app.clone(), id: id.clone() }))
        .filter_map(|k| st.persisted(&k))
        .collect();
    let before = st.hash_code();
    st.replace(persisted, st.version(), now);
    assert_eq!(st.hash_code(), before);
    assert!(!st.digests().hex().is_empty());
}
