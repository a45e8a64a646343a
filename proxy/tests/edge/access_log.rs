//! The access log (combined and JSON lines for every path a response can take, the request
//! id to the origin, reopen on SIGUSR1, drop-and-count when the writer is stuck), the
//! downstream metrics, and client closes counted instead of logged as errors.

use crate::common::*;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Spawn the edge with `config` and an admin listener, stderr captured in a file.
fn spawn_logged(origin: SocketAddr, dir: &Path, config: &str) -> (EdgeProc, PathBuf) {
    spawn_edge_stderr(origin, dir, config, false)
}

/// [`spawn_logged`] with the test clock hook on (see `EdgeProc::advance_clock`).
fn spawn_logged_clocked(origin: SocketAddr, dir: &Path, config: &str) -> (EdgeProc, PathBuf) {
    spawn_edge_stderr(origin, dir, config, true)
}

/// The log's lines once it has at least `n` (the writer is asynchronous).
async fn lines_at_least(path: &Path, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        if lines.len() >= n {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "{} has {} lines, want {n}:\n{text}",
            path.display(),
            lines.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A combined line split into its fields: the quoted request, referer and user agent are
/// one field each.
fn fields(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = line;
    while !rest.is_empty() {
        rest = rest.trim_start();
        let (field, tail) = if let Some(r) = rest.strip_prefix('"') {
            let end = r.find('"').unwrap();
            (&r[..end], &r[end + 1..])
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']').unwrap();
            (&r[..end], &r[end + 1..])
        } else {
            let end = rest.find(' ').unwrap_or(rest.len());
            (&rest[..end], &rest[end..])
        };
        out.push(field.to_string());
        rest = tail;
    }
    out
}

async fn get_with(client: &reqwest::Client, url: &str, headers: &[(&str, &str)]) -> Got {
    let mut rb = client.get(url);
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    let r = rb.send().await.unwrap();
    Got {
        status: r.status().as_u16(),
        headers: r.headers().clone(),
        body: r.bytes().await.unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn combined_log_has_a_line_for_every_kind_of_response() {
    let origin = Origin::start().await;
    let small = body_of(1000, 1);
    let large = body_of(100_000, 2);
    let sha_small = origin.put_media("/media/s", small.clone());
    let sha_large = origin.put_media("/media/l", large.clone());
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let (edge, stderr) = spawn_logged(
        origin.addr,
        dir.path(),
        &format!("[access_log]\npath = \"{}\"\n", log.display()),
    );
    let c = client();
    let ua = ("user-agent", "test-agent/1 \"quoted\"");
    let rid = ("x-request-id", "req-1");
    // 1 MISS, 2 HIT (direct memory hit), 3 HIT 304 (direct), 4 MISS large, 5 HIT large
    // (sendfile), 6 bypass, 7 origin 404, 8 HEAD hit.
    let r = get_with(&c, &edge.url("/media/s"), &[ua, rid]).await;
    assert_eq!(
        (r.status, r.cache_status(), r.sha()),
        (200, "MISS", sha_small.clone())
    );
    let r = get_with(&c, &edge.url("/media/s"), &[ua, ("referer", "http://x/")]).await;
    assert_eq!(
        (r.status, r.cache_status(), r.sha()),
        (200, "HIT", sha_small.clone())
    );
    let etag = format!("\"{sha_small}\"");
    let r = get_with(&c, &edge.url("/media/s"), &[("if-none-match", &etag)]).await;
    assert_eq!((r.status, r.cache_status()), (304, "HIT"));
    let r = get_with(&c, &edge.url("/media/l"), &[]).await;
    assert_eq!((r.status, r.sha()), (200, sha_large.clone()));
    let r = get_with(&c, &edge.url("/media/l"), &[]).await;
    assert_eq!(
        (r.status, r.cache_status(), r.sha()),
        (200, "HIT", sha_large)
    );
    let r = get_with(&c, &edge.url("/api/x?a=1"), &[]).await;
    assert_eq!((r.status, r.cache_status()), (200, "BYPASS"));
    let r = get_with(&c, &edge.url("/media/none"), &[]).await;
    assert_eq!(r.status, 404);
    let head = c.head(edge.url("/media/s")).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(origin.requests_for("/media/s"), 1);
    assert_eq!(origin.requests_for("/media/l"), 1);

    let lines = lines_at_least(&log, 8).await;
    assert_eq!(lines.len(), 8, "{lines:#?}");
    let f: Vec<Vec<String>> = lines.iter().map(|l| fields(l)).collect();
    for (l, f) in lines.iter().zip(&f) {
        // addr - - [time] "request" status body "referer" "ua" cache ustatus utime rtime
        // bytes id
        assert_eq!(f.len(), 15, "{l}");
        assert_eq!(
            (f[0].as_str(), f[1].as_str(), f[2].as_str()),
            ("127.0.0.1", "-", "-")
        );
        assert_eq!(f[3].len(), 26, "time {l}");
        let body: u64 = f[6].parse().unwrap();
        let sent: u64 = f[13].parse().unwrap();
        assert!(sent > body, "bytes_sent counts the head: {l}");
        assert!(!f[14].is_empty() && f[14] != "-", "request id: {l}");
        let rt: f64 = f[12].parse().unwrap();
        assert!(rt >= 0.0, "{l}");
    }
    let pick = |i: usize| {
        let x = &f[i];
        (
            x[4].as_str(),
            x[5].as_str(),
            x[6].as_str(),
            x[9].as_str(),
            x[10].as_str(),
        )
    };
    assert_eq!(
        pick(0),
        ("GET /media/s HTTP/1.1", "200", "1000", "MISS", "200")
    );
    assert_eq!(f[0][14], "req-1");
    assert_eq!(f[0][8], "test-agent/1 \\x22quoted\\x22");
    assert_ne!(f[0][11], "-", "upstream time on a miss");
    assert_eq!(
        pick(1),
        ("GET /media/s HTTP/1.1", "200", "1000", "HIT", "-")
    );
    assert_eq!(f[1][7], "http://x/");
    assert_eq!(f[1][11], "-", "no upstream time on a hit");
    assert_eq!(pick(2), ("GET /media/s HTTP/1.1", "304", "0", "HIT", "-"));
    assert_eq!(
        pick(3),
        ("GET /media/l HTTP/1.1", "200", "100000", "MISS", "200")
    );
    assert_eq!(
        pick(4),
        ("GET /media/l HTTP/1.1", "200", "100000", "HIT", "-")
    );
    assert_eq!(pick(5).0, "GET /api/x?a=1 HTTP/1.1");
    assert_eq!((pick(5).1, pick(5).3, pick(5).4), ("200", "BYPASS", "200"));
    assert_eq!((pick(6).1, pick(6).4), ("404", "404"));
    assert_eq!(pick(7), ("HEAD /media/s HTTP/1.1", "200", "0", "HIT", "-"));
    // Generated ids differ per request.
    assert_ne!(f[1][14], f[2][14]);

    // Downstream metrics saw the same requests.
    let hit_2xx = metric(
        &edge,
        "komora_edge_responses_total",
        "cache_status=\"HIT\",status_class=\"2xx\"",
    )
    .await;
    assert_eq!(hit_2xx, 3.0);
    let hit_3xx = metric(
        &edge,
        "komora_edge_responses_total",
        "cache_status=\"HIT\",status_class=\"3xx\"",
    )
    .await;
    assert_eq!(hit_3xx, 1.0);
    let miss_4xx = metric(&edge, "komora_edge_responses_total", "status_class=\"4xx\"").await;
    assert_eq!(miss_4xx, 1.0);
    let count = metric(&edge, "komora_edge_request_duration_seconds_count", "").await;
    assert_eq!(count, 8.0);
    assert_eq!(
        metric(&edge, "komora_edge_access_log_dropped_total", "").await,
        0.0
    );
    let err = std::fs::read_to_string(stderr).unwrap();
    assert!(!err.contains("ERROR"), "{err}");
}

/// An origin that records every request head it gets and answers 200 with a small body.
async fn recording_origin() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let heads: Arc<Mutex<Vec<String>>> = Arc::default();
    let h = heads.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let h = h.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let mut tmp = [0u8; 4096];
                    match sock.read(&mut tmp).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&tmp[..n]),
                    }
                    while let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..i]).to_ascii_lowercase();
                        buf.drain(..i + 4);
                        h.lock().unwrap().push(head);
                        let resp = "HTTP/1.1 200 OK\r\ncache-control: no-store\r\n\
                                    content-length: 2\r\n\r\nok";
                        if sock.write_all(resp.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, heads)
}

