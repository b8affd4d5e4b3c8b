//! Reads an `InstanceInfo` out of a decoded JSON/XML document tree (any [`Tree`]), leniently
//! as the ecosystem's clients require, and validates it as Eureka's
//! `ApplicationResource.addInstance` does.

use std::collections::BTreeMap;

use super::limits::*;
use super::tree::{Tree, View};
use super::DecodeError;
use crate::core::limits::{self, check_instance, check_metadata};
use crate::core::model::{DataCenterInfo, DataCenterKind, InstanceInfo, LeaseTerms, Port, Status};

/// Decodes the body of a registration: `{"instance": {…}}` (the wrapper is required, as in
/// Eureka). `now` fills in missing timestamps.
pub fn registration<T: Tree>(root: &T, now: u64) -> Result<InstanceInfo, DecodeError> {
    let inner =
        root.get("instance").ok_or_else(|| DecodeError::new("body must be an object with an \"instance\" member"))?;
    instance(inner, now)
}

/// `v` unless it is absent or null.
fn present<T: Tree>(v: Option<&T>) -> Option<&T> {
    v.filter(|v| !matches!(v.view(), View::Null))
}

/// Decodes one instance object.
pub fn instance<T: Tree>(o: &T, now: u64) -> Result<InstanceInfo, DecodeError> {
    if !matches!(o.view(), View::Obj) {
        return Err(DecodeError::new("instance must be an object"));
    }
    let host_name = text(o, "hostName", MAX_NAME)?.unwrap_or_default();
    let dc = match present(o.get("dataCenterInfo")) {
        None => None,
        Some(v) => Some(data_center(v)?),
    };
    let mut instance_id = text(o, "instanceId", MAX_NAME)?.unwrap_or_default();
    if instance_id.trim().is_empty() {
        if let Some(id) = dc.as_ref().and_then(|d| d.metadata.get("instance-id")) {
            instance_id = id.clone();
        }
    }
    let mut metadata = string_map(o.get("metadata"), "metadata")?;
    if instance_id.trim().is_empty() {
        // Spring Cloud's server codec: an id may come in metadata, prefixed by the host.
        if let Some(id) = metadata.get("instanceId").filter(|s| !s.is_empty()) {
            instance_id = if id.starts_with(&host_name) { id.clone() } else { format!("{host_name}:{id}") };
        }
    }
    if instance_id.trim().is_empty() {
        instance_id = host_name.clone();
    }
    // Validation in Eureka's order, with its messages.
    if instance_id.trim().is_empty() {
        return Err(DecodeError::new("Missing instanceId"));
    }
    if host_name.trim().is_empty() {
        return Err(DecodeError::new("Missing hostname"));
    }
    let ip_addr = text(o, "ipAddr", MAX_NAME)?.unwrap_or_default();
    if ip_addr.trim().is_empty() {
        return Err(DecodeError::new("Missing ip address"));
    }
    let app = text(o, "app", MAX_NAME)?.unwrap_or_default().to_ascii_uppercase();
    if app.trim().is_empty() {
        return Err(DecodeError::new("Missing appName"));
    }
    let Some(data_center_info) = dc else {
        return Err(DecodeError::new("Missing dataCenterInfo"));
    };
    metadata.remove("@class");
    let reported = status(o, &["status"])?.unwrap_or(Status::Up);
    let overridden_status = status(o, &["overriddenStatus", "overriddenstatus"])?.unwrap_or(Status::Unknown);
    let info = InstanceInfo {
        instance_id,
        host_name,
        app,
        ip_addr,
        sid: text(o, "sid", MAX_NAME)?.filter(|s| s != "na" && s != "unknown"),
        status: reported,
        overridden_status,
        port: port(o.get("port"), Port { port: 7001, enabled: true }, "port")?,
        secure_port: port(o.get("securePort"), Port { port: 7002, enabled: false }, "securePort")?,
        country_id: number(o, "countryId")?.unwrap_or(1),
        data_center_info,
        lease: lease_terms(o.get("leaseInfo"))?,
        metadata,
        app_group_name: text(o, "appGroupName", MAX_NAME)?.map(|s| s.to_ascii_uppercase()),
        home_page_url: text(o, "homePageUrl", MAX_URL)?,
        status_page_url: text(o, "statusPageUrl", MAX_URL)?,
        health_check_url: text(o, "healthCheckUrl", MAX_URL)?,
        secure_health_check_url: text(o, "secureHealthCheckUrl", MAX_URL)?,
        vip_address: text(o, "vipAddress", MAX_NAME)?,
        secure_vip_address: text(o, "secureVipAddress", MAX_NAME)?,
        last_updated_timestamp: timestamp(o, "lastUpdatedTimestamp")?.unwrap_or(now),
        last_dirty_timestamp: dirty_timestamp(timestamp(o, "lastDirtyTimestamp")?, now)?,
        action_type: None,
        asg_name: text(o, "asgName", MAX_NAME)?,
    };
    check_instance(&info).map_err(DecodeError)?;
    Ok(info)
}

