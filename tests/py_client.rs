//! Drives the real third-party Python client py-eureka-client 0.13.3 (tests/py_client/scenario.py)
//! against a `synod serve` process, and checks over HTTP what the server holds at every step:
//! registration under the upper-case app name with the percent-decoded default instance id,
//! heartbeats moving `lastRenewalTimestamp`, discovery of a second instance through the client's
//! own registry refresh, `status_update` to OUT_OF_SERVICE, and cancellation by `stop()`.
//!
//! Python is `$SYNOD_PYTHON`, or else `.venv/bin/python` next to Cargo.toml, which `./test.sh`
//! creates with the client installed. Without a usable one the test fails instead of skipping.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use common::{wait_until, ServerProcess};

/// The client release whose behaviour the scenario encodes.
const CLIENT_VERSION: &str = "0.13.3";
const SETUP_HINT: &str = "run ./test.sh, which creates .venv with py-eureka-client==0.13.3, \
                          or set SYNOD_PYTHON to a Python interpreter that has it installed";
/// The scenario process is killed if it runs longer than this.
const SCENARIO_LIMIT: Duration = Duration::from_secs(50);
/// Longest any single check on the server polls.
const CHECK_LIMIT: Duration = Duration::from_secs(10);

/// What the client registers: it upper-cases the app name itself and builds the default id as
/// `{ip}:{app in lower case}:{port}`, which travels in URLs as `127.0.0.1%3Apy-alpha%3A18081`.
const ALPHA_APP: &str = "PY-ALPHA";
const ALPHA_ID: &str = "127.0.0.1:py-alpha:18081";
const BETA_APP: &str = "PY-BETA";
const BETA_ID: &str = "127.0.0.1:py-beta:18082";

#[test]
fn py_eureka_client_registers_renews_discovers_updates_status_and_cancels() {
    let python = python_with_client();
    let data = tempfile::tempdir().expect("temp dir");
    let server = ServerProcess::start(data.path(), &[]);
    run_scenario(&python, &server.eureka_url(), None);
    drop(server);
}

/// The same scenario against a three-node raft cluster, the client talking to a follower:
/// its writes are forwarded to the leader, its heartbeats relayed, its reads served locally.
#[test]
fn py_eureka_client_works_through_a_raft_follower() {
    let python = python_with_client();
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().expect("temp dir")).collect();
    let addrs: Vec<String> = (0..3).map(|_| common::free_addr()).collect();
    let peers: Vec<String> = addrs.iter().enumerate().map(|(i, a)| format!("{}=http://{a}", i + 1)).collect();
    let nodes: Vec<ServerProcess> = (0..3)
        .map(|i| {
            let id = (i + 1).to_string();
            let mut args = vec!["--replication", "raft", "--node-id", id.as_str()];
            for p in &peers {
                args.extend(["--peer", p.as_str()]);
            }
            ServerProcess::start_at(&addrs[i], dirs[i].path(), &args)
        })
        .collect();
    let mut leader = None;
    let found = wait_until(CHECK_LIMIT, || {
        leader = Api::new(&nodes[0].eureka_url(), None).node_status().ok().and_then(|s| s["leader"].as_u64());
        leader.is_some()
    });
    assert!(found, "the raft cluster elected no leader");
    let follower = nodes.iter().enumerate().find(|(i, _)| Some(*i as u64 + 1) != leader).map(|(_, n)| n).unwrap();
    run_scenario(&python, &follower.eureka_url(), None);
    drop(nodes);
}

/// The same scenario through HTTP Basic credentials in the service URL, over HTTPS with a
/// test CA, against a secured three-node cluster of each replicating backend (auth file,
/// cluster secret, TLS between the members too).
#[test]
fn py_eureka_client_uses_basic_auth_over_https_on_secured_clusters() {
    let python = python_with_client();
    for mode in ["p2p", "raft"] {
        let dir = tempfile::tempdir().expect("temp dir");
        let cluster = common::secured::Cluster::start(dir.path(), mode, 3);
        let entry = cluster.nodes.last().expect("a node");
        let url = format!("https://svc:svc-password@{}/eureka", entry.addr);
        if mode == "raft" {
            assert!(
                wait_until(CHECK_LIMIT, || Api::new(&url, Some(&cluster.ca))
                    .node_status()
                    .is_ok_and(|s| s["leader"].is_u64())),
                "the secured raft cluster elected no leader"
            );
        }
        // Without credentials the same client gets nowhere.
        let (code, _) =
            Api::new(&format!("https://{}/eureka", entry.addr), Some(&cluster.ca)).get("apps", "*/*").unwrap();
        assert_eq!(code, 401, "{mode}: anonymous read");
        run_scenario(&python, &url, Some(&cluster.ca));
    }
}

