//! Behaviour tests of the core, driven by a manual clock.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::clock::ManualClock;
use super::command::{Command, Outcome};
use super::model::*;
use super::preservation::{self, PreservationConfig};
use super::registry::Registry;
use super::state::{hash_code, CoreConfig, RegistryState, RenewOutcome};
use super::views;

const T0: u64 = 1_700_000_000_000;

/// A valid instance (shared with other modules' tests).
pub(crate) fn instance(app: &str, id: &str) -> InstanceInfo {
    InstanceInfo {
        instance_id: id.into(),
        host_name: "h".into(),
        app: app.to_ascii_uppercase(),
        ip_addr: "127.0.0.1".into(),
        sid: None,
        status: Status::Up,
        overridden_status: Status::Unknown,
        port: Port { port: 8080, enabled: true },
        secure_port: Port { port: 443, enabled: false },
        country_id: 1,
        data_center_info: DataCenterInfo {
            kind: DataCenterKind::Default,
            name: "MyOwn".into(),
            metadata: BTreeMap::new(),
        },
        lease: LeaseTerms::default(),
        metadata: BTreeMap::new(),
        app_group_name: None,
        home_page_url: None,
        status_page_url: None,
        health_check_url: None,
        secure_health_check_url: None,
        vip_address: Some(app.to_ascii_lowercase()),
        secure_vip_address: None,
        last_updated_timestamp: 0,
        last_dirty_timestamp: 100,
        action_type: None,
        asg_name: None,
    }
}

fn register(st: &mut RegistryState, i: InstanceInfo, now: u64) {
    let applied = st.apply(Command::Register { instance: Box::new(i), now, from_peer: false });
    assert_eq!(applied.outcome, Outcome::Applied);
}

fn key(app: &str, id: &str) -> InstanceKey {
    InstanceKey::new(app, id)
}

fn status_of(st: &RegistryState, app: &str, id: &str) -> Status {
    st.get(&key(app, id)).unwrap().info.status
}

#[test]
fn lease_expires_one_duration_after_last_renewal() {
    let mut st = RegistryState::new(CoreConfig::default());
    register(&mut st, instance("a", "1"), T0);
    assert_eq!(st.renew(&key("a", "1"), T0 + 30_000, None), RenewOutcome::Renewed);
    let e = st.get(&key("a", "1")).unwrap();
    assert!(!e.is_expired(T0 + 30_000 + 90_000, 0), "exactly one duration is not yet expired");
    assert!(e.is_expired(T0 + 30_000 + 90_001, 0));
    assert!(!e.is_expired(T0 + 30_000 + 90_001, 5_000), "compensation extends the lease");
}

#[test]
fn custom_lease_duration_is_used() {
    let mut st = RegistryState::new(CoreConfig::default());
    let mut i = instance("a", "1");
    i.lease = LeaseTerms { renewal_interval_secs: 5, duration_secs: 10 };
    register(&mut st, i, T0);
    let e = st.get(&key("a", "1")).unwrap();
    assert!(!e.is_expired(T0 + 10_000, 0));
    assert!(e.is_expired(T0 + 10_001, 0));
}

#[test]
fn renew_of_unknown_instance_is_not_found() {
    let mut st = RegistryState::new(CoreConfig::default());
    assert_eq!(st.renew(&key("a", "nope"), T0, None), RenewOutcome::NotFound);
}

#[test]
fn renew_compares_dirty_timestamps() {
    let mut st = RegistryState::new(CoreConfig::default());
    register(&mut st, instance("a", "1"), T0);
    assert_eq!(st.renew(&key("a", "1"), T0, Some(100)), RenewOutcome::Renewed);
    assert_eq!(st.renew(&key("a", "1"), T0, Some(101)), RenewOutcome::ClientNewer);
    assert_eq!(st.renew(&key("a", "1"), T0, Some(99)), RenewOutcome::ServerNewer);
}

fn registry(clock: Arc<ManualClock>, pres: PreservationConfig) -> Registry {
    Registry::new(CoreConfig::default(), pres, clock)
}

fn no_preservation() -> PreservationConfig {
    PreservationConfig { enabled: false, ..Default::default() }
}

