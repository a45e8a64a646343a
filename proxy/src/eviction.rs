//! Disk tier eviction: an LRU index of stored entries bounded by bytes.
//!
//! This is our own eviction manager rather than a pingora `EvictionManager` because the disk
//! tier must hold its byte budget on its own (also for entries found by the startup rebuild,
//! which pingora's manager never sees) and needs the URL of each entry for purge by prefix.
//! [`DiskLru::admit`] returns the victims to delete synchronously, so the budget holds even
//! under a burst of new objects. Eviction (budget) is distinct from purge (invalidation): only
//! the former goes through [`DiskLru::admit`]/[`DiskLru::over_budget`].
//!
//! Beside the LRU order the index keeps primary key (URL) → hashes stored for it (every
//! `Vary` variant), updated under the same lock by every insert, eviction and removal
//! (the startup rebuild admits through the same path), so purging a URL or a prefix reads
//! only that URL's entries, never the whole index.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, Metadata};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, Mutex, MutexGuard};

/// File identity an integrity check was done for: which inode, and its length, mtime and
/// ctime (seconds, nanoseconds).
///
/// Length and mtime alone are not enough: anyone who can write the file can also set its
/// mtime back (`touch -d`, `utimensat`). ctime cannot be set from user space (every write,
/// `chmod` or `utimensat` moves it to now), and `(dev, ino)` tells a file replaced under
/// the same name from the one verified. So a file whose identity equals a verified one has
/// not been written since that check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    /// Device of the filesystem.
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
    /// Length in bytes.
    pub len: u64,
    /// Modification time.
    pub mtime: (i64, i64),
    /// Status change time.
    pub ctime: (i64, i64),
}

impl Verified {
    /// The identity `m` describes.
    pub fn of(m: &Metadata) -> Self {
        Verified {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }
}

/// The current identity of an open file (one `fstat`).
pub fn identity(file: &File) -> io::Result<Verified> {
    Ok(Verified::of(&file.metadata()?))
}

struct Slot {
    size: u64,
    /// Shared with the `by_url` key.
    url: Arc<str>,
    seq: u64,
    verified: Option<Verified>,
}

#[derive(Default)]
struct Inner {
    map: HashMap<String, Slot>,
    order: BTreeMap<u64, String>,
    /// URL → hashes of `map` stored for it; a URL is present only while it has any.
    by_url: BTreeMap<Arc<str>, Vec<String>>,
    live_seq: u64,
    rebuild_seq: u64,
    bytes: u64,
}

impl Inner {
    /// Take `hash` out of the map, the LRU order, the URL index and the byte count.
    fn take(&mut self, hash: &str) -> Option<Slot> {
        let slot = self.map.remove(hash)?;
        self.order.remove(&slot.seq);
        self.bytes = self.bytes.saturating_sub(slot.size);
        if let Some(hashes) = self.by_url.get_mut(&*slot.url) {
            hashes.retain(|h| h != hash);
            if hashes.is_empty() {
                self.by_url.remove(&*slot.url);
            }
        }
        Some(slot)
    }

