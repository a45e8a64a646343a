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
