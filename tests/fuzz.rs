//! Mutation fuzzing of every decoder of network input: Eureka JSON and XML registrations,
//! whole Eureka requests (method, path, query, headers, body) through the node's HTTP
//! service, the p2p batch, every raft RPC body and reply, and the forward and renewal relays.
//!
//! Each target starts from its corpus, `tests/fuzz/corpus/<target>/` (real messages and
//! inputs that once broke something), mutates it with a seeded generator and runs the
//! decoder plus the checks that follow it. A panic fails the test, prints the input and
//! writes it to `target/fuzz-failures/`; copy it into the corpus once fixed, so it stays a
//! regression input.
//!
//! The README test command runs a bounded number of inputs per target with a fixed seed.
//! Longer runs, on demand:
//!
//! ```sh
//! SYNOD_FUZZ_ITERS=200000 SYNOD_FUZZ_SEED=$RANDOM cargo test --release --test fuzz -- --nocapture
//! ```
//! `SYNOD_FUZZ_TARGET=name` runs one target; `SYNOD_FUZZ_WRITE_SEEDS=1` (re)writes the
//! generated seed messages into the corpus.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::{CommittedLeaderId, EntryPayload, LogId, SnapshotMeta, StoredMembership, Vote};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use synod::codec::{decode, json, tree, xml};
use synod::core::command::{Command, Outcome};
use synod::core::model::{InstanceKey, Status};
use synod::replication::raft::admission::{self, SnapshotIntake};
use synod::replication::raft::proposer::ForwardReply;
use synod::replication::raft::rpc::{check_forwarded, check_relayed};
use synod::replication::raft::types::{self as rt, Entry, NodeId, Proposal, TypeConfig};

type RaftResult<T> = Result<T, openraft::error::RaftError<NodeId>>;

/// Inputs per target unless `SYNOD_FUZZ_ITERS` says otherwise.
const DEFAULT_ITERS: usize = 5000;
/// The decoders' clock (the seeds' timestamps are from around then).
const NOW: u64 = 1_700_000_000_000;
/// Longest mutated input.
const MAX_LEN: usize = 64 * 1024;

fn iterations() -> usize {
    std::env::var("SYNOD_FUZZ_ITERS").ok().and_then(|v| v.parse().ok()).unwrap_or(DEFAULT_ITERS)
}

fn seed() -> u64 {
    std::env::var("SYNOD_FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0x5e_ed)
}

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz/corpus").join(target)
}

/// The corpus of `target`: the files on disk and the generated seeds.
fn corpus(target: &str, generated: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    let dir = corpus_dir(target);
    if std::env::var("SYNOD_FUZZ_WRITE_SEEDS").is_ok() {
        std::fs::create_dir_all(&dir).expect("corpus dir");
        for (i, g) in generated.iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i:02}")), g).expect("write seed");
        }
    }
    let mut out = generated;
    if let Ok(entries) = std::fs::read_dir(&dir) {
        let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        files.sort();
        for f in files {
            out.push(std::fs::read(&f).expect("corpus file"));
        }
    }
    out.sort();
    out.dedup();
    assert!(!out.is_empty(), "no corpus for {target}");
    out
}

/// Byte values that tend to sit on boundaries.
const INTERESTING: [u8; 10] = [0, 1, 0x7f, 0x80, 0xfb, 0xfc, 0xfd, 0xfe, 0xff, b'"'];

