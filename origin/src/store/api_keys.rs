//! API keys: random bearer tokens of which only the sha256 is stored, each with a role.
//!
//! An `admin` key sees everything and may use `/admin/*`; an `operator` key sees only the
//! conversations (and their clients, messages and media) of the offices it lists. A key
//! can expire and be revoked; neither deletes it, so `keys list` keeps the history.

use rand::RngCore;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::db::{now_ms, query, Db};

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Every office, and the admin API.
    Admin,
    /// Only the key's offices; no admin API.
    Operator,
}

impl Role {
    /// The stored form (the `api_keys.role` CHECK).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
        }
    }

    fn parse(s: &str) -> Result<Role, sqlx::Error> {
        match s {
            "admin" => Ok(Role::Admin),
            "operator" => Ok(Role::Operator),
            other => Err(sqlx::Error::Decode(
                format!("unknown api_keys.role {other:?}").into(),
            )),
        }
    }
}

/// Which conversations a request may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every conversation (admin keys).
    All,
    /// Conversations of these offices only (operator keys; may be empty: nothing).
    Offices(Vec<i64>),
}

impl Scope {
    /// The SQL condition `<column> IN (...)` with placeholders numbered from `first`, and
    /// the ids to bind; `None` for [`Scope::All`]. An empty office list matches nothing.
    pub fn office_filter(&self, column: &str, first: usize) -> Option<(String, &[i64])> {
        match self {
            Scope::All => None,
            Scope::Offices(ids) if ids.is_empty() => Some(("1 = 0".to_string(), ids)),
            Scope::Offices(ids) => {
                let list: Vec<String> = (0..ids.len()).map(|i| format!("${}", first + i)).collect();
                Some((format!("{column} IN ({})", list.join(", ")), ids))
            }
        }
    }

    /// Whether a conversation of `office_id` is visible.
    pub fn allows(&self, office_id: Option<i64>) -> bool {
        match self {
            Scope::All => true,
            Scope::Offices(ids) => office_id.is_some_and(|o| ids.contains(&o)),
        }
    }
}

/// The key a request authenticated with.
#[derive(Debug, Clone)]
pub struct ApiKey {
    pub id: i64,
    pub role: Role,
    /// Offices of an operator key (empty for admin keys).
    pub offices: Vec<i64>,
}

impl ApiKey {
    /// What this key may see.
    pub fn scope(&self) -> Scope {
        match self.role {
            Role::Admin => Scope::All,
            Role::Operator => Scope::Offices(self.offices.clone()),
        }
    }
}

/// A key to create with [`create_key`].
#[derive(Debug, Clone)]
pub struct NewKey {
    pub name: String,
    pub role: Role,
    /// Required (at least one) for an operator key, empty for an admin key.
    pub offices: Vec<i64>,
    /// Unix ms; `None` = never expires.
    pub expires_at: Option<i64>,
}

/// Why a key could not be created.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("an operator key needs at least one --office")]
    NoOffices,
    #[error("an admin key sees every office; do not give it --office")]
    AdminWithOffices,
    #[error("office {0} does not exist")]
    UnknownOffice(i64),
    #[error("the key name must not be empty")]
    EmptyName,
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// The stored form of a token: lowercase hex sha256.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Creates an admin key (`is_admin`) or an operator key of no office (which sees
/// nothing: tests and callers that only need "not an admin"); returns `(id, token)`.
pub async fn create(db: &Db, name: &str, is_admin: bool) -> Result<(i64, String), sqlx::Error> {
    let role = if is_admin {
        Role::Admin
    } else {
        Role::Operator
    };
    let mut tx = db.pool.begin().await?;
    let created = insert(&mut tx, name, role, None).await?;
    tx.commit().await?;
    Ok(created)
}

/// Creates a key; returns `(id, token)`. The token (64 lowercase hex) is shown only now.
pub async fn create_key(db: &Db, key: &NewKey) -> Result<(i64, String), KeyError> {
    let mut tx = db.pool.begin().await?;
    let created = create_key_in(&mut tx, key).await?;
    tx.commit().await?;
    Ok(created)
}

