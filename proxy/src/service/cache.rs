//! The cache callbacks: whether a request uses the cache, whether a response is stored (with
//! signed routes' own freshness, and 304 and HEAD updates of the stored header, RFC 9111
//! §3.2, §4.3.4, §4.3.5), request directives on hits (RFC 9111 §5.2.1), invalidation of a
//! stored URL, and how `Range` on cached responses is judged.

use super::{Edge, EdgeCtx};
use crate::config::{Route, RouteMode};
use crate::policy;
use crate::rfc;
use pingora::cache::cache_control::CacheControl;
use pingora::cache::{CacheMeta, CacheOptionOverrides, ForcedFreshness, RespCacheable};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::{range_header_filter, ProxyHttp, RangeType, Session};
use pingora::Result;
use std::time::SystemTime;

/// Most ranges served from one request (pingora's default).
const MAX_RANGES: Option<usize> = Some(200);

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
    /// Remove the stored response for this request's cache key, every variant the key
    /// covers (the same key the cache stores it under).
    pub(super) async fn invalidate(&self, session: &Session, ctx: &mut EdgeCtx) {
        match self.cache_key_callback(session, ctx) {
            Ok(key) => {
                self.storage.purge_key(&key).await;
            }
            Err(e) => tracing::warn!(error = %e, "no cache key to invalidate"),
        }
    }

    /// The origin's 200 to a HEAD sent for a stale stored response: update or remove that
    /// response (RFC 9111 §4.3.5, [`rfc::head::apply`]).
    pub(super) async fn freshen_with_head(
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

    /// Enable the cache for GET/HEAD on `cache` routes (not for a request with `no-store`
    /// on routes that honor request directives).
    pub(super) fn enable_cache(&self, session: &mut Session, ctx: &mut EdgeCtx) -> Result<()> {
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

    /// Whether the origin's response is stored, and its meta.
    pub(super) fn cacheability(
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
    pub(super) fn hit_directives(
        &self,
        meta: &CacheMeta,
        ctx: &EdgeCtx,
    ) -> Option<ForcedFreshness> {
        ctx.req_directives
            .and_then(|d| d.hit(meta, SystemTime::now()))
    }

    /// `Range` on cached responses, judged by [`policy::range_decision`]: invalid syntax is
    /// ignored (full 200), nothing satisfiable is a 416 with `bytes */len`, and the
    /// satisfiable ranges, clamped, are served by pingora's range filter.
    pub(super) fn judge_range(&self, session: &Session, resp: &mut ResponseHeader) -> RangeType {
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
}
