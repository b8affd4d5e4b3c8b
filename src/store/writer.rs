//! The writer thread: group commit into the journal.
//!
//! It takes every job queued, writes their operations as journal records in one atomic sled
//! batch, flushes sled, `fdatasync`s sled's data file, and only then acknowledges the jobs. One
//! sled insert per group commit (instead of one per instance record) is what makes the write
//! path cheap: sled's per-key insert cost, not the sync, dominated the first layout.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
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

/// How long the writer lets concurrent writes gather before a sync.
const LINGER: Duration = Duration::from_micros(300);

/// Operations from one apply, in order, with the registry's change counter after it.
pub struct Job {
    pub ops: Vec<Op>,
    pub version: u64,
    pub done: oneshot::Sender<Result<(), String>>,
}

pub struct Writer {
    pub synced: SyncedDb,
    pub journal: sled::Tree,
    pub healthy: Arc<AtomicBool>,
    pub compactor: Compactor,
    /// Sequence number of the next journal record.
    pub next_seq: u64,
    /// Journal bytes written since the last compaction request.
    pub since_compaction: u64,
    /// Operations of batches that failed: their writers were told so, but memory already holds
    /// the change, so they are written again (before newer ones) until they stick.
    pub carry: Vec<Op>,
    /// The newest change counter seen.
    pub version: u64,
    /// Jobs in the previous batch.
    pub last_batch: usize,
}

impl Writer {
    pub fn spawn(self, rx: mpsc::Receiver<Job>) -> std::io::Result<thread::JoinHandle<()>> {
        thread::Builder::new().name("synod-store".into()).spawn(move || self.run(rx))
    }

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
                        let _ = self.write(Vec::new());
                        return;
                    }
                }
            };
            // Under concurrent load, wait a moment so more writers join this sync: each
            // flush + fdatasync costs far more CPU than the records it carries. A lone writer
            // (previous batch of one) is synced at once.
            if self.last_batch > 1 {
                thread::sleep(LINGER);
            }
            let mut jobs: Vec<Job> = first.into_iter().collect();
            while let Ok(more) = rx.try_recv() {
                jobs.push(more);
            }
            self.last_batch = jobs.len();
            let mut ops = Vec::new();
            for job in &mut jobs {
                ops.append(&mut job.ops);
                self.version = self.version.max(job.version);
            }
            let result = self.write(ops);
            for job in jobs {
                let _ = job.done.send(result.clone());
            }
        }
    }

    /// Writes the carried and the new operations as one atomic batch of journal records and
    /// syncs.
    fn write(&mut self, ops: Vec<Op>) -> Result<(), String> {
        let mut all = std::mem::take(&mut self.carry);
        all.extend(ops);
        if all.is_empty() {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        let mut bytes = 0u64;
        let mut record = frame::record_header(self.version);
        let header = record.len();
        for op in &all {
            if record.len() > header && record.len() + frame::op_len(op) > MAX_JOURNAL_RECORD {
                bytes += record.len() as u64;
                batch.insert(
                    &self.next_seq.to_be_bytes(),
                    std::mem::replace(&mut record, frame::record_header(self.version)),
                );
                self.next_seq += 1;
            }
            frame::put_op(&mut record, op);
        }
        bytes += record.len() as u64;
        batch.insert(&self.next_seq.to_be_bytes(), record);
        self.next_seq += 1;
        let result = self
            .journal
            .apply_batch(batch)
            .map_err(StoreError::from)
            .and_then(|_| self.synced.sync())
            .map_err(|e| e.to_string());
        match &result {
            Ok(()) => {
                if !self.healthy.swap(true, Ordering::Relaxed) {
                    tracing::info!("registry store writes succeed again");
                }
                self.since_compaction += bytes;
                if self.compactor.due(self.since_compaction) && self.compactor.request(self.next_seq - 1) {
                    self.since_compaction = 0;
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
