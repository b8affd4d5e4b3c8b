//! What an operator relies on: `/metrics` parsed as Prometheus text and moving with the
//! registry, in every replication mode, and JSON log lines.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::secured::Cluster;
use common::{eventually, py_instance, ServerProcess};
use prometheus_parse::{LineInfo, Scrape, Value};

/// The node's `/metrics`, parsed; every line must be a comment or a well-formed sample.
async fn scrape(base: &str) -> Scrape {
    let resp = reqwest::get(format!("{base}/metrics")).await.expect("GET /metrics");
    assert_eq!(resp.status(), 200);
    let ctype = resp.headers()["content-type"].to_str().expect("ascii").to_string();
    assert!(ctype.starts_with("application/openmetrics-text"), "{ctype}");
    let text = resp.text().await.expect("body");
    assert!(text.ends_with("# EOF\n"), "OpenMetrics text ends with # EOF");
    let mut last_bucket: Option<(String, f64)> = None;
    for line in text.lines() {
        let ok = line.starts_with('#') || matches!(LineInfo::parse(line), LineInfo::Sample { .. });
        assert!(ok, "not a Prometheus sample line: {line:?}");
        if let Some((_, rest)) = line.split_once("le=\"") {
            let le = rest.split('"').next().unwrap_or_default();
            assert!(le == "+Inf" || le.parse::<f64>().is_ok_and(f64::is_finite), "bucket bound {le:?}");
            // Buckets are cumulative: never fewer than the bucket before in the same series.
            let sample = line.rsplit_once(' ').map_or(line, |(s, _)| s);
            let series = sample.replace(&format!("le=\"{le}\""), "");
            let n: f64 = line.rsplit(' ').next().and_then(|v| v.parse().ok()).expect("bucket count");
            if let Some((prev_series, prev)) = &last_bucket {
                assert!(*prev_series != series || n >= *prev, "buckets not cumulative at {line:?}");
            }
            if le == "+Inf" {
                let count =
                    series.replacen("_bucket", "_count", 1).replace("{,", "{").replace(",}", "}").replace("{}", "");
                let want = format!("{count} {n}\n");
                assert!(text.contains(&want), "the +Inf bucket is the count: {want:?}");
            }
            last_bucket = Some((series, n));
        }
    }
    Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("parse")
}

/// The value of the sample `name` whose labels include `labels`.
fn value(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    s.samples.iter().find(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v))).map(|x| {
        match &x.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            Value::Histogram(b) => b.iter().map(|c| c.count).fold(0.0, f64::max),
            Value::Summary(_) => f64::NAN,
        }
    })
}

fn count(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    value(s, name, labels).unwrap_or(0.0)
}

async fn register(eureka: &str, app: &str, id: &str) -> u16 {
    let mut body = py_instance(app, "127.0.0.1", 8080);
    body["instance"]["instanceId"] = id.into();
    let resp = reqwest::Client::new().post(format!("{eureka}/apps/{app}")).json(&body).send().await;
    resp.expect("register").status().as_u16()
}

async fn status(req: reqwest::RequestBuilder) -> u16 {
    req.send().await.expect("request").status().as_u16()
}

async fn ready(base: &str) -> bool {
    reqwest::get(format!("{base}/readyz")).await.is_ok_and(|r| r.status() == 200)
}

const LIMIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn metrics_move_with_register_renew_and_cancel() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = ServerProcess::start(dir.path(), &[]);
    let (base, eureka) = (node.base(), node.eureka_url());
    let http = reqwest::Client::new();
    let before = scrape(&base).await;
    assert_eq!(value(&before, "synod_instances", &[("app", "METRICS")]), None);
    assert_eq!(value(&before, "synod_ready", &[]), Some(1.0));

    assert_eq!(register(&eureka, "METRICS", "m-1").await, 204);
    assert_eq!(status(http.put(format!("{eureka}/apps/METRICS/m-1"))).await, 200);
    assert_eq!(status(http.put(format!("{eureka}/apps/METRICS/nobody"))).await, 404);
    let up = scrape(&base).await;
    assert_eq!(value(&up, "synod_instances", &[("app", "METRICS"), ("status", "UP")]), Some(1.0));
    assert_eq!(count(&up, "synod_registry_changes_total", &[("kind", "register")]), 1.0);
    assert_eq!(count(&up, "synod_renewals_total", &[("result", "renewed")]), 1.0);
    assert_eq!(count(&up, "synod_renewals_total", &[("result", "not_found")]), 1.0);
    assert_eq!(count(&up, "synod_http_requests_total", &[("route", "register"), ("status", "204")]), 1.0);
    assert_eq!(count(&up, "synod_http_requests_total", &[("route", "renew"), ("status", "404")]), 1.0);
    assert_eq!(count(&up, "synod_http_request_duration_seconds_count", &[("route", "renew")]), 2.0);
    assert!(count(&up, "synod_store_sync_duration_seconds_count", &[]) >= 1.0, "the register was synced");
    assert_eq!(value(&up, "synod_store_accepts_writes", &[]), Some(1.0));
    assert_eq!(value(&up, "synod_self_preservation_expected_renews_per_minute", &[]), Some(2.0));
    assert_eq!(value(&up, "synod_self_preservation_active", &[]), Some(0.0));

    assert_eq!(status(http.delete(format!("{eureka}/apps/METRICS/m-1"))).await, 200);
    let gone = scrape(&base).await;
    assert_eq!(value(&gone, "synod_instances", &[("app", "METRICS")]), None);
    assert_eq!(count(&gone, "synod_registry_changes_total", &[("kind", "cancel")]), 1.0);
    assert_eq!(count(&gone, "synod_http_requests_total", &[("route", "cancel"), ("status", "200")]), 1.0);
    assert!(count(&gone, "synod_http_requests_total", &[("route", "metrics"), ("status", "200")]) >= 2.0);
    assert!(
        count(&gone, "synod_store_sync_duration_seconds_count", &[])
            > count(&up, "synod_store_sync_duration_seconds_count", &[])
    );
}

#[tokio::test]
async fn raft_nodes_expose_leader_indexes_forwarding_and_relays() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = Cluster::start_with(dir.path(), "raft", 3, "http", |_| Vec::new());
    let bases: Vec<String> = cluster.nodes.iter().map(|n| n.base()).collect();
    let leader_at = std::sync::Mutex::new(None);
    eventually("every node is ready and one leads", LIMIT, || async {
        let mut leads = None;
        for (i, b) in bases.iter().enumerate() {
            if !ready(b).await {
                return false;
            }
            if value(&scrape(b).await, "synod_raft_is_leader", &[]) == Some(1.0) {
                leads = Some(i);
            }
        }
        *leader_at.lock().expect("lock") = leads;
        leads.is_some()
    })
    .await;
    let leader_at = leader_at.into_inner().expect("lock").expect("leader");
    let follower = (leader_at + 1) % 3;

    // A write and a renewal on a follower: forwarded and relayed to the leader.
    let eureka = cluster.nodes[follower].eureka_url();
    assert_eq!(register(&eureka, "RAFTM", "r-1").await, 204);
    assert_eq!(status(reqwest::Client::new().put(format!("{eureka}/apps/RAFTM/r-1"))).await, 200);
    let f = &bases[follower];
    eventually("the follower relays the renewal", LIMIT, || async {
        count(&scrape(f).await, "synod_raft_relayed_renewals_total", &[("result", "ok")]) >= 1.0
    })
    .await;
    let fs = scrape(f).await;
    assert!(count(&fs, "synod_raft_forwarded_batches_total", &[("result", "ok")]) >= 1.0);
    assert_eq!(value(&fs, "synod_raft_is_leader", &[]), Some(0.0));
    assert_eq!(value(&fs, "synod_raft_has_leader", &[]), Some(1.0));
    assert_eq!(value(&fs, "synod_raft_leader_id", &[]), Some((leader_at + 1) as f64));
    assert_eq!(value(&fs, "synod_raft_commit_index", &[]), None, "only the leader knows the quorum's index");

    let ls = scrape(&bases[leader_at]).await;
    assert!(count(&ls, "synod_raft_relayed_renewals_received_total", &[]) >= 1.0);
    assert!(value(&ls, "synod_raft_term", &[]).is_some_and(|t| t >= 1.0));
    let applied = value(&ls, "synod_raft_applied_index", &[]).expect("applied index");
    assert!(value(&ls, "synod_raft_commit_index", &[]).is_some_and(|c| c >= applied));
    for member in ["1", "2", "3"] {
        assert!(value(&ls, "synod_raft_member_lag_entries", &[("member", member)]).is_some(), "lag of {member}");
    }
    assert!(count(&ls, "synod_store_sync_duration_seconds_count", &[]) >= 1.0);
    assert_eq!(value(&ls, "synod_instances", &[("app", "RAFTM"), ("status", "UP")]), Some(1.0));
    assert!(count(&ls, "synod_registry_changes_total", &[("kind", "register")]) >= 1.0);
}

