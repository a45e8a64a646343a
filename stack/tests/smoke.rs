//! What a new user does: `komora up`, fetch media through the edge twice, list the inbox
//! with the printed key, post a message and watch it get delivered, then Ctrl-C.
//!
//! Runs the real binaries of this build (`komora`, which starts `komora-origin` and
//! `komora-edge` next to it) on free ports with a fresh data folder.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use sha2::{Digest, Sha256};

use support::copy_dir;

struct Started {
    edge: String,
    /// The origin's internal listener (`/metrics`, `/admin/*`), `HOST:PORT`.
    internal: String,
    platform: String,
    key: String,
    pids: Vec<i32>,
}

/// On a thread of its own, echoes each line of a child's `pipe` with `echo` (so the test
/// shows it, on the same stream) and sends it to `tx`, until the pipe or the receiver ends.
fn forward_lines(pipe: impl Read + Send + 'static, echo: fn(&str), tx: mpsc::Sender<String>) {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            echo(&line);
            if tx.send(line).is_err() {
                break;
            }
        }
    });
}

/// Reads launcher output until the ready line, collecting URLs, the key and child pids.
fn read_until_ready(lines: &mpsc::Receiver<String>, timeout: Duration) -> Started {
    let deadline = Instant::now() + timeout;
    let mut s = Started {
        edge: String::new(),
        internal: String::new(),
        platform: String::new(),
        key: String::new(),
        pids: Vec::new(),
    };
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = match lines.recv_timeout(left) {
            Ok(l) => l,
            Err(e) => panic!(
                "komora up not ready ({e}) within {timeout:?}; output:\n{}",
                seen.join("\n")
            ),
        };
        seen.push(line.clone());
        if let Some(rest) = line.strip_prefix("komora: edge ready at ") {
            let url = rest.split_whitespace().next().unwrap();
            s.edge = url.trim_start_matches("http://").to_string();
        } else if let Some(rest) =
            line.strip_prefix("komora: origin internal (/metrics, /admin/*) at ")
        {
            s.internal = rest.trim().trim_start_matches("http://").to_string();
        } else if let Some(rest) = line.strip_prefix("komora: stand-in platform on ") {
            s.platform = rest.trim().trim_start_matches("http://").to_string();
        } else if let Some(rest) = line.strip_prefix("komora: admin key ") {
            s.key = rest.trim().to_string();
        } else if line.starts_with("komora: started ") {
            let pid = line
                .split("(pid ")
                .nth(1)
                .unwrap()
                .split(',')
                .next()
                .unwrap();
            s.pids.push(pid.parse().unwrap());
        } else if line.starts_with("komora: ready") {
            return s;
        } else if line.starts_with("komora: error") {
            panic!("komora up failed:\n{}", seen.join("\n"));
        }
    }
}

/// Stops the launcher (and so its children) if the test fails half-way, so a failed run
/// leaves no servers behind.
struct StopOnDrop(std::process::Child);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = kill(Pid::from_raw(self.0.id() as i32), Signal::SIGINT);
            let _ = self.0.wait();
        }
    }
}

