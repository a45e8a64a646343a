//! `[cache]`, `[cache.memory]` and `[cache.disk]` validated into byte budgets and timeouts.

use std::num::{NonZeroU64, NonZeroUsize};
use std::path::PathBuf;
use std::time::Duration;

use super::check::{nz_u64, nz_usize, Checker};
use super::defaults::*;
use super::file::RawCache;

/// Validated `[cache]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheSettings {
    /// Cache directory.
    pub dir: PathBuf,
    /// Cache lock age timeout.
    pub lock_age_timeout: Duration,
    /// Cache lock wait timeout.
    pub lock_wait_timeout: Duration,
    /// Memory tier byte budget.
    pub memory_max_capacity: NonZeroU64,
    /// Largest body held in memory.
    pub memory_max_object_size: u64,
    /// Disk tier byte budget.
    pub disk_max_capacity: NonZeroU64,
    /// Disk streaming chunk size.
    pub disk_chunk_size: NonZeroUsize,
    /// Streaming partial reads of fills.
    pub streaming_fill: bool,
    /// Smallest memory-hit body sent with sendfile; `None` = zero-copy off.
    pub sendfile_min_size: Option<u64>,
    /// Largest hit body (memory or disk) sent with sendfile (bytes); larger ones are copied.
    pub sendfile_max_size: u64,
    /// Most entry files held open for zero-copy sends.
    pub sendfile_max_open_files: usize,
}

/// Validates `[cache]` and its tiers.
pub(super) fn validate_cache(c: &mut Checker, k: RawCache) -> CacheSettings {
    let dir = k.dir.unwrap_or_else(|| DEFAULT_CACHE_DIR.to_string());
    if dir.is_empty() {
        c.err("cache.dir", "must not be empty");
    }
    let m = k.memory.unwrap_or_default();
    let mem_cap = m.max_capacity.unwrap_or(DEFAULT_MEMORY_MAX_CAPACITY);
    if mem_cap == 0 {
        c.err("cache.memory.max_capacity", "must be > 0");
    }
    // Only meaningful against a valid capacity; a zero capacity is reported above.
    let mem_obj = if mem_cap == 0 {
        m.max_object_size.unwrap_or(0)
    } else {
        c.range(
            "cache.memory.max_object_size",
            m.max_object_size,
            DEFAULT_MEMORY_MAX_OBJECT_SIZE.min(mem_cap),
            0,
            mem_cap,
        )
    };
    let sendfile_min = c.range(
        "cache.memory.sendfile_min_size",
        m.sendfile_min_size,
        DEFAULT_SENDFILE_MIN_SIZE.min(mem_obj),
        0,
        mem_obj,
    );
    let sendfile_max = c.range(
        "cache.memory.sendfile_max_size",
        m.sendfile_max_size,
        DEFAULT_SENDFILE_MAX_SIZE.max(sendfile_min),
        sendfile_min,
        u64::MAX,
    );
    let sendfile_max_open = c.range(
        "cache.memory.sendfile_max_open_files",
        m.sendfile_max_open_files,
        DEFAULT_SENDFILE_MAX_OPEN_FILES,
        0,
        1_000_000,
    );
    let d = k.disk.unwrap_or_default();
    let disk_cap = d.max_capacity.unwrap_or(DEFAULT_DISK_MAX_CAPACITY);
    if disk_cap == 0 {
        c.err("cache.disk.max_capacity", "must be > 0");
    }
    CacheSettings {
        dir: PathBuf::from(dir),
        lock_age_timeout: Duration::from_millis(c.range(
            "cache.lock_age_timeout_ms",
            k.lock_age_timeout_ms,
            DEFAULT_LOCK_AGE_TIMEOUT_MS,
            1,
            600_000,
        )),
        lock_wait_timeout: Duration::from_millis(c.range(
            "cache.lock_wait_timeout_ms",
            k.lock_wait_timeout_ms,
            DEFAULT_LOCK_WAIT_TIMEOUT_MS,
            1,
            600_000,
        )),
        streaming_fill: k.streaming_fill.unwrap_or(DEFAULT_STREAMING_FILL),
        sendfile_min_size: (sendfile_min > 0).then_some(sendfile_min),
        sendfile_max_size: sendfile_max,
        sendfile_max_open_files: usize::try_from(sendfile_max_open).unwrap_or(usize::MAX),
        memory_max_capacity: nz_u64(mem_cap),
        memory_max_object_size: mem_obj,
        disk_max_capacity: nz_u64(disk_cap),
        disk_chunk_size: nz_usize(c.range(
            "cache.disk.chunk_size",
            d.chunk_size,
            DEFAULT_DISK_CHUNK_SIZE,
            4096,
            16 << 20,
        )),
    }
}
