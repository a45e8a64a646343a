//! The Inbox preview (`/console/inbox`, read-only): conversations by last activity, and
//! one conversation's messages (`/console/inbox/{id}`) with their media as thumbnails.
//!
//! Both read through `crate::store` (`inbox::page`, `messages::page`) with the session's
//! scope, so an operator key sees only its offices' conversations (another's is a 404).
//! A thumbnail's `src` is the signed media URL the API hands out (`AppState::media_url`):
//! relative `/media/<sha256>?exp=…&sig=…` by default, so the browser loads it through
//! the edge it reached the console on, from the edge's cache.

use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::Router;
use maud::{html, Markup};

use super::layout::{self, time, url_encode};
use super::session::Session;
use super::ConsoleError;
use crate::app::AppState;
use crate::store::api_keys::Scope;
use crate::store::messages::{self, Message, PageStart};
use crate::store::{inbox, Cursor, PLATFORMS};

/// Conversations per page.
const CONVERSATIONS: i64 = 50;
/// Messages per page.
const MESSAGES: i64 = 50;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/console/inbox", get(list))
        .route("/console/inbox/{id}", get(conversation))
}

#[derive(serde::Deserialize, Default)]
struct ListQuery {
    platform: Option<String>,
    cursor: Option<String>,
}

fn cursor(raw: Option<&str>) -> Result<Option<Cursor>, ConsoleError> {
    match raw.filter(|c| !c.is_empty()) {
        None => Ok(None),
        Some(c) => Cursor::decode(c)
            .map(Some)
            .ok_or_else(|| ConsoleError::BadRequest("cursor: not a cursor of this list".into())),
    }
}

async fn list(
    State(state): State<AppState>,
    session: Session,
    Query(q): Query<ListQuery>,
) -> Result<Markup, ConsoleError> {
    let platform = q.platform.as_deref().filter(|p| !p.is_empty());
    if let Some(p) = platform {
        if !PLATFORMS.contains(&p) {
            return Err(ConsoleError::BadRequest(format!(
                "platform: {p:?} is not one of {}",
                PLATFORMS.join(", ")
            )));
        }
    }
    let after = cursor(q.cursor.as_deref())?;
    let items = inbox::page(
        &state.db,
        &session.scope(),
        platform,
        after,
        CONVERSATIONS,
        0,
    )
    .await?;
    let next = (items.len() == usize::try_from(CONVERSATIONS).unwrap_or(usize::MAX))
        .then(|| items.last())
        .flatten()
        .map(|i| {
            let c = Cursor {
                ts: i.last_activity_at,
                id: i.id,
            };
            let mut url = format!("/console/inbox?cursor={}", c.encode());
            if let Some(p) = platform {
                url.push_str(&format!("&platform={}", url_encode(p)));
            }
            url
        });
    let body = html! {
        form.filters.inbox-filters method="get" action="/console/inbox" {
            label for="platform" { "Platform"
                select #platform name="platform" {
                    option value="" { "all" }
                    @for p in PLATFORMS {
                        option value=(p) selected[platform == Some(p)] { (p) }
                    }
                }
            }
            button type="submit" { "Show" }
        }
        div.table-wrap {
            table #conversations {
                thead { tr {
                    th scope="col" { "Client" }
                    th scope="col" { "Platform" }
                    th.num scope="col" { "Office" }
                    th scope="col" { "Last activity" }
                    th.num scope="col" { "Unread" }
                    th scope="col" { "Last message" }
                } }
                tbody {
                    @for i in &items {
                        tr {
                            td { a href=(format!("/console/inbox/{}", i.id)) { (i.client.name) } }
                            td { (i.platform) }
                            td.num { @if let Some(o) = i.office_id { (o) } @else { "—" } }
                            td { (time(i.last_activity_at)) }
                            td.num { (i.unread_count) }
                            td.preview {
                                @if let Some(m) = &i.last_message {
                                    span.muted { (if m.direction == "in" { "← " } else { "→ " }) }
                                    (m.preview)
                                }
                            }
                        }
                    }
                    @if items.is_empty() { tr { td colspan="6" { "No conversations." } } }
                }
            }
        }
        @if let Some(n) = next { p.pager { a href=(n) { "Older conversations →" } } }
    };
    Ok(layout::page(
        &session,
        "/console/inbox",
        "Inbox preview",
        body,
    ))
}

#[derive(serde::Deserialize, Default)]
struct MessagesQuery {
    before: Option<String>,
}

async fn conversation(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    Query(q): Query<MessagesQuery>,
) -> Result<Markup, ConsoleError> {
    let id = match id.parse::<i64>() {
        Ok(n) if n > 0 => n,
        _ => {
            return Err(ConsoleError::BadRequest(format!(
                "{id:?} is not a conversation id"
            )))
        }
    };
    // Hidden and missing look the same: an operator learns nothing of other offices.
    let scope = session.scope();
    let visible = match scope {
        Scope::All => messages::conversation_exists(&state.db, id).await?,
        _ => messages::conversation_visible(&state.db, &scope, id).await?,
    };
    if !visible {
        return Err(ConsoleError::NotFound(format!("no conversation #{id}")));
    }
    let start = match cursor(q.before.as_deref())? {
        Some(c) => PageStart::Before(c),
        None => PageStart::Offset(0),
    };
    let url = |sha: &str| state.media_url(sha);
    let page = messages::page(&state.db, id, start, MESSAGES, &url).await?;
    let older = (page.len() == usize::try_from(MESSAGES).unwrap_or(usize::MAX))
        .then(|| page.last())
        .flatten()
        .map(|m| {
            let c = Cursor {
                ts: m.created_at,
                id: m.id,
            };
            format!("/console/inbox/{id}?before={}", c.encode())
        });
    let body = html! {
        p { a href="/console/inbox" { "← All conversations" } }
        ol.messages reversed {
            @for m in &page { (message(m)) }
        }
        @if page.is_empty() { p.muted { "No messages." } }
        @if let Some(o) = older { p.pager { a href=(o) { "Older messages →" } } }
    };
    Ok(layout::page(
        &session,
        "/console/inbox",
        &format!("Conversation #{id}"),
        body,
    ))
}

fn message(m: &Message) -> Markup {
    let inbound = m.direction == "in";
    html! {
        li class=(if inbound { "message in" } else { "message out" }) {
            div.meta {
                (if inbound { "Client" } else { "Office" }) " · " (time(m.created_at))
                " · " span class=(format!("state state-{}", m.delivery_status)) { (m.delivery_status) }
            }
            @if !m.text.is_empty() { p.text { (m.text) } }
            @if !m.media.is_empty() {
                ul.media {
                    @for a in &m.media {
                        @let name = a.original_name.clone().unwrap_or_else(|| a.sha256.chars().take(12).collect());
                        li {
                            @if a.content_type.starts_with("image/") {
                                a href=(a.url) {
                                    img.thumb src=(a.url) alt=(name) loading="lazy" width="160";
                                }
                            } @else {
                                a.file href=(a.url) { (name) }
                            }
                            span.muted { " " (a.content_type) ", " (a.size) " bytes" }
                        }
                    }
                }
            }
        }
    }
}
