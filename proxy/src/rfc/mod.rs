//! HTTP caching semantics of a shared cache (RFC 9111, RFC 9213), kept apart from the proxy
//! hooks so each rule can be read next to the RFC section it implements.
//!
//! - [`Semantics`]: a route's choices where the RFCs allow them, and RFC 9213 targeted fields.
//! - [`directives`]: what may be stored, hop-by-hop fields, the 304 header update.
//! - [`freshness`]: freshness lifetime and current age (RFC 9111 §4.2).
//! - [`head`]: HEAD responses updating or invalidating a stored GET response (§4.3.5).
//! - [`invalidation`]: what an unsafe request's answer invalidates besides its target (§4.4).
//! - [`request`]: request `Cache-Control` directives, a route option (§5.2.1).
//! - [`vary`]: secondary cache keys (RFC 9111 §4.1): which stored variant answers a request.
//!
//! `service.rs` calls into these from its pingora hooks; `policy.rs` uses them to decide
//! what is stored and for how long.

pub mod directives;
pub mod freshness;
pub mod head;
pub mod invalidation;
pub mod request;
pub mod vary;

/// Default cap of a heuristic freshness lifetime (§4.2.2): one day, as common caches use.
pub const DEFAULT_HEURISTIC_MAX_SECS: u64 = 86_400;

/// A route's choices where the RFCs leave them to the cache (MAY); everything the RFCs
/// require (MUST) holds on every cache route regardless. Built from the `[[route]]` keys
/// documented in `config.rs` and `config/edge.toml`.
#[derive(Debug, Clone)]
pub struct Semantics {
    /// `store_any_status`: a final response of any status with explicit freshness is stored
    /// (§3 allows it); off, only 200 is stored (the edge's media behaviour).
    pub store_any_status: bool,
    /// `heuristic_percent`: heuristic freshness (§4.2.2) as this fraction of
    /// `Date − Last-Modified`, for heuristically cacheable statuses; `None` = off (the route's
    /// `default_ttl` applies to a 200 without explicit freshness instead).
    pub heuristic: Option<Heuristic>,
    /// `request_directives`: honor the client's `Cache-Control` request directives
    /// (§5.2.1); off, a shared cache may ignore them.
    pub request_directives: bool,
    /// `targeted_fields`: RFC 9213 targeted cache-control fields, in priority order; the
    /// first present one replaces `Cache-Control` and `Expires` for this edge.
    pub targeted: Vec<http::HeaderName>,
}

/// The targeted field a CDN honors by default (RFC 9213 §3: `CDN-Cache-Control`).
pub const DEFAULT_TARGETED_FIELD: &str = "cdn-cache-control";

impl Semantics {
    /// The cache-control that governs this edge for `resp` and the field it came from: the
    /// first targeted field present and valid ([`targeted_valid`]), else `Cache-Control`.
    pub fn cache_control(
        &self,
        resp: &pingora::http::ResponseHeader,
    ) -> (
        Option<pingora::cache::cache_control::CacheControl>,
        &http::HeaderName,
    ) {
        use pingora::cache::cache_control::CacheControl;
        for name in &self.targeted {
            if !targeted_valid(&resp.headers, name) {
                continue;
            }
            if let Some(cc) = CacheControl::from_resp_headers_named(name.as_str(), resp) {
                return (Some(cc), name);
            }
        }
        (
            CacheControl::from_resp_headers(resp),
            &http::header::CACHE_CONTROL,
        )
    }

    /// Remove the targeted fields from a response going to a client or into storage (they
    /// are for this edge only).
    pub fn strip_targeted(&self, resp: &mut pingora::http::ResponseHeader) {
        for name in &self.targeted {
            resp.remove_header(name);
        }
    }
}

impl Default for Semantics {
    fn default() -> Self {
        Semantics {
            store_any_status: false,
            heuristic: None,
            request_directives: false,
            targeted: vec![http::HeaderName::from_static(DEFAULT_TARGETED_FIELD)],
        }
    }
}

/// The `Via` member the edge adds to every request it forwards (RFC 9110 §7.6.3: a gateway
/// MUST send one in each inbound request): the protocol version it received the request
/// with, and a pseudonym rather than a host name (the edge's address is nobody's business).
/// Appended after any `Via` the client sent, so the chain stays in order.
pub fn via(received: http::Version) -> &'static str {
    match received {
        http::Version::HTTP_09 => "0.9 komora-edge",
        http::Version::HTTP_10 => "1.0 komora-edge",
        http::Version::HTTP_2 => "2 komora-edge",
        http::Version::HTTP_3 => "3 komora-edge",
        _ => "1.1 komora-edge",
    }
}

/// Whether the targeted field `name` of a response is one the edge follows (RFC 9213 §2.2):
/// present, not empty, and its lines combined parse as a Structured Fields Dictionary. An
/// empty or unparsable one MUST be ignored, as if absent, so `Cache-Control` decides again.
pub fn targeted_valid(headers: &http::HeaderMap, name: &http::HeaderName) -> bool {
    let mut combined: Vec<u8> = Vec::new();
    for line in headers.get_all(name) {
        if !combined.is_empty() {
            combined.extend_from_slice(b", ");
        }
        combined.extend_from_slice(line.as_bytes());
    }
    !combined.trim_ascii().is_empty() && sfv::Parser::parse_dictionary(&combined).is_ok()
}

/// Heuristic freshness parameters (§4.2.2).
#[derive(Debug, Clone, Copy)]
pub struct Heuristic {
    /// Percent of `Date − Last-Modified`, 1..=100.
    pub percent: u32,
    /// Upper bound of the heuristic lifetime.
    pub max: std::time::Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targeted_fields_must_be_sf_dictionaries() {
        let name = http::HeaderName::from_static(DEFAULT_TARGETED_FIELD);
        let with = |vals: &[&'static str]| {
            let mut h = http::HeaderMap::new();
            for v in vals {
                h.append(name.clone(), http::HeaderValue::from_static(v));
            }
            targeted_valid(&h, &name)
        };
        assert!(with(&["max-age=60"]));
        assert!(with(&["max-age=60, stale-if-error=30", "no-transform"]));
        assert!(with(&["private=\"set-cookie\", must-revalidate"]));
        assert!(!with(&[]));
        assert!(!with(&[""]));
        assert!(!with(&["  "]));
        // Keys are lowercase; a value is an item, not free text.
        assert!(!with(&["Max-Age=60"]));
        assert!(!with(&["max-age=60 seconds"]));
        assert!(!with(&["max-age=60,,"]));
    }
}
