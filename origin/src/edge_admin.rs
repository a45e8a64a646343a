//! The console's client of the edges' admin listeners: which edges there are (the
//! `[console] edges` config), what their `/metrics` say about the cache, and purges sent
//! to every one of them.
//!
//! Requests go only to the configured admin URLs, never to a URL a user typed: a purge
//! names a path, which travels as a query parameter of the edge's own `/purge`. Every
//! request has a timeout and follows no redirect, so one stuck edge cannot hold a page.
//! The admin tokens come from the environment variables the config names, never from
//! the file.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::config::ConfigError;

/// Default `console.edge_timeout_ms`.
pub const DEFAULT_TIMEOUT_MS: u64 = 3_000;
/// Largest `/metrics` body read from an edge, bytes (ours are a few KiB).
const MAX_METRICS_BYTES: usize = 4 * 1024 * 1024;
/// Largest purge answer kept, bytes (ours are a few dozen).
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// Longest purge target accepted, bytes.
pub const MAX_TARGET_LEN: usize = 2048;

/// `[console]` as written: the edges the console shows and purges.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleFile {
    /// The edges whose admin listener the console reads `/metrics` from and sends purges
    /// to, as `[[console.edges]]` tables (see [`EdgeFile`]). Default none: the edge page
    /// says so. A purge goes to every edge listed.
    pub edges: Vec<EdgeFile>,
    /// Timeout of each request to an edge's admin listener, milliseconds (connect and
    /// answer). Default 3000; 100..=60000.
    pub edge_timeout_ms: u64,
}

impl Default for ConsoleFile {
    fn default() -> Self {
        ConsoleFile {
            edges: Vec::new(),
            edge_timeout_ms: DEFAULT_TIMEOUT_MS,
        }
    }
}

impl ConsoleFile {
    /// Validates the section at `key` (`console`).
    pub fn validate(&self, key: &str, errors: &mut Vec<ConfigError>) -> Option<EdgesConfig> {
        validate(
            &format!("{key}.edges"),
            &self.edges,
            &format!("{key}.edge_timeout_ms"),
            self.edge_timeout_ms,
            errors,
        )
    }

    /// Reads each edge's token from the variable it names (`env` looks one up).
    pub fn apply_env(&mut self, env: &impl Fn(&str) -> Option<String>) {
        for e in &mut self.edges {
            if !e.admin_token_env.is_empty() {
                e.token = env(&e.admin_token_env).filter(|t| !t.is_empty());
            }
        }
    }
}

/// One `[[console.edges]]` entry as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeFile {
    /// Name shown in the console, e.g. `"edge-1"`. Required; unique; 1..=64 characters.
    pub name: String,
    /// Base URL of the edge's admin listener (its `admin.listen`), e.g.
    /// `"http://10.0.0.5:9180"`. Required; `http://` or `https://`, no path or query.
    pub admin_url: String,
    /// Name of the environment variable holding the edge's admin token (the variable its
    /// `admin.token_env` names), e.g. `"KOMORA_EDGE1_ADMIN_TOKEN"`. Required. Unset at
    /// start: the metrics still show, purges on this edge are refused with that reason.
    pub admin_token_env: String,
    /// The token read from `admin_token_env` by `crate::config::apply_env`; never read
    /// from the file (a `token` key there is an unknown-key error).
    #[serde(skip)]
    pub token: Option<String>,
}

/// A validated edge. `Debug` never prints the token.
#[derive(Clone)]
pub struct Edge {
    pub name: String,
    /// The admin listener's base URL, without a trailing `/`.
    pub admin_url: url::Url,
    /// The variable the token comes from (shown when it is missing).
    pub token_env: String,
    pub token: Option<String>,
}

impl std::fmt::Debug for Edge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Edge")
            .field("name", &self.name)
            .field("admin_url", &self.admin_url.as_str())
            .field("token_env", &self.token_env)
            .field("token", &self.token.as_ref().map(|_| "SET"))
            .finish()
    }
}

/// The validated edge list and the timeout of each request to one of them.
#[derive(Debug, Clone)]
pub struct EdgesConfig {
    pub edges: Vec<Edge>,
    pub timeout: Duration,
}

impl Default for EdgesConfig {
    fn default() -> Self {
        EdgesConfig {
            edges: Vec::new(),
            timeout: Duration::from_millis(DEFAULT_TIMEOUT_MS),
        }
    }
}

