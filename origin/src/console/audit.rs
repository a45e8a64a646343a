//! The record of console actions (`console_audit`): who (key id and name), what, when, and
//! on which queue or task. Written in the action's own transaction, so an action and its
//! record commit together; a bulk action writes one row per task it changed, so each task's
//! page shows what was done to it.

use serde::Serialize;
use sqlx::{AnyConnection, Row};

use super::session::Session;
use crate::db::Db;

/// One recorded action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    pub at: i64,
    pub key_id: i64,
    pub key_name: String,
    pub action: String,
    pub queue: Option<String>,
    pub task_id: Option<i64>,
    pub detail: String,
}

/// Rows per INSERT (7 values each).
const ROWS_PER_INSERT: usize = 100;

/// Records `action` by `who` at `now`: one row per id of `tasks`, or one row for the queue
/// when `tasks` is empty.
pub async fn record(
    conn: &mut AnyConnection,
    who: &Session,
    action: &str,
    queue: Option<&str>,
    tasks: &[i64],
    detail: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    let targets: Vec<Option<i64>> = if tasks.is_empty() {
        vec![None]
    } else {
        tasks.iter().copied().map(Some).collect()
    };
    for chunk in targets.chunks(ROWS_PER_INSERT) {
        let rows: Vec<String> = (0..chunk.len())
            .map(|i| {
                let b = i * 7;
                format!(
                    "(${}, ${}, ${}, ${}, ${}, ${}, ${})",
                    b + 1,
                    b + 2,
                    b + 3,
                    b + 4,
                    b + 5,
                    b + 6,
                    b + 7
                )
            })
            .collect();
        // Only placeholders are formatted in; every value is bound.
        let sql = format!(
            "INSERT INTO console_audit (at, api_key_id, key_name, action, queue, task_id, \
             detail) VALUES {}",
            rows.join(", ")
        );
        let mut q = crate::db::query_built(sql);
        for task in chunk {
            q = q
                .bind(now)
                .bind(who.key_id)
                .bind(who.key_name.clone())
                .bind(action.to_string())
                .bind(queue.map(str::to_string))
                .bind(*task)
                .bind(detail.to_string());
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

fn entry(r: &sqlx::any::AnyRow) -> Result<Entry, sqlx::Error> {
    Ok(Entry {
        at: r.try_get(0)?,
        key_id: r.try_get(1)?,
        key_name: r.try_get(2)?,
        action: r.try_get(3)?,
        queue: r.try_get(4)?,
        task_id: r.try_get(5)?,
        detail: r.try_get(6)?,
    })
}

/// What was done to task `id`, oldest first.
pub async fn for_task(db: &Db, id: i64) -> Result<Vec<Entry>, sqlx::Error> {
    let rows = crate::db::query(
        "SELECT at, api_key_id, key_name, action, queue, task_id, detail FROM console_audit \
         WHERE task_id = $1 ORDER BY at, id",
    )
    .bind(id)
    .fetch_all(&db.pool)
    .await?;
    rows.iter().map(entry).collect()
}

/// The latest actions on queues (pause, resume, purge), newest first.
pub async fn queue_actions(db: &Db, limit: i64) -> Result<Vec<Entry>, sqlx::Error> {
    let rows = crate::db::query(
        "SELECT at, api_key_id, key_name, action, queue, task_id, detail FROM console_audit \
         WHERE task_id IS NULL ORDER BY at DESC, id DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(&db.pool)
    .await?;
    rows.iter().map(entry).collect()
}
