//! Freshening stored responses with HEAD (RFC 9111 §4.3.5).
//!
//! A HEAD response is what the GET would have been without its content, so it can update
//! (or show outdated) a stored GET response without transferring the body. The edge uses
//! that where the client does not want the body either:
//!
//! - A HEAD request whose stored response is stale (pingora's `Stale` phase: this request
//!   revalidates it) goes to the origin as HEAD ([`forward_as_head`]), with the stored
//!   validators as `If-None-Match` / `If-Modified-Since` as pingora adds them for any
//!   revalidation. A 304 then freshens the stored response as any 304 does (§4.3.4).
//! - A 200 to it is compared with the stored response ([`matches`]): every validator the
//!   HEAD response carries (`ETag`, `Last-Modified`) equal to the stored one, and its
//!   `Content-Length`, if any, equal to the stored one's. A match updates the stored header
//!   with every field of the HEAD response as a 304 would (§3.2, [`apply`]); a mismatch
//!   means the stored body is not the current representation, so the stored response is
//!   removed (stronger than the RFC's "consider it stale": a stale copy could still go out
//!   under `stale-while-revalidate` or `stale-if-error`, and this one is known outdated).
//! - Whatever the origin answers a HEAD, it is never stored as the GET response (it has no
//!   body): [`NOT_STORED`].
//! - A HEAD with nothing stored is still fetched as GET and fills the cache (pingora's
//!   behaviour): the next GET is a hit, and media fills stay one origin request.
//! - A HEAD with a fresh stored response is answered from the cache without the origin.

use crate::storage::TieredStorage;
use http::header::{CONTENT_LENGTH, ETAG, LAST_MODIFIED};
use http::{HeaderMap, HeaderName, Method};
use pingora::cache::storage::{PurgeTarget, PurgeType};
use pingora::cache::trace::Span;
use pingora::cache::{CachePhase, NoCacheReason, RespCacheable, Storage};
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use std::time::SystemTime;

/// Why a response to a HEAD the edge forwarded is not stored.
pub const NOT_STORED: NoCacheReason = NoCacheReason::Custom("response to HEAD");

/// What a HEAD 200 did to the stored response it was sent for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It matched: the stored header was updated from it and is fresh again as it says.
    Freshened,
    /// It did not match (or now forbids storing): the stored response was removed.
    Invalidated,
}

/// Whether a request goes to the origin as HEAD: the client asked HEAD and this request is
/// revalidating a stale stored response. A miss (`Miss` phase) is fetched as GET to fill.
pub fn forward_as_head(method: &Method, phase: CachePhase) -> bool {
    *method == Method::HEAD && phase == CachePhase::Stale
}

/// The §4.3.5 match of a HEAD response against a stored GET response: each validator field
/// the HEAD response carries has the stored response's value, and a `Content-Length` it
/// carries equals the stored one. A HEAD response without validators or length matches (the
/// RFC's case for updating responses stored without validators).
pub fn matches(stored: &HeaderMap, head: &HeaderMap) -> bool {
    same_if_received(stored, head, &ETAG)
        && same_date_if_received(stored, head)
        && same_if_received(stored, head, &CONTENT_LENGTH)
}

fn values<'a>(h: &'a HeaderMap, name: &HeaderName) -> Vec<&'a [u8]> {
    h.get_all(name)
        .iter()
        .map(|v| v.as_bytes().trim_ascii())
        .collect()
}

/// Byte-equal values of `name`, when the HEAD response has it (a validator's value is
/// opaque: `W/"a"` and `"a"` are different values).
fn same_if_received(stored: &HeaderMap, head: &HeaderMap, name: &HeaderName) -> bool {
    !head.contains_key(name) || values(stored, name) == values(head, name)
}

