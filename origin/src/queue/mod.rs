//! Durable priority task queues in the origin's own database, and the worker that runs them.
//!
//! SKELETON — owned by the queue work (issue 4). The signatures below are the contract the
//! API and the CLI code against; their bodies are to be written.

pub mod cli;
pub mod config;

use serde_json::Value;

/// A task to enqueue. The queue (high/default/low) comes from the routing in `[queue]`.
#[derive(Debug, Clone)]
pub struct NewTask {
    /// Task kind, e.g. `send_message`, `process_ai_reply`, `download_and_save_media`.
    pub kind: String,
    /// Kind-specific arguments.
    pub payload: Value,
    /// A second enqueue with the same key is a no-op (at most one live task per key).
    pub idempotency_key: Option<String>,
    /// Earliest start, Unix milliseconds; `None` = now.
    pub run_at_ms: Option<i64>,
}

impl NewTask {
    /// Deliver outbound message `message_id` through its conversation's platform.
    pub fn send_message(message_id: i64) -> NewTask {
        NewTask {
            kind: "send_message".into(),
            payload: serde_json::json!({ "message_id": message_id }),
            idempotency_key: Some(format!("send_message:{message_id}")),
            run_at_ms: None,
        }
    }
}

/// Enqueues `task` on the caller's connection — pass `&mut *tx` so the task exists exactly
/// when the caller's transaction commits. Returns the task id.
pub async fn enqueue(
    conn: &mut sqlx::AnyConnection,
    config: &config::QueueConfig,
    task: NewTask,
) -> Result<i64, sqlx::Error> {
    let _ = (conn, config, task);
    Err(sqlx::Error::Protocol(
        "task queue not implemented yet".into(),
    ))
}

/// Routes the queue adds to the origin's HTTP app (`/webhooks/{platform}`, `/admin/queues`).
pub fn routes() -> axum::Router<crate::app::AppState> {
    axum::Router::new()
}

/// Starts the worker inside the server process when `[queue] worker_in_server` says so.
pub fn start_in_server(state: &crate::app::AppState) -> Option<tokio::task::JoinHandle<()>> {
    let _ = state;
    None
}
