//! Lookups in [`TieredStorage`]: pingora's `lookup` (a fill in progress, then memory, then
//! disk), the direct-write path's [`TieredStorage::fresh_hit`], and the cache lock's
//! [`TieredStorage::can_serve`].
//!
//! Contracts: a corrupt disk entry is removed, counted and reported as a miss (`Ok(None)` /
//! `None`), never served; an I/O error is an error. Disk work runs on the blocking pool.
//! A lookup that is dropped midway (client gone) leaves nothing behind: a small disk hit it
//! already promoted stays in memory, which is a valid entry.

use super::body_file::BodyFile;
use super::disk::DiskLookup;
use super::disk_io;
use super::entry;
use super::hit::{DiskHit, TieredHit};
use super::memory::{HotMeta, MemEntry};
use super::{cache_key, hash_hex, internal_err, TieredStorage};
use crate::metrics::{Tier, METRICS};
use pingora::cache::key::CacheKey;
use pingora::cache::{CacheMeta, HitHandler};
use pingora::Result;
use std::sync::Arc;
use std::time::SystemTime;

/// A fresh object found for a direct write (see [`TieredStorage::fresh_hit`]).
pub enum FreshHit {
    /// In the memory tier (found there, or a small disk-tier object just promoted).
    Memory(Arc<MemEntry>),
    /// A large disk-tier object: its meta and verified body file, for this response only.
    File(Box<(HotMeta, BodyFile)>),
}

impl TieredStorage {
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
    pub(super) fn parse_meta(&self, hash: &str, m: &entry::EntryMeta) -> Option<CacheMeta> {
        let meta = CacheMeta::deserialize(&m.internal, &m.resp_header).ok();
        if meta.is_none() {
            METRICS.integrity_failures.inc();
            self.disk.remove(hash);
        }
        meta
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
        let found =
            disk_io::blocking(move || self.disk.lookup_blocking(&h, self.mem_max_object, true))
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

    /// pingora's `lookup`: memory first, then disk (on the blocking pool). Corrupt disk
    /// entries are removed, counted and reported as a miss (`Ok(None)`); I/O errors are
    /// errors.
    pub(super) async fn lookup_key(
        &'static self,
        key: &CacheKey,
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
        let found =
            disk_io::blocking(move || self.disk.lookup_blocking(&h, self.mem_max_object, false))
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

    /// The reader for this request's own fill (identified by the write tag); `None` when
    /// it is not (or no longer) being filled, and the caller looks the key up as usual.
    pub(super) fn own_fill_hit(
        &self,
        key: &CacheKey,
        streaming_write_tag: Option<&[u8]>,
    ) -> Option<(CacheMeta, HitHandler)> {
        let hash = hash_hex(key);
        let id = streaming_write_tag
            .and_then(|t| <[u8; 8]>::try_from(t).ok())
            .map(u64::from_be_bytes);
        id.and_then(|id| self.fill_hit(&hash, Some(id)))
    }
}
