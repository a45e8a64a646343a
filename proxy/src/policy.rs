//! Cache policy: which requests may use the cache, which responses are stored and for how
//! long, and what the client sees in `Cache-Control`/`Expires`/`X-Cache-Status`.
//!
//! Freshness follows the origin (RFC 9111: `s-maxage`, `max-age`, then `Expires − Date`,
//! with the response's age counted, see [`crate::rfc`]); the route's `default_ttl` applies
//! only when the origin gives none (nginx `proxy_cache_valid`). Never stored: `private`,
//! `no-store`, `Set-Cookie`, `Vary: *`, responses to requests with `Authorization` unless the
//! response allows it, and statuses other than 200 unless the route opts in
//! ([`response_cacheable_at`]).
//!
//! Also the request-side rules the edge enforces before anything is looked up: which unsafe
//! responses invalidate the stored URL (RFC 9111 §4.4), the `Host` an HTTP/1.1 request must
//! carry (RFC 9112 §3.2), how a `Range` header is judged (RFC 9110 §14), and the path a
//! `deny` route is matched against, and the URL a request is cached under ([`cache_key_url`]).
//! [`client_facing`] sets what every response tells the client; the fast hit path
//! ([`crate::hit`]) and pingora's `response_filter` both call it, so a direct hit and a
//! pingora-path hit of the same object carry the same headers.

use crate::cache_status::CacheStatus;
use crate::config::{KeyQuery, Route, RouteMode};
use crate::rfc::directives;
use crate::rfc::freshness::{self, Exchange};
use crate::signing;
use http::{header, HeaderValue, Method};
use pingora::cache::cache_control::InterpretCacheControl;
use pingora::cache::filters::calculate_serve_stale_durations;
use pingora::cache::{CacheMeta, CacheMetaDefaults, CachePhase, NoCacheReason, RespCacheable};
use pingora::http::{RequestHeader, ResponseHeader};
use std::borrow::Cow;
use std::cell::RefCell;
use std::time::{Duration, SystemTime};

/// Whether a request may be answered from / stored into the cache at all.
pub fn request_cacheable(req: &RequestHeader) -> bool {
    matches!(req.method, Method::GET | Method::HEAD)
}

/// Methods that may change the resource and therefore invalidate the stored URL: every
/// method not known to be safe (RFC 9111 §4.4, [`crate::rfc::invalidation::unsafe_method`]).
pub fn invalidates(method: &Method) -> bool {
    crate::rfc::invalidation::unsafe_method(method)
}

/// Whether the origin's answer to an unsafe request invalidates the stored URL: only a
/// non-error one (RFC 9111 §4.4: 2xx or 3xx). A 405, a 5xx or no answer at all leaves the
/// stored copy alone, so an anonymous POST cannot evict what it could not change.
pub fn invalidating_status(status: http::StatusCode) -> bool {
    status.is_success() || status.is_redirection()
}

/// Whether an HTTP/1.1 request carries exactly one valid `Host` (RFC 9112 §3.2: a server
/// MUST answer 400 to a request without one, with more than one, or with an invalid value).
/// An empty value is valid (a target URI without authority). Other versions: always true
/// (HTTP/1.0 may omit it; HTTP/2 carries `:authority`).
pub fn host_valid(req: &RequestHeader) -> bool {
    if req.version != http::Version::HTTP_11 {
        return true;
    }
    let mut hosts = req.headers.get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (Some(h), None) => {
            // uri-host [":" port]: an authority without userinfo.
            h.is_empty()
                || (!h.as_bytes().contains(&b'@')
                    && http::uri::Authority::try_from(h.as_bytes()).is_ok())
        }
        _ => false,
    }
}

/// How a `Range` header applies to a stored representation of `len` bytes (RFC 9110 §14).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeDecision {
    /// Not a byte-range request we act on (other unit, or not valid range syntax such as
    /// `bytes=10-5`): the header is ignored and the full 200 goes out (§14.2 allows it).
    Ignore,
    /// Valid syntax, but no range overlaps the representation (`bytes=-0`, a first
    /// position at or past the end, even one overflowing u64): 416 with `bytes */len`.
    Unsatisfiable,
    /// The satisfiable ranges, each clamped to the representation, as a `Range` value
    /// pingora's range filter serves exactly (inclusive `first-last` pairs).
    Satisfiable(String),
}

