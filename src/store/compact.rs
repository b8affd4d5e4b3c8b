//! Journal compaction: folds the journal into a new snapshot file, off the write path.
//!
//! A compaction up to sequence `S` reads the current snapshot (or, in a store written by the
//! first layout, the per-instance `instances` tree), replays journal records up to `S`, writes
//! the result as the new snapshot (temporary file, fsync, rename, directory fsync) and only then
//! removes those records from the journal. A crash at any point leaves either the old snapshot
//! with the whole journal, or the new one with records it already contains; loading replays
//! only records after the snapshot's sequence, so both give the same registry.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;

use super::frame::{self, Emit, Record, SnapshotHeader, SnapshotReader};
use super::{write_file_durably, StoreError};

/// File holding the latest snapshot, next to sled's files.
const SNAPSHOT_FILE: &str = "registry.snapshot";
const SNAPSHOT_TMP: &str = "registry.snapshot.tmp";

/// Tree of the first store layout: one record per instance plus the change counter.
const LEGACY_TREE: &str = "instances";
const LEGACY_VERSION_KEY: &[u8] = b"\0version";

/// Buffer size for streaming snapshots.
const IO_BUFFER: usize = 1 << 20;

/// What compaction and loading share: the database, the directory and the rules to read them.
pub struct Files {
    pub db: sled::Db,
    pub journal: sled::Tree,
    pub dir: PathBuf,
    /// Held while a snapshot is read or replaced, so a load never sees a half-finished swap.
    lock: Mutex<()>,
}

/// Where the records below the journal come from.
enum Base {
    Snapshot(SnapshotReader<BufReader<File>>),
    Legacy(Box<sled::Iter>),
    Empty,
}

impl Base {
    fn next_record(&mut self) -> Result<Option<Record>, StoreError> {
        match self {
            Base::Snapshot(r) => r.next_record(),
            Base::Legacy(iter) => loop {
                match iter.next().transpose()? {
                    Some((k, _)) if k.as_ref() == LEGACY_VERSION_KEY => continue,
                    Some((k, v)) => return Ok(Some((k.to_vec(), v.to_vec()))),
                    None => return Ok(None),
                }
            },
            Base::Empty => Ok(None),
        }
    }
}

/// The registry's records as of some journal sequence, ready to be streamed in key order: the
/// base records merged with the journal's changes.
pub struct Merged {
    base: Base,
    changes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    pub header: SnapshotHeader,
    /// Journal bytes replayed on top of the base.
    pub journal_bytes: u64,
}

impl Merged {
    /// Calls `emit` for every record, in key order.
    pub fn for_each(mut self, emit: Emit<'_>) -> Result<(), StoreError> {
        let mut changes = std::mem::take(&mut self.changes).into_iter().peekable();
        let mut base = self.base.next_record()?;
        loop {
            let take_base = match (&base, changes.peek()) {
                (None, None) => return Ok(()),
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (Some((bk, _)), Some((ck, _))) => bk < ck,
            };
            if take_base {
                if let Some((k, v)) = base.take() {
                    emit(&k, &v)?;
                }
                base = self.base.next_record()?;
            } else if let Some((ck, cv)) = changes.next() {
                // A change replaces (or deletes) the base record with the same key.
                if base.as_ref().is_some_and(|(bk, _)| *bk == ck) {
                    base = self.base.next_record()?;
                }
                if let Some(v) = cv {
                    emit(&ck, &v)?;
                }
            }
        }
    }
}

impl Files {
    pub fn new(db: sled::Db, journal: sled::Tree, dir: &Path) -> Files {
        Files { db, journal, dir: dir.to_path_buf(), lock: Mutex::new(()) }
    }

    /// The registry as of journal sequence `upto` (everything when `None`).
    pub fn merged(&self, upto: Option<u64>) -> Result<Merged, StoreError> {
        let (base, mut header) = self.base()?;
        let start = header.through_seq.saturating_add(1).to_be_bytes();
        let range = match upto {
            Some(end) => self.journal.range(start..=end.to_be_bytes()),
            None => self.journal.range(start..),
        };
        let mut changes = BTreeMap::new();
        let mut journal_bytes = 0;
        for item in range {
            let (key, value) = item?;
            let seq = key.as_ref().try_into().map(u64::from_be_bytes).map_err(|_| corrupt_key(&key))?;
            header.version = frame::for_each_op(&value, |k, v| {
                changes.insert(k.to_vec(), v.map(<[u8]>::to_vec));
            })
            .map_err(|e| StoreError::Corrupt(format!("journal entry {seq}: {e}")))?;
            header.through_seq = seq;
            journal_bytes += value.len() as u64;
        }
        Ok(Merged { base, changes, header, journal_bytes })
    }

    /// The journal sequence the snapshot file covers (0 without one), from its header alone.
    pub fn snapshot_through(&self) -> Result<u64, StoreError> {
        match File::open(self.dir.join(SNAPSHOT_FILE)) {
            Ok(f) => Ok(SnapshotReader::open(f)?.1.through_seq),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(e.into()),
        }
    }

    /// The snapshot file, else the first layout's tree, else nothing.
    fn base(&self) -> Result<(Base, SnapshotHeader), StoreError> {
        let path = self.dir.join(SNAPSHOT_FILE);
        match File::open(&path) {
            Ok(f) => {
                let (reader, header) = SnapshotReader::open(BufReader::with_capacity(IO_BUFFER, f))
                    .map_err(|e| StoreError::Corrupt(format!("{}: {e}", path.display())))?;
                return Ok((Base::Snapshot(reader), header));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        if !self.db.tree_names().iter().any(|n| n.as_ref() == LEGACY_TREE.as_bytes()) {
            return Ok((Base::Empty, SnapshotHeader::default()));
        }
        let tree = self.db.open_tree(LEGACY_TREE)?;
        let mut header = SnapshotHeader::default();
        if let Some(v) = tree.get(LEGACY_VERSION_KEY)? {
            let b: [u8; 8] = v.as_ref().try_into().map_err(|_| StoreError::Corrupt("version".into()))?;
            header.version = u64::from_be_bytes(b);
        }
        Ok((Base::Legacy(Box::new(tree.iter())), header))
    }

    /// Folds the journal up to `through` into a new snapshot; returns the snapshot's size.
    pub fn compact(&self, through: u64) -> Result<u64, StoreError> {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let merged = self.merged(Some(through))?;
        let header = merged.header;
        write_file_durably(&self.dir, SNAPSHOT_TMP, SNAPSHOT_FILE, |w| {
            frame::write_snapshot(w, header, |emit| merged.for_each(emit)).map(|_| ())
        })?;
        // The snapshot is durable: the records it contains may go. (If these removals are
        // lost in a crash, loading skips them anyway.)
        let mut batch = sled::Batch::default();
        for key in self.journal.range(..=header.through_seq.to_be_bytes()).keys() {
            batch.remove(key?);
        }
        self.journal.apply_batch(batch)?;
        self.db.drop_tree(LEGACY_TREE)?;
        Ok(std::fs::metadata(self.dir.join(SNAPSHOT_FILE))?.len())
    }

    /// Calls `f` with the merged registry while no compaction can replace the snapshot.
    pub fn read<T>(&self, f: impl FnOnce(Merged) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        f(self.merged(None)?)
    }
}

pub(super) fn corrupt_key(key: &[u8]) -> StoreError {
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
