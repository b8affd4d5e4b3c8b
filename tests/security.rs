//! Authentication, authorization and TLS against real `synod serve` processes: an outsider
//! changes nothing (client routes, peer batches, raft RPCs, membership), each role stays
//! within what it allows, peers prove membership with the cluster secret or a client
//! certificate, SIGHUP reloads the auth file and the certificates, an expired certificate
//! is refused, and a node reachable beyond loopback does not start open by accident.

mod common;

use std::path::Path;
use std::time::Duration;

use reqwest::{Client, Method, StatusCode};
use serde_json::Value;

use common::certs::TestCa;
use common::secured::{self, Cluster, Files, CI_TOKEN, SECRET};
use common::ServerProcess;

const LIMIT: Duration = Duration::from_secs(15);

fn registration(app: &str, id: &str) -> String {
    serde_json::json!({"instance": {
        "instanceId": id, "hostName": "h", "app": app, "ipAddr": "10.0.0.1", "status": "UP",
        "port": {"$": 8080, "@enabled": "true"},
        "dataCenterInfo": {"@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo", "name": "MyOwn"},
    }})
    .to_string()
}

/// Who sends a request.
#[derive(Clone, Copy)]
enum As {
    Nobody,
    User(&'static str),
    Token(&'static str),
    Secret(&'static str),
}

fn password(user: &str) -> &'static str {
    secured::USERS.iter().find(|u| u.0 == user).map(|u| u.1).unwrap_or("not-a-password")
}

struct Api {
    c: Client,
    base: String,
}

impl Api {
    fn new(base: &str) -> Api {
        Api { c: Client::builder().no_proxy().timeout(LIMIT).build().unwrap(), base: base.to_string() }
    }

    fn with_client(base: &str, c: Client) -> Api {
        Api { c, base: base.to_string() }
    }

    async fn send(
        &self,
        who: As,
        method: Method,
        path: &str,
        body: Option<String>,
        extra: &[(&str, &str)],
    ) -> (StatusCode, String, reqwest::header::HeaderMap) {
        let mut req = self.c.request(method, format!("{}{path}", self.base));
        req = match who {
            As::Nobody => req,
            As::User(u) => req.basic_auth(u, Some(password(u))),
            As::Token(t) => req.bearer_auth(t),
            As::Secret(s) => req.header("x-synod-cluster-secret", s),
        };
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("{path}: {e}"));
        let (status, headers) = (resp.status(), resp.headers().clone());
        (status, resp.text().await.unwrap_or_default(), headers)
    }

    async fn status(&self, who: As, method: Method, path: &str, body: Option<String>) -> StatusCode {
        self.send(who, method, path, body, &[]).await.0
    }

    async fn json(&self, who: As, path: &str) -> Value {
        let (status, body, _) = self.send(who, Method::GET, path, None, &[("accept", "application/json")]).await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    /// `GET /eureka/apps/{app}/{id}` as root: the instance's status, or None on 404.
    async fn instance_status(&self, app: &str, id: &str) -> Option<String> {
        let (status, body, _) = self
            .send(
                As::User("root"),
                Method::GET,
                &format!("/eureka/apps/{app}/{id}"),
                None,
                &[("accept", "application/json")],
            )
            .await;
        if status == StatusCode::NOT_FOUND {
            return None;
        }
        let v: Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("{status}: {body}"));
        Some(v["instance"]["status"].as_str().unwrap().to_string())
    }
}

fn args(files: &Files, more: &[&str]) -> Vec<String> {
    let mut a = files.auth_args();
    a.extend(more.iter().map(|s| s.to_string()));
    a
}

fn start(dir: &Path, args: &[String]) -> ServerProcess {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ServerProcess::start(dir, &args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outsider_changes_nothing_on_a_raft_node() {
    let dir = tempfile::tempdir().unwrap();
    let files = Files::write(dir.path());
    let data = tempfile::tempdir().unwrap();
    let node = start(data.path(), &args(&files, &["--replication", "raft"]));
    let api = Api::new(&node.base());
    common::eventually("a leader", LIMIT, || async {
        api.send(As::User("root"), Method::GET, "/v1/status", None, &[]).await.1.contains("\"leader\":1")
    })
    .await;
    let reg = Some(registration("ORDERS", "o-1"));
    assert_eq!(api.status(As::User("orders"), Method::POST, "/eureka/apps/ORDERS", reg).await, StatusCode::NO_CONTENT);
    let members_before = api.json(As::User("root"), "/v1/cluster").await["members"].clone();

    let garbage = || Some("{\"vote\": \"everything\"}".to_string());
    let attempts: Vec<(Method, &str, Option<String>)> = vec![
        (Method::GET, "/eureka/apps", None),
        (Method::GET, "/v1/status", None),
        (Method::GET, "/v1/cluster", None),
        (Method::POST, "/eureka/apps/ORDERS", Some(registration("ORDERS", "o-2"))),
        (Method::PUT, "/eureka/apps/ORDERS/o-1", None),
        (Method::DELETE, "/eureka/apps/ORDERS/o-1", None),
        (Method::PUT, "/eureka/apps/ORDERS/o-1/status?value=OUT_OF_SERVICE", None),
        (Method::DELETE, "/eureka/apps/ORDERS/o-1/status", None),
        (Method::PUT, "/eureka/apps/ORDERS/o-1/metadata?x=1", None),
        (Method::POST, "/v1/raft/append", garbage()),
        (Method::POST, "/v1/raft/vote", garbage()),
        (Method::POST, "/v1/raft/snapshot", garbage()),
        (Method::POST, "/v1/raft/forward", garbage()),
        (Method::POST, "/v1/raft/renew", garbage()),
        (Method::GET, "/v1/raft/read-index", None),
        (Method::GET, "/v1/raft/init", None),
        (Method::POST, "/v1/cluster/nodes", Some("{\"id\": 2, \"url\": \"http://127.0.0.1:9\"}".into())),
        (Method::PUT, "/v1/cluster/nodes/1", Some("{\"url\": \"http://127.0.0.1:9\"}".into())),
        (Method::DELETE, "/v1/cluster/nodes/1", None),
    ];
    for (method, path, body) in &attempts {
        // Without credentials, and without them while claiming to be a replicating peer.
        for extra in [&[][..], &[("x-netflix-discovery-replication", "true")][..]] {
            let (status, text, headers) = api.send(As::Nobody, method.clone(), path, body.clone(), extra).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path} {extra:?}: {text}");
            let challenges: Vec<_> = headers.get_all("www-authenticate").iter().collect();
            assert!(
                challenges.iter().any(|h| h.to_str().unwrap().starts_with("Basic")),
                "{method} {path}: {challenges:?}"
            );
            assert_eq!(text.trim().lines().count(), 1, "one-line reason: {text:?}");
        }
        // A wrong password, and a wrong cluster secret.
        let (status, _, _) = api.send(As::User("intruder"), method.clone(), path, body.clone(), &[]).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path} with a wrong password");
        let wrong = As::Secret("test-cluster-secret-0000000000");
        assert_eq!(
            api.status(wrong, method.clone(), path, body.clone()).await,
            StatusCode::UNAUTHORIZED,
            "{method} {path}"
        );
    }
    // A user with rights to one application is no peer and no admin.
    for (method, path, body) in attempts
        .iter()
        .filter(|a| a.1.starts_with("/v1/raft") || (a.1.starts_with("/v1/cluster/") && a.0 != Method::GET))
    {
        let (status, text, _) = api.send(As::User("orders"), method.clone(), path, body.clone(), &[]).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {text}");
        assert!(text.contains("orders"), "the refusal names the principal: {text}");
    }
    // Nothing moved.
    assert_eq!(api.instance_status("ORDERS", "o-1").await.as_deref(), Some("UP"));
    assert_eq!(api.instance_status("ORDERS", "o-2").await, None);
    assert_eq!(api.json(As::User("root"), "/v1/cluster").await["members"], members_before);
    // Probes stay open; the status page shows nothing secret.
    assert_eq!(api.status(As::Nobody, Method::GET, "/healthz", None).await, StatusCode::OK);
    let status = api.send(As::User("root"), Method::GET, "/v1/status", None, &[]).await.1;
    assert!(!status.contains(SECRET) && !status.contains("argon2") && !status.contains("password"), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_keep_each_user_to_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let files = Files::write(dir.path());
    let data = tempfile::tempdir().unwrap();
    let node = start(data.path(), &["--auth-file".to_string(), files.auth.display().to_string()]);
    let api = Api::new(&node.base());
    let post = |app: &str, id: &str| (Method::POST, format!("/eureka/apps/{app}"), Some(registration(app, id)));
    let (m, p, b) = post("ORDERS-EU", "e-1");
    assert_eq!(api.status(As::User("orders"), m, &p, b).await, StatusCode::NO_CONTENT);
    let (m, p, b) = post("BILLING", "b-1");
    assert_eq!(api.status(As::User("root"), m, &p, b).await, StatusCode::NO_CONTENT);

    // ORDERS* may not touch BILLING, not even claiming to replicate.
    let billing: Vec<(Method, String, Option<String>)> = vec![
        post("BILLING", "b-2"),
        (Method::PUT, "/eureka/apps/BILLING/b-1".into(), None),
        (Method::DELETE, "/eureka/apps/BILLING/b-1".into(), None),
        (Method::PUT, "/eureka/apps/BILLING/b-1/status?value=OUT_OF_SERVICE".into(), None),
        (Method::DELETE, "/eureka/apps/BILLING/b-1/status".into(), None),
        (Method::PUT, "/eureka/apps/BILLING/b-1/metadata?k=v".into(), None),
        (Method::DELETE, "/eureka/apps/BILL%49NG/b-1".into(), None),
    ];
    for (method, path, body) in &billing {
        for extra in [&[][..], &[("x-netflix-discovery-replication", "true")][..]] {
            let (status, text, _) = api.send(As::User("orders"), method.clone(), path, body.clone(), extra).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path} {extra:?}: {text}");
            assert!(text.contains("BILLING") && text.trim().lines().count() == 1, "{text:?}");
        }
    }
    assert_eq!(api.instance_status("BILLING", "b-1").await.as_deref(), Some("UP"));
    assert_eq!(api.instance_status("BILLING", "b-2").await, None);
    // Its own instances it runs: renew and status through the client's own calls.
    assert_eq!(api.status(As::User("orders"), Method::PUT, "/eureka/apps/ORDERS-EU/e-1", None).await, StatusCode::OK);
    let s = api.status(As::User("orders"), Method::PUT, "/eureka/apps/orders-eu/e-1/status?value=DOWN", None).await;
    assert_eq!(s, StatusCode::OK);

    // Operators override and cancel anything, register nothing.
    let (m, p, b) = post("OPS", "x-1");
    assert_eq!(api.status(As::User("ops"), m, &p, b).await, StatusCode::FORBIDDEN);
    let s =
        api.status(As::User("ops"), Method::PUT, "/eureka/apps/BILLING/b-1/status?value=OUT_OF_SERVICE", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(api.instance_status("BILLING", "b-1").await.as_deref(), Some("OUT_OF_SERVICE"));
    assert_eq!(api.status(As::User("ops"), Method::DELETE, "/eureka/apps/BILLING/b-1", None).await, StatusCode::OK);
    assert_eq!(api.instance_status("BILLING", "b-1").await, None);

    // A registration may not announce another application's VIP, nor reuse another's id.
    let mut body: Value = serde_json::from_str(&registration("ORDERS-EU", "e-2")).unwrap();
    body["instance"]["vipAddress"] = "orders-eu,billing".into();
    let (status, text, _) =
        api.send(As::User("orders"), Method::POST, "/eureka/apps/ORDERS-EU", Some(body.to_string()), &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{text}");
    assert!(text.contains("billing"), "{text}");
    body["instance"]["vipAddress"] = "orders-eu".into();
    body["instance"]["secureVipAddress"] = "ORDERS-EU-SECURE".into();
    let (status, text, _) =
        api.send(As::User("orders"), Method::POST, "/eureka/apps/ORDERS-EU", Some(body.to_string()), &[]).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{text}");
    let (m, p, b) = post("BILLING", "b-9");
    assert_eq!(api.status(As::User("root"), m, &p, b).await, StatusCode::NO_CONTENT);
    let (m, p, b) = post("ORDERS-EU", "b-9");
    assert_eq!(api.status(As::User("orders"), m, &p, b).await, StatusCode::CONFLICT);

    // Bearer tokens for scripts.
    assert_eq!(api.status(As::Token(CI_TOKEN), Method::GET, "/eureka/apps", None).await, StatusCode::OK);
    let (m, p, b) = post("CI", "c-1");
    assert_eq!(api.status(As::Token(CI_TOKEN), m, &p, b).await, StatusCode::FORBIDDEN);
    assert_eq!(api.status(As::Token("synod_guess"), Method::GET, "/eureka/apps", None).await, StatusCode::UNAUTHORIZED);
    // Membership needs admin; admin passes the door and meets the URL check.
    let spec = Some("{\"id\": 2, \"url\": \"http://user:pw@127.0.0.1:9\"}".to_string());
    assert_eq!(
        api.status(As::User("ops"), Method::POST, "/v1/cluster/nodes", spec.clone()).await,
        StatusCode::FORBIDDEN
    );
    assert_ne!(api.status(As::User("root"), Method::POST, "/v1/cluster/nodes", spec).await, StatusCode::FORBIDDEN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p2p_peers_prove_membership_with_the_cluster_secret() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start_with(dir.path(), "p2p", 2, "http", Files::auth_args);
    let nodes = &cluster.nodes;
    let (one, two) = (Api::new(&nodes[0].base()), Api::new(&nodes[1].base()));
    // Members reach each other with the secret: a registration on one shows on the other.
    let reg = Some(registration("ORDERS", "o-1"));
    assert_eq!(one.status(As::User("orders"), Method::POST, "/eureka/apps/ORDERS", reg).await, StatusCode::NO_CONTENT);
    common::eventually("replicated to node 2", LIMIT, || async {
        two.instance_status("ORDERS", "o-1").await.is_some()
    })
    .await;
    // Outsiders cannot push a batch or read the peers' routes.
    let batch = serde_json::json!({"replicationList": [{
        "appName": "ORDERS", "id": "o-1", "action": "Cancel", "lastDirtyTimestamp": 9_999_999_999_999u64
    }]})
    .to_string();
    for path in ["/eureka/peerreplication/batch", "/eureka/v2/peerreplication/batch"] {
        assert_eq!(two.status(As::Nobody, Method::POST, path, Some(batch.clone())).await, StatusCode::UNAUTHORIZED);
        assert_eq!(two.status(As::User("root"), Method::POST, path, Some(batch.clone())).await, StatusCode::FORBIDDEN);
    }
    for path in ["/v1/p2p/digest", "/v1/p2p/apps", "/v1/p2p/apps/ORDERS"] {
        assert_eq!(two.status(As::Nobody, Method::GET, path, None).await, StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(two.status(As::Secret(SECRET), Method::GET, path, None).await, StatusCode::OK, "{path}");
    }
    assert_eq!(two.instance_status("ORDERS", "o-1").await.as_deref(), Some("UP"));
    // The member's own batch goes through.
    let s = two.status(As::Secret(SECRET), Method::POST, "/eureka/peerreplication/batch", Some(batch)).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_auth_file_and_the_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let files = Files::write(dir.path());
    let data = tempfile::tempdir().unwrap();
    let mut a = vec!["--auth-file".to_string(), files.auth.display().to_string()];
    a.extend(files.tls_args());
    let node = start(data.path(), &a);
    assert_eq!(node.scheme, "https");
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&files.ca.pem).unwrap()).unwrap();
    let client = Client::builder().no_proxy().timeout(LIMIT).add_root_certificate(ca).tls_info(true).build().unwrap();
    let api = Api::with_client(&node.base(), client.clone());
    let late = As::User("late");
    assert_eq!(api.status(late, Method::GET, "/eureka/apps", None).await, StatusCode::UNAUTHORIZED);
    std::fs::write(&files.auth, secured::auth_file(&[("late", "not-a-password", "[\"read\"]")])).unwrap();
    node.hangup();
    common::eventually("the new user admitted", LIMIT, || async {
        api.status(late, Method::GET, "/eureka/apps", None).await == StatusCode::OK
    })
    .await;

    // A new certificate from the same CA, written over the served one.
    let served = |c: Client, url: String| async move {
        let resp = c.get(url).send().await.unwrap();
        resp.extensions().get::<reqwest::tls::TlsInfo>().and_then(|t| t.peer_certificate().map(<[u8]>::to_vec)).unwrap()
    };
    let url = format!("{}/healthz", node.base());
    let before = served(client.clone(), url.clone()).await;
    let renewed = files.ca.issue("renewed");
    std::fs::copy(&renewed.cert, &files.node.cert).unwrap();
    std::fs::copy(&renewed.key, &files.node.key).unwrap();
    node.hangup();
    common::eventually("the renewed certificate served", LIMIT, || {
        // A fresh client: a kept-alive connection keeps the certificate of its handshake.
        let c = Client::builder()
            .no_proxy()
            .timeout(LIMIT)
            .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(&files.ca.pem).unwrap()).unwrap())
            .tls_info(true)
            .build()
            .unwrap();
        let (url, before) = (url.clone(), before.clone());
        async move { served(c, url).await != before }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_admit_members_and_expired_ones_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let files = Files::write(dir.path());
    let member = files.ca.issue("member");
    let expired = files.ca.issue_valid("expired", Some(((2020, 1, 1), (2021, 1, 1))));
    let stranger_ca = TestCa::new(dir.path(), "stranger-ca");
    let stranger = stranger_ca.issue("stranger");
    let data = tempfile::tempdir().unwrap();
    let mut a = vec!["--auth-file".to_string(), files.auth.display().to_string()];
    a.extend(files.tls_args());
    a.extend(["--tls-client-ca".to_string(), files.ca.pem.display().to_string(), "--tls-require-client-cert".into()]);
    let node = start(data.path(), &a);
    let with = |identity: Option<&common::certs::Issued>| {
        let ca = reqwest::Certificate::from_pem(&std::fs::read(&files.ca.pem).unwrap()).unwrap();
        let mut b = Client::builder().no_proxy().timeout(LIMIT).add_root_certificate(ca);
        if let Some(i) = identity {
            b = b.identity(reqwest::Identity::from_pem(&i.identity_pem()).unwrap());
        }
        b.build().unwrap()
    };
    let url = format!("{}/eureka/apps", node.base());
    let ok = with(Some(&member)).get(&url).basic_auth("orders", Some("orders-password")).send().await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    for (what, client) in [
        ("no certificate", with(None)),
        ("an expired certificate", with(Some(&expired))),
        ("another CA's certificate", with(Some(&stranger))),
    ] {
        let r = client.get(&url).basic_auth("orders", Some("orders-password")).send().await;
        assert!(r.is_err(), "a client with {what} was served: {:?}", r.map(|r| r.status()));
    }
    // A client that does not trust the node's CA does not talk to it either.
    let r = Client::builder().no_proxy().timeout(LIMIT).build().unwrap().get(&url).send().await;
    assert!(r.is_err(), "served to a client that cannot verify the node");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_members_prove_membership_with_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start_with(dir.path(), "raft", 3, "https", members_by_certificate);
    let (files, nodes) = (&cluster.files, &cluster.nodes);
    let ca = || reqwest::Certificate::from_pem(&std::fs::read(&files.ca.pem).unwrap()).unwrap();
    let plain = Client::builder().no_proxy().timeout(LIMIT).add_root_certificate(ca()).build().unwrap();
    let apis: Vec<Api> = nodes.iter().map(|n| Api::with_client(&n.base(), plain.clone())).collect();
    // Writes commit, so the members' raft traffic is admitted by their certificates.
    let reg = Some(registration("ORDERS", "o-1"));
    common::eventually("a registration committed", LIMIT, || async {
        apis[0].status(As::User("orders"), Method::POST, "/eureka/apps/ORDERS", reg.clone()).await
            == StatusCode::NO_CONTENT
    })
    .await;
    for api in &apis {
        common::eventually("applied everywhere", LIMIT, || async {
            api.instance_status("ORDERS", "o-1").await.is_some()
        })
        .await;
    }
    // A client without a certificate is no member, whatever it claims.
    let vote = Some("{}".to_string());
    assert_eq!(apis[1].status(As::Nobody, Method::POST, "/v1/raft/vote", vote.clone()).await, StatusCode::UNAUTHORIZED);
    assert_eq!(apis[1].status(As::User("root"), Method::POST, "/v1/raft/vote", vote).await, StatusCode::FORBIDDEN);
}

/// Members with the auth file and TLS, proving membership by their certificates alone.
fn members_by_certificate(files: &Files) -> Vec<String> {
    let mut a = vec!["--auth-file".to_string(), files.auth.display().to_string()];
    a.extend(files.tls_args());
    a.extend(["--tls-client-ca".to_string(), files.ca.pem.display().to_string()]);
    a
}

#[test]
fn a_node_reachable_beyond_loopback_does_not_start_open() {
    let data = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_synod"))
        .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(data.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--auth-file") && err.contains("--allow-anonymous"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn the_cli_authenticates_and_trusts_its_ca() {
    let dir = tempfile::tempdir().unwrap();
    let files = Files::write(dir.path());
    let data = tempfile::tempdir().unwrap();
    let mut a = vec!["--auth-file".to_string(), files.auth.display().to_string()];
    a.extend(files.tls_args());
    let node = start(data.path(), &a);
    let ca = files.ca.pem.display().to_string();
    let synod = |args: &[&str], token: Option<&str>| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_synod"));
        cmd.args(args).env_remove("SYNOD_TOKEN").env_remove("SYNOD_SERVER").env_remove("SYNOD_CA_FILE");
        if let Some(t) = token {
            cmd.env("SYNOD_TOKEN", t);
        }
        let out = cmd.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let client = Client::builder()
        .no_proxy()
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(&files.ca.pem).unwrap()).unwrap())
        .build()
        .unwrap();
    let api = Api::with_client(&node.base(), client);
    let reg = Some(registration("ORDERS", "o-1"));
    assert_eq!(
        rt.block_on(api.status(As::User("orders"), Method::POST, "/eureka/apps/ORDERS", reg)),
        StatusCode::NO_CONTENT
    );

    let with_password = format!("https://ops:ops-password@{}", node.addr);
    let (code, out, err) = synod(&["apps", "--server", &with_password, "--ca-file", &ca], None);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("ORDERS"), "{out}");
    let (code, out, err) = synod(
        &["instance", "status", "orders", "o-1", "OUT_OF_SERVICE", "--server", &with_password, "--ca-file", &ca],
        None,
    );
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(rt.block_on(api.instance_status("ORDERS", "o-1")).as_deref(), Some("OUT_OF_SERVICE"));
    // A token from the environment; its role reads but does not override.
    let plain = node.base();
    assert_eq!(synod(&["apps", "--server", &plain, "--ca-file", &ca], Some(CI_TOKEN)).0, Some(0));
    let (code, _, err) =
        synod(&["instance", "cancel", "ORDERS", "o-1", "--server", &plain, "--ca-file", &ca], Some(CI_TOKEN));
    assert_eq!(code, Some(1));
    assert!(err.contains("403") && err.trim().lines().count() == 1, "{err}");
    // Refusals are one line naming the status, and never print the password.
    let wrong = format!("https://ops:not-the-password@{}", node.addr);
    let (code, _, err) = synod(&["apps", "--server", &wrong, "--ca-file", &ca], None);
    assert_eq!(code, Some(1));
    assert!(err.contains("401") && !err.contains("not-the-password"), "{err}");
    let (code, _, err) = synod(&["apps", "--server", &plain, "--ca-file", &ca], None);
    assert!(code == Some(1) && err.contains("401"), "{err}");
    // Without the CA the node's certificate is not trusted.
    let (code, _, err) = synod(&["apps", "--server", &with_password], None);
    assert!(code == Some(1) && !err.contains("ops-password"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_made_by_the_cli_admit_their_holders() {
    use std::io::Write;
    let run = |args: &[&str], stdin: &str| {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_synod"))
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "synod {args:?} failed");
        String::from_utf8(out.stdout).unwrap()
    };
    let hash = run(&["auth", "hash-password"], "s3cret pass\n");
    assert!(hash.trim().starts_with("$argon2id$"), "{hash}");
    let made = run(&["auth", "new-token"], "");
    let token = made.lines().find_map(|l| l.strip_prefix("token:")).unwrap().trim().to_string();
    let digest_line = made.lines().find(|l| l.starts_with("token_sha256")).unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let auth = dir.path().join("auth.toml");
    std::fs::write(
        &auth,
        format!(
            "[[users]]\nname = \"dev\"\npassword_hash = \"{}\"\nroles = [\"read\"]\n[[users]]\nname = \"bot\"\n{digest_line}\nroles = [\"read\"]\n",
            hash.trim()
        ),
    )
    .unwrap();
    let data = tempfile::tempdir().unwrap();
    let node = start(data.path(), &["--auth-file".to_string(), auth.display().to_string()]);
    let c = Client::new();
    let url = format!("{}/eureka/apps", node.base());
    let with_password = c.get(&url).basic_auth("dev", Some("s3cret pass")).send().await.unwrap();
    assert_eq!(with_password.status(), StatusCode::OK);
    let with_token = c.get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(with_token.status(), StatusCode::OK);
    let wrong = c.get(&url).basic_auth("dev", Some("s3cret")).send().await.unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p2p_members_prove_membership_with_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start_with(dir.path(), "p2p", 2, "https", members_by_certificate);
    let (files, nodes) = (&cluster.files, &cluster.nodes);
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&files.ca.pem).unwrap()).unwrap();
    let plain = Client::builder().no_proxy().timeout(LIMIT).add_root_certificate(ca).build().unwrap();
    let (one, two) = (Api::with_client(&nodes[0].base(), plain.clone()), Api::with_client(&nodes[1].base(), plain));
    let reg = Some(registration("ORDERS", "o-1"));
    assert_eq!(one.status(As::User("orders"), Method::POST, "/eureka/apps/ORDERS", reg).await, StatusCode::NO_CONTENT);
    common::eventually("replicated to node 2 by a member with a certificate", LIMIT, || async {
        two.instance_status("ORDERS", "o-1").await.is_some()
    })
    .await;
    // A client without a certificate cannot push a batch, whatever credentials it has.
    let batch = Some("{\"replicationList\": []}".to_string());
    let path = "/eureka/peerreplication/batch";
    assert_eq!(two.status(As::Nobody, Method::POST, path, batch.clone()).await, StatusCode::UNAUTHORIZED);
    assert_eq!(two.status(As::User("root"), Method::POST, path, batch).await, StatusCode::FORBIDDEN);
}
