//! The raft log, vote and commit pointer in sled.
//!
//! Tree `raft_log`: log index as big-endian `u64` (byte order = numeric order) → bincode
//! [`Entry`]. Tree `raft_meta`: `vote`, `committed`, `last_purged`. Every durability point
//! (append, vote, truncate, purge) flushes sled and then `fdatasync`s its log file, so an
//! acknowledged append or vote survives a power loss, not only a process crash; one sync
//! covers a whole append batch.
//!
//! The newest entries are also kept in memory ([`Recent`]): right after an append, openraft
//! reads the same entries back once per follower to replicate them and once more to apply
//! them, and serving those reads from memory spares a sled lookup and a bincode decode each.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::Notify;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader, StorageIOError};

use super::admission::{MAX_INDEX, MAX_TERM};
use super::types::{decode, encode, Entry, LogId, StorageError, TypeConfig, Vote};
use crate::store::{StoreError, SyncedDb};

const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const LAST_PURGED: &[u8] = b"last_purged";

/// How many of the newest entries [`Recent`] keeps: enough for every follower that is
/// keeping up (a few hundred entries a second under load, each read back within
/// milliseconds) while bounding the memory to a few MiB of batched commands.
const RECENT_ENTRIES: usize = 256;

/// The newest log entries, in index order without gaps, and always ending at the last entry
/// in sled (every append adds here too; truncate and purge remove here too), so a read
/// whose range starts inside it can be answered from it alone.
#[derive(Default)]
struct Recent {
    entries: VecDeque<Entry>,
}

impl Recent {
    fn push(&mut self, entry: Entry) {
        if self.entries.back().is_some_and(|last| last.log_id.index + 1 != entry.log_id.index) {
            self.entries.clear();
        }
        self.entries.push_back(entry);
        if self.entries.len() > RECENT_ENTRIES {
            self.entries.pop_front();
        }
    }

    /// Drops entries with index ≥ `from`.
    fn truncate(&mut self, from: u64) {
        while self.entries.back().is_some_and(|e| e.log_id.index >= from) {
            self.entries.pop_back();
        }
    }

    /// Drops entries with index ≤ `upto`.
    fn purge(&mut self, upto: u64) {
        while self.entries.front().is_some_and(|e| e.log_id.index <= upto) {
            self.entries.pop_front();
        }
    }

    /// The entries in `range`, if the range starts at or after the first entry kept.
    fn get(&self, start: u64, range: &impl RangeBounds<u64>) -> Option<Vec<Entry>> {
        let first = self.entries.front()?.log_id.index;
        if start < first {
            return None;
        }
        let skip = usize::try_from(start - first).ok()?;
        Some(self.entries.iter().skip(skip).take_while(|e| range.contains(&e.log_id.index)).cloned().collect())
    }
}

/// Log bytes appended since the last snapshot, so that a snapshot is also built by size.
///
/// openraft's policy counts entries only, and entries range from one command to ~96 KiB of
/// them: 10,000 entries can be 20 MiB or 1 GiB of log on disk, and as much to replay on a
/// restart. A snapshot is due once the log since the last one outgrows the larger of a
/// floor and that snapshot's size, as the none-mode store compacts its journal, so the log
/// never holds more than about one registry's worth of history.
pub struct LogGrowth {
    bytes: AtomicU64,
    floor: u64,
    snapshot_bytes: AtomicU64,
    /// Set when a snapshot was asked for and not yet built, so it is asked for once.
    asked: AtomicBool,
    due: Notify,
}

impl LogGrowth {
    /// Growth tracking with `floor` bytes as the least log that makes a snapshot due.
    pub fn new(floor: u64) -> LogGrowth {
        LogGrowth {
            bytes: AtomicU64::new(0),
            floor,
            snapshot_bytes: AtomicU64::new(0),
            asked: AtomicBool::new(false),
            due: Notify::new(),
        }
    }

    fn appended(&self, n: u64) {
        let total = self.bytes.fetch_add(n, Ordering::Relaxed) + n;
        let limit = self.floor.max(self.snapshot_bytes.load(Ordering::Relaxed));
        if total >= limit && !self.asked.swap(true, Ordering::AcqRel) {
            self.due.notify_one();
        }
    }

