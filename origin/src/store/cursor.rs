//! Opaque keyset cursors: a position `(timestamp ms, id)` in a list sorted newest first.
//!
//! Clients must treat the string as opaque; it is hex so it is URL-safe without escaping.

/// A position in a `(time DESC, id DESC)` ordering; the next page starts strictly after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub ts: i64,
    pub id: i64,
}

impl Cursor {
    /// The opaque string form.
    pub fn encode(&self) -> String {
        hex::encode(format!("{}:{}", self.ts, self.id))
    }

    /// Parses [`Cursor::encode`] output; `None` for anything else.
    pub fn decode(s: &str) -> Option<Cursor> {
        if s.len() > 128 {
            return None;
        }
        let raw = String::from_utf8(hex::decode(s).ok()?).ok()?;
        let (ts, id) = raw.split_once(':')?;
        let cursor = Cursor {
            ts: ts.parse().ok()?,
            id: id.parse().ok()?,
        };
        (cursor.id > 0).then_some(cursor)
    }
}
