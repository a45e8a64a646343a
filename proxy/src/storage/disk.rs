//! Disk tier: one file per object under the cache directory, written atomically.
//!
//! Writers stream the body into `tmp/` (a zeroed prefix, meta, key, then body), hash it as it
//! goes, then fill in the prefix and `rename` into the fan-out path. Readers open the final
//! path directly (no index needed), so entries from a previous run are hits immediately while
//! [`DiskTier::rebuild_index`] walks the directory in the background to restore the byte
//! accounting. A large body's check is remembered per file identity (inode, length, mtime,
//! ctime; see [`Verified`]), so a file written in place is checked again. Chunk-sized reads and writes go straight to the page cache; they are short
//! enough to do on the async worker, while whole-file work (lookup, verification, meta
//! rewrite) runs on the blocking pool (see `storage/mod.rs`).

use crate::eviction::{identity, DiskLru, Verified};
use crate::metrics::METRICS;
use crate::storage::entry::{self, EntryError, EntryHeader, EntryMeta, FIXED_LEN};
use sha2::{Digest, Sha256};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The disk tier.
pub struct DiskTier {
    dir: PathBuf,
    tmp_dir: PathBuf,
    /// Byte-budget LRU index.
    pub lru: DiskLru,
    chunk_size: usize,
    tmp_seq: AtomicU64,
}

/// Result of a disk lookup.
pub enum DiskLookup {
    /// Body small enough to read whole; already verified. The file is returned too (open
    /// for reading) so the memory tier can keep it for zero-copy sends.
    Small(EntryMeta, bytes::Bytes, File),
    /// Body to stream from its file.
    Large(LargeEntry),
}

/// A body to stream from its entry file.
pub struct LargeEntry {
    /// The verified meta.
    pub meta: EntryMeta,
    /// The open entry file.
    pub file: File,
    /// Its identity when it was opened.
    pub id: Verified,
    /// Whether the body is known good for `id` (checked now or by an earlier read of this
    /// identity). When false the reader must hash what it streams (see `DiskHit`).
    pub verified: bool,
}

impl DiskTier {
    /// Open (creating) the cache directory. Does not scan it; see [`Self::rebuild_index`].
    pub fn open(dir: &Path, max_capacity: u64, chunk_size: usize) -> io::Result<Self> {
        let tmp_dir = dir.join("tmp");
        fs::create_dir_all(&tmp_dir)?;
        Ok(DiskTier {
            dir: dir.to_path_buf(),
            tmp_dir,
            lru: DiskLru::new(max_capacity),
            chunk_size,
            tmp_seq: AtomicU64::new(0),
        })
    }

    /// Streaming read size.
    pub fn chunk_size(&self) -> usize {
        self.chunk_size
    }

    fn path(&self, hash: &str) -> PathBuf {
        entry::entry_path(&self.dir, hash)
    }

    /// Delete the file and index slot of an entry that failed its integrity check.
    fn reject(&self, hash: &str, why: &EntryError) {
        tracing::warn!(hash, error = %why, "cache entry failed integrity check, removing");
        METRICS.integrity_failures.inc();
        self.lru.remove(hash);
        let _ = fs::remove_file(self.path(hash));
        self.report();
    }

    /// A streamed read of the file with identity `id` found its body corrupt: delete it
    /// (and its index slot), counted, unless the path meanwhile holds another file (a
    /// refill), which is left alone.
    pub fn reject_streamed(&self, hash: &str, id: &Verified, why: &EntryError) {
        let same =
            fs::metadata(self.path(hash)).is_ok_and(|m| (m.dev(), m.ino()) == (id.dev, id.ino));
        if same {
            self.reject(hash, why);
        } else {
            tracing::warn!(hash, error = %why, "replaced cache entry failed integrity check");
            METRICS.integrity_failures.inc();
        }
    }

