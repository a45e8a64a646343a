//! What waiting clients cost the edge: many idle keep-alive connections and many half-sent
//! request heads, over plain HTTP and over TLS, measured as the growth of the edge
//! process's resident memory (`VmRSS` in `/proc/PID/status`), and the head deadline still
//! answering 408 (and bounding TLS handshakes).

use crate::common::*;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Connections per phase: enough that per-connection memory dominates the noise of a
/// few pages.
const CONNS: usize = 1500;

/// Bound on the edge's RSS growth per waiting connection, KiB. The edge grew by ~41 KiB per
/// idle or half-sent connection while it waited for heads inside a pingora session, and by
/// ~12 KiB once it waited in `komora_proxy::idle` (most of that was pingora's
/// per-connection accept task), and by ~2.5 KiB since plain HTTP is accepted by
/// `komora_proxy::listen`, and by ~1.2 KiB since the connection loop is the task's own
/// future and its stream a `PlainStream` with no digest while idle (release and debug
/// builds alike; `bench/README-edge.md`, "Memory"). nginx's workers: ~0.6 KiB idle,
/// ~10 KiB half-sent (`bench/idle-conns.py`).
const MAX_KIB_PER_CONN: f64 = 2.0;

const CFG: &str = "[server]\nrequest_header_timeout_secs = 3\n";

/// TLS connections held: each costs a handshake (a few ms in a debug build).
const TLS_CONNS: usize = 1000;

/// Bound on the edge's RSS growth per idle HTTP/1.1-over-TLS connection, KiB: below the
/// 17.7 KiB nginx's workers grew by per idle TLS connection (`bench/idle-conns.py --tls`,
/// `bench/README-edge.md`, "TLS connections"). Under pingora's listening service the edge
/// grew by ~31 KiB (its 64 KiB read buffer, 1,460-byte write buffer and 8.7 KiB accept
/// task); since `komora_proxy::listen` accepts TLS too, ~12.5 KiB: rustls's connection
/// (~4.4 KiB) and its 4 KiB record buffer, the task and the socket.
const MAX_KIB_PER_TLS_CONN: f64 = 16.0;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// RSS once it stops moving (two reads 200 ms apart within 64 KiB).
async fn settled_rss(pid: u32) -> u64 {
    let mut last = rss_kib(pid);
    for _ in 0..25 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = rss_kib(pid);
        if now.abs_diff(last) <= 64 {
            return now;
        }
        last = now;
    }
    last
}

/// The soft open-file limit raised to the hard one, so this process can hold the sockets.
fn raise_fd_limit() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    }
    hard
}

const REQ: &[u8] = b"GET /media/i HTTP/1.1\r\nHost: e\r\n\r\n";

/// One request on `sock`, its 100-byte response read whole; returns the status line.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(sock: &mut S) -> String {
    sock.write_all(REQ).await.unwrap();
    let mut got = Vec::new();
    loop {
        let mut tmp = [0u8; 1024];
        let n = sock.read(&mut tmp).await.unwrap();
        assert!(n > 0, "closed before the response ended");
        got.extend_from_slice(&tmp[..n]);
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            if got.len() >= end + 4 + 100 {
                break;
            }
        }
    }
    String::from_utf8_lossy(&got)
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

async fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    s
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_and_half_sent_connections_cost_little_memory_and_heads_still_time_out() {
    let hard = raise_fd_limit();
    assert!(
        hard > (CONNS as u64) * 2 + 200,
        "open-file hard limit {hard} too low"
    );
    let origin = Origin::start().await;
    origin.put_media("/media/i", body_of(100, 3));
    let dir = tempfile::tempdir().unwrap();
    let edge = spawn_edge(origin.addr, &dir.path().join("c"), Some(CFG));
    let pid = edge.pid();
    // Warm: the object in the cache, the edge's threads and pools started.
    let mut warm = connect(edge.addr).await;
    for _ in 0..3 {
        assert_eq!(exchange(&mut warm).await, "HTTP/1.1 200 OK");
    }
    drop(warm);

    // Idle keep-alive connections, each after one request.
    let base = settled_rss(pid).await;
    let mut idle = Vec::with_capacity(CONNS);
    for _ in 0..CONNS {
        let mut s = connect(edge.addr).await;
        assert_eq!(exchange(&mut s).await, "HTTP/1.1 200 OK");
        idle.push(s);
    }
    let with_idle = settled_rss(pid).await;
    let per_idle = with_idle.saturating_sub(base) as f64 / CONNS as f64;

    // Half-sent heads: the request line and a header, no final CRLF. Measured well
    // inside the 3 s deadline: the connections are all still waiting.
    let started = std::time::Instant::now();
    let mut half = Vec::with_capacity(CONNS);
    for _ in 0..CONNS {
        let mut s = connect(edge.addr).await;
        s.write_all(b"GET /media/i HTTP/1.1\r\nHost: e\r\n")
            .await
            .unwrap();
        half.push(s);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let with_half = rss_kib(pid);
    let measured_within = started.elapsed();
    let per_half = with_half.saturating_sub(with_idle) as f64 / CONNS as f64;
    eprintln!(
        "edge RSS {base} KiB; +{CONNS} idle: {with_idle} KiB ({per_idle:.2} KiB each); \
         +{CONNS} half-sent: {with_half} KiB ({per_half:.2} KiB each, within {measured_within:?})"
    );
    assert!(
        measured_within < Duration::from_millis(2500),
        "half-sent heads took {measured_within:?} to open; the 3 s deadline may have passed"
    );
    assert!(
        per_idle <= MAX_KIB_PER_CONN,
        "{per_idle:.2} KiB per idle connection (bound {MAX_KIB_PER_CONN})"
    );
    assert!(
        per_half <= MAX_KIB_PER_CONN,
        "{per_half:.2} KiB per half-sent connection (bound {MAX_KIB_PER_CONN})"
    );

    // The idle connections are still keep-alive connections that serve a request.
    for s in idle.iter_mut().step_by(CONNS / 20) {
        assert_eq!(exchange(s).await, "HTTP/1.1 200 OK");
    }
    // Every half-sent head still gets its 408 and a close once the deadline passes.
    for s in half.iter_mut().step_by(CONNS / 20) {
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut rest))
            .await
            .expect("half-sent head not closed after the deadline")
            .unwrap();
        let text = String::from_utf8_lossy(&rest);
        assert!(text.starts_with("HTTP/1.1 408"), "{text:?}");
    }
    assert_eq!(origin.requests(), 1, "one fill, every other request a hit");
}

