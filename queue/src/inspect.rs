//! What the ops console reads: counts per queue and kind (due, scheduled, running,
//! retrying, dead, done per minute over the last hour, age of the oldest waiting task),
//! task lists by [`TaskFilter`], and one task with everything it recorded.
//!
//! All reads; every function takes `now_ms` so a test fixes the clock.

use serde::Serialize;
use serde_json::Value;
use sqlx::Row;

use crate::control::{self, Pause};
use crate::filter::TaskFilter;
use crate::{QueueDb, TaskState};

/// Minutes of history in [`Counts::done_per_minute`].
pub const DONE_MINUTES: usize = 60;

/// Counts of one queue, or of one kind within it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Queued and due: waiting for a worker.
    pub due: i64,
    /// Queued, due later (a schedule or a retry delay).
    pub scheduled: i64,
    pub running: i64,
    /// Queued again after a failed run (counted in `due` or `scheduled` too).
    pub retrying: i64,
    pub dead: i64,
    pub delivery_unknown: i64,
    /// Done tasks still kept (older ones are pruned).
    pub done: i64,
    /// Tasks finished in each of the last 60 minutes, `[0]` the current minute.
    pub done_per_minute: Vec<i64>,
    /// Age of the oldest due task, ms (0 when none waits).
    pub oldest_due_ms: i64,
}

impl Default for Counts {
    fn default() -> Self {
        Counts {
            due: 0,
            scheduled: 0,
            running: 0,
            retrying: 0,
            dead: 0,
            delivery_unknown: 0,
            done: 0,
            done_per_minute: vec![0; DONE_MINUTES],
            oldest_due_ms: 0,
        }
    }
}

impl Counts {
    /// Tasks done over the last hour.
    pub fn done_last_hour(&self) -> i64 {
        self.done_per_minute.iter().sum()
    }

    fn add(&mut self, o: &Counts) {
        self.due += o.due;
        self.scheduled += o.scheduled;
        self.running += o.running;
        self.retrying += o.retrying;
        self.dead += o.dead;
        self.delivery_unknown += o.delivery_unknown;
        self.done += o.done;
        for (a, b) in self.done_per_minute.iter_mut().zip(&o.done_per_minute) {
            *a += b;
        }
        self.oldest_due_ms = self.oldest_due_ms.max(o.oldest_due_ms);
    }
}

/// One queue: its totals, each kind seen in it, and whether it is paused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueueOverview {
    pub queue: String,
    pub paused: Option<Pause>,
    pub totals: Counts,
    /// Per kind, by name.
    pub kinds: Vec<(String, Counts)>,
}

