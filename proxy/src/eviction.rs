//! Disk tier eviction: an LRU index of stored entries bounded by bytes.
//!
//! This is our own eviction manager rather than a pingora `EvictionManager` because the disk
//! tier must hold its byte budget on its own (also for entries found by the startup rebuild,
//! which pingora's manager never sees) and needs the URL of each entry for purge by prefix.
//! [`DiskLru::admit`] returns the victims to delete synchronously, so the budget holds even
//! under a burst of new objects. Eviction (budget) is distinct from purge (invalidation): only
//! the former goes through [`DiskLru::admit`]/[`DiskLru::over_budget`].

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, Metadata};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::sync::{Mutex, MutexGuard};

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
    url: String,
    seq: u64,
    verified: Option<Verified>,
}

#[derive(Default)]
struct Inner {
    map: HashMap<String, Slot>,
    order: BTreeMap<u64, String>,
    live_seq: u64,
    rebuild_seq: u64,
    bytes: u64,
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
        if let Some(old) = g.map.remove(hash) {
            g.order.remove(&old.seq);
            g.bytes = g.bytes.saturating_sub(old.size);
        }
        g.order.insert(seq, hash.to_string());
        g.bytes += size;
        g.map.insert(
            hash.to_string(),
            Slot {
                size,
                url: url.to_string(),
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
            if let Some(slot) = g.map.remove(&hash) {
                g.bytes = g.bytes.saturating_sub(slot.size);
            }
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
        let mut g = self.lock();
        match g.map.remove(hash) {
            Some(slot) => {
                g.order.remove(&slot.seq);
                g.bytes = g.bytes.saturating_sub(slot.size);
                true
            }
            None => false,
        }
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

    /// Hashes whose URL starts with `prefix`.
    pub fn hashes_with_prefix(&self, prefix: &str) -> Vec<String> {
        self.lock()
            .map
            .iter()
            .filter(|(_, s)| s.url.starts_with(prefix))
            .map(|(h, _)| h.clone())
            .collect()
    }

    /// Hashes stored for exactly `url` (every variant of it).
    pub fn hashes_of_url(&self, url: &str) -> Vec<String> {
        self.lock()
            .map
            .iter()
            .filter(|(_, s)| s.url == url)
            .map(|(h, _)| h.clone())
            .collect()
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
    fn rebuilt_entries_are_older_than_live_ones() {
        let lru = DiskLru::new(100);
        assert!(lru.admit("live", "/l", 60, None).is_empty());
        lru.admit_rebuilt("old", "/o", 60);
        assert_eq!(lru.over_budget(), vec!["old".to_string()]);
    }
}
