//! Media rows: content-addressed by sha256, one row (and one stored object) per content.

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::api_keys::Scope;
use crate::db::{now_ms, query, Db};

#[derive(Debug, Clone, Serialize)]
pub struct MediaRow {
    pub id: i64,
    pub sha256: String,
    pub size: i64,
    pub content_type: String,
    pub original_name: Option<String>,
    pub object_key: String,
    pub created_at: i64,
}

/// The object-store key of a sha256: `media/ab/cd/<sha256>` (fan-out keeps listings small).
pub fn object_key(sha256: &str) -> String {
    let a = sha256.get(0..2).unwrap_or("00");
    let b = sha256.get(2..4).unwrap_or("00");
    format!("media/{a}/{b}/{sha256}")
}

/// The media with this sha256 (lowercase hex), if stored.
pub async fn find_by_sha256(db: &Db, sha256: &str) -> Result<Option<MediaRow>, sqlx::Error> {
    query(
        "SELECT id, sha256, size, content_type, original_name, object_key, created_at \
         FROM media WHERE sha256 = $1",
    )
    .bind(sha256.to_string())
    .fetch_optional(&db.pool)
    .await?
    .map(|r| row(&r))
    .transpose()
}

/// Records stored content; a concurrent insert of the same sha256 is not an error — the
/// first row wins and is returned. Returns `(row, created)`.
pub async fn insert(
    db: &Db,
    sha256: &str,
    size: i64,
    content_type: &str,
    original_name: Option<&str>,
) -> Result<(MediaRow, bool), sqlx::Error> {
    let done = query(
        "INSERT INTO media (sha256, size, content_type, original_name, object_key, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (sha256) DO NOTHING",
    )
    .bind(sha256.to_string())
    .bind(size)
    .bind(content_type.to_string())
    .bind(original_name.map(str::to_string))
    .bind(object_key(sha256))
    .bind(now_ms())
    .execute(&db.pool)
    .await?;
    let row = find_by_sha256(db, sha256)
        .await?
        .ok_or(sqlx::Error::RowNotFound)?;
    Ok((row, done.rows_affected() > 0))
}

/// [`insert`] on the caller's connection (`&mut *tx`), created at `now`: records stored
/// content unless its sha256 is known, and returns the media id either way.
pub async fn insert_in(
    conn: &mut sqlx::AnyConnection,
    sha256: &str,
    size: i64,
    content_type: &str,
    original_name: Option<&str>,
    now: i64,
) -> Result<i64, sqlx::Error> {
    query(
        "INSERT INTO media (sha256, size, content_type, original_name, object_key, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (sha256) DO NOTHING",
    )
    .bind(sha256.to_string())
    .bind(size)
    .bind(content_type.to_string())
    .bind(original_name.map(str::to_string))
    .bind(object_key(sha256))
    .bind(now)
    .execute(&mut *conn)
    .await?;
    query("SELECT id FROM media WHERE sha256 = $1")
        .bind(sha256.to_string())
        .fetch_one(&mut *conn)
        .await?
        .try_get(0)
}

/// How many of `ids` exist (to validate attachments before linking them).
pub async fn count_existing(db: &Db, ids: &[i64]) -> Result<i64, sqlx::Error> {
    if ids.is_empty() {
        return Ok(0);
    }
    let placeholders: Vec<String> = (1..=ids.len()).map(|i| format!("${i}")).collect();
    let mut q = crate::db::query_built(format!(
        "SELECT count(*) FROM media WHERE id IN ({})",
        placeholders.join(", ")
    ));
    for id in ids {
        q = q.bind(*id);
    }
    q.fetch_one(&db.pool).await?.try_get(0)
}

/// How many of `ids` key `key_id` may attach under `scope`: for [`Scope::All`] every
/// existing one; for an operator, media it uploaded (see [`grant`]) or media already on a
/// message of one of its offices — never another office's document picked by id.
pub async fn count_attachable(
    db: &Db,
    scope: &Scope,
    key_id: i64,
    ids: &[i64],
) -> Result<i64, sqlx::Error> {
    if ids.is_empty() {
        return Ok(0);
    }
    let Some((office_cond, offices)) = scope.office_filter("c.office_id", ids.len() + 2) else {
        return count_existing(db, ids).await;
    };
    let placeholders: Vec<String> = (0..ids.len()).map(|i| format!("${}", i + 2)).collect();
    let mut q = crate::db::query_built(format!(
        "SELECT count(*) FROM media md WHERE md.id IN ({}) AND (\
         EXISTS (SELECT 1 FROM media_grants g WHERE g.media_id = md.id AND g.api_key_id = $1) \
         OR EXISTS (SELECT 1 FROM message_media mm JOIN messages m ON m.id = mm.message_id \
         JOIN conversations c ON c.id = m.conversation_id \
         WHERE mm.media_id = md.id AND {office_cond}))",
        placeholders.join(", ")
    ))
    .bind(key_id);
    for id in ids {
        q = q.bind(*id);
    }
    for office in offices {
        q = q.bind(*office);
    }
    q.fetch_one(&db.pool).await?.try_get(0)
}

/// Records that key `key_id` uploaded media `media_id` (it holds the bytes), so it may
/// attach it. Idempotent.
pub async fn grant(db: &Db, key_id: i64, media_id: i64) -> Result<(), sqlx::Error> {
    query(
        "INSERT INTO media_grants (api_key_id, media_id) VALUES ($1, $2) \
         ON CONFLICT (api_key_id, media_id) DO NOTHING",
    )
    .bind(key_id)
    .bind(media_id)
    .execute(&db.pool)
    .await
    .map(|_| ())
}

fn row(r: &AnyRow) -> Result<MediaRow, sqlx::Error> {
    Ok(MediaRow {
        id: r.try_get(0)?,
        sha256: r.try_get(1)?,
        size: r.try_get(2)?,
        content_type: r.try_get(3)?,
        original_name: r.try_get(4)?,
        object_key: r.try_get(5)?,
        created_at: r.try_get(6)?,
    })
}
