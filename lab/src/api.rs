//! How the workload speaks to each backend: synod through the Eureka REST API, etcd through
//! its v3 JSON gateway with the registry mapped to leases, as a team moving off Eureka would
//! map it:
//!
//! | registry operation | Eureka (synod)                     | etcd                                          |
//! |--------------------|------------------------------------|-----------------------------------------------|
//! | register           | `POST /eureka/apps/APP`            | a lease of the lease duration, then a put of `lab/APP/ID` on it |
//! | status change      | the same register, a new generation | a put on the same lease                      |
//! | heartbeat          | `PUT /eureka/apps/APP/ID`          | a keep-alive of the lease (gone: 404)         |
//! | cancel             | `DELETE /eureka/apps/APP/ID`       | revoking the lease (deletes the key)          |
//! | local read         | `GET /eureka/apps/APP/ID`          | a serializable range of the key               |
//! | linearizable read  | `…?consistency=linearizable`       | a range of the key (etcd's default)           |
//! | full fetch         | `GET /eureka/apps`                 | a serializable range of `lab/`                |
//! | delta fetch        | `GET /eureka/apps/delta`           | keys of `lab/` changed since the last fetch's revision |
//!
//! Every answer is reduced to what the history records: outcome, status, and for reads the
//! generation seen or every instance listed.

use std::time::Duration;

use base64::Engine;
use serde_json::Value;

use crate::cluster::{Backend, Timing};
use crate::history::{Kind, Outcome};

/// Metadata key carrying an instance's generation (Eureka); etcd values carry it as `gen`.
pub const GEN_KEY: &str = "lab-gen";
/// Prefix of every etcd key the lab writes.
const ETCD_PREFIX: &str = "lab/";

/// The protocol a backend speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// synod's Eureka REST API.
    Eureka,
    /// etcd's v3 JSON gateway.
    Etcd,
}

/// A request's answer as the history sees it.
pub struct Answer {
    pub outcome: Outcome,
    pub status: u16,
    /// Single reads: the generation of the instance shown (`None`: absent).
    pub seen: Option<u64>,
    /// Full fetches: every lab instance listed, as (`APP/ID`, generation), sorted.
    pub listed: Vec<(String, u64)>,
}

impl Answer {
    /// The answer of a request that failed, or could not be sent.
    pub fn failed() -> Answer {
        Answer { outcome: Outcome::Fail, status: 0, seen: None, listed: Vec::new() }
    }

    /// A definite answer of a request that needed no round trip.
    fn ok(status: u16) -> Answer {
        Answer { outcome: Outcome::Ok, status, seen: None, listed: Vec::new() }
    }
}

/// One fleet instance as the API needs it.
#[derive(Debug, Clone)]
pub struct Instance {
    pub app: String,
    pub id: String,
    /// Written with every register; increases with every status change.
    pub gen: u64,
    pub up: bool,
    /// Eureka's `lastDirtyTimestamp` (ms since the epoch).
    pub dirty: u128,
    /// etcd: the lease its key lives on, once granted.
    pub lease: Option<String>,
}

impl Instance {
    /// The history's key: `APP/ID`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.app, self.id)
    }

    fn status(&self) -> &'static str {
        if self.up {
            "UP"
        } else {
            "OUT_OF_SERVICE"
        }
    }
}

/// What the sampler reads from one node.
#[derive(Debug, Clone, Default)]
pub struct NodeState {
    pub applied_index: Option<u64>,
    /// Instances evicted (synod) or leases expired (etcd) since the process started.
    pub evicted: u64,
    pub self_preservation_active: bool,
    pub self_preservation_engagements: u64,
}

/// A raw answer: status and, when asked for and served, the JSON body.
struct Raw {
    outcome: Outcome,
    status: u16,
    body: Option<Value>,
}

/// Sends one request and classifies its answer. `write` decides what an ambiguous failure
/// means: a write that timed out or got a 5xx may still be applied (unknown); a read that
/// did the same simply was not served.
async fn send(req: reqwest::RequestBuilder, write: bool, want_body: bool) -> Raw {
    match req.header("accept", "application/json").send().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let outcome = match status {
                200..=299 => Outcome::Ok,
                // A definite answer: the node does not know the instance (or lease).
                404 => Outcome::Ok,
                500..=599 if write => Outcome::Unknown,
                _ => Outcome::Fail,
            };
            let body = if want_body && status == 200 { resp.json::<Value>().await.ok() } else { None };
            // A body that could not be read leaves a request unserved.
            let outcome = if want_body && status == 200 && body.is_none() { Outcome::Fail } else { outcome };
            Raw { outcome, status, body }
        }
        Err(e) if e.is_connect() => Raw { outcome: Outcome::Fail, status: 0, body: None },
        Err(_) if write => Raw { outcome: Outcome::Unknown, status: 0, body: None },
        Err(_) => Raw { outcome: Outcome::Fail, status: 0, body: None },
    }
}

