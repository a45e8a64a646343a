//! The console's static files, embedded in the binary and served at
//! `/console/assets/<stem>.<hash>.<ext>`: the hash is the first 16 hex digits of the
//! file's sha256, computed once at first use, so a changed file gets a new URL and each
//! URL can be cached for a year (`public, max-age=31536000, immutable`; the edge keeps
//! them too). Sources: `origin/console-assets/`.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use sha2::{Digest, Sha256};

use crate::app::AppState;

/// One embedded file.
struct Asset {
    /// The source name, e.g. `console.css`.
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
    /// `console.<hash>.css`.
    hashed: String,
}

const SOURCES: [(&str, &str, &[u8]); 2] = [
    (
        "console.css",
        "text/css; charset=utf-8",
        include_bytes!("../../console-assets/console.css"),
    ),
    (
        "console.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../console-assets/console.js"),
    ),
];

static ASSETS: LazyLock<Vec<Asset>> = LazyLock::new(|| {
    SOURCES
        .iter()
        .map(|(name, content_type, body)| {
            let hash = hex::encode(Sha256::digest(body));
            let (stem, ext) = name.rsplit_once('.').unwrap_or((name, ""));
            Asset {
                name,
                content_type,
                body,
                hashed: format!("{stem}.{}.{ext}", &hash[..16]),
            }
        })
        .collect()
});

/// The URL of source file `name` (e.g. `console.css`).
pub fn url(name: &str) -> String {
    match ASSETS.iter().find(|a| a.name == name) {
        Some(a) => format!("/console/assets/{}", a.hashed),
        None => format!("/console/assets/{name}"),
    }
}

/// `GET /console/assets/{file}`.
pub fn routes() -> Router<AppState> {
    Router::new().route("/console/assets/{file}", get(serve))
}

async fn serve(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|a| a.hashed == file) {
        Some(a) => (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(a.content_type),
                ),
                (
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("public, max-age=31536000, immutable"),
                ),
                (
                    header::X_CONTENT_TYPE_OPTIONS,
                    HeaderValue::from_static("nosniff"),
                ),
            ],
            a.body,
        )
            .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
            "no such console asset",
        )
            .into_response(),
    }
}
