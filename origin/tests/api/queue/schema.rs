//! The engine's schema (`komora_queue::schema`: `tasks`, `queue_pauses`, `queue_workers`) and
//! the tables the origin's own migrations build must stay alike: same columns, indexes and
//! checks.

use komora_origin::db::{Backend, Db};
use sqlx::Row;

use crate::both_backends;

async fn strings(db: &Db, sql: &'static str, table: &str) -> Vec<String> {
    sqlx::query(sql)
        .bind(table)
        .fetch_all(&db.pool)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<String, _>(0))
        .collect()
}

/// Columns, indexes (with the table's name taken out) and checks of `table`.
async fn shape(db: &Db, table: &str) -> Vec<String> {
    let (columns, indexes, checks) = match db.backend {
        Backend::Sqlite => (
            "SELECT name || ' ' || type || ' ' || \"notnull\" || ' ' || \
             COALESCE(dflt_value, '-') || ' ' || pk FROM pragma_table_info($1) ORDER BY cid",
            "SELECT replace(sql, 'engine_', '') FROM sqlite_master \
             WHERE type = 'index' AND tbl_name = $1 AND sql IS NOT NULL ORDER BY name",
            // SQLite keeps a table's checks only in its CREATE text; the rebuilt origin
            // table quotes its name, so only the CHECK clause is compared.
            "SELECT CASE WHEN instr(sql, 'CHECK') > 0 THEN \
             substr(sql, instr(sql, 'CHECK'), instr(substr(sql, instr(sql, 'CHECK')), ')')) \
             ELSE '-' END FROM sqlite_master WHERE type = 'table' AND name = $1",
        ),
        Backend::Postgres => (
            "SELECT column_name || ' ' || data_type || ' ' || is_nullable || ' ' || \
             COALESCE(column_default, '-') || ' ' || is_identity \
             FROM information_schema.columns WHERE table_name = $1 ORDER BY ordinal_position",
            "SELECT replace(indexdef, 'engine_', '') FROM pg_indexes \
             WHERE tablename = $1 ORDER BY indexname",
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint \
             WHERE conrelid = $1::regclass AND contype = 'c' ORDER BY conname",
        ),
    };
    let mut out = strings(db, columns, table).await;
    out.extend(strings(db, indexes, table).await);
    out.extend(strings(db, checks, table).await);
    out
}

both_backends!(engine_schema_matches_the_migrated_tasks_table, |t| {
    let sql = komora_queue::schema(t.db.backend)
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n")
        .replace("CREATE TABLE ", "CREATE TABLE engine_")
        .replace(" ON tasks ", " ON engine_tasks ")
        .replace("INDEX tasks_", "INDEX engine_tasks_");
    for stmt in sql.split(';') {
        let stmt = stmt.to_string();
        if !stmt.trim().is_empty() {
            sqlx::query(sqlx::AssertSqlSafe(stmt))
                .execute(&t.db.pool)
                .await
                .unwrap();
        }
    }
    let migrated = shape(&t.db, "tasks").await;
    let engine = shape(&t.db, "engine_tasks").await;
    assert!(migrated.len() >= 17 + 4, "{migrated:#?}");
    assert_eq!(migrated, engine);
    for (table, columns) in [("queue_pauses", 3), ("queue_workers", 4)] {
        let migrated = shape(&t.db, table).await;
        let engine = shape(&t.db, &format!("engine_{table}")).await;
        assert!(migrated.len() > columns, "{table}: {migrated:#?}");
        assert_eq!(migrated, engine, "{table}");
    }
});
