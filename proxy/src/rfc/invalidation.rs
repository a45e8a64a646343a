//! Invalidation after an unsafe request (RFC 9111 §4.4): besides the target URI, the URIs
//! in `Location` and `Content-Location` of a non-error response, when they are on the same
//! origin (a relative reference, or an absolute one naming the request's own host) — another
//! origin's URIs must not be invalidated, which would let one site purge another's content.
//! Which methods invalidate: every one not known to be safe ([`unsafe_method`]).

use http::header::{CONTENT_LOCATION, HOST, LOCATION};
use http::Method;

/// Whether a request with `method` invalidates what it targets: every method that is not
/// safe, including methods whose safety the edge does not know (§4.4: "including methods
/// whose safety is unknown"), so an extension method (`PROPPATCH`, `MKCOL`, ...) that
/// changes the resource cannot leave a stale copy behind. The safe methods are RFC 9110
/// §9.2.1's: `GET`, `HEAD`, `OPTIONS`, `TRACE`.
pub fn unsafe_method(method: &Method) -> bool {
    !matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}
use pingora::http::{RequestHeader, ResponseHeader};

/// The same-origin path-and-query of `value` for a request to `host` at `path`.
fn same_origin(value: &str, host: Option<&str>, path: &str) -> Option<String> {
    let value = value.trim();
    if value.is_empty() || value.starts_with("//") {
        // A network-path reference names an authority: only the absolute form is compared.
        let uri: http::Uri = format!("http:{value}").parse().ok()?;
        return same_authority(&uri, host);
    }
    if value.starts_with('/') {
        return Some(strip_fragment(value).to_string());
    }
    // RFC 3986 §3.1: a scheme is letters, digits, `+-.` up to the first `:`, before any
    // `/`, `?` or `#`; only http(s) URIs can be on our origin.
    let scheme = value
        .split_once(':')
        .map(|(s, _)| s)
        .filter(|s| !s.contains(['/', '?', '#']));
    if let Some(scheme) = scheme {
        if !(scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")) {
            return None;
        }
        return same_authority(&value.parse::<http::Uri>().ok()?, host);
    }
    // A relative-path reference resolves against the request path's directory.
    let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
    let joined = format!(
        "{}{}",
        if dir.is_empty() { "/" } else { dir },
        strip_fragment(value)
    );
    Some(crate::policy::normalized_path(&joined))
}

fn strip_fragment(v: &str) -> &str {
    v.split('#').next().unwrap_or(v)
}

fn same_authority(uri: &http::Uri, host: Option<&str>) -> Option<String> {
    let authority = uri.authority()?.as_str();
    if !host.is_some_and(|h| h.eq_ignore_ascii_case(authority)) {
        return None;
    }
    Some(uri.path_and_query().map_or("/", |p| p.as_str()).to_string())
}

/// The other URLs (path and query) a successful unsafe `req` answered by `resp` invalidates:
/// same-origin `Location` and `Content-Location`, not repeating the target itself.
pub fn also_invalidated(req: &RequestHeader, resp: &ResponseHeader) -> Vec<String> {
    let host = req
        .headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri.authority().map(|a| a.as_str()));
    let target = req.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut out: Vec<String> = [LOCATION, CONTENT_LOCATION]
        .iter()
        .filter_map(|n| resp.headers.get(n)?.to_str().ok())
        .filter_map(|v| same_origin(v, host, req.uri.path()))
        .filter(|p| p != target)
        .collect();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_method_not_known_safe_invalidates() {
        for m in [
            "POST",
            "PUT",
            "DELETE",
            "PATCH",
            "PROPPATCH",
            "MKCOL",
            "FROB",
        ] {
            assert!(
                unsafe_method(&Method::from_bytes(m.as_bytes()).unwrap()), // unwrap: test-only, fixed method names
                "{m}"
            ); // unwrap: test-only
        }
        for m in [Method::GET, Method::HEAD, Method::OPTIONS, Method::TRACE] {
            assert!(!unsafe_method(&m), "{m}");
        }
    }

    #[test]
    fn only_same_origin_locations() {
        let h = Some("edge.example:8080");
        let p = "/rfc/a/b";
        assert_eq!(same_origin("/x?y=1#f", h, p).as_deref(), Some("/x?y=1"));
        assert_eq!(same_origin("c", h, p).as_deref(), Some("/rfc/a/c"));
        assert_eq!(same_origin("../c", h, p).as_deref(), Some("/rfc/c"));
        assert_eq!(
            same_origin("http://EDGE.example:8080/z", h, p).as_deref(),
            Some("/z")
        );
        assert_eq!(same_origin("http://other.example/z", h, p), None);
        assert_eq!(same_origin("//other.example/z", h, p), None);
        assert_eq!(
            same_origin("//edge.example:8080/z", h, p).as_deref(),
            Some("/z")
        );
        assert_eq!(same_origin("mailto:a@b", h, p), None);
        assert_eq!(same_origin("http://edge.example:8080/z", None, p), None);
    }
}