/// Registers `n` instances of application A at T0.
fn register_fleet(r: &Registry, n: usize) {
    for i in 0..n {
        reg_apply(
            r,
            Command::Register { instance: Box::new(instance("a", &i.to_string())), now: T0, from_peer: false },
        );
    }
}

fn reg_apply(r: &Registry, cmd: Command) -> Outcome {
    r.apply(cmd, |_, _| ()).0.outcome
}

#[test]
fn eviction_is_capped_at_fifteen_percent_and_random() {
    let clock = Arc::new(ManualClock::new(T0));
    let r = registry(clock.clone(), no_preservation());
    register_fleet(&r, 100);
    clock.advance(200_000);
    let Some(Command::Evict { keys, now }) = r.plan_eviction(60_000) else { panic!("nothing to evict") };
    assert_eq!(keys.len(), 15);
    assert_eq!(reg_apply(&r, Command::Evict { keys: keys.clone(), now }), Outcome::Evicted(15));
    assert_eq!(r.read(|st| st.len()), 85);
    assert_eq!(r.evicted(), 15, "evictions are counted");
    // A second plan on the same expired set picks a different sample (random choice).
    clock.advance(60_000);
    let Some(Command::Evict { keys: again, .. }) = r.plan_eviction(60_000) else { panic!() };
    assert_eq!(again.len(), 85 - ((85.0f64 * 0.85).floor() as usize));
    assert!(again.iter().all(|k| !keys.contains(k)));
}

#[test]
fn late_eviction_run_is_compensated() {
    let clock = Arc::new(ManualClock::new(T0));
    let r = registry(clock.clone(), no_preservation());
    reg_apply(&r, Command::Register { instance: Box::new(instance("a", "1")), now: T0, from_peer: false });
    assert!(r.plan_eviction(60_000).is_none(), "first run, nothing expired");
    // The task ran 100 s late (e.g. the process was paused): the lease expired 10 s ago by
    // the wall clock, but the lateness is forgiven for this run.
    clock.set(T0 + 160_000);
    assert!(r.plan_eviction(60_000).is_none(), "compensation of 100 s covers the lease");
    clock.set(T0 + 220_000);
    assert!(r.plan_eviction(60_000).is_some(), "an on-time run evicts");
}

#[test]
fn self_preservation_maths() {
    let clock = Arc::new(ManualClock::new(T0));
    let r = registry(clock.clone(), PreservationConfig::default());
    // Ten instances at 30 s (2/min each) and one at 10 s (6/min): expected 26, threshold 22.
    register_fleet(&r, 10);
    let mut fast = instance("b", "fast");
    fast.lease = LeaseTerms { renewal_interval_secs: 10, duration_secs: 30 };
    reg_apply(&r, Command::Register { instance: Box::new(fast), now: T0, from_peer: false });
    let p = r.preservation();
    assert_eq!(p.expected_renews_per_min, 26.0);
    assert_eq!(p.threshold, 22);
    assert!(p.active, "no renewals yet");
    for n in 0..22 {
        clock.set(T0 + 1_000 + n);
        r.renew(&key("a", &(n % 10).to_string()), None);
    }
    let p = r.preservation();
    assert_eq!(p.renews_last_min, 22);
    assert!(!p.active, "22 renewals reach the threshold of 22");
    // A minute later those renewals have left the window.
    clock.set(T0 + 62_000);
    assert_eq!(r.preservation().renews_last_min, 0);
    assert!(r.preservation().active);
}

#[test]
fn self_preservation_suspends_eviction() {
    let clock = Arc::new(ManualClock::new(T0));
    let r = registry(clock.clone(), PreservationConfig::default());
    register_fleet(&r, 10);
    clock.advance(100_000);
    // Every lease expired and nobody renews: a partition, not a mass death.
    assert!(r.preservation().active);
    assert!(r.plan_eviction(60_000).is_none());
    assert!(r.plan_eviction(60_000).is_none());
    assert_eq!(r.preservation_engagements(), 1, "one engagement, however many runs it lasts");
    assert_eq!(r.evicted(), 0);
}

