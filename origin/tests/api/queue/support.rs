//! Helpers shared by the queue tests.
#![allow(dead_code)]

use std::sync::Arc;

use komora_origin::config::Config;
use komora_origin::db::Db;
use komora_origin::queue::store::{self, ClaimedTask};
use komora_origin::queue::tasks::{TaskContext, TaskError, TaskHandler};
use komora_origin::queue::worker::Worker;
use komora_origin::queue::NewTask;

/// A fixed "now" for tests that drive time by hand.
pub const T0: i64 = 1_800_000_000_000;

pub fn config(toml: &str) -> Arc<Config> {
    Arc::new(Config::parse("<test>", toml).unwrap())
}

pub fn worker(db: &Db, config: &Arc<Config>) -> Worker {
    Worker::new(TaskContext::new(db.clone(), config.clone()))
}

/// Enqueues in its own transaction at `now`.
pub async fn enqueue(db: &Db, config: &Config, task: NewTask, now: i64) -> i64 {
    let mut tx = db.pool.begin().await.unwrap();
    let id = store::enqueue_at(&mut tx, &config.queue, task, now)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    id
}

/// A handler whose result a closure decides.
pub struct FnHandler<F>(pub F);

#[async_trait::async_trait]
impl<F> TaskHandler<TaskContext> for FnHandler<F>
where
    F: Fn(&ClaimedTask) -> Result<(), TaskError> + Send + Sync,
{
    async fn run(&self, _ctx: &TaskContext, task: &ClaimedTask) -> Result<(), TaskError> {
        (self.0)(task)
    }
}

pub fn handler<F>(f: F) -> Arc<dyn TaskHandler<TaskContext>>
where
    F: Fn(&ClaimedTask) -> Result<(), TaskError> + Send + Sync + 'static,
{
    Arc::new(FnHandler(f))
}

pub async fn state_of(db: &Db, id: i64) -> String {
    store::get(db, id).await.unwrap().unwrap().state.to_string()
}

/// A local stand-in for an HTTP API: answers every request with the status and JSON body
/// `respond` gives for (path, body), and records what it received.
pub struct StandIn {
    pub base_url: String,
    pub requests: Arc<std::sync::Mutex<Vec<Recorded>>>,
}

#[derive(Debug, Clone)]
pub struct Recorded {
    pub path: String,
    pub headers: axum::http::HeaderMap,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

pub type Responder = Arc<dyn Fn(&str, &[u8], usize) -> (u16, Vec<u8>, &'static str) + Send + Sync>;

impl StandIn {
    pub async fn start(respond: Responder) -> StandIn {
        StandIn::start_delayed(respond, Arc::new(|_| std::time::Duration::ZERO)).await
    }

    /// Like [`StandIn::start`], waiting `delay(n)` (without blocking a thread) before
    /// answering request number `n` (1-based).
    pub async fn start_delayed(
        respond: Responder,
        delay: Arc<dyn Fn(usize) -> std::time::Duration + Send + Sync>,
    ) -> StandIn {
        use axum::extract::State;
        let requests: Arc<std::sync::Mutex<Vec<Recorded>>> = Arc::default();
        let rec = requests.clone();
        let app = axum::Router::new().fallback(
            move |State(()): State<()>,
                  uri: axum::http::Uri,
                  headers: axum::http::HeaderMap,
                  body: axum::body::Bytes| {
                let rec = rec.clone();
                let respond = respond.clone();
                let delay = delay.clone();
                async move {
                    let n = {
                        let mut r = rec.lock().unwrap();
                        r.push(Recorded {
                            path: uri.path().to_string(),
                            headers,
                            body: body.to_vec(),
                        });
                        r.len()
                    };
                    tokio::time::sleep(delay(n)).await;
                    let (status, body, ctype) = respond(uri.path(), &body, n);
                    axum::response::Response::builder()
                        .status(status)
                        .header("content-type", ctype)
                        .body(axum::body::Body::from(body))
                        .unwrap()
                }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app.with_state(())).await.unwrap();
        });
        StandIn {
            base_url: format!("http://{addr}"),
            requests,
        }
    }

    pub fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }

    pub fn all(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }
}

/// A JSON responder with a fixed status and body.
pub fn json_responder(status: u16, body: serde_json::Value) -> Responder {
    Arc::new(move |_, _, _| (status, body.to_string().into_bytes(), "application/json"))
}

