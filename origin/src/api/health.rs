//! `GET /healthz` (the process is up) and `GET /readyz` (database and object store answer).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
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
/// dead, wait and duration per kind are registered there by `crate::queue::metrics`).
pub async fn metrics(
    State(state): State<AppState>,
) -> (
    StatusCode,
    [(axum::http::HeaderName, &'static str); 1],
    String,
) {
    use prometheus::Encoder;
    // The gauges are read from the database at scrape time, so this process reports the
    // queues correctly even when the worker runs in another process.
    crate::queue::metrics::init();
    let now_ms = chrono::Utc::now().timestamp_millis();
    if let Ok(stats) = crate::queue::store::stats(&state.db, now_ms).await {
        crate::queue::metrics::refresh(&stats);
    }
    let encoder = prometheus::TextEncoder::new();
    let mut buf = Vec::new();
    let content_type = [(
        axum::http::header::CONTENT_TYPE,
        "text/plain; version=0.0.4",
    )];
    match encoder.encode(&prometheus::gather(), &mut buf) {
        Ok(()) => (
            StatusCode::OK,
            content_type,
            String::from_utf8_lossy(&buf).into_owned(),
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            content_type,
            format!("# metrics encoding failed: {e}\n"),
        ),
    }
}