/// Registers, heartbeats, discovers, updates status and cancels through `eureka_url`,
/// checking the server's view at every step.
fn run_scenario(python: &Path, eureka_url: &str, ca: Option<&Path>) {
    let api = Api::new(eureka_url, ca);
    let mut sc = Scenario::start(python, eureka_url, ca);

    // Registration.
    let cp = sc.expect("registered");
    sc.check(checkpoint_names(&cp, ALPHA_APP, ALPHA_ID));
    let alpha = sc.check(api.instance(ALPHA_APP, ALPHA_ID));
    let Some(alpha) = alpha else { sc.fail(&format!("GET apps/{ALPHA_APP}/{ALPHA_ID} is 404 after registration")) };
    sc.check(field_is(&alpha, "app", ALPHA_APP));
    sc.check(field_is(&alpha, "instanceId", ALPHA_ID));
    sc.check(field_is(&alpha, "status", "UP"));
    let apps = sc.check(api.apps_json());
    sc.check(listed(&apps, ALPHA_APP, ALPHA_ID).map(|_| ()));
    sc.check(no_encoded_names(&apps));
    sc.check(hashcode_is(&apps, "UP_1_"));
    // The client sends `Accept: */*` and can only parse XML.
    let (code, body) = sc.check(api.get("apps/", "*/*"));
    if code != 200 || !body.contains("<applications>") {
        sc.fail(&format!("GET apps/ with Accept: */* must be XML <applications>, got {code}: {}", excerpt(&body)));
    }

    // Heartbeats: the client renews every second with `PUT apps/PY-ALPHA/127.0.0.1%3Apy-alpha%3A18081`.
    let first = sc.check(last_renewal(&alpha));
    sc.check(api.wait_renewal_after(ALPHA_APP, ALPHA_ID, first));
    sc.resume();

    // Discovery of a second instance, registered by another process.
    let cp = sc.expect("discovered");
    sc.check(checkpoint_names(&cp, BETA_APP, BETA_ID));
    let beta = sc.check(api.instance(BETA_APP, BETA_ID));
    let Some(beta) = beta else {
        sc.fail(&format!("GET apps/{BETA_APP}/{BETA_ID} is 404 although alpha discovered it"))
    };
    sc.check(field_is(&beta, "status", "UP"));
    let apps = sc.check(api.apps_json());
    sc.check(listed(&apps, BETA_APP, BETA_ID).map(|_| ()));
    sc.check(hashcode_is(&apps, "UP_2_"));
    sc.resume();

    // Status change through the client's status_update().
    sc.expect("status_updated");
    let alpha = sc.check(api.instance(ALPHA_APP, ALPHA_ID));
    let Some(alpha) = alpha else { sc.fail("alpha is 404 after its status update") };
    sc.check(field_is(&alpha, "status", "OUT_OF_SERVICE"));
    sc.check(field_is(&alpha, "overriddenStatus", "OUT_OF_SERVICE"));
    let apps = sc.check(api.apps_json());
    sc.check(hashcode_is(&apps, "OUT_OF_SERVICE_1_UP_1_"));
    // Later heartbeats carry `status=OUT_OF_SERVICE`; they must renew the lease without
    // reverting the status (a 404 would make the client register again as UP).
    let before = sc.check(last_renewal(&alpha));
    sc.check(api.wait_renewal_after(ALPHA_APP, ALPHA_ID, before));
    let alpha = sc.check(api.instance(ALPHA_APP, ALPHA_ID));
    let Some(alpha) = alpha else { sc.fail("alpha is 404 after a heartbeat following its status update") };
    sc.check(field_is(&alpha, "status", "OUT_OF_SERVICE"));
    sc.resume();

    // The second instance stops (DOWN registration, then cancel) and leaves alpha's registry.
    sc.expect("beta_gone");
    if let Some(b) = sc.check(api.instance(BETA_APP, BETA_ID)) {
        sc.fail(&format!("beta was cancelled but GET apps/{BETA_APP}/{BETA_ID} still answers: {b}"));
    }
    let apps = sc.check(api.apps_json());
    if listed(&apps, BETA_APP, BETA_ID).is_ok() {
        sc.fail(&format!("beta was cancelled but GET apps still lists it: {apps}"));
    }
    sc.resume();

    // Alpha's own stop(): DOWN registration (204) then cancel (200), then the process exits.
    let cp = sc.expect("stopped");
    if cp["answers"] != serde_json::json!([204, 200]) {
        sc.fail(&format!("stop() expects 204 for the DOWN registration and 200 for the cancel, got {}", cp["answers"]));
    }
    sc.finish();
    if let Some(a) = sc.check(api.instance(ALPHA_APP, ALPHA_ID)) {
        sc.fail(&format!("alpha was cancelled but GET apps/{ALPHA_APP}/{ALPHA_ID} still answers: {a}"));
    }
    let status = sc.check(api.node_status());
    if status["instances"] != 0 {
        sc.fail(&format!("/v1/status should count 0 instances after both cancels: {status}"));
    }
}

