//! HTTP tests of the Eureka API against an in-process node on a loopback port: every
//! endpoint in JSON and XML, both prefixes, gzip, the status codes clients depend on, and
//! rejection of bad input without side effects.

mod common;

use std::io::Read;

use common::{py_instance, InProcess};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

const JSON: &str = "application/json";

fn client() -> Client {
    // No automatic decompression, so the tests see exactly what the server sends.
    Client::builder().no_gzip().build().unwrap()
}

async fn register(c: &Client, s: &InProcess, app: &str, body: &Value) -> StatusCode {
    c.post(s.url(&format!("apps/{app}"))).json(body).send().await.unwrap().status()
}

async fn get_text(c: &Client, url: &str) -> (StatusCode, String) {
    let r = c.get(url).send().await.unwrap();
    (r.status(), r.text().await.unwrap())
}

#[tokio::test]
async fn register_then_fetch_in_json_and_xml_under_both_prefixes() {
    let s = InProcess::start().await;
    let c = client();
    assert_eq!(
        register(&c, &s, "order-service", &py_instance("order-service", "10.0.0.5", 8080)).await,
        StatusCode::NO_CONTENT
    );

    for path in ["apps", "apps/", "v2/apps", "v2/apps/", "/apps//"] {
        let (st, v) = common::get_json(&c, &s.url(path)).await;
        assert_eq!(st, StatusCode::OK, "{path}");
        let apps = &v["applications"];
        assert_eq!(apps["versions__delta"], "1");
        assert_eq!(apps["apps__hashcode"], "UP_1_");
        let inst = &apps["application"][0]["instance"][0];
        assert_eq!(apps["application"][0]["name"], "ORDER-SERVICE");
        assert_eq!(inst["instanceId"], "10.0.0.5:order-service:8080");
        assert_eq!(inst["port"], json!({"$": 8080, "@enabled": "true"}));
        assert_eq!(inst["dataCenterInfo"]["@class"], "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo");
        assert_eq!(inst["isCoordinatingDiscoveryServer"], "false");
        assert_eq!(inst["lastDirtyTimestamp"], "1700000000000");
        assert!(inst["lastUpdatedTimestamp"].is_string());
        assert_eq!(inst["actionType"], "ADDED");
        assert_eq!(inst["leaseInfo"]["durationInSecs"], 90);
    }

    // Accept */* (py-eureka-client) gets XML.
    let r = c.get(s.url("apps/")).header("Accept", "*/*").send().await.unwrap();
    assert_eq!(r.headers()["content-type"], "application/xml");
    let xml = r.text().await.unwrap();
    assert!(xml.starts_with("<applications>"), "{xml}");
    assert!(xml.contains("<port enabled=\"true\">8080</port>"));
    assert!(xml.contains("<dataCenterInfo class=\"com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo\">"));
    assert!(xml.contains("<management.port>8080</management.port>"));
    assert!(xml.contains("<apps__hashcode>UP_1_</apps__hashcode>"));

    // One application, any case in the path.
    let (st, v) = common::get_json(&c, &s.url("apps/Order-Service")).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["application"]["name"], "ORDER-SERVICE");
    assert!(v["application"]["instance"].is_array());
    let (st, xml) = get_text(&c, &s.url("v2/apps/order-service")).await;
    assert_eq!(st, StatusCode::OK);
    assert!(xml.starts_with("<application><name>ORDER-SERVICE</name>"));
    let (st, body) = get_text(&c, &s.url("apps/NOPE")).await;
    assert_eq!((st, body.as_str()), (StatusCode::NOT_FOUND, ""));

    // One instance, by app and id (percent-encoded or literal) and by id alone.
    for path in [
        "apps/ORDER-SERVICE/10.0.0.5%3Aorder-service%3A8080",
        "apps/order-service/10.0.0.5:order-service:8080",
        "instances/10.0.0.5%3Aorder-service%3A8080",
    ] {
        let (st, v) = common::get_json(&c, &s.url(path)).await;
        assert_eq!(st, StatusCode::OK, "{path}");
        assert_eq!(v["instance"]["instanceId"], "10.0.0.5:order-service:8080");
    }
    let (st, xml) = get_text(&c, &s.url("instances/10.0.0.5:order-service:8080")).await;
    assert_eq!(st, StatusCode::OK);
    assert!(xml.starts_with("<instance><instanceId>10.0.0.5:order-service:8080</instanceId>"));
    assert_eq!(get_text(&c, &s.url("apps/ORDER-SERVICE/nope")).await.0, StatusCode::NOT_FOUND);
    assert_eq!(get_text(&c, &s.url("instances/nope")).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn empty_registry_shapes() {
    let s = InProcess::start().await;
    let c = client();
    let (_, v) = common::get_json(&c, &s.url("apps/")).await;
    assert_eq!(v, json!({"applications": {"versions__delta": "1", "apps__hashcode": "", "application": []}}));
    let (_, v) = common::get_json(&c, &s.url("apps/delta")).await;
    assert_eq!(v["applications"]["application"], json!([]));
    let (_, xml) = get_text(&c, &s.url("apps")).await;
    assert_eq!(
        xml,
        "<applications><versions__delta>1</versions__delta><apps__hashcode></apps__hashcode></applications>"
    );
}

#[tokio::test]
async fn gzip_when_accepted() {
    let s = InProcess::start().await;
    let c = client();
    register(&c, &s, "a", &py_instance("a", "10.0.0.1", 80)).await;
    for (accept, path) in [(JSON, "apps"), ("*/*", "apps/delta"), (JSON, "apps/A"), (JSON, "instances/10.0.0.1:a:80")] {
        let plain = c.get(s.url(path)).header("Accept", accept).send().await.unwrap().bytes().await.unwrap();
        let r = c
            .get(s.url(path))
            .header("Accept", accept)
            .header("Accept-Encoding", "gzip, deflate")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["content-encoding"], "gzip", "{path}");
        let gz = r.bytes().await.unwrap();
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&gz[..]).read_to_end(&mut out).unwrap();
        assert_eq!(out, plain, "{path}");
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[tokio::test]
async fn gzipped_registrations_are_decompressed_within_the_body_limit() {
    let s = InProcess::start_with(|c| c.max_body_size = 64 * 1024).await;
    let c = client();
    let post = |path: &str, body: Vec<u8>, encoding: &str| {
        c.post(s.url(path)).header("Content-Type", JSON).header("Content-Encoding", encoding).body(body).send()
    };
    let body = py_instance("zipped", "10.0.0.9", 80).to_string();
    assert_eq!(post("apps/ZIPPED", gzip(body.as_bytes()), "gzip").await.unwrap().status(), StatusCode::NO_CONTENT);
    let (st, v) = common::get_json(&c, &s.url("apps/ZIPPED/10.0.0.9:zipped:80")).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["instance"]["ipAddr"], "10.0.0.9");

    let before = s.version();
    // Small on the wire, over the limit once decompressed.
    let bomb = gzip(format!("{}{}", body, " ".repeat(100 * 1024)).as_bytes());
    assert!(bomb.len() < 64 * 1024);
    let cases = [
        (bomb, "gzip", StatusCode::PAYLOAD_TOO_LARGE, "larger than"),
        (b"not gzip at all".to_vec(), "gzip", StatusCode::BAD_REQUEST, "gunzip"),
        (body.clone().into_bytes(), "br", StatusCode::UNSUPPORTED_MEDIA_TYPE, "Content-Encoding"),
    ];
    for (bytes, encoding, want, msg) in cases {
        let r = post("apps/ZIPPED", bytes, encoding).await.unwrap();
        assert_eq!(r.status(), want, "{encoding} {msg}");
        assert!(r.text().await.unwrap().contains(msg), "{msg}");
    }
    assert_eq!(s.version(), before, "rejected requests changed the registry");
}

