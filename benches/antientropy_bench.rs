//! What p2p anti-entropy costs on a large registry: the digest every round computes (one
//! for each peer's request and one of its own), the listing of one application that
//! differs, and the whole-registry exchange of a start-up sync, each encoded, decoded and
//! adopted as the nodes do.
//!
//! `cargo bench --bench antientropy_bench -- --bench`. Settings: `SYNOD_BENCH_INSTANCES`
//! (100000), `SYNOD_BENCH_APPS` (100), `SYNOD_BENCH_RUNS` (15). Without `--bench` it only
//! prints how to run it. Figures are medians, a report, never asserted.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use synod::core::command::Command;
use synod::core::model::{DataCenterInfo, DataCenterKind, InstanceInfo, InstanceKey, LeaseTerms, Port, Status};
use synod::core::state::{CoreConfig, RegistryState};
use synod::replication::p2p::copies::{self, Holdings};
use synod::replication::p2p::protocol::{decode_listing, encode_batch};

const NOW: u64 = 1_700_000_000_000;

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn instance(app: usize, n: usize) -> InstanceInfo {
    let host = format!("10.{}.{}.{}", app % 250, n / 250 % 250, n % 250);
    InstanceInfo {
        instance_id: format!("{host}:app-{app}:8080"),
        host_name: host.clone(),
        app: format!("APP-{app}"),
        ip_addr: host,
        sid: None,
        status: Status::Up,
        overridden_status: Status::Unknown,
        port: Port { port: 8080, enabled: true },
        secure_port: Port { port: 443, enabled: false },
        country_id: 1,
        data_center_info: DataCenterInfo {
            kind: DataCenterKind::Default,
            name: "MyOwn".into(),
            metadata: BTreeMap::new(),
        },
        lease: LeaseTerms::default(),
        metadata: BTreeMap::from([("management.port".to_string(), "8080".to_string())]),
        app_group_name: None,
        home_page_url: Some("http://host:8080/".into()),
        status_page_url: Some("http://host:8080/info".into()),
        health_check_url: Some("http://host:8080/health".into()),
        secure_health_check_url: None,
        vip_address: Some(format!("app-{app}")),
        secure_vip_address: None,
        last_updated_timestamp: 0,
        last_dirty_timestamp: NOW,
        action_type: None,
        asg_name: None,
    }
}

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

fn time<R>(runs: usize, mut f: impl FnMut() -> R) -> (Duration, R) {
    let mut times = Vec::with_capacity(runs);
    let mut last = None;
    for _ in 0..runs {
        let t = Instant::now();
        last = Some(f());
        times.push(t.elapsed());
    }
    (median(times), last.expect("at least one run"))
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

/// Decodes a listing and adopts every item into an empty replica, as a peer does; returns
/// how many instances it took.
fn adopt_listing(body: &[u8], config: &CoreConfig) -> usize {
    let items: Vec<_> = decode_listing(body, NOW).expect("listing decodes").into_iter().flatten().collect();
    let mut replica = RegistryState::new(config.clone());
    for i in &items {
        if let Some(r) = i.replica() {
            replica.apply(Command::Adopt { key: i.key(), replica: r, now: NOW + 20_000 });
        }
    }
    replica.len()
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("run with: cargo bench --bench antientropy_bench -- --bench");
        return;
    }
    let instances = setting("SYNOD_BENCH_INSTANCES", 100_000);
    let apps = setting("SYNOD_BENCH_APPS", 100).max(1);
    let runs = setting("SYNOD_BENCH_RUNS", 15).max(1);
    let config = CoreConfig { tombstone_retention_ms: 3_600_000, digests: true, ..CoreConfig::default() };
    // What keeping the digests costs each registration.
    let upkeep = |digests: bool| {
        let mut st = RegistryState::new(CoreConfig { digests, ..config.clone() });
        let t = Instant::now();
        for n in 0..instances {
            let i = instance(n % apps, n / apps);
            st.apply(Command::Register { instance: Box::new(i), now: NOW + n as u64 / 100, from_peer: false });
        }
        t.elapsed().as_secs_f64() * 1e6 / instances.max(1) as f64
    };
    for _ in 0..2 {
        let (with, without) = (upkeep(true), upkeep(false));
        println!("register apply: {with:.2} µs with digests kept, {without:.2} µs without");
    }
    let mut st = RegistryState::new(config.clone());
    for n in 0..instances {
        let i = instance(n % apps, n / apps);
        st.apply(Command::Register { instance: Box::new(i), now: NOW + n as u64 / 100, from_peer: false });
    }
    // One cancel in ten leaves a tombstone the digest covers too.
    let cancels: Vec<InstanceKey> = st
        .entries()
        .step_by(10)
        .map(|(_, e)| InstanceKey { app: e.info.app.clone(), id: e.info.instance_id.clone() })
        .collect();
    for k in cancels {
        st.apply(Command::Cancel { key: k, now: NOW + 10_000 });
    }
    println!(
        "registry: {} instances in {apps} apps, {} tombstones; medians of {runs} runs",
        st.len(),
        st.tombstones().len()
    );

    let (digest, d) = time(runs, || copies::digest(&st));
    let wire = serde_json::to_vec(&d).expect("digest encodes");
    let (afresh, _) = time(runs, || st.compute_digests());
    println!(
        "digest: {} kept up to date (computed afresh: {}); {} bytes on the wire",
        ms(digest),
        ms(afresh),
        wire.len()
    );
    let holdings = Holdings::take(&st, None);

    let app = "APP-0";
    let (listing, body) = time(runs, || encode_batch(&Holdings::take(&st, Some(app)).items()));
    let (adopt, _) = time(runs, || adopt_listing(&body, &config));
    println!(
        "one differing app ({} items): listing {} ({} bytes), decode + adopt {}",
        instances / apps,
        ms(listing),
        body.len(),
        ms(adopt)
    );

    let sync_runs = runs.min(5);
    let (all, body) = time(sync_runs, || encode_batch(&holdings.items()));
    let (adopt_all, adopted) = time(sync_runs, || adopt_listing(&body, &config));
    println!(
        "start-up exchange of everything: listing {} ({} MiB), decode + adopt {} ({adopted} instances)",
        ms(all),
        body.len() >> 20,
        ms(adopt_all)
    );
}
