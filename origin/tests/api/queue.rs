//! The task queue: the engine (store, worker, routing) through the origin, its tasks, webhook,
//! admin and CLI.

mod bench;
mod chaos;
mod config;
mod core;
mod delivery;
mod flow;
mod heartbeat;
mod migrate;
mod ops;
mod process;
mod schema;
mod ssrf;
pub(crate) mod support;
mod typed;
