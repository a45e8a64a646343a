//! The claim: one statement that leases a worker's next batch across the three queues, with
//! each queue's weighted round-robin share first and the slots left over filled in priority
//! order (see `routing`), and [`release`] for a claimed task the worker gives back.
//!
//! One statement per batch, not one per queue: on PostgreSQL every statement that changes
//! rows ends in a commit, and each commit waits for its WAL flush (`fdatasync`, about a
//! millisecond here). Per-queue claims with a fill-up pass paid two or more of those per
//! batch (the empty queues' statements write nothing and cost only their round trips), and
//! that was most of the time a batch of no-op tasks took.
//!
//! PostgreSQL locks each queue's candidates with `FOR UPDATE SKIP LOCKED` so concurrent
//! workers never wait on each other; SQLite has one writer at a time, so the same
//! `UPDATE … RETURNING` is atomic as it is (WAL + busy timeout make the others wait).

use serde_json::Value;
use sqlx::{AnyConnection, Row};

use crate::config::QUEUES;
use crate::{Backend, QueueDb};

/// A task a worker holds the lease of.
#[derive(Debug, Clone)]
pub struct ClaimedTask {
    pub id: i64,
    pub queue: String,
    pub kind: String,
    pub payload: Value,
    /// Runs so far, this one included.
    pub attempts: i64,
    pub max_attempts: i64,
    /// The JSON array of earlier errors.
    pub errors: String,
    pub created_at: i64,
    /// When the task became due (enqueue or retry time): start of its wait.
    pub run_at: i64,
    /// When this run started (the claim's `now_ms`).
    pub started_at: i64,
}

fn claimed_from_row(row: &sqlx::any::AnyRow, now_ms: i64) -> Result<ClaimedTask, sqlx::Error> {
    let payload: String = row.try_get("payload")?;
    Ok(ClaimedTask {
        id: row.try_get("id")?,
        queue: row.try_get("queue")?,
        kind: row.try_get("kind")?,
        // A payload that is not JSON reaches the handler as null and fails there, visibly.
        payload: serde_json::from_str(&payload).unwrap_or(Value::Null),
        attempts: row.try_get("attempts")?,
        max_attempts: row.try_get("max_attempts")?,
        errors: row.try_get("errors")?,
        created_at: row.try_get("created_at")?,
        run_at: row.try_get("run_at")?,
        started_at: now_ms,
    })
}

/// The candidates of queue number `q` (`QUEUES[q]`, bound at `$4 + q`): due, not of an
/// excluded kind, and none while the queue is paused (`crate::control::pause`: one
/// primary-key probe of a tiny table). At most the whole batch (`$7`): a queue may fill the
/// slots the others leave.
fn candidates(backend: Backend, q: usize, filter: &str) -> String {
    let lock = match backend {
        Backend::Postgres => " FOR UPDATE SKIP LOCKED",
        Backend::Sqlite => "",
    };
    let name = 4 + q;
    format!(
        "SELECT * FROM (SELECT id, {q} AS q, priority, run_at FROM tasks \
         WHERE state = 'queued' AND queue = ${name} AND run_at <= $3{filter} \
         AND NOT EXISTS (SELECT 1 FROM queue_pauses WHERE queue = ${name}) \
         ORDER BY priority DESC, run_at, id LIMIT $7{lock}) c{q}"
    )
}

