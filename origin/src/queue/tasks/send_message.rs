//! `send_message`: deliver an outbound message through its conversation's platform.
//!
//! At-least-once delivery must not become twice: the message row records
//! `delivery_status = 'sent'` and the platform's id when the platform takes it, and a
//! repeated task (a retry after a crash, a duplicate enqueue) skips a message already sent.

use sqlx::Row;

use super::{payload_i64, TaskContext, TaskError, TaskHandler};
use crate::queue::platform;
use crate::queue::store::ClaimedTask;

pub struct SendMessage;

async fn set_status(ctx: &TaskContext, id: i64, status: &str) -> Result<(), TaskError> {
    sqlx::query(
        "UPDATE messages SET delivery_status = $1 WHERE id = $2 \
         AND delivery_status NOT IN ('sent', 'delivered', 'read')",
    )
    .bind(status)
    .bind(id)
    .execute(&ctx.db.pool)
    .await?;
    Ok(())
}

#[async_trait::async_trait]
impl TaskHandler for SendMessage {
    async fn run(&self, ctx: &TaskContext, task: &ClaimedTask) -> Result<(), TaskError> {
        let id = payload_i64(task, "message_id")?;
        let row = sqlx::query(
            "SELECT m.direction, m.text, m.delivery_status, c.platform, c.external_chat_id \
             FROM messages m JOIN conversations c ON c.id = m.conversation_id WHERE m.id = $1",
        )
        .bind(id)
        .fetch_optional(&ctx.db.pool)
        .await?
        .ok_or_else(|| TaskError::Permanent(format!("message {id} does not exist")))?;
        let direction: String = row.try_get(0)?;
        let text: String = row.try_get(1)?;
        let status: String = row.try_get(2)?;
        let platform_name: String = row.try_get(3)?;
        let chat_id: String = row.try_get(4)?;
        if direction != "out" {
            return Err(TaskError::Permanent(format!(
                "message {id} is inbound, not sent"
            )));
        }
        if matches!(status.as_str(), "sent" | "delivered" | "read") {
            tracing::info!(message = id, status, "already delivered, not sending again");
            return Ok(());
        }
        let Some(p) = ctx.config.platforms.get(&platform_name) else {
            set_status(ctx, id, "failed").await?;
            return Err(TaskError::Permanent(format!(
                "platform {platform_name:?} is not configured in [platforms]"
            )));
        };
        match platform::send_text(&ctx.http, p, &chat_id, &text, id).await {
            Ok(external) => {
                sqlx::query(
                    "UPDATE messages SET delivery_status = 'sent', external_id = $1 \
                     WHERE id = $2",
                )
                .bind(external)
                .bind(id)
                .execute(&ctx.db.pool)
                .await?;
                Ok(())
            }
            Err(TaskError::Permanent(e)) => {
                set_status(ctx, id, "failed").await?;
                Err(TaskError::Permanent(e))
            }
            Err(TaskError::Retry(e)) => {
                if task.attempts >= task.max_attempts {
                    set_status(ctx, id, "failed").await?;
                }
                Err(TaskError::Retry(e))
            }
        }
    }
}
