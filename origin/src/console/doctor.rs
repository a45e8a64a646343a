//! The Doctor page (`/console/doctor`): the checks of `komora-origin doctor`
//! (`crate::doctor`), run when the page is opened, as a table, with the offices' hours
//! and the platforms' reachability also shown as facts. Read-only; admin and operator
//! keys alike (it shows settings, never a secret).

use axum::extract::State;
use axum::routing::get;
use axum::Router;
use maud::{html, Markup};

use super::layout::{self, time};
use super::session::Session;
use super::ConsoleError;
use crate::app::AppState;
use crate::db::now_ms;
use crate::doctor::{doctor_checks, Check, Reach, Subject};

pub fn routes() -> Router<AppState> {
    Router::new().route("/console/doctor", get(page))
}

async fn page(State(state): State<AppState>, session: Session) -> Result<Markup, ConsoleError> {
    let now = now_ms();
    let checks = doctor_checks(&state.config, Ok(&state.db), Some(&state.media), now).await;
    let failed = checks.iter().filter(|c| !c.ok).count();
    let body = html! {
        p.live { "Checked at " (time(now)) ". The same checks as " code { "komora-origin doctor" } "." }
        @if failed == 0 {
            p.notice role="status" { "All " (checks.len()) " checks pass." }
        } @else {
            p.error role="alert" { (failed) " of " (checks.len()) " checks fail." }
        }
        div.table-wrap {
            table #checks {
                thead { tr {
                    th scope="col" { "Result" }
                    th scope="col" { "Check" }
                    th scope="col" { "Now" }
                    th scope="col" { "Detail" }
                } }
                tbody {
                    @for c in &checks { (row(c)) }
                }
            }
        }
    };
    Ok(layout::page(&session, "/console/doctor", "Doctor", body))
}

/// The one-word fact of a check's subject (open/closed, reachable), if it has one.
fn fact(c: &Check) -> Markup {
    match &c.subject {
        Subject::Office { autobot, hours, .. } => html! {
            span class=(format!("state hours-{}", hours.as_str())) { (hours.as_str()) }
            " · autobot " (if *autobot { "on" } else { "off" })
        },
        Subject::Platform { reach, .. } => match reach {
            Reach::Answered { millis, .. } => html! {
                span.state.state-done { "reachable" } " " (millis) " ms"
            },
            Reach::Unreachable(_) => html! { span.state.state-dead { "unreachable" } },
        },
        _ => html! {},
    }
}

fn row(c: &Check) -> Markup {
    html! {
        tr class=(if c.ok { "check-ok" } else { "check-fail" }) {
            td {
                @if c.ok { span.state.state-done { "OK" } }
                @else { span.state.state-dead { "FAIL" } }
            }
            th scope="row" { (c.name) }
            td { (fact(c)) }
            td { (c.detail) }
        }
    }
}
