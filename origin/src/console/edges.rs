//! The Edge caches page (`/console/edge`): for every edge in `[console] edges`, what its
//! admin `/metrics` say (hit ratio, entries and bytes per tier, evictions, purges,
//! integrity and write failures), and a purge by URL or prefix sent to all of them with
//! each edge's answer shown.
//!
//! The purge answers with the outcome page itself rather than a redirect: the answers
//! (status and body per edge) are the result and live nowhere else; sending the form
//! again purges again, which is harmless. It is recorded in the audit with every answer.

use axum::extract::State;
use axum::routing::{get, post};
use axum::Router;
use maud::{html, Markup};

use super::form::Form;
use super::layout::{self, csrf_field};
use super::session::Session;
use super::{audit, ConsoleError};
use crate::app::AppState;
use crate::db::now_ms;
use crate::edge_admin::{EdgeClient, EdgeStats, PurgeOutcome, PurgeTarget};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/console/edge", get(page))
        .route("/console/edge/purge", post(purge))
}

/// A client for this request (the console is not a hot path; building one is cheap
/// next to the requests it makes).
fn client(state: &AppState) -> Result<EdgeClient, ConsoleError> {
    EdgeClient::new(state.config.edges.clone())
        .map_err(|e| ConsoleError::BadRequest(format!("cannot build the HTTP client: {e}")))
}

async fn page(State(state): State<AppState>, session: Session) -> Result<Markup, ConsoleError> {
    let body = edges_body(&state, &session, None).await?;
    Ok(layout::page(&session, "/console/edge", "Edge caches", body))
}

async fn purge(
    State(state): State<AppState>,
    session: Session,
    form: Form,
) -> Result<Markup, ConsoleError> {
    session.authorize(&form)?;
    let target = PurgeTarget::parse(
        form.get("kind").unwrap_or("url"),
        form.get("target").unwrap_or_default(),
    )
    .map_err(|e| ConsoleError::BadRequest(format!("purge target: {e}")))?;
    let client = client(&state)?;
    if client.edges().is_empty() {
        return Err(ConsoleError::BadRequest(
            "no edge is configured ([[console.edges]] in the origin's config)".into(),
        ));
    }
    let outcomes = client.purge(&target).await;
    let detail: Vec<String> = outcomes
        .iter()
        .map(|o| match &o.answer {
            Ok((status, body)) => format!("{}: {status} {}", o.edge, body.trim()),
            Err(why) => format!("{}: {why}", o.edge),
        })
        .collect();
    let mut tx = state.db.pool.begin().await?;
    audit::record(
        &mut tx,
        &session,
        "edge purge",
        None,
        &[],
        &format!("{target} → {}", detail.join("; ")),
        now_ms(),
    )
    .await?;
    tx.commit().await?;
    let body = edges_body(&state, &session, Some((&target, &outcomes))).await?;
    Ok(layout::page(&session, "/console/edge", "Edge caches", body))
}

fn ratio(s: &EdgeStats) -> String {
    match s.hit_ratio() {
        Some(r) => format!("{:.1} %", r * 100.0),
        None => "— (no lookups yet)".into(),
    }
}

