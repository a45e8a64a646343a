//! Migration 0005 widens `messages.delivery_status` to `delivery_unknown`: on SQLite by
//! rebuilding the table. A database migrated up to 0004 with messages, their media links
//! and conversations pointing at them keeps every row, id and foreign key after 0005.

use komora_origin::db::{Backend, POSTGRES_MIGRATIONS, SQLITE_MIGRATIONS};
use sqlx::{AnyPool, Row};

use crate::both_backends;

/// Every row of `sql`'s result, each column as text: what must survive the migration.
async fn rows(pool: &AnyPool, sql: &'static str) -> Vec<Vec<Option<String>>> {
    sqlx::query(sql)
        .fetch_all(pool)
        .await
        .unwrap()
        .iter()
        .map(|r| {
            (0..r.len())
                .map(|i| r.get::<Option<String>, _>(i))
                .collect()
        })
        .collect()
}

const MESSAGES: &str = "SELECT CAST(id AS TEXT), CAST(conversation_id AS TEXT), direction, \
    text, CAST(created_at AS TEXT), CAST(read_at AS TEXT), delivery_status, external_id, \
    CAST(send_attempted_at AS TEXT) FROM messages ORDER BY id";
const LINKS: &str = "SELECT CAST(message_id AS TEXT), CAST(media_id AS TEXT), \
    CAST(position AS TEXT) FROM message_media ORDER BY message_id, media_id";
const CONVERSATIONS: &str = "SELECT CAST(c.id AS TEXT), CAST(c.last_message_id AS TEXT), \
    m.text FROM conversations c JOIN messages m ON m.id = c.last_message_id ORDER BY c.id";

