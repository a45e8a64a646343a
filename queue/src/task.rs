//! What a task is to the engine: the typed [`Task`] trait an application implements per
//! kind, the untyped [`Handler`] the worker calls, the registry of handlers keyed by kind,
//! per-kind [`TaskOptions`], and [`NewTask`], a task ready to enqueue.
//!
//! A kind's name is written once, as [`Task::KIND`]; its input is a serde type, so what
//! enqueue writes is what the handler reads (a payload that does not decode as the input
//! fails the task for good, naming the kind).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use sqlx::AnyConnection;

use crate::store::ClaimedTask;

/// Default queue of a kind without options.
pub const DEFAULT_QUEUE: &str = "default";
/// Default per-worker concurrency of a kind.
pub const DEFAULT_CONCURRENCY: u32 = 8;
/// Default run timeout of a kind, milliseconds.
pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;
/// Default runs before a task is dead.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
/// Default first retry delay, milliseconds.
pub const DEFAULT_BACKOFF_BASE_MS: u64 = 1_000;
/// Default cap of the retry delay, milliseconds.
pub const DEFAULT_BACKOFF_MAX_MS: u64 = 600_000;

/// How tasks of one kind are queued and run. A kind's defaults come from
/// [`Task::options`]; `[queue.kinds.<kind>]` overrides them key by key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskOptions {
    /// One of [`crate::config::QUEUES`].
    pub queue: &'static str,
    /// Most tasks of this kind one worker runs at once.
    pub concurrency: u32,
    /// A run longer than this is cut and retried.
    pub timeout: Duration,
    /// Runs before the task is dead.
    pub max_attempts: u32,
    /// First retry delay (doubled each attempt, with jitter), milliseconds.
    pub backoff_base_ms: u64,
    /// Cap of the retry delay, milliseconds.
    pub backoff_max_ms: u64,
}

impl Default for TaskOptions {
    fn default() -> Self {
        TaskOptions {
            queue: DEFAULT_QUEUE,
            concurrency: DEFAULT_CONCURRENCY,
            timeout: Duration::from_millis(DEFAULT_TIMEOUT_MS),
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            backoff_base_ms: DEFAULT_BACKOFF_BASE_MS,
            backoff_max_ms: DEFAULT_BACKOFF_MAX_MS,
        }
    }
}

impl TaskOptions {
    /// The defaults, on `queue` (one of [`crate::config::QUEUES`]).
    pub fn on(queue: &'static str) -> TaskOptions {
        TaskOptions {
            queue,
            ..TaskOptions::default()
        }
    }
}

/// Why a run failed, and whether trying again can help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TaskError {
    /// Transient (5xx, timeout, database busy): retried with backoff until max attempts.
    #[error("{0}")]
    Retry(String),
    /// Trying again cannot help (4xx, bad payload): the task is dead at once.
    #[error("{0}")]
    Permanent(String),
    /// An earlier run may have had its effect (a send reached the platform) and repeating it
    /// could do it twice: the task waits as `delivery_unknown` for an operator.
    #[error("{0}")]
    DeliveryUnknown(String),
}

impl From<sqlx::Error> for TaskError {
    fn from(e: sqlx::Error) -> Self {
        TaskError::Retry(format!("database: {e}"))
    }
}

/// Code that runs one kind of task on context `C`, given the raw claimed row. Must be safe
/// to run again (delivery is at-least-once). Typed kinds implement [`Task`] instead.
#[async_trait::async_trait]
pub trait Handler<C>: Send + Sync {
    async fn run(&self, ctx: &C, task: &ClaimedTask) -> Result<(), TaskError>;

    /// Called when a run returned [`TaskError::DeliveryUnknown`] and the task is being parked
    /// as `delivery_unknown`, on the connection of the transaction that parks it: after the
    /// task's row is changed, before the commit. So whatever it writes commits exactly with
    /// the park. Contract as for [`Task::on_parked`]. Default: nothing.
    async fn on_parked(
        &self,
        _ctx: &C,
        _task: &ClaimedTask,
        _conn: &mut AnyConnection,
    ) -> Result<(), sqlx::Error> {
        Ok(())
    }
}

