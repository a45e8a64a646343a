//! `GET|HEAD /media/{sha256}`: streams stored media from the object store.
//!
//! With `media.signed_urls` (the default) a request needs a valid `exp` and `sig`
//! (`crate::media::signing`), checked before the object is looked up; otherwise 403. Content
//! is immutable (the URL is its hash): public media are cacheable for a week by anyone,
//! signed media privately until the URL expires. Both revalidate with `If-None-Match`, or
//! `If-Modified-Since` when there is none (RFC 9110 §13.1.3). One `Range` is honoured
//! (206/416). Types a browser would execute or render as a page are forced to download in a
//! sandbox.

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use object_store::{GetOptions, GetRange};

use crate::api::error::ApiError;
use crate::app::AppState;
use crate::config::MediaAccess;
use crate::media::signing::{self, Denied};
use crate::store::media::{self, MediaRow};

/// Types safe to show inline: they cannot run script or render as a document.
const INLINE_TYPES: &[&str] = &[
    "image/png",
    "image/jpeg",
    "image/gif",
    "image/webp",
    "image/avif",
    "image/bmp",
    "text/plain",
];

fn inline_ok(content_type: &str) -> bool {
    INLINE_TYPES.contains(&content_type)
        || content_type.starts_with("audio/")
        || content_type.starts_with("video/")
}

/// A lowercase 64-hex-digit sha256, or `None`.
pub fn parse_sha256(s: &str) -> Option<String> {
    (s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())).then(|| s.to_ascii_lowercase())
}

/// What a `Range` header asks for, against an object of `size` bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum RangeRequest {
    /// No usable range: send everything (absent, malformed or several ranges).
    Full,
    /// Bytes `start..=end`.
    Part { start: u64, end: u64 },
    /// Cannot be satisfied: 416.
    Unsatisfiable,
}

/// A byte position of a range: digits only; a number past `u64` saturates (it is past the
/// end of any object, not malformed).
fn position(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(s.parse::<u64>().unwrap_or(u64::MAX))
}

/// Parses `bytes=a-b`, `bytes=a-`, `bytes=-n` (RFC 9110 §14.1.2). Multi-range, malformed and
/// invalid (`last < first`) headers are ignored: the full content (§14.2 allows it). A first
/// position at or past the end, however large, and an empty suffix (`-0`) cannot be
/// satisfied: 416.
pub fn parse_range(header: Option<&str>, size: u64) -> RangeRequest {
    let Some(h) = header else {
        return RangeRequest::Full;
    };
    let Some(spec) = h.trim().strip_prefix("bytes=") else {
        return RangeRequest::Full;
    };
    if spec.contains(',') {
        return RangeRequest::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeRequest::Full;
    };
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        // Suffix: the last n bytes.
        let Some(n) = position(b) else {
            return RangeRequest::Full;
        };
        if n == 0 || size == 0 {
            return RangeRequest::Unsatisfiable;
        }
        let n = n.min(size);
        return RangeRequest::Part {
            start: size - n,
            end: size - 1,
        };
    }
    let Some(start) = position(a) else {
        return RangeRequest::Full;
    };
    let end = if b.is_empty() {
        None
    } else {
        match position(b) {
            Some(e) if e >= start => Some(e),
            _ => return RangeRequest::Full,
        }
    };
    if start >= size {
        return RangeRequest::Unsatisfiable;
    }
    RangeRequest::Part {
        start,
        end: end.unwrap_or(size - 1).min(size - 1),
    }
}

/// Whether the object, last modified at `created_ms`, is "not modified" for this request:
/// `If-None-Match` matches our strong ETag or, only when there is no `If-None-Match`
/// (RFC 9110 §13.1.3: it takes precedence), `If-Modified-Since` is a valid date no earlier
/// than `Last-Modified` (whole seconds, as sent).
fn not_modified(headers: &HeaderMap, etag: &str, created_ms: i64) -> bool {
    if headers.contains_key(header::IF_NONE_MATCH) {
        return none_match(headers, etag);
    }
    let Some(since) = headers
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok())
    else {
        return false;
    };
    let since = since
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    u64::try_from(created_ms.div_euclid(1000)).unwrap_or(0) <= since
}

/// Whether `If-None-Match` matches our strong ETag.
fn none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == "*" || t == etag)
}

fn http_date(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string()
}

fn set(resp: &mut Response, name: header::HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        resp.headers_mut().insert(name, v);
    }
}