#[tokio::test]
async fn p2p_nodes_expose_their_links() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = Cluster::start_with(dir.path(), "p2p", 2, "http", |_| Vec::new());
    let (a, b) = (cluster.nodes[0].base(), cluster.nodes[1].base());
    eventually("both nodes are ready", LIMIT, || async { ready(&a).await && ready(&b).await }).await;
    assert_eq!(register(&cluster.nodes[0].eureka_url(), "P2PM", "p-1").await, 204);
    eventually("the register reaches the peer", LIMIT, || async {
        value(&scrape(&b).await, "synod_instances", &[("app", "P2PM")]) == Some(1.0)
    })
    .await;
    let s = scrape(&a).await;
    assert!(count(&s, "synod_p2p_batches_total", &[("peer", "2"), ("result", "ok")]) >= 1.0);
    assert_eq!(value(&s, "synod_p2p_peer_reachable", &[("peer", "2")]), Some(1.0));
    assert_eq!(value(&s, "synod_p2p_needs_resync", &[("peer", "2")]), Some(0.0));
    assert!(value(&s, "synod_p2p_queue_depth", &[("peer", "2")]).is_some());
    assert!(count(&s, "synod_p2p_batch_duration_seconds_count", &[("peer", "2")]) >= 1.0);
    assert_eq!(value(&s, "synod_p2p_registry_complete", &[]), Some(1.0));
}

#[test]
fn json_log_lines_are_objects_and_a_bad_format_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bin = env!("CARGO_BIN_EXE_synod");
    let refused = Command::new(bin)
        .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "xml", "--data-dir"])
        .arg(dir.path())
        .output()
        .expect("run synod");
    assert_eq!(refused.status.code(), Some(2));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("log-format") && err.lines().count() == 1, "{err}");

    let mut child = Command::new(bin)
        .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json", "--data-dir"])
        .arg(dir.path())
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn synod");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let line = rx.recv_timeout(Duration::from_secs(30)).expect("a log line within 30 s");
    let _ = child.kill();
    let _ = child.wait();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert!(v["timestamp"].is_string() && v["level"].is_string() && v["target"].is_string(), "{line}");
    assert!(v["message"].is_string(), "{line}");
}

/// The deployment kit's systemd units pass `systemd-analyze verify` (unknown keys, bad
/// values and a missing binary are all reported), with the binary just built in place of
/// the installed one; and every per-node environment file sets only options `synod serve`
/// knows.
#[test]
fn systemd_units_verify_and_env_files_name_real_options() {
    let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/systemd");
    let help =
        Command::new(env!("CARGO_BIN_EXE_synod")).args(["serve", "--help"]).output().expect("synod serve --help");
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    for i in 1..=3 {
        let env = std::fs::read_to_string(deploy.join(format!("node-{i}.env"))).expect("env file");
        for line in env.lines().filter(|l| !l.trim().is_empty() && !l.starts_with('#')) {
            let (key, value) = line.split_once('=').unwrap_or_else(|| panic!("not KEY=VALUE: {line}"));
            assert!(
                help.contains(&format!("[env: {key}=")),
                "node-{i}.env sets {key}, which synod serve does not read"
            );
            assert!(!value.is_empty(), "{line}");
        }
        assert!(env.contains(&format!("SYNOD_NODE_ID={i}\n")), "node-{i}.env names node {i}");
    }
    if Command::new("systemd-analyze").arg("--version").output().is_err() {
        eprintln!("skipped: systemd-analyze is not installed, the units were not verified");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    for unit in ["synod.service", "synod@.service"] {
        let text = std::fs::read_to_string(deploy.join(unit)).expect("unit");
        assert!(text.contains("ExecStart=/usr/local/bin/synod serve"), "{unit}");
        let text = text.replace("/usr/local/bin/synod", env!("CARGO_BIN_EXE_synod"));
        std::fs::write(dir.path().join(unit), text).expect("write unit");
    }
    for unit in ["synod.service", "synod@1.service", "synod@3.service"] {
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(dir.path().join(unit))
            .env("SYSTEMD_LOG_LEVEL", "warning")
            .output()
            .expect("systemd-analyze verify");
        let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success() && said.trim().is_empty(), "{unit}: {said}");
    }
}

