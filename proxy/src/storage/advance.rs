//! The test clock (see [`crate::clock`]): "advance the cache's clock by `d`" is done by making
//! every stored entry `d` older, in memory and on disk.
//!
//! Pingora reads `SystemTime::now()` itself for freshness, the stale windows and `Age`, so
//! time cannot be faked for it; but everything it (and our RFC code, and the direct-write
//! path) compares `now` with is a timestamp of the stored meta. Moving those back by `d`
//! (`created`, `updated`, `fresh_until`, and the epoch override and provenance when set) is,
//! to every reader, the same as `d` having passed. `Age` on a hit, measured from `updated`,
//! grows by `d` as well. Stored response headers (`Date`, `Age`) are left as they are: no hit
//! path reads them for freshness.
//!
//! Contracts: a test hook, reachable only through the admin endpoint that exists when the
//! process runs with `KOMORA_EDGE_TEST_CLOCK=1`. It scans every entry (memory tier and the
//! cache directory) and rewrites each disk entry's meta the way revalidation does
//! (`DiskTier::rewrite_meta_blocking`: body copied and checked, file renamed over, LRU
//! position refreshed). Objects still being filled keep their timestamps; call it once the
//! fills a test made are complete. An entry whose meta cannot be rewritten is left as is
//! and not counted.

use super::disk_io;
use super::memory::{HotMeta, MemEntry};
use super::{internal_err, TieredStorage};
use pingora::cache::key::HashBinary;
use pingora::cache::CacheMeta;
use pingora::Result;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// The layout of pingora-cache 0.9.1's `InternalMetaV2` (private there), the first half of
/// `CacheMeta::serialize`: the same fields, order and serde attributes, so it decodes and
/// encodes byte for byte alike. Only version 2 is accepted; `CacheMeta::serialize` always
/// writes it.
#[derive(Debug, Serialize, Deserialize)]
struct InternalMetaV2 {
    version: u8,
    fresh_until: SystemTime,
    created: SystemTime,
    updated: SystemTime,
    stale_while_revalidate_sec: u32,
    stale_if_error_sec: u32,
    #[serde(default)]
    variance: Option<HashBinary>,
    #[serde(default)]
    epoch_override: Option<SystemTime>,
    #[serde(default)]
    #[serde(skip_serializing_if = "Option::is_none")]
    provenance: Option<SystemTime>,
}

fn back(t: SystemTime, by: Duration) -> SystemTime {
    t.checked_sub(by).unwrap_or(SystemTime::UNIX_EPOCH)
}

/// The internal half of a serialized meta with every timestamp `by` earlier.
fn internal_older_by(internal: &[u8], by: Duration) -> Result<Vec<u8>> {
    let mut m: InternalMetaV2 =
        rmp_serde::from_slice(internal).map_err(|e| internal_err("test clock: decode meta", e))?;
    if m.version != 2 {
        return Err(internal_err(
            "test clock: meta version",
            format!("version {} is not 2", m.version),
        ));
    }
    m.fresh_until = back(m.fresh_until, by);
    m.created = back(m.created, by);
    m.updated = back(m.updated, by);
    m.epoch_override = m.epoch_override.map(|t| back(t, by));
    m.provenance = m.provenance.map(|t| back(t, by));
    rmp_serde::to_vec(&m).map_err(|e| internal_err("test clock: encode meta", e))
}

/// `meta`, `by` older.
pub fn meta_older_by(meta: &CacheMeta, by: Duration) -> Result<CacheMeta> {
    let (internal, header) = meta.serialize()?;
    CacheMeta::deserialize(&internal_older_by(&internal, by)?, &header)
}

impl TieredStorage {
    /// Make every stored entry `by` older in both tiers (see the module doc). Returns how
    /// many entries were moved in (memory, disk).
    pub async fn advance_clock(&'static self, by: Duration) -> (usize, usize) {
        let mut in_memory = 0;
        for (hash, e) in self.memory.entries() {
            let Ok(meta) = meta_older_by(&e.hot.to_meta(), by) else {
                continue;
            };
            // A new entry: its cached response heads carried the old `Age`.
            let older = MemEntry::new(HotMeta::of(&meta), e.body.clone(), e.url.clone())
                .with_file(e.file.clone());
            self.memory.insert(hash, Arc::new(older));
            in_memory += 1;
        }
        let on_disk = disk_io::blocking(move || self.advance_disk_blocking(by))
            .await
            .unwrap_or(0);
        (in_memory, on_disk)
    }

    fn advance_disk_blocking(&self, by: Duration) -> usize {
        let mut n = 0;
        for hash in self.disk.entry_hashes_blocking() {
            let Some(m) = self.disk.meta_blocking(&hash) else {
                continue;
            };
            let Ok(internal) = internal_older_by(&m.internal, by) else {
                continue;
            };
            if let Ok(true) = self
                .disk
                .rewrite_meta_blocking(&hash, &internal, &m.resp_header)
            {
                n += 1;
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora::http::ResponseHeader;

    #[test]
    fn every_timestamp_moves_back_and_nothing_else_changes() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let header = ResponseHeader::build(200, None).unwrap(); // unwrap: test-only
        let mut meta = CacheMeta::new(now + Duration::from_secs(60), now, 7, 9, header);
        meta.set_variance([3u8; 16]);
        meta.set_epoch_override(now - Duration::from_secs(5));
        let by = Duration::from_millis(2100);
        let older = meta_older_by(&meta, by).unwrap(); // unwrap: test-only
        assert_eq!(older.fresh_until(), meta.fresh_until() - by);
        assert_eq!(older.created(), meta.created() - by);
        assert_eq!(older.updated(), meta.updated() - by);
        assert_eq!(older.provenance(), meta.provenance() - by);
        assert_eq!(
            older.epoch_override(),
            meta.epoch_override().map(|t| t - by)
        );
        assert_eq!(older.variance(), Some([3u8; 16]));
        assert_eq!(older.stale_while_revalidate_sec(), 7);
        assert_eq!(older.stale_if_error_sec(), 9);
        assert_eq!(
            older.serialize().unwrap().1, // unwrap: test-only
            meta.serialize().unwrap().1   // unwrap: test-only
        );
        // Shifting by zero is the identity, byte for byte: the mirror layout is pingora's.
        let (internal, _) = meta.serialize().unwrap(); // unwrap: test-only
        let same = internal_older_by(&internal, Duration::ZERO).unwrap(); // unwrap: test-only
        assert_eq!(same, internal);
    }
}