/// One mutation of `input`, possibly splicing in part of `other`.
fn mutate(rng: &mut StdRng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    // Mostly one change, so that structured text still parses past the point changed.
    let changes = if rng.gen_bool(0.6) { 1 } else { rng.gen_range(2..=4) };
    for _ in 0..changes {
        let len = v.len();
        match rng.gen_range(0..9) {
            0 if len > 0 => {
                let i = rng.gen_range(0..len);
                v[i] ^= 1 << rng.gen_range(0..8);
            }
            1 if len > 0 => {
                let i = rng.gen_range(0..len);
                v[i] = INTERESTING[rng.gen_range(0..INTERESTING.len())];
            }
            2 => {
                let i = rng.gen_range(0..=len);
                let n = rng.gen_range(1..=16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
                v.splice(i..i, bytes);
            }
            3 if len > 0 => {
                let i = rng.gen_range(0..len);
                let end = (i + rng.gen_range(1..=32)).min(len);
                v.drain(i..end);
            }
            4 if len > 0 => {
                // Duplicate a range (repeated members, nested structures).
                let i = rng.gen_range(0..len);
                let end = (i + rng.gen_range(1..=64)).min(len);
                let chunk = v[i..end].to_vec();
                v.splice(end..end, chunk);
            }
            5 if !other.is_empty() => {
                let i = rng.gen_range(0..=len);
                let j = rng.gen_range(0..other.len());
                let end = (j + rng.gen_range(1..=128)).min(other.len());
                v.splice(i..i, other[j..end].iter().copied());
            }
            6 => {
                // A bincode length or term claiming a huge value.
                let i = rng.gen_range(0..=len);
                let mut big = vec![0xfd];
                big.extend_from_slice(&rng.gen::<u64>().to_le_bytes());
                v.splice(i..i, big);
            }
            7 if len > 0 => {
                let i = rng.gen_range(0..len);
                v.truncate(i);
            }
            _ => {
                // Text-level: a JSON/XML token in the middle.
                const TOKENS: [&[u8]; 12] =
                    [b"{", b"}", b"[", b"]", b"\"", b":", b",", b"<a>", b"</a>", b"&amp;", b"%", b"\\u0000"];
                let i = rng.gen_range(0..=len);
                v.splice(i..i, TOKENS[rng.gen_range(0..TOKENS.len())].iter().copied());
            }
        }
    }
    v.truncate(MAX_LEN);
    v
}

/// Runs `target` on every corpus input and `iterations()` mutations of them; a panic fails
/// with the input. The target answers whether the input got past decoding (reported, so a
/// run whose mutations never decode is noticed).
fn fuzz(name: &str, generated: Vec<Vec<u8>>, mut target: impl FnMut(&[u8]) -> bool) {
    if std::env::var("SYNOD_FUZZ_TARGET").is_ok_and(|t| t != name) {
        return;
    }
    let corpus = corpus(name, generated);
    let mut rng = StdRng::seed_from_u64(seed() ^ name.bytes().fold(0u64, |h, b| h.wrapping_mul(31) + b as u64));
    let mut decoded = 0usize;
    let mut run = |input: &[u8]| {
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| target(input)));
        if caught.as_ref().is_ok_and(|d| *d) {
            decoded += 1;
        }
        if caught.is_err() {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-failures");
            let _ = std::fs::create_dir_all(&dir);
            let file = dir.join(format!("{name}-{:016x}", fxhash(input)));
            let _ = std::fs::write(&file, input);
            panic!(
                "fuzz target {name} panicked on an input of {} bytes (saved to {}): {:02x?}",
                input.len(),
                file.display(),
                &input[..input.len().min(256)]
            );
        }
    };
    for input in &corpus {
        run(input);
    }
    for _ in 0..iterations() {
        let a = &corpus[rng.gen_range(0..corpus.len())];
        let b = &corpus[rng.gen_range(0..corpus.len())];
        let input = mutate(&mut rng, a, b);
        run(&input);
    }
    let total = corpus.len() + iterations();
    eprintln!("fuzz {name}: {total} inputs, {decoded} decoded");
}

fn fxhash(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf29ce484222325u64, |h, x| (h ^ *x as u64).wrapping_mul(0x100000001b3))
}

// ---- seeds ----------------------------------------------------------------------------

fn registration_json() -> Vec<u8> {
    serde_json::to_vec(&common::py_instance("orders", "10.0.0.5", 8080)).expect("json")
}

fn registration_xml() -> Vec<u8> {
    br#"<instance><instanceId>h:a:1</instanceId><hostName>h</hostName><app>A</app><ipAddr>1.2.3.4</ipAddr>
    <status>UP</status><overriddenstatus>UNKNOWN</overriddenstatus><port enabled="true">1</port>
    <securePort enabled="false">2</securePort><countryId>1</countryId>
    <dataCenterInfo class="com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo"><name>MyOwn</name></dataCenterInfo>
    <leaseInfo><renewalIntervalInSecs>30</renewalIntervalInSecs><durationInSecs>90</durationInSecs></leaseInfo>
    <metadata><k__x>v</k__x><zone>a</zone></metadata><vipAddress>a</vipAddress><lastDirtyTimestamp>1</lastDirtyTimestamp></instance>"#
        .to_vec()
}

