//! Command line and configuration. Every `serve` option can be given as a flag, as an
//! environment variable `SYNOD_<NAME>` or in a TOML file (`--config FILE`, keys named like
//! the flags); flags beat the environment, which beats the file, which beats the defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde::Deserialize;

/// synod: a Eureka-compatible service registry with pluggable replication.
#[derive(Debug, Parser)]
#[command(name = "synod", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a registry node.
    Serve(Box<ServeArgs>),
    /// Inspect or change a raft cluster's membership through any of its nodes.
    Cluster(crate::cli::ClusterArgs),
    /// Applications with instance counts by status.
    Apps(crate::cli::ServerArgs),
    /// The instances of one application: status, address, lease age (time since registration).
    App {
        /// Application name (case-insensitive).
        name: String,
        #[command(flatten)]
        server: crate::cli::ServerArgs,
    },
    /// Change or cancel one instance.
    Instance {
        #[command(subcommand)]
        action: crate::cli::InstanceAction,
        #[command(flatten)]
        server: crate::cli::ServerArgs,
    },
    /// Print registry changes as they happen (long-polled delta).
    Watch(crate::cli::ServerArgs),
    /// The server's status: role, registry, self-preservation, cluster.
    Status(crate::cli::ServerArgs),
    /// Make credentials for the auth file.
    Auth {
        #[command(subcommand)]
        action: AuthAction,
    },
    /// Back up a running node's registry, or prepare a new data directory from a backup.
    Snapshot {
        #[command(subcommand)]
        action: crate::cli::SnapshotAction,
    },
}

/// `synod auth …`.
#[derive(Debug, Subcommand)]
pub enum AuthAction {
    /// Read a password on standard input (its first line) and print its Argon2id hash for
    /// `password_hash` in the auth file.
    HashPassword,
    /// Print a new random bearer token, and its hash for `token_sha256` in the auth file.
    NewToken,
}

/// Replication backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicationMode {
    /// One node; the registry is persisted under --data-dir.
    None,
    /// Eureka-style peer-to-peer replication (AP).
    P2p,
    /// Raft log replication (CP).
    Raft,
}

/// Options of `synod serve`. Each is optional here so that the environment and the config
/// file can fill what the command line leaves out.
#[derive(Debug, Default, Args)]
pub struct ServeArgs {
    /// TOML file with any of the options below (keys as the long flags, e.g. `data-dir`).
    #[arg(long, env = "SYNOD_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Address to listen on [default: 127.0.0.1:8761].
    #[arg(long, env = "SYNOD_LISTEN", value_name = "ADDR")]
    pub listen: Option<String>,

    /// Directory holding this node's data [default: ./synod-data].
    #[arg(long, env = "SYNOD_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Replication backend: none (one node, persisted), p2p (Eureka-style peers, AP) or
    /// raft (CP) [default: none].
    #[arg(long, env = "SYNOD_REPLICATION", value_name = "MODE")]
    pub replication: Option<String>,

    /// This node's id within --peer [default: 1].
    #[arg(long, env = "SYNOD_NODE_ID", value_name = "N")]
    pub node_id: Option<String>,

    /// A cluster member as ID=URL, e.g. 2=http://10.0.0.2:8761; repeat for each member, this
    /// node included (environment: comma-separated).
    #[arg(long = "peer", env = "SYNOD_PEER", value_name = "ID=URL", value_delimiter = ',')]
    pub peers: Vec<String>,

    /// How often expired leases are evicted [default: 60s].
    #[arg(long, env = "SYNOD_EVICTION_INTERVAL", value_name = "DURATION")]
    pub eviction_interval: Option<String>,

    /// Fraction of expected renewals below which self-preservation suspends eviction; also
    /// caps one eviction run at (1 - fraction) of the registry [default: 0.85].
    #[arg(long, env = "SYNOD_RENEWAL_PERCENT_THRESHOLD", value_name = "FRACTION")]
    pub renewal_percent_threshold: Option<String>,

    /// Enable self-preservation [default: true].
    #[arg(long, env = "SYNOD_SELF_PRESERVATION", value_name = "BOOL")]
    pub self_preservation: Option<String>,

    /// Instances silent for longer than this stop counting towards the expected renewals, so
    /// self-preservation cannot protect a shrunken fleet forever [default: 15m].
    #[arg(long, env = "SYNOD_RENEWAL_THRESHOLD_UPDATE_INTERVAL", value_name = "DURATION")]
    pub renewal_threshold_update_interval: Option<String>,

    /// p2p: how long a starting node waits for its peers' registries before serving its own
    /// as complete [default: 30s].
    #[arg(long, env = "SYNOD_PEER_SYNC_WAIT", value_name = "DURATION")]
    pub peer_sync_wait: Option<String>,

