//! Hit handlers of [`TieredStorage`](super::TieredStorage): what `lookup` hands pingora to
//! read a stored (or being filled) body.
//!
//! - [`MemHit`]: a memory-tier body, handed out as zero-copy slices of one `Bytes`.
//! - [`DiskHit`]: a large disk-tier body streamed in `cache.disk.chunk_size` reads and hashed
//!   on the way (see its doc for the integrity contract).
//! - [`FillHit`](super::fill::FillHit): a body read while its miss handler writes it.
//!
//! Contracts: every handler supports `seek` (Range, multipart). Dropping a handler early (the
//! client went away) needs no cleanup: a disk hit's file closes on drop, a fill reader
//! detaches. A read error ends the response with an error, never with short data passed
//! off as complete.

use super::disk::{self, DiskTier};
use super::disk_io;
use super::entry;
use super::fill::FillHit;
use super::internal_err;
use super::placement;
use crate::eviction::{identity, Verified};
use crate::metrics::{Tier, METRICS};
use async_trait::async_trait;
use bytes::Bytes;
use pingora::cache::key::CacheKey;
use pingora::cache::storage::HandleHit;
use pingora::cache::trace::SpanHandle;
use pingora::cache::Storage;
use pingora::{Error, ErrorType, Result};
use sha2::{Digest, Sha256};
use std::any::Any;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

/// Hit handler for an in-memory body: hands out zero-copy slices of one [`Bytes`].
pub struct MemHit {
    body: Bytes,
    start: usize,
    end: usize,
    done: bool,
    tier: Tier,
}

/// Hit handler streaming a large body from its file in chunks.
///
/// Integrity: a whole-body read hashes what it streams and holds the last chunk back until
/// the digest matches the entry's; on a mismatch the entry is removed (counted) and the
/// read fails before the last byte, so the client sees a truncated response and the
/// connection is closed, never a complete wrong body. A range read cannot be checked that
/// way, so it first verifies the whole body (blocking pool) unless this file identity is
/// verified already. A clean whole-body read records the identity as verified, so a later
/// sendfile of the same, unchanged file needs no pass of its own.
pub struct DiskHit {
    tier: &'static DiskTier,
    hash: String,
    file: File,
    id: Verified,
    verified: bool,
    header: entry::EntryHeader,
    pos: u64,
    end: u64,
    chunk: usize,
    need_seek: bool,
    /// Hash of the body so far; `Some` only while reading the whole body from its start.
    /// (Boxed: the hash state would make every hit handler large.)
    hasher: Option<Box<Sha256>>,
}

/// The hit handler of [`TieredStorage`].
pub enum TieredHit {
    /// Served from memory (or just promoted from disk).
    Mem(MemHit),
    /// Streamed from disk.
    Disk(DiskHit),
    /// Read while being filled.
    Fill(FillHit),
}

impl TieredHit {
    pub(super) fn mem(body: Bytes, tier: Tier) -> Self {
        let end = body.len();
        TieredHit::Mem(MemHit {
            body,
            start: 0,
            end,
            done: false,
            tier,
        })
    }
}

impl DiskHit {
    pub(super) fn new(tier: &'static DiskTier, hash: String, e: disk::LargeEntry) -> Self {
        let header = e.meta.header;
        DiskHit {
            tier,
            hash,
            file: e.file,
            id: e.id,
            verified: e.verified,
            header,
            pos: 0,
            end: header.body_len,
            chunk: tier.chunk_size(),
            need_seek: true,
            hasher: Some(Box::default()),
        }
    }

    /// The body failed its check: drop the entry and fail this read.
    fn corrupt(&self, why: &'static str) -> Box<Error> {
        self.tier
            .reject_streamed(&self.hash, &self.id, &entry::EntryError::Corrupt(why));
        Error::explain(ErrorType::InternalError, "disk cache entry corrupt")
    }

    /// Verify the whole body before a range of an unverified file is served.
    async fn verify_for_range(&mut self) -> Result<()> {
        let file = self
            .file
            .try_clone()
            .map_err(|e| internal_err("disk cache verify", e))?;
        let (header, chunk) = (self.header, self.chunk);
        let checked = disk_io::blocking(move || entry::verify_body_at(&file, &header, chunk))
            .await
            .map_err(|e| internal_err("disk verify task", e))?;
        match checked {
            Ok(()) => {
                self.verified = true;
                self.tier.lru.set_verified(&self.hash, self.id);
                Ok(())
            }
            Err(entry::EntryError::Io(e)) => Err(internal_err("disk cache verify", e)),
            Err(entry::EntryError::Corrupt(why)) => Err(self.corrupt(why)),
        }
    }