impl Api {
    /// The protocol `backend` speaks.
    pub fn of(backend: Backend) -> Api {
        match backend {
            Backend::Etcd => Api::Etcd,
            Backend::None | Backend::P2p | Backend::Raft => Api::Eureka,
        }
    }

    /// Sends one fleet write (`Register`, `Renew` or `Cancel`) for `inst` to `base`.
    pub async fn write(
        self,
        http: &reqwest::Client,
        base: &str,
        kind: Kind,
        inst: &mut Instance,
        t: &Timing,
    ) -> Answer {
        match self {
            Api::Eureka => eureka_write(http, base, kind, inst, t).await,
            Api::Etcd => etcd_write(http, base, kind, inst, t).await,
        }
    }

    /// Sends one read (`Read`, `ReadLinearizable`, `ReadAll` or `ReadDelta`; `key` is
    /// `APP/ID` for single reads). `since` is the reader's delta position (etcd's revision).
    pub async fn read(self, http: &reqwest::Client, base: &str, kind: Kind, key: &str, since: &mut u64) -> Answer {
        match self {
            Api::Eureka => eureka_read(http, base, kind, key).await,
            Api::Etcd => etcd_read(http, base, kind, key, since).await,
        }
    }

    /// Reads one node's counters, or `None` when it does not answer.
    pub async fn sample(self, http: &reqwest::Client, base: &str) -> Option<NodeState> {
        match self {
            Api::Eureka => {
                let v: Value = http.get(format!("{base}/v1/status")).send().await.ok()?.json().await.ok()?;
                Some(NodeState {
                    applied_index: v["applied_index"].as_u64(),
                    evicted: v["evicted_instances"].as_u64().unwrap_or(0),
                    self_preservation_active: v["self_preservation"]["active"] == true,
                    self_preservation_engagements: v["self_preservation_engagements"].as_u64().unwrap_or(0),
                })
            }
            Api::Etcd => {
                let status = etcd_status(http, base).await?;
                let metrics = http.get(format!("{base}/metrics")).send().await.ok()?.text().await.ok()?;
                let expired = metrics
                    .lines()
                    .find_map(|l| l.strip_prefix("etcd_debugging_server_lease_expired_total "))
                    .and_then(|v| v.trim().parse::<f64>().ok())
                    .unwrap_or(0.0);
                Some(NodeState {
                    applied_index: Some(status.applied_index),
                    evicted: expired as u64,
                    ..NodeState::default()
                })
            }
        }
    }
}

// ---- Eureka -------------------------------------------------------------------------------

fn register_body(inst: &Instance, timing: &Timing) -> Value {
    serde_json::json!({"instance": {
        "instanceId": inst.id, "hostName": "127.0.0.1", "app": inst.app, "ipAddr": "127.0.0.1",
        "status": inst.status(), "overriddenstatus": "UNKNOWN", "port": {"$": 8080, "@enabled": "true"},
        "securePort": {"$": 443, "@enabled": "false"}, "countryId": 1,
        "dataCenterInfo": {"@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo", "name": "MyOwn"},
        "leaseInfo": {"renewalIntervalInSecs": timing.renew_interval.as_secs().max(1),
                      "durationInSecs": timing.lease_duration.as_secs().max(1)},
        "metadata": {GEN_KEY: inst.gen.to_string()},
        "vipAddress": inst.app.to_lowercase(), "lastDirtyTimestamp": inst.dirty.to_string()}})
}

async fn eureka_write(http: &reqwest::Client, base: &str, kind: Kind, inst: &mut Instance, t: &Timing) -> Answer {
    let (app, id) = (&inst.app, &inst.id);
    let req = match kind {
        Kind::Register => http.post(format!("{base}/eureka/apps/{app}")).json(&register_body(inst, t)),
        Kind::Cancel => http.delete(format!("{base}/eureka/apps/{app}/{id}")),
        _ => http.put(format!(
            "{base}/eureka/apps/{app}/{id}?status={}&lastDirtyTimestamp={}",
            inst.status(),
            inst.dirty
        )),
    };
    let r = send(req, kind.is_write(), false).await;
    Answer { outcome: r.outcome, status: r.status, seen: None, listed: Vec::new() }
}

