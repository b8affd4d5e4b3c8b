//! Response cache: encoded (and lazily gzipped) payloads of the expensive reads, made stale
//! as a whole by every registry change. Eureka serves from a read-only copy refreshed every
//! 30 s, so a registration can stay invisible for that long; here a change is visible to
//! the very next read, and repeated reads between changes cost a hash-map lookup.
//!
//! Readers of a payload that is being built wait for that build rather than start their
//! own, and take its result when it reflects every change made before they arrived: under
//! a steady stream of changes, any number of readers of a large document share one build
//! at a time instead of each encoding it.

use std::collections::HashMap;
use std::hash::Hash;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use parking_lot::Mutex;

/// An encoded response body, plain and gzipped; whichever it was made from is there from
/// the start, the other is derived once when first asked for.
#[derive(Debug)]
pub struct Payload {
    body: OnceLock<Bytes>,
    gzip: OnceLock<Bytes>,
}

impl Payload {
    /// Wraps an encoded body.
    pub fn new(body: impl Into<Bytes>) -> Self {
        Payload { body: OnceLock::from(body.into()), gzip: OnceLock::new() }
    }

    /// Wraps a gzipped encoded body.
    pub fn from_gzip(gzip: Bytes) -> Self {
        Payload { body: OnceLock::new(), gzip: OnceLock::from(gzip) }
    }

    /// The body plain (`gzip` false) or gzipped, if that one is already there.
    pub fn encoded(&self, gzip: bool) -> Option<Bytes> {
        if gzip { self.gzip.get() } else { self.body.get() }.cloned()
    }

    /// The body.
    pub fn body(&self) -> Bytes {
        self.body
            .get_or_init(|| {
                let gz = self.gzip.get().cloned().unwrap_or_default();
                let mut out = Vec::with_capacity(gz.len() * 8);
                // Inflating a member this process compressed cannot fail.
                let _ = flate2::read::GzDecoder::new(&gz[..]).read_to_end(&mut out);
                Bytes::from(out)
            })
            .clone()
    }

    /// The body gzipped, computed once per payload.
    pub fn gzipped(&self) -> Bytes {
        self.gzip
            .get_or_init(|| {
                let body = self.body.get().cloned().unwrap_or_default();
                let mut enc =
                    flate2::write::GzEncoder::new(Vec::with_capacity(body.len() / 4 + 64), flate2::Compression::fast());
                // Writing into a Vec cannot fail.
                let _ = enc.write_all(&body);
                Bytes::from(enc.finish().unwrap_or_default())
            })
            .clone()
    }
}

/// One key's latest payload and the generation of the view it was built from; locked
/// while a payload for the key is being built.
type Slot = Mutex<Option<(u64, Arc<Payload>)>>;

/// Generation-stamped payload cache with a bounded number of entries.
pub struct ResponseCache<K> {
    /// Bumped by every registry change; a payload built from an older view is stale.
    generation: AtomicU64,
    slots: Mutex<HashMap<K, Arc<Slot>>>,
    max_entries: usize,
}

impl<K: Eq + Hash + Clone> ResponseCache<K> {
    /// A cache holding at most `max_entries` payloads (VIP names and app names come from
    /// callers, so the key space is unbounded; on overflow the cache starts over).
    pub fn new(max_entries: usize) -> Self {
        ResponseCache { generation: AtomicU64::new(0), slots: Mutex::new(HashMap::new()), max_entries }
    }

