//! The JSON API under `/api` (bearer token required, never cached) and the health probes.
//! An admin key sees every office; an operator key only its offices (`store::api_keys::Scope`,
//! applied by each handler), and another office's conversation answers 404.

pub mod auth;
pub mod clients;
pub mod error;
pub mod health;
pub mod inbox;
pub mod messages;
pub mod params;

use axum::http::{header, HeaderValue};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;

use crate::app::AppState;

/// `/api/*` routes, authenticated, every response `Cache-Control: private, no-store`.
pub fn routes(state: &AppState) -> Router<AppState> {
    Router::new()
        .route("/api/inbox", get(inbox::get_inbox))
        .route(
            "/api/conversations/{id}/messages",
            get(messages::list_messages).post(messages::send_message),
        )
        .route("/api/conversations/{id}/read", post(messages::mark_read))
        .route("/api/clients", get(clients::search_clients))
        .route(
            "/api/media",
            post(crate::media::upload::upload)
                // The upload enforces its own (streamed) limit.
                .layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .fallback(|| async { error::ApiError::not_found("route") })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_bearer,
        ))
        .layer(axum::middleware::map_response(no_store))
}

/// Private data: no cache anywhere may keep it.
async fn no_store(mut resp: Response) -> Response {
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
    resp
}
