//! The registry state and the one `apply` function that turns commands into state.
//!
//! Nothing here reads a clock or does I/O: time comes from the command (or the caller of
//! `renew`), which keeps replicas deterministic and tests exact.

use std::collections::{btree_map, BTreeMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::command::{Command, Outcome, Replica};
use super::delta::{DeltaItem, DeltaQueue};
use super::digest::{self, AppDigests};
use super::limits;
use super::meter::RenewMeter;
use super::model::{ActionType, InstanceInfo, InstanceKey, LeaseStamps, Status};
use super::rules::{resolve_status, RuleInput};
use super::tombstones::Tombstones;
use super::version::{self, Rank};

/// One registration: the instance, its lease and the server-side overrides attached to it.
#[derive(Debug, Clone)]
pub struct Entry {
    pub info: Arc<InstanceInfo>,
    /// Creation time of the current lease (reset by every register, as Eureka does).
    pub registration_ts: u64,
    /// First time the instance was seen UP; kept across re-registrations.
    pub service_up_ts: u64,
    /// Last renewal (or lease-refreshing command). Not persisted: a restart grants a fresh lease.
    pub last_renewal_ts: u64,
    /// Operator-set status override (`PUT …/status`).
    pub status_override: Option<Status>,
    /// Operator-set metadata (`PUT …/metadata`), merged over what the client registers so a
    /// re-registration does not silently drop it.
    pub metadata_override: BTreeMap<String, String>,
}

impl Entry {
    /// The durable record, borrowed.
    pub fn persisted_ref(&self) -> PersistedRef<'_> {
        PersistedRef {
            info: &self.info,
            registration_ts: self.registration_ts,
            service_up_ts: self.service_up_ts,
            status_override: self.status_override,
            metadata_override: &self.metadata_override,
        }
    }

    /// Lease timestamps as written into `leaseInfo`.
    pub fn stamps(&self) -> LeaseStamps {
        LeaseStamps {
            registration_timestamp: self.registration_ts,
            last_renewal_timestamp: self.last_renewal_ts,
            eviction_timestamp: 0,
            service_up_timestamp: self.service_up_ts,
        }
    }

    /// Lease duration in milliseconds.
    pub fn duration_ms(&self) -> u64 {
        u64::from(self.info.lease.duration_secs) * 1000
    }

    /// Whether the lease ran out: `duration` has passed since the last renewal (plus
    /// `slack_ms`). Eureka counts the duration twice here; synod does not.
    pub fn is_expired(&self, now: u64, slack_ms: u64) -> bool {
        now > self.last_renewal_ts.saturating_add(self.duration_ms()).saturating_add(slack_ms)
    }
}

/// The durable part of an [`Entry`]: what the store keeps and a restart restores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PersistedEntry {
    pub info: InstanceInfo,
    pub registration_ts: u64,
    pub service_up_ts: u64,
    pub status_override: Option<Status>,
    pub metadata_override: BTreeMap<String, String>,
}

impl PersistedEntry {
    /// The instance's key.
    pub fn key(&self) -> InstanceKey {
        InstanceKey { app: self.info.app.clone(), id: self.info.instance_id.clone() }
    }

    /// Borrowed, to write it to a store.
    pub fn as_ref(&self) -> PersistedRef<'_> {
        PersistedRef {
            info: &self.info,
            registration_ts: self.registration_ts,
            service_up_ts: self.service_up_ts,
            status_override: self.status_override,
            metadata_override: &self.metadata_override,
        }
    }
}

/// A borrowed [`PersistedEntry`]: serializes to the same bytes without cloning the instance.
#[derive(Debug, Serialize)]
pub struct PersistedRef<'a> {
    pub info: &'a InstanceInfo,
    pub registration_ts: u64,
    pub service_up_ts: u64,
    pub status_override: Option<Status>,
    pub metadata_override: &'a BTreeMap<String, String>,
}