    /// p2p: how often each node compares registry digests with every peer and pulls what
    /// differs [default: 30s].
    #[arg(long, env = "SYNOD_ANTI_ENTROPY_INTERVAL", value_name = "DURATION")]
    pub anti_entropy_interval: Option<String>,

    /// p2p: how long a cancelled instance is remembered, so that a node which still holds it
    /// (a late batch, a healed partition, a restarted node) cannot bring it back: the longest
    /// partition the cluster should heal from without stale instances [default: 1h].
    #[arg(long, env = "SYNOD_TOMBSTONE_RETENTION", value_name = "DURATION")]
    pub tombstone_retention: Option<String>,

    /// Longest lease a client may ask for (`leaseInfo.durationInSecs`); a longer one is
    /// shortened to it [default: 1h].
    #[arg(long, env = "SYNOD_MAX_LEASE_DURATION", value_name = "DURATION")]
    pub max_lease_duration: Option<String>,

    /// raft: how often the leader sends heartbeats; also the deadline of one append RPC
    /// [default: 100ms].
    #[arg(long, env = "SYNOD_RAFT_HEARTBEAT", value_name = "DURATION")]
    pub raft_heartbeat: Option<String>,

    /// raft: a follower that hears no leader for a random time between this and 1.5 times this
    /// starts an election [default: 400ms].
    #[arg(long, env = "SYNOD_RAFT_ELECTION_TIMEOUT", value_name = "DURATION")]
    pub raft_election_timeout: Option<String>,

    /// raft: deadline for sending one snapshot chunk to a lagging node [default: 10s].
    #[arg(long, env = "SYNOD_RAFT_SNAPSHOT_TIMEOUT", value_name = "DURATION")]
    pub raft_snapshot_timeout: Option<String>,

    /// raft: build a snapshot (and drop the log behind it) every this many log entries
    /// [default: 10000].
    #[arg(long, env = "SYNOD_RAFT_SNAPSHOT_EVERY", value_name = "ENTRIES")]
    pub raft_snapshot_every: Option<String>,

    /// raft: this node joins an existing cluster (added with `synod cluster add`) and never
    /// initializes one itself [default: false].
    #[arg(long, env = "SYNOD_RAFT_JOIN", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub raft_join: Option<String>,

    /// How long changes stay in `GET apps/delta` [default: 3m].
    #[arg(long, env = "SYNOD_DELTA_RETENTION", value_name = "DURATION")]
    pub delta_retention: Option<String>,

    /// Most long-polled delta requests (`GET apps/delta?waitMs=…`) waiting at once; more are
    /// answered 503 [default: 1024].
    #[arg(long, env = "SYNOD_MAX_LONG_POLLS", value_name = "N")]
    pub max_long_polls: Option<String>,

    /// Most client connections open at once; past it new connections wait to be accepted
    /// (lowered to fit the file-descriptor limit) [default: 4096].
    #[arg(long, env = "SYNOD_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<String>,

    /// A new connection that has not sent a complete first request head after this long is
    /// closed (slow headers; Tomcat's connectionTimeout) [default: 20s].
    #[arg(long, env = "SYNOD_HEADER_TIMEOUT", value_name = "DURATION")]
    pub header_timeout: Option<String>,

    /// A kept-alive connection that has not sent its next complete request head this long
    /// after its last response is closed (idle keep-alive, slow headers; Tomcat's
    /// keepAliveTimeout) [default: 20s].
    #[arg(long, env = "SYNOD_IDLE_TIMEOUT", value_name = "DURATION")]
    pub idle_timeout: Option<String>,

    /// Longest time a request body may take to arrive; slower ones get 408 [default: 20s].
    #[arg(long, env = "SYNOD_BODY_TIMEOUT", value_name = "DURATION")]
    pub body_timeout: Option<String>,

    /// Most memory the delta queue (`GET apps/delta`) may hold, in bytes; the oldest changes
    /// go first past it [default: 67108864].
    #[arg(long, env = "SYNOD_DELTA_MAX_BYTES", value_name = "BYTES")]
    pub delta_max_bytes: Option<String>,

    /// Most instances in the registry; a registration of a new instance past it answers 507
    /// (re-registrations and renewals still work) [default: 2000000].
    #[arg(long, env = "SYNOD_MAX_INSTANCES", value_name = "N")]
    pub max_instances: Option<String>,

    /// Largest accepted request body in bytes [default: 262144].
    #[arg(long, env = "SYNOD_MAX_BODY_SIZE", value_name = "BYTES")]
    pub max_body_size: Option<String>,

    /// Registry journal bytes (modes none and p2p) or raft log bytes after which they are
    /// folded into a snapshot, at least; a larger registry's snapshot size is used instead
    /// [default: 33554432].
    #[arg(long, env = "SYNOD_STORE_COMPACT_BYTES", value_name = "BYTES")]
    pub store_compact_bytes: Option<String>,

