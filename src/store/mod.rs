//! Durable registry records in sled, with group commit.
//!
//! Each instance is one key (`APP \0 id`) holding its [`PersistedEntry`]. Writers hand their
//! changed records to one writer thread in apply order; the thread takes everything queued,
//! writes it as one atomic sled batch, flushes sled and then `fdatasync`s sled's data file,
//! and only then acknowledges every write in the batch. sled 0.34.7's `flush()` ends with
//! `sync_file_range`, which survives a process crash but not a power loss; the extra
//! `fdatasync` closes that gap, and one sync is shared by all writes that arrived meanwhile.
//!
//! The store knows nothing about replication, so every p2p node can keep its own copy with
//! it; raft mode keeps its log and state machine in sled through openraft instead.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

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
}

/// One record change: write the entry, or delete the key.
pub type Change<'a> = (&'a InstanceKey, Option<PersistedRef<'a>>);

/// What a restart restores.
#[derive(Debug, Default)]
pub struct Restored {
    pub entries: Vec<PersistedEntry>,
    /// The registry's change counter when it was last written.
    pub version: u64,
}

/// Largest encoded record; registry limits keep records far below it, and below sled's blob
/// threshold (a quarter of its 512 KiB segment), so every record lives in the synced log file.
const MAX_RECORD: usize = 100 * 1024;

/// Reserved key holding the change counter (no app name is empty or contains `\0`).
const VERSION_KEY: &[u8] = b"\0version";

type Op = (Vec<u8>, Option<Vec<u8>>);

/// How long the writer lets concurrent writes gather before a sync.
const LINGER: Duration = Duration::from_micros(LINGER_US);
const LINGER_US: u64 = 300;

struct Job {
    ops: Vec<Op>,
    done: oneshot::Sender<Result<(), String>>,
}

/// The durable registry store.
pub struct Store {
    tree: sled::Tree,
    tx: Option<mpsc::Sender<Job>>,
    writer: Option<thread::JoinHandle<()>>,
    healthy: Arc<AtomicBool>,
}

const FORMAT_KEY: &[u8] = b"format";

/// A sled database plus a handle on its log file, for syncs that survive power loss.
pub struct SyncedDb {
    pub db: sled::Db,
    /// sled keeps every tree in this one file; `fdatasync` on it after sled's own flush makes
    /// everything flushed so far durable against power loss.
    pub data_file: File,
}

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
        Ok(SyncedDb { db, data_file })
    }

    /// Flushes sled's buffers and syncs its log file: everything written before is durable.
    pub fn sync(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        self.data_file.sync_data()?;
        Ok(())
    }
}
const FORMAT: &[u8] = b"1";