/// The claim statement. Placeholders: `$1` lease end, `$2` worker, `$3` now, `$4..$6` the
/// queue names, `$7` the batch size, `$8..$10` the queues' shares, `$11..` excluded kinds.
///
/// Each queue's candidates are ranked; a candidate within its queue's share sorts first,
/// the rest after, by queue priority then rank, and the first `$7` are taken. That is the
/// share of each queue, then the slots left over to the first queue with more due, then the
/// next, exactly what claiming per queue and then filling up did.
fn claim_sql(backend: Backend, excluded: usize) -> String {
    let filter = if excluded == 0 {
        String::new()
    } else {
        let marks: Vec<String> = (0..excluded).map(|i| format!("${}", i + 11)).collect();
        format!(" AND kind NOT IN ({})", marks.join(", "))
    };
    let union = (0..QUEUES.len())
        .map(|q| candidates(backend, q, &filter))
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    let pick = format!(
        "SELECT id FROM (SELECT id, q, \
         row_number() OVER (PARTITION BY q ORDER BY priority DESC, run_at, id) AS rn \
         FROM ({union}) c) r \
         ORDER BY rn > (CASE q WHEN 0 THEN $8 WHEN 1 THEN $9 ELSE $10 END), q, rn LIMIT $7"
    );
    let set = "UPDATE tasks SET state = 'running', attempts = attempts + 1, lease_until = $1, \
               worker_id = $2, started_at = $3";
    let returning = "RETURNING id, queue, kind, payload, attempts, max_attempts, errors, \
                     created_at, run_at";
    match backend {
        // The candidates are locked once, by the uncorrelated sub-select (an init plan, run
        // once: with SKIP LOCKED a rescan would pick further rows past the LIMIT). Matching
        // them by `id = ANY(array)` walks the primary key; a join with the candidates let
        // the planner hash-join a scan of the whole table into every claim.
        Backend::Postgres => format!("{set} WHERE id = ANY(ARRAY({pick})) {returning}"),
        Backend::Sqlite => format!("{set} WHERE id IN ({pick}) {returning}"),
    }
}

/// Claims up to `shares.iter().sum()` due tasks for `worker_id` on `conn`, leasing them
/// until `now_ms + lease_ms`: `shares[i]` from `QUEUES[i]` first, the slots a queue cannot
/// fill going to the others in priority order. Skips kinds in `exclude_kinds` (at their
/// concurrency limit) and paused queues. Sorted by queue priority, then due time.
pub async fn claim(
    conn: &mut AnyConnection,
    backend: Backend,
    worker_id: &str,
    shares: [u64; 3],
    exclude_kinds: &[String],
    now_ms: i64,
    lease_ms: i64,
) -> Result<Vec<ClaimedTask>, sqlx::Error> {
    let share = |q: usize| i64::try_from(shares[q]).unwrap_or(i64::MAX);
    let limit = shares.iter().fold(0i64, |a, s| {
        a.saturating_add(i64::try_from(*s).unwrap_or(i64::MAX))
    });
    if limit <= 0 {
        return Ok(Vec::new());
    }
    // Only placeholders and fixed fragments are formatted in; every value is bound.
    let sql = claim_sql(backend, exclude_kinds.len());
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(now_ms.saturating_add(lease_ms))
        .bind(worker_id)
        .bind(now_ms);
    for name in QUEUES {
        query = query.bind(name);
    }
    query = query
        .bind(limit)
        .bind(share(0))
        .bind(share(1))
        .bind(share(2));
    for k in exclude_kinds {
        query = query.bind(k.as_str());
    }
    let rows = query.fetch_all(&mut *conn).await?;
    let mut tasks = rows
        .iter()
        .map(|r| claimed_from_row(r, now_ms))
        .collect::<Result<Vec<_>, _>>()?;
    let rank = |t: &ClaimedTask| QUEUES.iter().position(|name| *name == t.queue);
    tasks.sort_by_key(|t| (rank(t), t.run_at, t.id));
    Ok(tasks)
}

/// Gives claimed-but-not-started tasks back (the attempt does not count).
pub async fn release(
    db: &(impl QueueDb + ?Sized),
    worker_id: &str,
    id: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE tasks SET state = 'queued', attempts = attempts - 1, lease_until = NULL, \
         worker_id = NULL WHERE id = $1 AND worker_id = $2 AND state = 'running'",
    )
    .bind(id)
    .bind(worker_id)
    .execute(db.pool())
    .await?;
    Ok(())
}
