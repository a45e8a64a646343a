//! Messages of a conversation: the one way to insert a message (which keeps the
//! conversation's last message and unread count in step), pages of messages with their
//! media, and marking a conversation read.

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::api_keys::Scope;
use super::Cursor;
use crate::db::{query, query_built, Db};

/// Where a message is on its way (`messages.delivery_status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Outbound, not yet taken by the platform.
    Pending,
    Sent,
    Delivered,
    Read,
    Failed,
    /// Inbound.
    Received,
    /// Outbound, an attempt may have reached the platform: its send waits for an operator
    /// (`queue retry ID` makes it `pending` again, `queue mark-sent ID` makes it `sent`).
    DeliveryUnknown,
}

impl DeliveryStatus {
    pub const ALL: [DeliveryStatus; 7] = [
        DeliveryStatus::Pending,
        DeliveryStatus::Sent,
        DeliveryStatus::Delivered,
        DeliveryStatus::Read,
        DeliveryStatus::Failed,
        DeliveryStatus::Received,
        DeliveryStatus::DeliveryUnknown,
    ];

    /// The value stored in `messages.delivery_status`.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Sent => "sent",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Read => "read",
            DeliveryStatus::Failed => "failed",
            DeliveryStatus::Received => "received",
            DeliveryStatus::DeliveryUnknown => "delivery_unknown",
        }
    }

    /// The status stored as `s`; `None` for a value the schema's CHECK does not allow.
    pub fn parse(s: &str) -> Option<DeliveryStatus> {
        DeliveryStatus::ALL.into_iter().find(|d| d.as_str() == s)
    }

    /// The platform has taken the message: a send must not go out again.
    pub fn is_delivered(self) -> bool {
        matches!(
            self,
            DeliveryStatus::Sent | DeliveryStatus::Delivered | DeliveryStatus::Read
        )
    }
}

impl std::fmt::Display for DeliveryStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Reads a stored status; a value outside the enum is a decode error, not a panic.
pub fn delivery_status_at(r: &AnyRow, i: usize) -> Result<DeliveryStatus, sqlx::Error> {
    let s: String = r.try_get(i)?;
    DeliveryStatus::parse(&s).ok_or_else(|| sqlx::Error::ColumnDecode {
        index: i.to_string(),
        source: format!("unknown delivery_status {s:?}").into(),
    })
}

/// A message to insert with [`insert_message`].
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub conversation_id: i64,
    /// `"in"` (from the client) or `"out"` (from us).
    pub direction: String,
    pub text: String,
    /// Unix milliseconds.
    pub created_at: i64,
    pub delivery_status: DeliveryStatus,
    /// Media attached, in order (ids in `media`).
    pub media_ids: Vec<i64>,
}

impl NewMessage {
    /// An inbound message received now.
    pub fn inbound(conversation_id: i64, text: impl Into<String>) -> NewMessage {
        NewMessage {
            conversation_id,
            direction: "in".into(),
            text: text.into(),
            created_at: crate::db::now_ms(),
            delivery_status: DeliveryStatus::Received,
            media_ids: Vec::new(),
        }
    }

    /// An outbound message to be sent (status `pending`).
    pub fn outbound(conversation_id: i64, text: impl Into<String>) -> NewMessage {
        NewMessage {
            conversation_id,
            direction: "out".into(),
            text: text.into(),
            created_at: crate::db::now_ms(),
            delivery_status: DeliveryStatus::Pending,
            media_ids: Vec::new(),
        }
    }
}

/// Inserts a message and its media links, and updates the conversation's last message,
/// last activity and (for inbound) unread count — run it inside the caller's transaction
/// (`&mut *tx`) so the counters never drift from the messages.
/// Fails with `RowNotFound` when the conversation does not exist.
pub async fn insert_message(conn: &mut AnyConnection, m: &NewMessage) -> Result<i64, sqlx::Error> {
    let unread: i64 = if m.direction == "in" { 1 } else { 0 };
    // The conversation update comes first: it locks the row (so concurrent inserts into one
    // conversation serialise on PostgreSQL) and tells us whether it exists.
    let updated = query(
        "UPDATE conversations SET unread_count = unread_count + $1, \
         last_activity_at = CASE WHEN $2 >= last_activity_at THEN $2 ELSE last_activity_at END \
         WHERE id = $3",
    )
    .bind(unread)
    .bind(m.created_at)
    .bind(m.conversation_id)
    .execute(&mut *conn)
    .await?;
    if updated.rows_affected() == 0 {
        return Err(sqlx::Error::RowNotFound);
    }
    let row = query(
        "INSERT INTO messages (conversation_id, direction, text, created_at, delivery_status) \
         VALUES ($1, $2, $3, $4, $5) RETURNING id",
    )
    .bind(m.conversation_id)
    .bind(m.direction.clone())
    .bind(m.text.clone())
    .bind(m.created_at)
    .bind(m.delivery_status.as_str())
    .fetch_one(&mut *conn)
    .await?;
    let id: i64 = row.try_get(0)?;
    // The newest message wins; an older one inserted late does not become the preview.
    query(
        "UPDATE conversations SET last_message_id = $1 \
         WHERE id = $2 AND last_activity_at = $3",
    )
    .bind(id)
    .bind(m.conversation_id)
    .bind(m.created_at)
    .execute(&mut *conn)
    .await?;
    if !m.media_ids.is_empty() {
        let mut sql =
            String::from("INSERT INTO message_media (message_id, media_id, position) VALUES ");
        for i in 0..m.media_ids.len() {
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!("($1, ${}, {i})", i + 2));
        }
        let mut q = query_built(sql).bind(id);
        for media_id in &m.media_ids {
            q = q.bind(*media_id);
        }
        q.execute(&mut *conn).await?;
    }
    Ok(id)
}

