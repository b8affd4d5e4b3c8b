//! ZooKeeper as a baseline measured in the same run as synod: an ensemble (standalone or three
//! nodes) started from Debian's `zookeeper` package on loopback, and a lean client that speaks
//! just the parts of ZooKeeper's wire protocol the load needs (session handshake, create,
//! ping).
//!
//! Why not a general ZooKeeper client crate: the one maintained for Rust drives its sockets
//! through its own reactor thread, so its per-request cost on the load generator's side would
//! differ from the lean HTTP client's that drives synod and etcd; on a 2-core machine shared by
//! servers and load generator, that would tilt the comparison. Here both sides write
//! pre-encoded requests and read framed answers on a tokio `TcpStream`, nothing more.
//!
//! The ensemble uses ZooKeeper's defaults where they matter for durability (`forceSync=yes`:
//! every transaction log write is forced to disk before the answer, in group commits), as a
//! ZooKeeper operator would run it.
#![allow(dead_code)]

use std::io::{Error, ErrorKind};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Where Debian's `zookeeper` package puts the server jar (its manifest names the
/// dependencies); `SYNOD_BENCH_ZOOKEEPER_JAR` overrides it.
const DEFAULT_JAR: &str = "/usr/share/java/zookeeper.jar";

/// ZooKeeper operation codes and flags used here (from ZooKeeper's `ZooDefs`).
const OP_CREATE: i32 = 1;
const OP_EXISTS: i32 = 3;
const OP_PING: i32 = 11;
const OP_CLOSE_SESSION: i32 = -11;
const XID_PING: i32 = -2;
const FLAG_EPHEMERAL: i32 = 1;
const PERMS_ALL: i32 = 31;
/// ZooKeeper's error code for "node exists".
pub const ERR_NODE_EXISTS: i32 = -110;

/// Warm-up before ZooKeeper's (first) measured run, for the JVM's just-in-time compiler.
pub const JIT_WARMUP: Duration = Duration::from_secs(5);

/// Largest answer accepted; answers here are a header and a path.
const MAX_FRAME: usize = 1 << 20;

/// One ZooKeeper session on one connection, used in a closed loop (one request outstanding).
pub struct Session {
    stream: TcpStream,
    xid: i32,
    buf: Vec<u8>,
}

