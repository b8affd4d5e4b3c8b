//! The registry's data model: instances as Eureka describes them, plus the enums the wire
//! protocol uses. Everything here is plain data, serializable for the persistent store.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An instance's status (`InstanceInfo.InstanceStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Status {
    Up,
    Down,
    Starting,
    OutOfService,
    Unknown,
}

impl Status {
    /// The wire spelling (`UP`, `OUT_OF_SERVICE`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Up => "UP",
            Status::Down => "DOWN",
            Status::Starting => "STARTING",
            Status::OutOfService => "OUT_OF_SERVICE",
            Status::Unknown => "UNKNOWN",
        }
    }

    /// The status's position in [`Status::HASH_ORDER`].
    pub fn hash_index(self) -> usize {
        match self {
            Status::Down => 0,
            Status::OutOfService => 1,
            Status::Starting => 2,
            Status::Unknown => 3,
            Status::Up => 4,
        }
    }

    /// Every status, in the lexicographic order of their wire names (the order the
    /// reconcile hash code uses).
    pub const HASH_ORDER: [Status; 5] =
        [Status::Down, Status::OutOfService, Status::Starting, Status::Unknown, Status::Up];
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error for a status string that names no status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown status {0:?} (expected UP, DOWN, STARTING, OUT_OF_SERVICE or UNKNOWN)")]
pub struct BadStatus(pub String);

impl FromStr for Status {
    type Err = BadStatus;

    /// Case-insensitive, unlike Eureka's JSON reader, which turns `up` into `UNKNOWN` and
    /// then answers 404 to every heartbeat.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_uppercase().as_str() {
            "UP" => Ok(Status::Up),
            "DOWN" => Ok(Status::Down),
            "STARTING" => Ok(Status::Starting),
            "OUT_OF_SERVICE" => Ok(Status::OutOfService),
            "UNKNOWN" => Ok(Status::Unknown),
            _ => Err(BadStatus(s.to_string())),
        }
    }
}

/// What last happened to an instance, as reported in deltas (`actionType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ActionType {
    Added,
    Modified,
    Deleted,
}

impl ActionType {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionType::Added => "ADDED",
            ActionType::Modified => "MODIFIED",
            ActionType::Deleted => "DELETED",
        }
    }
}

/// A port and whether it is enabled (`{"$": 8080, "@enabled": "true"}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Port {
    pub port: u32,
    pub enabled: bool,
}

/// Which kind of data center an instance runs in; decides the `@class` written on output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DataCenterKind {
    /// `com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo` (names `MyOwn`, `Netflix`).
    Default,
    /// `com.netflix.appinfo.AmazonInfo`.
    Amazon,
}

impl DataCenterKind {
    /// The canonical Java class name strict clients deserialize by.
    pub fn class_name(self) -> &'static str {
        match self {
            DataCenterKind::Default => "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo",
            DataCenterKind::Amazon => "com.netflix.appinfo.AmazonInfo",
        }
    }
}

/// `dataCenterInfo`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataCenterInfo {
    pub kind: DataCenterKind,
    pub name: String,
    /// Only meaningful for Amazon; never written for the default kind.
    pub metadata: BTreeMap<String, String>,
}

/// The client-declared part of `leaseInfo`; the timestamps are the server's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseTerms {
    pub renewal_interval_secs: u32,
    pub duration_secs: u32,
}

impl Default for LeaseTerms {
    fn default() -> Self {
        LeaseTerms { renewal_interval_secs: 30, duration_secs: 90 }
    }
}

/// One registered instance, as the registry keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceInfo {
    /// The effective id: `instanceId`, else the Amazon `instance-id`, else `hostName`.
    pub instance_id: String,
    pub host_name: String,
    /// Upper case.
    pub app: String,
    pub ip_addr: String,
    pub sid: Option<String>,
    pub status: Status,
    pub overridden_status: Status,
    pub port: Port,
    pub secure_port: Port,
    pub country_id: i64,
    pub data_center_info: DataCenterInfo,
    pub lease: LeaseTerms,
    pub metadata: BTreeMap<String, String>,
    pub app_group_name: Option<String>,
    pub home_page_url: Option<String>,
    pub status_page_url: Option<String>,
    pub health_check_url: Option<String>,
    pub secure_health_check_url: Option<String>,
    pub vip_address: Option<String>,
    pub secure_vip_address: Option<String>,
    /// Server time of the last registry change to this instance.
    pub last_updated_timestamp: u64,
    /// Client time of the client's last local change; the conflict-resolution key.
    pub last_dirty_timestamp: u64,
    pub action_type: Option<ActionType>,
    pub asg_name: Option<String>,
}

impl InstanceInfo {
    /// Roughly how much memory the instance holds: its text plus a fixed allowance for the
    /// struct and each map entry. A pure function of the instance, so every replica counts
    /// the same.
    pub fn approx_bytes(&self) -> usize {
        let opt = |s: &Option<String>| s.as_ref().map_or(0, String::len);
        let map = |m: &BTreeMap<String, String>| m.iter().map(|(k, v)| k.len() + v.len() + 64).sum::<usize>();
        512 + self.instance_id.len()
            + self.host_name.len()
            + self.app.len()
            + self.ip_addr.len()
            + self.data_center_info.name.len()
            + map(&self.data_center_info.metadata)
            + map(&self.metadata)
            + [
                &self.sid,
                &self.app_group_name,
                &self.home_page_url,
                &self.status_page_url,
                &self.health_check_url,
                &self.secure_health_check_url,
                &self.vip_address,
                &self.secure_vip_address,
                &self.asg_name,
            ]
            .into_iter()
            .map(opt)
            .sum::<usize>()
    }
}

/// The server-side lease timestamps written into `leaseInfo` on output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LeaseStamps {
    pub registration_timestamp: u64,
    pub last_renewal_timestamp: u64,
    pub eviction_timestamp: u64,
    pub service_up_timestamp: u64,
}

/// Addresses one instance: upper-case app name and instance id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct InstanceKey {
    pub app: String,
    pub id: String,
}

impl InstanceKey {
    /// Builds a key, upper-casing the app name as Eureka does for paths.
    pub fn new(app: &str, id: &str) -> Self {
        InstanceKey { app: app.to_ascii_uppercase(), id: id.to_string() }
    }
}

impl fmt::Display for InstanceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.app, self.id)
    }
}

/// Whether a comma-separated VIP list contains `vip` exactly (Eureka's match: case-sensitive,
/// tokens trimmed here because clients configure `a, b`).
pub fn vip_list_contains(list: Option<&str>, vip: &str) -> bool {
    list.is_some_and(|l| l.split(',').any(|t| t.trim() == vip))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_parses_any_case_and_rejects_junk() {
        assert_eq!("up".parse::<Status>(), Ok(Status::Up));
        assert_eq!("Out_Of_Service".parse::<Status>(), Ok(Status::OutOfService));
        assert!("SIDEWAYS".parse::<Status>().is_err());
    }

    #[test]
    fn hash_order_is_lexicographic() {
        let names: Vec<_> = Status::HASH_ORDER.iter().map(|s| s.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        for (i, s) in Status::HASH_ORDER.iter().enumerate() {
            assert_eq!(s.hash_index(), i);
        }
    }

    #[test]
    fn vip_lists_match_tokens() {
        assert!(vip_list_contains(Some("a,b, c"), "c"));
        assert!(!vip_list_contains(Some("ab"), "a"));
        assert!(!vip_list_contains(None, "a"));
    }
}
