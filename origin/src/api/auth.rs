//! Bearer-token authentication: the token's sha256 is looked up in `api_keys`.
//!
//! [`require_bearer`] guards `/api` and hands the handlers the [`ApiKey`] (its role and
//! offices) as a request extension; [`require_admin`] guards `/admin/*` on the internal
//! listener: 401 without a live key, 403 for an operator key.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use crate::app::AppState;
use crate::store::api_keys::{self, ApiKey, Role};

/// Longest token we bother hashing (ours are 64 hex characters).
const MAX_TOKEN_LEN: usize = 256;

/// `last_used_at` is written at most this often per key and process (ms): a write on every
/// request would serialise readers behind SQLite's single writer.
pub const LAST_USED_RESOLUTION_MS: i64 = 60_000;

/// The bearer token of `headers`, if well-formed.
fn bearer(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        })
        .filter(|t| !t.is_empty() && t.len() <= MAX_TOKEN_LEN)
        .map(str::to_string)
}

/// The live key `headers` carry: `Ok(None)` when there is none or it is unknown, revoked or
/// expired. Records the use (off the request path, at most once per resolution).
async fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Option<ApiKey>, ApiError> {
    let Some(token) = bearer(headers) else {
        return Ok(None);
    };
    let key = api_keys::authenticate(&state.db, &token).await?;
    if let Some(k) = &key {
        note_use(state, k.id, &token);
    }
    Ok(key)
}

/// Writes `last_used_at` for key `id` unless this process did so less than
/// [`LAST_USED_RESOLUTION_MS`] ago. Runs in a task of its own: a busy database delays the
/// bookkeeping, never the request.
fn note_use(state: &AppState, id: i64, token: &str) {
    static LAST: OnceLock<Mutex<HashMap<String, i64>>> = OnceLock::new();
    let now = crate::db::now_ms();
    // Keyed by the token hash, not the id: ids repeat across databases (tests run many).
    let hash = api_keys::hash_token(token);
    let due = match LAST.get_or_init(Default::default).lock() {
        Ok(mut map) => match map.get(&hash) {
            Some(&at) if now - at < LAST_USED_RESOLUTION_MS => false,
            _ => {
                map.insert(hash, now);
                true
            }
        },
        Err(_) => false,
    };
    if due {
        let db = state.db.clone();
        tokio::spawn(async move {
            if let Err(e) = api_keys::touch(&db, id, now).await {
                tracing::debug!(error = %e, key = id, "could not record the key's last use");
            }
        });
    }
}

/// Middleware: 401 JSON unless `Authorization: Bearer <live key>`; the key goes into the
/// request's extensions for the handlers' scoping.
pub async fn require_bearer(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    // A refused request's body stays unread; crate::unread_body adds `Connection: close`.
    match authenticate(&state, req.headers()).await {
        Ok(Some(key)) => {
            req.extensions_mut().insert(key);
            next.run(req).await
        }
        Ok(None) => ApiError::unauthorized().into_response(),
        Err(e) => e.into_response(),
    }
}

/// An admin API error, in the one error shape (`crate::api::error`).
fn admin_error(status: StatusCode, code: &'static str, message: &str) -> Response {
    super::error::coded(status, code, message)
}

/// Middleware of `/admin/*`: 401 without a live key, 403 for an operator key.
pub async fn require_admin(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    match authenticate(&state, req.headers()).await {
        Ok(Some(key)) if key.role == Role::Admin => {
            req.extensions_mut().insert(key);
            next.run(req).await
        }
        Ok(Some(_)) => admin_error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the admin API needs an admin key; this is an operator key",
        ),
        Ok(None) => admin_error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "an admin API key is required (Authorization: Bearer <key>)",
        ),
        Err(e) => e.into_response(),
    }
}