/// One kind of task: its name, its input, its options and its code.
#[async_trait::async_trait]
pub trait Task: Send + Sync + 'static {
    /// The kind's name, as stored in `tasks.kind`.
    const KIND: &'static str;
    /// What enqueue stores as the payload and the run gets back.
    type Input: Serialize + DeserializeOwned + Send + Sync;
    /// What the run may use (database, clients, config).
    type Context: Send + Sync + 'static;

    /// Default queue, limits and retry policy of the kind.
    fn options() -> TaskOptions {
        TaskOptions::default()
    }

    /// A second enqueue with the same key is a no-op while the first task is live.
    fn idempotency_key(_input: &Self::Input) -> Option<String> {
        None
    }

    async fn run(
        &self,
        ctx: &Self::Context,
        input: Self::Input,
        task: &ClaimedTask,
    ) -> Result<(), TaskError>;

    /// The task is being parked as `delivery_unknown` (its run returned
    /// [`TaskError::DeliveryUnknown`]): mark the kind's own rows to match, on `conn`, the
    /// connection of the transaction that parks it (after the task's row is changed, before
    /// the commit), so the marks commit exactly with the park.
    ///
    /// Runs once per park, never when the worker had lost the lease (nothing is parked then).
    /// An error rolls back the park and its marks together: the worker writes the outcome
    /// again with backoff, up to [`crate::worker::OUTCOME_TRIES`] times in all, then lets the
    /// task go (its lease expires, the sweep queues it again and the next run decides
    /// anew). Must only write through `conn` (another connection would not commit with the
    /// park, and on SQLite would wait for its lock), and be quick: the task's row is locked
    /// meanwhile. Default: nothing.
    async fn on_parked(
        &self,
        _ctx: &Self::Context,
        _input: Self::Input,
        _task: &ClaimedTask,
        _conn: &mut AnyConnection,
    ) -> Result<(), sqlx::Error> {
        Ok(())
    }
}

/// A [`Task`] as a [`Handler`]: decodes the payload into the input first.
struct Typed<T>(T);

#[async_trait::async_trait]
impl<T: Task> Handler<T::Context> for Typed<T> {
    async fn run(&self, ctx: &T::Context, task: &ClaimedTask) -> Result<(), TaskError> {
        let input: T::Input = serde_json::from_value(task.payload.clone()).map_err(|e| {
            TaskError::Permanent(format!("payload is not a {} input: {e}", T::KIND))
        })?;
        self.0.run(ctx, input, task).await
    }

    async fn on_parked(
        &self,
        ctx: &T::Context,
        task: &ClaimedTask,
        conn: &mut AnyConnection,
    ) -> Result<(), sqlx::Error> {
        // The run decoded this payload already; a failure here rolls the park back.
        let input: T::Input = serde_json::from_value(task.payload.clone())
            .map_err(|e| sqlx::Error::Decode(e.into()))?;
        self.0.on_parked(ctx, input, task, conn).await
    }
}

/// The handlers a worker runs, keyed by kind, with the typed kinds' default options.
pub struct Handlers<C> {
    map: HashMap<String, Arc<dyn Handler<C>>>,
    defaults: BTreeMap<String, TaskOptions>,
}

impl<C> Default for Handlers<C> {
    fn default() -> Self {
        Handlers {
            map: HashMap::new(),
            defaults: BTreeMap::new(),
        }
    }
}

impl<C: Send + Sync + 'static> Handlers<C> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) typed kind `T`.
    pub fn register<T: Task<Context = C>>(&mut self, task: T) -> &mut Self {
        self.map.insert(T::KIND.to_string(), Arc::new(Typed(task)));
        self.defaults.insert(T::KIND.to_string(), T::options());
        self
    }

    /// Adds (or replaces) an untyped handler of `kind` (its options are the defaults).
    pub fn insert(&mut self, kind: &str, handler: Arc<dyn Handler<C>>) -> &mut Self {
        self.map.insert(kind.to_string(), handler);
        self
    }

    pub fn get(&self, kind: &str) -> Option<&Arc<dyn Handler<C>>> {
        self.map.get(kind)
    }

    /// The typed kinds and their default options: what the config's validation applies
    /// `[queue.kinds.<kind>]` on (see [`crate::config::QueueFile::validate`]).
    pub fn defaults(&self) -> &BTreeMap<String, TaskOptions> {
        &self.defaults
    }
}

/// A task to enqueue. The queue (high/default/low) comes from the kind's options and
/// `[queue.kinds.<kind>]`.
#[derive(Debug, Clone)]
pub struct NewTask {
    /// Task kind ([`Task::KIND`] for typed kinds).
    pub kind: String,
    /// Kind-specific arguments.
    pub payload: Value,
    /// A second enqueue with the same key is a no-op (at most one live task per key).
    pub idempotency_key: Option<String>,
    /// Earliest start, Unix milliseconds; `None` = now.
    pub run_at_ms: Option<i64>,
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

    /// A task of typed kind `T`, due now, with the kind's idempotency key.
    pub fn of<T: Task>(input: &T::Input) -> Result<NewTask, serde_json::Error> {
        Ok(NewTask {
            kind: T::KIND.to_string(),
            payload: serde_json::to_value(input)?,
            idempotency_key: T::idempotency_key(input),
            run_at_ms: None,
        })
    }
}