#[test]
fn self_preservation_is_bounded_by_the_silence_window() {
    let clock = Arc::new(ManualClock::new(T0));
    let pres = PreservationConfig { window_ms: 15 * 60_000, ..Default::default() };
    let r = registry(clock.clone(), pres);
    register_fleet(&r, 10);
    clock.set(T0 + 15 * 60_000);
    assert!(r.preservation().active, "silent for exactly the window: still protected");
    clock.set(T0 + 15 * 60_000 + 1);
    let p = r.preservation();
    assert_eq!(p.expected_instances, 0);
    assert_eq!(p.silent_instances, 10);
    assert_eq!(p.threshold, 0);
    assert!(!p.active, "a fleet silent for longer than the window is not protected");
    let Some(Command::Evict { keys, .. }) = r.plan_eviction(60_000) else { panic!("should evict") };
    assert_eq!(keys.len(), 2, "still capped per run");
}

#[test]
fn preservation_is_off_when_disabled() {
    let st = RegistryState::new(CoreConfig::default());
    let p = preservation::evaluate(&st, &no_preservation(), T0);
    assert!(!p.active && !p.enabled);
}

#[test]
fn override_rule_chain_through_apply() {
    let mut st = RegistryState::new(CoreConfig::default());
    register(&mut st, instance("a", "1"), T0);
    // Operator sets OUT_OF_SERVICE.
    let cmd =
        Command::SetStatusOverride { key: key("a", "1"), status: Status::OutOfService, last_dirty: None, now: T0 + 1 };
    assert_eq!(st.apply(cmd).outcome, Outcome::Applied);
    assert_eq!(status_of(&st, "a", "1"), Status::OutOfService);
    // The client re-registers with UP (newer data): the override still wins.
    let mut again = instance("a", "1");
    again.last_dirty_timestamp = 200;
    register(&mut st, again, T0 + 2);
    assert_eq!(status_of(&st, "a", "1"), Status::OutOfService);
    // ... but a client saying DOWN is trusted.
    let mut down = instance("a", "1");
    down.status = Status::Down;
    down.last_dirty_timestamp = 300;
    register(&mut st, down, T0 + 3);
    assert_eq!(status_of(&st, "a", "1"), Status::Down);
    // Delete the override: status becomes UNKNOWN and the next heartbeat is told to re-register.
    let cmd =
        Command::DeleteStatusOverride { key: key("a", "1"), status: Status::Unknown, last_dirty: None, now: T0 + 4 };
    assert_eq!(st.apply(cmd).outcome, Outcome::Applied);
    assert_eq!(status_of(&st, "a", "1"), Status::Unknown);
    assert_eq!(st.renew(&key("a", "1"), T0 + 5, None), RenewOutcome::NotFound);
    // The re-registration wins even with an older timestamp, and comes back UP.
    register(&mut st, instance("a", "1"), T0 + 6);
    assert_eq!(status_of(&st, "a", "1"), Status::Up);
    assert_eq!(st.get(&key("a", "1")).unwrap().status_override, None);
}

#[test]
fn existing_out_of_service_sticks_on_reregister() {
    let mut st = RegistryState::new(CoreConfig::default());
    let mut oos = instance("a", "1");
    oos.status = Status::OutOfService;
    register(&mut st, oos, T0);
    let mut up = instance("a", "1");
    up.last_dirty_timestamp = 200;
    register(&mut st, up, T0 + 1);
    assert_eq!(status_of(&st, "a", "1"), Status::OutOfService);
}

#[test]
fn stale_registration_keeps_stored_data_but_refreshes_lease() {
    let mut st = RegistryState::new(CoreConfig::default());
    let mut newer = instance("a", "1");
    newer.last_dirty_timestamp = 500;
    newer.ip_addr = "10.0.0.1".into();
    register(&mut st, newer, T0);
    let mut older = instance("a", "1");
    older.last_dirty_timestamp = 400;
    older.ip_addr = "10.0.0.2".into();
    register(&mut st, older, T0 + 50_000);
    let e = st.get(&key("a", "1")).unwrap();
    assert_eq!(e.info.ip_addr, "10.0.0.1");
    assert_eq!(e.last_renewal_ts, T0 + 50_000);
}

#[test]
fn registering_with_an_override_creates_it() {
    let mut st = RegistryState::new(CoreConfig::default());
    let mut i = instance("a", "1");
    i.overridden_status = Status::OutOfService;
    register(&mut st, i, T0);
    assert_eq!(status_of(&st, "a", "1"), Status::OutOfService);
    assert_eq!(st.get(&key("a", "1")).unwrap().status_override, Some(Status::OutOfService));
}

