//! The full registry document built from per-application fragments, so that a change
//! re-encodes and recompresses the application it touched rather than the registry.
//!
//! Each application's part of `GET apps` is kept encoded and compressed (a [`Piece`]) with
//! its status counts; a full fetch after a change takes, under the registry lock, the
//! fragments still valid and cheap views of the applications that are not, encodes those
//! outside the lock, and lays all pieces end to end into one gzip member. The hash code is
//! summed from the fragments' counts, so nothing walks every instance.
//!
//! The delta (`GET apps/delta`) is assembled the same way: each application's part of the
//! window is kept compressed under a fingerprint of the changes it lists (instance and
//! version of each, which identify their content), so a new change re-encodes the
//! application it belongs to and the applications whose oldest changes left the window.
//!
//! Lease timestamps in a fragment are those of its build (renewals are not changes), as
//! Eureka's are those of its cache fill; a fragment is rebuilt after at most
//! [`MAX_AGE_MS`] so they stay within the same bound Eureka's cache expiry gives.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use parking_lot::Mutex;

use super::cache::Payload;
use super::delta::{self, DeltaItem};
use super::gzip::{self, Compressor, Piece};
use super::registry::Format;
use super::state::{hash_code_of_counts, RegistryState};
use super::views::{self, AppView, InstanceView};

/// Longest a fragment is served before it is rebuilt; each application's limit lies
/// between half of this and all of it, so fragments built together are not all rebuilt by
/// the same fetch.
pub const MAX_AGE_MS: u64 = 180_000;

/// How a document format writes a full registry from its parts.
pub struct AppsCodec {
    /// Everything before the first application, given `versions__delta` and the hash code.
    pub open: fn(&str, &str) -> Vec<u8>,
    /// One application.
    pub app: fn(&AppView) -> Vec<u8>,
    /// Written between two applications.
    pub separator: &'static [u8],
    /// Everything after the last application.
    pub close: &'static [u8],
}

/// One application (or its part of the delta) encoded in one format.
struct Fragment {
    piece: Piece,
    /// Instances by status, in [`super::model::Status::HASH_ORDER`].
    statuses: [usize; 5],
    built_at: u64,
}

impl Fragment {
    fn build(view: &AppView, compressor: &mut Compressor, codec: &AppsCodec, now: u64) -> Self {
        let mut statuses = [0; 5];
        for i in &view.instances {
            statuses[i.info.status.hash_index()] += 1;
        }
        Fragment { piece: compressor.piece(&(codec.app)(view)), statuses, built_at: now }
    }
}

/// What is kept for one application.
#[derive(Default)]
struct Slot {
    /// Cache generation of the application's last change.
    changed: u64,
    /// By format (JSON, XML).
    built: [Option<Arc<Fragment>>; 2],
}

/// A full document's parts, taken under the registry lock.
pub struct Plan {
    generation: u64,
    /// Small enough to build whole (every part is to encode).
    whole: bool,
    parts: Vec<Part<()>>,
}

