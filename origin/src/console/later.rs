//! Nav slots for console pages still to be built (edge caches, keys, doctor, inbox
//! preview): each answers a page saying so, until its own module replaces the route.

use axum::extract::OriginalUri;
use axum::routing::get;
use axum::Router;
use maud::{html, Markup};

use super::layout::{self, NAV};
use super::session::Session;
use crate::app::AppState;

/// The paths this module holds.
const PATHS: [&str; 4] = [
    "/console/edge",
    "/console/keys",
    "/console/doctor",
    "/console/inbox",
];

pub fn routes() -> Router<AppState> {
    PATHS
        .iter()
        .fold(Router::new(), |r, p| r.route(p, get(not_built)))
}

async fn not_built(session: Session, OriginalUri(uri): OriginalUri) -> Markup {
    let path = uri.path();
    let label = NAV
        .iter()
        .find(|(p, _)| *p == path)
        .map(|(_, l)| *l)
        .unwrap_or("This page");
    layout::page(
        &session,
        path,
        label,
        html! {
            p.card { (label) " is not built yet." }
        },
    )
}