/// Judge the `Range` value `range` against a representation of `len` bytes.
///
/// Syntax (RFC 9110 §14.1.1): `bytes=` then comma-separated `first-[last]` or `-suffix`,
/// decimal digits only, optional whitespace around each. An int-range whose last position
/// is below its first is invalid syntax, which makes the whole header ignored. Numbers too
/// large for u64 saturate: a first position that large is past any end (unsatisfiable), a
/// last position that large is clamped to the end like any other.
pub fn range_decision(range: &[u8], len: u64) -> RangeDecision {
    fn number(s: &str) -> Option<u64> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(s.parse::<u64>().unwrap_or(u64::MAX))
    }
    let Ok(text) = std::str::from_utf8(range) else {
        return RangeDecision::Ignore;
    };
    let Some((unit, set)) = text.split_once('=') else {
        return RangeDecision::Ignore;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return RangeDecision::Ignore;
    }
    let mut satisfiable = Vec::new();
    let mut any = false;
    for spec in set.split(',') {
        let spec = spec.trim_matches(|c| c == ' ' || c == '\t');
        if spec.is_empty() {
            // Empty list elements are allowed by the list syntax (RFC 9110 §5.6.1).
            continue;
        }
        any = true;
        let Some((first, last)) = spec.split_once('-') else {
            return RangeDecision::Ignore;
        };
        let range = if first.is_empty() {
            let Some(suffix) = number(last) else {
                return RangeDecision::Ignore;
            };
            // A zero-length suffix selects nothing (§14.1.3: satisfiable only if non-zero).
            (suffix > 0 && len > 0).then(|| (len.saturating_sub(suffix), len - 1))
        } else {
            let Some(first) = number(first) else {
                return RangeDecision::Ignore;
            };
            let last = if last.is_empty() {
                None
            } else {
                match number(last) {
                    Some(l) if l < first => return RangeDecision::Ignore,
                    Some(l) => Some(l),
                    None => return RangeDecision::Ignore,
                }
            };
            (first < len).then(|| (first, last.unwrap_or(u64::MAX).min(len - 1)))
        };
        satisfiable.extend(range);
    }
    if !any {
        return RangeDecision::Ignore;
    }
    if satisfiable.is_empty() {
        return RangeDecision::Unsatisfiable;
    }
    let specs: Vec<String> = satisfiable
        .iter()
        .map(|(a, b)| format!("{a}-{b}"))
        .collect();
    RangeDecision::Satisfiable(format!("bytes={}", specs.join(",")))
}

/// Whether [`normalized_path`] could return something other than `path` itself: only a
/// percent-escape, an empty segment (`//`), a `.`/`..` segment (always after a `/`) or a
/// path not starting with `/` can change it. Most media paths contain a `.` (`img.jpg`)
/// but none of these, and skip the allocation on every request.
pub fn needs_normalizing(path: &str) -> bool {
    !path.starts_with('/') || path.contains('%') || path.contains("//") || path.contains("/.")
}

/// `path` as the origin's router will see it, for matching `deny` routes: percent-escapes of
/// unreserved characters decoded, repeated `/` collapsed, `.` and `..` segments resolved.
/// So `/%61dmin/queues`, `//metrics` or `/media/../admin/` cannot walk around a deny.
pub fn normalized_path(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                let c = (h * 16 + l) as u8;
                if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') {
                    decoded.push(c);
                    i += 3;
                    continue;
                }
            }
        }
        decoded.push(bytes[i]);
        i += 1;
    }
    let decoded = String::from_utf8_lossy(&decoded);
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = decoded.split('/').collect();
    let last = segments.len().saturating_sub(1);
    for (n, seg) in segments.iter().enumerate() {
        match *seg {
            "" | "." if n != last => {}
            ".." => {
                out.pop();
            }
            "." => out.push(""),
            s => out.push(s),
        }
    }
    let mut path = String::with_capacity(decoded.len() + 1);
    for seg in &out {
        path.push('/');
        path.push_str(seg);
    }
    if path.is_empty() {
        path.push('/');
    }
    path
}