    /// Blocking lookup. Bodies up to `small_limit` are read whole, and hashed unless this
    /// exact file identity was verified before (see below). Larger ones
    /// come back as an open file; with `verify` their body is hashed now unless this exact
    /// file identity (inode, length, mtime, ctime) was verified before, so the caller may
    /// send it without reading it (sendfile). Without `verify` the caller hashes while it
    /// streams. Corrupt entries are removed, counted and reported as a miss.
    pub fn lookup_blocking(
        &self,
        hash: &str,
        small_limit: u64,
        verify: bool,
    ) -> io::Result<Option<DiskLookup>> {
        let mut file = match File::open(self.path(hash)) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        // One fstat gives both the length check and the identity the verification is keyed by.
        let stat = file.metadata()?;
        let id = Verified::of(&stat);
        let meta = match entry::read_meta_of_len(&mut file, stat.len()) {
            Ok(m) => m,
            Err(e) => {
                self.reject(hash, &e);
                return Ok(None);
            }
        };
        let size = meta.header.file_len();
        if !self.lru.touch(hash) {
            // Found before the background rebuild indexed it (or written by a previous run).
            self.lru.admit_rebuilt(hash, &meta.key, size);
        }
        let mut verified = self.lru.verified(hash) == Some(id);
        if meta.header.body_len <= small_limit {
            // A body whose file identity was checked (or written by this process) is not
            // hashed again: promotions of small bodies churn through the memory tier, and
            // hashing each one was 8 % of the edge core on the library run.
            return match entry::read_body(&mut file, &meta.header, !verified) {
                Ok(body) => {
                    if !verified {
                        self.lru.set_verified(hash, id);
                    }
                    Ok(Some(DiskLookup::Small(meta, body, file)))
                }
                Err(e) => {
                    self.reject(hash, &e);
                    Ok(None)
                }
            };
        }
        if !verified && verify {
            if let Err(e) = entry::verify_body_at(&file, &meta.header, self.chunk_size) {
                self.reject(hash, &e);
                return Ok(None);
            }
            self.lru.set_verified(hash, id);
            verified = true;
        }
        Ok(Some(DiskLookup::Large(LargeEntry {
            meta,
            file,
            id,
            verified,
        })))
    }

    /// Remove an entry (purge); returns whether a file existed.
    pub fn remove(&self, hash: &str) -> bool {
        self.lru.remove(hash);
        let existed = fs::remove_file(self.path(hash)).is_ok();
        self.report();
        existed
    }

    fn delete_victims(&self, victims: Vec<String>) {
        for v in victims {
            let _ = fs::remove_file(self.path(&v));
            METRICS.evictions.with_label_values(&["disk"]).inc();
        }
    }

    fn tmp_path(&self) -> PathBuf {
        let n = self.tmp_seq.fetch_add(1, Ordering::Relaxed);
        self.tmp_dir.join(format!("{}-{n}", std::process::id()))
    }

    /// Start writing an entry into a temp file.
    pub fn writer(
        &self,
        hash: &str,
        url: &str,
        internal: &[u8],
        header: &[u8],
    ) -> io::Result<DiskWriter> {
        let tmp_path = self.tmp_path();
        // Readable too: after commit the same descriptor serves zero-copy sends.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&tmp_path)?;
        let mut w = DiskWriter {
            file: None,
            tmp_path,
            hash: hash.to_string(),
            url: url.to_string(),
            header: EntryHeader {
                internal_len: len_u32(internal.len())?,
                header_len: len_u32(header.len())?,
                key_len: len_u32(url.len())?,
                body_len: 0,
                body_sha256: [0; 32],
                meta_sha256: entry::meta_digest(internal, header, url.as_bytes()),
            },
            hasher: Sha256::new(),
            committed: false,
        };
        file.write_all(&[0u8; FIXED_LEN])?;
        file.write_all(internal)?;
        file.write_all(header)?;
        file.write_all(url.as_bytes())?;
        w.file = Some(file);
        Ok(w)
    }

