//! Journal compaction: folds the journal into a new snapshot file, off the write path.
//!
//! A compaction up to sequence `S` reads the current snapshot (or, in a store written by the
//! first layout, the per-instance `instances` tree), replays journal records up to `S`, writes
//! the result as the new snapshot (temporary file, fsync, rename, directory fsync) and only then
//! removes those records from the journal. A crash at any point leaves either the old snapshot
//! with the whole journal, or the new one with records it already contains; loading replays
//! only records after the snapshot's sequence, so both give the same registry.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;

use super::frame::{self, Snapshot};
use super::{write_file_durably, StoreError};

/// File holding the latest snapshot, next to sled's files.
pub const SNAPSHOT_FILE: &str = "registry.snapshot";
const SNAPSHOT_TMP: &str = "registry.snapshot.tmp";

/// Tree of the first store layout: one record per instance plus the change counter.
const LEGACY_TREE: &str = "instances";
const LEGACY_VERSION_KEY: &[u8] = b"\0version";

/// What compaction and loading share: the database, the directory and the rules to read them.
pub struct Files {
    pub db: sled::Db,
    pub journal: sled::Tree,
    pub dir: PathBuf,
    /// Held while a snapshot is read or replaced, so a load never sees a half-finished swap.
    lock: Mutex<()>,
}

impl Files {
    pub fn new(db: sled::Db, journal: sled::Tree, dir: &Path) -> Files {
        Files { db, journal, dir: dir.to_path_buf(), lock: Mutex::new(()) }
    }

    /// The registry's records as of journal sequence `upto` (everything when `None`), and the
    /// journal bytes replayed on top of the snapshot to get there.
    pub fn read(&self, upto: Option<u64>) -> Result<(Snapshot, u64), StoreError> {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut snap = self.read_base()?;
        let start = snap.through_seq.saturating_add(1).to_be_bytes();
        let range = match upto {
            Some(end) => self.journal.range(start..=end.to_be_bytes()),
            None => self.journal.range(start..),
        };
        let mut bytes = 0;
        for item in range {
            let (key, value) = item?;
            let seq = key.as_ref().try_into().map(u64::from_be_bytes).map_err(|_| corrupt_key(&key))?;
            snap.version = frame::apply_record(&value, &mut snap.records)
                .map_err(|e| StoreError::Corrupt(format!("journal entry {seq}: {e}")))?;
            snap.through_seq = seq;
            bytes += value.len() as u64;
        }
        Ok((snap, bytes))
    }

    /// The journal sequence the snapshot file covers (0 without one), from its header alone.
    pub fn snapshot_through(&self) -> Result<u64, StoreError> {
        use std::io::Read;
        let mut header = [0u8; 16];
        match std::fs::File::open(self.dir.join(SNAPSHOT_FILE)) {
            Ok(mut f) => {
                f.read_exact(&mut header)?;
                Ok(u64::from_le_bytes(header[8..].try_into().unwrap_or_default()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(e.into()),
        }
    }

    /// The snapshot file, else the first layout's tree, else nothing.
    fn read_base(&self) -> Result<Snapshot, StoreError> {
        let path = self.dir.join(SNAPSHOT_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => {
                return frame::decode_snapshot(&bytes)
                    .map_err(|e| StoreError::Corrupt(format!("{}: {e}", path.display())))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        let mut snap = Snapshot::default();
        if self.db.tree_names().iter().any(|n| n.as_ref() == LEGACY_TREE.as_bytes()) {
            for item in self.db.open_tree(LEGACY_TREE)?.iter() {
                let (key, value) = item?;
                if key.as_ref() == LEGACY_VERSION_KEY {
                    let b: [u8; 8] = value.as_ref().try_into().map_err(|_| StoreError::Corrupt("version".into()))?;
                    snap.version = u64::from_be_bytes(b);
                } else {
                    snap.records.insert(key.to_vec(), value.to_vec());
                }
            }
        }
        Ok(snap)
    }

    /// Folds the journal up to `through` into a new snapshot; returns the snapshot's size.
    pub fn compact(&self, through: u64) -> Result<u64, StoreError> {
        let (snap, _) = self.read(Some(through))?;
        let bytes = frame::encode_snapshot(&snap);
        {
            let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
            write_file_durably(&self.dir, SNAPSHOT_TMP, SNAPSHOT_FILE, &bytes)?;
        }
        // The snapshot is durable: the records it contains may go. (If these removals are
        // lost in a crash, loading skips them anyway.)
        let mut batch = sled::Batch::default();
        for key in self.journal.range(..=snap.through_seq.to_be_bytes()).keys() {
            batch.remove(key?);
        }
        self.journal.apply_batch(batch)?;
        self.db.drop_tree(LEGACY_TREE)?;
        Ok(bytes.len() as u64)
    }
}

fn corrupt_key(key: &[u8]) -> StoreError {
    StoreError::Corrupt(format!("journal key of {} bytes", key.len()))
}

/// The compaction thread and what the writer needs to drive it.
pub struct Compactor {
    tx: mpsc::Sender<u64>,
    busy: Arc<AtomicBool>,
    /// Journal bytes after which a compaction is due: the larger of the configured minimum and
    /// the last snapshot's size, so compaction costs stay proportional to what was written.
    threshold: Arc<AtomicU64>,
}

impl Compactor {
    /// Starts the thread.
    pub fn start(files: Arc<Files>, min_bytes: u64) -> std::io::Result<(Compactor, thread::JoinHandle<()>)> {
        let (tx, rx) = mpsc::channel::<u64>();
        let busy = Arc::new(AtomicBool::new(false));
        let threshold = Arc::new(AtomicU64::new(min_bytes));
        let handle = {
            let (busy, threshold) = (busy.clone(), threshold.clone());
            thread::Builder::new().name("synod-compact".into()).spawn(move || {
                for through in rx {
                    match files.compact(through) {
                        Ok(size) => {
                            tracing::debug!(through, size, "registry journal compacted into a snapshot");
                            threshold.store(size.max(min_bytes), Ordering::Relaxed);
                        }
                        Err(e) => tracing::error!(error = %e, "registry journal compaction failed; retried later"),
                    }
                    busy.store(false, Ordering::Release);
                }
            })?
        };
        Ok((Compactor { tx, busy, threshold }, handle))
    }

    /// Whether `journal_bytes` written since the last request make a compaction due.
    pub fn due(&self, journal_bytes: u64) -> bool {
        journal_bytes >= self.threshold.load(Ordering::Relaxed) && !self.busy.load(Ordering::Acquire)
    }

    /// Asks for a compaction up to sequence `through` unless one is running.
    pub fn request(&self, through: u64) -> bool {
        if self.busy.swap(true, Ordering::AcqRel) {
            return false;
        }
        if self.tx.send(through).is_err() {
            self.busy.store(false, Ordering::Release);
            return false;
        }
        true
    }
}
