//! The local copy of the registry: built from a full fetch, updated by deltas, checked
//! against the server's reconcile hash code.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::instance::Status;

/// One instance as the registry reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub app: String,
    pub instance_id: String,
    pub host_name: String,
    pub ip_addr: String,
    pub port: u16,
    pub status: Status,
    pub vip_address: Option<String>,
    pub secure_vip_address: Option<String>,
    pub metadata: BTreeMap<String, String>,
    /// Zone from the `zone` metadata entry, if any.
    pub zone: Option<String>,
    pub last_updated_timestamp: u64,
}

/// The registry copy: app → instance id → instance.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    pub(crate) apps: BTreeMap<String, BTreeMap<String, Instance>>,
    /// `versions__delta` of the last delta applied (a full fetch's is not a position).
    pub(crate) version: Option<u64>,
    /// Whether a full fetch has filled it.
    pub(crate) loaded: bool,
}

/// A parsed `applications` document.
pub(crate) struct Document {
    pub version: Option<u64>,
    pub hash: String,
    /// (action type, instance)
    pub items: Vec<(String, Instance)>,
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn number(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
}

fn parse_instance(app: &str, v: &Value) -> Option<Instance> {
    let metadata: BTreeMap<String, String> = v["metadata"]
        .as_object()
        .map(|m| {
            m.iter().filter(|(k, _)| k.as_str() != "@class").filter_map(|(k, v)| Some((k.clone(), text(v)?))).collect()
        })
        .unwrap_or_default();
    let port = match &v["port"] {
        Value::Object(p) => p.get("$").and_then(number),
        other => number(other),
    };
    Some(Instance {
        app: v["app"].as_str().unwrap_or(app).to_ascii_uppercase(),
        instance_id: text(&v["instanceId"]).or_else(|| text(&v["hostName"]))?,
        host_name: text(&v["hostName"]).unwrap_or_default(),
        ip_addr: text(&v["ipAddr"]).unwrap_or_default(),
        port: port.and_then(|p| u16::try_from(p).ok()).unwrap_or(0),
        status: Status::parse(v["status"].as_str().unwrap_or("UNKNOWN")),
        vip_address: text(&v["vipAddress"]),
        secure_vip_address: text(&v["secureVipAddress"]),
        zone: metadata.get("zone").cloned(),
        metadata,
        last_updated_timestamp: number(&v["lastUpdatedTimestamp"]).unwrap_or(0),
    })
}

/// Parses `{"applications": {...}}` (a full registry or a delta).
pub(crate) fn parse(v: &Value) -> Option<Document> {
    let root = v.get("applications")?;
    let mut items = Vec::new();
    let apps = match &root["application"] {
        Value::Array(a) => a.clone(),
        Value::Object(_) => vec![root["application"].clone()],
        _ => Vec::new(),
    };
    for app in &apps {
        let name = app["name"].as_str().unwrap_or("");
        let instances = match &app["instance"] {
            Value::Array(a) => a.clone(),
            Value::Object(_) => vec![app["instance"].clone()],
            _ => Vec::new(),
        };
        for i in &instances {
            if let Some(inst) = parse_instance(name, i) {
                items.push((i["actionType"].as_str().unwrap_or("ADDED").to_ascii_uppercase(), inst));
            }
        }
    }
    Some(Document {
        version: number(&root["versions__delta"]),
        hash: root["apps__hashcode"].as_str().unwrap_or("").to_string(),
        items,
    })
}

impl Registry {
    /// The `versions__delta` of the last delta applied; `None` right after a full fetch
    /// (its version is no position in the change stream) or against a server without one.
    pub fn delta_version(&self) -> Option<u64> {
        self.version
    }

    /// Replaces everything with a full fetch.
    pub(crate) fn replace(&mut self, doc: Document) {
        self.apps.clear();
        for (_, inst) in doc.items {
            self.apps.entry(inst.app.clone()).or_default().insert(inst.instance_id.clone(), inst);
        }
        self.version = None;
        self.loaded = true;
    }

    /// Applies a delta; returns whether the result matches the server's hash code.
    pub(crate) fn apply_delta(&mut self, doc: Document) -> bool {
        for (action, inst) in doc.items {
            if action == "DELETED" {
                if let Some(m) = self.apps.get_mut(&inst.app) {
                    m.remove(&inst.instance_id);
                    if m.is_empty() {
                        self.apps.remove(&inst.app);
                    }
                }
            } else {
                self.apps.entry(inst.app.clone()).or_default().insert(inst.instance_id.clone(), inst);
            }
        }
        self.version = doc.version;
        doc.hash.is_empty() || self.hash_code() == doc.hash
    }

    /// Eureka's reconcile hash: `STATUS_count_` per status present, statuses in name order.
    pub fn hash_code(&self) -> String {
        let mut counts: BTreeMap<&'static str, usize> = BTreeMap::new();
        for inst in self.apps.values().flat_map(|m| m.values()) {
            *counts.entry(inst.status.as_str()).or_default() += 1;
        }
        counts.iter().map(|(s, n)| format!("{s}_{n}_")).collect()
    }

    /// Every instance of `app` (any status).
    pub fn application(&self, app: &str) -> Vec<Instance> {
        self.apps.get(&app.to_ascii_uppercase()).map(|m| m.values().cloned().collect()).unwrap_or_default()
    }

    /// UP instances whose VIP list contains `vip`.
    pub fn by_vip(&self, vip: &str) -> Vec<Instance> {
        self.apps
            .values()
            .flat_map(|m| m.values())
            .filter(|i| i.status == Status::Up)
            .filter(|i| i.vip_address.as_deref().is_some_and(|l| l.split(',').any(|t| t.trim() == vip)))
            .cloned()
            .collect()
    }

    /// Number of instances.
    pub fn len(&self) -> usize {
        self.apps.values().map(|m| m.len()).sum()
    }

    /// Whether the copy is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(hash: &str, items: &[(&str, &str, &str, &str)]) -> Document {
        let apps: Vec<Value> = items
            .iter()
            .map(|(action, app, id, status)| {
                serde_json::json!({"name": app, "instance": [{"instanceId": id, "app": app, "status": status,
                    "actionType": action, "port": {"$": 80, "@enabled": "true"}, "ipAddr": "10.0.0.1"}]})
            })
            .collect();
        parse(
            &serde_json::json!({"applications": {"versions__delta": "7", "apps__hashcode": hash, "application": apps}}),
        )
        .unwrap()
    }

    #[test]
    fn deltas_apply_and_are_checked_against_the_hash() {
        let mut r = Registry::default();
        r.replace(doc("UP_2_", &[("ADDED", "A", "a1", "UP"), ("ADDED", "B", "b1", "UP")]));
        assert_eq!(r.hash_code(), "UP_2_");
        assert_eq!(r.version, None, "a full fetch is no delta position");
        assert!(r.apply_delta(doc("DOWN_1_", &[("DELETED", "A", "a1", "UP"), ("MODIFIED", "B", "b1", "DOWN")])));
        assert_eq!(r.version, Some(7));
        assert_eq!(r.application("a").len(), 0);
        assert_eq!(r.application("B")[0].status, Status::Down);
        // A delta that leaves the copy different from the server's reports it.
        assert!(!r.apply_delta(doc("DOWN_1_UP_5_", &[("ADDED", "C", "c1", "UP")])));
        assert_eq!(r.hash_code(), "DOWN_1_UP_1_");
    }
}
