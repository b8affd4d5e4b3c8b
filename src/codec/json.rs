//! JSON in the shapes of Eureka's legacy server codec: root wrappers, arrays always,
//! timestamps and `isCoordinatingDiscoveryServer` as strings, `@class` markers.

use std::collections::BTreeMap;

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;
use serde_json::Value;

use super::DecodeError;
use crate::core::fragments::AppsCodec;
use crate::core::model::{DataCenterKind, InstanceInfo, Port};
use crate::core::views::{AppView, AppsView, InstanceView};

/// Parses a JSON body into a value tree.
pub fn parse(body: &[u8]) -> Result<Value, DecodeError> {
    serde_json::from_slice(body).map_err(|e| DecodeError::new(format!("malformed JSON: {e}")))
}

/// `{"applications": {…}}`.
pub fn apps(view: &AppsView) -> Vec<u8> {
    #[derive(Serialize)]
    struct Root<'a> {
        applications: JApps<'a>,
    }
    to_vec(&Root { applications: JApps(view) })
}

/// The full registry document in parts, for [`crate::core::fragments`]: the same bytes as
/// [`apps`] when laid end to end.
pub const APPS: AppsCodec = AppsCodec {
    open: |versions_delta, hash_code| {
        let mut out = br#"{"applications":{"versions__delta":"#.to_vec();
        out.extend_from_slice(&to_vec(&versions_delta));
        out.extend_from_slice(br#","apps__hashcode":"#);
        out.extend_from_slice(&to_vec(&hash_code));
        out.extend_from_slice(br#","application":["#);
        out
    },
    app: |view| to_vec(&JApp(view)),
    separator: b",",
    close: b"]}}",
};

/// `{"application": {…}}`.
pub fn app(view: &AppView) -> Vec<u8> {
    #[derive(Serialize)]
    struct Root<'a> {
        application: JApp<'a>,
    }
    to_vec(&Root { application: JApp(view) })
}

/// `{"instance": {…}}`.
pub fn instance(view: &InstanceView) -> Vec<u8> {
    #[derive(Serialize)]
    struct Root<'a> {
        instance: JInstance<'a>,
    }
    to_vec(&Root { instance: JInstance(view) })
}

fn to_vec(v: &impl Serialize) -> Vec<u8> {
    // Serializing these types into memory cannot fail: every map key is a string.
    serde_json::to_vec(v).unwrap_or_default()
}

struct JApps<'a>(&'a AppsView);

impl Serialize for JApps<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(3))?;
        m.serialize_entry("versions__delta", &self.0.versions_delta)?;
        m.serialize_entry("apps__hashcode", &self.0.apps_hashcode)?;
        let apps: Vec<JApp> = self.0.apps.iter().map(JApp).collect();
        m.serialize_entry("application", &apps)?;
        m.end()
    }
}

struct JApp<'a>(&'a AppView);

impl Serialize for JApp<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry("name", &self.0.name)?;
        let instances: Vec<JInstance> = self.0.instances.iter().map(JInstance).collect();
        m.serialize_entry("instance", &instances)?;
        m.end()
    }
}

struct JPort(Port);

impl Serialize for JPort {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry("$", &self.0.port)?;
        m.serialize_entry("@enabled", if self.0.enabled { "true" } else { "false" })?;
        m.end()
    }
}

/// Metadata map; an empty one is written as Java's empty-map marker, as Eureka does.
struct JMeta<'a>(&'a BTreeMap<String, String>);

impl Serialize for JMeta<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0.is_empty() {
            let mut m = s.serialize_map(Some(1))?;
            m.serialize_entry("@class", "java.util.Collections$EmptyMap")?;
            return m.end();
        }
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

struct JDataCenter<'a>(&'a InstanceInfo);

impl Serialize for JDataCenter<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let dc = &self.0.data_center_info;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("@class", dc.kind.class_name())?;
        m.serialize_entry("name", &dc.name)?;
        // Strict clients reject unknown keys on the default kind, so only Amazon has metadata.
        if dc.kind == DataCenterKind::Amazon {
            m.serialize_entry("metadata", &dc.metadata)?;
        }
        m.end()
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JLease {
    renewal_interval_in_secs: u32,
    duration_in_secs: u32,
    registration_timestamp: u64,
    last_renewal_timestamp: u64,
    eviction_timestamp: u64,
    service_up_timestamp: u64,
}

/// An instance in the legacy JSON shape without the `{"instance": …}` wrapper, as embedded in
/// applications and in peer replication batches.
pub struct JInstance<'a>(pub &'a InstanceView);

impl Serialize for JInstance<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let i = &*self.0.info;
        let st = &self.0.stamps;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("instanceId", &i.instance_id)?;
        m.serialize_entry("hostName", &i.host_name)?;
        m.serialize_entry("app", &i.app)?;
        m.serialize_entry("ipAddr", &i.ip_addr)?;
        if let Some(sid) = &i.sid {
            m.serialize_entry("sid", sid)?;
        }
        m.serialize_entry("status", i.status.as_str())?;
        m.serialize_entry("overriddenStatus", i.overridden_status.as_str())?;
        m.serialize_entry("port", &JPort(i.port))?;
        m.serialize_entry("securePort", &JPort(i.secure_port))?;
        m.serialize_entry("countryId", &i.country_id)?;
        m.serialize_entry("dataCenterInfo", &JDataCenter(i))?;
        m.serialize_entry(
            "leaseInfo",
            &JLease {
                renewal_interval_in_secs: i.lease.renewal_interval_secs,
                duration_in_secs: i.lease.duration_secs,
                registration_timestamp: st.registration_timestamp,
                last_renewal_timestamp: st.last_renewal_timestamp,
                eviction_timestamp: st.eviction_timestamp,
                service_up_timestamp: st.service_up_timestamp,
            },
        )?;
        m.serialize_entry("metadata", &JMeta(&i.metadata))?;
        let optional = [
            ("appGroupName", &i.app_group_name),
            ("homePageUrl", &i.home_page_url),
            ("statusPageUrl", &i.status_page_url),
            ("healthCheckUrl", &i.health_check_url),
            ("secureHealthCheckUrl", &i.secure_health_check_url),
            ("vipAddress", &i.vip_address),
            ("secureVipAddress", &i.secure_vip_address),
        ];
        for (k, v) in optional {
            if let Some(v) = v {
                m.serialize_entry(k, v)?;
            }
        }
        m.serialize_entry("isCoordinatingDiscoveryServer", "false")?;
        m.serialize_entry("lastUpdatedTimestamp", &i.last_updated_timestamp.to_string())?;
        m.serialize_entry("lastDirtyTimestamp", &i.last_dirty_timestamp.to_string())?;
        if let Some(a) = i.action_type {
            m.serialize_entry("actionType", a.as_str())?;
        }
        if let Some(asg) = &i.asg_name {
            m.serialize_entry("asgName", asg)?;
        }
        m.end()
    }
}
