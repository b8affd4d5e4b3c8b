//! Durable registry records in sled: a journal of group commits plus a snapshot file.
//!
//! Every instance's state is a record (`APP \0 id` -> bincode [`PersistedEntry`]). Writers hand
//! their changed records to one writer thread in apply order ([`writer`]); it writes everything
//! queued as journal records (one sled value per group commit, keyed by sequence number),
//! flushes sled and then `fdatasync`s sled's data file, and only then acknowledges every write
//! in the batch. sled 0.34.7's `flush()` ends with `sync_file_range`, which survives a process
//! crash but not a power loss; the extra `fdatasync` closes that gap, and one sync is shared by
//! all writes that arrived meanwhile.
//!
//! A compaction thread ([`compact`]) folds the journal into a snapshot file once the journal
//! has grown past the snapshot's size (at least 32 MiB), so disk use and restart time stay
//! proportional to the registry, and its cost per write stays constant.
//!
//! The store knows nothing about replication, so every p2p node can keep its own copy with
//! it; raft mode keeps its log and state machine in sled through openraft instead.

mod compact;
mod frame;
mod writer;

use std::collections::HashSet;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, SystemTime};

use tokio::sync::oneshot;

use crate::core::model::InstanceKey;
use crate::core::state::{PersistedEntry, PersistedRef};

/// Store failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("data dir {0} is in use by another synod process (sled lock held)")]
    Locked(PathBuf),
    #[error("cannot open data dir {path}: {source}")]
    Open { path: PathBuf, source: sled::Error },
    #[error("storage error: {0}")]
    Sled(#[from] sled::Error),
    #[error("storage I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("the store's writer has stopped")]
    Closed,
    #[error("unreadable or oversized registry record {0}")]
    Corrupt(String),
    /// Readable, but not something the node can run with; the message says how to recover.
    #[error("{0}")]
    Unusable(String),
}

/// One record change.
#[derive(Debug)]
pub enum Change<'a> {
    /// Write the instance's record, or delete it (`None`).
    Instance(&'a InstanceKey, Option<PersistedRef<'a>>),
    /// Write the instance's tombstone (the version that deleted it), or delete it.
    Tombstone(&'a InstanceKey, Option<u64>),
}

/// First byte of a tombstone's key; instance keys start with an app name, which holds no
/// control characters.
const TOMBSTONE_PREFIX: u8 = 1;

/// An encoded record change: key, and the value to write or `None` to delete.
type Op = (Vec<u8>, Option<Vec<u8>>);

/// What a restart restores.
#[derive(Debug, Default)]
pub struct Restored {
    pub entries: Vec<PersistedEntry>,
    /// Cancelled instances and the versions that deleted them.
    pub tombstones: Vec<(InstanceKey, u64)>,
    /// The registry's change counter when it was last written.
    pub version: u64,
}

/// Largest encoded record; registry limits keep records far below it, and below sled's blob
/// threshold (a quarter of its 512 KiB segment), so every record lives in the synced log file.
const MAX_RECORD: usize = 100 * 1024;

/// Journal bytes after which a compaction is due, at least.
const COMPACT_MIN_BYTES: u64 = 32 * 1024 * 1024;

const FORMAT_KEY: &[u8] = b"format";
/// `1`: one sled record per instance; `2`: journal + snapshot (a `1` store is read and
/// converted by its first compaction).
const FORMAT: &[u8] = b"2";
const LEGACY_FORMAT: &[u8] = b"1";

/// The durable registry store.
pub struct Store {
    files: Arc<compact::Files>,
    tx: Option<mpsc::Sender<writer::Job>>,
    writer: Option<thread::JoinHandle<()>>,
    compactor: Option<thread::JoinHandle<()>>,
    sync_stats: Arc<SyncStats>,
    failure: writer::Failure,
    #[cfg(test)]
    fail_syncs: Arc<std::sync::atomic::AtomicU32>,
}

