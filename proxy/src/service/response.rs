//! The response side of every request: what the client is told (`X-Cache-Status` and
//! [`policy::client_facing`], the same function the fast hit path uses), serving stale on
//! origin errors, the error response, which errors are a client going away (counted, not
//! logged as errors), and the request's metrics and access log line.

use super::{Edge, EdgeCtx};
use crate::access_log::{Record, Target};
use crate::cache_status::CacheStatus;
use crate::metrics::{ClientClosedPhase, METRICS};
use crate::policy;
use crate::rfc;
use pingora::http::ResponseHeader;
use pingora::proxy::{FailToProxy, ProxyWarnLogContext, Session};
use pingora::{Error, ErrorSource, ErrorType, Result};
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

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

impl Edge {
    /// `X-Cache-Status` on every response; client-facing freshness on routes that set it.
    pub(super) fn tag_response(
        &self,
        session: &Session,
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
        policy::client_facing(resp, ctx.status, ctx.route.as_deref(), ctx.signed_exp)
    }

    /// Serve stale on origin errors (connect/read failures and 5xx) within the entry's
    /// stale-if-error window, and during stale-while-revalidate (pingora checks the windows).
    pub(super) fn stale_allowed(error: Option<&Error>) -> bool {
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
    pub(super) async fn error_response(
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
    pub(super) fn quiet_error(ctx: &EdgeCtx, error: &Error) -> bool {
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
    pub(super) fn quiet_proxy_warn(
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
    pub(super) fn log_request(&self, session: &Session, e: Option<&Error>, ctx: &mut EdgeCtx) {
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
