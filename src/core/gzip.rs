//! Gzip bodies assembled from pieces compressed separately.
//!
//! Each [`Piece`] is a run of raw deflate blocks ending on a byte boundary (a sync flush)
//! and never marked final, so pieces can be laid end to end in any order and closed with
//! one final empty block: the result is a single ordinary gzip member, which every client's
//! decoder reads (unlike concatenated gzip members, which some decoders stop after the
//! first of). The CRC of the whole is combined from the pieces' CRCs without reading
//! their text again. A change to one part of a large document then costs compressing
//! that part, not the document.

use bytes::Bytes;
use flate2::{Compress, Compression, FlushCompress};

/// Gzip member header: magic, deflate, no flags, no mtime, no extra flags, unknown OS.
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

/// A final, empty block with fixed codes: closes the deflate stream.
const FINAL_BLOCK: [u8; 2] = [0x03, 0x00];

/// Pieces shorter than this are stored rather than compressed (a compressor's setup costs
/// more than it saves on a separator or a document's opening).
const STORE_BELOW: usize = 128;

/// Largest stored block deflate allows.
const MAX_STORED: usize = 65_535;

/// Part of a gzip body: deflate blocks ending byte-aligned, with the CRC and length of the
/// text they hold.
#[derive(Clone, Debug)]
pub struct Piece {
    deflate: Bytes,
    crc: crc32fast::Hasher,
}

impl Piece {
    /// `text` compressed on its own (stored when short).
    pub fn new(text: &[u8]) -> Self {
        if text.len() < STORE_BELOW {
            return Self::stored(text);
        }
        Compressor::new().piece(text)
    }

    /// `text` in stored (uncompressed) blocks.
    pub fn stored(text: &[u8]) -> Self {
        let mut out = Vec::with_capacity(text.len() + 5 * (text.len() / MAX_STORED + 1));
        let mut chunks = text.chunks(MAX_STORED).peekable();
        if chunks.peek().is_none() {
            stored_block(&mut out, &[]);
        }
        for chunk in chunks {
            stored_block(&mut out, chunk);
        }
        Piece { deflate: out.into(), crc: crc_of(text) }
    }

    /// Length of the text the piece holds.
    pub fn text_len(&self) -> u64 {
        self.crc.clone().total_len()
    }

    /// Bytes the piece takes compressed.
    pub fn compressed_len(&self) -> usize {
        self.deflate.len()
    }
}

/// Compresses pieces one after another with one compressor (setting one up allocates and
/// clears its tables, which for small pieces costs more than the compression).
pub struct Compressor(Compress);

impl Default for Compressor {
    fn default() -> Self {
        Self::new()
    }
}

impl Compressor {
    /// A compressor at the fast level (as the whole-body gzip uses).
    pub fn new() -> Self {
        Compressor(Compress::new(Compression::fast(), false))
    }

    /// `text` as a piece of its own: nothing in it refers to text outside it.
    pub fn piece(&mut self, text: &[u8]) -> Piece {
        if text.len() < STORE_BELOW {
            return Piece::stored(text);
        }
        self.0.reset();
        let mut out = Vec::with_capacity(text.len() / 4 + 64);
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity());
            }
            let read = usize::try_from(self.0.total_in()).unwrap_or(usize::MAX).min(text.len());
            if self.0.compress_vec(&text[read..], &mut out, FlushCompress::Sync).is_err() {
                // Cannot happen with a compressor used only here; stored blocks are a valid
                // answer if it ever does.
                return Piece::stored(text);
            }
            // A sync flush is complete once all input is taken and the output did not fill.
            if self.0.total_in() as usize == text.len() && out.len() < out.capacity() {
                break;
            }
        }
        Piece { deflate: out.into(), crc: crc_of(text) }
    }
}

fn crc_of(text: &[u8]) -> crc32fast::Hasher {
    let mut h = crc32fast::Hasher::new();
    h.update(text);
    h
}

fn stored_block(out: &mut Vec<u8>, chunk: &[u8]) {
    // BFINAL 0, BTYPE 00, padded to the byte; then LEN and its complement, little-endian.
    let len = chunk.len() as u16;
    out.push(0);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&(!len).to_le_bytes());
    out.extend_from_slice(chunk);
}

/// One gzip member holding the pieces' texts in order.
pub fn assemble<'a>(pieces: impl IntoIterator<Item = &'a Piece> + Clone) -> Bytes {
    let size: usize = pieces.clone().into_iter().map(|p| p.deflate.len()).sum();
    let mut out = Vec::with_capacity(HEADER.len() + size + FINAL_BLOCK.len() + 8);
    out.extend_from_slice(&HEADER);
    let mut crc = crc32fast::Hasher::new();
    for p in pieces {
        out.extend_from_slice(&p.deflate);
        crc.combine(&p.crc);
    }
    out.extend_from_slice(&FINAL_BLOCK);
    let len = crc.total_len();
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    // ISIZE is the length modulo 2^32.
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn gunzip(gz: &[u8]) -> Vec<u8> {
        // The single-member decoder: it would stop after a first member.
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(gz).read_to_end(&mut out).unwrap();
        out
    }

    /// Repetitive text, as registry documents are, varied by `seed`.
    fn text(n: usize, seed: u8) -> Vec<u8> {
        let unit = br#"{"instanceId":"host-","status":"UP"}"#;
        (0..n).map(|i| unit[i % unit.len()].wrapping_add(seed * u8::from(i % 7 == 0))).collect()
    }

    #[test]
    fn pieces_in_any_order_make_one_member() {
        let parts = [text(10, 0), text(5000, 1), Vec::new(), text(200_000, 2), text(130, 3)];
        let mut c = Compressor::new();
        let pieces: Vec<Piece> = parts.iter().map(|t| c.piece(t)).collect();
        for order in [[0, 1, 2, 3, 4], [4, 3, 2, 1, 0], [3, 0, 4, 2, 1]] {
            let gz = assemble(order.iter().map(|&i| &pieces[i]));
            let want: Vec<u8> = order.iter().flat_map(|&i| parts[i].clone()).collect();
            assert_eq!(gunzip(&gz), want);
            // Trailer length and CRC as a whole-body encoder writes them.
            assert_eq!(&gz[gz.len() - 4..], &(want.len() as u32).to_le_bytes());
            assert_eq!(&gz[gz.len() - 8..gz.len() - 4], &crc32fast::hash(&want).to_le_bytes());
        }
    }

    #[test]
    fn compressed_pieces_are_smaller_and_stored_ones_exact() {
        let t = text(100_000, 0);
        let p = Piece::new(&t);
        assert!(p.compressed_len() < t.len() / 10, "{}", p.compressed_len());
        assert_eq!(p.text_len(), t.len() as u64);
        let big = text(3 * MAX_STORED + 7, 1);
        let s = Piece::stored(&big);
        assert_eq!(s.compressed_len(), big.len() + 4 * 5);
        assert_eq!(gunzip(&assemble([&s])), big);
    }

    #[test]
    fn nothing_assembles_to_an_empty_body() {
        assert_eq!(gunzip(&assemble(std::iter::empty::<&Piece>())), b"");
        assert_eq!(gunzip(&assemble([&Piece::new(b"")])), b"");
    }
}