impl Session {
    /// Connects and establishes a new session with the given timeout.
    pub async fn connect(addr: SocketAddr, session_timeout: Duration) -> std::io::Result<Session> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let mut s = Session { stream, xid: 0, buf: Vec::with_capacity(4096) };
        let mut req = Vec::with_capacity(64);
        put_i32(&mut req, 0); // protocol version
        put_i64(&mut req, 0); // last zxid seen
        put_i32(&mut req, session_timeout.as_millis().min(i32::MAX as u128) as i32);
        put_i64(&mut req, 0); // session id: a new session
        put_bytes(&mut req, &[0u8; 16]); // password
        req.push(0); // not read-only
        s.send_frame(&req).await?;
        let answer = s.read_frame().await?;
        // protocol version, negotiated timeout, session id, password.
        if answer.len() < 4 + 4 + 8 {
            return Err(Error::new(ErrorKind::InvalidData, "short connect answer"));
        }
        let negotiated = i32::from_be_bytes([answer[4], answer[5], answer[6], answer[7]]);
        if negotiated <= 0 {
            // A server outside the quorum answers a zero timeout and closes the connection.
            return Err(Error::new(ErrorKind::ConnectionRefused, "session refused (server not serving)"));
        }
        Ok(s)
    }

    /// Creates `path` with `data` (world-readable and writable), ephemeral or persistent.
    /// Returns ZooKeeper's error code: 0 on success.
    pub async fn create(&mut self, path: &str, data: &[u8], ephemeral: bool) -> std::io::Result<i32> {
        let mut req = Vec::with_capacity(64 + path.len() + data.len());
        self.header(&mut req, OP_CREATE);
        put_bytes(&mut req, path.as_bytes());
        put_bytes(&mut req, data);
        put_i32(&mut req, 1); // one ACL entry: world:anyone, all permissions
        put_i32(&mut req, PERMS_ALL);
        put_bytes(&mut req, b"world");
        put_bytes(&mut req, b"anyone");
        put_i32(&mut req, if ephemeral { FLAG_EPHEMERAL } else { 0 });
        self.call(&req).await
    }

    /// Whether `path` exists on the connected server (a local read, no watch): 0 if it does,
    /// ZooKeeper's "no node" code (-101) if not.
    pub async fn exists(&mut self, path: &str) -> std::io::Result<i32> {
        let mut req = Vec::with_capacity(16 + path.len());
        self.header(&mut req, OP_EXISTS);
        put_bytes(&mut req, path.as_bytes());
        req.push(0); // no watch
        self.call(&req).await
    }

    /// A session ping: what a ZooKeeper client sends to keep its session (and its ephemeral
    /// nodes) alive, i.e. ZooKeeper's counterpart of a lease renewal.
    pub async fn ping(&mut self) -> std::io::Result<i32> {
        let mut req = Vec::with_capacity(8);
        put_i32(&mut req, XID_PING);
        put_i32(&mut req, OP_PING);
        self.call(&req).await
    }

    /// Ends the session, which deletes its ephemeral nodes.
    pub async fn close(mut self) -> std::io::Result<i32> {
        let mut req = Vec::with_capacity(8);
        self.header(&mut req, OP_CLOSE_SESSION);
        self.call(&req).await
    }

    fn header(&mut self, req: &mut Vec<u8>, op: i32) {
        self.xid = self.xid.wrapping_add(1).max(1);
        put_i32(req, self.xid);
        put_i32(req, op);
    }

    /// Sends a request and reads its answer's header: xid, zxid, error code.
    async fn call(&mut self, req: &[u8]) -> std::io::Result<i32> {
        self.send_frame(req).await?;
        loop {
            let answer = self.read_frame().await?;
            if answer.len() < 16 {
                return Err(Error::new(ErrorKind::InvalidData, "short answer"));
            }
            let xid = i32::from_be_bytes([answer[0], answer[1], answer[2], answer[3]]);
            // xid -1 is a watch notification; none are set, but skip one rather than misread it.
            if xid == -1 {
                continue;
            }
            return Ok(i32::from_be_bytes([answer[12], answer[13], answer[14], answer[15]]));
        }
    }

    async fn send_frame(&mut self, payload: &[u8]) -> std::io::Result<()> {
        let mut frame = Vec::with_capacity(4 + payload.len());
        put_i32(&mut frame, payload.len() as i32);
        frame.extend_from_slice(payload);
        self.stream.write_all(&frame).await
    }

    async fn read_frame(&mut self) -> std::io::Result<&[u8]> {
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len).await?;
        let len = i32::from_be_bytes(len);
        if len < 0 || len as usize > MAX_FRAME {
            return Err(Error::new(ErrorKind::InvalidData, format!("frame length {len}")));
        }
        self.buf.resize(len as usize, 0);
        self.stream.read_exact(&mut self.buf).await?;
        Ok(&self.buf)
    }
}

fn put_i32(out: &mut Vec<u8>, v: i32) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_i64(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// A length-prefixed buffer or string.
fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_i32(out, b.len() as i32);
    out.extend_from_slice(b);
}

/// A running ZooKeeper ensemble; every server is killed when it is dropped.
pub struct Ensemble {
    servers: Vec<Child>,
    /// Client addresses, one per server.
    pub addrs: Vec<SocketAddr>,
    _dirs: Vec<tempfile::TempDir>,
}

