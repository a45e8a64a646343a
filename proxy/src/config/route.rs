//! `[[route]]` validated into per-prefix policies, and the default routes.

use std::time::Duration;

use super::check::{Checker, MAX_SECS};
use super::defaults::*;
use super::file::{RawKeyQuery, RawRoute};

/// What a route does with requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteMode {
    /// Cacheable GET/HEAD responses are stored.
    Cache,
    /// Everything passes through.
    Bypass,
    /// Answered 404 by the edge; nothing reaches the origin.
    Deny,
}

/// Validated `[[route]]`.
#[derive(Debug, Clone)]
pub struct Route {
    /// Path prefix.
    pub prefix: String,
    /// Cache or bypass.
    pub mode: RouteMode,
    /// Freshness when the origin gives none.
    pub default_ttl: Duration,
    /// Default stale-if-error window.
    pub stale_if_error: Duration,
    /// Default stale-while-revalidate window.
    pub stale_while_revalidate: Duration,
    /// Client-facing max-age override, `None` when 0.
    pub client_max_age: Option<Duration>,
    /// Which query parameters are part of the cache key.
    pub cache_key_query: KeyQuery,
    /// Signed URLs required: the keys that verify them.
    pub signed: Option<std::sync::Arc<crate::signing::UrlVerifier>>,
    /// HTTP caching choices left to the cache (the `store_any_status` … keys).
    pub semantics: crate::rfc::Semantics,
}

/// Which query parameters are part of a route's cache key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyQuery {
    /// The whole query string.
    All,
    /// None: the path alone.
    None,
    /// Only these parameters, in request order.
    Keep(Vec<String>),
}

/// Origin paths the default routes deny: its Prometheus metrics, its readiness probe (it
/// tells the internet whether the database is up) and its queue admin API.
const DENY_METRICS: &str = "/metrics";
/// See [`DENY_METRICS`].
const DENY_READYZ: &str = "/readyz";
/// See [`DENY_METRICS`].
const DENY_ADMIN: &str = "/admin/";

