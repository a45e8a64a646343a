//! What happens to a request before anything is looked up or fetched: the `Host` check,
//! `/healthz`, the route, `deny` routes, signed URLs, the fast hit path ([`crate::hit`]),
//! the HTTP/2 background fill, and the mark that an unsafe method invalidates the stored
//! URL once the origin has answered it (`upstream.rs`).

use super::{Edge, EdgeCtx};
use crate::cache_status::CacheStatus;
use crate::config::RouteMode;
use crate::hit::{self, Hit};
use crate::policy;
use crate::signing;
use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::Result;

/// Answer `code` with an empty body from the edge itself (nothing reaches the origin).
pub(super) async fn respond_empty(session: &mut Session, code: u16) -> Result<()> {
    let mut resp = ResponseHeader::build(code, Some(3))?;
    resp.insert_header("content-length", "0")?;
    resp.insert_header("cache-control", "no-store")?;
    resp.insert_header("x-cache-status", CacheStatus::Bypass.as_str())?;
    session.write_response_header(Box::new(resp), true).await
}

impl Edge {
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

    /// Reject what must not pass (an HTTP/1.1 request without one valid `Host`, `deny`
    /// routes), resolve the route, serve fresh hits ([`hit::serve`]); unsafe methods are
    /// marked to invalidate the stored URL once the origin has answered them
    /// (`upstream_response_filter`). True when the response has been written.
    pub(super) async fn filter_request(
        &self,
        session: &mut Session,
        ctx: &mut EdgeCtx,
    ) -> Result<bool> {
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
        if let Some(route) = ctx.route.as_deref() {
            match hit::serve(self.storage, session, route, ctx.signed_exp).await {
                Hit::NotMine => {}
                Hit::Direct(sent) => {
                    ctx.status = CacheStatus::Hit;
                    ctx.direct = Some(sent);
                    return Ok(true);
                }
                Hit::Session(written) => {
                    ctx.status = CacheStatus::Hit;
                    written?;
                    return Ok(true);
                }
            }
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
}
