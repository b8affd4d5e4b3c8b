//! Pieces the cluster benchmarks share: server processes, load-shape helpers, request
//! encoding and percentile arithmetic.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use super::proc_stat;

/// A server child process, killed on drop.
pub struct Proc {
    pub child: Option<Child>,
    pub addr: String,
    /// `http` or `https`.
    pub scheme: &'static str,
    pub dir: tempfile::TempDir,
    pub args: Vec<String>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Proc {
    pub fn base(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    /// user+system CPU seconds of the process so far.
    pub fn cpu_secs(&self) -> f64 {
        let Some(c) = &self.child else { return 0.0 };
        proc_stat::cpu_seconds(&c.id().to_string()).unwrap_or(0.0)
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts `program args` (again), draining its stdout.
    pub fn spawn(&mut self, program: &str) {
        let mut child = Command::new(program)
            .args(&self.args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {program}: {e}"));
        let out = child.stdout.take().expect("stdout");
        std::thread::spawn(move || for _ in BufReader::new(out).lines() {});
        self.child = Some(child);
    }
}

pub fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").to_string()
}

pub fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

pub fn dir_bytes(p: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else { return 0 };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Files of at least 1 MiB under `p`, with their sizes, largest first.
pub fn big_files(p: &Path) -> Vec<(String, u64)> {
    pub fn walk(root: &Path, p: &Path, out: &mut Vec<(String, u64)>) {
        let Ok(rd) = std::fs::read_dir(p) else { return };
        for e in rd.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => walk(root, &e.path(), out),
                Ok(m) if m.len() >= 1 << 20 => {
                    let name = e.path().strip_prefix(root).map(|r| r.display().to_string()).unwrap_or_default();
                    out.push((name, m.len()));
                }
                _ => {}
            }
        }
    }
    let mut out = Vec::new();
    walk(p, p, &mut out);
    out.sort_by_key(|f| std::cmp::Reverse(f.1));
    out
}

/// The synod binary the nodes run.
pub fn synod_bin() -> String {
    std::env::var("SYNOD_BENCH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_synod").to_string())
}

pub fn body(app: &str, n: u64) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
    let host = host(n);
    serde_json::json!({"instance": {
        "instanceId": format!("{host}:{app}:8080"), "hostName": host, "app": app.to_uppercase(), "ipAddr": host,
        "status": "UP", "overriddenstatus": "UNKNOWN", "port": {"$": 8080, "@enabled": "true"},
        "securePort": {"$": 443, "@enabled": "false"}, "countryId": 1,
        "dataCenterInfo": {"@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo", "name": "MyOwn"},
        "leaseInfo": {"renewalIntervalInSecs": 30, "durationInSecs": 90},
        "metadata": {"management.port": "8080", "zone": "zone-a"},
        "homePageUrl": format!("http://{host}:8080/"), "statusPageUrl": format!("http://{host}:8080/info"),
        "healthCheckUrl": format!("http://{host}:8080/health"), "vipAddress": app, "secureVipAddress": app,
        "isCoordinatingDiscoveryServer": "false", "lastUpdatedTimestamp": now.to_string(),
        "lastDirtyTimestamp": now.to_string()}})
    .to_string()
}

pub fn host(n: u64) -> String {
    format!("10.{}.{}.{}", (n >> 16) & 255, (n >> 8) & 255, n & 255)
}

pub fn id(app: &str, n: u64) -> String {
    format!("{}:{app}:8080", host(n))
}

pub fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    pct(&v, 0.5)
}

/// An encoded HTTP/1.1 request.
pub fn request(method: &str, addr: &SocketAddr, path: &str, json: Option<&str>) -> Vec<u8> {
    request_as("", method, addr, path, json)
}

/// An encoded HTTP/1.1 request carrying the header line `auth` (may be empty).
pub fn request_as(auth: &str, method: &str, addr: &SocketAddr, path: &str, json: Option<&str>) -> Vec<u8> {
    let mut r = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}");
    match json {
        Some(b) => r.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}", b.len())),
        None => r.push_str("Content-Length: 0\r\n\r\n"),
    }
    r.into_bytes()
}
