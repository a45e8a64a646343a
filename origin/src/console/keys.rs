//! The Keys page (`/console/keys`), admin keys only: every API key with its role, offices,
//! use and state; create one (its token is shown once, on the answer to the form, and
//! never stored); revoke one (its console sessions end with it). Both go through
//! `crate::store::api_keys` and commit together with their audit row.

use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use maud::{html, Markup};

use super::form::Form;
use super::layout::{self, csrf_field, time, time_opt};
use super::session::Session;
use super::{audit, done, ConsoleError};
use crate::app::AppState;
use crate::db::now_ms;
use crate::store::api_keys::{self, KeyError, KeyInfo, NewKey, Role};
use crate::store::clients::{list_offices, OfficeName};

/// Longest key name accepted, characters.
const MAX_NAME_CHARS: usize = 100;
/// Longest lifetime offered, days (10 years).
const MAX_DAYS: i64 = 3650;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/console/keys", get(page).post(create))
        .route("/console/keys/{id}/revoke", post(revoke))
}

/// Reading keys is an admin's business too: an operator key gets a 403 page.
fn admin_only(session: &Session) -> Result<(), ConsoleError> {
    if session.role == Role::Admin {
        Ok(())
    } else {
        Err(ConsoleError::Forbidden(
            "API keys are managed with an admin key; this is an operator key".into(),
        ))
    }
}

#[derive(serde::Deserialize, Default)]
struct Notice {
    revoked: Option<i64>,
}

async fn page(
    State(state): State<AppState>,
    session: Session,
    Query(notice): Query<Notice>,
) -> Result<Markup, ConsoleError> {
    admin_only(&session)?;
    let notice = notice
        .revoked
        .map(|id| html! { p.notice role="status" { "Key #" (id) " is revoked." } });
    keys_page(&state, &session, notice).await
}

async fn keys_page(
    state: &AppState,
    session: &Session,
    notice: Option<Markup>,
) -> Result<Markup, ConsoleError> {
    let keys = api_keys::list(&state.db).await?;
    let offices = list_offices(&state.db).await?;
    let now = now_ms();
    let body = html! {
        @if let Some(n) = notice { (n) }
        (create_form(session, &offices))
        h2 { "Keys" }
        div.table-wrap {
            table #keys {
                thead { tr {
                    th.num scope="col" { "Id" }
                    th scope="col" { "Name" }
                    th scope="col" { "Role" }
                    th scope="col" { "Offices" }
                    th scope="col" { "Created" }
                    th scope="col" { "Last used" }
                    th scope="col" { "Expires" }
                    th scope="col" { "State" }
                    th scope="col" { span.muted { "Action" } }
                } }
                tbody {
                    @for k in &keys { (key_row(session, k, &offices, now)) }
                    @if keys.is_empty() { tr { td colspan="9" { "No keys." } } }
                }
            }
        }
    };
    Ok(layout::page(session, "/console/keys", "Keys", body))
}

fn office_label(offices: &[OfficeName], id: i64) -> String {
    match offices.iter().find(|o| o.id == id) {
        Some(o) => format!("{} (#{id})", o.name),
        None => format!("#{id}"),
    }
}

fn key_row(session: &Session, k: &KeyInfo, offices: &[OfficeName], now: i64) -> Markup {
    let revoked = k.revoked_at.is_some();
    let expired = k.expires_at.is_some_and(|e| e <= now);
    html! {
        tr id=(format!("key-{}", k.id)) {
            td.num { (k.id) }
            td { (k.name) @if k.id == session.key_id { " " span.muted { "(this session)" } } }
            td { (k.role.as_str()) }
            td {
                @if k.role == Role::Admin { span.muted { "all" } }
                @for (i, o) in k.offices.iter().enumerate() {
                    @if i > 0 { ", " }
                    (office_label(offices, *o))
                }
            }
            td { (time(k.created_at)) }
            td { (time_opt(k.last_used_at)) }
            td { (time_opt(k.expires_at)) }
            td {
                @if revoked { span.state.state-dead { "revoked " } (time_opt(k.revoked_at)) }
                @else if expired { span.state.state-dead { "expired" } }
                @else { span.state.state-done { "live" } }
            }
            td {
                @if !revoked {
                    form.inline method="post" action=(format!("/console/keys/{}/revoke", k.id)) {
                        (csrf_field(session))
                        button.danger type="submit"
                            aria-label=(format!("Revoke key #{} {}", k.id, k.name)) { "Revoke" }
                    }
                }
            }
        }
    }
}