/// Every metric family a node exposes, with the sample names Prometheus queries by
/// (`_total` for counters; `_bucket`, `_sum` and `_count` for histograms).
async fn exposed_names(base: &str, into: &mut std::collections::BTreeSet<String>) {
    let text = reqwest::get(format!("{base}/metrics")).await.expect("GET /metrics").text().await.expect("body");
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else { continue };
        let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
        match kind {
            "counter" => into.insert(format!("{name}_total")),
            "histogram" => {
                for suffix in ["_bucket", "_sum", "_count"] {
                    into.insert(format!("{name}{suffix}"));
                }
                true
            }
            _ => into.insert(name.to_string()),
        };
    }
}

/// The Grafana dashboard and the alert rules only name metrics that nodes of some mode
/// expose, and promtool accepts the rules, the scrape configuration and every dashboard
/// query (checked as recording rules).
#[tokio::test]
async fn dashboard_and_alerts_name_exposed_metrics_and_parse_as_promql() {
    let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let dirs: Vec<tempfile::TempDir> = (0..4).map(|_| tempfile::tempdir().expect("tempdir")).collect();
    let none = ServerProcess::start(dirs[0].path(), &[]);
    let raft_addr = common::free_addr();
    let raft_peer = format!("1=http://{raft_addr}");
    let raft = ServerProcess::start_at(
        &raft_addr,
        dirs[1].path(),
        &["--replication", "raft", "--node-id", "1", "--peer", &raft_peer],
    );
    let p2p_addrs = [common::free_addr(), common::free_addr()];
    let p2p_peers = [format!("1=http://{}", p2p_addrs[0]), format!("2=http://{}", p2p_addrs[1])];
    let p2p: Vec<ServerProcess> = (0..2)
        .map(|i| {
            let id = (i + 1).to_string();
            let args = ["--replication", "p2p", "--node-id", &id, "--peer", &p2p_peers[0], "--peer", &p2p_peers[1]];
            ServerProcess::start_at(&p2p_addrs[i], dirs[2 + i].path(), &args)
        })
        .collect();
    eventually("the raft node leads", LIMIT, || async {
        value(&scrape(&raft.base()).await, "synod_raft_is_leader", &[]) == Some(1.0)
    })
    .await;
    let mut names = std::collections::BTreeSet::new();
    for node in [&none, &raft, &p2p[0]] {
        exposed_names(&node.base(), &mut names).await;
    }
    names.insert("up".into());

    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(deploy.join("grafana/synod.json")).expect("dashboard"))
            .expect("the dashboard is JSON");
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            queries.push(target["expr"].as_str().expect("expr").to_string());
        }
    }
    assert!(queries.len() > 20, "{} queries", queries.len());
    let alerts = std::fs::read_to_string(deploy.join("prometheus/alerts.yml")).expect("alerts");
    for (what, text) in [("the dashboard", queries.join("\n")), ("the alert rules", alerts.clone())] {
        let mut rest = text.as_str();
        while let Some(at) = rest.find("synod_") {
            let name: String = rest[at..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            assert!(names.contains(&name), "{what} names {name}, which no node exposes");
            rest = &rest[at + name.len()..];
        }
    }
    for alert in ["SynodSelfPreservationActive", "SynodNoLeader", "SynodPeerNeedsResync", "SynodDiskRefusingWrites"] {
        assert!(alerts.contains(&format!("alert: {alert}\n")), "{alert}");
    }

    if Command::new("promtool").arg("--version").output().is_err() {
        eprintln!("skipped: promtool is not installed, the rules and queries were not checked");
        return;
    }
    let check = |args: &[&str]| {
        let out = Command::new("promtool").args(args).output().expect("promtool");
        let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "promtool {args:?}: {said}");
    };
    let prom = deploy.join("prometheus");
    check(&["check", "rules", prom.join("alerts.yml").to_str().expect("utf-8")]);
    check(&["check", "config", "--syntax-only", prom.join("scrape.yml").to_str().expect("utf-8")]);
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, q) in queries.iter().enumerate() {
        let q = q.replace("$__rate_interval", "5m").replace("$instance", ".+");
        rules.push_str(&format!(
            "      - record: dashboard_query_{i}\n        expr: {}\n",
            serde_json::to_string(&q).expect("json")
        ));
    }
    let file = dirs[0].path().join("dashboard-rules.yml");
    std::fs::write(&file, rules).expect("write rules");
    check(&["check", "rules", file.to_str().expect("utf-8")]);
}

