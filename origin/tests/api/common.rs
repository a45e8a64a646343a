//! Shared test support: fresh databases on both backends.
#![allow(dead_code)]

use komora_origin::db::{Backend, Db, PoolSettings};

/// Base URL of the PostgreSQL server tests create their databases on
/// (`KOMORA_TEST_PG_URL`, default `postgres://postgres@127.0.0.1:5432/test`).
pub fn pg_admin_url() -> String {
    std::env::var("KOMORA_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

/// True when running in CI, where a missing PostgreSQL must fail the run.
pub fn in_ci() -> bool {
    std::env::var("CI")
        .map(|v| v == "true" || v == "1")
        .unwrap_or(false)
}

/// A fresh, migrated database that is dropped (PostgreSQL) or deleted (SQLite) with it.
pub struct TestDb {
    pub db: Db,
    pub url: String,
    /// Keeps the SQLite file's folder alive for the test's lifetime.
    _dir: Option<tempfile::TempDir>,
    pg_name: Option<String>,
}

impl TestDb {
    /// A fresh database on `backend`. Returns `None` only outside CI when PostgreSQL cannot
    /// be reached (the caller then prints that it skipped); under `CI=true` that panics.
    pub async fn new(backend: Backend) -> Option<TestDb> {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}/komora.db", dir.path().display());
                let db = Db::connect(&url, &PoolSettings::default()).await.unwrap();
                Some(TestDb {
                    db,
                    url,
                    _dir: Some(dir),
                    pg_name: None,
                })
            }
            Backend::Postgres => {
                use sqlx::Connection;
                sqlx::any::install_default_drivers();
                let admin = pg_admin_url();
                let mut conn = match sqlx::AnyConnection::connect(&admin).await {
                    Ok(c) => c,
                    Err(e) if !in_ci() => {
                        eprintln!("SKIPPED: PostgreSQL not reachable at {admin}: {e}");
                        return None;
                    }
                    Err(e) => panic!("PostgreSQL not reachable at {admin} under CI=true: {e}"),
                };
                let name = format!("komora_t_{:016x}", rand::random::<u64>());
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut conn)
                    .await
                    .unwrap();
                conn.close().await.ok();
                let url = match admin.rsplit_once('/') {
                    Some((base, _)) => format!("{base}/{name}"),
                    None => panic!("bad KOMORA_TEST_PG_URL {admin}"),
                };
                let db = Db::connect(&url, &PoolSettings::default()).await.unwrap();
                Some(TestDb {
                    db,
                    url,
                    _dir: None,
                    pg_name: Some(name),
                })
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(name) = self.pg_name.take() {
            // Drop the database on a helper thread with its own runtime: Drop can't await.
            let admin = pg_admin_url();
            let pool = self.db.pool.clone();
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                if let Ok(rt) = rt {
                    rt.block_on(async move {
                        use sqlx::Connection;
                        pool.close().await;
                        if let Ok(mut conn) = sqlx::AnyConnection::connect(&admin).await {
                            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                            )))
                            .execute(&mut conn)
                            .await;
                        }
                    });
                }
            })
            .join();
        }
    }
}

/// The one integer a `SELECT count(*) ...` query returns.
pub async fn count(db: &Db, sql: impl sqlx::SqlSafeStr) -> i64 {
    use sqlx::Row;
    sqlx::query(sql).fetch_one(&db.pool).await.unwrap().get(0)
}

/// Runs `body` once per backend with a fresh database each time.
#[macro_export]
macro_rules! both_backends {
    ($name:ident, |$db:ident| $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let $db = $crate::common::TestDb::new(komora_origin::db::Backend::Sqlite)
                    .await
                    .unwrap();
                $body
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let Some($db) =
                    $crate::common::TestDb::new(komora_origin::db::Backend::Postgres).await
                else {
                    return;
                };
                $body
            }
        }
    };
}

