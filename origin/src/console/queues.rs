//! The Queues page (`/console/queues`): per queue and per kind, tasks due, scheduled,
//! running, retrying, dead and awaiting an operator, done per minute over the last hour
//! and the age of the oldest waiting task, refreshed live every 2 s by `console.js`; and
//! the queue controls: pause, resume, purge (typed confirmation).

use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use maud::{html, Markup};

use super::form::Form;
use super::layout::{self, age, csrf_field, sparkline, url_encode};
use super::session::Session;
use super::{audit, done, ConsoleError};
use crate::app::AppState;
use crate::db::now_ms;
use komora_queue::config::QUEUES;
use komora_queue::filter::TaskFilter;
use komora_queue::inspect::{self, Counts};
use komora_queue::{control, Backend};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/console/queues", get(page))
        .route("/console/queues/{queue}/{action}", post(act))
}

#[derive(serde::Deserialize, Default)]
struct Notice {
    done: Option<String>,
    queue: Option<String>,
    n: Option<u64>,
}

/// The filter an operator's counts are restricted to.
pub fn visible(session: &Session, backend: Backend) -> TaskFilter {
    TaskFilter {
        restriction: session.restriction(backend),
        ..TaskFilter::default()
    }
}

fn tasks_link(queue: &str, kind: Option<&str>, view: Option<&str>) -> String {
    let mut url = format!("/console/tasks?queue={}", url_encode(queue));
    if let Some(k) = kind {
        url.push_str(&format!("&kind={}", url_encode(k)));
    }
    if let Some(v) = view {
        url.push_str(&format!("&view={v}"));
    }
    url
}

fn cells(c: &Counts, queue: &str, kind: Option<&str>) -> Markup {
    let n = |v: i64, view: &str| {
        html! {
            td.num {
                @if v > 0 { a href=(tasks_link(queue, kind, Some(view))) { (v) } } @else { "0" }
            }
        }
    };
    html! {
        (n(c.due, "due"))
        (n(c.scheduled, "scheduled"))
        (n(c.running, "running"))
        (n(c.retrying, "retrying"))
        (n(c.dead, "dead"))
        (n(c.delivery_unknown, "delivery_unknown"))
        td.num { (c.done_per_minute.first().copied().unwrap_or(0)) }
        td.num { (format!("{:.1}", c.done_last_hour() as f64 / 60.0)) }
        td { (sparkline(&c.done_per_minute)) }
        td.num { @if c.due > 0 { (age(c.oldest_due_ms)) } @else { "—" } }
    }
}

