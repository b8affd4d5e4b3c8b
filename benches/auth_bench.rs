//! What the door costs one request on a node with an auth file, in-process: deciding what a
//! renewal needs from its path, and deciding a known HTTP Basic header from the per-thread
//! cache (the path of every heartbeat after a connection's first). Medians of several rounds
//! of a million calls each; a report, never asserted.
//!
//! `cargo bench --bench auth_bench` (without `--bench`, as under `cargo test --all-targets`, a
//! tiny round only).

use std::time::Instant;

use axum::http::{HeaderMap, HeaderValue, Method};
use base64::Engine;
use synod::auth::access;
use synod::auth::Auth;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Nanoseconds per call of `f`, median of `rounds` rounds of `n` calls.
fn time(rounds: usize, n: usize, mut f: impl FnMut(usize) -> bool) -> f64 {
    let mut per = Vec::new();
    let mut sink = 0usize;
    for _ in 0..rounds {
        let t = Instant::now();
        for i in 0..n {
            sink += usize::from(f(i));
        }
        per.push(t.elapsed().as_nanos() as f64 / n as f64);
    }
    assert!(sink > 0);
    median(per)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (rounds, n) = if full { (7, 1_000_000) } else { (1, 1_000) };
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("auth.toml");
    let hash = synod::auth::users::hash_password("bench-password").expect("hash");
    std::fs::write(
        &file,
        format!("[[users]]\nname = \"bench\"\npassword_hash = \"{hash}\"\nroles = [\"register:*\"]\n"),
    )
    .expect("auth file");
    let auth = Auth::load(Some(file), None, false).expect("auth");
    let mut headers = HeaderMap::new();
    let basic = base64::engine::general_purpose::STANDARD.encode("bench:bench-password");
    headers.insert("authorization", HeaderValue::from_str(&format!("Basic {basic}")).expect("header"));
    headers.insert("host", HeaderValue::from_static("127.0.0.1:8761"));
    headers.insert("accept", HeaderValue::from_static("application/json"));
    let path = "/eureka/apps/BENCH-SVC-001/10.0.0.1:bench-svc-001-pre-1:8080";
    let need = access::need(&Method::PUT, path);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    // The first request verifies the password and fills this thread's copy.
    rt.block_on(auth.authorize(&headers, false, &need)).expect("admitted");

    let need_ns =
        time(rounds, n, |_| matches!(access::need(&Method::PUT, path), synod::auth::roles::Need::Instance { .. }));
    let decide_ns = time(rounds, n, |_| matches!(auth.authorize_now(&headers, false, &need), Some(Ok(false))));
    let sha_ns = time(rounds, n, |i| synod::auth::users::sha256(basic.as_bytes())[i % 32] < 255 || i > 0);
    println!("auth_bench: medians of {rounds} rounds of {n} calls");
    println!("  what a renewal needs (access::need)             {need_ns:>7.1} ns");
    println!("  decide a known Basic header (authorize_now)      {decide_ns:>7.1} ns");
    println!("    of which SHA-256 of the header                 {sha_ns:>7.1} ns");
    println!("  the door in all                                  {:>7.1} ns", need_ns + decide_ns);
}
