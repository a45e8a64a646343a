//! Memory tier: a moka cache of small, hot objects, bounded by bytes.
//!
//! `max_capacity` is in bytes because the `weigher` returns each entry's body + meta size.
//! Entries hold the body as [`Bytes`] so a hit hands out zero-copy slices. Moka evicts on its
//! own (TinyLFU); evictions are counted, explicit removals are not evictions.
//!
//! An index from primary key (URL) to the hashes stored for it (every `Vary` variant) lets a
//! purge find a URL's entries, and a prefix purge a range of URLs, without scanning the
//! cache. It is kept in step by `insert` (before the entry is visible) and by moka's removal
//! listener (every removal: purge, replacement, eviction), which drops a hash only for the
//! very entry removed, so a removal reported late never unlists a newer entry of that hash.

use super::body_file::BodyFile;
use super::head_cache::HeadCache;
use crate::clock::unix_now;
use crate::metrics::METRICS;
use bytes::Bytes;
use moka::notification::RemovalCause;
use moka::sync::Cache;
use pingora::cache::key::HashBinary;
use pingora::cache::CacheMeta;
use pingora::http::ResponseHeader;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

/// The parts of a [`CacheMeta`] a hit needs, kept parsed so a memory hit rebuilds the meta
/// with [`CacheMeta::new`] instead of decompressing and parsing the stored header (a few
/// percent of a small hit). Not kept: epoch override, and the created/provenance timestamps,
/// which become the last update time; freshness and `Age` are computed from that update
/// time, so they are unchanged. A variant (a meta with a variance, see [`crate::rfc::vary`])
/// keeps its serialized meta instead: pingora matches variants on the variance and on
/// `created` against the primary's provenance, which must survive a memory hit exactly.
#[derive(Debug)]
pub struct HotMeta {
    fresh_until: SystemTime,
    updated: SystemTime,
    stale_while_revalidate_sec: u32,
    stale_if_error_sec: u32,
    header: ResponseHeader,
    variance: Option<HashBinary>,
    /// The serialized (internal, header) meta of a variant; `None` for plain entries.
    variant: Option<Box<(Vec<u8>, Vec<u8>)>>,
}

impl HotMeta {
    /// Capture `meta`.
    pub fn of(meta: &CacheMeta) -> Self {
        HotMeta {
            fresh_until: meta.fresh_until(),
            updated: meta.updated(),
            stale_while_revalidate_sec: meta.stale_while_revalidate_sec(),
            stale_if_error_sec: meta.stale_if_error_sec(),
            header: meta.response_header_copy(),
            variance: meta.variance(),
            variant: meta
                .variance()
                .and_then(|_| meta.serialize().ok())
                .map(Box::new),
        }
    }

    /// The variance of the stored response (`None`: it varies on nothing).
    pub fn variance(&self) -> Option<HashBinary> {
        self.variance
    }

    /// Whether the entry is fresh at `now` (same rule as [`CacheMeta::is_fresh`]).
    pub fn is_fresh(&self, now: SystemTime) -> bool {
        self.fresh_until >= now
    }

    /// Age at `now` (same rule as [`CacheMeta::age`]).
    pub fn age(&self, now: SystemTime) -> std::time::Duration {
        now.duration_since(self.updated).unwrap_or_default()
    }

    /// The stored response header.
    pub fn header(&self) -> &ResponseHeader {
        &self.header
    }

    /// A fresh [`CacheMeta`] equal to the captured one for serving purposes.
    pub fn to_meta(&self) -> CacheMeta {
        if let Some(m) = self
            .variant
            .as_ref()
            .and_then(|v| CacheMeta::deserialize(&v.0, &v.1).ok())
        {
            return m;
        }
        CacheMeta::new(
            self.fresh_until,
            self.updated,
            self.stale_while_revalidate_sec,
            self.stale_if_error_sec,
            self.header.clone(),
        )
    }
}

/// Rough per-entry overhead (parsed header, key, moka node) for the byte weigher.
const ENTRY_OVERHEAD: usize = 512;

