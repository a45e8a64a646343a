//! The task queue (issue 4): store, worker, routing, tasks, webhook, admin, CLI.

mod bench;
mod chaos;
mod config;
mod core;
mod delivery;
mod flow;
mod heartbeat;
mod ops;
mod process;
mod ssrf;
mod support;
