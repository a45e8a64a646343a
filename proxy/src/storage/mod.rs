//! Tiered cache storage: our [`Storage`] implementation over a memory tier (moka, small and
//! hot objects) and a disk tier (every object, one file each).
//!
//! - `lookup` tries memory, then disk. A disk hit on a body up to
//!   `cache.memory.max_object_size` is read whole, verified and promoted to memory; larger
//!   bodies are streamed in `cache.disk.chunk_size` reads, never held whole in RAM, and
//!   hashed on the way: a mismatch ends the response before its last byte (see [`DiskHit`]).
//!   sendfile, which cannot hash, only sends a file whose identity was verified
//!   ([`crate::eviction::Verified`], [`body_file`]).
//! - `get_miss_handler` streams the body to a disk temp file (and buffers it when it is small
//!   enough for memory); only `finish` makes it visible. A miss handler dropped before
//!   `finish` leaves no entry in either tier. A disk write that fails (full disk) ends
//!   caching of that object only; its body still streams to every reader ([`TieredMiss`]).
//! - `purge` removes an entry from both tiers (invalidation or eviction requested by pingora);
//!   budget eviction happens inside each tier and is counted separately.
//! - `update_meta` (revalidation) rewrites the meta in both tiers, keeping the body.
//! - Memory entries of at least `cache.memory.sendfile_min_size` keep their disk file open
//!   so a hit can be sent with sendfile (see [`crate::hit`]).
//! - Hit handlers support `seek`, so Range requests (also multipart) are served from cache.
//! - With `cache.streaming_fill` (default on), readers of an object being filled get its bytes
//!   as they arrive (see `storage/fill.rs`), each at its own pace, Range requests included.

pub mod body_file;
pub mod disk;
pub mod entry;
pub mod fill;
pub mod head_cache;
pub mod memory;

use crate::config::CacheSettings;
use crate::eviction::{identity, Verified};
use crate::metrics::{Tier, METRICS};
use async_trait::async_trait;
use body_file::BodyFile;
use bytes::{Bytes, BytesMut};
use disk::{DiskLookup, DiskTier, DiskWriter};
use fill::{Fill, FillHit, FillState, Fills};
use memory::{HotMeta, MemEntry, MemoryTier};
use pingora::cache::key::{CacheHashKey, CacheKey};
use pingora::cache::storage::{
    HandleHit, HandleMiss, HitHandler, MissFinishType, MissHandler, PurgeOutcome, PurgeTarget,
    PurgeType,
};
use pingora::cache::trace::SpanHandle;
use pingora::cache::{CacheMeta, Storage};
use pingora::{Error, ErrorType, Result};
use sha2::{Digest, Sha256};
use std::any::Any;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::sync::Arc;
use std::time::SystemTime;

/// The cache key for a request URL (path and query). GET and HEAD share it; the edge talks
/// to one origin service, so the host is not part of the key.
pub fn cache_key(url: &str) -> CacheKey {
    CacheKey::new(url, "")
}

/// Lowercase hex of the combined key hash (same string as `CacheHashKey::combined`, which
/// formats byte by byte through `fmt` and shows up in hit-path profiles).
pub fn hash_hex<K: CacheHashKey + ?Sized>(key: &K) -> String {
    hex::encode(key.combined_bin())
}

fn internal_err<E: Into<Box<dyn std::error::Error + Send + Sync>>>(
    ctx: &'static str,
    e: E,
) -> Box<Error> {
    Error::because(ErrorType::InternalError, ctx, e)
}

/// A fresh object found for a direct write (see [`TieredStorage::fresh_hit`]).
pub enum FreshHit {
    /// In the memory tier (found there, or a small disk-tier object just promoted).
    Memory(Arc<MemEntry>),
    /// A large disk-tier object: its meta and verified body file, for this response only.
    File(Box<(HotMeta, BodyFile)>),
}

/// Memory + disk storage.
pub struct TieredStorage {
    memory: MemoryTier,
    disk: DiskTier,
    mem_max_object: u64,
    fills: Fills,
    streaming: bool,
    /// `cache.memory.sendfile_min_size`; `None` = zero-copy off.
    sendfile_min: Option<u64>,
    /// `cache.memory.sendfile_max_open_files`.
    sendfile_max_open: usize,
}