/// Finds the interpreter and makes sure it imports the expected client release.
fn python_with_client() -> PathBuf {
    let python = match std::env::var_os("SYNOD_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => {
            let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
            assert!(venv.exists(), "no Python virtualenv at {}: {SETUP_HINT}", venv.display());
            venv
        }
    };
    let mut child = Command::new(&python)
        .args(["-c", "import py_eureka_client; print(py_eureka_client.version)"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}; {SETUP_HINT}", python.display()));
    let exited = wait_until(Duration::from_secs(30), || matches!(child.try_wait(), Ok(Some(_))));
    if !exited {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{} -c 'import py_eureka_client' did not finish within 30 s", python.display());
    }
    let status = child.wait().expect("wait for python");
    let mut out = String::new();
    let mut err = String::new();
    let _ = child.stdout.take().expect("stdout").read_to_string(&mut out);
    let _ = child.stderr.take().expect("stderr").read_to_string(&mut err);
    let reason = err.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no error output");
    assert!(status.success(), "{} cannot import py_eureka_client ({reason}): {SETUP_HINT}", python.display());
    assert_eq!(out.trim(), CLIENT_VERSION, "{} has py-eureka-client {}: {SETUP_HINT}", python.display(), out.trim());
    python
}

/// The running scenario script, driven checkpoint by checkpoint.
struct Scenario {
    child: Child,
    stdin: Option<ChildStdin>,
    /// Lines of its stdout; `None` once stdout closed.
    lines: mpsc::Receiver<Option<String>>,
    /// Everything it wrote to stdout and stderr, for failure messages.
    transcript: Arc<Mutex<Vec<String>>>,
    stderr_closed: mpsc::Receiver<()>,
    deadline: Instant,
}