/// Result of [`RegistryState::apply`].
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    pub outcome: Outcome,
    /// Instances whose durable record changed (present: write it; absent: delete it).
    pub changed: Vec<InstanceKey>,
    /// Instances whose tombstone changed (present: write it; absent: delete it).
    pub buried: Vec<InstanceKey>,
}

impl Applied {
    /// Whether anything durable changed.
    pub fn is_empty(&self) -> bool {
        self.changed.is_empty() && self.buried.is_empty()
    }
}

/// Result of a renewal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenewOutcome {
    /// Renewed.
    Renewed,
    /// No such instance, or its status is UNKNOWN (Eureka's "please re-register" signal).
    NotFound,
    /// Renewed, but the client holds newer data than the server (its `lastDirtyTimestamp` is
    /// later): answer 404 so it re-registers.
    ClientNewer,
    /// Renewed, and the server holds newer data than the client.
    ServerNewer,
}

/// Tunables of the core that affect state transitions.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// How long changes stay in the delta queue.
    pub delta_retention_ms: u64,
    /// Most memory the delta queue may hold (see [`DeltaQueue`]).
    pub delta_max_bytes: usize,
    /// How long a cancel's tombstone is kept; 0 keeps none (a single node, and raft, whose
    /// log orders every change, need none).
    pub tombstone_retention_ms: u64,
    /// Most tombstones kept; beyond it the oldest go first.
    pub max_tombstones: usize,
    /// Keep per-application digests up to date (p2p anti-entropy reads them).
    pub digests: bool,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            delta_retention_ms: 180_000,
            delta_max_bytes: 64 * 1024 * 1024,
            tombstone_retention_ms: 0,
            max_tombstones: 2_000_000,
            digests: false,
        }
    }
}

/// Farthest ahead of this node's clock an adopted version may be. A version years ahead
/// would make every later local change of the instance lose to it.
pub const MAX_VERSION_AHEAD_MS: u64 = 3600 * 1000;

/// The whole registry.
#[derive(Debug, Clone, Default)]
pub struct RegistryState {
    /// APP → id → entry. Ordered maps give every replica the same iteration order.
    apps: BTreeMap<String, BTreeMap<String, Entry>>,
    /// Number of instances across all applications.
    count: usize,
    /// Instances by status, in [`Status::HASH_ORDER`]: the hash code without a walk over
    /// every instance.
    statuses: [usize; 5],
    delta: DeltaQueue,
    tombstones: Tombstones,
    /// Present when [`CoreConfig::digests`] is set.
    digests: Option<AppDigests>,
    meter: RenewMeter,
    /// Renewals by result since start, in [`super::counters::RENEW_RESULTS`] order (kept
    /// here, under the registry lock every renewal already holds, rather than in atomics
    /// that two cores would pass back and forth).
    renew_results: [u64; super::counters::RENEW_RESULTS.len()],
    /// Number of commands that changed the registry; also served as `versions__delta`.
    version: u64,
    config: CoreConfig,
}

impl RegistryState {
    /// An empty registry.
    pub fn new(config: CoreConfig) -> Self {
        let digests = config.digests.then(AppDigests::default);
        RegistryState { config, digests, ..Default::default() }
    }

    /// Rebuilds the registry from stored entries and tombstones. Every restored instance gets
    /// a fresh lease starting at `now`, so live clients renew before anything can expire.
    pub fn restore(
        &mut self,
        entries: impl IntoIterator<Item = PersistedEntry>,
        tombstones: impl IntoIterator<Item = (InstanceKey, u64)>,
        version: u64,
        now: u64,
    ) {
        // The change counter continues where it stopped, so `versions__delta` never repeats.
        self.version = self.version.max(version);
        for (key, v) in tombstones {
            self.tombstones.bury(key, v);
        }
        let recompute = self.digests.is_some();
        for p in entries {
            let key = p.key();
            let entry = Entry {
                info: Arc::new(p.info),
                registration_ts: p.registration_ts,
                service_up_ts: p.service_up_ts,
                last_renewal_ts: now,
                status_override: p.status_override,
                metadata_override: p.metadata_override,
            };
            self.insert(key, entry);
        }
        if recompute {
            self.digests = Some(self.compute_digests());
        }
    }