/// The generation in an instance's metadata.
fn generation(instance: &Value) -> Option<u64> {
    instance["metadata"][GEN_KEY].as_str().and_then(|g| g.parse().ok())
}

/// Every lab instance of a full fetch, as (`APP/ID`, generation).
fn listed(body: &Value) -> Vec<(String, u64)> {
    let as_list = |v: &Value| match v {
        Value::Array(a) => a.clone(),
        Value::Null => Vec::new(),
        other => vec![other.clone()],
    };
    let mut out = Vec::new();
    for app in as_list(&body["applications"]["application"]) {
        for inst in as_list(&app["instance"]) {
            if let (Some(a), Some(id), Some(g)) = (inst["app"].as_str(), inst["instanceId"].as_str(), generation(&inst))
            {
                out.push((format!("{a}/{id}"), g));
            }
        }
    }
    out.sort();
    out
}

async fn eureka_read(http: &reqwest::Client, base: &str, kind: Kind, key: &str) -> Answer {
    let url = match kind {
        Kind::ReadAll => format!("{base}/eureka/apps"),
        Kind::ReadDelta => format!("{base}/eureka/apps/delta"),
        Kind::ReadLinearizable => format!("{base}/eureka/apps/{key}?consistency=linearizable"),
        _ => format!("{base}/eureka/apps/{key}"),
    };
    let r = send(http.get(url), false, kind != Kind::ReadDelta).await;
    let mut a = Answer { outcome: r.outcome, status: r.status, seen: None, listed: Vec::new() };
    if r.outcome == Outcome::Ok {
        match kind {
            Kind::ReadAll => a.listed = r.body.as_ref().map(listed).unwrap_or_default(),
            Kind::Read | Kind::ReadLinearizable => a.seen = r.body.as_ref().and_then(|b| generation(&b["instance"])),
            _ => {}
        }
    }
    a
}

// ---- etcd ---------------------------------------------------------------------------------

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn unb64(v: &Value) -> Option<String> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(v.as_str()?).ok()?;
    String::from_utf8(bytes).ok()
}

/// The gateway writes 64-bit integers as strings.
fn int(v: &Value) -> Option<u64> {
    v.as_str().and_then(|s| s.parse().ok()).or_else(|| v.as_u64())
}