fn create_form(session: &Session, offices: &[OfficeName]) -> Markup {
    html! {
        section.card aria-labelledby="create" {
            h2 #create { "Create a key" }
            form.filters method="post" action="/console/keys" {
                (csrf_field(session))
                label for="key-name" { "Name"
                    input #key-name type="text" name="name" required maxlength="100"
                        placeholder="e.g. warsaw-desk";
                }
                label for="key-role" { "Role"
                    select #key-role name="role" {
                        option value="operator" { "operator (its offices only)" }
                        option value="admin" { "admin (everything)" }
                    }
                }
                fieldset.offices {
                    legend { "Offices (operator keys)" }
                    @for o in offices {
                        label.check {
                            input type="checkbox" name="office" value=(o.id);
                            " " (o.name) " (#" (o.id) ")"
                        }
                    }
                    @if offices.is_empty() { span.muted { "No offices yet." } }
                }
                label for="key-days" { "Expires after (days, empty = never)"
                    input #key-days type="text" name="days" inputmode="numeric" size="6";
                }
                button type="submit" { "Create key" }
            }
        }
    }
}

/// A key or office id as sent: a whole number from 1; else a 400 page naming `field`.
fn parse_id(field: &str, v: &str) -> Result<i64, ConsoleError> {
    match v.trim().trim_start_matches('#').parse::<i64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(ConsoleError::BadRequest(format!(
            "{field}: {v:?} is not an id (a whole number from 1)"
        ))),
    }
}

/// The form as a [`NewKey`]; a 400 page names the field that is wrong.
fn new_key(form: &Form, now: i64) -> Result<NewKey, ConsoleError> {
    let bad = |m: String| ConsoleError::BadRequest(m);
    let name = form.get("name").unwrap_or_default().to_string();
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(bad(format!("name: at most {MAX_NAME_CHARS} characters")));
    }
    let role = match form.get("role") {
        Some("admin") => Role::Admin,
        Some("operator") | None => Role::Operator,
        Some(other) => return Err(bad(format!("role: {other:?} is not admin or operator"))),
    };
    let offices = form
        .all("office")
        .filter(|v| !v.is_empty())
        .map(|v| parse_id("office", v))
        .collect::<Result<Vec<_>, _>>()?;
    let expires_at = match form.get("days") {
        None => None,
        Some(d) => match d.parse::<i64>() {
            Ok(n) if (1..=MAX_DAYS).contains(&n) => Some(now + n * 86_400_000),
            _ => {
                return Err(bad(format!(
                    "days: {d:?} is not a whole number of days from 1 to {MAX_DAYS}"
                )))
            }
        },
    };
    Ok(NewKey {
        name,
        role,
        offices,
        expires_at,
    })
}

async fn create(
    State(state): State<AppState>,
    session: Session,
    form: Form,
) -> Result<Markup, ConsoleError> {
    admin_only(&session)?;
    session.authorize(&form)?;
    let now = now_ms();
    let key = new_key(&form, now)?;
    let mut tx = state.db.pool.begin().await?;
    let (id, token) = match api_keys::create_key_in(&mut tx, &key).await {
        Ok(created) => created,
        Err(KeyError::Db(e)) => return Err(ConsoleError::Db(e)),
        // The store's message says --office (the CLI's flag); the form calls it Offices.
        Err(e) => {
            return Err(ConsoleError::BadRequest(
                e.to_string().replace("--office", "office"),
            ))
        }
    };
    audit::record(
        &mut tx,
        &session,
        "key create",
        None,
        &[],
        &format!(
            "key #{id} {:?}, {}, offices {:?}",
            key.name,
            key.role.as_str(),
            key.offices
        ),
        now,
    )
    .await?;
    tx.commit().await?;
    let notice = html! {
        section.card.created aria-labelledby="token-title" {
            h2 #token-title { "Key #" (id) " " (key.name) " created" }
            p role="status" {
                "Its token is shown only now; copy it and keep it safe. It is not stored, "
                "only its hash is."
            }
            label for="new-token" { "Token" }
            input #new-token.token type="text" readonly value=(token) size="70";
        }
    };
    keys_page(&state, &session, Some(notice)).await
}

async fn revoke(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    form: Form,
) -> Result<Response, ConsoleError> {
    admin_only(&session)?;
    session.authorize(&form)?;
    let id = parse_id("key", &id)?;
    let now = now_ms();
    let mut tx = state.db.pool.begin().await?;
    if !api_keys::revoke_in(&mut tx, id, now).await? {
        return Err(ConsoleError::NotFound(format!("there is no key #{id}")));
    }
    audit::record(
        &mut tx,
        &session,
        "key revoke",
        None,
        &[],
        &format!("key #{id}"),
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(done(&format!("/console/keys?revoked={id}")))
}