/// Validates `edges` (at `key`, e.g. `console.edges`) and `timeout_ms` (at `timeout_key`),
/// pushing one error per problem.
pub fn validate(
    key: &str,
    edges: &[EdgeFile],
    timeout_key: &str,
    timeout_ms: u64,
    errors: &mut Vec<ConfigError>,
) -> Option<EdgesConfig> {
    let before = errors.len();
    if !(100..=60_000).contains(&timeout_ms) {
        errors.push(ConfigError::new(
            timeout_key,
            format!("{timeout_ms} is out of range 100..=60000"),
        ));
    }
    let mut out = Vec::new();
    for (i, e) in edges.iter().enumerate() {
        let k = format!("{key}[{i}]");
        let name = e.name.trim();
        if name.is_empty() || name.chars().count() > 64 {
            errors.push(ConfigError::new(
                format!("{k}.name"),
                "required, 1 to 64 characters",
            ));
        } else if edges[..i].iter().any(|o| o.name.trim() == name) {
            errors.push(ConfigError::new(
                format!("{k}.name"),
                format!("{name:?} is listed twice"),
            ));
        }
        let url = match url::Url::parse(&e.admin_url) {
            Ok(u) if u.scheme() != "http" && u.scheme() != "https" => {
                errors.push(ConfigError::new(
                    format!("{k}.admin_url"),
                    format!("scheme {:?} is not http or https", u.scheme()),
                ));
                None
            }
            Ok(u) if u.path() != "/" || u.query().is_some() || u.fragment().is_some() => {
                errors.push(ConfigError::new(
                    format!("{k}.admin_url"),
                    "give the admin listener's base URL only (no path or query)",
                ));
                None
            }
            Ok(u) if !u.username().is_empty() || u.password().is_some() => {
                errors.push(ConfigError::new(
                    format!("{k}.admin_url"),
                    "no credentials in the URL: name the token's variable in admin_token_env",
                ));
                None
            }
            Ok(u) => Some(u),
            Err(err) => {
                errors.push(ConfigError::new(
                    format!("{k}.admin_url"),
                    format!("{:?} is not a URL: {err}", e.admin_url),
                ));
                None
            }
        };
        let env_ok = !e.admin_token_env.is_empty()
            && e.admin_token_env
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !env_ok {
            errors.push(ConfigError::new(
                format!("{k}.admin_token_env"),
                "required: the name of the environment variable holding the edge's admin token",
            ));
        }
        if let Some(admin_url) = url {
            out.push(Edge {
                name: name.to_string(),
                admin_url,
                token_env: e.admin_token_env.clone(),
                token: e.token.clone().filter(|t| !t.is_empty()),
            });
        }
    }
    (errors.len() == before).then(|| EdgesConfig {
        edges: out,
        timeout: Duration::from_millis(timeout_ms),
    })
}

/// What to purge: one URL, or every stored URL under a prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PurgeTarget {
    Url(String),
    Prefix(String),
}

impl PurgeTarget {
    /// Parses what an operator typed: a path (`/media/<sha256>`) or a whole URL of the
    /// site, of which only the path and query are kept (the edge caches by those).
    /// Errors say what is wrong, for a 400 page.
    pub fn parse(kind: &str, target: &str) -> Result<PurgeTarget, String> {
        let t = target.trim();
        let path = if t.starts_with("http://") || t.starts_with("https://") {
            let u = url::Url::parse(t).map_err(|e| format!("{t:?} is not a URL: {e}"))?;
            match u.query() {
                Some(q) => format!("{}?{q}", u.path()),
                None => u.path().to_string(),
            }
        } else {
            t.to_string()
        };
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

/// Cache figures of one edge, from its `/metrics`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EdgeStats {
    /// `komora_edge_requests_total` by `cache_status`.
    pub requests: BTreeMap<String, u64>,
    /// Per tier (`memory`, `disk`), in name order.
    pub tiers: Vec<TierStats>,
    /// `komora_edge_integrity_failures_total`.
    pub integrity_failures: u64,
    /// `komora_edge_cache_write_failures_total`.
    pub write_failures: u64,
}

/// One tier's figures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TierStats {
    pub tier: String,
    /// `komora_edge_cache_entries`.
    pub entries: i64,
    /// `komora_edge_cache_bytes`.
    pub bytes: i64,
    /// `komora_edge_evictions_total`.
    pub evictions: u64,
    /// `komora_edge_purges_total`.
    pub purges: u64,
    /// `komora_edge_bytes_served_total`.
    pub bytes_served: u64,
}