/// `Last-Modified` naming the same instant, when the HEAD response has it (equal bytes, or
/// both valid dates that are equal).
fn same_date_if_received(stored: &HeaderMap, head: &HeaderMap) -> bool {
    if !head.contains_key(LAST_MODIFIED) || same_if_received(stored, head, &LAST_MODIFIED) {
        return true;
    }
    let date = |h: &HeaderMap| {
        let v = h.get(LAST_MODIFIED)?.to_str().ok()?;
        httpdate::parse_http_date(v).ok()
    };
    matches!((date(stored), date(head)), (Some(a), Some(b)) if a == b)
}

/// Apply a HEAD 200 (`head`, received at `received`) to the stale stored response this
/// request is revalidating. `cacheable` decides, as for any response of the route, whether
/// the updated header is stored and for how long.
///
/// On a match the stored header takes every field of `head` as from a 304 (§3.2), and the
/// new meta goes to storage through pingora's revalidation (which releases the cache lock
/// as done, so waiting requests read the fresh entry). Otherwise the stored variant is
/// removed. `None` when nothing is stored to compare with (not expected in the `Stale`
/// phase).
pub async fn apply(
    session: &mut Session,
    storage: &'static TieredStorage,
    head: &ResponseHeader,
    received: SystemTime,
    cacheable: impl FnOnce(&ResponseHeader) -> pingora::Result<RespCacheable>,
) -> Option<Outcome> {
    let stored = session.cache.maybe_cache_meta()?;
    let updated = matches(stored.headers(), &head.headers).then(|| {
        crate::rfc::directives::updated_by_304(stored.response_header(), &head.headers, received)
    });
    let variance = stored.variance();
    if let Some(updated) = updated {
        if let Ok(RespCacheable::Cacheable(mut meta)) = cacheable(&updated) {
            if let Some(v) = variance {
                meta.set_variance(v);
            }
            if let Err(e) = session.cache.revalidate_cache_meta(meta).await {
                // As after a 304: the response is still current, only its update failed.
                tracing::warn!(error = %e, "could not store the header a HEAD refreshed");
            }
            return Some(Outcome::Freshened);
        }
    }
    // This request's key names exactly the variant that was looked up (§4.3.5: the stored
    // responses that could have been chosen for this request).
    let key = session.cache.cache_key().to_compact();
    let span = Span::inactive();
    if let Err(e) = storage
        .purge(
            PurgeTarget::Active(&key),
            PurgeType::Invalidation,
            &span.handle(),
        )
        .await
    {
        tracing::warn!(error = %e, "could not remove a response a HEAD showed outdated");
    }
    Some(Outcome::Invalidated)
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
    fn validators_and_length_must_match_when_received() {
        let stored = map(&[
            ("etag", "\"a\""),
            ("last-modified", "Tue, 01 Dec 2026 10:00:00 GMT"),
            ("content-length", "10"),
        ]);
        assert!(matches(&stored, &map(&[("etag", "\"a\"")])));
        assert!(matches(&stored, &map(&[])));
        assert!(matches(
            &stored,
            &map(&[("etag", "\"a\""), ("content-length", "10")])
        ));
        assert!(!matches(&stored, &map(&[("etag", "\"b\"")])));
        assert!(!matches(&stored, &map(&[("etag", "W/\"a\"")])));
        assert!(!matches(
            &stored,
            &map(&[("etag", "\"a\""), ("content-length", "11")])
        ));
        assert!(!matches(
            &stored,
            &map(&[("last-modified", "Tue, 01 Dec 2026 10:00:01 GMT")])
        ));
        // The same instant in the obsolete RFC 850 form.
        assert!(matches(
            &stored,
            &map(&[("last-modified", "Tuesday, 01-Dec-26 10:00:00 GMT")])
        ));
        // A validator the stored response lacks is no match.
        assert!(!matches(&map(&[]), &map(&[("etag", "\"a\"")])));
    }

    #[test]
    fn only_stale_head_revalidations_go_out_as_head() {
        assert!(forward_as_head(&Method::HEAD, CachePhase::Stale));
        assert!(!forward_as_head(&Method::HEAD, CachePhase::Miss));
        assert!(!forward_as_head(&Method::GET, CachePhase::Stale));
    }
}
