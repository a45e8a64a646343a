//! The `ProxyHttp` implementation: routes requests to the cache or straight to the origin,
//! applies [`crate::policy`], tags every response with `X-Cache-Status`, and records metrics.
//! Routes with `signed_urls` check the URL first ([`crate::signing`]); a route's
//! `cache_key_query` decides which query parameters are part of the cache key.
//! `/healthz` is answered by the edge itself (container health checks). Fresh hits without
//! `Range` are answered from `request_filter` by the fast hit path ([`crate::hit`]), the
//! same response pingora's cache hit path builds, without its per-request cache machinery.
//!
//! This file holds the shared state ([`Edge`]), the per-request state ([`EdgeCtx`]) and the
//! hook table; each hook's logic lives with its concern:
//! - `request.rs`: `request_filter` (Host, `/healthz`, route, deny, signed URLs, the fast
//!   hit path, invalidation marks);
//! - `upstream.rs`: the origin peer, the request to it and its answer, HTTP/2 background
//!   fills;
//! - `cache.rs`: the cache callbacks (enable, store, hits, HEAD freshening, invalidation,
//!   ranges);
//! - `response.rs`: response and error hooks, log suppression, metrics and access log.

mod cache;
mod request;
mod response;
mod upstream;

use crate::access_log::{AccessLog, RequestId};
use crate::cache_status::CacheStatus;
use crate::config::{EdgeConfig, Route, RouteMode};
use crate::connection;
use crate::hit::DirectSent;
use crate::policy;
use crate::rfc;
use crate::storage::{cache_key, TieredStorage};
use async_trait::async_trait;
use bytes::Bytes;
use pingora::cache::key::{CacheKey, HashBinary};
use pingora::cache::lock::CacheKeyLockImpl;
use pingora::cache::{CacheMeta, ForcedFreshness, HitHandler, RespCacheable};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::lb::selection::RoundRobin;
use pingora::lb::{Backend, LoadBalancer};
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, ProxyWarnLogContext, RangeType, Session};
use pingora::{Error, Result};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use upstream::Observed;

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
    /// Set when the fast hit path wrote the response to the socket itself.
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

/// The hook table: each hook says what it is for and calls the concern that owns it.
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

    /// Checks, routing and fresh hits: [`Edge::filter_request`].
    async fn request_filter(&self, session: &mut Session, ctx: &mut EdgeCtx) -> Result<bool> {
        self.filter_request(session, ctx).await
    }

    /// [`Edge::choose_peer`].
    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut EdgeCtx,
    ) -> Result<Box<HttpPeer>> {
        self.choose_peer(session, ctx).await
    }

    /// HTTP/2 requests may start their cold fill as a subrequest ([`Edge::fill_in_background`]).
    fn allow_spawning_subrequest(&self, session: &Session, _ctx: &EdgeCtx) -> bool {
        self.config.cache.streaming_fill && session.as_downstream().is_http2()
    }

    /// This request writes the cache: a background fill's parent may go on (it then waits on
    /// the lock this request holds and reads the fill).
    fn cache_miss(&self, session: &mut Session, _ctx: &mut EdgeCtx) {
        session.cache.cache_miss();
        upstream::background_fill_role_known(session);
    }

    /// [`Edge::enable_cache`].
    fn request_cache_filter(&self, session: &mut Session, ctx: &mut EdgeCtx) -> Result<()> {
        self.enable_cache(session, ctx)
    }

    fn cache_key_callback(&self, session: &Session, ctx: &mut EdgeCtx) -> Result<CacheKey> {
        Ok(cache_key(&policy::cache_key_url(
            ctx.route.as_deref(),
            policy::path_and_query(session.req_header()),
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

    /// [`Edge::cacheability`].
    fn response_cache_filter(
        &self,
        session: &Session,
        resp: &ResponseHeader,
        ctx: &mut EdgeCtx,
    ) -> Result<RespCacheable> {
        self.cacheability(session, resp, ctx)
    }

    /// This request reads what is stored or being filled: a background fill's parent may go
    /// on and read it too. Request directives apply ([`Edge::hit_directives`]).
    async fn cache_hit_filter(
        &self,
        session: &mut Session,
        meta: &CacheMeta,
        _hit_handler: &mut HitHandler,
        _is_fresh: bool,
        ctx: &mut EdgeCtx,
    ) -> Result<Option<ForcedFreshness>> {
        upstream::background_fill_role_known(session);
        Ok(self.hit_directives(meta, ctx))
    }

    /// `only-if-cached` never reaches the origin: 504 (RFC 9111 §5.2.1.7).
    async fn proxy_upstream_filter(
        &self,
        session: &mut Session,
        ctx: &mut EdgeCtx,
    ) -> Result<bool> {
        if ctx.req_directives.is_some_and(|d| d.only_if_cached) {
            request::respond_empty(session, 504).await?;
            return Ok(false);
        }
        Ok(true)
    }

    /// [`Edge::connect_failed`].
    fn fail_to_connect(
        &self,
        session: &mut Session,
        peer: &HttpPeer,
        ctx: &mut EdgeCtx,
        e: Box<Error>,
    ) -> Box<Error> {
        self.connect_failed(session, peer, ctx, e)
    }

    /// [`Edge::prepare_upstream_request`].
    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut EdgeCtx,
    ) -> Result<()> {
        self.prepare_upstream_request(session, upstream_request, ctx)
            .await
    }

    /// [`Edge::upstream_answered`].
    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut EdgeCtx,
    ) -> Result<()> {
        self.upstream_answered(session, resp, ctx).await
    }

    /// [`Edge::judge_range`].
    fn range_header_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        _ctx: &mut EdgeCtx,
    ) -> RangeType {
        self.judge_range(session, resp)
    }

    /// [`Edge::upstream_body`].
    fn upstream_response_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut EdgeCtx,
    ) -> Result<Option<Duration>> {
        self.upstream_body(session, body, end_of_stream, ctx)
    }

    /// [`Edge::tag_response`].
    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut EdgeCtx,
    ) -> Result<()> {
        self.tag_response(session, resp, ctx)
    }

    /// [`Edge::stale_allowed`].
    fn should_serve_stale(
        &self,
        _session: &mut Session,
        _ctx: &mut EdgeCtx,
        error: Option<&Error>,
    ) -> bool {
        Edge::stale_allowed(error)
    }

    /// [`Edge::error_response`].
    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut EdgeCtx,
    ) -> FailToProxy {
        self.error_response(session, e, ctx).await
    }

    /// [`Edge::quiet_error`].
    fn suppress_error_log(&self, _session: &Session, ctx: &EdgeCtx, error: &Error) -> bool {
        Edge::quiet_error(ctx, error)
    }

    /// [`Edge::quiet_proxy_warn`].
    fn suppress_proxy_warn_log(
        &self,
        _session: &Session,
        ctx: &EdgeCtx,
        error: &Error,
        context: ProxyWarnLogContext,
    ) -> bool {
        Edge::quiet_proxy_warn(ctx, error, context)
    }

    /// [`Edge::log_request`].
    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut EdgeCtx) {
        self.log_request(session, e, ctx)
    }
}
