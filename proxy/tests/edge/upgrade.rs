//! Zero-downtime upgrade: a second edge started with `--upgrade` (and a changed config) takes
//! the listening sockets, plain and TLS, over from the running one (SIGQUIT), while a
//! request loop runs through both; no request fails and the new process serves the warm
//! cache.

use crate::common::*;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The edge on `config`, which names its listeners (`--listen` would clear `tls_listen`).
fn spawn(
    config: &Path,
    admin: SocketAddr,
    origin: SocketAddr,
    cache: &Path,
    upgrade: bool,
) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_komora-edge"));
    cmd.arg("--config")
        .arg(config)
        .arg("--admin-listen")
        .arg(admin.to_string())
        .arg("--origin")
        .arg(origin.to_string())
        .arg("--cache-dir")
        .arg(cache)
        .env("KOMORA_ADMIN_TOKEN", ADMIN_TOKEN)
        .stdin(Stdio::null());
    if upgrade {
        cmd.arg("--upgrade");
    }
    cmd.spawn().unwrap()
}

#[derive(Default)]
struct Tally {
    ok: AtomicUsize,
    failures: Mutex<Vec<String>>,
}

impl Tally {
    fn check(&self, what: &str, r: Result<(u16, String), String>, want_sha: &str) {
        match r {
            Ok((200, sha)) if sha == want_sha => {
                self.ok.fetch_add(1, Ordering::Relaxed);
            }
            Ok((status, sha)) => self
                .failures
                .lock()
                .unwrap()
                .push(format!("{what}: status {status}, sha {sha}")),
            Err(e) => self.failures.lock().unwrap().push(format!("{what}: {e}")),
        }
    }
}

async fn fetch(c: &reqwest::Client, url: &str) -> Result<(u16, String), String> {
    let r = c.get(url).send().await.map_err(|e| format!("{e:?}"))?;
    let status = r.status().as_u16();
    let body = r.bytes().await.map_err(|e| format!("{e:?}"))?;
    Ok((status, sha256_hex(&body)))
}

#[tokio::test(flavor = "multi_thread")]
async fn upgrade_hands_listeners_over_with_no_failed_request_and_a_warm_cache() {
    let origin = Arc::new(Origin::start().await);
    let warm = body_of(20_000, 9);
    let warm_sha = origin.put_media("/media/warm", warm);
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let (cert, key) = test_cert(dir.path());
    let (addr, tls, admin) = (free_port(), free_port(), free_port());
    let server = format!(
        "[server]\nupgrade_sock = \"{}\"\ngrace_period_secs = 3\nlisten = \"{addr}\"\n\
         tls_listen = \"{tls}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
        dir.path().join("upgrade.sock").display(),
        cert.display(),
        key.display()
    );
    let config = dir.path().join("edge.toml");
    std::fs::write(&config, &server).unwrap();
    // The new process runs a changed config (nginx `-s reload`): a shorter client max-age.
    let changed = dir.path().join("edge-new.toml");
    std::fs::write(
        &changed,
        format!(
            "{server}[[route]]\nprefix = \"/media/\"\nclient_max_age_secs = 60\n\
             [[route]]\nprefix = \"/\"\nmode = \"bypass\"\n"
        ),
    )
    .unwrap();
    let mut a = EdgeProc {
        child: spawn(&config, admin, origin.addr, &cache, false),
        addr,
        admin: Some(admin),
    };
    wait_listening(addr);
    wait_listening(tls);
    wait_listening(admin);
    let base = format!("http://{addr}");
    let r = get(&format!("{base}/media/warm"), &[]).await;
    assert_eq!((r.status, r.cache_status()), (200, "MISS"));
    let r = get(&format!("{base}/media/warm"), &[]).await;
    assert_eq!(
        (r.status, r.cache_status(), r.sha()),
        (200, "HIT", warm_sha.clone())
    );
    assert!(r.header("cache-control").contains("max-age=604800"));

    // The loop: warm hits over one kept-alive connection, and misses (a new object each
    // time) over a new connection per request, and a warm hit over a new TLS connection,
    // until told to stop.
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let keep_alive = client();
    let fresh = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let fresh_tls = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let tls_url = format!("https://127.0.0.1:{}/media/warm", tls.port());
    let misses = Arc::new(AtomicUsize::new(0));
    let worker = {
        let (tally, stop, origin, base, warm_sha, misses) = (
            tally.clone(),
            stop.clone(),
            origin.clone(),
            base.clone(),
            warm_sha.clone(),
            misses.clone(),
        );
        tokio::spawn(async move {
            let mut i = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let r = fetch(&keep_alive, &format!("{base}/media/warm")).await;
                tally.check("warm hit", r, &warm_sha);
                let path = format!("/media/miss-{i}");
                let sha = origin.put_media(&path, body_of(3000, (i % 251) as u8));
                let r = fetch(&fresh, &format!("{base}{path}")).await;
                tally.check(&path, r, &sha);
                let r = fetch(&fresh_tls, &tls_url).await;
                tally.check("warm hit over a new TLS connection", r, &warm_sha);
                misses.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;

    // B waits on the upgrade socket for A's listeners; A sends them on SIGQUIT.
    let sock = dir.path().join("upgrade.sock");
    let mut b = EdgeProc {
        child: spawn(&changed, admin, origin.addr, &cache, true),
        addr,
        admin: Some(admin),
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sock.exists() {
        assert!(Instant::now() < deadline, "new edge never opened {sock:?}");
        assert!(
            b.child.try_wait().unwrap().is_none(),
            "new edge exited early"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before_quit = tally.ok.load(Ordering::Relaxed);
    let quit = Command::new("kill")
        .arg("-QUIT")
        .arg(a.pid().to_string())
        .status()
        .unwrap();
    assert!(quit.success());
    // A keeps accepting for pingora's close timeout (5 s), then drains and exits.
    let deadline = Instant::now() + Duration::from_secs(20);
    let a_status = loop {
        if let Some(s) = a.child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "old edge did not exit");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(b.child.try_wait().unwrap().is_none(), "new edge died");
    let at_exit = tally.ok.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, Ordering::Relaxed);
    worker.await.unwrap();

    let failures = tally.failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} failed: {failures:#?}",
        failures.len()
    );
    let ok = tally.ok.load(Ordering::Relaxed);
    assert!(at_exit > before_quit, "no request during the hand-over");
    assert!(ok > at_exit, "no request after the old edge exited");
    assert!(a_status.success(), "old edge exit: {a_status}");

    // Only B is left: it served the warm object from the shared cache, never asking the
    // origin again; every miss went to the origin exactly once.
    let r = get(&format!("{base}/media/warm"), &[]).await;
    assert_eq!(
        (r.status, r.cache_status(), r.sha()),
        (200, "HIT", warm_sha)
    );
    let cc = r.header("cache-control");
    assert!(cc.contains("max-age=60,"), "the new config is live: {cc}");
    assert_eq!(origin.requests_for("/media/warm"), 1);
    let n = misses.load(Ordering::Relaxed);
    assert_eq!(origin.requests(), 1 + n, "{n} misses");
    let b_hits = metric(&b, "komora_edge_requests_total", "cache_status=\"HIT\"").await;
    assert!(b_hits >= 2.0, "new edge served {b_hits} hits");
    b.kill();
}
