//! The metrics view of [`TieredStorage`]: per-tier entry and byte gauges, refreshed when
//! `/metrics` is scraped (not on every store, which would put gauge updates on the hot path).

use super::TieredStorage;
use crate::metrics::METRICS;

impl TieredStorage {
    /// (entries, bytes) indexed on disk.
    pub fn disk_totals(&self) -> (u64, u64) {
        self.disk.lru.totals()
    }

    /// Refresh the per-tier gauges.
    pub fn report(&self) {
        self.memory.report();
        METRICS
            .sendfile_open_files
            .set(i64::try_from(super::body_file::open_files()).unwrap_or(i64::MAX));
        self.disk.report();
    }
}
