//! Database access shared by the API and the task queue.
//!
//! One `sqlx::AnyPool` serves both supported backends: a SQLite file (the embedded default,
//! created on first start) and PostgreSQL (production). Queries are written once in the
//! common SQL dialect with `$1` placeholders, which both drivers accept; the few statements
//! that must differ (queue claims, text search, `EXPLAIN`) branch on [`Backend`].
//!
//! Timestamps are stored as `BIGINT` milliseconds since the Unix epoch (UTC) on both
//! backends, so rows compare, sort and index the same way everywhere.

use std::str::FromStr;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::Migrator;
use sqlx::AnyPool;

/// Migrations for each backend, embedded in the binary and applied at start. They include
/// the queue engine's `tasks` table (0002, rebuilt by 0004): those files also change the
/// origin's own tables and sqlx checksums applied migrations, so they stay here as they
/// are; `komora_queue::schema` is the same table for an application without this history
/// (a test keeps the two alike).
pub static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
/// See [`SQLITE_MIGRATIONS`].
pub static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

/// Applied migrations whose text changed in comments only (the tracker numbers were taken out
/// of 0001 and 0002): backend, version, and the SHA-384 (hex) of the file as it was applied.
/// sqlx refuses to start on a database whose applied migration's checksum differs from the
/// embedded file's, so [`Db::migrate`] first replaces exactly these old checksums with the
/// current ones. Any other change to an applied migration still fails the start.
const COMMENT_ONLY_REWRITES: &[(Backend, i64, &str)] = &[
    (
        Backend::Sqlite,
        1,
        "4ec21b1e755b5e006a188dfe355a219aa4d3985cf7816a41c1902558702110f2c46bcc94035ebafa0cc799651dd6aadd",
    ),
    (
        Backend::Sqlite,
        2,
        "8f7f8d34c43c2a40e4fdf9f58ed040bcad7930d9d63a738688896d00df23e305340c9c7f68aa7e73ed5cba57cf320718",
    ),
    (
        Backend::Postgres,
        1,
        "4ffa46a9b6f1ffdc81d013b35a9a17651c1c47e71845863f0e29b8880c002ab5b89aea09ab2ac41688c60467632866c3",
    ),
    (
        Backend::Postgres,
        2,
        "0e141cbe8a371c90005c08c8e518cea5c2ca9034c4b731ec2bac407ad27a90b3b7bb4530d2a1c277c47bd12c585f331c",
    ),
];

/// Which database engine a [`Db`] talks to (the queue's claims differ per backend too).
pub use komora_queue::Backend;

/// A connection pool plus the backend it talks to. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Db {
    pub pool: AnyPool,
    pub backend: Backend,
}

impl komora_queue::QueueDb for Db {
    fn pool(&self) -> &AnyPool {
        &self.pool
    }
    fn backend(&self) -> Backend {
        self.backend
    }
}

/// Pool settings taken from the validated config.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// Most connections the pool opens.
    pub max_connections: u32,
    /// How long a query waits for a free connection before failing.
    pub acquire_timeout: std::time::Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            max_connections: 10,
            acquire_timeout: std::time::Duration::from_secs(5),
        }
    }
}

impl Db {
    /// Connects, creating a missing SQLite file (and its folder), switches SQLite to WAL,
    /// and applies the embedded migrations.
    pub async fn connect(url: &str, settings: &PoolSettings) -> Result<Db, sqlx::Error> {
        sqlx::any::install_default_drivers();
        let backend = Backend::from_url(url).ok_or_else(|| {
            sqlx::Error::Configuration(
                format!("unsupported database URL scheme in {url:?} (use sqlite: or postgres:)")
                    .into(),
            )
        })?;
        let mut url = url.to_string();
        if backend == Backend::Sqlite {
            url = prepare_sqlite_url(&url)?;
        }
        let options = AnyConnectOptions::from_str(&url)?;
        let pool = AnyPoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(settings.acquire_timeout)
            // PostgreSQL: ping before every checkout, so a connection the server dropped
            // (restart, pg_terminate_backend) is replaced instead of failing a request; it
            // costs a round trip per checkout. A connection lost mid-query still fails, and
            // the API answers 503 (api::error::is_transient). SQLite files do not drop.
            .test_before_acquire(backend == Backend::Postgres)
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        use sqlx::Executor;
                        // WAL lets readers run beside the one writer; the busy timeout makes
                        // a writer wait for the lock instead of failing at once.
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute("PRAGMA busy_timeout = 5000").await?;
                        conn.execute("PRAGMA foreign_keys = ON").await?;
                        conn.execute("PRAGMA synchronous = NORMAL").await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        let db = Db { pool, backend };
        db.migrate().await?;
        Ok(db)
    }