    /// Every application's digest computed afresh.
    pub fn compute_digests(&self) -> AppDigests {
        let mut d = AppDigests::default();
        for (app, m) in self.apps() {
            for (id, e) in m {
                d.add(app, digest::part(id, Rank::live(&e.info, &e.metadata_override)));
            }
        }
        for (k, v) in self.tombstones.iter() {
            d.add(&k.app, digest::part(&k.id, Rank::deleted(v)));
        }
        d
    }

    /// The per-application digests: those kept up to date (see [`CoreConfig::digests`]),
    /// else computed now.
    pub fn digests(&self) -> std::borrow::Cow<'_, AppDigests> {
        match &self.digests {
            Some(d) => std::borrow::Cow::Borrowed(d),
            None => std::borrow::Cow::Owned(self.compute_digests()),
        }
    }

    /// Takes `key`'s share out of (`add` false) or into its application's digest.
    fn digest_share(&mut self, key: &InstanceKey, add: bool) {
        let Some(rank) = self.digests.as_ref().and_then(|_| self.rank(key)) else { return };
        let part = digest::part(&key.id, rank);
        if let Some(d) = self.digests.as_mut() {
            if add {
                d.add(&key.app, part);
            } else {
                d.sub(&key.app, part);
            }
        }
    }

    /// The registry's change counter.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Total number of instances.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether the registry is empty.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Number of applications with instances.
    pub fn app_count(&self) -> usize {
        self.apps.len()
    }

    /// Whether application `name` has instances.
    pub fn has_app(&self, name: &str) -> bool {
        self.apps.get(name).is_some_and(|m| !m.is_empty())
    }

    /// Looks an instance up.
    pub fn get(&self, key: &InstanceKey) -> Option<&Entry> {
        self.apps.get(&key.app)?.get(&key.id)
    }

    /// Looks an instance up by id alone: the first application (by name) that has it. Ids
    /// are only unique per application (eureka-js-client uses the host name as id).
    pub fn get_by_id(&self, id: &str) -> Option<&Entry> {
        self.apps.values().find_map(|m| m.get(id))
    }

    /// Applications in name order, each with its instances in id order.
    pub fn apps(&self) -> impl Iterator<Item = (&String, &BTreeMap<String, Entry>)> {
        self.apps.iter().filter(|(_, m)| !m.is_empty())
    }

    /// Every entry.
    pub fn entries(&self) -> impl Iterator<Item = (&String, &Entry)> {
        self.apps.values().flat_map(|m| m.iter())
    }

    /// The durable record of an instance, borrowed.
    pub fn persisted_ref(&self, key: &InstanceKey) -> Option<PersistedRef<'_>> {
        self.get(key).map(Entry::persisted_ref)
    }

    /// A copy of every entry (instances are shared, not cloned), for a snapshot encoded
    /// outside the registry lock.
    pub fn snapshot_entries(&self) -> Vec<Entry> {
        self.entries().map(|(_, e)| e.clone()).collect()
    }

    /// Replaces the whole registry with `entries` (a replicated snapshot): every instance gets
    /// a fresh lease from `now`; the delta queue starts empty (clients reconcile through the
    /// hash code) and the change counter becomes `version`.
    pub fn replace(&mut self, entries: impl IntoIterator<Item = PersistedEntry>, version: u64, now: u64) {
        self.apps.clear();
        self.count = 0;
        self.statuses = [0; 5];
        self.delta = DeltaQueue::default();
        self.version = version;
        self.tombstones = Tombstones::default();
        self.restore(entries, [], version, now);
    }

    /// Grants every instance a fresh lease from `now` (a new lease owner takes over: it has
    /// not seen the renewals that went to its predecessor).
    pub fn refresh_leases(&mut self, now: u64) {
        for m in self.apps.values_mut() {
            for e in m.values_mut() {
                e.last_renewal_ts = e.last_renewal_ts.max(now);
            }
        }
    }

    /// The durable record of an instance.
    pub fn persisted(&self, key: &InstanceKey) -> Option<PersistedEntry> {
        self.get(key).map(|e| PersistedEntry {
            info: (*e.info).clone(),
            registration_ts: e.registration_ts,
            service_up_ts: e.service_up_ts,
            status_override: e.status_override,
            metadata_override: e.metadata_override.clone(),
        })
    }

    /// The delta queue.
    pub fn delta(&self) -> &DeltaQueue {
        &self.delta
    }

    /// The tombstones of cancelled instances.
    pub fn tombstones(&self) -> &Tombstones {
        &self.tombstones
    }

    /// The last-writer-wins rank of what this node holds for `key`: its copy, else its
    /// tombstone.
    pub fn rank(&self, key: &InstanceKey) -> Option<Rank> {
        match self.get(key) {
            Some(e) => Some(Rank::live(&e.info, &e.metadata_override)),
            None => self.tombstones.get(key).map(Rank::deleted),
        }
    }

    /// The version the next change of `key` gets at `now`.
    fn next_version(&self, key: &InstanceKey, now: u64) -> u64 {
        let previous = match self.get(key) {
            Some(e) => Some(e.info.last_updated_timestamp),
            None => self.tombstones.get(key),
        };
        version::next(previous, now)
    }

    /// Delta retention in milliseconds.
    pub fn delta_retention_ms(&self) -> u64 {
        self.config.delta_retention_ms
    }

    /// Renewals in the minute ending at `now`.
    pub fn renews_last_min(&self, now: u64) -> u64 {
        self.meter.last_minute(now)
    }

    /// Renewals per calendar minute over the last quarter hour, oldest first.
    pub fn renews_per_minute(&self, now: u64) -> [u64; super::meter::MINUTES] {
        self.meter.per_minute(now)
    }

    /// Eureka's reconcile hash over the whole registry: `STATUS_count_` per status present,
    /// in lexicographic status order (e.g. `DOWN_1_UP_3_`).
    pub fn hash_code(&self) -> String {
        hash_code_of_counts(self.statuses)
    }

    /// Instances by status, in [`Status::HASH_ORDER`].
    pub fn status_counts(&self) -> [usize; 5] {
        self.statuses
    }

    /// Moves one instance between status counts (`None`: absent).
    fn recount(&mut self, old: Option<Status>, new: Option<Status>) {
        if let Some(s) = old {
            self.statuses[s.hash_index()] -= 1;
        }
        if let Some(s) = new {
            self.statuses[s.hash_index()] += 1;
        }
    }

    /// Heartbeat. Touches only the lease table and the renew meter.
    pub fn renew(&mut self, key: &InstanceKey, now: u64, last_dirty: Option<u64>) -> RenewOutcome {
        let outcome = self.renew_lease(key, now, last_dirty);
        self.renew_results[super::counters::renew_slot(outcome)] += 1;
        outcome
    }

    /// Renewals by result since start, in [`super::counters::RENEW_RESULTS`] order.
    pub fn renew_results(&self) -> [u64; super::counters::RENEW_RESULTS.len()] {
        self.renew_results
    }

    fn renew_lease(&mut self, key: &InstanceKey, now: u64, last_dirty: Option<u64>) -> RenewOutcome {
        let Some(entry) = self.apps.get_mut(&key.app).and_then(|m| m.get_mut(&key.id)) else {
            return RenewOutcome::NotFound;
        };
        // The rule chain yields UNKNOWN for a renewal exactly when the stored status is
        // UNKNOWN (a client-reported DOWN/STARTING/UNKNOWN is kept as is; an override or an
        // UP/OUT_OF_SERVICE view was already folded into the stored status when set).
        if entry.info.status == Status::Unknown {
            return RenewOutcome::NotFound;
        }
        entry.last_renewal_ts = entry.last_renewal_ts.max(now);
        self.meter.record(now);
        let stored = entry.info.last_dirty_timestamp;
        match last_dirty {
            Some(d) if d > stored => RenewOutcome::ClientNewer,
            Some(d) if d < stored => RenewOutcome::ServerNewer,
            _ => RenewOutcome::Renewed,
        }
    }

    /// Applies one command. Deterministic: depends only on the state and the command.
    pub fn apply(&mut self, cmd: Command) -> Applied {
        let now = cmd.now();
        self.delta.prune(now, self.config.delta_retention_ms);
        let pruned = self.tombstones.prune(now, self.config.tombstone_retention_ms, self.config.max_tombstones);
        // Digests: the shares of what the command may change come out before it runs and go
        // back in, as they are then, after it.
        let tracked = match &mut self.digests {
            Some(d) => {
                for (k, v) in &pruned {
                    d.sub(&k.app, digest::part(&k.id, Rank::deleted(*v)));
                }
                cmd.keys()
            }
            None => Vec::new(),
        };
        for k in &tracked {
            self.digest_share(k, false);
        }
        let mut applied = match cmd {
            Command::Register { instance, from_peer, .. } => self.register(*instance, now, from_peer),
            Command::Cancel { key, .. } => match self.remove(&key, now) {
                Some(v) => self.buried(changed(Outcome::Applied, vec![key.clone()]), key, v),
                None => not_found(),
            },
            Command::Evict { keys, .. } => {
                // An instance re-registered after the eviction was planned is no longer the
                // lease that expired.
                let mut removed = Vec::new();
                for k in keys {
                    // No tombstone: an eviction is this node's own view of a lease, not a
                    // change other nodes must follow.
                    if self.get(&k).is_some_and(|e| e.registration_ts < now) && self.remove(&k, now).is_some() {
                        removed.push(k);
                    }
                }
                let n = removed.len();
                changed(Outcome::Evicted(n), removed)
            }
            Command::SetStatusOverride { key, status, last_dirty, .. } => {
                self.set_override(&key, status, last_dirty, now)
            }
            Command::DeleteStatusOverride { key, status, last_dirty, .. } => {
                self.delete_override(&key, status, last_dirty, now)
            }
            Command::UpdateMetadata { key, entries, .. } => self.update_metadata(&key, &entries, now),
            Command::Adopt { key, replica, .. } => self.adopt(key, replica, now),
        };
        if !applied.changed.is_empty() {
            self.version += 1;
        }
        for k in &tracked {
            self.digest_share(k, true);
        }
        applied.buried.extend(pruned.into_iter().map(|(k, _)| k));
        applied
    }

    /// Records a tombstone for `key` deleted at `version`, when tombstones are kept.
    fn buried(&mut self, mut applied: Applied, key: InstanceKey, version: u64) -> Applied {
        if self.config.tombstone_retention_ms > 0 {
            self.tombstones.bury(key.clone(), version);
            applied.buried.push(key);
        }
        applied
    }

    /// Takes another node's copy if it ranks above this node's (see [`Command::Adopt`]).
    fn adopt(&mut self, key: InstanceKey, replica: Replica, now: u64) -> Applied {
        if let Replica::Live { entry, .. } = &replica {
            if entry.info.app != key.app || entry.info.instance_id != key.id {
                return changed(Outcome::Rejected, vec![]);
            }
        }
        let incoming = replica.rank();
        if incoming.version > now.saturating_add(MAX_VERSION_AHEAD_MS) {
            return changed(Outcome::Rejected, vec![]);
        }
        match self.rank(&key) {
            // The same copy again (it reached this node by two paths): nothing to do, and
            // nothing newer for the sender to fetch.
            Some(mine) if mine == incoming => return changed(Outcome::Applied, vec![]),
            Some(mine) if mine > incoming => return changed(Outcome::Stale, vec![]),
            _ => {}
        }
        match replica {
            Replica::Deleted { version } => {
                let mut applied = changed(Outcome::Applied, vec![]);
                if self.remove_at(&key, now, version) {
                    applied.changed.push(key.clone());
                }
                self.buried(applied, key, version)
            }
            Replica::Live { entry, renewed } => {
                let existing = self.get(&key);
                let renewed = renewed.min(now);
                // A copy whose lease already ran out is not taken where the instance is
                // absent: the sender is about to evict it (or keeps it only because it
                // preserves itself), and taking it would start the lease over here.
                // Answered as taken, not as stale: nothing newer is held here for the sender
                // to fetch.
                if existing.is_none() && renewed.saturating_add(u64::from(entry.info.lease.duration_secs) * 1000) < now
                {
                    return changed(Outcome::Applied, vec![]);
                }
                let last_renewal_ts = existing.map_or(renewed, |e| e.last_renewal_ts.max(renewed));
                let action = if existing.is_some() { ActionType::Modified } else { ActionType::Added };
                let PersistedEntry { mut info, registration_ts, service_up_ts, status_override, metadata_override } =
                    *entry;
                info.action_type = Some(action);
                let new = Entry {
                    info: Arc::new(info),
                    registration_ts,
                    service_up_ts,
                    last_renewal_ts,
                    status_override,
                    metadata_override,
                };
                self.delta
                    .push(delta_item(&key, &new, last_renewal_ts, now, self.version), self.config.delta_max_bytes);
                self.insert(key.clone(), new);
                let mut applied = changed(Outcome::Applied, vec![key.clone()]);
                if self.tombstones.lift(&key) {
                    applied.buried.push(key);
                }
                applied
            }
        }
    }

    fn register(&mut self, mut incoming: InstanceInfo, now: u64, from_peer: bool) -> Applied {
        let key = InstanceKey { app: incoming.app.clone(), id: incoming.instance_id.clone() };
        let version = self.next_version(&key, now);
        let lifted = self.tombstones.lift(&key);
        let ids = self.apps.entry(key.app.clone()).or_default();
        // One search of the (large) id map serves both reading the stored copy and storing
        // the new one: under a registration storm the searches' cache misses are a visible
        // part of a registration's cost.
        let slot = ids.entry(key.id.clone());
        let existing = match &slot {
            btree_map::Entry::Occupied(o) => Some(o.get()),
            btree_map::Entry::Vacant(_) => None,
        };
        if let Some(e) = existing {
            // Conflict resolution on the client's clock, as Eureka: the stored copy wins when
            // it is strictly newer. Exception: after an override delete the stored status is
            // UNKNOWN and the client is being asked to re-register, so its data must win even
            // if it did not bump its timestamp (otherwise it loops on 404s).
            if e.info.last_dirty_timestamp > incoming.last_dirty_timestamp && e.info.status != Status::Unknown {
                incoming = (*e.info).clone();
            }
        }
        let mut status_override = existing.and_then(|e| e.status_override);
        if status_override.is_none() && incoming.overridden_status != Status::Unknown {
            status_override = Some(incoming.overridden_status);
        }
        incoming.overridden_status = status_override.unwrap_or(Status::Unknown);
        let metadata_override = existing.map(|e| e.metadata_override.clone()).unwrap_or_default();
        for (k, v) in &metadata_override {
            incoming.metadata.insert(k.clone(), v.clone());
        }
        incoming.status = resolve_status(&RuleInput {
            reported: incoming.status,
            override_status: status_override,
            existing: existing.map(|e| e.info.status),
            from_peer,
        });
        let mut service_up_ts = existing.map_or(0, |e| e.service_up_ts);
        if incoming.status == Status::Up && service_up_ts == 0 {
            service_up_ts = now;
        }
        incoming.action_type = Some(ActionType::Added);
        incoming.last_updated_timestamp = version;
        let entry = Entry {
            info: Arc::new(incoming),
            registration_ts: now,
            service_up_ts,
            last_renewal_ts: now,
            status_override,
            metadata_override,
        };
        self.delta.push(delta_item(&key, &entry, now, now, self.version), self.config.delta_max_bytes);
        let new_status = entry.info.status;
        let old_status = match slot {
            btree_map::Entry::Occupied(mut o) => Some(o.insert(entry).info.status),
            btree_map::Entry::Vacant(v) => {
                v.insert(entry);
                self.count += 1;
                None
            }
        };
        self.recount(old_status, Some(new_status));
        let mut applied = changed(Outcome::Applied, vec![key.clone()]);
        if lifted {
            applied.buried.push(key);
        }
        applied
    }

    fn set_override(&mut self, key: &InstanceKey, status: Status, last_dirty: Option<u64>, now: u64) -> Applied {
        let Some(entry) = self.entry_mut(key) else { return not_found() };
        entry.last_renewal_ts = entry.last_renewal_ts.max(now);
        // Eureka records nothing when the status already equals the value. synod records
        // every override as a change: an operator can pin a status the instance happens to
        // have right now, and on p2p the write must outrank an older, different override
        // another node may still be sending.
        entry.status_override = Some(status);
        if status == Status::Up && entry.service_up_ts == 0 {
            entry.service_up_ts = now;
        }
        let info = Arc::make_mut(&mut entry.info);
        let old = std::mem::replace(&mut info.status, status);
        info.overridden_status = status;
        info.last_dirty_timestamp = info.last_dirty_timestamp.max(last_dirty.unwrap_or(0));
        self.recount(Some(old), Some(status));
        self.modified(key, now)
    }

    fn delete_override(&mut self, key: &InstanceKey, status: Status, last_dirty: Option<u64>, now: u64) -> Applied {
        let Some(entry) = self.entry_mut(key) else { return not_found() };
        entry.last_renewal_ts = entry.last_renewal_ts.max(now);
        if entry.status_override.take().is_none() {
            // Nothing to remove here, as in Eureka; still a change with its own version, so
            // on p2p it outranks an older override another node may still be sending.
            return self.modified(key, now);
        }
        let info = Arc::make_mut(&mut entry.info);
        info.overridden_status = Status::Unknown;
        let old = std::mem::replace(&mut info.status, status);
        info.last_dirty_timestamp = info.last_dirty_timestamp.max(last_dirty.unwrap_or(0));
        self.recount(Some(old), Some(status));
        self.modified(key, now)
    }

    fn update_metadata(&mut self, key: &InstanceKey, entries: &BTreeMap<String, String>, now: u64) -> Applied {
        let Some(entry) = self.entry_mut(key) else { return not_found() };
        let mut merged = entry.info.metadata.clone();
        merged.extend(entries.iter().map(|(k, v)| (k.clone(), v.clone())));
        if limits::check_metadata(&merged).is_err() {
            return changed(Outcome::Rejected, vec![]);
        }
        entry.last_renewal_ts = entry.last_renewal_ts.max(now);
        let info = Arc::make_mut(&mut entry.info);
        for (k, v) in entries {
            entry.metadata_override.insert(k.clone(), v.clone());
            info.metadata.insert(k.clone(), v.clone());
        }
        self.modified(key, now)
    }

    /// Marks an existing instance MODIFIED and records the change.
    fn modified(&mut self, key: &InstanceKey, now: u64) -> Applied {
        let version = self.next_version(key, now);
        let Some(entry) = self.entry_mut(key) else { return not_found() };
        let info = Arc::make_mut(&mut entry.info);
        info.action_type = Some(ActionType::Modified);
        info.last_updated_timestamp = version;
        let snapshot = entry.clone();
        self.record_delta(key, &snapshot, now);
        changed(Outcome::Applied, vec![key.clone()])
    }

    /// Removes an instance (cancel or eviction), recording a DELETED change; returns the
    /// deletion's version, or `None` when there was no such instance.
    fn remove(&mut self, key: &InstanceKey, now: u64) -> Option<u64> {
        let version = self.next_version(key, now);
        self.remove_at(key, now, version).then_some(version)
    }

    /// Removes an instance as the change with `version`; whether it was there.
    fn remove_at(&mut self, key: &InstanceKey, now: u64, version: u64) -> bool {
        let Some(apps) = self.apps.get_mut(&key.app) else { return false };
        let Some(mut entry) = apps.remove(&key.id) else { return false };
        if apps.is_empty() {
            self.apps.remove(&key.app);
        }
        self.count -= 1;
        self.recount(Some(entry.info.status), None);
        let info = Arc::make_mut(&mut entry.info);
        info.action_type = Some(ActionType::Deleted);
        info.last_updated_timestamp = version;
        let mut stamps = entry.stamps();
        stamps.last_renewal_timestamp = entry.registration_ts;
        stamps.eviction_timestamp = now;
        self.delta.push(
            DeltaItem { at: now, version: self.version + 1, key: key.clone(), info: entry.info, stamps },
            self.config.delta_max_bytes,
        );
        true
    }

    fn record_delta(&mut self, key: &InstanceKey, entry: &Entry, now: u64) {
        self.delta.push(delta_item(key, entry, now, now, self.version), self.config.delta_max_bytes);
    }

    fn entry_mut(&mut self, key: &InstanceKey) -> Option<&mut Entry> {
        self.apps.get_mut(&key.app)?.get_mut(&key.id)
    }

    fn insert(&mut self, key: InstanceKey, entry: Entry) {
        let new = entry.info.status;
        let old = self.apps.entry(key.app).or_default().insert(key.id, entry).map(|e| e.info.status);
        if old.is_none() {
            self.count += 1;
        }
        self.recount(old, Some(new));
    }
}