/// Telegram's sendMessage: `{"ok":true,"result":{"message_id":N}}`, N counting up.
pub fn telegram_ok() -> Responder {
    Arc::new(|_, _, n| {
        (
            200,
            serde_json::json!({"ok": true, "result": {"message_id": 1000 + n}})
                .to_string()
                .into_bytes(),
            "application/json",
        )
    })
}

/// Inserts an office; `working_hours` JSON, autobot on or off. Returns its id.
pub async fn office(db: &Db, tz: &str, autobot: bool, working_hours: &str, days_off: &str) -> i64 {
    use sqlx::Row;
    sqlx::query(
        "INSERT INTO offices (name, timezone, created_at, autobot_enabled, working_hours, \
         days_off) VALUES ('Main', $1, 0, $2, $3, $4) RETURNING id",
    )
    .bind(tz)
    .bind(i64::from(autobot))
    .bind(working_hours)
    .bind(days_off)
    .fetch_one(&db.pool)
    .await
    .unwrap()
    .get(0)
}

pub const SECRET: &str = "0123456789abcdef-0123456789abcdef-secret";

/// The `host:port` of a stand-in's `http://host:port` URL, for `allowed_hosts`.
pub fn host_port(url: &str) -> &str {
    url.trim_start_matches("http://").trim_end_matches('/')
}

/// Config with the AI and telegram pointed at stand-ins (on loopback, so allowed by name).
pub fn flow_config(platform_url: &str, rag_url: &str, extra: &str) -> Arc<Config> {
    let (p, r) = (host_port(platform_url), host_port(rag_url));
    config(&format!(
        "[ai]\nenabled = true\nurl = \"{rag_url}/answer\"\napi_key = \"rag-key\"\n\
         channels = [\"telegram\"]\ntimeout_ms = 2000\nallowed_hosts = [\"{r}\"]\n\
         [platforms.telegram]\nbase_url = \"{platform_url}\"\ntoken = \"TOKEN\"\n\
         webhook_secret = \"{SECRET}\"\ntimeout_ms = 2000\nmedia_max_bytes = 1000\n\
         allowed_hosts = [\"{p}\"]\n{extra}"
    ))
}

/// A worker whose context has an in-memory media store.
pub fn worker_with_store(
    db: &Db,
    config: &Arc<Config>,
    store: Arc<dyn object_store::ObjectStore>,
) -> Worker {
    let mut ctx = TaskContext::new(db.clone(), config.clone());
    ctx.media = Some(store);
    Worker::new(ctx)
}

/// The real internal router (`/admin/*`, `/metrics`) on port 0; returns its base URL.
pub async fn serve_internal(
    db: &Db,
    config: &Arc<Config>,
    store: Arc<dyn object_store::ObjectStore>,
) -> String {
    let state = komora_origin::app::AppState {
        db: db.clone(),
        config: config.clone(),
        media: store,
    };
    let app = komora_origin::app::internal_router(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    format!("http://{addr}")
}

/// A running origin app (the real router) on port 0; returns its base URL.
pub async fn serve_app(
    db: &Db,
    config: &Arc<Config>,
    store: Arc<dyn object_store::ObjectStore>,
) -> String {
    let state = komora_origin::app::AppState {
        db: db.clone(),
        config: config.clone(),
        media: store,
    };
    let app = komora_origin::app::router(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    format!("http://{addr}")
}

/// An outbound message 'hello' in a new telegram conversation with chat `chat`; its id.
pub async fn outbound(db: &Db, chat: &str) -> i64 {
    use sqlx::Row;
    let client: i64 =
        sqlx::query("INSERT INTO clients (name, created_at) VALUES ('S', 0) RETURNING id")
            .fetch_one(&db.pool)
            .await
            .unwrap()
            .get(0);
    let conv: i64 = sqlx::query(
        "INSERT INTO conversations (platform, client_id, external_chat_id, last_activity_at, \
         created_at) VALUES ('telegram', $1, $2, 0, 0) RETURNING id",
    )
    .bind(client)
    .bind(chat)
    .fetch_one(&db.pool)
    .await
    .unwrap()
    .get(0);
    sqlx::query(
        "INSERT INTO messages (conversation_id, direction, text, created_at) \
         VALUES ($1, 'out', 'hello', 0) RETURNING id",
    )
    .bind(conv)
    .fetch_one(&db.pool)
    .await
    .unwrap()
    .get(0)
}

/// The message's `delivery_status`.
pub async fn delivery_of(db: &Db, id: i64) -> String {
    use sqlx::Row;
    sqlx::query("SELECT delivery_status FROM messages WHERE id = $1")
        .bind(id)
        .fetch_one(&db.pool)
        .await
        .unwrap()
        .get(0)
}