/// A sled database plus a handle on its files, for syncs that survive power loss.
pub struct SyncedDb {
    pub db: sled::Db,
    /// sled keeps every tree in this one log file, except pages too large for its segments.
    pub data_file: File,
    /// Where sled writes pages larger than a quarter of a segment, one file each, which it
    /// never syncs. Journal and raft records stay below that size, but sled writes a whole
    /// leaf node (up to 17 of them) when it consolidates one, and such a node can be larger.
    blobs: PathBuf,
    synced_blobs: Mutex<SyncedBlobs>,
    /// How long syncs take and how much each one covers.
    pub stats: Arc<SyncStats>,
}

/// Figures of a database's syncs, for `/metrics`.
#[derive(Debug)]
pub struct SyncStats {
    /// Flush plus `fdatasync`, per sync.
    pub latency: crate::metrics::Histogram,
    /// Writes made durable by one sync (group commit), as the caller counts them.
    pub group: crate::metrics::Histogram,
}

impl SyncStats {
    /// Writes the sync figures and whether the disk takes writes, for `/metrics`.
    pub fn expose(&self, accepts_writes: bool, e: &mut crate::metrics::Exposition<'_>) -> std::fmt::Result {
        e.histogram("synod_store_sync_duration_seconds", "Time to flush and fdatasync the store.", &self.latency)?;
        e.histogram("synod_store_sync_group_size", "Writes made durable by one sync (group commit).", &self.group)?;
        e.gauge(
            "synod_store_accepts_writes",
            "0 once a failed write or sync made the store refuse writes until a restart.",
            i64::from(accepts_writes),
        )
    }
}

impl Default for SyncStats {
    fn default() -> Self {
        SyncStats { latency: crate::metrics::Histogram::latency(), group: crate::metrics::Histogram::counts() }
    }
}

/// What [`SyncedDb::sync_blobs`] knows about the blob directory.
#[derive(Default)]
struct SyncedBlobs {
    /// Blob files already synced; files sled has since removed are dropped from it.
    names: HashSet<std::ffi::OsString>,
    /// The directory's modification time when it was last listed, if that time was already
    /// well in the past then: while it stays the same, no file was added and the listing
    /// (a few syscalls on every sync) is skipped.
    listed_at_mtime: Option<SystemTime>,
}

/// How old a directory's modification time must be before an unchanged one is trusted: a
/// file created within the same clock tick as the last listing could leave it unchanged.
const MTIME_SETTLED: Duration = Duration::from_secs(1);

impl SyncedDb {
    /// Opens (or creates) a sled database in `dir`; a directory locked by another process is
    /// reported as [`StoreError::Locked`]. The files created on first start are synced, with
    /// the directory, so they are themselves durable.
    pub fn open(dir: &Path) -> Result<SyncedDb, StoreError> {
        std::fs::create_dir_all(dir)?;
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(64 * 1024 * 1024)
            .open()
            .map_err(|e| classify_open_error(dir, e))?;
        let data_file = File::open(dir.join("db"))?;
        db.flush()?;
        data_file.sync_all()?;
        File::open(dir)?.sync_all()?;
        let synced =
            SyncedDb { db, data_file, blobs: dir.join("blobs"), synced_blobs: Mutex::default(), stats: Arc::default() };
        synced.sync_blobs()?;
        Ok(synced)
    }

    /// Flushes sled's buffers and syncs its files: everything written before is durable.
    pub fn sync(&self) -> Result<(), StoreError> {
        let started = std::time::Instant::now();
        self.db.flush()?;
        self.data_file.sync_data()?;
        self.sync_blobs()?;
        self.stats.latency.observe_duration(started.elapsed());
        Ok(())
    }

