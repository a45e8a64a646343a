//! API keys: random bearer tokens of which only the sha256 is stored.

use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::db::{now_ms, query, Db};

/// The stored form of a token: lowercase hex sha256.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Creates a key named `name`; returns `(id, token)`. The token is shown only now.
pub async fn create(db: &Db, name: &str, is_admin: bool) -> Result<(i64, String), sqlx::Error> {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    let token = hex::encode(bytes);
    let row = query(
        "INSERT INTO api_keys (name, key_hash, is_admin, created_at) \
         VALUES ($1, $2, $3, $4) RETURNING id",
    )
    .bind(name.to_string())
    .bind(hash_token(&token))
    .bind(is_admin)
    .bind(now_ms())
    .fetch_one(&db.pool)
    .await?;
    Ok((row.try_get::<i64, _>(0)?, token))
}

/// The id of the live key whose token is `token`, if any.
pub async fn authenticate(db: &Db, token: &str) -> Result<Option<i64>, sqlx::Error> {
    let row = query("SELECT id FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL")
        .bind(hash_token(token))
        .fetch_optional(&db.pool)
        .await?;
    row.map(|r| r.try_get::<i64, _>(0)).transpose()
}