/// Decide whether `resp` (to `req`) is stored, and build its [`CacheMeta`], as if it had
/// just arrived with no delay (see [`response_cacheable_at`]).
pub fn response_cacheable(
    route: &Route,
    req: &RequestHeader,
    resp: &ResponseHeader,
) -> RespCacheable {
    let now = SystemTime::now();
    let ex = Exchange {
        request_time: now,
        response_time: now,
    };
    response_cacheable_at(route, req, resp, ex)
}

/// Decide whether `resp` (to `req`, exchanged at `ex`) is stored, and build its
/// [`CacheMeta`] (RFC 9111 §3, §4.2, §5.2.2):
///
/// - never stored: interim, partial and 304 responses, `Vary: *`, `private`, `no-store`
///   (unless `must-understand` and the status is understood), a status not understood with
///   `must-understand`, `Set-Cookie` (an edge choice: per-user state), and responses to
///   requests with `Authorization` unless `public`, `s-maxage` or `must-revalidate` (§3.5);
/// - freshness: explicit (`s-maxage`, `max-age`, `Expires − Date`, see
///   [`freshness::lifetime`]), else the route's heuristic for heuristically cacheable
///   statuses, else the route's `default_ttl` for a 200; a non-200 is stored only with the
///   route's `store_any_status` and explicit freshness, or a heuristic one;
/// - age: the meta's timestamp is the response's epoch, so `Age` is the RFC's current age;
/// - `must-revalidate`, `proxy-revalidate`, `s-maxage` and `no-cache` forbid serving stale;
/// - `private="f"` / `no-cache="f"` fields are dropped from the stored header.
pub fn response_cacheable_at(
    route: &Route,
    req: &RequestHeader,
    resp: &ResponseHeader,
    ex: Exchange,
) -> RespCacheable {
    use RespCacheable::{Cacheable, Uncacheable};
    let no = Uncacheable(NoCacheReason::OriginNotCache);
    let status = resp.status.as_u16();
    if !directives::final_complete(status) {
        return no;
    }
    if resp.headers.contains_key(header::SET_COOKIE) {
        return no;
    }
    // `Vary: *` never matches a later request (RFC 9111 §4.1): storing it is pointless.
    if crate::rfc::vary::is_star(&resp.headers) {
        return no;
    }
    let sem = &route.semantics;
    // RFC 9213: a targeted field present replaces Cache-Control and Expires for this edge.
    let (cc, field) = sem.cache_control(resp);
    let targeted = field != header::CACHE_CONTROL;
    let must_understand = cc.as_ref().is_some_and(|c| c.has_key("must-understand"));
    if must_understand && !directives::understood(status) {
        return no;
    }
    if cc
        .as_ref()
        .is_some_and(|c| c.private() || (c.no_store() && !must_understand))
    {
        return no;
    }
    if req.headers.contains_key(header::AUTHORIZATION)
        && !cc
            .as_ref()
            .is_some_and(|c| c.allow_caching_authorized_req())
    {
        return no;
    }
    let mut without_expires;
    let freshness_headers = if targeted {
        without_expires = resp.headers.clone();
        without_expires.remove(header::EXPIRES);
        &without_expires
    } else {
        &resp.headers
    };
    let lifetime = match freshness::lifetime(cc.as_ref(), field, freshness_headers, ex) {
        Some(l) if status == 200 || sem.store_any_status => l,
        Some(_) => return no,
        None => match sem
            .heuristic
            .filter(|_| directives::heuristically_cacheable(status))
            .and_then(|h| freshness::heuristic(&resp.headers, ex, h))
        {
            Some(l) => l,
            None if status == 200 => route.default_ttl,
            None => return no,
        },
    };
    let age = freshness::initial_age(&resp.headers, ex);
    let (epoch, fresh_until) = freshness::meta_times(age, lifetime, ex);
    let secs = |d: Duration| u32::try_from(d.as_secs()).unwrap_or(u32::MAX);
    let defaults = CacheMetaDefaults::new(
        |_| None,
        secs(route.stale_while_revalidate),
        secs(route.stale_if_error),
    );
    let (swr, sie) = if cc.as_ref().is_some_and(|c| c.no_cache()) {
        // Every use needs a successful validation (§5.2.2.4): stale never goes out.
        (0, 0)
    } else {
        calculate_serve_stale_durations(cc.as_ref(), &defaults)
    };
    let mut stored = resp.clone();
    if let Some(c) = &cc {
        c.strip_private_headers(&mut stored);
    }
    sem.strip_targeted(&mut stored);
    Cacheable(CacheMeta::new(fresh_until, epoch, swr, sie, stored))
}