/// The end of the range of every key under `prefix` (the prefix with its last byte + 1).
fn prefix_end(prefix: &str) -> String {
    let mut bytes = prefix.as_bytes().to_vec();
    if let Some(last) = bytes.last_mut() {
        *last += 1;
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// (`APP/ID`, generation) of one key-value of a range answer.
fn etcd_entry(kv: &Value) -> Option<(String, u64)> {
    let key = unb64(&kv["key"])?.strip_prefix(ETCD_PREFIX)?.to_string();
    let value: Value = serde_json::from_str(&unb64(&kv["value"])?).ok()?;
    Some((key, value["gen"].as_u64()?))
}

async fn etcd_post(http: &reqwest::Client, base: &str, path: &str, body: Value, write: bool) -> Raw {
    send(http.post(format!("{base}{path}")).json(&body), write, true).await
}

fn answer(r: &Raw) -> Answer {
    Answer { outcome: r.outcome, status: r.status, seen: None, listed: Vec::new() }
}

async fn etcd_write(http: &reqwest::Client, base: &str, kind: Kind, inst: &mut Instance, t: &Timing) -> Answer {
    match kind {
        Kind::Register => {
            // A lease granted for an earlier attempt is reused; one that expired meanwhile is
            // replaced once.
            for _ in 0..2 {
                let fresh = inst.lease.is_none();
                if fresh {
                    let ttl = t.lease_duration.as_secs().max(1);
                    let g = etcd_post(http, base, "/v3/lease/grant", serde_json::json!({"TTL": ttl}), false).await;
                    match g.body.as_ref().and_then(|b| b["ID"].as_str()) {
                        Some(id) if g.outcome == Outcome::Ok => inst.lease = Some(id.to_string()),
                        // No lease, no key: the register certainly did not happen.
                        _ => return Answer { status: g.status, ..Answer::failed() },
                    }
                }
                let value = serde_json::json!({"gen": inst.gen, "status": inst.status()}).to_string();
                let put = serde_json::json!({
                    "key": b64(&format!("{ETCD_PREFIX}{}", inst.key())),
                    "value": b64(&value),
                    "lease": inst.lease,
                });
                let r = etcd_post(http, base, "/v3/kv/put", put, true).await;
                if r.status == 404 {
                    // The lease expired: the put was refused.
                    inst.lease = None;
                    if fresh {
                        return Answer { status: 404, ..Answer::failed() };
                    }
                    continue;
                }
                return answer(&r);
            }
            Answer::failed()
        }
        Kind::Cancel => {
            let Some(lease) = inst.lease.clone() else { return Answer::ok(404) };
            let r = etcd_post(http, base, "/v3/lease/revoke", serde_json::json!({"ID": lease}), true).await;
            if r.outcome == Outcome::Ok {
                inst.lease = None;
            }
            answer(&r)
        }
        _ => {
            let Some(lease) = inst.lease.clone() else { return Answer::ok(404) };
            let r = etcd_post(http, base, "/v3/lease/keepalive", serde_json::json!({"ID": lease}), false).await;
            let mut a = answer(&r);
            if r.outcome == Outcome::Ok {
                // A keep-alive of an expired lease answers 200 with no TTL: the instance is
                // gone, as a Eureka heartbeat's 404 says.
                let ttl = r.body.as_ref().and_then(|b| int(&b["result"]["TTL"])).unwrap_or(0);
                if ttl == 0 {
                    a.status = 404;
                    inst.lease = None;
                }
            }
            a
        }
    }
}

async fn etcd_read(http: &reqwest::Client, base: &str, kind: Kind, key: &str, since: &mut u64) -> Answer {
    let body = match kind {
        Kind::ReadAll => serde_json::json!({
            "key": b64(ETCD_PREFIX), "range_end": b64(&prefix_end(ETCD_PREFIX)), "serializable": true}),
        Kind::ReadDelta => serde_json::json!({
            "key": b64(ETCD_PREFIX), "range_end": b64(&prefix_end(ETCD_PREFIX)), "serializable": true,
            "keys_only": true, "min_mod_revision": (*since + 1).to_string()}),
        Kind::ReadLinearizable => serde_json::json!({"key": b64(&format!("{ETCD_PREFIX}{key}"))}),
        _ => serde_json::json!({"key": b64(&format!("{ETCD_PREFIX}{key}")), "serializable": true}),
    };
    let r = etcd_post(http, base, "/v3/kv/range", body, false).await;
    let mut a = answer(&r);
    let Some(b) = r.body.as_ref().filter(|_| r.outcome == Outcome::Ok) else { return a };
    let kvs = b["kvs"].as_array().cloned().unwrap_or_default();
    match kind {
        Kind::ReadAll => {
            a.listed = kvs.iter().filter_map(etcd_entry).collect();
            a.listed.sort();
        }
        Kind::ReadDelta => *since = int(&b["header"]["revision"]).unwrap_or(*since),
        _ => a.seen = kvs.first().and_then(etcd_entry).map(|(_, g)| g),
    }
    a
}

/// What `/v3/maintenance/status` says about one etcd member.
pub struct EtcdStatus {
    pub member: u64,
    pub leader: u64,
    pub applied_index: u64,
}

/// One etcd member's status, if it answers.
pub async fn etcd_status(http: &reqwest::Client, base: &str) -> Option<EtcdStatus> {
    let r = http.post(format!("{base}/v3/maintenance/status")).json(&serde_json::json!({})).send().await.ok()?;
    let v: Value = r.json().await.ok()?;
    Some(EtcdStatus {
        member: int(&v["header"]["member_id"])?,
        leader: int(&v["leader"]).unwrap_or(0),
        applied_index: int(&v["raftAppliedIndex"]).or_else(|| int(&v["raftIndex"]))?,
    })
}

/// Longest wait for one request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_millis(1000);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_range_covers_exactly_the_prefix() {
        assert_eq!(prefix_end("lab/"), "lab0");
    }

    #[test]
    fn etcd_entries_decode_key_and_generation() {
        let kv = serde_json::json!({"key": b64("lab/LAB-1/lab-3-0"), "value": b64(r#"{"gen":4,"status":"UP"}"#)});
        assert_eq!(etcd_entry(&kv), Some(("LAB-1/lab-3-0".to_string(), 4)));
        let other = serde_json::json!({"key": b64("elsewhere/x"), "value": b64(r#"{"gen":4}"#)});
        assert_eq!(etcd_entry(&other), None);
    }

    #[test]
    fn eureka_listings_take_every_lab_instance() {
        let body = serde_json::json!({"applications": {"application": [
            {"name": "A", "instance": {"app": "A", "instanceId": "i1", "metadata": {GEN_KEY: "2"}}},
            {"name": "B", "instance": [{"app": "B", "instanceId": "i2", "metadata": {}}]}]}});
        assert_eq!(listed(&body), vec![("A/i1".to_string(), 2)]);
    }
}
