//! Direct memory hits (sendfile for large bodies): byte-exact bodies and headers over a kept-alive raw
//! HTTP/1.1 connection, a slow reader that fills the socket buffer, the cases that must keep
//! pingora's copy path (file changed on disk, `Connection: close`, HTTP/1.0, an unread request body, small bodies),
//! and the open-file budget.

use crate::common::*;
use std::collections::HashMap;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ADMIN_CFG: &str = "[admin]\ntoken_env = \"KOMORA_ADMIN_TOKEN\"\n";

struct RawResponse {
    status: u16,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

/// Read one response (Content-Length framed) from `sock`, keeping any extra bytes in `buf`.
async fn read_response(sock: &mut TcpStream, buf: &mut Vec<u8>, head_only: bool) -> RawResponse {
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut tmp = [0u8; 16384];
        let n = sock.read(&mut tmp).await.unwrap();
        assert!(n > 0, "connection closed before a response header");
        buf.extend_from_slice(&tmp[..n]);
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
    buf.drain(..head_end);
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let mut headers = HashMap::new();
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            let dup = headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            assert!(dup.is_none(), "header {k} sent twice");
        }
    }
    let len: usize = if head_only {
        0
    } else {
        headers["content-length"].parse().unwrap()
    };
    while buf.len() < len {
        let mut tmp = vec![0u8; 65536];
        let n = sock.read(&mut tmp).await.unwrap();
        assert!(n > 0, "connection closed mid-body");
        buf.extend_from_slice(&tmp[..n]);
    }
    let body = buf.drain(..len).collect();
    RawResponse {
        status,
        headers,
        body,
    }
}

async fn raw_get(sock: &mut TcpStream, buf: &mut Vec<u8>, path: &str) -> RawResponse {
    let req = format!("GET {path} HTTP/1.1\r\nHost: edge\r\n\r\n");
    sock.write_all(req.as_bytes()).await.unwrap();
    read_response(sock, buf, false).await
}