#[test]
fn metadata_override_survives_reregistration() {
    let mut st = RegistryState::new(CoreConfig::default());
    register(&mut st, instance("a", "1"), T0);
    let entries = BTreeMap::from([("weight".to_string(), "5".to_string())]);
    st.apply(Command::UpdateMetadata { key: key("a", "1"), entries, now: T0 + 1 });
    let mut again = instance("a", "1");
    again.last_dirty_timestamp = 200;
    again.metadata.insert("zone".into(), "z1".into());
    register(&mut st, again, T0 + 2);
    let md = &st.get(&key("a", "1")).unwrap().info.metadata;
    assert_eq!(md.get("weight").map(String::as_str), Some("5"));
    assert_eq!(md.get("zone").map(String::as_str), Some("z1"));
}

#[test]
fn commands_on_unknown_instances_change_nothing() {
    let mut st = RegistryState::new(CoreConfig::default());
    let v = st.version();
    for cmd in [
        Command::Cancel { key: key("a", "x"), now: T0 },
        Command::SetStatusOverride { key: key("a", "x"), status: Status::Down, last_dirty: None, now: T0 },
        Command::DeleteStatusOverride { key: key("a", "x"), status: Status::Unknown, last_dirty: None, now: T0 },
        Command::UpdateMetadata { key: key("a", "x"), entries: BTreeMap::new(), now: T0 },
    ] {
        let applied = st.apply(cmd);
        assert_eq!(applied.outcome, Outcome::NotFound);
        assert!(applied.changed.is_empty());
    }
    assert_eq!(st.version(), v);
    assert!(st.delta().is_empty());
}

#[test]
fn delta_shows_latest_action_per_instance_within_retention() {
    let mut st = RegistryState::new(CoreConfig { delta_retention_ms: 180_000, ..CoreConfig::default() });
    register(&mut st, instance("a", "1"), T0);
    register(&mut st, instance("a", "2"), T0);
    st.apply(Command::SetStatusOverride { key: key("a", "2"), status: Status::Down, last_dirty: None, now: T0 + 10 });
    st.apply(Command::Cancel { key: key("a", "1"), now: T0 + 20 });
    let d = views::delta(&st, T0 + 30);
    assert_eq!(d.apps.len(), 1);
    let actions: Vec<_> =
        d.apps[0].instances.iter().map(|i| (i.info.instance_id.as_str(), i.info.action_type.unwrap())).collect();
    assert_eq!(actions, vec![("2", ActionType::Modified), ("1", ActionType::Deleted)]);
    // The hash describes the whole registry after the changes: one DOWN instance.
    assert_eq!(d.apps_hashcode, "DOWN_1_");
    assert_eq!(d.versions_delta, st.version().to_string());
    // Changes older than the retention drop out, by read time and by the next command.
    assert!(views::delta(&st, T0 + 180_021).apps.is_empty());
    register(&mut st, instance("b", "1"), T0 + 200_000);
    assert_eq!(st.delta().len(), 1);
}

#[test]
fn delta_queue_is_capped_in_bytes_oldest_first() {
    let cap = 1 << 20;
    let mut st = RegistryState::new(CoreConfig { delta_max_bytes: cap, ..CoreConfig::default() });
    let mut big = instance("a", "1");
    big.metadata = (0..4).map(|n| (format!("k{n}"), "v".repeat(7000))).collect();
    let size = big.approx_bytes();
    assert!(size > 28_000);
    // Re-registering one large instance many times keeps a bounded number of copies.
    for n in 0..500 {
        let mut i = big.clone();
        i.last_dirty_timestamp = T0 + n;
        register(&mut st, i, T0 + n);
    }
    assert!(st.delta().bytes() <= cap, "{} bytes queued", st.delta().bytes());
    assert!(st.delta().len() >= cap / size - 1 && st.delta().len() <= cap / size);
    // The newest change is what a delta shows.
    let d = views::delta(&st, T0 + 500);
    assert_eq!(d.apps[0].instances[0].info.last_dirty_timestamp, T0 + 499);
    // Pruning by age keeps the byte count right.
    register(&mut st, instance("b", "1"), T0 + 1_000_000);
    assert_eq!(st.delta().len(), 1);
    assert_eq!(st.delta().bytes(), instance("b", "1").approx_bytes());
}