fn instance() -> synod::core::model::InstanceInfo {
    let tree = json::parse(&registration_json()).expect("seed parses");
    decode::registration(&tree, 1_700_000_000_000).expect("seed decodes")
}

fn commands() -> Vec<Command> {
    let key = InstanceKey::new("ORDERS", "10.0.0.5:orders:8080");
    vec![
        Command::Register { instance: Box::new(instance()), now: 1_700_000_000_000, from_peer: false },
        Command::Cancel { key: key.clone(), now: 1 },
        Command::SetStatusOverride { key: key.clone(), status: Status::OutOfService, last_dirty: Some(5), now: 2 },
        Command::DeleteStatusOverride { key: key.clone(), status: Status::Unknown, last_dirty: None, now: 3 },
        Command::UpdateMetadata { key, entries: [("k".to_string(), "v".to_string())].into(), now: 4 },
    ]
}

fn log_id(term: u64, index: u64) -> LogId<NodeId> {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn enc<T: serde::Serialize>(v: &T) -> Vec<u8> {
    rt::encode(v).expect("encode")
}

fn append_seeds() -> Vec<Vec<u8>> {
    let entries = vec![
        Entry { log_id: log_id(3, 11), payload: EntryPayload::Blank },
        Entry { log_id: log_id(3, 12), payload: EntryPayload::Normal(Proposal::from(commands())) },
    ];
    let full = AppendEntriesRequest::<TypeConfig> {
        vote: Vote::new_committed(3, 1),
        prev_log_id: Some(log_id(2, 10)),
        entries,
        leader_commit: Some(log_id(2, 9)),
    };
    let heartbeat = AppendEntriesRequest::<TypeConfig> {
        vote: Vote::new_committed(3, 1),
        prev_log_id: Some(log_id(3, 12)),
        entries: vec![],
        leader_commit: Some(log_id(3, 12)),
    };
    vec![enc(&full), enc(&heartbeat), b"\xfd\xff\xff\xff\xff\xff\xff\xff\xff\x63\x01\x00\x00\x00".to_vec()]
}

fn snapshot_seeds() -> Vec<Vec<u8>> {
    let chunk = |offset: u64, data: Vec<u8>, done: bool| InstallSnapshotRequest::<TypeConfig> {
        vote: Vote::new_committed(3, 1),
        meta: SnapshotMeta {
            last_log_id: Some(log_id(3, 100)),
            last_membership: StoredMembership::default(),
            snapshot_id: "3-1-100-7".into(),
        },
        offset,
        data,
        done,
    };
    vec![enc(&chunk(0, vec![1, 2, 3, 4], false)), enc(&chunk(4, vec![5, 6], true))]
}

// ---- targets --------------------------------------------------------------------------

#[test]
fn eureka_json_registration() {
    fuzz("eureka_json", vec![registration_json(), b"{\"instance\":{}}".to_vec()], |b| {
        if let Ok(v) = json::parse(b) {
            let _ = decode::registration(&v, NOW);
        }
        let Ok(t) = tree::parse_json(b) else { return false };
        let Ok(i) = decode::registration(&t, NOW) else { return false };
        assert_eq!(synod::core::limits::check_instance(&i), Ok(()));
        true
    });
}

#[test]
fn eureka_xml_registration() {
    fuzz("eureka_xml", vec![registration_xml()], |b| {
        let Ok(v) = xml::parse(b) else { return false };
        let Ok(i) = decode::registration(&v, NOW) else { return false };
        assert_eq!(synod::core::limits::check_instance(&i), Ok(()));
        true
    });
}

#[test]
fn peer_batch() {
    let batch = serde_json::json!({"replicationList": [
        {"appName": "ORDERS", "id": "10.0.0.5:orders:8080", "lastDirtyTimestamp": 1717999998000u64, "status": "UP",
         "instanceInfo": common::py_instance("orders", "10.0.0.5", 8080)["instance"], "action": "Register"},
        {"appName": "ORDERS", "id": "i-2", "lastDirtyTimestamp": "1718000299000", "status": "UP", "action": "Heartbeat"},
        {"appName": "BILLING", "id": "i-0abc123", "action": "Cancel"},
        {"appName": "ORDERS", "id": "i-2", "status": "OUT_OF_SERVICE", "action": "StatusUpdate"},
        {"appName": "orders", "id": "i-2", "status": "UNKNOWN", "action": "DeleteStatusOverride"},
        {"appName": "ORDERS", "id": "i-3", "synod": {"version": 1718000299001u64, "renewed": 1718000299000u64,
         "statusOverride": "UP", "metadataOverride": {"k": "v"}},
         "instanceInfo": common::py_instance("orders", "10.0.0.6", 8080)["instance"], "action": "StatusUpdate"},
        {"appName": "ORDERS", "id": "i-4", "synod": {"version": 1718000299002u64}, "action": "Cancel"}
    ]});
    let results = br#"{"responseList":[{"statusCode":200},{"statusCode":404},{"statusCode":409,"responseEntity":{}},{"statusCode":409,"synod":{"appName":"A","id":"i","synod":{"version":5},"action":"Cancel"}}]}"#;
    fuzz("peer_batch", vec![serde_json::to_vec(&batch).expect("json"), results.to_vec()], |b| {
        use synod::replication::p2p::protocol;
        let results = protocol::decode_results(b, NOW).is_ok();
        let Ok(items) = protocol::decode_batch(b, NOW) else { return results };
        assert!(items.len() <= protocol::MAX_BATCH_ITEMS);
        items.iter().any(Result::is_ok)
    });
}

#[test]
fn raft_append() {
    fuzz("raft_append", append_seeds(), |b| {
        let Ok(req) = rt::decode::<AppendEntriesRequest<TypeConfig>>(b) else { return false };
        if admission::check_append(&req).is_ok() {
            assert!(req.vote.leader_id.term <= admission::MAX_TERM);
        }
        true
    });
}

#[test]
fn raft_vote() {
    let seeds = vec![
        enc(&VoteRequest::<NodeId> { vote: Vote::new(4, 2), last_log_id: Some(log_id(3, 12)) }),
        enc(&VoteRequest::<NodeId> { vote: Vote::new(1, 1), last_log_id: None }),
    ];
    fuzz("raft_vote", seeds, |b| {
        let Ok(req) = rt::decode::<VoteRequest<NodeId>>(b) else { return false };
        let _ = admission::check_vote_request(&req);
        true
    });
}

#[test]
fn raft_snapshot() {
    let intake = SnapshotIntake::default();
    fuzz("raft_snapshot", snapshot_seeds(), |b| {
        let Ok(req) = rt::decode::<InstallSnapshotRequest<TypeConfig>>(b) else { return false };
        if admission::check_snapshot(&req).is_ok() {
            let _ = intake.admit(&req.meta.snapshot_id, req.offset, req.data.len());
        }
        true
    });
}

#[test]
fn raft_forward_and_renew_relays() {
    let renewals = vec![(InstanceKey::new("ORDERS", "i-1"), 250u64), (InstanceKey::new("BILLING", "i-2"), 0)];
    let seeds =
        vec![enc(&Proposal::from(commands())), enc(&renewals), b"\x01\xfd\x00\x00\x00\x00\x00\x00\x00\x40".to_vec()];
    fuzz("raft_relays", seeds, |b| {
        let proposal = rt::decode::<Proposal>(b).map(|p| check_forwarded(&p.commands)).is_ok();
        let renewals = rt::decode::<Vec<(InstanceKey, u64)>>(b).map(|items| check_relayed(&items)).is_ok();
        proposal || renewals
    });
}

#[test]
fn raft_replies() {
    let seeds = vec![
        enc(&ForwardReply { index: 12, outcomes: vec![Outcome::Applied, Outcome::NotFound, Outcome::Evicted(3)] }),
        enc(&RaftResult::<AppendEntriesResponse<NodeId>>::Ok(AppendEntriesResponse::Success)),
        enc(&RaftResult::<AppendEntriesResponse<NodeId>>::Ok(AppendEntriesResponse::HigherVote(Vote::new(5, 2)))),
        enc(&RaftResult::<VoteResponse<NodeId>>::Ok(VoteResponse {
            vote: Vote::new(4, 2),
            vote_granted: true,
            last_log_id: Some(log_id(3, 12)),
        })),
        enc(&RaftResult::<InstallSnapshotResponse<NodeId>>::Ok(InstallSnapshotResponse { vote: Vote::new(4, 2) })),
        enc(&12u64),
    ];
    fuzz("raft_replies", seeds, |b| {
        let decoded = [
            rt::decode::<ForwardReply>(b).is_ok(),
            rt::decode::<RaftResult<AppendEntriesResponse<NodeId>>>(b).is_ok(),
            rt::decode::<RaftResult<VoteResponse<NodeId>>>(b).is_ok(),
            rt::decode::<RaftResult<InstallSnapshotResponse<NodeId>>>(b).is_ok(),
            rt::decode::<u64>(b).is_ok(),
        ];
        decoded.contains(&true)
    });
}

/// Whole requests through a standalone node's HTTP service (no sockets): the request line,
/// headers and body of each input are what a client could send. No answer may be a 500.
#[test]
fn eureka_requests() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let node = rt.block_on(async {
        let config = synod::config::Config { data_dir: dir.path().to_path_buf(), ..Default::default() };
        synod::server::Node::open(config, Arc::new(synod::core::clock::SystemClock)).await.expect("node")
    });
    let service = node.http();
    let request = |line: &str, headers: &str, body: &[u8]| {
        let mut r = format!("{line}\n{headers}\n\n").into_bytes();
        r.extend_from_slice(body);
        r
    };
    let json = "content-type: application/json\naccept: application/json";
    let seeds = vec![
        request("POST /eureka/apps/ORDERS", json, &registration_json()),
        request("POST /eureka/v2/apps/A", "content-type: application/xml", &registration_xml()),
        request("PUT /eureka/apps/ORDERS/10.0.0.5:orders:8080?status=UP&lastDirtyTimestamp=1", "", b""),
        request("PUT /eureka/apps/ORDERS/10.0.0.5:orders:8080/status?value=OUT_OF_SERVICE", "", b""),
        request("DELETE /eureka/apps/ORDERS/10.0.0.5:orders:8080/status?value=UP", "", b""),
        request("PUT /eureka/apps/ORDERS/10.0.0.5:orders:8080/metadata?a=b&c=%20d", "", b""),
        request("GET /eureka/apps/delta?waitMs=0&since=3", json, b""),
        request("GET /eureka/apps/ORDERS", "accept: application/xml\naccept-encoding: gzip", b""),
        request("GET /eureka/vips/orders", json, b""),
        request("GET /eureka/instances/10.0.0.5:orders:8080", json, b""),
        request("DELETE /eureka/apps/ORDERS/10.0.0.5:orders:8080", "", b""),
        request("GET /eureka//apps/%4Frders/", "", b""),
    ];
    fuzz("eureka_requests", seeds, |b| {
        let Some(req) = http_request(b) else { return false };
        answer(&rt, &service, req, b).is_some_and(|s| s.is_success())
    });
    drop(node);
}