/// Inserts inbound message `m` that the platform identifies as `external_id`, unless the
/// conversation already has it (a redelivered webhook): then `None` and nothing is written.
/// Like [`insert_message`] it keeps the conversation's unread count, last activity and
/// last message (the newest wins) in step, in the caller's transaction.
pub async fn insert_inbound_once(
    conn: &mut AnyConnection,
    m: &NewMessage,
    external_id: &str,
) -> Result<Option<i64>, sqlx::Error> {
    let inserted = query(
        "INSERT INTO messages (conversation_id, direction, text, created_at, delivery_status, \
         external_id) VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (conversation_id, direction, external_id) WHERE external_id IS NOT NULL \
         DO NOTHING RETURNING id",
    )
    .bind(m.conversation_id)
    .bind(m.direction.clone())
    .bind(m.text.clone())
    .bind(m.created_at)
    .bind(m.delivery_status.as_str())
    .bind(external_id.to_string())
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = inserted else {
        return Ok(None);
    };
    let id: i64 = row.try_get(0)?;
    let unread: i64 = if m.direction == "in" { 1 } else { 0 };
    query(
        "UPDATE conversations SET unread_count = unread_count + $1, \
         last_activity_at = CASE WHEN $2 >= last_activity_at THEN $2 ELSE last_activity_at END \
         WHERE id = $3",
    )
    .bind(unread)
    .bind(m.created_at)
    .bind(m.conversation_id)
    .execute(&mut *conn)
    .await?;
    // The newest message wins, as in `insert_message`.
    query(
        "UPDATE conversations SET last_message_id = $1 \
         WHERE id = $2 AND last_activity_at = $3",
    )
    .bind(id)
    .bind(m.conversation_id)
    .bind(m.created_at)
    .execute(&mut *conn)
    .await?;
    Ok(Some(id))
}

/// The message of `conversation_id` the platform identifies as `external_id` (direction
/// `direction`), if stored.
pub async fn find_by_external_id(
    conn: &mut AnyConnection,
    conversation_id: i64,
    direction: &str,
    external_id: &str,
) -> Result<Option<i64>, sqlx::Error> {
    query(
        "SELECT id FROM messages WHERE conversation_id = $1 AND direction = $2 \
         AND external_id = $3",
    )
    .bind(conversation_id)
    .bind(direction.to_string())
    .bind(external_id.to_string())
    .fetch_optional(&mut *conn)
    .await?
    .map(|r| r.try_get(0))
    .transpose()
}

