//! Bearer-token authentication for `/api`: the token's sha256 is looked up in `api_keys`.

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use crate::app::AppState;

/// Longest token we bother hashing (ours are 64 hex characters).
const MAX_TOKEN_LEN: usize = 256;

/// Middleware: 401 JSON unless `Authorization: Bearer <live key>`.
pub async fn require_bearer(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        })
        .filter(|t| !t.is_empty() && t.len() <= MAX_TOKEN_LEN)
        .map(str::to_string);
    // A refused request's body stays unread; crate::unread_body adds `Connection: close`.
    let Some(token) = token else {
        return ApiError::unauthorized().into_response();
    };
    match crate::store::api_keys::authenticate(&state.db, &token).await {
        Ok(Some(_)) => next.run(req).await,
        Ok(None) => ApiError::unauthorized().into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}
