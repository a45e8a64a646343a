//! The one error type and JSON error shape of every origin endpoint (`/api`, `/media`, the
//! webhooks, the admin API, authentication): every failure becomes
//! `{"error": "<message>", "code": "<machine-readable code>", "parameter": "limit"}`
//! (`parameter` only when a request parameter is at fault) with a 4xx/5xx status, never
//! axum's plain text. `error` stays the human message so clients that read it keep working.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    /// Machine-readable code, e.g. `not_found`, `bad_signature`; by default from the status.
    pub code: &'static str,
    pub message: String,
    /// The request parameter at fault, when one is.
    pub parameter: Option<&'static str>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'a str,
    code: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameter: Option<&'static str>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code: default_code(status),
            message: message.into(),
            parameter: None,
        }
    }

    /// An error with its own code (the webhooks' `bad_signature`, the admin API's `storage`).
    pub fn coded(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            ..ApiError::new(status, message)
        }
    }

    /// 400 naming the parameter at fault.
    pub fn bad_param(parameter: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            parameter: Some(parameter),
            ..ApiError::new(StatusCode::BAD_REQUEST, message)
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

/// The code of an error that has none of its own: the status in words.
fn default_code(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "bad_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        409 => "conflict",
        413 => "payload_too_large",
        415 => "unsupported_media_type",
        416 => "range_not_satisfiable",
        422 => "unprocessable",
        429 => "too_many_requests",
        502 => "bad_gateway",
        503 => "unavailable",
        504 => "gateway_timeout",
        _ if status.is_client_error() => "client_error",
        _ => "internal",
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
            code: self.code,
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

/// [`ApiError::coded`] as a response: the admin API's and the webhooks' errors, in the
/// same shape as every other.
pub fn coded(status: StatusCode, code: &'static str, message: &str) -> Response {
    ApiError::coded(status, code, message).into_response()
}