/// `true` once the edge closes `sock` (EOF or reset) within `within`, reading whatever it
/// sends first.
async fn closed_within<S: AsyncRead + Unpin>(sock: &mut S, within: Duration) -> bool {
    let mut rest = Vec::new();
    tokio::time::timeout(within, sock.read_to_end(&mut rest))
        .await
        .is_ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_tls_connections_cost_less_than_nginx_and_handshakes_have_a_deadline() {
    let hard = raise_fd_limit();
    assert!(
        hard > (TLS_CONNS as u64) * 2 + 200,
        "open-file hard limit {hard} too low"
    );
    let origin = Origin::start().await;
    origin.put_media("/media/i", body_of(100, 4));
    let dir = tempfile::tempdir().unwrap();
    let (edge, tls) = spawn_tls_edge(origin.addr, dir.path(), "request_header_timeout_secs = 3\n");
    let connector = tls_connector(&dir.path().join("cert.pem"), &dir.path().join("key.pem"));
    let name = pingora::tls::ServerName::try_from("localhost").unwrap();
    let handshake = || async {
        let tcp = connect(tls).await;
        connector.connect(name.clone(), tcp).await.unwrap()
    };
    let pid = edge.pid();
    let mut warm = handshake().await;
    for _ in 0..3 {
        assert_eq!(exchange(&mut warm).await, "HTTP/1.1 200 OK");
    }
    drop(warm);

    // Idle HTTP/1.1-over-TLS keep-alive connections, each after one request.
    let base = settled_rss(pid).await;
    let mut idle = Vec::with_capacity(TLS_CONNS);
    for _ in 0..TLS_CONNS {
        let mut s = handshake().await;
        assert_eq!(exchange(&mut s).await, "HTTP/1.1 200 OK");
        idle.push(s);
    }
    let with_idle = settled_rss(pid).await;
    let per_idle = with_idle.saturating_sub(base) as f64 / TLS_CONNS as f64;
    eprintln!(
        "edge RSS {base} KiB; +{TLS_CONNS} idle TLS: {with_idle} KiB ({per_idle:.2} KiB each)"
    );
    assert!(
        per_idle <= MAX_KIB_PER_TLS_CONN,
        "{per_idle:.2} KiB per idle TLS connection (bound {MAX_KIB_PER_TLS_CONN})"
    );
    // Still keep-alive connections that serve a request.
    for s in idle.iter_mut().step_by(TLS_CONNS / 20) {
        assert_eq!(exchange(s).await, "HTTP/1.1 200 OK");
    }
    drop(idle);

    // A client that connects and never sends a ClientHello, and one that completes the
    // handshake and never sends a request: both closed once the 3 s deadline passes
    // (pingora's listener gave a handshake 60 s).
    let mut silent_tcp = connect(tls).await;
    let mut silent_tls = handshake().await;
    let started = std::time::Instant::now();
    assert!(
        closed_within(&mut silent_tcp, Duration::from_secs(20)).await,
        "a connection that never started its handshake was not closed"
    );
    assert!(
        closed_within(&mut silent_tls, Duration::from_secs(20)).await,
        "a TLS connection that never sent a request was not closed"
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(2),
        "closed after {waited:?}, before the 3 s deadline"
    );
    assert_eq!(origin.requests(), 1, "one fill, every other request a hit");
}