    fn read_chunk(&mut self) -> Result<Option<Bytes>> {
        if self.pos >= self.end {
            return Ok(None);
        }
        if self.need_seek {
            self.file
                .seek(SeekFrom::Start(self.header.body_offset() + self.pos))
                .map_err(|e| internal_err("disk cache read", e))?;
            self.need_seek = false;
        }
        let n = usize::try_from((self.end - self.pos).min(self.chunk as u64)).unwrap_or(self.chunk);
        let mut buf = placement::zeroed(n);
        self.file
            .read_exact(&mut buf)
            .map_err(|e| internal_err("disk cache read", e))?;
        self.pos += n as u64;
        if let Some(h) = &mut self.hasher {
            h.update(&buf);
            if self.pos == self.header.body_len {
                let digest: [u8; 32] = std::mem::take(&mut **h).finalize().into();
                self.hasher = None;
                if digest != self.header.body_sha256 {
                    return Err(self.corrupt("body checksum mismatch"));
                }
                // Good for this identity, unless the file changed while it was read.
                if identity(&self.file).is_ok_and(|id| id == self.id) {
                    self.verified = true;
                    self.tier.lru.set_verified(&self.hash, self.id);
                }
            }
        }
        Ok(Some(buf.freeze()))
    }
}

#[async_trait]
impl HandleHit for TieredHit {
    /// Returns the body in one slice (memory) or chunk by chunk (disk); `None` at the end.
    /// A disk read error ends the response with an error rather than serving short data.
    async fn read_body(&mut self) -> Result<Option<Bytes>> {
        match self {
            TieredHit::Mem(m) => {
                if m.done {
                    return Ok(None);
                }
                m.done = true;
                METRICS.served(m.tier, (m.end - m.start) as u64);
                Ok(Some(m.body.slice(m.start..m.end)))
            }
            TieredHit::Disk(d) => {
                if d.pos < d.end && d.hasher.is_none() && !d.verified {
                    d.verify_for_range().await?;
                }
                // Page-cache reads never return Pending; spend the task's coop budget so
                // many concurrent large-object streams share the worker fairly.
                tokio::task::consume_budget().await;
                let chunk = d.read_chunk()?;
                if let Some(c) = &chunk {
                    METRICS.served(Tier::Disk, c.len() as u64);
                }
                Ok(chunk)
            }
            TieredHit::Fill(f) => {
                let chunk = f.read().await?;
                if let Some(c) = &chunk {
                    METRICS.served(Tier::Fill, c.len() as u64);
                }
                Ok(chunk)
            }
        }
    }

    /// Nothing to release: a disk hit's file closes on drop, so a hit dropped early (client
    /// gone) needs no cleanup either.
    async fn finish(
        self: Box<Self>,
        _storage: &'static (dyn Storage + Sync),
        _key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<()> {
        Ok(())
    }

    fn can_seek(&self) -> bool {
        true
    }

    /// Restrict the following reads to `start..end` (end exclusive, clamped to the body).
    /// Resets the reader so one handler serves several ranges (multipart).
    fn seek(&mut self, start: usize, end: Option<usize>) -> Result<()> {
        match self {
            TieredHit::Mem(m) => {
                let len = m.body.len();
                if start >= len {
                    return Error::e_explain(ErrorType::InternalError, "seek start out of range");
                }
                m.start = start;
                m.end = end.map_or(len, |e| e.min(len));
                m.done = false;
            }
            TieredHit::Disk(d) => {
                let len = d.header.body_len;
                if start as u64 >= len {
                    return Error::e_explain(ErrorType::InternalError, "seek start out of range");
                }
                d.pos = start as u64;
                d.end = end.map_or(len, |e| (e as u64).min(len));
                d.need_seek = true;
                // Only a whole-body read from the start can be hashed on the way.
                d.hasher = (d.pos == 0 && d.end == len).then(Box::default);
            }
            TieredHit::Fill(f) => f.seek(start as u64, end.map(|e| e as u64))?,
        }
        Ok(())
    }

    fn should_count_access(&self) -> bool {
        !matches!(self, TieredHit::Fill(_))
    }

    fn get_eviction_weight(&self) -> usize {
        match self {
            TieredHit::Mem(m) => m.body.len(),
            TieredHit::Disk(d) => usize::try_from(d.header.body_len).unwrap_or(usize::MAX),
            TieredHit::Fill(_) => 0,
        }
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync) {
        self
    }

    fn as_any_mut(&mut self) -> &mut (dyn Any + Send + Sync) {
        self
    }
}
