//! The context the origin's task kinds run with, and the registry of those kinds. Each
//! kind is a typed `komora_queue::Task` (its `KIND`, input and options written once) in
//! its domain: `messaging::send`, `autobot::reply`, `media::download`.

use std::collections::BTreeMap;
use std::sync::Arc;

use sqlx::any::AnyRow;

pub use komora_queue::task::{Handler as TaskHandler, Handlers, TaskOptions};
pub use komora_queue::TaskError;

use crate::config::Config;
use crate::db::Db;
use komora_queue::store::ClaimedTask;

/// Everything a handler may use. Cheap to share.
pub struct TaskContext {
    pub db: Db,
    pub config: Arc<Config>,
    /// SSRF-safe HTTP clients (platform APIs, the RAG API, media downloads), one per
    /// allowed-hosts list.
    pub http: crate::fetch::SafeHttp,
    /// Where downloaded media is stored; `None` fails media tasks (retryable) until set.
    pub media: Option<Arc<dyn object_store::ObjectStore>>,
}

impl TaskContext {
    pub fn new(db: Db, config: Arc<Config>) -> TaskContext {
        TaskContext {
            db,
            config,
            http: crate::fetch::SafeHttp::default(),
            media: None,
        }
    }
}

impl komora_queue::Context for TaskContext {
    type Db = Db;
    fn db(&self) -> &Db {
        &self.db
    }
    fn queue_config(&self) -> &komora_queue::QueueConfig {
        &self.config.queue
    }
    fn handlers() -> Handlers<TaskContext> {
        builtin_handlers()
    }
}

/// The input of the kinds that act on one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MessageInput {
    pub message_id: i64,
}

/// What the kinds that act on one message (`send_message`, `process_ai_reply`) share: their
/// queue, their key, and how their run reads its message. What each does with the row (and
/// which direction it wants) stays in the kind.
impl MessageInput {
    /// Options of a message kind: the high queue (someone in a chat waits for it).
    pub fn options() -> TaskOptions {
        TaskOptions::on("high")
    }

    /// One live task of `kind` per message.
    pub fn key(&self, kind: &str) -> Option<String> {
        Some(format!("{kind}:{}", self.message_id))
    }

    /// The row `sql` selects for the message (`$1` is its id). A message that does not
    /// exist fails the task for good; a database error is retried.
    pub async fn load(&self, ctx: &TaskContext, sql: &'static str) -> Result<AnyRow, TaskError> {
        let id = self.message_id;
        sqlx::query(sql)
            .bind(id)
            .fetch_optional(&ctx.db.pool)
            .await?
            .ok_or_else(|| TaskError::Permanent(format!("message {id} does not exist")))
    }
}

/// The task of kind `T` for message `message_id`, keyed by the kind's idempotency key.
pub fn message_task<T: komora_queue::Task<Input = MessageInput>>(
    message_id: i64,
) -> komora_queue::NewTask {
    let input = MessageInput { message_id };
    komora_queue::NewTask {
        kind: T::KIND.to_string(),
        payload: serde_json::json!({ "message_id": message_id }),
        idempotency_key: T::idempotency_key(&input),
        run_at_ms: None,
    }
}

/// Does nothing: health checks and benchmarks.
pub struct Noop;

#[async_trait::async_trait]
impl komora_queue::Task for Noop {
    const KIND: &'static str = "noop";
    type Input = serde_json::Value;
    type Context = TaskContext;

    async fn run(
        &self,
        _ctx: &TaskContext,
        _input: serde_json::Value,
        _task: &ClaimedTask,
    ) -> Result<(), TaskError> {
        Ok(())
    }
}

/// The kinds every worker runs.
pub fn builtin_handlers() -> Handlers<TaskContext> {
    let mut h = Handlers::new();
    h.register(Noop)
        .register(crate::messaging::send::SendMessage)
        .register(crate::autobot::reply::ProcessAiReply)
        .register(crate::media::download::DownloadMedia);
    h
}

/// The built-in kinds' default options: what `[queue.kinds.<kind>]` applies on.
pub fn kind_defaults() -> BTreeMap<String, TaskOptions> {
    builtin_handlers().defaults().clone()
}