    /// Log filter, e.g. `info` or `synod=debug` [default: info,openraft=warn].
    #[arg(long, env = "SYNOD_LOG", value_name = "FILTER")]
    pub log: Option<String>,

    /// Log line format: `text` (for people) or `json` (one object per line, for log
    /// shippers) [default: text].
    #[arg(long, env = "SYNOD_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<String>,

    /// TOML file of users, their password or token hashes and roles, and the roles of
    /// anonymous requests; reloaded on SIGHUP. Without it every request may do everything
    /// (allowed only on loopback, or with --allow-anonymous).
    #[arg(long, env = "SYNOD_AUTH_FILE", value_name = "FILE")]
    pub auth_file: Option<PathBuf>,

    /// File holding the secret every cluster member sends to its peers (first line, at least
    /// 16 characters); replication requests without it are refused.
    #[arg(long, env = "SYNOD_CLUSTER_SECRET_FILE", value_name = "FILE")]
    pub cluster_secret_file: Option<PathBuf>,

    /// Serve without an auth file on a non-loopback address: anyone who reaches the port may
    /// change the registry [default: false].
    #[arg(long, env = "SYNOD_ALLOW_ANONYMOUS", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub allow_anonymous: Option<String>,

    /// PEM certificate chain: serve HTTPS (with --tls-key); also this node's client
    /// certificate towards peers. Reloaded on SIGHUP.
    #[arg(long, env = "SYNOD_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, env = "SYNOD_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,

    /// PEM CA certificates that https peers must present certificates of [default: the
    /// public web PKI roots].
    #[arg(long, env = "SYNOD_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,

    /// PEM CA certificates of client certificates: peers must present one (mutual TLS),
    /// clients may (or must, with --tls-require-client-cert).
    #[arg(long, env = "SYNOD_TLS_CLIENT_CA", value_name = "FILE")]
    pub tls_client_ca: Option<PathBuf>,

    /// Every connection, clients' too, must present a client certificate signed by
    /// --tls-client-ca [default: false].
    #[arg(long, env = "SYNOD_TLS_REQUIRE_CLIENT_CERT", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub tls_require_client_cert: Option<String>,
}

/// The config file: same keys as the long flags.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct FileConfig {
    listen: Option<toml::Value>,
    data_dir: Option<PathBuf>,
    replication: Option<toml::Value>,
    node_id: Option<toml::Value>,
    #[serde(default)]
    peer: Vec<String>,
    eviction_interval: Option<toml::Value>,
    renewal_percent_threshold: Option<toml::Value>,
    self_preservation: Option<toml::Value>,
    renewal_threshold_update_interval: Option<toml::Value>,
    delta_retention: Option<toml::Value>,
    peer_sync_wait: Option<toml::Value>,
    anti_entropy_interval: Option<toml::Value>,
    tombstone_retention: Option<toml::Value>,
    max_lease_duration: Option<toml::Value>,
    raft_heartbeat: Option<toml::Value>,
    raft_election_timeout: Option<toml::Value>,
    raft_snapshot_timeout: Option<toml::Value>,
    raft_snapshot_every: Option<toml::Value>,
    raft_join: Option<toml::Value>,
    max_long_polls: Option<toml::Value>,
    max_body_size: Option<toml::Value>,
    max_connections: Option<toml::Value>,
    delta_max_bytes: Option<toml::Value>,
    max_instances: Option<toml::Value>,
    header_timeout: Option<toml::Value>,
    idle_timeout: Option<toml::Value>,
    body_timeout: Option<toml::Value>,
    store_compact_bytes: Option<toml::Value>,
    log: Option<String>,
    log_format: Option<String>,
    auth_file: Option<PathBuf>,
    cluster_secret_file: Option<PathBuf>,
    allow_anonymous: Option<toml::Value>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_ca: Option<PathBuf>,
    tls_client_ca: Option<PathBuf>,
    tls_require_client_cert: Option<toml::Value>,
}

/// A cluster member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub id: u64,
    pub url: String,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (timestamp, level, target, fields, span).
    Json,
}

/// Raft timing and log settings.
#[derive(Debug, Clone)]
pub struct RaftTuning {
    pub heartbeat: Duration,
    /// Lower bound of the election timeout; the upper bound is 1.5 times this.
    pub election_timeout: Duration,
    pub snapshot_timeout: Duration,
    pub snapshot_every: u64,
    /// Log bytes since the last snapshot that make a snapshot due, at least (the last
    /// snapshot's size if larger); set from `--store-compact-bytes`.
    pub snapshot_log_bytes: u64,
    pub join: bool,
}

impl Default for RaftTuning {
    fn default() -> Self {
        RaftTuning {
            heartbeat: Duration::from_millis(100),
            election_timeout: Duration::from_millis(400),
            snapshot_timeout: Duration::from_secs(10),
            snapshot_every: 10_000,
            snapshot_log_bytes: 32 * 1024 * 1024,
            join: false,
        }
    }
}

