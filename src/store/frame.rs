//! Byte layouts of journal records and of the snapshot file.
//!
//! Both are sequences of record operations, length-prefixed (little-endian `u32`), so that
//! writing them is a memory copy and reading them back never trusts a length it has not
//! checked against what is left.
//!
//! * Journal record (a value of the `journal` tree): `version: u64`, then operations until the
//!   end: `key_len, key, tag` where tag `1` is followed by `value_len, value` (write) and tag
//!   `0` by nothing (delete).
//! * Snapshot file: [`SNAPSHOT_MAGIC`], `through_seq: u64`, `version: u64`, then records sorted
//!   by key (`key_len, key, value_len, value`), then `u32::MAX` and the record count. It is
//!   written and read as a stream, so compaction never holds a whole registry in memory.

use std::io::{Read, Write};

use super::{Op, StoreError};

/// First bytes of a snapshot file, with the layout version.
pub const SNAPSHOT_MAGIC: &[u8; 8] = b"SYNREG01";

/// A stored record: key and encoded entry.
pub type Record = (Vec<u8>, Vec<u8>);

/// Receives records (key, value) in key order.
pub type Emit<'a> = &'a mut dyn FnMut(&[u8], &[u8]) -> Result<(), StoreError>;

/// Marks the end of a snapshot's records (no key is 4 GiB long).
const END: u32 = u32::MAX;

/// Appends one operation to a journal record being built.
pub fn put_op(buf: &mut Vec<u8>, (key, value): &Op) {
    put_bytes(buf, key);
    match value {
        Some(v) => {
            buf.push(1);
            put_bytes(buf, v);
        }
        None => buf.push(0),
    }
}

/// Bytes [`put_op`] adds for `op`.
pub fn op_len((key, value): &Op) -> usize {
    4 + key.len() + 1 + value.as_ref().map_or(0, |v| 4 + v.len())
}

/// Starts a journal record carrying the registry's change counter.
pub fn record_header(version: u64) -> Vec<u8> {
    version.to_le_bytes().to_vec()
}

/// Calls `op(key, Some(value) | None)` for each operation of a journal record, in order;
/// returns the record's change counter.
pub fn for_each_op(bytes: &[u8], mut op: impl FnMut(&[u8], Option<&[u8]>)) -> Result<u64, StoreError> {
    let mut r = Slice { bytes };
    let version = u64::from_le_bytes(r.take(8)?.try_into().unwrap_or_default());
    while !r.bytes.is_empty() {
        let key = r.bytes()?;
        match r.take(1)?[0] {
            1 => op(key, Some(r.bytes()?)),
            0 => op(key, None),
            t => return Err(StoreError::Corrupt(format!("journal record: unknown operation tag {t}"))),
        }
    }
    Ok(version)
}

/// A snapshot's header.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct SnapshotHeader {
    /// The last journal sequence folded into the snapshot.
    pub through_seq: u64,
    /// The registry's change counter as of that record.
    pub version: u64,
}

/// Writes a snapshot to `w`: the header, each `(key, value)` from `records` in key order, the
/// end marker. Returns the number of records.
pub fn write_snapshot<W: Write>(
    w: &mut W,
    header: SnapshotHeader,
    records: impl FnOnce(Emit<'_>) -> Result<(), StoreError>,
) -> Result<u64, StoreError> {
    w.write_all(SNAPSHOT_MAGIC)?;
    w.write_all(&header.through_seq.to_le_bytes())?;
    w.write_all(&header.version.to_le_bytes())?;
    let mut count = 0u64;
    records(&mut |k: &[u8], v: &[u8]| {
        for b in [k, v] {
            w.write_all(&(b.len() as u32).to_le_bytes())?;
            w.write_all(b)?;
        }
        count += 1;
        Ok(())
    })?;
    w.write_all(&END.to_le_bytes())?;
    w.write_all(&count.to_le_bytes())?;
    Ok(count)
}

/// Reads a snapshot written by [`write_snapshot`] as a stream of records.
pub struct SnapshotReader<R> {
    r: R,
    count: u64,
    done: bool,
}

impl<R: Read> SnapshotReader<R> {
    /// Reads and checks the header.
    pub fn open(mut r: R) -> Result<(SnapshotReader<R>, SnapshotHeader), StoreError> {
        let mut head = [0u8; 24];
        r.read_exact(&mut head).map_err(truncated)?;
        if &head[..8] != SNAPSHOT_MAGIC {
            return Err(StoreError::Corrupt("snapshot: not a synod registry snapshot".into()));
        }
        let through_seq = u64::from_le_bytes(head[8..16].try_into().unwrap_or_default());
        let version = u64::from_le_bytes(head[16..24].try_into().unwrap_or_default());
        Ok((SnapshotReader { r, count: 0, done: false }, SnapshotHeader { through_seq, version }))
    }

    /// The next record, or `None` after the last one (checked against the stored count and
    /// the end of the file).
    pub fn next_record(&mut self) -> Result<Option<Record>, StoreError> {
        if self.done {
            return Ok(None);
        }
        let key = match self.len()? {
            END => {
                let mut count = [0u8; 8];
                self.r.read_exact(&mut count).map_err(truncated)?;
                if u64::from_le_bytes(count) != self.count {
                    return Err(StoreError::Corrupt("snapshot: record count does not match".into()));
                }
                if self.r.read(&mut [0u8; 1])? != 0 {
                    return Err(StoreError::Corrupt("snapshot: trailing bytes after the last record".into()));
                }
                self.done = true;
                return Ok(None);
            }
            n => self.vec(n)?,
        };
        let n = self.len()?;
        let value = self.vec(n)?;
        self.count += 1;
        Ok(Some((key, value)))
    }

    fn len(&mut self) -> Result<u32, StoreError> {
        let mut b = [0u8; 4];
        self.r.read_exact(&mut b).map_err(truncated)?;
        Ok(u32::from_le_bytes(b))
    }

    fn vec(&mut self, n: u32) -> Result<Vec<u8>, StoreError> {
        // Bounded by the record limit, so a damaged length cannot ask for gigabytes.
        if n as usize > super::MAX_RECORD + 64 * 1024 {
            return Err(StoreError::Corrupt(format!("snapshot: record length {n} out of range")));
        }
        let mut v = vec![0u8; n as usize];
        self.r.read_exact(&mut v).map_err(truncated)?;
        Ok(v)
    }
}

fn truncated(e: std::io::Error) -> StoreError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        StoreError::Corrupt("snapshot: truncated".into())
    } else {
        StoreError::Io(e)
    }
}

