//! Wire-format tests of the peer replication batch protocol.

use serde_json::{json, Value};

use super::protocol::*;
use crate::codec::{decode, json};
use crate::core::model::Status;
use crate::core::views::InstanceView;

const NOW: u64 = 1_718_000_000_000;

fn instance_json() -> Value {
    json!({"instanceId": "10.0.0.5:orders:8080", "hostName": "10.0.0.5", "app": "ORDERS", "ipAddr": "10.0.0.5",
        "status": "UP", "overriddenStatus": "UNKNOWN", "port": {"$": 8080, "@enabled": "true"},
        "securePort": {"$": 443, "@enabled": "false"}, "countryId": 1,
        "dataCenterInfo": {"@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo", "name": "MyOwn"},
        "leaseInfo": {"renewalIntervalInSecs": 30, "durationInSecs": 90}, "metadata": {"management.port": "8080"},
        "vipAddress": "orders", "isCoordinatingDiscoveryServer": "false",
        "lastUpdatedTimestamp": "1718000000500", "lastDirtyTimestamp": "1717999998000", "actionType": "ADDED"})
}

/// The example batch of the spec (§9.4), as a Netflix Eureka peer sends it.
fn eureka_batch() -> Value {
    json!({"replicationList": [
        {"appName": "ORDERS", "id": "10.0.0.5:orders:8080", "lastDirtyTimestamp": 1717999998000u64, "status": "UP",
         "instanceInfo": instance_json(), "action": "Register"},
        {"appName": "ORDERS", "id": "10.0.0.6:orders:8080", "lastDirtyTimestamp": 1718000299000u64,
         "overriddenStatus": "OUT_OF_SERVICE", "status": "OUT_OF_SERVICE", "action": "Heartbeat"},
        {"appName": "BILLING", "id": "i-0abc123", "action": "Cancel"},
        {"appName": "ORDERS", "id": "10.0.0.6:orders:8080", "lastDirtyTimestamp": 1718000299000u64,
         "status": "OUT_OF_SERVICE", "action": "StatusUpdate"},
        {"appName": "orders", "id": "10.0.0.6:orders:8080", "lastDirtyTimestamp": "1718000299000",
         "status": "UNKNOWN", "action": "DeleteStatusOverride"}
    ]})
}

#[test]
fn decodes_eurekas_batch() {
    let items = decode_batch(eureka_batch().to_string().as_bytes(), NOW).unwrap();
    let items: Vec<Item> = items.into_iter().map(Result::unwrap).collect();
    assert_eq!(
        items.iter().map(|i| i.action).collect::<Vec<_>>(),
        vec![Action::Register, Action::Heartbeat, Action::Cancel, Action::StatusUpdate, Action::DeleteStatusOverride]
    );
    let reg = items[0].instance.as_ref().unwrap();
    assert_eq!((reg.app.as_str(), reg.instance_id.as_str()), ("ORDERS", "10.0.0.5:orders:8080"));
    assert_eq!(reg.last_dirty_timestamp, 1_717_999_998_000);
    assert_eq!(items[1].overridden_status, Some(Status::OutOfService));
    assert_eq!(items[1].last_dirty_timestamp, Some(1_718_000_299_000));
    assert_eq!((items[2].app.as_str(), items[2].id.as_str()), ("BILLING", "i-0abc123"));
    assert_eq!(items[4].app, "ORDERS", "app names are upper-cased");
    assert_eq!(items[4].last_dirty_timestamp, Some(1_718_000_299_000), "string timestamps are accepted");
}

#[test]
fn malformed_batches_are_rejected_whole() {
    for body in ["", "{", "[]", "{\"replicationList\": 5}", "{\"other\": []}"] {
        assert!(decode_batch(body.as_bytes(), 0).is_err(), "{body}");
    }
}

