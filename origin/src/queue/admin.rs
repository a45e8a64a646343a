//! `GET /admin/queues`: queue counts as JSON for operators, behind an admin API key.
//!
//! Served on the internal listener only. The bearer token is checked against `api_keys` by
//! its sha256 hex (the table never holds a token), and the key must be a live admin key.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::store;
use crate::app::AppState;
use crate::db::Db;

/// Whether `headers` carry `Authorization: Bearer <token>` of a live admin key (the app
/// also checks this in front of every `/admin/*` route: 403 for an operator key).
pub async fn is_admin(db: &Db, headers: &HeaderMap) -> Result<bool, sqlx::Error> {
    let Some(token) = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
    else {
        return Ok(false);
    };
    let key = crate::store::api_keys::authenticate(db, token).await?;
    Ok(key.is_some_and(|k| k.role == crate::store::api_keys::Role::Admin))
}

fn error(status: StatusCode, code: &'static str, message: &str) -> Response {
    crate::api::error::coded(status, code, message)
}

/// The handler: per-queue counts, oldest due age, and the oldest dead and
/// `delivery_unknown` tasks (20 of each).
pub async fn queues(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match is_admin(&state.db, &headers).await {
        Ok(true) => {}
        Ok(false) => {
            return error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "an admin API key is required (Authorization: Bearer <key>)",
            )
        }
        Err(e) => {
            tracing::error!(error = %e, "admin auth query failed");
            return error(StatusCode::SERVICE_UNAVAILABLE, "storage", "database error");
        }
    }
    let now = crate::db::now_ms();
    let stats = match store::stats(&state.db, now).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "queue stats failed");
            return error(StatusCode::SERVICE_UNAVAILABLE, "storage", "database error");
        }
    };
    super::metrics::refresh(&stats);
    let dead = store::list(&state.db, store::TaskState::Dead, 20)
        .await
        .unwrap_or_default();
    let unknown = store::list(&state.db, store::TaskState::DeliveryUnknown, 20)
        .await
        .unwrap_or_default();
    Json(json!({
        "queues": stats, "dead": dead, "delivery_unknown": unknown, "now_ms": now
    }))
    .into_response()
}
