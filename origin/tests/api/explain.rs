//! Every list query uses its index, on both databases: the real SQL of each query (taken
//! from the library, not copied) is run under `EXPLAIN QUERY PLAN` / `EXPLAIN`.
//!
//! On PostgreSQL the test tables are tiny, so the planner would rightly prefer a sequential
//! scan; `enable_seqscan = off` asks "given an index is usable, which one?" — what we want
//! to prove is that the index exists and matches the query.

use komora_origin::db::Backend;
use komora_origin::store::{clients, inbox, messages};
use sqlx::Row;

use crate::both_backends;
use crate::common::{fixture, TestDb};

/// One bound value.
enum Arg {
    I(i64),
    S(String),
}

/// The plan of `sql` as text lines.
async fn plan(t: &TestDb, sql: &str, args: &[Arg]) -> String {
    let mut conn = t.db.pool.acquire().await.unwrap();
    let explain = match t.db.backend {
        Backend::Sqlite => format!("EXPLAIN QUERY PLAN {sql}"),
        Backend::Postgres => {
            sqlx::query("SET enable_seqscan = off")
                .execute(&mut *conn)
                .await
                .unwrap();
            format!("EXPLAIN {sql}")
        }
    };
    let mut q = sqlx::query(sqlx::AssertSqlSafe(explain));
    for a in args {
        q = match a {
            Arg::I(i) => q.bind(*i),
            Arg::S(s) => q.bind(s.clone()),
        };
    }
    let rows = q.fetch_all(&mut *conn).await.unwrap();
    if t.db.backend == Backend::Postgres {
        sqlx::query("RESET enable_seqscan")
            .execute(&mut *conn)
            .await
            .unwrap();
    }
    let col = if t.db.backend == Backend::Sqlite {
        3
    } else {
        0
    };
    rows.iter()
        .map(|r| r.try_get::<String, _>(col).unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

fn assert_uses(plan: &str, index: &str, what: &str) {
    assert!(plan.contains(index), "{what} should use {index}:\n{plan}");
    // The ORDER BY must come from the index, not a sort of every row.
    assert!(
        !plan.contains("USE TEMP B-TREE FOR ORDER BY"),
        "{what} sorts instead of walking the index:\n{plan}"
    );
}

both_backends!(list_queries_use_their_indexes, |t| {
    // Enough rows that walking an index beats sorting everything (seed also ANALYZEs).
    let dir = tempfile::tempdir().unwrap();
    let store = komora_origin::media::store::open(&komora_origin::config::StoreLocation::Local(
        dir.path().to_path_buf(),
    ))
    .unwrap();
    let args = komora_origin::seed::SeedArgs {
        conversations: 3000,
        messages: 3,
        rng_seed: 1,
    };
    komora_origin::seed::seed(&t.db, &store, &args)
        .await
        .unwrap();
    let f = fixture(&t.db, 1, 3).await;
    let conv = f.conversations[0];

    let p = plan(
        &t,
        &inbox::inbox_sql(false, false),
        &[Arg::I(50), Arg::I(0)],
    )
    .await;
    assert_uses(&p, "conversations_inbox", "inbox");
    let p = plan(
        &t,
        &inbox::inbox_sql(false, true),
        &[Arg::I(1_800_000_000_000), Arg::I(99), Arg::I(50), Arg::I(0)],
    )
    .await;
    assert_uses(&p, "conversations_inbox", "inbox after a cursor");
    let p = plan(
        &t,
        &inbox::inbox_sql(true, false),
        &[Arg::S("telegram".into()), Arg::I(50), Arg::I(0)],
    )
    .await;
    assert_uses(&p, "conversations_platform_inbox", "inbox by platform");
    let p = plan(
        &t,
        &inbox::inbox_sql(true, true),
        &[
            Arg::S("telegram".into()),
            Arg::I(1_800_000_000_000),
            Arg::I(99),
            Arg::I(50),
            Arg::I(0),
        ],
    )
    .await;
    assert_uses(
        &p,
        "conversations_platform_inbox",
        "inbox by platform after a cursor",
    );

    let p = plan(
        &t,
        messages::page_sql(false),
        &[Arg::I(conv), Arg::I(100), Arg::I(0)],
    )
    .await;
    assert_uses(&p, "messages_conversation_time", "messages by offset");
    let p = plan(
        &t,
        messages::page_sql(true),
        &[
            Arg::I(conv),
            Arg::I(1_800_000_000_000),
            Arg::I(99),
            Arg::I(100),
        ],
    )
    .await;
    assert_uses(&p, "messages_conversation_time", "messages before a cursor");

    let p = plan(
        &t,
        "UPDATE messages SET read_at = $1 \
         WHERE conversation_id = $2 AND read_at IS NULL AND direction = 'in'",
        &[Arg::I(1), Arg::I(conv)],
    )
    .await;
    assert_uses(&p, "messages_unread", "mark read");

    let p = plan(
        &t,
        clients::search_sql(t.db.backend),
        &[
            Arg::S(clients::search_arg(t.db.backend, "kowal")),
            Arg::I(20),
        ],
    )
    .await;
    let index = match t.db.backend {
        Backend::Sqlite => "VIRTUAL TABLE INDEX",
        Backend::Postgres => "clients_search_trgm",
    };
    assert!(p.contains(index), "client search should use {index}:\n{p}");
});