/// Validated settings of a node.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub replication: ReplicationMode,
    pub node_id: u64,
    pub peers: Vec<Peer>,
    pub eviction_interval: Duration,
    pub renewal_percent_threshold: f64,
    pub self_preservation: bool,
    pub renewal_threshold_update_interval: Duration,
    pub delta_retention: Duration,
    pub peer_sync_wait: Duration,
    pub anti_entropy_interval: Duration,
    /// p2p: how long tombstones of cancelled instances are kept.
    pub tombstone_retention: Duration,
    /// Longest lease a client may ask for.
    pub max_lease_duration: Duration,
    pub raft: RaftTuning,
    pub max_long_polls: usize,
    pub max_body_size: usize,
    /// Most client connections open at once.
    pub max_connections: usize,
    /// Most memory the delta queue may hold.
    pub delta_max_bytes: usize,
    /// Most instances in the registry.
    pub max_instances: usize,
    /// How long a new connection may take to send its first request head.
    pub header_timeout: Duration,
    /// How long a kept-alive connection may take to send its next request head.
    pub idle_timeout: Duration,
    /// Longest a request body may take.
    pub body_timeout: Duration,
    /// Journal bytes that make a store compaction due, at least.
    pub store_compact_bytes: u64,
    pub log: String,
    /// How log lines are written.
    pub log_format: LogFormat,
    /// Authentication, peer proof and TLS.
    pub security: Security,
}

/// Who may do what, and how connections are protected.
#[derive(Debug, Clone, Default)]
pub struct Security {
    pub auth_file: Option<PathBuf>,
    pub cluster_secret_file: Option<PathBuf>,
    /// Listening beyond loopback without an auth file is on purpose.
    pub allow_anonymous: bool,
    pub tls: Option<crate::tls::TlsFiles>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8761)),
            data_dir: PathBuf::from("./synod-data"),
            replication: ReplicationMode::None,
            node_id: 1,
            peers: Vec::new(),
            eviction_interval: Duration::from_secs(60),
            renewal_percent_threshold: 0.85,
            self_preservation: true,
            renewal_threshold_update_interval: Duration::from_secs(15 * 60),
            delta_retention: Duration::from_secs(180),
            peer_sync_wait: Duration::from_secs(30),
            anti_entropy_interval: Duration::from_secs(30),
            tombstone_retention: Duration::from_secs(3600),
            max_lease_duration: Duration::from_secs(3600),
            raft: RaftTuning::default(),
            max_long_polls: 1024,
            max_body_size: 256 * 1024,
            max_connections: 4096,
            delta_max_bytes: 64 * 1024 * 1024,
            max_instances: 2_000_000,
            // Tomcat's connectionTimeout (and keepAliveTimeout, which defaults to it), which
            // Eureka servers run with.
            header_timeout: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(20),
            body_timeout: Duration::from_secs(20),
            store_compact_bytes: 32 * 1024 * 1024,
            log: "info,openraft=warn".into(),
            log_format: LogFormat::Text,
            security: Security::default(),
        }
    }
}

/// A configuration error; its message is one line naming the option.
#[derive(Debug, thiserror::Error)]
#[error("invalid value for --{option}: {reason}")]
pub struct ConfigError {
    pub option: &'static str,
    pub reason: String,
}

fn err(option: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError { option, reason: reason.into() }
}

/// A file value as text: strings as they are, numbers and booleans printed.
fn file_text(v: Option<toml::Value>) -> Option<String> {
    v.map(|v| match v {
        toml::Value::String(s) => s,
        other => other.to_string(),
    })
}

/// Longest accepted duration option; longer values are surely typos and would overflow timers.
const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

fn parse_duration(option: &'static str, s: &str) -> Result<Duration, ConfigError> {
    let s = s.trim();
    // A bare number means seconds.
    let d = match s.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => humantime::parse_duration(s).map_err(|e| err(option, format!("{s:?} is not a duration ({e})")))?,
    };
    if d.is_zero() {
        return Err(err(option, "must be greater than zero"));
    }
    if d > MAX_DURATION {
        return Err(err(option, "must be at most 7 days"));
    }
    Ok(d)
}

fn parse_bool(option: &'static str, s: &str) -> Result<bool, ConfigError> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "on" | "yes" | "1" => Ok(true),
        "false" | "off" | "no" | "0" => Ok(false),
        _ => Err(err(option, format!("{s:?} must be true or false"))),
    }
}

fn parse_peer(s: &str) -> Result<Peer, ConfigError> {
    let (id, url) = s.split_once('=').ok_or_else(|| err("peer", format!("{s:?} is not ID=URL")))?;
    let id = id.trim().parse::<u64>().map_err(|_| err("peer", format!("{s:?}: id must be a positive integer")))?;
    // Eureka users write service URLs ending in /eureka or /eureka/v2; a peer is its root.
    let url = url.trim().trim_end_matches('/');
    let url = url.strip_suffix("/eureka/v2").or_else(|| url.strip_suffix("/eureka")).unwrap_or(url);
    let url = member_url(url).map_err(|e| err("peer", format!("{s:?}: {e}")))?;
    Ok(Peer { id, url })
}

