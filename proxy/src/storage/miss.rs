//! The miss handler of [`TieredStorage`]: the fill of one object from the origin.
//!
//! [`TieredStorage::miss_handler`] (pingora's `get_miss_handler`) serializes the meta, opens a
//! disk temp file and, with `cache.streaming_fill`, registers a [`Fill`] other readers attach
//! to. [`TieredMiss`] then streams the body into the temp file, buffering it when it is small
//! enough for the memory tier.
//!
//! Contracts:
//! - Only `finish` makes the object visible (rename on disk, then the memory insert).
//! - Dropped before `finish`: no entry in either tier (the disk writer deletes its temp
//!   file) and the fill's readers end with an error, never a short body passed as whole.
//! - A disk failure (create, write or commit; e.g. a full disk) ends caching of this object
//!   only: it is logged once and counted, and the body still streams to every reader.

use super::disk::DiskWriter;
use super::fill::{Fill, FillState};
use super::memory::{HotMeta, MemEntry};
use super::placement;
use super::{hash_hex, TieredStorage};
use crate::metrics::METRICS;
use async_trait::async_trait;
use bytes::Bytes;
use pingora::cache::key::CacheKey;
use pingora::cache::storage::{HandleMiss, MissFinishType, MissHandler};
use pingora::cache::CacheMeta;
use pingora::Result;
use std::fs::File;
use std::io;
use std::sync::Arc;

impl TieredStorage {
    /// Serialize the meta and open a disk temp file for the body. A temp file that cannot
    /// be created (e.g. a full disk) is logged and counted, and the object is streamed
    /// without being stored.
    pub(super) fn miss_handler(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
    ) -> Result<MissHandler> {
        let hash = hash_hex(key);
        let (internal, header) = meta.serialize()?;
        let url = String::from_utf8_lossy(key.primary_key()).into_owned();
        let opened = self
            .disk
            .writer(&hash, &url, &internal, &header)
            .and_then(|w| {
                // Fill readers read the temp file through a descriptor of their own.
                let file = if self.streaming {
                    Some(File::open(w.tmp_path())?)
                } else {
                    None
                };
                Ok((w, file))
            });
        let (writer, file) = match opened {
            Ok((w, file)) => (Some(w), file),
            Err(e) => {
                tracing::warn!(url = %url, error = %e, "disk cache create failed; streaming the object without caching it");
                METRICS.cache_write_failures.inc();
                (None, None)
            }
        };
        let body_offset = writer.as_ref().map_or(0, DiskWriter::body_offset);
        let fill = self
            .streaming
            .then(|| self.fills.start(&hash, file, body_offset, internal, header));
        let tag = fill.as_ref().map_or(0, |f| f.id).to_be_bytes();
        let listed = fill.is_some();
        Ok(Box::new(TieredMiss {
            storage: self,
            hash,
            url,
            hot: Some(HotMeta::of(meta)),
            mem_buf: writer.is_some().then(Vec::new),
            writer,
            buffered: 0,
            fill,
            listed,
            tag,
            received: 0,
        }))
    }
}

/// Miss handler: streams into a disk temp file, buffering small bodies for memory.
///
/// A failed disk write (a full disk, any I/O error) ends caching for this object, not the
/// response: the temp file goes, the failure is logged once and counted, and the fill goes
/// on in memory (`storage/fill.rs`) so every reader still gets the origin's whole body.
pub struct TieredMiss {
    storage: &'static TieredStorage,
    hash: String,
    url: String,
    hot: Option<HotMeta>,
    /// `None` once the disk tier gave up on this object (or never took it).
    writer: Option<DiskWriter>,
    mem_buf: Option<Vec<Bytes>>,
    buffered: u64,
    fill: Option<Arc<Fill>>,
    /// Whether `fill` is still registered in `storage.fills` (new readers may attach).
    listed: bool,
    tag: [u8; 8],
    /// Body bytes received from the origin so far.
    received: u64,
}