/// Bytes in binary units: `512 B`, `3.2 KiB`, `1.5 GiB`.
fn bytes(n: i64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    // Display only: precision loss on petabytes does not matter.
    #[allow(clippy::cast_precision_loss)]
    let mut v = n.max(0) as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

fn outcome_rows(target: &PurgeTarget, outcomes: &[PurgeOutcome]) -> Markup {
    let all_ok = outcomes.iter().all(PurgeOutcome::ok);
    html! {
        section aria-labelledby="purge-result" {
            h2 #purge-result { "Purge of " code { (target) } }
            @if all_ok {
                p.notice role="status" { "Every edge accepted the purge." }
            } @else {
                p.error role="alert" { "At least one edge did not accept the purge; see below." }
            }
            div.table-wrap {
                table #purge-answers {
                    thead { tr {
                        th scope="col" { "Edge" }
                        th.num scope="col" { "Status" }
                        th scope="col" { "Answer" }
                    } }
                    tbody {
                        @for o in outcomes {
                            tr {
                                td { (o.edge) }
                                @match &o.answer {
                                    Ok((status, body)) => {
                                        td.num { (status) }
                                        td { code { (body.trim()) } }
                                    }
                                    Err(why) => {
                                        td.num { "—" }
                                        td { span.state.state-dead { (why) } }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

async fn edges_body(
    state: &AppState,
    session: &Session,
    result: Option<(&PurgeTarget, &[PurgeOutcome])>,
) -> Result<Markup, ConsoleError> {
    let client = client(state)?;
    let stats = client.all_stats().await;
    let timeout_ms = state.config.edges.timeout.as_millis();
    Ok(html! {
        @if let Some((target, outcomes)) = result {
            (outcome_rows(target, outcomes))
        }
        @if stats.is_empty() {
            p.card {
                "No edge is configured. List each edge's admin listener under "
                code { "[[console.edges]]" } " in the origin's config (name, admin_url, "
                code { "admin_token_env" } ")."
            }
        }
        @for (edge, result) in &stats {
            section.card aria-labelledby=(format!("edge-{}", edge.name)) {
                h2 id=(format!("edge-{}", edge.name)) { (edge.name) }
                p.muted { "Admin listener " code { (edge.admin_url.as_str()) }
                    @if edge.token.is_none() {
                        " · " span.paused { "purges refused: " code { (edge.token_env) } " is not set" }
                    }
                }
                @match result {
                    Err(why) => {
                        p.error role="alert" { "No figures: " (why) }
                    }
                    Ok(s) => {
                        dl.facts {
                            dt { "Hit ratio" } dd.hit-ratio { (ratio(s)) }
                            dt { "Requests" } dd {
                                @for (status, n) in &s.requests {
                                    span.state { (status) " " (n) } " "
                                }
                            }
                            dt { "Evictions" } dd { (s.evictions()) }
                            dt { "Integrity failures" } dd {
                                @if s.integrity_failures > 0 {
                                    span.state.state-dead { (s.integrity_failures) }
                                } @else { "0" }
                            }
                            dt { "Cache write failures" } dd { (s.write_failures) }
                            dt { "Bytes served, by source" } dd {
                                @for (source, n) in &s.served {
                                    span.state { (source) " " (bytes(i64::try_from(*n).unwrap_or(i64::MAX))) } " "
                                }
                            }
                        }
                        div.table-wrap {
                            table {
                                caption.muted { "Per tier" }
                                thead { tr {
                                    th scope="col" { "Tier" }
                                    th.num scope="col" { "Entries" }
                                    th.num scope="col" { "Stored" }
                                    th.num scope="col" { "Evictions" }
                                    th.num scope="col" { "Purged" }
                                } }
                                tbody {
                                    @for t in &s.tiers {
                                        tr {
                                            td { (t.tier) }
                                            td.num { (t.entries) }
                                            td.num { (bytes(t.bytes)) }
                                            td.num { (t.evictions) }
                                            td.num { (t.purges) }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if !stats.is_empty() {
            section.card aria-labelledby="purge" {
                h2 #purge { "Purge" }
                p.help {
                    "Removes the URL (or every URL under the prefix) from both tiers of every edge above. "
                    "Give a path or paste a URL of the site: media are cached without their query, so "
                    code { "/media/<sha256>" } " (or any signed URL of it) purges every signed URL of that object. "
                    "Each edge has " (timeout_ms) " ms to answer."
                }
                @if session.can_act() {
                    form.filters method="post" action="/console/edge/purge" {
                        (csrf_field(session))
                        label for="purge-kind" { "What"
                            select #purge-kind name="kind" {
                                option value="url" { "One URL" }
                                option value="prefix" { "Every URL under a prefix" }
                            }
                        }
                        label for="purge-target" { "Path or URL"
                            input #purge-target type="text" name="target" required
                                placeholder="/media/<sha256>" size="60";
                        }
                        button.danger type="submit" { "Purge on every edge" }
                    }
                } @else {
                    p.muted { "Purging needs an admin key; this is an operator key." }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn bytes_are_shown_in_binary_units() {
        assert_eq!(super::bytes(512), "512 B");
        assert_eq!(super::bytes(3 * 1024 + 200), "3.2 KiB");
        assert_eq!(super::bytes(1536 * 1024 * 1024), "1.5 GiB");
        assert_eq!(super::bytes(-5), "-5 B");
    }
}