/// Headers every non-error media response carries; `cache_control` from [`check_access`].
fn common_headers(resp: &mut Response, row: &MediaRow, etag: &str, cache_control: &str) {
    set(resp, header::ETAG, etag);
    set(resp, header::CACHE_CONTROL, cache_control);
    set(resp, header::LAST_MODIFIED, &http_date(row.created_at));
    set(resp, header::ACCEPT_RANGES, "bytes");
    set(resp, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(resp, header::CONTENT_TYPE, &row.content_type);
    if !inline_ok(&row.content_type) {
        set(resp, header::CONTENT_DISPOSITION, "attachment");
        set(resp, header::CONTENT_SECURITY_POLICY, "sandbox");
    }
}

/// The first value of `name` in a query string.
fn query_param<'q>(query: Option<&'q str>, name: &str) -> Option<std::borrow::Cow<'q, str>> {
    url::form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

/// Whether this request may read `sha` at `now`, and the `Cache-Control` its answer gets:
/// public media for a week, signed media privately until the URL expires (a shared cache
/// must not hand it to whoever has the URL after that; the edge keeps its own copy).
fn check_access(
    access: &MediaAccess,
    sha: &str,
    query: Option<&str>,
    now: u64,
) -> Result<String, ApiError> {
    let signer = match access {
        MediaAccess::Public => return Ok("public, max-age=604800, immutable".into()),
        MediaAccess::Signed(signer) => signer,
        // Nothing can verify: refuse rather than serve unsigned.
        MediaAccess::NoKeys => return Err(forbidden(Denied::BadSignature)),
    };
    let exp = query_param(query, "exp");
    let sig = query_param(query, "sig");
    signer
        .verify(sha, exp.as_deref(), sig.as_deref(), now)
        .map_err(forbidden)?;
    // verify succeeded, so exp parses and is in the future.
    let exp = exp.and_then(|e| e.parse::<u64>().ok()).unwrap_or(now);
    Ok(format!("private, max-age={}", exp.saturating_sub(now)))
}

fn forbidden(why: Denied) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, why.message())
}

pub async fn serve(
    State(state): State<AppState>,
    method: Method,
    id: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let bad = || ApiError::bad_param("sha256", "media id must be 64 hex digits (sha256)");
    let Path(raw) = id.map_err(|_| bad())?;
    let sha = parse_sha256(&raw).ok_or_else(bad)?;
    // Before the lookup: an unsigned request learns nothing, not even whether it exists.
    let cache_control = check_access(
        &state.config.media.access,
        &sha,
        query.as_deref(),
        signing::unix_now(),
    )?;
    let row = media::find_by_sha256(&state.db, &sha)
        .await?
        .ok_or_else(|| ApiError::not_found("media"))?;
    let etag = format!("\"{}\"", row.sha256);
    let size = u64::try_from(row.size).unwrap_or(0);

    if not_modified(&headers, &etag, row.created_at) {
        let mut resp = StatusCode::NOT_MODIFIED.into_response();
        common_headers(&mut resp, &row, &etag, &cache_control);
        resp.headers_mut().remove(header::CONTENT_TYPE);
        return Ok(resp);
    }

    let range_header = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let (status, range) = match parse_range(range_header, size) {
        RangeRequest::Full => (StatusCode::OK, None),
        RangeRequest::Part { start, end } => (StatusCode::PARTIAL_CONTENT, Some((start, end))),
        RangeRequest::Unsatisfiable => {
            let mut resp =
                ApiError::new(StatusCode::RANGE_NOT_SATISFIABLE, "range not satisfiable")
                    .into_response();
            set(&mut resp, header::CONTENT_RANGE, &format!("bytes */{size}"));
            return Ok(resp);
        }
    };
    let length = match range {
        Some((start, end)) => end - start + 1,
        None => size,
    };

    let body = if method == Method::HEAD || length == 0 {
        Body::empty()
    } else {
        let opts = GetOptions {
            range: range.map(|(start, end)| GetRange::Bounded(start..end + 1)),
            ..Default::default()
        };
        let key = object_store::path::Path::from(row.object_key.as_str());
        let got = state
            .media
            .get_opts(&key, opts)
            .await
            .map_err(|e| match e {
                object_store::Error::NotFound { .. } => {
                    tracing::error!(sha256 = %row.sha256, "media row without stored object");
                    ApiError::not_found("media")
                }
                e => {
                    tracing::error!(error = %e, "object store read failed");
                    ApiError::new(StatusCode::BAD_GATEWAY, "media store unavailable")
                }
            })?;
        Body::from_stream(got.into_stream().map(|r| r.map_err(std::io::Error::other)))
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    common_headers(&mut resp, &row, &etag, &cache_control);
    set(&mut resp, header::CONTENT_LENGTH, &length.to_string());
    if let Some((start, end)) = range {
        set(
            &mut resp,
            header::CONTENT_RANGE,
            &format!("bytes {start}-{end}/{size}"),
        );
    }
    Ok(resp)
}
