//! The response head of a fresh cache hit: built from the stored header as pingora's cache
//! hit path builds it, and serialized for a direct write.

use crate::cache_status::CacheStatus;
use crate::config::Route;
use crate::policy;
use crate::storage::memory::HotMeta;
use bytes::{BufMut, Bytes, BytesMut};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::http::conditional_filter::{not_modified_filter, to_304};
use pingora::protocols::http::date::get_cached_date;
use pingora::Result;
use std::time::SystemTime;

/// For a stored response the fast hit path can serve (a 200 whose `Content-Length` is
/// `body_len`, the bytes about to be sent): (`not_modified`, `header_only`) for `req`;
/// `None` for anything else. The direct writes trust that header for framing, as pingora's
/// body writer would not, so a mismatch falls back to pingora's path.
pub fn shape(req: &RequestHeader, hot: &HotMeta, body_len: u64) -> Option<(bool, bool)> {
    let stored = hot.header();
    let declared = stored
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if stored.status != http::StatusCode::OK || declared != Some(body_len) {
        return None;
    }
    // The primary slot holds one variant; another one is pingora's lookup to find.
    if crate::rfc::vary::variance(&stored.headers, &req.headers) != hot.variance() {
        return None;
    }
    // Only ETag / Last-Modified of the stored header take part in the match.
    let not_modified = not_modified_filter(req, stored);
    let header_only = not_modified || req.method == http::Method::HEAD;
    Some((not_modified, header_only))
}

/// The response header of a cache hit, as pingora's cache hit path builds it: the stored
/// header with `Age`, HTTP/1.1, `Accept-Ranges` (or the 304 form), then what every
/// response tells the client ([`policy::client_facing`], which pingora's path applies in
/// `response_filter`) with `X-Cache-Status: HIT`.
pub fn hit_header(
    hot: &HotMeta,
    route: &Route,
    signed_exp: Option<u64>,
    now: SystemTime,
    not_modified: bool,
) -> Result<Box<ResponseHeader>> {
    let mut header = Box::new(hot.header().clone());
    header.insert_header(http::header::AGE, hot.age(now).as_secs())?;
    header.set_version(http::Version::HTTP_11);
    if not_modified {
        to_304(&mut header);
    } else {
        header.insert_header(http::header::ACCEPT_RANGES, "bytes")?;
    }
    policy::client_facing(&mut header, CacheStatus::Hit, Some(route), signed_exp)?;
    Ok(header)
}

/// `header` serialized for a direct write, with the `Date` and `Connection` headers
/// pingora's own header writer adds to every response.
pub fn direct_head(mut header: Box<ResponseHeader>) -> Option<Bytes> {
    header
        .insert_header(http::header::DATE, get_cached_date())
        .ok()?;
    header
        .insert_header(http::header::CONNECTION, "keep-alive")
        .ok()?;
    let mut head = BytesMut::with_capacity(512);
    head.put_slice(b"HTTP/1.1 ");
    head.put_slice(header.status.as_str().as_bytes());
    head.put_u8(b' ');
    head.put_slice(header.get_reason_phrase().unwrap_or("").as_bytes());
    head.put_slice(b"\r\n");
    header.header_to_h1_wire(&mut head);
    head.put_slice(b"\r\n");
    Some(head.freeze())
}