impl Drop for Ensemble {
    fn drop(&mut self) {
        for s in &mut self.servers {
            let _ = s.kill();
            let _ = s.wait();
        }
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// Why the ZooKeeper baseline cannot run here, or `None` when it can.
pub fn unavailable() -> Option<String> {
    let jar = jar();
    if !jar.exists() {
        return Some(format!("{} not found (Debian package zookeeper)", jar.display()));
    }
    match Command::new("java").arg("-version").stdout(Stdio::null()).stderr(Stdio::null()).status() {
        Ok(s) if s.success() => None,
        _ => Some("java not found".into()),
    }
}

fn jar() -> PathBuf {
    std::env::var_os("SYNOD_BENCH_ZOOKEEPER_JAR").map_or_else(|| PathBuf::from(DEFAULT_JAR), PathBuf::from)
}

impl Ensemble {
    /// Starts `n` servers (1: standalone) on loopback with data under `tmp`, and waits until
    /// every server accepts sessions.
    pub async fn start(n: usize, tmp: &Path) -> Ensemble {
        let client: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let quorum: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let mut dirs = Vec::new();
        let mut servers = Vec::new();
        for (i, port) in client.iter().enumerate() {
            let dir = tempfile::Builder::new().prefix("zk-bench-").tempdir_in(tmp).expect("zk tempdir");
            let data = dir.path().join("data");
            std::fs::create_dir_all(&data).expect("zk data dir");
            let mut cfg = format!(
                "tickTime=2000\ninitLimit=10\nsyncLimit=5\ndataDir={}\nclientPort={}\n\
                 clientPortAddress=127.0.0.1\nadmin.enableServer=false\nmaxClientCnxns=0\n",
                data.display(),
                port
            );
            if n > 1 {
                std::fs::write(data.join("myid"), format!("{}\n", i + 1)).expect("zk myid");
                for (j, (q, e)) in quorum.iter().enumerate() {
                    cfg.push_str(&format!("server.{}=127.0.0.1:{q}:{e}\n", j + 1));
                }
            }
            let cfg_path = dir.path().join("zoo.cfg");
            std::fs::write(&cfg_path, cfg).expect("zoo.cfg");
            let child = Command::new("java")
                // The heap zkServer.sh gives a server by default.
                .args(["-Xmx1g", "-cp"])
                .arg(jar())
                .arg("org.apache.zookeeper.server.quorum.QuorumPeerMain")
                .arg(&cfg_path)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start java");
            servers.push(child);
            dirs.push(dir);
        }
        let addrs: Vec<SocketAddr> = client.iter().map(|p| SocketAddr::from(([127, 0, 0, 1], *p))).collect();
        let ensemble = Ensemble { servers, addrs, _dirs: dirs };
        let deadline = Instant::now() + Duration::from_secs(90);
        for a in &ensemble.addrs {
            loop {
                if let Ok(Ok(mut s)) =
                    tokio::time::timeout(Duration::from_secs(2), Session::connect(*a, Duration::from_secs(30))).await
                {
                    if s.ping().await.is_ok() {
                        break;
                    }
                }
                assert!(Instant::now() < deadline, "ZooKeeper server {a} did not start serving");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        ensemble
    }

    /// user+system CPU seconds of all servers so far.
    pub fn cpu_secs(&self) -> f64 {
        self.servers.iter().filter_map(|c| crate::proc_stat::cpu_seconds(&c.id().to_string())).sum()
    }

    /// Process ids of the servers.
    pub fn pids(&self) -> Vec<u32> {
        self.servers.iter().map(Child::id).collect()
    }

    /// Creates a persistent parent node (idempotent).
    pub async fn create_parent(&self, path: &str) {
        let mut s = Session::connect(self.addrs[0], Duration::from_secs(30)).await.expect("zk session");
        let code = s.create(path, b"", false).await.expect("zk create parent");
        assert!(code == 0 || code == ERR_NODE_EXISTS, "create {path}: ZooKeeper error {code}");
    }
}

/// The request a load loop repeats.
#[derive(Clone, Copy, Debug)]
pub enum Op {
    /// Create a distinct ephemeral node holding the given data: ZooKeeper's registration.
    CreateEphemeral,
    /// A session ping: ZooKeeper's renewal.
    Ping,
}

/// What one session's loop saw.
#[derive(Default)]
pub struct LoopStats {
    /// Latencies (µs) of successful requests that started and finished inside the measured window.
    pub latencies_us: Vec<u32>,
    pub errors: u64,
    pub first_error: Option<String>,
}

impl LoopStats {
    fn error(&mut self, msg: impl FnOnce() -> String) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(msg());
        }
    }
}

/// A closed loop on one new session (one request outstanding at a time) until `until`;
/// creates are named `{prefix}-{seq}`. The session is closed at the end, so its ephemeral
/// nodes do not pile up across runs.
pub async fn closed_loop(
    addr: SocketAddr,
    op: Op,
    prefix: String,
    data: std::sync::Arc<[u8]>,
    from: Instant,
    until: Instant,
    capacity: usize,
) -> LoopStats {
    let mut stats = LoopStats { latencies_us: Vec::with_capacity(capacity), ..LoopStats::default() };
    let mut session = None;
    let mut seq = 0u64;
    while Instant::now() < until {
        let s = match &mut session {
            Some(s) => s,
            None => match Session::connect(addr, Duration::from_secs(30)).await {
                Ok(s) => session.insert(s),
                Err(e) => {
                    stats.error(|| format!("connect: {e}"));
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let t0 = Instant::now();
        let result = match op {
            Op::CreateEphemeral => {
                seq += 1;
                s.create(&format!("{prefix}-{seq}"), &data, true).await
            }
            Op::Ping => s.ping().await,
        };
        let t1 = Instant::now();
        match result {
            Ok(0) if t0 >= from && t1 <= until => {
                stats.latencies_us.push((t1 - t0).as_micros().min(u32::MAX as u128) as u32)
            }
            Ok(0) => {}
            Ok(code) => stats.error(|| format!("{op:?}: ZooKeeper error {code}")),
            Err(e) => {
                stats.error(|| format!("{op:?}: {e}"));
                session = None;
            }
        }
    }
    if let Some(s) = session {
        let _ = s.close().await;
    }
    stats
}
