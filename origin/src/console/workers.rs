//! The Workers page (`/console/workers`): each worker heard from in the last hour
//! (`queue_workers`, written at every heartbeat), how long ago, its concurrency and the
//! tasks it is running now. A worker silent for three heartbeats is shown as not
//! responding: its tasks come back to the queue when their leases expire.

use axum::extract::State;
use axum::routing::get;
use axum::Router;
use maud::{html, Markup};

use super::layout::{self, age, time};
use super::session::Session;
use super::ConsoleError;
use crate::app::AppState;
use crate::db::now_ms;
use komora_queue::workers;

/// Workers silent longer than this are left out (and their records deleted), ms.
const FORGET_MS: i64 = 3_600_000;

pub fn routes() -> Router<AppState> {
    Router::new().route("/console/workers", get(page))
}

async fn page(State(state): State<AppState>, session: Session) -> Result<Markup, ConsoleError> {
    let now = now_ms();
    let list = workers::list(&state.db, now - FORGET_MS).await?;
    let stale_ms = 3 * i64::try_from(state.config.queue.heartbeat_ms).unwrap_or(10_000);
    let body = html! {
        p.live data-live-status { "As of " (time(now)) "; a worker writes its heartbeat every "
            (age(stale_ms / 3)) "." }
        div #live-workers data-live {
            div.table-wrap {
                table {
                    thead {
                        tr {
                            th scope="col" { "Worker" }
                            th scope="col" { "Status" }
                            th.num scope="col" { "Heartbeat age" }
                            th scope="col" { "Started" }
                            th.num scope="col" { "Concurrency" }
                            th scope="col" { "Running now" }
                        }
                    }
                    tbody {
                        @for w in &list {
                            tr {
                                td { code { (w.id) } }
                                td {
                                    @if now - w.heartbeat_at > stale_ms {
                                        span.state.state-dead { "not responding" }
                                    } @else {
                                        span.state.state-done { "alive" }
                                    }
                                }
                                td.num { (age(now - w.heartbeat_at)) }
                                td { (time(w.started_at)) }
                                td.num { (w.running.len()) " / " (w.concurrency) }
                                td {
                                    @if w.running.is_empty() { span.muted { "idle" } }
                                    @for (id, kind) in &w.running {
                                        a href=(format!("/console/tasks/{id}")) { "#" (id) } " " (kind) " "
                                    }
                                }
                            }
                        }
                        @if list.is_empty() {
                            tr { td colspan="6" { "No worker has sent a heartbeat in the last hour." } }
                        }
                    }
                }
            }
        }
    };
    Ok(layout::page(&session, "/console/workers", "Workers", body))
}