impl Plan {
    /// The cache generation the plan was taken at.
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

/// A document's part for one application: kept, or to encode (with what to file the new
/// fragment under).
enum Part<T> {
    Ready(Arc<Fragment>),
    Encode(AppView, T),
}

/// A fragment just encoded: its application, tag and fragment.
type Fresh<T> = (String, T, Arc<Fragment>);

/// Encodes the parts that need it, with one compressor: every part's fragment in order, and
/// the new ones with their applications and tags.
fn encode<T>(parts: Vec<Part<T>>, codec: &AppsCodec, now: u64) -> (Vec<Arc<Fragment>>, Vec<Fresh<T>>) {
    let mut compressor = Compressor::new();
    let mut fresh = Vec::new();
    let all = parts
        .into_iter()
        .map(|part| match part {
            Part::Ready(f) => f,
            Part::Encode(view, tag) => {
                let f = Arc::new(Fragment::build(&view, &mut compressor, codec, now));
                fresh.push((view.name, tag, f.clone()));
                f
            }
        })
        .collect();
    (all, fresh)
}

/// Documents of at most this many instances are encoded and compressed whole, as one
/// stream: parts compressed apart each start without the history a whole stream shares
/// (a 20-change delta over 20 applications came out at 6x the size, a 1,000-instance
/// registry at 1.8x), and encoding so few takes about a millisecond.
pub const WHOLE_UP_TO: usize = 20_000;

/// Encoded applications, kept between full fetches.
pub struct Fragments {
    inner: Mutex<Inner>,
    /// Documents of at most this many instances are built whole ([`WHOLE_UP_TO`]).
    whole_up_to: usize,
}

impl Default for Fragments {
    fn default() -> Self {
        Fragments { inner: Mutex::default(), whole_up_to: WHOLE_UP_TO }
    }
}

/// One application's part of the delta window, by format.
struct DeltaSlot {
    fingerprint: u64,
    built: [Option<Arc<Fragment>>; 2],
}

#[derive(Default)]
struct Inner {
    apps: HashMap<String, Slot>,
    delta: HashMap<String, DeltaSlot>,
    /// Cache generation of the last [`Fragments::clear`]: no fragment built from an
    /// earlier view may be stored.
    cleared: u64,
}

fn index_of(fmt: Format) -> usize {
    match fmt {
        Format::Json => 0,
        Format::Xml => 1,
    }
}

/// This application's fragment age limit, between half of [`MAX_AGE_MS`] and all of it.
fn max_age_ms(app: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    app.hash(&mut h);
    MAX_AGE_MS / 2 + h.finish() % (MAX_AGE_MS / 2 + 1)
}

impl Fragments {
    /// Records a change to `app` at cache generation `generation`: its fragments are gone,
    /// and none built from an earlier view may be stored. Called under the registry lock.
    pub fn touch(&self, app: &str, generation: u64) {
        let apps = &mut self.inner.lock().apps;
        match apps.get_mut(app) {
            Some(slot) => *slot = Slot { changed: generation, built: Default::default() },
            None => {
                apps.insert(app.to_string(), Slot { changed: generation, built: Default::default() });
            }
        }
    }

    /// Forgets every fragment: the registry was replaced as a whole at cache generation
    /// `generation`. Called under the registry lock.
    pub fn clear(&self, generation: u64) {
        let mut inner = self.inner.lock();
        inner.apps.clear();
        // Versions start over from the snapshot's, so fingerprints could repeat.
        inner.delta.clear();
        inner.cleared = generation;
    }

    /// Number of fragments kept, all formats.
    pub fn len(&self) -> usize {
        self.inner.lock().apps.values().flat_map(|s| s.built.iter()).filter(|b| b.is_some()).count()
    }

    /// Whether no fragment is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The parts of the full document of `st` (at cache generation `generation`): the
    /// fragments still valid, and views of the applications to encode. Called under the
    /// registry lock; costs a lookup per application and an `Arc` clone per instance of the
    /// applications that changed.
    pub fn plan(&self, st: &RegistryState, fmt: Format, generation: u64, now: u64) -> Plan {
        if st.len() <= self.whole_up_to {
            let parts = st.apps().map(|(name, m)| Part::Encode(app_view(name, m), ())).collect();
            return Plan { generation, whole: true, parts };
        }
        let apps = &mut self.inner.lock().apps;
        // Applications that are gone leave their slots behind; drop them once they
        // outnumber the live ones.
        if apps.len() > 2 * st.app_count() + 1024 {
            apps.retain(|name, _| st.has_app(name));
        }
        let parts = st
            .apps()
            .map(|(name, instances)| {
                let ready = apps
                    .get(name.as_str())
                    .and_then(|slot| slot.built[index_of(fmt)].as_ref())
                    .filter(|f| now.saturating_sub(f.built_at) < max_age_ms(name));
                match ready {
                    Some(f) => Part::Ready(f.clone()),
                    None => Part::Encode(app_view(name, instances), ()),
                }
            })
            .collect();
        Plan { generation, whole: false, parts }
    }