/// What a registry holds, for comparing two nodes: every instance's identity, status,
/// override, metadata and versions, and the apps hash code.
async fn registry_of(base: &str) -> (String, Vec<String>) {
    let (_, v) = common::get_json(&reqwest::Client::new(), &format!("{base}/eureka/apps")).await;
    let mut out = Vec::new();
    for app in v["applications"]["application"].as_array().into_iter().flatten() {
        for i in app["instance"].as_array().into_iter().flatten() {
            out.push(format!(
                "{} {} {} {} {} {} {}",
                i["app"],
                i["instanceId"],
                i["status"],
                i["overriddenStatus"],
                i["metadata"],
                i["lastUpdatedTimestamp"],
                i["lastDirtyTimestamp"]
            ));
        }
    }
    out.sort();
    (v["applications"]["apps__hashcode"].as_str().unwrap_or_default().to_string(), out)
}

fn synod(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_synod")).args(args).output().expect("run synod")
}

/// Backups: saved from a loaded three-node raft cluster, restored into a new single node and
/// into a new raft cluster (one node restored, two added), each serving the same registry
/// with the same hash code; a damaged or truncated backup is refused and writes nothing; a
/// node that lost its majority refuses a linearizable backup but gives its own copy.
#[tokio::test]
async fn a_backup_of_a_raft_cluster_restores_into_a_new_node_and_a_new_cluster() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cluster = Cluster::start_with(dir.path(), "raft", 3, "http", |_| Vec::new());
    let bases: Vec<String> = cluster.nodes.iter().map(|n| n.base()).collect();
    eventually("the cluster is ready", LIMIT, || async {
        for b in &bases {
            if !ready(b).await {
                return false;
            }
        }
        true
    })
    .await;
    let http = reqwest::Client::new();
    let writes = (0..120).map(|i| {
        let eureka = cluster.nodes[i % 3].eureka_url();
        async move { register(&eureka, &format!("APP{}", i % 4), &format!("i-{i}")).await }
    });
    assert!(futures::future::join_all(writes).await.iter().all(|s| *s == 204));
    let e = cluster.nodes[1].eureka_url();
    assert_eq!(status(http.put(format!("{e}/apps/APP1/i-1/status?value=OUT_OF_SERVICE"))).await, 200);
    assert_eq!(status(http.put(format!("{e}/apps/APP2/i-2/metadata?owner=ops"))).await, 200);
    assert_eq!(status(http.delete(format!("{e}/apps/APP3/i-3"))).await, 200);

    let file = dir.path().join("registry.snap");
    let saved = synod(&["snapshot", "save", file.to_str().expect("utf-8"), "--server", &bases[2]]);
    assert!(saved.status.success(), "{}", String::from_utf8_lossy(&saved.stderr));
    assert!(String::from_utf8_lossy(&saved.stdout).contains("119 instances of 4 applications"));
    // Linearizable: the node it came from shows at least what was acknowledged.
    let original = registry_of(&bases[0]).await;
    assert_eq!(original.1.len(), 119);
    assert!(original.1.iter().any(|l| l.contains("\"OUT_OF_SERVICE\"") && l.contains("\"i-1\"")));

    // Into a new single node.
    let single = dir.path().join("single");
    let restored =
        synod(&["snapshot", "restore", file.to_str().expect("utf-8"), "--data-dir", single.to_str().expect("utf-8")]);
    assert!(restored.status.success(), "{}", String::from_utf8_lossy(&restored.stderr));
    let node = ServerProcess::start(&single, &[]);
    assert_eq!(registry_of(&node.base()).await, original, "a restored single node serves the same registry");
    drop(node);

    // Into a new raft cluster: the restored node alone, then two more added.
    let first = dir.path().join("first");
    assert!(synod(&[
        "snapshot",
        "restore",
        file.to_str().expect("utf-8"),
        "--data-dir",
        first.to_str().expect("utf-8")
    ])
    .status
    .success());
    let addrs: Vec<String> = (0..3).map(|_| common::free_addr()).collect();
    let peer = |i: usize| format!("{}=http://{}", i + 1, addrs[i]);
    let n1 =
        ServerProcess::start_at(&addrs[0], &first, &["--replication", "raft", "--node-id", "1", "--peer", &peer(0)]);
    eventually("the restored node leads with its registry", LIMIT, || async { ready(&n1.base()).await }).await;
    assert_eq!(registry_of(&n1.base()).await, original);
    assert!(!first.join("raft/restore.synod").exists(), "the seed is removed once proposed");
    let more: Vec<(tempfile::TempDir, ServerProcess)> = (1..3)
        .map(|i| {
            let d = tempfile::tempdir().expect("tempdir");
            let id = (i + 1).to_string();
            let (p0, pi) = (peer(0), peer(i));
            let args = ["--replication", "raft", "--raft-join", "--node-id", &id, "--peer", &p0, "--peer", &pi];
            let node = ServerProcess::start_at(&addrs[i], d.path(), &args);
            (d, node)
        })
        .collect();
    for (i, addr) in addrs.iter().enumerate().skip(1) {
        let added = synod(&["cluster", "add", &(i + 1).to_string(), &format!("http://{addr}"), "--server", &n1.base()]);
        assert!(added.status.success(), "{}", String::from_utf8_lossy(&added.stderr));
    }
    for (_, node) in &more {
        eventually("an added node serves the restored registry", LIMIT, || async {
            ready(&node.base()).await && registry_of(&node.base()).await == original
        })
        .await;
    }

    // Damage is refused before anything is written.
    let bytes = std::fs::read(&file).expect("read backup");
    let mut flipped = bytes.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x20;
    for (name, content, why) in
        [("flipped", flipped, "checksum"), ("short", bytes[..bytes.len() - 7].to_vec(), "truncated")]
    {
        let bad = dir.path().join(format!("{name}.snap"));
        std::fs::write(&bad, content).expect("write");
        let target = dir.path().join(format!("{name}-dir"));
        let out = synod(&[
            "snapshot",
            "restore",
            bad.to_str().expect("utf-8"),
            "--data-dir",
            target.to_str().expect("utf-8"),
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(why) && err.lines().count() == 1, "{name}: {err}");
        assert!(!target.exists(), "nothing written for a {name} backup");
    }
    // A directory in use is never overwritten.
    let out =
        synod(&["snapshot", "restore", file.to_str().expect("utf-8"), "--data-dir", first.to_str().expect("utf-8")]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not empty"));

    // Disaster recovery: the last node of the original cluster, its majority gone.
    cluster.nodes[0].kill9();
    cluster.nodes[1].kill9();
    let dr = dir.path().join("dr.snap");
    let dr_path = dr.to_str().expect("utf-8");
    let refused = synod(&["snapshot", "save", dr_path, "--server", &bases[2]]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("consistency=local"));
    assert!(!dr.exists());
    let local = synod(&["snapshot", "save", dr_path, "--local", "--server", &bases[2]]);
    assert!(local.status.success(), "{}", String::from_utf8_lossy(&local.stderr));
    let inspected = synod(&["snapshot", "inspect", dr_path]);
    assert!(String::from_utf8_lossy(&inspected.stdout).contains("119 instances"), "{inspected:?}");
}

/// Debian's chromium, or `None` (with the reason printed) where it is not installed.
fn chromium() -> Option<String> {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if std::path::Path::new(&chromium).exists() {
        return Some(chromium);
    }
    eprintln!("skipped: no chromium at {chromium} (./test.sh installs Debian's chromium when it can)");
    None
}

/// Runs tests/browser/dashboard.mjs against the node at `base` on application ORDERS (take
/// `out` out of service, cancel `cancel`, take `back` out and back in unless it is empty),
/// with extra environment `env`; returns what the script saw.
async fn drive_dashboard(
    chromium: &str,
    base: &str,
    (out, cancel, back): (&str, &str, &str),
    shot: &std::path::Path,
    env: &[(&str, &str)],
) -> serde_json::Value {
    let here = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    assert!(
        here.join("node_modules/playwright-core").exists(),
        "run ./test.sh, which installs playwright-core under tests/browser/node_modules"
    );
    let mut cmd = tokio::process::Command::new("node");
    cmd.current_dir(&here)
        .arg("dashboard.mjs")
        .args([base, "ORDERS", out, cancel])
        .arg(shot)
        .arg(back)
        .env("CHROMIUM", chromium)
        .envs(env.iter().copied())
        .kill_on_drop(true);
    let done = tokio::time::timeout(Duration::from_secs(90), cmd.output()).await.expect("the browser run ends");
    let done = done.expect("run node");
    let said = String::from_utf8_lossy(&done.stdout).into_owned();
    assert!(done.status.success(), "{said}{}", String::from_utf8_lossy(&done.stderr));
    serde_json::from_str(said.trim().lines().last().unwrap_or_default()).expect("one JSON line")
}

/// The dashboard in a real browser (Debian's chromium, driven by tests/browser/dashboard.mjs
/// through playwright-core): it lists the registered instances, filters them, takes one out
/// of service, cancels another and takes a third out and back, and the server's registry
/// shows all three. The screenshot goes
/// to `SYNOD_DASHBOARD_SCREENSHOT` if set (docs/dashboard.png is made this way).
#[tokio::test]
async fn the_dashboard_takes_an_instance_out_of_service_in_a_real_browser() {
    let Some(chromium) = chromium() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let node = ServerProcess::start(dir.path().join("data").as_path(), &[]);
    let eureka = node.eureka_url();
    let http = reqwest::Client::new();
    let fleet = [("ORDERS", 3, "zone-a"), ("BILLING", 2, "zone-b"), ("GATEWAY", 2, "zone-a")];
    for (app, n, zone) in fleet {
        for i in 1..=n {
            let mut body = py_instance(app, &format!("10.0.{}.{i}", app.len()), 8080);
            let id = format!("{}-{i}", app.to_ascii_lowercase());
            body["instance"]["instanceId"] = id.clone().into();
            body["instance"]["metadata"]["zone"] = zone.into();
            body["instance"]["metadata"]["version"] = "2.4.1".into();
            if id == "gateway-2" {
                body["instance"]["metadata"]["note"] = "<img src=x onerror=document.body.dataset.pwned=1>".into();
            }
            let resp = http.post(format!("{eureka}/apps/{app}")).json(&body).send().await.expect("register");
            assert_eq!(resp.status(), 204);
            // Heartbeats, so self-preservation sees a healthy fleet.
            for _ in 0..2 {
                assert_eq!(status(http.put(format!("{eureka}/apps/{app}/{id}"))).await, 200);
            }
        }
    }
    let shot = std::env::var("SYNOD_DASHBOARD_SCREENSHOT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| dir.path().join("dashboard.png"));
    let seen = drive_dashboard(&chromium, &node.base(), ("orders-2", "orders-3", "orders-1"), &shot, &[]).await;
    assert_eq!(seen["instances"], "7", "{seen}");
    assert_eq!(seen["before"], "UP", "{seen}");
    assert_eq!(seen["after"], "OUT_OF_SERVICE", "{seen}");
    assert_eq!(seen["back"], "UP", "{seen}");
    assert_eq!(seen["injected"], 0, "metadata is shown as text: {seen}");
    assert!(seen["metadata"].as_str().is_some_and(|t| t.contains("note=<img src=x")), "{seen}");
    assert_eq!(seen["errors"], serde_json::json!([]), "no script errors: {seen}");
    assert!(std::fs::metadata(&shot).expect("screenshot").len() > 10_000);

    let (_, oos) = common::get_json(&http, &format!("{eureka}/apps/ORDERS/orders-2")).await;
    assert_eq!(oos["instance"]["status"], "OUT_OF_SERVICE");
    assert_eq!(oos["instance"]["overriddenStatus"], "OUT_OF_SERVICE");
    assert_eq!(
        common::get_json(&http, &format!("{eureka}/apps/ORDERS/orders-3")).await.0.as_u16(),
        404,
        "cancelled through the page"
    );
    let (_, back) = common::get_json(&http, &format!("{eureka}/apps/ORDERS/orders-1")).await;
    assert_eq!(back["instance"]["status"], "UP", "back in service");
    assert_eq!(back["instance"]["overriddenStatus"], "UNKNOWN", "its override removed");
    let (_, other) = common::get_json(&http, &format!("{eureka}/apps/BILLING/billing-1")).await;
    assert_eq!(other["instance"]["status"], "UP", "the others are untouched");
}

/// On a node with an auth file the dashboard acts with the signed-in user's rights: a user
/// who may only read ORDERS sees the registry but is refused (and told why) when taking an
/// instance out of service; an operator may. (An anonymous click gets the browser's sign-in
/// prompt, from the 401's `WWW-Authenticate`, which a headless run cannot answer.)
#[tokio::test]
async fn dashboard_actions_need_operator_rights_on_a_secured_node() {
    let Some(chromium) = chromium() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let auth = dir.path().join("auth.toml");
    std::fs::write(&auth, format!("anonymous = [\"read\"]\n{}", common::secured::auth_file(&[]))).expect("auth file");
    let node = ServerProcess::start(dir.path().join("data").as_path(), &["--auth-file", auth.to_str().expect("utf-8")]);
    let eureka = node.eureka_url();
    let http = reqwest::Client::new();
    for id in ["orders-1", "orders-2"] {
        let mut body = py_instance("ORDERS", "10.0.0.1", 8080);
        body["instance"]["instanceId"] = id.into();
        let resp = http.post(format!("{eureka}/apps/ORDERS")).basic_auth("root", Some("root-password")).json(&body);
        assert_eq!(resp.send().await.expect("register").status(), 204);
    }
    let (ids, shot) = (("orders-1", "orders-2", ""), dir.path().join("shot.png"));
    let as_reader = [("DASHBOARD_USER", "svc"), ("DASHBOARD_PASSWORD", "svc-password"), ("EXPECT_REFUSED", "1")];
    let reader = drive_dashboard(&chromium, &node.base(), ids, &shot, &as_reader).await;
    let message = reader["message"].as_str().unwrap_or_default();
    assert!(message.contains("403") && message.contains("operator role"), "{reader}");
    assert_eq!(reader["after"], "UP", "{reader}");
    assert_eq!(reader["instances"], "2", "a reader sees the registry: {reader}");
    let (_, still) = common::get_json(&http, &format!("{eureka}/apps/ORDERS/orders-1")).await;
    assert_eq!(still["instance"]["status"], "UP", "the refused action changed nothing");

    let as_operator = [("DASHBOARD_USER", "ops"), ("DASHBOARD_PASSWORD", "ops-password")];
    let operator = drive_dashboard(&chromium, &node.base(), ids, &shot, &as_operator).await;
    assert_eq!(operator["after"], "OUT_OF_SERVICE", "{operator}");
    assert_eq!(operator["errors"], serde_json::json!([]), "{operator}");
    let (_, oos) = common::get_json(&http, &format!("{eureka}/apps/ORDERS/orders-1")).await;
    assert_eq!(oos["instance"]["status"], "OUT_OF_SERVICE");
    assert_eq!(common::get_json(&http, &format!("{eureka}/apps/ORDERS/orders-2")).await.0.as_u16(), 404);
}
