//! Worker heartbeat records (`queue_workers`): each running [`crate::Worker`] upserts its row
//! at every heartbeat and deletes it when it stops, so operators see which workers run,
//! how recently each was heard from, and what each is running. A row whose heartbeat is
//! old belongs to a worker that died without stopping (its tasks come back when their
//! leases expire).

use serde::Serialize;
use sqlx::Row;

use crate::QueueDb;

/// A worker as its heartbeats recorded it, with the tasks it holds now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WorkerRecord {
    pub id: String,
    pub started_at: i64,
    pub heartbeat_at: i64,
    /// Most tasks it runs at once.
    pub concurrency: i64,
    /// `(task id, kind)` of the tasks it has running, by id.
    pub running: Vec<(i64, String)>,
}

/// Records that worker `id` (started at `started_at`) is alive at `now_ms`.
pub async fn beat(
    db: &(impl QueueDb + ?Sized),
    id: &str,
    started_at: i64,
    concurrency: i64,
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO queue_workers (id, started_at, heartbeat_at, concurrency) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO UPDATE SET \
         heartbeat_at = excluded.heartbeat_at, concurrency = excluded.concurrency",
    )
    .bind(id)
    .bind(started_at)
    .bind(now_ms)
    .bind(concurrency)
    .execute(db.pool())
    .await
    .map(|_| ())
}

/// Removes worker `id`'s record (it stopped).
pub async fn gone(db: &(impl QueueDb + ?Sized), id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM queue_workers WHERE id = $1")
        .bind(id)
        .execute(db.pool())
        .await
        .map(|_| ())
}

/// Workers heard from since `since_ms`, most recent heartbeat first, with their running
/// tasks; also deletes the records of workers silent before `since_ms`.
pub async fn list(
    db: &(impl QueueDb + ?Sized),
    since_ms: i64,
) -> Result<Vec<WorkerRecord>, sqlx::Error> {
    sqlx::query("DELETE FROM queue_workers WHERE heartbeat_at < $1")
        .bind(since_ms)
        .execute(db.pool())
        .await?;
    let rows = sqlx::query(
        "SELECT id, started_at, heartbeat_at, concurrency FROM queue_workers \
         ORDER BY heartbeat_at DESC, id",
    )
    .fetch_all(db.pool())
    .await?;
    let mut out = rows
        .iter()
        .map(|r| {
            Ok(WorkerRecord {
                id: r.try_get(0)?,
                started_at: r.try_get(1)?,
                heartbeat_at: r.try_get(2)?,
                concurrency: r.try_get(3)?,
                running: Vec::new(),
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    let running = sqlx::query(
        "SELECT worker_id, id, kind FROM tasks WHERE state = 'running' AND worker_id IS NOT NULL \
         ORDER BY id",
    )
    .fetch_all(db.pool())
    .await?;
    for r in &running {
        let worker: String = r.try_get(0)?;
        if let Some(w) = out.iter_mut().find(|w| w.id == worker) {
            w.running.push((r.try_get(1)?, r.try_get(2)?));
        }
    }
    Ok(out)
}
