//! `komora up`: the whole stack in one command.
//!
//! Starts, in order: a dev certificate (if missing), the stand-in platform, the origin
//! (migrations run at its start; demo data and a fresh admin key on the way), a worker
//! process, and the edge on HTTP and HTTPS. Each child gets a config derived from the
//! matching file in `config/`, read into that service's own config type (the origin's
//! `ConfigFile`, the edge's `RawConfig`), with only the machine-specific fields replaced
//! (ports, paths, the platform's URL), written back as TOML under `<data-dir>/run/`. Children log to
//! `<data-dir>/logs/<name>.log`. Ctrl-C (SIGINT) or SIGTERM stops every child with SIGTERM
//! and waits for it; a child still alive after the grace period is killed.
//!
//! A second `komora up` with the same data dir reuses the database, the media and the
//! edge's disk cache: the demo data is only seeded into a new database.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use clap::{Args, Parser, Subcommand};
use komora_origin::config::ConfigFile as OriginFile;
use komora_proxy::config::{AddrList, RawConfig as EdgeFile};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::certs;

/// `komora` command line.
#[derive(Debug, Parser)]
#[command(
    name = "komora",
    about = "Run the Komora stack (edge, origin, worker) in one command"
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Run edge + origin + worker on embedded defaults until Ctrl-C.
    Up(UpArgs),
    /// Create a self-signed certificate for localhost where config/edge.toml expects it.
    Certs {
        /// Folder for `localhost.pem` and `localhost-key.pem`.
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        /// Replace existing files.
        #[arg(long)]
        force: bool,
    },
}

/// `komora up` options. Port 0 picks a free port (used by the smoke test).
#[derive(Debug, Args, Clone)]
pub struct UpArgs {
    /// Folder holding `config/` and `certs/`.
    #[arg(long, default_value = ".")]
    pub root: PathBuf,
    /// Where the database, media, edge cache, logs and derived configs live.
    #[arg(long, default_value = "var")]
    pub data_dir: PathBuf,
    /// Edge HTTP port.
    #[arg(long, default_value_t = 8080)]
    pub http_port: u16,
    /// Edge HTTPS port (HTTP/2 over ALPN).
    #[arg(long, default_value_t = 8443)]
    pub https_port: u16,
    /// Edge admin port (purge, metrics).
    #[arg(long, default_value_t = 9180)]
    pub edge_admin_port: u16,
    /// Origin HTTP port (the edge's upstream).
    #[arg(long, default_value_t = 8081)]
    pub origin_port: u16,
    /// Origin internal port (`/metrics`, `/admin/*`), on 127.0.0.1 only.
    #[arg(long, default_value_t = 9181)]
    pub origin_internal_port: u16,
    /// Stand-in messaging platform port.
    #[arg(long, default_value_t = 8090)]
    pub platform_port: u16,
    /// Demo conversations seeded into a new database.
    #[arg(long, default_value_t = 200)]
    pub demo_conversations: u32,
    /// Demo messages per conversation.
    #[arg(long, default_value_t = 20)]
    pub demo_messages: u32,
    /// How long children get to exit after SIGTERM before they are killed.
    #[arg(long, default_value_t = 10)]
    pub grace_seconds: u64,
}

pub fn main(cli: Cli) -> anyhow::Result<()> {
    match cli.cmd {
        Cmd::Certs { dir, force } => {
            let (paths, created) = certs::create_self_signed(&dir, force)?;
            let verb = if created { "created" } else { "kept existing" };
            println!(
                "komora: {verb} {} and {}",
                paths.cert.display(),
                paths.key.display()
            );
            Ok(())
        }
        Cmd::Up(args) => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .context("starting the runtime")?;
            rt.block_on(up(args))
        }
    }
}

/// A running child process with its name (for messages) and log file.
struct Proc {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

/// Every child, stopped in reverse start order when dropped or on shutdown.
struct Stack {
    procs: Vec<Proc>,
    grace: Duration,
}

impl Stack {
    fn spawn(
        &mut self,
        name: &'static str,
        bin: &Path,
        args: &[String],
        env: &[(&str, &str)],
        logs: &Path,
    ) -> anyhow::Result<u32> {
        let log = logs.join(format!("{name}.log"));
        let out =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let child = Command::new(bin)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let pid = child.id();
        println!("komora: started {name} (pid {pid}, log {})", log.display());
        self.procs.push(Proc { name, child, log });
        Ok(pid)
    }