    /// Makes every payload stale and returns the new generation; called on each registry
    /// change, under the registry lock.
    pub fn invalidate(&self) -> u64 {
        let mut slots = self.slots.lock();
        slots.clear();
        self.generation.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Current generation; read it together with the registry view a payload is built from.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// A payload for `key` that is current, without waiting for one being built.
    pub fn get(&self, key: &K) -> Option<Arc<Payload>> {
        let slot = self.slots.lock().get(key).cloned()?;
        let current = self.generation();
        let held = slot.try_lock()?;
        held.as_ref().filter(|(g, _)| *g >= current).map(|(_, p)| p.clone())
    }

    /// A payload for `key` reflecting at least every change made before the call: the
    /// cached one, the one another caller is building, or one from `build` (which returns
    /// the generation its view was taken at; `None`, e.g. for an unknown app, is not
    /// cached). Blocks while another caller builds, so call it where blocking is allowed.
    pub fn get_or_build(&self, key: &K, build: impl FnOnce() -> Option<(u64, Payload)>) -> Option<Arc<Payload>> {
        let since = self.generation();
        let slot = {
            let mut slots = self.slots.lock();
            if slots.len() >= self.max_entries && !slots.contains_key(key) {
                slots.clear();
            }
            slots.entry(key.clone()).or_default().clone()
        };
        let mut held = slot.lock();
        if let Some((g, p)) = held.as_ref() {
            if *g >= since {
                return Some(p.clone());
            }
        }
        let (generation, payload) = build()?;
        let payload = Arc::new(payload);
        *held = Some((generation, payload.clone()));
        Some(payload)
    }

    /// Number of keys with a slot.
    pub fn len(&self) -> usize {
        self.slots.lock().len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn built(c: &ResponseCache<&'static str>, key: &'static str, text: &'static str) -> Arc<Payload> {
        c.get_or_build(&key, || Some((c.generation(), Payload::new(text)))).unwrap()
    }

    #[test]
    fn a_change_makes_payloads_stale() {
        let c: ResponseCache<&str> = ResponseCache::new(4);
        assert!(c.get(&"apps").is_none());
        assert_eq!(built(&c, "apps", "old").body(), "old");
        assert_eq!(c.get(&"apps").unwrap().body(), "old");
        c.invalidate();
        assert!(c.get(&"apps").is_none());
        assert_eq!(built(&c, "apps", "new").body(), "new");
    }

    #[test]
    fn a_payload_from_before_a_change_is_not_served_after_it() {
        let c: ResponseCache<&str> = ResponseCache::new(4);
        let before = c.generation();
        c.invalidate();
        // Built from a view taken before the change (a build that raced it).
        let p = c.get_or_build(&"apps", || Some((before, Payload::new("old")))).unwrap();
        assert_eq!(p.body(), "old");
        assert!(c.get(&"apps").is_none());
        assert_eq!(built(&c, "apps", "new").body(), "new");
    }

    #[test]
    fn readers_arriving_during_a_build_share_it() {
        let c: Arc<ResponseCache<&'static str>> = Arc::new(ResponseCache::new(4));
        let builds = Arc::new(AtomicU64::new(0));
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let first = {
            let (c, builds) = (c.clone(), builds.clone());
            std::thread::spawn(move || {
                c.get_or_build(&"apps", || {
                    builds.fetch_add(1, Ordering::SeqCst);
                    let g = c.generation();
                    started_tx.send(()).unwrap();
                    release_rx.recv().unwrap();
                    Some((g, Payload::new("shared")))
                })
                .unwrap()
            })
        };
        started_rx.recv().unwrap();
        // A build is under way: a reader does not get a payload without waiting.
        assert!(c.get(&"apps").is_none());
        let waiters: Vec<_> = (0..4)
            .map(|_| {
                let (c, builds) = (c.clone(), builds.clone());
                std::thread::spawn(move || {
                    c.get_or_build(&"apps", || {
                        builds.fetch_add(1, Ordering::SeqCst);
                        Some((c.generation(), Payload::new("own")))
                    })
                    .unwrap()
                })
            })
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(50));
        release_tx.send(()).unwrap();
        assert_eq!(first.join().unwrap().body(), "shared");
        for w in waiters {
            assert_eq!(w.join().unwrap().body(), "shared");
        }
        assert_eq!(builds.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn bounded() {
        let c: ResponseCache<u32> = ResponseCache::new(2);
        for k in 0..5 {
            c.get_or_build(&k, || Some((0, Payload::new("x"))));
            assert!(c.len() <= 2);
        }
    }

    #[test]
    fn gzip_round_trips_both_ways() {
        let p = Payload::new("hello hello hello");
        let gz = p.gzipped();
        let mut out = String::new();
        flate2::read::GzDecoder::new(&gz[..]).read_to_string(&mut out).unwrap();
        assert_eq!(out, "hello hello hello");
        assert_eq!(Payload::from_gzip(gz).body(), "hello hello hello");
    }
}
