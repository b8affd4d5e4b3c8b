//! Eureka's peer replication batch format, `POST {base}/peerreplication/batch/`
//! (spec §9.4), spoken by synod's p2p backend and by Netflix Eureka servers.
//!
//! Request: `{"replicationList": [{"appName", "id", "lastDirtyTimestamp", "status",
//! "overriddenStatus", "instanceInfo", "action"}, …]}`; response:
//! `{"responseList": [{"statusCode", "responseEntity"?}, …]}`, one entry per item, in order.
//!
//! Between synod nodes every item also carries `"synod"` ([`Versioned`]): the instance's
//! version, and with `instanceInfo` a whole copy, which the receiver adopts by
//! last-writer-wins ([`crate::core::version`]) instead of by Eureka's rules. The same items
//! list a node's registry for anti-entropy and start-up sync.

use serde::de::{Deserializer, SeqAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

use crate::codec::json::JInstance;
use std::collections::BTreeMap;

use crate::codec::{decode, json, DecodeError};
use crate::core::command::Replica;
use crate::core::limits;
use crate::core::model::{InstanceInfo, InstanceKey, Status};
use crate::core::state::PersistedEntry;
use crate::core::views::InstanceView;

/// What a replicated item does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Heartbeat,
    Register,
    Cancel,
    StatusUpdate,
    DeleteStatusOverride,
}

impl Action {
    /// Wire name (exact case).
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Heartbeat => "Heartbeat",
            Action::Register => "Register",
            Action::Cancel => "Cancel",
            Action::StatusUpdate => "StatusUpdate",
            Action::DeleteStatusOverride => "DeleteStatusOverride",
        }
    }

    fn parse(s: &str) -> Option<Action> {
        Some(match s {
            "Heartbeat" => Action::Heartbeat,
            "Register" => Action::Register,
            "Cancel" => Action::Cancel,
            "StatusUpdate" => Action::StatusUpdate,
            "DeleteStatusOverride" => Action::DeleteStatusOverride,
            _ => return None,
        })
    }
}

/// One replicated change.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub action: Action,
    /// Upper case.
    pub app: String,
    pub id: String,
    pub last_dirty_timestamp: Option<u64>,
    pub status: Option<Status>,
    pub overridden_status: Option<Status>,
    /// Present for `Register` (and for every copy a synod node sends).
    pub instance: Option<Box<InstanceInfo>>,
    /// synod's extension; absent in items from Netflix Eureka.
    pub synod: Option<Versioned>,
}

/// synod's extension of an item: the version of the change, and what a whole copy needs
/// beyond Eureka's instance document.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Versioned {
    /// The instance's version (a `Cancel`: the deletion's).
    pub version: u64,
    pub registered: u64,
    pub service_up: u64,
    /// When the sending node last saw the instance renewed.
    pub renewed: u64,
    pub status_override: Option<Status>,
    pub metadata_override: BTreeMap<String, String>,
}

impl Item {
    /// The copy this item carries, for [`crate::core::command::Command::Adopt`]: a
    /// versioned `Cancel` is a deletion, a versioned item with an instance a live copy.
    pub fn replica(&self) -> Option<Replica> {
        let v = self.synod.as_ref()?;
        match (self.action, &self.instance) {
            (Action::Cancel, _) => Some(Replica::Deleted { version: v.version }),
            (Action::Heartbeat, _) | (_, None) => None,
            (_, Some(instance)) => {
                let mut info = (**instance).clone();
                info.last_updated_timestamp = v.version;
                Some(Replica::Live {
                    entry: Box::new(PersistedEntry {
                        info,
                        registration_ts: v.registered,
                        service_up_ts: v.service_up,
                        status_override: v.status_override,
                        metadata_override: v.metadata_override.clone(),
                    }),
                    renewed: v.renewed,
                })
            }
        }
    }

    /// The instance addressed.
    pub fn key(&self) -> InstanceKey {
        InstanceKey { app: self.app.clone(), id: self.id.clone() }
    }
}

/// Most items in one batch (Eureka and synod send at most 250).
pub const MAX_BATCH_ITEMS: usize = 1000;
/// Largest item: an instance within the registry's limits is far smaller. Bounds the tree
/// built while one item is decoded.
pub const MAX_ITEM_BYTES: usize = 256 * 1024;

/// A batch as it arrives: each item left as its slice of the body, so no tree of the whole
/// document is ever built; items are parsed one at a time.
#[derive(Deserialize)]
struct RawBatch<'a> {
    #[serde(rename = "replicationList", borrow, deserialize_with = "bounded_items")]
    list: Vec<&'a RawValue>,
}

/// The item array, refused past [`MAX_BATCH_ITEMS`] before it grows further.
fn bounded_items<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<&'de RawValue>, D::Error> {
    struct Items;
    impl<'de> Visitor<'de> for Items {
        type Value = Vec<&'de RawValue>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            write!(f, "an array of at most {MAX_BATCH_ITEMS} items")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(item) = seq.next_element::<&'de RawValue>()? {
                if out.len() == MAX_BATCH_ITEMS {
                    return Err(serde::de::Error::custom(format!("more than {MAX_BATCH_ITEMS} items in one batch")));
                }
                out.push(item);
            }
            Ok(out)
        }
    }
    d.deserialize_seq(Items)
}

