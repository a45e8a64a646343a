//! Purge: invalidation of stored entries in both tiers, by URL (every variant), by prefix,
//! or by one hash (pingora's `Storage::purge`). Budget eviction is not purge: it happens
//! inside each tier and is counted separately.
//!
//! Contracts: a purge returns once the entry is gone from both tiers' indexes and its disk
//! file is deleted; a reader that already holds the body (an open file, a memory `Bytes`)
//! finishes its response. Purges are counted per tier.

use super::disk_io;
use super::{cache_key, hash_hex, TieredStorage};
use crate::metrics::METRICS;
use pingora::cache::key::CacheKey;
use pingora::cache::storage::PurgeOutcome;

impl TieredStorage {
    /// Remove one hash from both tiers (counted per tier); whether either held it.
    pub(super) async fn remove_hash(&'static self, hash: String) -> bool {
        let in_mem = self.memory.remove(&hash);
        let on_disk = disk_io::blocking(move || self.disk.remove(&hash))
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
    /// `url` is the cache-key form (what `crate::service::cache_key_url` makes of a request's
    /// path and query on its route); the admin purge reduces a URL to it first.
    pub async fn purge_url(&'static self, url: &str) -> bool {
        self.purge_key(&cache_key(url)).await
    }

    /// Invalidate `key` in both tiers, every variant of it: its own entry and every entry
    /// recorded under its primary key (pingora's `Storage::purge` gets only the hash, which
    /// names one variant). The variants come from each tier's URL index, so the cost is the
    /// URL's own entries, not the size of the cache. Returns whether anything was stored.
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

    /// Invalidate every stored URL starting with `prefix` (a range of each tier's URL
    /// index); returns how many entries were removed (each variant counts).
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

    /// pingora's `Storage::purge`: remove the one entry `hash` names from both tiers.
    pub(super) async fn purge_one(&'static self, hash: String) -> PurgeOutcome {
        if self.remove_hash(hash).await {
            PurgeOutcome::Purged(None)
        } else {
            PurgeOutcome::NotFound
        }
    }
}
