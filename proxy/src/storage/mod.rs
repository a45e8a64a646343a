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
//!   budget eviction happens inside each tier and is counted separately. Purging a URL
//!   removes every `Vary` variant of it; each tier indexes its hashes by URL, so neither a
//!   URL nor a prefix purge scans the tiers.
//! - `update_meta` (revalidation) rewrites the meta in both tiers, keeping the body.
//! - Memory entries from `cache.memory.sendfile_min_size` to `sendfile_max_size` keep their
//!   disk file open so a hit can be sent with sendfile (see [`crate::hit`]).
//! - Hit handlers support `seek`, so Range requests (also multipart) are served from cache.
//! - With `cache.streaming_fill` (default on), readers of an object being filled get its bytes
//!   as they arrive (see `storage/fill.rs`), each at its own pace, Range requests included.
//!
//! One concern per file: this one has the type, its key helpers and the `Storage` wiring
//! (each hook calls the inherent method that owns it); `lookup.rs` lookups (pingora's, the
//! direct-write `fresh_hit`, the lock's `can_serve`); `promote.rs` disk → memory
//! promotion; `hit.rs` the hit handlers; `miss.rs` the miss handler (fill glue);
//! `purge.rs` invalidation; `update.rs` meta rewrites; `advance.rs` the edge tests' clock
//! (every entry made older); `report.rs` the metrics view;
//! `memory.rs`, `disk.rs`, `entry.rs`, `fill.rs` the tiers, the file format, the fills;
//! `placement.rs` where body bytes start in memory (copies out of them stay fast);
//! `disk_io.rs` the bounded blocking pool all whole-file work runs on.

mod advance;
pub mod body_file;
pub mod disk;
mod disk_io;
pub mod entry;
pub mod fill;
pub mod head_cache;
mod hit;
mod lookup;
pub mod memory;
mod miss;
pub mod placement;
mod promote;
mod purge;
mod report;
mod update;

pub use hit::{DiskHit, MemHit, TieredHit};
pub use lookup::FreshHit;
pub use miss::TieredMiss;

use crate::config::CacheSettings;
use async_trait::async_trait;
use disk::DiskTier;
use fill::Fills;
use memory::MemoryTier;
use pingora::cache::key::{CacheHashKey, CacheKey};
use pingora::cache::storage::{HitHandler, MissHandler, PurgeOutcome, PurgeTarget, PurgeType};
use pingora::cache::trace::SpanHandle;
use pingora::cache::{CacheMeta, Storage};
use pingora::{Error, ErrorType, Result};
use std::any::Any;
use std::io;

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

/// Memory + disk storage.
pub struct TieredStorage {
    memory: MemoryTier,
    disk: DiskTier,
    mem_max_object: u64,
    fills: Fills,
    streaming: bool,
    /// `cache.memory.sendfile_min_size`; `None` = zero-copy off.
    sendfile_min: Option<u64>,
    /// `cache.memory.sendfile_max_size` (bytes).
    sendfile_max: u64,
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
            sendfile_max: cfg.sendfile_max_size,
            sendfile_max_open: cfg.sendfile_max_open_files,
        })
    }

    /// Whether a hit body of `len` bytes is copied rather than sent with sendfile: above
    /// `cache.memory.sendfile_max_size` (memory entries keep no file for it, disk hits read
    /// their file in chunks).
    pub fn copies(&self, len: u64) -> bool {
        len > self.sendfile_max
    }

    /// Rebuild the disk index on a background thread; lookups work meanwhile because they
    /// open entry files by path.
    pub fn start_rebuild(&'static self) -> io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new()
            .name("komora-index".to_string())
            .spawn(move || self.disk.rebuild_index())
    }
}

/// pingora's view of the storage; each hook is the inherent method named in its doc.
#[async_trait]
impl Storage for TieredStorage {
    /// See `lookup.rs` (`lookup_key`): a fill in progress, then memory, then disk.
    async fn lookup(
        &'static self,
        key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<Option<(CacheMeta, HitHandler)>> {
        self.lookup_key(key).await
    }

    /// The reader for this request's own fill (identified by the write tag).
    async fn lookup_streaming_write(
        &'static self,
        key: &CacheKey,
        streaming_write_tag: Option<&[u8]>,
        trace: &SpanHandle,
    ) -> Result<Option<(CacheMeta, HitHandler)>> {
        match self.own_fill_hit(key, streaming_write_tag) {
            Some(hit) => Ok(Some(hit)),
            None => self.lookup(key, trace).await,
        }
    }

    /// `cache.streaming_fill`: when true pingora releases the cache lock as soon as the miss
    /// handler exists, and waiting readers stream the fill (see `storage/fill.rs`).
    fn support_streaming_partial_write(&self) -> bool {
        self.streaming
    }

    /// See `miss.rs` (`miss_handler`).
    async fn get_miss_handler(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<MissHandler> {
        self.miss_handler(key, meta)
    }

    /// Remove the entry from both tiers (see `purge.rs`).
    async fn purge(
        &'static self,
        target: PurgeTarget<'_>,
        _purge_type: PurgeType,
        _trace: &SpanHandle,
    ) -> Result<PurgeOutcome> {
        Ok(self.purge_one(hash_hex(target.key())).await)
    }

    /// Replace the stored meta in both tiers, keeping the body (see `update.rs`).
    async fn update_meta(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<bool> {
        self.update_meta_of(key, meta).await
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