    /// Blocking: replace the meta of a stored entry (revalidation), copying the body into a
    /// new temp file and renaming it over the old one. Returns false when there is no entry.
    pub fn rewrite_meta_blocking(
        &self,
        hash: &str,
        internal: &[u8],
        header: &[u8],
    ) -> io::Result<bool> {
        let mut old = match File::open(self.path(hash)) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        let meta = match entry::read_meta(&mut old) {
            Ok(m) => m,
            Err(e) => {
                self.reject(hash, &e);
                return Ok(false);
            }
        };
        let mut w = self.writer(hash, &meta.key, internal, header)?;
        let mut buf = vec![0u8; self.chunk_size];
        loop {
            let n = old.read(&mut buf)?;
            if n == 0 {
                break;
            }
            w.write(&buf[..n])?;
        }
        if w.header.body_len != meta.header.body_len
            || w.hasher.clone().finalize()[..] != meta.header.body_sha256
        {
            self.reject(hash, &EntryError::Corrupt("body checksum mismatch"));
            return Ok(false);
        }
        w.commit(self)?;
        Ok(true)
    }

    /// Blocking: walk the cache directory, index every valid entry (meta only, bodies are
    /// verified lazily on first read), delete leftover temp files and corrupt prefixes, then
    /// evict down to the budget.
    pub fn rebuild_index(&self) {
        if let Ok(rd) = fs::read_dir(&self.tmp_dir) {
            for e in rd.flatten() {
                // A live process's temp file is a fill in progress: ours (listeners do not
                // wait for this scan), or the old edge's during an upgrade.
                if !tmp_owner_alive(&e.file_name()) {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        self.for_each_entry(|hash, p| {
            let Ok(mut f) = File::open(p) else { return };
            match entry::read_meta(&mut f) {
                Ok(m) => self.lru.admit_rebuilt(&hash, &m.key, m.header.file_len()),
                Err(err) => self.reject(&hash, &err),
            }
        });
        let victims = self.lru.over_budget();
        self.delete_victims(victims);
        self.report();
        tracing::info!(entries = self.lru.totals().0, "disk cache index rebuilt");
    }

    /// Call `f` with the hash and path of every file under the cache directory outside
    /// `tmp/` (blocking; a directory walk).
    fn for_each_entry(&self, mut f: impl FnMut(String, &Path)) {
        let mut stack = vec![self.dir.clone()];
        while let Some(d) = stack.pop() {
            let Ok(rd) = fs::read_dir(&d) else { continue };
            for e in rd.flatten() {
                let p = e.path();
                if p == self.tmp_dir {
                    continue;
                }
                let Ok(ft) = e.file_type() else { continue };
                if ft.is_dir() {
                    stack.push(p);
                    continue;
                }
                let Some(hash) = p.file_name().and_then(|n| n.to_str()).map(str::to_string) else {
                    continue;
                };
                f(hash, &p);
            }
        }
    }

    /// Blocking: the hash of every entry file in the cache directory, indexed or not (the
    /// test clock; a directory walk).
    pub fn entry_hashes_blocking(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.for_each_entry(|hash, _| out.push(hash));
        out
    }

    /// Blocking: the verified meta of entry `hash`; `None` when there is none or it does
    /// not verify (left for a lookup to reject and count).
    pub fn meta_blocking(&self, hash: &str) -> Option<EntryMeta> {
        let mut f = File::open(self.path(hash)).ok()?;
        entry::read_meta(&mut f).ok()
    }

    /// Publish entry count and bytes to the metrics.
    pub fn report(&self) {
        let (n, b) = self.lru.totals();
        METRICS
            .entries
            .with_label_values(&["disk"])
            .set(i64::try_from(n).unwrap_or(i64::MAX));
        METRICS
            .stored_bytes
            .with_label_values(&["disk"])
            .set(i64::try_from(b).unwrap_or(i64::MAX));
    }
}

fn len_u32(n: usize) -> io::Result<u32> {
    u32::try_from(n).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "meta too long"))
}

/// An entry being written. Dropped without [`DiskWriter::commit`], it deletes its temp file
/// and leaves no entry.
pub struct DiskWriter {
    file: Option<File>,
    tmp_path: PathBuf,
    hash: String,
    url: String,
    header: EntryHeader,
    hasher: Sha256,
    committed: bool,
}

impl DiskWriter {
    /// Append body bytes.
    pub fn write(&mut self, data: &[u8]) -> io::Result<()> {
        let f = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("writer already committed"))?;
        f.write_all(data)?;
        self.hasher.update(data);
        self.header.body_len += data.len() as u64;
        Ok(())
    }