impl Scenario {
    /// `ca`: the CA file an https server's certificate chains to (the client's Python trusts
    /// it through `SSL_CERT_FILE`, as httpx does).
    fn start(python: &Path, eureka_url: &str, ca: Option<&Path>) -> Scenario {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py_client/scenario.py");
        let mut cmd = Command::new(python);
        cmd.arg(&script)
            .arg("--step")
            .arg(eureka_url)
            .env("PYTHONUNBUFFERED", "1")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("NO_PROXY", "127.0.0.1,localhost")
            .env("no_proxy", "127.0.0.1,localhost")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // httpx honours proxy variables; the client must talk to the loopback server directly.
        for var in ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"] {
            cmd.env_remove(var);
        }
        if let Some(ca) = ca {
            cmd.env("SSL_CERT_FILE", ca);
        }
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {}: {e}", script.display()));
        let transcript = Arc::new(Mutex::new(Vec::new()));

        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout");
        let log = Arc::clone(&transcript);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                log.lock().unwrap().push(line.clone());
                if tx.send(Some(line)).is_err() {
                    return;
                }
            }
            let _ = tx.send(None);
        });

        let (done, stderr_closed) = mpsc::channel();
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::clone(&transcript);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                log.lock().unwrap().push(format!("stderr| {line}"));
            }
            let _ = done.send(());
        });

        Scenario {
            stdin: child.stdin.take(),
            child,
            lines,
            transcript,
            stderr_closed,
            deadline: Instant::now() + SCENARIO_LIMIT,
        }
    }

    /// Waits for `CHECKPOINT name {json}` and returns the JSON.
    fn expect(&mut self, name: &str) -> Value {
        let prefix = format!("CHECKPOINT {name} ");
        loop {
            let line = self.next_line(&format!("checkpoint {name:?}"));
            if let Some(json) = line.strip_prefix(&prefix) {
                return serde_json::from_str(json)
                    .unwrap_or_else(|e| self.fail(&format!("checkpoint {name:?} carries bad JSON ({e}): {json}")));
            }
            if line.starts_with("CHECKPOINT ") {
                self.fail(&format!("expected checkpoint {name:?}, got {line:?}"));
            }
        }
    }

    /// Lets the script go on past the checkpoint it is waiting at.
    fn resume(&mut self) {
        let sent = self.stdin.as_mut().map(|s| s.write_all(b"CONTINUE\n").and_then(|_| s.flush()));
        if !matches!(sent, Some(Ok(()))) {
            self.fail("cannot write CONTINUE to the scenario (it has exited?)");
        }
    }

    /// Waits for `DONE` and a zero exit status.
    fn finish(&mut self) {
        while self.next_line("DONE") != "DONE" {}
        self.stdin = None;
        let exited = wait_until(self.remaining(), || matches!(self.child.try_wait(), Ok(Some(_))));
        if !exited {
            self.fail("the scenario printed DONE but did not exit");
        }
        let status = self.child.wait().expect("wait for scenario");
        if !status.success() {
            self.fail(&format!("the scenario printed DONE but exited with {status}"));
        }
    }

    fn next_line(&mut self, waiting_for: &str) -> String {
        match self.lines.recv_timeout(self.remaining()) {
            Ok(Some(line)) => {
                println!("py| {line}");
                if line.starts_with("FAIL") {
                    self.fail(&format!("the scenario failed while waiting for {waiting_for}: {line}"));
                }
                line
            }
            Ok(None) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = self.child.try_wait().ok().flatten();
                self.fail(&format!("the scenario closed its output ({status:?}) before {waiting_for}"))
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                self.fail(&format!("the scenario did not reach {waiting_for} within {SCENARIO_LIMIT:?} overall"))
            }
        }
    }

    fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// Unwraps the result of a server check, failing with the scenario's transcript.
    #[track_caller]
    fn check<T>(&mut self, r: Result<T, String>) -> T {
        match r {
            Ok(v) => v,
            Err(e) => self.fail(&e),
        }
    }

    /// Stops the script and panics with `msg` and everything the script printed.
    #[track_caller]
    fn fail(&mut self, msg: &str) -> ! {
        self.stop();
        // Its stderr carries the client's request log on failure; give the pipe a moment to drain.
        let _ = self.stderr_closed.recv_timeout(Duration::from_secs(3));
        let transcript = self.transcript.lock().map(|t| t.join("\n")).unwrap_or_default();
        panic!("{msg}\n--- scenario output ---\n{transcript}\n---");
    }

    fn stop(&mut self) {
        // Closing stdin ends the script's waits; the kill covers a script that is stuck elsewhere.
        self.stdin = None;
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Drop for Scenario {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Blocking view of the server's HTTP API, for independent checks.
struct Api {
    rt: tokio::runtime::Runtime,
    http: reqwest::Client,
    base: String,
}

impl Api {
    /// Credentials in `eureka_url` are sent as HTTP Basic; `ca` is trusted for https.
    fn new(eureka_url: &str, ca: Option<&Path>) -> Api {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let mut http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(5));
        if let Some(ca) = ca {
            let pem = std::fs::read(ca).expect("CA file");
            http = http.add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("CA certificate"));
        }
        let http = http.build().expect("http client");
        Api { rt, http, base: format!("{eureka_url}/") }
    }

    fn get(&self, path: &str, accept: &str) -> Result<(u16, String), String> {
        let url = format!("{}{path}", self.base);
        self.rt.block_on(async {
            let res =
                self.http.get(&url).header("Accept", accept).send().await.map_err(|e| format!("GET {url}: {e}"))?;
            let code = res.status().as_u16();
            let body = res.text().await.map_err(|e| format!("GET {url}: body: {e}"))?;
            Ok((code, body))
        })
    }

    fn get_json(&self, path: &str) -> Result<Option<Value>, String> {
        let (code, body) = self.get(path, "application/json")?;
        match code {
            200 => serde_json::from_str(&body)
                .map(Some)
                .map_err(|e| format!("GET {path}: not JSON ({e}): {}", excerpt(&body))),
            404 => Ok(None),
            _ => Err(format!("GET {path}: status {code}: {}", excerpt(&body))),
        }
    }

    /// `GET apps/{app}/{id}` with the id percent-encoded as the client sends it; `None` on 404.
    fn instance(&self, app: &str, id: &str) -> Result<Option<Value>, String> {
        let path = format!("apps/{app}/{}", id.replace(':', "%3A"));
        match self.get_json(&path)? {
            None => Ok(None),
            Some(v) => match v.get("instance") {
                Some(i) if i.is_object() => Ok(Some(i.clone())),
                _ => Err(format!("GET {path}: no \"instance\" object in {v}")),
            },
        }
    }

    fn apps_json(&self) -> Result<Value, String> {
        self.get_json("apps")?.ok_or_else(|| "GET apps answered 404".to_string())
    }

    fn node_status(&self) -> Result<Value, String> {
        let url = self.base.replace("/eureka/", "/v1/status");
        self.rt.block_on(async {
            let res = self.http.get(&url).send().await.map_err(|e| format!("GET {url}: {e}"))?;
            res.json::<Value>().await.map_err(|e| format!("GET {url}: {e}"))
        })
    }

    /// Polls until the instance's `lastRenewalTimestamp` is later than `after`.
    fn wait_renewal_after(&self, app: &str, id: &str, after: u64) -> Result<(), String> {
        let mut last = Ok(after);
        let advanced = wait_until(CHECK_LIMIT, || {
            last = match self.instance(app, id) {
                Ok(Some(i)) => last_renewal(&i),
                Ok(None) => Err(format!("{app}/{id} disappeared while waiting for a heartbeat")),
                Err(e) => Err(e),
            };
            matches!(last, Ok(t) if t > after) || last.is_err()
        });
        match last {
            Err(e) => Err(e),
            Ok(t) if advanced && t > after => Ok(()),
            Ok(t) => Err(format!(
                "{app}/{id}: lastRenewalTimestamp stayed at {t} (not after {after}) for {CHECK_LIMIT:?}; \
                 the client's heartbeats every 1 s do not renew the lease"
            )),
        }
    }
}

