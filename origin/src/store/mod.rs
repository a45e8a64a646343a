//! SQL for the origin's data model, shared by the HTTP API, the seeder and the task queue.
//!
//! Every function takes a connection or pool so callers choose the transaction. Queries are
//! written once for both backends (see `crate::db`); each goes through `crate::db::query`
//! so tests can count statements per request.

pub mod api_keys;
pub mod clients;
pub mod cursor;
pub mod inbox;
pub mod media;
pub mod messages;

pub use cursor::Cursor;

/// The platforms a conversation can live on (the `conversations.platform` CHECK).
pub const PLATFORMS: [&str; 5] = ["telegram", "whatsapp", "instagram", "facebook", "email"];
