//! On-disk entry format: one file per cached object.
//!
//! Layout (all integers little endian):
//!
//! ```text
//! magic "KMRENT01" | internal_len u32 | header_len u32 | key_len u32 | body_len u64
//! | body_sha256 [32] | meta_sha256 [32]
//! | internal meta bytes | header bytes | key (primary URL, UTF-8) | body
//! ```
//!
//! `internal` and `header` are the two halves of [`pingora::cache::CacheMeta::serialize`].
//! `meta_sha256` covers internal + header + key, `body_sha256` covers the body, and both
//! lengths are recorded, so a truncated, half-written or bit-flipped file is detected
//! ([`EntryError`]) and never served. The fixed prefix is written last (the file is created
//! with a zeroed prefix) and the file is only renamed into its final path after that, so a
//! crash mid-write leaves at worst a temp file the index rebuild deletes.

use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// File magic and format version.
pub const MAGIC: [u8; 8] = *b"KMRENT01";
/// Size of the fixed prefix.
pub const FIXED_LEN: usize = 8 + 4 + 4 + 4 + 8 + 32 + 32;
/// Upper bound for internal + header + key, so a corrupt length cannot make us allocate GBs.
const MAX_META_LEN: usize = 1 << 20;

/// Why an entry cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    /// The file could not be read.
    #[error("io: {0}")]
    Io(#[from] io::Error),
    /// The file is not a valid entry (bad magic, lengths, checksums).
    #[error("corrupt entry: {0}")]
    Corrupt(&'static str),
}

/// The decoded fixed prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryHeader {
    /// Length of the internal meta half.
    pub internal_len: u32,
    /// Length of the response header half.
    pub header_len: u32,
    /// Length of the primary key (URL).
    pub key_len: u32,
    /// Body length in bytes.
    pub body_len: u64,
    /// sha256 of the body.
    pub body_sha256: [u8; 32],
    /// sha256 of internal + header + key.
    pub meta_sha256: [u8; 32],
}

impl EntryHeader {
    /// Encode the fixed prefix.
    pub fn encode(&self) -> [u8; FIXED_LEN] {
        let mut b = [0u8; FIXED_LEN];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..12].copy_from_slice(&self.internal_len.to_le_bytes());
        b[12..16].copy_from_slice(&self.header_len.to_le_bytes());
        b[16..20].copy_from_slice(&self.key_len.to_le_bytes());
        b[20..28].copy_from_slice(&self.body_len.to_le_bytes());
        b[28..60].copy_from_slice(&self.body_sha256);
        b[60..92].copy_from_slice(&self.meta_sha256);
        b
    }

    /// Decode the fixed prefix.
    pub fn decode(b: &[u8; FIXED_LEN]) -> Result<Self, EntryError> {
        if b[0..8] != MAGIC {
            return Err(EntryError::Corrupt("bad magic"));
        }
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let mut body_len = [0u8; 8];
        body_len.copy_from_slice(&b[20..28]);
        let mut body_sha256 = [0u8; 32];
        body_sha256.copy_from_slice(&b[28..60]);
        let mut meta_sha256 = [0u8; 32];
        meta_sha256.copy_from_slice(&b[60..92]);
        let h = EntryHeader {
            internal_len: u32_at(8),
            header_len: u32_at(12),
            key_len: u32_at(16),
            body_len: u64::from_le_bytes(body_len),
            body_sha256,
            meta_sha256,
        };
        if h.meta_len() > MAX_META_LEN {
            return Err(EntryError::Corrupt("meta too long"));
        }
        Ok(h)
    }

    /// internal + header + key length.
    pub fn meta_len(&self) -> usize {
        self.internal_len as usize + self.header_len as usize + self.key_len as usize
    }

    /// Offset of the first body byte in the file.
    pub fn body_offset(&self) -> u64 {
        (FIXED_LEN + self.meta_len()) as u64
    }

    /// Total file size this header describes.
    pub fn file_len(&self) -> u64 {
        self.body_offset() + self.body_len
    }
}

/// The verified metadata part of an entry, with the file positioned at the body start.
#[derive(Debug)]
pub struct EntryMeta {
    /// Fixed prefix.
    pub header: EntryHeader,
    /// `CacheMeta` internal half.
    pub internal: Vec<u8>,
    /// `CacheMeta` header half.
    pub resp_header: Vec<u8>,
    /// Primary key (URL).
    pub key: String,
}

/// sha256 of the meta region.
pub fn meta_digest(internal: &[u8], header: &[u8], key: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(internal);
    h.update(header);
    h.update(key);
    h.finalize().into()
}