impl TieredStorage {
    /// Open the tiers. The disk index is not rebuilt here; call [`Self::start_rebuild`].
    pub fn new(cfg: &CacheSettings) -> io::Result<Self> {
        Ok(TieredStorage {
            memory: MemoryTier::new(cfg.memory_max_capacity.get()),
            disk: DiskTier::open(
                &cfg.dir,
                cfg.disk_max_capacity.get(),
                cfg.disk_chunk_size.get(),
            )?,
            mem_max_object: cfg.memory_max_object_size,
            fills: Fills::default(),
            streaming: cfg.streaming_fill,
            sendfile_min: cfg.sendfile_min_size,
            sendfile_max_open: cfg.sendfile_max_open_files,
        })
    }

    /// Rebuild the disk index on a background thread; lookups work meanwhile because they
    /// open entry files by path.
    pub fn start_rebuild(&'static self) -> io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new()
            .name("komora-index".to_string())
            .spawn(move || self.disk.rebuild_index())
    }

    /// Keep `file` beside a memory entry for zero-copy sends if its body is large enough
    /// and the open-file budget allows.
    fn body_file(&self, file: File, offset: u64, len: u64) -> Option<Arc<BodyFile>> {
        // `sendfile_min` is never 0 (0 in the config means `None`), so empty bodies stay out.
        if len < self.sendfile_min? {
            return None;
        }
        BodyFile::new(file, offset, len, self.sendfile_max_open).map(Arc::new)
    }

    /// (entries, bytes) indexed on disk.
    pub fn disk_totals(&self) -> (u64, u64) {
        self.disk.lru.totals()
    }

    /// Refresh the per-tier gauges.
    pub fn report(&self) {
        self.memory.report();
        METRICS
            .sendfile_open_files
            .set(i64::try_from(body_file::open_files()).unwrap_or(i64::MAX));
        self.disk.report();
    }

    fn fill_hit(&self, hash: &str, id: Option<u64>) -> Option<(CacheMeta, HitHandler)> {
        let fill = self.fills.find(hash, id)?;
        let meta = CacheMeta::deserialize(&fill.internal, &fill.header).ok()?;
        let reader = fill.reader(self.disk.chunk_size())?;
        Some((meta, Box::new(TieredHit::Fill(reader))))
    }

    /// Whether a streaming fill of `hash` is in progress (its readers go through pingora).
    fn being_filled(&self, hash: &str) -> bool {
        self.streaming && self.fills.find(hash, None).is_some()
    }

    /// The `CacheMeta` of a disk entry; `None` (entry removed, counted as an integrity
    /// failure) when it does not parse.
    fn parse_meta(&self, hash: &str, m: &entry::EntryMeta) -> Option<CacheMeta> {
        let meta = CacheMeta::deserialize(&m.internal, &m.resp_header).ok();
        if meta.is_none() {
            METRICS.integrity_failures.inc();
            self.disk.remove(hash);
        }
        meta
    }

    /// A disk-tier body up to `cache.memory.max_object_size`, already verified, into the
    /// memory tier. `None` (entry removed, counted) when its meta does not parse.
    fn promote(
        &self,
        hash: String,
        m: entry::EntryMeta,
        body: Vec<u8>,
        file: File,
    ) -> Option<(CacheMeta, Arc<MemEntry>)> {
        let meta = self.parse_meta(&hash, &m)?;
        let body = Bytes::from(body);
        let file = self.body_file(file, m.header.body_offset(), m.header.body_len);
        let e = Arc::new(MemEntry::new(HotMeta::of(&meta), body, m.key).with_file(file));
        self.memory.insert(hash, e.clone());
        Some((meta, e))
    }

