//! The Tasks pages: `/console/tasks` lists tasks by state, kind, queue and payload text
//! (or finds one by id) with bulk actions on a selection or on everything the filter
//! matches; `/console/tasks/{id}` is one task at its own URL: payload, attempts, the
//! timeline of its errors and of what operators did to it, and its actions (retry a dead
//! task, run a scheduled one now, cancel a waiting one; a send whose delivery is unknown
//! can be sent again or marked sent).

use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use maud::{html, Markup};

use super::form::{parse_id, Form};
use super::layout::{self, csrf_field, time, time_opt, url_encode};
use super::session::Session;
use super::{audit, done, ConsoleError};
use crate::app::AppState;
use crate::db::now_ms;
use komora_queue::config::QUEUES;
use komora_queue::control::{self, Action, Target};
use komora_queue::filter::{TaskFilter, View};
use komora_queue::inspect::{self, TaskView};
use komora_queue::TaskState;

/// Tasks per page of the list.
const PAGE: i64 = 50;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/console/tasks", get(list))
        .route("/console/tasks/actions", post(bulk))
        .route("/console/tasks/{id}", get(detail))
        .route("/console/tasks/{id}/{action}", post(act_one))
}

/// The filter in a query string or form (`view`, `kind`, `queue`, `q`), restricted to what
/// `session` may see.
fn filter_of(form: &Form, session: &Session, state: &AppState) -> Result<TaskFilter, ConsoleError> {
    let view = match form.get("view") {
        None | Some("all") => None,
        Some(v) => Some(View::parse(v).ok_or_else(|| {
            ConsoleError::BadRequest(format!(
                "view: {v:?} is not one of {}",
                View::ALL.map(View::as_str).join(", ")
            ))
        })?),
    };
    let queue = form.get("queue").map(str::to_string);
    if let Some(q) = &queue {
        if !QUEUES.contains(&q.as_str()) {
            return Err(ConsoleError::BadRequest(format!(
                "queue: {q:?} is not one of {}",
                QUEUES.join(", ")
            )));
        }
    }
    let text = form.get("q").map(str::to_string);
    if text.as_ref().is_some_and(|t| t.len() > 200) {
        return Err(ConsoleError::BadRequest(
            "q: search text is limited to 200 characters".into(),
        ));
    }
    Ok(TaskFilter {
        view,
        kind: form.get("kind").map(str::to_string),
        queue,
        text,
        restriction: session.restriction(state.db.backend),
    })
}

/// The filter as query parameters (for links and hidden fields).
fn filter_params(f: &TaskFilter) -> Vec<(&'static str, String)> {
    let mut v = Vec::new();
    if let Some(x) = f.view {
        v.push(("view", x.as_str().to_string()));
    }
    if let Some(x) = &f.kind {
        v.push(("kind", x.clone()));
    }
    if let Some(x) = &f.queue {
        v.push(("queue", x.clone()));
    }
    if let Some(x) = &f.text {
        v.push(("q", x.clone()));
    }
    v
}