    /// Syncs the blob files written since the last call, and then their directory. A set of
    /// names rather than the highest one: sled writes blobs from several threads, so one with
    /// a lower name can appear after a higher one was synced.
    fn sync_blobs(&self) -> Result<(), StoreError> {
        let now = SystemTime::now();
        let mtime = match std::fs::metadata(&self.blobs) {
            Ok(m) => m.modified()?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let mut synced = self.synced_blobs.lock().unwrap_or_else(|e| e.into_inner());
        if synced.listed_at_mtime == Some(mtime) {
            return Ok(());
        }
        let entries = match std::fs::read_dir(&self.blobs) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let mut present = HashSet::with_capacity(synced.names.len());
        let mut new = false;
        for entry in entries {
            let name = entry?.file_name();
            if !synced.names.contains(&name) {
                match File::open(self.blobs.join(&name)) {
                    Ok(f) => f.sync_data()?,
                    // Removed by sled's blob collection since the listing.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e.into()),
                }
                new = true;
            }
            present.insert(name);
        }
        if new {
            File::open(&self.blobs)?.sync_all()?;
        }
        let settled = now.duration_since(mtime).is_ok_and(|age| age >= MTIME_SETTLED);
        *synced = SyncedBlobs { names: present, listed_at_mtime: settled.then_some(mtime) };
        Ok(())
    }
}

/// Replaces `dir/name` with what `write` produces so that a crash leaves either the old or the
/// new file whole: written to `dir/tmp` (buffered), fsynced, renamed over `name`, and the
/// directory fsynced.
pub fn write_file_durably<E: From<std::io::Error>>(
    dir: &Path,
    tmp: &str,
    name: &str,
    write: impl FnOnce(&mut BufWriter<File>) -> Result<(), E>,
) -> Result<(), E> {
    let tmp = dir.join(tmp);
    let mut w = BufWriter::with_capacity(1 << 20, File::create(&tmp)?);
    write(&mut w)?;
    let f = w.into_inner().map_err(|e| e.into_error())?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(name))?;
    File::open(dir)?.sync_all()?;
    Ok(())
}

impl Store {
    /// Opens (or creates) the store under `dir`, compacting after at least 32 MiB of journal.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        Store::open_with(dir, COMPACT_MIN_BYTES)
    }

    /// [`Store::open`] with the journal size that makes a compaction due at least.
    pub fn open_with(dir: &Path, compact_min_bytes: u64) -> Result<Store, StoreError> {
        let synced = SyncedDb::open(dir)?;
        let sync_stats = synced.stats.clone();
        let db = synced.db.clone();
        let meta = db.open_tree("meta")?;
        match meta.get(FORMAT_KEY)? {
            None => {}
            Some(v) if v.as_ref() == FORMAT || v.as_ref() == LEGACY_FORMAT => {}
            Some(v) => {
                return Err(StoreError::Io(std::io::Error::other(format!(
                    "unsupported store format {:?} in {}",
                    String::from_utf8_lossy(&v),
                    dir.display()
                ))))
            }
        }
        let journal = db.open_tree("journal")?;
        let files = Arc::new(compact::Files::new(db, journal.clone(), dir));
        // After the newest record, and after the snapshot: records the snapshot already holds
        // are skipped on load, so a reused number would hide a new record.
        let last = match journal.last()? {
            Some((k, _)) => k.as_ref().try_into().map(u64::from_be_bytes).map_err(|_| compact::corrupt_key(&k))?,
            None => 0,
        };
        let next_seq = last.max(files.snapshot_through()?) + 1;
        let (compactor, compactor_thread) = compact::Compactor::start(files.clone(), compact_min_bytes)?;
        let failure = writer::Failure::default();
        let (tx, rx) = mpsc::channel::<writer::Job>();
        #[cfg(test)]
        let fail_syncs = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let writer = writer::Writer {
            synced,
            journal,
            failure: failure.clone(),
            compactor,
            next_seq,
            #[cfg(test)]
            fail_syncs: fail_syncs.clone(),
        }
        .spawn(rx)?;
        // Written (or upgraded from the first layout) once this code can run on the store.
        meta.insert(FORMAT_KEY, FORMAT)?;
        Ok(Store {
            files,
            tx: Some(tx),
            writer: Some(writer),
            compactor: Some(compactor_thread),
            sync_stats,
            failure,
            #[cfg(test)]
            fail_syncs,
        })
    }

    /// Every stored entry and the change counter. An unreadable record stops start-up rather
    /// than being dropped: a silently shrunken registry is worse than a clear error.
    pub fn load(&self) -> Result<Restored, StoreError> {
        self.files.read(|merged| {
            tracing::debug!(journal_bytes = merged.journal_bytes, "registry store read");
            let mut out = Restored { entries: Vec::new(), tombstones: Vec::new(), version: merged.header.version };
            merged.for_each(&mut |key, value| {
                if key.first() == Some(&TOMBSTONE_PREFIX) {
                    out.tombstones.push(decode_tombstone(key, value)?);
                    return Ok(());
                }
                let (entry, _) =
                    bincode::serde::decode_from_slice::<PersistedEntry, _>(value, bincode::config::standard())
                        .map_err(|e| StoreError::Corrupt(format!("{}: {e}", String::from_utf8_lossy(key))))?;
                out.entries.push(entry);
                Ok(())
            })?;
            Ok(out)
        })
    }

    /// How long the journal's syncs take and how many writes each covers.
    pub fn sync_stats(&self) -> &SyncStats {
        &self.sync_stats
    }

    /// Why the store refuses writes, if it does: after a failed write or sync it refuses
    /// every later one until the process restarts (see [`writer`] for why it does not retry).
    pub fn failure(&self) -> Option<&str> {
        self.failure.get().map(String::as_str)
    }

    /// Queues changes and the registry's change counter, in order; the receiver resolves once
    /// they are durable. Call this in the same critical section as the apply that produced
    /// them so the store sees changes in apply order.
    pub fn submit(&self, changes: Vec<Change<'_>>, version: u64) -> oneshot::Receiver<Result<(), String>> {
        let (done, rx) = oneshot::channel();
        let mut ops = Vec::with_capacity(changes.len());
        for change in changes {
            match change {
                Change::Instance(key, entry) => {
                    let value = match entry.map(|e| encode(key, &e)).transpose() {
                        Ok(v) => v,
                        Err(e) => {
                            let _ = done.send(Err(e.to_string()));
                            return rx;
                        }
                    };
                    ops.push((encode_key(key), value));
                }
                Change::Tombstone(key, version) => {
                    let mut k = vec![TOMBSTONE_PREFIX];
                    k.extend_from_slice(&encode_key(key));
                    ops.push((k, version.map(|v| v.to_be_bytes().to_vec())));
                }
            }
        }
        match &self.tx {
            Some(tx) => {
                if let Err(mpsc::SendError(job)) = tx.send(writer::Job { ops, version, done }) {
                    let _ = job.done.send(Err(StoreError::Closed.to_string()));
                }
            }
            None => {
                let _ = done.send(Err(StoreError::Closed.to_string()));
            }
        }
        rx
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // Closing the channel lets the writer finish what is queued and exit; its exit closes
        // the compactor's channel in turn.
        self.tx.take();
        for handle in [self.writer.take(), self.compactor.take()].into_iter().flatten() {
            let _ = handle.join();
        }
    }
}

