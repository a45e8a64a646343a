//! The console's client of the edges' admin listeners: which edges there are (the
//! `[console] edges` config), what their `/metrics` say about the cache, and purges sent
//! to every one of them.
//!
//! Requests go only to the configured admin URLs, never to a URL a user typed: a purge
//! names a path, which travels as a query parameter of the edge's own `/purge`. Every
//! request has a timeout and follows no redirect, so one stuck edge cannot hold a page.
//! The admin tokens come from the environment variables the config names, never from
//! the file.

pub mod config;
pub mod metrics;

pub use config::{ConsoleFile, Edge, EdgeFile, EdgesConfig};
pub use metrics::{EdgeStats, TierStats};

/// Largest `/metrics` body read from an edge, bytes (ours are a few KiB).
const MAX_METRICS_BYTES: usize = 4 * 1024 * 1024;
/// Largest purge answer kept, bytes (ours are a few dozen).
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// Longest purge target accepted, bytes.
pub const MAX_TARGET_LEN: usize = 2048;

/// What to purge: one URL, or every stored URL under a prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PurgeTarget {
    Url(String),
    Prefix(String),
}

impl PurgeTarget {
    /// Parses what an operator typed: a path (`/media/<sha256>`) or a whole URL of the
    /// site, of which only the path and query are kept (the edge caches by those). A
    /// media URL loses its query too: the edge's `/media/` route caches one copy per
    /// object whatever the signature (`cache_key_query = "none"`, its default there), so
    /// a signed URL pasted from a page names the entry by its path.
    /// Errors say what is wrong, for a 400 page.
    pub fn parse(kind: &str, target: &str) -> Result<PurgeTarget, String> {
        let t = target.trim();
        let mut path = if t.starts_with("http://") || t.starts_with("https://") {
            let u = url::Url::parse(t).map_err(|e| format!("{t:?} is not a URL: {e}"))?;
            match u.query() {
                Some(q) => format!("{}?{q}", u.path()),
                None => u.path().to_string(),
            }
        } else {
            t.to_string()
        };
        if path.starts_with("/media/") {
            if let Some(i) = path.find('?') {
                path.truncate(i);
            }
        }
        if !path.starts_with('/') {
            return Err("give a path starting with / (e.g. /media/<sha256>) or a URL".into());
        }
        if path.len() > MAX_TARGET_LEN {
            return Err(format!("longer than {MAX_TARGET_LEN} bytes"));
        }
        if path.chars().any(char::is_control) {
            return Err("control characters are not allowed".into());
        }
        match kind {
            "url" => Ok(PurgeTarget::Url(path)),
            "prefix" => Ok(PurgeTarget::Prefix(path)),
            other => Err(format!("purge kind {other:?} is not url or prefix")),
        }
    }

    /// `("url" | "prefix", path)`: the edge's query parameter and its value.
    pub fn parts(&self) -> (&'static str, &str) {
        match self {
            PurgeTarget::Url(p) => ("url", p),
            PurgeTarget::Prefix(p) => ("prefix", p),
        }
    }
}

impl std::fmt::Display for PurgeTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (k, p) = self.parts();
        write!(f, "{k} {p}")
    }
}

/// One edge's answer to a purge.
#[derive(Debug, Clone)]
pub struct PurgeOutcome {
    pub edge: String,
    /// The edge's HTTP status and body, or why there was none.
    pub answer: Result<(u16, String), String>,
}

impl PurgeOutcome {
    /// The edge answered 2xx.
    pub fn ok(&self) -> bool {
        matches!(self.answer, Ok((s, _)) if (200..300).contains(&s))
    }
}

/// Talks to the configured edges. Cheap to clone.
#[derive(Clone)]
pub struct EdgeClient {
    http: reqwest::Client,
    config: std::sync::Arc<EdgesConfig>,
}

