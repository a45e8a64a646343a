//! Meta rewrites: pingora's `update_meta` (revalidation) replaces the stored meta of an
//! entry in both tiers and keeps its body.
//!
//! Contracts: the body is never rewritten from anything but the stored, checked bytes (a
//! disk body whose checksum no longer matches is removed, counted, and reported as gone);
//! `Ok(false)` when the entry is gone (e.g. evicted meanwhile).

use super::disk_io;
use super::memory::{HotMeta, MemEntry};
use super::{hash_hex, internal_err, TieredStorage};
use pingora::cache::key::CacheKey;
use pingora::cache::CacheMeta;
use pingora::Result;
use std::sync::Arc;

impl TieredStorage {
    /// Replace the stored meta in both tiers, keeping the body. `Ok(false)` when the entry is
    /// gone (e.g. evicted meanwhile).
    pub(super) async fn update_meta_of(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
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
        let on_disk =
            disk_io::blocking(move || self.disk.rewrite_meta_blocking(&hash, &internal, &header))
                .await
                .map_err(|e| internal_err("disk update task", e))?
                .map_err(|e| internal_err("disk update_meta", e))?;
        Ok(updated || on_disk)
    }
}
