//! The `komora-origin` command line: `serve` (default), `keys create`, `seed`,
//! `--check-config FILE`, and the queue's `worker` / `queue` / `doctor`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Config;

/// Default config file, used when it exists and `--config` is not given.
pub const DEFAULT_CONFIG: &str = "config/origin.toml";

#[derive(Debug, Parser)]
#[command(name = "komora-origin", version, about = "Komora origin service")]
pub struct Cli {
    /// Config file (default `config/origin.toml` if present, else built-in defaults).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Validate FILE, print every error as `FILE: KEY: REASON`, exit non-zero on any.
    #[arg(long, value_name = "FILE")]
    pub check_config: Option<PathBuf>,
    #[command(subcommand)]
    pub cmd: Option<Cmd>,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Serve the HTTP API until SIGINT/SIGTERM (the default).
    Serve,
    /// Manage API keys.
    Keys {
        #[command(subcommand)]
        cmd: KeysCmd,
    },
    /// Fill the database with a realistic demo / benchmark data set.
    Seed(crate::seed::SeedArgs),
    /// Run a task-queue worker.
    Worker,
    /// Inspect the task queues.
    Queue {
        #[command(subcommand)]
        cmd: crate::queue::cli::QueueCmd,
    },
    /// Check configuration, database, store and queue.
    Doctor,
}

#[derive(Debug, Subcommand)]
pub enum KeysCmd {
    /// Create an API key and print its token (shown only once).
    Create {
        /// A label for the key.
        #[arg(long, default_value = "admin")]
        name: String,
    },
}

/// Loads `--config`, or the default file if present, or the defaults.
fn load_config(path: Option<&PathBuf>) -> Result<Config, crate::config::ConfigErrors> {
    match path {
        Some(p) => Config::load(p),
        None if std::path::Path::new(DEFAULT_CONFIG).exists() => {
            Config::load(std::path::Path::new(DEFAULT_CONFIG))
        }
        None => Config::parse_with_env("<defaults>", "", |k| std::env::var(k).ok()),
    }
}

/// Entry point of the binary: parses arguments and runs the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // Logs go to stderr: stdout carries command output (e.g. the new API token).
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    if let Some(path) = &cli.check_config {
        return match Config::load(path) {
            Ok(_) => {
                println!("{}: ok", path.display());
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprintln!("{errors}");
                ExitCode::FAILURE
            }
        };
    }
    let config = match load_config(cli.config.as_ref()) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config, cli.cmd.unwrap_or(Cmd::Serve))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config, cmd: Cmd) -> anyhow::Result<()> {
    match cmd {
        Cmd::Serve => {
            let app = crate::app::App::build(config, None).await?;
            tracing::info!(addr = %app.local_addr()?, "komora-origin listening");
            app.run().await?;
            Ok(())
        }
        Cmd::Keys {
            cmd: KeysCmd::Create { name },
        } => {
            let db = crate::db::Db::connect(&config.database.url, &config.database.pool).await?;
            let (id, token) = crate::store::api_keys::create(&db, &name, true).await?;
            eprintln!("created API key {id} ({name}); the token is shown only once:");
            println!("{token}");
            Ok(())
        }
        Cmd::Seed(args) => {
            let db = crate::db::Db::connect(&config.database.url, &config.database.pool).await?;
            let store = crate::media::store::open(&config.media.store)?;
            let report = crate::seed::seed(&db, &store, &args).await?;
            println!("{report}");
            Ok(())
        }
        Cmd::Worker => crate::queue::cli::run_worker(&config).await,
        Cmd::Queue { cmd } => crate::queue::cli::run_queue_cmd(&config, cmd).await,
        Cmd::Doctor => crate::queue::cli::doctor(&config).await,
    }
}
