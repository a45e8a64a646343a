//! Clients, offices and conversations: creation and client search.
//!
//! Search is by substring of name, phone or email: an FTS5 trigram index on SQLite, a
//! `pg_trgm` GIN index on PostgreSQL. Both need at least three characters to use the index.

use serde::Serialize;
use sqlx::{AnyConnection, Row};

use super::api_keys::Scope;
use crate::db::{now_ms, query, query_built, Backend, Db};

/// Shortest search string (a trigram index cannot serve fewer characters).
pub const MIN_QUERY_CHARS: usize = 3;

#[derive(Debug, Clone, Serialize)]
pub struct Client {
    pub id: i64,
    pub name: String,
    pub phone: Option<String>,
    pub email: Option<String>,
}

/// The search SQL of a backend (shared with the `EXPLAIN` tests).
pub fn search_sql(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => {
            "SELECT c.id, c.name, c.phone, c.email FROM clients_fts f \
             JOIN clients c ON c.id = f.rowid WHERE clients_fts MATCH $1 \
             ORDER BY c.name, c.id LIMIT $2"
        }
        Backend::Postgres => {
            "SELECT id, name, phone, email FROM clients \
             WHERE (name || ' ' || coalesce(phone, '') || ' ' || coalesce(email, '')) ILIKE $1 \
             ORDER BY name, id LIMIT $2"
        }
    }
}

/// [`search_sql`] limited to clients with a conversation in one of `offices` office ids
/// (bound from `$3` on); `None` = every client.
pub fn search_sql_scoped(backend: Backend, offices: Option<usize>) -> String {
    let Some(k) = offices else {
        return search_sql(backend).to_string();
    };
    let cond = if k == 0 {
        "1 = 0".to_string()
    } else {
        let list: Vec<String> = (0..k).map(|i| format!("${}", i + 3)).collect();
        format!("cv.office_id IN ({})", list.join(", "))
    };
    let id = match backend {
        Backend::Sqlite => "c.id",
        Backend::Postgres => "clients.id",
    };
    let scoped =
        format!(" AND EXISTS (SELECT 1 FROM conversations cv WHERE cv.client_id = {id} AND {cond}) ORDER BY");
    search_sql(backend).replacen(" ORDER BY", &scoped, 1)
}

/// The bound search argument for `q` on a backend (an FTS phrase / an ILIKE pattern).
pub fn search_arg(backend: Backend, q: &str) -> String {
    match backend {
        Backend::Sqlite => format!("\"{}\"", q.replace('"', "\"\"")),
        Backend::Postgres => {
            let escaped = q
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            format!("%{escaped}%")
        }
    }
}

/// Clients whose name, phone or email contains `q` (case-insensitive), by name; for an
/// operator only clients with a conversation in its offices.
pub async fn search(
    db: &Db,
    scope: &Scope,
    q: &str,
    limit: i64,
) -> Result<Vec<Client>, sqlx::Error> {
    let offices = match scope {
        Scope::All => None,
        Scope::Offices(ids) => Some(ids.as_slice()),
    };
    let mut query = query_built(search_sql_scoped(db.backend, offices.map(<[i64]>::len)))
        .bind(search_arg(db.backend, q))
        .bind(limit);
    for office in offices.unwrap_or_default() {
        query = query.bind(*office);
    }
    let rows = query.fetch_all(&db.pool).await?;
    rows.iter()
        .map(|r| {
            Ok(Client {
                id: r.try_get(0)?,
                name: r.try_get(1)?,
                phone: r.try_get(2)?,
                email: r.try_get(3)?,
            })
        })
        .collect()
}

/// Whether `e` is the text index refusing the search string (SQLite FTS5 syntax errors,
/// e.g. "unterminated string"), as opposed to a database failure.
pub fn is_search_syntax_error(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => {
            let m = db.message();
            m.contains("fts5") || m.contains("unterminated string")
        }
        _ => false,
    }
}

/// Creates an office; returns its id.
pub async fn create_office(
    conn: &mut AnyConnection,
    name: &str,
    timezone: &str,
) -> Result<i64, sqlx::Error> {
    query("INSERT INTO offices (name, timezone, created_at) VALUES ($1, $2, $3) RETURNING id")
        .bind(name.to_string())
        .bind(timezone.to_string())
        .bind(now_ms())
        .fetch_one(&mut *conn)
        .await?
        .try_get(0)
}

/// An office as listed for choosing one (the console's key form).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OfficeName {
    pub id: i64,
    pub name: String,
}

/// Every office, by id.
pub async fn list_offices(db: &Db) -> Result<Vec<OfficeName>, sqlx::Error> {
    query("SELECT id, name FROM offices ORDER BY id")
        .fetch_all(&db.pool)
        .await?
        .iter()
        .map(|r| {
            Ok(OfficeName {
                id: r.try_get(0)?,
                name: r.try_get(1)?,
            })
        })
        .collect()
}

/// Creates a client; returns its id.
pub async fn create_client(
    conn: &mut AnyConnection,
    name: &str,
    phone: Option<&str>,
    email: Option<&str>,
) -> Result<i64, sqlx::Error> {
    create_client_at(conn, name, phone, email, now_ms()).await
}

/// [`create_client`] created at `now` (Unix milliseconds).
pub async fn create_client_at(
    conn: &mut AnyConnection,
    name: &str,
    phone: Option<&str>,
    email: Option<&str>,
    now: i64,
) -> Result<i64, sqlx::Error> {
    query(
        "INSERT INTO clients (name, phone, email, created_at) VALUES ($1, $2, $3, $4) RETURNING id",
    )
    .bind(name.to_string())
    .bind(phone.map(str::to_string))
    .bind(email.map(str::to_string))
    .bind(now)
    .fetch_one(&mut *conn)
    .await?
    .try_get(0)
}

/// Creates a conversation (no messages yet; last activity = now); returns its id.
pub async fn create_conversation(
    conn: &mut AnyConnection,
    platform: &str,
    client_id: i64,
    office_id: Option<i64>,
    external_chat_id: &str,
) -> Result<i64, sqlx::Error> {
    create_conversation_at(
        conn,
        platform,
        client_id,
        office_id,
        external_chat_id,
        now_ms(),
    )
    .await
}

/// [`create_conversation`] created (and last active) at `now` (Unix milliseconds).
pub async fn create_conversation_at(
    conn: &mut AnyConnection,
    platform: &str,
    client_id: i64,
    office_id: Option<i64>,
    external_chat_id: &str,
    now: i64,
) -> Result<i64, sqlx::Error> {
    query(
        "INSERT INTO conversations (platform, client_id, office_id, external_chat_id, \
         last_activity_at, unread_count, created_at) VALUES ($1, $2, $3, $4, $5, 0, $5) \
         RETURNING id",
    )
    .bind(platform.to_string())
    .bind(client_id)
    .bind(office_id)
    .bind(external_chat_id.to_string())
    .bind(now)
    .fetch_one(&mut *conn)
    .await?
    .try_get(0)
}

/// The conversation on `platform` with `external_chat_id`, if any.
pub async fn find_conversation(
    conn: &mut AnyConnection,
    platform: &str,
    external_chat_id: &str,
) -> Result<Option<i64>, sqlx::Error> {
    query("SELECT id FROM conversations WHERE platform = $1 AND external_chat_id = $2")
        .bind(platform.to_string())
        .bind(external_chat_id.to_string())
        .fetch_optional(&mut *conn)
        .await?
        .map(|r| r.try_get(0))
        .transpose()
}
