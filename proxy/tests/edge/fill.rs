//! Cache fills under hostile readers and faults: a stalled first client does not pace the
//! fill for the others, a Range on an object being filled is a 206 from the fill, and a disk
//! that fills up mid-fill still lets every reader get the whole body.

use crate::common::*;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const ADMIN_CFG: &str = "[admin]\ntoken_env = \"KOMORA_ADMIN_TOKEN\"\n";

/// How long a request may take before the test calls it held back (hang detection only,
/// far above what an unpaced fill needs).
const HANG: Duration = Duration::from_secs(60);

/// A client with a small receive buffer, so that not reading stalls the edge's writes soon.
async fn stalling_client(edge: &EdgeProc, path: &str) -> TcpStream {
    let sock = TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(16 * 1024).unwrap();
    let mut s = sock.connect(edge.addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: edge\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    s
}

/// Read a response head from `s`: (status, content-length, body bytes read past the head).
async fn read_head(s: &mut TcpStream) -> (u16, usize, Vec<u8>) {
    let mut buf = Vec::new();
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut tmp = [0u8; 4096];
        let n = s.read(&mut tmp).await.unwrap();
        assert!(n > 0, "closed before a response head");
        buf.extend_from_slice(&tmp[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_string();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let len = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().unwrap())
        })
        .unwrap();
    (status, len, buf[end..].to_vec())
}

