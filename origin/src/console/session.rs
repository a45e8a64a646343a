//! Console login: an API key typed into the login form opens a session, a row of
//! `console_sessions` found by the sha256 of a random token kept in a cookie
//! (`HttpOnly; SameSite=Strict; Path=/console/`, plus `Secure` when the request came over
//! TLS, which the edge says in `X-Forwarded-Proto`). The session acts with its key while
//! that key is live: revoking the key ends its sessions at once. Logout deletes the row.
//!
//! Every form carries the session's CSRF token (the login form a token of its own, in a
//! short-lived cookie); [`Session::authorize`] checks it and the role before any action.

use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use maud::html;
use rand::RngCore;
use sqlx::Row;

use super::form::Form;
use super::layout;
use super::ConsoleError;
use crate::app::AppState;
use crate::db::{now_ms, Backend, Db};
use crate::store::api_keys::{self, Role, Scope};
use komora_queue::filter::{Bind, Restriction};

/// The session cookie.
pub const COOKIE: &str = "komora_console";
/// The login form's own CSRF cookie.
const LOGIN_COOKIE: &str = "komora_console_login";
/// How long a session lasts after login (ms): 12 hours.
pub const SESSION_MS: i64 = 12 * 3_600_000;

/// A logged-in console user: the key it logged in with.
#[derive(Debug, Clone)]
pub struct Session {
    pub key_id: i64,
    pub key_name: String,
    pub role: Role,
    /// Offices of an operator key.
    pub offices: Vec<i64>,
    /// The token this session's forms carry.
    pub csrf: String,
}

impl Session {
    /// Who did it, for the audit and pause records: `name (key #id)`.
    pub fn who(&self) -> String {
        format!("{} (key #{})", self.key_name, self.key_id)
    }

    /// Whether this key may act (admin keys only).
    pub fn can_act(&self) -> bool {
        self.role == Role::Admin
    }

    /// Before an action: the form's CSRF token must be this session's, and the key an
    /// admin key. Either failing is a 403 page.
    pub fn authorize(&self, form: &Form) -> Result<(), ConsoleError> {
        let sent = form.get("csrf").unwrap_or_default();
        if !ct_eq(sent.as_bytes(), self.csrf.as_bytes()) {
            return Err(ConsoleError::Forbidden(
                "the form's security token is missing or out of date; reload the page and \
                 try again"
                    .into(),
            ));
        }
        if !self.can_act() {
            return Err(ConsoleError::Forbidden(
                "this is an operator key: it may read its offices' queues, but only an \
                 admin key may act on them"
                    .into(),
            ));
        }
        Ok(())
    }

    /// What this key may see.
    pub fn scope(&self) -> Scope {
        match self.role {
            Role::Admin => Scope::All,
            Role::Operator => Scope::Offices(self.offices.clone()),
        }
    }

    /// The tasks an operator key may see: those whose payload names a message of one of
    /// its offices (`message_id`, as the message tasks carry). `None` for an admin key.
    pub fn restriction(&self, backend: Backend) -> Option<Restriction> {
        let Scope::Offices(offices) = self.scope() else {
            return None;
        };
        if offices.is_empty() {
            return Some(Restriction {
                sql: "1 = 0".into(),
                binds: Vec::new(),
            });
        }
        let marks = vec!["$?"; offices.len()].join(", ");
        // The payload is the engine's JSON text; the guard keeps a hand-made non-JSON row
        // from failing the whole page.
        let message = match backend {
            Backend::Sqlite => {
                "CASE WHEN json_valid(payload) THEN json_extract(payload, '$.message_id') END"
            }
            Backend::Postgres => {
                "CASE WHEN payload LIKE '{%' THEN (payload::jsonb ->> 'message_id') END"
            }
        };
        let id = match backend {
            Backend::Sqlite => "m.id",
            Backend::Postgres => "CAST(m.id AS TEXT)",
        };
        Some(Restriction {
            sql: format!(
                "{message} IN (SELECT {id} FROM messages m JOIN conversations c \
                 ON c.id = m.conversation_id WHERE c.office_id IN ({marks}))"
            ),
            binds: offices.into_iter().map(Bind::Int).collect(),
        })
    }
}

