//! Serialized response heads of one memory entry for the current Unix second.
//!
//! Why: `Age`, `Date` and `Expires` only change from one second to the next, so within a
//! second every direct hit of an entry sends the same head bytes; building and serializing
//! them (stored header + `Age`, `Date`, `Expires`, ...) on every request was most of the
//! edge's own work on small hits. A memory entry holds one [`HeadCache`]; what goes into a
//! head is decided by the hit path ([`crate::hit`]), which passes the builder in.

use bytes::Bytes;
use std::sync::Mutex;
use std::time::SystemTime;

/// Which head of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadKind {
    /// `200 OK` with the stored headers (GET and HEAD share it).
    Ok,
    /// `304 Not Modified` for a matching conditional request.
    NotModified,
}

#[derive(Debug, Default)]
struct Heads {
    second: u64,
    ok: Option<Bytes>,
    not_modified: Option<Bytes>,
}

/// The heads of one entry for the current second (see the module docs).
#[derive(Debug, Default)]
pub struct HeadCache {
    heads: Mutex<Heads>,
}

impl HeadCache {
    /// The `kind` head for the Unix second of `now`, built by `build` at most once per
    /// second. `None` when `build` fails (the caller then uses pingora's write path).
    pub fn get(
        &self,
        kind: HeadKind,
        now: SystemTime,
        build: impl FnOnce() -> Option<Bytes>,
    ) -> Option<Bytes> {
        let second = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        // A poisoned lock only means a builder panicked; the cached bytes are still whole.
        let mut h = self.heads.lock().unwrap_or_else(|e| e.into_inner());
        if h.second != second {
            *h = Heads {
                second,
                ..Heads::default()
            };
        }
        let slot = match kind {
            HeadKind::Ok => &mut h.ok,
            HeadKind::NotModified => &mut h.not_modified,
        };
        if slot.is_none() {
            *slot = Some(build()?);
        }
        slot.clone()
    }
}