fn request_id_of(head: &str) -> String {
    head.lines()
        .find_map(|l| l.strip_prefix("x-request-id: "))
        .unwrap_or("")
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn json_log_and_the_origin_share_the_request_id() {
    let (origin, heads) = recording_origin().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.json");
    let (_edge, _) = spawn_logged(
        origin,
        dir.path(),
        &format!(
            "[access_log]\npath = \"{}\"\nformat = \"json\"\n",
            log.display()
        ),
    );
    let c = client();
    let url = format!("http://{}/api/one", _edge.addr);
    let r = get_with(&c, &url, &[("x-request-id", "client-id-7")]).await;
    assert_eq!((r.status, &r.body[..]), (200, &b"ok"[..]));
    let r = get_with(&c, &url, &[]).await;
    assert_eq!(r.status, 200);
    // Not a sane id (space): replaced, never forwarded or logged as sent.
    let r = get_with(&c, &url, &[("x-request-id", "bad id")]).await;
    assert_eq!(r.status, 200);

    let lines = lines_at_least(&log, 3).await;
    let heads = heads.lock().unwrap().clone();
    assert_eq!(heads.len(), 3, "{heads:#?}");
    let logged: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for (v, head) in logged.iter().zip(&heads) {
        assert_eq!(v["status"], 200, "{v}");
        assert_eq!(v["upstream_status"], 200, "{v}");
        assert_eq!(v["cache_status"], "BYPASS", "{v}");
        assert_eq!(v["method"], "GET");
        assert_eq!(v["uri"], "/api/one");
        assert_eq!(v["protocol"], "HTTP/1.1");
        assert_eq!(v["body_bytes_sent"], 2);
        assert!(
            v["upstream_time"].is_number() && v["request_time"].is_number(),
            "{v}"
        );
        assert_eq!(
            v["request_id"].as_str().unwrap(),
            request_id_of(head),
            "{head}"
        );
    }
    assert_eq!(logged[0]["request_id"], "client-id-7");
    let generated = logged[1]["request_id"].as_str().unwrap();
    let replaced = logged[2]["request_id"].as_str().unwrap();
    assert!(
        !generated.is_empty() && generated != replaced,
        "{generated} {replaced}"
    );
    assert!(!replaced.contains(' '));
}

#[tokio::test(flavor = "multi_thread")]
async fn sigusr1_reopens_the_log_after_rotation() {
    let origin = Origin::start().await;
    origin.put_media("/media/r", body_of(500, 3));
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let (edge, _) = spawn_logged(
        origin.addr,
        dir.path(),
        &format!("[access_log]\npath = \"{}\"\n", log.display()),
    );
    let c = client();
    for _ in 0..3 {
        assert_eq!(get_with(&c, &edge.url("/media/r"), &[]).await.status, 200);
    }
    lines_at_least(&log, 3).await;
    // logrotate: rename, then signal.
    let rotated = dir.path().join("access.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    let ok = Command::new("kill")
        .arg("-USR1")
        .arg(edge.pid().to_string())
        .status()
        .unwrap();
    assert!(ok.success());
    // The reopen happens on the writer thread: wait until the new file exists.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !log.exists() {
        assert!(Instant::now() < deadline, "log not reopened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..2 {
        assert_eq!(get_with(&c, &edge.url("/media/r"), &[]).await.status, 200);
    }
    let new = lines_at_least(&log, 2).await;
    assert_eq!(new.len(), 2, "{new:#?}");
    assert!(new
        .iter()
        .all(|l| l.contains("\"GET /media/r HTTP/1.1\" 200 500")));
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert_eq!(old.lines().count(), 3, "{old}");
    // Still alive and serving: SIGUSR1 did not take its default action.
    assert!(edge_alive(&edge));
}

fn edge_alive(edge: &EdgeProc) -> bool {
    Command::new("kill")
        .arg("-0")
        .arg(edge.pid().to_string())
        .status()
        .unwrap()
        .success()
}

#[tokio::test(flavor = "multi_thread")]
async fn stuck_log_writer_drops_and_counts_instead_of_blocking_requests() {
    let origin = Origin::start().await;
    let sha = origin.put_media("/media/d", body_of(200, 4));
    let dir = tempfile::tempdir().unwrap();
    // A FIFO nobody reads: once its pipe buffer is full the writer thread blocks in write(2).
    let fifo = dir.path().join("access.fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    // Hold a read end open (never read) so the edge's open for writing does not block.
    let reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(&fifo)
        .unwrap();
    let (edge, _) = spawn_logged(
        origin.addr,
        dir.path(),
        &format!(
            "[access_log]\npath = \"{}\"\nqueue_lines = 4\n",
            fifo.display()
        ),
    );
    let c = client();
    // Each line is ~200 bytes; 3000 lines are well past a 64 KiB pipe buffer.
    let start = Instant::now();
    for i in 0..3000 {
        let r = get_with(&c, &edge.url("/media/d"), &[]).await;
        assert_eq!(r.status, 200, "request {i}");
        assert_eq!(r.sha(), sha);
    }
    let dropped = metric(&edge, "komora_edge_access_log_dropped_total", "").await;
    assert!(dropped > 0.0, "no line dropped after {:?}", start.elapsed());
    assert!(dropped < 3000.0);
    assert_eq!(origin.requests_for("/media/d"), 1);
    drop(reader);
}

#[tokio::test(flavor = "multi_thread")]
async fn client_closes_are_counted_not_logged_as_errors() {
    let origin = Origin::start().await;
    origin.put_media("/media/big", body_of(8 << 20, 5));
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let (edge, stderr) = spawn_logged(
        origin.addr,
        dir.path(),
        &format!("[access_log]\npath = \"{}\"\n", log.display()),
    );
    // Half a request head, then close.
    let mut s = TcpStream::connect(edge.addr).await.unwrap();
    s.write_all(b"GET /media/big HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(s);
    // An idle connection that never sends anything.
    drop(TcpStream::connect(edge.addr).await.unwrap());
    // A whole request whose 8 MiB response the client abandons after the first bytes
    // (through pingora's proxy path: a miss).
    let mut s = TcpStream::connect(edge.addr).await.unwrap();
    s.write_all(b"GET /media/big HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 1024];
    let n = s.read(&mut first).await.unwrap();
    assert!(first[..n].starts_with(b"HTTP/1.1 200"));
    drop(s);

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let head = metric(&edge, "komora_edge_client_closed_total", "request_head").await;
        let flight = metric(&edge, "komora_edge_client_closed_total", "in_flight").await;
        if head >= 1.0 && flight >= 1.0 {
            assert_eq!(head, 1.0, "only the half-sent head counts as a head close");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "client_closed head={head} in_flight={flight}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The edge still works, the fill finished for the next client.
    let r = get(&edge.url("/media/big"), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 8 << 20);
    assert_eq!(origin.requests_for("/media/big"), 1);
    let err = std::fs::read_to_string(&stderr).unwrap();
    assert!(
        !err.contains("ERROR"),
        "client behaviour logged as error:\n{err}"
    );
    assert!(
        !err.contains("WARN"),
        "client behaviour logged as warning:\n{err}"
    );
    // The abandoned request is in the access log with what it got.
    let lines = lines_at_least(&log, 2).await;
    assert!(
        lines[0].contains("\"GET /media/big HTTP/1.1\" 200 "),
        "{lines:#?}"
    );
}

#[test]
fn access_log_keys_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[access_log]\npath = \"\"\nformat = \"xml\"\nqueue_lines = 0\nlevel = 1\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_komora-edge"))
        .arg("--check-config")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    let name = bad.display();
    for want in [
        format!("{name}: access_log.level: unknown key"),
        format!("{name}: access_log.format: must be \"combined\" or \"json\", got \"xml\""),
        format!("{name}: access_log.queue_lines: must be in 1..=1048576, got 0"),
        format!("{name}: access_log.path: must not be empty"),
    ] {
        assert!(err.contains(&want), "{want} missing in:\n{err}");
    }
    // A valid file whose log cannot be opened: the edge refuses to start and says why.
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        "[access_log]\npath = \"/nonexistent-dir/access.log\"\nformat = \"json\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_komora-edge"))
        .arg("--check-config")
        .arg(&good)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let out = Command::new(env!("CARGO_BIN_EXE_komora-edge"))
        .arg("--config")
        .arg(&good)
        .arg("--listen")
        .arg(free_port().to_string())
        .arg("--cache-dir")
        .arg(dir.path().join("cache"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("access_log.path /nonexistent-dir/access.log: No such file"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn background_refresh_is_not_a_logged_request() {
    let origin = Origin::start().await;
    let body = body_of(4000, 6);
    origin.put(
        "/media/swr",
        body.clone(),
        &[("cache-control", "public, max-age=1")],
    );
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let (edge, _) = spawn_logged_clocked(
        origin.addr,
        dir.path(),
        &format!(
            "[access_log]\npath = \"{}\"\n[[route]]\nprefix = \"/media/\"\n\
             stale_while_revalidate_secs = 60\n[[route]]\nprefix = \"/\"\nmode = \"bypass\"\n",
            log.display()
        ),
    );
    assert_eq!(
        get(&edge.url("/media/swr"), &[]).await.cache_status(),
        "MISS"
    );
    edge.advance_clock(Duration::from_millis(2100)).await;
    let r = get(&edge.url("/media/swr"), &[]).await;
    assert_eq!((r.status, r.cache_status()), (200, "UPDATING"));
    assert_eq!(r.sha(), sha256_hex(&body));
    // pingora refreshes in a background subrequest of its own.
    let deadline = Instant::now() + Duration::from_secs(5);
    while origin.requests_for("/media/swr") < 2 {
        assert!(Instant::now() < deadline, "no background refresh");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Give the refresh time to finish (and, were it logged, to reach the log).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let lines = lines_at_least(&log, 2).await;
    assert_eq!(lines.len(), 2, "only the client's requests: {lines:#?}");
    assert!(lines[0].contains(" 200 4000 ") && lines[0].contains(" MISS "));
    assert!(lines[1].contains(" 200 4000 ") && lines[1].contains(" UPDATING "));
    let count = metric(&edge, "komora_edge_request_duration_seconds_count", "").await;
    assert_eq!(count, 2.0);
}