    /// Log bytes appended since the last snapshot.
    pub fn bytes_since_snapshot(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Size of the current snapshot.
    pub fn snapshot_bytes(&self) -> u64 {
        self.snapshot_bytes.load(Ordering::Relaxed)
    }

    /// A snapshot of `size` bytes was built or installed: the count starts again.
    pub fn snapshot_taken(&self, size: u64) {
        self.snapshot_bytes.store(size, Ordering::Relaxed);
        self.bytes.store(0, Ordering::Relaxed);
        self.asked.store(false, Ordering::Release);
    }

    /// Waits until a snapshot is due by size.
    pub async fn due(&self) {
        self.due.notified().await
    }
}

/// The log store; clones share one database, one [`Recent`] and one [`LogGrowth`].
#[derive(Clone)]
pub struct LogStore {
    db: Arc<SyncedDb>,
    log: sled::Tree,
    meta: sled::Tree,
    recent: Arc<Mutex<Recent>>,
    growth: Arc<LogGrowth>,
}

impl LogStore {
    /// Opens the log trees in `db`; appends are counted in `growth`.
    pub fn open(db: Arc<SyncedDb>, growth: Arc<LogGrowth>) -> Result<LogStore, StoreError> {
        let log = db.db.open_tree("raft_log")?;
        let meta = db.db.open_tree("raft_meta")?;
        let store = LogStore { db, log, meta, recent: Arc::default(), growth };
        store.check_persisted()?;
        Ok(store)
    }

    /// Refuses to start on a vote or log openraft could not run with (a term or index near
    /// overflow makes it panic at every start), with what to do about it.
    fn check_persisted(&self) -> Result<(), StoreError> {
        const RECOVER: &str = "this node cannot take part in the cluster with it; to recover, stop it, move its \
            data directory aside, start it empty with --raft-join and add it again with `synod cluster add` \
            (it copies the registry from the leader)";
        let unreadable =
            |what: &str, e: StoreError| StoreError::Unusable(format!("{what} is unreadable ({e}); {RECOVER}"));
        let vote: Option<Vote> = self.read_meta(VOTE).map_err(|e| unreadable("the persisted raft vote", e))?;
        if let Some(v) = vote.filter(|v| v.leader_id.term > MAX_TERM) {
            return Err(StoreError::Unusable(format!(
                "the persisted raft vote has term {}, beyond any real election (limit {MAX_TERM}); {RECOVER}",
                v.leader_id.term
            )));
        }
        let last = self.last_entry_id().map_err(|e| unreadable("the last raft log entry", e))?;
        if let Some(l) = last.filter(|l| l.leader_id.term > MAX_TERM || l.index > MAX_INDEX) {
            return Err(StoreError::Unusable(format!("the raft log ends at an implausible entry ({l}); {RECOVER}")));
        }
        Ok(())
    }

    /// Flush + fdatasync off the async runtime.
    async fn sync(&self) -> Result<(), std::io::Error> {
        let db = self.db.clone();
        match tokio::task::spawn_blocking(move || db.sync()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(std::io::Error::other(e.to_string())),
            Err(e) => Err(std::io::Error::other(format!("sync task failed: {e}"))),
        }
    }

    fn read_meta<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StoreError> {
        match self.meta.get(key)? {
            None => Ok(None),
            Some(v) => decode(&v).map(Some).map_err(|e| StoreError::Corrupt(format!("raft meta {key:?}: {e}"))),
        }
    }

    fn write_meta<T: serde::Serialize>(&self, key: &[u8], value: &T) -> Result<(), StoreError> {
        let bytes = encode(value).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.meta.insert(key, bytes)?;
        Ok(())
    }

    fn last_entry_id(&self) -> Result<Option<LogId>, StoreError> {
        match self.log.last()? {
            None => Ok(None),
            Some((_, v)) => {
                let entry: Entry = decode(&v).map_err(|e| StoreError::Corrupt(format!("raft log entry: {e}")))?;
                Ok(Some(entry.log_id))
            }
        }
    }

    /// Removes every entry with index ≥ `from` (`None`: from the start) and ≤ `to`.
    fn remove_range(&self, from: u64, to: Option<u64>) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for item in self.log.range(from.to_be_bytes()..) {
            let (k, _) = item?;
            if to.is_some_and(|to| index_of(&k).is_some_and(|i| i > to)) {
                break;
            }
            batch.remove(k);
        }
        self.log.apply_batch(batch)?;
        Ok(())
    }
}

fn index_of(key: &[u8]) -> Option<u64> {
    key.try_into().ok().map(u64::from_be_bytes)
}

