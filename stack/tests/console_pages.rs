//! The console's edge and inbox pages against the real stack: `komora up` of this build
//! (origin, worker and edge binaries) on free ports with a fresh data folder, the console
//! reached through the edge like a browser would.
//!
//! - The inbox preview shows a conversation's image as a thumbnail whose URL loads through
//!   the edge (MISS, then HIT from its cache).
//! - The edge page shows the edge's figures; a purge without the form's CSRF token is
//!   refused; with it, the edge answers `{"purged":1}` and the next request for the
//!   thumbnail is a MISS.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use support::{copy_dir, forward_lines};

/// Reads launcher output until ready; returns (edge host:port, admin key).
fn read_until_ready(lines: &mpsc::Receiver<String>) -> (String, String) {
    let deadline = Instant::now() + Duration::from_secs(120);
    let (mut edge, mut key) = (String::new(), String::new());
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines.recv_timeout(left).expect("komora up ready in time");
        if let Some(rest) = line.strip_prefix("komora: edge ready at ") {
            let url = rest.split_whitespace().next().unwrap();
            edge = url.trim_start_matches("http://").to_string();
        } else if let Some(rest) = line.strip_prefix("komora: admin key ") {
            key = rest.trim().to_string();
        } else if line.starts_with("komora: ready") {
            return (edge, key);
        } else if line.starts_with("komora: error") {
            panic!("komora up failed: {line}");
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

/// The value of the first `name="…" value="…"` input named `name` in `html`.
fn input_value(html: &str, name: &str) -> String {
    let at = html
        .find(&format!("name=\"{name}\""))
        .unwrap_or_else(|| panic!("no input {name} in:\n{html}"));
    let rest = &html[at..];
    let v = rest.find("value=\"").unwrap() + 7;
    let end = rest[v..].find('"').unwrap();
    rest[v..v + end].to_string()
}

/// A browser's share of HTTP for this test: one cookie jar, no redirects followed.
struct Browser {
    http: reqwest::Client,
    base: String,
    cookies: Vec<(String, String)>,
}

impl Browser {
    fn new(edge: &str) -> Browser {
        Browser {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            base: format!("http://{edge}"),
            cookies: Vec::new(),
        }
    }

    fn keep_cookies(&mut self, resp: &reqwest::Response) {
        for v in resp.headers().get_all("set-cookie") {
            let v = v.to_str().unwrap();
            let pair = v.split(';').next().unwrap();
            let (k, val) = pair.split_once('=').unwrap();
            self.cookies.retain(|(n, _)| n != k);
            if !val.is_empty() && !v.contains("Max-Age=0") {
                self.cookies.push((k.to_string(), val.to_string()));
            }
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn get(&mut self, path: &str) -> reqwest::Response {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .header("cookie", self.cookie_header())
            .send()
            .await
            .unwrap();
        self.keep_cookies(&resp);
        resp
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        let body: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .header("cookie", self.cookie_header())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        self.keep_cookies(&resp);
        resp
    }

    async fn login(&mut self, key: &str) {
        let page = self.get("/console/login").await.text().await.unwrap();
        let csrf = input_value(&page, "csrf");
        let resp = self
            .post(
                "/console/login",
                &[("csrf", &csrf), ("key", key), ("next", "/console/inbox")],
            )
            .await;
        assert_eq!(resp.status(), 303, "login through the edge");
    }
}

fn cache_status(resp: &reqwest::Response) -> String {
    resp.headers()
        .get("x-cache-status")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

/// What starts a thumbnail's URL in a page.
const THUMB: &str = "class=\"thumb\" src=\"";

const PNG_1X1: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1f, 0x15, 0xc4,
    0x89, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0x00, 0x01, 0x00, 0x00,
    0x05, 0x00, 0x01, 0x0d, 0x0a, 0x2d, 0xb4, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae,
    0x42, 0x60, 0x82,
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbox_thumbnails_load_through_the_edge_and_a_purge_from_the_console_empties_it() {
    let root = tempfile::tempdir().unwrap();
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    copy_dir(&workspace.join("config"), &root.path().join("config"));
    let child = Command::new(env!("CARGO_BIN_EXE_komora"))
        .args(["up", "--root"])
        .arg(root.path())
        .args([
            "--data-dir",
            "var",
            "--demo-conversations",
            "3",
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
        .args(["--origin-port", "0", "--platform-port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = StopOnDrop(child);
    let (tx, rx) = mpsc::channel();
    forward_lines(child.0.stderr.take().unwrap(), tx.clone());
    forward_lines(child.0.stdout.take().unwrap(), tx);
    let (edge, key) = read_until_ready(&rx);
    let api = reqwest::Client::new();
    let base = format!("http://{edge}");

    // An image attached to a message of the newest conversation, through the API.
    let up: serde_json::Value = api
        .post(format!("{base}/api/media?filename=scan.png"))
        .bearer_auth(&key)
        .header("content-type", "image/png")
        .body(PNG_1X1.to_vec())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (media_id, sha) = (up["id"].as_i64().unwrap(), up["sha256"].as_str().unwrap());
    let inbox: serde_json::Value = api
        .get(format!("{base}/api/inbox?limit=1"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let conv = inbox["conversations"][0]["id"]
        .as_i64()
        .expect("a seeded conversation");
    let sent = api
        .post(format!("{base}/api/conversations/{conv}/messages"))
        .bearer_auth(&key)
        .json(&serde_json::json!({"text": "the scan you asked for", "media_ids": [media_id]}))
        .send()
        .await
        .unwrap();
    assert!(sent.status().is_success(), "message: {}", sent.status());

    // The inbox preview, through the edge: seeded conversations, then the thumbnail.
    let mut browser = Browser::new(&edge);
    browser.login(&key).await;
    let list = browser.get("/console/inbox").await;
    assert_eq!(list.status(), 200);
    let list = list.text().await.unwrap();
    assert_eq!(
        list.matches("href=\"/console/inbox/").count(),
        3,
        "the three seeded conversations: {list}"
    );
    let page = browser.get(&format!("/console/inbox/{conv}")).await;
    assert_eq!(page.status(), 200);
    let page = page.text().await.unwrap();
    assert!(page.contains("the scan you asked for"), "{page}");
    let src_at = page.find(THUMB).expect("a thumbnail") + THUMB.len();
    let src = page[src_at..page[src_at..].find('"').unwrap() + src_at].replace("&amp;", "&");
    assert!(src.starts_with(&format!("/media/{sha}?exp=")), "{src}");
    let first = api.get(format!("{base}{src}")).send().await.unwrap();
    assert_eq!(first.status(), 200);
    assert_eq!(cache_status(&first), "MISS");
    assert_eq!(first.bytes().await.unwrap().as_ref(), PNG_1X1);
    let second = api.get(format!("{base}{src}")).send().await.unwrap();
    assert_eq!(
        cache_status(&second),
        "HIT",
        "the thumbnail is served from the edge"
    );

    // The edge page reads the edge's own figures.
    let edge_page = browser.get("/console/edge").await;
    assert_eq!(edge_page.status(), 200);
    let edge_page = edge_page.text().await.unwrap();
    assert!(edge_page.contains("Hit ratio"), "{edge_page}");
    assert!(!edge_page.contains("No figures"), "{edge_page}");
    let csrf = input_value(&edge_page, "csrf");

    // Without the form's token: refused, and the thumbnail stays cached.
    let target = format!("/media/{sha}");
    let refused = browser
        .post(
            "/console/edge/purge",
            &[("kind", "url"), ("target", &target)],
        )
        .await;
    assert_eq!(refused.status(), 403);
    let still = api.get(format!("{base}{src}")).send().await.unwrap();
    assert_eq!(cache_status(&still), "HIT");

    // With it: every edge answers, and the next request goes to the origin.
    let purged = browser
        .post(
            "/console/edge/purge",
            &[("csrf", &csrf), ("kind", "url"), ("target", &target)],
        )
        .await;
    assert_eq!(purged.status(), 200);
    let purged = purged.text().await.unwrap();
    assert!(purged.contains("Every edge accepted the purge"), "{purged}");
    assert!(purged.contains("{&quot;purged&quot;:1}"), "{purged}");
    let after = api.get(format!("{base}{src}")).send().await.unwrap();
    assert_eq!(cache_status(&after), "MISS", "purged from the edge");
    assert_eq!(after.bytes().await.unwrap().as_ref(), PNG_1X1);
}