fn encode(key: &InstanceKey, e: &PersistedRef<'_>) -> Result<Vec<u8>, StoreError> {
    let bytes = bincode::serde::encode_to_vec(e, bincode::config::standard())
        .map_err(|err| StoreError::Corrupt(format!("{key}: cannot encode: {err}")))?;
    if bytes.len() > MAX_RECORD {
        return Err(StoreError::Corrupt(format!("{key}: record of {} bytes exceeds {MAX_RECORD}", bytes.len())));
    }
    Ok(bytes)
}

fn classify_open_error(dir: &Path, e: sled::Error) -> StoreError {
    let text = e.to_string();
    if text.contains("lock") || text.contains("WouldBlock") || text.contains("Resource temporarily unavailable") {
        StoreError::Locked(dir.to_path_buf())
    } else {
        StoreError::Open { path: dir.to_path_buf(), source: e }
    }
}

fn decode_tombstone(key: &[u8], value: &[u8]) -> Result<(InstanceKey, u64), StoreError> {
    let bad = || StoreError::Corrupt(format!("tombstone {}", String::from_utf8_lossy(key)));
    let text = std::str::from_utf8(&key[1..]).map_err(|_| bad())?;
    let (app, id) = text.split_once('\0').ok_or_else(bad)?;
    let version = value.try_into().map(u64::from_be_bytes).map_err(|_| bad())?;
    Ok((InstanceKey { app: app.to_string(), id: id.to_string() }, version))
}

