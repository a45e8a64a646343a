//! Komora origin: the slim service behind the edge.
//!
//! It owns the inbox and conversation API (`api`), content-addressed media in object
//! storage (`media`, with the download task), the database layer shared by both (`db`) and
//! the SQL behind them (`store`), messaging (`messaging`: webhooks, sends, platforms), the
//! autobot (`autobot`: working hours, AI replies), the origin's side of the task queue
//! (`queue`: task context, worker, operator commands; the engine is `komora-queue`),
//! SSRF-safe outbound HTTP (`fetch`), `doctor`, and the ops console's HTML pages (`console`). `main.rs` only parses the command line and calls into here,
//! so tests can build the same application on an ephemeral port.

pub mod api;
pub mod app;
pub mod autobot;
pub mod cli;
pub mod config;
pub mod console;
pub mod db;
pub mod doctor;
pub mod edge_admin;
pub mod fetch;
pub mod media;
pub mod messaging;
pub mod queue;
pub mod seed;
pub mod store;
pub mod unread_body;