    /// Applies the migrations of this backend (idempotent).
    pub async fn migrate(&self) -> Result<(), sqlx::Error> {
        let migrator = match self.backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        };
        self.accept_comment_only_rewrites(migrator).await?;
        migrator.run(&self.pool).await.map_err(sqlx::Error::from)
    }

    /// See [`COMMENT_ONLY_REWRITES`]. A database without sqlx's table (never migrated) has
    /// nothing to rewrite.
    async fn accept_comment_only_rewrites(&self, migrator: &Migrator) -> Result<(), sqlx::Error> {
        let has_table = match self.backend {
            Backend::Sqlite => {
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'"
            }
            Backend::Postgres => {
                "SELECT COUNT(*) FROM pg_tables WHERE schemaname = current_schema() \
                 AND tablename = '_sqlx_migrations'"
            }
        };
        let n: i64 = sqlx::query_scalar(has_table).fetch_one(&self.pool).await?;
        if n == 0 {
            return Ok(());
        }
        let ours = COMMENT_ONLY_REWRITES
            .iter()
            .filter(|(backend, _, _)| *backend == self.backend);
        for (_, version, old) in ours {
            let Some(current) = migrator.iter().find(|m| m.version == *version) else {
                continue;
            };
            let Ok(old) = hex::decode(old) else {
                continue;
            };
            sqlx::query(
                "UPDATE _sqlx_migrations SET checksum = $1 WHERE version = $2 AND checksum = $3",
            )
            .bind(current.checksum.to_vec())
            .bind(*version)
            .bind(old)
            .execute(&self.pool)
            .await?;
        }
        Ok(())
    }

    /// Runs a trivial query: the readiness probe.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
    }
}

/// Adds `mode=rwc` so a missing file is created, and creates its parent folder.
fn prepare_sqlite_url(url: &str) -> Result<String, sqlx::Error> {
    let rest = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let path = rest.split('?').next().unwrap_or_default();
    if !path.is_empty() && path != ":memory:" {
        if let Some(parent) = std::path::Path::new(path).parent() {
            if !parent.as_os_str().is_empty() {
                std::fs::create_dir_all(parent).map_err(sqlx::Error::Io)?;
            }
        }
    }
    if url.contains("mode=") {
        Ok(url.to_string())
    } else if url.contains('?') {
        Ok(format!("{url}&mode=rwc"))
    } else {
        Ok(format!("{url}?mode=rwc"))
    }
}

tokio::task_local! {
    /// Statements run by the current task, counted when a test scopes it (see
    /// [`note_statement`]): this proves "constant statements per request" without relying on
    /// where a driver logs (SQLite runs statements on its own worker thread).
    pub static STATEMENTS: std::cell::Cell<u64>;
}

/// Counts one statement in [`STATEMENTS`] if the current task has a counter; every query
/// the API runs is built through [`query`], which calls this.
pub fn note_statement() {
    let _ = STATEMENTS.try_with(|c| c.set(c.get() + 1));
}

/// A counted `sqlx::query` for static SQL.
pub fn query(sql: &'static str) -> sqlx::query::Query<'static, sqlx::Any, sqlx::any::AnyArguments> {
    note_statement();
    sqlx::query(sql)
}

/// A counted `sqlx::query` for SQL assembled at run time from constant fragments (never
/// from input: values always go through `bind`).
pub fn query_built(sql: String) -> sqlx::query::Query<'static, sqlx::Any, sqlx::any::AnyArguments> {
    note_statement();
    sqlx::query(sqlx::AssertSqlSafe(sql))
}

/// Now, in Unix milliseconds (the unit of every stored timestamp): the queue engine's clock,
/// so the API, the store and the queue read one clock.
pub use komora_queue::now_ms;
