//! The `ProxyHttp` implementation: routes requests to the cache or straight to the origin,
//! applies [`crate::policy`], tags every response with `X-Cache-Status`, and records metrics.
//! Routes with `signed_urls` check the URL first ([`crate::signing`]); a route's
//! `cache_key_query` decides which query parameters are part of the cache key.
//! `/healthz` is answered by the edge itself (container health checks). Fresh memory-tier
//! hits without `Range` are written from `request_filter` (`Edge::serve_memory_hit`), the
//! same response pingora's cache hit path builds, without its per-request cache machinery.

use crate::access_log::{AccessLog, Record, RequestId, Target};
use crate::cache_status::CacheStatus;
use crate::config::{EdgeConfig, KeyQuery, Route, RouteMode};
use crate::connection;
use crate::direct::{self, Body, BodyFile, HeadKind};
use crate::metrics::{ClientClosedPhase, Tier, METRICS};
use crate::policy;
use crate::rfc;
use crate::signing;
use crate::storage::memory::HotMeta;
use crate::storage::{cache_key, FreshHit, TieredStorage};
use async_trait::async_trait;
use bytes::{BufMut, Bytes, BytesMut};
use pingora::cache::cache_control::CacheControl;
use pingora::cache::key::{CacheKey, HashBinary};
use pingora::cache::lock::CacheKeyLockImpl;
use pingora::cache::{CacheMeta, CacheOptionOverrides, ForcedFreshness, HitHandler, RespCacheable};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::lb::selection::RoundRobin;
use pingora::lb::{Backend, LoadBalancer};
use pingora::prelude::HttpPeer;
use pingora::protocols::http::conditional_filter::{not_modified_filter, to_304};
use pingora::protocols::http::date::get_cached_date;
use pingora::proxy::{
    range_header_filter, FailToProxy, ProxyHttp, ProxyWarnLogContext, RangeType, Session,
};
use pingora::{Error, ErrorSource, ErrorType, Result};
use std::borrow::Cow;
use std::collections::HashMap;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Shared, process-lifetime state the cache hooks need as `'static` references.
pub struct Edge {
    /// Validated configuration.
    pub config: Arc<EdgeConfig>,
    /// Tiered storage.
    pub storage: &'static TieredStorage,
    /// Cache lock collapsing concurrent misses.
    pub lock: &'static CacheKeyLockImpl,
    /// Origin peers with health checks.
    pub upstreams: Arc<LoadBalancer<RoundRobin>>,
    /// `config.routes` behind `Arc`s so each request takes a cheap reference.
    routes: Vec<Arc<Route>>,
    /// Whether any route is a `deny` route (most requests then skip the check).
    any_deny: bool,
    /// What requests saw of each origin peer.
    observed: Observed,
    /// The access log, `None` when `[access_log]` is off.
    pub access_log: Option<AccessLog>,
}

impl Edge {
    /// Assemble the proxy logic.
    pub fn new(
        config: Arc<EdgeConfig>,
        storage: &'static TieredStorage,
        lock: &'static CacheKeyLockImpl,
        upstreams: Arc<LoadBalancer<RoundRobin>>,
    ) -> Self {
        let routes: Vec<Arc<Route>> = config.routes.iter().cloned().map(Arc::new).collect();
        let any_deny = routes.iter().any(|r| r.mode == RouteMode::Deny);
        let observed = Observed::new(config.upstream.health_check_interval);
        Edge {
            config,
            storage,
            lock,
            upstreams,
            routes,
            any_deny,
            observed,
            access_log: None,
        }
    }

    fn route(&self, path: &str) -> Option<Arc<Route>> {
        self.routes
            .iter()
            .find(|r| path.starts_with(&r.prefix))
            .cloned()
    }

    /// Whether `path`, as the origin will resolve it, falls under a `deny` route. Checked on
    /// the normalized path so `//metrics` or `/%61dmin/` cannot walk around a deny; only
    /// paths that could need it are normalized.
    fn denied(&self, path: &str) -> bool {
        let deny = |p: &str| {
            self.routes
                .iter()
                .find(|r| p.starts_with(&r.prefix))
                .is_some_and(|r| r.mode == RouteMode::Deny)
        };
        if !self.any_deny {
            return false;
        }
        if policy::needs_normalizing(path) {
            deny(&policy::normalized_path(path))
        } else {
            deny(path)
        }
    }

    /// Remove the stored response for this request's cache key, every variant the key
    /// covers (the same key the cache stores it under).
    async fn invalidate(&self, session: &Session, ctx: &mut EdgeCtx) {
        match self.cache_key_callback(session, ctx) {
            Ok(key) => {
                self.storage.purge_key(&key).await;
            }
            Err(e) => tracing::warn!(error = %e, "no cache key to invalidate"),
        }
    }
}

/// What a background fill's subrequest carries for its parent (see
/// [`Edge::fill_in_background`]): dropped or sent once the subrequest knows whether it writes
/// the cache or reads it.
struct FillRoleKnown(Option<tokio::sync::oneshot::Sender<()>>);

/// Tell a background fill's parent that this subrequest is past its cache lookup.
fn background_fill_role_known(session: &mut Session) {
    let known = session
        .subrequest_ctx
        .as_mut()
        .and_then(|c| c.user_ctx_mut())
        .and_then(|u| u.downcast_mut::<FillRoleKnown>())
        .and_then(|k| k.0.take());
    if let Some(tx) = known {
        let _ = tx.send(());
    }
}

/// Whether this session is a background fill's subrequest.
fn is_background_fill(session: &Session) -> bool {
    session
        .subrequest_ctx
        .as_ref()
        .and_then(|c| c.user_ctx())
        .is_some_and(|u| u.is::<FillRoleKnown>())
}