impl EdgeClient {
    /// A client for `config`'s edges (no proxy, no redirects, `config.timeout` per request).
    pub fn new(config: EdgesConfig) -> Result<EdgeClient, reqwest::Error> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .build()?;
        Ok(EdgeClient {
            http,
            config: std::sync::Arc::new(config),
        })
    }

    /// The configured edges, in config order.
    pub fn edges(&self) -> &[Edge] {
        &self.config.edges
    }

    /// `edge`'s cache figures, or why they could not be had.
    pub async fn stats(&self, edge: &Edge) -> Result<EdgeStats, String> {
        let url = edge
            .admin_url
            .join("metrics")
            .map_err(|e| format!("admin URL: {e}"))?;
        let resp = self.http.get(url).send().await.map_err(|e| describe(&e))?;
        let status = resp.status();
        let body = read_capped(resp, MAX_METRICS_BYTES).await?;
        if !status.is_success() {
            return Err(format!("/metrics answered {status}"));
        }
        Ok(EdgeStats::from_metrics(&body))
    }

    /// Every edge's figures, fetched at once, in config order.
    pub async fn all_stats(&self) -> Vec<(Edge, Result<EdgeStats, String>)> {
        let fetches = self.config.edges.iter().map(|e| async move {
            let stats = self.stats(e).await;
            (e.clone(), stats)
        });
        futures::future::join_all(fetches).await
    }

    /// Sends `target`'s purge to every edge at once; one outcome per edge, in config order.
    pub async fn purge(&self, target: &PurgeTarget) -> Vec<PurgeOutcome> {
        let sends = self.config.edges.iter().map(|e| async move {
            PurgeOutcome {
                edge: e.name.clone(),
                answer: self.purge_one(e, target).await,
            }
        });
        futures::future::join_all(sends).await
    }

    async fn purge_one(&self, edge: &Edge, target: &PurgeTarget) -> Result<(u16, String), String> {
        let Some(token) = edge.token.as_deref() else {
            return Err(format!(
                "not sent: {} is not set in the origin's environment",
                edge.token_env
            ));
        };
        let mut url = edge
            .admin_url
            .join("purge")
            .map_err(|e| format!("admin URL: {e}"))?;
        let (k, v) = target.parts();
        url.query_pairs_mut().append_pair(k, v);
        let resp = self
            .http
            .post(url)
            .bearer_auth(token)
            .send()
            .await
            .map_err(|e| describe(&e))?;
        let status = resp.status().as_u16();
        Ok((status, read_capped(resp, MAX_ANSWER_BYTES).await?))
    }
}

/// A transport error in words an operator can act on.
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "unreachable (connection failed)".to_string()
    } else {
        format!("request failed: {e}")
    }
}

/// The body of `resp` as text, refusing more than `max` bytes.
async fn read_capped(mut resp: reqwest::Response, max: usize) -> Result<String, String> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| describe(&e))? {
        if body.len() + chunk.len() > max {
            return Err(format!("answer larger than {max} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purge_targets_are_paths_and_urls_keep_only_path_and_query() {
        assert_eq!(
            PurgeTarget::parse("url", " /media/abc "),
            Ok(PurgeTarget::Url("/media/abc".into()))
        );
        assert_eq!(
            PurgeTarget::parse("prefix", "https://cdn.example.com/files/?x=1"),
            Ok(PurgeTarget::Prefix("/files/?x=1".into()))
        );
        assert_eq!(
            PurgeTarget::parse("url", "http://127.0.0.1:8080/media/abc?exp=1&sig=ff"),
            Ok(PurgeTarget::Url("/media/abc".into())),
            "media are cached by path"
        );
        assert_eq!(
            PurgeTarget::parse("url", "/api/x?page=2"),
            Ok(PurgeTarget::Url("/api/x?page=2".into()))
        );
        assert!(PurgeTarget::parse("url", "media/abc").is_err());
        assert!(PurgeTarget::parse("url", "/a\nb").is_err());
        assert!(PurgeTarget::parse("all", "/").is_err());
        assert!(PurgeTarget::parse("url", &format!("/{}", "a".repeat(MAX_TARGET_LEN))).is_err());
    }
}