both_backends!(message_rows_ids_and_links_survive_0005, |t| {
    // An empty database (not the test's migrated one) with foreign keys enforced.
    let dir = tempfile::tempdir().unwrap();
    let (pool, migrator) = match t.db.backend {
        Backend::Sqlite => {
            let url = format!("sqlite://{}/up_to_4.db?mode=rwc", dir.path().display());
            let pool = AnyPool::connect(&url).await.unwrap();
            let on: i64 = sqlx::query("PRAGMA foreign_keys")
                .fetch_one(&pool)
                .await
                .unwrap()
                .get(0);
            assert_eq!(on, 1, "foreign keys are enforced, as the origin runs");
            (pool, &SQLITE_MIGRATIONS)
        }
        Backend::Postgres => {
            for sql in ["DROP SCHEMA public CASCADE", "CREATE SCHEMA public"] {
                sqlx::query(sql).execute(&t.db.pool).await.unwrap();
            }
            (t.db.pool.clone(), &POSTGRES_MIGRATIONS)
        }
    };
    migrator.run_to(4, &pool).await.unwrap();
    let applied: i64 = sqlx::query("SELECT MAX(version) FROM _sqlx_migrations")
        .fetch_one(&pool)
        .await
        .unwrap()
        .get(0);
    assert_eq!(applied, 4);

    for sql in [
        "INSERT INTO offices (id, name, timezone, created_at) VALUES (1, 'W', 'Europe/Warsaw', 0)",
        "INSERT INTO clients (id, name, created_at) VALUES (3, 'Ada', 0)",
        "INSERT INTO conversations (id, platform, client_id, office_id, external_chat_id, \
         last_activity_at, created_at) VALUES (5, 'telegram', 3, 1, 'c5', 0, 0)",
        "INSERT INTO conversations (id, platform, client_id, external_chat_id, \
         last_activity_at, created_at) VALUES (6, 'email', 3, 'c6', 0, 0)",
        // Ids with gaps, every column set somewhere.
        "INSERT INTO messages (id, conversation_id, direction, text, created_at, read_at, \
         delivery_status, external_id) VALUES (7, 5, 'in', 'hi', 10, 20, 'received', 'e7')",
        "INSERT INTO messages (id, conversation_id, direction, text, created_at, \
         delivery_status, external_id) VALUES (9, 5, 'out', 'ok', 30, 'sent', 'e9')",
        "INSERT INTO messages (id, conversation_id, direction, text, created_at, \
         send_attempted_at) VALUES (12, 6, 'out', 'later', 40, 41)",
        "UPDATE conversations SET last_message_id = 9 WHERE id = 5",
        "UPDATE conversations SET last_message_id = 12 WHERE id = 6",
        "INSERT INTO media (id, sha256, size, content_type, object_key, created_at) \
         VALUES (2, 'aa', 1, 'image/png', 'k/aa', 0)",
        "INSERT INTO media (id, sha256, size, content_type, object_key, created_at) \
         VALUES (4, 'bb', 2, 'image/png', 'k/bb', 0)",
        "INSERT INTO message_media (message_id, media_id, position) VALUES (7, 2, 0)",
        "INSERT INTO message_media (message_id, media_id, position) VALUES (7, 4, 1)",
        "INSERT INTO message_media (message_id, media_id, position) VALUES (12, 4, 0)",
    ] {
        sqlx::query(sql).execute(&pool).await.unwrap();
    }
    let before = (
        rows(&pool, MESSAGES).await,
        rows(&pool, LINKS).await,
        rows(&pool, CONVERSATIONS).await,
    );
    assert_eq!(before.0.len(), 3);
    assert_eq!(before.1.len(), 3);
    assert_eq!(before.2.len(), 2);
    // Before 0005 the status is refused.
    assert!(
        sqlx::query("UPDATE messages SET delivery_status = 'delivery_unknown' WHERE id = 12")
            .execute(&pool)
            .await
            .is_err()
    );

    migrator.run(&pool).await.unwrap();
    let after = (
        rows(&pool, MESSAGES).await,
        rows(&pool, LINKS).await,
        rows(&pool, CONVERSATIONS).await,
    );
    assert_eq!(before, after, "every row and id kept");

    if t.db.backend == Backend::Sqlite {
        let broken = sqlx::query("PRAGMA foreign_key_check")
            .fetch_all(&pool)
            .await
            .unwrap();
        assert!(broken.is_empty(), "{} foreign key violations", broken.len());
        let leftovers: i64 = sqlx::query(
            "SELECT COUNT(*) FROM sqlite_master WHERE name IN ('messages_new', \
             'message_media_keep')",
        )
        .fetch_one(&pool)
        .await
        .unwrap()
        .get(0);
        assert_eq!(leftovers, 0);
    }
    // The links still reference the (new) messages table: a missing message is refused,
    // and so is deleting a message that has media.
    assert!(
        sqlx::query("INSERT INTO message_media (message_id, media_id) VALUES (99, 2)")
            .execute(&pool)
            .await
            .is_err()
    );
    assert!(sqlx::query("DELETE FROM messages WHERE id = 7")
        .execute(&pool)
        .await
        .is_err());
    // Its other constraints and indexes came along.
    assert!(sqlx::query(
        "INSERT INTO messages (conversation_id, direction, created_at, external_id) \
         VALUES (5, 'in', 50, 'e7')"
    )
    .execute(&pool)
    .await
    .is_err());
    assert!(sqlx::query(
        "INSERT INTO messages (conversation_id, direction, created_at) VALUES (404, 'in', 50)"
    )
    .execute(&pool)
    .await
    .is_err());
    let fresh: i64 = sqlx::query(
        "INSERT INTO messages (conversation_id, direction, created_at) VALUES (5, 'out', 60) \
         RETURNING id",
    )
    .fetch_one(&pool)
    .await
    .unwrap()
    .get(0);
    if t.db.backend == Backend::Sqlite {
        // The rebuilt table hands out ids after the highest kept one (PostgreSQL's table is
        // altered in place; its sequence did not see the explicit ids above).
        assert_eq!(fresh, 13, "ids go on after the highest kept");
    }
    let status: String = sqlx::query("SELECT delivery_status FROM messages WHERE id = $1")
        .bind(fresh)
        .fetch_one(&pool)
        .await
        .unwrap()
        .get(0);
    assert_eq!(status, "pending", "the default came along");
    // The new status is allowed, a made-up one still is not.
    sqlx::query("UPDATE messages SET delivery_status = 'delivery_unknown' WHERE id = 12")
        .execute(&pool)
        .await
        .unwrap();
    assert!(
        sqlx::query("UPDATE messages SET delivery_status = 'lost' WHERE id = 12")
            .execute(&pool)
            .await
            .is_err()
    );
    let indexes: i64 = match t.db.backend {
        Backend::Sqlite => sqlx::query(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND tbl_name = 'messages' \
             AND name IN ('messages_conversation_time', 'messages_unread', \
             'messages_external_id')",
        ),
        Backend::Postgres => sqlx::query(
            "SELECT COUNT(*) FROM pg_indexes WHERE tablename = 'messages' \
             AND indexname IN ('messages_conversation_time', 'messages_unread', \
             'messages_external_id')",
        ),
    }
    .fetch_one(&pool)
    .await
    .unwrap()
    .get(0);
    assert_eq!(indexes, 3);
    // Applying again is a no-op (checksums of the applied files unchanged).
    migrator.run(&pool).await.unwrap();
});
