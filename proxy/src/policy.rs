//! Cache policy: which requests may use the cache, which responses are stored and for how
//! long, and what the client sees in `Cache-Control`/`Expires`/`X-Cache-Status`.
//!
//! Freshness follows the origin (RFC 9111: `s-maxage`, `max-age`, then `Expires`); the
//! route's `default_ttl` applies only when the origin gives none (nginx `proxy_cache_valid`).
//! Never stored: non-200 responses, `private`, `no-store`, `Set-Cookie`, and responses to
//! requests with `Authorization` unless the response is `public`.

use crate::config::Route;
use http::{header, HeaderValue, Method};
use pingora::cache::cache_control::{CacheControl, InterpretCacheControl};
use pingora::cache::filters::{calculate_fresh_until, calculate_serve_stale_durations};
use pingora::cache::{CacheMeta, CacheMetaDefaults, CachePhase, NoCacheReason, RespCacheable};
use pingora::http::{RequestHeader, ResponseHeader};
use std::cell::RefCell;
use std::time::{Duration, SystemTime};

/// Whether a request may be answered from / stored into the cache at all.
pub fn request_cacheable(req: &RequestHeader) -> bool {
    matches!(req.method, Method::GET | Method::HEAD)
}

/// Methods that change the resource and therefore invalidate the stored URL.
pub fn invalidates(method: &Method) -> bool {
    matches!(
        *method,
        Method::PUT | Method::POST | Method::DELETE | Method::PATCH
    )
}

/// Decide whether `resp` (to `req`) is stored, and build its [`CacheMeta`].
pub fn response_cacheable(
    route: &Route,
    req: &RequestHeader,
    resp: &ResponseHeader,
) -> RespCacheable {
    use RespCacheable::{Cacheable, Uncacheable};
    if resp.status.as_u16() != 200 {
        return Uncacheable(NoCacheReason::OriginNotCache);
    }
    if resp.headers.contains_key(header::SET_COOKIE) {
        return Uncacheable(NoCacheReason::OriginNotCache);
    }
    let cc = CacheControl::from_resp_headers(resp);
    if cc.as_ref().is_some_and(|c| c.private() || c.no_store()) {
        return Uncacheable(NoCacheReason::OriginNotCache);
    }
    if req.headers.contains_key(header::AUTHORIZATION) && !cc.as_ref().is_some_and(|c| c.public()) {
        return Uncacheable(NoCacheReason::OriginNotCache);
    }
    let now = SystemTime::now();
    let secs = |d: Duration| u32::try_from(d.as_secs()).unwrap_or(u32::MAX);
    // A defaults table that knows no status: freshness then comes only from the origin's
    // headers, and we apply the route's default TTL ourselves when there is none.
    let no_defaults = CacheMetaDefaults::new(
        |_| None,
        secs(route.stale_while_revalidate),
        secs(route.stale_if_error),
    );
    let fresh_until = calculate_fresh_until(now, cc.as_ref(), resp, false, &no_defaults)
        .unwrap_or_else(|| now + route.default_ttl);
    let (swr, sie) = calculate_serve_stale_durations(cc.as_ref(), &no_defaults);
    // Drop `Cache-Control: private="field"` headers like pingora's resp_cacheable does.
    let mut stored = resp.clone();
    if let Some(c) = &cc {
        c.strip_private_headers(&mut stored);
    }
    Cacheable(CacheMeta::new(fresh_until, now, swr, sie, stored))
}

/// The `X-Cache-Status` value for a cache phase (nginx `$upstream_cache_status` names).
pub fn cache_status(phase: CachePhase) -> &'static str {
    match phase {
        CachePhase::Hit => "HIT",
        CachePhase::Miss => "MISS",
        CachePhase::Expired => "EXPIRED",
        CachePhase::Stale => "STALE",
        CachePhase::StaleUpdating => "UPDATING",
        CachePhase::Revalidated | CachePhase::RevalidatedNoCache(_) => "REVALIDATED",
        CachePhase::Disabled(_)
        | CachePhase::Uninit
        | CachePhase::Bypass
        | CachePhase::CacheKey => "BYPASS",
    }
}