/// A scalar as text: strings as they are, numbers and booleans printed; `null` is absent.
/// XML elements with attributes arrive as objects holding the text under `$`.
fn scalar<T: Tree>(v: &T) -> Option<String> {
    match v.view() {
        View::Str(s) => Some(s.to_owned()),
        View::Num(n) => Some(n.to_string()),
        View::Bool(b) => Some(b.to_string()),
        View::Obj => v.get("$").and_then(scalar),
        View::Null | View::Arr => None,
    }
}

/// A text field. Its length and characters are checked with the whole instance
/// ([`check_instance`]); `max` bounds the fields that are not stored.
fn text<T: Tree>(o: &T, key: &str, max: usize) -> Result<Option<String>, DecodeError> {
    match present(o.get(key)) {
        None => Ok(None),
        Some(v) => {
            let s = scalar(v).ok_or_else(|| DecodeError::new(format!("{key} must be a string")))?;
            if s.len() > max {
                return Err(DecodeError::new(format!("{key} is longer than {max} bytes")));
            }
            Ok(Some(s))
        }
    }
}

fn parse_i64<T: Tree>(v: &T, key: &str) -> Result<i64, DecodeError> {
    let bad = || DecodeError::new(format!("{key} must be an integer"));
    match v.view() {
        // A float is taken only when it is a whole number that fits: 2^70 must not become
        // i64::MAX.
        View::Num(n) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9.0e18).map(|f| f as i64))
            .ok_or_else(bad),
        _ => scalar(v).and_then(|s| s.trim().parse().ok()).ok_or_else(bad),
    }
}

fn number<T: Tree>(o: &T, key: &str) -> Result<Option<i64>, DecodeError> {
    let Some(v) = o.get(key) else { return Ok(None) };
    match v.view() {
        View::Null => Ok(None),
        View::Str(s) if s.trim().is_empty() => Ok(None),
        _ => parse_i64(v, key).map(Some),
    }
}

fn timestamp<T: Tree>(o: &T, key: &str) -> Result<Option<u64>, DecodeError> {
    Ok(number(o, key)?.map(|n| n.max(0) as u64))
}

fn parse_bool<T: Tree>(v: &T, key: &str) -> Result<bool, DecodeError> {
    match v.view() {
        View::Bool(b) => Ok(b),
        _ => match scalar(v).map(|s| s.trim().to_ascii_lowercase()).as_deref() {
            Some("true") => Ok(true),
            Some("false") => Ok(false),
            _ => Err(DecodeError::new(format!("{key} must be true or false"))),
        },
    }
}

fn status<T: Tree>(o: &T, keys: &[&str]) -> Result<Option<Status>, DecodeError> {
    for key in keys {
        if let Some(s) = text(o, key, MAX_NAME)? {
            return s.parse().map(Some).map_err(|e| DecodeError::new(format!("{key}: {e}")));
        }
    }
    Ok(None)
}

/// A port: `{"$": 8080, "@enabled": "true"}`, or a bare number/string (eureka-js-client's
/// README example).
fn port<T: Tree>(v: Option<&T>, default: Port, key: &str) -> Result<Port, DecodeError> {
    let check = |n: i64| {
        u32::try_from(n)
            .ok()
            .filter(|p| *p <= 65535)
            .ok_or_else(|| DecodeError::new(format!("{key} must be between 0 and 65535")))
    };
    let Some(v) = present(v) else { return Ok(default) };
    if !matches!(v.view(), View::Obj) {
        return Ok(Port { port: check(parse_i64(v, key)?)?, enabled: default.enabled });
    }
    let port = match present(v.get("$")) {
        None => default.port,
        Some(p) => check(parse_i64(p, key)?)?,
    };
    let enabled = match present(v.get("@enabled")) {
        None => default.enabled,
        Some(e) => parse_bool(e, &format!("{key}.@enabled"))?,
    };
    Ok(Port { port, enabled })
}