impl Edge {
    /// An HTTP/2 cold miss on a cache route: run the fill as a pingora subrequest whose
    /// output nobody paces, and let this request read it like any other reader of a fill.
    ///
    /// Why: pingora's HTTP/2 downstream writes wait for the client's flow-control window
    /// inside its proxy loop (HTTP/2 sessions have no cancel-safe proxy tasks, unlike the
    /// HTTP/1 ones `request_cache_filter` enables), so a filling HTTP/2 client that reads
    /// slowly would stop the origin read, and with it every reader of the fill. The
    /// subrequest is a whole request of its own through this proxy (same URL and headers,
    /// without `Range` and conditionals, so it fetches the full object); its output is
    /// drained. This request waits until the subrequest has taken the cache lock (or found
    /// the object), then looks the key up: it waits on that lock and reads the fill at its
    /// own pace, so the origin is still asked once. (A response that turns out not to be
    /// cacheable is fetched by this request itself; the subrequest stops reading it.)
    /// Waiting is bounded by `cache.lock_wait_timeout_ms`;
    /// anything unusual (no subrequest, a failed one) leaves this request on pingora's
    /// usual path.
    async fn fill_in_background(&self, session: &mut Session, ctx: &mut EdgeCtx) {
        let Some(route) = ctx.route.as_deref() else {
            return;
        };
        let req = session.req_header();
        if session.subrequest_spawner.is_none()
            || route.mode != RouteMode::Cache
            || req.method != http::Method::GET
            || !policy::request_cacheable(req)
        {
            return;
        }
        let Some(host) = req.uri.authority().map(|a| a.as_str().to_owned()) else {
            return;
        };
        let key = cache_key(&cache_key_url(Some(route), path_and_query(session)));
        if self.storage.can_serve(&key) {
            return;
        }
        // The subrequest is built from this request's head in HTTP/1.1 form: the full
        // object, unconditionally, for the same host.
        let own = session.req_header().clone();
        let sub_head = session.req_header_mut();
        sub_head.set_version(http::Version::HTTP_11);
        for h in [
            http::header::RANGE,
            http::header::IF_RANGE,
            http::header::IF_NONE_MATCH,
            http::header::IF_MODIFIED_SINCE,
        ] {
            sub_head.remove_header(&h);
        }
        if sub_head.insert_header(http::header::HOST, host).is_err() {
            *session.req_header_mut() = own;
            return;
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let sub_ctx = pingora::proxy::subrequest::Ctx::builder()
            .user_ctx(Box::new(FillRoleKnown(Some(tx))))
            .build();
        let prepared = session
            .subrequest_spawner
            .as_ref()
            .map(|s| s.create_subrequest(session.as_downstream(), sub_ctx));
        *session.req_header_mut() = own;
        let Some((sub, handle)) = prepared else {
            return;
        };
        handle.drain_tasks();
        tokio::spawn(sub.run());
        ctx.filled_in_background = true;
        // Err: the subrequest ended first or never got that far; either way, go on.
        let _ = tokio::time::timeout(self.config.cache.lock_wait_timeout, rx).await;
    }
}

/// Most ranges served from one request (pingora's default).
const MAX_RANGES: Option<usize> = Some(200);

/// Answer `code` with an empty body from the edge itself (nothing reaches the origin).
async fn respond_empty(session: &mut Session, code: u16) -> Result<()> {
    let mut resp = ResponseHeader::build(code, Some(3))?;
    resp.insert_header("content-length", "0")?;
    resp.insert_header("cache-control", "no-store")?;
    resp.insert_header("x-cache-status", CacheStatus::Bypass.as_str())?;
    session.write_response_header(Box::new(resp), true).await
}

/// What the edge itself saw of each origin peer: it answered, or a connection to it failed.
/// Such an observation overrides the health check's verdict until the next check has run
/// (one `upstream.health_check_interval_secs`), so a peer that answers is healthy again at
/// once and a peer that refuses is skipped at once. Only touched on the origin path.
struct Observed {
    valid_for: Duration,
    seen: Mutex<HashMap<Backend, (bool, Instant)>>,
}

impl Observed {
    fn new(valid_for: Duration) -> Self {
        Observed {
            valid_for,
            seen: Mutex::new(HashMap::new()),
        }
    }

    fn record(&self, b: &Backend, answered: bool) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        match seen.get_mut(b) {
            Some(entry) => *entry = (answered, Instant::now()),
            None => {
                seen.insert(b.clone(), (answered, Instant::now()));
            }
        }
    }

    /// What a request saw of `b` since the last health check could have run.
    fn seen(&self, b: &Backend) -> Option<bool> {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        match seen.get(b) {
            Some((answered, at)) if at.elapsed() < self.valid_for => Some(*answered),
            _ => None,
        }
    }
}

