//! HTTP/2 downstreams: a filling HTTP/2 client that does not read (its flow-control window
//! stays shut) does not pace the fill for anyone, a cold Range over HTTP/2 is a 206 while the
//! full object is cached, and request heads (preface, header blocks trickled as
//! CONTINUATION frames) have the `server.request_header_timeout_secs` deadline.
//!
//! The raw HTTP/2 clients write frames by hand through `openssl s_client` (TLS with ALPN
//! `h2`), as the TLS tests in `hostile.rs` do for HTTP/1.

use crate::common::*;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, ChildStdout};

/// Hang detection only, far above what an unpaced fill or a deadline needs.
const HANG: Duration = Duration::from_secs(60);

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const SETTINGS: u8 = 0x4;
const WINDOW_UPDATE: u8 = 0x8;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

/// One HTTP/2 frame on the wire.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
    let mut f = vec![len[1], len[2], len[3], kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// HPACK block of `GET https://localhost{path}` (static-table method and scheme, literal
/// path and authority).
fn get_block(path: &str) -> Vec<u8> {
    let mut b = vec![0x82, 0x87, 0x44, u8::try_from(path.len()).unwrap()];
    b.extend_from_slice(path.as_bytes());
    b.extend_from_slice(&[0x41, 9]);
    b.extend_from_slice(b"localhost");
    b
}

/// An HTTP/2 connection over `openssl s_client`, frames written and read by hand.
struct RawH2 {
    child: Child,
    stdin: ChildStdin,
    stdout: Option<ChildStdout>,
}

impl RawH2 {
    /// Connect to `addr`, offering only `h2`.
    fn connect(addr: SocketAddr) -> RawH2 {
        let mut child = tokio::process::Command::new("openssl")
            .args(["s_client", "-quiet", "-alpn", "h2", "-connect"])
            .arg(addr.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take();
        RawH2 {
            child,
            stdin,
            stdout,
        }
    }

    /// Write bytes to the connection; false once it is gone.
    async fn send(&mut self, bytes: &[u8]) -> bool {
        self.stdin.write_all(bytes).await.is_ok() && self.stdin.flush().await.is_ok()
    }

    /// Preface and an empty SETTINGS frame (default windows: 64 KiB - 1).
    async fn start(&mut self) {
        assert!(self.send(PREFACE).await);
        assert!(self.send(&frame(SETTINGS, 0, 0, &[])).await);
    }

    /// The next frame the server sent: (type, flags, stream, payload); `None` at the end.
    async fn next_frame(&mut self) -> Option<(u8, u8, u32, Vec<u8>)> {
        let out = self.stdout.as_mut().unwrap();
        let mut head = [0u8; 9];
        out.read_exact(&mut head).await.ok()?;
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let stream = u32::from_be_bytes([head[5] & 0x7f, head[6], head[7], head[8]]);
        let mut payload = vec![0u8; len];
        out.read_exact(&mut payload).await.ok()?;
        Some((head[3], head[4], stream, payload))
    }

    /// Read frames until the response head of `stream`; the DATA bytes of `stream` seen.
    async fn response_head(&mut self, stream: u32) -> Vec<u8> {
        let mut data = Vec::new();
        loop {
            let (kind, _, id, payload) = self.next_frame().await.expect("closed before a head");
            match kind {
                HEADERS if id == stream => return data,
                DATA if id == stream => data.extend_from_slice(&payload),
                _ => {}
            }
        }
    }

    /// Read the DATA of `stream` into `body` until END_STREAM.
    async fn body(&mut self, stream: u32, body: &mut Vec<u8>) {
        loop {
            let (kind, flags, id, payload) = self.next_frame().await.expect("closed mid-body");
            if kind == DATA && id == stream {
                body.extend_from_slice(&payload);
                if flags & END_STREAM != 0 {
                    return;
                }
            }
        }
    }

    /// GET `path` on `stream` (a new stream id) and read its response; the body. `what`
    /// names the failure if no response head comes within [`HANG`].
    async fn get(&mut self, stream: u32, path: &str, what: &str) -> Vec<u8> {
        let get = frame(HEADERS, END_STREAM | END_HEADERS, stream, &get_block(path));
        assert!(self.send(&get).await);
        let mut body = tokio::time::timeout(HANG, self.response_head(stream))
            .await
            .expect(what);
        tokio::time::timeout(HANG, self.body(stream, &mut body))
            .await
            .unwrap();
        body
    }

    /// Spawn a task that reads until the server closes the connection.
    fn until_closed(&mut self) -> tokio::task::JoinHandle<()> {
        let mut out = self.stdout.take().unwrap();
        tokio::spawn(async move {
            let mut sink = Vec::new();
            let _ = out.read_to_end(&mut sink).await;
        })
    }
}

impl Drop for RawH2 {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// reqwest over TLS, HTTP/2 only.
fn h2_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .danger_accept_invalid_certs(true)
        .http2_prior_knowledge()
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn stalled_h2_client_does_not_pace_the_fill() {
    let origin = Origin::start().await;
    let size = 32 << 20;
    let path = "/media/h2big";
    let sha = origin.put_media(path, body_of(size, 91));
    let dir = tempfile::tempdir().unwrap();
    let (edge, tls) = spawn_tls_edge(origin.addr, dir.path(), "");

    // The first client starts the cold fill over HTTP/2 and never opens its window past
    // the initial 64 KiB.
    let mut a = RawH2::connect(tls);
    a.start().await;
    assert!(
        a.send(&frame(
            HEADERS,
            END_STREAM | END_HEADERS,
            1,
            &get_block(path)
        ))
        .await
    );
    let mut a_body = tokio::time::timeout(HANG, a.response_head(1))
        .await
        .expect("no response head for the stalled client");

    // Others get the whole object promptly: over HTTP/1.1 ...
    let b = tokio::time::timeout(HANG, get(&edge.url(path), &[]))
        .await
        .expect("an HTTP/1.1 client was held back by the stalled HTTP/2 one");
    assert_eq!((b.status, b.body.len()), (200, size));
    assert_eq!(b.sha(), sha);
    // ... and over HTTP/2.
    let c = tokio::time::timeout(HANG, async {
        let r = h2_client()
            .get(format!("https://localhost:{}{path}", tls.port()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.version(), reqwest::Version::HTTP_2);
        (r.status().as_u16(), r.bytes().await.unwrap())
    })
    .await
    .expect("an HTTP/2 client was held back by the stalled HTTP/2 one");
    assert_eq!((c.0, sha256_hex(&c.1)), (200, sha.clone()));
    // One origin request, read to its end.
    assert_eq!(origin.requests_for(path), 1);
    assert_eq!(origin.state.completed.load(Ordering::SeqCst), 1);

    // The stalled client got no more than its window allows; opening it, it reads the
    // whole body at its own pace.
    assert!(
        a_body.len() <= 65_535,
        "{} bytes past the window",
        a_body.len()
    );
    let more = (1u32 << 31) - 1 - 65_535;
    assert!(
        a.send(&frame(WINDOW_UPDATE, 0, 0, &more.to_be_bytes()))
            .await
    );
    assert!(
        a.send(&frame(WINDOW_UPDATE, 0, 1, &more.to_be_bytes()))
            .await
    );
    tokio::time::timeout(HANG, a.body(1, &mut a_body))
        .await
        .expect("the stalled client's body did not resume");
    assert_eq!(a_body.len(), size);
    assert_eq!(sha256_hex(&a_body), sha);
    assert_eq!(origin.requests_for(path), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn cold_range_over_h2_is_a_206_and_the_whole_object_is_cached() {
    let origin = Origin::start().await;
    let size = 4 << 20;
    let path = "/media/h2range";
    let body = body_of(size, 92);
    let sha = origin.put_media(path, body.clone());
    let dir = tempfile::tempdir().unwrap();
    let (edge, tls) = spawn_tls_edge(origin.addr, dir.path(), "");

    let r = h2_client()
        .get(format!("https://localhost:{}{path}", tls.port()))
        .header("range", "bytes=1000-1999")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 206);
    assert_eq!(r.headers()["x-cache-status"], "MISS");
    assert_eq!(&r.bytes().await.unwrap()[..], &body[1000..2000]);

    let full = tokio::time::timeout(HANG, async {
        loop {
            let g = get(&edge.url(path), &[]).await;
            if g.cache_status() == "HIT" {
                return g;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the object was never cached whole");
    assert_eq!(full.sha(), sha);
    assert_eq!(origin.requests_for(path), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn uncacheable_cold_h2_response_is_served_and_read_once() {
    let origin = Origin::start().await;
    let size = 32 << 20;
    let path = "/media/h2private";
    let body = body_of(size, 94);
    let sha = sha256_hex(&body);
    origin.put(path, body, &[("cache-control", "no-store")]);
    let dir = tempfile::tempdir().unwrap();
    let (_edge, tls) = spawn_tls_edge(origin.addr, dir.path(), "");

    for i in 1..=2 {
        let r = tokio::time::timeout(
            HANG,
            h2_client()
                .get(format!("https://localhost:{}{path}", tls.port()))
                .send(),
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(r.status().as_u16(), 200, "request {i}");
        assert_ne!(r.headers()["x-cache-status"], "HIT", "request {i}");
        assert_eq!(sha256_hex(&r.bytes().await.unwrap()), sha, "request {i}");
    }
    // Nothing stored; each client's own fetch is the one read to its end (the background
    // fill asked too, and stopped at the response head).
    assert_eq!(origin.requests_for(path), 4);
    assert_eq!(origin.state.completed.load(Ordering::SeqCst), 2);
    assert!(entry_files(&dir.path().join("c")).is_empty());
}

/// Trickle `piece` to `conn` every 300 ms (up to ten times the 1 s deadline) and report
/// whether the edge closed the connection meanwhile.
async fn closed_while_trickling(conn: &mut RawH2, piece: &[u8]) -> bool {
    let closed = conn.until_closed();
    for _ in 0..33 {
        if closed.is_finished() {
            return true;
        }
        if !conn.send(piece).await {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    tokio::time::timeout(Duration::from_secs(1), closed)
        .await
        .is_ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn h2_request_heads_have_a_deadline() {
    let origin = Origin::start().await;
    let sha = origin.put_media("/media/h2t", body_of(3000, 93));
    let dir = tempfile::tempdir().unwrap();
    let (_edge, tls) = spawn_tls_edge(origin.addr, dir.path(), "request_header_timeout_secs = 1\n");

    // A preface that never completes.
    let mut c = RawH2::connect(tls);
    assert!(c.send(&PREFACE[..10]).await);
    assert!(
        closed_while_trickling(&mut c, b"").await,
        "an unfinished preface held the connection"
    );

    // A first request whose header block never ends: a HEADERS frame without END_HEADERS,
    // then CONTINUATION frames of one byte of a long header value each.
    let mut c = RawH2::connect(tls);
    c.start().await;
    let mut block = get_block("/media/h2t");
    block.extend_from_slice(&[0x40, 5]);
    block.extend_from_slice(b"x-pad");
    block.push(100);
    assert!(c.send(&frame(HEADERS, END_STREAM, 1, &block)).await);
    assert!(
        closed_while_trickling(&mut c, &frame(CONTINUATION, 0, 1, b"a")).await,
        "a trickled first header block held the connection"
    );
    assert_eq!(origin.requests(), 0);

    // A connection that got a response and stayed idle past the deadline is still open; a
    // later header block that never ends closes it.
    let mut c = RawH2::connect(tls);
    c.start().await;
    let body = c.get(1, "/media/h2t", "no response head").await;
    assert_eq!(sha256_hex(&body), sha);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let body = c
        .get(
            3,
            "/media/h2t",
            "an idle connection was closed by the head deadline",
        )
        .await;
    assert_eq!(sha256_hex(&body), sha);
    assert!(c.send(&frame(HEADERS, END_STREAM, 5, &block)).await);
    assert!(
        closed_while_trickling(&mut c, &frame(CONTINUATION, 0, 5, b"a")).await,
        "a trickled later header block held the connection"
    );
    assert_eq!(origin.requests_for("/media/h2t"), 1);
}

/// Sum of `komora_edge_bytes_served_total` over every tier once `requests` client requests
/// have been logged (the counters move before the response's last byte; the log after it).
async fn served_after(edge: &EdgeProc, requests: f64) -> f64 {
    for _ in 0..250 {
        if metric(edge, "komora_edge_requests_total", "").await >= requests {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    metric(edge, "komora_edge_bytes_served_total", "").await
}

#[tokio::test(flavor = "multi_thread")]
async fn cold_fill_bytes_are_counted_once() {
    let origin = Origin::start().await;
    let size = 3 << 20;
    let dir = tempfile::tempdir().unwrap();
    let admin = "[admin]\ntoken_env = \"KOMORA_ADMIN_TOKEN\"\n";
    let (edge, tls) = spawn_tls_edge(origin.addr, dir.path(), admin);

    // HTTP/2: the fill runs as a background subrequest nobody reads; this client reads the
    // fill. Its body went to one client once, so it is counted once.
    let sha = origin.put_media("/media/h2count", body_of(size, 95));
    let r = tokio::time::timeout(
        HANG,
        h2_client()
            .get(format!("https://localhost:{}/media/h2count", tls.port()))
            .send(),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.headers()["x-cache-status"], "MISS");
    assert_eq!(sha256_hex(&r.bytes().await.unwrap()), sha);
    assert_eq!(
        served_after(&edge, 1.0).await,
        size as f64,
        "HTTP/2 cold fill"
    );

    // HTTP/1.1 the same way (its filling request reads its own fill).
    let sha = origin.put_media("/media/h1count", body_of(size, 96));
    let r = get(&edge.url("/media/h1count"), &[]).await;
    assert_eq!((r.cache_status(), r.sha()), ("MISS", sha));
    assert_eq!(
        served_after(&edge, 2.0).await,
        2.0 * size as f64,
        "HTTP/1.1 cold fill"
    );
    assert_eq!(origin.requests(), 2);
}

/// Many streams answered together on one connection come out of the write batching
/// (`connection::write_batch`) whole and in their own streams, and a lone request after the
/// burst is answered too (no flush is left deferred on a quiet connection).
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_h2_streams_on_one_connection_each_get_their_own_bytes() {
    let origin = Origin::start().await;
    let sizes = [1, 300, 1024, 4096, 16_384, 16_393, 65_536, 70_001, 1 << 20];
    let mut objects = Vec::new();
    for (i, size) in sizes.iter().enumerate() {
        let path = format!("/media/batch-{i}");
        let sha = origin.put_media(&path, body_of(*size, 40 + i as u8));
        objects.push((path, sha));
    }
    let dir = tempfile::tempdir().unwrap();
    let (edge, tls) = spawn_tls_edge(origin.addr, dir.path(), "");
    for (path, _) in &objects {
        assert_eq!(get(&edge.url(path), &[]).await.status, 200);
    }

    // One client: reqwest multiplexes all of these over one HTTP/2 connection.
    let client = h2_client();
    let fetch = |path: String| {
        let client = client.clone();
        async move {
            let r = client
                .get(format!("https://localhost:{}{path}", tls.port()))
                .send()
                .await
                .unwrap();
            assert_eq!(r.version(), reqwest::Version::HTTP_2);
            (path, r.status().as_u16(), r.bytes().await.unwrap())
        }
    };
    let burst = (0..20).flat_map(|_| objects.iter().map(|(p, _)| fetch(p.clone())));
    let got = tokio::time::timeout(HANG, futures::future::join_all(burst))
        .await
        .expect("a burst of HTTP/2 streams did not complete");
    assert_eq!(got.len(), 20 * objects.len());
    for (path, status, body) in got {
        let sha = &objects.iter().find(|(p, _)| *p == path).unwrap().1;
        assert_eq!((status, sha256_hex(&body)), (200, sha.clone()), "{path}");
    }

    let (path, sha) = &objects[1];
    let (_, status, body) = tokio::time::timeout(HANG, fetch(path.clone()))
        .await
        .expect("a lone request after the burst was not answered");
    assert_eq!((status, sha256_hex(&body)), (200, sha.clone()));
    // All hits: the burst came from the cache.
    assert_eq!(origin.requests_for(&objects[0].0), 1);
}

/// A connection with no request in flight is closed after `server.keepalive_timeout_secs`:
/// HTTP/2 with no open stream (pingora's default kept such a connection, ~47 KiB, open for
/// as long as the client did) and HTTP/1.1 between requests alike.
#[tokio::test(flavor = "multi_thread")]
async fn idle_connections_close_after_the_keepalive_timeout() {
    let origin = Origin::start().await;
    let sha = origin.put_media("/media/ka", body_of(3000, 94));
    let dir = tempfile::tempdir().unwrap();
    let (edge, tls) = spawn_tls_edge(origin.addr, dir.path(), "keepalive_timeout_secs = 2\n");

    let mut c = RawH2::connect(tls);
    c.start().await;
    let body = c.get(1, "/media/ka", "no response head").await;
    assert_eq!(sha256_hex(&body), sha);
    let idle_from = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(15), c.until_closed())
        .await
        .expect("an idle HTTP/2 connection was not closed")
        .unwrap();
    let waited = idle_from.elapsed();
    assert!(
        waited >= Duration::from_millis(1500),
        "HTTP/2 connection closed after {waited:?}, before the 2 s timeout"
    );

    let mut s = tokio::net::TcpStream::connect(edge.addr).await.unwrap();
    s.write_all(b"GET /media/ka HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let idle_from = tokio::time::timeout(Duration::from_secs(15), async {
        let mut idle_from = None;
        loop {
            let mut b = [0u8; 8192];
            let n = s.read(&mut b).await.unwrap_or(0);
            if n == 0 {
                return idle_from;
            }
            got.extend_from_slice(&b[..n]);
            if got.len() >= 3000 && idle_from.is_none() {
                idle_from = Some(std::time::Instant::now());
            }
        }
    })
    .await
    .expect("an idle HTTP/1.1 connection was not closed")
    .expect("closed before the response");
    assert!(got.starts_with(b"HTTP/1.1 200"));
    let waited = idle_from.elapsed();
    assert!(
        waited >= Duration::from_millis(1500),
        "HTTP/1.1 connection closed after {waited:?}, before the 2 s timeout"
    );
}
