//! Process-level behaviour: SIGTERM drain, multiple health-checked origins, HTTPS + HTTP/2.

use crate::common::*;
use std::process::Command;
use std::time::{Duration, Instant};

/// Send SIGTERM to `pid` (the edge's graceful shutdown).
fn sigterm(pid: u32) {
    let ok = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(ok.success());
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_exits_within_grace_period() {
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut edge = spawn_edge(
        origin.addr,
        &dir.path().join("c"),
        Some("[server]\ngrace_period_secs = 2\n"),
    );
    let start = Instant::now();
    sigterm(edge.pid());
    let deadline = start + Duration::from_secs(6);
    loop {
        if let Some(status) = edge.child.try_wait().unwrap() {
            let took = start.elapsed();
            assert!(took <= Duration::from_secs(3), "took {took:?}, {status}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "edge still running after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn unhealthy_origin_is_skipped() {
    let good = Origin::start().await;
    let sha = good.put_media("/media/h", body_of(100, 61));
    let dead = free_port(); // nothing listens here
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        "[upstream]\norigins = [\"{dead}\", \"{}\"]\nhealth_check_interval_secs = 1\n",
        good.addr
    );
    // --origin would replace the list, so start with the file only
    let cache = dir.path().join("c");
    let cfg_path = dir.path().join("e.toml");
    std::fs::write(&cfg_path, cfg).unwrap();
    let addr = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_komora-edge"))
        .arg("--config")
        .arg(&cfg_path)
        .arg("--listen")
        .arg(addr.to_string())
        .arg("--cache-dir")
        .arg(&cache)
        .spawn()
        .unwrap();
    let _edge = EdgeProc {
        child,
        addr,
        admin: None,
    };
    wait_listening(addr);
    // wait for a health-check round to mark the dead origin down, then every request works
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for i in 0..6 {
        let r = get(&format!("http://{addr}/api/{i}"), &[]).await;
        assert_eq!(r.status, 200, "request {i}");
    }
    let r = get(&format!("http://{addr}/media/h"), &[]).await;
    assert_eq!(r.sha(), sha);
}

#[tokio::test(flavor = "multi_thread")]
async fn https_listener_speaks_h2() {
    let origin = Origin::start().await;
    let sha = origin.put_media("/media/t", body_of(5000, 62));
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = test_cert(dir.path());
    let tls = free_port();
    let cfg = format!(
        "[server]\ntls_listen = \"{tls}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
        cert.display(),
        key.display()
    );
    let cache = dir.path().join("c");
    let cfg_path = dir.path().join("e.toml");
    std::fs::write(&cfg_path, cfg).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_komora-edge"))
        .arg("--config")
        .arg(&cfg_path)
        .arg("--origin")
        .arg(origin.addr.to_string())
        .arg("--cache-dir")
        .arg(&cache)
        .spawn()
        .unwrap();
    let _edge = EdgeProc {
        child,
        addr: tls,
        admin: None,
    };
    wait_listening(tls);
    let c = reqwest::Client::builder()
        .no_proxy()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    for expect in ["MISS", "HIT"] {
        let r = c
            .get(format!("https://localhost:{}/media/t", tls.port()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.version(), reqwest::Version::HTTP_2);
        assert_eq!(r.headers()["x-cache-status"], expect);
        assert_eq!(sha256_hex(&r.bytes().await.unwrap()), sha);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_is_an_alias_of_origin() {
    let origin = Origin::start().await;
    let sha = origin.put_media("/media/u", body_of(1000, 63));
    let dir = tempfile::tempdir().unwrap();
    let addr = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_komora-edge"))
        .arg("--listen")
        .arg(addr.to_string())
        .arg("--upstream")
        .arg(origin.addr.to_string())
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
    let r = get(&format!("http://{addr}/media/u"), &[]).await;
    assert_eq!(r.sha(), sha);
    let r = get(&format!("http://{addr}/healthz"), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(origin.requests(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_an_in_flight_response() {
    let origin = Origin::start().await;
    let sha = origin.put_media("/media/slow", body_of(2 << 20, 64));
    origin
        .state
        .trickle_ms
        .store(100, std::sync::atomic::Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let mut edge = spawn_edge(
        origin.addr,
        &dir.path().join("c"),
        Some("[server]\ngrace_period_secs = 3\n"),
    );
    let mut resp = client().get(edge.url("/media/slow")).send().await.unwrap();
    let mut body = resp.chunk().await.unwrap().unwrap().to_vec();
    let start = Instant::now();
    assert!(Command::new("kill")
        .arg("-TERM")
        .arg(edge.pid().to_string())
        .status()
        .unwrap()
        .success());
    while let Some(c) = resp.chunk().await.unwrap() {
        body.extend_from_slice(&c);
    }
    assert_eq!(sha256_hex(&body), sha);
    let deadline = start + Duration::from_secs(6);
    while edge.child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "edge still running after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        start.elapsed() <= Duration::from_millis(4500),
        "{:?}",
        start.elapsed()
    );
}

/// A listen address another socket holds: the edge must not run without its listener (it
/// would look alive to a supervisor while serving nothing); it exits non-zero and says which
/// key and address failed.
#[tokio::test(flavor = "multi_thread")]
async fn taken_listen_address_stops_the_edge_with_its_key() -> std::io::Result<()> {
    let origin = Origin::start().await;
    let dir = tempfile::tempdir()?;
    let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = taken.local_addr()?;
    let out = edge_command(addr, origin.addr, &dir.path().join("c"))
        .env("RUST_LOG", "error")
        .stdin(std::process::Stdio::null())
        .output()?;
    // The edge logs to stdout.
    let log =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "edge ran on a taken address: {log}");
    assert!(
        log.contains("server.listen") && log.contains(&addr.to_string()) && log.contains("in use"),
        "{log}"
    );
    drop(taken);
    Ok(())
}

/// A certificate or key the TLS listener cannot use stops the edge at startup with exit
/// code 1 and a message naming the files and the reason (pingora's listener panicked when
/// it started), before anything listens.
#[test]
fn unusable_tls_certificate_or_key_is_a_startup_error() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = test_cert(dir.path());
    let (_, other_key) = test_cert(&{
        let d = dir.path().join("other");
        std::fs::create_dir(&d).unwrap();
        d
    });
    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "not a certificate\n").unwrap();
    for (label, c, k, want) in [
        (
            "no PEM certificate",
            &not_pem,
            &key,
            "holds no PEM certificate",
        ),
        (
            "key of another certificate",
            &cert,
            &other_key,
            "KeyMismatch",
        ),
    ] {
        let tls = free_port();
        let cfg = dir.path().join("e.toml");
        std::fs::write(
            &cfg,
            format!(
                "[server]\ntls_listen = \"{tls}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
                c.display(),
                k.display()
            ),
        )
        .unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_komora-edge"))
            .arg("--config")
            .arg(&cfg)
            .arg("--cache-dir")
            .arg(dir.path().join("c"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{label}: {err}");
        assert!(!err.contains("panicked"), "{label}: {err}");
        assert!(
            err.contains("server.tls_cert/tls_key: ")
                && err.contains(&c.display().to_string())
                && err.contains(want),
            "{label}: {err}"
        );
    }
}

/// One GET of `path` on `sock` with `Connection: close`; returns the whole response.
async fn get_and_close<S>(sock: &mut S, path: &str) -> String
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    sock.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), sock.read_to_end(&mut out))
        .await
        .expect("response not ended in time")
        .unwrap();
    String::from_utf8_lossy(&out).to_string()
}

/// A keep-alive connection to `addr` that was answered once (`GET /media/s`, 500 bytes) and
/// now waits for its next request.
async fn answered_keep_alive(addr: std::net::SocketAddr) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut kept = tokio::net::TcpStream::connect(addr).await.unwrap();
    kept.write_all(b"GET /media/s HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    // The head, then the 500-byte body.
    let mut got = Vec::new();
    let complete = |got: &[u8]| {
        got.windows(4)
            .position(|w| w == b"\r\n\r\n")
            .is_some_and(|end| got.len() >= end + 4 + 500)
    };
    while !complete(&got) {
        let mut b = [0u8; 4096];
        let n = kept.read(&mut b).await.unwrap();
        assert!(n > 0, "closed mid-response");
        got.extend_from_slice(&b[..n]);
    }
    assert!(got.starts_with(b"HTTP/1.1 200"));
    kept
}

/// At a graceful shutdown the edge closes keep-alive connections waiting for their next
/// request once they have sent none for `SHUTDOWN_LINGER` (1 s); one whose request comes
/// within it is answered, with `Connection: close` (closing it at once reset a busy
/// client's request on its way). A connection it accepted that has not sent its first
/// request yet (over TLS: its handshake done) is a request in flight: it is answered within
/// the grace period.
#[tokio::test(flavor = "multi_thread")]
async fn shutdown_answers_accepted_connections_and_closes_idle_keep_alive_ones() {
    use tokio::io::AsyncReadExt;
    let origin = Origin::start().await;
    origin.put_media("/media/s", body_of(500, 63));
    let dir = tempfile::tempdir().unwrap();
    let (edge, tls) = spawn_tls_edge(origin.addr, dir.path(), "grace_period_secs = 5\n");
    let connector = tls_connector(&dir.path().join("cert.pem"), &dir.path().join("key.pem"));
    let name = pingora::tls::ServerName::try_from("localhost").unwrap();

    let mut kept = answered_keep_alive(edge.addr).await;
    let mut busy = answered_keep_alive(edge.addr).await;
    // Fresh connections, accepted, no request sent yet.
    let mut fresh = tokio::net::TcpStream::connect(edge.addr).await.unwrap();
    let tcp = tokio::net::TcpStream::connect(tls).await.unwrap();
    let mut fresh_tls = connector.connect(name, tcp).await.unwrap();
    // Give the edge's accept loops the connections before the signal.
    tokio::time::sleep(Duration::from_millis(200)).await;

    sigterm(edge.pid());
    // A request on a keep-alive connection just after the shutdown reached the waiting
    // connections (well within the linger): answered, and the connection ends with it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let out = get_and_close(&mut busy, "/media/s").await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out:?}");
    assert!(
        out.to_ascii_lowercase()
            .contains("\r\nconnection: close\r\n"),
        "{out:?}"
    );
    // The keep-alive connection that sends nothing is closed.
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), kept.read_to_end(&mut rest))
        .await
        .expect("idle keep-alive connection not closed at shutdown")
        .unwrap();
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
    // The accepted ones still get their answers.
    for (label, out) in [
        ("plain", get_and_close(&mut fresh, "/media/s").await),
        ("TLS", get_and_close(&mut fresh_tls, "/media/s").await),
    ] {
        assert!(out.starts_with("HTTP/1.1 200"), "{label}: {out:?}");
    }
}

/// `server.threads` defaults to the CPUs the process may run on: started under a one-CPU
/// affinity (`taskset -c 0`) the edge's plain listener runs one worker thread, started with
/// every CPU one per CPU (pingora names a service's threads after it).
#[test]
fn worker_threads_default_to_the_cpus_the_process_may_run_on() {
    let dir = tempfile::tempdir().unwrap();
    let workers = |one_cpu: bool| -> usize {
        let addr = free_port();
        let origin = free_port(); // nothing needed there: no request is made
        let mut cmd = if one_cpu {
            let mut c = Command::new("taskset");
            c.args(["-c", "0"]).arg(env!("CARGO_BIN_EXE_komora-edge"));
            c
        } else {
            Command::new(env!("CARGO_BIN_EXE_komora-edge"))
        };
        cmd.arg("--listen")
            .arg(addr.to_string())
            .arg("--origin")
            .arg(origin.to_string())
            .arg("--cache-dir")
            .arg(dir.path().join(format!("c-{one_cpu}")))
            .stderr(std::process::Stdio::null());
        // taskset execs the edge: the child is the edge itself.
        let edge = EdgeProc {
            child: cmd.spawn().unwrap(),
            addr,
            admin: None,
        };
        wait_listening(addr);
        std::fs::read_dir(format!("/proc/{}/task", edge.pid()))
            .unwrap()
            .filter_map(|t| std::fs::read_to_string(t.unwrap().path().join("comm")).ok())
            .filter(|name| name.trim() == "komora-edge")
            .count()
    };
    let cpus = std::thread::available_parallelism().unwrap().get();
    let (one, all) = (workers(true), workers(false));
    assert_eq!(
        all - one,
        cpus - 1,
        "{one} threads on one CPU, {all} on {cpus} CPUs"
    );
}
