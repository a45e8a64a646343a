//! The queue's SQL: enqueue, heartbeat, complete, fail, sweep, prune and the operator
//! commands (stats, list, retry, purge); the claim is `crate::claim` (re-exported here).
//!
//! Every function takes the current time as `now_ms` so tests can drive leases, backoff and
//! pruning without sleeping. Besides the claim, only the statements that bind a list of ids
//! differ per backend (a PostgreSQL array or a JSON array read by SQLite's `json_each`).

use serde_json::Value;
use sqlx::{AnyConnection, Row};

use crate::config::QueueConfig;
use crate::inspect::{task_view, TaskView, TASK_COLUMNS};
use crate::{Backend, NewTask, QueueDb};

/// How many entries of error history a task keeps.
const ERROR_HISTORY: usize = 20;

pub use crate::claim::{claim, release, ClaimedTask};
pub use crate::now_ms;

/// Where a task is in its life (the `tasks.state` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Waiting for its `run_at`, then for a worker.
    Queued,
    /// Leased by a worker.
    Running,
    Done,
    /// Out of attempts or failed for good; kept until an operator retries it.
    Dead,
    /// A send whose earlier attempt may have reached the platform; waits for an operator
    /// (`queue retry`, `queue mark-sent`). Never claimed, swept or pruned.
    DeliveryUnknown,
}

impl TaskState {
    pub const ALL: [TaskState; 5] = [
        TaskState::Queued,
        TaskState::Running,
        TaskState::Done,
        TaskState::Dead,
        TaskState::DeliveryUnknown,
    ];

    /// The column value.
    pub const fn as_str(self) -> &'static str {
        match self {
            TaskState::Queued => "queued",
            TaskState::Running => "running",
            TaskState::Done => "done",
            TaskState::Dead => "dead",
            TaskState::DeliveryUnknown => "delivery_unknown",
        }
    }

    pub fn parse(s: &str) -> Option<TaskState> {
        TaskState::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

impl std::fmt::Display for TaskState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for TaskState {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// One task row as the operator commands show it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TaskRow {
    pub id: i64,
    pub queue: String,
    pub kind: String,
    pub state: TaskState,
    pub attempts: i64,
    pub max_attempts: i64,
    pub run_at: i64,
    pub lease_until: Option<i64>,
    pub worker_id: Option<String>,
    pub last_error: Option<String>,
    pub errors: Value,
    pub payload: Value,
    pub created_at: i64,
}

/// The operator commands' fields of a task as read ([`crate::inspect::TaskView`] is the one
/// mapping of a `tasks` row).
impl From<TaskView> for TaskRow {
    fn from(t: TaskView) -> TaskRow {
        TaskRow {
            id: t.id,
            queue: t.queue,
            kind: t.kind,
            state: t.state,
            attempts: t.attempts,
            max_attempts: t.max_attempts,
            run_at: t.run_at,
            lease_until: t.lease_until,
            worker_id: t.worker_id,
            last_error: t.last_error,
            errors: Value::Array(t.errors),
            payload: t.payload,
            created_at: t.created_at,
        }
    }
}

/// Count of tasks per queue and state.
#[derive(Debug, Clone, Default, serde::Serialize, PartialEq, Eq)]
pub struct QueueStats {
    pub queue: String,
    pub queued: i64,
    /// Queued and due now (the rest wait for a retry delay or a schedule).
    pub due: i64,
    pub running: i64,
    pub done: i64,
    pub dead: i64,
    /// Sends whose earlier attempt may have reached the platform, waiting for an operator.
    pub delivery_unknown: i64,
    /// Age of the oldest due task, milliseconds (0 when none).
    pub oldest_due_ms: i64,
}

/// Enqueues `task` on the caller's connection (pass `&mut *tx`). A live task with the same
/// idempotency key makes this a no-op that returns the existing task's id.
pub async fn enqueue_at(
    conn: &mut AnyConnection,
    config: &QueueConfig,
    task: NewTask,
    now_ms: i64,
) -> Result<i64, sqlx::Error> {
    let kind = config.kind(&task.kind);
    let payload = task.payload.to_string();
    let run_at = task.run_at_ms.unwrap_or(now_ms);
    // The conflict target repeats the partial index's predicate so both engines pick it.
    let row = sqlx::query(
        "INSERT INTO tasks (queue, kind, payload, state, priority, attempts, max_attempts, \
         run_at, idempotency_key, errors, created_at) \
         VALUES ($1, $2, $3, 'queued', 0, 0, $4, $5, $6, '[]', $7) \
         ON CONFLICT (idempotency_key) \
         WHERE state IN ('queued', 'running') AND idempotency_key IS NOT NULL DO NOTHING \
         RETURNING id",
    )
    .bind(kind.queue)
    .bind(task.kind.as_str())
    .bind(payload)
    .bind(i64::from(kind.max_attempts))
    .bind(run_at)
    .bind(task.idempotency_key.clone())
    .bind(now_ms)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(row) = row {
        let id: i64 = row.try_get(0)?;
        crate::metrics::enqueued(kind.queue);
        return Ok(id);
    }
    let row = sqlx::query(
        "SELECT id FROM tasks WHERE idempotency_key = $1 AND state IN ('queued', 'running')",
    )
    .bind(task.idempotency_key)
    .fetch_one(&mut *conn)
    .await?;
    row.try_get(0)
}

/// Renews the leases of `ids`, the tasks `worker_id` has in flight. Only those: a task the
/// worker gave up on (its outcome could not be written) must see its lease expire so the
/// sweep hands it on, however long the worker lives. Returns how many it still holds.
pub async fn heartbeat(
    db: &(impl QueueDb + ?Sized),
    worker_id: &str,
    ids: &[i64],
    now_ms: i64,
    lease_ms: i64,
) -> Result<u64, sqlx::Error> {
    if ids.is_empty() {
        return Ok(0);
    }
    let sql = match db.backend() {
        Backend::Postgres => {
            "UPDATE tasks SET lease_until = $1 WHERE id = ANY($3::bigint[]) \
             AND worker_id = $2 AND state = 'running'"
        }
        Backend::Sqlite => {
            "UPDATE tasks SET lease_until = $1 WHERE id IN (SELECT value FROM json_each($3)) \
             AND worker_id = $2 AND state = 'running'"
        }
    };
    let r = sqlx::query(sql)
        .bind(now_ms.saturating_add(lease_ms))
        .bind(worker_id)
        .bind(id_list(db.backend(), ids))
        .execute(db.pool())
        .await?;
    Ok(r.rows_affected())
}

/// `ids` as one bound value, whatever their number: a PostgreSQL array literal (`{1,2}`,
/// cast to `bigint[]` in the statement) or a JSON array (`[1,2]`, read by SQLite's
/// `json_each`). One statement text for every batch size, so it is prepared once per
/// connection; a list of placeholders made a new statement for each length.
fn id_list(backend: Backend, ids: &[i64]) -> String {
    let (open, close) = match backend {
        Backend::Postgres => ('{', '}'),
        Backend::Sqlite => ('[', ']'),
    };
    let mut s = String::with_capacity(ids.len() * 8 + 2);
    s.push(open);
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&id.to_string());
    }
    s.push(close);
    s
}