/// Cache statuses answered from the cache (`REVALIDATED`: a stored copy, confirmed by a 304).
const HIT_STATUSES: [&str; 4] = ["HIT", "STALE", "UPDATING", "REVALIDATED"];
/// Cache statuses that went to the origin for a cacheable request.
const MISS_STATUSES: [&str; 2] = ["MISS", "EXPIRED"];

impl EdgeStats {
    /// Hits over cache lookups (hits, misses and expired; `BYPASS` is not a lookup);
    /// `None` before the first lookup.
    pub fn hit_ratio(&self) -> Option<f64> {
        let sum = |names: &[&str]| -> u64 {
            names
                .iter()
                .map(|n| self.requests.get(*n).copied().unwrap_or(0))
                .sum()
        };
        let hits = sum(&HIT_STATUSES);
        let lookups = hits + sum(&MISS_STATUSES);
        // u64 → f64 loses precision only past 2^53 requests.
        #[allow(clippy::cast_precision_loss)]
        (lookups > 0).then(|| hits as f64 / lookups as f64)
    }

    /// `komora_edge_evictions_total` over every tier.
    pub fn evictions(&self) -> u64 {
        self.tiers.iter().map(|t| t.evictions).sum()
    }

    /// The figures in Prometheus text exposition `text`; unknown series are ignored.
    pub fn from_metrics(text: &str) -> EdgeStats {
        let mut s = EdgeStats::default();
        let mut tiers: BTreeMap<String, TierStats> = BTreeMap::new();
        for (name, labels, value) in text.lines().filter_map(sample) {
            let label = |k: &str| {
                labels
                    .iter()
                    .find(|(n, _)| n == k)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            };
            // Counters and gauges are integers here; a fractional one would be a bug upstream.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let (count, gauge) = (value.max(0.0) as u64, value as i64);
            match name {
                "komora_edge_requests_total" => {
                    s.requests.insert(label("cache_status"), count);
                }
                "komora_edge_integrity_failures_total" => s.integrity_failures = count,
                "komora_edge_cache_write_failures_total" => s.write_failures = count,
                "komora_edge_cache_entries"
                | "komora_edge_cache_bytes"
                | "komora_edge_evictions_total"
                | "komora_edge_purges_total"
                | "komora_edge_bytes_served_total" => {
                    let t = label("tier");
                    let ts = tiers.entry(t.clone()).or_insert_with(|| TierStats {
                        tier: t,
                        ..TierStats::default()
                    });
                    match name {
                        "komora_edge_cache_entries" => ts.entries = gauge,
                        "komora_edge_cache_bytes" => ts.bytes = gauge,
                        "komora_edge_evictions_total" => ts.evictions = count,
                        "komora_edge_purges_total" => ts.purges = count,
                        _ => ts.bytes_served = count,
                    }
                }
                _ => {}
            }
        }
        s.tiers = tiers.into_values().collect();
        s
    }
}

/// One sample line of the text exposition format: `name{k="v",…} value [timestamp]`.
/// `None` for comments, blank lines and lines that do not parse.
fn sample(line: &str) -> Option<(&str, Vec<(String, String)>, f64)> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace())?;
    let (name, mut rest) = line.split_at(name_end);
    let mut labels = Vec::new();
    if let Some(body) = rest.strip_prefix('{') {
        let mut chars = body.char_indices();
        let mut key = String::new();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '}' => break i + 1,
                ',' | ' ' => {}
                '=' => {
                    // A quoted value with \\, \" and \n escapes.
                    if chars.next()?.1 != '"' {
                        return None;
                    }
                    let mut value = String::new();
                    loop {
                        match chars.next()?.1 {
                            '"' => break,
                            '\\' => match chars.next()?.1 {
                                'n' => value.push('\n'),
                                other => value.push(other),
                            },
                            other => value.push(other),
                        }
                    }
                    labels.push((std::mem::take(&mut key), value));
                }
                other => key.push(other),
            }
        };
        rest = body.get(end..)?;
    }
    let value = rest.split_whitespace().next()?.parse::<f64>().ok()?;
    Some((name, labels, value))
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

    const TEXT: &str = r#"# HELP komora_edge_requests_total Requests by cache status