/// The `X-Cache-Status` of a request in cache `phase`.
pub fn cache_status(phase: CachePhase) -> crate::cache_status::CacheStatus {
    crate::cache_status::CacheStatus::of_phase(phase)
}

/// What every response tells the client, whichever path wrote it: `X-Cache-Status`
/// (`status`), no targeted cache-control fields on cache routes (they are for this edge
/// only, RFC 9213; stored headers are already without them), and the client freshness on
/// routed requests: a verified signed URL (`signed_exp`) is private until it expires
/// (whatever the route's public max-age says); otherwise the route's client max-age.
pub fn client_facing(
    resp: &mut ResponseHeader,
    status: CacheStatus,
    route: Option<&Route>,
    signed_exp: Option<u64>,
) -> pingora::Result<()> {
    resp.insert_header("x-cache-status", status.as_str())?;
    let Some(route) = route else {
        return Ok(());
    };
    if route.mode == RouteMode::Cache {
        route.semantics.strip_targeted(resp);
    }
    match (signed_exp, route.client_max_age) {
        (Some(exp), _) => signing::apply_private_until(resp, exp, signing::unix_now()),
        (None, Some(max_age)) => apply_client_max_age(resp, max_age),
        (None, None) => Ok(()),
    }
}

/// The URL a request is cached under: its path plus the query parameters the route keeps
/// (`cache_key_query`). Purges name the same form.
pub fn cache_key_url<'a>(route: Option<&Route>, path_and_query: &'a str) -> Cow<'a, str> {
    let keep = route.map_or(&KeyQuery::All, |r| &r.cache_key_query);
    let Some((path, query)) = path_and_query.split_once('?') else {
        return Cow::Borrowed(path_and_query);
    };
    match keep {
        KeyQuery::All => Cow::Borrowed(path_and_query),
        KeyQuery::None => Cow::Borrowed(path),
        KeyQuery::Keep(names) => {
            let kept: Vec<&str> = query
                .split('&')
                .filter(|p| {
                    let name = p.split_once('=').map_or(*p, |(n, _)| n);
                    names.iter().any(|k| k == name)
                })
                .collect();
            if kept.is_empty() {
                Cow::Borrowed(path)
            } else {
                Cow::Owned(format!("{path}?{}", kept.join("&")))
            }
        }
    }
}

