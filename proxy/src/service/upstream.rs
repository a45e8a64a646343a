//! The origin side of a request: which origin peer it goes to (health checks, and what
//! requests saw of each peer since: [`Observed`]), what the request to it carries, what
//! the edge does with the answer (hop-by-hop fields, HEAD freshening, invalidation by
//! unsafe methods, origin byte counts), and the HTTP/2 background fill
//! ([`Edge::fill_in_background`]).

use super::{Edge, EdgeCtx};
use crate::config::RouteMode;
use crate::metrics::{Tier, METRICS};
use crate::policy;
use crate::rfc;
use crate::storage::cache_key;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::lb::Backend;
use pingora::prelude::HttpPeer;
use pingora::proxy::Session;
use pingora::{Error, ErrorType, Result};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// What a background fill's subrequest carries for its parent (see
/// [`Edge::fill_in_background`]): dropped or sent once the subrequest knows whether it writes
/// the cache or reads it.
struct FillRoleKnown(Option<tokio::sync::oneshot::Sender<()>>);

/// Tell a background fill's parent that this subrequest is past its cache lookup.
pub(super) fn background_fill_role_known(session: &mut Session) {
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
    pub(super) async fn fill_in_background(&self, session: &mut Session, ctx: &mut EdgeCtx) {
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
        let key = cache_key(&policy::cache_key_url(
            Some(route),
            policy::path_and_query(session.req_header()),
        ));
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
        // Its output is drained: what it reads from the fill is nobody's (this request
        // reads and counts the same bytes).
        tokio::spawn(crate::metrics::unread(sub.run()));
        ctx.filled_in_background = true;
        // Err: the subrequest ended first or never got that far; either way, go on.
        let _ = tokio::time::timeout(self.config.cache.lock_wait_timeout, rx).await;
    }
}

/// What the edge itself saw of each origin peer: it answered, or a connection to it failed.
/// Such an observation overrides the health check's verdict until the next check has run
/// (one `upstream.health_check_interval_secs`), so a peer that answers is healthy again at
/// once and a peer that refuses is skipped at once. Only touched on the origin path.
pub(super) struct Observed {
    valid_for: Duration,
    seen: Mutex<HashMap<Backend, (bool, Instant)>>,
}

impl Observed {
    pub(super) fn new(valid_for: Duration) -> Self {
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
    /// Round-robin over origins that are usable (healthy by the last health check, unless a
    /// request saw otherwise since: see [`Observed`]); when none is, over the ones only the
    /// health check holds down, then over all of them (nginx: health checks choose among
    /// peers but never leave the edge with none).
    pub(super) async fn choose_peer(
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

    /// The peer could not be reached: skipped until the next health check says otherwise.
    pub(super) fn connect_failed(
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
    pub(super) async fn prepare_upstream_request(
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
    pub(super) async fn upstream_answered(
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

    /// Origin body bytes are counted as served from the origin only when this request's
    /// client reads them from here. A cache fill's client reads its own response from the
    /// fill (pingora's miss body reader), whose reads storage counts as `fill`; a background
    /// fill's subrequest has no client (its parent reads the fill). Counting those here too
    /// counted one body two or three times.
    pub(super) fn upstream_body(
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
        let client_reads_this = session.cache.miss_body_reader().is_none();
        if let Some(b) = body.as_ref().filter(|_| client_reads_this) {
            METRICS.served(Tier::Origin, b.len() as u64);
        }
        if end_of_stream {
            if let Some(start) = ctx.upstream_start.take() {
                ctx.upstream_time = Some(start.elapsed());
            }
        }
        Ok(None)
    }
}
