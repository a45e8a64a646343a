//! `komora-origin worker` and `komora-origin queue …` (`doctor` is `crate::doctor`).
//!
//! Each prints plain lines for an operator's terminal.

use std::sync::Arc;

use clap::Subcommand;
use tokio::sync::watch;

use super::config::QUEUES;
use super::store::{self, TaskState};
use super::tasks::TaskContext;
use super::worker::Worker;
use crate::config::Config;
use crate::db::now_ms;
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

pub(crate) async fn connect(config: &Config) -> anyhow::Result<Db> {
    Db::connect(&config.database.url, &config.database.pool)
        .await
        .map_err(|e| anyhow::anyhow!("database {}: {e}", redact(&config.database.url)))
}

/// The URL without its password, for messages.
pub(crate) fn redact(url: &str) -> String {
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
pub(crate) fn media_store(config: &Config) -> Option<Arc<dyn object_store::ObjectStore>> {
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
