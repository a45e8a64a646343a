//! The ops console: server-rendered HTML pages under `/console/` on the public listener,
//! reached through the edge like the API (the edge caches `/console/assets/` and passes the
//! pages through uncached).
//!
//! Login is with an API key (`session`): an admin key reads and acts, an operator key
//! reads its offices' queues and tasks but every action answers 403. Sessions are rows of
//! `console_sessions` behind an HttpOnly, SameSite=Strict cookie (Secure when the request
//! came over TLS); every form carries the session's CSRF token and every action is a POST,
//! recorded in `console_audit` (`audit`) and shown on the task it touched. Pages work
//! without JavaScript; `assets/console.js` adds live refresh and small keyboard helpers.
//!
//! Files: `mod.rs` (router, errors, shared helpers), `layout` (page frame, nav, formats),
//! `session` (login, logout, cookie, CSRF, roles), `form` (urlencoded bodies), `assets`
//! (hashed static files), `audit`, one file per page: `queues`, `tasks`, `workers`,
//! `edges`, `keys`, `doctor`, `inbox`.
//!
//! # Adding a page
//!
//! 1. Create `console/<page>.rs` with `pub fn routes() -> Router<AppState>`; its handlers
//!    take a [`session::Session`] (which redirects to the login page when there is none)
//!    and return `Result<Markup, ConsoleError>` built with [`layout::page`].
//! 2. Declare the module here, merge its `routes()` in [`routes`], and point its entry in
//!    [`layout::NAV`] at it.
//! 3. Actions are POST forms: put [`layout::csrf_field`] in the form, start the handler
//!    with `session.authorize(&form)?` (admin key and CSRF token, else 403), do the change
//!    and its [`audit::record`] in one transaction, then answer with a 303 redirect
//!    ([`done`]) to the page that shows the result.
//! 4. Bad input is a [`ConsoleError::BadRequest`] / [`ConsoleError::NotFound`] (a 4xx
//!    page), never a panic or a 500.

pub mod assets;
pub mod audit;
pub mod doctor;
pub mod edges;
pub mod form;
pub mod inbox;
pub mod keys;
pub mod layout;
pub mod queues;
pub mod session;
pub mod tasks;
pub mod workers;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use maud::html;

use crate::app::AppState;

/// Every `/console` route. Pages are `private, no-store`; assets set their own caching.
pub fn routes() -> Router<AppState> {
    let pages = Router::new()
        .route(
            "/console",
            get(|| async { Redirect::to("/console/queues") }),
        )
        .route(
            "/console/",
            get(|| async { Redirect::to("/console/queues") }),
        )
        .merge(session::routes())
        .merge(queues::routes())
        .merge(tasks::routes())
        .merge(workers::routes())
        .merge(edges::routes())
        .merge(keys::routes())
        .merge(doctor::routes())
        .merge(inbox::routes())
        .route("/console/{*rest}", axum::routing::any(not_found))
        .layer(axum::middleware::map_response(page_headers));
    Router::new().merge(pages).merge(assets::routes())
}

async fn not_found() -> ConsoleError {
    ConsoleError::NotFound("no such console page".into())
}

/// Private pages: no cache keeps them, no frame shows them, scripts and styles only from
/// here.
async fn page_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    resp
}

/// Why a console request did not get its page. Each is an HTML page with its status,
/// except [`ConsoleError::Login`], a redirect to the login page.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// No live session: go to the login page, then back to this path.
    #[error("login required")]
    Login { next: String },
    /// 403: an operator key asked to act, or the form's CSRF token is missing or wrong.
    #[error("{0}")]
    Forbidden(String),
    /// 400: a form or query value that makes no sense.
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    /// 503: the database failed (logged; the page says to try again).
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let (status, title, message) = match &self {
            ConsoleError::Login { next } => {
                let to = format!("/console/login?next={}", layout::url_encode(next));
                return Redirect::to(&to).into_response();
            }
            ConsoleError::Forbidden(m) => (StatusCode::FORBIDDEN, "Not allowed", m.clone()),
            ConsoleError::BadRequest(m) => (StatusCode::BAD_REQUEST, "Bad request", m.clone()),
            ConsoleError::NotFound(m) => (StatusCode::NOT_FOUND, "Not found", m.clone()),
            ConsoleError::Db(e) => {
                tracing::error!(error = %e, "console: database error");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Database unavailable",
                    "the database did not answer; try again in a moment".to_string(),
                )
            }
        };
        let body = layout::bare(
            title,
            html! {
                h1 { (title) }
                p.error role="alert" { (message) }
                p { a href="/console/queues" { "Back to the console" } }
            },
        );
        (status, body).into_response()
    }
}

/// The answer to a successful action: 303 to `to` (which shows the outcome).
pub fn done(to: &str) -> Response {
    Redirect::to(to).into_response()
}
