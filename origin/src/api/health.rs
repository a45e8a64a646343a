//! `GET /healthz` (the process is up), `GET /readyz` (database and object store answer) and
//! `GET /metrics` (Prometheus text; the queue gauges are refreshed from the database on
//! each scrape).

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use prometheus::{Encoder, TextEncoder};
use serde_json::{json, Value};

use crate::app::AppState;

pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let db = state.db.ping().await;
    let store = crate::media::store::ping(&state.media).await;
    if let Err(e) = &db {
        tracing::warn!(error = %e, "readyz: database unreachable");
    }
    if let Err(e) = &store {
        tracing::warn!(error = %e, "readyz: object store unreachable");
    }
    let status = if db.is_ok() && store.is_ok() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let word = |ok: bool| if ok { "ok" } else { "unreachable" };
    (
        status,
        Json(json!({ "database": word(db.is_ok()), "object_store": word(store.is_ok()) })),
    )
}

/// `GET /metrics`: Prometheus text of the default registry (queue depth, running, failed,
/// dead, wait and duration per kind are registered there by `crate::queue::metrics` when
/// `crate::queue::routes` builds the router, so every series is listed from the start).
pub async fn metrics(State(state): State<AppState>) -> Response {
    // The gauges are read from the database at scrape time, so this process reports the
    // queues correctly even when the worker runs in another process.
    match crate::queue::store::stats(&state.db, crate::db::now_ms()).await {
        Ok(stats) => crate::queue::metrics::refresh(&stats),
        // Still serve the counters; the gauges keep their last values, which the log says.
        Err(e) => {
            tracing::warn!(error = %e, "metrics: queue gauges not refreshed from the database")
        }
    }
    let encoder = TextEncoder::new();
    let content_type = [(header::CONTENT_TYPE, encoder.format_type())];
    match encoder.encode_to_string(&prometheus::gather()) {
        Ok(text) => (StatusCode::OK, content_type, text).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            content_type,
            format!("# metrics encoding failed: {e}\n"),
        )
            .into_response(),
    }
}
