//! Response cache: encoded (and lazily gzipped) payloads of the expensive reads, dropped as
//! a whole on every registry change. Eureka serves from a read-only copy refreshed every
//! 30 s, so a registration can stay invisible for that long; here a change is visible to
//! the very next read, and repeated reads between changes cost a hash-map lookup.

use std::collections::HashMap;
use std::hash::Hash;
use std::io::Write;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use parking_lot::Mutex;

/// An encoded response body.
#[derive(Debug)]
pub struct Payload {
    pub body: Bytes,
    gzip: OnceLock<Bytes>,
}

impl Payload {
    /// Wraps an encoded body.
    pub fn new(body: impl Into<Bytes>) -> Self {
        Payload { body: body.into(), gzip: OnceLock::new() }
    }

    /// The body gzipped, computed once per payload.
    pub fn gzipped(&self) -> Bytes {
        self.gzip
            .get_or_init(|| {
                let mut enc = flate2::write::GzEncoder::new(
                    Vec::with_capacity(self.body.len() / 4 + 64),
                    flate2::Compression::fast(),
                );
                // Writing into a Vec cannot fail.
                let _ = enc.write_all(&self.body);
                Bytes::from(enc.finish().unwrap_or_default())
            })
            .clone()
    }
}

struct Inner<K> {
    generation: u64,
    entries: HashMap<K, Arc<Payload>>,
}

/// Generation-stamped payload cache with a bounded number of entries.
pub struct ResponseCache<K> {
    inner: Mutex<Inner<K>>,
    max_entries: usize,
}

impl<K: Eq + Hash + Clone> ResponseCache<K> {
    /// A cache holding at most `max_entries` payloads (VIP names and app names come from
    /// callers, so the key space is unbounded; on overflow the cache starts over).
    pub fn new(max_entries: usize) -> Self {
        ResponseCache { inner: Mutex::new(Inner { generation: 0, entries: HashMap::new() }), max_entries }
    }

    /// Drops every payload; called on each registry change.
    pub fn invalidate(&self) {
        let mut inner = self.inner.lock();
        inner.generation += 1;
        inner.entries.clear();
    }

    /// Current generation; read it together with the registry view a payload is built from.
    pub fn generation(&self) -> u64 {
        self.inner.lock().generation
    }

    /// A cached payload for `key`.
    pub fn get(&self, key: &K) -> Option<Arc<Payload>> {
        self.inner.lock().entries.get(key).cloned()
    }

    /// Stores a payload built from the view taken at `generation`; ignored if the registry
    /// changed since, so a stale payload never outlives the change that made it stale.
    pub fn put(&self, key: K, generation: u64, payload: Arc<Payload>) {
        let mut inner = self.inner.lock();
        if inner.generation != generation {
            return;
        }
        if inner.entries.len() >= self.max_entries {
            inner.entries.clear();
        }
        inner.entries.insert(key, payload);
    }

    /// Number of cached payloads.
    pub fn len(&self) -> usize {
        self.inner.lock().entries.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_generation_is_not_stored() {
        let c: ResponseCache<&str> = ResponseCache::new(4);
        let g = c.generation();
        c.invalidate();
        c.put("apps", g, Arc::new(Payload::new("old")));
        assert!(c.get(&"apps").is_none());
        c.put("apps", c.generation(), Arc::new(Payload::new("new")));
        assert_eq!(c.get(&"apps").unwrap().body, "new");
        c.invalidate();
        assert!(c.get(&"apps").is_none());
    }

    #[test]
    fn bounded() {
        let c: ResponseCache<u32> = ResponseCache::new(2);
        for k in 0..5 {
            c.put(k, 0, Arc::new(Payload::new("x")));
            assert!(c.len() <= 2);
        }
    }

    #[test]
    fn gzip_round_trips() {
        let p = Payload::new("hello hello hello");
        let gz = p.gzipped();
        let mut out = String::new();
        use std::io::Read;
        flate2::read::GzDecoder::new(&gz[..]).read_to_string(&mut out).unwrap();
        assert_eq!(out, "hello hello hello");
    }
}