impl Edge {
    /// Fast path for the hottest case: a fresh cached object on a cache route, asked without
    /// `Range`/`If-Range`. Builds the same response pingora's cache hit path would (stored
    /// header, `Age`, `Accept-Ranges`, 304 for matching conditionals via pingora's own filter,
    /// HEAD without body, `X-Cache-Status: HIT`, client max-age) and writes it itself,
    /// skipping the cache state machine (key, lookup, meta rebuild, hit handler).
    ///
    /// Memory hits are served this way on every connection: straight to the socket on
    /// plain-TCP HTTP/1.1 keep-alive (see [`crate::direct`]), through pingora's session
    /// otherwise. On such direct connections a fresh disk-tier object is served too: small
    /// ones are promoted to memory first, large ones go out by sendfile from their file.
    /// Returns false (nothing written) when anything else should decide.
    async fn serve_memory_hit(&self, session: &mut Session, ctx: &mut EdgeCtx) -> Result<bool> {
        let Some(route) = ctx.route.clone() else {
            return Ok(false);
        };
        let req = session.req_header();
        if route.mode != RouteMode::Cache
            || !policy::request_cacheable(req)
            || req.headers.contains_key(http::header::RANGE)
            || req.headers.contains_key(http::header::IF_RANGE)
            || (route.semantics.request_directives && rfc::request::any(req))
        {
            return Ok(false);
        }
        let fd = direct::downstream_fd(session);
        // Disk objects only where they can be sent from their file (a direct connection).
        let key = cache_key_url(Some(&route), path_and_query(session));
        let found = self
            .storage
            .fresh_hit(&key, SystemTime::now(), fd.is_some())
            .await;
        // A disk lookup may have run on the blocking pool: Age and Date follow the clock now.
        let now = SystemTime::now();
        let entry = match (found, fd) {
            (Some(FreshHit::Memory(e)), _) => e,
            (Some(FreshHit::File(found)), Some(fd)) => {
                let (hot, file) = &*found;
                return Ok(self
                    .send_disk_hit(session, ctx, fd, &route, now, hot, file)
                    .await);
            }
            _ => return Ok(false),
        };
        let Some((not_modified, header_only)) =
            hit_shape(session, &entry.hot, entry.body.len() as u64)
        else {
            return Ok(false);
        };

        if let Some(fd) = fd {
            let kind = if not_modified {
                HeadKind::NotModified
            } else {
                HeadKind::Ok
            };
            let head = match ctx.signed_exp {
                // Cache-Control depends on this URL's expiry: built for this request.
                Some(exp) => hit_header(&entry.hot, &route, Some(exp), now, not_modified)
                    .ok()
                    .and_then(direct_head),
                None => entry.heads.get(kind, now, || {
                    direct_head(hit_header(&entry.hot, &route, None, now, not_modified).ok()?)
                }),
            };
            let Some(head) = head else {
                // Not expected for a stored 200; nothing is written, pingora's path decides.
                return Ok(false);
            };
            ctx.status = CacheStatus::Hit;
            let body = match entry.file.as_deref() {
                _ if header_only => Body::None,
                Some(f) if f.unchanged() => Body::File(f),
                // No kept file, or it changed on disk since it was verified: the verified
                // in-memory bytes go out instead.
                _ => Body::Bytes(&entry.body),
            };
            let status = if not_modified { 304 } else { 200 };
            ctx.direct = Some(write_direct(session, fd, head, body, Tier::Memory, status).await);
            return Ok(true);
        }

        ctx.status = CacheStatus::Hit;
        let header = hit_header(&entry.hot, &route, ctx.signed_exp, now, not_modified)?;
        session
            .write_response_header(header, header_only)
            .await
            .map_err(|e| e.into_down())?;
        if !header_only {
            METRICS.served(Tier::Memory, entry.body.len() as u64);
            session
                .write_response_body(Some(entry.body.clone()), true)
                .await
                .map_err(|e| e.into_down())?;
        }
        Ok(true)
    }

    /// A large fresh disk-tier object, written directly: head built for this request, body
    /// by sendfile from the verified entry file. False (nothing written) when the stored
    /// response is not the plain 200 this path mirrors.
    #[allow(clippy::too_many_arguments)]
    async fn send_disk_hit(
        &self,
        session: &mut Session,
        ctx: &mut EdgeCtx,
        fd: RawFd,
        route: &Route,
        now: SystemTime,
        hot: &HotMeta,
        file: &BodyFile,
    ) -> bool {
        let Some((not_modified, header_only)) = hit_shape(session, hot, file.len()) else {
            return false;
        };
        let Some(head) = hit_header(hot, route, ctx.signed_exp, now, not_modified)
            .ok()
            .and_then(direct_head)
        else {
            return false;
        };
        ctx.status = CacheStatus::Hit;
        let body = if header_only {
            Body::None
        } else {
            Body::File(file)
        };
        let status = if not_modified { 304 } else { 200 };
        ctx.direct = Some(write_direct(session, fd, head, body, Tier::Disk, status).await);
        true
    }
}

/// For a stored response a hit fast path can serve (a 200 whose `Content-Length` is
/// `body_len`, the bytes about to be sent): (`not_modified`, `header_only`) for this
/// request; `None` for anything else. The direct writes trust that header for framing, as
/// pingora's body writer would not, so a mismatch falls back to pingora's path.
fn hit_shape(session: &Session, hot: &HotMeta, body_len: u64) -> Option<(bool, bool)> {
    let stored = hot.header();
    let declared = stored
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if stored.status != http::StatusCode::OK || declared != Some(body_len) {
        return None;
    }
    // The primary slot holds one variant; another one is pingora's lookup to find.
    if rfc::vary::variance(&stored.headers, &session.req_header().headers) != hot.variance() {
        return None;
    }
    // Only ETag / Last-Modified of the stored header take part in the match.
    let not_modified = not_modified_filter(session.req_header(), stored);
    let header_only = not_modified || session.req_header().method == http::Method::HEAD;
    Some((not_modified, header_only))
}

/// The response header of a cache hit, as pingora's cache hit path builds it: the stored
/// header with `Age`, HTTP/1.1, `Accept-Ranges` (or the 304 form), `X-Cache-Status: HIT` and
/// the client freshness ([`client_freshness`]).
fn hit_header(
    hot: &HotMeta,
    route: &Route,
    signed_exp: Option<u64>,
    now: SystemTime,
    not_modified: bool,
) -> Result<Box<ResponseHeader>> {
    let mut header = Box::new(hot.header().clone());
    header.insert_header(http::header::AGE, hot.age(now).as_secs())?;
    header.set_version(http::Version::HTTP_11);
    if not_modified {
        to_304(&mut header);
    } else {
        header.insert_header(http::header::ACCEPT_RANGES, "bytes")?;
    }
    header.insert_header("x-cache-status", CacheStatus::Hit.as_str())?;
    client_freshness(&mut header, route, signed_exp)?;
    Ok(header)
}