#[test]
fn invalid_items_fail_alone() {
    let body = json!({"replicationList": [
        {"appName": "A", "id": "1", "action": "Cancel"},
        {"appName": "A", "id": "1", "action": "Explode"},
        {"appName": "A", "action": "Cancel"},
        {"appName": "A", "id": "1", "action": "Register"},
        {"appName": "A", "id": "1", "status": "SIDEWAYS", "action": "StatusUpdate"},
        {"appName": "A", "id": "1", "lastDirtyTimestamp": "soon", "action": "Heartbeat"},
        7
    ]});
    let items = decode_batch(body.to_string().as_bytes(), 0).unwrap();
    assert_eq!(items.len(), 7);
    assert!(items[0].is_ok());
    assert!(items[1..].iter().all(Result::is_err));
}

#[test]
fn batches_round_trip() {
    let info = decode::instance(&instance_json(), NOW).unwrap();
    let view = InstanceView { info: std::sync::Arc::new(info.clone()), stamps: Default::default() };
    let items = vec![
        (
            Item {
                action: Action::Register,
                app: "ORDERS".into(),
                id: info.instance_id.clone(),
                last_dirty_timestamp: Some(info.last_dirty_timestamp),
                status: Some(Status::Up),
                overridden_status: None,
                instance: None,
                synod: None,
            },
            Some(view.clone()),
        ),
        (
            Item {
                action: Action::Heartbeat,
                app: "ORDERS".into(),
                id: "x".into(),
                last_dirty_timestamp: Some(5),
                status: Some(Status::Up),
                overridden_status: Some(Status::OutOfService),
                instance: None,
                synod: None,
            },
            None,
        ),
    ];
    let wire: Value = serde_json::from_slice(&encode_batch(&items)).unwrap();
    assert_eq!(wire["replicationList"][0]["action"], "Register");
    assert_eq!(wire["replicationList"][0]["lastDirtyTimestamp"], 1_717_999_998_000u64, "a JSON number, as Java's Long");
    assert_eq!(wire["replicationList"][0]["instanceInfo"]["port"], json!({"$": 8080, "@enabled": "true"}));
    let back = decode_batch(&encode_batch(&items), NOW).unwrap();
    let back: Vec<Item> = back.into_iter().map(Result::unwrap).collect();
    assert_eq!(back[0].instance.as_deref(), Some(&info));
    assert_eq!(back[1], items[1].0);

    let results = vec![ItemResult::code(200), ItemResult { status_code: 409, entity: Some(view), newer: None }];
    let wire: Value = serde_json::from_slice(&encode_results(&results)).unwrap();
    assert_eq!(wire["responseList"][0], json!({"statusCode": 200}));
    assert_eq!(wire["responseList"][1]["responseEntity"]["instanceId"], "10.0.0.5:orders:8080");
    let decoded = decode_results(&encode_results(&results), NOW).unwrap();
    assert_eq!(decoded[0], Answer { status_code: 200, entity: None, newer: None });
    assert_eq!(decoded[1].status_code, 409);
    assert_eq!(decoded[1].entity.as_ref().map(|i| i.instance_id.as_str()), Some("10.0.0.5:orders:8080"));
}

#[test]
fn batches_are_bounded_in_items_and_item_size() {
    let many = format!("{{\"replicationList\":[{}{{}}]}}", "{},".repeat(MAX_BATCH_ITEMS));
    let e = decode_batch(many.as_bytes(), NOW).unwrap_err();
    assert!(e.0.contains("more than 1000 items"), "{e}");
    let fits = format!("{{\"replicationList\":[{}{{}}]}}", "{},".repeat(MAX_BATCH_ITEMS - 1));
    assert_eq!(decode_batch(fits.as_bytes(), NOW).unwrap().len(), MAX_BATCH_ITEMS);
    // Junk items fail one by one; an oversized one is refused before it is parsed.
    let big = format!("{{\"action\":\"Cancel\",\"pad\":\"{}\"}}", "x".repeat(MAX_ITEM_BYTES));
    let body = format!("{{\"replicationList\":[1,[],{big},{{\"appName\":\"A\",\"id\":\"i\",\"action\":\"Cancel\"}}]}}");
    let items = decode_batch(body.as_bytes(), NOW).unwrap();
    assert!(items[0].is_err() && items[1].is_err());
    assert!(items[2].as_ref().unwrap_err().0.contains("larger than"));
    assert_eq!(items[3].as_ref().map(|i| i.action), Ok(Action::Cancel));
}