    /// A fresh object for `url` that can be served without pingora's cache state machine
    /// (see `crate::hit::serve`). The memory tier is asked first; with `disk`, an
    /// object only on disk is looked up there too: small bodies are promoted to memory as
    /// `lookup` does, large ones come back as their verified, open file. `None` when the
    /// object is being filled, is in memory but not fresh at `now`, is not stored, or the
    /// lookup failed: pingora's own lookup then decides (revalidate, serve stale, report).
    pub async fn fresh_hit(
        &'static self,
        url: &str,
        now: SystemTime,
        disk: bool,
    ) -> Option<FreshHit> {
        let hash = hash_hex(&cache_key(url));
        if self.being_filled(&hash) {
            return None;
        }
        if let Some(e) = self.memory.get(&hash) {
            if !e.hot.is_fresh(now) {
                return None;
            }
            if e.due_touch() {
                self.disk.lru.touch(&hash);
            }
            return Some(FreshHit::Memory(e));
        }
        if !disk {
            return None;
        }
        let h = hash.clone();
        let found = tokio::task::spawn_blocking(move || {
            self.disk.lookup_blocking(&h, self.mem_max_object, true)
        })
        .await
        .ok()?
        .ok()??;
        match found {
            DiskLookup::Small(m, body, file) => {
                let (meta, e) = self.promote(hash, m, body, file)?;
                meta.is_fresh(now).then_some(FreshHit::Memory(e))
            }
            DiskLookup::Large(e) => {
                let meta = self.parse_meta(&hash, &e.meta)?;
                if !meta.is_fresh(now) || !e.verified {
                    return None;
                }
                let (offset, len) = (e.meta.header.body_offset(), e.meta.header.body_len);
                let body = BodyFile::for_one_response(e.file, offset, len)?;
                // sendfile cannot hash what it sends: only the identity verified above may
                // go out this way (see `crate::hit`).
                body.identity_is(&e.id)
                    .then(|| FreshHit::File(Box::new((HotMeta::of(&meta), body))))
            }
        }
    }

    /// Whether a lookup for `key` would find something now (a fill in progress, a memory
    /// entry, or a committed disk entry); used by the cache lock to avoid a second writer.
    /// Index checks only, no disk access: a commit indexes its entry before it returns.
    pub fn can_serve(&self, key: &CacheKey) -> bool {
        let hash = hash_hex(key);
        self.being_filled(&hash) || self.memory.contains(&hash) || self.disk.lru.contains(&hash)
    }

    async fn remove_hash(&'static self, hash: String) -> bool {
        let in_mem = self.memory.remove(&hash);
        let on_disk = tokio::task::spawn_blocking(move || self.disk.remove(&hash))
            .await
            .unwrap_or(false);
        if in_mem {
            METRICS.purges.with_label_values(&["memory"]).inc();
        }
        if on_disk {
            METRICS.purges.with_label_values(&["disk"]).inc();
        }
        in_mem || on_disk
    }

    /// Invalidate one URL in both tiers, every variant of it (the primary slot and each
    /// variance-keyed entry recorded under the same URL); returns whether anything was stored.
    pub async fn purge_url(&'static self, url: &str) -> bool {
        self.purge_key(&cache_key(url)).await
    }

    /// Invalidate `key` in both tiers, every variant of it: its own entry and every entry
    /// recorded under its primary key (pingora's `Storage::purge` gets only the hash, which
    /// names one variant). Returns whether anything was stored.
    pub async fn purge_key(&'static self, key: &CacheKey) -> bool {
        let url = String::from_utf8_lossy(key.primary_key());
        let mut hashes = self.memory.hashes_of_url(&url);
        hashes.extend(self.disk.lru.hashes_of_url(&url));
        hashes.push(hash_hex(key));
        hashes.sort();
        hashes.dedup();
        let mut any = false;
        for h in hashes {
            any |= self.remove_hash(h).await;
        }
        any
    }

