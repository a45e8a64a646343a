//! Test helpers: a tiny hand-rolled HTTP/1.1 origin on port 0 that counts requests, and a
//! spawned `komora-edge` binary on a free port with a temp cache directory.

use bytes::Bytes;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

pub fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// Deterministic pseudo-random body.
pub fn body_of(len: usize, seed: u8) -> Bytes {
    let mut v = Vec::with_capacity(len);
    let mut x: u32 = 0x9e37_79b9 ^ u32::from(seed);
    for _ in 0..len {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        v.push(x as u8);
    }
    Bytes::from(v)
}

#[derive(Clone)]
pub struct Object {
    pub body: Bytes,
    /// Extra headers; media objects get CC/ETag by default via [`Origin::put_media`].
    pub headers: Vec<(String, String)>,
}

#[derive(Default)]
pub struct OriginState {
    pub objects: Mutex<HashMap<String, Object>>,
    pub requests: AtomicUsize,
    pub per_path: Mutex<HashMap<String, usize>>,
    pub conditional: AtomicUsize,
    pub not_modified: AtomicUsize,
    pub fail_5xx: AtomicBool,
    pub delay_ms: AtomicU64,
    /// Pause between 256 KiB body chunks.
    pub trickle_ms: AtomicU64,
    /// Bodies written completely.
    pub completed: AtomicUsize,
    /// Status for POST/PUT/DELETE outside `/api/`; 0 means 204.
    pub unsafe_status: AtomicU64,
}

pub struct Origin {
    pub addr: SocketAddr,
    pub state: Arc<OriginState>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: Option<JoinHandle<()>>,
}

impl Origin {
    pub async fn start() -> Origin {
        Self::start_on("127.0.0.1:0").await
    }