#[tokio::test]
async fn client_body_shapes_are_accepted() {
    let s = InProcess::start().await;
    let c = client();
    // eureka-js-client README: bare port number, no @class, no instanceId, no timestamps.
    let js = json!({"instance": {"app": "jqservice", "hostName": "js-host", "ipAddr": "10.0.0.9",
        "port": 8080, "vipAddress": "jq.service", "dataCenterInfo": {"name": "MyOwn"}}});
    assert_eq!(register(&c, &s, "jqservice", &js).await, StatusCode::NO_CONTENT);
    let (_, v) = common::get_json(&c, &s.url("apps/JQSERVICE/js-host")).await;
    assert_eq!(v["instance"]["port"], json!({"$": 8080, "@enabled": "true"}));
    assert_eq!(v["instance"]["dataCenterInfo"]["@class"], "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo");
    // Spring bean codec: numbers, booleans, explicit nulls, boolean @enabled, camelCase override.
    let spring = json!({"instance": {"instanceId": "sp:1", "app": "SPRING", "hostName": "sp", "ipAddr": "10.0.0.8",
        "status": "UP", "overriddenStatus": "UNKNOWN", "port": {"$": 9000, "@enabled": true},
        "securePort": {"$": 443, "@enabled": false}, "countryId": 1, "appGroupName": null, "asgName": null,
        "dataCenterInfo": {"@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo", "name": "MyOwn"},
        "leaseInfo": {"renewalIntervalInSecs": 5, "durationInSecs": 15}, "metadata": {"@class": "java.util.Collections$EmptyMap"},
        "isCoordinatingDiscoveryServer": false, "lastUpdatedTimestamp": 1700000000000u64, "lastDirtyTimestamp": 1700000000000u64,
        "sid": "na"}});
    assert_eq!(register(&c, &s, "spring", &spring).await, StatusCode::NO_CONTENT);
    let (_, v) = common::get_json(&c, &s.url("apps/SPRING/sp:1")).await;
    assert_eq!(v["instance"]["leaseInfo"]["renewalIntervalInSecs"], 5);
    assert_eq!(v["instance"]["metadata"], json!({"@class": "java.util.Collections$EmptyMap"}));
    assert!(v["instance"].get("sid").is_none());
    // XML registration body, with XStream name escaping in metadata.
    let xml = r#"<instance><instanceId>x1</instanceId><hostName>xh</hostName><app>XMLAPP</app><ipAddr>10.0.0.7</ipAddr>
        <status>UP</status><overriddenstatus>UNKNOWN</overriddenstatus><port enabled="true">7000</port>
        <securePort enabled="false">7443</securePort><countryId>1</countryId>
        <dataCenterInfo class="com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo"><name>MyOwn</name></dataCenterInfo>
        <leaseInfo><renewalIntervalInSecs>30</renewalIntervalInSecs><durationInSecs>90</durationInSecs></leaseInfo>
        <metadata><build__id>42</build__id></metadata><vipAddress>xmlapp</vipAddress>
        <lastDirtyTimestamp>1700000000000</lastDirtyTimestamp></instance>"#;
    let r = c.post(s.url("apps/XMLAPP")).header("Content-Type", "application/xml").body(xml).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let (_, v) = common::get_json(&c, &s.url("apps/XMLAPP/x1")).await;
    assert_eq!(v["instance"]["metadata"]["build_id"], "42");
    assert_eq!(v["instance"]["port"]["$"], 7000);
    // Amazon data center: class and metadata echoed.
    let mut aws = py_instance("billing", "10.1.2.3", 7001);
    aws["instance"]["instanceId"] = Value::Null;
    aws["instance"]["dataCenterInfo"] = json!({"@class": "com.netflix.appinfo.AmazonInfo", "name": "Amazon",
        "metadata": {"instance-id": "i-0abc", "availability-zone": "us-east-1a"}});
    assert_eq!(register(&c, &s, "billing", &aws).await, StatusCode::NO_CONTENT);
    let (st, v) = common::get_json(&c, &s.url("apps/BILLING/i-0abc")).await;
    assert_eq!(st, StatusCode::OK, "Amazon instance-id is the effective id");
    assert_eq!(v["instance"]["dataCenterInfo"]["metadata"]["availability-zone"], "us-east-1a");
}

