//! Property tests: the decoders and the path parser never panic, whatever the input, and a
//! decoded instance always satisfies the validation rules.

use proptest::prelude::*;
use synod::codec::{decode, json, tree, xml};
use synod::http::path::segments;

fn valid_json() -> String {
    r#"{"instance":{"instanceId":"h:a:1","hostName":"h","app":"A","ipAddr":"1.2.3.4","status":"UP",
    "overriddenstatus":"UNKNOWN","port":{"$":1,"@enabled":"true"},"securePort":{"$":2,"@enabled":"false"},
    "countryId":1,"dataCenterInfo":{"@class":"com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo","name":"MyOwn"},
    "leaseInfo":{"renewalIntervalInSecs":30,"durationInSecs":90},"metadata":{"k":"v"},
    "lastDirtyTimestamp":"1"}}"#
        .to_string()
}

fn valid_xml() -> String {
    r#"<instance><instanceId>h:a:1</instanceId><hostName>h</hostName><app>A</app><ipAddr>1.2.3.4</ipAddr>
    <status>UP</status><port enabled="true">1</port><securePort enabled="false">2</securePort>
    <dataCenterInfo class="com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo"><name>MyOwn</name></dataCenterInfo>
    <leaseInfo><renewalIntervalInSecs>30</renewalIntervalInSecs></leaseInfo><metadata><k__x>v</k__x></metadata></instance>"#
        .to_string()
}

fn check_decoded(tree: Result<serde_json::Value, synod::codec::DecodeError>) {
    if let Ok(tree) = tree {
        if let Ok(i) = decode::registration(&tree, 5) {
            assert!(!i.instance_id.trim().is_empty());
            assert!(!i.host_name.trim().is_empty());
            assert!(!i.ip_addr.trim().is_empty());
            assert_eq!(i.app, i.app.to_ascii_uppercase());
            assert!(i.port.port <= 65535 && i.secure_port.port <= 65535);
            assert!(i.lease.duration_secs > 0 && i.lease.renewal_interval_secs > 0);
            // Whatever the decoder accepts, the raft leader accepts when it is forwarded.
            assert_eq!(synod::core::limits::check_instance(&i), Ok(()));
        }
    }
}

/// Both JSON trees (the borrowed one of the registration path and `serde_json::Value`) must
/// accept the same documents and decode them to the same instance or the same error.
fn same_decoding(body: &[u8]) {
    let value = json::parse(body);
    let node = tree::parse_json(body);
    assert_eq!(value.is_ok(), node.is_ok(), "{:?}", String::from_utf8_lossy(body));
    if let (Ok(value), Ok(node)) = (value, node) {
        assert_eq!(
            decode::registration(&value, 5),
            decode::registration(&node, 5),
            "{:?}",
            String::from_utf8_lossy(body)
        );
    }
}

/// JSON object text from members, repeats allowed (a `Value` cannot hold them).
fn object_text(members: &[(String, serde_json::Value)]) -> String {
    let parts: Vec<String> = members.iter().map(|(k, v)| format!("{}:{}", serde_json::json!(k), v)).collect();
    format!("{{{}}}", parts.join(","))
}

