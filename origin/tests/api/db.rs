//! The database layer connects and migrates on both backends.

use crate::both_backends;

both_backends!(connects_and_migrates, |t| {
    t.db.ping().await.unwrap();
    // Migrations are idempotent: a second run on the same database is a no-op.
    t.db.migrate().await.unwrap();
});
