//! `komora-origin doctor`: checks the whole configuration and its dependencies (database,
//! media store, queues, platforms, the autobot) and prints one line per check; it exits
//! non-zero when a check fails so it can gate a deploy.

use std::sync::Arc;

use chrono::Utc;
use sqlx::Row;

use crate::autobot::hours::autobot_decision;
use crate::config::Config;
use crate::db::now_ms;
use crate::db::Db;
use crate::queue::cli::{connect, media_store};
use crate::queue::store;

/// One line of `doctor`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

fn check(name: impl Into<String>, ok: bool, detail: impl Into<String>) -> Check {
    Check {
        name: name.into(),
        ok,
        detail: detail.into(),
    }
}

/// Every doctor check, in print order. `db` is `Err` when it could not connect.
pub async fn doctor_checks(
    config: &Config,
    db: Result<&Db, String>,
    media: Option<&Arc<dyn object_store::ObjectStore>>,
    now: i64,
) -> Vec<Check> {
    let mut out = Vec::new();
    let ai = &config.ai;
    out.push(check(
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
    for p in config.platforms.platforms.values() {
        out.push(check(
            format!("platform {}", p.name),
            !p.token.is_empty(),
            format!(
                "base_url {}, token {}, webhook secret SET",
                p.base_url,
                if p.token.is_empty() { "NOT SET" } else { "SET" }
            ),
        ));
    }
    let db = match db {
        Ok(db) => match db.ping().await {
            Ok(()) => {
                out.push(check(
                    "database",
                    true,
                    format!("{:?} reachable", db.backend),
                ));
                db
            }
            Err(e) => {
                out.push(check("database", false, e.to_string()));
                return out;
            }
        },
        Err(e) => {
            out.push(check("database", false, e));
            return out;
        }
    };
    match media {
        None => out.push(check("object store", false, "could not be opened")),
        Some(s) => match crate::media::store::ping(s).await {
            Ok(()) => out.push(check("object store", true, "reachable")),
            Err(e) => out.push(check("object store", false, e.to_string())),
        },
    }
    match store::stats(db, now).await {
        Ok(stats) => {
            let expired: i64 = sqlx::query(
                "SELECT COUNT(*) FROM tasks WHERE state = 'running' AND lease_until < $1",
            )
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
            out.push(check(
                "queue",
                problems.is_empty(),
                format!("{}; {}", parts.join(", "), {
                    if problems.is_empty() {
                        "no dead tasks".to_string()
                    } else {
                        problems.join("; ")
                    }
                }),
            ));
        }
        Err(e) => out.push(check("queue", false, e.to_string())),
    }
    let offices = sqlx::query(
        "SELECT id, name, timezone, autobot_enabled, working_hours, days_off FROM offices \
         ORDER BY id",
    )
    .fetch_all(&db.pool)
    .await;
    let at = chrono::TimeZone::timestamp_millis_opt(&Utc, now)
        .single()
        .unwrap_or_else(Utc::now);
    match offices {
        Err(e) => out.push(check("offices", false, e.to_string())),
        Ok(rows) => {
            for r in rows {
                let line = (|| -> Result<Check, sqlx::Error> {
                    let id: i64 = r.try_get(0)?;
                    let name: String = r.try_get(1)?;
                    let tz: String = r.try_get(2)?;
                    let enabled: i64 = r.try_get(3)?;
                    let wh: String = r.try_get(4)?;
                    let off: String = r.try_get(5)?;
                    // Evaluate the hours as if enabled, to say whether it is open now.
                    let d = autobot_decision(true, &tz, &wh, &off, at);
                    let bad = d.reason.contains("invalid") || d.reason.contains("IANA");
                    Ok(check(
                        format!("office {id} {name:?}"),
                        !bad,
                        format!(
                            "autobot {}, {}",
                            if enabled != 0 { "ON" } else { "OFF" },
                            d.reason
                        ),
                    ))
                })();
                out.push(line.unwrap_or_else(|e| check("office", false, e.to_string())));
            }
        }
    }
    out
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