/// Equal bytes, in time that does not depend on where they differ.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// The value of cookie `name` in `headers`.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// Whether the browser reached us over TLS: the edge's `X-Forwarded-Proto`.
pub fn over_tls(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"))
}

/// A `Set-Cookie` value with the console's attributes; `max_age_s` 0 deletes it.
fn set_cookie(name: &str, value: &str, path: &str, max_age_s: i64, tls: bool) -> HeaderValue {
    let secure = if tls { "; Secure" } else { "" };
    let v = format!(
        "{name}={value}; Path={path}; Max-Age={max_age_s}; HttpOnly; SameSite=Strict{secure}"
    );
    // Only hex tokens and constants go in, so this always is a valid header value.
    HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Looks up the live session of `token`: its row unexpired and its key live.
async fn load(db: &Db, token: &str, now: i64) -> Result<Option<Session>, sqlx::Error> {
    let rows = crate::db::query(
        "SELECT s.csrf, k.id, k.name, k.role, o.office_id FROM console_sessions s \
         JOIN api_keys k ON k.id = s.api_key_id \
         LEFT JOIN api_key_offices o ON o.api_key_id = k.id \
         WHERE s.token_hash = $1 AND s.expires_at > $2 AND k.revoked_at IS NULL \
         AND (k.expires_at IS NULL OR k.expires_at > $2)",
    )
    .bind(api_keys::hash_token(token))
    .bind(now)
    .fetch_all(&db.pool)
    .await?;
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let role = match first.try_get::<String, _>(3)?.as_str() {
        "admin" => Role::Admin,
        _ => Role::Operator,
    };
    let mut offices = Vec::new();
    if role == Role::Operator {
        for r in &rows {
            if let Some(o) = r.try_get::<Option<i64>, _>(4)? {
                offices.push(o);
            }
        }
    }
    Ok(Some(Session {
        csrf: first.try_get(0)?,
        key_id: first.try_get(1)?,
        key_name: first.try_get(2)?,
        role,
        offices,
    }))
}

impl FromRequestParts<AppState> for Session {
    type Rejection = ConsoleError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let next = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/console/queues".into());
        // A form POSTed after the session ended goes back to its page, not to the action.
        let next = if parts.method == axum::http::Method::GET {
            next
        } else {
            parts
                .headers
                .get(header::REFERER)
                .and_then(|v| v.to_str().ok())
                .and_then(|r| r.find("/console/").map(|i| r[i..].to_string()))
                .unwrap_or_else(|| "/console/queues".into())
        };
        let Some(token) = cookie(&parts.headers, COOKIE).filter(|t| t.len() == 64) else {
            return Err(ConsoleError::Login { next });
        };
        match load(&state.db, token, now_ms()).await? {
            Some(s) => Ok(s),
            None => Err(ConsoleError::Login { next }),
        }
    }
}

/// Login and logout.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/console/login", get(login_page).post(login))
        .route("/console/logout", post(logout))
}

#[derive(serde::Deserialize)]
struct NextQuery {
    next: Option<String>,
}

/// Where to go after login: a console path, else the queues page.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with("/console/")
                && !n.starts_with("/console/login")
                && !n.contains("//")
                && !n.contains('\\') =>
        {
            n.to_string()
        }
        _ => "/console/queues".into(),
    }
}