/// The path and query of `req` (`/` when it has none), what [`cache_key_url`] starts from.
pub fn path_and_query(req: &RequestHeader) -> &str {
    req.uri.path_and_query().map_or("/", |p| p.as_str())
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
            semantics: Default::default(),
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
    fn range_decisions_follow_rfc_9110() {
        use RangeDecision::*;
        let d = |r: &str| range_decision(r.as_bytes(), 8192);
        assert_eq!(d("bytes=-0"), Unsatisfiable);
        assert_eq!(d("bytes=10-5"), Ignore);
        assert_eq!(d("bytes=99999999999999999999-"), Unsatisfiable);
        assert_eq!(d("bytes=8192-"), Unsatisfiable);
        assert_eq!(
            d("bytes=0-99999999999999999999"),
            Satisfiable("bytes=0-8191".into())
        );
        assert_eq!(d("bytes=0-0"), Satisfiable("bytes=0-0".into()));
        assert_eq!(d("bytes=-100"), Satisfiable("bytes=8092-8191".into()));
        assert_eq!(d("bytes=-100000"), Satisfiable("bytes=0-8191".into()));
        assert_eq!(d("bytes=100-"), Satisfiable("bytes=100-8191".into()));
        assert_eq!(d("BYTES= 0-1 , 9000-"), Satisfiable("bytes=0-1".into()));
        assert_eq!(d("bytes=-0,0-1"), Satisfiable("bytes=0-1".into()));
        assert_eq!(d("bytes=a-b"), Ignore);
        assert_eq!(d("bytes=1-2-3"), Ignore);
        assert_eq!(d("bytes=+1-2"), Ignore);
        assert_eq!(d("bytes="), Ignore);
        assert_eq!(d("items=0-1"), Ignore);
        assert_eq!(d("bytes"), Ignore);
        assert_eq!(range_decision(b"bytes=0-", 0), Unsatisfiable);
        assert_eq!(range_decision(b"bytes=-5", 0), Unsatisfiable);
    }

    #[test]
    fn deny_paths_are_normalized() {
        for (raw, want) in [
            ("/metrics", "/metrics"),
            ("//metrics", "/metrics"),
            ("/%61dmin/queues", "/admin/queues"),
            ("/media/../admin/queues", "/admin/queues"),
            ("/./readyz", "/readyz"),
            ("/../../metrics", "/metrics"),
            ("/admin/", "/admin/"),
            ("/media/a%2Fb", "/media/a%2Fb"),
            ("/", "/"),
            ("", "/"),
            ("/api/x/.", "/api/x/"),
        ] {
            assert_eq!(normalized_path(raw), want, "{raw}");
            assert!(needs_normalizing(raw) || raw == want, "{raw}");
        }
        for plain in [
            "/media/img-1k.jpg",
            "/a.b/c.d",
            "/admin/",
            "/x.",
            "/.well-known",
        ] {
            assert_eq!(
                needs_normalizing(plain),
                plain.contains("/."),
                "{plain}: only dot segments and escapes need it"
            );
            if !needs_normalizing(plain) {
                assert_eq!(normalized_path(plain), plain);
            }
        }
    }

    #[test]
    fn host_rules() {
        let with = |hosts: &[&[u8]], v: http::Version| {
            let mut r = RequestHeader::build("GET", b"/", None).unwrap(); // unwrap: test-only
            r.set_version(v);
            for h in hosts {
                let value = http::HeaderValue::from_bytes(h).unwrap(); // unwrap: test-only
                r.append_header("host", value).unwrap(); // unwrap: test-only
            }
            host_valid(&r)
        };
        use http::Version;
        assert!(!with(&[], Version::HTTP_11));
        assert!(with(&[b"edge"], Version::HTTP_11));
        assert!(with(&[b"edge:8080"], Version::HTTP_11));
        assert!(with(&[b""], Version::HTTP_11));
        assert!(!with(&[b"a", b"b"], Version::HTTP_11));
        assert!(!with(&[b"a b"], Version::HTTP_11));
        assert!(!with(&[b"a/b"], Version::HTTP_11));
        assert!(!with(&[b"user@edge"], Version::HTTP_11));
        assert!(with(&[], Version::HTTP_10));
        assert!(invalidating_status(http::StatusCode::NO_CONTENT));
        assert!(invalidating_status(http::StatusCode::SEE_OTHER));
        assert!(!invalidating_status(http::StatusCode::METHOD_NOT_ALLOWED));
        assert!(!invalidating_status(http::StatusCode::BAD_GATEWAY));
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
    fn interim_partial_and_not_modified_never_stored() {
        let mut r = route();
        r.semantics.store_any_status = true;
        for status in [100, 103, 206, 304] {
            let mut resp = ResponseHeader::build(status, None).unwrap(); // unwrap: test-only
            resp.append_header("cache-control", "max-age=600").unwrap(); // unwrap: test-only
            assert!(
                !response_cacheable(&r, &req(false), &resp).is_cacheable(),
                "{status}"
            );
        }
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
