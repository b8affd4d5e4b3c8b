//! Byte layouts of journal records and of the snapshot file.
//!
//! Both are sequences of record operations, length-prefixed (little-endian `u32`), so that
//! writing them is a memory copy and reading them back never trusts a length it has not
//! checked against what is left.
//!
//! * Journal record (a value of the `journal` tree): `version: u64`, then operations until the
//!   end: `key_len, key, tag` where tag `1` is followed by `value_len, value` (write) and tag
//!   `0` by nothing (delete).
//! * Snapshot file: [`SNAPSHOT_MAGIC`], `through_seq: u64`, `version: u64`, `count: u64`, then
//!   `count` times `key_len, key, value_len, value`, sorted by key.

use std::collections::BTreeMap;

use super::{Op, StoreError};

/// First bytes of a snapshot file, with the layout version.
pub const SNAPSHOT_MAGIC: &[u8; 8] = b"SYNREG01";

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

/// Applies the operations of one journal record to `records`; returns its change counter.
pub fn apply_record(bytes: &[u8], records: &mut BTreeMap<Vec<u8>, Vec<u8>>) -> Result<u64, StoreError> {
    let mut r = Reader { bytes, what: "journal record" };
    let version = r.u64()?;
    while !r.bytes.is_empty() {
        let key = r.bytes()?.to_vec();
        match r.take(1)?[0] {
            1 => {
                records.insert(key, r.bytes()?.to_vec());
            }
            0 => {
                records.remove(&key);
            }
            t => return Err(StoreError::Corrupt(format!("journal record: unknown operation tag {t}"))),
        }
    }
    Ok(version)
}

/// A snapshot's contents: every record as of journal sequence `through_seq`.
#[derive(Debug, Default, PartialEq)]
pub struct Snapshot {
    pub through_seq: u64,
    pub version: u64,
    pub records: BTreeMap<Vec<u8>, Vec<u8>>,
}

/// Encodes a snapshot file.
pub fn encode_snapshot(s: &Snapshot) -> Vec<u8> {
    let size: usize = s.records.iter().map(|(k, v)| 8 + k.len() + v.len()).sum();
    let mut buf = Vec::with_capacity(32 + size);
    buf.extend_from_slice(SNAPSHOT_MAGIC);
    buf.extend_from_slice(&s.through_seq.to_le_bytes());
    buf.extend_from_slice(&s.version.to_le_bytes());
    buf.extend_from_slice(&(s.records.len() as u64).to_le_bytes());
    for (k, v) in &s.records {
        put_bytes(&mut buf, k);
        put_bytes(&mut buf, v);
    }
    buf
}

/// Decodes a snapshot file written by [`encode_snapshot`].
pub fn decode_snapshot(bytes: &[u8]) -> Result<Snapshot, StoreError> {
    let mut r = Reader { bytes, what: "snapshot" };
    if r.take(SNAPSHOT_MAGIC.len())? != SNAPSHOT_MAGIC {
        return Err(StoreError::Corrupt("snapshot: not a synod registry snapshot".into()));
    }
    let through_seq = r.u64()?;
    let version = r.u64()?;
    let count = r.u64()?;
    let mut records = BTreeMap::new();
    for _ in 0..count {
        let k = r.bytes()?.to_vec();
        let v = r.bytes()?.to_vec();
        records.insert(k, v);
    }
    if !r.bytes.is_empty() {
        return Err(StoreError::Corrupt("snapshot: trailing bytes after the last record".into()));
    }
    Ok(Snapshot { through_seq, version, records })
}

fn put_bytes(buf: &mut Vec<u8>, b: &[u8]) {
    // Callers cap records far below 4 GiB (see MAX_RECORD).
    buf.extend_from_slice(&(b.len() as u32).to_le_bytes());
    buf.extend_from_slice(b);
}

struct Reader<'a> {
    bytes: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        if self.bytes.len() < n {
            return Err(StoreError::Corrupt(format!("{}: truncated", self.what)));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn u64(&mut self) -> Result<u64, StoreError> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes(b.try_into().unwrap_or_default()))
    }

    fn bytes(&mut self) -> Result<&'a [u8], StoreError> {
        let b = self.take(4)?;
        let n = u32::from_le_bytes(b.try_into().unwrap_or_default()) as usize;
        self.take(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(apply_record(&rec, &mut records).unwrap(), 7);
        assert_eq!(records, BTreeMap::from([(b"A\0x".to_vec(), b"one".to_vec())]));
        for cut in 1..rec.len() {
            if !boundaries.contains(&cut) {
                assert!(apply_record(&rec[..cut], &mut BTreeMap::new()).is_err(), "cut at {cut}");
            }
        }

        let snap = Snapshot { through_seq: 3, version: 9, records };
        let bytes = encode_snapshot(&snap);
        assert_eq!(decode_snapshot(&bytes).unwrap(), snap);
        for cut in 0..bytes.len() {
            assert!(decode_snapshot(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode_snapshot(&longer).is_err());
    }
}