    /// The index's shared copy of `url` with `hash` listed under it.
    fn list(&mut self, url: &str, hash: &str) -> Arc<str> {
        if let Some((key, hashes)) = self.by_url.get_key_value(url) {
            let key = key.clone();
            if !hashes.iter().any(|h| h == hash) {
                if let Some(hashes) = self.by_url.get_mut(url) {
                    hashes.push(hash.to_string());
                }
            }
            return key;
        }
        let key: Arc<str> = Arc::from(url);
        self.by_url.insert(key.clone(), vec![hash.to_string()]);
        key
    }
}

/// LRU index of disk entries keyed by hex cache key hash.
pub struct DiskLru {
    inner: Mutex<Inner>,
    max_capacity: u64,
}

// Entries found by the startup rebuild get sequence numbers below every live access, so
// they are evicted first.
const LIVE_SEQ_START: u64 = 1 << 48;

impl DiskLru {
    /// An empty index with a byte budget.
    pub fn new(max_capacity: u64) -> Self {
        DiskLru {
            inner: Mutex::new(Inner {
                live_seq: LIVE_SEQ_START,
                ..Default::default()
            }),
            max_capacity,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A poisoned lock only means another thread panicked mid-update; the index stays
        // usable (at worst slightly off in byte accounting).
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Record a newly written entry (replacing any previous one for `hash`) as most recently
    /// used, and return the entries that must be deleted to get back under budget.
    pub fn admit(
        &self,
        hash: &str,
        url: &str,
        size: u64,
        verified: Option<Verified>,
    ) -> Vec<String> {
        let mut g = self.lock();
        g.live_seq += 1;
        let seq = g.live_seq;
        Self::insert(&mut g, hash, url, size, seq, verified);
        self.victims(&mut g)
    }

    /// Record an entry found on disk at startup, unless a live write already indexed it.
    pub fn admit_rebuilt(&self, hash: &str, url: &str, size: u64) {
        let mut g = self.lock();
        if g.map.contains_key(hash) {
            return;
        }
        g.rebuild_seq += 1;
        let seq = g.rebuild_seq;
        Self::insert(&mut g, hash, url, size, seq, None);
    }

    fn insert(
        g: &mut Inner,
        hash: &str,
        url: &str,
        size: u64,
        seq: u64,
        verified: Option<Verified>,
    ) {
        g.take(hash);
        g.order.insert(seq, hash.to_string());
        g.bytes += size;
        let url = g.list(url, hash);
        g.map.insert(
            hash.to_string(),
            Slot {
                size,
                url,
                seq,
                verified,
            },
        );
    }

    fn victims(&self, g: &mut Inner) -> Vec<String> {
        let mut out = Vec::new();
        while g.bytes > self.max_capacity {
            let Some((_, hash)) = g.order.pop_first() else {
                break;
            };
            g.take(&hash);
            out.push(hash);
        }
        out
    }

    /// Entries to delete if the index is over budget (after the rebuild).
    pub fn over_budget(&self) -> Vec<String> {
        let mut g = self.lock();
        self.victims(&mut g)
    }

    /// Mark `hash` as most recently used; returns false when it is not indexed.
    pub fn touch(&self, hash: &str) -> bool {
        let mut g = self.lock();
        g.live_seq += 1;
        let seq = g.live_seq;
        let Some(slot) = g.map.get_mut(hash) else {
            return false;
        };
        let old = std::mem::replace(&mut slot.seq, seq);
        g.order.remove(&old);
        g.order.insert(seq, hash.to_string());
        true
    }

    /// Whether `hash` is indexed (a committed entry; no disk access).
    pub fn contains(&self, hash: &str) -> bool {
        self.lock().map.contains_key(hash)
    }

    /// Forget an entry (purge or integrity failure); returns whether it was indexed.
    pub fn remove(&self, hash: &str) -> bool {
        self.lock().take(hash).is_some()
    }

    /// The file identity the body was last verified for.
    pub fn verified(&self, hash: &str) -> Option<Verified> {
        self.lock().map.get(hash).and_then(|s| s.verified)
    }

    /// Record a successful integrity check.
    pub fn set_verified(&self, hash: &str, v: Verified) {
        if let Some(s) = self.lock().map.get_mut(hash) {
            s.verified = Some(v);
        }
    }

    /// Hashes whose URL starts with `prefix` (a range of the URL index: the URLs sorting
    /// from `prefix` up to the first one that no longer starts with it).
    pub fn hashes_with_prefix(&self, prefix: &str) -> Vec<String> {
        use std::ops::Bound;
        self.lock()
            .by_url
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(url, _)| url.starts_with(prefix))
            .flat_map(|(_, hashes)| hashes.iter().cloned())
            .collect()
    }

    /// Hashes stored for exactly `url` (every variant of it).
    pub fn hashes_of_url(&self, url: &str) -> Vec<String> {
        self.lock().by_url.get(url).cloned().unwrap_or_default()
    }

    /// (entries, bytes) currently indexed.
    pub fn totals(&self) -> (u64, u64) {
        let g = self.lock();
        (g.map.len() as u64, g.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admit_evicts_least_recently_used_to_budget() {
        let lru = DiskLru::new(100);
        assert!(lru.admit("a", "/a", 40, None).is_empty());
        assert!(lru.admit("b", "/b", 40, None).is_empty());
        assert!(lru.touch("a"));
        assert_eq!(lru.admit("c", "/c", 40, None), vec!["b".to_string()]);
        assert_eq!(lru.totals(), (2, 80));
    }

    #[test]
    fn url_index_follows_admit_evict_and_remove() {
        let lru = DiskLru::new(100);
        assert!(lru.admit("v1", "/m/a", 10, None).is_empty());
        assert!(lru.admit("v2", "/m/a", 10, None).is_empty());
        lru.admit_rebuilt("b", "/m/b", 10);
        assert!(lru.admit("c", "/n/c", 10, None).is_empty());
        let mut a = lru.hashes_of_url("/m/a");
        a.sort();
        assert_eq!(a, ["v1", "v2"]);
        let mut m = lru.hashes_with_prefix("/m/");
        m.sort();
        assert_eq!(m, ["b", "v1", "v2"]);
        // re-admitting a hash lists it once
        assert!(lru.admit("v1", "/m/a", 10, None).is_empty());
        assert_eq!(lru.hashes_of_url("/m/a").len(), 2);
        assert!(lru.remove("v2"));
        assert_eq!(lru.hashes_of_url("/m/a"), ["v1"]);
        // budget eviction takes the oldest ("b", rebuilt) out of the URL index too
        assert_eq!(lru.admit("big", "/z", 75, None), ["b".to_string()]);
        assert!(lru.hashes_of_url("/m/b").is_empty());
        assert_eq!(lru.hashes_with_prefix("/m/"), ["v1"]);
        assert!(lru.remove("v1"));
        assert!(lru.hashes_with_prefix("/m/").is_empty());
    }

    #[test]
    fn rebuilt_entries_are_older_than_live_ones() {
        let lru = DiskLru::new(100);
        assert!(lru.admit("live", "/l", 60, None).is_empty());
        lru.admit_rebuilt("old", "/o", 60);
        assert_eq!(lru.over_budget(), vec!["old".to_string()]);
    }
}
