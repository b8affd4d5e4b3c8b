//! XML in XStream's shapes, as Eureka writes it and py-eureka-client parses it: no
//! declaration, `<port enabled="…">`, `<dataCenterInfo class="…">`, `_` in element names
//! written as `__` and `$` as `_-`.

use std::collections::BTreeMap;
use std::fmt::Write;

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;
use serde_json::{Map, Value};

use super::limits::{MAX_XML_ATTRIBUTES, MAX_XML_DEPTH};
use super::DecodeError;
use crate::core::fragments::AppsCodec;
use crate::core::model::{DataCenterKind, Port};
use crate::core::views::{AppView, AppsView, InstanceView};

/// `<applications>…</applications>`.
pub fn apps(view: &AppsView) -> Vec<u8> {
    let mut out = String::with_capacity(256 + view.apps.iter().map(|a| a.instances.len() * 1400).sum::<usize>());
    out.push_str("<applications>");
    elem(&mut out, "versions__delta", &view.versions_delta);
    elem(&mut out, "apps__hashcode", &view.apps_hashcode);
    for a in &view.apps {
        write_app(&mut out, a);
    }
    out.push_str("</applications>");
    out.into_bytes()
}

/// The full registry document in parts, for [`crate::core::fragments`]: the same bytes as
/// [`apps`] when laid end to end.
pub const APPS: AppsCodec = AppsCodec {
    open: |versions_delta, hash_code| {
        let mut out = String::from("<applications>");
        elem(&mut out, "versions__delta", versions_delta);
        elem(&mut out, "apps__hashcode", hash_code);
        out.into_bytes()
    },
    app,
    separator: b"",
    close: b"</applications>",
};

/// `<application>…</application>`.
pub fn app(view: &AppView) -> Vec<u8> {
    let mut out = String::new();
    write_app(&mut out, view);
    out.into_bytes()
}

/// `<instance>…</instance>`.
pub fn instance(view: &InstanceView) -> Vec<u8> {
    let mut out = String::new();
    write_instance(&mut out, view);
    out.into_bytes()
}

fn write_app(out: &mut String, a: &AppView) {
    out.push_str("<application>");
    elem(out, "name", &a.name);
    for i in &a.instances {
        write_instance(out, i);
    }
    out.push_str("</application>");
}

fn elem(out: &mut String, name: &str, text: &str) {
    let _ = write!(out, "<{name}>{}</{name}>", quick_xml::escape::escape(text));
}

fn opt(out: &mut String, name: &str, text: &Option<String>) {
    if let Some(t) = text {
        elem(out, name, t);
    }
}

fn port(out: &mut String, name: &str, p: Port) {
    let _ = write!(out, "<{name} enabled=\"{}\">{}</{name}>", p.enabled, p.port);
}

fn metadata(out: &mut String, name: &str, m: &BTreeMap<String, String>) {
    if m.is_empty() {
        let _ = write!(out, "<{name} class=\"java.util.Collections$EmptyMap\"/>");
        return;
    }
    let _ = write!(out, "<{name}>");
    for (k, v) in m {
        // A key that cannot be an element name would break the whole document (as it does
        // in Eureka); such keys are left out of XML and still shown in JSON.
        if let Some(tag) = escape_name(k) {
            elem(out, &tag, v);
        }
    }
    let _ = write!(out, "</{name}>");
}