/// What the browser is told about freshness: a verified signed URL is private until it
/// expires (whatever the route's public max-age says); otherwise the route's client max-age.
fn client_freshness(
    resp: &mut ResponseHeader,
    route: &Route,
    signed_exp: Option<u64>,
) -> Result<()> {
    match (signed_exp, route.client_max_age) {
        (Some(exp), _) => signing::apply_private_until(resp, exp, signing::unix_now()),
        (None, Some(max_age)) => policy::apply_client_max_age(resp, max_age),
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

/// `header` serialized for a direct write, with the `Date` and `Connection` headers
/// pingora's own header writer adds to every response.
fn direct_head(mut header: Box<ResponseHeader>) -> Option<Bytes> {
    header
        .insert_header(http::header::DATE, get_cached_date())
        .ok()?;
    header
        .insert_header(http::header::CONNECTION, "keep-alive")
        .ok()?;
    let mut head = BytesMut::with_capacity(512);
    head.put_slice(b"HTTP/1.1 ");
    head.put_slice(header.status.as_str().as_bytes());
    head.put_u8(b' ');
    head.put_slice(header.get_reason_phrase().unwrap_or("").as_bytes());
    head.put_slice(b"\r\n");
    header.header_to_h1_wire(&mut head);
    head.put_slice(b"\r\n");
    Some(head.freeze())
}

/// Write `head` and `body` (its bytes counted for `tier`) straight to the socket.
/// Pingora's session saw no response of its own, so it has no body left to finish and
/// reuses the connection; after a failed write the connection is marked not reusable and
/// pingora closes it instead of writing anything more. Returns what went out, for the
/// `logging` hook (pingora's session counted none of it).
async fn write_direct(
    session: &mut Session,
    fd: RawFd,
    head: Bytes,
    body: Body<'_>,
    tier: Tier,
    status: u16,
) -> DirectSent {
    let (len, sendfile) = (body.size(), matches!(body, Body::File(_)));
    let head_len = head.len() as u64;
    let written = match direct::send_response(fd, &head, body).await {
        Ok(n) => {
            METRICS.served(tier, len);
            if sendfile {
                METRICS.sendfile_responses.inc();
            }
            n
        }
        Err((e, written)) => {
            tracing::debug!(error = %e, written, "direct write failed, closing connection");
            session.set_keepalive(None);
            written
        }
    };
    DirectSent {
        status,
        bytes: written,
        body_bytes: written.saturating_sub(head_len),
    }
}

/// A response the direct path wrote to the socket itself.
#[derive(Debug, Clone, Copy)]
struct DirectSent {
    status: u16,
    /// Head and body bytes written.
    bytes: u64,
    /// Body bytes written.
    body_bytes: u64,
}

/// Whether `e` is a connection closing or being reset.
fn is_close(e: &Error) -> bool {
    matches!(
        e.etype(),
        ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError
    )
}

/// Whether `e` is the client closing or resetting its connection (normal client behaviour).
fn client_went_away(e: &Error) -> bool {
    e.esource() == &ErrorSource::Downstream && is_close(e)
}

/// Bytes of `h` on the HTTP/1.1 wire (status line, headers, blank line), without
/// serializing it.
fn head_wire_len(h: &ResponseHeader) -> u64 {
    let status_line = 9 + 3 + 1 + h.get_reason_phrase().map_or(0, str::len) + 2;
    let fields: usize = h
        .headers
        .iter()
        .map(|(k, v)| k.as_str().len() + 2 + v.len() + 2)
        .sum();
    (status_line + fields + 2) as u64
}

/// Per-request state.
#[derive(Default)]
pub struct EdgeCtx {
    route: Option<Arc<Route>>,
    upstream_start: Option<Instant>,
    status: CacheStatus,
    cache_enabled: bool,
    /// An unsafe method: the stored URL is invalidated once the origin answers 2xx/3xx.
    invalidate: bool,
    /// The origin peer this request was sent to.
    backend: Option<Backend>,
    /// `exp` of a verified signed URL (routes with `signed_urls`).
    signed_exp: Option<u64>,
    /// When the request went upstream (RFC 9111 §4.2.3 `request_time`).
    request_time: Option<SystemTime>,
    /// The header fields of the origin's 304 to a revalidation, for `response_cache_filter`
    /// to update the stored header with (pingora's merge keeps only a few of them).
    not_modified: Option<http::HeaderMap>,
    /// The request's `Cache-Control` directives, on routes that honor them.
    req_directives: Option<rfc::request::Directives>,
    /// A HEAD revalidating a stale stored response went to the origin as HEAD
    /// ([`rfc::head`]); its answer is never stored as the GET response.
    head_sent: bool,
    /// What the origin's 200 to that HEAD did to the stored response.
    head_outcome: Option<rfc::head::Outcome>,
    /// This cold miss's fill runs as a background subrequest this request reads from.
    filled_in_background: bool,
    /// A background fill stopped on purpose: its response is not cached (no error to log).
    fill_dropped: bool,
    /// When the request head had been parsed (pingora makes the ctx right after).
    start: Option<Instant>,
    /// The origin's response status and the time it took (to the end of its body).
    upstream_status: Option<u16>,
    upstream_time: Option<Duration>,
    /// Set when first needed (origin request or access log line).
    request_id: Option<RequestId>,
    /// Set when the direct path wrote the response.
    direct: Option<DirectSent>,
    /// The client closed its connection mid request (set from the `&self` log hooks).
    client_gone: AtomicBool,
}

impl EdgeCtx {
    fn request_id(&mut self, req: &RequestHeader) -> &RequestId {
        self.request_id.get_or_insert_with(|| {
            req.headers
                .get("x-request-id")
                .and_then(RequestId::from_client)
                .unwrap_or_else(RequestId::generate)
        })
    }
}

fn path_and_query(session: &Session) -> &str {
    let uri = &session.req_header().uri;
    uri.path_and_query().map_or("/", |p| p.as_str())
}

/// Whether `resp` (to `req`, exchanged at `ex`) is stored on `route`, and its meta: the
/// rules of [`policy::response_cacheable_at`], with signed routes' own freshness.
fn route_cacheable(
    route: &Route,
    req: &RequestHeader,
    resp: &ResponseHeader,
    ex: rfc::freshness::Exchange,
) -> Result<RespCacheable> {
    if route.signed.is_some() {
        // The origin marks signed media private (no shared cache may hand them to whoever
        // has the URL after it expires); the edge verifies every request itself, so it
        // keeps its own copy for the route's default TTL. no-store is still obeyed.
        let no_store = CacheControl::from_resp_headers(resp).is_some_and(|c| c.no_store());
        if !no_store {
            let mut own = resp.clone();
            own.insert_header(
                http::header::CACHE_CONTROL,
                format!("public, max-age={}, immutable", route.default_ttl.as_secs()),
            )?;
            return Ok(policy::response_cacheable_at(route, req, &own, ex));
        }
    }
    Ok(policy::response_cacheable_at(route, req, resp, ex))
}

impl Edge {
    /// The origin's 200 to a HEAD sent for a stale stored response: update or remove that
    /// response (RFC 9111 §4.3.5, [`rfc::head::apply`]).
    async fn freshen_with_head(
        &self,
        session: &mut Session,
        resp: &ResponseHeader,
        ctx: &mut EdgeCtx,
    ) {
        let Some(route) = ctx.route.clone() else {
            return;
        };
        let response_time = SystemTime::now();
        let ex = rfc::freshness::Exchange {
            request_time: ctx.request_time.unwrap_or(response_time),
            response_time,
        };
        let req = session.req_header().clone();
        ctx.head_outcome = rfc::head::apply(session, self.storage, resp, response_time, |h| {
            route_cacheable(&route, &req, h, ex)
        })
        .await;
    }
}

#[async_trait]
impl ProxyHttp for Edge {
    type CTX = EdgeCtx;

    fn new_ctx(&self) -> EdgeCtx {
        EdgeCtx {
            status: CacheStatus::Bypass,
            start: Some(Instant::now()),
            ..Default::default()
        }
    }

    /// The request head is parsed: its deadline stops (see [`crate::connection`]).
    async fn early_request_filter(&self, session: &mut Session, _ctx: &mut EdgeCtx) -> Result<()> {
        connection::head_complete(session);
        Ok(())
    }

    /// Reject what must not pass (an HTTP/1.1 request without one valid `Host`, `deny`
    /// routes), resolve the route, serve fresh memory hits; unsafe methods are marked to
    /// invalidate the stored URL once the origin has answered them (`upstream_response_filter`).
    async fn request_filter(&self, session: &mut Session, ctx: &mut EdgeCtx) -> Result<bool> {
        if !policy::host_valid(session.req_header()) {
            // RFC 9112 §3.2; the framing of whatever follows is not to be trusted either.
            session.set_keepalive(None);
            respond_empty(session, 400).await?;
            return Ok(true);
        }
        if session.req_header().uri.path() == "/healthz" {
            // Liveness for container health checks, answered by the edge itself.
            let mut resp = ResponseHeader::build(200, Some(2))?;
            resp.insert_header("content-length", "3")?;
            resp.insert_header("x-cache-status", CacheStatus::Bypass.as_str())?;
            session.write_response_header(Box::new(resp), false).await?;
            session
                .write_response_body(Some(Bytes::from_static(b"ok\n")), true)
                .await?;
            return Ok(true);
        }
        ctx.route = self.route(session.req_header().uri.path());
        if self.denied(session.req_header().uri.path()) {
            respond_empty(session, 404).await?;
            return Ok(true);
        }
        if let Some(verifier) = ctx.route.as_ref().and_then(|r| r.signed.as_ref()) {
            let uri = &session.req_header().uri;
            match verifier.verify(uri.path(), uri.query(), signing::unix_now()) {
                Ok(exp) => ctx.signed_exp = Some(exp),
                Err(why) => {
                    signing::write_denied(session, why).await?;
                    return Ok(true);
                }
            }
        }
        if self.serve_memory_hit(session, ctx).await? {
            return Ok(true);
        }
        self.fill_in_background(session, ctx).await;
        // Only cache routes store anything to invalidate.
        ctx.invalidate = ctx
            .route
            .as_ref()
            .is_some_and(|r| r.mode == RouteMode::Cache)
            && policy::invalidates(&session.req_header().method);
        Ok(false)
    }

    /// Round-robin over origins that are usable (healthy by the last health check, unless a
    /// request saw otherwise since: see [`Observed`]); when none is, over the ones only the
    /// health check holds down, then over all of them (nginx: health checks choose among
    /// peers but never leave the edge with none).
    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut EdgeCtx,
    ) -> Result<Box<HttpPeer>> {
        let backend = self
            .upstreams
            .select_with(b"", 256, |b, healthy| {
                self.observed.seen(b).unwrap_or(healthy)
            })
            // None usable: first the peers only the health check holds down, then any.
            .or_else(|| {
                self.upstreams
                    .select_with(b"", 256, |b, _| self.observed.seen(b) != Some(false))
            })
            .or_else(|| self.upstreams.select_with(b"", 256, |_, _| true))
            .ok_or_else(|| Error::explain(ErrorType::ConnectNoRoute, "no origin"))?;
        ctx.backend = Some(backend.clone());
        let mut peer = HttpPeer::new(backend, false, String::new());
        peer.options.connection_timeout = Some(self.config.upstream.connect_timeout);
        peer.options.read_timeout = Some(self.config.upstream.read_timeout);
        ctx.upstream_start = Some(Instant::now());
        ctx.request_time = Some(SystemTime::now());
        Ok(Box::new(peer))
    }

    /// HTTP/2 requests may start their cold fill as a subrequest ([`Edge::fill_in_background`]).
    fn allow_spawning_subrequest(&self, session: &Session, _ctx: &EdgeCtx) -> bool {
        self.config.cache.streaming_fill && session.as_downstream().is_http2()
    }

    /// This request writes the cache: a background fill's parent may go on (it then waits on
    /// the lock this request holds and reads the fill).
    fn cache_miss(&self, session: &mut Session, _ctx: &mut EdgeCtx) {
        session.cache.cache_miss();
        background_fill_role_known(session);
    }

    /// Enable the cache for GET/HEAD on `cache` routes (not for a request with `no-store`
    /// on routes that honor request directives).
    fn request_cache_filter(&self, session: &mut Session, ctx: &mut EdgeCtx) -> Result<()> {
        let cacheable_route = ctx
            .route
            .as_ref()
            .is_some_and(|r| r.mode == RouteMode::Cache);
        if ctx
            .route
            .as_ref()
            .is_some_and(|r| r.semantics.request_directives)
        {
            ctx.req_directives = rfc::request::parse(session.req_header());
            if ctx.req_directives.is_some_and(|d| d.no_store) {
                // Neither this request nor its response is stored (RFC 9111 §5.2.1.5).
                return Ok(());
            }
        }
        if cacheable_route && policy::request_cacheable(session.req_header()) {
            let mut overrides = CacheOptionOverrides::default();
            overrides.wait_timeout = Some(self.config.cache.lock_wait_timeout);
            session
                .cache
                .enable(self.storage, None, None, Some(self.lock), Some(overrides));
            ctx.cache_enabled = true;
            if self.config.cache.streaming_fill {
                // A filling request reads its own response from the fill like every other
                // reader (`storage/fill.rs`). Pingora's cancel-safe downstream writes (HTTP/1)
                // let it keep reading the origin into the cache while this client's socket
                // is full, so a slow first client does not pace the fill for the others.
                session.set_proxy_tasks_enabled(true);
            }
        }
        Ok(())
    }

    fn cache_key_callback(&self, session: &Session, ctx: &mut EdgeCtx) -> Result<CacheKey> {
        Ok(cache_key(&cache_key_url(
            ctx.route.as_deref(),
            path_and_query(session),
        )))
    }

    /// The variance of this request against the stored (or about to be stored) response's
    /// `Vary` (RFC 9111 §4.1); pingora then looks up / stores the variant under it.
    fn cache_vary_filter(
        &self,
        meta: &CacheMeta,
        _ctx: &mut EdgeCtx,
        req: &RequestHeader,
    ) -> Option<HashBinary> {
        rfc::vary::variance(&meta.response_header().headers, &req.headers)
    }

    fn response_cache_filter(
        &self,
        session: &Session,
        resp: &ResponseHeader,
        ctx: &mut EdgeCtx,
    ) -> Result<RespCacheable> {
        let Some(route) = ctx.route.as_ref() else {
            return Ok(RespCacheable::Uncacheable(
                pingora::cache::NoCacheReason::NeverEnabled,
            ));
        };
        if ctx.head_sent && ctx.not_modified.is_none() {
            // A HEAD's answer has no body to store (a 304 to it still updates, below).
            return Ok(RespCacheable::Uncacheable(rfc::head::NOT_STORED));
        }
        let response_time = SystemTime::now();
        let ex = rfc::freshness::Exchange {
            request_time: ctx.request_time.unwrap_or(response_time),
            response_time,
        };
        // After a 304, `resp` is pingora's merge of it into the stored header; the stored
        // header takes every field the 304 carries instead (RFC 9111 §3.2, §4.3.4).
        let updated;
        let resp = match ctx.not_modified.take() {
            Some(nm) => {
                updated = rfc::directives::updated_by_304(resp, &nm, response_time);
                &updated
            }
            None => resp,
        };
        route_cacheable(route, session.req_header(), resp, ex)
    }

    /// The client's request directives narrow or widen what a stored response may answer,
    /// on routes that honor them (see [`rfc::request`]).
    ///
    /// This request reads what is stored or being filled: a background fill's parent may go
    /// on and read it too.
    async fn cache_hit_filter(
        &self,
        session: &mut Session,
        meta: &CacheMeta,
        _hit_handler: &mut HitHandler,
        _is_fresh: bool,
        ctx: &mut EdgeCtx,
    ) -> Result<Option<ForcedFreshness>> {
        background_fill_role_known(session);
        Ok(ctx
            .req_directives
            .and_then(|d| d.hit(meta, SystemTime::now())))
    }

    /// `only-if-cached` never reaches the origin: 504 (RFC 9111 §5.2.1.7).
    async fn proxy_upstream_filter(
        &self,
        session: &mut Session,
        ctx: &mut EdgeCtx,
    ) -> Result<bool> {
        if ctx.req_directives.is_some_and(|d| d.only_if_cached) {
            respond_empty(session, 504).await?;
            return Ok(false);
        }
        Ok(true)
    }

    /// The peer could not be reached: skipped until the next health check says otherwise.
    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut EdgeCtx,
        e: Box<Error>,
    ) -> Box<Error> {
        if let Some(b) = &ctx.backend {
            self.observed.record(b, false);
        }
        e
    }

    /// The request id goes to the origin, so its logs and ours can be joined; `Via` names
    /// the edge (RFC 9110 §7.6.3, [`rfc::via`]). A HEAD that revalidates a stale stored
    /// response stays a HEAD (RFC 9111 §4.3.5, [`rfc::head`]); pingora made it a GET.
    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut EdgeCtx,
    ) -> Result<()> {
        let id = ctx.request_id(session.req_header()).header_value();
        upstream_request.insert_header("x-request-id", id)?;
        // The origin marks its cookies Secure when the browser used TLS; a client's own
        // X-Forwarded-Proto is replaced, never passed on.
        let tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
        upstream_request.insert_header("x-forwarded-proto", if tls { "https" } else { "http" })?;
        upstream_request
            .append_header(http::header::VIA, rfc::via(session.req_header().version))?;
        if ctx.cache_enabled
            && rfc::head::forward_as_head(&session.req_header().method, session.cache.phase())
        {
            upstream_request.set_method(http::Method::HEAD);
            ctx.head_sent = true;
        }
        Ok(())
    }

    /// The origin answered: its peer is healthy again at once, and an unsafe request's
    /// non-error answer invalidates the stored URL (RFC 9111 §4.4).
    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut EdgeCtx,
    ) -> Result<()> {
        if let Some(start) = ctx.upstream_start {
            let elapsed = start.elapsed();
            METRICS.origin_latency.observe(elapsed.as_secs_f64());
            ctx.upstream_time = Some(elapsed);
        }
        ctx.upstream_status = Some(resp.status.as_u16());
        if let Some(b) = &ctx.backend {
            self.observed.record(b, true);
        }
        // Hop-by-hop fields are neither stored nor forwarded (RFC 9110 §7.6.1); a 101 keeps
        // its `Upgrade`/`Connection`, which pingora needs to switch protocols.
        if resp.status != http::StatusCode::SWITCHING_PROTOCOLS {
            rfc::directives::strip_connection_fields(resp);
        }
        if resp.status == http::StatusCode::NOT_MODIFIED && ctx.cache_enabled {
            ctx.not_modified = Some(resp.headers.clone());
        }
        if ctx.head_sent && resp.status == http::StatusCode::OK {
            self.freshen_with_head(session, resp, ctx).await;
        }
        if ctx.invalidate && policy::invalidating_status(resp.status) {
            ctx.invalidate = false;
            self.invalidate(session, ctx).await;
            // Same-origin Location / Content-Location too (RFC 9111 §4.4).
            for url in rfc::invalidation::also_invalidated(session.req_header(), resp) {
                self.storage.purge_url(&url).await;
            }
        }
        Ok(())
    }

    /// `Range` on cached responses, judged by [`policy::range_decision`]: invalid syntax is
    /// ignored (full 200), nothing satisfiable is a 416 with `bytes */len`, and the
    /// satisfiable ranges, clamped, are served by pingora's range filter.
    fn range_header_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        _ctx: &mut EdgeCtx,
    ) -> RangeType {
        let req = session.req_header();
        let (Some(range), Some(len)) = (
            req.headers.get(http::header::RANGE),
            resp.headers
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok()),
        ) else {
            return range_header_filter(req, resp, MAX_RANGES);
        };
        let value = match policy::range_decision(range.as_bytes(), len) {
            // An empty range set: pingora's 416 with `Content-Range: bytes */len`.
            policy::RangeDecision::Unsatisfiable => String::from("bytes="),
            policy::RangeDecision::Satisfiable(v) => v,
            policy::RangeDecision::Ignore => {
                let mut plain = req.clone();
                plain.remove_header(&http::header::RANGE);
                return range_header_filter(&plain, resp, MAX_RANGES);
            }
        };
        let mut judged = req.clone();
        if judged.insert_header(http::header::RANGE, value).is_err() {
            return range_header_filter(req, resp, MAX_RANGES);
        }
        range_header_filter(&judged, resp, MAX_RANGES)
    }

    fn upstream_response_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut EdgeCtx,
    ) -> Result<Option<Duration>> {
        if !session.cache.enabled() && is_background_fill(session) {
            // Not cached after all: nobody reads this body (the parent fetches its own).
            ctx.fill_dropped = true;
            return Error::e_explain(ErrorType::ConnectionClosed, "background fill not cached")
                .map_err(|e| e.into_down());
        }
        if let Some(b) = body {
            METRICS.served(Tier::Origin, b.len() as u64);
        }
        if end_of_stream {
            if let Some(start) = ctx.upstream_start.take() {
                ctx.upstream_time = Some(start.elapsed());
            }
        }
        Ok(None)
    }

    /// `X-Cache-Status` on every response; client-facing freshness on routes that set it.
    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut EdgeCtx,
    ) -> Result<()> {
        ctx.status = policy::cache_status(session.cache.phase());
        match ctx.head_outcome {
            // pingora sees a response it did not store; for the client it was a revalidation.
            Some(rfc::head::Outcome::Freshened) => ctx.status = CacheStatus::Revalidated,
            Some(rfc::head::Outcome::Invalidated) => ctx.status = CacheStatus::Expired,
            None => {}
        }
        if ctx.filled_in_background && ctx.status == CacheStatus::Hit {
            // It reads the fill its own request started: for the client, a miss.
            ctx.status = CacheStatus::Miss;
        }
        resp.insert_header("x-cache-status", ctx.status.as_str())?;
        if let Some(route) = ctx.route.as_ref().filter(|r| r.mode == RouteMode::Cache) {
            // Targeted cache-control fields are for this edge only (RFC 9213).
            route.semantics.strip_targeted(resp);
        }
        if let Some(route) = ctx.route.as_ref() {
            client_freshness(resp, route, ctx.signed_exp)?;
        }
        Ok(())
    }

    /// Serve stale on origin errors (connect/read failures and 5xx) within the entry's
    /// stale-if-error window, and during stale-while-revalidate (pingora checks the windows).
    fn should_serve_stale(
        &self,
        _session: &mut Session,
        _ctx: &mut EdgeCtx,
        error: Option<&Error>,
    ) -> bool {
        match error {
            None => true,
            Some(e) => {
                e.esource() == &ErrorSource::Upstream
                    || matches!(e.etype(), ErrorType::HTTPStatus(c) if *c >= 500)
                    || matches!(
                        e.etype(),
                        ErrorType::ConnectNoRoute
                            | ErrorType::ConnectTimedout
                            | ErrorType::ConnectRefused
                            | ErrorType::ConnectError
                    )
            }
        }
    }

    /// Error responses also carry `X-Cache-Status` (pingora's default writes a bare error).
    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut EdgeCtx,
    ) -> FailToProxy {
        let code = match e.etype() {
            ErrorType::HTTPStatus(code) => *code,
            _ => match e.esource() {
                ErrorSource::Upstream => 502,
                ErrorSource::Downstream => match e.etype() {
                    ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                    _ => 400,
                },
                ErrorSource::Internal | ErrorSource::Unset => 502,
            },
        };
        ctx.status = policy::cache_status(session.cache.phase());
        if ctx.cache_enabled && ctx.status == CacheStatus::Bypass {
            // pingora disables the cache when the fill fails; for the client this was a miss.
            ctx.status = CacheStatus::Miss;
        }
        if code > 0 && session.response_written().is_none() {
            let written = async {
                let mut resp = ResponseHeader::build(code, Some(3))?;
                resp.insert_header("content-length", "0")?;
                resp.insert_header("cache-control", "no-store")?;
                resp.insert_header("x-cache-status", ctx.status.as_str())?;
                session.write_response_header(Box::new(resp), true).await
            }
            .await;
            if let Err(err) = written {
                tracing::debug!(error = %err, "could not send error response");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    /// A client closing mid request is normal: counted (in `logging`) and a debug line, not
    /// pingora's ERROR line.
    /// A background fill stopped because its response is not cached is not an error either.
    fn suppress_error_log(&self, _session: &Session, ctx: &EdgeCtx, error: &Error) -> bool {
        if ctx.fill_dropped {
            return true;
        }
        if !client_went_away(error) {
            return false;
        }
        ctx.client_gone.store(true, Ordering::Relaxed);
        tracing::debug!(%error, "client closed the connection mid request");
        true
    }

    /// The same for a client that left while its response was also filling the cache
    /// (pingora keeps filling and would log a warning).
    fn suppress_proxy_warn_log(
        &self,
        _session: &Session,
        ctx: &EdgeCtx,
        error: &Error,
        context: ProxyWarnLogContext,
    ) -> bool {
        // In this context the error is the downstream's by definition (pingora does not
        // always tag its source).
        if !matches!(context, ProxyWarnLogContext::DownstreamCache) || !is_close(error) {
            return false;
        }
        ctx.client_gone.store(true, Ordering::Relaxed);
        tracing::debug!(%error, "client closed the connection, cache fill continues");
        true
    }

    /// Metrics for every request, and its access log line (queued, never waited for).
    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut EdgeCtx) {
        if session.subrequest_ctx.is_some() {
            // A background fill or revalidation pingora runs on its own: no client saw it,
            // so it is neither a counted request nor an access log line (nginx's
            // `log_subrequest off`); its parent request is the one counted.
            return;
        }
        METRICS.request(ctx.status);
        if session.cache.lock_duration().is_some() {
            METRICS.lock_waits.inc();
        }
        let client_gone =
            ctx.client_gone.load(Ordering::Relaxed) || e.is_some_and(client_went_away);
        if client_gone {
            METRICS.client_closed(ClientClosedPhase::InFlight);
        }
        let (status, bytes_sent, body_bytes) = match (ctx.direct, session.response_written()) {
            (Some(d), _) => (d.status, d.bytes, d.body_bytes),
            (None, Some(h)) => {
                let body = session.body_bytes_sent() as u64;
                (h.status.as_u16(), head_wire_len(h) + body, body)
            }
            // Nothing was written: the client left first (nginx's 499), or pingora gave up
            // on a broken request without a response.
            (None, None) => (if client_gone { 499 } else { 0 }, 0, 0),
        };
        let request_time = ctx.start.map_or(Duration::ZERO, |s| s.elapsed());
        METRICS.response(status, ctx.status, request_time);
        let Some(log) = &self.access_log else {
            return;
        };
        let request_id = ctx.request_id(session.req_header()).clone();
        let req = session.req_header();
        log.send(Record {
            time: SystemTime::now(),
            client: session
                .client_addr()
                .and_then(|a| a.as_inet())
                .map(|a| a.ip()),
            method: req.method.clone(),
            target: Target::of(&req.uri),
            version: req.version,
            status,
            body_bytes,
            bytes_sent,
            referer: req.headers.get(http::header::REFERER).cloned(),
            user_agent: req.headers.get(http::header::USER_AGENT).cloned(),
            cache_status: ctx.status,
            upstream_status: ctx.upstream_status,
            upstream_time: ctx.upstream_time,
            request_time,
            request_id,
        });
    }
}