/// Read until `body` holds `len` bytes.
async fn read_body_to(s: &mut TcpStream, body: &mut Vec<u8>, len: usize) {
    let mut tmp = vec![0u8; 1 << 16];
    while body.len() < len {
        let n = s.read(&mut tmp).await.unwrap();
        assert!(n > 0, "closed after {} of {len} body bytes", body.len());
        body.extend_from_slice(&tmp[..n]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn stalled_first_client_does_not_pace_the_fill() {
    let origin = Origin::start().await;
    let size = 32 << 20;
    let sha = origin.put_media("/media/s1", body_of(size, 51));
    let dir = tempfile::tempdir().unwrap();
    let edge = spawn_edge(origin.addr, &dir.path().join("c"), Some(ADMIN_CFG));

    // The first client starts the cold fill, reads its head and then stops reading.
    let mut a = stalling_client(&edge, "/media/s1").await;
    let (status, len, mut a_body) = read_head(&mut a).await;
    assert_eq!((status, len), (200, size));

    // A Range for bytes the fill already has is a 206, not a paced 200 full body.
    let body = body_of(size, 51);
    let r = tokio::time::timeout(
        HANG,
        get(&edge.url("/media/s1"), &[("range", "bytes=100-1099")]),
    )
    .await
    .expect("a range was held back by the stalled first client");
    assert_eq!(r.status, 206);
    assert_eq!(&r.body[..], &body[100..1100]);

    // A second client, arriving during that fill, gets the whole object anyway.
    let b = tokio::time::timeout(HANG, get(&edge.url("/media/s1"), &[]))
        .await
        .expect("the second client was held back by the stalled first one");
    assert_eq!(b.status, 200);
    assert_eq!(b.sha(), sha);
    assert_eq!(origin.requests_for("/media/s1"), 1);
    assert_eq!(origin.state.completed.load(Ordering::SeqCst), 1);
    // The first client has not read past what the socket buffers hold.
    assert!(a_body.len() < size / 2);

    // ... and, reading at its own pace, it gets every byte too.
    tokio::time::timeout(HANG, read_body_to(&mut a, &mut a_body, size))
        .await
        .expect("the first client's body stalled");
    assert_eq!(sha256_hex(&a_body), sha);
    assert_eq!(origin.requests_for("/media/s1"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn range_of_an_object_being_filled_is_a_206_from_the_fill() {
    let origin = Origin::start().await;
    let size = 8 << 20;
    let body = body_of(size, 52);
    let sha = origin.put_media("/media/r1", body.clone());
    // 32 chunks of 256 KiB, 100 ms apart: the fill lasts about three seconds.
    origin.state.trickle_ms.store(100, Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let edge = spawn_edge(origin.addr, &dir.path().join("c"), Some(ADMIN_CFG));

    let url = edge.url("/media/r1");
    let first = tokio::spawn(async move { get(&url, &[]).await });
    // Wait until the fill streams to its first reader.
    while metric(&edge, "komora_edge_bytes_served_total", "fill").await == 0.0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Bytes already filled.
    let r = get(&edge.url("/media/r1"), &[("range", "bytes=1000-1999")]).await;
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-range"), format!("bytes 1000-1999/{size}"));
    assert_eq!(&r.body[..], &body[1000..2000]);
    assert_eq!(
        origin.state.completed.load(Ordering::SeqCst),
        0,
        "the fill was over before the range was served"
    );
    // Bytes not filled yet: the range follows the fill.
    let tail = format!("bytes={}-{}", size - 100, size - 1);
    let r = get(&edge.url("/media/r1"), &[("range", &tail)]).await;
    assert_eq!(r.status, 206);
    assert_eq!(&r.body[..], &body[size - 100..]);

    let a = first.await.unwrap();
    assert_eq!((a.status, a.sha()), (200, sha));
    assert_eq!(origin.requests_for("/media/r1"), 1);
}

/// A small tmpfs mounted for one test, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mount a tmpfs of `size` (e.g. "4m"). `None` (with a loud SKIPPED line) when mounting
    /// is refused outside CI; under `CI=true` that is a failure.
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output();
        let refused = match &out {
            Ok(o) if o.status.success() => return Some(Tmpfs { dir }),
            Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
            Err(e) => e.to_string(),
        };
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "cannot mount a tmpfs under CI: {refused}"
        );
        eprintln!("SKIPPED: disk-full test needs to mount a tmpfs (run as root): {refused}");
        None
    }

    fn path(&self) -> &std::path::Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a descriptor still open in a dying edge must not keep the mount around.
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn disk_full_mid_fill_still_streams_the_whole_body() {
    let Some(fs) = Tmpfs::mount("4m") else {
        return;
    };
    let origin = Origin::start().await;
    let size = 16 << 20;
    let sha = origin.put_media("/media/big", body_of(size, 53));
    let small = origin.put_media("/media/small", body_of(100_000, 54));
    let cache = fs.path().join("c");
    let edge = spawn_edge(origin.addr, &cache, Some(ADMIN_CFG));

    // Four times the free space: the disk fills up a quarter of the way in.
    let r = tokio::time::timeout(HANG, get(&edge.url("/media/big"), &[]))
        .await
        .expect("fill hung on a full disk");
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), size);
    assert_eq!(r.sha(), sha);
    assert_eq!(origin.requests_for("/media/big"), 1);
    assert_eq!(
        metric(&edge, "komora_edge_cache_write_failures_total", "").await,
        1.0
    );
    // No entry and no partial file left behind.
    assert!(entry_files(&cache).is_empty());
    assert_eq!(std::fs::read_dir(cache.join("tmp")).unwrap().count(), 0);

    // A herd: every reader gets the whole body; the object could not be stored, so the
    // origin is asked again (once per fill, not once per failure).
    let mut herd = Vec::new();
    for _ in 0..3 {
        let url = edge.url("/media/big");
        herd.push(tokio::spawn(async move { get(&url, &[]).await }));
    }
    for h in herd {
        let r = tokio::time::timeout(HANG, h).await.unwrap().unwrap();
        assert_eq!((r.status, r.body.len()), (200, size));
        assert_eq!(r.sha(), sha);
    }
    let n = origin.requests_for("/media/big");
    assert!((2..=4).contains(&n), "{n} origin requests");
    // One logged and counted failure per fill.
    let failures = metric(&edge, "komora_edge_cache_write_failures_total", "").await;
    assert_eq!(failures, n as f64);

    // The space of the abandoned fills is free again: a small object is cached as usual.
    let r = get(&edge.url("/media/small"), &[]).await;
    assert_eq!((r.status, r.cache_status()), (200, "MISS"));
    let r = get(&edge.url("/media/small"), &[]).await;
    assert_eq!((r.status, r.cache_status()), (200, "HIT"));
    assert_eq!(r.sha(), small);
    assert_eq!(origin.requests_for("/media/small"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn disk_full_without_streaming_fill_still_serves_the_whole_body() {
    let Some(fs) = Tmpfs::mount("4m") else {
        return;
    };
    let origin = Origin::start().await;
    let size = 16 << 20;
    let sha = origin.put_media("/media/big", body_of(size, 55));
    let cache = fs.path().join("c");
    let cfg = format!("{ADMIN_CFG}[cache]\nstreaming_fill = false\n");
    let edge = spawn_edge(origin.addr, &cache, Some(&cfg));
    for i in 1..=2 {
        let r = tokio::time::timeout(HANG, get(&edge.url("/media/big"), &[]))
            .await
            .expect("fill hung on a full disk");
        assert_eq!((r.status, r.body.len()), (200, size), "request {i}");
        assert_eq!(r.sha(), sha, "request {i}");
        assert_eq!(origin.requests_for("/media/big"), i);
    }
    assert_eq!(
        metric(&edge, "komora_edge_cache_write_failures_total", "").await,
        2.0
    );
    assert!(entry_files(&cache).is_empty());
    assert_eq!(std::fs::read_dir(cache.join("tmp")).unwrap().count(), 0);
}
