//! The queue's SQL is the engine's (`komora_queue::store`, re-exported here); this module
//! adds the operator commands that also touch the origin's rows: `retry` and `mark_sent`
//! of a `send_message` task change its message in the same transaction.

pub use komora_queue::store::*;

use komora_queue::store;
use serde_json::Value;

use crate::db::Db;
use crate::messaging::send::SendMessage;
use crate::store::messages::DeliveryStatus;

/// Why `retry` did not requeue a task.
#[derive(Debug, thiserror::Error)]
pub enum RetryError {
    #[error("task {0} not found")]
    NotFound(i64),
    #[error("task {0} is {1}, only dead and delivery_unknown tasks are retried")]
    NotDead(i64, TaskState),
    #[error("task {0} is {1}, only a delivery_unknown send_message task is marked sent")]
    NotUnknown(i64, TaskState),
    #[error("task {0}: a live task with the same idempotency key exists")]
    KeyTaken(i64),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// The message a `send_message` task delivers.
fn message_of(task: &TaskRow) -> Option<i64> {
    (task.kind == <SendMessage as komora_queue::Task>::KIND)
        .then(|| task.payload.get("message_id").and_then(Value::as_i64))
        .flatten()
}

/// Requeues a dead or `delivery_unknown` task with a fresh attempt budget; its error
/// history is kept. For a `delivery_unknown` send this is the operator's decision to send
/// again: the recorded attempt is cleared and the message is `pending` again (it showed
/// `delivery_unknown` while parked) in the same transaction, so the send goes out.
/// (A dead send keeps it: if its last run was cut off in flight, the next run stops at
/// `delivery_unknown` rather than sending blindly.)
pub async fn retry(db: &Db, id: i64, now_ms: i64) -> Result<(), RetryError> {
    let Some(task) = store::get(db, id).await? else {
        return Err(RetryError::NotFound(id));
    };
    if !matches!(task.state, TaskState::Dead | TaskState::DeliveryUnknown) {
        return Err(RetryError::NotDead(id, task.state));
    }
    let r = async {
        let mut tx = db.pool.begin().await?;
        let requeued = store::requeue(&mut tx, id, task.state, now_ms).await?;
        if let (true, TaskState::DeliveryUnknown, Some(message)) =
            (requeued, task.state, message_of(&task))
        {
            sqlx::query(
                "UPDATE messages SET send_attempted_at = NULL, \
                 delivery_status = CASE WHEN delivery_status = $1 THEN $2 \
                 ELSE delivery_status END WHERE id = $3",
            )
            .bind(DeliveryStatus::DeliveryUnknown.as_str())
            .bind(DeliveryStatus::Pending.as_str())
            .bind(message)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await
    }
    .await;
    match r {
        Ok(()) => Ok(()),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(RetryError::KeyTaken(id)),
        Err(e) => Err(e.into()),
    }
}

/// The operator checked the platform and the message did arrive: a `delivery_unknown`
/// send becomes done and its message `sent`, without sending again.
pub async fn mark_sent(db: &Db, id: i64, now_ms: i64) -> Result<(), RetryError> {
    let Some(task) = store::get(db, id).await? else {
        return Err(RetryError::NotFound(id));
    };
    let message = match (task.state, message_of(&task)) {
        (TaskState::DeliveryUnknown, Some(m)) => m,
        _ => return Err(RetryError::NotUnknown(id, task.state)),
    };
    let mut tx = db.pool.begin().await?;
    if !store::resolve_unknown(&mut tx, id, now_ms).await? {
        return Err(RetryError::NotUnknown(id, task.state));
    }
    sqlx::query(
        "UPDATE messages SET delivery_status = $1, send_attempted_at = NULL WHERE id = $2 \
         AND delivery_status NOT IN ('sent', 'delivered', 'read')",
    )
    .bind(DeliveryStatus::Sent.as_str())
    .bind(message)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}
