//! The ops console through the real stack: `komora up` (origin, worker and edge binaries of
//! this build, SQLite in a temporary folder, free ports), then
//! - console assets through the edge: the second request is an `X-Cache-Status: HIT`,
//!   pages pass through uncached, and over the edge's TLS listener the session cookie is
//!   `Secure`;
//! - a real browser: `node console-tests/run.mjs` drives headless Debian chromium with
//!   playwright-core (installed by `.ci/run`: `npm ci` in `console-tests/`) through login,
//!   a live queue count change, pause/resume, retrying a dead task, workers, logout, and
//!   saves a screenshot of each page under `target/console-screenshots/`.
//!
//! Without node, chromium or `console-tests/node_modules` the browser part is skipped
//! with a `SKIPPED` line, except under `CI=true`, where that fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use support::{copy_dir, forward_lines};

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

struct Started {
    edge: String,
    https: String,
    key: String,
}

fn read_until_ready(lines: &mpsc::Receiver<String>, timeout: Duration) -> Started {
    let deadline = Instant::now() + timeout;
    let mut s = Started {
        edge: String::new(),
        https: String::new(),
        key: String::new(),
    };
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines
            .recv_timeout(left)
            .unwrap_or_else(|e| panic!("komora up not ready ({e}):\n{}", seen.join("\n")));
        seen.push(line.clone());
        if let Some(rest) = line.strip_prefix("komora: edge ready at ") {
            let mut words = rest.split_whitespace();
            s.edge = words.next().unwrap().to_string();
            s.https = words
                .find(|w| w.starts_with("https://"))
                .unwrap()
                .to_string();
        } else if let Some(rest) = line.strip_prefix("komora: admin key ") {
            s.key = rest.trim().to_string();
        } else if line.starts_with("komora: console at ") {
            assert!(line.contains("/console/"), "{line}");
        } else if line.starts_with("komora: ready") {
            return s;
        } else if line.starts_with("komora: error") {
            panic!("komora up failed:\n{}", seen.join("\n"));
        }
    }
}

struct StopOnDrop(std::process::Child);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = kill(Pid::from_raw(self.0.id() as i32), Signal::SIGINT);
            let _ = self.0.wait();
        }
    }
}

/// Why the browser cannot run here, if it cannot.
fn browser_missing(workspace: &Path) -> Option<String> {
    if Command::new("node").arg("--version").output().is_err() {
        return Some("node is not installed".into());
    }
    if !Path::new("/usr/bin/chromium").exists() {
        return Some("/usr/bin/chromium is not installed".into());
    }
    if !workspace
        .join("console-tests/node_modules/playwright-core")
        .exists()
    {
        return Some("console-tests/node_modules is missing (run `npm ci` there)".into());
    }
    None
}

/// Enqueues a task of a kind no worker runs: the worker marks it dead at its first run.
async fn dead_task(db_file: &Path) -> i64 {
    use sqlx::Row;
    sqlx::any::install_default_drivers();
    let url = format!("sqlite://{}", db_file.display());
    let pool = sqlx::AnyPool::connect(&url).await.unwrap();
    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    let id: i64 = sqlx::query(
        "INSERT INTO tasks (queue, kind, payload, state, priority, attempts, max_attempts, \
         run_at, errors, created_at) \
         VALUES ('low', 'console_demo', '{\"note\": \"no handler\"}', 'queued', 0, 0, 3, $1, '[]', $1) \
         RETURNING id",
    )
    .bind(now)
    .fetch_one(&pool)
    .await
    .unwrap()
    .get(0);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let state: String = sqlx::query("SELECT state FROM tasks WHERE id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap()
            .get(0);
        if state == "dead" {
            break;
        }
        assert!(Instant::now() < deadline, "task {id} still {state}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    pool.close().await;
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_through_the_edge_in_a_real_browser() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let root = tempfile::tempdir().unwrap();
    copy_dir(&workspace.join("config"), &root.path().join("config"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_komora"))
        .args(["up", "--root"])
        .arg(root.path())
        .args([
            "--data-dir",
            "var",
            "--demo-conversations",
            "5",
            "--demo-messages",
            "2",
        ])
        .args([
            "--http-port",
            "0",
            "--https-port",
            "0",
            "--edge-admin-port",
            "0",
        ])
        .args([
            "--origin-port",
            "0",
            "--platform-port",
            "0",
            "--origin-internal-port",
            "0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    forward_lines(child.stderr.take().unwrap(), tx.clone());
    forward_lines(child.stdout.take().unwrap(), tx);
    let _child = StopOnDrop(child);
    let s = read_until_ready(&rx, Duration::from_secs(120));

    // Assets through the edge: cached, the second request a hit; pages never.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let login = http
        .get(format!("{}/console/login", s.edge))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);
    assert_eq!(login.headers()["cache-control"], "private, no-store");
    let html = login.text().await.unwrap();
    let at = html.find("/console/assets/console.").unwrap();
    let css = html[at..].split('"').next().unwrap().to_string();
    let mut statuses = Vec::new();
    for _ in 0..2 {
        let r = http.get(format!("{}{css}", s.edge)).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("immutable"));
        statuses.push(r.headers()["x-cache-status"].to_str().unwrap().to_string());
    }
    assert_eq!(statuses[1], "HIT", "second asset request: {statuses:?}");
    for _ in 0..2 {
        let r = http
            .get(format!("{}/console/login", s.edge))
            .send()
            .await
            .unwrap();
        assert_ne!(r.headers()["x-cache-status"], "HIT", "pages are not cached");
    }
    // Over the edge's TLS listener the origin marks the cookie Secure; over plain HTTP not.
    let tls = http
        .get(format!("{}/console/login", s.https))
        .send()
        .await
        .unwrap();
    let set = tls.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(set.contains("; Secure"), "over TLS: {set}");
    let plain = http
        .get(format!("{}/console/login", s.edge))
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    let set = plain.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        !set.contains("Secure"),
        "a client's own X-Forwarded-Proto is replaced by the edge: {set}"
    );

    if let Some(why) = browser_missing(workspace) {
        assert!(!in_ci(), "the browser test must run under CI=true: {why}");
        eprintln!("SKIPPED: console browser test: {why}");
        return;
    }
    let dead = dead_task(&root.path().join("var/komora.db")).await;
    let shots: PathBuf = workspace.join("target/console-screenshots");
    let out = Command::new("node")
        .arg(workspace.join("console-tests/run.mjs"))
        .env("CONSOLE_BASE", &s.edge)
        .env("KOMORA_KEY", &s.key)
        .env("DEAD_TASK_ID", dead.to_string())
        .env("SCREENSHOTS", &shots)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    eprintln!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "console-tests/run.mjs failed: {}",
        out.status
    );
    eprintln!("console screenshots in {}", shots.display());
}
