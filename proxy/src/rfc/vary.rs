//! `Vary` (RFC 9111 §4.1): a stored response answers a later request only if every request
//! header its `Vary` names matches the request that produced it.
//!
//! The match is expressed as pingora's variance: a hash over the (normalized) values of the
//! named request headers. Pingora keeps the first variant of a URL in the primary slot (the
//! URL's own key) and each other variant under the variance-combined key; our storage keys
//! entries by `CacheKey::combined_bin`, so memory and disk hold one entry per variant.
//!
//! `Vary: *` can never match (§4.1: "always fails to match"), so such responses are not
//! stored at all ([`is_star`]).

use http::header::VARY;
use http::HeaderMap;
use pingora::cache::key::HashBinary;
use pingora::cache::VarianceBuilder;

/// Whether the response's `Vary` contains `*`.
pub fn is_star(resp: &HeaderMap) -> bool {
    names(resp).any(|n| n == "*")
}

/// The field names a response's `Vary` lists (all lines combined), lowercased.
fn names(resp: &HeaderMap) -> impl Iterator<Item = String> + '_ {
    resp.get_all(VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
}

/// The variance of `req` against a stored response with headers `stored`: `None` when the
/// response varies on nothing (no `Vary`, or an empty one), otherwise a hash of each named
/// request header's value.
///
/// Normalization (§4.1 allows it): multiple field lines are combined into one list, and
/// whitespace around list members is dropped, so `gzip,br` and `gzip, br` select the same
/// variant. A header absent from the request matches only a request where it is absent too,
/// never one where it is present but empty.
pub fn variance(stored: &HeaderMap, req: &HeaderMap) -> Option<HashBinary> {
    if !stored.contains_key(VARY) {
        // The hit path asks this for every stored response: no allocation when nothing varies.
        return None;
    }
    let mut builder = VarianceBuilder::new();
    for name in names(stored) {
        let mut lines = req.get_all(name.as_str()).iter().peekable();
        let value = if lines.peek().is_none() {
            // Distinct from any present value, which starts with b'='.
            b"-".to_vec()
        } else {
            let mut v = b"=".to_vec();
            let mut first = true;
            for line in lines {
                for member in line.as_bytes().split(|b| *b == b',') {
                    if !first {
                        v.push(b',');
                    }
                    first = false;
                    v.extend_from_slice(member.trim_ascii());
                }
            }
            v
        };
        builder.add_owned_name_value(name, value);
    }
    builder.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(h: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in h {
            m.append(*k, http::HeaderValue::from_static(v));
        }
        m
    }

    #[test]
    fn variance_follows_named_request_headers() {
        let stored = map(&[("vary", "Accept-Encoding")]);
        let gzip = variance(&stored, &map(&[("accept-encoding", "gzip")]));
        let br = variance(&stored, &map(&[("accept-encoding", "br")]));
        let none = variance(&stored, &map(&[]));
        let empty = variance(&stored, &map(&[("accept-encoding", "")]));
        assert!(gzip.is_some());
        assert_ne!(gzip, br);
        assert_ne!(gzip, none);
        assert_ne!(none, empty);
        // Other request headers do not matter.
        assert_eq!(
            gzip,
            variance(
                &stored,
                &map(&[("accept-encoding", "gzip"), ("user-agent", "x")])
            )
        );
    }

    #[test]
    fn normalization_combines_lines_and_trims() {
        let stored = map(&[("vary", "accept-encoding"), ("vary", "accept-language")]);
        let a = variance(
            &stored,
            &map(&[("accept-encoding", "gzip,br"), ("accept-language", "de")]),
        );
        let b = variance(
            &stored,
            &map(&[
                ("accept-language", "de"),
                ("accept-encoding", "gzip"),
                ("accept-encoding", " br"),
            ]),
        );
        assert_eq!(a, b);
        let c = variance(
            &stored,
            &map(&[("accept-encoding", "gzip,br"), ("accept-language", "en")]),
        );
        assert_ne!(a, c);
    }

    #[test]
    fn no_vary_no_variance_and_star_detected() {
        assert_eq!(variance(&map(&[]), &map(&[("a", "b")])), None);
        assert_eq!(variance(&map(&[("vary", " , ")]), &map(&[])), None);
        assert!(is_star(&map(&[("vary", "accept, *")])));
        assert!(!is_star(&map(&[("vary", "accept")])));
    }
}