/// Every queue (the three in priority order, then any other name found), over the tasks
/// `filter` matches (its `view` is ignored: the counts are the views).
pub async fn overview(
    db: &(impl QueueDb + ?Sized),
    filter: &TaskFilter,
    now_ms: i64,
) -> Result<Vec<QueueOverview>, sqlx::Error> {
    let filter = TaskFilter {
        view: None,
        ..filter.clone()
    };
    let cond = filter.to_sql(2, now_ms);
    // Only the filter's placeholders and constant fragments are formatted in.
    let sql = format!(
        "SELECT queue, kind, state, COUNT(*), \
         SUM(CASE WHEN run_at <= $1 THEN 1 ELSE 0 END), \
         SUM(CASE WHEN last_error IS NOT NULL THEN 1 ELSE 0 END), \
         MIN(CASE WHEN run_at <= $1 THEN run_at END) \
         FROM tasks WHERE {} GROUP BY queue, kind, state",
        cond.text
    );
    let rows = cond
        .bind_all(sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now_ms))
        .fetch_all(db.pool())
        .await?;
    let mut out: Vec<QueueOverview> = crate::config::QUEUES
        .iter()
        .map(|q| QueueOverview {
            queue: (*q).to_string(),
            paused: None,
            totals: Counts::default(),
            kinds: Vec::new(),
        })
        .collect();
    let entry = |out: &mut Vec<QueueOverview>, queue: &str, kind: &str| -> (usize, usize) {
        let qi = match out.iter().position(|q| q.queue == queue) {
            Some(i) => i,
            None => {
                out.push(QueueOverview {
                    queue: queue.to_string(),
                    paused: None,
                    totals: Counts::default(),
                    kinds: Vec::new(),
                });
                out.len() - 1
            }
        };
        let kinds = &mut out[qi].kinds;
        let ki = match kinds.iter().position(|(k, _)| k == kind) {
            Some(i) => i,
            None => {
                kinds.push((kind.to_string(), Counts::default()));
                kinds.len() - 1
            }
        };
        (qi, ki)
    };
    for row in &rows {
        let queue: String = row.try_get(0)?;
        let kind: String = row.try_get(1)?;
        let state: String = row.try_get(2)?;
        let count: i64 = row.try_get(3)?;
        let due: i64 = row.try_get::<Option<i64>, _>(4)?.unwrap_or(0);
        let failed: i64 = row.try_get::<Option<i64>, _>(5)?.unwrap_or(0);
        let oldest: Option<i64> = row.try_get(6)?;
        let (qi, ki) = entry(&mut out, &queue, &kind);
        let c = &mut out[qi].kinds[ki].1;
        match TaskState::parse(&state) {
            Some(TaskState::Queued) => {
                c.due += due;
                c.scheduled += count - due;
                c.retrying += failed;
                if let Some(o) = oldest {
                    c.oldest_due_ms = c.oldest_due_ms.max(now_ms.saturating_sub(o).max(0));
                }
            }
            Some(TaskState::Running) => c.running += count,
            Some(TaskState::Done) => c.done += count,
            Some(TaskState::Dead) => c.dead += count,
            Some(TaskState::DeliveryUnknown) => c.delivery_unknown += count,
            None => {}
        }
    }
    // Done per minute: buckets by whole minutes back from now's minute.
    let minute = now_ms.div_euclid(60_000);
    let since = (minute - (DONE_MINUTES as i64 - 1)) * 60_000;
    let cond = filter.to_sql(2, now_ms);
    let sql = format!(
        "SELECT queue, kind, finished_at / 60000, COUNT(*) FROM tasks \
         WHERE state = 'done' AND finished_at >= $1 AND {} \
         GROUP BY queue, kind, finished_at / 60000",
        cond.text
    );
    let rows = cond
        .bind_all(sqlx::query(sqlx::AssertSqlSafe(sql)).bind(since))
        .fetch_all(db.pool())
        .await?;
    for row in &rows {
        let queue: String = row.try_get(0)?;
        let kind: String = row.try_get(1)?;
        let at: i64 = row.try_get(2)?;
        let count: i64 = row.try_get(3)?;
        let back = minute - at;
        if (0..DONE_MINUTES as i64).contains(&back) {
            let (qi, ki) = entry(&mut out, &queue, &kind);
            out[qi].kinds[ki].1.done_per_minute[back as usize] += count;
        }
    }
    let paused = control::paused(db).await?;
    for q in &mut out {
        q.kinds.sort_by(|a, b| a.0.cmp(&b.0));
        let mut totals = Counts::default();
        for (_, c) in &q.kinds {
            totals.add(c);
        }
        q.totals = totals;
        q.paused = paused.iter().find(|p| p.queue == q.queue).cloned();
    }
    Ok(out)
}

