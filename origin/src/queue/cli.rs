//! `komora-origin worker`, `komora-origin queue …` and `komora-origin doctor`.
//!
//! Each prints plain lines for an operator's terminal; `doctor` exits non-zero when a
//! check fails so it can gate a deploy.

use std::sync::Arc;

use chrono::Utc;
use clap::Subcommand;
use sqlx::Row;
use tokio::sync::watch;

use super::config::QUEUES;
use super::hours::autobot_decision;
use super::store::{self, now_ms, TaskState};
use super::tasks::TaskContext;
use super::worker::Worker;
use crate::config::Config;
use crate::db::Db;

/// `komora-origin queue <cmd>`.
#[derive(Debug, Subcommand)]
pub enum QueueCmd {
    /// Depth per queue and state.
    Stats,
    /// Running tasks with their worker and lease.
    Active {
        /// Most rows shown.
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// Dead tasks with their last error.
    Dead {
        /// Most rows shown.
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// Sends that may have reached the platform before a crash, waiting for an operator.
    Unknown {
        /// Most rows shown.
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// Queue dead or delivery_unknown task ID again with a fresh attempt budget (its error
    /// history is kept). For a delivery_unknown send: it is sent again.
    Retry {
        /// Task id (see `queue dead`, `queue unknown`).
        id: i64,
    },
    /// The delivery_unknown send ID did arrive (checked in the chat): record it as sent,
    /// without sending again.
    MarkSent {
        /// Task id (see `queue unknown`).
        id: i64,
    },
    /// Delete every queued (not running) task of QUEUE: high, default or low.
    Purge {
        /// high, default or low.
        queue: String,
        /// Confirm the deletion.
        #[arg(long)]
        yes: bool,
    },
}

async fn connect(config: &Config) -> anyhow::Result<Db> {
    Db::connect(&config.database.url, &config.database.pool)
        .await
        .map_err(|e| anyhow::anyhow!("database {}: {e}", redact(&config.database.url)))
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

fn print_task(t: &store::TaskRow) {
    println!(
        "{:>8}  {:<7}  {:<24}  attempts {}/{}  {}{}",
        t.id,
        t.queue,
        t.kind,
        t.attempts,
        t.max_attempts,
        t.worker_id
            .as_deref()
            .map(|w| format!("worker {w} lease_until {} ", t.lease_until.unwrap_or(0)))
            .unwrap_or_default(),
        t.last_error
            .as_deref()
            .map(|e| format!("last error: {e}"))
            .unwrap_or_default(),
    );
}

/// Runs one `queue` subcommand against the configured database.
pub async fn run_queue_cmd(config: &Config, cmd: QueueCmd) -> anyhow::Result<()> {
    let db = connect(config).await?;
    let now = now_ms();
    match cmd {
        QueueCmd::Stats => {
            println!(
                "{:<8} {:>8} {:>8} {:>8} {:>10} {:>8} {:>16} {:>14}",
                "queue",
                "queued",
                "due",
                "running",
                "done",
                "dead",
                "delivery_unknown",
                "oldest_due_ms"
            );
            for s in store::stats(&db, now).await? {
                println!(
                    "{:<8} {:>8} {:>8} {:>8} {:>10} {:>8} {:>16} {:>14}",
                    s.queue,
                    s.queued,
                    s.due,
                    s.running,
                    s.done,
                    s.dead,
                    s.delivery_unknown,
                    s.oldest_due_ms
                );
            }
        }
        QueueCmd::Active { limit } => {
            let rows = store::list(&db, TaskState::Running, limit).await?;
            for t in &rows {
                print_task(t);
            }
            println!("{} running", rows.len());
        }
        QueueCmd::Dead { limit } => {
            let rows = store::list(&db, TaskState::Dead, limit).await?;
            for t in &rows {
                print_task(t);
            }
            println!("{} dead", rows.len());
        }
        QueueCmd::Unknown { limit } => {
            let rows = store::list(&db, TaskState::DeliveryUnknown, limit).await?;
            for t in &rows {
                print_task(t);
            }
            println!("{} delivery_unknown", rows.len());
        }
        QueueCmd::Retry { id } => {
            store::retry(&db, id, now).await?;
            println!("task {id} queued again");
        }
        QueueCmd::MarkSent { id } => {
            store::mark_sent(&db, id, now).await?;
            println!("task {id} marked sent; its message is not sent again");
        }
        QueueCmd::Purge { queue, yes } => {
            if !QUEUES.contains(&queue.as_str()) {
                anyhow::bail!("unknown queue {queue:?} (high, default, low)");
            }
            if !yes {
                anyhow::bail!("purge deletes every queued task of {queue}; add --yes to confirm");
            }
            let n = store::purge(&db, &queue).await?;
            println!("deleted {n} queued tasks from {queue}");
        }
    }
    Ok(())
}

/// The media object store of this config, `None` (with a warning) when it cannot be opened.
fn media_store(config: &Config) -> Option<Arc<dyn object_store::ObjectStore>> {
    match crate::media::store::open(&config.media.store) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "media store unavailable; media tasks will retry");
            None
        }
    }
}

/// Runs a worker until SIGINT/SIGTERM, then finishes the running tasks and exits.
pub async fn run_worker(config: &Config) -> anyhow::Result<()> {
    let db = connect(config).await?;
    let config = Arc::new(config.clone());
    let mut ctx = TaskContext::new(db, config.clone());
    ctx.media = media_store(&config);
    let worker = Arc::new(Worker::new(ctx));
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("stop signal: finishing running tasks");
        let _ = tx.send(true);
        // Keep the sender alive so the worker sees `true` rather than a closed channel.
        std::future::pending::<()>().await;
    });
    worker.run(rx).await;
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

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