impl Store {
    /// Opens (or creates) the store under `dir`.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let synced = SyncedDb::open(dir)?;
        let db = synced.db.clone();
        let meta = db.open_tree("meta")?;
        match meta.get(FORMAT_KEY)? {
            None => {
                meta.insert(FORMAT_KEY, FORMAT)?;
            }
            Some(v) if v.as_ref() == FORMAT => {}
            Some(v) => {
                return Err(StoreError::Io(std::io::Error::other(format!(
                    "unsupported store format {:?} in {}",
                    String::from_utf8_lossy(&v),
                    dir.display()
                ))))
            }
        }
        let tree = db.open_tree("instances")?;
        let healthy = Arc::new(AtomicBool::new(true));
        let (tx, rx) = mpsc::channel::<Job>();
        let writer = {
            let (tree, healthy) = (tree.clone(), healthy.clone());
            thread::Builder::new()
                .name("synod-store".into())
                .spawn(move || Writer { synced, tree, healthy, carry: Vec::new(), last_batch: 0 }.run(rx))?
        };
        Ok(Store { tree, tx: Some(tx), writer: Some(writer), healthy })
    }

    /// Every stored entry and the change counter. An unreadable record stops start-up rather
    /// than being dropped: a silently shrunken registry is worse than a clear error.
    pub fn load(&self) -> Result<Restored, StoreError> {
        let mut out = Restored::default();
        for item in self.tree.iter() {
            let (key, value) = item?;
            if key.as_ref() == VERSION_KEY {
                let bytes: [u8; 8] = value.as_ref().try_into().map_err(|_| StoreError::Corrupt("version".into()))?;
                out.version = u64::from_be_bytes(bytes);
                continue;
            }
            let (entry, _) =
                bincode::serde::decode_from_slice::<PersistedEntry, _>(&value, bincode::config::standard())
                    .map_err(|e| StoreError::Corrupt(format!("{}: {e}", String::from_utf8_lossy(&key))))?;
            out.entries.push(entry);
        }
        Ok(out)
    }

    /// Whether the last write reached the disk. After a failure the writer keeps retrying the
    /// failed records (so disk catches up with memory) and this reports false until one
    /// succeeds.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Queues changes and the registry's change counter, in order; the receiver resolves once
    /// they are durable. Call this in the same critical section as the apply that produced
    /// them so the store sees changes in apply order.
    pub fn submit(&self, changes: Vec<Change<'_>>, version: u64) -> oneshot::Receiver<Result<(), String>> {
        let (done, rx) = oneshot::channel();
        let mut ops = Vec::with_capacity(changes.len() + 1);
        for (key, entry) in changes {
            let value = match entry.map(|e| encode(key, &e)).transpose() {
                Ok(v) => v,
                Err(e) => {
                    let _ = done.send(Err(e.to_string()));
                    return rx;
                }
            };
            ops.push((encode_key(key), value));
        }
        ops.push((VERSION_KEY.to_vec(), Some(version.to_be_bytes().to_vec())));
        match &self.tx {
            Some(tx) => {
                if let Err(mpsc::SendError(job)) = tx.send(Job { ops, done }) {
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
        // Closing the channel lets the writer finish what is queued and exit.
        self.tx.take();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
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

fn encode_key(key: &InstanceKey) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.app.len() + key.id.len() + 1);
    k.extend_from_slice(key.app.as_bytes());
    k.push(0);
    k.extend_from_slice(key.id.as_bytes());
    k
}

/// The writer thread: group commit.
struct Writer {
    synced: SyncedDb,
    tree: sled::Tree,
    healthy: Arc<AtomicBool>,
    /// Operations of batches that failed: their writers were told so, but memory already
    /// holds the change, so they are written again (before newer ones) until they stick.
    carry: Vec<Op>,
    /// Jobs in the previous batch.
    last_batch: usize,
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Job>) {
        loop {
            let first = if self.carry.is_empty() {
                match rx.recv() {
                    Ok(job) => Some(job),
                    Err(_) => return,
                }
            } else {
                match rx.recv_timeout(Duration::from_secs(1)) {
                    Ok(job) => Some(job),
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        let _ = self.write(std::iter::empty());
                        return;
                    }
                }
            };
            // Under concurrent load, wait a moment so more writers join this sync: each
            // flush + fdatasync costs far more CPU than the records it carries. A lone writer
            // (previous batch of one) is synced at once.
            if self.last_batch > 1 && !LINGER.is_zero() {
                thread::sleep(LINGER);
            }
            let mut jobs: Vec<Job> = first.into_iter().collect();
            while let Ok(more) = rx.try_recv() {
                jobs.push(more);
            }
            self.last_batch = jobs.len();
            let ops: Vec<Op> = jobs.iter_mut().flat_map(|j| std::mem::take(&mut j.ops)).collect();
            let result = self.write(ops.into_iter());
            for job in jobs {
                let _ = job.done.send(result.clone());
            }
        }
    }

    /// Writes the carried and the new operations as one batch and syncs.
    fn write(&mut self, ops: impl Iterator<Item = Op>) -> Result<(), String> {
        let mut all = std::mem::take(&mut self.carry);
        all.extend(ops);
        let mut batch = sled::Batch::default();
        for (key, value) in &all {
            match value {
                Some(v) => batch.insert(key.as_slice(), v.as_slice()),
                None => batch.remove(key.as_slice()),
            }
        }
        let result = self
            .tree
            .apply_batch(batch)
            .map_err(StoreError::from)
            .and_then(|_| self.synced.sync())
            .map(|_| ())
            .map_err(|e| e.to_string());
        match &result {
            Ok(()) => {
                if !self.healthy.swap(true, Ordering::Relaxed) {
                    tracing::info!("registry store writes succeed again");
                }
            }
            Err(e) => {
                if self.healthy.swap(false, Ordering::Relaxed) {
                    tracing::error!(error = %e, "registry store write failed; retrying");
                }
                self.carry = all;
            }
        }
        result
    }
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
            let store = Store::open(dir.path()).unwrap();
            let done = store.submit(vec![(&key, st.persisted_ref(&key))], st.version());
            done.await.unwrap().unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let restored = store.load().unwrap();
        assert_eq!(restored.version, 1);
        assert_eq!(restored.entries, vec![st.persisted(&key).unwrap()]);
        // Deleting the key removes the record.
        store.submit(vec![(&key, None)], 2).await.unwrap().unwrap();
        assert!(store.load().unwrap().entries.is_empty());
    }
}
