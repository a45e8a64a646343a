//! Integration tests for `komora-edge`: a real origin on port 0, the real binary, a real
//! cache directory.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod access_log;
mod cache;
mod common;
mod config;
mod fill;
mod h2;
mod hitpath;
mod hostile;
mod idle;
mod integrity;
mod server;
mod signed;
mod storage;
mod upgrade;
mod zerocopy;
