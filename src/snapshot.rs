//! Registry backups (`synod snapshot save/restore`): one node's whole registry — instances
//! with their overrides, tombstones and the change counter — in a self-checking file.
//!
//! Layout: the magic `SYNODBAK`, the format number (u32 LE), the body's length (u64 LE), the
//! body (bincode), then the SHA-256 of everything before it. A file is checked whole (length,
//! checksum, decoding) before anything is written from it, so a truncated or damaged backup
//! is refused with nothing changed.
//!
//! A restore prepares a fresh data directory for every mode at once: the registry store
//! (`none`, `p2p`) and a seed for raft (`raft/restore.synod`), which a node that leads its
//! cluster proposes through the log before it reports ready (see
//! [`crate::replication::raft::seed`]).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::core::model::InstanceKey;
use crate::core::registry::Registry;
use crate::core::state::{PersistedEntry, PersistedRef};
use crate::store::{Change, Store, StoreError};

const MAGIC: &[u8; 8] = b"SYNODBAK";
const FORMAT: u32 = 1;
const HEADER: usize = 8 + 4 + 8;
const CHECKSUM: usize = 32;

/// Why a backup cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("not a synod snapshot (it does not start with {MAGIC:?})")]
    NotASnapshot,
    #[error("snapshot format {0} is not supported by this version (it reads format {FORMAT})")]
    Format(u32),
    #[error("the snapshot is truncated: {actual} bytes, {expected} expected")]
    Truncated { expected: u64, actual: u64 },
    #[error("the snapshot is {0} bytes longer than its header says")]
    Trailing(u64),
    #[error("the snapshot's checksum does not match its content: the file is damaged")]
    Checksum,
    #[error("the snapshot's content cannot be decoded: {0}")]
    Decode(String),
    #[error("cannot encode the snapshot: {0}")]
    Encode(String),
    #[error("{0} is not empty: a restore prepares a new data directory (move the old one away first)")]
    NotEmpty(PathBuf),
    #[error("cannot write the restored registry: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A backup's content.
#[derive(Debug, Deserialize)]
pub struct Backup {
    /// When the node took it (milliseconds since the epoch).
    pub taken_at_ms: u64,
    /// The node it was taken on, and that node's replication mode.
    pub node_id: u64,
    pub replication: String,
    /// The registry's change counter.
    pub version: u64,
    pub entries: Vec<PersistedEntry>,
    /// Cancelled instances and the versions that deleted them (p2p).
    pub tombstones: Vec<(InstanceKey, u64)>,
}

#[derive(Serialize)]
struct BackupOut<'a> {
    taken_at_ms: u64,
    node_id: u64,
    replication: &'a str,
    version: u64,
    entries: Vec<PersistedRef<'a>>,
    tombstones: Vec<(&'a InstanceKey, u64)>,
}

/// Takes a backup of `registry`: copied under the registry lock in one piece (instances are
/// shared, not cloned), encoded outside it.
pub fn take(registry: &Registry, node_id: u64, replication: &str) -> Result<Vec<u8>, SnapshotError> {
    let (version, entries, tombstones) = registry.read(|st| {
        let tombstones: Vec<(InstanceKey, u64)> = st.tombstones().iter().map(|(k, v)| (k.clone(), v)).collect();
        (st.version(), st.snapshot_entries(), tombstones)
    });
    let out = BackupOut {
        taken_at_ms: registry.now(),
        node_id,
        replication,
        version,
        entries: entries.iter().map(|e| e.persisted_ref()).collect(),
        tombstones: tombstones.iter().map(|(k, v)| (k, *v)).collect(),
    };
    let body = bincode::serde::encode_to_vec(&out, bincode::config::standard())
        .map_err(|e| SnapshotError::Encode(e.to_string()))?;
    let mut file = Vec::with_capacity(HEADER + body.len() + CHECKSUM);
    file.extend_from_slice(MAGIC);
    file.extend_from_slice(&FORMAT.to_le_bytes());
    file.extend_from_slice(&(body.len() as u64).to_le_bytes());
    file.extend_from_slice(&body);
    let sum = Sha256::digest(&file);
    file.extend_from_slice(&sum);
    Ok(file)
}