fn read_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::read_logs(&e).into()
}

fn write_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_logs(&e).into()
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        if let Some(entries) = self.recent.lock().get(start, &range) {
            return Ok(entries);
        }
        let mut out = Vec::new();
        for item in self.log.range(start.to_be_bytes()..) {
            let (k, v) = item.map_err(read_err)?;
            let Some(index) = index_of(&k) else { return Err(read_err(StoreError::Corrupt("raft log key".into()))) };
            if !range.contains(&index) {
                break;
            }
            out.push(decode(&v).map_err(read_err)?);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged: Option<LogId> = self.read_meta(LAST_PURGED).map_err(read_err)?;
        let last = self.last_entry_id().map_err(read_err)?.or(last_purged);
        Ok(LogState { last_purged_log_id: last_purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.write_meta(VOTE, vote).map_err(|e| StorageIOError::write_vote(&e))?;
        self.sync().await.map_err(|e| StorageIOError::write_vote(&e))?;
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.read_meta(VOTE).map_err(|e| StorageIOError::read_vote(&e).into())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // A lower bound only: made durable by the next append's sync.
        self.write_meta(COMMITTED, &committed).map_err(write_err)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.read_meta::<Option<LogId>>(COMMITTED).map_err(read_err)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        // Plain inserts in index order rather than one atomic sled batch: sled seals and
        // writes its log buffer before and after every batch, doubling the disk writes, and a
        // crash before the sync below can only lose a suffix of these unacknowledged entries,
        // which Raft allows.
        let mut count = 0;
        for entry in entries {
            count += 1;
            let bytes = encode(&entry).map_err(write_err)?;
            self.growth.appended(bytes.len() as u64);
            self.log.insert(entry.log_id.index.to_be_bytes(), bytes).map_err(write_err)?;
            self.recent.lock().push(entry);
        }
        self.db.stats.group.observe(count);
        match self.sync().await {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                let err = write_err(std::io::Error::other(e.to_string()));
                callback.log_io_completed(Err(e));
                Err(err)
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.remove_range(log_id.index, None).map_err(write_err)?;
        self.recent.lock().truncate(log_id.index);
        self.sync().await.map_err(write_err)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // Record the purge point first: a crash in between leaves extra entries below it
        // (ignored), never a hole.
        self.write_meta(LAST_PURGED, &log_id).map_err(write_err)?;
        self.recent.lock().purge(log_id.index);
        self.sync().await.map_err(write_err)?;
        self.remove_range(0, Some(log_id.index)).map_err(write_err)
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;

    fn entry(index: u64) -> Entry {
        Entry { log_id: LogId::new(CommittedLeaderId::new(1, 1), index), payload: EntryPayload::Blank }
    }

    fn indexes(entries: Option<Vec<Entry>>) -> Option<Vec<u64>> {
        entries.map(|es| es.iter().map(|e| e.log_id.index).collect())
    }

    #[test]
    fn recent_entries_answer_only_ranges_that_start_inside_them() {
        let mut r = Recent::default();
        assert_eq!(indexes(r.get(0, &(0..))), None, "empty: read sled");
        for i in 5..=9 {
            r.push(entry(i));
        }
        assert_eq!(indexes(r.get(4, &(4..8))), None, "starts before the first kept entry");
        assert_eq!(indexes(r.get(6, &(6..8))), Some(vec![6, 7]));
        assert_eq!(indexes(r.get(7, &(7..))), Some(vec![7, 8, 9]));
        assert_eq!(indexes(r.get(12, &(12..20))), Some(vec![]), "past the last entry, as sled");

        r.truncate(8);
        assert_eq!(indexes(r.get(5, &(5..))), Some(vec![5, 6, 7]));
        r.purge(5);
        assert_eq!(indexes(r.get(5, &(5..))), None);
        assert_eq!(indexes(r.get(6, &(6..=7))), Some(vec![6, 7]));

        // A gap (an append after a snapshot jumped the log forward) starts afresh.
        r.push(entry(20));
        assert_eq!(indexes(r.get(6, &(6..))), None);
        assert_eq!(indexes(r.get(20, &(20..))), Some(vec![20]));

        for i in 21..21 + RECENT_ENTRIES as u64 {
            r.push(entry(i));
        }
        assert_eq!(r.entries.len(), RECENT_ENTRIES, "bounded");
        assert_eq!(indexes(r.get(20, &(20..))), None, "the oldest was dropped");
    }
}