fn data_center<T: Tree>(o: &T) -> Result<DataCenterInfo, DecodeError> {
    if !matches!(o.view(), View::Obj) {
        return Err(DecodeError::new("dataCenterInfo must be an object"));
    }
    let name = text(o, "name", MAX_NAME)?
        .filter(|n| !n.trim().is_empty())
        .ok_or_else(|| DecodeError::new("Missing dataCenterInfo Name"))?;
    // `@class` is optional here (eureka-js-client's README sends none); the kind follows the
    // class when given, else the name.
    let kind = match text(o, "@class", MAX_NAME)?.as_deref() {
        Some("com.netflix.appinfo.AmazonInfo") => DataCenterKind::Amazon,
        Some(_) => DataCenterKind::Default,
        None if name == "Amazon" => DataCenterKind::Amazon,
        None => DataCenterKind::Default,
    };
    let mut metadata = BTreeMap::new();
    if kind == DataCenterKind::Amazon {
        metadata = string_map(o.get("metadata"), "dataCenterInfo.metadata")?;
        metadata.remove("@class");
    }
    Ok(DataCenterInfo { kind, name, metadata })
}

fn lease_terms<T: Tree>(v: Option<&T>) -> Result<LeaseTerms, DecodeError> {
    let d = LeaseTerms::default();
    let Some(o) = v.filter(|v| matches!(v.view(), View::Obj)) else { return Ok(d) };
    let pick = |key: &str, default: u32| -> Result<u32, DecodeError> {
        Ok(match number(o, key)? {
            Some(n) if n > 0 => u32::try_from(n).unwrap_or(u32::MAX).min(24 * 3600),
            _ => default,
        })
    };
    Ok(LeaseTerms {
        renewal_interval_secs: pick("renewalIntervalInSecs", d.renewal_interval_secs)?,
        duration_secs: pick("durationInSecs", d.duration_secs)?,
    })
}

/// A flat string map (metadata), with size limits.
pub fn string_map<T: Tree>(v: Option<&T>, what: &str) -> Result<BTreeMap<String, String>, DecodeError> {
    let mut out = BTreeMap::new();
    let Some(v) = present(v) else { return Ok(out) };
    match v.view() {
        View::Str(s) if s.trim().is_empty() => return Ok(out),
        View::Obj => {}
        _ => return Err(DecodeError::new(format!("{what} must be an object of strings"))),
    }
    for (k, v) in v.members() {
        if k == "@class" {
            continue;
        }
        let s = match v.view() {
            View::Null => String::new(),
            View::Arr | View::Obj => {
                return Err(DecodeError::new(format!("{what}.{k} must be a string")));
            }
            _ => scalar(v).unwrap_or_default(),
        };
        check_metadata_entry(k, &s, what)?;
        out.insert(k.to_owned(), s);
        if out.len() > MAX_METADATA_ENTRIES {
            return Err(DecodeError::new(format!("{what} has more than {MAX_METADATA_ENTRIES} entries")));
        }
    }
    check_metadata(&out).map_err(|e| DecodeError::new(e.replacen("metadata", what, 1)))?;
    Ok(out)
}

/// Enforces the metadata limits on one entry.
pub fn check_metadata_entry(key: &str, value: &str, what: &str) -> Result<(), DecodeError> {
    limits::check_metadata_entry(key, value, what).map_err(DecodeError)
}

/// A client's `lastDirtyTimestamp` (default: now), refused when implausibly far ahead.
pub fn dirty_timestamp(ts: Option<u64>, now: u64) -> Result<u64, DecodeError> {
    match ts {
        None => Ok(now),
        Some(t) if t > now.saturating_add(MAX_DIRTY_AHEAD_MS) => {
            Err(DecodeError::new(format!("lastDirtyTimestamp {t} is more than a day in the future")))
        }
        Some(t) => Ok(t),
    }
}