/// One object held in memory.
#[derive(Debug)]
pub struct MemEntry {
    /// Parsed meta.
    pub hot: HotMeta,
    /// The whole body.
    pub body: Bytes,
    /// The entry's disk file, kept open for zero-copy sends of bodies of at least
    /// `cache.memory.sendfile_min_size` (see [`crate::hit`]); `None` below that size,
    /// when the open-file budget is used up, or when zero-copy is off.
    pub file: Option<Arc<BodyFile>>,
    /// Serialized response heads of the current second for direct writes.
    pub heads: HeadCache,
    /// Primary key (URL), for purge by prefix.
    pub url: String,
    /// Unix second this entry last refreshed its disk LRU position (see [`Self::due_touch`]).
    pub touched: AtomicU64,
    /// Which entry this is: a replacement under the same hash gets a new id, so the URL
    /// index tells the two apart when moka reports the old one's removal.
    id: u64,
}

/// How often a memory hit refreshes the object's disk LRU position. Hot objects are served
/// from memory, so without this the disk tier would see them as cold and evict them first;
/// refreshing at most once per interval keeps the disk index mutex off the hit path.
const DISK_TOUCH_INTERVAL_SECS: u64 = 30;

/// Ids of memory entries, unique per process (see [`MemEntry::id`]).
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl MemEntry {
    /// A new entry, counted as just touched.
    pub fn new(hot: HotMeta, body: Bytes, url: String) -> Self {
        MemEntry {
            hot,
            body,
            file: None,
            heads: HeadCache::default(),
            url,
            touched: AtomicU64::new(unix_now()),
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// The same entry with a disk file for zero-copy sends.
    pub fn with_file(mut self, file: Option<Arc<BodyFile>>) -> Self {
        self.file = file;
        self
    }

    /// True (at most once per interval) when the caller should touch the disk LRU.
    pub fn due_touch(&self) -> bool {
        let now = unix_now();
        let last = self.touched.load(Ordering::Relaxed);
        now.saturating_sub(last) >= DISK_TOUCH_INTERVAL_SECS
            && self
                .touched
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    fn weight(&self) -> u32 {
        let w = self.body.len()
            + super::placement::overhead(self.body.len())
            + self.url.len()
            + ENTRY_OVERHEAD;
        u32::try_from(w).unwrap_or(u32::MAX)
    }
}

/// Primary key (URL) → (hash, entry id) of every entry stored for it.
///
/// A hash may be listed with several ids for a moment: the new entry is listed before it
/// replaces the old one in moka, and the old one's removal unlists only its own id. (Two
/// racing inserts of one hash thus both stay listed until each is reported removed.)
#[derive(Default)]
struct UrlIndex {
    map: BTreeMap<String, Vec<(String, u64)>>,
}

impl UrlIndex {
    fn add(&mut self, url: &str, hash: &str, id: u64) {
        match self.map.get_mut(url) {
            Some(slots) => slots.push((hash.to_string(), id)),
            None => {
                self.map
                    .insert(url.to_string(), vec![(hash.to_string(), id)]);
            }
        }
    }

    fn remove(&mut self, url: &str, hash: &str, id: u64) {
        let Some(slots) = self.map.get_mut(url) else {
            return;
        };
        slots.retain(|(h, i)| !(h == hash && *i == id));
        if slots.is_empty() {
            self.map.remove(url);
        }
    }
}

fn lock(index: &Mutex<UrlIndex>) -> MutexGuard<'_, UrlIndex> {
    // A poisoned lock only means a holder panicked between two whole updates.
    index.lock().unwrap_or_else(|e| e.into_inner())
}

/// The memory tier, keyed by the hex cache key hash.
pub struct MemoryTier {
    cache: Cache<String, Arc<MemEntry>>,
    by_url: Arc<Mutex<UrlIndex>>,
}

impl MemoryTier {
    /// A tier holding at most `max_capacity` bytes.
    pub fn new(max_capacity: u64) -> Self {
        let by_url: Arc<Mutex<UrlIndex>> = Arc::default();
        let index = by_url.clone();
        let cache = Cache::builder()
            .max_capacity(max_capacity)
            .weigher(|_k: &String, v: &Arc<MemEntry>| v.weight())
            .eviction_listener(move |k: Arc<String>, v: Arc<MemEntry>, cause| {
                if matches!(cause, RemovalCause::Size) {
                    METRICS.evictions.with_label_values(&["memory"]).inc();
                }
                lock(&index).remove(&v.url, &k, v.id);
            })
            .build();
        MemoryTier { cache, by_url }
    }

    /// Look up an entry.
    pub fn get(&self, hash: &str) -> Option<Arc<MemEntry>> {
        self.cache.get(hash)
    }

    /// Whether an entry is present (not counted as an access by the eviction policy).
    pub fn contains(&self, hash: &str) -> bool {
        self.cache.contains_key(hash)
    }

    /// Insert or replace an entry. Indexed first, so no moment has it stored but not
    /// indexed; the index lock is released before moka is called (its removal listener
    /// takes the same lock).
    pub fn insert(&self, hash: String, entry: Arc<MemEntry>) {
        lock(&self.by_url).add(&entry.url, &hash, entry.id);
        self.cache.insert(hash, entry);
    }

    /// Remove an entry (purge/invalidate); returns whether it was present.
    pub fn remove(&self, hash: &str) -> bool {
        self.cache.remove(hash).is_some()
    }

    /// Hashes of entries whose URL starts with `prefix` (a range of the URL index: the URLs
    /// sorting from `prefix` up to the first one that no longer starts with it).
    pub fn hashes_with_prefix(&self, prefix: &str) -> Vec<String> {
        use std::ops::Bound;
        let mut out: Vec<String> = lock(&self.by_url)
            .map
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(url, _)| url.starts_with(prefix))
            .flat_map(|(_, slots)| slots.iter().map(|(h, _)| h.clone()))
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Hashes of entries stored for exactly `url` (every variant of it).
    pub fn hashes_of_url(&self, url: &str) -> Vec<String> {
        let mut out: Vec<String> = lock(&self.by_url)
            .map
            .get(url)
            .map(|slots| slots.iter().map(|(h, _)| h.clone()).collect())
            .unwrap_or_default();
        out.sort();
        out.dedup();
        out
    }

    /// Every entry (hash and entry); a scan, for the test clock only.
    pub fn entries(&self) -> Vec<(String, Arc<MemEntry>)> {
        self.cache.iter().map(|(k, v)| ((*k).clone(), v)).collect()
    }

    /// Publish entry count and weighted size to the metrics.
    pub fn report(&self) {
        self.cache.run_pending_tasks();
        METRICS
            .entries
            .with_label_values(&["memory"])
            .set(i64::try_from(self.cache.entry_count()).unwrap_or(i64::MAX));
        METRICS
            .stored_bytes
            .with_label_values(&["memory"])
            .set(i64::try_from(self.cache.weighted_size()).unwrap_or(i64::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(url: &str) -> Arc<MemEntry> {
        let meta = CacheMeta::new(
            SystemTime::now(),
            SystemTime::now(),
            0,
            0,
            ResponseHeader::build(200, None).unwrap(), // unwrap: test-only
        );
        Arc::new(MemEntry::new(
            HotMeta::of(&meta),
            Bytes::from_static(b"body"),
            url.to_string(),
        ))
    }

    #[test]
    fn url_index_follows_insert_replace_and_remove() {
        let tier = MemoryTier::new(1 << 20);
        tier.insert("h1".into(), entry("/m/a"));
        tier.insert("h2".into(), entry("/m/a"));
        tier.insert("h3".into(), entry("/m/b"));
        tier.insert("h4".into(), entry("/n/c"));
        // a replacement (revalidation, promotion) lists the hash once
        tier.insert("h1".into(), entry("/m/a"));
        tier.cache.run_pending_tasks();
        assert_eq!(tier.hashes_of_url("/m/a"), ["h1", "h2"]);
        // ... and the old entry's removal unlisted its own id only
        assert_eq!(lock(&tier.by_url).map["/m/a"].len(), 2);
        assert_eq!(tier.hashes_with_prefix("/m/"), ["h1", "h2", "h3"]);
        assert!(tier.remove("h1"));
        tier.cache.run_pending_tasks();
        assert_eq!(tier.hashes_of_url("/m/a"), ["h2"]);
        assert!(tier.remove("h2"));
        assert!(tier.remove("h3"));
        tier.cache.run_pending_tasks();
        assert!(tier.hashes_with_prefix("/m/").is_empty());
        assert!(lock(&tier.by_url).map.keys().eq(["/n/c"]));
    }
}