fn write_instance(out: &mut String, view: &InstanceView) {
    let i = &*view.info;
    let st = &view.stamps;
    out.push_str("<instance>");
    elem(out, "instanceId", &i.instance_id);
    elem(out, "hostName", &i.host_name);
    elem(out, "app", &i.app);
    elem(out, "ipAddr", &i.ip_addr);
    opt(out, "sid", &i.sid);
    elem(out, "status", i.status.as_str());
    elem(out, "overriddenstatus", i.overridden_status.as_str());
    port(out, "port", i.port);
    port(out, "securePort", i.secure_port);
    let _ = write!(out, "<countryId>{}</countryId>", i.country_id);
    let dc = &i.data_center_info;
    let _ = write!(out, "<dataCenterInfo class=\"{}\">", quick_xml::escape::escape(dc.kind.class_name()));
    elem(out, "name", &dc.name);
    if dc.kind == DataCenterKind::Amazon {
        metadata(out, "metadata", &dc.metadata);
    }
    out.push_str("</dataCenterInfo>");
    let _ = write!(
        out,
        "<leaseInfo><renewalIntervalInSecs>{}</renewalIntervalInSecs><durationInSecs>{}</durationInSecs>\
         <registrationTimestamp>{}</registrationTimestamp><lastRenewalTimestamp>{}</lastRenewalTimestamp>\
         <evictionTimestamp>{}</evictionTimestamp><serviceUpTimestamp>{}</serviceUpTimestamp></leaseInfo>",
        i.lease.renewal_interval_secs,
        i.lease.duration_secs,
        st.registration_timestamp,
        st.last_renewal_timestamp,
        st.eviction_timestamp,
        st.service_up_timestamp
    );
    metadata(out, "metadata", &i.metadata);
    opt(out, "appGroupName", &i.app_group_name);
    opt(out, "homePageUrl", &i.home_page_url);
    opt(out, "statusPageUrl", &i.status_page_url);
    opt(out, "healthCheckUrl", &i.health_check_url);
    opt(out, "secureHealthCheckUrl", &i.secure_health_check_url);
    opt(out, "vipAddress", &i.vip_address);
    opt(out, "secureVipAddress", &i.secure_vip_address);
    elem(out, "isCoordinatingDiscoveryServer", "false");
    let _ = write!(
        out,
        "<lastUpdatedTimestamp>{}</lastUpdatedTimestamp><lastDirtyTimestamp>{}</lastDirtyTimestamp>",
        i.last_updated_timestamp, i.last_dirty_timestamp
    );
    if let Some(a) = i.action_type {
        elem(out, "actionType", a.as_str());
    }
    opt(out, "asgName", &i.asg_name);
    out.push_str("</instance>");
}

/// XStream's element-name escaping (`_` → `__`, `$` → `_-`); `None` when the result would
/// still not be a valid XML name.
pub fn escape_name(key: &str) -> Option<String> {
    let mut out = String::with_capacity(key.len() + 4);
    for c in key.chars() {
        match c {
            '_' => out.push_str("__"),
            '$' => out.push_str("_-"),
            c => out.push(c),
        }
    }
    let mut chars = out.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_alphabetic() || c == '_');
    let rest_ok = chars.all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'));
    let reserved = out.len() >= 3 && out[..3].eq_ignore_ascii_case("xml");
    (first_ok && rest_ok && !reserved).then_some(out)
}

/// Reverses [`escape_name`], reading left to right as XStream does (`__-` is `_` then `-`).
pub fn unescape_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut chars = name.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek()) {
            ('_', Some('_')) => {
                chars.next();
                out.push('_');
            }
            ('_', Some('-')) => {
                chars.next();
                out.push('$');
            }
            (c, _) => out.push(c),
        }
    }
    out
}

/// An element being built while parsing.
struct Node {
    name: String,
    fields: Map<String, Value>,
    text: String,
    has_children: bool,
}

impl Node {
    fn open(e: &BytesStart) -> Result<Node, DecodeError> {
        let name = unescape_name(&String::from_utf8_lossy(e.local_name().as_ref()));
        let mut fields = Map::new();
        // quick-xml's own duplicate check compares every attribute with all before it
        // (quadratic: ~25k attributes cost a second of CPU); the map finds duplicates instead.
        for (n, attr) in e.attributes().with_checks(false).enumerate() {
            if n >= MAX_XML_ATTRIBUTES {
                return Err(DecodeError::new(format!(
                    "malformed XML: more than {MAX_XML_ATTRIBUTES} attributes on one element"
                )));
            }
            let attr = attr.map_err(|err| DecodeError::new(format!("malformed XML: {err}")))?;
            let key = String::from_utf8_lossy(attr.key.local_name().as_ref()).into_owned();
            let value =
                attr.unescape_value().map_err(|err| DecodeError::new(format!("malformed XML: {err}")))?.into_owned();
            if fields.insert(format!("@{key}"), Value::String(value)).is_some() {
                return Err(DecodeError::new(format!("malformed XML: attribute {key:?} repeated")));
            }
        }
        Ok(Node { name, fields, text: String::new(), has_children: false })
    }

    /// Text-only elements become strings; others become objects (`@attr`, children, and any
    /// text under `$`), matching the JSON shapes the decoder reads.
    fn into_value(self) -> Value {
        if !self.has_children && self.fields.is_empty() {
            return Value::String(self.text.trim().to_string());
        }
        let mut fields = self.fields;
        let text = self.text.trim();
        if !text.is_empty() {
            fields.insert("$".into(), Value::String(text.to_string()));
        }
        Value::Object(fields)
    }
}