/// [`create_key`] inside the caller's transaction (the console records the creation in
/// the same one). Nothing is written when it fails, provided the caller rolls back.
pub async fn create_key_in(
    conn: &mut sqlx::AnyConnection,
    key: &NewKey,
) -> Result<(i64, String), KeyError> {
    if key.name.trim().is_empty() {
        return Err(KeyError::EmptyName);
    }
    match key.role {
        Role::Operator if key.offices.is_empty() => return Err(KeyError::NoOffices),
        Role::Admin if !key.offices.is_empty() => return Err(KeyError::AdminWithOffices),
        _ => {}
    }
    let mut offices = key.offices.clone();
    offices.sort_unstable();
    offices.dedup();
    for office in &offices {
        let exists = query("SELECT id FROM offices WHERE id = $1")
            .bind(*office)
            .fetch_optional(&mut *conn)
            .await?
            .is_some();
        if !exists {
            return Err(KeyError::UnknownOffice(*office));
        }
    }
    let (id, token) = insert(conn, &key.name, key.role, key.expires_at).await?;
    for office in &offices {
        query("INSERT INTO api_key_offices (api_key_id, office_id) VALUES ($1, $2)")
            .bind(id)
            .bind(*office)
            .execute(&mut *conn)
            .await?;
    }
    Ok((id, token))
}

async fn insert(
    conn: &mut sqlx::AnyConnection,
    name: &str,
    role: Role,
    expires_at: Option<i64>,
) -> Result<(i64, String), sqlx::Error> {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    let token = hex::encode(bytes);
    let row = query(
        "INSERT INTO api_keys (name, key_hash, role, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5) RETURNING id",
    )
    .bind(name.to_string())
    .bind(hash_token(&token))
    .bind(role.as_str())
    .bind(now_ms())
    .bind(expires_at)
    .fetch_one(&mut *conn)
    .await?;
    Ok((row.try_get::<i64, _>(0)?, token))
}

/// The live (unrevoked, unexpired) key whose token is `token`, if any: one statement.
pub async fn authenticate(db: &Db, token: &str) -> Result<Option<ApiKey>, sqlx::Error> {
    let rows = query(
        "SELECT k.id, k.role, o.office_id FROM api_keys k \
         LEFT JOIN api_key_offices o ON o.api_key_id = k.id \
         WHERE k.key_hash = $1 AND k.revoked_at IS NULL \
         AND (k.expires_at IS NULL OR k.expires_at > $2)",
    )
    .bind(hash_token(token))
    .bind(now_ms())
    .fetch_all(&db.pool)
    .await?;
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let role = Role::parse(&first.try_get::<String, _>(1)?)?;
    let mut offices = Vec::new();
    if role == Role::Operator {
        for r in &rows {
            if let Some(o) = r.try_get::<Option<i64>, _>(2)? {
                offices.push(o);
            }
        }
    }
    Ok(Some(ApiKey {
        id: first.try_get(0)?,
        role,
        offices,
    }))
}

/// Records that key `id` was used at `now`.
pub async fn touch(db: &Db, id: i64, now: i64) -> Result<(), sqlx::Error> {
    query("UPDATE api_keys SET last_used_at = $1 WHERE id = $2")
        .bind(now)
        .bind(id)
        .execute(&db.pool)
        .await
        .map(|_| ())
}

/// One row of `keys list`.
#[derive(Debug, Clone, Serialize)]
pub struct KeyInfo {
    pub id: i64,
    pub name: String,
    pub role: Role,
    pub offices: Vec<i64>,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

/// Every key, oldest first (two statements whatever the count).
pub async fn list(db: &Db) -> Result<Vec<KeyInfo>, sqlx::Error> {
    let rows = query(
        "SELECT id, name, role, created_at, last_used_at, expires_at, revoked_at \
         FROM api_keys ORDER BY id",
    )
    .fetch_all(&db.pool)
    .await?;
    let mut keys = rows
        .iter()
        .map(|r| {
            Ok(KeyInfo {
                id: r.try_get(0)?,
                name: r.try_get(1)?,
                role: Role::parse(&r.try_get::<String, _>(2)?)?,
                offices: Vec::new(),
                created_at: r.try_get(3)?,
                last_used_at: r.try_get(4)?,
                expires_at: r.try_get(5)?,
                revoked_at: r.try_get(6)?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    let links =
        query("SELECT api_key_id, office_id FROM api_key_offices ORDER BY api_key_id, office_id")
            .fetch_all(&db.pool)
            .await?;
    for r in &links {
        let (key, office): (i64, i64) = (r.try_get(0)?, r.try_get(1)?);
        if let Some(k) = keys.iter_mut().find(|k| k.id == key) {
            k.offices.push(office);
        }
    }
    Ok(keys)
}

/// Revokes key `id` at `now`. `Ok(false)` when there is no such key; revoking twice keeps
/// the first time.
pub async fn revoke(db: &Db, id: i64, now: i64) -> Result<bool, sqlx::Error> {
    let mut conn = db.pool.acquire().await?;
    revoke_in(&mut conn, id, now).await
}

/// [`revoke`] on the caller's connection or transaction.
pub async fn revoke_in(
    conn: &mut sqlx::AnyConnection,
    id: i64,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let done = query("UPDATE api_keys SET revoked_at = coalesce(revoked_at, $1) WHERE id = $2")
        .bind(now)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected() > 0)
}
