//! Promotion between the tiers: a small disk-tier body, already verified, moved into the
//! memory tier, and the disk file a memory entry keeps open for zero-copy sends.
//!
//! Contracts: only verified bodies are promoted; an entry whose meta does not parse is
//! removed from disk and counted, never promoted. A kept file is bounded by
//! `cache.memory.sendfile_max_open_files` and closes when its memory entry is dropped.

use super::body_file::BodyFile;
use super::entry;
use super::memory::{HotMeta, MemEntry};
use super::TieredStorage;
use bytes::Bytes;
use pingora::cache::CacheMeta;
use std::fs::File;
use std::sync::Arc;

impl TieredStorage {
    /// Keep `file` beside a memory entry for zero-copy sends if its body is large enough
    /// and the open-file budget allows.
    pub(super) fn body_file(&self, file: File, offset: u64, len: u64) -> Option<Arc<BodyFile>> {
        // `sendfile_min` is never 0 (0 in the config means `None`), so empty bodies stay out.
        if len < self.sendfile_min? || self.copies(len) {
            return None;
        }
        BodyFile::new(file, offset, len, self.sendfile_max_open).map(Arc::new)
    }

    /// A disk-tier body up to `cache.memory.max_object_size`, already verified, into the
    /// memory tier. `None` (entry removed, counted) when its meta does not parse.
    pub(super) fn promote(
        &self,
        hash: String,
        m: entry::EntryMeta,
        body: Bytes,
        file: File,
    ) -> Option<(CacheMeta, Arc<MemEntry>)> {
        let meta = self.parse_meta(&hash, &m)?;
        let file = self.body_file(file, m.header.body_offset(), m.header.body_len);
        let e = Arc::new(MemEntry::new(HotMeta::of(&meta), body, m.key).with_file(file));
        self.memory.insert(hash, e.clone());
        Some((meta, e))
    }
}
