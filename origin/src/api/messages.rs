//! Messages of a conversation: list (offset or keyset), send (stored and enqueued in one
//! transaction), and mark read. Another office's conversation answers 404 to an operator
//! key, exactly like a missing one.

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::params::{path_id, Params};
use crate::app::AppState;
use crate::messaging::send::SendMessage;
use crate::queue::tasks::MessageInput;
use crate::store::api_keys::ApiKey;
use crate::store::messages::{self, Message, NewMessage, PageStart};
use crate::store::Cursor;

pub const MAX_LIMIT: i64 = 500;
pub const DEFAULT_LIMIT: i64 = 100;
/// Longest outbound text, characters.
pub const MAX_TEXT_CHARS: usize = 10_000;
/// Most attachments on one message.
pub const MAX_MEDIA: usize = 20;

#[derive(Serialize)]
pub struct MessagePage {
    pub messages: Vec<Message>,
    /// Pass as `before` for the next (older) page; absent on the last page.
    pub next_cursor: Option<String>,
}

pub async fn list_messages(
    State(state): State<AppState>,
    Extension(key): Extension<ApiKey>,
    id: Result<Path<String>, PathRejection>,
    RawQuery(raw): RawQuery,
) -> Result<Json<MessagePage>, ApiError> {
    let id = path_id(id)?;
    if !messages::conversation_visible(&state.db, &key.scope(), id).await? {
        return Err(ApiError::not_found("conversation"));
    }
    let params = Params::parse(raw.as_deref());
    let limit = params.int("limit", 1, MAX_LIMIT, DEFAULT_LIMIT)?;
    let offset = params.int("offset", 0, i64::MAX, 0)?;
    let before = params.cursor("before")?;
    if before.is_some() && params.get("offset").is_some() {
        return Err(ApiError::bad_param(
            "before",
            "use either before or offset, not both",
        ));
    }
    let start = match before {
        Some(c) => PageStart::Before(c),
        None => PageStart::Offset(offset),
    };
    let url = |sha: &str| state.media_url(sha);
    let page = messages::page(&state.db, id, start, limit, &url).await?;
    // Only an empty page needs to tell "no such conversation" from "no messages here";
    // checking first would cost every request a round trip.
    if page.is_empty() && !messages::conversation_exists(&state.db, id).await? {
        return Err(ApiError::not_found("conversation"));
    }
    let next_cursor = if page.len() as i64 == limit {
        page.last().map(|m| {
            Cursor {
                ts: m.created_at,
                id: m.id,
            }
            .encode()
        })
    } else {
        None
    };
    Ok(Json(MessagePage {
        messages: page,
        next_cursor,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendBody {
    #[serde(default)]
    pub text: String,
    #[serde(default)]
    pub media_ids: Vec<i64>,
}

#[derive(Serialize)]
pub struct Sent {
    pub id: i64,
    pub task_id: i64,
}

/// Reads a JSON body up to the configured limit, with JSON errors for every failure.
pub async fn json_body<T: serde::de::DeserializeOwned>(
    state: &AppState,
    body: Body,
) -> Result<T, ApiError> {
    let limit = state.config.server.json_body_limit;
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| ApiError {
            parameter: Some("body"),
            ..ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("body larger than {limit} bytes"),
            )
        })?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_param("body", format!("invalid JSON body: {e}")))
}

pub async fn send_message(
    State(state): State<AppState>,
    Extension(key): Extension<ApiKey>,
    id: Result<Path<String>, PathRejection>,
    body: Body,
) -> Result<(StatusCode, Json<Sent>), ApiError> {
    let id = path_id(id)?;
    let scope = key.scope();
    if !messages::conversation_visible(&state.db, &scope, id).await? {
        return Err(ApiError::not_found("conversation"));
    }
    let body: SendBody = json_body(&state, body).await?;
    let chars = body.text.chars().count();
    if chars > MAX_TEXT_CHARS {
        return Err(ApiError::bad_param(
            "text",
            format!("text longer than {MAX_TEXT_CHARS} characters"),
        ));
    }
    let mut media_ids = body.media_ids.clone();
    media_ids.sort_unstable();
    media_ids.dedup();
    if media_ids.len() > MAX_MEDIA {
        return Err(ApiError::bad_param(
            "media_ids",
            format!("at most {MAX_MEDIA} media"),
        ));
    }
    if body.text.trim().is_empty() && media_ids.is_empty() {
        return Err(ApiError::bad_param("text", "text or media_ids required"));
    }
    let attachable =
        crate::store::media::count_attachable(&state.db, &scope, key.id, &media_ids).await?;
    if attachable != media_ids.len() as i64 {
        return Err(ApiError::bad_param("media_ids", "unknown media id"));
    }
    let mut message = NewMessage::outbound(id, body.text);
    // Keep the caller's order for display; duplicates dropped.
    let mut seen = std::collections::HashSet::new();
    message.media_ids = body
        .media_ids
        .into_iter()
        .filter(|m| seen.insert(*m))
        .collect();
    let mut tx = state.db.pool.begin().await?;
    let message_id = match messages::insert_message(&mut tx, &message).await {
        Ok(id) => id,
        Err(sqlx::Error::RowNotFound) => return Err(ApiError::not_found("conversation")),
        Err(e) => return Err(e.into()),
    };
    // Transactional enqueue: the message exists exactly when its send task does.
    let task_id = komora_queue::enqueue::<SendMessage>(
        &mut tx,
        &state.config.queue,
        &MessageInput { message_id },
    )
    .await
    .map_err(|e| {
        tracing::error!(error = %e, message_id, "enqueue send_message failed; rolled back");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "could not queue the message for sending",
        )
    })?;
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        Json(Sent {
            id: message_id,
            task_id,
        }),
    ))
}

#[derive(Serialize)]
pub struct Marked {
    pub marked: u64,
}

pub async fn mark_read(
    State(state): State<AppState>,
    Extension(key): Extension<ApiKey>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Marked>, ApiError> {
    let id = path_id(id)?;
    if !messages::conversation_visible(&state.db, &key.scope(), id).await? {
        return Err(ApiError::not_found("conversation"));
    }
    let mut tx = state.db.pool.begin().await?;
    let marked = messages::mark_read(&mut tx, id, crate::db::now_ms())
        .await?
        .ok_or_else(|| ApiError::not_found("conversation"))?;
    tx.commit().await?;
    Ok(Json(Marked { marked }))
}
