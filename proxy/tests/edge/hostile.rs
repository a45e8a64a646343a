//! Hostile and sloppy clients against the real edge binary and a real origin: unsafe methods
//! that must not evict what they could not change, pipelined requests, Range edge cases,
//! requests without `Host`, an origin that was down at the first health check, slow request
//! heads, and the origin's internal paths.
//!
//! Over 600 lines on purpose: one short test per hostile case, each self-contained (its own
//! origin and edge), so a failure names the case; splitting would scatter one threat list.

use crate::common::*;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Long enough for anything the edge should answer at once; a hang fails the test instead of
/// blocking the suite.
const PATIENCE: Duration = Duration::from_secs(20);

struct Raw {
    status: u16,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Raw {
    fn header(&self, k: &str) -> &str {
        self.headers.get(k).map_or("", String::as_str)
    }
}

/// Read one Content-Length framed response from `sock`; bytes past it stay in `buf`.
async fn read_response(sock: &mut TcpStream, buf: &mut Vec<u8>, head_only: bool) -> Raw {
    tokio::time::timeout(PATIENCE, async {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut tmp = [0u8; 16384];
            let n = sock.read(&mut tmp).await.unwrap();
            assert!(n > 0, "connection closed before a response head");
            buf.extend_from_slice(&tmp[..n]);
        };
        let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
        buf.drain(..head_end);
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let headers: HashMap<String, String> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let len: usize = if head_only {
            0
        } else {
            headers
                .get("content-length")
                .map_or(0, |v| v.parse().unwrap())
        };
        while buf.len() < len {
            let mut tmp = vec![0u8; 65536];
            let n = sock.read(&mut tmp).await.unwrap();
            assert!(n > 0, "connection closed mid-body");
            buf.extend_from_slice(&tmp[..n]);
        }
        let body = buf.drain(..len).collect();
        Raw {
            status,
            headers,
            body,
        }
    })
    .await
    .expect("no response in time")
}

/// Whether the peer closes the connection (EOF or reset) with nothing more to read.
async fn closes(sock: &mut TcpStream, buf: &[u8]) -> bool {
    if !buf.is_empty() {
        return false;
    }
    let mut rest = Vec::new();
    match tokio::time::timeout(PATIENCE, sock.read_to_end(&mut rest)).await {
        Ok(Ok(_)) => rest.is_empty(),
        Ok(Err(_)) => true,
        Err(_) => false,
    }
}

