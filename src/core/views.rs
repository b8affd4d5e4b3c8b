//! Read views of the registry: what a response shows, taken under the state lock as cheap
//! `Arc` clones and encoded outside it.

use std::sync::Arc;

use super::model::{vip_list_contains, InstanceInfo, LeaseStamps};
use super::state::{hash_code, Entry, RegistryState};

/// One instance as shown to readers.
#[derive(Debug, Clone)]
pub struct InstanceView {
    pub info: Arc<InstanceInfo>,
    pub stamps: LeaseStamps,
}

impl InstanceView {
    fn of(e: &Entry) -> Self {
        InstanceView { info: e.info.clone(), stamps: e.stamps() }
    }
}

/// One application.
#[derive(Debug, Clone)]
pub struct AppView {
    pub name: String,
    pub instances: Vec<InstanceView>,
}

/// An `applications` document.
#[derive(Debug, Clone)]
pub struct AppsView {
    /// `versions__delta`: `1` for a full fetch, the registry version for a delta, `-1` for VIPs.
    pub versions_delta: String,
    pub apps_hashcode: String,
    pub apps: Vec<AppView>,
}

/// The full registry (`GET apps`).
pub fn full(state: &RegistryState) -> AppsView {
    let apps = state
        .apps()
        .map(|(name, m)| AppView { name: name.clone(), instances: m.values().map(InstanceView::of).collect() })
        .collect();
    AppsView { versions_delta: "1".into(), apps_hashcode: state.hash_code(), apps }
}

/// One application (`GET apps/{app}`); `None` when it has no instances.
pub fn app(state: &RegistryState, name: &str) -> Option<AppView> {
    state
        .apps()
        .find(|(n, _)| n.as_str() == name)
        .map(|(n, m)| AppView { name: n.clone(), instances: m.values().map(InstanceView::of).collect() })
}

/// Instances whose (secure) VIP list contains `vip` (`GET vips/{vip}`, `GET svips/{svip}`).
pub fn vip(state: &RegistryState, vip: &str, secure: bool) -> AppsView {
    let mut statuses = Vec::new();
    let apps: Vec<AppView> = state
        .apps()
        .filter_map(|(name, m)| {
            let instances: Vec<InstanceView> = m
                .values()
                .filter(|e| {
                    let list = if secure { &e.info.secure_vip_address } else { &e.info.vip_address };
                    vip_list_contains(list.as_deref(), vip)
                })
                .map(InstanceView::of)
                .collect();
            statuses.extend(instances.iter().map(|i| i.info.status));
            (!instances.is_empty()).then(|| AppView { name: name.clone(), instances })
        })
        .collect();
    AppsView { versions_delta: "-1".into(), apps_hashcode: hash_code(statuses), apps }
}

/// Recent changes (`GET apps/delta`), with the hash of the whole registry at the same moment
/// so a client can check its merged copy against it.
pub fn delta(state: &RegistryState, now: u64) -> AppsView {
    delta_since(state, now, 0)
}

/// The changes after registry version `since` (a long-polled delta: the client has applied
/// everything up to `since`), with the whole registry's hash code.
pub fn delta_since(state: &RegistryState, now: u64, since: u64) -> AppsView {
    let mut apps: Vec<AppView> = Vec::new();
    // Position of each app in `apps` (a linear search per item was quadratic in the number
    // of changed applications).
    let mut index: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for item in state.delta().latest_since(now, state.delta_retention_ms(), since) {
        let view = InstanceView { info: item.info.clone(), stamps: item.stamps };
        match index.get(item.key.app.as_str()) {
            Some(&i) => apps[i].instances.push(view),
            None => {
                index.insert(&item.key.app, apps.len());
                apps.push(AppView { name: item.key.app.clone(), instances: vec![view] });
            }
        }
    }
    AppsView { versions_delta: state.version().to_string(), apps_hashcode: state.hash_code(), apps }
}

/// A single instance view.
pub fn instance(e: &Entry) -> InstanceView {
    InstanceView::of(e)
}
