//! Operator subcommands that talk to a running node over HTTP: the registry
//! (`apps`, `app`, `instance`, `watch`, `status`) and raft membership (`cluster`).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::Value;

/// Where to send a command and how to print its answer.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// The server's Eureka URL (a base URL without /eureka works too).
    #[arg(
        long,
        env = "SYNOD_SERVER",
        default_value = "http://127.0.0.1:8761/eureka",
        global = true,
        hide_env_values = true
    )]
    pub server: String,

    /// Output: human-readable tables, or JSON for scripts.
    #[arg(long, value_enum, default_value = "table", global = true)]
    pub output: Output,

    /// Bearer token to authenticate with (instead of `user:password@` in --server).
    #[arg(long, env = "SYNOD_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,

    /// PEM CA certificates to trust for an https server [default: the public web PKI roots].
    #[arg(long, env = "SYNOD_CA_FILE", value_name = "FILE", global = true)]
    pub ca_file: Option<std::path::PathBuf>,
}

impl ServerArgs {
    /// The node's base URL (without the Eureka prefix and without credentials).
    pub fn root(&self) -> String {
        base(&self.address())
    }

    /// --server without the credentials it may carry (they go in a header, never in a
    /// printed URL).
    fn address(&self) -> String {
        split_credentials(&self.server).0
    }

    /// The `Authorization` header value these arguments give, if any.
    fn authorization(&self) -> anyhow::Result<Option<reqwest::header::HeaderValue>> {
        use base64::Engine;
        let value = match (&self.token, split_credentials(&self.server).1) {
            (Some(token), _) => format!("Bearer {}", token.trim()),
            (None, Some(userinfo)) => {
                let decoded = percent_encoding::percent_decode_str(&userinfo).decode_utf8_lossy().into_owned();
                format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(decoded))
            }
            (None, None) => return Ok(None),
        };
        let mut v = reqwest::header::HeaderValue::from_str(&value).context("credentials are not valid header text")?;
        v.set_sensitive(true);
        Ok(Some(v))
    }

    /// The Eureka API URL.
    pub fn eureka(&self) -> String {
        let address = self.address();
        let s = address.trim().trim_end_matches('/');
        if s.ends_with("/eureka") || s.ends_with("/eureka/v2") {
            s.to_string()
        } else {
            format!("{s}/eureka")
        }
    }
}

/// `synod cluster …`.
#[derive(Debug, Args)]
pub struct ClusterArgs {
    #[command(flatten)]
    pub server: ServerArgs,

    #[command(subcommand)]
    pub action: ClusterAction,
}

