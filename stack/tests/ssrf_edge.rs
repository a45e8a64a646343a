//! SSRF through the real stack: a correctly signed webhook sent through the edge, whose
//! media URL is the edge's own admin `/metrics` on loopback, must not make the worker fetch
//! it. The task ends dead with the refusal and no media object is written.
//!
//! Runs `komora up` of this build on free ports with a fresh data folder, like the smoke test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use support::{copy_dir, forward_lines};

/// Reads launcher output until ready; returns (edge host:port, edge admin URL).
fn read_until_ready(lines: &mpsc::Receiver<String>) -> (String, String) {
    let deadline = Instant::now() + Duration::from_secs(120);
    let (mut edge, mut admin) = (String::new(), String::new());
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines.recv_timeout(left).expect("komora up ready in time");
        if let Some(rest) = line.strip_prefix("komora: edge ready at ") {
            let url = rest.split_whitespace().next().unwrap();
            edge = url.trim_start_matches("http://").to_string();
        } else if let Some(rest) = line.strip_prefix("komora: edge admin (purge, /metrics) at ") {
            admin = rest.trim().to_string();
        } else if line.starts_with("komora: ready") {
            return (edge, admin);
        } else if line.starts_with("komora: error") {
            panic!("komora up failed: {line}");
        }
    }
}

/// Files under `dir`, recursively (0 when it does not exist).
fn files_under(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .map(|e| {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                files_under(&e.path())
            } else {
                1
            }
        })
        .sum()
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_through_the_edge_cannot_make_the_worker_fetch_loopback() {
    let root = tempfile::tempdir().unwrap();
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    copy_dir(&workspace.join("config"), &root.path().join("config"));
    // The webhook secret is never written to a file: hand `komora up` the one we sign with.
    let secret: String = (0..4)
        .map(|_| {
            use std::hash::{BuildHasher, Hasher};
            let h = std::collections::hash_map::RandomState::new().build_hasher();
            format!("{:016x}", h.finish())
        })
        .collect();
    let child = Command::new(env!("CARGO_BIN_EXE_komora"))
        .env("KOMORA_PLATFORM_TELEGRAM_WEBHOOK_SECRET", &secret)
        .args(["up", "--root"])
        .arg(root.path())
        .args([
            "--data-dir",
            "var",
            "--demo-conversations",
            "2",
            "--demo-messages",
            "1",
        ])
        .args([
            "--http-port",
            "0",
            "--https-port",
            "0",
            "--edge-admin-port",
            "0",
        ])
        .args(["--origin-port", "0", "--platform-port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = StopOnDrop(child);
    let (tx, rx) = mpsc::channel();
    forward_lines(child.0.stderr.take().unwrap(), tx.clone());
    forward_lines(child.0.stdout.take().unwrap(), tx);
    let (edge, admin) = read_until_ready(&rx);
    assert!(!edge.is_empty() && !admin.is_empty());
    let http = reqwest::Client::new();
    let target = format!("{admin}/metrics");
    // The target is live: fetched directly, it answers.
    assert!(http
        .get(&target)
        .send()
        .await
        .unwrap()
        .status()
        .is_success());

    let var = root.path().join("var");
    let origin_cfg = var.join("run").join("origin.toml");
    let media_before = files_under(&var.join("media"));
    let r = http
        .post(format!("http://{edge}/webhooks/telegram"))
        .header("x-komora-webhook-secret", &secret)
        .json(&serde_json::json!({
            "chat_id": "attacker", "message_id": "ssrf-1", "text": "invoice",
            "media": [{"url": target, "name": "invoice.pdf"}]
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "signed webhook accepted through the edge");

    // The worker refuses the download: the task is dead with the reason.
    let origin_bin = Path::new(env!("CARGO_BIN_EXE_komora")).with_file_name("komora-origin");
    let deadline = Instant::now() + Duration::from_secs(30);
    let dead = loop {
        let out = Command::new(&origin_bin)
            .arg("--config")
            .arg(&origin_cfg)
            .args(["queue", "dead"])
            .env_remove("KOMORA_DATABASE_URL")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        if text.contains("download_and_save_media") {
            break text;
        }
        assert!(Instant::now() < deadline, "no dead download task: {text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        dead.contains("refused") && dead.contains("loopback"),
        "{dead}"
    );
    assert_eq!(
        files_under(&var.join("media")),
        media_before,
        "nothing fetched into the media store"
    );
}