    /// Encodes what `plan` lacks, keeps those fragments unless their application changed
    /// since the plan was taken, and assembles the gzipped document.
    pub fn finish(&self, plan: Plan, fmt: Format, codec: &AppsCodec, now: u64) -> Payload {
        if plan.whole {
            let views = encoded_views(plan.parts);
            let mut statuses = [0; 5];
            for i in views.iter().flat_map(|v| &v.instances) {
                statuses[i.info.status.hash_index()] += 1;
            }
            return whole_document((codec.open)("1", &hash_code_of_counts(statuses)), &views, codec);
        }
        let (fragments, fresh) = encode(plan.parts, codec, now);
        if !fresh.is_empty() {
            let mut inner = self.inner.lock();
            let valid = inner.cleared <= plan.generation;
            for (name, (), f) in fresh.into_iter().filter(|_| valid) {
                let slot = inner.apps.entry(name).or_default();
                if slot.changed <= plan.generation {
                    slot.built[index_of(fmt)] = Some(f);
                }
            }
        }
        let mut statuses = [0; 5];
        for f in &fragments {
            for (total, n) in statuses.iter_mut().zip(f.statuses) {
                *total += n;
            }
        }
        let open = (codec.open)("1", &hash_code_of_counts(statuses));
        document(&open, fragments.iter().map(|f| &f.piece), codec)
    }

    /// The parts of the delta `window` holds: the applications' parts still valid, and
    /// views of those to encode. Runs outside the registry lock.
    pub fn plan_delta(&self, window: &DeltaWindow, fmt: Format) -> DeltaPlan {
        let mut groups: Vec<(&str, Vec<&DeltaItem>)> = Vec::new();
        let mut index: HashMap<&str, usize> = HashMap::new();
        for item in delta::latest(&window.items) {
            match index.get(item.key.app.as_str()) {
                Some(&i) => groups[i].1.push(item),
                None => {
                    index.insert(&item.key.app, groups.len());
                    groups.push((&item.key.app, vec![item]));
                }
            }
        }
        let versions_delta = window.versions_delta.clone();
        let hash_code = window.hash_code.clone();
        if groups.iter().map(|(_, items)| items.len()).sum::<usize>() <= self.whole_up_to {
            let parts = groups.into_iter().map(|(name, items)| Part::Encode(delta_view(name, &items), 0)).collect();
            return DeltaPlan { versions_delta, hash_code, whole: true, parts };
        }
        let mut inner = self.inner.lock();
        if inner.delta.len() > 2 * groups.len() + 1024 {
            inner.delta.retain(|name, _| index.contains_key(name.as_str()));
        }
        let parts = groups
            .into_iter()
            .map(|(name, items)| {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                for i in &items {
                    i.key.id.hash(&mut h);
                    i.version.hash(&mut h);
                }
                let fingerprint = h.finish();
                let ready = inner
                    .delta
                    .get(name)
                    .filter(|slot| slot.fingerprint == fingerprint)
                    .and_then(|slot| slot.built[index_of(fmt)].clone());
                match ready {
                    Some(f) => Part::Ready(f),
                    None => Part::Encode(delta_view(name, &items), fingerprint),
                }
            })
            .collect();
        DeltaPlan { versions_delta, hash_code, whole: false, parts }
    }

    /// Encodes what `plan` lacks, keeps those parts, and assembles the gzipped delta.
    pub fn finish_delta(&self, plan: DeltaPlan, fmt: Format, codec: &AppsCodec, now: u64) -> Payload {
        if plan.whole {
            let open = (codec.open)(&plan.versions_delta, &plan.hash_code);
            return whole_document(open, &encoded_views(plan.parts), codec);
        }
        let (fragments, fresh) = encode(plan.parts, codec, now);
        if !fresh.is_empty() {
            let delta = &mut self.inner.lock().delta;
            for (name, fingerprint, piece) in fresh {
                let slot = delta.entry(name).or_insert_with(|| DeltaSlot { fingerprint, built: Default::default() });
                if slot.fingerprint != fingerprint {
                    *slot = DeltaSlot { fingerprint, built: Default::default() };
                }
                slot.built[index_of(fmt)] = Some(piece);
            }
        }
        let open = (codec.open)(&plan.versions_delta, &plan.hash_code);
        document(&open, fragments.iter().map(|f| &f.piece), codec)
    }
}

/// What the delta shows, taken under the registry lock: a reference count per change in
/// the window, the version and the hash code.
pub struct DeltaWindow {
    items: Vec<Arc<DeltaItem>>,
    versions_delta: String,
    hash_code: String,
}

impl DeltaWindow {
    /// The delta window of `st` at `now`.
    pub fn of(st: &RegistryState, now: u64) -> Self {
        DeltaWindow {
            items: st.delta().window(now, st.delta_retention_ms()),
            versions_delta: st.version().to_string(),
            hash_code: st.hash_code(),
        }
    }
}

/// The delta's parts.
pub struct DeltaPlan {
    versions_delta: String,
    hash_code: String,
    /// Small enough to build whole (every part is to encode).
    whole: bool,
    parts: Vec<Part<u64>>,
}

fn app_view(name: &str, instances: &std::collections::BTreeMap<String, super::state::Entry>) -> AppView {
    AppView { name: name.to_string(), instances: instances.values().map(views::instance).collect() }
}

fn delta_view(name: &str, items: &[&DeltaItem]) -> AppView {
    AppView {
        name: name.to_string(),
        instances: items.iter().map(|i| InstanceView { info: i.info.clone(), stamps: i.stamps }).collect(),
    }
}

/// The views of a plan built whole (all its parts are to encode).
fn encoded_views<T>(parts: Vec<Part<T>>) -> Vec<AppView> {
    parts
        .into_iter()
        .filter_map(|p| match p {
            Part::Encode(view, _) => Some(view),
            Part::Ready(_) => None,
        })
        .collect()
}

/// A document encoded whole: `open`, the applications with separators, `close`; gzipped
/// as one stream when first asked for.
fn whole_document(mut out: Vec<u8>, views: &[AppView], codec: &AppsCodec) -> Payload {
    for (i, v) in views.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(codec.separator);
        }
        out.extend_from_slice(&(codec.app)(v));
    }
    out.extend_from_slice(codec.close);
    Payload::new(out)
}