fn encode_key(key: &InstanceKey) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.app.len() + key.id.len() + 1);
    k.extend_from_slice(key.app.as_bytes());
    k.push(0);
    k.extend_from_slice(key.id.as_bytes());
    k
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::command::Command;
    use crate::core::state::{CoreConfig, RegistryState};

    #[tokio::test]
    async fn records_round_trip_through_disk() {
        let dir = tempfile::tempdir().unwrap();
        let mut st = RegistryState::new(CoreConfig::default());
        let tree = crate::codec::json::parse(
            br#"{"instance":{"instanceId":"i1","hostName":"h","app":"a","ipAddr":"1.2.3.4",
            "dataCenterInfo":{"name":"MyOwn"},"metadata":{"k":"v"}}}"#,
        )
        .unwrap();
        let instance = crate::codec::decode::registration(&tree, 5).unwrap();
        let key = InstanceKey::new("A", "i1");
        st.apply(Command::Register { instance: Box::new(instance), now: 10, from_peer: false });
        {
            let store = reopen(dir.path(), COMPACT_MIN_BYTES);
            let done = store.submit(vec![Change::Instance(&key, st.persisted_ref(&key))], st.version());
            done.await.unwrap().unwrap();
        }
        let store = reopen(dir.path(), COMPACT_MIN_BYTES);
        let restored = store.load().unwrap();
        assert_eq!(restored.version, 1);
        assert_eq!(restored.entries, vec![st.persisted(&key).unwrap()]);
        // Deleting the key removes the record.
        store.submit(vec![Change::Instance(&key, None)], 2).await.unwrap().unwrap();
        assert!(store.load().unwrap().entries.is_empty());
        // A tombstone is a record of its own, kept until it is deleted.
        store.submit(vec![Change::Tombstone(&key, Some(77))], 3).await.unwrap().unwrap();
        drop(store);
        let store = reopen(dir.path(), COMPACT_MIN_BYTES);
        let restored = store.load().unwrap();
        assert!(restored.entries.is_empty());
        assert_eq!(restored.tombstones, vec![(key.clone(), 77)]);
        store.submit(vec![Change::Tombstone(&key, None)], 4).await.unwrap().unwrap();
        assert!(store.load().unwrap().tombstones.is_empty());
    }

    /// Opens the store in `dir`. A store just dropped in this process may hold sled's file
    /// lock a moment longer (sled's I/O pool finishes its last job), so a reopen waits for it.
    fn reopen(dir: &Path, compact_min_bytes: u64) -> Store {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match Store::open_with(dir, compact_min_bytes) {
                Ok(store) => return store,
                Err(StoreError::Locked(_)) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(10))
                }
                Err(e) => panic!("cannot open the store: {e}"),
            }
        }
    }

    /// Registers instance `id` of app A in `st`; returns its key.
    fn register(st: &mut RegistryState, id: &str) -> InstanceKey {
        let body = format!(
            r#"{{"instance":{{"instanceId":"{id}","hostName":"h","app":"A","ipAddr":"1.2.3.4","dataCenterInfo":{{"name":"MyOwn"}}}}}}"#
        );
        let tree = crate::codec::json::parse(body.as_bytes()).unwrap();
        let instance = crate::codec::decode::registration(&tree, 5).unwrap();
        st.apply(Command::Register { instance: Box::new(instance), now: 10, from_peer: false });
        InstanceKey::new("A", id)
    }

    async fn put(store: &Store, st: &RegistryState, key: &InstanceKey) {
        store.submit(vec![Change::Instance(key, st.persisted_ref(key))], st.version()).await.unwrap().unwrap();
    }

    fn ids(restored: &Restored) -> Vec<String> {
        let mut ids: Vec<String> = restored.entries.iter().map(|e| e.info.instance_id.clone()).collect();
        ids.sort();
        ids
    }

    async fn wait_compacted_through(store: &Store, seq: u64) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while store.files.snapshot_through().unwrap() < seq {
            assert!(std::time::Instant::now() < deadline, "no compaction through {seq}");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn compaction_folds_the_journal_into_a_snapshot_and_loads_the_same_registry() {
        let dir = tempfile::tempdir().unwrap();
        let mut st = RegistryState::new(CoreConfig::default());
        let mut expected = Vec::new();
        {
            // A compaction is due after every write (one at a time).
            let store = reopen(dir.path(), 1);
            for i in 0..200 {
                let key = register(&mut st, &format!("i{i:03}"));
                put(&store, &st, &key).await;
                if i % 3 == 0 {
                    store.submit(vec![Change::Instance(&key, None)], st.version()).await.unwrap().unwrap();
                } else {
                    expected.push(key.id.clone());
                }
            }
            wait_compacted_through(&store, 1).await;
            // Trimmed: the journal keeps only records after the snapshot.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            loop {
                let first = store.files.journal.first().unwrap().map(|(k, _)| k.to_vec());
                let through = store.files.snapshot_through().unwrap();
                if first.is_none_or(|k| k.as_slice() > through.to_be_bytes().as_slice()) {
                    break;
                }
                assert!(std::time::Instant::now() < deadline, "journal never trimmed behind the snapshot");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            assert!(store.files.journal.len() < 200, "journal not trimmed: {} records", store.files.journal.len());
            assert_eq!(ids(&store.load().unwrap()), expected);
        }
        let store = reopen(dir.path(), COMPACT_MIN_BYTES);
        let restored = store.load().unwrap();
        assert_eq!(ids(&restored), expected);
        assert_eq!(restored.version, st.version());
        // Sequence numbers continue after the snapshot; a delete of a snapshotted record is
        // folded into the next snapshot (no compaction is due at the default threshold, so
        // this one is the only one running).
        let key = register(&mut st, "later");
        put(&store, &st, &key).await;
        expected.push("later".into());
        let gone = InstanceKey::new("A", &expected.remove(0));
        store.submit(vec![Change::Instance(&gone, None)], st.version()).await.unwrap().unwrap();
        let last = store.files.journal.last().unwrap().map(|(k, _)| u64::from_be_bytes(k.as_ref().try_into().unwrap()));
        store.files.compact(last.unwrap()).unwrap();
        assert!(store.files.journal.is_empty());
        drop(store);
        assert_eq!(ids(&reopen(dir.path(), COMPACT_MIN_BYTES).load().unwrap()), expected);
    }

    #[tokio::test]
    async fn a_failed_sync_stops_the_store_and_a_restart_reads_back_what_was_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let mut st = RegistryState::new(CoreConfig::default());
        let store = reopen(dir.path(), COMPACT_MIN_BYTES);
        let a = register(&mut st, "a");
        put(&store, &st, &a).await;
        assert!(store.failure().is_none());
        let b = register(&mut st, "b");
        store.fail_syncs.store(1, std::sync::atomic::Ordering::Release);
        let failed = store.submit(vec![Change::Instance(&b, st.persisted_ref(&b))], st.version());
        assert!(failed.await.unwrap().is_err(), "a failed sync was acknowledged");
        assert!(store.failure().is_some_and(|e| e.contains("injected sync failure")), "{:?}", store.failure());
        // No retry on the same database: later writes are refused, and not written.
        let c = register(&mut st, "c");
        let refused = store.submit(vec![Change::Instance(&c, st.persisted_ref(&c))], st.version()).await.unwrap();
        assert!(refused.unwrap_err().contains("injected sync failure"));
        assert!(store.failure().is_some());
        drop(store);
        let store = reopen(dir.path(), COMPACT_MIN_BYTES);
        assert!(store.failure().is_none());
        let restored = ids(&store.load().unwrap());
        // "b" was inserted before its sync failed, so it may be on disk; it was not
        // acknowledged, so losing it would be allowed too.
        assert!(restored == ["a"] || restored == ["a", "b"], "{restored:?}");
        put(&store, &st, &c).await;
        drop(store);
        assert!(ids(&reopen(dir.path(), COMPACT_MIN_BYTES).load().unwrap()).contains(&"c".to_string()));
    }

    #[test]
    fn a_sync_covers_the_pages_sled_writes_as_blob_files() {
        let dir = tempfile::tempdir().unwrap();
        let db = SyncedDb::open(dir.path()).unwrap();
        // A value above a quarter of sled's 512 KiB segment is written as a blob file, as a
        // consolidated leaf node of many journal records can be.
        db.db.insert(b"big", vec![7u8; 200 * 1024]).unwrap();
        db.sync().unwrap();
        let on_disk: HashSet<_> =
            std::fs::read_dir(dir.path().join("blobs")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert!(!on_disk.is_empty(), "sled wrote no blob file");
        assert_eq!(db.synced_blobs.lock().unwrap().names, on_disk);

        // Once the directory's modification time has settled, a sync does not list it again,
        // but a new blob file changes that time and is synced.
        let blobs = dir.path().join("blobs");
        File::open(&blobs).unwrap().set_modified(SystemTime::now() - Duration::from_secs(10)).unwrap();
        db.sync().unwrap();
        assert!(db.synced_blobs.lock().unwrap().listed_at_mtime.is_some());
        db.db.insert(b"bigger", vec![8u8; 300 * 1024]).unwrap();
        db.sync().unwrap();
        let on_disk: HashSet<_> = std::fs::read_dir(&blobs).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert!(on_disk.len() > 1, "sled wrote no second blob file");
        assert_eq!(db.synced_blobs.lock().unwrap().names, on_disk);
    }

    #[tokio::test]
    async fn journal_records_already_in_the_snapshot_are_not_replayed() {
        // A crash between writing a snapshot and trimming the journal leaves records the
        // snapshot contains; replaying a stale "put" would resurrect a deleted instance.
        let dir = tempfile::tempdir().unwrap();
        let mut st = RegistryState::new(CoreConfig::default());
        let store = reopen(dir.path(), COMPACT_MIN_BYTES);
        let key = register(&mut st, "gone");
        put(&store, &st, &key).await;
        let (seq, stale) = store.files.journal.first().unwrap().unwrap();
        store.submit(vec![Change::Instance(&key, None)], st.version() + 1).await.unwrap().unwrap();
        let through = u64::from_be_bytes(store.files.journal.last().unwrap().unwrap().0.as_ref().try_into().unwrap());
        store.files.compact(through).unwrap();
        assert!(store.files.journal.is_empty());
        store.files.journal.insert(seq, stale).unwrap();
        drop(store);
        let store = reopen(dir.path(), COMPACT_MIN_BYTES);
        let restored = store.load().unwrap();
        assert!(restored.entries.is_empty(), "{:?}", ids(&restored));
        assert_eq!(restored.version, st.version() + 1);
        // New records are numbered after the snapshot, not after the stale record, or they
        // too would be taken for records the snapshot holds.
        let key = register(&mut st, "new");
        put(&store, &st, &key).await;
        drop(store);
        assert_eq!(ids(&reopen(dir.path(), COMPACT_MIN_BYTES).load().unwrap()), vec!["new".to_string()]);
    }

    #[tokio::test]
    async fn a_store_of_the_first_layout_is_read_and_converted() {
        let dir = tempfile::tempdir().unwrap();
        let mut st = RegistryState::new(CoreConfig::default());
        let old = register(&mut st, "old");
        {
            // One sled record per instance plus the change counter, as the first layout wrote.
            let db = SyncedDb::open(dir.path()).unwrap();
            db.db.open_tree("meta").unwrap().insert(FORMAT_KEY, LEGACY_FORMAT).unwrap();
            let tree = db.db.open_tree("instances").unwrap();
            tree.insert(encode_key(&old), encode(&old, &st.persisted_ref(&old).unwrap()).unwrap()).unwrap();
            tree.insert(b"\0version", &st.version().to_be_bytes()).unwrap();
            db.sync().unwrap();
        }
        {
            let store = reopen(dir.path(), 1);
            let restored = store.load().unwrap();
            assert_eq!(ids(&restored), vec!["old".to_string()]);
            assert_eq!(restored.version, st.version());
            let new = register(&mut st, "new");
            put(&store, &st, &new).await;
            // The snapshot becomes visible before the compaction drops the first-layout tree.
            wait_compacted_through(&store, 1).await;
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while store.files.db.tree_names().iter().any(|n| n.as_ref() == b"instances") {
                assert!(std::time::Instant::now() < deadline, "first-layout tree kept");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
        let restored = reopen(dir.path(), COMPACT_MIN_BYTES).load().unwrap();
        assert_eq!(ids(&restored), vec!["new".to_string(), "old".to_string()]);
    }
}
