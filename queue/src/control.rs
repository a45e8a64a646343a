//! Operator controls: pause and resume a queue (claims skip a paused queue), retry dead
//! tasks, run scheduled tasks now, cancel waiting tasks — one task, a list of ids, or every
//! task a [`TaskFilter`] matches — and purge a queue's waiting tasks.
//!
//! Each action runs on the caller's connection (pass `&mut *tx`) and returns the ids it
//! changed, so the application records who did it in the same transaction. An action
//! touches only tasks in the state it applies to (a dead task is not "run now"); the
//! others are left alone and not returned.

use serde::Serialize;
use sqlx::{AnyConnection, Row};

use crate::filter::{Bind, Sql, TaskFilter};
use crate::QueueDb;

/// A paused queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pause {
    pub queue: String,
    pub paused_at: i64,
    pub paused_by: String,
}

/// Pauses `queue`: workers claim nothing more from it (tasks already running finish).
/// `false` when it was paused already (the first pause is kept).
pub async fn pause(
    conn: &mut AnyConnection,
    queue: &str,
    by: &str,
    now_ms: i64,
) -> Result<bool, sqlx::Error> {
    let r = sqlx::query(
        "INSERT INTO queue_pauses (queue, paused_at, paused_by) VALUES ($1, $2, $3) \
         ON CONFLICT (queue) DO NOTHING",
    )
    .bind(queue)
    .bind(now_ms)
    .bind(by)
    .execute(&mut *conn)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Resumes `queue`. `false` when it was not paused.
pub async fn resume(conn: &mut AnyConnection, queue: &str) -> Result<bool, sqlx::Error> {
    let r = sqlx::query("DELETE FROM queue_pauses WHERE queue = $1")
        .bind(queue)
        .execute(&mut *conn)
        .await?;
    Ok(r.rows_affected() == 1)
}

/// The paused queues.
pub async fn paused(db: &(impl QueueDb + ?Sized)) -> Result<Vec<Pause>, sqlx::Error> {
    let rows = sqlx::query("SELECT queue, paused_at, paused_by FROM queue_pauses ORDER BY queue")
        .fetch_all(db.pool())
        .await?;
    rows.iter()
        .map(|r| {
            Ok(Pause {
                queue: r.try_get(0)?,
                paused_at: r.try_get(1)?,
                paused_by: r.try_get(2)?,
            })
        })
        .collect()
}

/// What an operator does to tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// A dead task is queued again, due now, with a fresh attempt budget (its error history
    /// is kept).
    Retry,
    /// A scheduled task (queued, due later) becomes due now.
    RunNow,
    /// A queued task (due or scheduled) is not run: it becomes dead with the reason as its
    /// last error, so it stays visible and can be retried.
    Cancel,
}

impl Action {
    pub const ALL: [Action; 3] = [Action::Retry, Action::RunNow, Action::Cancel];

    /// The name in forms and in the audit.
    pub const fn as_str(self) -> &'static str {
        match self {
            Action::Retry => "retry",
            Action::RunNow => "run_now",
            Action::Cancel => "cancel",
        }
    }

    pub fn parse(s: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

/// Which tasks an action covers.
#[derive(Debug, Clone)]
pub enum Target {
    /// These tasks (a selection, or one).
    Ids(Vec<i64>),
    /// Every task the filter matches now.
    Filter(TaskFilter),
}

/// Most ids bound in one statement of an action on [`Target::Ids`].
const IDS_CHUNK: usize = 500;

/// Applies `action` to `target` at `now_ms` on the caller's connection; `reason` is the
/// last error a cancelled task keeps. Returns the ids changed, ascending.
pub async fn apply(
    conn: &mut AnyConnection,
    action: Action,
    target: &Target,
    now_ms: i64,
    reason: &str,
) -> Result<Vec<i64>, sqlx::Error> {
    let first = match action {
        Action::Retry => 2,
        Action::RunNow | Action::Cancel => 3,
    };
    let mut changed = Vec::new();
    match target {
        Target::Ids(ids) => {
            for chunk in ids.chunks(IDS_CHUNK) {
                let mut cond = Sql::default();
                let marks: Vec<String> = chunk
                    .iter()
                    .map(|id| cond.mark(first, Bind::Int(*id)))
                    .collect();
                cond.text = format!("id IN ({})", marks.join(", "));
                changed.extend(update(conn, action, &cond, now_ms, reason).await?);
            }
        }
        Target::Filter(f) => {
            let cond = f.to_sql(first, now_ms);
            changed.extend(update(conn, action, &cond, now_ms, reason).await?);
        }
    }
    changed.sort_unstable();
    Ok(changed)
}

/// One UPDATE of `action` over the tasks matching `cond`, whose placeholders follow the
/// action's own (`$1` now; `$2` now again or the reason).
async fn update(
    conn: &mut AnyConnection,
    action: Action,
    cond: &Sql,
    now_ms: i64,
    reason: &str,
) -> Result<Vec<i64>, sqlx::Error> {
    // Only constant fragments and placeholders are formatted in; values are bound.
    let (set, state) = match action {
        Action::Retry => (
            "state = 'queued', attempts = 0, run_at = $1, finished_at = NULL, \
             lease_until = NULL, worker_id = NULL",
            "state = 'dead'",
        ),
        Action::RunNow => ("run_at = $1", "state = 'queued' AND run_at > $2"),
        Action::Cancel => (
            "state = 'dead', finished_at = $1, last_error = $2",
            "state = 'queued'",
        ),
    };
    let sql = format!(
        "UPDATE tasks SET {set} WHERE {state} AND {} RETURNING id",
        cond.text
    );
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now_ms);
    q = match action {
        Action::Retry => q,
        Action::RunNow => q.bind(now_ms),
        Action::Cancel => q.bind(reason),
    };
    let rows = cond.bind_all(q).fetch_all(&mut *conn).await?;
    rows.iter().map(|r| r.try_get::<i64, _>(0)).collect()
}

/// Deletes the queued (not running) tasks of `queue` on the caller's connection. Returns
/// how many.
pub async fn purge(conn: &mut AnyConnection, queue: &str) -> Result<u64, sqlx::Error> {
    let r = sqlx::query("DELETE FROM tasks WHERE queue = $1 AND state = 'queued'")
        .bind(queue)
        .execute(&mut *conn)
        .await?;
    Ok(r.rows_affected())
}