/// Validates `[[route]]` (the default routes when the file has none), longest prefix first.
pub(super) fn validate_routes(c: &mut Checker, raw: Option<Vec<RawRoute>>) -> Vec<Route> {
    let raw_routes = raw.unwrap_or_else(|| {
        let deny = |p: &str| RawRoute {
            prefix: Some(p.to_string()),
            mode: Some("deny".to_string()),
            ..Default::default()
        };
        vec![
            // The origin's probes, metrics and queue admin API are not for the internet.
            deny(DENY_METRICS),
            deny(DENY_READYZ),
            deny(DENY_ADMIN),
            RawRoute {
                prefix: Some("/media/".to_string()),
                client_max_age_secs: Some(DEFAULT_MEDIA_CLIENT_MAX_AGE_SECS),
                ..Default::default()
            },
            RawRoute {
                prefix: Some("/".to_string()),
                mode: Some("bypass".to_string()),
                ..Default::default()
            },
        ]
    });
    let mut routes = Vec::new();
    for (i, r) in raw_routes.into_iter().enumerate() {
        let key = |f: &str| format!("route[{i}].{f}");
        let prefix = match r.prefix {
            Some(p) if p.starts_with('/') => Some(p),
            Some(p) => {
                c.err(key("prefix"), format!("must start with '/', got {p:?}"));
                None
            }
            None => {
                c.err(key("prefix"), "required");
                None
            }
        };
        if let Some(p) = &prefix {
            if routes.iter().any(|x: &Route| &x.prefix == p) {
                c.err(key("prefix"), format!("duplicate prefix {p:?}"));
            }
        }
        let mode = match r.mode.as_deref().unwrap_or("cache") {
            "cache" => RouteMode::Cache,
            "bypass" => RouteMode::Bypass,
            "deny" => RouteMode::Deny,
            other => {
                c.err(
                    key("mode"),
                    format!("must be \"cache\", \"bypass\" or \"deny\", got {other:?}"),
                );
                RouteMode::Bypass
            }
        };
        let secs = |c: &mut Checker, f: &str, v, d| {
            Duration::from_secs(c.range(&key(f), v, d, 0, MAX_SECS))
        };
        let default_ttl = secs(c, "default_ttl_secs", r.default_ttl_secs, DEFAULT_TTL_SECS);
        let stale_if_error = secs(
            c,
            "stale_if_error_secs",
            r.stale_if_error_secs,
            DEFAULT_STALE_IF_ERROR_SECS,
        );
        let stale_while_revalidate = secs(
            c,
            "stale_while_revalidate_secs",
            r.stale_while_revalidate_secs,
            DEFAULT_STALE_WHILE_REVALIDATE_SECS,
        );
        let cma = secs(
            c,
            "client_max_age_secs",
            r.client_max_age_secs,
            DEFAULT_CLIENT_MAX_AGE_SECS,
        );
        let media = prefix.as_deref().is_some_and(|p| p.starts_with("/media/"));
        let cache_key_query = match r.cache_key_query {
            None if media => KeyQuery::None,
            None => KeyQuery::All,
            Some(RawKeyQuery::Mode(m)) => match m.as_str() {
                "all" => KeyQuery::All,
                "none" => KeyQuery::None,
                other => {
                    c.err(
                        key("cache_key_query"),
                        format!("must be \"all\", \"none\" or a list of names, got {other:?}"),
                    );
                    KeyQuery::All
                }
            },
            Some(RawKeyQuery::Names(names)) => {
                let bad = names
                    .iter()
                    .find(|n| n.is_empty() || n.contains(['&', '=', '#']));
                if let Some(n) = bad {
                    c.err(
                        key("cache_key_query"),
                        format!("{n:?} is not a query parameter name"),
                    );
                }
                KeyQuery::Keep(names)
            }
        };
        let keys_env = r
            .signing_keys_env
            .unwrap_or_else(|| crate::signing::DEFAULT_KEYS_ENV.to_string());
        if keys_env.is_empty() {
            c.err(key("signing_keys_env"), "must not be empty");
        }
        let signed = if r.signed_urls.unwrap_or(false) {
            let value = std::env::var(&keys_env).ok();
            match crate::signing::UrlVerifier::from_value(&keys_env, value.as_deref()) {
                Ok(v) => Some(std::sync::Arc::new(v)),
                Err(e) => {
                    c.err(key("signed_urls"), e);
                    None
                }
            }
        } else {
            None
        };
        let percent = c.range(
            &key("heuristic_percent"),
            r.heuristic_percent,
            DEFAULT_HEURISTIC_PERCENT,
            0,
            100,
        );
        let heuristic_max = secs(
            c,
            "heuristic_max_secs",
            r.heuristic_max_secs,
            crate::rfc::DEFAULT_HEURISTIC_MAX_SECS,
        );
        let semantics = crate::rfc::Semantics {
            store_any_status: r.store_any_status.unwrap_or(false),
            heuristic: (percent > 0).then(|| crate::rfc::Heuristic {
                percent: u32::try_from(percent).unwrap_or(100),
                max: heuristic_max,
            }),
            request_directives: r.request_directives.unwrap_or(false),
            targeted: match r.targeted_fields {
                None => vec![http::header::HeaderName::from_static(
                    crate::rfc::DEFAULT_TARGETED_FIELD,
                )],
                Some(names) => names
                    .iter()
                    .filter_map(|n| match http::header::HeaderName::try_from(n.as_str()) {
                        Ok(h) => Some(h),
                        Err(_) => {
                            c.err(key("targeted_fields"), format!("not a header name: {n:?}"));
                            None
                        }
                    })
                    .collect(),
            },
        };
        let Some(prefix) = prefix else { continue };
        routes.push(Route {
            prefix,
            mode,
            default_ttl,
            stale_if_error,
            stale_while_revalidate,
            client_max_age: (!cma.is_zero()).then_some(cma),
            cache_key_query,
            signed,
            semantics,
        });
    }
    routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
    routes
}