/// Whole requests to a node with an auth file (no anonymous roles) and a cluster secret, through
/// the server's HTTP service: the door must never panic or answer 500, and a request that does
/// not carry one of the valid credentials unchanged must never succeed, whatever its path,
/// method or other headers (the probes excepted).
#[test]
fn guarded_requests() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let auth = dir.path().join("auth.toml");
    let hash = synod::auth::users::hash_password("orders-pw").expect("hash");
    let token = "synod_fuzz_token";
    let digest = synod::auth::users::hex(&synod::auth::users::sha256(token.as_bytes()));
    std::fs::write(
        &auth,
        format!(
            "[[users]]\nname = \"orders\"\npassword_hash = \"{hash}\"\nroles = [\"read\", \"register:ORDERS*\"]\n\
             [[users]]\nname = \"ops\"\ntoken_sha256 = \"{digest}\"\nroles = [\"operator\"]\n"
        ),
    )
    .expect("auth file");
    let secret = "fuzz-cluster-secret-0123456789";
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, secret).expect("secret file");
    let node = rt.block_on(async {
        let config = synod::config::Config {
            data_dir: dir.path().join("data"),
            security: synod::config::Security {
                auth_file: Some(auth),
                cluster_secret_file: Some(secret_file),
                ..Default::default()
            },
            ..Default::default()
        };
        synod::server::Node::open(config, Arc::new(synod::core::clock::SystemClock)).await.expect("node")
    });
    let service = node.http();
    use base64::Engine;
    let basic =
        format!("authorization: Basic {}", base64::engine::general_purpose::STANDARD.encode("orders:orders-pw"));
    let bearer = format!("authorization: Bearer {token}");
    let member = format!("x-synod-cluster-secret: {secret}");
    let valid = [basic.clone(), bearer.clone(), member.clone()];
    let request = |line: &str, headers: &str, body: &[u8]| {
        let mut r = format!("{line}\n{headers}\n\n").into_bytes();
        r.extend_from_slice(body);
        r
    };
    let json = "content-type: application/json\naccept: application/json";
    let seeds = vec![
        request("POST /eureka/apps/ORDERS", &format!("{json}\n{basic}"), &registration_json()),
        request("POST /eureka/apps/ORDERS", json, &registration_json()),
        request("PUT /eureka/apps/ORDERS/10.0.0.5:orders:8080?status=UP", &basic, b""),
        request("PUT /eureka/apps/BILLING/b-1/status?value=OUT_OF_SERVICE", &bearer, b""),
        request("DELETE /eureka/apps/ORDERS/10.0.0.5:orders:8080", "x-netflix-discovery-replication: true", b""),
        request("DELETE /eureka/apps/ORDERS/10.0.0.5:orders:8080", "authorization: Basic b3JkZXJzOm5vcGU=", b""),
        request("POST /eureka/peerreplication/batch", &format!("{json}\n{member}"), b"{\"replicationList\":[]}"),
        request("POST /eureka/v2/peerreplication/batch", json, b"{\"replicationList\":[]}"),
        request("POST /v1/cluster/nodes", &basic, b"{\"id\":2,\"url\":\"http://127.0.0.1:9\"}"),
        request("GET /eureka/apps", "authorization: Bearer synod_guess", b""),
        request("GET /v1/status", &member, b""),
        request("GET /healthz", "", b""),
    ];
    fuzz("guarded_requests", seeds, |b| {
        let Some(req) = http_request(b) else { return false };
        let credentialed = req.headers().iter().any(|(k, v)| {
            let line = format!("{}: {}", k.as_str(), v.to_str().unwrap_or(""));
            valid.contains(&line)
        });
        let probe = matches!(req.uri().path(), "/healthz" | "/readyz");
        let Some(status) = answer(&rt, &service, req, b) else { return false };
        assert!(
            credentialed || probe || !status.is_success(),
            "{status} without valid credentials: {:?}",
            String::from_utf8_lossy(b)
        );
        status.is_success()
    });
    drop(node);
}

