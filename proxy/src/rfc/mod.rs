//! HTTP caching semantics of a shared cache (RFC 9111, RFC 9213), kept apart from the proxy
//! hooks so each rule can be read next to the RFC section it implements.
//!
//! - [`directives`]: what may be stored, hop-by-hop fields, the 304 header update.
//! - [`freshness`]: freshness lifetime and current age (RFC 9111 §4.2).
//! - [`vary`]: secondary cache keys (RFC 9111 §4.1): which stored variant answers a request.
//!
//! `service.rs` calls into these from its pingora hooks; `policy.rs` uses them to decide
//! what is stored and for how long.

pub mod directives;
pub mod freshness;
pub mod vary;

/// Default cap of a heuristic freshness lifetime (§4.2.2): one day, as common caches use.
pub const DEFAULT_HEURISTIC_MAX_SECS: u64 = 86_400;

/// A route's choices where the RFCs leave them to the cache (MAY); everything the RFCs
/// require (MUST) holds on every cache route regardless. Built from the `[[route]]` keys
/// documented in `config.rs` and `config/edge.toml`.
#[derive(Debug, Clone, Default)]
pub struct Semantics {
    /// `store_any_status`: a final response of any status with explicit freshness is stored
    /// (§3 allows it); off, only 200 is stored (the edge's media behaviour).
    pub store_any_status: bool,
    /// `heuristic_percent`: heuristic freshness (§4.2.2) as this fraction of
    /// `Date − Last-Modified`, for heuristically cacheable statuses; `None` = off (the route's
    /// `default_ttl` applies to a 200 without explicit freshness instead).
    pub heuristic: Option<Heuristic>,
    /// `request_directives`: honor the client's `Cache-Control` request directives
    /// (§5.2.1); off, a shared cache may ignore them.
    pub request_directives: bool,
}

/// Heuristic freshness parameters (§4.2.2).
#[derive(Debug, Clone, Copy)]
pub struct Heuristic {
    /// Percent of `Date − Last-Modified`, 1..=100.
    pub percent: u32,
    /// Upper bound of the heuristic lifetime.
    pub max: std::time::Duration,
}
