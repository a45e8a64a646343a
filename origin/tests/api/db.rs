//! The database layer connects and migrates on both backends.

use crate::both_backends;

both_backends!(connects_and_migrates, |t| {
    t.db.ping().await.unwrap();
    // Migrations are idempotent: a second run on the same database is a no-op.
    t.db.migrate().await.unwrap();
});

// A database migrated from 0001's text before its comment lost the tracker number still
// starts, and gets the current checksum; any other change to an applied migration is still
// refused. The old checksum is computed here from the old text, so this also checks the
// constant in `db.rs`.
both_backends!(
    a_database_migrated_before_the_comment_rewrite_still_starts,
    |t| {
        use sha2::{Digest, Sha384};
        use sqlx::Row;
        let (dir, migrator) = match t.db.backend {
            komora_origin::db::Backend::Sqlite => ("sqlite", &komora_origin::db::SQLITE_MIGRATIONS),
            komora_origin::db::Backend::Postgres => {
                ("postgres", &komora_origin::db::POSTGRES_MIGRATIONS)
            }
        };
        let path = format!(
            "{}/migrations/{dir}/0001_core.sql",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(path).unwrap();
        let old_text = text.replacen("-- Core data model: ", "-- Core data model (issue 2): ", 1);
        assert_ne!(old_text, text);
        let old = Sha384::digest(old_text.as_bytes()).to_vec();
        let set = |sum: Vec<u8>| {
            sqlx::query("UPDATE _sqlx_migrations SET checksum = $1 WHERE version = 1")
                .bind(sum)
                .execute(&t.db.pool)
        };
        set(old).await.unwrap();
        let settings = komora_origin::db::PoolSettings::default();
        let db = komora_origin::db::Db::connect(&t.url, &settings)
            .await
            .unwrap();
        let stored: Vec<u8> =
            sqlx::query("SELECT checksum FROM _sqlx_migrations WHERE version = 1")
                .fetch_one(&db.pool)
                .await
                .unwrap()
                .get(0);
        let current = migrator.iter().find(|m| m.version == 1).unwrap();
        assert_eq!(stored, current.checksum.to_vec());
        db.pool.close().await;

        set(vec![0u8; 48]).await.unwrap();
        let refused = komora_origin::db::Db::connect(&t.url, &settings).await;
        assert!(
            refused.is_err(),
            "a modified applied migration must still be refused"
        );
    }
);
