//! Entry files kept open for zero-copy sends, and the process-wide count of them.
//!
//! What it owns:
//! - [`BodyFile`]: an open entry file (kept beside a memory entry, or opened for one
//!   response), with the body's offset and length and the file identity (device, inode,
//!   length, mtime, ctime; [`Verified`]) it was verified at.
//! - The open-files count: at most `cache.memory.sendfile_max_open_files` kept files are
//!   open at once ([`open_files`]), so cached descriptors can never starve the listener of
//!   descriptors for new connections.
//!
//! Integrity: sendfile cannot hash what it sends, so a [`BodyFile`] is only made from a file
//! whose body was checked (or written by this process), and [`BodyFile::unchanged`] compares
//! its identity with the verified one before each send (one `fstat`). The identity type
//! itself lives with the disk index that remembers it ([`crate::eviction`]).
//!
//! Storage owns this type (memory entries hold it); the hit path ([`crate::hit`]) only
//! reads it, so nothing here depends on how responses are written.

pub use crate::eviction::{identity, Verified};
use std::fs::File;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Open [`BodyFile`]s in this process that count against the budget.
static OPEN_FILES: AtomicUsize = AtomicUsize::new(0);

/// An entry file held open for zero-copy sends. Dropping it closes the file and frees its
/// slot in the process-wide count.
#[derive(Debug)]
pub struct BodyFile {
    file: File,
    offset: u64,
    len: u64,
    id: Verified,
    /// Counted in [`OPEN_FILES`] (kept beside a memory entry) or not (one request's file).
    counted: bool,
}

impl BodyFile {
    /// Keep `file` (whose body of `len` bytes starts at `offset`) for zero-copy sends, if a
    /// slot is free under `max_open`. `file` must be readable and its body already verified
    /// (or written by us); its current identity is recorded as the verified one.
    pub fn new(file: File, offset: u64, len: u64, max_open: usize) -> Option<Self> {
        let mut kept = Self::for_one_response(file, offset, len)?;
        OPEN_FILES
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max_open).then_some(n + 1)
            })
            .ok()?;
        kept.counted = true;
        Some(kept)
    }

    /// `file` (already verified, body of `len` bytes at `offset`) for one response only: not
    /// counted against the open-file budget, closed when the response is done. `None` when
    /// the file is shorter than the body.
    pub fn for_one_response(file: File, offset: u64, len: u64) -> Option<Self> {
        let id = identity(&file).ok()?;
        if id.len < offset.checked_add(len)? {
            return None;
        }
        Some(BodyFile {
            file,
            offset,
            len,
            id,
            counted: false,
        })
    }

    /// Body length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Always false for a kept file (empty bodies are not worth a descriptor); for clippy.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Where the body starts in the file.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The open file (for sendfile).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Whether the file still has the identity it was verified at (one `fstat`). A file
    /// written in place gets a new ctime (even if its mtime is set back), so its bytes are
    /// not trusted any more.
    pub fn unchanged(&self) -> bool {
        identity(&self.file).is_ok_and(|id| id == self.id)
    }

    /// Whether the identity recorded for this file is `id` (the one a check was done for).
    pub fn identity_is(&self, id: &Verified) -> bool {
        self.id == *id
    }
}

impl Drop for BodyFile {
    fn drop(&mut self) {
        if self.counted {
            OPEN_FILES.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Number of counted [`BodyFile`]s open now (for metrics and tests).
pub fn open_files() -> usize {
    OPEN_FILES.load(Ordering::Acquire)
}
