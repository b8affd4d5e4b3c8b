//! This service's own registration.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// Instance status as Eureka knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Status {
    Up,
    Down,
    Starting,
    OutOfService,
    Unknown,
}

impl Status {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Up => "UP",
            Status::Down => "DOWN",
            Status::Starting => "STARTING",
            Status::OutOfService => "OUT_OF_SERVICE",
            Status::Unknown => "UNKNOWN",
        }
    }

    /// Parses a wire name (case-insensitive); anything else is `Unknown`.
    pub fn parse(s: &str) -> Status {
        match s.to_ascii_uppercase().as_str() {
            "UP" => Status::Up,
            "DOWN" => Status::Down,
            "STARTING" => Status::Starting,
            "OUT_OF_SERVICE" => Status::OutOfService,
            _ => Status::Unknown,
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What this service registers.
#[derive(Debug, Clone)]
pub struct InstanceConfig {
    /// Application name (sent upper-case).
    pub app: String,
    /// Instance id; default `{host}:{app}:{port}` like Spring Cloud.
    pub instance_id: String,
    pub host_name: String,
    pub ip_addr: String,
    pub port: u16,
    pub vip_address: Option<String>,
    pub status: Status,
    pub metadata: BTreeMap<String, String>,
    /// Seconds between heartbeats (Eureka default 30).
    pub renewal_interval_secs: u32,
    /// Seconds without heartbeat after which the server may evict (default 90).
    pub lease_duration_secs: u32,
}

impl InstanceConfig {
    /// An UP instance of `app` at `ip:port` with Eureka's default lease.
    pub fn new(app: &str, ip: &str, port: u16) -> InstanceConfig {
        InstanceConfig {
            app: app.to_ascii_uppercase(),
            instance_id: format!("{ip}:{}:{port}", app.to_ascii_lowercase()),
            host_name: ip.to_string(),
            ip_addr: ip.to_string(),
            port,
            vip_address: Some(app.to_ascii_lowercase()),
            status: Status::Up,
            metadata: BTreeMap::new(),
            renewal_interval_secs: 30,
            lease_duration_secs: 90,
        }
    }

    /// The registration body (`{"instance": …}` in Eureka's JSON shape).
    pub(crate) fn to_json(&self, last_dirty: u64) -> serde_json::Value {
        serde_json::json!({"instance": {
            "instanceId": self.instance_id,
            "hostName": self.host_name,
            "app": self.app,
            "ipAddr": self.ip_addr,
            "status": self.status.as_str(),
            "overriddenstatus": "UNKNOWN",
            "port": {"$": self.port, "@enabled": "true"},
            "securePort": {"$": 443, "@enabled": "false"},
            "countryId": 1,
            "dataCenterInfo": {"@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo", "name": "MyOwn"},
            "leaseInfo": {"renewalIntervalInSecs": self.renewal_interval_secs, "durationInSecs": self.lease_duration_secs},
            "metadata": self.metadata,
            "vipAddress": self.vip_address,
            "secureVipAddress": self.vip_address,
            "homePageUrl": format!("http://{}:{}/", self.host_name, self.port),
            "statusPageUrl": format!("http://{}:{}/info", self.host_name, self.port),
            "healthCheckUrl": format!("http://{}:{}/health", self.host_name, self.port),
            "isCoordinatingDiscoveryServer": "false",
            "lastUpdatedTimestamp": last_dirty.to_string(),
            "lastDirtyTimestamp": last_dirty.to_string(),
        }})
    }
}

/// Milliseconds since the epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