/// Marks a task done. `false` when the worker no longer held its lease (it expired and the
/// task was given to someone else; their run decides).
pub async fn complete(
    db: &(impl QueueDb + ?Sized),
    id: i64,
    worker_id: &str,
    now_ms: i64,
) -> Result<bool, sqlx::Error> {
    let r = sqlx::query(
        "UPDATE tasks SET state = 'done', finished_at = $1, lease_until = NULL \
         WHERE id = $2 AND worker_id = $3 AND state = 'running'",
    )
    .bind(now_ms)
    .bind(id)
    .bind(worker_id)
    .execute(db.pool())
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Marks many tasks of one worker done in one statement on `conn` (the worker's flusher
/// batches its completions: one commit per batch instead of per task). Returns how many it
/// still held.
pub async fn complete_many(
    conn: &mut AnyConnection,
    backend: Backend,
    ids: &[i64],
    worker_id: &str,
    now_ms: i64,
) -> Result<u64, sqlx::Error> {
    if ids.is_empty() {
        return Ok(0);
    }
    let sql = match backend {
        Backend::Postgres => {
            "UPDATE tasks SET state = 'done', finished_at = $1, lease_until = NULL \
             WHERE id = ANY($3::bigint[]) AND worker_id = $2 AND state = 'running'"
        }
        Backend::Sqlite => {
            "UPDATE tasks SET state = 'done', finished_at = $1, lease_until = NULL \
             WHERE id IN (SELECT value FROM json_each($3)) AND worker_id = $2 \
             AND state = 'running'"
        }
    };
    let r = sqlx::query(sql)
        .bind(now_ms)
        .bind(worker_id)
        .bind(id_list(backend, ids))
        .execute(&mut *conn)
        .await?;
    Ok(r.rows_affected())
}

/// Appends one error to a task's JSON history, keeping the last [`ERROR_HISTORY`].
pub fn push_error(errors: &str, attempt: i64, at_ms: i64, error: &str) -> String {
    let mut list: Vec<Value> = serde_json::from_str(errors).unwrap_or_default();
    list.push(serde_json::json!({ "attempt": attempt, "at": at_ms, "error": error }));
    if list.len() > ERROR_HISTORY {
        let cut = list.len() - ERROR_HISTORY;
        list.drain(..cut);
    }
    Value::Array(list).to_string()
}

/// What [`fail`] did with the task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailResult {
    /// Queued again, due at this time.
    Retry(i64),
    /// Out of attempts (or a permanent error): kept as dead.
    Dead,
    /// The worker no longer held the lease; nothing written.
    LeaseLost,
}

/// Records a failed run: back to `queued` at `now_ms + retry_in_ms`, or `dead` when the
/// error is permanent or the task is out of attempts.
pub async fn fail(
    db: &(impl QueueDb + ?Sized),
    task: &ClaimedTask,
    worker_id: &str,
    now_ms: i64,
    error: &str,
    permanent: bool,
    retry_in_ms: i64,
) -> Result<FailResult, sqlx::Error> {
    let dead = permanent || task.attempts >= task.max_attempts;
    let errors = push_error(&task.errors, task.attempts, now_ms, error);
    let (state, run_at, finished) = if dead {
        (TaskState::Dead, now_ms, Some(now_ms))
    } else {
        (TaskState::Queued, now_ms.saturating_add(retry_in_ms), None)
    };
    let r = sqlx::query(
        "UPDATE tasks SET state = $1, run_at = $2, lease_until = NULL, worker_id = NULL, \
         last_error = $3, errors = $4, finished_at = $5 \
         WHERE id = $6 AND worker_id = $7 AND state = 'running'",
    )
    .bind(state.as_str())
    .bind(run_at)
    .bind(error)
    .bind(errors)
    .bind(finished)
    .bind(task.id)
    .bind(worker_id)
    .execute(db.pool())
    .await?;
    Ok(if r.rows_affected() != 1 {
        FailResult::LeaseLost
    } else if dead {
        FailResult::Dead
    } else {
        FailResult::Retry(run_at)
    })
}

/// Parks a running task as `delivery_unknown` (an earlier run may have had its effect) on
/// the caller's connection (the worker's transaction, in which the kind's
/// [`crate::Handler::on_parked`] marks its own rows): not claimed, swept or pruned until an
/// operator retries it or marks it sent. `false` when the worker no longer held the lease.
pub async fn park_unknown(
    conn: &mut AnyConnection,
    task: &ClaimedTask,
    worker_id: &str,
    now_ms: i64,
    error: &str,
) -> Result<bool, sqlx::Error> {
    let errors = push_error(&task.errors, task.attempts, now_ms, error);
    let r = sqlx::query(
        "UPDATE tasks SET state = 'delivery_unknown', lease_until = NULL, worker_id = NULL, \
         last_error = $1, errors = $2, finished_at = $3 \
         WHERE id = $4 AND worker_id = $5 AND state = 'running'",
    )
    .bind(error)
    .bind(errors)
    .bind(now_ms)
    .bind(task.id)
    .bind(worker_id)
    .execute(&mut *conn)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Gives tasks whose lease expired (their worker died or hung) back to the queue, or marks
/// them dead when that run was their last attempt. Returns how many were swept.
pub async fn sweep_expired(db: &(impl QueueDb + ?Sized), now_ms: i64) -> Result<u64, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, attempts, max_attempts, errors, worker_id FROM tasks \
         WHERE state = 'running' AND lease_until < $1",
    )
    .bind(now_ms)
    .fetch_all(db.pool())
    .await?;
    let mut swept = 0;
    for row in rows {
        let id: i64 = row.try_get(0)?;
        let attempts: i64 = row.try_get(1)?;
        let max_attempts: i64 = row.try_get(2)?;
        let errors: String = row.try_get(3)?;
        let worker: Option<String> = row.try_get(4)?;
        let error = format!(
            "lease expired (worker {} stopped heartbeating)",
            worker.as_deref().unwrap_or("?")
        );
        let errors = push_error(&errors, attempts, now_ms, &error);
        let dead = attempts >= max_attempts;
        // Guarded by the same condition: a heartbeat that raced in keeps the task.
        let r = sqlx::query(
            "UPDATE tasks SET state = $1, run_at = $2, lease_until = NULL, worker_id = NULL, \
             last_error = $3, errors = $4, finished_at = $5 \
             WHERE id = $6 AND state = 'running' AND lease_until < $2",
        )
        .bind(
            if dead {
                TaskState::Dead
            } else {
                TaskState::Queued
            }
            .as_str(),
        )
        .bind(now_ms)
        .bind(error)
        .bind(errors)
        .bind(if dead { Some(now_ms) } else { None })
        .bind(id)
        .execute(db.pool())
        .await?;
        swept += r.rows_affected();
    }
    Ok(swept)
}