/// A copy sent between synod nodes arrives whole and with the same rank, or two nodes
/// holding "the same" copy would keep replacing each other's.
#[test]
fn a_copy_crosses_the_wire_whole_with_its_rank() {
    use super::copies::{self, Holdings};
    use crate::core::command::{Command, Replica};
    use crate::core::model::InstanceKey;
    use crate::core::state::{CoreConfig, RegistryState};
    use std::collections::BTreeMap;

    let tree = json::parse(instance_json().to_string().as_bytes()).unwrap();
    let inst = decode::instance(&tree, NOW).unwrap();
    let key = InstanceKey { app: inst.app.clone(), id: inst.instance_id.clone() };
    let mut st = RegistryState::new(CoreConfig { tombstone_retention_ms: 60_000, ..CoreConfig::default() });
    st.apply(Command::Register { instance: Box::new(inst), now: NOW, from_peer: false });
    st.apply(Command::SetStatusOverride {
        key: key.clone(),
        status: Status::OutOfService,
        last_dirty: None,
        now: NOW + 1,
    });
    let entries = BTreeMap::from([("weight".to_string(), "5".to_string())]);
    st.apply(Command::UpdateMetadata { key: key.clone(), entries, now: NOW + 2 });
    let gone = InstanceKey::new("ORDERS", "gone");
    st.apply(Command::Cancel { key: gone.clone(), now: NOW + 3 });
    let mut other = crate::core::tests::instance("orders", "gone");
    other.last_dirty_timestamp = 1;
    st.apply(Command::Register { instance: Box::new(other), now: NOW + 3, from_peer: false });
    st.apply(Command::Cancel { key: gone.clone(), now: NOW + 4 });

    let holdings = Holdings::take(&st, Some("ORDERS"));
    let wire = encode_batch(&holdings.items());
    let listed: Vec<Item> = decode_listing(&wire, NOW + 5).unwrap().into_iter().map(Result::unwrap).collect();
    assert_eq!(listed.len(), 2);
    let e = st.get(&key).unwrap();
    match listed[0].replica().unwrap() {
        Replica::Live { mut entry, renewed } => {
            // The action is the receiver's to set (added or modified, as it sees it).
            let mut expected = st.persisted(&key).unwrap();
            (entry.info.action_type, expected.info.action_type) = (None, None);
            assert_eq!(*entry, expected, "every durable field arrives");
            assert_eq!(renewed, e.last_renewal_ts);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(listed[1].replica(), Some(Replica::Deleted { version: st.tombstones().get(&gone).unwrap() }));
    // Nothing is newer here than what was listed, and the digests of both sides agree.
    assert!(holdings.newer_than(&listed, NOW + 5).is_empty());
    let mut copy = RegistryState::new(CoreConfig { tombstone_retention_ms: 60_000, ..CoreConfig::default() });
    for item in &listed {
        copy.apply(Command::Adopt { key: item.key(), replica: item.replica().unwrap(), now: NOW + 5 });
    }
    assert_eq!(copies::digest(&copy), copies::digest(&st));
    // A heartbeat names the version only.
    let (hb, view) = copies::heartbeat(&key, e);
    assert!(view.is_none() && hb.replica().is_none());
    assert_eq!(hb.synod.map(|v| v.version), Some(e.info.last_updated_timestamp));
    // A 409 carries what the receiver holds, whole.
    let results = vec![ItemResult { status_code: 409, entity: None, newer: copies::held(&st, &key) }];
    let answer = decode_results(&encode_results(&results), NOW + 5).unwrap().remove(0);
    assert_eq!(answer.newer.and_then(|i| i.replica()), listed[0].replica());
}
