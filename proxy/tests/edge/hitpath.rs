//! The fast hit path and pingora's cache hit path answer the same stored object with the
//! same headers: a direct hit (plain HTTP/1.1 keep-alive, written to the socket by the
//! edge), a hit through pingora's session writer (`Connection: close`), and a hit through
//! pingora's own cache machinery (a request directive the fast path leaves to pingora, or a
//! disk-only object on a connection the fast path does not write to) carry the same header
//! names and values, except `Age` (±1 s) and the connection-management fields; the bodies
//! are byte-identical.

use crate::common::*;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Memory tier up to 64 KiB, so the large object below is on disk only; the media route
/// honors request directives, so `Cache-Control: max-stale` sends a hit through pingora.
const CFG: &str = "[admin]\ntoken_env = \"KOMORA_ADMIN_TOKEN\"\n\
[cache.memory]\nmax_object_size = 65536\n\
[[route]]\nprefix = \"/media/\"\nclient_max_age_secs = 604800\nrequest_directives = true\n\
[[route]]\nprefix = \"/\"\nmode = \"bypass\"\n";

/// Fields that legitimately differ between a kept-alive and a closing connection.
const CONNECTION_FIELDS: [&str; 2] = ["connection", "keep-alive"];

/// One response as it came off the wire: status, every header line (lowercased name, in
/// order, duplicates kept) and the body.
struct Wire {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Wire {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Header values by name, the connection fields left out.
    fn fields(&self) -> BTreeMap<&str, Vec<&str>> {
        let mut m: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (k, v) in &self.headers {
            if !CONNECTION_FIELDS.contains(&k.as_str()) {
                m.entry(k.as_str()).or_default().push(v.as_str());
            }
        }
        m
    }
}

/// Send `head` on a new connection (or on `sock`, kept alive) and read one response.
async fn exchange(sock: &mut TcpStream, head: &str, head_only: bool) -> Wire {
    sock.write_all(head.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut tmp = [0u8; 16384];
        let n = sock.read(&mut tmp).await.unwrap();
        assert!(n > 0, "connection closed before a response head");
        buf.extend_from_slice(&tmp[..n]);
    };
    let text = String::from_utf8(buf[..head_end].to_vec()).unwrap();
    let mut lines = text.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = buf[head_end..].to_vec();
    let len: usize = if head_only {
        0
    } else {
        headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .map(|(_, v)| v.parse().unwrap())
            .expect("a Content-Length framed hit")
    };
    while body.len() < len {
        let mut tmp = vec![0u8; 65536];
        let n = sock.read(&mut tmp).await.unwrap();
        assert!(n > 0, "connection closed mid-body");
        body.extend_from_slice(&tmp[..n]);
    }
    assert_eq!(body.len(), len, "bytes past the response");
    Wire {
        status,
        headers,
        body,
    }
}

/// `GET path` with `extra` header lines on a fresh connection.
async fn fetch(edge: &EdgeProc, path: &str, extra: &str, head_only: bool) -> Wire {
    let mut sock = TcpStream::connect(edge.addr).await.unwrap();
    let head = format!("GET {path} HTTP/1.1\r\nHost: edge\r\n{extra}\r\n");
    exchange(&mut sock, &head, head_only).await
}

/// `a` and `b` carry the same fields with the same values, `Age` within a second, and the
/// same body.
fn assert_same(what: &str, a: &Wire, b: &Wire) {
    assert_eq!(a.status, b.status, "{what}: status");
    let (fa, fb) = (a.fields(), b.fields());
    assert_eq!(
        fa.keys().collect::<Vec<_>>(),
        fb.keys().collect::<Vec<_>>(),
        "{what}: header names"
    );
    for (name, va) in &fa {
        let vb = &fb[name];
        if *name == "age" {
            let (x, y): (i64, i64) = (va[0].parse().unwrap(), vb[0].parse().unwrap());
            assert!((x - y).abs() <= 1, "{what}: age {x} vs {y}");
        } else {
            assert_eq!(va, vb, "{what}: {name}");
        }
    }
    assert_eq!(sha256_hex(&a.body), sha256_hex(&b.body), "{what}: body");
}

/// Fetch with `first` and `second` until both land in the same second (`Date` and
/// `Expires` equal; a few tries at most), then compare them.
async fn compare(
    edge: &EdgeProc,
    what: &str,
    path: &str,
    first: &str,
    second: &str,
    head_only: bool,
) -> Wire {
    for attempt in 0..5 {
        let a = fetch(edge, path, first, head_only).await;
        let b = fetch(edge, path, second, head_only).await;
        let same_second =
            a.header("date") == b.header("date") && a.header("expires") == b.header("expires");
        if same_second || attempt == 4 {
            assert_eq!(a.header("x-cache-status"), Some("HIT"), "{what}: {first:?}");
            assert_eq!(
                b.header("x-cache-status"),
                Some("HIT"),
                "{what}: {second:?}"
            );
            assert_same(what, &a, &b);
            return a;
        }
    }
    unreachable!()
}

async fn wait_metric(edge: &EdgeProc, name: &str, filter: &str, want: f64) {
    for _ in 0..250 {
        if metric(edge, name, filter).await >= want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{name}{{{filter}}} never reached {want}");
}

#[tokio::test(flavor = "multi_thread")]
async fn direct_and_pingora_hits_carry_the_same_headers() {
    let origin = Origin::start().await;
    let small = origin.put_media("/media/hp-small", body_of(4096, 71));
    let kept = origin.put_media("/media/hp-kept", body_of(48 << 10, 72));
    let large = origin.put_media("/media/hp-large", body_of(256 << 10, 73));
    let dir = tempfile::tempdir().unwrap();
    let edge = spawn_edge(origin.addr, &dir.path().join("c"), Some(CFG));
    for path in ["/media/hp-small", "/media/hp-kept", "/media/hp-large"] {
        assert_eq!(get(&edge.url(path), &[]).await.cache_status(), "MISS");
    }
    // Stored once the fills are done: two in memory, all three on disk.
    wait_metric(&edge, "komora_edge_cache_entries", "memory", 2.0).await;
    wait_metric(&edge, "komora_edge_cache_entries", "disk", 3.0).await;

    const DIRECT: &str = "";
    const SESSION: &str = "Connection: close\r\n";
    const PINGORA: &str = "Cache-Control: max-stale=60\r\n";
    for (path, sha) in [("/media/hp-small", &small), ("/media/hp-kept", &kept)] {
        let r = compare(&edge, path, path, DIRECT, SESSION, false).await;
        assert_eq!(sha256_hex(&r.body), *sha);
        compare(&edge, path, path, DIRECT, PINGORA, false).await;
        // 304s to a matching validator the same way.
        let inm = format!("If-None-Match: \"{sha}\"\r\n");
        let r = compare(&edge, path, path, &inm, &format!("{inm}{PINGORA}"), true).await;
        assert_eq!(r.status, 304);
        compare(&edge, path, path, &inm, &format!("{inm}{SESSION}"), true).await;
    }
    // The disk-only object: sendfile from its file on the direct connection, pingora's
    // disk hit on the closing one.
    let before = metric(&edge, "komora_edge_sendfile_responses_total", "").await;
    let r = compare(&edge, "large", "/media/hp-large", DIRECT, SESSION, false).await;
    assert_eq!(sha256_hex(&r.body), large);
    compare(&edge, "large", "/media/hp-large", DIRECT, PINGORA, false).await;
    assert!(
        metric(&edge, "komora_edge_sendfile_responses_total", "").await > before,
        "the direct hits of the large object went out by sendfile"
    );
    assert_eq!(origin.requests(), 3);
}
