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