    pub async fn start_on(addr: &str) -> Origin {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(OriginState::default());
        let tasks: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (s, t) = (state.clone(), tasks.clone());
        let accept = tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                let s = s.clone();
                t.lock().unwrap().push(tokio::spawn(serve_conn(sock, s)));
            }
        });
        Origin {
            addr,
            state,
            tasks,
            accept: Some(accept),
        }
    }

    /// Store a media object with the real origin's headers; returns its sha256 hex.
    pub fn put_media(&self, path: &str, body: Bytes) -> String {
        let sha = sha256_hex(&body);
        self.put(
            path,
            body,
            &[
                ("cache-control", "public, max-age=604800, immutable"),
                ("etag", &format!("\"{sha}\"")),
                ("content-type", "application/octet-stream"),
            ],
        );
        sha
    }

    pub fn put(&self, path: &str, body: Bytes, headers: &[(&str, &str)]) {
        self.state.objects.lock().unwrap().insert(
            path.to_string(),
            Object {
                body,
                headers: headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            },
        );
    }

    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    pub fn requests_for(&self, path: &str) -> usize {
        *self.state.per_path.lock().unwrap().get(path).unwrap_or(&0)
    }

    /// Close the listener and every open connection.
    pub fn stop(&mut self) {
        if let Some(a) = self.accept.take() {
            a.abort();
        }
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn serve_conn(mut sock: TcpStream, state: Arc<OriginState>) {
    let mut buf = Vec::new();
    loop {
        // read a request head
        let head_end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            let mut tmp = [0u8; 8192];
            match sock.read(&mut tmp).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        buf.drain(..head_end);
        let mut lines = head.split("\r\n");
        let mut first = lines.next().unwrap_or("").split(' ');
        let method = first.next().unwrap_or("").to_string();
        let path = first.next().unwrap_or("/").to_string();
        let mut headers = HashMap::new();
        for l in lines {
            if let Some((k, v)) = l.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        let clen: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < clen {
            let mut tmp = [0u8; 8192];
            match sock.read(&mut tmp).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
            }
        }
        buf.drain(..clen);

        state.requests.fetch_add(1, Ordering::SeqCst);
        *state
            .per_path
            .lock()
            .unwrap()
            .entry(path.clone())
            .or_default() += 1;
        let delay = state.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }

        let (status, hdrs, body): (u16, Vec<(String, String)>, Bytes) =
            if state.fail_5xx.load(Ordering::SeqCst) {
                (503, vec![], Bytes::from_static(b"down"))
            } else if path.starts_with("/api/") {
                (
                    200,
                    vec![
                        ("cache-control".into(), "private, no-store".into()),
                        ("content-type".into(), "application/json".into()),
                    ],
                    Bytes::from(format!(
                        "{{\"n\":{}}}",
                        state.requests.load(Ordering::SeqCst)
                    )),
                )
            } else if matches!(method.as_str(), "POST" | "PUT" | "DELETE") {
                match state.unsafe_status.load(Ordering::SeqCst) {
                    0 => (204, vec![], Bytes::new()),
                    s => (s as u16, vec![], Bytes::from_static(b"no")),
                }
            } else {
                let obj = state.objects.lock().unwrap().get(&path).cloned();
                match obj {
                    None => (404, vec![], Bytes::from_static(b"not found")),
                    Some(o) => {
                        let etag = o
                            .headers
                            .iter()
                            .find(|(k, _)| k == "etag")
                            .map(|(_, v)| v.clone());
                        let inm = headers.get("if-none-match").cloned();
                        if inm.is_some() || headers.contains_key("if-modified-since") {
                            state.conditional.fetch_add(1, Ordering::SeqCst);
                        }
                        if inm.is_some() && inm == etag {
                            state.not_modified.fetch_add(1, Ordering::SeqCst);
                            (304, o.headers.clone(), Bytes::new())
                        } else {
                            (200, o.headers.clone(), o.body.clone())
                        }
                    }
                }
            };
        let reason = match status {
            200 => "OK",
            204 => "No Content",
            304 => "Not Modified",
            404 => "Not Found",
            405 => "Method Not Allowed",
            _ => "Service Unavailable",
        };
        let mut out = format!("HTTP/1.1 {status} {reason}\r\n");
        for (k, v) in &hdrs {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        if status != 304 && status != 204 {
            out.push_str(&format!("content-length: {}\r\n", body.len()));
        }
        out.push_str("\r\n");
        if sock.write_all(out.as_bytes()).await.is_err() {
            return;
        }
        if method != "HEAD" && status != 304 && status != 204 {
            let trickle = state.trickle_ms.load(Ordering::SeqCst);
            for (i, c) in body.chunks(256 * 1024).enumerate() {
                if trickle > 0 && i > 0 {
                    tokio::time::sleep(Duration::from_millis(trickle)).await;
                }
                if sock.write_all(c).await.is_err() {
                    return;
                }
            }
            state.completed.fetch_add(1, Ordering::SeqCst);
        }
    }
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

/// A port for a spawned edge (or any process that binds it itself) to listen on.
///
/// Not a port the kernel picked for `:0`: between our probe and the child's bind the kernel
/// can hand the same port to another test's `:0` bind, and `wait_listening` would then reach
/// that other test's server, which answers this test's requests. Ports come from one counter
/// per test process in 20000..32000, below the kernel's ephemeral range (32768..) so no `:0`
/// bind takes them, starting at an offset from the pid so the next test binary does not
/// reuse a port an exiting edge of the previous one still holds; each is checked bindable.
pub fn free_port() -> SocketAddr {
    use std::sync::atomic::{AtomicU32, Ordering as AtomicOrdering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let offset = (std::process::id() % 100) * 120;
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, AtomicOrdering::Relaxed);
        let port = LOW + (offset + n) % SPAN;
        if let Ok(l) = StdListener::bind(("127.0.0.1", port as u16)) {
            return l.local_addr().unwrap();
        }
    }
    panic!("no free port in {LOW}..{}", LOW + SPAN);
}

pub struct EdgeProc {
    pub child: Child,
    pub addr: SocketAddr,
    pub admin: Option<SocketAddr>,
}

impl EdgeProc {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin.unwrap(), path)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for EdgeProc {
    fn drop(&mut self) {
        self.kill();
    }
}

pub const ADMIN_TOKEN: &str = "test-token";

/// Media signing key every spawned edge gets in `KOMORA_MEDIA_SIGNING_KEYS`, so configs with
/// `signed_urls` routes (the shipped ones) start; routes without it ignore the variable.
pub const TEST_SIGNING_KEY: &str = "test-media-signing-key-0123456789abcdef";

/// The edge binary with the arguments every test edge has (`--listen`, `--origin`,
/// `--cache-dir`); callers add the rest and spawn it.
pub fn edge_command(listen: SocketAddr, origin: SocketAddr, cache_dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_komora-edge"));
    cmd.arg("--listen")
        .arg(listen.to_string())
        .arg("--origin")
        .arg(origin.to_string())
        .arg("--cache-dir")
        .arg(cache_dir);
    cmd
}

/// Spawn the edge binary. `config` is extra TOML written to a file next to the cache dir
/// (`None`: run without any config file, flags only).
pub fn spawn_edge(origin: SocketAddr, cache_dir: &Path, config: Option<&str>) -> EdgeProc {
    spawn_edge_with(origin, cache_dir, config, false)
}

/// [`spawn_edge`] with the test clock hook on (`KOMORA_EDGE_TEST_CLOCK=1`) and always an
/// admin listener (also without a config file), for tests that move the cache through time
/// with [`EdgeProc::advance_clock`] instead of sleeping until objects expire.
pub fn spawn_edge_clocked(origin: SocketAddr, cache_dir: &Path, config: Option<&str>) -> EdgeProc {
    spawn_edge_with(origin, cache_dir, config, true)
}

fn spawn_edge_with(
    origin: SocketAddr,
    cache_dir: &Path,
    config: Option<&str>,
    test_clock: bool,
) -> EdgeProc {
    let addr = free_port();
    let mut cmd = edge_command(addr, origin, cache_dir);
    cmd.env("KOMORA_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("KOMORA_MEDIA_SIGNING_KEYS", TEST_SIGNING_KEY)
        .stdin(Stdio::null());
    let mut admin = None;
    if let Some(extra) = config {
        let path: PathBuf = cache_dir.with_extension("toml");
        std::fs::write(&path, extra).unwrap();
        cmd.arg("--config").arg(&path);
    }
    if config.is_some() || test_clock {
        let a = free_port();
        admin = Some(a);
        cmd.arg("--admin-listen").arg(a.to_string());
    }
    if test_clock {
        cmd.env(TEST_CLOCK_ENV, "1");
    }
    let child = cmd.spawn().unwrap();
    let edge = EdgeProc { child, addr, admin };
    wait_listening(edge.addr);
    if let Some(a) = edge.admin {
        wait_listening(a);
    }
    edge
}

/// Spawn the edge with `config` (written to `dir/edge.toml`), its cache in `dir/cache`, an
/// admin listener and stderr captured in `dir/stderr.log` (returned); `test_clock` turns the
/// test clock hook on.
pub fn spawn_edge_stderr(
    origin: SocketAddr,
    dir: &Path,
    config: &str,
    test_clock: bool,
) -> (EdgeProc, PathBuf) {
    let addr = free_port();
    let admin = free_port();
    let cfg = dir.join("edge.toml");
    std::fs::write(&cfg, config).unwrap();
    let stderr = dir.join("stderr.log");
    let mut cmd = edge_command(addr, origin, &dir.join("cache"));
    if test_clock {
        cmd.env(TEST_CLOCK_ENV, "1");
    }
    let child = cmd
        .arg("--config")
        .arg(&cfg)
        .arg("--admin-listen")
        .arg(admin.to_string())
        .env("KOMORA_ADMIN_TOKEN", ADMIN_TOKEN)
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let edge = EdgeProc {
        child,
        addr,
        admin: Some(admin),
    };
    wait_listening(addr);
    wait_listening(admin);
    (edge, stderr)
}

/// The variable that turns the edge's test clock hook on.
pub const TEST_CLOCK_ENV: &str = "KOMORA_EDGE_TEST_CLOCK";

impl EdgeProc {
    /// Make every object the edge has stored `by` older, as if `by` had passed (the admin
    /// test clock hook; the edge must run with [`TEST_CLOCK_ENV`], see
    /// [`spawn_edge_clocked`]). Returns the hook's JSON answer.
    pub async fn advance_clock(&self, by: Duration) -> String {
        let r = client()
            .post(self.admin_url(&format!("/clock/advance?ms={}", by.as_millis())))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let body = r.text().await.unwrap();
        assert_eq!(status, 200, "clock advance: {body}");
        body
    }
}

pub fn wait_listening(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(addr).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("edge did not listen on {addr}");
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

pub struct Got {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Bytes,
}

impl Got {
    pub fn cache_status(&self) -> &str {
        self.headers
            .get("x-cache-status")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
    pub fn sha(&self) -> String {
        sha256_hex(&self.body)
    }
}

pub async fn get(url: &str, headers: &[(&str, &str)]) -> Got {
    let mut rb = client().get(url);
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

/// Sum of file sizes under `dir`, excluding `tmp/`.
pub fn dir_bytes(dir: &Path) -> u64 {
    entry_files(dir)
        .iter()
        .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum()
}

/// Entry files under `dir` (excluding `tmp/`).
pub fn entry_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                if p.file_name().is_some_and(|n| n != "tmp") {
                    stack.push(p);
                }
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// Read a counter/gauge value from the admin `/metrics` (sum over label sets matching `filter`).
pub async fn metric(edge: &EdgeProc, name: &str, filter: &str) -> f64 {
    let text = get(&edge.admin_url("/metrics"), &[]).await.body;
    let text = String::from_utf8_lossy(&text).to_string();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && l.contains(filter))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A self-signed P-256 certificate for `localhost` and 127.0.0.1 in `dir`: (cert, key).
/// Not a CA (`CA:FALSE`), so a rustls client can trust it as its own root.
pub fn test_cert(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    let ok = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "1", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    (cert, key)
}

/// An edge with a plain HTTP/1 listener (`EdgeProc::addr`) and a TLS one (returned), with
/// `extra` appended to its `[server]` table. (`spawn_edge`'s `--listen` would replace the
/// TLS listener, so both come from the file here.)
pub fn spawn_tls_edge(
    origin: SocketAddr,
    dir: &std::path::Path,
    extra: &str,
) -> (EdgeProc, SocketAddr) {
    let (cert, key) = test_cert(dir);
    let (plain, tls, admin) = (free_port(), free_port(), free_port());
    let cfg = format!(
        "[server]\nlisten = \"{plain}\"\ntls_listen = \"{tls}\"\ntls_cert = \"{}\"\n\
         tls_key = \"{}\"\n{extra}",
        cert.display(),
        key.display()
    );
    let cfg_path = dir.join("e.toml");
    std::fs::write(&cfg_path, cfg).unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_komora-edge"))
        .arg("--config")
        .arg(&cfg_path)
        .arg("--origin")
        .arg(origin.to_string())
        .arg("--cache-dir")
        .arg(dir.join("c"))
        .arg("--admin-listen")
        .arg(admin.to_string())
        .env("KOMORA_ADMIN_TOKEN", ADMIN_TOKEN)
        .stdin(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let edge = EdgeProc {
        child,
        addr: plain,
        admin: Some(admin),
    };
    for a in [plain, tls, admin] {
        wait_listening(a);
    }
    (edge, tls)
}

/// A TLS client (ALPN `http/1.1`) that trusts `cert`, the edge's self-signed certificate.
pub fn tls_connector(cert: &std::path::Path, key: &std::path::Path) -> pingora::tls::TlsConnector {
    use pingora::tls::{ClientConfig, RootCertStore};
    pingora::tls::install_default_crypto_provider();
    let (chain, _) = pingora::tls::load_certs_and_key_files(
        &cert.display().to_string(),
        &key.display().to_string(),
    )
    .unwrap()
    .expect("the test certificate and key");
    let mut roots = RootCertStore::empty();
    roots.add(chain[0].clone()).unwrap();
    let mut config = ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    pingora::tls::TlsConnector::from(std::sync::Arc::new(config))
}