/// Links media `media_id` to message `message_id` at `position`; linking it again is a
/// no-op (a re-run download).
pub async fn link_media(
    conn: &mut AnyConnection,
    message_id: i64,
    media_id: i64,
    position: i64,
) -> Result<(), sqlx::Error> {
    query(
        "INSERT INTO message_media (message_id, media_id, position) VALUES ($1, $2, $3) \
         ON CONFLICT (message_id, media_id) DO NOTHING",
    )
    .bind(message_id)
    .bind(media_id)
    .bind(position)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Shows on outbound message `id` that its send waits for an operator (the send task is
/// being parked as `delivery_unknown`), on the caller's connection: the park's transaction.
/// A message the platform already took, or one not pending or failed, keeps its status.
/// Returns whether the message changed.
pub async fn mark_delivery_unknown(conn: &mut AnyConnection, id: i64) -> Result<bool, sqlx::Error> {
    let r = query(
        "UPDATE messages SET delivery_status = $1 WHERE id = $2 \
         AND delivery_status IN ($3, $4)",
    )
    .bind(DeliveryStatus::DeliveryUnknown.as_str())
    .bind(id)
    .bind(DeliveryStatus::Pending.as_str())
    .bind(DeliveryStatus::Failed.as_str())
    .execute(&mut *conn)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Marks every unread inbound message of a conversation read at `now` and zeroes its
/// unread count. Returns how many messages were marked, or `None` if no such conversation.
pub async fn mark_read(
    conn: &mut AnyConnection,
    conversation_id: i64,
    now: i64,
) -> Result<Option<u64>, sqlx::Error> {
    let conv = query("UPDATE conversations SET unread_count = 0 WHERE id = $1")
        .bind(conversation_id)
        .execute(&mut *conn)
        .await?;
    if conv.rows_affected() == 0 {
        return Ok(None);
    }
    let done = query(
        "UPDATE messages SET read_at = $1 \
         WHERE conversation_id = $2 AND read_at IS NULL AND direction = 'in'",
    )
    .bind(now)
    .bind(conversation_id)
    .execute(&mut *conn)
    .await?;
    Ok(Some(done.rows_affected()))
}

/// Whether a conversation exists.
pub async fn conversation_exists(db: &Db, id: i64) -> Result<bool, sqlx::Error> {
    Ok(query("SELECT id FROM conversations WHERE id = $1")
        .bind(id)
        .fetch_optional(&db.pool)
        .await?
        .is_some())
}

/// Whether conversation `id` exists and `scope` may see it. For [`Scope::All`] this costs
/// nothing (the caller's own query tells a missing conversation); for an operator it is one
/// indexed lookup, so another office's conversation looks exactly like a missing one.
pub async fn conversation_visible(db: &Db, scope: &Scope, id: i64) -> Result<bool, sqlx::Error> {
    if *scope == Scope::All {
        return Ok(true);
    }
    let office: Option<Option<i64>> = query("SELECT office_id FROM conversations WHERE id = $1")
        .bind(id)
        .fetch_optional(&db.pool)
        .await?
        .map(|r| r.try_get(0))
        .transpose()?;
    Ok(office.is_some_and(|o| scope.allows(o)))
}

/// A media item as listed with a message.
#[derive(Debug, Clone, Serialize)]
pub struct MessageMedia {
    pub id: i64,
    pub sha256: String,
    pub size: i64,
    pub content_type: String,
    pub original_name: Option<String>,
    pub url: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Message {
    pub id: i64,
    pub conversation_id: i64,
    pub direction: String,
    pub text: String,
    pub created_at: i64,
    pub read_at: Option<i64>,
    pub delivery_status: DeliveryStatus,
    pub media: Vec<MessageMedia>,
}

/// Where a page of messages starts.
#[derive(Debug, Clone, Copy)]
pub enum PageStart {
    Offset(i64),
    Before(Cursor),
}

/// The SQL of one page of messages (shared with the `EXPLAIN` tests).
pub fn page_sql(before: bool) -> &'static str {
    if before {
        "SELECT id, conversation_id, direction, text, created_at, read_at, delivery_status \
         FROM messages WHERE conversation_id = $1 AND (created_at, id) < ($2, $3) \
         ORDER BY created_at DESC, id DESC LIMIT $4"
    } else {
        "SELECT id, conversation_id, direction, text, created_at, read_at, delivery_status \
         FROM messages WHERE conversation_id = $1 \
         ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3"
    }
}

/// One page of a conversation's messages, newest first, each with its media; at most two
/// statements whatever the page size. `media_url` turns a sha256 into a URL.
pub async fn page(
    db: &Db,
    conversation_id: i64,
    start: PageStart,
    limit: i64,
    media_url: &(dyn Fn(&str) -> String + Sync),
) -> Result<Vec<Message>, sqlx::Error> {
    let rows = match start {
        PageStart::Offset(offset) => {
            query(page_sql(false))
                .bind(conversation_id)
                .bind(limit)
                .bind(offset)
                .fetch_all(&db.pool)
                .await?
        }
        PageStart::Before(c) => {
            query(page_sql(true))
                .bind(conversation_id)
                .bind(c.ts)
                .bind(c.id)
                .bind(limit)
                .fetch_all(&db.pool)
                .await?
        }
    };
    let mut messages = rows.iter().map(message).collect::<Result<Vec<_>, _>>()?;
    if messages.is_empty() {
        return Ok(messages);
    }
    let mut sql = String::from(
        "SELECT mm.message_id, md.id, md.sha256, md.size, md.content_type, md.original_name \
         FROM message_media mm JOIN media md ON md.id = mm.media_id WHERE mm.message_id IN (",
    );
    for i in 0..messages.len() {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&format!("${}", i + 1));
    }
    sql.push_str(") ORDER BY mm.message_id, mm.position");
    let mut q = query_built(sql);
    for m in &messages {
        q = q.bind(m.id);
    }
    let media_rows = q.fetch_all(&db.pool).await?;
    let index: std::collections::HashMap<i64, usize> = messages
        .iter()
        .enumerate()
        .map(|(i, m)| (m.id, i))
        .collect();
    for r in &media_rows {
        let message_id: i64 = r.try_get(0)?;
        let sha256: String = r.try_get(2)?;
        let media = MessageMedia {
            id: r.try_get(1)?,
            url: media_url(&sha256),
            sha256,
            size: r.try_get(3)?,
            content_type: r.try_get(4)?,
            original_name: r.try_get(5)?,
        };
        if let Some(&i) = index.get(&message_id) {
            messages[i].media.push(media);
        }
    }
    Ok(messages)
}

fn message(r: &AnyRow) -> Result<Message, sqlx::Error> {
    Ok(Message {
        id: r.try_get(0)?,
        conversation_id: r.try_get(1)?,
        direction: r.try_get(2)?,
        text: r.try_get(3)?,
        created_at: r.try_get(4)?,
        read_at: r.try_get(5)?,
        delivery_status: delivery_status_at(r, 6)?,
        media: Vec::new(),
    })
}