/// One task with everything it recorded.
#[derive(Debug, Clone, Serialize)]
pub struct TaskView {
    pub id: i64,
    pub queue: String,
    pub kind: String,
    pub state: TaskState,
    pub priority: i64,
    pub attempts: i64,
    pub max_attempts: i64,
    /// When it is (or was) due.
    pub run_at: i64,
    pub lease_until: Option<i64>,
    pub worker_id: Option<String>,
    pub idempotency_key: Option<String>,
    pub last_error: Option<String>,
    /// Earlier errors, oldest first: `{"attempt", "at", "error"}` objects.
    pub errors: Vec<Value>,
    pub payload: Value,
    pub created_at: i64,
    /// Start of the last run.
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

/// Every column of `tasks`, in the order [`task_view`] reads them.
pub(crate) const TASK_COLUMNS: &str =
    "id, queue, kind, state, priority, attempts, max_attempts, run_at, \
    lease_until, worker_id, idempotency_key, last_error, errors, payload, created_at, \
    started_at, finished_at";

/// The one mapping of a `tasks` row selected by [`TASK_COLUMNS`] (the operator commands'
/// `crate::store::TaskRow` is taken from it).
pub(crate) fn task_view(row: &sqlx::any::AnyRow) -> Result<TaskView, sqlx::Error> {
    let state: String = row.try_get(3)?;
    let state = TaskState::parse(&state).ok_or_else(|| sqlx::Error::ColumnDecode {
        index: "state".into(),
        source: format!("unknown task state {state:?}").into(),
    })?;
    let errors: String = row.try_get(12)?;
    let payload: String = row.try_get(13)?;
    Ok(TaskView {
        id: row.try_get(0)?,
        queue: row.try_get(1)?,
        kind: row.try_get(2)?,
        state,
        priority: row.try_get(4)?,
        attempts: row.try_get(5)?,
        max_attempts: row.try_get(6)?,
        run_at: row.try_get(7)?,
        lease_until: row.try_get(8)?,
        worker_id: row.try_get(9)?,
        idempotency_key: row.try_get(10)?,
        last_error: row.try_get(11)?,
        errors: serde_json::from_str(&errors).unwrap_or_default(),
        // A payload that is not JSON is shown as the text it is.
        payload: serde_json::from_str(&payload).unwrap_or(Value::String(payload)),
        created_at: row.try_get(14)?,
        started_at: row.try_get(15)?,
        finished_at: row.try_get(16)?,
    })
}

/// A page of tasks: newest first.
#[derive(Debug, Clone, Serialize)]
pub struct TaskPage {
    pub tasks: Vec<TaskView>,
    /// Pass as `before` for the next page; `None` on the last.
    pub next_before: Option<i64>,
}

/// Tasks `filter` matches, newest first, at most `limit`, with ids below `before` (the
/// previous page's `next_before`).
pub async fn list(
    db: &(impl QueueDb + ?Sized),
    filter: &TaskFilter,
    before: Option<i64>,
    limit: i64,
    now_ms: i64,
) -> Result<TaskPage, sqlx::Error> {
    let limit = limit.clamp(1, 1000);
    let cond = filter.to_sql(3, now_ms);
    // Only constant fragments and placeholders are formatted in.
    let sql = format!(
        "SELECT {TASK_COLUMNS} FROM tasks WHERE id < $1 AND {} ORDER BY id DESC LIMIT $2",
        cond.text
    );
    let rows = cond
        .bind_all(
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(before.unwrap_or(i64::MAX))
                .bind(limit + 1),
        )
        .fetch_all(db.pool())
        .await?;
    let mut tasks = rows.iter().map(task_view).collect::<Result<Vec<_>, _>>()?;
    let next_before = if tasks.len() as i64 > limit {
        tasks.truncate(limit as usize);
        tasks.last().map(|t| t.id)
    } else {
        None
    };
    Ok(TaskPage { tasks, next_before })
}

/// Task `id` if `filter` (its restriction; pass the default for none) lets it be seen.
pub async fn task(
    db: &(impl QueueDb + ?Sized),
    id: i64,
    filter: &TaskFilter,
    now_ms: i64,
) -> Result<Option<TaskView>, sqlx::Error> {
    let cond = filter.to_sql(2, now_ms);
    let sql = format!(
        "SELECT {TASK_COLUMNS} FROM tasks WHERE id = $1 AND {}",
        cond.text
    );
    let row = cond
        .bind_all(sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id))
        .fetch_optional(db.pool())
        .await?;
    row.as_ref().map(task_view).transpose()
}

/// The kinds present in `tasks`, by name (for the filter's choices).
pub async fn kinds(db: &(impl QueueDb + ?Sized)) -> Result<Vec<String>, sqlx::Error> {
    let rows = sqlx::query("SELECT DISTINCT kind FROM tasks ORDER BY kind")
        .fetch_all(db.pool())
        .await?;
    rows.iter().map(|r| r.try_get(0)).collect()
}
