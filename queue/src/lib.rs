//! Durable priority task queues in an application's own SQL database (SQLite or
//! PostgreSQL), and the worker that runs them.
//!
//! A task is a row of `tasks`: enqueued inside the caller's transaction, claimed under a
//! lease that a heartbeat renews, and finished as `done`, retried with backoff, or kept as
//! `dead` (or parked as `delivery_unknown` when a run may already have had its effect).
//! Delivery is at-least-once; handlers that must not repeat an effect check for it first.
//!
//! The engine knows nothing of what tasks do. An application implements [`Task`] per kind
//! (its name, its serde input, its [`TaskOptions`], its code), lists them in
//! [`Context::handlers`], and enqueues with [`enqueue`]`::<Kind>(tx, config, input)`.
//!
//! Files: `task` (the trait, handlers, options, [`NewTask`]), `store` (the SQL: leases,
//! heartbeats, backoff, dead letters, prune, operator commands), `claim` (one statement per
//! batch across the queues), `worker` (claim/run/record loop), `completions` (its batched
//! done writes), `held` (the connections those two keep), `routing` (weighted
//! round-robin), `backoff`, `metrics`,
//! `config` (`[queue]`); for operators' consoles: `filter` (which tasks a list or bulk
//! action covers), `control` (pause/resume, retry, run now, cancel, purge), `inspect`
//! (counts, done per minute, task lists, one task) and `workers` (heartbeat records).
//!
//! Schema: `schema/<backend>.sql` ([`schema`]) is the `tasks` table the store expects, with
//! `queue_pauses` and `queue_workers`. The
//! engine runs no migrator of its own: the table lives in the application's database and
//! migration history (sqlx records and checksums versions in `_sqlx_migrations`), so the
//! application applies it in one of its migrations. The origin's history created it before
//! the engine was a crate (its 0002 and 0004, which also change the origin's own tables and
//! cannot be split once applied, then 0008's leaner indexes); a test there checks that the
//! two stay alike.
//!
//! Hooks: a kind's [`Task::on_parked`] runs in the transaction that parks its task as
//! `delivery_unknown`, so the application's own rows show the park exactly when it commits.

pub mod backoff;
pub mod claim;
mod completions;
pub mod config;
pub mod control;
pub mod filter;
mod held;
pub mod inspect;
pub mod metrics;
pub mod routing;
pub mod store;
pub mod task;
pub mod worker;
pub mod workers;

pub use config::{QueueConfig, QueueFile};
pub use store::{ClaimedTask, TaskState};
pub use task::{Handler, Handlers, NewTask, Task, TaskError, TaskOptions};
pub use worker::{Outcome, Worker};

use sqlx::AnyPool;

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Which database engine the queue's statements run on (claims differ per backend).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The backend a database URL names, or `None` for an unsupported scheme.
    pub fn from_url(url: &str) -> Option<Backend> {
        if url.starts_with("sqlite:") {
            Some(Backend::Sqlite)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Some(Backend::Postgres)
        } else {
            None
        }
    }
}

/// The application's database handle, as the queue needs it: a pool and its backend.
pub trait QueueDb: Send + Sync {
    fn pool(&self) -> &AnyPool;
    fn backend(&self) -> Backend;
}

/// What a worker runs with: the application's task context, which gives the queue its
/// database and `[queue]` settings and names the kinds a worker runs by default.
pub trait Context: Send + Sync + 'static {
    type Db: QueueDb;
    fn db(&self) -> &Self::Db;
    fn queue_config(&self) -> &QueueConfig;
    /// The kinds [`Worker::new`] starts with.
    fn handlers() -> Handlers<Self>
    where
        Self: Sized,
    {
        Handlers::new()
    }
}

/// Enqueues `task` on the caller's connection — pass `&mut *tx` so the task exists exactly
/// when the caller's transaction commits. Returns the task id.
pub async fn enqueue_task(
    conn: &mut sqlx::AnyConnection,
    config: &QueueConfig,
    task: NewTask,
) -> Result<i64, sqlx::Error> {
    store::enqueue_at(conn, config, task, now_ms()).await
}

/// Enqueues a task of typed kind `T` with `input` on the caller's connection (pass
/// `&mut *tx`: the task commits with the caller's transaction). Returns the task id.
pub async fn enqueue<T: Task>(
    conn: &mut sqlx::AnyConnection,
    config: &QueueConfig,
    input: &T::Input,
) -> Result<i64, sqlx::Error> {
    let task = NewTask::of::<T>(input).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    enqueue_task(conn, config, task).await
}

/// The SQL that creates the engine's `tasks` table and its indexes on `backend`, for an
/// application to run in one of its own migrations (see the crate docs).
pub fn schema(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => include_str!("../schema/sqlite.sql"),
        Backend::Postgres => include_str!("../schema/postgres.sql"),
    }
}
