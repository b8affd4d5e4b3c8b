//! The raft state machine: the shared in-memory [`Registry`], plus the current snapshot in a
//! file.
//!
//! The registry itself is not written to disk on every apply: the log is the durable record,
//! and a snapshot (`snapshot.bin` next to the sled files) is persisted whenever openraft
//! builds or installs one: written to a temporary file, fsynced, renamed over the old one,
//! and the directory fsynced, so a crash leaves either the old or the new snapshot whole. (A
//! snapshot is far larger than what sled keeps in its synced log file: sled would store it as
//! a blob file that it never fsyncs.) On start the registry is rebuilt from the snapshot and openraft re-applies
//! the committed log entries after it.
//!
//! The last applied log id and membership are updated under the registry lock, together with
//! the change they describe, so a snapshot taken under that lock is always consistent with
//! the id it claims (openraft builds snapshots concurrently with `apply`).

use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, RaftSnapshotBuilder, StorageIOError};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::log_store::LogGrowth;
use super::types::{decode, encode, Entry, LogId, SnapshotMeta, StorageError, StoredMembership, TypeConfig};
use crate::core::command::Outcome;
use crate::core::registry::Registry;
use crate::core::state::{PersistedEntry, PersistedRef};
use crate::store::{write_file_durably, StoreError, SyncedDb};

const SNAPSHOT_FILE: &str = "snapshot.bin";
const SNAPSHOT_TMP: &str = "snapshot.tmp";
const SEQ: &[u8] = b"seq";

/// What the state machine has applied.
#[derive(Debug, Clone, Default)]
pub struct AppliedState {
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
}

/// A snapshot as stored: metadata plus the encoded registry.
#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

/// The registry as a snapshot carries it.
#[derive(Serialize)]
struct SnapshotOut<'a> {
    version: u64,
    entries: Vec<PersistedRef<'a>>,
}

#[derive(Deserialize)]
struct SnapshotIn {
    version: u64,
    entries: Vec<PersistedEntry>,
}

/// The state machine; clones share everything.
#[derive(Clone)]
pub struct StateMachine {
    registry: Arc<Registry>,
    applied: Arc<Mutex<AppliedState>>,
    /// Last applied index, for waiters (read-your-writes after a forwarded write).
    applied_tx: Arc<watch::Sender<u64>>,
    dir: PathBuf,
    /// Snapshot id counter.
    snapshots: sled::Tree,
    /// Told about every snapshot built or installed.
    growth: Arc<LogGrowth>,
}

impl StateMachine {
    /// Opens the state machine of the node whose data lives in `dir` (sled's `db` beside
    /// the snapshot file) and rebuilds the registry from the stored snapshot, if any.
    pub fn open(
        db: &SyncedDb,
        dir: &Path,
        registry: Arc<Registry>,
        growth: Arc<LogGrowth>,
    ) -> Result<StateMachine, StoreError> {
        let snapshots = db.db.open_tree("sm_snapshot")?;
        let sm = StateMachine {
            registry,
            applied: Arc::new(Mutex::new(AppliedState::default())),
            applied_tx: Arc::new(watch::channel(0).0),
            dir: dir.to_path_buf(),
            snapshots,
            growth,
        };
        if let Some(stored) = sm.read_current()? {
            sm.growth.snapshot_taken(stored.data.len() as u64);
            let data: SnapshotIn =
                decode(&stored.data).map_err(|e| StoreError::Corrupt(format!("raft snapshot: {e}")))?;
            tracing::info!(instances = data.entries.len(), last_log_id = ?stored.meta.last_log_id, "registry restored from snapshot");
            sm.install(&stored.meta, data);
        }
        Ok(sm)
    }

    /// What has been applied.
    pub fn applied(&self) -> AppliedState {
        self.applied.lock().clone()
    }

    /// Watches the last applied index.
    pub fn applied_index(&self) -> watch::Receiver<u64> {
        self.applied_tx.subscribe()
    }

    fn read_current(&self) -> Result<Option<StoredSnapshot>, StoreError> {
        let path = self.dir.join(SNAPSHOT_FILE);
        match std::fs::read(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
            Ok(bytes) => decode(&bytes).map(Some).map_err(|e| StoreError::Corrupt(format!("{}: {e}", path.display()))),
        }
    }

    fn install(&self, meta: &SnapshotMeta, data: SnapshotIn) {
        self.registry.replace(data.entries, data.version, || {
            let mut a = self.applied.lock();
            a.last_applied = meta.last_log_id;
            a.membership = meta.last_membership.clone();
        });
        self.applied_tx.send_replace(meta.last_log_id.map_or(0, |l| l.index));
    }