/// `synod snapshot …`.
#[derive(Debug, Subcommand)]
pub enum SnapshotAction {
    /// Write a consistent, checksummed backup of a running node's registry to FILE (on raft,
    /// a linearizable one: every write acknowledged before the command is in it). Needs the
    /// admin role on a node with an auth file.
    Save {
        file: std::path::PathBuf,
        /// Take what the node has applied, without asking the cluster (for disaster recovery
        /// from a raft node that lost its majority; the backup may miss the latest writes).
        #[arg(long)]
        local: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Prepare the new data directory DIR from a backup, for a node of any mode: start a
    /// single node on it, or the first node of a new raft cluster (see docs/operations.md).
    /// A damaged or truncated backup is refused and nothing is written.
    Restore {
        file: std::path::PathBuf,
        /// The data directory to create (missing or empty).
        #[arg(long, value_name = "DIR")]
        data_dir: std::path::PathBuf,
    },
    /// Check a backup and summarize what it holds.
    Inspect { file: std::path::PathBuf },
}

/// `synod snapshot save`: fetches the backup, checks it, then writes it durably (to a
/// temporary file renamed over FILE), so FILE is either the old file or a whole backup.
pub async fn snapshot_save(file: &std::path::Path, local: bool, args: ServerArgs) -> anyhow::Result<String> {
    let url = format!("{}/v1/snapshot{}", args.root(), if local { "?consistency=local" } else { "" });
    let resp = client(&args)?
        .get(&url)
        .timeout(Duration::from_secs(600))
        .send()
        .await
        .map_err(|e| anyhow!("{url}: unreachable ({})", root_cause(&e)))?;
    let status = resp.status();
    let bytes = resp.bytes().await.with_context(|| format!("{url}: reading the answer"))?;
    if !status.is_success() {
        return Err(anyhow!("{url}: {} {}", status.as_u16(), String::from_utf8_lossy(&bytes).trim()));
    }
    let backup = crate::snapshot::read(&bytes).with_context(|| format!("{url}: the answer is not a whole snapshot"))?;
    let dir = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let name = file.file_name().ok_or_else(|| anyhow!("{}: not a file name", file.display()))?;
    let tmp = format!(".{}.tmp", name.to_string_lossy());
    crate::store::write_file_durably::<std::io::Error>(&dir, &tmp, &name.to_string_lossy(), |w| {
        std::io::Write::write_all(w, &bytes)
    })
    .with_context(|| format!("writing {}", file.display()))?;
    Ok(format!("{}\nwritten to {}", summary(&backup, bytes.len()), file.display()))
}

/// `synod snapshot inspect`.
pub fn snapshot_inspect(file: &std::path::Path) -> anyhow::Result<String> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let backup = crate::snapshot::read(&bytes).with_context(|| format!("{}", file.display()))?;
    Ok(summary(&backup, bytes.len()))
}

/// `synod snapshot restore`: checks the whole backup before anything is written.
pub fn snapshot_restore(file: &std::path::Path, data_dir: &std::path::Path) -> anyhow::Result<String> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let backup = crate::snapshot::read(&bytes).with_context(|| format!("{}", file.display()))?;
    crate::snapshot::restore(&bytes, &backup, data_dir)
        .with_context(|| format!("restoring into {}", data_dir.display()))?;
    Ok(format!(
        "{}\nrestored into {}: start one node on it (any --replication; for raft, as a new cluster of this node \
         alone, then add the others)",
        summary(&backup, bytes.len()),
        data_dir.display()
    ))
}

fn summary(b: &crate::snapshot::Backup, bytes: usize) -> String {
    let apps: std::collections::BTreeSet<&str> = b.entries.iter().map(|e| e.info.app.as_str()).collect();
    let taken = UNIX_EPOCH + Duration::from_millis(b.taken_at_ms);
    format!(
        "snapshot of node {} ({}) taken {}: {} instances of {} applications, {} tombstones, registry version {}, \
         {bytes} bytes, checksum ok",
        b.node_id,
        b.replication,
        humantime::format_rfc3339_seconds(taken),
        b.entries.len(),
        apps.len(),
        b.tombstones.len(),
        b.version
    )
}

/// `synod instance …`.
#[derive(Debug, Subcommand)]
pub enum InstanceAction {
    /// Set a status override (UP, DOWN, STARTING, OUT_OF_SERVICE, UNKNOWN).
    Status { app: String, id: String, status: String },
    /// Remove the status override.
    DeleteOverride { app: String, id: String },
    /// Cancel (deregister) the instance.
    Cancel { app: String, id: String },
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum ClusterAction {
    /// Leader, term, indexes and members.
    Status,
    /// Add a node: as a learner first, promoted to voter once it has caught up.
    Add {
        /// The new node's id (as given to it with --node-id).
        id: u64,
        /// The URL the other nodes reach it at, e.g. http://10.0.0.4:8761.
        url: String,
    },
    /// Remove a node from the cluster.
    Remove {
        /// Id of the node to remove.
        id: u64,
    },
    /// Change the URL a member is reached at (its identity and data stay).
    SetUrl {
        /// Id of the member.
        id: u64,
        /// Its new URL.
        url: String,
    },
}

fn base(server: &str) -> String {
    let s = server.trim().trim_end_matches('/');
    s.strip_suffix("/eureka/v2").or_else(|| s.strip_suffix("/eureka")).unwrap_or(s).to_string()
}

/// Splits `scheme://user:password@host…` into the URL without `user:password@` and the
/// credentials.
fn split_credentials(url: &str) -> (String, Option<String>) {
    let url = url.trim();
    let Some((scheme, rest)) = url.split_once("://") else { return (url.to_string(), None) };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => (format!("{scheme}://{}", &rest[at + 1..]), Some(rest[..at].to_string())),
        None => (url.to_string(), None),
    }
}

