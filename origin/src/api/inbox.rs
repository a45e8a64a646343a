//! `GET /api/inbox?platform=&limit=&cursor=&offset=`: conversations by last activity.
//! `cursor` (keyset) is the way to page; `offset` (0..=1000000) is kept for jumps and for
//! the benchmark that shows why. An operator key lists only its offices' conversations.

use axum::extract::{RawQuery, State};
use axum::Extension;
use axum::Json;
use serde::Serialize;

use super::error::ApiError;
use super::params::Params;
use crate::app::AppState;
use crate::store::api_keys::ApiKey;
use crate::store::inbox::{self, InboxItem};
use crate::store::{Cursor, PLATFORMS};

/// Page size bounds and default.
pub const MAX_LIMIT: i64 = 200;
pub const DEFAULT_LIMIT: i64 = 50;
/// Deepest `offset` accepted; past that, use `cursor` (offset cost grows with depth).
pub const MAX_OFFSET: i64 = 1_000_000;

#[derive(Serialize)]
pub struct InboxPage {
    pub conversations: Vec<InboxItem>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

pub async fn get_inbox(
    State(state): State<AppState>,
    Extension(key): Extension<ApiKey>,
    RawQuery(raw): RawQuery,
) -> Result<Json<InboxPage>, ApiError> {
    let params = Params::parse(raw.as_deref());
    let platform = match params.get("platform") {
        None => None,
        Some(p) if PLATFORMS.contains(&p) => Some(p),
        Some(_) => {
            return Err(ApiError::bad_param(
                "platform",
                format!("platform must be one of {}", PLATFORMS.join(", ")),
            ))
        }
    };
    let limit = params.int("limit", 1, MAX_LIMIT, DEFAULT_LIMIT)?;
    let cursor = params.cursor("cursor")?;
    let offset = params.int("offset", 0, MAX_OFFSET, 0)?;
    let conversations =
        inbox::page(&state.db, &key.scope(), platform, cursor, limit, offset).await?;
    let next_cursor = if conversations.len() as i64 == limit {
        conversations.last().map(|c| {
            Cursor {
                ts: c.last_activity_at,
                id: c.id,
            }
            .encode()
        })
    } else {
        None
    };
    Ok(Json(InboxPage {
        conversations,
        next_cursor,
    }))
}
