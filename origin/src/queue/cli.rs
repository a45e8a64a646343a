//! `komora-origin worker`, `komora-origin queue …` and `komora-origin doctor`.
//!
//! SKELETON — owned by the queue work (issue 4).

use clap::Subcommand;

use crate::config::Config;

/// `komora-origin queue <cmd>`.
#[derive(Debug, Subcommand)]
pub enum QueueCmd {
    /// Depth per queue and state.
    Stats,
}

/// Runs one `queue` subcommand against the configured database.
pub async fn run_queue_cmd(config: &Config, cmd: QueueCmd) -> anyhow::Result<()> {
    let _ = (config, cmd);
    anyhow::bail!("not implemented yet")
}

/// Runs a worker until SIGINT/SIGTERM.
pub async fn run_worker(config: &Config) -> anyhow::Result<()> {
    let _ = config;
    anyhow::bail!("not implemented yet")
}

/// Prints one line per check (offices' autobot hours, AI settings, database, store, queue).
pub async fn doctor(config: &Config) -> anyhow::Result<()> {
    let _ = config;
    anyhow::bail!("not implemented yet")
}