/// The HTTP client of a command: its credentials on every request, its CA file's trust.
fn client(args: &ServerArgs) -> anyhow::Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(v) = args.authorization()? {
        headers.insert(reqwest::header::AUTHORIZATION, v);
    }
    let mut builder =
        reqwest::Client::builder().no_proxy().connect_timeout(Duration::from_secs(3)).default_headers(headers);
    if let Some(ca) = &args.ca_file {
        builder = builder.use_preconfigured_tls(crate::tls::trusting(Some(ca)).map_err(anyhow::Error::msg)?);
    }
    Ok(builder.build()?)
}

/// Sends `req` to `url`; the body of a 2xx answer, else a one-line error naming the URL.
async fn call(req: reqwest::RequestBuilder, url: &str) -> anyhow::Result<String> {
    let resp = req.send().await.map_err(|e| anyhow!("{url}: unreachable ({})", root_cause(&e)))?;
    let status = resp.status();
    let body = resp.text().await.with_context(|| format!("{url}: reading the answer"))?;
    if !status.is_success() {
        let reason = body.trim();
        return Err(anyhow!(
            "{url}: {} {}",
            status.as_u16(),
            if reason.is_empty() { status.canonical_reason().unwrap_or("") } else { reason }
        ));
    }
    Ok(body)
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

async fn get_json(c: &reqwest::Client, url: &str) -> anyhow::Result<Value> {
    let body = call(c.get(url).header("accept", "application/json").timeout(Duration::from_secs(30)), url).await?;
    serde_json::from_str(&body).with_context(|| format!("{url}: not a JSON answer"))
}

/// Instances in an `applications` or `application` JSON document, as (app, instance).
fn instances(v: &Value) -> Vec<(String, Value)> {
    let apps = match v.get("applications") {
        Some(a) => a["application"].as_array().cloned().unwrap_or_default(),
        None => v.get("application").map(|a| vec![a.clone()]).unwrap_or_default(),
    };
    apps.iter()
        .flat_map(|a| {
            let name = a["name"].as_str().unwrap_or("").to_string();
            a["instance"].as_array().cloned().unwrap_or_default().into_iter().map(move |i| (name.clone(), i))
        })
        .collect()
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn ms_field(v: &Value) -> u64 {
    v.as_u64().or_else(|| v.as_str().and_then(|s| s.parse().ok())).unwrap_or(0)
}

/// Left-aligned columns.
fn columns(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, cell) in r.iter().enumerate() {
            widths[i] = widths[i].max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let parts: Vec<String> = cells.iter().enumerate().map(|(i, c)| format!("{c:<w$}", w = widths[i])).collect();
        parts.join("  ").trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

/// `synod apps`: applications with instance counts by status.
pub async fn apps(args: ServerArgs) -> anyhow::Result<String> {
    let url = format!("{}/apps", args.eureka());
    let v = get_json(&client(&args)?, &url).await?;
    if args.output == Output::Json {
        return Ok(serde_json::to_string_pretty(&v)?);
    }
    let mut counts: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    for (app, i) in instances(&v) {
        *counts.entry(app).or_default().entry(i["status"].as_str().unwrap_or("?").to_string()).or_default() += 1;
    }
    const STATUSES: [&str; 5] = ["UP", "DOWN", "STARTING", "OUT_OF_SERVICE", "UNKNOWN"];
    let rows: Vec<Vec<String>> = counts
        .iter()
        .map(|(app, by)| {
            let mut r = vec![app.clone(), by.values().sum::<usize>().to_string()];
            r.extend(STATUSES.iter().map(|s| by.get(*s).copied().unwrap_or(0).to_string()));
            r
        })
        .collect();
    let mut header = vec!["APP", "INSTANCES"];
    header.extend(STATUSES);
    Ok(columns(&header, &rows))
}

/// `synod app NAME`: the application's instances.
pub async fn app(args: ServerArgs, name: &str) -> anyhow::Result<String> {
    let url = format!("{}/apps/{}", args.eureka(), encode_segment(name));
    let v = get_json(&client(&args)?, &url).await?;
    if args.output == Output::Json {
        return Ok(serde_json::to_string_pretty(&v)?);
    }
    Ok(app_table(&v, now_ms()))
}

/// An application's instances as a table; lease ages as of `now` (ms since the epoch).
fn app_table(v: &Value, now: u64) -> String {
    let rows: Vec<Vec<String>> = instances(v)
        .iter()
        .map(|(_, i)| {
            let port = i["port"]["$"].as_u64().or_else(|| i["port"]["$"].as_str().and_then(|p| p.parse().ok()));
            let registered = ms_field(&i["leaseInfo"]["registrationTimestamp"]);
            vec![
                i["instanceId"].as_str().unwrap_or("").to_string(),
                i["status"].as_str().unwrap_or("").to_string(),
                format!("{}:{}", i["ipAddr"].as_str().unwrap_or(""), port.map_or("-".into(), |p| p.to_string())),
                if registered == 0 { "-".into() } else { age(now.saturating_sub(registered)) },
            ]
        })
        .collect();
    columns(&["ID", "STATUS", "ADDRESS", "LEASE AGE"], &rows)
}

/// A duration in milliseconds as an operator reads it: `42s`, `5m07s`, `3h02m`, `2d04h`.
fn age(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86399 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

fn encode_segment(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// `synod instance …`.
pub async fn instance(args: ServerArgs, action: InstanceAction) -> anyhow::Result<String> {
    let c = client(&args)?;
    let e = args.eureka();
    let path = |app: &str, id: &str| format!("{e}/apps/{}/{}", encode_segment(app), encode_segment(id));
    let (req, url, what, app, id) = match &action {
        InstanceAction::Status { app, id, status } => {
            let url = format!("{}/status?value={}", path(app, id), encode_segment(&status.to_ascii_uppercase()));
            (c.put(&url), url, format!("status override {}", status.to_ascii_uppercase()), app, id)
        }
        InstanceAction::DeleteOverride { app, id } => {
            let url = format!("{}/status", path(app, id));
            (c.delete(&url), url, "status override removed".to_string(), app, id)
        }
        InstanceAction::Cancel { app, id } => {
            let url = path(app, id);
            (c.delete(&url), url, "cancelled".to_string(), app, id)
        }
    };
    call(req.timeout(Duration::from_secs(30)), &url).await.map_err(|e| {
        if e.to_string().contains(": 404") {
            anyhow!("{url}: 404 no instance {id} in application {}", app.to_ascii_uppercase())
        } else {
            e
        }
    })?;
    Ok(match args.output {
        Output::Json => serde_json::json!({"app": app.to_ascii_uppercase(), "id": id, "result": what}).to_string(),
        Output::Table => format!("{}/{id}: {what}", app.to_ascii_uppercase()),
    })
}

/// `synod status`: the node's `/v1/status`.
pub async fn status(args: ServerArgs) -> anyhow::Result<String> {
    let url = format!("{}/v1/status", args.root());
    let v = get_json(&client(&args)?, &url).await?;
    if args.output == Output::Json {
        return Ok(serde_json::to_string_pretty(&v)?);
    }
    let mut out = String::new();
    let Some(obj) = v.as_object() else { return Ok(v.to_string()) };
    for (k, val) in obj {
        match val {
            Value::Object(inner) => {
                out.push_str(&format!("{k}:\n"));
                for (ik, iv) in inner {
                    out.push_str(&format!("  {ik}: {}\n", scalar(iv)));
                }
            }
            Value::Array(items) if !items.is_empty() => {
                out.push_str(&format!("{k}:\n"));
                for it in items {
                    out.push_str(&format!("  - {}\n", scalar(it)));
                }
            }
            other => out.push_str(&format!("{k}: {}\n", scalar(other))),
        }
    }
    Ok(out)
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        Value::Object(o) => o.iter().map(|(k, v)| format!("{k}={}", scalar(v))).collect::<Vec<_>>().join(" "),
        other => other.to_string(),
    }
}

/// `synod watch`: prints every registry change as it happens, using the long-polled delta
/// (against a server without it, the same request answers at once and is repeated every
/// second). Runs until interrupted. A server that cannot be reached at the start is an
/// error; once watching, a failed poll is reported on stderr and retried with a growing
/// pause (up to 5 s), so a server restart does not end the watch.
pub async fn watch(args: ServerArgs) -> anyhow::Result<()> {
    let c = client(&args)?;
    let e = args.eureka();
    // Changes already in the delta window when the watch starts are not news.
    let mut seen: BTreeMap<(String, String), u64> = BTreeMap::new();
    let first = get_json(&c, &format!("{e}/apps/delta")).await?;
    for (app, i) in instances(&first) {
        seen.insert((app, i["instanceId"].as_str().unwrap_or("").to_string()), ms_field(&i["lastUpdatedTimestamp"]));
    }
    let mut since = first["applications"]["versions__delta"].as_str().and_then(|s| s.parse::<u64>().ok());
    eprintln!("watching {e} (Ctrl-C stops)");
    let mut failures = 0u32;
    loop {
        let url = match since {
            Some(v) => format!("{e}/apps/delta?waitMs=30000&since={v}"),
            None => format!("{e}/apps/delta?waitMs=30000"),
        };
        let started = std::time::Instant::now();
        let v = match get_json(&c, &url).await {
            Ok(v) => {
                if failures > 0 {
                    eprintln!("watching {e} again");
                    failures = 0;
                }
                v
            }
            Err(err) => {
                failures += 1;
                let pause = Duration::from_millis(500 * (1u64 << failures.min(4))).min(Duration::from_secs(5));
                eprintln!("synod: {err:#}; retrying in {:.1}s", pause.as_secs_f64());
                tokio::time::sleep(pause).await;
                continue;
            }
        };
        let version = v["applications"]["versions__delta"].as_str().and_then(|s| s.parse::<u64>().ok());
        for (app, i) in instances(&v) {
            let id = i["instanceId"].as_str().unwrap_or("").to_string();
            let updated = ms_field(&i["lastUpdatedTimestamp"]);
            if seen.get(&(app.clone(), id.clone())) == Some(&updated) {
                continue;
            }
            seen.insert((app.clone(), id.clone()), updated);
            let action = i["actionType"].as_str().unwrap_or("MODIFIED");
            let status = i["status"].as_str().unwrap_or("");
            match args.output {
                Output::Json => println!(
                    "{}",
                    serde_json::json!({"action": action, "app": app, "id": id, "status": status, "at": updated})
                ),
                Output::Table => println!("{action:<8} {app} {id} {status}"),
            }
        }
        if version == since && started.elapsed() < Duration::from_millis(500) {
            // No long-poll support: pace the polling.
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        since = version.or(since);
    }
}

/// Runs a `cluster` subcommand; returns what to print.
pub async fn cluster(args: ClusterArgs) -> anyhow::Result<String> {
    let base = args.server.root();
    let client = client(&args.server)?;
    let req = match &args.action {
        ClusterAction::Status => client.get(format!("{base}/v1/cluster")),
        ClusterAction::Add { id, url } => {
            client.post(format!("{base}/v1/cluster/nodes")).json(&serde_json::json!({"id": id, "url": url}))
        }
        ClusterAction::Remove { id } => client.delete(format!("{base}/v1/cluster/nodes/{id}")),
        ClusterAction::SetUrl { id, url } => {
            client.put(format!("{base}/v1/cluster/nodes/{id}")).json(&serde_json::json!({"url": url}))
        }
    };
    // Adding a node waits for it to catch up.
    let resp = req.timeout(Duration::from_secs(120)).send().await.with_context(|| format!("{base}: unreachable"))?;
    let status = resp.status();
    let body = resp.text().await.with_context(|| format!("{base}: reading the answer"))?;
    if !status.is_success() {
        return Err(anyhow!("{base}: {} {}", status.as_u16(), body.trim()));
    }
    let v: Value = serde_json::from_str(&body).with_context(|| format!("{base}: not a synod raft node"))?;
    Ok(match args.server.output {
        Output::Json => serde_json::to_string_pretty(&v)?,
        Output::Table => table(&v),
    })
}

/// The cluster status as a table.
fn table(v: &Value) -> String {
    let leader = v["leader"].as_u64();
    let mut out = format!(
        "node {} is {}; leader {}; term {}; applied index {}\n",
        v["node_id"],
        v["state"].as_str().unwrap_or("?"),
        leader.map_or("none".to_string(), |l| l.to_string()),
        v["term"],
        v["applied_index"].as_u64().map_or("-".into(), |i| i.to_string()),
    );
    let members = v["members"].as_array().cloned().unwrap_or_default();
    let width = members.iter().filter_map(|m| m["url"].as_str()).map(str::len).max().unwrap_or(3).max(3);
    out.push_str(&format!("{:<4} {:<width$} ROLE\n", "ID", "URL"));
    for m in members {
        let id = m["id"].as_u64().unwrap_or(0);
        let mut role = if m["voter"] == true { "voter" } else { "learner" }.to_string();
        if Some(id) == leader {
            role.push_str(", leader");
        }
        out.push_str(&format!("{:<4} {:<width$} {role}\n", id, m["url"].as_str().unwrap_or("")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_leave_the_url_for_a_header() {
        let args = |server: &str, token: Option<&str>| ServerArgs {
            server: server.into(),
            output: Output::Table,
            token: token.map(String::from),
            ca_file: None,
        };
        let a = args("https://ops:p%40ss@10.0.0.1:8761/eureka", None);
        assert_eq!(a.eureka(), "https://10.0.0.1:8761/eureka");
        assert_eq!(a.root(), "https://10.0.0.1:8761");
        // base64("ops:p@ss")
        assert_eq!(a.authorization().unwrap().unwrap(), "Basic b3BzOnBAc3M=");
        let t = args("http://h:1", Some("synod_abc"));
        assert_eq!(t.authorization().unwrap().unwrap(), "Bearer synod_abc");
        assert!(args("http://h:1/x@y", None).authorization().unwrap().is_none());
    }

    #[test]
    fn lease_ages_read_in_the_two_largest_units() {
        let cases = [
            (0, "0s"),
            (59_999, "59s"),
            (60_000, "1m00s"),
            (307_000, "5m07s"),
            (3_600_000, "1h00m"),
            (10_920_000, "3h02m"),
            (86_400_000 * 2 + 4 * 3_600_000 + 59_000, "2d04h"),
        ];
        for (ms, want) in cases {
            assert_eq!(age(ms), want, "{ms} ms");
        }
    }

    #[test]
    fn app_rows_age_from_the_registration_not_the_last_renewal() {
        let now = 1_000_000_000;
        let v = serde_json::json!({"application": {"name": "A", "instance": [{
            "instanceId": "a1", "status": "UP", "ipAddr": "10.0.0.1", "port": {"$": 80},
            "leaseInfo": {"registrationTimestamp": now - 125_000, "lastRenewalTimestamp": now - 1_000}}]}});
        let table = app_table(&v, now);
        assert_eq!(
            table.lines().nth(1).map(|l| l.split_whitespace().collect::<Vec<_>>()),
            Some(vec!["a1", "UP", "10.0.0.1:80", "2m05s"])
        );
    }
}