/// The counter is bumped after the body is handed to the kernel, which can be a moment after
/// the client has read it; poll briefly for the expected value.
async fn sendfile_count_reaches(edge: &EdgeProc, want: f64) -> f64 {
    let mut got = 0.0;
    for _ in 0..50 {
        got = metric(edge, "komora_edge_sendfile_responses_total", "").await;
        if got == want {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    got
}

#[tokio::test(flavor = "multi_thread")]
async fn zero_copy_hit_is_byte_exact_and_keeps_the_connection() {
    let origin = Origin::start().await;
    let body = body_of(64 << 10, 90);
    let sha = origin.put_media("/media/z64", body.clone());
    origin.put_media("/media/z1", body_of(1024, 91));
    let dir = tempfile::tempdir().unwrap();
    let edge = spawn_edge(origin.addr, &dir.path().join("c"), Some(ADMIN_CFG));

    let mut sock = TcpStream::connect(edge.addr).await.unwrap();
    let mut buf = Vec::new();
    let first = raw_get(&mut sock, &mut buf, "/media/z64").await;
    assert_eq!(first.status, 200);
    assert_eq!(first.headers["x-cache-status"], "MISS");
    assert_eq!(sha256_hex(&first.body), sha);
    for i in 0..3 {
        // Same connection: the previous zero-copy response left it usable.
        let r = raw_get(&mut sock, &mut buf, "/media/z64").await;
        assert_eq!(r.status, 200, "request {i}");
        assert_eq!(r.headers["x-cache-status"], "HIT");
        assert_eq!(r.headers["content-length"], (64 << 10).to_string());
        assert_eq!(r.headers["connection"], "keep-alive");
        assert_eq!(r.headers["accept-ranges"], "bytes");
        assert_eq!(r.headers["etag"], format!("\"{sha}\""));
        assert_eq!(
            r.headers["cache-control"],
            "public, max-age=604800, immutable"
        );
        assert!(r.headers.contains_key("date"));
        assert!(r.headers.contains_key("expires"));
        assert!(r.headers.contains_key("age"));
        assert_eq!(r.body, &body[..], "request {i}");
    }
    assert_eq!(sendfile_count_reaches(&edge, 3.0).await, 3.0);

    // HEAD and a matching If-None-Match get header-only answers; the framing stays right
    // for the GET that follows on the same connection.
    sock.write_all(b"HEAD /media/z64 HTTP/1.1\r\nHost: edge\r\n\r\n")
        .await
        .unwrap();
    let head = read_response(&mut sock, &mut buf, true).await;
    assert_eq!(head.status, 200);
    assert_eq!(head.headers["content-length"], (64 << 10).to_string());
    assert_eq!(head.headers["x-cache-status"], "HIT");
    let inm = format!("GET /media/z64 HTTP/1.1\r\nHost: edge\r\nIf-None-Match: \"{sha}\"\r\n\r\n");
    sock.write_all(inm.as_bytes()).await.unwrap();
    let not_modified = read_response(&mut sock, &mut buf, true).await;
    assert_eq!(not_modified.status, 304);
    assert_eq!(not_modified.headers["etag"], format!("\"{sha}\""));
    assert!(!not_modified.headers.contains_key("content-length"));
    let after = raw_get(&mut sock, &mut buf, "/media/z64").await;
    assert_eq!(after.body, &body[..]);
    assert!(buf.is_empty(), "no stray bytes after the responses");
    assert_eq!(sendfile_count_reaches(&edge, 4.0).await, 4.0);

    // Below sendfile_min_size (32 KiB by default): the copy path, same connection.
    raw_get(&mut sock, &mut buf, "/media/z1").await;
    // The miss is stored once its response is done; on a loaded machine the next GET could
    // otherwise still read the finishing fill instead of the memory tier.
    for _ in 0..250 {
        if metric(&edge, "komora_edge_cache_entries", "memory").await >= 2.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let small = raw_get(&mut sock, &mut buf, "/media/z1").await;
    assert_eq!(small.headers["x-cache-status"], "HIT");
    assert_eq!(small.body, &body_of(1024, 91)[..]);
    assert_eq!(small.headers["connection"], "keep-alive");
    assert_eq!(sendfile_count_reaches(&edge, 4.0).await, 4.0);
    assert_eq!(origin.requests(), 2);
    assert_eq!(
        metric(&edge, "komora_edge_bytes_served_total", "memory").await,
        (4 * (64 << 10) + 1024) as f64
    );
    assert_eq!(
        metric(&edge, "komora_edge_sendfile_open_files", "").await,
        1.0
    );
}

/// Memory hits above `cache.memory.sendfile_max_size` (512 KiB by default) are copied from
/// the verified in-memory body on the direct path: byte-exact, the connection kept, no
/// sendfile counted and no entry file held open for them; one at the limit still goes by
/// sendfile.
#[tokio::test(flavor = "multi_thread")]
async fn memory_hit_above_sendfile_max_size_is_copied() {
    let origin = Origin::start().await;
    let over = body_of((512 << 10) + 1, 94);
    let at = body_of(512 << 10, 95);
    let (sha_over, sha_at) = (
        origin.put_media("/media/over", over.clone()),
        origin.put_media("/media/at", at.clone()),
    );
    let dir = tempfile::tempdir().unwrap();
    let edge = spawn_edge(origin.addr, &dir.path().join("c"), Some(ADMIN_CFG));
    let mut sock = TcpStream::connect(edge.addr).await.unwrap();
    let mut buf = Vec::new();
    for path in ["/media/over", "/media/at"] {
        raw_get(&mut sock, &mut buf, path).await;
    }
    for _ in 0..250 {
        if metric(&edge, "komora_edge_cache_entries", "memory").await >= 2.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for i in 0..3 {
        let r = raw_get(&mut sock, &mut buf, "/media/over").await;
        assert_eq!(r.headers["x-cache-status"], "HIT", "request {i}");
        assert_eq!(r.headers["connection"], "keep-alive");
        assert_eq!(sha256_hex(&r.body), sha_over, "request {i}");
    }
    assert_eq!(sendfile_count_reaches(&edge, 0.0).await, 0.0);
    let r = raw_get(&mut sock, &mut buf, "/media/at").await;
    assert_eq!(r.headers["x-cache-status"], "HIT");
    assert_eq!(sha256_hex(&r.body), sha_at);
    assert_eq!(sendfile_count_reaches(&edge, 1.0).await, 1.0);
    assert!(buf.is_empty(), "no stray bytes after the responses");
    assert_eq!(
        metric(&edge, "komora_edge_sendfile_open_files", "").await,
        1.0
    );
    assert_eq!(origin.requests(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn zero_copy_waits_for_a_slow_reader() {
    let cfg = "[cache.memory]\nmax_object_size = 8388608\nsendfile_max_size = 8388608\n";
    waits_for_a_slow_reader(cfg, 2.0).await;
}

/// The copy of a disk body (above `sendfile_max_size`) waits the same way, resuming
/// mid-chunk where the socket took part of one.
#[tokio::test(flavor = "multi_thread")]
async fn copied_disk_hit_waits_for_a_slow_reader() {
    waits_for_a_slow_reader("", 0.0).await;
}

/// A 6 MiB hit to a client that reads slowly in small steps, then a second one on the same
/// connection; `sendfiles` is how many of the two go by sendfile.
async fn waits_for_a_slow_reader(extra_cfg: &str, sendfiles: f64) {
    let origin = Origin::start().await;
    // Larger than the socket buffers, so the send must wait for the reader.
    let body = body_of(6 << 20, 92);
    let sha = origin.put_media("/media/big", body.clone());
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!("{ADMIN_CFG}{extra_cfg}");
    let edge = spawn_edge(origin.addr, &dir.path().join("c"), Some(&cfg));
    assert_eq!(get(&edge.url("/media/big"), &[]).await.sha(), sha);

    let mut sock = TcpStream::connect(edge.addr).await.unwrap();
    sock.write_all(b"GET /media/big HTTP/1.1\r\nHost: edge\r\n\r\n")
        .await
        .unwrap();
    // Let the edge fill the socket buffers and hit EAGAIN, then read in small slow steps.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut got = Vec::new();
    let mut tmp = vec![0u8; 256 << 10];
    for _ in 0..8 {
        let n = sock.read(&mut tmp).await.unwrap();
        got.extend_from_slice(&tmp[..n]);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = read_response(&mut sock, &mut got, false).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["x-cache-status"], "HIT");
    assert_eq!(sha256_hex(&r.body), sha);
    // The connection is still in a clean state for the next request.
    let mut rest = Vec::new();
    let again = raw_get(&mut sock, &mut rest, "/media/big").await;
    assert_eq!(sha256_hex(&again.body), sha);
    assert_eq!(sendfile_count_reaches(&edge, sendfiles).await, sendfiles);
    assert_eq!(origin.requests(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn zero_copy_skipped_for_changed_file_close_http10_and_unread_body() {
    let origin = Origin::start().await;
    let body = body_of(100_000, 93);
    let sha = origin.put_media("/media/c", body.clone());
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("c");
    let edge = spawn_edge(origin.addr, &cache, Some(ADMIN_CFG));
    get(&edge.url("/media/c"), &[]).await;

    // Connection: close, HTTP/1.0 and a request whose body is not sent (yet) keep pingora's
    // write path, which closes the connection: a keep-alive answer to the last one would
    // later take the client's next request for the rest of this body.
    for req in [
        "GET /media/c HTTP/1.1\r\nHost: edge\r\nConnection: close\r\n\r\n",
        "GET /media/c HTTP/1.0\r\nHost: edge\r\n\r\n",
        "GET /media/c HTTP/1.1\r\nHost: edge\r\nContent-Length: 5\r\n\r\n",
    ] {
        let mut sock = TcpStream::connect(edge.addr).await.unwrap();
        sock.write_all(req.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        let r = read_response(&mut sock, &mut buf, false).await;
        assert_eq!(r.headers["x-cache-status"], "HIT", "{req:?}");
        assert_eq!(sha256_hex(&r.body), sha, "{req:?}");
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(10), sock.read_to_end(&mut rest));
        assert_eq!(closed.await.unwrap().unwrap(), 0, "closed: {req:?}");
    }
    assert_eq!(sendfile_count_reaches(&edge, 0.0).await, 0.0);

    // The entry file changed in place after it was verified: its bytes are not trusted, the
    // verified memory copy is served instead.
    let files = entry_files(&cache);
    assert_eq!(files.len(), 1);
    let mut b = std::fs::read(&files[0]).unwrap();
    let n = b.len() - 1;
    b[n] ^= 0xff;
    std::fs::write(&files[0], b).unwrap();
    let r = get(&edge.url("/media/c"), &[]).await;
    assert_eq!(r.cache_status(), "HIT");
    assert_eq!(r.sha(), sha);
    assert_eq!(sendfile_count_reaches(&edge, 0.0).await, 0.0);
    assert_eq!(origin.requests(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn zero_copy_open_files_stay_within_budget() {
    let origin = Origin::start().await;
    let mut shas = Vec::new();
    for i in 0..5u8 {
        shas.push(origin.put_media(&format!("/media/o{i}"), body_of(50_000, 100 + i)));
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!("{ADMIN_CFG}[cache.memory]\nsendfile_max_open_files = 2\n");
    let edge = spawn_edge(origin.addr, &dir.path().join("c"), Some(&cfg));
    for round in 0..2 {
        for (i, sha) in shas.iter().enumerate() {
            let r = get(&edge.url(&format!("/media/o{i}")), &[]).await;
            assert_eq!(&r.sha(), sha, "round {round} object {i}");
        }
    }
    // Only the first two objects got a kept file; the other three were served by copying.
    assert_eq!(sendfile_count_reaches(&edge, 2.0).await, 2.0);
    assert_eq!(
        metric(&edge, "komora_edge_sendfile_open_files", "").await,
        2.0
    );
    // Purging drops the memory entries and with them the kept files.
    let r = client()
        .post(edge.admin_url("/purge?prefix=/media/"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    assert_eq!(
        metric(&edge, "komora_edge_sendfile_open_files", "").await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn large_disk_hit_is_sent_from_its_file_also_after_restart() {
    large_disk_hit_from_its_file("[cache.memory]\nsendfile_max_size = 8388608\n", true).await;
}

/// Above `cache.memory.sendfile_max_size` (512 KiB by default) the direct path reads the
/// verified file in chunks and copies them: same bytes, same framing, no sendfile.
#[tokio::test(flavor = "multi_thread")]
async fn large_disk_hit_above_sendfile_max_size_is_copied_from_its_file() {
    large_disk_hit_from_its_file("", false).await;
}

/// A 3 MiB disk-tier object served straight from its entry file, by sendfile or copied
/// (`sendfile`), before and after a restart, with HEAD and 304 on the same connection.
async fn large_disk_hit_from_its_file(extra_cfg: &str, sendfile: bool) {
    let cfg = format!("{ADMIN_CFG}{extra_cfg}");
    let per = if sendfile { 1.0 } else { 0.0 };
    let origin = Origin::start().await;
    // Above cache.memory.max_object_size (1 MiB): never in memory, served from disk.
    let body = body_of(3 << 20, 94);
    let sha = origin.put_media("/media/large", body.clone());
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("c");
    let mut edge = spawn_edge(origin.addr, &cache, Some(&cfg));
    assert_eq!(get(&edge.url("/media/large"), &[]).await.sha(), sha);

    let mut sock = TcpStream::connect(edge.addr).await.unwrap();
    let mut buf = Vec::new();
    let r = raw_get(&mut sock, &mut buf, "/media/large").await;
    assert_eq!(r.headers["x-cache-status"], "HIT");
    assert_eq!(r.headers["content-length"], (3 << 20).to_string());
    assert_eq!(sha256_hex(&r.body), sha);
    assert_eq!(sendfile_count_reaches(&edge, per).await, per);
    assert_eq!(
        metric(&edge, "komora_edge_bytes_served_total", "disk").await,
        (3 << 20) as f64
    );
    // Not kept open: the file belonged to that one response.
    assert_eq!(
        metric(&edge, "komora_edge_sendfile_open_files", "").await,
        0.0
    );
    edge.kill();

    // After a restart the first request is already a direct disk hit, without the origin.
    let edge = spawn_edge(origin.addr, &cache, Some(&cfg));
    let mut sock = TcpStream::connect(edge.addr).await.unwrap();
    let mut buf = Vec::new();
    let r = raw_get(&mut sock, &mut buf, "/media/large").await;
    assert_eq!(r.headers["x-cache-status"], "HIT");
    assert_eq!(sha256_hex(&r.body), sha);
    sock.write_all(b"HEAD /media/large HTTP/1.1\r\nHost: edge\r\n\r\n")
        .await
        .unwrap();
    let head = read_response(&mut sock, &mut buf, true).await;
    assert_eq!(head.status, 200);
    assert_eq!(head.headers["content-length"], (3 << 20).to_string());
    let inm =
        format!("GET /media/large HTTP/1.1\r\nHost: edge\r\nIf-None-Match: \"{sha}\"\r\n\r\n");
    sock.write_all(inm.as_bytes()).await.unwrap();
    assert_eq!(read_response(&mut sock, &mut buf, true).await.status, 304);
    let again = raw_get(&mut sock, &mut buf, "/media/large").await;
    assert_eq!(sha256_hex(&again.body), sha);
    assert!(buf.is_empty());
    assert_eq!(sendfile_count_reaches(&edge, 2.0 * per).await, 2.0 * per);
    assert_eq!(origin.requests(), 1);
}