async fn connect(addr: SocketAddr) -> TcpStream {
    TcpStream::connect(addr).await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn unsafe_methods_invalidate_only_after_a_non_error_answer() {
    let mut origin = Origin::start().await;
    let sha = origin.put_media("/media/u", body_of(5000, 71));
    let dir = tempfile::tempdir().unwrap();
    let edge = spawn_edge(origin.addr, &dir.path().join("c"), None);
    get(&edge.url("/media/u"), &[]).await;
    assert_eq!(get(&edge.url("/media/u"), &[]).await.cache_status(), "HIT");

    // The origin refuses the method: the stored copy stays.
    origin.state.unsafe_status.store(405, Ordering::SeqCst);
    for method in [
        reqwest::Method::POST,
        reqwest::Method::PUT,
        reqwest::Method::DELETE,
    ] {
        let r = client()
            .request(method.clone(), edge.url("/media/u"))
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 405, "{method}");
        let g = get(&edge.url("/media/u"), &[]).await;
        assert_eq!((g.status, g.cache_status()), (200, "HIT"), "after {method}");
        assert_eq!(g.sha(), sha);
    }
    // A 5xx does not invalidate either.
    origin.state.unsafe_status.store(503, Ordering::SeqCst);
    let r = client().post(edge.url("/media/u")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 503);
    assert_eq!(get(&edge.url("/media/u"), &[]).await.cache_status(), "HIT");
    assert_eq!(origin.requests_for("/media/u"), 5, "1 fill + 4 unsafe");

    // With the origin down, an anonymous POST gets a 502 and the only copy survives.
    origin.stop();
    let r = client().post(edge.url("/media/u")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 502);
    let g = get(&edge.url("/media/u"), &[]).await;
    assert_eq!((g.status, g.cache_status()), (200, "HIT"));
    assert_eq!(g.sha(), sha);

    // A 2xx answer does invalidate: the next GET goes to the origin.
    let origin2 = Origin::start().await;
    origin2.put_media("/media/v?x=1", body_of(100, 72));
    let dir2 = tempfile::tempdir().unwrap();
    let edge2 = spawn_edge(origin2.addr, &dir2.path().join("c"), None);
    get(&edge2.url("/media/v?x=1"), &[]).await;
    assert_eq!(
        get(&edge2.url("/media/v?x=1"), &[]).await.cache_status(),
        "HIT"
    );
    let r = client()
        .put(edge2.url("/media/v?x=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    let g = get(&edge2.url("/media/v?x=1"), &[]).await;
    assert_eq!(g.cache_status(), "MISS");
    assert_eq!(origin2.requests_for("/media/v?x=1"), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn pipelined_requests_are_all_answered_in_order() {
    let origin = Origin::start().await;
    let small = body_of(2000, 73);
    let large = body_of(200_000, 74);
    let miss = body_of(3000, 75);
    origin.put_media("/media/small", small.clone());
    origin.put_media("/media/large", large.clone());
    origin.put_media("/media/miss", miss.clone());
    let dir = tempfile::tempdir().unwrap();
    let edge = spawn_edge(origin.addr, &dir.path().join("c"), None);
    // Warm two memory hits: one written with the head, one by sendfile.
    for p in ["/media/small", "/media/large"] {
        get(&edge.url(p), &[]).await;
        assert_eq!(get(&edge.url(p), &[]).await.cache_status(), "HIT");
    }

    // All requests in one write: pingora reads them together.
    let mut sock = connect(edge.addr).await;
    let mut reqs = String::new();
    for p in [
        "/media/small",
        "/media/large",
        "/media/miss",
        "/api/p",
        "/media/small",
    ] {
        reqs.push_str(&format!("GET {p} HTTP/1.1\r\nHost: edge\r\n\r\n"));
    }
    // A request with a body in the middle, then a HEAD.
    reqs.push_str("POST /api/echo HTTP/1.1\r\nHost: edge\r\nContent-Length: 5\r\n\r\nhello");
    reqs.push_str("HEAD /media/large HTTP/1.1\r\nHost: edge\r\n\r\n");
    reqs.push_str("GET /media/large HTTP/1.1\r\nHost: edge\r\n\r\n");
    sock.write_all(reqs.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let want = [
        ("HIT", sha256_hex(&small)),
        ("HIT", sha256_hex(&large)),
        ("MISS", sha256_hex(&miss)),
    ];
    for (i, (status, sha)) in want.iter().enumerate() {
        let r = read_response(&mut sock, &mut buf, false).await;
        assert_eq!(r.status, 200, "response {i}");
        assert_eq!(r.header("x-cache-status"), *status, "response {i}");
        assert_eq!(sha256_hex(&r.body), *sha, "response {i}");
    }
    let r = read_response(&mut sock, &mut buf, false).await;
    assert_eq!((r.status, r.header("x-cache-status")), (200, "BYPASS"));
    assert!(r.body.starts_with(b"{\"n\":"), "api body");
    let r = read_response(&mut sock, &mut buf, false).await;
    assert_eq!(sha256_hex(&r.body), sha256_hex(&small));
    let r = read_response(&mut sock, &mut buf, false).await;
    assert_eq!(r.status, 200, "POST through the pipeline");
    let r = read_response(&mut sock, &mut buf, true).await;
    assert_eq!(r.status, 200, "HEAD");
    assert_eq!(r.header("content-length"), "200000");
    let r = read_response(&mut sock, &mut buf, false).await;
    assert_eq!(sha256_hex(&r.body), sha256_hex(&large));
    assert_eq!(origin.requests_for("/media/miss"), 1);
    assert_eq!(origin.requests_for("/api/echo"), 1);

    // Requests split across writes (the next one arrives while a response is written).
    let mut reqs = Vec::new();
    for _ in 0..3 {
        reqs.extend_from_slice(b"GET /media/large HTTP/1.1\r\nHost: edge\r\n\r\n");
    }
    let (a, b) = reqs.split_at(50);
    sock.write_all(a).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    sock.write_all(b).await.unwrap();
    for i in 0..3 {
        let r = read_response(&mut sock, &mut buf, false).await;
        assert_eq!(sha256_hex(&r.body), sha256_hex(&large), "split {i}");
    }
    assert!(buf.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn range_edge_cases_follow_rfc_9110() {
    let origin = Origin::start().await;
    let body = body_of(8192, 76);
    let sha = origin.put_media("/media/r", body.clone());
    origin.put_media("/media/r2", body.clone());
    let dir = tempfile::tempdir().unwrap();
    let edge = spawn_edge(origin.addr, &dir.path().join("c"), None);

    // On a miss (the fill's own response) and on hits.
    let r = get(&edge.url("/media/r2"), &[("range", "bytes=-0")]).await;
    assert_eq!((r.status, r.cache_status()), (416, "MISS"));
    assert_eq!(r.header("content-range"), "bytes */8192");
    assert!(r.body.is_empty());

    get(&edge.url("/media/r"), &[]).await;
    for _ in 0..2 {
        let r = get(&edge.url("/media/r"), &[("range", "bytes=-0")]).await;
        assert_eq!((r.status, r.cache_status()), (416, "HIT"));
        assert_eq!(r.header("content-range"), "bytes */8192");
        assert!(r.body.is_empty());

        // Invalid range-spec: ignored, full body.
        let r = get(&edge.url("/media/r"), &[("range", "bytes=10-5")]).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-range"), "");
        assert_eq!(r.sha(), sha);

        // First position past the end, even past u64.
        for v in ["bytes=99999999999999999999-", "bytes=8192-"] {
            let r = get(&edge.url("/media/r"), &[("range", v)]).await;
            assert_eq!(r.status, 416, "{v}");
            assert_eq!(r.header("content-range"), "bytes */8192", "{v}");
        }

        // Satisfiable ones, including an end past u64 (clamped).
        let r = get(
            &edge.url("/media/r"),
            &[("range", "bytes=8000-99999999999999999999")],
        )
        .await;
        assert_eq!(r.status, 206);
        assert_eq!(r.header("content-range"), "bytes 8000-8191/8192");
        assert_eq!(&r.body[..], &body[8000..]);
        let r = get(&edge.url("/media/r"), &[("range", "bytes=-10")]).await;
        assert_eq!(r.status, 206);
        assert_eq!(&r.body[..], &body[8182..]);
    }
    assert_eq!(origin.requests_for("/media/r"), 1);
    assert_eq!(origin.requests_for("/media/r2"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn http11_without_exactly_one_host_is_400_and_closed() {
    let origin = Origin::start().await;
    origin.put_media("/media/h", body_of(100, 77));
    let dir = tempfile::tempdir().unwrap();
    let edge = spawn_edge(origin.addr, &dir.path().join("c"), None);

    for req in [
        "GET /media/h HTTP/1.1\r\n\r\n",
        "GET /media/h HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        "GET /media/h HTTP/1.1\r\nHost: a b\r\n\r\n",
        "GET /healthz HTTP/1.1\r\n\r\n",
    ] {
        let mut sock = connect(edge.addr).await;
        // A second request behind it must not be answered on the same connection.
        sock.write_all(format!("{req}GET /media/h HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut buf = Vec::new();
        let r = read_response(&mut sock, &mut buf, false).await;
        assert_eq!(r.status, 400, "{req:?}");
        assert!(
            closes(&mut sock, &buf).await,
            "{req:?} left the connection open"
        );
    }
    assert_eq!(origin.requests(), 0);

    // HTTP/1.0 may omit Host; HTTP/1.1 with one is served.
    for req in [
        "GET /media/h HTTP/1.0\r\n\r\n",
        "GET /media/h HTTP/1.1\r\nHost: edge:8080\r\nConnection: close\r\n\r\n",
    ] {
        let mut sock = connect(edge.addr).await;
        sock.write_all(req.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        let r = read_response(&mut sock, &mut buf, false).await;
        assert_eq!(r.status, 200, "{req:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn origin_down_at_the_first_health_check_is_used_once_it_answers() {
    let addr = free_port(); // nothing listens here yet
    let dir = tempfile::tempdir().unwrap();
    // No health check will run again during the test.
    let edge = spawn_edge(
        addr,
        &dir.path().join("c"),
        Some("[upstream]\nhealth_check_interval_secs = 3600\nconnect_timeout_ms = 500\n"),
    );
    // Let the first check see the origin down.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let r = get(&edge.url("/media/late"), &[]).await;
    assert_eq!(r.status, 502);

    let origin = Origin::start_on(&addr.to_string()).await;
    let sha = origin.put_media("/media/late", body_of(4000, 78));
    let r = get(&edge.url("/media/late"), &[]).await;
    assert_eq!((r.status, r.cache_status()), (200, "MISS"));
    assert_eq!(r.sha(), sha);
    for i in 0..3 {
        let r = get(&edge.url(&format!("/api/late/{i}")), &[]).await;
        assert_eq!(r.status, 200, "request {i}");
    }
    assert_eq!(origin.requests(), 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_origins_a_revived_one_takes_traffic_at_once() {
    let good = Origin::start().await;
    let late_addr = free_port();
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        "[upstream]\norigins = [\"{late_addr}\", \"{}\"]\nhealth_check_interval_secs = 3600\n",
        good.addr
    );
    let cfg_path = dir.path().join("e.toml");
    std::fs::write(&cfg_path, cfg).unwrap();
    let addr = free_port();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_komora-edge"))
        .arg("--config")
        .arg(&cfg_path)
        .arg("--listen")
        .arg(addr.to_string())
        .arg("--cache-dir")
        .arg(dir.path().join("c"))
        .spawn()
        .unwrap();
    let _edge = EdgeProc {
        child,
        addr,
        admin: None,
    };
    wait_listening(addr);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    // The late origin is marked down: everything goes to the good one.
    for i in 0..4 {
        let r = get(&format!("http://{addr}/api/a/{i}"), &[]).await;
        assert_eq!(r.status, 200, "request {i}");
    }
    assert_eq!(good.requests(), 4);
    drop(good);
    // Now only the late one is up: with every peer down the edge tries them all, and the
    // one that answers is used from then on.
    // The first request may still be tried on the dead one (and fail); after that the
    // dead one is skipped and the late one, having answered, takes everything.
    let late = Origin::start_on(&late_addr.to_string()).await;
    let mut statuses = Vec::new();
    for i in 0..6 {
        statuses.push(get(&format!("http://{addr}/api/b/{i}"), &[]).await.status);
    }
    assert!(
        statuses[2..].iter().all(|s| *s == 200),
        "statuses {statuses:?}"
    );
    assert!(late.requests() >= 4, "late origin got {}", late.requests());
}

const SLOW_CFG: &str = "[server]\nrequest_header_timeout_secs = 1\n";

#[tokio::test(flavor = "multi_thread")]
async fn slow_request_head_gets_408_and_close() {
    let origin = Origin::start().await;
    origin.put_media("/media/s", body_of(100, 79));
    let dir = tempfile::tempdir().unwrap();
    let edge = spawn_edge(origin.addr, &dir.path().join("c"), Some(SLOW_CFG));

    // One header line every 300 ms: the head would take 6 s, the deadline is 1 s.
    let mut sock = connect(edge.addr).await;
    sock.write_all(b"GET /media/s HTTP/1.1\r\n").await.unwrap();
    let mut got = Vec::new();
    let trickle = async {
        for i in 0..20 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if sock
                .write_all(format!("X-Slow-{i}: 1\r\n").as_bytes())
                .await
                .is_err()
            {
                break;
            }
            let mut tmp = [0u8; 4096];
            if let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_millis(1), sock.read(&mut tmp)).await
            {
                got.extend_from_slice(&tmp[..n]);
                if n == 0 {
                    break;
                }
            }
        }
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(PATIENCE, sock.read_to_end(&mut rest)).await;
        got.extend_from_slice(&rest);
    };
    tokio::time::timeout(PATIENCE, trickle).await.unwrap();
    let text = String::from_utf8_lossy(&got).to_string();
    assert!(text.starts_with("HTTP/1.1 408"), "{text:?}");
    assert!(
        text.to_ascii_lowercase().contains("connection: close"),
        "{text:?}"
    );
    assert_eq!(origin.requests(), 0);

    // A connection that sends nothing at all is closed too, without a response.
    let mut idle = connect(edge.addr).await;
    assert!(closes(&mut idle, &[]).await, "silent connection kept open");

    // A head that arrives in pieces within the deadline is served.
    let mut sock = connect(edge.addr).await;
    let mut buf = Vec::new();
    for part in ["GET /media/s HTTP/1.1\r\n", "Host: e\r\n", "\r\n"] {
        sock.write_all(part.as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(read_response(&mut sock, &mut buf, false).await.status, 200);

    // An idle keep-alive connection between requests is not a slow head: the deadline
    // starts with the next request's first byte.
    let mut sock = connect(edge.addr).await;
    let mut buf = Vec::new();
    sock.write_all(b"GET /media/s HTTP/1.1\r\nHost: e\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_response(&mut sock, &mut buf, false).await.status, 200);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    sock.write_all(b"GET /media/s HTTP/1.1\r\nHost: e\r\n\r\n")
        .await
        .unwrap();
    let r = read_response(&mut sock, &mut buf, false).await;
    assert_eq!((r.status, r.header("x-cache-status")), (200, "HIT"));
}

/// Paths of the origin that must not be reachable through the edge, as clients may spell them.
const INTERNAL: &[&str] = &[
    "/metrics",
    "/readyz",
    "/admin/queues",
    "/admin/queues?x=1",
    "//metrics",
    "/%61dmin/queues",
    "/media/../admin/queues",
    "/./readyz",
];

async fn assert_internal_denied(edge: &EdgeProc, origin: &Origin, label: &str, media: &str) {
    for path in INTERNAL {
        for method in ["GET", "POST", "HEAD"] {
            let mut sock = connect(edge.addr).await;
            let req =
                format!("{method} {path} HTTP/1.1\r\nHost: edge\r\nContent-Length: 0\r\n\r\n");
            sock.write_all(req.as_bytes()).await.unwrap();
            let mut buf = Vec::new();
            let r = read_response(&mut sock, &mut buf, method == "HEAD").await;
            assert_eq!(r.status, 404, "{label}: {method} {path}");
        }
    }
    assert_eq!(
        origin.requests(),
        0,
        "{label}: an internal path reached the origin"
    );
    let r = get(&edge.url("/api/inbox"), &[]).await;
    assert_eq!(r.status, 200, "{label}: /api/");
    let r = get(&edge.url(media), &[]).await;
    assert_eq!(r.status, 200, "{label}: /media/");
    assert_eq!(origin.requests(), 2, "{label}");
}

/// `/media/pub` signed with [`TEST_SIGNING_KEY`], valid for an hour.
fn signed_pub() -> String {
    use hmac::{Hmac, Mac};
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(TEST_SIGNING_KEY.as_bytes()).unwrap();
    mac.update(format!("pub.{exp}").as_bytes());
    format!(
        "/media/pub?exp={exp}&sig={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn internal_origin_paths_are_denied_by_default_and_shipped_configs() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let shipped = std::fs::read_to_string(root.join("config/edge.toml")).unwrap();
    let docker = std::fs::read_to_string(root.join("docker/config/edge.toml")).unwrap();
    let media = signed_pub();
    for (label, cfg) in [
        ("built-in defaults", None),
        ("config/edge.toml", Some(shipped.as_str())),
        ("docker/config/edge.toml", Some(docker.as_str())),
    ] {
        let origin = Origin::start().await;
        // The shipped configs require signed media URLs; the origin is asked for the URL the
        // client sent, so the object is stored under it.
        origin.put_media(&media, body_of(100, 80));
        let dir = tempfile::tempdir().unwrap();
        let edge = spawn_edge(origin.addr, &dir.path().join("c"), cfg);
        assert_internal_denied(&edge, &origin, label, &media).await;
    }
}

/// Run `openssl s_client` (HTTP/1.1 over TLS) against `addr`: write `input`, keep stdin open
/// and return everything the server sent until it closed the connection.
async fn tls_exchange(addr: SocketAddr, input: &[u8]) -> String {
    use std::process::Stdio;
    let mut child = tokio::process::Command::new("openssl")
        .args(["s_client", "-quiet", "-alpn", "http/1.1", "-connect"])
        .arg(addr.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input).await.unwrap();
    stdin.flush().await.unwrap();
    let mut out = Vec::new();
    let mut stdout = child.stdout.take().unwrap();
    tokio::time::timeout(PATIENCE, stdout.read_to_end(&mut out))
        .await
        .expect("TLS connection not closed in time")
        .unwrap();
    drop(stdin);
    String::from_utf8_lossy(&out).to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_http1_pipelines_and_bounds_the_request_head() {
    let origin = Origin::start().await;
    let body = body_of(3000, 81);
    origin.put_media("/media/t", body.clone());
    let dir = tempfile::tempdir().unwrap();
    let (_edge, tls) = spawn_tls_edge(origin.addr, dir.path(), "request_header_timeout_secs = 1\n");

    // Three pipelined requests in one TLS write: three responses, in order.
    let req = "GET /media/t HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let last = "GET /media/t HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    let out = tls_exchange(tls, format!("{req}{req}{last}").as_bytes()).await;
    let statuses: Vec<&str> = out
        .match_indices("HTTP/1.1 ")
        .map(|(i, _)| &out[i + 9..i + 12])
        .collect();
    assert_eq!(statuses, ["200", "200", "200"], "{out:?}");
    assert_eq!(origin.requests_for("/media/t"), 1);

    // A head that never ends: 408 through TLS, then the connection closes.
    let out = tls_exchange(tls, b"GET /media/t HTTP/1.1\r\nHost: localhost\r\n").await;
    assert!(out.starts_with("HTTP/1.1 408"), "{out:?}");
    assert_eq!(origin.requests_for("/media/t"), 1);
}
