//! The inbox: conversations by last activity, each with its client, last message preview
//! and unread count — one indexed query per page, whatever the page size, because the
//! last message and unread count are denormalised onto `conversations`.

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::api_keys::Scope;
use super::Cursor;
use crate::db::{query_built, Db};

/// Longest preview of the last message, in characters.
pub const PREVIEW_CHARS: i64 = 140;

#[derive(Debug, Clone, Serialize)]
pub struct ClientSummary {
    pub id: i64,
    pub name: String,
    pub phone: Option<String>,
    pub email: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LastMessage {
    pub id: i64,
    pub direction: String,
    pub preview: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct InboxItem {
    pub id: i64,
    pub platform: String,
    pub external_chat_id: String,
    pub office_id: Option<i64>,
    pub last_activity_at: i64,
    pub unread_count: i64,
    pub client: ClientSummary,
    pub last_message: Option<LastMessage>,
}

/// The SQL of one inbox page; shared with the `EXPLAIN` tests so they check the real query.
///
/// The page is chosen in a subquery on `conversations` alone (walking the inbox index) and
/// only then joined to its clients and last messages, so rows skipped by `OFFSET` are
/// never joined. The outer query has no ORDER BY: [`page`] orders the at most `limit`
/// rows itself rather than have the database sort them again.
pub fn inbox_sql(platform: bool, cursor: bool) -> String {
    inbox_sql_scoped(platform, cursor, None)
}

/// [`inbox_sql`] limited to `offices` office ids (bound after the platform and cursor
/// arguments, before limit and offset); `None` = every office.
pub fn inbox_sql_scoped(platform: bool, cursor: bool, offices: Option<usize>) -> String {
    let mut n = 0;
    let mut next = || {
        n += 1;
        format!("${n}")
    };
    let mut conds = Vec::new();
    if platform {
        conds.push(format!("platform = {}", next()));
    }
    if cursor {
        let (a, b) = (next(), next());
        conds.push(format!("(last_activity_at, id) < ({a}, {b})"));
    }
    match offices {
        None => {}
        Some(0) => conds.push("1 = 0".to_string()),
        Some(k) => {
            let list: Vec<String> = (0..k).map(|_| next()).collect();
            conds.push(format!("office_id IN ({})", list.join(", ")));
        }
    }
    let filter = if conds.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conds.join(" AND "))
    };
    let (limit, offset) = (next(), next());
    format!(
        "SELECT c.id, c.platform, c.external_chat_id, c.office_id, c.last_activity_at, \
         c.unread_count, cl.id AS client_id, cl.name, cl.phone, cl.email, \
         m.id AS m_id, m.direction, substr(m.text, 1, {PREVIEW_CHARS}) AS preview, \
         m.created_at AS m_created_at \
         FROM (SELECT id, platform, external_chat_id, office_id, last_activity_at, \
         unread_count, client_id, last_message_id FROM conversations{filter} \
         ORDER BY last_activity_at DESC, id DESC LIMIT {limit} OFFSET {offset}) c \
         JOIN clients cl ON cl.id = c.client_id \
         LEFT JOIN messages m ON m.id = c.last_message_id"
    )
}

/// One page of at most `limit` conversations after `cursor`, skipping `offset` rows
/// (offset exists for comparison and shallow jumps; deep pages should use the cursor,
/// whose cost does not grow with depth).
/// Only conversations `scope` allows are listed.
pub async fn page(
    db: &Db,
    scope: &Scope,
    platform: Option<&str>,
    cursor: Option<Cursor>,
    limit: i64,
    offset: i64,
) -> Result<Vec<InboxItem>, sqlx::Error> {
    let offices = match scope {
        Scope::All => None,
        Scope::Offices(ids) => Some(ids.as_slice()),
    };
    let mut q = query_built(inbox_sql_scoped(
        platform.is_some(),
        cursor.is_some(),
        offices.map(<[i64]>::len),
    ));
    if let Some(p) = platform {
        q = q.bind(p.to_string());
    }
    if let Some(c) = cursor {
        q = q.bind(c.ts).bind(c.id);
    }
    for office in offices.unwrap_or_default() {
        q = q.bind(*office);
    }
    let rows = q.bind(limit).bind(offset).fetch_all(&db.pool).await?;
    let mut items = rows.iter().map(item).collect::<Result<Vec<_>, _>>()?;
    // Newest activity first, ties by id: the order of the subquery's index walk.
    items.sort_unstable_by_key(|i| std::cmp::Reverse((i.last_activity_at, i.id)));
    Ok(items)
}

fn item(r: &AnyRow) -> Result<InboxItem, sqlx::Error> {
    let m_id: Option<i64> = r.try_get("m_id")?;
    let last_message = match m_id {
        Some(id) => Some(LastMessage {
            id,
            direction: r.try_get("direction")?,
            preview: r
                .try_get::<Option<String>, _>("preview")?
                .unwrap_or_default(),
            created_at: r.try_get("m_created_at")?,
        }),
        None => None,
    };
    Ok(InboxItem {
        id: r.try_get("id")?,
        platform: r.try_get("platform")?,
        external_chat_id: r.try_get("external_chat_id")?,
        office_id: r.try_get("office_id")?,
        last_activity_at: r.try_get("last_activity_at")?,
        unread_count: r.try_get("unread_count")?,
        client: ClientSummary {
            id: r.try_get("client_id")?,
            name: r.try_get("name")?,
            phone: r.try_get("phone")?,
            email: r.try_get("email")?,
        },
        last_message,
    })
}
