//! `GET /api/clients?q=&limit=`: client search by name, phone or email (an operator key
//! finds only clients with a conversation in its offices). A `q` the text index cannot
//! take is a 400 naming `q`, never a 500.

use axum::extract::{RawQuery, State};
use axum::Extension;
use axum::Json;
use serde::Serialize;

use super::error::ApiError;
use super::params::Params;
use crate::app::AppState;
use crate::store::api_keys::ApiKey;
use crate::store::clients::{self, Client, MIN_QUERY_CHARS};

/// Longest accepted search string, characters.
pub const MAX_QUERY_CHARS: usize = 100;

#[derive(Serialize)]
pub struct ClientList {
    pub clients: Vec<Client>,
}

pub async fn search_clients(
    State(state): State<AppState>,
    Extension(key): Extension<ApiKey>,
    RawQuery(raw): RawQuery,
) -> Result<Json<ClientList>, ApiError> {
    let params = Params::parse(raw.as_deref());
    let q = params.get("q").map(str::trim).unwrap_or_default();
    let chars = q.chars().count();
    if !(MIN_QUERY_CHARS..=MAX_QUERY_CHARS).contains(&chars) {
        return Err(ApiError::bad_param(
            "q",
            format!("q must have {MIN_QUERY_CHARS}..={MAX_QUERY_CHARS} characters"),
        ));
    }
    // NUL and other control characters end an FTS5 string early on SQLite ("unterminated
    // string") and are invalid text on PostgreSQL: no client's name holds one.
    if q.chars().any(char::is_control) {
        return Err(ApiError::bad_param(
            "q",
            "q must not contain control characters",
        ));
    }
    let limit = params.int("limit", 1, 100, 20)?;
    let clients = match clients::search(&state.db, &key.scope(), q, limit).await {
        Ok(c) => c,
        // q is bound as one quoted FTS phrase, so a syntax error is still q's fault.
        Err(e) if clients::is_search_syntax_error(&e) => {
            tracing::info!(error = %e, "client search: q rejected by the text index");
            return Err(ApiError::bad_param("q", "q is not a valid search string"));
        }
        Err(e) => return Err(e.into()),
    };
    Ok(Json(ClientList { clients }))
}
