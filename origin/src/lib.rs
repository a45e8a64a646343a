//! Komora origin: the slim service behind the edge.
//!
//! It owns the inbox and conversation API (`api`), content-addressed media in object
//! storage (`media`), the database layer shared by both (`db`), and the durable task queue
//! with its worker (`queue`). `main.rs` only parses the command line and calls into here,
//! so tests can build the same application on an ephemeral port.

pub mod api;
pub mod app;
pub mod cli;
pub mod config;
pub mod db;
pub mod media;
pub mod queue;
pub mod seed;
pub mod store;
pub mod unread_body;
