//! `GET /api/clients?q=&limit=`: client search by name, phone or email.

use axum::extract::{RawQuery, State};
use axum::Json;
use serde::Serialize;

use super::error::ApiError;
use super::params::Params;
use crate::app::AppState;
use crate::store::clients::{self, Client, MIN_QUERY_CHARS};

/// Longest accepted search string, characters.
pub const MAX_QUERY_CHARS: usize = 100;

#[derive(Serialize)]
pub struct ClientList {
    pub clients: Vec<Client>,
}

pub async fn search_clients(
    State(state): State<AppState>,
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
    let limit = params.int("limit", 1, 100, 20)?;
    let clients = clients::search(&state.db, q, limit).await?;
    Ok(Json(ClientList { clients }))
}
