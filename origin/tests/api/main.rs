//! The origin's integration tests: one binary, a module per area. Each test gets a fresh
//! database (a new SQLite file, or a new PostgreSQL database) and real servers on port 0.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod access;
mod clients;
mod common;
mod config;
mod console;
mod console_pages;
mod db;
mod errors;
mod explain;
mod inbox;
mod media;
mod messages;
mod queue;
mod secrets;
mod signed_media;
