//! The cache lock: pingora's [`CacheLock`] plus one fix for its lookup-then-lock race.
//!
//! pingora looks a key up and, on a miss, takes the lock. If another request finishes its
//! fill (or, with streaming fills, registers it and releases the lock) between those two
//! steps, the late request becomes a second writer and fetches from the origin again. When
//! [`EdgeLock::lock`] would hand out a write permit for a key that storage can already serve,
//! it hands out an already-finished read lock instead, so pingora looks the key up again and
//! finds the object or the fill in progress.

use crate::storage::TieredStorage;
use pingora::cache::key::CacheKey;
use pingora::cache::lock::{CacheKeyLock, CacheLock, LockStatus, Locked, WritePermit};
use std::time::Duration;

/// Cache lock used by the edge.
pub struct EdgeLock {
    inner: CacheLock,
    age_timeout: Duration,
    storage: &'static TieredStorage,
}

impl EdgeLock {
    /// `age_timeout`: how long a writer may hold a key before waiters stop waiting for it.
    pub fn new(age_timeout: Duration, storage: &'static TieredStorage) -> Self {
        EdgeLock {
            inner: CacheLock::new(age_timeout),
            age_timeout,
            storage,
        }
    }

    /// A read lock whose writer is already done: waiting on it returns at once. It is a lock
    /// of its own, in no table, so concurrent redirects of one key never meet.
    fn finished_read_lock(&self) -> Locked {
        let (mut permit, stub) = WritePermit::new(self.age_timeout, false, http::Extensions::new());
        permit.unlock(LockStatus::Done);
        Locked::Read(stub.read_lock())
    }
}

impl CacheKeyLock for EdgeLock {
    /// As [`CacheLock::lock`], except that a would-be writer for a key storage can already
    /// serve (stored, or being filled) is turned into a reader of a finished lock. Writers
    /// revalidating a stale copy (`stale_writer`) are never redirected.
    fn lock(&self, key: &CacheKey, stale_writer: bool) -> Locked {
        let locked = self.inner.lock(key, stale_writer);
        let Locked::Write(permit) = locked else {
            return locked;
        };
        if stale_writer || !self.storage.can_serve(key) {
            return Locked::Write(permit);
        }
        self.inner.release(key, permit, LockStatus::Done);
        self.finished_read_lock()
    }

    fn release(&self, key: &CacheKey, permit: WritePermit, reason: LockStatus) {
        self.inner.release(key, permit, reason);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{EdgeConfig, Overrides};
    use crate::storage::cache_key;
    use pingora::cache::trace::Span;
    use pingora::cache::{CacheMeta, Storage};
    use pingora::http::ResponseHeader;
    use std::time::SystemTime;

    #[tokio::test]
    async fn would_be_writer_of_a_stored_key_becomes_a_finished_reader() {
        let dir = tempfile::tempdir().unwrap(); // unwrap: test-only
        let overrides = Overrides {
            cache_dir: Some(dir.path().display().to_string()),
            ..Default::default()
        };
        let config = EdgeConfig::load(None, &overrides).unwrap(); // unwrap: test-only
        let storage: &'static TieredStorage =
            Box::leak(Box::new(TieredStorage::new(&config.cache).unwrap())); // unwrap: test-only
        let lock = EdgeLock::new(Duration::from_secs(5), storage);
        let key = cache_key("/media/l");

        // nothing stored: the first request writes, the next one waits on it
        let Locked::Write(permit) = lock.lock(&key, false) else {
            panic!("expected write lock")
        };
        assert!(matches!(lock.lock(&key, false), Locked::Read(_)));

        // the writer stores the object and releases
        let now = SystemTime::now();
        let meta = CacheMeta::new(
            now + Duration::from_secs(60),
            now,
            0,
            0,
            ResponseHeader::build(200, None).unwrap(), // unwrap: test-only
        );
        let span = Span::inactive().handle();
        let mut miss = storage.get_miss_handler(&key, &meta, &span).await.unwrap(); // unwrap: test-only
        miss.write_body(bytes::Bytes::from_static(b"body"), true)
            .await
            .unwrap(); // unwrap: test-only
        miss.finish().await.unwrap(); // unwrap: test-only
        lock.release(&key, permit, LockStatus::Done);

        // a request that missed just before the commit must not become a second writer
        match lock.lock(&key, false) {
            Locked::Read(r) => {
                r.wait().await;
                assert!(!r.locked());
                assert_eq!(r.lock_status(), LockStatus::Done);
            }
            Locked::Write(_) => panic!("second writer for a stored key"),
        }
        // revalidation writers are left alone
        let Locked::Write(permit) = lock.lock(&key, true) else {
            panic!("revalidation must write")
        };
        lock.release(&key, permit, LockStatus::Done);
    }
}
