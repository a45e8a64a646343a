//! Task kinds: the handler trait, the context handlers get, and the built-in kinds.

pub mod ai_reply;
pub mod download_media;
pub mod send_message;

use std::collections::HashMap;
use std::sync::Arc;

use super::store::ClaimedTask;
use crate::config::Config;
use crate::db::Db;

/// Everything a handler may use. Cheap to share.
pub struct TaskContext {
    pub db: Db,
    pub config: Arc<Config>,
    /// SSRF-safe HTTP clients (platform APIs, the RAG API, media downloads), one per
    /// allowed-hosts list.
    pub http: super::fetch::SafeHttp,
    /// Where downloaded media is stored; `None` fails media tasks (retryable) until set.
    pub media: Option<Arc<dyn object_store::ObjectStore>>,
}

impl TaskContext {
    pub fn new(db: Db, config: Arc<Config>) -> TaskContext {
        TaskContext {
            db,
            config,
            http: super::fetch::SafeHttp::default(),
            media: None,
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

/// Code that runs one kind of task. Must be safe to run again (at-least-once delivery).
#[async_trait::async_trait]
pub trait TaskHandler: Send + Sync {
    async fn run(&self, ctx: &TaskContext, task: &ClaimedTask) -> Result<(), TaskError>;
}

/// Does nothing: health checks and benchmarks.
pub struct Noop;

#[async_trait::async_trait]
impl TaskHandler for Noop {
    async fn run(&self, _ctx: &TaskContext, _task: &ClaimedTask) -> Result<(), TaskError> {
        Ok(())
    }
}

/// An `i64` field of a task's payload, or a permanent error naming it.
pub fn payload_i64(task: &ClaimedTask, field: &str) -> Result<i64, TaskError> {
    task.payload
        .get(field)
        .and_then(|v| v.as_i64())
        .ok_or_else(|| TaskError::Permanent(format!("payload has no integer {field:?}")))
}

/// The kinds every worker runs.
pub fn builtin_handlers() -> HashMap<String, Arc<dyn TaskHandler>> {
    let mut h: HashMap<String, Arc<dyn TaskHandler>> = HashMap::new();
    h.insert("noop".into(), Arc::new(Noop));
    h.insert("send_message".into(), Arc::new(send_message::SendMessage));
    h.insert(
        "process_ai_reply".into(),
        Arc::new(ai_reply::ProcessAiReply),
    );
    h.insert(
        "download_and_save_media".into(),
        Arc::new(download_media::DownloadMedia),
    );
    h
}
