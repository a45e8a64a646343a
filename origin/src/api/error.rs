//! The one error type of the HTTP API: every failure becomes JSON
//! `{"error": "...", "parameter": "limit"}` with a 4xx/5xx status, never axum's plain text.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// The request parameter at fault, when one is.
    pub parameter: Option<&'static str>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameter: Option<&'static str>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            parameter: None,
        }
    }

    /// 400 naming the parameter at fault.
    pub fn bad_param(parameter: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            parameter: Some(parameter),
        }
    }

    pub fn not_found(what: &str) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, format!("{what} not found"))
    }

    pub fn unauthorized() -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "missing or invalid bearer token")
    }

    pub fn internal() -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    }
}

/// Seconds a client is told to wait before retrying a 503 (`Retry-After`).
pub const RETRY_AFTER_SECS: &str = "1";

/// Whether `e` is a transient database condition the client should retry: the pool had no
/// connection in time, SQLite stayed locked past its busy timeout, or the connection to
/// PostgreSQL was lost (server restarted, backend terminated). Anything else is a bug.
pub fn is_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            let code = db.code();
            let code = code.as_deref().unwrap_or_default();
            // SQLite: SQLITE_BUSY (5) / SQLITE_LOCKED (6), with extended codes.
            let sqlite_busy = matches!(code, "5" | "6" | "261" | "262" | "517" | "773");
            // PostgreSQL: connection exceptions (08xxx), admin/crash shutdown and
            // "cannot connect now" (57P01..57P03), serialization/deadlock (40001, 40P01).
            let pg_lost = code.starts_with("08")
                || matches!(code, "57P01" | "57P02" | "57P03" | "40001" | "40P01");
            sqlite_busy || pg_lost || db.message().contains("database is locked")
        }
        _ => false,
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> ApiError {
        // Details go to the log, not to the client.
        if is_transient(&e) {
            tracing::warn!(error = %e, "database unavailable; answering 503");
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "database busy, retry")
        } else {
            tracing::error!(error = %e, "database error");
            ApiError::internal()
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Body {
            error: &self.message,
            parameter: self.parameter,
        };
        let mut resp = (self.status, axum::Json(body)).into_response();
        // Errors are never cacheable, wherever they come from.
        resp.headers_mut().insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("private, no-store"),
        );
        // Every 503 here is transient (busy or lost database, full queue): say when to retry.
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECS),
            );
        }
        resp
    }
}

/// The coded error body of the admin API and the webhooks, `{"error": {"code", "message"}}`
/// (a machine-readable code for callers that are programs), never cacheable like every
/// other error. One function, so the two cannot drift apart.
pub fn coded(status: StatusCode, code: &str, message: &str) -> Response {
    let mut resp = (
        status,
        axum::Json(serde_json::json!({ "error": { "code": code, "message": message } })),
    )
        .into_response();
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
    resp
}