/// Deletes `done` tasks finished before `now_ms - older_than_ms`. Dead tasks are kept.
pub async fn prune(
    db: &(impl QueueDb + ?Sized),
    now_ms: i64,
    older_than_ms: i64,
) -> Result<u64, sqlx::Error> {
    let r = sqlx::query("DELETE FROM tasks WHERE state = 'done' AND finished_at < $1")
        .bind(now_ms.saturating_sub(older_than_ms))
        .execute(db.pool())
        .await?;
    Ok(r.rows_affected())
}

/// Counts per queue (always the three queues, in priority order).
pub async fn stats(
    db: &(impl QueueDb + ?Sized),
    now_ms: i64,
) -> Result<Vec<QueueStats>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT queue, state, COUNT(*), \
         SUM(CASE WHEN state = 'queued' AND run_at <= $1 THEN 1 ELSE 0 END), \
         MIN(CASE WHEN state = 'queued' AND run_at <= $1 THEN run_at END) \
         FROM tasks GROUP BY queue, state",
    )
    .bind(now_ms)
    .fetch_all(db.pool())
    .await?;
    let mut out: Vec<QueueStats> = crate::config::QUEUES
        .iter()
        .map(|q| QueueStats {
            queue: (*q).to_string(),
            ..QueueStats::default()
        })
        .collect();
    for row in rows {
        let queue: String = row.try_get(0)?;
        let state: String = row.try_get(1)?;
        let count: i64 = row.try_get(2)?;
        let due: Option<i64> = row.try_get(3)?;
        let oldest: Option<i64> = row.try_get(4)?;
        let entry = match out.iter_mut().position(|s| s.queue == queue) {
            Some(i) => &mut out[i],
            None => {
                out.push(QueueStats {
                    queue: queue.clone(),
                    ..QueueStats::default()
                });
                let last = out.len() - 1;
                &mut out[last]
            }
        };
        match TaskState::parse(&state) {
            Some(TaskState::Queued) => {
                entry.queued += count;
                entry.due += due.unwrap_or(0);
                if let Some(o) = oldest {
                    entry.oldest_due_ms = now_ms.saturating_sub(o).max(0);
                }
            }
            Some(TaskState::Running) => entry.running += count,
            Some(TaskState::Done) => entry.done += count,
            Some(TaskState::Dead) => entry.dead += count,
            Some(TaskState::DeliveryUnknown) => entry.delivery_unknown += count,
            None => {}
        }
    }
    Ok(out)
}

