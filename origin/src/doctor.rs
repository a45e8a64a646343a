//! The doctor: checks the whole configuration and its dependencies (database, media store,
//! queues, each platform's reachability, the AI settings, every office's hours now) as
//! structured [`Check`]s. `komora-origin doctor` prints one line per check and exits
//! non-zero when one fails, so it can gate a deploy; the console's doctor page renders the
//! same list.

use std::sync::Arc;

use chrono::Utc;
use sqlx::Row;

use crate::autobot::hours::{autobot_decision, OfficeHours};
use crate::config::Config;
use crate::db::now_ms;
use crate::db::Db;
use crate::queue::cli::{connect, media_store};
use crate::queue::store;

/// What a check is about, with the facts a page shows beside its detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// `[ai]`: the autobot's RAG API settings.
    Ai,
    /// `[platforms.<name>]`: its token and whether its API answers.
    Platform {
        name: String,
        reach: Reach,
    },
    Database,
    ObjectStore,
    /// The task queues: dead tasks, sends waiting for an operator, expired leases.
    Queue,
    /// An office's working hours evaluated now, whether or not its autobot is on.
    Office {
        id: i64,
        name: String,
        autobot: bool,
        hours: HoursNow,
    },
}

/// Whether a platform's API answered a plain `GET` of its base URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    /// It answered (any HTTP status: the point is that the host is there).
    Answered { status: u16, millis: u64 },
    /// No answer: timeout, refused connection, or refused by the SSRF guard.
    Unreachable(String),
}

/// An office's hours at the doctor's `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoursNow {
    /// Inside working hours: a person answers.
    Open,
    /// Outside working hours or a day off: the autobot answers, if it is on.
    Closed,
    /// The timezone or the hours do not parse: the autobot never answers.
    Invalid,
}

impl HoursNow {
    pub fn as_str(self) -> &'static str {
        match self {
            HoursNow::Open => "open",
            HoursNow::Closed => "closed",
            HoursNow::Invalid => "invalid",
        }
    }
}

/// One check: one line of `doctor`, one row of the console's doctor page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// Printed name, e.g. `database`, `platform telegram`, `office 1 "Warsaw"`.
    pub name: String,
    pub ok: bool,
    /// What was found, in words.
    pub detail: String,
    pub subject: Subject,
}

fn check(subject: Subject, name: impl Into<String>, ok: bool, detail: impl Into<String>) -> Check {
    Check {
        name: name.into(),
        ok,
        detail: detail.into(),
        subject,
    }
}

/// Longest wait for a platform's answer in `doctor`, whatever the platform's own timeout.
const PLATFORM_PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// `GET {base_url}` through the SSRF guard with the platform's allowed hosts.
async fn probe_platform(p: &crate::queue::config::PlatformConfig) -> Reach {
    let client = match crate::fetch::SafeClient::new(&p.allowed_hosts) {
        Ok(c) => c,
        Err(e) => return Reach::Unreachable(format!("HTTP client: {e}")),
    };
    let req = match client.get(&p.base_url) {
        Ok(r) => r.timeout(p.timeout.min(PLATFORM_PROBE_TIMEOUT)),
        Err(refused) => return Reach::Unreachable(refused.to_string()),
    };
    let started = std::time::Instant::now();
    match req.send().await {
        Ok(resp) => Reach::Answered {
            status: resp.status().as_u16(),
            millis: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        },
        Err(e) => Reach::Unreachable(match crate::fetch::refused_in(&e) {
            Some(r) => r.to_string(),
            None if e.is_timeout() => "timed out".to_string(),
            None if e.is_connect() => format!("connection failed: {e}"),
            None => e.to_string(),
        }),
    }
}

/// Every doctor check, in print order. `db` is `Err` when it could not connect; `now` is
/// Unix ms (office hours are evaluated at it). Platforms are probed concurrently, each for
/// at most its timeout (capped at 5 s).
pub async fn doctor_checks(
    config: &Config,
    db: Result<&Db, String>,
    media: Option<&Arc<dyn object_store::ObjectStore>>,
    now: i64,
) -> Vec<Check> {
    let mut out = Vec::new();
    let ai = &config.ai;
    out.push(check(
        Subject::Ai,
        "ai",
        !ai.enabled || !ai.url.is_empty(),
        format!(
            "{}, url {}, key {}, channels [{}], timeout {} ms",
            if ai.enabled { "enabled" } else { "disabled" },
            if ai.url.is_empty() {
                "NOT SET"
            } else {
                &ai.url
            },
            if ai.api_key.is_some() {
                "SET"
            } else {
                "NOT SET"
            },
            ai.channels.join(", "),
            ai.timeout.as_millis()
        ),
    ));
    let platforms: Vec<_> = config.platforms.platforms.values().collect();
    let reaches = futures::future::join_all(platforms.iter().map(|p| probe_platform(p))).await;
    for (p, reach) in platforms.into_iter().zip(reaches) {
        let reach_text = match &reach {
            Reach::Answered { status, millis } => {
                format!("reachable (HTTP {status} in {millis} ms)")
            }
            Reach::Unreachable(why) => format!("UNREACHABLE: {why}"),
        };
        out.push(check(
            Subject::Platform {
                name: p.name.clone(),
                reach: reach.clone(),
            },
            format!("platform {}", p.name),
            !p.token.is_empty() && matches!(reach, Reach::Answered { .. }),
            format!(
                "base_url {}, token {}, webhook secret {}, {reach_text}",
                p.base_url,
                if p.token.is_empty() { "NOT SET" } else { "SET" },
                if p.webhook_secret.is_some() {
                    "SET"
                } else {
                    "NOT SET (webhook disabled)"
                },
            ),
        ));
    }
    let db = match db {
        Ok(db) => match db.ping().await {
            Ok(()) => {
                out.push(check(
                    Subject::Database,
                    "database",
                    true,
                    format!("{:?} reachable", db.backend),
                ));
                db
            }
            Err(e) => {
                out.push(check(Subject::Database, "database", false, e.to_string()));
                return out;
            }
        },
        Err(e) => {
            out.push(check(Subject::Database, "database", false, e));
            return out;
        }
    };
    let store = |ok: bool, detail: String| check(Subject::ObjectStore, "object store", ok, detail);
    match media {
        None => out.push(store(false, "could not be opened".into())),
        Some(s) => match crate::media::store::ping(s).await {
            Ok(()) => out.push(store(true, "reachable".into())),
            Err(e) => out.push(store(false, e.to_string())),
        },
    }
    out.push(queue_check(db, now).await);
    out.extend(office_checks(db, now).await);
    out
}

