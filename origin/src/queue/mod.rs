//! Durable priority task queues in the origin's own database, and the worker that runs them.
//!
//! A task is a row of `tasks` (see `migrations/*/0002_task_queue.sql`): enqueued inside the
//! caller's transaction, claimed under a lease that a heartbeat renews, and finished as
//! `done`, retried with backoff, or kept as `dead`. Delivery is at-least-once; handlers that
//! must not repeat an effect (sending a message) check for it first.
//!
//! Files: `store` (the SQL), `worker` (claim/run/record loop), `routing` (weighted
//! round-robin), `backoff`, `tasks/*` (the kinds), `platform` (messaging platform HTTP
//! adapters), `fetch` (SSRF-safe outbound HTTP), `hours` (autobot working hours), `webhook`
//! (inbound messages), `admin` (`GET /admin/queues`), `metrics`, `cli` (`worker`,
//! `queue …`, `doctor`), `config`.

pub mod admin;
pub mod backoff;
pub mod cli;
pub mod config;
pub mod fetch;
pub mod hours;
pub mod metrics;
pub mod platform;
pub mod routing;
pub mod store;
pub mod tasks;
pub mod webhook;
pub mod worker;

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
    store::enqueue_at(conn, config, task, store::now_ms()).await
}

impl NewTask {
    /// A task of `kind` with `payload`, due now, without an idempotency key.
    pub fn new(kind: &str, payload: Value) -> NewTask {
        NewTask {
            kind: kind.into(),
            payload,
            idempotency_key: None,
            run_at_ms: None,
        }
    }

    /// Answer inbound message `message_id` with the autobot if the office is closed.
    pub fn process_ai_reply(message_id: i64) -> NewTask {
        NewTask {
            kind: "process_ai_reply".into(),
            payload: serde_json::json!({ "message_id": message_id }),
            idempotency_key: Some(format!("process_ai_reply:{message_id}")),
            run_at_ms: None,
        }
    }

    /// Fetch `url` (given by the platform) and store it as media `media_id`.
    pub fn download_media(media_id: i64, url: &str) -> NewTask {
        NewTask {
            kind: "download_and_save_media".into(),
            payload: serde_json::json!({ "media_id": media_id, "url": url }),
            idempotency_key: Some(format!("download_and_save_media:{media_id}")),
            run_at_ms: None,
        }
    }
}

/// Routes the queue adds to the origin's public listener (`/webhooks/{platform}`).
pub fn public_routes() -> axum::Router<crate::app::AppState> {
    metrics::init();
    axum::Router::new().route(
        "/webhooks/{platform}",
        axum::routing::post(webhook::receive),
    )
}

/// Routes the queue adds to the origin's internal listener (`/admin/queues`); the app puts
/// them behind an admin key.
pub fn internal_routes() -> axum::Router<crate::app::AppState> {
    metrics::init();
    axum::Router::new().route("/admin/queues", axum::routing::get(admin::queues))
}

/// Starts the worker inside the server process when `[queue] worker_in_server` says so.
/// The worker runs until the runtime shuts down (or the handle is aborted); leases make an
/// abrupt end safe, since unfinished tasks return to the queue when their lease expires.
pub fn start_in_server(state: &crate::app::AppState) -> Option<tokio::task::JoinHandle<()>> {
    if !state.config.queue.worker_in_server {
        return None;
    }
    let mut ctx = tasks::TaskContext::new(state.db.clone(), state.config.clone());
    ctx.media = Some(state.media.clone());
    let worker = std::sync::Arc::new(worker::Worker::new(ctx));
    Some(tokio::spawn(async move {
        // The sender lives in this task: the worker stops only with it.
        let (_stop, rx) = tokio::sync::watch::channel(false);
        worker.run(rx).await;
    }))
}