/// Tasks in `state`, oldest first, at most `limit`.
pub async fn list(
    db: &(impl QueueDb + ?Sized),
    state: TaskState,
    limit: i64,
) -> Result<Vec<TaskRow>, sqlx::Error> {
    // Only the constant column list is formatted in.
    let sql = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE state = $1 ORDER BY id LIMIT $2");
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(state.as_str())
        .bind(limit)
        .fetch_all(db.pool())
        .await?;
    rows.iter()
        .map(|r| task_view(r).map(TaskRow::from))
        .collect()
}

/// One task by id.
pub async fn get(db: &(impl QueueDb + ?Sized), id: i64) -> Result<Option<TaskRow>, sqlx::Error> {
    let sql = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(db.pool())
        .await?;
    row.as_ref()
        .map(|r| task_view(r).map(TaskRow::from))
        .transpose()
}

/// Requeues dead or `delivery_unknown` task `id` with a fresh attempt budget, on the
/// caller's connection (the application may change its own rows in the same transaction).
/// Its error history is kept. `false` when the task is no longer in state `from`.
pub async fn requeue(
    conn: &mut AnyConnection,
    id: i64,
    from: TaskState,
    now_ms: i64,
) -> Result<bool, sqlx::Error> {
    let n = sqlx::query(
        "UPDATE tasks SET state = 'queued', attempts = 0, run_at = $1, finished_at = NULL \
         WHERE id = $2 AND state = $3",
    )
    .bind(now_ms)
    .bind(id)
    .bind(from.as_str())
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// Marks `delivery_unknown` task `id` done on the caller's connection (an operator found
/// that its effect did happen). `false` when it is no longer `delivery_unknown`.
pub async fn resolve_unknown(
    conn: &mut AnyConnection,
    id: i64,
    now_ms: i64,
) -> Result<bool, sqlx::Error> {
    let n = sqlx::query(
        "UPDATE tasks SET state = 'done', finished_at = $1 WHERE id = $2 \
         AND state = 'delivery_unknown'",
    )
    .bind(now_ms)
    .bind(id)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// Deletes the queued (not running) tasks of `queue`. Returns how many.
pub async fn purge(db: &(impl QueueDb + ?Sized), queue: &str) -> Result<u64, sqlx::Error> {
    let r = sqlx::query("DELETE FROM tasks WHERE queue = $1 AND state = 'queued'")
        .bind(queue)
        .execute(db.pool())
        .await?;
    Ok(r.rows_affected())
}
