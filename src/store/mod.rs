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
use std::sync::mpsc;
use std::thread;

use tokio::sync::oneshot;

use crate::core::model::InstanceKey;
use crate::core::state::PersistedEntry;

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
}

/// One record change: write the entry, or delete the key.
pub type Change = (InstanceKey, Option<PersistedEntry>);

struct Job {
    ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    done: oneshot::Sender<Result<(), String>>,
}

/// The durable registry store.
pub struct Store {
    tree: sled::Tree,
    tx: Option<mpsc::Sender<Job>>,
    writer: Option<thread::JoinHandle<()>>,
}

const FORMAT_KEY: &[u8] = b"format";
const FORMAT: &[u8] = b"1";

impl Store {
    /// Opens (or creates) the store under `dir`.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir)?;
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(64 * 1024 * 1024)
            .open()
            .map_err(|e| classify_open_error(dir, e))?;
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
        // sled keeps all trees in one log file; syncing it after sled's own flush makes the
        // batch durable against power loss too.
        let data_file = File::open(dir.join("db"))?;
        db.flush()?;
        data_file.sync_all()?;
        let (tx, rx) = mpsc::channel::<Job>();
        let writer = {
            let db = db.clone();
            let tree = tree.clone();
            thread::Builder::new().name("synod-store".into()).spawn(move || writer_loop(db, tree, data_file, rx))?
        };
        Ok(Store { tree, tx: Some(tx), writer: Some(writer) })
    }

    /// Every stored entry.
    pub fn load(&self) -> Result<Vec<PersistedEntry>, StoreError> {
        let mut out = Vec::new();
        for item in self.tree.iter() {
            let (key, value) = item?;
            match bincode::serde::decode_from_slice::<PersistedEntry, _>(&value, bincode::config::standard()) {
                Ok((entry, _)) => out.push(entry),
                Err(e) => tracing::error!(
                    key = %String::from_utf8_lossy(&key),
                    error = %e,
                    "skipping unreadable registry record"
                ),
            }
        }
        Ok(out)
    }

    /// Queues changes, in order; the receiver resolves once they are durable. Call this in
    /// the same critical section as the apply that produced them so the store sees changes
    /// in apply order.
    pub fn submit(&self, changes: Vec<Change>) -> oneshot::Receiver<Result<(), String>> {
        let (done, rx) = oneshot::channel();
        let ops = changes
            .into_iter()
            .map(|(key, entry)| {
                let value = entry.and_then(|e| {
                    bincode::serde::encode_to_vec(&e, bincode::config::standard())
                        .map_err(|err| tracing::error!(%key, error = %err, "cannot encode registry record"))
                        .ok()
                });
                (encode_key(&key), value)
            })
            .collect();
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

fn writer_loop(db: sled::Db, tree: sled::Tree, data_file: File, rx: mpsc::Receiver<Job>) {
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while let Ok(more) = rx.try_recv() {
            jobs.push(more);
        }
        let mut batch = sled::Batch::default();
        for job in &jobs {
            for (key, value) in &job.ops {
                match value {
                    Some(v) => batch.insert(key.as_slice(), v.as_slice()),
                    None => batch.remove(key.as_slice()),
                }
            }
        }
        let result = tree
            .apply_batch(batch)
            .and_then(|_| db.flush())
            .map_err(StoreError::from)
            .and_then(|_| data_file.sync_data().map_err(StoreError::from))
            .map_err(|e| e.to_string());
        if let Err(e) = &result {
            tracing::error!(error = %e, "registry store write failed");
        }
        for job in jobs {
            let _ = job.done.send(result.clone());
        }
    }
}
