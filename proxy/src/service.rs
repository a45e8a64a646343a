//! The `ProxyHttp` implementation: routes requests to the cache or straight to the origin,
//! applies [`crate::policy`], tags every response with `X-Cache-Status`, and records metrics.
//! `/healthz` is answered by the edge itself (container health checks). Fresh memory-tier
//! hits without `Range` are written from `request_filter` (`Edge::serve_memory_hit`), the
//! same response pingora's cache hit path builds, without its per-request cache machinery.

use crate::access_log::{AccessLog, Record, RequestId, Target};
use crate::config::{EdgeConfig, Route, RouteMode};
use crate::direct::{self, Body, BodyFile, HeadKind};
use crate::metrics::{ClientClosedPhase, METRICS};
use crate::policy;
use crate::storage::memory::HotMeta;
use crate::storage::{cache_key, FreshHit, TieredStorage};
use async_trait::async_trait;
use bytes::{BufMut, Bytes, BytesMut};
use pingora::cache::key::CacheKey;
use pingora::cache::lock::CacheKeyLockImpl;
use pingora::cache::{CacheOptionOverrides, RespCacheable};
use pingora::http::RequestHeader;
use pingora::http::ResponseHeader;
use pingora::lb::selection::RoundRobin;
use pingora::lb::LoadBalancer;
use pingora::prelude::HttpPeer;
use pingora::protocols::http::conditional_filter::{not_modified_filter, to_304};
use pingora::protocols::http::date::get_cached_date;
use pingora::proxy::{FailToProxy, ProxyHttp, ProxyWarnLogContext, Session};
use pingora::{Error, ErrorSource, ErrorType, Result};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
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
        let routes = config.routes.iter().cloned().map(Arc::new).collect();
        Edge {
            config,
            storage,
            lock,
            upstreams,
            routes,
            access_log: None,
        }
    }

    fn route(&self, path: &str) -> Option<Arc<Route>> {
        self.routes
            .iter()
            .find(|r| path.starts_with(&r.prefix))
            .cloned()
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
        {
            return Ok(false);
        }
        let fd = direct::downstream_fd(session);
        // Disk objects only where they can be sent from their file (a direct connection).
        let found = self
            .storage
            .fresh_hit(path_and_query(session), SystemTime::now(), fd.is_some())
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
            let Some(head) = entry.heads.get(kind, now, || {
                direct_head(hit_header(&entry.hot, &route, now, not_modified).ok()?)
            }) else {
                // Not expected for a stored 200; nothing is written, pingora's path decides.
                return Ok(false);
            };
            ctx.status = "HIT";
            let body = match entry.file.as_deref() {
                _ if header_only => Body::None,
                Some(f) if f.unchanged() => Body::File(f),
                // No kept file, or it changed on disk since it was verified: the verified
                // in-memory bytes go out instead.
                _ => Body::Bytes(&entry.body),
            };
            let status = if not_modified { 304 } else { 200 };
            ctx.direct = Some(write_direct(session, fd, head, body, "memory", status).await);
            return Ok(true);
        }

        ctx.status = "HIT";
        let header = hit_header(&entry.hot, &route, now, not_modified)?;
        session
            .write_response_header(header, header_only)
            .await
            .map_err(|e| e.into_down())?;
        if !header_only {
            METRICS
                .bytes_served
                .with_label_values(&["memory"])
                .inc_by(entry.body.len() as u64);
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
        let Some(head) = hit_header(hot, route, now, not_modified)
            .ok()
            .and_then(direct_head)
        else {
            return false;
        };
        ctx.status = "HIT";
        let body = if header_only {
            Body::None
        } else {
            Body::File(file)
        };
        let status = if not_modified { 304 } else { 200 };
        ctx.direct = Some(write_direct(session, fd, head, body, "disk", status).await);
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
    // Only ETag / Last-Modified of the stored header take part in the match.
    let not_modified = not_modified_filter(session.req_header(), stored);
    let header_only = not_modified || session.req_header().method == http::Method::HEAD;
    Some((not_modified, header_only))
}

