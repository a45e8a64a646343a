//! Request `Cache-Control` directives (RFC 9111 §5.2.1) and `Pragma: no-cache` (§5.4), for
//! routes with `request_directives = true`.
//!
//! Off by default: a shared cache MAY ignore them, and an edge in front of an origin serves
//! many clients: honoring `no-cache` or `max-age=0` from any client lets anyone turn every
//! request into an origin fetch. Where on, they narrow what a stored response may answer
//! (`max-age`, `min-fresh`, `no-cache`), widen it (`max-stale`, never past `must-revalidate`,
//! `proxy-revalidate`, `s-maxage` or `no-cache` on the response), keep the response out of
//! storage (`no-store`) or forbid the origin (`only-if-cached`: 504 without a fresh stored
//! response).

use http::header::{CACHE_CONTROL, PRAGMA};
use pingora::cache::cache_control::{CacheControl, DirectiveKey};
use pingora::cache::{CacheMeta, ForcedFreshness};
use pingora::http::RequestHeader;
use std::time::{Duration, SystemTime};

/// Whether the request carries anything this module acts on (the hit fast path skips
/// such requests so the hooks below see them).
pub fn any(req: &RequestHeader) -> bool {
    req.headers.contains_key(CACHE_CONTROL) || req.headers.contains_key(PRAGMA)
}

/// The request's directives, `Pragma: no-cache` counted as `no-cache` when there is no
/// `Cache-Control` (§5.4).
pub fn parse(req: &RequestHeader) -> Option<Directives> {
    let cc = CacheControl::from_req_headers(req);
    let pragma_no_cache = cc.is_none()
        && req
            .headers
            .get_all(PRAGMA)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("no-cache"))
            });
    if cc.is_none() && !pragma_no_cache {
        return None;
    }
    let secs = |name: &str| -> Option<Option<Duration>> {
        let cc = cc.as_ref()?;
        let v = cc.directives.get(&DirectiveKey::from_lowercase(name))?;
        // Present: with a valid value, or without one (or an invalid one: `None`).
        Some(
            v.as_ref()
                .and_then(|v| v.parse_as_delta_seconds().ok())
                .map(|s| Duration::from_secs(u64::from(s))),
        )
    };
    let has = |name: &str| cc.as_ref().is_some_and(|c| c.has_key(name));
    Some(Directives {
        no_cache: pragma_no_cache || has("no-cache"),
        no_store: has("no-store"),
        only_if_cached: has("only-if-cached"),
        // `max-age` without a valid value reads as 0 (validate: the conservative reading);
        // an invalid `min-fresh` is ignored; `max-stale` without a value accepts any staleness.
        max_age: secs("max-age").map(|v| v.unwrap_or_default()),
        min_fresh: secs("min-fresh").flatten(),
        max_stale: secs("max-stale"),
    })
}

/// The request directives the edge acts on.
#[derive(Debug, Default, Clone, Copy)]
pub struct Directives {
    /// `no-cache` (or `Pragma: no-cache`): validate before using a stored response.
    pub no_cache: bool,
    /// `no-store`: do not store the response to this request.
    pub no_store: bool,
    /// `only-if-cached`: answer from cache or 504.
    pub only_if_cached: bool,
    /// `max-age`: no stored response older than this.
    pub max_age: Option<Duration>,
    /// `min-fresh`: only a response fresh for at least this much longer.
    pub min_fresh: Option<Duration>,
    /// `max-stale`: a stale response is acceptable, `Some(None)` however stale it is.
    pub max_stale: Option<Option<Duration>>,
}

impl Directives {
    /// How a stored response (`meta`, fresh or not at `now`) may answer this request.
    pub fn hit(&self, meta: &CacheMeta, now: SystemTime) -> Option<ForcedFreshness> {
        let age = now.duration_since(meta.updated()).unwrap_or_default();
        let fresh_left = meta.fresh_until().duration_since(now).ok();
        if self.no_cache
            || self.max_age.is_some_and(|m| age > m)
            || self
                .min_fresh
                .is_some_and(|m| fresh_left.is_none_or(|left| left < m))
        {
            return Some(ForcedFreshness::ForceExpired);
        }
        if meta.is_fresh(now) {
            return None;
        }
        let staleness = now.duration_since(meta.fresh_until()).unwrap_or_default();
        let allowed = match self.max_stale {
            Some(None) => true,
            Some(Some(m)) => staleness <= m,
            None => false,
        };
        (allowed && stale_permitted(meta)).then_some(ForcedFreshness::ForceFresh)
    }
}

/// Whether the stored response lets a stale copy out at all (§4.2.4: not with
/// `must-revalidate`, `proxy-revalidate` or `s-maxage` for a shared cache, nor `no-cache`).
fn stale_permitted(meta: &CacheMeta) -> bool {
    CacheControl::from_resp_headers(meta.response_header()).is_none_or(|c| {
        !(c.must_revalidate()
            || c.proxy_revalidate()
            || c.has_key("s-maxage")
            || c.has_key("no-cache"))
    })
}