/// The whole body is unusable (not JSON, no `replicationList` array, too many items): answer
/// 400 and apply nothing. Otherwise each item decodes on its own, to an item or its error.
pub fn decode_batch(body: &[u8], now: u64) -> Result<Vec<Result<Item, DecodeError>>, DecodeError> {
    let batch: RawBatch = serde_json::from_slice(body).map_err(|e| {
        DecodeError::new(format!("body must be an object with a \"replicationList\" array of items: {e}"))
    })?;
    Ok(batch.list.iter().map(|raw| decode_raw_item(raw, now)).collect())
}

/// A node's listing (anti-entropy, start-up sync): items like a batch's, as many as the
/// registry holds.
pub fn decode_listing(body: &[u8], now: u64) -> Result<Vec<Result<Item, DecodeError>>, DecodeError> {
    #[derive(Deserialize)]
    struct Listing<'a> {
        #[serde(rename = "replicationList", borrow)]
        list: Vec<&'a RawValue>,
    }
    let listing: Listing = serde_json::from_slice(body).map_err(|e| {
        DecodeError::new(format!("body must be an object with a \"replicationList\" array of items: {e}"))
    })?;
    Ok(listing.list.iter().map(|raw| decode_raw_item(raw, now)).collect())
}

fn decode_raw_item(raw: &RawValue, now: u64) -> Result<Item, DecodeError> {
    if raw.get().len() > MAX_ITEM_BYTES {
        return Err(DecodeError::new(format!("replication item larger than {MAX_ITEM_BYTES} bytes")));
    }
    decode_item(&json::parse(raw.get().as_bytes())?, now)
}

fn decode_versioned(v: &Value) -> Result<Versioned, DecodeError> {
    let o = v.as_object().ok_or_else(|| DecodeError::new("synod must be an object"))?;
    let number = |key: &str| -> Result<u64, DecodeError> {
        match o.get(key) {
            None | Some(Value::Null) => Ok(0),
            Some(n) => n.as_u64().ok_or_else(|| DecodeError::new(format!("synod.{key} must be a number"))),
        }
    };
    let status_override = match o.get("statusOverride").and_then(Value::as_str) {
        None => None,
        Some(s) => Some(s.parse().map_err(|e| DecodeError::new(format!("synod.statusOverride: {e}")))?),
    };
    let metadata_override = decode::string_map(o.get("metadataOverride"), "synod.metadataOverride")?;
    limits::check_metadata_map(&metadata_override, "synod.metadataOverride").map_err(DecodeError::new)?;
    Ok(Versioned {
        version: number("version")?,
        registered: number("registered")?,
        service_up: number("serviceUp")?,
        renewed: number("renewed")?,
        status_override,
        metadata_override,
    })
}

fn decode_item(v: &Value, now: u64) -> Result<Item, DecodeError> {
    let o = v.as_object().ok_or_else(|| DecodeError::new("replication item must be an object"))?;
    let text = |key: &str| o.get(key).and_then(Value::as_str).map(str::to_string);
    let action = text("action").as_deref().and_then(Action::parse).ok_or_else(|| {
        DecodeError::new("action must be Heartbeat, Register, Cancel, StatusUpdate or DeleteStatusOverride")
    })?;
    let status = |key: &str| -> Result<Option<Status>, DecodeError> {
        match text(key) {
            None => Ok(None),
            Some(s) => s.parse().map(Some).map_err(|e| DecodeError::new(format!("{key}: {e}"))),
        }
    };
    let last_dirty_timestamp = match o.get("lastDirtyTimestamp") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => {
            Some(n.as_u64().ok_or_else(|| DecodeError::new("lastDirtyTimestamp must be a number"))?)
        }
        Some(Value::String(s)) => {
            Some(s.trim().parse().map_err(|_| DecodeError::new("lastDirtyTimestamp must be a number"))?)
        }
        Some(_) => return Err(DecodeError::new("lastDirtyTimestamp must be a number")),
    };
    let instance = match o.get("instanceInfo") {
        None | Some(Value::Null) => None,
        Some(v) => Some(Box::new(decode::instance(v, now)?)),
    };
    let (app, id) = match &instance {
        // A Register names its instance in the body; appName/id may be absent there.
        Some(i) => (i.app.clone(), i.instance_id.clone()),
        None => (
            text("appName").map(|a| a.to_ascii_uppercase()).ok_or_else(|| DecodeError::new("missing appName"))?,
            text("id").ok_or_else(|| DecodeError::new("missing id"))?,
        ),
    };
    if action == Action::Register && instance.is_none() {
        return Err(DecodeError::new("Register needs instanceInfo"));
    }
    let synod = match o.get("synod") {
        None | Some(Value::Null) => None,
        Some(v) => Some(decode_versioned(v)?),
    };
    Ok(Item {
        action,
        app,
        id,
        last_dirty_timestamp,
        status: status("status")?,
        overridden_status: status("overriddenStatus")?,
        instance,
        synod,
    })
}