/// A gzipped document: `open`, the applications' pieces with separators, `close`.
fn document<'a>(open: &[u8], apps: impl Iterator<Item = &'a Piece>, codec: &AppsCodec) -> Payload {
    let open = Piece::stored(open);
    let separator = Piece::stored(codec.separator);
    let close = Piece::stored(codec.close);
    let mut pieces = vec![&open];
    for (i, p) in apps.enumerate() {
        if i > 0 {
            pieces.push(&separator);
        }
        pieces.push(p);
    }
    pieces.push(&close);
    Payload::from_gzip(gzip::assemble(pieces.iter().copied()))
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::codec::{json, xml};
    use crate::core::clock::ManualClock;
    use crate::core::command::Command;
    use crate::core::model::{InstanceKey, Status};
    use crate::core::preservation::PreservationConfig;
    use crate::core::registry::Registry;
    use crate::core::state::{CoreConfig, RegistryState};
    use crate::core::tests::instance;

    const T0: u64 = 1_700_000_000_000;

    thread_local! {
        /// Applications encoded by the counting codecs on this test's thread.
        static JSON_ENCODED: AtomicUsize = const { AtomicUsize::new(0) };
        static XML_ENCODED: AtomicUsize = const { AtomicUsize::new(0) };
    }

    const COUNTING_JSON: AppsCodec = AppsCodec {
        app: |v| {
            JSON_ENCODED.with(|n| n.fetch_add(1, Ordering::SeqCst));
            (json::APPS.app)(v)
        },
        ..json::APPS
    };

    const COUNTING_XML: AppsCodec = AppsCodec {
        app: |v| {
            XML_ENCODED.with(|n| n.fetch_add(1, Ordering::SeqCst));
            (xml::APPS.app)(v)
        },
        ..xml::APPS
    };

    /// A registry whose documents are always built from parts.
    fn registry(clock: Arc<ManualClock>) -> Registry {
        let mut r = Registry::new(CoreConfig::default(), PreservationConfig::default(), clock);
        r.fragments_mut().whole_up_to = 0;
        r
    }

    fn parts_only() -> Fragments {
        Fragments { whole_up_to: 0, ..Fragments::default() }
    }

    fn apply(r: &Registry, cmd: Command) {
        r.apply(cmd, |_, _| ());
    }

    fn register(r: &Registry, app: &str, id: &str) {
        let mut i = instance(app, id);
        i.metadata.insert("note".into(), "<b>&\"quoted\"</b>".into());
        apply(r, Command::Register { instance: Box::new(i), now: r.now(), from_peer: false });
    }

    fn gunzip(p: &Payload) -> String {
        let mut out = String::new();
        flate2::read::GzDecoder::new(&p.gzipped()[..]).read_to_string(&mut out).unwrap();
        assert_eq!(out.as_bytes(), &p.body()[..]);
        out
    }

    fn whole(r: &Registry, fmt: Format) -> String {
        let view = r.read(views::full);
        String::from_utf8(match fmt {
            Format::Json => json::apps(&view),
            Format::Xml => xml::apps(&view),
        })
        .unwrap()
    }

    fn check(r: &Registry, fmt: Format, codec: &AppsCodec) {
        assert_eq!(gunzip(&r.cached_apps(fmt, codec)), whole(r, fmt));
    }

    fn load(r: &Registry) {
        for app in ["alpha", "beta", "gamma", "delta"] {
            for n in 0..40 {
                register(r, app, &format!("{app}-{n}"));
            }
        }
        let key = InstanceKey::new("beta", "beta-3");
        apply(r, Command::SetStatusOverride { key, status: Status::OutOfService, last_dirty: None, now: r.now() });
    }

    fn each_format(test: impl Fn(Format, &AppsCodec, &AtomicUsize)) {
        JSON_ENCODED.with(|n| test(Format::Json, &COUNTING_JSON, n));
        XML_ENCODED.with(|n| test(Format::Xml, &COUNTING_XML, n));
    }

    #[test]
    fn a_change_reencodes_only_its_application_and_the_document_stays_the_same_bytes() {
        each_format(|fmt, codec, encoded| {
            let clock = Arc::new(ManualClock::new(T0));
            let r = registry(clock.clone());
            check(&r, fmt, codec);
            load(&r);
            let before = encoded.load(Ordering::SeqCst);
            check(&r, fmt, codec);
            assert_eq!(encoded.load(Ordering::SeqCst) - before, 4);
            // Served from the cache: nothing encoded.
            check(&r, fmt, codec);
            assert_eq!(encoded.load(Ordering::SeqCst) - before, 4);
            clock.advance(1_000);
            register(&r, "gamma", "gamma-new");
            check(&r, fmt, codec);
            assert_eq!(encoded.load(Ordering::SeqCst) - before, 5);
            // A cancel, an application emptied, a new one: each counts once.
            apply(&r, Command::Cancel { key: InstanceKey::new("alpha", "alpha-1"), now: r.now() });
            for n in 0..40 {
                apply(&r, Command::Cancel { key: InstanceKey::new("delta", &format!("delta-{n}")), now: r.now() });
            }
            register(&r, "epsilon", "e-1");
            check(&r, fmt, codec);
            assert_eq!(encoded.load(Ordering::SeqCst) - before, 7);
            assert!(gunzip(&r.cached_apps(fmt, codec)).contains("OUT_OF_SERVICE_1_UP_"));
        });
    }

    #[test]
    fn fragments_are_rebuilt_within_the_age_limit() {
        let clock = Arc::new(ManualClock::new(T0));
        let r = registry(clock.clone());
        load(&r);
        check(&r, Format::Json, &json::APPS);
        let key = InstanceKey::new("alpha", "alpha-0");
        clock.advance(MAX_AGE_MS / 4);
        r.renew(&key, None);
        register(&r, "beta", "beta-new");
        // alpha did not change: its fragment, and its old renewal time, are still served.
        assert_eq!(last_renewal(&r, "ALPHA", "alpha-0"), T0);
        clock.advance(MAX_AGE_MS);
        register(&r, "beta", "beta-newer");
        check(&r, Format::Json, &json::APPS);
        assert_eq!(last_renewal(&r, "ALPHA", "alpha-0"), T0 + MAX_AGE_MS / 4);
    }

    /// An instance's `lastRenewalTimestamp` in the full JSON document.
    fn last_renewal(r: &Registry, app: &str, id: &str) -> u64 {
        let doc: serde_json::Value = serde_json::from_str(&gunzip(&r.cached_apps(Format::Json, &json::APPS))).unwrap();
        let apps = doc["applications"]["application"].as_array().unwrap();
        let a = apps.iter().find(|a| a["name"] == app).unwrap();
        let i = a["instance"].as_array().unwrap().iter().find(|i| i["instanceId"] == id).unwrap();
        i["leaseInfo"]["lastRenewalTimestamp"].as_u64().unwrap()
    }

    fn whole_delta(r: &Registry, fmt: Format) -> String {
        let view = r.read(|st| views::delta(st, r.now()));
        String::from_utf8(match fmt {
            Format::Json => json::apps(&view),
            Format::Xml => xml::apps(&view),
        })
        .unwrap()
    }

    #[test]
    fn a_change_reencodes_only_the_delta_parts_it_touched_and_the_delta_stays_the_same_bytes() {
        each_format(|fmt, codec, encoded| {
            let clock = Arc::new(ManualClock::new(T0));
            let r = registry(clock.clone());
            let check = |r: &Registry| assert_eq!(gunzip(&r.cached_delta(fmt, codec)), whole_delta(r, fmt));
            check(&r);
            load(&r);
            let before = encoded.load(Ordering::SeqCst);
            check(&r);
            assert_eq!(encoded.load(Ordering::SeqCst) - before, 4);
            clock.advance(1_000);
            register(&r, "gamma", "gamma-new");
            apply(&r, Command::Cancel { key: InstanceKey::new("alpha", "alpha-1"), now: r.now() });
            check(&r);
            assert_eq!(encoded.load(Ordering::SeqCst) - before, 6, "gamma and alpha");
            // The load's changes leave the window; only the last two remain, each in its
            // own application (their parts changed: encoded again).
            clock.set(T0 + CoreConfig::default().delta_retention_ms + 500);
            register(&r, "beta", "beta-late");
            check(&r);
            assert_eq!(encoded.load(Ordering::SeqCst) - before, 9);
            assert!(gunzip(&r.cached_delta(fmt, codec)).contains("beta-late"));
        });
    }

    #[test]
    fn small_documents_are_compressed_as_one_stream() {
        let clock = Arc::new(ManualClock::new(T0));
        let mut r = Registry::new(CoreConfig::default(), PreservationConfig::default(), clock);
        for n in 0..20 {
            register(&r, &format!("app-{n}"), "only");
        }
        let whole = |r: &Registry| Payload::new(whole(r, Format::Json)).gzipped();
        let whole_delta = |r: &Registry| Payload::new(whole_delta(r, Format::Json)).gzipped();
        assert_eq!(r.cached_apps(Format::Json, &json::APPS).gzipped(), whole(&r));
        assert_eq!(r.cached_delta(Format::Json, &json::APPS).gzipped(), whole_delta(&r));
        // The same documents from parts: each part compressed without the others' history.
        r.fragments_mut().whole_up_to = 0;
        register(&r, "app-0", "second");
        let parts = r.cached_apps(Format::Json, &json::APPS).gzipped();
        assert!(parts.len() > whole(&r).len() * 3 / 2, "{} vs {}", parts.len(), whole(&r).len());
        let parts = r.cached_delta(Format::Json, &json::APPS).gzipped();
        assert!(parts.len() > whole_delta(&r).len() * 3 / 2, "{} vs {}", parts.len(), whole_delta(&r).len());
    }

    fn state_with(apps: &[&str]) -> RegistryState {
        let mut st = RegistryState::new(CoreConfig::default());
        for app in apps {
            st.apply(Command::Register { instance: Box::new(instance(app, "1")), now: T0, from_peer: false });
        }
        st
    }

    #[test]
    fn a_fragment_built_from_a_view_older_than_a_change_is_not_kept() {
        let st = state_with(&["A", "B"]);
        let f = parts_only();
        let plan = f.plan(&st, Format::Json, 1, T0);
        // A changes while the plan is being encoded.
        f.touch("A", 2);
        f.finish(plan, Format::Json, &json::APPS, T0);
        assert_eq!(f.len(), 1, "only B is kept");
        let plan = f.plan(&st, Format::Json, 2, T0);
        assert_eq!(plan.parts.iter().filter(|p| matches!(p, Part::Encode(..))).count(), 1);
        f.finish(plan, Format::Json, &json::APPS, T0);
        assert_eq!(f.len(), 2);
        // The registry is replaced while a plan is encoded: nothing of it is kept.
        let plan = f.plan(&st, Format::Xml, 2, T0);
        f.clear(3);
        f.finish(plan, Format::Xml, &xml::APPS, T0);
        assert!(f.is_empty());
    }

    #[test]
    fn slots_of_applications_that_are_gone_are_dropped() {
        let st = state_with(&["LIVE"]);
        let f = parts_only();
        for n in 0..3000 {
            f.touch(&format!("GONE-{n}"), 1);
        }
        f.finish(f.plan(&st, Format::Json, 1, T0), Format::Json, &json::APPS, T0);
        assert!(f.inner.lock().apps.len() <= 1025);
        assert_eq!(f.len(), 1);
    }
}