fn put_bytes(buf: &mut Vec<u8>, b: &[u8]) {
    // Callers cap records far below 4 GiB (see MAX_RECORD).
    buf.extend_from_slice(&(b.len() as u32).to_le_bytes());
    buf.extend_from_slice(b);
}

struct Slice<'a> {
    bytes: &'a [u8],
}

impl<'a> Slice<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        if self.bytes.len() < n {
            return Err(StoreError::Corrupt("journal record: truncated".into()));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn bytes(&mut self) -> Result<&'a [u8], StoreError> {
        let n = u32::from_le_bytes(self.take(4)?.try_into().unwrap_or_default()) as usize;
        self.take(n)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn apply(rec: &[u8], records: &mut BTreeMap<Vec<u8>, Vec<u8>>) -> Result<u64, StoreError> {
        for_each_op(rec, |k, v| match v {
            Some(v) => {
                records.insert(k.to_vec(), v.to_vec());
            }
            None => {
                records.remove(k);
            }
        })
    }

    fn read_all(bytes: &[u8]) -> Result<(SnapshotHeader, Vec<Record>), StoreError> {
        let (mut r, header) = SnapshotReader::open(bytes)?;
        let mut out = Vec::new();
        while let Some(rec) = r.next_record()? {
            out.push(rec);
        }
        Ok((header, out))
    }

    #[test]
    fn records_and_snapshots_round_trip_and_reject_damage() {
        let mut rec = record_header(7);
        let ops: Vec<Op> = vec![(b"A\0x".to_vec(), Some(b"one".to_vec())), (b"A\0y".to_vec(), None)];
        // A record cut at an operation boundary is itself a valid record.
        let mut boundaries = vec![rec.len()];
        for op in &ops {
            let before = rec.len();
            put_op(&mut rec, op);
            assert_eq!(rec.len() - before, op_len(op));
            boundaries.push(rec.len());
        }
        let mut records = BTreeMap::from([(b"A\0y".to_vec(), b"old".to_vec())]);
        assert_eq!(apply(&rec, &mut records).unwrap(), 7);
        assert_eq!(records, BTreeMap::from([(b"A\0x".to_vec(), b"one".to_vec())]));
        for cut in 1..rec.len() {
            if !boundaries.contains(&cut) {
                assert!(apply(&rec[..cut], &mut BTreeMap::new()).is_err(), "cut at {cut}");
            }
        }

        records.insert(b"B\0z".to_vec(), vec![]);
        let header = SnapshotHeader { through_seq: 3, version: 9 };
        let mut bytes = Vec::new();
        let count = write_snapshot(&mut bytes, header, |emit| {
            for (k, v) in &records {
                emit(k, v)?;
            }
            Ok(())
        })
        .unwrap();
        assert_eq!(count, 2);
        let (h, got) = read_all(&bytes).unwrap();
        assert_eq!(h, header);
        assert_eq!(got, records.into_iter().collect::<Vec<_>>());
        for cut in 0..bytes.len() {
            assert!(read_all(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(read_all(&longer).is_err());
    }
}