fn login_form(token: &str, next: &str, error: Option<&str>) -> maud::Markup {
    layout::bare(
        "Log in",
        html! {
            h1 { "Komora console" }
            @if let Some(e) = error {
                p.error role="alert" { (e) }
            }
            form.login method="post" action="/console/login" {
                input type="hidden" name="csrf" value=(token);
                input type="hidden" name="next" value=(next);
                label for="key" { "API key" }
                input #key type="password" name="key" autocomplete="off" required autofocus
                    aria-describedby="key-help";
                p #key-help .help {
                    "An admin key acts on the queues; an operator key reads its offices' queues."
                    " Create one with " code { "komora-origin keys create" } "."
                }
                button type="submit" { "Log in" }
            }
        },
    )
}

/// The login form, with a fresh login token in its own short-lived cookie.
async fn login_page(headers: HeaderMap, Query(q): Query<NextQuery>) -> Response {
    let token = random_token();
    let next = safe_next(q.next.as_deref());
    let mut resp = login_form(&token, &next, None).into_response();
    resp.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(
            LOGIN_COOKIE,
            &token,
            "/console/login",
            3600,
            over_tls(&headers),
        ),
    );
    resp
}

async fn login(State(state): State<AppState>, headers: HeaderMap, form: Form) -> Response {
    match try_login(&state, &headers, &form).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn try_login(
    state: &AppState,
    headers: &HeaderMap,
    form: &Form,
) -> Result<Response, ConsoleError> {
    let tls = over_tls(headers);
    let sent = form.get("csrf").unwrap_or_default();
    let expected = cookie(headers, LOGIN_COOKIE).unwrap_or_default();
    if expected.is_empty() || !ct_eq(sent.as_bytes(), expected.as_bytes()) {
        return Err(ConsoleError::Forbidden(
            "the login form's security token is missing or out of date; open the login \
             page again"
                .into(),
        ));
    }
    let next = safe_next(form.get("next"));
    let key = match form.get("key") {
        Some(k) if k.len() <= 256 => api_keys::authenticate(&state.db, k).await?,
        _ => None,
    };
    let Some(key) = key else {
        let mut resp = (
            StatusCode::UNAUTHORIZED,
            login_form(
                expected,
                &next,
                Some("That key is not a live API key (unknown, revoked or expired)."),
            ),
        )
            .into_response();
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        return Ok(resp);
    };
    let now = now_ms();
    let token = random_token();
    let mut tx = state.db.pool.begin().await?;
    // Old sessions go when someone logs in: no timer needed.
    crate::db::query("DELETE FROM console_sessions WHERE expires_at <= $1")
        .bind(now)
        .execute(&mut *tx)
        .await?;
    crate::db::query(
        "INSERT INTO console_sessions (token_hash, api_key_id, csrf, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(api_keys::hash_token(&token))
    .bind(key.id)
    .bind(random_token())
    .bind(now)
    .bind(now + SESSION_MS)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    let mut resp = Redirect::to(&next).into_response();
    let h = resp.headers_mut();
    h.append(
        header::SET_COOKIE,
        set_cookie(COOKIE, &token, "/console/", SESSION_MS / 1000, tls),
    );
    h.append(
        header::SET_COOKIE,
        set_cookie(LOGIN_COOKIE, "", "/console/login", 0, tls),
    );
    Ok(resp)
}

async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    session: Session,
    form: Form,
) -> Result<Response, ConsoleError> {
    // Logging out needs the token too (no forced logouts from other sites), not a role.
    let sent = form.get("csrf").unwrap_or_default();
    if !ct_eq(sent.as_bytes(), session.csrf.as_bytes()) {
        return Err(ConsoleError::Forbidden(
            "the form's security token is missing or out of date; reload the page".into(),
        ));
    }
    if let Some(token) = cookie(&headers, COOKIE) {
        crate::db::query("DELETE FROM console_sessions WHERE token_hash = $1")
            .bind(api_keys::hash_token(token))
            .execute(&state.db.pool)
            .await?;
    }
    let mut resp = Redirect::to("/console/login").into_response();
    resp.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(COOKIE, "", "/console/", 0, over_tls(&headers)),
    );
    Ok(resp)
}
