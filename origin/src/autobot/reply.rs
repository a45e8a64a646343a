//! `process_ai_reply`: answer an inbound message with the RAG API when the office is closed.
//!
//! The decision (reply, or skip and why) is recorded in `ai_replies`, keyed by the inbound
//! message, in the same transaction as the answer and its `send_message` task — so a task
//! that runs again after a crash finds the record and neither asks the RAG API nor answers
//! twice. "Now" is the task's start time (`ClaimedTask::started_at`), which tests set.

use chrono::{TimeZone, Utc};
use serde_json::{json, Value};
use sqlx::Row;

use crate::autobot::hours::autobot_decision;
use crate::messaging::platform::{self, classify, transport};
use crate::messaging::send::SendMessage;
use crate::queue::tasks::{MessageInput, TaskContext, TaskError, TaskOptions};
use komora_queue::store::{enqueue_at, ClaimedTask};

/// Answer inbound message `message_id` with the autobot if the office is closed.
pub struct ProcessAiReply;

impl ProcessAiReply {
    /// The task that answers inbound message `message_id` (one live task per message).
    pub fn task(message_id: i64) -> crate::queue::NewTask {
        crate::queue::tasks::message_task::<ProcessAiReply>(message_id)
    }
}

async fn record_skip(
    ctx: &TaskContext,
    message_id: i64,
    reason: &str,
    now: i64,
) -> Result<(), TaskError> {
    tracing::info!(message = message_id, reason, "autobot: not answering");
    sqlx::query(
        "INSERT INTO ai_replies (inbound_message_id, outbound_message_id, decision, reason, \
         created_at) VALUES ($1, NULL, 'skip', $2, $3) \
         ON CONFLICT (inbound_message_id) DO NOTHING",
    )
    .bind(message_id)
    .bind(reason)
    .bind(now)
    .execute(&ctx.db.pool)
    .await?;
    Ok(())
}

#[async_trait::async_trait]
impl komora_queue::Task for ProcessAiReply {
    const KIND: &'static str = "process_ai_reply";
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
        let now = task.started_at;
        let done = sqlx::query("SELECT decision FROM ai_replies WHERE inbound_message_id = $1")
            .bind(id)
            .fetch_optional(&ctx.db.pool)
            .await?;
        if done.is_some() {
            return Ok(());
        }
        let row = input
            .load(
                ctx,
                "SELECT m.direction, m.conversation_id, c.platform, c.office_id, o.timezone, \
                 o.autobot_enabled, o.working_hours, o.days_off \
                 FROM messages m JOIN conversations c ON c.id = m.conversation_id \
                 LEFT JOIN offices o ON o.id = c.office_id WHERE m.id = $1",
            )
            .await?;
        let direction: String = row.try_get(0)?;
        let conversation_id: i64 = row.try_get(1)?;
        let platform: String = row.try_get(2)?;
        let office_id: Option<i64> = row.try_get(3)?;
        let ai = &ctx.config.ai;
        if direction != "in" {
            return record_skip(ctx, id, "not an inbound message", now).await;
        }
        if !ai.enabled {
            return record_skip(ctx, id, "AI is disabled ([ai] enabled = false)", now).await;
        }
        if !ai.channels.contains(&platform) {
            let reason = format!("channel {platform:?} is not in [ai] channels");
            return record_skip(ctx, id, &reason, now).await;
        }
        if office_id.is_none() {
            return record_skip(ctx, id, "conversation has no office", now).await;
        }
        let timezone: String = row.try_get(4)?;
        let enabled: i64 = row.try_get(5)?;
        let working_hours: String = row.try_get(6)?;
        let days_off: String = row.try_get(7)?;
        let at = Utc
            .timestamp_millis_opt(now)
            .single()
            .unwrap_or_else(Utc::now);
        let decision = autobot_decision(enabled != 0, &timezone, &working_hours, &days_off, at);
        if !decision.reply {
            return record_skip(ctx, id, &decision.reason, now).await;
        }

        // The recent conversation, oldest first, up to and including this message.
        let rows = sqlx::query(
            "SELECT direction, text, created_at FROM messages \
             WHERE conversation_id = $1 AND id <= $2 ORDER BY created_at DESC, id DESC LIMIT $3",
        )
        .bind(conversation_id)
        .bind(id)
        .bind(i64::from(ai.history))
        .fetch_all(&ctx.db.pool)
        .await?;
        let mut history = Vec::with_capacity(rows.len());
        for r in rows.iter().rev() {
            let dir: String = r.try_get(0)?;
            let text: String = r.try_get(1)?;
            let at: i64 = r.try_get(2)?;
            history.push(json!({
                "role": if dir == "in" { "user" } else { "assistant" },
                "text": text,
                "at_ms": at,
            }));
        }
        let mut req = platform::client(&ctx.http, &ai.allowed_hosts)?
            .post(&ai.url)
            .map_err(|r| platform::refused(&r, "RAG API"))?
            .timeout(ai.timeout)
            .header("Idempotency-Key", format!("komora-ai-reply-{id}"))
            .json(&json!({
                "conversation_id": conversation_id,
                "message_id": id,
                "platform": platform,
                "office_id": office_id,
                "messages": history,
            }));
        if let Some(key) = &ai.api_key {
            req = req.bearer_auth(key);
        }
        let resp = req.send().await.map_err(|e| transport(&e, "RAG API"))?;
        let status = resp.status();
        let body = resp.text().await.map_err(|e| transport(&e, "RAG API"))?;
        if !status.is_success() {
            return Err(classify(status, &body, "RAG API"));
        }
        let v: Value = serde_json::from_str(&body)
            .map_err(|e| TaskError::Retry(format!("RAG API answered non-JSON: {e}")))?;
        let answer = v
            .get("answer")
            .and_then(Value::as_str)
            .map(str::trim)
            .unwrap_or_default();
        if answer.is_empty() {
            return record_skip(ctx, id, "RAG API gave no answer", now).await;
        }

        let mut tx = ctx.db.pool.begin().await?;
        let claimed = sqlx::query(
            "INSERT INTO ai_replies (inbound_message_id, outbound_message_id, decision, reason, \
             created_at) VALUES ($1, NULL, 'reply', $2, $3) \
             ON CONFLICT (inbound_message_id) DO NOTHING RETURNING inbound_message_id",
        )
        .bind(id)
        .bind(decision.reason.as_str())
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        if claimed.is_none() {
            // Another run answered meanwhile.
            tx.rollback().await?;
            return Ok(());
        }
        // Through the store, like every message: the conversation's last message and
        // activity follow the newest message, so a reply to an older message does not
        // become the preview over a newer one.
        let mut reply = crate::store::messages::NewMessage::outbound(conversation_id, answer);
        reply.created_at = now;
        let out_id = crate::store::messages::insert_message(&mut tx, &reply).await?;
        sqlx::query("UPDATE ai_replies SET outbound_message_id = $1 WHERE inbound_message_id = $2")
            .bind(out_id)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        enqueue_at(&mut tx, &ctx.config.queue, SendMessage::task(out_id), now).await?;
        tx.commit().await?;
        Ok(())
    }
}
