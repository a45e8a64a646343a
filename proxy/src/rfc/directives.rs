//! Which responses a shared cache may store (RFC 9111 §3, §5.2.2) and which header fields
//! never travel with them (RFC 9110 §7.6.1), plus the header update a 304 makes (§3.2, §4.3.4).

use http::header::{self, HeaderName};
use http::HeaderMap;
use pingora::http::ResponseHeader;

/// Statuses whose caching semantics the edge implements, for `must-understand`
/// (§5.2.2.3: with it, `no-store` is overridden only for understood statuses, and a response
/// with a status the cache does not understand is not stored). 206 is not among them: the
/// edge stores complete representations only (§3.3 lets it).
pub fn understood(status: u16) -> bool {
    matches!(
        status,
        200 | 203 | 204 | 300 | 301 | 302 | 303 | 307 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// Heuristically cacheable statuses (RFC 9110 §15.1) minus 206, which the edge never stores.
pub fn heuristically_cacheable(status: u16) -> bool {
    matches!(
        status,
        200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// Whether a response with this status can be stored at all: a final, complete response.
/// 1xx are interim (never a stored response), 206 is partial, 304 carries no representation.
pub fn final_complete(status: u16) -> bool {
    status >= 200 && status != 206 && status != 304
}

/// Hop-by-hop fields that are not listed in `Connection` but never forwarded or stored.
const HOP_BY_HOP: [&str; 5] = ["keep-alive", "proxy-connection", "te", "upgrade", "trailer"];

/// Remove `Connection`, every field it names and the other hop-by-hop fields (RFC 9110
/// §7.6.1: a proxy MUST NOT forward them; §3.1 of RFC 9111: a cache MUST NOT store them).
pub fn strip_connection_fields(resp: &mut ResponseHeader) {
    let named: Vec<HeaderName> = resp
        .headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        // `close` and `keep-alive` are options, not fields, but removing them is harmless.
        resp.remove_header(&n);
    }
    resp.remove_header(&header::CONNECTION);
    for n in HOP_BY_HOP {
        resp.remove_header(n);
    }
}

/// Fields of a 304 that do not replace the stored ones (§3.2): framing and content coding
/// describe the stored body, not the 304; `Vary` changes are not followed over a 304 (the
/// variant's key would change under it).
fn kept_on_update(name: &HeaderName) -> bool {
    [
        header::CONTENT_LENGTH,
        header::CONTENT_ENCODING,
        header::CONTENT_RANGE,
        header::TRANSFER_ENCODING,
        header::VARY,
    ]
    .contains(name)
}

/// The stored header updated by a 304's header fields (§3.2, §4.3.4): every field the 304
/// carries replaces the stored field of that name, except those of [`kept_on_update`].
/// The stored `Age` is dropped (the 304's own, if any, is the new one), and a 304 without
/// `Date` dates the update at `received` (RFC 9110 §6.6.1), so the stored response's age
/// restarts from this validation rather than from its first fetch.
pub fn updated_by_304(
    stored: &ResponseHeader,
    not_modified: &HeaderMap,
    received: std::time::SystemTime,
) -> ResponseHeader {
    let mut merged = stored.clone();
    merged.remove_header(&header::AGE);
    for name in not_modified.keys() {
        if kept_on_update(name) {
            continue;
        }
        merged.remove_header(name);
        for v in not_modified.get_all(name) {
            // Infallible for a name and value that came from a parsed header.
            let _ = merged.append_header(name.clone(), v.clone());
        }
    }
    if !not_modified.contains_key(header::DATE) {
        let _ = merged.insert_header(header::DATE, httpdate::fmt_http_date(received));
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_named_fields_are_removed() {
        let mut r = ResponseHeader::build(200, None).unwrap(); // unwrap: test-only
        for (k, v) in [
            ("connection", "x-secret, close"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("x-kept", "2"),
        ] {
            r.append_header(k, v).unwrap(); // unwrap: test-only
        }
        strip_connection_fields(&mut r);
        assert!(r.headers.get("x-secret").is_none());
        assert!(r.headers.get("connection").is_none());
        assert!(r.headers.get("keep-alive").is_none());
        assert_eq!(r.headers.get("x-kept").unwrap(), "2"); // unwrap: test-only
    }

    #[test]
    fn a_304_replaces_what_it_carries() {
        let mut stored = ResponseHeader::build(200, None).unwrap(); // unwrap: test-only
        for (k, v) in [
            ("cache-control", "max-age=1"),
            ("x-a", "old"),
            ("x-b", "kept"),
            ("content-length", "10"),
            ("age", "500"),
        ] {
            stored.append_header(k, v).unwrap(); // unwrap: test-only
        }
        let mut nm = HeaderMap::new();
        nm.insert("cache-control", "max-age=60".parse().unwrap()); // unwrap: test-only
        nm.insert("x-a", "new".parse().unwrap()); // unwrap: test-only
        nm.insert("content-length", "0".parse().unwrap()); // unwrap: test-only
        let m = updated_by_304(&stored, &nm, std::time::SystemTime::now());
        assert_eq!(m.headers["cache-control"], "max-age=60");
        assert_eq!(m.headers["x-a"], "new");
        assert_eq!(m.headers["x-b"], "kept");
        assert_eq!(m.headers["content-length"], "10");
        assert!(m.headers.get("age").is_none());
        assert!(m.headers.get("date").is_some());
    }
}
