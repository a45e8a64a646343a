//! `send_message`: deliver an outbound message through its conversation's platform.
//!
//! At-least-once delivery must not become twice. The message row records
//! `delivery_status = 'sent'` and the platform's id when the platform takes it, and a
//! repeated task (a retry, a duplicate enqueue) skips a message already sent. That leaves
//! the window between the request and that record: a worker killed there, a timeout, a lost
//! answer. So the attempt is written to the message (`send_attempted_at`) before the
//! request and cleared once the outcome is known (sent, or certainly not sent). A run that
//! finds it set knows an earlier attempt may have reached the platform: unless the platform
//! drops repeats by `Idempotency-Key` (`honours_idempotency_key`), it does not send, and the
//! task waits as `delivery_unknown` until an operator checks the chat and runs
//! `queue retry ID` (send again) or `queue mark-sent ID`. Its message shows
//! `delivery_unknown` meanwhile: the kind's `on_parked` hook marks it in the transaction that
//! parks the task (the engine knows nothing of messages), `queue retry` puts it back to
//! `pending`, `queue mark-sent` to `sent` (see [`crate::queue::store`]).

use std::time::Duration;

use sqlx::{AnyConnection, Row};

use crate::messaging::platform::{self, SendFailure};
use crate::queue::tasks::{MessageInput, TaskContext, TaskError, TaskOptions};
use crate::queue::NewTask;
use crate::store::messages::{delivery_status_at, mark_delivery_unknown, DeliveryStatus};
use komora_queue::store::ClaimedTask;

/// Deliver outbound message `message_id` through its conversation's platform.
pub struct SendMessage;

impl SendMessage {
    /// The task that delivers outbound message `message_id` (one live task per message).
    pub fn task(message_id: i64) -> NewTask {
        crate::queue::tasks::message_task::<SendMessage>(message_id)
    }
}

/// Writes of "sent" tried before giving up (the platform already has the message: a lost
/// write would leave the attempt marker and park the next run as `delivery_unknown`).
const SENT_WRITE_TRIES: u32 = 4;

async fn set_status(ctx: &TaskContext, id: i64, status: DeliveryStatus) -> Result<(), TaskError> {
    sqlx::query(
        "UPDATE messages SET delivery_status = $1 WHERE id = $2 \
         AND delivery_status NOT IN ('sent', 'delivered', 'read')",
    )
    .bind(status.as_str())
    .bind(id)
    .execute(&ctx.db.pool)
    .await?;
    Ok(())
}

/// The outcome is known (the platform refused, or nothing reached it): forget the attempt.
async fn clear_attempt(ctx: &TaskContext, id: i64) -> Result<(), TaskError> {
    sqlx::query("UPDATE messages SET send_attempted_at = NULL WHERE id = $1")
        .bind(id)
        .execute(&ctx.db.pool)
        .await?;
    Ok(())
}

async fn record_sent(
    ctx: &TaskContext,
    id: i64,
    external: Option<String>,
) -> Result<(), TaskError> {
    let mut try_no = 1;
    loop {
        let r = sqlx::query(
            "UPDATE messages SET delivery_status = 'sent', external_id = $1, \
             send_attempted_at = NULL WHERE id = $2",
        )
        .bind(external.clone())
        .bind(id)
        .execute(&ctx.db.pool)
        .await;
        match r {
            Ok(_) => return Ok(()),
            Err(e) if try_no < SENT_WRITE_TRIES => {
                tracing::warn!(message = id, error = %e, "could not record a sent message; retrying");
                tokio::time::sleep(Duration::from_millis(100 << try_no)).await;
                try_no += 1;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

#[async_trait::async_trait]
impl komora_queue::Task for SendMessage {
    const KIND: &'static str = "send_message";
    type Input = MessageInput;
    type Context = TaskContext;

    fn options() -> TaskOptions {
        MessageInput::options()
    }

    fn idempotency_key(input: &MessageInput) -> Option<String> {
        input.key(Self::KIND)
    }

    async fn run(
        &self,
        ctx: &TaskContext,
        input: MessageInput,
        task: &ClaimedTask,
    ) -> Result<(), TaskError> {
        let id = input.message_id;
        let row = input
            .load(
                ctx,
                "SELECT m.direction, m.text, m.delivery_status, c.platform, c.external_chat_id, \
                 m.send_attempted_at \
                 FROM messages m JOIN conversations c ON c.id = m.conversation_id WHERE m.id = $1",
            )
            .await?;
        let direction: String = row.try_get(0)?;
        let text: String = row.try_get(1)?;
        let status = delivery_status_at(&row, 2)?;
        let platform_name: String = row.try_get(3)?;
        let chat_id: String = row.try_get(4)?;
        let attempted: Option<i64> = row.try_get(5)?;
        if direction != "out" {
            return Err(TaskError::Permanent(format!(
                "message {id} is inbound, not sent"
            )));
        }
        if status.is_delivered() {
            tracing::info!(message = id, %status, "already delivered, not sending again");
            return Ok(());
        }
        let Some(p) = ctx.config.platforms.get(&platform_name) else {
            set_status(ctx, id, DeliveryStatus::Failed).await?;
            return Err(TaskError::Permanent(format!(
                "platform {platform_name:?} is not configured in [platforms]"
            )));
        };
        if let Some(at) = attempted {
            if !p.honours_idempotency_key {
                return Err(TaskError::DeliveryUnknown(format!(
                    "an earlier attempt (at {at} ms) may have reached platform {platform_name}, \
                     which offers no way to check or drop a repeat: not sent again; check the \
                     chat, then `queue retry {}` to send or `queue mark-sent {}`",
                    task.id, task.id
                )));
            }
            tracing::info!(message = id, "resending with the same Idempotency-Key");
        }
        // Durable before the request: a crash from here on leaves the mark behind.
        sqlx::query("UPDATE messages SET send_attempted_at = $1 WHERE id = $2")
            .bind(task.started_at)
            .bind(id)
            .execute(&ctx.db.pool)
            .await?;
        match platform::send_text(&ctx.http, p, &chat_id, &text, id).await {
            Ok(external) => record_sent(ctx, id, external).await,
            Err(SendFailure::NotSent(e)) => {
                clear_attempt(ctx, id).await?;
                let last = task.attempts >= task.max_attempts;
                if matches!(e, TaskError::Permanent(_)) || last {
                    set_status(ctx, id, DeliveryStatus::Failed).await?;
                }
                Err(e)
            }
            // The mark stays: the next run decides (delivery_unknown, or a resend where the
            // platform drops repeats).
            Err(SendFailure::MaybeSent(e)) => Err(e),
        }
    }

    /// The message shows that its send waits for an operator, committed with the park.
    async fn on_parked(
        &self,
        _ctx: &TaskContext,
        input: MessageInput,
        _task: &ClaimedTask,
        conn: &mut AnyConnection,
    ) -> Result<(), sqlx::Error> {
        mark_delivery_unknown(conn, input.message_id).await?;
        Ok(())
    }
}