/// An item and, for a copy, the instance document it carries.
pub type WireItem = (Item, Option<InstanceView>);

/// One item as it is written.
struct ItemOnWire<'a>(&'a Item, Option<&'a InstanceView>);

impl Serialize for ItemOnWire<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (i, view) = (self.0, self.1);
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("appName", &i.app)?;
        m.serialize_entry("id", &i.id)?;
        if let Some(t) = i.last_dirty_timestamp {
            m.serialize_entry("lastDirtyTimestamp", &t)?;
        }
        if let Some(st) = i.status {
            m.serialize_entry("status", st.as_str())?;
        }
        if let Some(o) = i.overridden_status {
            m.serialize_entry("overriddenStatus", o.as_str())?;
        }
        if let Some(v) = view {
            m.serialize_entry("instanceInfo", &JInstance(v))?;
        }
        if let Some(v) = &i.synod {
            m.serialize_entry("synod", &WireVersioned(v))?;
        }
        m.serialize_entry("action", i.action.as_str())?;
        m.end()
    }
}

/// Encodes a batch request; `Register` items carry the instance view.
pub fn encode_batch(items: &[WireItem]) -> Vec<u8> {
    #[derive(Serialize)]
    struct Batch<'a> {
        #[serde(rename = "replicationList")]
        list: Vec<ItemOnWire<'a>>,
    }
    let list: Vec<ItemOnWire> = items.iter().map(|(i, v)| ItemOnWire(i, v.as_ref())).collect();
    serde_json::to_vec(&Batch { list }).unwrap_or_default()
}

struct WireVersioned<'a>(&'a Versioned);

impl Serialize for WireVersioned<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let v = self.0;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("version", &v.version)?;
        if v.registered != 0 {
            m.serialize_entry("registered", &v.registered)?;
        }
        if v.service_up != 0 {
            m.serialize_entry("serviceUp", &v.service_up)?;
        }
        if v.renewed != 0 {
            m.serialize_entry("renewed", &v.renewed)?;
        }
        if let Some(st) = v.status_override {
            m.serialize_entry("statusOverride", st.as_str())?;
        }
        if !v.metadata_override.is_empty() {
            m.serialize_entry("metadataOverride", &v.metadata_override)?;
        }
        m.end()
    }
}

/// One item's result.
#[derive(Debug, Clone, Default)]
pub struct ItemResult {
    pub status_code: u16,
    /// The receiver's newer copy, sent with a 409 on an unversioned heartbeat (Eureka's).
    pub entity: Option<InstanceView>,
    /// With a 409 on a versioned item: what the receiver holds that ranks higher, as a
    /// versioned item (`"synod"`), for the sender to adopt at once.
    pub newer: Option<WireItem>,
}

impl ItemResult {
    /// A result with only a status code.
    pub fn code(status_code: u16) -> ItemResult {
        ItemResult { status_code, ..Default::default() }
    }
}

/// A decoded item result.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub status_code: u16,
    pub entity: Option<InstanceInfo>,
    pub newer: Option<Item>,
}

/// Encodes a batch response.
pub fn encode_results(results: &[ItemResult]) -> Vec<u8> {
    struct Wire<'a>(&'a ItemResult);
    impl Serialize for Wire<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut m = s.serialize_map(None)?;
            m.serialize_entry("statusCode", &self.0.status_code)?;
            if let Some(v) = &self.0.entity {
                m.serialize_entry("responseEntity", &JInstance(v))?;
            }
            if let Some((item, view)) = &self.0.newer {
                m.serialize_entry("synod", &ItemOnWire(item, view.as_ref()))?;
            }
            m.end()
        }
    }
    #[derive(Serialize)]
    struct Results<'a> {
        #[serde(rename = "responseList")]
        list: Vec<Wire<'a>>,
    }
    let list: Vec<Wire> = results.iter().map(Wire).collect();
    serde_json::to_vec(&Results { list }).unwrap_or_default()
}

/// A decoded batch response: per item, its status, any entity and any newer item.
pub fn decode_results(body: &[u8], now: u64) -> Result<Vec<Answer>, DecodeError> {
    let root = json::parse(body)?;
    let list = root
        .get("responseList")
        .and_then(Value::as_array)
        .ok_or_else(|| DecodeError::new("body must be an object with a \"responseList\" array"))?;
    list.iter()
        .map(|r| {
            let code = r
                .get("statusCode")
                .and_then(Value::as_u64)
                .and_then(|c| u16::try_from(c).ok())
                .ok_or_else(|| DecodeError::new("statusCode must be a number"))?;
            let entity = match r.get("responseEntity") {
                None | Some(Value::Null) => None,
                Some(v) => Some(decode::instance(v, now)?),
            };
            let newer = match r.get("synod") {
                None | Some(Value::Null) => None,
                Some(v) => Some(decode_item(v, now)?),
            };
            Ok(Answer { status_code: code, entity, newer })
        })
        .collect()
}