/// Checks a cluster member's URL and returns it without a trailing slash: http or https, a
/// host, no credentials (members prove themselves with the cluster secret or a certificate;
/// credentials in a URL end up in logs and in every node's membership), no query or fragment.
pub fn member_url(url: &str) -> Result<String, String> {
    let u = url.trim().trim_end_matches('/');
    let rest = u
        .strip_prefix("http://")
        .or_else(|| u.strip_prefix("https://"))
        .ok_or_else(|| "URL must start with http:// or https://".to_string())?;
    let authority = rest.split('/').next().unwrap_or("");
    if authority.is_empty() {
        return Err("URL has no host".into());
    }
    if authority.contains('@') {
        return Err("URL must not carry credentials (members authenticate with the cluster secret)".into());
    }
    if rest.contains(['?', '#']) || rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("URL must not have a query, a fragment or white space".into());
    }
    Ok(u.to_string())
}

impl ServeArgs {
    /// Merges flags/environment with the config file and the defaults, and validates.
    pub fn resolve(self) -> Result<Config, ConfigError> {
        let file = match &self.config {
            Some(path) => load_file(path)?,
            None => FileConfig::default(),
        };
        let d = Config::default();
        let listen_s = self.listen.or(file_text(file.listen));
        let listen = match listen_s {
            Some(s) => s.trim().parse().map_err(|_| err("listen", format!("{s:?} is not an IP:PORT address")))?,
            None => d.listen,
        };
        let data_dir = self.data_dir.or(file.data_dir).unwrap_or(d.data_dir);
        if data_dir.as_os_str().is_empty() {
            return Err(err("data-dir", "must not be empty"));
        }
        let replication = match self.replication.or(file_text(file.replication)) {
            Some(s) => match s.trim().to_ascii_lowercase().as_str() {
                "none" => ReplicationMode::None,
                "p2p" => ReplicationMode::P2p,
                "raft" => ReplicationMode::Raft,
                _ => return Err(err("replication", format!("{s:?} must be none, p2p or raft"))),
            },
            None => d.replication,
        };
        let node_id = match self.node_id.or(file_text(file.node_id)) {
            Some(s) => s
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| err("node-id", format!("{s:?} is not a positive integer")))?,
            None => d.node_id,
        };
        let peer_specs = if self.peers.is_empty() { file.peer } else { self.peers };
        let peers = peer_specs.iter().map(|s| parse_peer(s)).collect::<Result<Vec<_>, _>>()?;
        let mut ids: Vec<u64> = peers.iter().map(|p| p.id).collect();
        ids.sort_unstable();
        if ids.windows(2).any(|w| w[0] == w[1]) {
            return Err(err("peer", "each member id must appear once"));
        }
        if !peers.is_empty() && !ids.contains(&node_id) {
            return Err(err(
                "node-id",
                format!("{node_id} is not among the --peer members (list every member, this node included)"),
            ));
        }
        let duration = |option, flag: Option<String>, file: Option<toml::Value>, default| match flag.or(file_text(file))
        {
            Some(s) => parse_duration(option, &s),
            None => Ok(default),
        };
        let eviction_interval =
            duration("eviction-interval", self.eviction_interval, file.eviction_interval, d.eviction_interval)?;
        let renewal_threshold_update_interval = duration(
            "renewal-threshold-update-interval",
            self.renewal_threshold_update_interval,
            file.renewal_threshold_update_interval,
            d.renewal_threshold_update_interval,
        )?;
        let delta_retention =
            duration("delta-retention", self.delta_retention, file.delta_retention, d.delta_retention)?;
        let peer_sync_wait = duration("peer-sync-wait", self.peer_sync_wait, file.peer_sync_wait, d.peer_sync_wait)?;
        let anti_entropy_interval = duration(
            "anti-entropy-interval",
            self.anti_entropy_interval,
            file.anti_entropy_interval,
            d.anti_entropy_interval,
        )?;
        let tombstone_retention =
            duration("tombstone-retention", self.tombstone_retention, file.tombstone_retention, d.tombstone_retention)?;
        let max_lease_duration =
            duration("max-lease-duration", self.max_lease_duration, file.max_lease_duration, d.max_lease_duration)?;
        if max_lease_duration < Duration::from_secs(1)
            || max_lease_duration.as_secs() > u64::from(crate::core::limits::MAX_LEASE_SECS)
        {
            return Err(err(
                "max-lease-duration",
                format!("must be between 1s and {}h", crate::core::limits::MAX_LEASE_SECS / 3600),
            ));
        }
        let mut raft = RaftTuning {
            heartbeat: duration("raft-heartbeat", self.raft_heartbeat, file.raft_heartbeat, d.raft.heartbeat)?,
            election_timeout: duration(
                "raft-election-timeout",
                self.raft_election_timeout,
                file.raft_election_timeout,
                d.raft.election_timeout,
            )?,
            snapshot_timeout: duration(
                "raft-snapshot-timeout",
                self.raft_snapshot_timeout,
                file.raft_snapshot_timeout,
                d.raft.snapshot_timeout,
            )?,
            snapshot_every: match self.raft_snapshot_every.or(file_text(file.raft_snapshot_every)) {
                Some(s) => s.trim().parse::<u64>().ok().filter(|n| (10..=10_000_000).contains(n)).ok_or_else(|| {
                    err("raft-snapshot-every", format!("{s:?} must be a number of entries from 10 to 10000000"))
                })?,
                None => d.raft.snapshot_every,
            },
            snapshot_log_bytes: d.raft.snapshot_log_bytes,
            join: match self.raft_join.or(file_text(file.raft_join)) {
                Some(s) => parse_bool("raft-join", &s)?,
                None => d.raft.join,
            },
        };
        if raft.election_timeout <= raft.heartbeat * 2 {
            return Err(err("raft-election-timeout", "must be more than twice --raft-heartbeat"));
        }
        let renewal_percent_threshold =
            match self.renewal_percent_threshold.or(file_text(file.renewal_percent_threshold)) {
                Some(s) => {
                    s.trim().parse::<f64>().ok().filter(|f| *f > 0.0 && *f <= 1.0).ok_or_else(|| {
                        err("renewal-percent-threshold", format!("{s:?} must be a number > 0 and <= 1"))
                    })?
                }
                None => d.renewal_percent_threshold,
            };
        let self_preservation = match self.self_preservation.or(file_text(file.self_preservation)) {
            Some(s) => parse_bool("self-preservation", &s)?,
            None => d.self_preservation,
        };
        let max_body_size = match self.max_body_size.or(file_text(file.max_body_size)) {
            Some(s) => parse_count("max-body-size", &s, 1024, 64 * 1024 * 1024)? as usize,
            None => d.max_body_size,
        };
        let max_long_polls = match self.max_long_polls.or(file_text(file.max_long_polls)) {
            Some(s) => parse_count("max-long-polls", &s, 1, 1_000_000)? as usize,
            None => d.max_long_polls,
        };
        let max_connections = match self.max_connections.or(file_text(file.max_connections)) {
            Some(s) => parse_count("max-connections", &s, 16, 10_000_000)? as usize,
            None => d.max_connections,
        };
        let delta_max_bytes = match self.delta_max_bytes.or(file_text(file.delta_max_bytes)) {
            Some(s) => parse_count("delta-max-bytes", &s, 1 << 20, 1 << 40)? as usize,
            None => d.delta_max_bytes,
        };
        let max_instances = match self.max_instances.or(file_text(file.max_instances)) {
            Some(s) => parse_count("max-instances", &s, 1, 1 << 32)? as usize,
            None => d.max_instances,
        };
        let header_timeout = duration("header-timeout", self.header_timeout, file.header_timeout, d.header_timeout)?;
        let idle_timeout = duration("idle-timeout", self.idle_timeout, file.idle_timeout, d.idle_timeout)?;
        let body_timeout = duration("body-timeout", self.body_timeout, file.body_timeout, d.body_timeout)?;
        let store_compact_bytes = match self.store_compact_bytes.or(file_text(file.store_compact_bytes)) {
            Some(s) => parse_count("store-compact-bytes", &s, 64 * 1024, 1 << 30)?,
            None => d.store_compact_bytes,
        };
        raft.snapshot_log_bytes = store_compact_bytes;
        let log = self.log.or(file.log).unwrap_or(d.log);
        if tracing_subscriber::EnvFilter::try_new(&log).is_err() {
            return Err(err("log", format!("{log:?} is not a log filter")));
        }
        let log_format = match self.log_format.or(file.log_format).as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => return Err(err("log-format", format!("{other:?} is not a log format (text or json)"))),
        };
        match replication {
            ReplicationMode::None => {}
            ReplicationMode::P2p if peers.len() < 2 => {
                return Err(err("peer", "p2p needs every member (this node included) as --peer ID=URL, at least two"));
            }
            ReplicationMode::P2p => {}
            ReplicationMode::Raft => {}
        }
        let security = Security {
            auth_file: self.auth_file.or(file.auth_file),
            cluster_secret_file: self.cluster_secret_file.or(file.cluster_secret_file),
            allow_anonymous: match self.allow_anonymous.or(file_text(file.allow_anonymous)) {
                Some(s) => parse_bool("allow-anonymous", &s)?,
                None => false,
            },
            tls: tls_files(
                self.tls_cert.or(file.tls_cert),
                self.tls_key.or(file.tls_key),
                self.tls_ca.or(file.tls_ca),
                self.tls_client_ca.or(file.tls_client_ca),
                match self.tls_require_client_cert.or(file_text(file.tls_require_client_cert)) {
                    Some(s) => parse_bool("tls-require-client-cert", &s)?,
                    None => false,
                },
            )?,
        };
        check_security(&security, listen, replication)?;
        Ok(Config {
            listen,
            data_dir,
            replication,
            node_id,
            peers,
            eviction_interval,
            renewal_percent_threshold,
            self_preservation,
            renewal_threshold_update_interval,
            delta_retention,
            peer_sync_wait,
            anti_entropy_interval,
            tombstone_retention,
            max_lease_duration,
            raft,
            max_long_polls,
            max_body_size,
            max_connections,
            delta_max_bytes,
            max_instances,
            header_timeout,
            idle_timeout,
            body_timeout,
            store_compact_bytes,
            log,
            log_format,
            security,
        })
    }
}