/// nginx `expires N`: rewrite the client-facing freshness headers on successful responses.
pub fn apply_client_max_age(resp: &mut ResponseHeader, max_age: Duration) -> pingora::Result<()> {
    if !matches!(resp.status.as_u16(), 200 | 206 | 304) {
        return Ok(());
    }
    let (cc, expires) = client_headers(max_age);
    resp.insert_header(header::CACHE_CONTROL, cc)?;
    resp.insert_header(header::EXPIRES, expires)?;
    Ok(())
}

/// (Cache-Control, Expires) values for `max_age`, formatted at most once per second per
/// thread: they are on every media response, and formatting dates is not free.
fn client_headers(max_age: Duration) -> (HeaderValue, HeaderValue) {
    type Cached = Option<(u64, u64, HeaderValue, HeaderValue)>;
    thread_local! {
        static CACHE: RefCell<Cached> = const { RefCell::new(None) };
    }
    let now = SystemTime::now();
    let now_sec = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let secs = max_age.as_secs();
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if let Some((s, t, cc, exp)) = c.as_ref() {
            if *s == secs && *t == now_sec {
                return (cc.clone(), exp.clone());
            }
        }
        let cc = HeaderValue::from_str(&format!("public, max-age={secs}, immutable"))
            .unwrap_or_else(|_| HeaderValue::from_static("public, immutable"));
        let exp = HeaderValue::from_str(&httpdate::fmt_http_date(now + max_age))
            .unwrap_or_else(|_| HeaderValue::from_static("0"));
        *c = Some((secs, now_sec, cc.clone(), exp.clone()));
        (cc, exp)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RouteMode;

    fn route() -> Route {
        Route {
            prefix: "/media/".into(),
            mode: RouteMode::Cache,
            default_ttl: Duration::from_secs(100),
            stale_if_error: Duration::from_secs(10),
            stale_while_revalidate: Duration::ZERO,
            client_max_age: None,
            cache_key_query: crate::config::KeyQuery::All,
            signed: None,
        }
    }

    fn resp(headers: &[(&str, &str)]) -> ResponseHeader {
        let mut r = ResponseHeader::build(200, None).unwrap(); // unwrap: test-only
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap(); // unwrap: test-only
        }
        r
    }

    fn req(auth: bool) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/media/x", None).unwrap(); // unwrap: test-only
        if auth {
            r.insert_header("authorization", "Bearer x").unwrap(); // unwrap: test-only
        }
        r
    }

    #[test]
    fn default_ttl_only_without_origin_freshness() {
        let RespCacheable::Cacheable(m) = response_cacheable(&route(), &req(false), &resp(&[]))
        else {
            panic!("should cache")
        };
        let ttl = m.fresh_until().duration_since(SystemTime::now()).unwrap(); // unwrap: test-only
        assert!(ttl > Duration::from_secs(90) && ttl <= Duration::from_secs(100));
        let RespCacheable::Cacheable(m) = response_cacheable(
            &route(),
            &req(false),
            &resp(&[("cache-control", "public, max-age=5")]),
        ) else {
            panic!("should cache")
        };
        assert!(m.fresh_until() <= SystemTime::now() + Duration::from_secs(5));
    }

    #[test]
    fn private_no_store_cookie_auth_not_stored() {
        for h in [
            ("cache-control", "private, max-age=60"),
            ("cache-control", "no-store"),
            ("set-cookie", "a=b"),
        ] {
            assert!(!response_cacheable(&route(), &req(false), &resp(&[h])).is_cacheable());
        }
        assert!(!response_cacheable(&route(), &req(true), &resp(&[])).is_cacheable());
        assert!(response_cacheable(
            &route(),
            &req(true),
            &resp(&[("cache-control", "public, max-age=60")])
        )
        .is_cacheable());
    }
}
