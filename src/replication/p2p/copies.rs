//! What a node holds, as the versioned items synod nodes exchange: whole copies of
//! instances, tombstones of cancelled ones and versioned heartbeats. Batches, the listings
//! anti-entropy and start-up sync read, and the digests that say which applications differ
//! are all built here, so every path compares copies by the same rank.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

pub use super::protocol::WireItem;
use super::protocol::{Action, Item, Versioned};
use crate::core::model::InstanceKey;
use crate::core::state::{Entry, RegistryState};
use crate::core::version::Rank;
use crate::core::views;

fn item(action: Action, key: &InstanceKey, synod: Versioned) -> Item {
    Item {
        action,
        app: key.app.clone(),
        id: key.id.clone(),
        last_dirty_timestamp: None,
        status: None,
        overridden_status: None,
        instance: None,
        synod: Some(synod),
    }
}

/// A whole copy of an instance, sent as `action`.
pub fn copy(action: Action, key: &InstanceKey, e: &Entry) -> WireItem {
    let mut i = item(
        action,
        key,
        Versioned {
            version: e.info.last_updated_timestamp,
            registered: e.registration_ts,
            service_up: e.service_up_ts,
            renewed: e.last_renewal_ts,
            status_override: e.status_override,
            metadata_override: e.metadata_override.clone(),
        },
    );
    i.last_dirty_timestamp = Some(e.info.last_dirty_timestamp);
    i.status = Some(e.info.status);
    i.overridden_status = e.status_override;
    (i, Some(views::instance(e)))
}

/// A heartbeat naming the version the sender holds.
pub fn heartbeat(key: &InstanceKey, e: &Entry) -> WireItem {
    let mut i =
        item(Action::Heartbeat, key, Versioned { version: e.info.last_updated_timestamp, ..Default::default() });
    i.last_dirty_timestamp = Some(e.info.last_dirty_timestamp);
    i.status = Some(e.info.status);
    i.overridden_status = e.status_override;
    (i, None)
}

/// A cancel carrying the deletion's version.
pub fn tombstone(key: &InstanceKey, version: u64) -> WireItem {
    (item(Action::Cancel, key, Versioned { version, ..Default::default() }), None)
}

/// A cancel without a version, as Eureka sends it.
pub fn unversioned_cancel(key: &InstanceKey) -> WireItem {
    let mut i = item(Action::Cancel, key, Versioned::default());
    i.synod = None;
    (i, None)
}

/// What `st` holds for `key`, as an item: its copy, else its tombstone.
pub fn held(st: &RegistryState, key: &InstanceKey) -> Option<WireItem> {
    match st.get(key) {
        Some(e) => Some(copy(Action::Register, key, e)),
        None => st.tombstones().get(key).map(|v| tombstone(key, v)),
    }
}

/// What a node holds (of one application, or of all), taken under the registry lock as
/// cheap clones and turned into digests or items outside it.
pub struct Holdings {
    pub copies: Vec<(InstanceKey, Entry)>,
    pub tombstones: Vec<(InstanceKey, u64)>,
}

impl Holdings {
    /// Takes what `st` holds of `app` (every application when `None`).
    pub fn take(st: &RegistryState, app: Option<&str>) -> Holdings {
        let key = |app: &str, id: &str| InstanceKey { app: app.to_string(), id: id.to_string() };
        let copies = st
            .apps()
            .filter(|(name, _)| app.is_none_or(|a| a == name.as_str()))
            .flat_map(|(name, m)| m.iter().map(|(id, e)| (key(name, id), e.clone())))
            .collect();
        let tombstones = match app {
            Some(a) => st.tombstones().of_app(a).map(|(k, v)| (k.clone(), v)).collect(),
            None => st.tombstones().iter().map(|(k, v)| (k.clone(), v)).collect(),
        };
        Holdings { copies, tombstones }
    }

    /// Every copy and tombstone as an item.
    pub fn items(&self) -> Vec<WireItem> {
        let copies = self.copies.iter().map(|(k, e)| copy(Action::Register, k, e));
        copies.chain(self.tombstones.iter().map(|(k, v)| tombstone(k, *v))).collect()
    }

    /// What the holder of `self` has that ranks above what a peer listed (or that the peer
    /// lacks): the items that bring the peer up to date. A copy whose lease ran out here is
    /// left out: the peer would not take it.
    pub fn newer_than(&self, listed: &[Item], now: u64) -> Vec<(Action, InstanceKey)> {
        let theirs: HashMap<InstanceKey, Rank> =
            listed.iter().filter_map(|i| i.replica().map(|r| (i.key(), r.rank()))).collect();
        let behind = |k: &InstanceKey, mine: Rank| theirs.get(k).is_none_or(|r| *r < mine);
        let copies = self
            .copies
            .iter()
            .filter(|(k, e)| !e.is_expired(now, 0) && behind(k, Rank::live(&e.info, &e.metadata_override)))
            .map(|(k, _)| (Action::Register, k.clone()));
        let tombstones = self
            .tombstones
            .iter()
            .filter(|(k, v)| behind(k, Rank::deleted(*v)))
            .map(|(k, _)| (Action::Cancel, k.clone()));
        copies.chain(tombstones).collect()
    }
}

/// The digest of what `st` holds: one hash per application over the ranks of its copies
/// and tombstones (see [`crate::core::digest`]).
pub fn digest(st: &RegistryState) -> Digest {
    Digest { apps: st.digests().hex() }
}

/// A node's registry summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    /// Application → hash of its copies and tombstones.
    pub apps: BTreeMap<String, String>,
}

impl Digest {
    /// Applications whose hashes differ, including those only one side has.
    pub fn differing<'a>(&'a self, other: &'a Digest) -> Vec<&'a String> {
        let mine = self.apps.iter().filter(|(a, h)| other.apps.get(*a) != Some(h)).map(|(a, _)| a);
        let theirs_only = other.apps.keys().filter(|a| !self.apps.contains_key(*a));
        mine.chain(theirs_only).collect()
    }
}