impl TieredMiss {
    /// The disk holds the first `disk_len` body bytes and takes no more: drop the temp file,
    /// log and count once, and keep the fill going from memory.
    fn stop_caching(&mut self, disk_len: u64, e: &io::Error) {
        self.writer = None;
        self.mem_buf = None;
        tracing::warn!(
            url = %self.url,
            error = %e,
            written = disk_len,
            "disk cache write failed; the rest of this object is streamed without caching it"
        );
        METRICS.cache_write_failures.inc();
        if let Some(f) = &self.fill {
            f.spill_to_memory(disk_len);
        }
        self.unlist();
    }

    /// Take the fill out of the registry: from here on its start may no longer be held, so
    /// new requests fetch for themselves (readers already attached keep reading).
    fn unlist(&mut self) {
        if let (Some(f), true) = (&self.fill, self.listed) {
            self.storage.fills.end(&self.hash, f.id);
            self.listed = false;
        }
    }
}

impl Drop for TieredMiss {
    /// Dropped before `finish`: readers of the fill end with an error; the disk writer
    /// deletes its temp file, so no entry is left.
    fn drop(&mut self) {
        if let Some(f) = self.fill.take() {
            f.set(FillState::Failed);
            self.storage.fills.end(&self.hash, f.id);
        }
    }
}

#[async_trait]
impl HandleMiss for TieredMiss {
    /// Append body bytes to the temp file (or, once the disk gave up, to the fill's memory
    /// tail). Nothing is visible to lookups until `finish`. Never fails for a disk error.
    async fn write_body(&mut self, data: Bytes, _eof: bool) -> Result<()> {
        if let Some(w) = self.writer.as_mut() {
            let before = w.body_len();
            if let Err(e) = w.write(&data) {
                self.stop_caching(before, &e);
            }
        } else {
            // No disk file from the start: a memory-only fill, whose own reader is attached.
            self.unlist();
        }
        self.received += data.len() as u64;
        if let Some(f) = &self.fill {
            if self.writer.is_none() {
                f.push_memory(data.clone());
            }
            f.set(FillState::Partial(self.received));
        }
        if let Some(buf) = &mut self.mem_buf {
            self.buffered += data.len() as u64;
            if self.buffered <= self.storage.mem_max_object {
                buf.push(data);
            } else {
                self.mem_buf = None;
            }
        }
        Ok(())
    }

    /// Commit: rename the disk entry into place (evicting to budget) and, for small bodies,
    /// insert into memory. A commit that fails (or a disk that gave up earlier) leaves no
    /// entry, and the fill still completes for its readers.
    async fn finish(mut self: Box<Self>) -> Result<MissFinishType> {
        let committed = match self.writer.take() {
            None => None,
            Some(w) => {
                let (body_len, body_offset) = (w.body_len(), w.body_offset());
                match w.commit(&self.storage.disk) {
                    Ok((size, file)) => Some((size, file, body_len, body_offset)),
                    Err(e) => {
                        // The temp file is gone; readers keep its open descriptor.
                        self.stop_caching(body_len, &e);
                        None
                    }
                }
            }
        };
        if let Some(f) = self.fill.take() {
            f.set(FillState::Complete(self.received));
            self.storage.fills.end(&self.hash, f.id);
        }
        let Some((size, file, body_len, body_offset)) = committed else {
            return Ok(MissFinishType::Created(0));
        };
        if let (Some(chunks), Some(hot)) = (self.mem_buf.take(), self.hot.take()) {
            let body = placement::joined(chunks, usize::try_from(body_len).unwrap_or(0));
            let file = self.storage.body_file(file, body_offset, body_len);
            self.storage.memory.insert(
                self.hash.clone(),
                Arc::new(MemEntry::new(hot, body, std::mem::take(&mut self.url)).with_file(file)),
            );
        }
        Ok(MissFinishType::Created(
            usize::try_from(size).unwrap_or(usize::MAX),
        ))
    }

    fn streaming_write_tag(&self) -> Option<&[u8]> {
        self.fill.as_ref().map(|_| &self.tag[..])
    }
}