/// The delta-queue item for a change of `key` to `entry` by a command at `now`, which takes
/// the registry from `version` to the next one; the delta shows the lease renewed at
/// `renewed`.
fn delta_item(key: &InstanceKey, entry: &Entry, renewed: u64, now: u64, version: u64) -> DeltaItem {
    // Every client command that records a change also refreshes the lease, so the renewal
    // time shown in the delta is the command's own time; taking it from the (local) lease
    // table would make replicas' deltas differ.
    let mut stamps = entry.stamps();
    stamps.last_renewal_timestamp = renewed;
    DeltaItem { at: now, version: version + 1, key: key.clone(), info: entry.info.clone(), stamps }
}

fn changed(outcome: Outcome, keys: Vec<InstanceKey>) -> Applied {
    Applied { outcome, changed: keys, buried: vec![] }
}

fn not_found() -> Applied {
    changed(Outcome::NotFound, vec![])
}

/// Eureka's reconcile hash over a set of statuses.
pub fn hash_code(statuses: impl IntoIterator<Item = Status>) -> String {
    let mut counts = [0usize; 5];
    for s in statuses {
        counts[s.hash_index()] += 1;
    }
    hash_code_of_counts(counts)
}

/// Eureka's reconcile hash from instance counts by status, in [`Status::HASH_ORDER`].
pub fn hash_code_of_counts(counts: [usize; 5]) -> String {
    let mut out = String::new();
    for (s, n) in Status::HASH_ORDER.iter().zip(counts) {
        if n > 0 {
            out.push_str(s.as_str());
            out.push('_');
            out.push_str(&n.to_string());
            out.push('_');
        }
    }
    out
}
