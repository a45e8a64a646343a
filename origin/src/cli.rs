//! The `komora-origin` command line: `serve` (default), `keys create|list|revoke`, `seed`,
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
    /// Create an API key and print its token (64 lowercase hex, shown only once): an admin
    /// key (`--admin`) or an operator key limited to the offices given with `--office`.
    Create {
        /// A label for the key.
        #[arg(long)]
        name: String,
        /// Every office, and the admin API.
        #[arg(long, conflicts_with = "office", required_unless_present = "office")]
        admin: bool,
        /// An office this operator key may see (repeat for several).
        #[arg(long, value_name = "ID")]
        office: Vec<i64>,
        /// Lifetime, e.g. `90d`, `12h`, `30m`, `3600s`; default: never expires.
        #[arg(long, value_name = "DURATION", value_parser = parse_lifetime)]
        expires_in: Option<i64>,
        /// Print `{"id", "name", "role", "token"}` as one JSON line instead of the bare
        /// token (for programs such as `komora up`).
        #[arg(long)]
        json: bool,
    },
    /// One line per key: id, name, role, offices, created, last used, expiry, revoked.
    List,
    /// Revoke key ID: it stops authenticating at once (the row is kept for the record).
    Revoke {
        /// The key's id (first column of `keys list`).
        id: i64,
    },
}

/// Longest `--expires-in`, days (ten years).
const MAX_LIFETIME_DAYS: i64 = 3650;

/// `90d`, `12h`, `30m`, `3600s` as milliseconds.
fn parse_lifetime(s: &str) -> Result<i64, String> {
    let bad = || format!("{s:?}: expected a positive number with d, h, m or s, e.g. 90d");
    let split = s.len().checked_sub(1).ok_or_else(bad)?;
    let (num, unit) = s.split_at(split);
    let n: i64 = num.parse().map_err(|_| bad())?;
    let unit_ms = match unit {
        "d" => 86_400_000,
        "h" => 3_600_000,
        "m" => 60_000,
        "s" => 1_000,
        _ => return Err(bad()),
    };
    let ms = n.checked_mul(unit_ms).ok_or_else(bad)?;
    if n <= 0 || ms > MAX_LIFETIME_DAYS * 86_400_000 {
        return Err(format!(
            "{s:?}: must be between 1s and {MAX_LIFETIME_DAYS}d"
        ));
    }
    Ok(ms)
}

/// A stored Unix-ms time for `keys list`: RFC 3339 UTC, or `-`.
fn when(ms: Option<i64>) -> String {
    ms.and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| "-".to_string())
}

async fn keys(config: &Config, cmd: KeysCmd) -> anyhow::Result<()> {
    use crate::store::api_keys::{self, NewKey, Role};
    let db = crate::db::Db::connect(&config.database.url, &config.database.pool).await?;
    match cmd {
        KeysCmd::Create {
            name,
            admin,
            office,
            expires_in,
            json,
        } => {
            let role = if admin { Role::Admin } else { Role::Operator };
            let key = NewKey {
                name: name.clone(),
                role,
                offices: office,
                expires_at: expires_in.map(|ms| crate::db::now_ms() + ms),
            };
            let (id, token) = api_keys::create_key(&db, &key).await?;
            eprintln!(
                "created {} key {id} ({name}); the token is shown only once:",
                role.as_str()
            );
            if json {
                let out = serde_json::json!({
                    "id": id, "name": name, "role": role.as_str(), "token": token,
                });
                println!("{out}");
            } else {
                println!("{token}");
            }
        }
        KeysCmd::List => {
            // The header goes to stderr: stdout is exactly one line per key, for scripts.
            eprintln!("id\tname\trole\toffices\tcreated\tlast_used\texpires\trevoked");
            for k in api_keys::list(&db).await? {
                let offices = match k.role {
                    Role::Admin => "all".to_string(),
                    Role::Operator => k
                        .offices
                        .iter()
                        .map(i64::to_string)
                        .collect::<Vec<_>>()
                        .join(","),
                };
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    k.id,
                    k.name,
                    k.role.as_str(),
                    if offices.is_empty() { "-" } else { &offices },
                    when(Some(k.created_at)),
                    when(k.last_used_at),
                    when(k.expires_at),
                    when(k.revoked_at),
                );
            }
        }
        KeysCmd::Revoke { id } => {
            if !api_keys::revoke(&db, id, crate::db::now_ms()).await? {
                anyhow::bail!("no API key {id}");
            }
            println!("revoked API key {id}");
        }
    }
    Ok(())
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
            Ok(config) => {
                for w in config.warnings() {
                    eprintln!("{}: warning: {w}", path.display());
                }
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
            let internal = app.internal_addr().transpose()?;
            tracing::info!(
                addr = %app.local_addr()?,
                internal = ?internal,
                "komora-origin listening (internal: /metrics, /admin/*)"
            );
            app.run().await?;
            Ok(())
        }
        Cmd::Keys { cmd } => keys(&config, cmd).await,
        Cmd::Seed(args) => {
            let db = crate::db::Db::connect(&config.database.url, &config.database.pool).await?;
            let store = crate::media::store::open(&config.media.store)?;
            let report = crate::seed::seed(&db, &store, &args).await?;
            println!("{report}");
            Ok(())
        }
        Cmd::Worker => crate::queue::cli::run_worker(&config).await,
        Cmd::Queue { cmd } => crate::queue::cli::run_queue_cmd(&config, cmd).await,
        Cmd::Doctor => crate::doctor::doctor(&config).await,
    }
}
