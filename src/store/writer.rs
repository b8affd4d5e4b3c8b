//! Group commit into the journal, in two pipelined stages.
//!
//! The *writer* thread takes every job queued, writes their operations as journal records
//! (usually one) and hands the batch to the *syncer*. The syncer takes every batch
//! handed over so far, flushes sled, `fdatasync`s sled's data file, and only then acknowledges
//! their jobs. While one sync waits for the disk, the next batch is gathered and inserted, so
//! a write waits for at most about two syncs and the disk is never idle under load. One sled
//! insert per group commit (instead of one per instance record) is what makes the write path
//! cheap: sled's per-key insert cost, not the sync, dominated the first layout.
//!
//! Failures stop the store: a batch whose insert or sync fails is reported to its writers,
//! and so is every batch after it, until a restart. Retrying on the same sled database is not
//! safe: sled keeps the first I/O error and fails every later flush, and after a failed
//! `fdatasync` the kernel may have dropped the dirty pages, so a later sync that succeeds
//! would not mean the earlier writes reached the disk — sled's recovery would then stop at the
//! hole and drop everything acknowledged after it. A restart reads back exactly what was
//! acknowledged (PostgreSQL and etcd stop on a failed fsync for the same reason).

use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::thread;
use std::time::Duration;

use tokio::sync::oneshot;

use super::compact::Compactor;
use super::frame;
use super::{Op, StoreError, SyncedDb};

/// Largest journal record the writer builds from several operations (a single operation is
/// itself capped by `MAX_RECORD`). Larger records would not be less durable — the sync also
/// covers sled's blob files — but each one is copied whole by sled's leaf consolidations.
const MAX_JOURNAL_RECORD: usize = 96 * 1024;

/// How long the writer lets concurrent writes gather before inserting a batch.
const LINGER: Duration = Duration::from_micros(300);

/// Operations from one apply, in order, with the registry's change counter after it.
pub struct Job {
    pub ops: Vec<Op>,
    pub version: u64,
    pub done: oneshot::Sender<Result<(), String>>,
}

/// Why the store stopped taking writes, once it has; shared with [`super::Store`].
pub type Failure = Arc<OnceLock<String>>;

type Done = oneshot::Sender<Result<(), String>>;

/// A batch inserted into the journal, waiting for a sync.
struct Inserted {
    dones: Vec<Done>,
    bytes: u64,
    last_seq: u64,
}

/// What the two stages share, under one lock.
#[derive(Default)]
struct Pipe {
    inserted: Vec<Inserted>,
    closed: bool,
}

struct Shared {
    pipe: Mutex<Pipe>,
    ready: Condvar,
    failure: Failure,
    /// Tests: how many of the next syncs fail.
    #[cfg(test)]
    fail_syncs: Arc<std::sync::atomic::AtomicU32>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pipe> {
        self.pipe.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stops the store for good (the first failure is the one reported).
    fn fail(&self, error: String) {
        if self.failure.set(error).is_ok() {
            let error = self.failure.get().map(String::as_str).unwrap_or_default();
            tracing::error!(error, "registry store failed; writes are refused until synod restarts");
        }
    }

    /// Reports the store's failure to `dones`.
    fn refuse(&self, dones: impl IntoIterator<Item = Done>) {
        let e = self.failure.get().cloned().unwrap_or_else(|| StoreError::Closed.to_string());
        for done in dones {
            let _ = done.send(Err(e.clone()));
        }
    }
}

/// The writer stage; it starts the syncer stage.
pub struct Writer {
    pub synced: SyncedDb,
    pub journal: sled::Tree,
    pub failure: Failure,
    pub compactor: Compactor,
    /// Sequence number of the next journal record.
    pub next_seq: u64,
    #[cfg(test)]
    pub fail_syncs: Arc<std::sync::atomic::AtomicU32>,
}

impl Writer {
    /// Starts both stages; the returned thread ends after both have finished.
    pub fn spawn(self, rx: mpsc::Receiver<Job>) -> std::io::Result<thread::JoinHandle<()>> {
        let shared = Arc::new(Shared {
            pipe: Mutex::new(Pipe::default()),
            ready: Condvar::new(),
            failure: self.failure,
            #[cfg(test)]
            fail_syncs: self.fail_syncs,
        });
        let syncer =
            Syncer { synced: self.synced, shared: shared.clone(), compactor: self.compactor, since_compaction: 0 };
        let syncer = thread::Builder::new().name("synod-sync".into()).spawn(move || syncer.run())?;
        let stage = Inserter { journal: self.journal, shared, next_seq: self.next_seq, version: 0, last_batch: 0 };
        thread::Builder::new().name("synod-store".into()).spawn(move || {
            stage.run(rx);
            let _ = syncer.join();
        })
    }
}

struct Inserter {
    journal: sled::Tree,
    shared: Arc<Shared>,
    next_seq: u64,
    /// The newest change counter seen.
    version: u64,
    /// Jobs in the previous batch.
    last_batch: usize,
}

impl Inserter {
    fn run(mut self, rx: mpsc::Receiver<Job>) {
        while let Ok(first) = rx.recv() {
            // Under concurrent load, wait a moment so more writers join this batch: each
            // insert, flush and fdatasync costs far more CPU than the records it carries. A
            // lone writer (previous batch of one) is written at once. (Skipping the wait while
            // the disk is idle was measured: smaller batches, more CPU, ~15 % fewer writes/s.)
            if self.last_batch > 1 {
                thread::sleep(LINGER);
            }
            let mut jobs = vec![first];
            while let Ok(more) = rx.try_recv() {
                jobs.push(more);
            }
            self.last_batch = jobs.len();
            self.insert(jobs);
        }
        // Shutting down: the syncer syncs what is inserted, then stops.
        self.shared.lock().closed = true;
        self.shared.ready.notify_one();
    }