/// Read and verify the prefix and meta region of `file`, leaving it positioned at the body.
/// Also checks that the file length matches the recorded body length (catches truncation).
pub fn read_meta(file: &mut File) -> Result<EntryMeta, EntryError> {
    let len = file.metadata()?.len();
    read_meta_of_len(file, len)
}

/// [`read_meta`] for a caller that has the file's length already (from its own `fstat`).
pub fn read_meta_of_len(file: &mut File, file_len: u64) -> Result<EntryMeta, EntryError> {
    let mut fixed = [0u8; FIXED_LEN];
    file.read_exact(&mut fixed)
        .map_err(|_| EntryError::Corrupt("short prefix"))?;
    let header = EntryHeader::decode(&fixed)?;
    if file_len != header.file_len() {
        return Err(EntryError::Corrupt(
            "file length does not match body length",
        ));
    }
    let mut meta = vec![0u8; header.meta_len()];
    file.read_exact(&mut meta)
        .map_err(|_| EntryError::Corrupt("short meta"))?;
    let (internal, rest) = meta.split_at(header.internal_len as usize);
    let (resp_header, key) = rest.split_at(header.header_len as usize);
    if meta_digest(internal, resp_header, key) != header.meta_sha256 {
        return Err(EntryError::Corrupt("meta checksum mismatch"));
    }
    let key = String::from_utf8(key.to_vec()).map_err(|_| EntryError::Corrupt("key not utf-8"))?;
    Ok(EntryMeta {
        header,
        internal: internal.to_vec(),
        resp_header: resp_header.to_vec(),
        key,
    })
}

/// Hash the body of `file` (positioned reads, so the file's cursor is left alone) in
/// `chunk`-sized reads and compare with the header. Never holds more than one chunk in
/// memory.
pub fn verify_body_at(file: &File, header: &EntryHeader, chunk: usize) -> Result<(), EntryError> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; chunk.max(4096)];
    let (start, len) = (header.body_offset(), header.body_len);
    let mut done = 0u64;
    while done < len {
        let want = usize::try_from((len - done).min(buf.len() as u64)).unwrap_or(buf.len());
        let n = file.read_at(&mut buf[..want], start + done)?;
        if n == 0 {
            return Err(EntryError::Corrupt("short body"));
        }
        done += n as u64;
        h.update(&buf[..n]);
    }
    let digest: [u8; 32] = h.finalize().into();
    if digest != header.body_sha256 {
        return Err(EntryError::Corrupt("body checksum mismatch"));
    }
    Ok(())
}

/// Read the whole body into memory (used only for small objects), verified against the
/// header's hash when `check` (the caller skips it only for a file identity it has seen
/// verified). The body is [placed](super::placement) for fast copies out of it.
pub fn read_body(
    file: &mut File,
    header: &EntryHeader,
    check: bool,
) -> Result<bytes::Bytes, EntryError> {
    let len = usize::try_from(header.body_len).map_err(|_| EntryError::Corrupt("body too long"))?;
    let mut body = super::placement::body(len);
    file.read_exact(&mut body)
        .map_err(|_| EntryError::Corrupt("short body"))?;
    if !check {
        return Ok(body.freeze());
    }
    let digest: [u8; 32] = Sha256::digest(&body[..]).into();
    if digest != header.body_sha256 {
        return Err(EntryError::Corrupt("body checksum mismatch"));
    }
    Ok(body.freeze())
}

/// Final path of an entry: nginx `levels=1:2` fan-out from the end of the hex hash,
/// e.g. `…/c/29/b7f54b2df7773722d382f4809d65029c` for hash `…029c`.
pub fn entry_path(dir: &Path, hash_hex: &str) -> PathBuf {
    let n = hash_hex.len();
    let l1 = hash_hex.get(n.saturating_sub(1)..).unwrap_or("0");
    let l2 = hash_hex
        .get(n.saturating_sub(3)..n.saturating_sub(1))
        .unwrap_or("00");
    dir.join(l1).join(l2).join(hash_hex)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_roundtrip() {
        let h = EntryHeader {
            internal_len: 3,
            header_len: 5,
            key_len: 7,
            body_len: 11,
            body_sha256: [1; 32],
            meta_sha256: [2; 32],
        };
        assert_eq!(EntryHeader::decode(&h.encode()).unwrap(), h); // unwrap: test-only
        let mut bad = h.encode();
        bad[0] = b'X';
        assert!(EntryHeader::decode(&bad).is_err());
    }

    #[test]
    fn fan_out_levels_1_2() {
        let p = entry_path(Path::new("/c"), "b7f54b2df7773722d382f4809d65029c");
        assert_eq!(p, Path::new("/c/c/29/b7f54b2df7773722d382f4809d65029c"));
    }
}