#[tokio::test]
async fn renew_status_codes() {
    let s = InProcess::start().await;
    let c = client();
    register(&c, &s, "a", &py_instance("a", "10.0.0.1", 80)).await;
    let url = s.url("apps/A/10.0.0.1%3Aa%3A80");
    let put = |q: &str| c.put(format!("{url}{q}")).send();
    for (q, want) in [
        ("", StatusCode::OK),
        ("?status=UP&lastDirtyTimestamp=1700000000000", StatusCode::OK),
        ("?status=UP&lastDirtyTimestamp=1600000000000", StatusCode::OK),
        ("?status=UP&lastDirtyTimestamp=1800000000000", StatusCode::NOT_FOUND),
        ("?lastDirtyTimestamp=yesterday", StatusCode::BAD_REQUEST),
    ] {
        let r = put(q).await.unwrap();
        assert_eq!(r.status(), want, "{q}");
        if want != StatusCode::BAD_REQUEST {
            assert_eq!(r.text().await.unwrap(), "", "renew answers carry no body");
        }
    }
    let r = c.put(s.url("apps/A/unknown")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(r.text().await.unwrap(), "");
    assert_eq!(c.put(s.url("v2/apps/a/10.0.0.1:a:80/")).send().await.unwrap().status(), StatusCode::OK);
}

#[tokio::test]
async fn cancel_status_and_metadata() {
    let s = InProcess::start().await;
    let c = client();
    register(&c, &s, "a", &py_instance("a", "10.0.0.1", 80)).await;
    let inst = s.url("apps/A/10.0.0.1%3Aa%3A80");

    // Status override.
    let r = c.put(format!("{inst}/status?value=OUT_OF_SERVICE&lastDirtyTimestamp=1700000000001")).send().await.unwrap();
    assert_eq!((r.status(), r.text().await.unwrap().as_str()), (StatusCode::OK, ""));
    let (_, v) = common::get_json(&c, &inst).await;
    assert_eq!(v["instance"]["status"], "OUT_OF_SERVICE");
    assert_eq!(v["instance"]["overriddenStatus"], "OUT_OF_SERVICE");
    for path in ["serverinfo/statusoverrides", "v2/serverinfo/statusoverrides"] {
        let (_, v) = common::get_json(&c, &s.url(path)).await;
        assert_eq!(v, json!({"10.0.0.1:a:80": "OUT_OF_SERVICE"}));
    }
    // Re-register with UP: the override holds.
    register(&c, &s, "a", &py_instance("a", "10.0.0.1", 80)).await;
    assert_eq!(common::get_json(&c, &inst).await.1["instance"]["status"], "OUT_OF_SERVICE");
    assert_eq!(c.put(format!("{inst}/status?value=SIDEWAYS")).send().await.unwrap().status(), StatusCode::BAD_REQUEST);
    assert_eq!(c.put(format!("{inst}/status")).send().await.unwrap().status(), StatusCode::BAD_REQUEST);
    assert_eq!(c.put(s.url("apps/A/nope/status?value=UP")).send().await.unwrap().status(), StatusCode::NOT_FOUND);

    // Delete the override: the next heartbeat gets 404, the client re-registers and is UP.
    let r = c.delete(format!("{inst}/status?lastDirtyTimestamp=1700000000001")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(common::get_json(&c, &inst).await.1["instance"]["status"], "UNKNOWN");
    assert_eq!(c.put(&inst).send().await.unwrap().status(), StatusCode::NOT_FOUND);
    register(&c, &s, "a", &py_instance("a", "10.0.0.1", 80)).await;
    assert_eq!(common::get_json(&c, &inst).await.1["instance"]["status"], "UP");
    assert_eq!(c.put(&inst).send().await.unwrap().status(), StatusCode::OK);
    assert_eq!(c.delete(s.url("apps/A/nope/status")).send().await.unwrap().status(), StatusCode::NOT_FOUND);

    // Metadata.
    let r = c.put(format!("{inst}/metadata?weight=5&build_id=7")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let (_, v) = common::get_json(&c, &inst).await;
    assert_eq!(v["instance"]["metadata"]["weight"], "5");
    assert_eq!(v["instance"]["actionType"], "MODIFIED");
    let (_, xml) = get_text(&c, &inst).await;
    assert!(xml.contains("<build__id>7</build__id>"), "{xml}");
    assert_eq!(c.put(s.url("apps/A/nope/metadata?x=1")).send().await.unwrap().status(), StatusCode::NOT_FOUND);

    // Cancel.
    let r = c.delete(&inst).send().await.unwrap();
    assert_eq!((r.status(), r.text().await.unwrap().as_str()), (StatusCode::OK, ""));
    assert_eq!(c.delete(&inst).send().await.unwrap().status(), StatusCode::NOT_FOUND);
    assert_eq!(common::get_json(&c, &inst).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn delta_reconciles_with_the_full_registry() {
    let s = InProcess::start().await;
    let c = client();
    for (app, host) in [("a", "10.0.0.1"), ("a", "10.0.0.2"), ("b", "10.0.0.3")] {
        register(&c, &s, app, &py_instance(app, host, 80)).await;
    }
    // A client copy taken now.
    let (_, full0) = common::get_json(&c, &s.url("apps")).await;
    c.put(s.url("apps/A/10.0.0.2:a:80/status?value=DOWN")).send().await.unwrap();
    c.delete(s.url("apps/B/10.0.0.3:b:80")).send().await.unwrap();
    register(&c, &s, "c", &py_instance("c", "10.0.0.4", 80)).await;

    let (_, delta) = common::get_json(&c, &s.url("apps/delta")).await;
    let (_, full1) = common::get_json(&c, &s.url("apps")).await;
    assert_eq!(delta["applications"]["apps__hashcode"], full1["applications"]["apps__hashcode"]);
    assert_eq!(full1["applications"]["apps__hashcode"], "DOWN_1_UP_2_");
    let mut actions = std::collections::BTreeMap::new();
    for app in delta["applications"]["application"].as_array().unwrap() {
        for i in app["instance"].as_array().unwrap() {
            actions
                .insert(i["instanceId"].as_str().unwrap().to_string(), i["actionType"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(actions["10.0.0.2:a:80"], "MODIFIED");
    assert_eq!(actions["10.0.0.3:b:80"], "DELETED");
    assert_eq!(actions["10.0.0.4:c:80"], "ADDED");

    // Merge the delta into the old copy as a client does, and compare with the full fetch.
    let mut copy: std::collections::BTreeMap<String, String> = std::collections::BTreeMap::new();
    for app in full0["applications"]["application"].as_array().unwrap() {
        for i in app["instance"].as_array().unwrap() {
            copy.insert(i["instanceId"].as_str().unwrap().into(), i["status"].as_str().unwrap().into());
        }
    }
    for app in delta["applications"]["application"].as_array().unwrap() {
        for i in app["instance"].as_array().unwrap() {
            let id = i["instanceId"].as_str().unwrap().to_string();
            match i["actionType"].as_str().unwrap() {
                "DELETED" => {
                    copy.remove(&id);
                }
                _ => {
                    copy.insert(id, i["status"].as_str().unwrap().into());
                }
            }
        }
    }
    let mut expected = std::collections::BTreeMap::new();
    for app in full1["applications"]["application"].as_array().unwrap() {
        for i in app["instance"].as_array().unwrap() {
            expected.insert(i["instanceId"].as_str().unwrap().to_string(), i["status"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(copy, expected);
    let version: u64 = delta["applications"]["versions__delta"].as_str().unwrap().parse().unwrap();
    assert!(version >= 6);
}

#[tokio::test]
async fn vips_and_svips() {
    let s = InProcess::start().await;
    let c = client();
    let mut body = py_instance("a", "10.0.0.1", 80);
    body["instance"]["vipAddress"] = json!("a.vip,shared.vip");
    body["instance"]["secureVipAddress"] = json!("a.secure");
    register(&c, &s, "a", &body).await;
    let mut body = py_instance("b", "10.0.0.2", 80);
    body["instance"]["vipAddress"] = json!("shared.vip");
    register(&c, &s, "b", &body).await;
    let (st, v) = common::get_json(&c, &s.url("vips/shared.vip")).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["applications"]["versions__delta"], "-1");
    assert_eq!(v["applications"]["application"].as_array().unwrap().len(), 2);
    assert_eq!(v["applications"]["apps__hashcode"], "UP_2_");
    let (_, v) = common::get_json(&c, &s.url("svips/a.secure")).await;
    assert_eq!(v["applications"]["application"][0]["name"], "A");
    let (st, v) = common::get_json(&c, &s.url("v2/vips/unknown.vip")).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["applications"]["application"], json!([]));
    let (st, xml) = get_text(&c, &s.url("vips/a.vip")).await;
    assert_eq!(st, StatusCode::OK);
    assert!(xml.contains("<versions__delta>-1</versions__delta>"));
}

#[tokio::test]
async fn registration_is_visible_immediately_after_a_cached_read() {
    let s = InProcess::start().await;
    let c = client();
    for n in 0..5u16 {
        // Warm the cache, then change the registry: the next read must show the change.
        common::get_json(&c, &s.url("apps")).await;
        get_text(&c, &s.url("apps/delta")).await;
        register(&c, &s, "a", &py_instance("a", "10.0.0.1", 1000 + n)).await;
        let (_, v) = common::get_json(&c, &s.url("apps")).await;
        assert_eq!(v["applications"]["application"][0]["instance"].as_array().unwrap().len(), usize::from(n) + 1);
        assert_eq!(v["applications"]["apps__hashcode"], format!("UP_{}_", n + 1));
    }
}

#[tokio::test]
async fn bad_input_gets_4xx_and_changes_nothing() {
    let s = InProcess::start_with(|c| c.max_body_size = 64 * 1024).await;
    let c = client();
    register(&c, &s, "a", &py_instance("a", "10.0.0.1", 80)).await;
    let before = s.version();
    let (_, full_before) = common::get_json(&c, &s.url("apps")).await;

    let mut missing_host = py_instance("a", "10.0.0.1", 80);
    missing_host["instance"]["hostName"] = json!("");
    let mut missing_ip = py_instance("a", "10.0.0.1", 80);
    missing_ip["instance"].as_object_mut().unwrap().remove("ipAddr");
    let mut missing_dc = py_instance("a", "10.0.0.1", 80);
    missing_dc["instance"].as_object_mut().unwrap().remove("dataCenterInfo");
    let mut bad_status = py_instance("a", "10.0.0.1", 80);
    bad_status["instance"]["status"] = json!("SIDEWAYS");
    let mut bad_port = py_instance("a", "10.0.0.1", 80);
    bad_port["instance"]["port"] = json!({"$": "eighty", "@enabled": "true"});
    let mut huge_meta = py_instance("a", "10.0.0.1", 80);
    huge_meta["instance"]["metadata"] = json!({"k": "v".repeat(10_000)});
    let mut many_meta = py_instance("a", "10.0.0.1", 80);
    many_meta["instance"]["metadata"] = Value::Object((0..300).map(|n| (format!("k{n}"), json!("v"))).collect());
    let mut control = py_instance("a", "10.0.0.1", 80);
    control["instance"]["hostName"] = json!("bad\u{1}host");
    let mut future = py_instance("a", "10.0.0.1", 80);
    future["instance"]["lastDirtyTimestamp"] = json!("99999999999999");
    let mut nested_meta = py_instance("a", "10.0.0.1", 80);
    nested_meta["instance"]["metadata"] = json!({"k": {"deep": 1}});

    let cases: Vec<(&str, String, &str, StatusCode, &str)> = vec![
        ("apps/A", "{not json".into(), JSON, StatusCode::BAD_REQUEST, "malformed JSON"),
        ("apps/A", "[]".into(), JSON, StatusCode::BAD_REQUEST, "instance"),
        ("apps/A", missing_host.to_string(), JSON, StatusCode::BAD_REQUEST, "Missing hostname"),
        ("apps/A", missing_ip.to_string(), JSON, StatusCode::BAD_REQUEST, "Missing ip address"),
        ("apps/A", missing_dc.to_string(), JSON, StatusCode::BAD_REQUEST, "Missing dataCenterInfo"),
        ("apps/A", bad_status.to_string(), JSON, StatusCode::BAD_REQUEST, "SIDEWAYS"),
        ("apps/A", bad_port.to_string(), JSON, StatusCode::BAD_REQUEST, "port"),
        ("apps/A", huge_meta.to_string(), JSON, StatusCode::BAD_REQUEST, "longer than"),
        ("apps/A", many_meta.to_string(), JSON, StatusCode::BAD_REQUEST, "entries"),
        ("apps/A", nested_meta.to_string(), JSON, StatusCode::BAD_REQUEST, "metadata.k"),
        ("apps/A", control.to_string(), JSON, StatusCode::BAD_REQUEST, "control characters"),
        ("apps/A", future.to_string(), JSON, StatusCode::BAD_REQUEST, "future"),
        (
            "apps/OTHER",
            py_instance("a", "10.0.0.1", 80).to_string(),
            JSON,
            StatusCode::BAD_REQUEST,
            "Mismatched appName, expecting OTHER but was A",
        ),
        (
            "apps/A",
            "<instance><hostName>x</instance>".into(),
            "application/xml",
            StatusCode::BAD_REQUEST,
            "malformed XML",
        ),
        ("apps/A", "hello".into(), "text/plain", StatusCode::UNSUPPORTED_MEDIA_TYPE, "Content-Type"),
        ("apps/A", "x".repeat(100 * 1024), JSON, StatusCode::PAYLOAD_TOO_LARGE, ""),
        ("apps/A%zz", py_instance("a", "10.0.0.1", 80).to_string(), JSON, StatusCode::BAD_REQUEST, "percent-encoding"),
    ];
    for (path, body, ctype, want, msg) in cases {
        let r = c.post(s.url(path)).header("Content-Type", ctype).body(body).send().await.unwrap();
        assert_eq!(r.status(), want, "{path} {msg}");
        let text = r.text().await.unwrap();
        assert!(text.contains(msg), "{msg:?} not in {text:?}");
        assert!(text.trim_end().lines().count() <= 1, "one-line reason: {text:?}");
    }
    let r = c.put(s.url(&format!("apps/A/10.0.0.1:a:80/metadata?k={}", "v".repeat(9000)))).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(c.get(s.url("apps/A/%E0%A4%A")).send().await.unwrap().status(), StatusCode::BAD_REQUEST);
    let inst = s.url("apps/A/10.0.0.1:a:80");
    assert_eq!(c.put(format!("{inst}/metadata?k=%01")).send().await.unwrap().status(), StatusCode::BAD_REQUEST);
    let future = format!("{inst}/status?value=DOWN&lastDirtyTimestamp=99999999999999");
    assert_eq!(c.put(future).send().await.unwrap().status(), StatusCode::BAD_REQUEST);
    assert_eq!(c.patch(s.url("apps/A")).send().await.unwrap().status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(c.get(s.url("nothing/here")).send().await.unwrap().status(), StatusCode::NOT_FOUND);

    assert_eq!(s.version(), before, "rejected requests changed the registry");
    let (_, full_after) = common::get_json(&c, &s.url("apps")).await;
    assert_eq!(full_before, full_after);

    // Metadata merged over many calls stays bounded: each call is fine, the total is not.
    let big = "v".repeat(8000);
    let refused = async {
        for n in 0..6 {
            let r = c.put(format!("{inst}/metadata?k{n}={big}")).send().await.unwrap();
            if r.status() == StatusCode::BAD_REQUEST {
                return r.text().await.unwrap().contains("would exceed");
            }
            assert_eq!(r.status(), StatusCode::OK);
        }
        false
    };
    assert!(refused.await, "metadata grew past the limit");
}

#[tokio::test]
async fn operator_endpoints() {
    let s = InProcess::start().await;
    let c = client();
    register(&c, &s, "a", &py_instance("a", "10.0.0.1", 80)).await;
    let r = c.get(format!("{}/healthz", s.base)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = c.get(format!("{}/readyz", s.base)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let (st, v) = common::get_json(&c, &format!("{}/v1/status", s.base)).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["node_id"], 1);
    assert_eq!(v["replication"], "none");
    assert_eq!(v["role"], "standalone");
    assert_eq!(v["instances"], 1);
    let sp = &v["self_preservation"];
    assert_eq!(sp["enabled"], true);
    assert_eq!(sp["expected_renews_per_min"], 2.0);
    assert_eq!(sp["threshold"], 1);
    assert_eq!(sp["renews_last_min"], 0);
    assert_eq!(sp["active"], true);
    c.put(s.url("apps/A/10.0.0.1:a:80")).send().await.unwrap();
    let (_, v) = common::get_json(&c, &format!("{}/v1/status", s.base)).await;
    assert_eq!(v["self_preservation"]["renews_last_min"], 1);
    assert_eq!(v["self_preservation"]["active"], false);
}

#[tokio::test]
async fn expired_instances_are_evicted_when_preservation_allows() {
    let s = InProcess::start_with(|c| {
        c.eviction_interval = std::time::Duration::from_millis(200);
        c.self_preservation = false;
    })
    .await;
    let c = client();
    let mut body = py_instance("a", "10.0.0.1", 80);
    body["instance"]["leaseInfo"] = json!({"renewalIntervalInSecs": 1, "durationInSecs": 1});
    register(&c, &s, "a", &body).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (_, v) = common::get_json(&c, &s.url("apps/delta")).await;
        let evicted = v["applications"]["application"][0]["instance"][0]["actionType"] == "DELETED";
        if evicted {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "instance not evicted");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(common::get_json(&c, &s.url("apps/A")).await.0, StatusCode::NOT_FOUND);
}

/// The dashboard is a page, a script and a style sheet from this origin only (its data
/// comes from `/v1/status` and `/eureka/apps`; tests/operations.rs drives it in a browser).
#[tokio::test]
async fn dashboard_is_served_from_this_origin_only() {
    let s = InProcess::start().await;
    let c = client();
    let r = c.get(format!("{}/", s.base)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let csp = r.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"), "{csp}");
    let page = r.text().await.unwrap();
    assert!(page.contains("<script src=\"/ui/dashboard.js\" defer></script>"));
    assert!(!page.contains("http://") && !page.contains("https://"), "nothing fetched from elsewhere");
    for (path, kind) in
        [("/ui/dashboard.js", "text/javascript"), ("/ui/dashboard.css", "text/css"), ("/favicon.ico", "image/svg+xml")]
    {
        let r = c.get(format!("{}{path}", s.base)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        assert!(r.headers()["content-type"].to_str().unwrap().starts_with(kind), "{path}");
        assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    }
    // What the page reads besides the registry.
    register(&c, &s, "b", &py_instance("b", "10.0.0.2", 80)).await;
    let (_, status) = common::get_json(&c, &format!("{}/v1/status", s.base)).await;
    assert_eq!(status["renewals_per_minute"].as_array().map(Vec::len), Some(16), "{status}");
    assert!(status["now_ms"].as_u64().is_some() && status["uptime_seconds"].as_u64().is_some(), "{status}");
    assert_eq!(status["self_preservation"]["expected_renews_per_min"], 2.0, "{status}");
}