    /// Body bytes written so far.
    pub fn body_len(&self) -> u64 {
        self.header.body_len
    }

    /// The temp file being written (streaming readers open it).
    pub fn tmp_path(&self) -> &Path {
        &self.tmp_path
    }

    /// Offset of the first body byte in the file.
    pub fn body_offset(&self) -> u64 {
        self.header.body_offset()
    }

    /// Fill in the prefix, rename into place and admit into the index (evicting to budget).
    /// Returns the file size and the committed file, still open for reading.
    pub fn commit(mut self, tier: &DiskTier) -> io::Result<(u64, File)> {
        let mut f = self
            .file
            .take()
            .ok_or_else(|| io::Error::other("writer already committed"))?;
        self.header.body_sha256 = self.hasher.clone().finalize().into();
        f.seek(SeekFrom::Start(0))?;
        f.write_all(&self.header.encode())?;
        f.flush()?;
        let final_path = tier.path(&self.hash);
        if let Some(parent) = final_path.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::rename(&self.tmp_path, &final_path)?;
        self.committed = true;
        // After the rename, which may move ctime: the identity of the file as it now stays.
        let id = identity(&f)?;
        let size = self.header.file_len();
        let victims = tier.lru.admit(&self.hash, &self.url, size, Some(id));
        tier.delete_victims(victims);
        tier.report();
        Ok((size, f))
    }
}

impl Drop for DiskWriter {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.tmp_path);
        }
    }
}

/// Whether the process that named the temp file `name` (`{pid}-{n}`, see `tmp_path`) is still
/// running (signal 0 reaches it, or it exists but is not ours to signal).
fn tmp_owner_alive(name: &std::ffi::OsStr) -> bool {
    use nix::errno::Errno;
    use nix::sys::signal::kill;
    use nix::unistd::Pid;
    let pid = name
        .to_str()
        .and_then(|n| n.split_once('-'))
        .and_then(|(p, _)| p.parse::<i32>().ok())
        .filter(|p| *p > 0);
    match pid {
        Some(p) => matches!(kill(Pid::from_raw(p), None), Ok(()) | Err(Errno::EPERM)),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    fn small(tier: &DiskTier, hash: &str) -> io::Result<Option<bytes::Bytes>> {
        Ok(match tier.lookup_blocking(hash, 1 << 20, true)? {
            Some(DiskLookup::Small(_, body, _)) => Some(body),
            Some(DiskLookup::Large(_)) => panic!("{hash}: not a small entry"),
            None => None,
        })
    }

    /// A small body is hashed again only when its file identity moved: reads of the file this
    /// process wrote skip the hash, and a byte changed in place (mtime set back, so only the
    /// ctime tells) is caught by the next read and the entry dropped.
    #[test]
    fn small_body_changed_in_place_is_rejected_after_unhashed_reads() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let tier = DiskTier::open(dir.path(), 1 << 30, 64 * 1024)?;
        let hash = "00112233445566778899aabbccddeeff";
        let body: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
        let mut w = tier.writer(hash, "/media/s", b"internal", b"header")?;
        w.write(&body)?;
        w.commit(&tier)?;

        // Written (and hashed) by us: known good, read twice without hashing.
        assert!(tier.lru.verified(hash).is_some());
        assert_eq!(small(&tier, hash)?.as_deref(), Some(&body[..]));
        assert_eq!(small(&tier, hash)?.as_deref(), Some(&body[..]));

        let path = tier.path(hash);
        let f = OpenOptions::new().read(true).write(true).open(&path)?;
        let meta = f.metadata()?;
        let at = meta.len() - 100;
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, at)?;
        f.write_all_at(&[b[0] ^ 0x5a], at)?;
        f.set_modified(meta.modified()?)?;
        drop(f);

        assert_eq!(small(&tier, hash)?, None, "tampered body served");
        assert!(!path.exists(), "corrupt entry kept");
        assert!(!tier.lru.contains(hash));
        Ok(())
    }
}