/// The response header of a cache hit, as pingora's cache hit path builds it: the stored
/// header with `Age`, HTTP/1.1, `Accept-Ranges` (or the 304 form), `X-Cache-Status: HIT` and
/// the route's client max-age.
fn hit_header(
    hot: &HotMeta,
    route: &Route,
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
    header.insert_header("x-cache-status", "HIT")?;
    if let Some(max_age) = route.client_max_age {
        policy::apply_client_max_age(&mut header, max_age)?;
    }
    Ok(header)
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
    tier: &'static str,
    status: u16,
) -> DirectSent {
    let (len, sendfile) = (body.size(), matches!(body, Body::File(_)));
    let head_len = head.len() as u64;
    let written = match direct::send_response(fd, &head, body).await {
        Ok(n) => {
            METRICS.bytes_served.with_label_values(&[tier]).inc_by(len);
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
    status: &'static str,
    cache_enabled: bool,
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

#[async_trait]
impl ProxyHttp for Edge {
    type CTX = EdgeCtx;

    fn new_ctx(&self) -> EdgeCtx {
        EdgeCtx {
            status: "BYPASS",
            start: Some(Instant::now()),
            ..Default::default()
        }
    }

    /// Resolve the route; unsafe methods invalidate the stored URL before passing through.
    async fn request_filter(&self, session: &mut Session, ctx: &mut EdgeCtx) -> Result<bool> {
        if session.req_header().uri.path() == "/healthz" {
            // Liveness for container health checks, answered by the edge itself.
            let mut resp = ResponseHeader::build(200, Some(2))?;
            resp.insert_header("content-length", "3")?;
            resp.insert_header("x-cache-status", "BYPASS")?;
            session.write_response_header(Box::new(resp), false).await?;
            session
                .write_response_body(Some(Bytes::from_static(b"ok\n")), true)
                .await?;
            return Ok(true);
        }
        ctx.route = self.route(session.req_header().uri.path());
        if self.serve_memory_hit(session, ctx).await? {
            return Ok(true);
        }
        if policy::invalidates(&session.req_header().method) {
            let url = path_and_query(session).to_string();
            self.storage.purge_url(&url).await;
        }
        Ok(false)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut EdgeCtx,
    ) -> Result<Box<HttpPeer>> {
        let backend = self
            .upstreams
            .select(b"", 256)
            .ok_or_else(|| Error::explain(ErrorType::ConnectNoRoute, "no healthy origin"))?;
        let mut peer = HttpPeer::new(backend, false, String::new());
        peer.options.connection_timeout = Some(self.config.upstream.connect_timeout);
        peer.options.read_timeout = Some(self.config.upstream.read_timeout);
        ctx.upstream_start = Some(Instant::now());
        Ok(Box::new(peer))
    }

    /// Enable the cache for GET/HEAD on `cache` routes.
    fn request_cache_filter(&self, session: &mut Session, ctx: &mut EdgeCtx) -> Result<()> {
        let cacheable_route = ctx
            .route
            .as_ref()
            .is_some_and(|r| r.mode == RouteMode::Cache);
        if cacheable_route && policy::request_cacheable(session.req_header()) {
            let mut overrides = CacheOptionOverrides::default();
            overrides.wait_timeout = Some(self.config.cache.lock_wait_timeout);
            session
                .cache
                .enable(self.storage, None, None, Some(self.lock), Some(overrides));
            ctx.cache_enabled = true;
        }
        Ok(())
    }

    fn cache_key_callback(&self, session: &Session, _ctx: &mut EdgeCtx) -> Result<CacheKey> {
        Ok(cache_key(path_and_query(session)))
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
        Ok(policy::response_cacheable(
            route,
            session.req_header(),
            resp,
        ))
    }

    /// The request id goes to the origin, so its logs and ours can be joined.
    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut EdgeCtx,
    ) -> Result<()> {
        let id = ctx.request_id(session.req_header()).header_value();
        upstream_request.insert_header("x-request-id", id)?;
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut EdgeCtx,
    ) -> Result<()> {
        if let Some(start) = ctx.upstream_start {
            let elapsed = start.elapsed();
            METRICS.origin_latency.observe(elapsed.as_secs_f64());
            ctx.upstream_time = Some(elapsed);
        }
        ctx.upstream_status = Some(resp.status.as_u16());
        Ok(())
    }

    fn upstream_response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut EdgeCtx,
    ) -> Result<Option<Duration>> {
        if let Some(b) = body {
            METRICS
                .bytes_served
                .with_label_values(&["origin"])
                .inc_by(b.len() as u64);
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
        resp.insert_header("x-cache-status", ctx.status)?;
        if let Some(max_age) = ctx.route.as_ref().and_then(|r| r.client_max_age) {
            policy::apply_client_max_age(resp, max_age)?;
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
        if ctx.cache_enabled && ctx.status == "BYPASS" {
            // pingora disables the cache when the fill fails; for the client this was a miss.
            ctx.status = "MISS";
        }
        if code > 0 && session.response_written().is_none() {
            let written = async {
                let mut resp = ResponseHeader::build(code, Some(3))?;
                resp.insert_header("content-length", "0")?;
                resp.insert_header("cache-control", "no-store")?;
                resp.insert_header("x-cache-status", ctx.status)?;
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
    fn suppress_error_log(&self, _session: &Session, ctx: &EdgeCtx, error: &Error) -> bool {
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
        METRICS.request(ctx.status);
        if session.cache.lock_duration().is_some() {
            METRICS.lock_waits.inc();
        }
        if session.subrequest_ctx.is_some() {
            // A background fill or revalidation pingora runs on its own: no client saw it,
            // so it is neither a downstream response nor an access log line (nginx's
            // `log_subrequest off`).
            return;
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
