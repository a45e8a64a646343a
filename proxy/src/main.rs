//! `komora-edge`: parse flags, load and validate the config, run the pingora server.

use clap::Parser;
use komora_proxy::config::{EdgeConfig, Overrides};
use std::path::PathBuf;
use std::process::ExitCode;

// The allocator is part of the product: on hot hits glibc's malloc/free were ~7 % of the
// proxy core, and mimalloc was measured against it in one sitting (bench/README-edge.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "komora-edge",
    about = "Komora caching edge for the CRM media origin"
)]
struct Args {
    /// Config file (flat TOML, see config/edge.toml). Built-in defaults when omitted.
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Validate FILE, print every error with its key path, and exit (0 when valid).
    #[arg(long, value_name = "FILE")]
    check_config: Option<PathBuf>,
    /// Listen address, replaces server.listen.
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Origin HOST:PORT, replaces upstream.origins.
    #[arg(long, alias = "upstream", value_name = "HOST:PORT")]
    origin: Option<String>,
    /// Cache directory, replaces cache.dir.
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<String>,
    /// Admin listen address, replaces admin.listen.
    #[arg(long, value_name = "ADDR")]
    admin_listen: Option<String>,
    /// Access log file ("-" for stdout), replaces access_log.path.
    #[arg(long, value_name = "FILE")]
    access_log: Option<String>,
    /// Zero-downtime upgrade: take the listening sockets over from the running edge through
    /// server.upgrade_sock (send that process SIGQUIT once this one has started).
    #[arg(long)]
    upgrade: bool,
}

fn main() -> ExitCode {
    // No transparent huge pages for this process. mimalloc asks for them on its arenas
    // (`MADV_HUGEPAGE`), so with THP in `madvise` mode (Debian's default) every fault in a
    // purged arena cleared a whole 2 MiB page: on the media-library run 31 % of the edge core
    // was `clear_page_erms` under mimalloc, and RSS peaked at 1.3-1.5 GiB with a 256 MiB
    // memory tier. Off: +12 % req/s, half the RSS (bench/README-edge.md, "2026-12-03").
    // Best effort: a kernel without the prctl just keeps its THP policy.
    let _ = nix::sys::prctl::set_thp_disable(true);
    komora_proxy::logging::init();
    let args = Args::parse();
    let overrides = Overrides {
        listen: args.listen,
        origin: args.origin,
        cache_dir: args.cache_dir,
        admin_listen: args.admin_listen,
        access_log: args.access_log,
    };
    if let Some(path) = args.check_config {
        return match EdgeConfig::load(Some(&path), &Overrides::default()) {
            Ok(c) => {
                // Keys live in the environment of the running edge, not in the file.
                for m in c.missing_signing_keys() {
                    eprintln!(
                        "{}: warning: {m}; the edge will refuse to start",
                        path.display()
                    );
                }
                println!("{}: ok", path.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        };
    }
    let config = match EdgeConfig::load(args.config.as_deref(), &overrides) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let missing = config.missing_signing_keys();
    if !missing.is_empty() {
        for m in missing {
            eprintln!("komora-edge: {m}");
        }
        return ExitCode::from(2);
    }
    match komora_proxy::server::build(config, args.upgrade) {
        Ok(server) => server.run_forever(),
        Err(e) => {
            eprintln!("komora-edge: {e}");
            ExitCode::from(1)
        }
    }
}