fn query_string(params: &[(&str, String)]) -> String {
    params
        .iter()
        .map(|(k, v)| format!("{k}={}", url_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn state_badge(s: TaskState) -> Markup {
    html! { span class=(format!("state state-{}", s.as_str())) { (s.as_str()) } }
}

/// The console's name for a task's state (queued split into due and scheduled).
fn state_label(t: &TaskView, now: i64) -> Markup {
    if t.state == TaskState::Queued && t.run_at > now {
        html! { span.state.state-queued { "scheduled" } }
    } else {
        state_badge(t.state)
    }
}

fn notice(form: &Form) -> Option<String> {
    let n = form
        .get("n")
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    let what = match form.get("done")? {
        "retry" => "queued again",
        "run_now" => "made due now",
        "cancel" => "cancelled",
        "mark_sent" => "marked sent",
        _ => return None,
    };
    Some(if n == 1 {
        format!("1 task {what}.")
    } else {
        format!("{n} tasks {what}.")
    })
}

async fn list(
    State(state): State<AppState>,
    session: Session,
    RawQuery(raw): RawQuery,
) -> Result<Response, ConsoleError> {
    let form = Form::parse(raw.unwrap_or_default().as_bytes());
    if let Some(id) = form.get("id") {
        let id = parse_id("id", id)?;
        return Ok(Redirect::to(&format!("/console/tasks/{id}")).into_response());
    }
    let filter = filter_of(&form, &session, &state)?;
    let before = form.id("before")?;
    let now = now_ms();
    let page = inspect::list(&state.db, &filter, before, PAGE, now).await?;
    let kinds = inspect::kinds(&state.db).await?;
    let params = filter_params(&filter);
    let back = format!("/console/tasks?{}", query_string(&params));
    let selected = |a: Option<&str>, b: &str| a == Some(b);
    let body = html! {
        @if let Some(m) = notice(&form) { p.notice role="status" { (m) } }
        form.filters.card method="get" action="/console/tasks" role="search" {
            label { "State"
                select name="view" {
                    option value="all" { "any" }
                    @for v in View::ALL {
                        option value=(v.as_str()) selected[filter.view == Some(v)] { (v.as_str()) }
                    }
                }
            }
            label { "Kind"
                select name="kind" {
                    option value="" { "any" }
                    @for k in &kinds {
                        option value=(k) selected[selected(filter.kind.as_deref(), k)] { (k) }
                    }
                }
            }
            label { "Queue"
                select name="queue" {
                    option value="" { "any" }
                    @for q in QUEUES {
                        option value=(q) selected[selected(filter.queue.as_deref(), q)] { (q) }
                    }
                }
            }
            label { "Payload contains"
                input type="search" name="q" value=(filter.text.as_deref().unwrap_or(""))
                    placeholder="text in the payload";
            }
            button type="submit" { "Filter" }
            a href="/console/tasks" { "Clear" }
        }
        form.filters method="get" action="/console/tasks" {
            label { "Find task by id"
                input type="text" name="id" inputmode="numeric" size="10" placeholder="e.g. 42";
            }
            button.secondary type="submit" { "Open" }
        }
        form #bulk method="post" action="/console/tasks/actions" {
            (csrf_field(&session))
            input type="hidden" name="back" value=(back);
            @for (k, v) in &params { input type="hidden" name=(k) value=(v); }
            @if session.can_act() {
                div.actions {
                    span.muted { "Selected tasks:" }
                    button name="action" value="retry" type="submit" { "Retry" }
                    button.secondary name="action" value="run_now" type="submit" { "Run now" }
                    button.secondary name="action" value="cancel" type="submit" { "Cancel" }
                }
            }
            div.table-wrap {
                table {
                    thead {
                        tr {
                            th scope="col" {
                                @if session.can_act() {
                                    input type="checkbox" data-select-all value="ids"
                                        aria-label="Select every task on this page";
                                }
                            }
                            th scope="col" { "Id" }
                            th scope="col" { "Queue" }
                            th scope="col" { "Kind" }
                            th scope="col" { "State" }
                            th.num scope="col" { "Attempts" }
                            th scope="col" { "Due" }
                            th scope="col" { "Last error" }
                            th scope="col" { "Payload" }
                        }
                    }
                    tbody {
                        @for t in &page.tasks {
                            tr {
                                td {
                                    @if session.can_act() {
                                        input type="checkbox" name="ids" value=(t.id)
                                            aria-label=(format!("Select task {}", t.id));
                                    }
                                }
                                td { a href=(format!("/console/tasks/{}", t.id)) { "#" (t.id) } }
                                td { (t.queue) }
                                td { (t.kind) }
                                td { (state_label(t, now)) }
                                td.num { (t.attempts) "/" (t.max_attempts) }
                                td { (time(t.run_at)) }
                                td { (t.last_error.as_deref().unwrap_or("")) }
                                td.payload title=(t.payload.to_string()) { (t.payload.to_string()) }
                            }
                        }
                        @if page.tasks.is_empty() {
                            tr { td colspan="9" { "No task matches." } }
                        }
                    }
                }
            }
            @if session.can_act() {
                div.actions {
                    input type="hidden" name="scope_filter_ok" value="1";
                    span.muted { "Everything this filter matches (every page):" }
                    button.secondary name="action" value="retry_all" type="submit" { "Retry all" }
                    button.secondary name="action" value="run_now_all" type="submit" { "Run all now" }
                    button.danger name="action" value="cancel_all" type="submit" { "Cancel all" }
                }
            }
        }
        @if let Some(next) = page.next_before {
            p.pager {
                a href=(format!("/console/tasks?{}&before={next}", query_string(&params))) {
                    "Older tasks →"
                }
            }
        }
    };
    Ok(layout::page(&session, "/console/tasks", "Tasks", body).into_response())
}

/// `POST /console/tasks/actions`: `action` is `retry`, `run_now` or `cancel` on the ticked
/// `ids`, or the same with `_all` on everything the form's filter matches.
async fn bulk(
    State(state): State<AppState>,
    session: Session,
    form: Form,
) -> Result<Response, ConsoleError> {
    session.authorize(&form)?;
    let raw = form.get("action").unwrap_or_default();
    let (name, all) = match raw.strip_suffix("_all") {
        Some(n) => (n, true),
        None => (raw, false),
    };
    let action = Action::parse(name).ok_or_else(|| {
        ConsoleError::BadRequest(format!("action: {raw:?} is not retry, run_now or cancel"))
    })?;
    let target = if all {
        Target::Filter(filter_of(&form, &session, &state)?)
    } else {
        let ids = form.ids("ids")?;
        if ids.is_empty() {
            return Err(ConsoleError::BadRequest(
                "no task selected: tick the tasks to act on, or use the buttons for \
                 everything the filter matches"
                    .into(),
            ));
        }
        Target::Ids(ids)
    };
    let changed = run(
        &state,
        &session,
        action,
        &target,
        if all { "filter" } else { "selection" },
    )
    .await?;
    let back = match form.get("back") {
        Some(b) if b.starts_with("/console/tasks?") && !b.contains("//") => b.to_string(),
        _ => "/console/tasks?".to_string(),
    };
    Ok(done(&format!(
        "{back}&done={}&n={}",
        action.as_str(),
        changed.len()
    )))
}

/// Applies `action` and records it, in one transaction. Returns the changed ids.
async fn run(
    state: &AppState,
    session: &Session,
    action: Action,
    target: &Target,
    how: &str,
) -> Result<Vec<i64>, ConsoleError> {
    let now = now_ms();
    let reason = format!("cancelled in the console by {}", session.who());
    let mut tx = state.db.pool.begin().await?;
    let changed = control::apply(&mut tx, action, target, now, &reason).await?;
    if !changed.is_empty() {
        audit::record(&mut tx, session, action.as_str(), None, &changed, how, now).await?;
    }
    tx.commit().await?;
    Ok(changed)
}

/// `POST /console/tasks/{id}/{action}`: `retry`, `run_now`, `cancel`, or for a send whose
/// delivery is unknown `retry` (send again) and `mark_sent`.
async fn act_one(
    State(state): State<AppState>,
    session: Session,
    Path((id, action)): Path<(String, String)>,
    form: Form,
) -> Result<Response, ConsoleError> {
    session.authorize(&form)?;
    let id = parse_id("task id", &id)?;
    let now = now_ms();
    let task = inspect::task(&state.db, id, &TaskFilter::default(), now)
        .await?
        .ok_or_else(|| ConsoleError::NotFound(format!("no task {id}")))?;
    let to = |what: &str, n: usize| format!("/console/tasks/{id}?done={what}&n={n}");
    if task.state == TaskState::DeliveryUnknown && matches!(action.as_str(), "retry" | "mark_sent")
    {
        // The origin's own commands: they change the send's message too.
        let r = if action == "retry" {
            crate::queue::store::retry(&state.db, id, now).await
        } else {
            crate::queue::store::mark_sent(&state.db, id, now).await
        };
        return match r {
            Ok(()) => {
                let mut conn = state.db.pool.acquire().await?;
                audit::record(&mut conn, &session, &action, None, &[id], "", now).await?;
                Ok(done(&to(&action, 1)))
            }
            Err(crate::queue::store::RetryError::Db(e)) => Err(e.into()),
            Err(e) => Err(ConsoleError::BadRequest(e.to_string())),
        };
    }
    let action = Action::parse(&action).ok_or_else(|| {
        ConsoleError::NotFound(format!(
            "no task action {action:?} (retry, run_now, cancel, mark_sent)"
        ))
    })?;
    let changed = run(
        &state,
        &session,
        action,
        &Target::Ids(vec![id]),
        "task page",
    )
    .await?;
    if changed.is_empty() {
        return Err(ConsoleError::BadRequest(format!(
            "task {id} is {}: {} applies to {}",
            task.state,
            action.as_str(),
            match action {
                Action::Retry => "dead tasks (and sends whose delivery is unknown)",
                Action::RunNow => "scheduled tasks (queued, due later)",
                Action::Cancel => "queued tasks",
            }
        )));
    }
    Ok(done(&to(action.as_str(), changed.len())))
}

/// One event of a task's timeline.
struct Event {
    at: i64,
    what: Markup,
}

async fn detail(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Markup, ConsoleError> {
    let form = Form::parse(raw.unwrap_or_default().as_bytes());
    let id = parse_id("task id", &id)?;
    let now = now_ms();
    let visible = TaskFilter {
        restriction: session.restriction(state.db.backend),
        ..TaskFilter::default()
    };
    let Some(t) = inspect::task(&state.db, id, &visible, now).await? else {
        return Err(ConsoleError::NotFound(format!("no task {id}")));
    };
    let actions = audit::for_task(&state.db, id).await?;
    let mut events = vec![Event {
        at: t.created_at,
        what: html! { "enqueued in " (t.queue) },
    }];
    for e in &t.errors {
        let at = e.get("at").and_then(|v| v.as_i64()).unwrap_or(0);
        let attempt = e.get("attempt").and_then(|v| v.as_i64()).unwrap_or(0);
        let msg = e.get("error").and_then(|v| v.as_str()).unwrap_or("");
        events.push(Event {
            at,
            what: html! { "attempt " (attempt) " failed: " span.error-text { (msg) } },
        });
    }
    for a in &actions {
        events.push(Event {
            at: a.at,
            what: html! {
                strong { (a.action) } " by " (a.key_name) " (key #" (a.key_id) ")"
                @if !a.detail.is_empty() { " — " (a.detail) }
            },
        });
    }
    if let Some(s) = t.started_at {
        events.push(Event {
            at: s,
            what: html! { "last run started" },
        });
    }
    if let Some(f) = t.finished_at {
        events.push(Event {
            at: f,
            what: html! { "finished as " (t.state.as_str()) },
        });
    }
    events.sort_by_key(|e| e.at);
    let payload = serde_json::to_string_pretty(&t.payload).unwrap_or_default();
    let can = |a: &str| match a {
        "retry" => matches!(t.state, TaskState::Dead | TaskState::DeliveryUnknown),
        "run_now" => t.state == TaskState::Queued && t.run_at > now,
        "cancel" => t.state == TaskState::Queued,
        "mark_sent" => t.state == TaskState::DeliveryUnknown,
        _ => false,
    };
    let button = |a: &str, label: &str| {
        html! {
            form.inline method="post" action=(format!("/console/tasks/{id}/{a}")) {
                (csrf_field(&session))
                button.secondary[a != "retry"] type="submit" { (label) }
            }
        }
    };
    let body = html! {
        @if let Some(m) = notice(&form) { p.notice role="status" { (m) } }
        p { a href="/console/tasks" { "← All tasks" } }
        @if session.can_act() {
            div.actions {
                @if can("retry") { (button("retry", if t.state == TaskState::DeliveryUnknown { "Send again" } else { "Retry" })) }
                @if can("run_now") { (button("run_now", "Run now")) }
                @if can("cancel") { (button("cancel", "Cancel")) }
                @if can("mark_sent") { (button("mark_sent", "Mark sent")) }
            }
        }
        div.grid2 {
            section.card aria-labelledby="facts" {
                h2 #facts { "Task" }
                dl.facts {
                    dt { "State" } dd { (state_label(&t, now)) }
                    dt { "Queue" } dd { a href=(format!("/console/tasks?queue={}", t.queue)) { (t.queue) } }
                    dt { "Kind" } dd { (t.kind) }
                    dt { "Attempts" } dd { (t.attempts) " of " (t.max_attempts) }
                    dt { "Priority" } dd { (t.priority) }
                    dt { "Created" } dd { (time(t.created_at)) }
                    dt { "Due" } dd { (time(t.run_at)) }
                    dt { "Last started" } dd { (time_opt(t.started_at)) }
                    dt { "Finished" } dd { (time_opt(t.finished_at)) }
                    dt { "Lease until" } dd { (time_opt(t.lease_until)) }
                    dt { "Worker" } dd { (t.worker_id.as_deref().unwrap_or("—")) }
                    dt { "Idempotency key" } dd { code { (t.idempotency_key.as_deref().unwrap_or("—")) } }
                    dt { "Last error" } dd { (t.last_error.as_deref().unwrap_or("—")) }
                }
            }
            section.card aria-labelledby="payload" {
                h2 #payload { "Payload" }
                pre { (payload) }
            }
        }
        h2 { "Timeline" }
        div.table-wrap {
            table {
                thead { tr { th scope="col" { "When" } th scope="col" { "What" } } }
                tbody {
                    @for e in &events {
                        tr { td { (time(e.at)) } td { (e.what) } }
                    }
                }
            }
        }
    };
    Ok(layout::page(
        &session,
        "/console/tasks",
        &format!("Task #{id}"),
        body,
    ))
}