    /// Writes the operations of `jobs` as journal records and hands them to the syncer.
    fn insert(&mut self, jobs: Vec<Job>) {
        let mut ops = Vec::new();
        let mut dones = Vec::with_capacity(jobs.len());
        for mut job in jobs {
            ops.append(&mut job.ops);
            self.version = self.version.max(job.version);
            dones.push(job.done);
        }
        if self.shared.failure.get().is_some() {
            return self.shared.refuse(dones);
        }
        let mut records = Vec::new();
        let mut record = frame::record_header(self.version);
        let header = record.len();
        for op in &ops {
            if record.len() > header && record.len() + frame::op_len(op) > MAX_JOURNAL_RECORD {
                records.push(std::mem::replace(&mut record, frame::record_header(self.version)));
            }
            frame::put_op(&mut record, op);
        }
        records.push(record);
        let bytes = records.iter().map(|r| r.len() as u64).sum();
        // One plain insert per record, not an atomic sled batch: sled seals and writes its
        // log buffer before and after every batch, which doubled the disk writes (each waking
        // sled's whole I/O pool). Atomicity is not needed: records are inserted in order and a
        // crash keeps a prefix of sled's log, so a restart sees a prefix of unacknowledged
        // changes at worst.
        for record in records {
            if let Err(e) = self.journal.insert(self.next_seq.to_be_bytes(), record) {
                self.shared.fail(StoreError::from(e).to_string());
                return self.shared.refuse(dones);
            }
            self.next_seq += 1;
        }
        self.shared.lock().inserted.push(Inserted { dones, bytes, last_seq: self.next_seq - 1 });
        self.shared.ready.notify_one();
    }
}

struct Syncer {
    synced: SyncedDb,
    shared: Arc<Shared>,
    compactor: Compactor,
    /// Journal bytes synced since the last compaction request.
    since_compaction: u64,
}

impl Syncer {
    fn sync(&self) -> Result<(), StoreError> {
        #[cfg(test)]
        if self
            .shared
            .fail_syncs
            .fetch_update(std::sync::atomic::Ordering::AcqRel, std::sync::atomic::Ordering::Acquire, |n| {
                n.checked_sub(1)
            })
            .is_ok()
        {
            return Err(StoreError::Io(std::io::Error::other("injected sync failure")));
        }
        self.synced.sync()
    }

    fn run(mut self) {
        loop {
            let batches = {
                let mut pipe = self.shared.lock();
                while pipe.inserted.is_empty() && !pipe.closed {
                    pipe = self.shared.ready.wait(pipe).unwrap_or_else(|e| e.into_inner());
                }
                if pipe.inserted.is_empty() {
                    return;
                }
                std::mem::take(&mut pipe.inserted)
            };
            if self.shared.failure.get().is_none() {
                // Everything inserted before this sync starts is durable when it returns.
                if let Err(e) = self.sync() {
                    self.shared.fail(e.to_string());
                }
            }
            if self.shared.failure.get().is_some() {
                self.shared.refuse(batches.into_iter().flat_map(|b| b.dones));
                continue;
            }
            let last_seq = batches.last().map_or(0, |b| b.last_seq);
            self.synced.stats.group.observe(batches.iter().map(|b| b.dones.len() as u64).sum());
            for b in batches {
                self.since_compaction += b.bytes;
                for done in b.dones {
                    let _ = done.send(Ok(()));
                }
            }
            if self.compactor.due(self.since_compaction) && self.compactor.request(last_seq) {
                self.since_compaction = 0;
            }
        }
    }
}