fn add_child(parent: &mut Node, name: String, value: Value) {
    parent.has_children = true;
    match parent.fields.get_mut(&name) {
        Some(Value::Array(items)) => items.push(value),
        Some(existing) => {
            let first = existing.take();
            *existing = Value::Array(vec![first, value]);
        }
        None => {
            parent.fields.insert(name, value);
        }
    }
}

/// Parses an XML document into a value tree: `{"<root>": value}`.
pub fn parse(body: &[u8]) -> Result<Value, DecodeError> {
    let bad = |e: &dyn std::fmt::Display| DecodeError::new(format!("malformed XML: {e}"));
    let mut reader = Reader::from_reader(body);
    let mut stack: Vec<Node> = Vec::new();
    let mut buf = Vec::new();
    loop {
        match reader.read_event_into(&mut buf).map_err(|e| bad(&e))? {
            Event::Start(e) => {
                if stack.len() >= MAX_XML_DEPTH {
                    return Err(DecodeError::new("malformed XML: nested too deeply"));
                }
                stack.push(Node::open(&e)?);
            }
            Event::Empty(e) => {
                let node = Node::open(&e)?;
                let name = node.name.clone();
                match stack.last_mut() {
                    Some(parent) => add_child(parent, name, node.into_value()),
                    None => return Ok(single(name, node.into_value())),
                }
            }
            Event::Text(t) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&t.unescape().map_err(|e| bad(&e))?);
                }
            }
            Event::CData(t) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&String::from_utf8_lossy(&t.into_inner()));
                }
            }
            Event::End(_) => {
                let node = stack.pop().ok_or_else(|| DecodeError::new("malformed XML: unbalanced end tag"))?;
                let name = node.name.clone();
                let value = node.into_value();
                match stack.last_mut() {
                    Some(parent) => add_child(parent, name, value),
                    None => return Ok(single(name, value)),
                }
            }
            Event::Eof => return Err(DecodeError::new("malformed XML: no complete root element")),
            _ => {}
        }
        buf.clear();
    }
}

fn single(name: String, value: Value) -> Value {
    let mut m = Map::new();
    m.insert(name, value);
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_escaping_round_trips() {
        assert_eq!(escape_name("build_id").as_deref(), Some("build__id"));
        assert_eq!(escape_name("a$b").as_deref(), Some("a_-b"));
        assert_eq!(unescape_name("build__id"), "build_id");
        assert_eq!(unescape_name(&escape_name("my_-key").unwrap()), "my_-key");
        assert_eq!(unescape_name(&escape_name("a$_b__").unwrap()), "a$_b__");
        assert_eq!(escape_name("management.port").as_deref(), Some("management.port"));
        assert_eq!(escape_name("1abc"), None);
        assert_eq!(escape_name("has space"), None);
        assert_eq!(escape_name("a:b"), None);
        assert_eq!(escape_name(""), None);
    }

    #[test]
    fn parses_attributes_text_and_repeats() {
        let v =
            parse(br#"<instance><port enabled="true">8080</port><a>1</a><a>2</a><m class="x"/></instance>"#).unwrap();
        let i = &v["instance"];
        assert_eq!(i["port"]["@enabled"], "true");
        assert_eq!(i["port"]["$"], "8080");
        assert_eq!(i["a"], serde_json::json!(["1", "2"]));
        assert_eq!(i["m"]["@class"], "x");
    }

    #[test]
    fn rejects_broken_documents() {
        assert!(parse(b"<instance><a>1</instance>").is_err());
        assert!(parse(b"<instance>").is_err());
        assert!(parse(b"").is_err());
        let deep = "<a>".repeat(100) + &"</a>".repeat(100);
        assert!(parse(deep.as_bytes()).is_err());
        assert!(parse(br#"<a x="1" x="2"/>"#).unwrap_err().0.contains("repeated"));
    }

    #[test]
    fn many_attributes_are_refused_at_once() {
        let attrs: String = (0..25_000).map(|i| format!(" a{i}=\"v\"")).collect();
        let doc = format!("<instance{attrs}/>");
        let e = parse(doc.as_bytes()).unwrap_err();
        assert!(e.0.contains("attributes on one element"), "{e}");
        let fine: String = (0..MAX_XML_ATTRIBUTES).map(|i| format!(" a{i}=\"v\"")).collect();
        assert!(parse(format!("<instance{fine}/>").as_bytes()).is_ok());
    }
}
