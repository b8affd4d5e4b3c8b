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
//! Failures: a batch whose insert or sync fails is reported to its writers, and its operations
//! (with those of every batch inserted after it and not yet synced) are written again, in
//! their original order, before anything newer — memory already holds those changes, so disk
//! must catch up, and a newer record must never be overwritten by an older retried one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

use tokio::sync::oneshot;

use super::compact::Compactor;
use super::frame;
use super::{Op, StoreError, SyncedDb};

/// Largest journal record the writer builds from several operations. sled keeps values above
/// a quarter of its 512 KiB segment as separate blob files, which it never fsyncs, so records
/// stay well below that (a single operation is itself capped by `MAX_RECORD`).
const MAX_JOURNAL_RECORD: usize = 96 * 1024;

/// How long the writer lets concurrent writes gather before inserting a batch.
const LINGER: Duration = Duration::from_micros(300);

/// Operations from one apply, in order, with the registry's change counter after it.
pub struct Job {
    pub ops: Vec<Op>,
    pub version: u64,
    pub done: oneshot::Sender<Result<(), String>>,
}

/// A batch inserted into the journal, waiting for a sync.
struct Inserted {
    dones: Vec<oneshot::Sender<Result<(), String>>>,
    /// Kept to be written again should the sync fail.
    ops: Vec<Op>,
    bytes: u64,
    last_seq: u64,
}

/// What the two stages share, under one lock.
#[derive(Default)]
struct Pipe {
    inserted: Vec<Inserted>,
    /// Operations to write again, oldest first, ahead of anything newer.
    carry: Vec<Op>,
    closed: bool,
}

struct Shared {
    pipe: Mutex<Pipe>,
    ready: Condvar,
    healthy: Arc<AtomicBool>,
    /// Tests: how many of the next syncs fail.
    #[cfg(test)]
    fail_syncs: Arc<std::sync::atomic::AtomicU32>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pipe> {
        self.pipe.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_healthy(&self, ok: bool, error: &str) {
        let was = self.healthy.swap(ok, Ordering::Relaxed);
        if ok && !was {
            tracing::info!("registry store writes succeed again");
        } else if !ok && was {
            tracing::error!(error, "registry store write failed; retrying");
        }
    }
}

/// The writer stage; it starts the syncer stage.
pub struct Writer {
    pub synced: SyncedDb,
    pub journal: sled::Tree,
    pub healthy: Arc<AtomicBool>,
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
            healthy: self.healthy,
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
        loop {
            let retrying = !self.shared.lock().carry.is_empty();
            let first = if retrying {
                match rx.recv_timeout(Duration::from_secs(1)) {
                    Ok(job) => Some(job),
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
            } else {
                match rx.recv() {
                    Ok(job) => Some(job),
                    Err(_) => break,
                }
            };
            // Under concurrent load, wait a moment so more writers join this batch: each
            // insert, flush and fdatasync costs far more CPU than the records it carries. A
            // lone writer (previous batch of one) is written at once. (Skipping the wait while
            // the disk is idle was measured: smaller batches, more CPU, ~15 % fewer writes/s.)
            if self.last_batch > 1 {
                thread::sleep(LINGER);
            }
            let mut jobs: Vec<Job> = first.into_iter().collect();
            while let Ok(more) = rx.try_recv() {
                jobs.push(more);
            }
            self.last_batch = jobs.len();
            self.insert(jobs);
        }
        // Shutting down: one last attempt at anything still to be written again.
        self.insert(Vec::new());
        self.shared.lock().closed = true;
        self.shared.ready.notify_one();
    }

    /// Inserts the carried operations and those of `jobs` as journal records and hands them
    /// to the syncer. Holding the lock throughout keeps the order of records and retried
    /// operations consistent with the syncer's failure handling.
    fn insert(&mut self, jobs: Vec<Job>) {
        let mut pipe = self.shared.lock();
        let mut ops = std::mem::take(&mut pipe.carry);
        let mut dones = Vec::with_capacity(jobs.len());
        for mut job in jobs {
            ops.append(&mut job.ops);
            self.version = self.version.max(job.version);
            dones.push(job.done);
        }
        if ops.is_empty() {
            return;
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
                // Records inserted before the failure stay; the carried operations are written
                // again after them, which yields the same state.
                let e = StoreError::from(e).to_string();
                self.shared.set_healthy(false, &e);
                pipe.carry = ops;
                for done in dones {
                    let _ = done.send(Err(e.clone()));
                }
                tracing::debug!(seq = self.next_seq, "journal insert failed");
                return;
            }
            self.next_seq += 1;
        }
        pipe.inserted.push(Inserted { dones, ops, bytes, last_seq: self.next_seq - 1 });
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
        if self.shared.fail_syncs.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1)).is_ok() {
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
            // Everything inserted before this sync starts is durable when it returns.
            match self.sync() {
                Ok(()) => {
                    self.shared.set_healthy(true, "");
                    let last_seq = batches.last().map_or(0, |b| b.last_seq);
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
                Err(e) => {
                    let e = e.to_string();
                    self.shared.set_healthy(false, &e);
                    // These batches and every one inserted after them are written again, in
                    // order, before anything newer (the writer holds the lock while inserting).
                    let mut pipe = self.shared.lock();
                    let later = std::mem::take(&mut pipe.inserted);
                    let mut carry = Vec::new();
                    for b in batches.into_iter().chain(later) {
                        carry.extend(b.ops);
                        for done in b.dones {
                            let _ = done.send(Err(e.clone()));
                        }
                    }
                    carry.append(&mut pipe.carry);
                    pipe.carry = carry;
                }
            }
        }
    }
}
