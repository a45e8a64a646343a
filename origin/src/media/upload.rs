//! `POST /api/media`: the body is streamed to a temporary file while it is hashed and
//! counted (never held in memory), then stored once per sha256 under `media/ab/cd/<sha>`.
//!
//! Query: `filename=` (optional original name). The stored type is sniffed from the bytes
//! (`infer`), not taken from the client: `Content-Type` is only a hint, kept when the bytes
//! cannot contradict it (see [`stored_type`]). `media::serve`'s inline/download choice then
//! rests on what the bytes are, so HTML or SVG sent as `image/png` is served as a download.

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::{Extension, Json};
use futures::StreamExt;
use object_store::{ObjectStoreExt, PutPayload, WriteMultipart};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use crate::api::error::ApiError;
use crate::api::params::Params;
use crate::app::AppState;
use crate::store::api_keys::{ApiKey, Role};
use crate::store::media;

/// Objects up to this size go up in one request (buffered: at most this much memory);
/// larger ones stream from the temporary file as a multipart upload.
const SINGLE_PUT_MAX: u64 = 1024 * 1024;
/// Multipart part size (S3's minimum is 5 MiB).
const PART_SIZE: usize = 8 * 1024 * 1024;
/// Longest accepted original file name, characters.
const MAX_NAME_CHARS: usize = 255;
/// How much of the start of an upload the type sniffer sees, bytes.
const SNIFF_BYTES: usize = 8192;
/// The type of content that proves nothing about itself.
const UNKNOWN_TYPE: &str = "application/octet-stream";

/// The type to store for content starting with `head`, declared as `declared`:
///
/// - a type the bytes show (magic numbers: images, audio, video, archives, PDF, HTML,
///   XML, scripts …) wins over the declaration;
/// - otherwise `text/plain` is kept for UTF-8 text (nothing to sniff in plain text);
/// - otherwise image, audio, video and text types the bytes do not show are not believed
///   (they would be shown inline): `application/octet-stream`;
/// - any other declared type is kept (it is served as a sandboxed download anyway).
pub fn stored_type(head: &[u8], declared: &str) -> String {
    if let Some(kind) = infer::get(head) {
        return kind.mime_type().to_ascii_lowercase();
    }
    let family = declared.split('/').next().unwrap_or_default();
    if declared == "text/plain" {
        // A multi-byte character may be cut at the end of the sniffed head.
        let text = match std::str::from_utf8(head) {
            Ok(_) => true,
            Err(e) => e.error_len().is_none() && head.len() >= SNIFF_BYTES,
        };
        return if text {
            declared.to_string()
        } else {
            UNKNOWN_TYPE.to_string()
        };
    }
    if matches!(family, "image" | "audio" | "video" | "text") {
        return UNKNOWN_TYPE.to_string();
    }
    declared.to_string()
}

#[derive(Serialize)]
pub struct Uploaded {
    pub id: i64,
    pub sha256: String,
    pub size: i64,
    pub content_type: String,
    pub url: String,
    /// False when identical content was already stored.
    pub created: bool,
}

fn too_large(limit: u64) -> ApiError {
    ApiError {
        parameter: Some("body"),
        ..ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("upload larger than {limit} bytes"),
        )
    }
}

fn io_error(e: impl std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "media upload failed");
    ApiError::internal()
}

/// A plausible `type/subtype` from the request, else `application/octet-stream`.
fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
        .filter(|v| {
            v.len() <= 100
                && v.split_once('/').is_some_and(|(a, b)| {
                    let ok = |s: &str| {
                        !s.is_empty()
                            && s.chars()
                                .all(|c| c.is_ascii_alphanumeric() || "!#$&^_.+-".contains(c))
                    };
                    ok(a) && ok(b)
                })
        })
        .unwrap_or_else(|| UNKNOWN_TYPE.to_string())
}

pub async fn upload(
    State(state): State<AppState>,
    Extension(api_key): Extension<ApiKey>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Uploaded>), ApiError> {
    let limit = state.config.media.max_upload_bytes;
    let params = Params::parse(raw.as_deref());
    let name = params.get("filename").map(str::to_string);
    if name
        .as_ref()
        .is_some_and(|n| n.chars().count() > MAX_NAME_CHARS)
    {
        return Err(ApiError::bad_param(
            "filename",
            format!("filename longer than {MAX_NAME_CHARS} characters"),
        ));
    }
    // Refuse early when the client announces an oversized body.
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if len > limit {
            return Err(too_large(limit));
        }
    }
    let declared = content_type(&headers);

    let file = tempfile::tempfile().map_err(io_error)?;
    let mut file = tokio::fs::File::from_std(file);
    let mut hasher = Sha256::new();
    let mut size: u64 = 0;
    let mut head: Vec<u8> = Vec::with_capacity(SNIFF_BYTES);
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk
            .map_err(|e| ApiError::bad_param("body", format!("could not read the upload: {e}")))?;
        size += chunk.len() as u64;
        if size > limit {
            return Err(too_large(limit));
        }
        hasher.update(&chunk);
        if head.len() < SNIFF_BYTES {
            let take = (SNIFF_BYTES - head.len()).min(chunk.len());
            head.extend_from_slice(&chunk[..take]);
        }
        file.write_all(&chunk).await.map_err(io_error)?;
    }
    let sha = hex::encode(hasher.finalize());
    let ctype = stored_type(&head, &declared);

    if let Some(row) = media::find_by_sha256(&state.db, &sha).await? {
        // The uploader holds these bytes: it may attach the existing row.
        grant(&state, &api_key, row.id).await?;
        return Ok((StatusCode::OK, Json(uploaded(&state, row, false))));
    }
    file.flush().await.map_err(io_error)?;
    file.rewind().await.map_err(io_error)?;
    let key = object_store::path::Path::from(media::object_key(&sha));
    if size <= SINGLE_PUT_MAX {
        let mut buf = Vec::with_capacity(size as usize);
        file.read_to_end(&mut buf).await.map_err(io_error)?;
        state
            .media
            .put(&key, PutPayload::from(buf))
            .await
            .map_err(io_error)?;
    } else {
        let upload = state.media.put_multipart(&key).await.map_err(io_error)?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        let mut buf = vec![0u8; 1024 * 1024];
        loop {
            let n = file.read(&mut buf).await.map_err(io_error)?;
            if n == 0 {
                break;
            }
            // Bound memory: at most a few parts in flight.
            writer.wait_for_capacity(4).await.map_err(io_error)?;
            writer.write(&buf[..n]);
        }
        writer.finish().await.map_err(io_error)?;
    }
    let size = i64::try_from(size).map_err(io_error)?;
    let (row, created) = media::insert(&state.db, &sha, size, &ctype, name.as_deref()).await?;
    grant(&state, &api_key, row.id).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(uploaded(&state, row, created))))
}

/// Lets an operator key attach what it uploaded (admin keys may attach anything).
async fn grant(state: &AppState, key: &ApiKey, media_id: i64) -> Result<(), ApiError> {
    if key.role == Role::Operator {
        media::grant(&state.db, key.id, media_id).await?;
    }
    Ok(())
}

fn uploaded(state: &AppState, row: media::MediaRow, created: bool) -> Uploaded {
    Uploaded {
        id: row.id,
        url: state.media_url(&row.sha256),
        sha256: row.sha256,
        size: row.size,
        content_type: row.content_type,
        created,
    }
}