# TYPE komora_edge_requests_total counter
komora_edge_requests_total{cache_status="HIT"} 6
komora_edge_requests_total{cache_status="MISS"} 2
komora_edge_requests_total{cache_status="BYPASS"} 40
komora_edge_requests_total{cache_status="REVALIDATED"} 1
komora_edge_requests_total{cache_status="EXPIRED"} 1
komora_edge_cache_entries{tier="disk"} 3
komora_edge_cache_entries{tier="memory"} 2
komora_edge_cache_bytes{tier="disk"} 12345
komora_edge_cache_bytes{tier="memory"} 999
komora_edge_evictions_total{tier="memory"} 4
komora_edge_purges_total{tier="disk"} 1
komora_edge_integrity_failures_total 7
komora_edge_responses_total{status_class="2xx",cache_status="HIT"} 6
odd_series{a="x\"y\\z",b="1"} 5 1700000000
"#;

    #[test]
    fn metrics_text_gives_hit_ratio_tiers_evictions_and_integrity_failures() {
        let s = EdgeStats::from_metrics(TEXT);
        // (HIT 6 + REVALIDATED 1) / (7 + MISS 2 + EXPIRED 1); BYPASS is not a lookup.
        assert_eq!(s.hit_ratio(), Some(0.7));
        assert_eq!(s.integrity_failures, 7);
        assert_eq!(s.evictions(), 4);
        let disk = &s.tiers[0];
        assert_eq!(
            (disk.tier.as_str(), disk.entries, disk.bytes, disk.purges),
            ("disk", 3, 12345, 1)
        );
        let mem = &s.tiers[1];
        assert_eq!(
            (mem.tier.as_str(), mem.entries, mem.bytes),
            ("memory", 2, 999)
        );
        assert_eq!(EdgeStats::from_metrics("").hit_ratio(), None);
    }

    #[test]
    fn sample_lines_with_escaped_labels_and_timestamps_parse() {
        let (name, labels, v) = sample(r#"odd_series{a="x\"y\\z",b="1"} 5 1700000000"#).unwrap();
        assert_eq!(name, "odd_series");
        assert_eq!(labels[0], ("a".into(), "x\"y\\z".into()));
        assert_eq!(labels[1], ("b".into(), "1".into()));
        assert_eq!(v, 5.0);
        assert!(sample("# comment").is_none());
        assert!(sample("broken{a=\"x} 1").is_none());
        assert!(sample("no_value").is_none());
    }

    #[test]
    fn purge_targets_are_paths_and_urls_keep_only_path_and_query() {
        assert_eq!(
            PurgeTarget::parse("url", " /media/abc "),
            Ok(PurgeTarget::Url("/media/abc".into()))
        );
        assert_eq!(
            PurgeTarget::parse("prefix", "https://cdn.example.com/media/?x=1"),
            Ok(PurgeTarget::Prefix("/media/?x=1".into()))
        );
        assert!(PurgeTarget::parse("url", "media/abc").is_err());
        assert!(PurgeTarget::parse("url", "/a\nb").is_err());
        assert!(PurgeTarget::parse("all", "/").is_err());
        assert!(PurgeTarget::parse("url", &format!("/{}", "a".repeat(MAX_TARGET_LEN))).is_err());
    }

    #[test]
    fn edge_config_errors_name_the_key() {
        let edge = |name: &str, url: &str, env: &str| EdgeFile {
            name: name.into(),
            admin_url: url.into(),
            admin_token_env: env.into(),
            token: None,
        };
        let mut errors = Vec::new();
        let ok = validate(
            "console.edges",
            &[edge("a", "http://127.0.0.1:9180", "A_TOKEN")],
            "console.edge_timeout_ms",
            3000,
            &mut errors,
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            ok.unwrap().edges[0].admin_url.as_str(),
            "http://127.0.0.1:9180/"
        );
        let bad = [
            edge("a", "http://127.0.0.1:9180/metrics", "A"),
            edge("a", "ftp://x", "A"),
            edge("", "http://u:p@h", "bad-name"),
        ];
        let mut errors = Vec::new();
        assert!(validate(
            "console.edges",
            &bad,
            "console.edge_timeout_ms",
            5,
            &mut errors
        )
        .is_none());
        let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "console.edge_timeout_ms",
                "console.edges[0].admin_url",
                "console.edges[1].name",
                "console.edges[1].admin_url",
                "console.edges[2].name",
                "console.edges[2].admin_url",
                "console.edges[2].admin_token_env",
            ]
        );
        let debug = format!(
            "{:?}",
            Edge {
                name: "a".into(),
                admin_url: url::Url::parse("http://h").unwrap(),
                token_env: "A".into(),
                token: Some("s3cret".into()),
            }
        );
        assert!(!debug.contains("s3cret"), "{debug}");
    }
}
