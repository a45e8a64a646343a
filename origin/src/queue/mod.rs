//! The origin's side of its durable task queues: the task kinds and what they need.
//!
//! The engine (claims, leases, heartbeats, backoff, dead tasks, prune, the worker loop,
//! weights, metrics, `[queue]` config and the `tasks` table's migrations) is the
//! `komora-queue` crate; `store`, `worker` and `config` re-export it. Delivery is
//! at-least-once; handlers that must not repeat an effect (sending a message) check for it
//! first.
//!
//! Files: `tasks` (the context and registry of the kinds, which live in their domains:
//! `messaging::send`, `autobot::reply`, `media::download`), `store` (operator commands
//! that also touch messages), `worker` (the engine's worker on `TaskContext`), `admin`
//! (`GET /admin/queues`), `cli` (`worker`, `queue …`), `config` (`[queue]` re-exported,
//! `[ai]`, `[platforms]`).

pub mod admin;
pub mod cli;
pub mod config;
pub mod store;
pub mod tasks;
pub mod worker;

pub use komora_queue::{backoff, metrics, routing};
pub use komora_queue::{NewTask, Task};

/// Enqueues `task` on the caller's connection — pass `&mut *tx` so the task exists exactly
/// when the caller's transaction commits. Returns the task id. Typed kinds are enqueued
/// with `komora_queue::enqueue::<Kind>(tx, config, &input)`.
pub async fn enqueue(
    conn: &mut sqlx::AnyConnection,
    config: &config::QueueConfig,
    task: NewTask,
) -> Result<i64, sqlx::Error> {
    komora_queue::enqueue_task(conn, config, task).await
}

/// Routes the queue adds to the origin's public listener (`/webhooks/{platform}`).
pub fn public_routes() -> axum::Router<crate::app::AppState> {
    metrics::init();
    axum::Router::new().route(
        "/webhooks/{platform}",
        axum::routing::post(crate::messaging::webhook::receive),
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