/// A running origin on 127.0.0.1 with a fresh admin key, over a test database.
pub struct TestApp {
    pub addr: std::net::SocketAddr,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The internal listener (`/metrics`, `/admin/*`): `http://127.0.0.1:PORT`.
    pub internal: String,
    pub client: reqwest::Client,
    /// Bearer token of an admin key created for this app.
    pub admin_key: String,
    pub state: komora_origin::app::AppState,
    _media_dir: Option<tempfile::TempDir>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// The default config with test-friendly tweaks applied by `edit`.
pub fn test_config(
    edit: impl FnOnce(&mut komora_origin::config::ConfigFile),
) -> komora_origin::config::Config {
    let mut raw = komora_origin::config::ConfigFile::default();
    // Public media unless a test turns signing on (signed_media.rs does, with its own keys).
    raw.media.signed_urls = false;
    edit(&mut raw);
    let mut errors = Vec::new();
    raw.validate(&mut errors)
        .unwrap_or_else(|| panic!("test config invalid: {errors:?}"))
}

/// Builds the real app over `t` with media in a temporary local folder.
pub async fn spawn_app(t: &TestDb) -> TestApp {
    spawn_app_with(t, |_| {}, None).await
}

/// Like [`spawn_app`], with a config edit and optionally a ready-made media store.
pub async fn spawn_app_with(
    t: &TestDb,
    edit: impl FnOnce(&mut komora_origin::config::ConfigFile),
    store: Option<komora_origin::media::store::MediaStore>,
) -> TestApp {
    use komora_origin::app::{App, AppState};
    let dir = tempfile::tempdir().unwrap();
    let media_dir = dir.path().to_path_buf();
    let config = test_config(|raw| {
        raw.media.store_url = format!("file://{}", media_dir.display());
        edit(raw);
    });
    let media = match store {
        Some(s) => s,
        None => komora_origin::media::store::open(&config.media.store).unwrap(),
    };
    let state = AppState {
        db: t.db.clone(),
        config: std::sync::Arc::new(config),
        media,
    };
    let (_, admin_key) = komora_origin::store::api_keys::create(&state.db, "test-admin", true)
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let internal = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let internal_addr = internal.local_addr().unwrap();
    let app = App::from_state(state.clone(), listener).with_internal_listener(internal);
    let addr = app.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run_until(async move {
        let _ = rx.await;
    }));
    TestApp {
        addr,
        base: format!("http://{addr}"),
        internal: format!("http://{internal_addr}"),
        client: reqwest::Client::new(),
        admin_key,
        state,
        _media_dir: Some(dir),
        shutdown: Some(tx),
    }
}

impl TestApp {
    /// GET with the admin bearer token.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.admin_key)
            .send()
            .await
            .unwrap()
    }

    /// POST JSON with the admin bearer token.
    pub async fn post_json(&self, path: &str, body: serde_json::Value) -> reqwest::Response {
        self.client
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.admin_key)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// Uploads bytes to `/api/media`.
    pub async fn upload(&self, bytes: Vec<u8>, content_type: &str) -> reqwest::Response {
        self.client
            .post(format!("{}/api/media?filename=f.bin", self.base))
            .bearer_auth(&self.admin_key)
            .header("content-type", content_type)
            .body(bytes)
            .send()
            .await
            .unwrap()
    }
}

/// A small data set: ids of what [`fixture`] created.
pub struct Fixture {
    pub office: i64,
    /// Conversations, oldest activity first.
    pub conversations: Vec<i64>,
    pub clients: Vec<i64>,
}

/// Creates one office and `n` conversations (platforms cycling), each with `m` messages
/// alternating in/out starting with in, at increasing times; conversation i's messages are
/// newer than conversation i-1's.
pub async fn fixture(db: &Db, n: usize, m: usize) -> Fixture {
    use komora_origin::store::{clients, messages, PLATFORMS};
    let mut tx = db.pool.begin().await.unwrap();
    let office = clients::create_office(&mut tx, "Warsaw", "Europe/Warsaw")
        .await
        .unwrap();
    let mut conversations = Vec::new();
    let mut client_ids = Vec::new();
    let base = 1_700_000_000_000i64;
    for i in 0..n {
        let client = clients::create_client(
            &mut tx,
            &format!("Client{i} Kowalska"),
            Some(&format!("+4850000{i:04}")),
            Some(&format!("client{i}@example.com")),
        )
        .await
        .unwrap();
        let platform = PLATFORMS[i % PLATFORMS.len()];
        let conv = clients::create_conversation(
            &mut tx,
            platform,
            client,
            Some(office),
            &format!("chat-{i}"),
        )
        .await
        .unwrap();
        // Conversations created "now" have a later activity than these old messages:
        // reset so ordering follows the messages.
        sqlx::query("UPDATE conversations SET last_activity_at = $1 WHERE id = $2")
            .bind(base + (i as i64) * 1_000_000)
            .bind(conv)
            .execute(&mut *tx)
            .await
            .unwrap();
        for k in 0..m {
            let mut msg = if k % 2 == 0 {
                messages::NewMessage::inbound(conv, format!("hello {i}/{k}"))
            } else {
                messages::NewMessage::outbound(conv, format!("reply {i}/{k}"))
            };
            msg.created_at = base + (i as i64) * 1_000_000 + (k as i64 + 1) * 1000;
            messages::insert_message(&mut tx, &msg).await.unwrap();
        }
        conversations.push(conv);
        client_ids.push(client);
    }
    tx.commit().await.unwrap();
    Fixture {
        office,
        conversations,
        clients: client_ids,
    }
}