/// The status `service` answers `req` (built from `input`) with, within 5 s; `None` for a long
/// poll still waiting then, which may rightly wait as long as it asked. Never a 500.
fn answer(
    rt: &tokio::runtime::Runtime,
    service: &synod::http::HttpService,
    req: axum::extract::Request,
    input: &[u8],
) -> Option<axum::http::StatusCode> {
    let long_poll = req.uri().query().is_some_and(|q| form_urlencoded::parse(q.as_bytes()).any(|(k, _)| k == "waitMs"));
    let mut svc = service.clone();
    let resp = rt.block_on(async {
        tokio::time::timeout(std::time::Duration::from_secs(5), tower::Service::call(&mut svc, req)).await
    });
    let Ok(resp) = resp else {
        assert!(long_poll, "no answer within 5 s: {:?}", String::from_utf8_lossy(input));
        return None;
    };
    let status = resp.expect("infallible").status();
    assert_ne!(status, axum::http::StatusCode::INTERNAL_SERVER_ERROR, "input: {:?}", String::from_utf8_lossy(input));
    Some(status)
}

/// Builds a request from "METHOD TARGET\nheader: value\n…\n\nbody"; None when the text is not
/// something a client could put on the wire (the HTTP parser would refuse it first).
fn http_request(b: &[u8]) -> Option<axum::extract::Request> {
    let split = b.windows(2).position(|w| w == b"\n\n")?;
    let head = std::str::from_utf8(&b[..split]).ok()?;
    let body = b[split + 2..].to_vec();
    let mut lines = head.lines();
    let (method, target) = lines.next()?.split_once(' ')?;
    let mut builder = axum::http::Request::builder()
        .method(axum::http::Method::from_bytes(method.as_bytes()).ok()?)
        .uri(axum::http::Uri::try_from(target).ok()?);
    for l in lines {
        let (k, v) = l.split_once(':')?;
        let name = axum::http::HeaderName::from_bytes(k.trim().as_bytes()).ok()?;
        let value = axum::http::HeaderValue::from_str(v.trim()).ok()?;
        builder = builder.header(name, value);
    }
    builder.body(axum::body::Body::from(body)).ok()
}
