//! Disk-tier integrity against tampering: a byte changed in place with the mtime set back is
//! caught by the file identity (inode, ctime), and a streamed read of a corrupt entry stops
//! before its last byte.

use crate::common::*;
use std::os::unix::fs::FileExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ADMIN_CFG: &str = "[admin]\ntoken_env = \"KOMORA_ADMIN_TOKEN\"\n";

/// Flip one byte of `path` in place (same inode) and set its mtime back to what it was, as
/// a tamperer who wants the change to go unnoticed would.
fn flip_byte_keep_mtime(path: &std::path::Path, from_end: u64) {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let m = f.metadata().unwrap();
    let mtime = m.modified().unwrap();
    let at = m.len() - 1 - from_end;
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).unwrap();
    b[0] ^= 0x5a;
    f.write_all_at(&b, at).unwrap();
    f.set_modified(mtime).unwrap();
    drop(f);
    let after = std::fs::metadata(path).unwrap();
    assert_eq!(after.modified().unwrap(), mtime, "mtime restored");
    assert_eq!(after.len(), m.len());
}

#[tokio::test(flavor = "multi_thread")]
async fn byte_flipped_in_place_with_mtime_restored_is_never_served() {
    let origin = Origin::start().await;
    let sha = origin.put_media("/media/t1", body_of(4 << 20, 41));
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("c");
    let edge = spawn_edge(origin.addr, &cache, Some(ADMIN_CFG));
    let r = get(&edge.url("/media/t1"), &[]).await;
    assert_eq!((r.status, r.cache_status()), (200, "MISS"));
    let r = get(&edge.url("/media/t1"), &[]).await;
    assert_eq!((r.status, r.cache_status()), (200, "HIT"));
    assert_eq!(r.sha(), sha);
    assert_eq!(origin.requests_for("/media/t1"), 1);

    let files = entry_files(&cache);
    assert_eq!(files.len(), 1);
    flip_byte_keep_mtime(&files[0], 1000);

    // The first request after the change finds the identity moved (ctime), re-verifies,
    // drops the entry and refetches; the two after it are hits of the refilled entry.
    for i in 0..3 {
        let r = get(&edge.url("/media/t1"), &[]).await;
        assert_eq!(r.status, 200, "request {i}");
        assert_eq!(r.sha(), sha, "request {i} served tampered bytes");
        let want = if i == 0 { "MISS" } else { "HIT" };
        assert_eq!(r.cache_status(), want, "request {i}");
    }
    assert_eq!(origin.requests_for("/media/t1"), 2);
    assert_eq!(
        metric(&edge, "komora_edge_integrity_failures_total", "").await,
        1.0
    );
}

/// GET `path` with `Connection: close` (pingora's streaming path, no sendfile) and read to
/// EOF: (status, declared Content-Length, body bytes received).
async fn get_close(edge: &EdgeProc, path: &str) -> (u16, usize, Vec<u8>) {
    let mut sock = TcpStream::connect(edge.addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: edge\r\nConnection: close\r\n\r\n");
    sock.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    // A reset after the edge gives up is an EOF for this purpose.
    let _ = sock.read_to_end(&mut buf).await;
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let len = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().unwrap())
        })
        .unwrap();
    (status, len, buf[head_end..].to_vec())
}

#[tokio::test(flavor = "multi_thread")]
async fn streamed_read_of_corrupt_entry_stops_before_the_last_byte() {
    let origin = Origin::start().await;
    let size = 4 << 20;
    let sha = origin.put_media("/media/t2", body_of(size, 42));
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("c");
    let mut edge = spawn_edge(origin.addr, &cache, Some(ADMIN_CFG));
    get(&edge.url("/media/t2"), &[]).await;
    edge.kill();
    let files = entry_files(&cache);
    assert_eq!(files.len(), 1);
    flip_byte_keep_mtime(&files[0], 0);

    // After a restart nothing is verified yet; this read hashes as it streams.
    let edge = spawn_edge(origin.addr, &cache, Some(ADMIN_CFG));
    let (status, len, body) = get_close(&edge, "/media/t2").await;
    assert_eq!((status, len), (200, size));
    assert!(
        body.len() < size,
        "a corrupt entry went out whole ({} bytes)",
        body.len()
    );
    assert_eq!(origin.requests_for("/media/t2"), 1);
    assert_eq!(
        metric(&edge, "komora_edge_integrity_failures_total", "").await,
        1.0
    );
    assert!(entry_files(&cache).is_empty(), "corrupt entry left on disk");

    // The next request refetches and is byte-exact.
    let (status, _, body) = get_close(&edge, "/media/t2").await;
    assert_eq!(status, 200);
    assert_eq!(sha256_hex(&body), sha);
    assert_eq!(origin.requests_for("/media/t2"), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn range_of_an_unverified_corrupt_entry_is_not_served() {
    let origin = Origin::start().await;
    let size = 4 << 20;
    let body = body_of(size, 43);
    origin.put_media("/media/t3", body.clone());
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("c");
    let mut edge = spawn_edge(origin.addr, &cache, Some(ADMIN_CFG));
    get(&edge.url("/media/t3"), &[]).await;
    edge.kill();
    let files = entry_files(&cache);
    flip_byte_keep_mtime(&files[0], 0);

    let edge = spawn_edge(origin.addr, &cache, Some(ADMIN_CFG));
    // The range itself is intact; the entry as a whole is not, so it must not be trusted.
    let r = client()
        .get(edge.url("/media/t3"))
        .header("range", "bytes=0-99")
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let got = r.bytes().await;
    assert!(
        !(status == 206 && got.is_ok()),
        "range of a corrupt entry served"
    );
    assert_eq!(
        metric(&edge, "komora_edge_integrity_failures_total", "").await,
        1.0
    );
    assert!(entry_files(&cache).is_empty(), "corrupt entry left on disk");
    let r = get(&edge.url("/media/t3"), &[("range", "bytes=0-99")]).await;
    assert_eq!(r.status, 206);
    assert_eq!(&r.body[..], &body[..100]);
}