fn alive(pid: i32) -> bool {
    kill(Pid::from_raw(pid), None).is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn komora_up_serves_media_inbox_and_delivers_then_stops_on_sigint() {
    let root = tempfile::tempdir().unwrap();
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    copy_dir(&workspace.join("config"), &root.path().join("config"));

    let mut child = Command::new(env!("CARGO_BIN_EXE_komora"))
        .args(["up", "--root"])
        .arg(root.path())
        .args([
            "--data-dir",
            "var",
            "--demo-conversations",
            "20",
            "--demo-messages",
            "5",
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
        .args(["--origin-internal-port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut child = StopOnDrop(child);
    forward_lines(stderr, |l| eprintln!("{l}"), tx.clone());
    forward_lines(stdout, |l| println!("{l}"), tx);
    let s = read_until_ready(&rx, Duration::from_secs(120));
    assert!(
        !s.key.is_empty() && !s.edge.is_empty(),
        "key and edge URL printed"
    );
    assert_eq!(s.pids.len(), 3, "origin, worker and edge started");

    let http = reqwest::Client::new();
    let auth = format!("Bearer {}", s.key);

    // Upload media through the edge (POST passes through), then GET it twice.
    let body: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let sha = hex::encode(Sha256::digest(&body));
    let up = http
        .post(format!("http://{}/api/media", s.edge))
        .header("authorization", &auth)
        .header("content-type", "image/png")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert!(up.status().is_success(), "upload: {}", up.status());
    // Media are served on the signed URL the API hands out; the bare path is refused.
    let up: serde_json::Value = up.json().await.unwrap();
    let signed = up["url"].as_str().unwrap();
    assert!(
        signed.starts_with(&format!("/media/{sha}?exp=")),
        "{signed}"
    );
    let bare = http
        .get(format!("http://{}/media/{sha}", s.edge))
        .send()
        .await
        .unwrap();
    assert_eq!(bare.status(), 403);
    let url = format!("http://{}{signed}", s.edge);
    let mut statuses = Vec::new();
    for _ in 0..2 {
        let r = http.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let cc = r.headers()["cache-control"].to_str().unwrap();
        assert!(
            cc.starts_with("private, max-age="),
            "signed media are private: {cc}"
        );
        statuses.push(
            r.headers()
                .get("x-cache-status")
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default(),
        );
        let got = r.bytes().await.unwrap();
        assert_eq!(
            hex::encode(Sha256::digest(&got)),
            sha,
            "same bytes through the edge"
        );
    }
    assert_eq!(statuses, ["MISS", "HIT"]);

    // The inbox through the edge with the printed key: never cached.
    let mut conversation_id = None;
    for _ in 0..2 {
        let r = http
            .get(format!("http://{}/api/inbox?limit=5", s.edge))
            .header("authorization", &auth)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let cache = r.headers().get("x-cache-status").unwrap().to_str().unwrap();
        assert_ne!(cache, "HIT", "API responses are never served from cache");
        let cc = r.headers().get("cache-control").unwrap().to_str().unwrap();
        assert!(cc.contains("no-store"), "inbox is private: {cc}");
        let inbox: serde_json::Value = r.json().await.unwrap();
        let first = &inbox["conversations"][0];
        conversation_id = first["id"].as_i64();
    }
    let conversation_id = conversation_id.expect("the demo inbox has conversations");

    // Metrics and the queue admin API are on the origin's internal listener only: through
    // the edge (the public path) the origin answers 404.
    assert!(!s.internal.is_empty(), "internal listener printed");
    let r = http
        .get(format!("http://{}/metrics", s.internal))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("komora_queue_depth"));
    let r = http
        .get(format!("http://{}/admin/queues", s.internal))
        .header("authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the printed key is an admin key");
    for path in ["/metrics", "/admin/queues"] {
        let r = http
            .get(format!("http://{}{path}", s.edge))
            .header("authorization", &auth)
            .send()
            .await
            .unwrap();
        assert_ne!(r.status(), 200, "{path} must not be public");
    }

    // Post a message; the worker delivers it to the stand-in platform.
    let before: serde_json::Value = http
        .get(format!("http://{}/__stats", s.platform))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let r = http
        .post(format!(
            "http://{}/api/conversations/{conversation_id}/messages",
            s.edge
        ))
        .header("authorization", &auth)
        .json(&serde_json::json!({ "text": "Your translation is ready." }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "post message: {}", r.status());
    let posted: serde_json::Value = r.json().await.unwrap();
    let message_id = posted["id"].as_i64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let page: serde_json::Value = http
            .get(format!(
                "http://{}/api/conversations/{conversation_id}/messages?limit=5",
                s.edge
            ))
            .header("authorization", &auth)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let status = page["messages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"].as_i64() == Some(message_id))
            .map(|m| {
                m["delivery_status"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            });
        if status.as_deref() == Some("sent") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "message {message_id} not delivered in 30 s (status {status:?})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let after: serde_json::Value = http
        .get(format!("http://{}/__stats", s.platform))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        after["delivered"].as_u64().unwrap(),
        before["delivered"].as_u64().unwrap() + 1,
        "delivered exactly once to the platform"
    );

    // Ctrl-C: everything stops and nothing is left running.
    kill(Pid::from_raw(child.0.id() as i32), Signal::SIGINT).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(st) = child.0.try_wait().unwrap() {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "komora did not exit after SIGINT"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "komora exits cleanly: {status}");
    for pid in s.pids {
        assert!(!alive(pid), "child {pid} still running after komora exited");
    }
}
