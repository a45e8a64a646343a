//! The frame every console page shares: head with the hashed assets, skip link, nav, who is
//! logged in with a logout button, and the small formats pages use (times, ages, counts
//! over time as an inline SVG).

use maud::{html, Markup, PreEscaped, DOCTYPE};

use super::assets;
use super::session::Session;

/// The nav, in order: (path, label).
pub const NAV: [(&str, &str); 7] = [
    ("/console/queues", "Queues"),
    ("/console/tasks", "Tasks"),
    ("/console/workers", "Workers"),
    ("/console/edge", "Edge caches"),
    ("/console/keys", "Keys"),
    ("/console/doctor", "Doctor"),
    ("/console/inbox", "Inbox preview"),
];

fn head(title: &str) -> Markup {
    html! {
        meta charset="utf-8";
        meta name="viewport" content="width=device-width, initial-scale=1";
        title { (title) " · Komora console" }
        link rel="stylesheet" href=(assets::url("console.css"));
        script src=(assets::url("console.js")) defer {}
    }
}

/// A full page for a logged-in `session`: `active` is the nav path it belongs to.
pub fn page(session: &Session, active: &str, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head { (head(title)) }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    span.brand { "Komora console" }
                    nav aria-label="Console" {
                        ul {
                            @for (path, label) in NAV {
                                li {
                                    @if path == active {
                                        a href=(path) aria-current="page" { (label) }
                                    } @else {
                                        a href=(path) { (label) }
                                    }
                                }
                            }
                        }
                    }
                    form.logout method="post" action="/console/logout" {
                        (csrf_field(session))
                        span.who {
                            (session.key_name) " (" (session.role.as_str()) ")"
                        }
                        button type="submit" { "Log out" }
                    }
                }
                main #main tabindex="-1" {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// A page without nav (login, errors).
pub fn bare(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head { (head(title)) }
            body.bare {
                main #main { (body) }
            }
        }
    }
}

/// The hidden CSRF input every form of a session carries.
pub fn csrf_field(session: &Session) -> Markup {
    html! { input type="hidden" name="csrf" value=(session.csrf); }
}

/// A Unix-ms time as `YYYY-MM-DD HH:MM:SS UTC` in a `<time>` element.
pub fn time(ms: i64) -> Markup {
    match chrono::DateTime::from_timestamp_millis(ms) {
        Some(t) => html! {
            time datetime=(t.to_rfc3339()) { (t.format("%Y-%m-%d %H:%M:%S UTC")) }
        },
        None => html! { "?" },
    }
}

/// An optional time, `—` when absent.
pub fn time_opt(ms: Option<i64>) -> Markup {
    match ms {
        Some(ms) => time(ms),
        None => html! { "—" },
    }
}

/// A duration in ms, short: `850 ms`, `12 s`, `5 min`, `3 h`, `2 d`.
pub fn age(ms: i64) -> String {
    let ms = ms.max(0);
    match ms {
        0..=999 => format!("{ms} ms"),
        1_000..=59_999 => format!("{} s", ms / 1000),
        60_000..=3_599_999 => format!("{} min", ms / 60_000),
        3_600_000..=86_399_999 => format!("{} h", ms / 3_600_000),
        _ => format!("{} d", ms / 86_400_000),
    }
}

/// Per-minute counts (`[0]` = now) as a small bar chart, oldest on the left, with a text
/// alternative.
pub fn sparkline(per_minute: &[i64]) -> Markup {
    let max = per_minute.iter().copied().max().unwrap_or(0).max(1);
    let n = per_minute.len();
    let total: i64 = per_minute.iter().sum();
    let label = format!(
        "{total} done in the last {n} minutes, {} in the current minute",
        per_minute.first().copied().unwrap_or(0)
    );
    let mut bars = String::new();
    for (i, v) in per_minute.iter().rev().enumerate() {
        if *v > 0 {
            let h = (*v as f64 / max as f64 * 20.0).max(1.0);
            bars.push_str(&format!(
                "<rect x=\"{}\" y=\"{:.1}\" width=\"1.6\" height=\"{:.1}\"/>",
                i * 2,
                20.0 - h,
                h
            ));
        }
    }
    html! {
        svg.spark viewBox=(format!("0 0 {} 20", n * 2)) width="120" height="20"
            role="img" aria-label=(label) {
            title { (label) }
            (PreEscaped(bars))
        }
    }
}

/// Percent-encodes `s` for a query value.
pub fn url_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
