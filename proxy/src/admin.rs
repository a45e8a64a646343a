//! Admin listener: Prometheus `/metrics` and cache purge, on its own address.
//!
//! - `GET /metrics`: text exposition, no auth (bind the listener to a private address).
//! - `POST|PURGE /purge?url=/media/x`: invalidate one URL in both tiers, every `Vary`
//!   variant of it (a query in the URL is percent-encoded: `url=/media/x%3Fcb%3D1`). The
//!   URL is reduced to its cache key first, by its route's `cache_key_query` (the same
//!   function the request path keys with), so on `/media/` (`"none"`) purging `/media/x`
//!   and `/media/x?cb=1` is the same purge.
//! - `POST|PURGE /purge?prefix=/media/`: invalidate every stored URL with that prefix (the
//!   prefix is matched against stored keys as they are, without query reduction).
//! - `POST /clock/advance?ms=N`: **test hook**, present only when the process was started
//!   with `KOMORA_EDGE_TEST_CLOCK=1` (otherwise 404, like any unknown path; a warning is
//!   logged at startup when it is on). Makes every stored entry `N` ms older, which to the
//!   cache is the same as `N` ms passing (see [`crate::clock`]); the edge tests use it
//!   instead of sleeping until objects expire.
//!
//! Purge and the clock hook require `Authorization: Bearer <token>` with the token from the
//! environment variable named by `admin.token_env`; with no token configured they are
//! refused.

use crate::clock;
use crate::config::EdgeConfig;
use crate::metrics::METRICS;
use crate::policy::cache_key_url;
use crate::storage::TieredStorage;
use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use std::sync::Arc;
use std::time::Duration;

/// Largest `ms` the clock hook takes in one call (about 30 years): more is a typo.
const MAX_ADVANCE_MS: u64 = 1 << 40;

/// The admin application.
pub struct AdminApp {
    /// Storage to purge from.
    pub storage: &'static TieredStorage,
    /// Expected bearer token; `None` refuses all purges.
    pub token: Option<String>,
    /// The routes, to reduce a purged URL to its cache key.
    pub config: Arc<EdgeConfig>,
    /// Whether `POST /clock/advance` exists ([`clock::TEST_CLOCK_ENV`]).
    pub test_clock: bool,
}

fn reply(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    let len = r.body().len();
    r.headers_mut()
        .insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(len));
    r
}

fn json(status: StatusCode, body: String) -> Response<Vec<u8>> {
    reply(status, "application/json", body.into_bytes())
}

fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

impl AdminApp {
    /// The admin app; the clock hook is on when the environment says so (logged as a
    /// warning, since it lets a token holder make the whole cache stale).
    pub fn new(
        storage: &'static TieredStorage,
        token: Option<String>,
        config: Arc<EdgeConfig>,
    ) -> Self {
        let test_clock = clock::test_clock_enabled();
        if test_clock {
            tracing::warn!(
                env = clock::TEST_CLOCK_ENV,
                "test clock hook enabled: POST /clock/advance on the admin listener ages the whole cache; never set this in production"
            );
        }
        AdminApp {
            storage,
            token,
            config,
            test_clock,
        }
    }

    /// The cache key form of a purged URL: its path plus the query parameters its route
    /// keeps, exactly as requests are keyed.
    fn key_url<'a>(&self, url: &'a str) -> std::borrow::Cow<'a, str> {
        let path = url.split_once('?').map_or(url, |(p, _)| p);
        cache_key_url(self.config.route(path), url)
    }

    /// `POST /clock/advance?ms=N` (when enabled).
    async fn advance(&self, query: &str) -> Response<Vec<u8>> {
        let ms = query_param(query, "ms")
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|ms| (1..=MAX_ADVANCE_MS).contains(ms));
        let Some(ms) = ms else {
            return json(
                StatusCode::BAD_REQUEST,
                format!(r#"{{"error":"give ms=1..{MAX_ADVANCE_MS}"}}"#),
            );
        };
        let (memory, disk) = self.storage.advance_clock(Duration::from_millis(ms)).await;
        tracing::info!(ms, memory, disk, "test clock advanced");
        json(
            StatusCode::OK,
            format!(r#"{{"advanced_ms":{ms},"memory":{memory},"disk":{disk}}}"#),
        )
    }

    fn authorized(&self, session: &ServerSession) -> bool {
        let Some(token) = self.token.as_deref() else {
            return false;
        };
        session
            .req_header()
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|t| constant_time_eq(t.as_bytes(), token.as_bytes()))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let path = req.uri.path().to_string();
        let method = req.method.as_str().to_string();
        let query = req.uri.query().unwrap_or("").to_string();
        match (method.as_str(), path.as_str()) {
            ("GET", "/metrics") => {
                self.storage.report();
                reply(
                    StatusCode::OK,
                    "text/plain; version=0.0.4",
                    METRICS.render(),
                )
            }
            ("POST" | "PURGE", "/purge") => {
                if !self.authorized(session) {
                    return json(
                        StatusCode::UNAUTHORIZED,
                        r#"{"error":"unauthorized"}"#.into(),
                    );
                }
                let url = query_param(&query, "url").and_then(percent_decode);
                let prefix = query_param(&query, "prefix").and_then(percent_decode);
                match (url, prefix) {
                    (Some(u), None) if u.starts_with('/') => {
                        let n = usize::from(self.storage.purge_url(&self.key_url(&u)).await);
                        json(StatusCode::OK, format!(r#"{{"purged":{n}}}"#))
                    }
                    (None, Some(p)) if p.starts_with('/') => {
                        let n = self.storage.purge_prefix(&p).await;
                        json(StatusCode::OK, format!(r#"{{"purged":{n}}}"#))
                    }
                    _ => json(
                        StatusCode::BAD_REQUEST,
                        r#"{"error":"give exactly one of url=/path or prefix=/path"}"#.into(),
                    ),
                }
            }
            ("POST", "/clock/advance") if self.test_clock => {
                if !self.authorized(session) {
                    return json(
                        StatusCode::UNAUTHORIZED,
                        r#"{"error":"unauthorized"}"#.into(),
                    );
                }
                self.advance(&query).await
            }
            _ => json(StatusCode::NOT_FOUND, r#"{"error":"not found"}"#.into()),
        }
    }
}