/// Mutates a document: replaces a byte range with arbitrary text.
fn mutate(doc: &str, at: usize, len: usize, with: &str) -> String {
    let bytes = doc.as_bytes();
    let at = at % bytes.len();
    let end = (at + len).min(bytes.len());
    let mut out = bytes[..at].to_vec();
    out.extend_from_slice(with.as_bytes());
    out.extend_from_slice(&bytes[end..]);
    String::from_utf8_lossy(&out).into_owned()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn json_decoder_never_panics_on_bytes(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        check_decoded(json::parse(&body));
        same_decoding(&body);
    }

    #[test]
    fn xml_decoder_never_panics_on_bytes(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        check_decoded(xml::parse(&body));
    }

    #[test]
    fn json_decoder_survives_mutations(at in 0usize..2000, len in 0usize..20, with in "[\\PC{}\\[\\]\":,0-9tfn-]{0,12}") {
        let body = mutate(&valid_json(), at, len, &with);
        check_decoded(json::parse(body.as_bytes()));
        same_decoding(body.as_bytes());
    }

    #[test]
    fn xml_decoder_survives_mutations(at in 0usize..2000, len in 0usize..20, with in "[\\PC<>/=\"&;]{0,12}") {
        check_decoded(xml::parse(mutate(&valid_xml(), at, len, &with).as_bytes()));
    }

    #[test]
    fn json_values_of_any_shape_are_handled(v in arb_json()) {
        let wrapped = serde_json::json!({"instance": v});
        let _ = decode::registration(&wrapped, 0);
        same_decoding(wrapped.to_string().as_bytes());
    }

    #[test]
    fn repeated_members_decode_alike(members in proptest::collection::vec((arb_key(), arb_json()), 0..12)) {
        let body = format!(r#"{{"instance":{}}}"#, object_text(&members));
        same_decoding(body.as_bytes());
        // The same repeats inside a valid instance's objects.
        let valid = valid_json();
        let with_repeats = valid.replacen(r#""metadata":{"k":"v"}"#, &format!(r#""metadata":{}"#, object_text(&members)), 1);
        same_decoding(with_repeats.as_bytes());
        let at_top = valid.replacen(r#"{"instance":{"#, &format!(r#"{{"instance":{{{},"#, object_text(&members).trim_matches(|c| c == '{' || c == '}')), 1);
        same_decoding(at_top.as_bytes());
    }

    #[test]
    fn path_parser_never_panics(p in "[/%a-zA-Z0-9:._~-]{0,64}") {
        if let Ok(segs) = segments(&p) {
            prop_assert!(segs.iter().all(|s| !s.is_empty()));
        }
    }
}

fn arb_json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::Bool),
        any::<i64>().prop_map(|n| serde_json::json!(n)),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| serde_json::json!(f)),
        "[a-zA-Z0-9_$@.]{0,8}".prop_map(serde_json::Value::String),
    ];
    let keys = arb_key();
    leaf.prop_recursive(4, 64, 8, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            proptest::collection::btree_map(keys.clone(), inner, 0..8)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

fn arb_key() -> impl Strategy<Value = String> + Clone {
    prop_oneof![
        Just("instanceId".to_string()),
        Just("hostName".to_string()),
        Just("app".to_string()),
        Just("ipAddr".to_string()),
        Just("port".to_string()),
        Just("securePort".to_string()),
        Just("dataCenterInfo".to_string()),
        Just("leaseInfo".to_string()),
        Just("metadata".to_string()),
        Just("status".to_string()),
        Just("name".to_string()),
        Just("$".to_string()),
        Just("@enabled".to_string()),
        Just("@class".to_string()),
        Just("lastDirtyTimestamp".to_string()),
        Just("durationInSecs".to_string()),
        Just("countryId".to_string()),
        Just("k".to_string()),
        "[a-z]{1,3}",
    ]
}

#[test]
fn country_ids_beyond_an_int_are_refused_not_clamped() {
    for (value, ok) in [("1", true), ("2147483647", true), ("2147483648", false), ("1180591620717411303424", false)] {
        let body = valid_json().replace("\"countryId\":1", &format!("\"countryId\":{value}"));
        let tree = json::parse(body.as_bytes()).unwrap();
        let got = decode::registration(&tree, 0);
        assert_eq!(got.is_ok(), ok, "countryId {value}: {got:?}");
        if let Err(e) = got {
            assert!(e.0.contains("countryId"), "{e}");
        }
    }
}

#[test]
fn valid_documents_decode() {
    let tree = json::parse(valid_json().as_bytes()).unwrap();
    let i = decode::registration(&tree, 0).unwrap();
    assert_eq!(i.instance_id, "h:a:1");
    let tree = xml::parse(valid_xml().as_bytes()).unwrap();
    let i = decode::registration(&tree, 0).unwrap();
    assert_eq!(i.metadata.get("k_x").map(String::as_str), Some("v"));
}