    /// The first child that has exited, with its status.
    fn exited(&mut self) -> Option<(&'static str, String, PathBuf)> {
        for p in &mut self.procs {
            if let Ok(Some(status)) = p.child.try_wait() {
                return Some((p.name, status.to_string(), p.log.clone()));
            }
        }
        None
    }

    /// SIGTERM to every child (last started first), then wait up to the grace period,
    /// then SIGKILL whatever is left.
    fn shutdown(&mut self) {
        for p in self.procs.iter().rev() {
            if let Ok(pid) = i32::try_from(p.child.id()) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            }
        }
        let deadline = Instant::now() + self.grace;
        for p in self.procs.iter_mut().rev() {
            loop {
                match p.child.try_wait() {
                    Ok(Some(status)) => {
                        println!("komora: {} stopped ({status})", p.name);
                        break;
                    }
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(50))
                    }
                    _ => {
                        println!("komora: {} did not stop in time, killing it", p.name);
                        let _ = p.child.kill();
                        let _ = p.child.wait();
                        break;
                    }
                }
            }
        }
        self.procs.clear();
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A free port on 127.0.0.1 when `port` is 0, else `port`.
fn pick_port(port: u16) -> anyhow::Result<u16> {
    if port != 0 {
        return Ok(port);
    }
    let l = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

/// The folder holding this executable: its sibling binaries (komora-origin, komora-edge)
/// come from the same `cargo build`.
fn bin_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the komora executable")?;
    let dir = exe
        .parent()
        .context("the komora executable has no parent folder")?;
    // `cargo test` runs test binaries from target/<profile>/deps: look one level up too.
    for d in [dir, dir.parent().unwrap_or(dir)] {
        if d.join("komora-origin").exists() && d.join("komora-edge").exists() {
            return Ok(d.to_path_buf());
        }
    }
    bail!(
        "komora-origin and komora-edge not found next to {}: build the workspace first \
         (cargo build --release --workspace)",
        exe.display()
    )
}

/// The text of `config/<name>`, `None` when the file is missing (built-in defaults then).
fn read_config(path: &Path) -> anyhow::Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// `config/origin.toml` as the origin's own file type.
fn read_origin(path: &Path) -> anyhow::Result<OriginFile> {
    match read_config(path)? {
        Some(text) => {
            OriginFile::parse(&path.display().to_string(), &text).map_err(|e| anyhow!("{e}"))
        }
        None => Ok(OriginFile::default()),
    }
}

/// `config/edge.toml` as the edge's own file type.
fn read_edge(path: &Path) -> anyhow::Result<EdgeFile> {
    match read_config(path)? {
        Some(text) => {
            EdgeFile::parse(&path.display().to_string(), &text).map_err(|e| anyhow!("{e}"))
        }
        None => Ok(EdgeFile::default()),
    }
}