fn tls_files(
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    ca: Option<PathBuf>,
    client_ca: Option<PathBuf>,
    require_client_cert: bool,
) -> Result<Option<crate::tls::TlsFiles>, ConfigError> {
    match (cert, key) {
        (Some(cert), Some(key)) => {
            if require_client_cert && client_ca.is_none() {
                return Err(err("tls-require-client-cert", "needs --tls-client-ca to verify the certificates"));
            }
            Ok(Some(crate::tls::TlsFiles { cert, key, ca, client_ca, require_client_cert }))
        }
        (Some(_), None) => Err(err("tls-key", "--tls-cert needs its private key")),
        (None, Some(_)) => Err(err("tls-cert", "--tls-key needs its certificate")),
        (None, None) => {
            if ca.is_some() || client_ca.is_some() || require_client_cert {
                return Err(err("tls-cert", "the TLS options need --tls-cert and --tls-key"));
            }
            Ok(None)
        }
    }
}

/// Secure by default: a node reachable beyond loopback authenticates its clients unless told
/// otherwise, and a node that authenticates its clients authenticates its peers too.
fn check_security(s: &Security, listen: SocketAddr, mode: ReplicationMode) -> Result<(), ConfigError> {
    if s.auth_file.is_none() && !s.allow_anonymous && !listen.ip().is_loopback() {
        return Err(err(
            "auth-file",
            format!(
                "{listen} is reachable beyond this host and anyone could change the registry: give --auth-file \
                 FILE (see README, \"Securing a cluster\"), or --allow-anonymous if that is on purpose"
            ),
        ));
    }
    let peer_proof = s.cluster_secret_file.is_some() || s.tls.as_ref().is_some_and(|t| t.client_ca.is_some());
    // The replication routes rewrite the registry and (raft) the membership: beyond loopback
    // they need a proof even on a node that lets anonymous clients in on purpose.
    let exposed = s.auth_file.is_some() || !listen.ip().is_loopback();
    if mode != ReplicationMode::None && exposed && !peer_proof {
        return Err(err(
            "cluster-secret-file",
            "peers must prove membership on a node with --auth-file or beyond loopback: give \
             --cluster-secret-file FILE (the same on every member) or --tls-client-ca FILE",
        ));
    }
    Ok(())
}