    /// Invalidate every stored URL starting with `prefix`; returns how many were removed.
    pub async fn purge_prefix(&'static self, prefix: &str) -> usize {
        let mut hashes = self.memory.hashes_with_prefix(prefix);
        hashes.extend(self.disk.lru.hashes_with_prefix(prefix));
        hashes.sort();
        hashes.dedup();
        let mut n = 0;
        for h in hashes {
            if self.remove_hash(h).await {
                n += 1;
            }
        }
        n
    }
}

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
    fn mem(body: Bytes, tier: Tier) -> Self {
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
    fn new(tier: &'static DiskTier, hash: String, e: disk::LargeEntry) -> Self {
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
        let checked =
            tokio::task::spawn_blocking(move || entry::verify_body_at(&file, &header, chunk))
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
        let mut buf = BytesMut::zeroed(n);
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
            let body = if chunks.len() == 1 {
                chunks.into_iter().next().unwrap_or_default()
            } else {
                let mut b = BytesMut::with_capacity(usize::try_from(body_len).unwrap_or(0));
                for c in chunks {
                    b.extend_from_slice(&c);
                }
                b.freeze()
            };
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

#[async_trait]
impl Storage for TieredStorage {
    /// Memory first, then disk (on the blocking pool). Corrupt disk entries are removed,
    /// counted and reported as a miss (`Ok(None)`); I/O errors are errors.
    async fn lookup(
        &'static self,
        key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<Option<(CacheMeta, HitHandler)>> {
        let hash = hash_hex(key);
        // An object being filled wins over a stored copy: the stored one is expired (or
        // about to be replaced), and the fill is what the cache lock handed readers to.
        if self.streaming {
            if let Some(hit) = self.fill_hit(&hash, None) {
                return Ok(Some(hit));
            }
        }
        if let Some(e) = self.memory.get(&hash) {
            let meta = e.hot.to_meta();
            if e.due_touch() {
                self.disk.lru.touch(&hash);
            }
            return Ok(Some((
                meta,
                Box::new(TieredHit::mem(e.body.clone(), Tier::Memory)),
            )));
        }
        let h = hash.clone();
        let found = tokio::task::spawn_blocking(move || {
            self.disk.lookup_blocking(&h, self.mem_max_object, false)
        })
        .await
        .map_err(|e| internal_err("disk lookup task", e))?
        .map_err(|e| internal_err("disk lookup", e))?;
        match found {
            None => Ok(None),
            Some(DiskLookup::Small(m, body, file)) => match self.promote(hash, m, body, file) {
                Some((meta, e)) => Ok(Some((
                    meta,
                    Box::new(TieredHit::mem(e.body.clone(), Tier::Disk)),
                ))),
                None => Ok(None),
            },
            Some(DiskLookup::Large(e)) => {
                let Some(meta) = self.parse_meta(&hash, &e.meta) else {
                    return Ok(None);
                };
                let hit = DiskHit::new(&self.disk, hash, e);
                Ok(Some((meta, Box::new(TieredHit::Disk(hit)))))
            }
        }
    }

    /// The reader for this request's own fill (identified by the write tag).
    async fn lookup_streaming_write(
        &'static self,
        key: &CacheKey,
        streaming_write_tag: Option<&[u8]>,
        trace: &SpanHandle,
    ) -> Result<Option<(CacheMeta, HitHandler)>> {
        let hash = hash_hex(key);
        let id = streaming_write_tag
            .and_then(|t| <[u8; 8]>::try_from(t).ok())
            .map(u64::from_be_bytes);
        match id.and_then(|id| self.fill_hit(&hash, Some(id))) {
            Some(hit) => Ok(Some(hit)),
            None => self.lookup(key, trace).await,
        }
    }

    /// `cache.streaming_fill`: when true pingora releases the cache lock as soon as the miss
    /// handler exists, and waiting readers stream the fill (see `storage/fill.rs`).
    fn support_streaming_partial_write(&self) -> bool {
        self.streaming
    }

    /// Serialize the meta and open a disk temp file for the body. A temp file that cannot
    /// be created (e.g. a full disk) is logged and counted, and the object is streamed
    /// without being stored.
    async fn get_miss_handler(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
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

    /// Remove the entry from both tiers.
    async fn purge(
        &'static self,
        target: PurgeTarget<'_>,
        _purge_type: PurgeType,
        _trace: &SpanHandle,
    ) -> Result<PurgeOutcome> {
        if self.remove_hash(hash_hex(target.key())).await {
            Ok(PurgeOutcome::Purged(None))
        } else {
            Ok(PurgeOutcome::NotFound)
        }
    }

    /// Replace the stored meta in both tiers, keeping the body. `Ok(false)` when the entry is
    /// gone (e.g. evicted meanwhile).
    async fn update_meta(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<bool> {
        let hash = hash_hex(key);
        let (internal, header) = meta.serialize()?;
        let mut updated = false;
        if let Some(e) = self.memory.get(&hash) {
            self.memory.insert(
                hash.clone(),
                // The kept file still holds these body bytes even after the disk entry
                // below is rewritten (its old inode lives on until this entry goes).
                Arc::new(
                    MemEntry::new(HotMeta::of(meta), e.body.clone(), e.url.clone())
                        .with_file(e.file.clone()),
                ),
            );
            updated = true;
        }
        let on_disk = tokio::task::spawn_blocking(move || {
            self.disk.rewrite_meta_blocking(&hash, &internal, &header)
        })
        .await
        .map_err(|e| internal_err("disk update task", e))?
        .map_err(|e| internal_err("disk update_meta", e))?;
        Ok(updated || on_disk)
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync + 'static) {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_hex_matches_pingora_combined() {
        let k = cache_key("/media/abc?x=1");
        assert_eq!(hash_hex(&k), k.combined());
        assert_eq!(hash_hex(&k.to_compact()), k.combined());
    }
}
