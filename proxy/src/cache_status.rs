//! [`CacheStatus`]: what the edge did for a response, as sent in `X-Cache-Status`, counted in
//! the metrics and written to the access log (nginx `$upstream_cache_status` names).
//!
//! One enum instead of string literals so that the header, the metrics' label values and the
//! log cannot drift apart, and so the metrics can resolve one counter per value up front.

use pingora::cache::CachePhase;

/// What the edge did for one response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CacheStatus {
    /// Served from the cache, fresh.
    Hit,
    /// Not in the cache: fetched from the origin (and stored if cacheable).
    Miss,
    /// In the cache but stale: fetched again from the origin.
    Expired,
    /// Served stale (origin down or failing, within `stale-if-error`).
    Stale,
    /// Served stale while one background refresh runs (`stale-while-revalidate`).
    Updating,
    /// Stale copy revalidated by the origin (304) and served from the cache.
    Revalidated,
    /// Not a cacheable request or route: passed to the origin untouched.
    #[default]
    Bypass,
}

impl CacheStatus {
    /// Every value, in the order [`CacheStatus::index`] numbers them.
    pub const ALL: [CacheStatus; 7] = [
        CacheStatus::Hit,
        CacheStatus::Miss,
        CacheStatus::Expired,
        CacheStatus::Stale,
        CacheStatus::Updating,
        CacheStatus::Revalidated,
        CacheStatus::Bypass,
    ];

    /// The header value and metric label.
    pub const fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "HIT",
            CacheStatus::Miss => "MISS",
            CacheStatus::Expired => "EXPIRED",
            CacheStatus::Stale => "STALE",
            CacheStatus::Updating => "UPDATING",
            CacheStatus::Revalidated => "REVALIDATED",
            CacheStatus::Bypass => "BYPASS",
        }
    }

    /// Position in [`CacheStatus::ALL`] (for per-value counters resolved up front).
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The status of a request in pingora's cache `phase`.
    pub fn of_phase(phase: CachePhase) -> CacheStatus {
        match phase {
            CachePhase::Hit => CacheStatus::Hit,
            CachePhase::Miss => CacheStatus::Miss,
            CachePhase::Expired => CacheStatus::Expired,
            CachePhase::Stale => CacheStatus::Stale,
            CachePhase::StaleUpdating => CacheStatus::Updating,
            CachePhase::Revalidated | CachePhase::RevalidatedNoCache(_) => CacheStatus::Revalidated,
            CachePhase::Disabled(_)
            | CachePhase::Uninit
            | CachePhase::Bypass
            | CachePhase::CacheKey => CacheStatus::Bypass,
        }
    }
}

impl std::fmt::Display for CacheStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_is_in_index_order_and_names_are_distinct() {
        for (i, s) in CacheStatus::ALL.iter().enumerate() {
            assert_eq!(s.index(), i);
        }
        let mut names: Vec<&str> = CacheStatus::ALL.iter().map(|s| s.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), CacheStatus::ALL.len());
    }
}