/// A whole number in `lo..=hi`.
fn parse_count(name: &'static str, s: &str, lo: u64, hi: u64) -> Result<u64, ConfigError> {
    s.trim()
        .parse::<u64>()
        .ok()
        .filter(|n| (lo..=hi).contains(n))
        .ok_or_else(|| err(name, format!("{s:?} must be a number from {lo} to {hi}")))
}

fn load_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| err("config", format!("cannot read {}: {e}", path.display())))?;
    toml::from_str(&text).map_err(|e| {
        let msg = e.message().replace('\n', " ");
        err("config", format!("{}: {msg}", path.display()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_eurekas() {
        let c = ServeArgs::default().resolve().unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8761");
        assert_eq!(c.eviction_interval, Duration::from_secs(60));
        assert_eq!(c.renewal_percent_threshold, 0.85);
        assert!(c.self_preservation);
        assert_eq!(c.renewal_threshold_update_interval, Duration::from_secs(900));
        assert_eq!(c.delta_retention, Duration::from_secs(180));
    }

    #[test]
    fn flags_beat_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("synod.toml");
        std::fs::write(&path, "listen = \"127.0.0.1:9000\"\neviction-interval = \"5s\"\nself-preservation = false\n")
            .unwrap();
        let args = ServeArgs { config: Some(path), listen: Some("127.0.0.1:9001".into()), ..Default::default() };
        let c = args.resolve().unwrap();
        assert_eq!(c.listen.port(), 9001);
        assert_eq!(c.eviction_interval, Duration::from_secs(5));
        assert!(!c.self_preservation);
    }

    #[test]
    fn bad_values_name_the_option() {
        let bad = |args: ServeArgs| args.resolve().unwrap_err().to_string();
        let e = bad(ServeArgs { renewal_percent_threshold: Some("1.5".into()), ..Default::default() });
        assert!(e.contains("--renewal-percent-threshold"), "{e}");
        let e = bad(ServeArgs { eviction_interval: Some("soon".into()), ..Default::default() });
        assert!(e.contains("--eviction-interval"), "{e}");
        let e = bad(ServeArgs { peers: vec!["x".into()], ..Default::default() });
        assert!(e.contains("--peer"), "{e}");
        let e = bad(ServeArgs {
            node_id: Some("3".into()),
            peers: vec!["1=http://127.0.0.1:1".into(), "2=http://127.0.0.1:2".into()],
            ..Default::default()
        });
        assert!(e.contains("--node-id"), "{e}");
        let e = bad(ServeArgs { replication: Some("bogus".into()), ..Default::default() });
        assert!(e.contains("--replication"), "{e}");
        let e = bad(ServeArgs { eviction_interval: Some("18446744073709551615".into()), ..Default::default() });
        assert!(e.contains("--eviction-interval"), "{e}");
        let e = bad(ServeArgs { listen: Some("nowhere".into()), ..Default::default() });
        assert!(e.contains("--listen"), "{e}");
        assert!(!e.contains('\n'));
    }

    #[test]
    fn the_deploy_example_is_a_secured_cluster_member() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/synod.toml");
        let c = ServeArgs { config: Some(path), ..Default::default() }.resolve().unwrap();
        assert_eq!(c.replication, ReplicationMode::Raft);
        assert!(c.security.auth_file.is_some() && c.security.cluster_secret_file.is_some());
        let tls = c.security.tls.unwrap();
        assert!(tls.ca.is_some() && tls.client_ca.is_some());
        assert!(c.peers.iter().all(|p| p.url.starts_with("https://")));
    }

    #[test]
    fn member_urls_carry_no_credentials() {
        for bad in ["ftp://h:1", "http://", "http://u:p@h:1", "https://u@h", "http://h:1/?x=1", "http://h 1"] {
            assert!(member_url(bad).is_err(), "{bad}");
        }
        assert_eq!(member_url("https://h:1/").unwrap(), "https://h:1");
    }

    #[test]
    fn non_loopback_needs_auth_or_consent() {
        let e = ServeArgs { listen: Some("0.0.0.0:8761".into()), ..Default::default() }.resolve().unwrap_err();
        assert!(e.to_string().contains("--auth-file") && e.to_string().contains("--allow-anonymous"), "{e}");
        let ok = ServeArgs {
            listen: Some("0.0.0.0:8761".into()),
            allow_anonymous: Some("true".into()),
            ..Default::default()
        };
        assert!(ok.resolve().is_ok());
        let peers = vec!["1=http://127.0.0.1:1".into(), "2=http://127.0.0.1:2".into()];
        let e = ServeArgs {
            replication: Some("p2p".into()),
            peers,
            auth_file: Some("auth.toml".into()),
            ..Default::default()
        }
        .resolve()
        .unwrap_err();
        assert!(e.to_string().contains("--cluster-secret-file"), "{e}");
        let e = ServeArgs {
            listen: Some("0.0.0.0:8761".into()),
            allow_anonymous: Some("true".into()),
            replication: Some("raft".into()),
            ..Default::default()
        }
        .resolve()
        .unwrap_err();
        assert!(e.to_string().contains("--cluster-secret-file"), "{e}");
        let e = ServeArgs { tls_cert: Some("c.pem".into()), ..Default::default() }.resolve().unwrap_err();
        assert!(e.to_string().contains("--tls-key"), "{e}");
    }

    #[test]
    fn peer_urls_are_roots() {
        for spec in ["2=http://10.0.0.2:8761", "2=http://10.0.0.2:8761/", "2=http://10.0.0.2:8761/eureka/v2/"] {
            assert_eq!(parse_peer(spec).unwrap(), Peer { id: 2, url: "http://10.0.0.2:8761".into() }, "{spec}");
        }
    }

    #[test]
    fn unknown_file_key_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("synod.toml");
        std::fs::write(&path, "lisen = \"x\"\n").unwrap();
        let e = ServeArgs { config: Some(path.clone()), ..Default::default() }.resolve().unwrap_err().to_string();
        assert!(e.contains("--config") && e.contains("lisen"), "{e}");
        std::fs::write(&path, "replication = \"bogus\"\nlisten = 5\n").unwrap();
        let e = ServeArgs { config: Some(path), ..Default::default() }.resolve().unwrap_err().to_string();
        assert!(e.contains("--listen") || e.contains("--replication"), "{e}");
    }
}
