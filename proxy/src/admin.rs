//! Admin listener: Prometheus `/metrics` and cache purge, on its own address.
//!
//! - `GET /metrics`: text exposition, no auth (bind the listener to a private address).
//! - `POST|PURGE /purge?url=/media/x`: invalidate one URL in both tiers.
//! - `POST|PURGE /purge?prefix=/media/`: invalidate every stored URL with that prefix.
//!
//! Purge requires `Authorization: Bearer <token>` with the token from the environment
//! variable named by `admin.token_env`; with no token configured every purge is refused.

use crate::metrics::METRICS;
use crate::storage::TieredStorage;
use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

/// The admin application.
pub struct AdminApp {
    /// Storage to purge from.
    pub storage: &'static TieredStorage,
    /// Expected bearer token; `None` refuses all purges.
    pub token: Option<String>,
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
                        let n = usize::from(self.storage.purge_url(&u).await);
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
            _ => json(StatusCode::NOT_FOUND, r#"{"error":"not found"}"#.into()),
        }
    }
}