fn excerpt(s: &str) -> String {
    s.chars().take(400).collect()
}

fn as_u64(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

fn last_renewal(instance: &Value) -> Result<u64, String> {
    as_u64(&instance["leaseInfo"]["lastRenewalTimestamp"])
        .ok_or_else(|| format!("no numeric leaseInfo.lastRenewalTimestamp in {instance}"))
}

fn field_is(instance: &Value, field: &str, want: &str) -> Result<(), String> {
    match instance[field].as_str() {
        Some(got) if got == want => Ok(()),
        _ => Err(format!("expected {field} = {want:?}, instance is {instance}")),
    }
}

fn checkpoint_names(cp: &Value, app: &str, id: &str) -> Result<(), String> {
    if cp["app"] == app && cp["id"] == id {
        Ok(())
    } else {
        Err(format!("the client reports {cp}, expected app {app:?} and id {id:?}"))
    }
}

fn applications(apps: &Value) -> Result<&Vec<Value>, String> {
    apps["applications"]["application"]
        .as_array()
        .ok_or_else(|| format!("GET apps has no applications.application array: {apps}"))
}

/// The instance `id` under application `app` in a `GET apps` JSON document.
fn listed<'a>(apps: &'a Value, app: &str, id: &str) -> Result<&'a Value, String> {
    applications(apps)?
        .iter()
        .filter(|a| a["name"] == app)
        .filter_map(|a| a["instance"].as_array())
        .flatten()
        .find(|i| i["instanceId"] == id)
        .ok_or_else(|| format!("GET apps does not list {id:?} under application {app:?}: {apps}"))
}

/// App names must be upper case and ids decoded (`:` rather than `%3A`).
fn no_encoded_names(apps: &Value) -> Result<(), String> {
    for a in applications(apps)? {
        let name = a["name"].as_str().unwrap_or_default();
        if name != name.to_ascii_uppercase() {
            return Err(format!("application name {name:?} is not upper case"));
        }
        for i in a["instance"].as_array().into_iter().flatten() {
            let id = i["instanceId"].as_str().unwrap_or_default();
            if id.contains('%') {
                return Err(format!("instance id {id:?} was stored percent-encoded"));
            }
        }
    }
    Ok(())
}

fn hashcode_is(apps: &Value, want: &str) -> Result<(), String> {
    match apps["applications"]["apps__hashcode"].as_str() {
        Some(got) if got == want => Ok(()),
        got => Err(format!("apps__hashcode is {got:?}, expected {want:?}")),
    }
}