/// Checks and decodes a backup.
pub fn read(file: &[u8]) -> Result<Backup, SnapshotError> {
    if file.len() < MAGIC.len() || &file[..MAGIC.len()] != MAGIC {
        return Err(SnapshotError::NotASnapshot);
    }
    if file.len() < HEADER {
        return Err(SnapshotError::Truncated { expected: HEADER as u64, actual: file.len() as u64 });
    }
    let word = |at: usize, n: usize| file[at..at + n].iter().rev().fold(0u64, |acc, b| acc << 8 | u64::from(*b));
    let format = word(8, 4) as u32;
    if format != FORMAT {
        return Err(SnapshotError::Format(format));
    }
    let body_len = word(12, 8);
    let expected = (HEADER as u64).saturating_add(body_len).saturating_add(CHECKSUM as u64);
    let actual = file.len() as u64;
    if actual < expected {
        return Err(SnapshotError::Truncated { expected, actual });
    }
    if actual > expected {
        return Err(SnapshotError::Trailing(actual - expected));
    }
    let (content, sum) = file.split_at(file.len() - CHECKSUM);
    if Sha256::digest(content).as_slice() != sum {
        return Err(SnapshotError::Checksum);
    }
    let (backup, used) =
        bincode::serde::decode_from_slice::<Backup, _>(&content[HEADER..], bincode::config::standard())
            .map_err(|e| SnapshotError::Decode(e.to_string()))?;
    if used != content.len() - HEADER {
        return Err(SnapshotError::Decode(format!(
            "{} unread bytes after the registry",
            content.len() - HEADER - used
        )));
    }
    Ok(backup)
}

/// Prepares the new data directory `dir` from a checked backup `file` (its bytes, as
/// [`read`] accepted them): the registry store for `none` and `p2p`, and the seed a `raft`
/// node proposes once it leads. `dir` must be missing or empty.
pub fn restore(file: &[u8], backup: &Backup, dir: &Path) -> Result<(), SnapshotError> {
    if std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some()) {
        return Err(SnapshotError::NotEmpty(dir.to_path_buf()));
    }
    {
        let store = Store::open(&dir.join("registry"))?;
        let keys: Vec<InstanceKey> = backup.entries.iter().map(PersistedEntry::key).collect();
        let mut changes: Vec<Change<'_>> =
            keys.iter().zip(&backup.entries).map(|(k, e)| Change::Instance(k, Some(e.as_ref()))).collect();
        changes.extend(backup.tombstones.iter().map(|(k, v)| Change::Tombstone(k, Some(*v))));
        let done = store.submit(changes, backup.version);
        match done.blocking_recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(SnapshotError::Io(std::io::Error::other(e))),
            Err(_) => return Err(SnapshotError::Store(StoreError::Closed)),
        }
    }
    let raft_dir = dir.join("raft");
    std::fs::create_dir_all(&raft_dir)?;
    let seed = crate::replication::raft::seed::FILE;
    crate::store::write_file_durably::<std::io::Error>(&raft_dir, "restore.tmp", seed, |w| {
        std::io::Write::write_all(w, file)
    })?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::clock::ManualClock;
    use crate::core::command::Command;
    use crate::core::tests::instance;

    #[test]
    fn a_backup_round_trips_and_damage_is_refused() {
        let clock = std::sync::Arc::new(ManualClock::new(1_000));
        let reg = Registry::new(Default::default(), Default::default(), clock);
        for i in 0..3 {
            let cmd = Command::Register {
                instance: Box::new(instance("A", &format!("i-{i}"))),
                now: 1_000,
                from_peer: false,
            };
            reg.apply(cmd, |_, _| ());
        }
        let file = take(&reg, 7, "none").unwrap();
        let b = read(&file).unwrap();
        assert_eq!((b.node_id, b.replication.as_str(), b.entries.len()), (7, "none", 3));
        assert_eq!(b.version, reg.read(|st| st.version()));

        assert!(matches!(read(&file[..file.len() - 1]), Err(SnapshotError::Truncated { .. })));
        assert!(matches!(read(&file[..10]), Err(SnapshotError::Truncated { .. })));
        assert!(matches!(read(b"hello"), Err(SnapshotError::NotASnapshot)));
        let mut longer = file.clone();
        longer.push(0);
        assert!(matches!(read(&longer), Err(SnapshotError::Trailing(1))));
        let mut flipped = file.clone();
        flipped[HEADER + 5] ^= 1;
        assert!(matches!(read(&flipped), Err(SnapshotError::Checksum)));
        let mut future = file.clone();
        future[8] = 9;
        assert!(matches!(read(&future), Err(SnapshotError::Format(9))));
    }
}