async fn page(
    State(state): State<AppState>,
    session: Session,
    Query(notice): Query<Notice>,
) -> Result<Markup, ConsoleError> {
    let now = now_ms();
    let queues = inspect::overview(&state.db, &visible(&session, state.db.backend), now).await?;
    let history = audit::queue_actions(&state.db, 10).await?;
    let message = match (notice.done.as_deref(), notice.queue.as_deref()) {
        (Some("pause"), Some(q)) => {
            Some(format!("Queue {q} paused: workers claim nothing from it."))
        }
        (Some("resume"), Some(q)) => Some(format!("Queue {q} resumed.")),
        (Some("purge"), Some(q)) => Some(format!(
            "Queue {q} purged: {} waiting tasks deleted.",
            notice.n.unwrap_or(0)
        )),
        _ => None,
    };
    let body = html! {
        @if let Some(m) = message { p.notice role="status" { (m) } }
        @if !session.can_act() {
            p.muted { "Operator key: counts cover your offices' tasks; actions need an admin key." }
        }
        p.live data-live-status { "Counts as of " (layout::time(now)) "." }
        div #live-queues data-live {
            div.table-wrap {
                table {
                    caption.muted { "Tasks per queue and kind; numbers link to the tasks." }
                    thead {
                        tr {
                            th scope="col" { "Queue / kind" }
                            th.num scope="col" { "Due" }
                            th.num scope="col" { "Scheduled" }
                            th.num scope="col" { "Running" }
                            th.num scope="col" { "Retrying" }
                            th.num scope="col" { "Dead" }
                            th.num scope="col" { "Unknown delivery" }
                            th.num scope="col" { "Done this min" }
                            th.num scope="col" { "Done/min (1 h avg)" }
                            th scope="col" { "Last hour" }
                            th.num scope="col" { "Oldest waiting" }
                        }
                    }
                    @for q in &queues {
                        tbody {
                            tr.queue {
                                td {
                                    a href=(tasks_link(&q.queue, None, None)) { (q.queue) }
                                    @if q.paused.is_some() { " " span.paused { "paused" } }
                                }
                                (cells(&q.totals, &q.queue, None))
                            }
                            @for (kind, c) in &q.kinds {
                                tr.kind {
                                    td { a href=(tasks_link(&q.queue, Some(kind), None)) { (kind) } }
                                    (cells(c, &q.queue, Some(kind)))
                                }
                            }
                        }
                    }
                }
            }
        }
        h2 { "Queue controls" }
        div.grid2 {
            @for q in &queues {
                section.card aria-labelledby=(format!("ctl-{}", q.queue)) {
                    h3 #(format!("ctl-{}", q.queue)) { "Queue " (q.queue) }
                    @if let Some(p) = &q.paused {
                        p.paused { "Paused by " (p.paused_by) " at " (layout::time(p.paused_at)) "." }
                    } @else {
                        p.muted { "Running: workers claim from it." }
                    }
                    @if session.can_act() {
                        div.actions {
                            form.inline method="post" action=(format!("/console/queues/{}/{}", q.queue,
                                if q.paused.is_some() { "resume" } else { "pause" })) {
                                (csrf_field(&session))
                                @if q.paused.is_some() {
                                    button type="submit" { "Resume " (q.queue) }
                                } @else {
                                    button.secondary type="submit" { "Pause " (q.queue) }
                                }
                            }
                        }
                        form.purge method="post" action=(format!("/console/queues/{}/purge", q.queue)) {
                            (csrf_field(&session))
                            label for=(format!("purge-{}", q.queue)) {
                                "Type " code { (q.queue) } " to delete its "
                                (q.totals.due + q.totals.scheduled) " waiting tasks:"
                            }
                            input type="text" id=(format!("purge-{}", q.queue)) name="confirm"
                                autocomplete="off" size="8";
                            button.danger type="submit" { "Purge" }
                        }
                    }
                }
            }
        }
        @if !history.is_empty() {
            h2 { "Recent queue actions" }
            div.table-wrap {
                table {
                    thead { tr { th { "When" } th { "Who" } th { "Action" } th { "Queue" } th { "Detail" } } }
                    tbody {
                        @for e in &history {
                            tr {
                                td { (layout::time(e.at)) }
                                td { (e.key_name) " (key #" (e.key_id) ")" }
                                td { (e.action) }
                                td { (e.queue.as_deref().unwrap_or("")) }
                                td { (e.detail) }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(layout::page(&session, "/console/queues", "Queues", body))
}

/// `POST /console/queues/{queue}/{pause|resume|purge}`.
async fn act(
    State(state): State<AppState>,
    session: Session,
    Path((queue, action)): Path<(String, String)>,
    form: Form,
) -> Result<Response, ConsoleError> {
    session.authorize(&form)?;
    if !QUEUES.contains(&queue.as_str()) {
        return Err(ConsoleError::NotFound(format!(
            "no queue {queue:?} (the queues are {})",
            QUEUES.join(", ")
        )));
    }
    let now = now_ms();
    let mut tx = state.db.pool.begin().await?;
    let n = match action.as_str() {
        "pause" => {
            let changed = control::pause(&mut tx, &queue, &session.who(), now).await?;
            let detail = if changed { "" } else { "was paused already" };
            audit::record(&mut tx, &session, "pause", Some(&queue), &[], detail, now).await?;
            0
        }
        "resume" => {
            let changed = control::resume(&mut tx, &queue).await?;
            let detail = if changed { "" } else { "was not paused" };
            audit::record(&mut tx, &session, "resume", Some(&queue), &[], detail, now).await?;
            0
        }
        "purge" => {
            if form.get("confirm") != Some(queue.as_str()) {
                return Err(ConsoleError::BadRequest(format!(
                    "to purge queue {queue}, type its name ({queue}) in the confirmation field"
                )));
            }
            let n = control::purge(&mut tx, &queue).await?;
            let detail = format!("{n} waiting tasks deleted");
            audit::record(&mut tx, &session, "purge", Some(&queue), &[], &detail, now).await?;
            n
        }
        other => {
            return Err(ConsoleError::NotFound(format!(
                "no queue action {other:?} (pause, resume, purge)"
            )))
        }
    };
    tx.commit().await?;
    Ok(done(&format!(
        "/console/queues?done={action}&queue={queue}&n={n}"
    )))
}