#[test]
fn hash_code_format() {
    assert_eq!(hash_code([]), "");
    assert_eq!(hash_code([Status::Up]), "UP_1_");
    assert_eq!(
        hash_code([Status::Up, Status::Down, Status::Up, Status::OutOfService, Status::Starting, Status::Unknown]),
        "DOWN_1_OUT_OF_SERVICE_1_STARTING_1_UNKNOWN_1_UP_2_"
    );
}

#[test]
fn replicas_applying_the_same_commands_agree() {
    let mut cmds = Vec::new();
    for n in 0..20u64 {
        cmds.push(Command::Register {
            instance: Box::new(instance(&format!("app{}", n % 3), &n.to_string())),
            now: T0 + n,
            from_peer: false,
        });
    }
    cmds.push(Command::SetStatusOverride {
        key: key("app1", "4"),
        status: Status::OutOfService,
        last_dirty: Some(7),
        now: T0 + 30,
    });
    cmds.push(Command::Cancel { key: key("app0", "3"), now: T0 + 31 });
    cmds.push(Command::Evict { keys: vec![key("app2", "5"), key("app2", "8")], now: T0 + 32 });
    let mut a = RegistryState::new(CoreConfig::default());
    let mut b = RegistryState::new(CoreConfig::default());
    for c in &cmds {
        a.apply(c.clone());
    }
    // b also sees renewals, which must not affect registry contents, hash or delta.
    for c in &cmds {
        b.apply(c.clone());
        b.renew(&key("app1", "1"), c.now(), None);
    }
    let render = |st: &RegistryState| {
        let full = views::full(st);
        let delta = views::delta(st, T0 + 40);
        let ids = |v: &views::AppsView| {
            v.apps
                .iter()
                .flat_map(|a| a.instances.iter().map(|i| (i.info.clone(), i.stamps.registration_timestamp)))
                .collect::<Vec<_>>()
        };
        (ids(&full), full.apps_hashcode.clone(), ids(&delta), delta.versions_delta.clone(), st.version())
    };
    assert_eq!(render(&a), render(&b));
}

#[test]
fn restored_instances_get_a_fresh_lease() {
    let mut st = RegistryState::new(CoreConfig::default());
    register(&mut st, instance("a", "1"), T0);
    st.apply(Command::SetStatusOverride {
        key: key("a", "1"),
        status: Status::OutOfService,
        last_dirty: None,
        now: T0 + 1,
    });
    let saved = st.persisted(&key("a", "1")).unwrap();
    let mut restored = RegistryState::new(CoreConfig::default());
    let restart = T0 + 10 * 60_000;
    restored.restore(vec![saved], [], 7, restart);
    assert_eq!(restored.version(), 7);
    let e = restored.get(&key("a", "1")).unwrap();
    assert_eq!(e.last_renewal_ts, restart);
    assert!(!e.is_expired(restart + 90_000, 0));
    assert_eq!(e.info.status, Status::OutOfService);
    assert_eq!(e.status_override, Some(Status::OutOfService));
}

#[test]
fn delta_since_a_version_holds_only_later_changes() {
    let mut st = RegistryState::new(CoreConfig::default());
    register(&mut st, instance("a", "1"), T0);
    register(&mut st, instance("a", "2"), T0 + 1);
    let v = st.version();
    register(&mut st, instance("b", "3"), T0 + 2);
    st.apply(Command::Cancel { key: key("a", "1"), now: T0 + 3 });
    let ids = |view: views::AppsView| -> Vec<String> {
        view.apps.iter().flat_map(|a| a.instances.iter().map(|i| i.info.instance_id.clone())).collect()
    };
    assert_eq!(ids(views::delta_since(&st, T0 + 4, v)), ["3", "1"]);
    assert_eq!(ids(views::delta_since(&st, T0 + 4, st.version())), Vec::<String>::new());
    // The whole window, and the registry's version and hash, as the ordinary delta has them.
    let all = views::delta_since(&st, T0 + 4, 0);
    assert_eq!(ids(views::delta_since(&st, T0 + 4, 0)), ["2", "1", "3"]);
    assert_eq!(all.versions_delta, st.version().to_string());
    assert_eq!(all.apps_hashcode, st.hash_code());
}