/// Writes a derived config as TOML.
fn write_config(path: &Path, config: &impl serde::Serialize) -> anyhow::Result<()> {
    let text = toml::to_string(config).context("serializing a derived config")?;
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// Polls `url` until it answers 2xx or `timeout` passes.
async fn wait_ready(
    client: &reqwest::Client,
    url: &str,
    timeout: Duration,
    stack: &mut Stack,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(r) = client.get(url).send().await {
            if r.status().is_success() {
                return Ok(());
            }
        }
        if let Some((name, status, log)) = stack.exited() {
            bail!(
                "{name} exited ({status}) before {url} was ready; see {}",
                log.display()
            );
        }
        if Instant::now() > deadline {
            bail!("{url} not ready after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs a child to completion and returns its stdout, failing with its output otherwise.
fn run_to_end(bin: &Path, args: &[String]) -> anyhow::Result<String> {
    let out = Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    if !out.status.success() {
        bail!(
            "{} {} failed ({}): {}{}",
            bin.display(),
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Where the origin and the edge read their media URL signing keys.
const MEDIA_KEYS_ENV: &str = "KOMORA_MEDIA_SIGNING_KEYS";

/// The variable `komora up` hands the edge's admin token to the origin in (named by the
/// origin's `console.edges[0].admin_token_env`).
const EDGE_TOKEN_ENV: &str = "KOMORA_EDGE_ADMIN_TOKEN";

/// `n` random bytes from the kernel, hex encoded: the edge's admin token for this run.
fn random_hex(n: usize) -> anyhow::Result<String> {
    use std::io::Read;
    let mut buf = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .context("reading /dev/urandom")?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// The token in `keys create --json` output (`{"id", "name", "role", "token"}`).
fn parse_key(output: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(output.trim()).ok()?;
    v.get("token")?.as_str().map(str::to_string)
}

async fn up(args: UpArgs) -> anyhow::Result<()> {
    let bins = bin_dir()?;
    let origin_bin = bins.join("komora-origin");
    let edge_bin = bins.join("komora-edge");
    let root = args.root.clone();
    let data = if args.data_dir.is_absolute() {
        args.data_dir.clone()
    } else {
        root.join(&args.data_dir)
    };
    let run_dir = data.join("run");
    let logs = data.join("logs");
    for d in [
        &data,
        &run_dir,
        &logs,
        &data.join("media"),
        &data.join("cache"),
    ] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let data = std::fs::canonicalize(&data)?;
    let run_dir = data.join("run");
    let logs = data.join("logs");

    let (cert, created) = certs::create_self_signed(&root.join("certs"), false)?;
    if created {
        println!("komora: created a dev certificate {}", cert.cert.display());
    }
    let cert_path = std::fs::canonicalize(&cert.cert)?;
    let key_path = std::fs::canonicalize(&cert.key)?;

    let http_port = pick_port(args.http_port)?;
    let https_port = pick_port(args.https_port)?;
    let admin_port = pick_port(args.edge_admin_port)?;
    let origin_port = pick_port(args.origin_port)?;
    let origin_internal_port = pick_port(args.origin_internal_port)?;
    let platform_port = pick_port(args.platform_port)?;

    let platform_listener = tokio::net::TcpListener::bind(("127.0.0.1", platform_port))
        .await
        .with_context(|| format!("binding the stand-in platform on port {platform_port}"))?;
    let (platform_addr, _delivered, _platform) = crate::standin::serve(platform_listener).await?;
    println!("komora: stand-in platform on http://{platform_addr}");

    // Origin config: config/origin.toml with this machine's ports and paths.
    let db_file = data.join("komora.db");
    let fresh_db = !db_file.exists();
    let mut origin = read_origin(&root.join("config/origin.toml"))?;
    origin.server.listen = format!("127.0.0.1:{origin_port}");
    origin.server.internal_listen = format!("127.0.0.1:{origin_internal_port}");
    origin.database.url = format!("sqlite://{}", db_file.display());
    origin.media.store_url = format!("file://{}", data.join("media").display());
    origin.queue.worker_in_server = false;
    // Webhook secrets: random per run, handed to the origin in its environment only (never
    // written to a file).
    // A secret already in the caller's environment is kept (e.g. for a platform's real
    // webhook registration); otherwise a fresh one is made for this run.
    let mut origin_env: Vec<(String, String)> = Vec::new();
    for platform in ["telegram", "whatsapp", "instagram", "facebook", "email"] {
        let var = format!(
            "KOMORA_PLATFORM_{}_WEBHOOK_SECRET",
            platform.to_ascii_uppercase()
        );
        let secret = match std::env::var(&var) {
            Ok(v) if !v.trim().is_empty() => v,
            _ => random_hex(32)?,
        };
        origin_env.push((var, secret));
        let p = origin
            .platforms
            .platforms
            .entry(platform.to_string())
            .or_default();
        p.base_url = format!("http://{platform_addr}/{platform}");
        // The stand-in is on loopback, which the worker's SSRF guard refuses unless named.
        p.allowed_hosts = vec![platform_addr.to_string()];
    }
    // The console's edge page reads this edge's /metrics and purges through its admin
    // listener; the token goes to the origin in its environment, like the edge's own.
    let edge_token = random_hex(32)?;
    origin.console.edges = vec![komora_origin::edge_admin::EdgeFile {
        name: "edge".into(),
        admin_url: format!("http://127.0.0.1:{admin_port}"),
        admin_token_env: EDGE_TOKEN_ENV.into(),
        token: None,
    }];
    origin_env.push((EDGE_TOKEN_ENV.to_string(), edge_token.clone()));
    let origin_cfg = run_dir.join("origin.toml");
    write_config(&origin_cfg, &origin)?;
    let cfg = |rest: &[&str]| -> Vec<String> {
        let mut v = vec!["--config".to_string(), origin_cfg.display().to_string()];
        v.extend(rest.iter().map(|s| s.to_string()));
        v
    };

    if fresh_db {
        let convs = args.demo_conversations.to_string();
        let msgs = args.demo_messages.to_string();
        println!("komora: seeding demo data ({convs} conversations x {msgs} messages)");
        run_to_end(
            &origin_bin,
            &cfg(&["seed", "--conversations", &convs, "--messages", &msgs]),
        )?;
    }
    let key_out = run_to_end(
        &origin_bin,
        &cfg(&["keys", "create", "--name", "komora-up", "--admin", "--json"]),
    )?;
    let admin_key = parse_key(&key_out)
        .with_context(|| format!("no key in `keys create` output: {key_out}"))?;

    let mut stack = Stack {
        procs: Vec::new(),
        grace: Duration::from_secs(args.grace_seconds),
    };
    // Media URL signing keys for this run, shared by the origin (signs, verifies) and the
    // edge (verifies): the caller's KOMORA_MEDIA_SIGNING_KEYS if set, else a fresh key.
    let media_keys = match std::env::var(MEDIA_KEYS_ENV) {
        Ok(k) if !k.trim().is_empty() => k,
        _ => random_hex(32)?,
    };
    let media_env = [(MEDIA_KEYS_ENV, media_keys.as_str())];
    let mut origin_env: Vec<(&str, &str)> = origin_env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    origin_env.push(media_env[0]);
    stack.spawn("origin", &origin_bin, &cfg(&["serve"]), &origin_env, &logs)?;
    stack.spawn("worker", &origin_bin, &cfg(&["worker"]), &origin_env, &logs)?;
    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(2))
        .build()?;
    let origin_url = format!("http://127.0.0.1:{origin_port}");
    wait_ready(
        &client,
        &format!("{origin_url}/readyz"),
        Duration::from_secs(60),
        &mut stack,
    )
    .await?;
    println!("komora: origin ready at {origin_url}");
    println!(
        "komora: origin internal (/metrics, /admin/*) at http://127.0.0.1:{origin_internal_port}"
    );

    // Edge config: config/edge.toml with this machine's ports, paths and certificate.
    let mut edge = read_edge(&root.join("config/edge.toml"))?;
    let one = |addr: String| Some(AddrList::Many(vec![addr]));
    let server = edge.server.get_or_insert_with(Default::default);
    server.listen = one(format!("127.0.0.1:{http_port}"));
    server.tls_listen = one(format!("127.0.0.1:{https_port}"));
    server.tls_cert = Some(cert_path.display().to_string());
    server.tls_key = Some(key_path.display().to_string());
    server.upgrade_sock = Some(run_dir.join("edge-upgrade.sock").display().to_string());
    server.pid_file = Some(run_dir.join("edge.pid").display().to_string());
    edge.admin.get_or_insert_with(Default::default).listen =
        Some(format!("127.0.0.1:{admin_port}"));
    edge.upstream.get_or_insert_with(Default::default).origins =
        Some(vec![format!("127.0.0.1:{origin_port}")]);
    edge.cache.get_or_insert_with(Default::default).dir =
        Some(data.join("cache").display().to_string());
    let edge_cfg = run_dir.join("edge.toml");
    write_config(&edge_cfg, &edge)?;
    stack.spawn(
        "edge",
        &edge_bin,
        &["--config".to_string(), edge_cfg.display().to_string()],
        &[("KOMORA_ADMIN_TOKEN", &edge_token), media_env[0]],
        &logs,
    )?;
    let edge_url = format!("http://127.0.0.1:{http_port}");
    wait_ready(
        &client,
        &format!("{edge_url}/healthz"),
        Duration::from_secs(60),
        &mut stack,
    )
    .await?;
    println!("komora: edge ready at {edge_url} and https://localhost:{https_port} (HTTP/2)");
    println!("komora: edge admin (purge, /metrics) at http://127.0.0.1:{admin_port}");
    println!("komora: edge admin token {edge_token}");
    println!("komora: admin key {admin_key}");
    println!("komora: console at {edge_url}/console/ (log in with the admin key)");
    println!(
        "komora: try  curl -H 'Authorization: Bearer {admin_key}' {edge_url}/api/inbox?limit=5"
    );
    println!("komora: ready; Ctrl-C stops everything");

    let reason = wait_for_stop(&mut stack).await;
    println!("komora: stopping ({reason})");
    stack.shutdown();
    println!("komora: stopped");
    Ok(())
}

/// Waits for SIGINT, SIGTERM, or a child that exits on its own.
async fn wait_for_stop(stack: &mut Stack) -> String {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return "cannot listen for signals".to_string();
    };
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = int.recv() => return "SIGINT".to_string(),
            _ = term.recv() => return "SIGTERM".to_string(),
            _ = tick.tick() => {
                if let Some((name, status, log)) = stack.exited() {
                    return format!("{name} exited ({status}); see {}", log.display());
                }
            }
        }
    }
}

/// Addresses `komora up` prints, parsed back by tests and scripts.
pub fn parse_ready_line(line: &str) -> Option<SocketAddr> {
    let rest = line.split("http://").nth(1)?;
    rest.split_whitespace().next()?.parse().ok()
}