async fn queue_check(db: &Db, now: i64) -> Check {
    let stats = match store::stats(db, now).await {
        Ok(s) => s,
        Err(e) => return check(Subject::Queue, "queue", false, e.to_string()),
    };
    let expired: i64 =
        sqlx::query("SELECT COUNT(*) FROM tasks WHERE state = 'running' AND lease_until < $1")
            .bind(now)
            .fetch_one(&db.pool)
            .await
            .and_then(|r| r.try_get(0))
            .unwrap_or(-1);
    let dead: i64 = stats.iter().map(|s| s.dead).sum();
    let parts: Vec<String> = stats
        .iter()
        .map(|s| {
            format!(
                "{} {} due (oldest {} ms) {} running",
                s.queue, s.due, s.oldest_due_ms, s.running
            )
        })
        .collect();
    let mut problems = Vec::new();
    if dead > 0 {
        problems.push(format!("{dead} dead tasks (see `queue dead`)"));
    }
    let unknown: i64 = stats.iter().map(|s| s.delivery_unknown).sum();
    if unknown > 0 {
        problems.push(format!(
            "{unknown} sends may have reached the platform and wait for an operator \
             (see `queue unknown`, then `queue retry ID` or `queue mark-sent ID`)"
        ));
    }
    if expired > 0 {
        problems.push(format!(
            "{expired} running tasks with an expired lease (no worker sweeping?)"
        ));
    }
    let summary = if problems.is_empty() {
        "no dead tasks".to_string()
    } else {
        problems.join("; ")
    };
    check(
        Subject::Queue,
        "queue",
        problems.is_empty(),
        format!("{}; {summary}", parts.join(", ")),
    )
}

/// One check per office: its hours now (evaluated as if the autobot were on, to say
/// whether it is open) and whether its autobot is on.
async fn office_checks(db: &Db, now: i64) -> Vec<Check> {
    let rows = sqlx::query(
        "SELECT id, name, timezone, autobot_enabled, working_hours, days_off FROM offices \
         ORDER BY id",
    )
    .fetch_all(&db.pool)
    .await;
    let at = chrono::TimeZone::timestamp_millis_opt(&Utc, now)
        .single()
        .unwrap_or_else(Utc::now);
    let rows = match rows {
        Ok(rows) => rows,
        Err(e) => return vec![check(Subject::Database, "offices", false, e.to_string())],
    };
    rows.iter()
        .map(|r| {
            office_check(r, at)
                .unwrap_or_else(|e| check(Subject::Database, "office", false, e.to_string()))
        })
        .collect()
}

fn office_check(r: &sqlx::any::AnyRow, at: chrono::DateTime<Utc>) -> Result<Check, sqlx::Error> {
    let id: i64 = r.try_get(0)?;
    let name: String = r.try_get(1)?;
    let tz: String = r.try_get(2)?;
    let autobot = r.try_get::<i64, _>(3)? != 0;
    let wh: String = r.try_get(4)?;
    let off: String = r.try_get(5)?;
    let d = autobot_decision(true, &tz, &wh, &off, at);
    let valid = tz.parse::<chrono_tz::Tz>().is_ok() && OfficeHours::parse(&wh, &off).is_ok();
    let hours = match (valid, d.reply) {
        (false, _) => HoursNow::Invalid,
        (true, false) => HoursNow::Open,
        (true, true) => HoursNow::Closed,
    };
    Ok(check(
        Subject::Office {
            id,
            name: name.clone(),
            autobot,
            hours,
        },
        format!("office {id} {name:?}"),
        valid,
        format!(
            "autobot {}, {}",
            if autobot { "ON" } else { "OFF" },
            d.reason
        ),
    ))
}

/// Prints one line per check (AI settings, platforms, database, store, queue, offices).
pub async fn doctor(config: &Config) -> anyhow::Result<()> {
    let db = connect(config).await.map_err(|e| e.to_string());
    let media = media_store(config);
    let checks = doctor_checks(
        config,
        db.as_ref().map_err(Clone::clone),
        media.as_ref(),
        now_ms(),
    )
    .await;
    let mut failed = 0;
    for c in &checks {
        println!(
            "{:<4} {}: {}",
            if c.ok { "OK" } else { "FAIL" },
            c.name,
            c.detail
        );
        if !c.ok {
            failed += 1;
        }
    }
    if failed > 0 {
        anyhow::bail!("{failed} check(s) failed");
    }
    Ok(())
}