    /// Stores `snapshot` as the current one, durably (see the module docs).
    async fn persist(&self, stored: &StoredSnapshot) -> Result<(), StorageError> {
        let sig = Some(stored.meta.signature());
        let bytes = encode(stored).map_err(|e| StorageIOError::write_snapshot(sig.clone(), &e))?;
        let dir = self.dir.clone();
        let write = move || write_file_durably(&dir, SNAPSHOT_TMP, SNAPSHOT_FILE, |w| w.write_all(&bytes));
        match tokio::task::spawn_blocking(write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(StorageIOError::write_snapshot(sig, &e).into()),
            Err(e) => Err(StorageIOError::write_snapshot(sig, &e).into()),
        }
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        // Copy under the registry lock (entries share their instances), encode outside it.
        let (applied, version, entries) =
            self.registry.read(|st| (self.applied.lock().clone(), st.version(), st.snapshot_entries()));
        let out = SnapshotOut { version, entries: entries.iter().map(|e| e.persisted_ref()).collect() };
        let data = encode(&out).map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        let seq = self
            .snapshots
            .update_and_fetch(SEQ, |old| {
                let n = old.and_then(|b| <[u8; 8]>::try_from(b).ok()).map_or(0, u64::from_be_bytes);
                Some((n + 1).to_be_bytes().to_vec())
            })
            .map_err(|e| StorageIOError::write_snapshot(None, &e))?
            .and_then(|b| <[u8; 8]>::try_from(b.as_ref()).ok())
            .map_or(0, u64::from_be_bytes);
        let snapshot_id = match applied.last_applied {
            Some(l) => format!("{}-{}-{seq}", l.leader_id, l.index),
            None => format!("none-{seq}"),
        };
        let meta = SnapshotMeta { last_log_id: applied.last_applied, last_membership: applied.membership, snapshot_id };
        let stored = StoredSnapshot { meta, data };
        self.persist(&stored).await?;
        self.growth.snapshot_taken(stored.data.len() as u64);
        tracing::info!(
            instances = entries.len(),
            bytes = stored.data.len(),
            last_log_id = ?stored.meta.last_log_id,
            "raft snapshot built"
        );
        Ok(Snapshot { meta: stored.meta, snapshot: Box::new(Cursor::new(stored.data)) })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let a = self.applied.lock().clone();
        Ok((a.last_applied, a.membership))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Vec<Outcome>>, StorageError>
    where
        I: IntoIterator<Item = Entry> + openraft::OptionalSend,
        I::IntoIter: openraft::OptionalSend,
    {
        let mut out = Vec::new();
        for entry in entries {
            let log_id = entry.log_id;
            match entry.payload {
                EntryPayload::Normal(proposal) => {
                    let mut outcomes = Vec::with_capacity(proposal.commands.len());
                    let last = proposal.commands.len();
                    // A copy when the log store's cache still shares the commands.
                    let commands = Arc::unwrap_or_clone(proposal.commands);
                    for (i, cmd) in commands.into_iter().enumerate() {
                        // The applied id moves with the last command, under the same lock.
                        let (applied, ()) = self.registry.apply(cmd, |_, _| {
                            if i + 1 == last {
                                self.applied.lock().last_applied = Some(log_id);
                            }
                        });
                        outcomes.push(applied.outcome);
                    }
                    if last == 0 {
                        self.registry.read(|_| self.applied.lock().last_applied = Some(log_id));
                    }
                    out.push(outcomes);
                }
                EntryPayload::Membership(m) => {
                    self.registry.read(|_| {
                        let mut a = self.applied.lock();
                        a.last_applied = Some(log_id);
                        a.membership = StoredMembership::new(Some(log_id), m);
                    });
                    out.push(Vec::new());
                }
                EntryPayload::Blank => {
                    self.registry.read(|_| self.applied.lock().last_applied = Some(log_id));
                    out.push(Vec::new());
                }
            }
            self.applied_tx.send_replace(log_id.index);
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let parsed: SnapshotIn =
            decode(&data).map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        let stored = StoredSnapshot { meta: meta.clone(), data };
        self.persist(&stored).await?;
        self.growth.snapshot_taken(stored.data.len() as u64);
        tracing::info!(instances = parsed.entries.len(), last_log_id = ?meta.last_log_id, "raft snapshot installed");
        self.install(meta, parsed);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let stored = self.read_current().map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        Ok(stored.map(|s| Snapshot { meta: s.meta, snapshot: Box::new(Cursor::new(s.data)) }))
    }
}
