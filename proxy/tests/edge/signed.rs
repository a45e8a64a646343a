//! Signed media URLs through the real edge binary, and `cache_key_query`: refusals never
//! reach the origin, every signature (and every `?cb=`) of one object is one cache entry and
//! one origin fetch of the request's own URL, browsers get a private max-age until `exp`,
//! and generic routes keep their query strings in the key.

use crate::common::*;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

const KEY_A: &str = "edge-test-key-a-0123456789abcdef0123456789";
const KEY_B: &str = "edge-test-key-b-fedcba9876543210fedcba9876";

const SIGNED_MEDIA: &str = r#"
[[route]]
prefix = "/media/"
client_max_age_secs = 604800
signed_urls = true
signing_keys_env = "KOMORA_TEST_EDGE_KEYS"

[[route]]
prefix = "/"
mode = "bypass"
"#;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn sig(key: &str, sha: &str, exp: u64) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(format!("{sha}.{exp}").as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

fn signed_url(key: &str, sha: &str, exp: u64) -> String {
    format!("/media/{sha}?exp={exp}&sig={}", sig(key, sha, exp))
}

/// Like [`spawn_edge`] with a config file, with `keys` (or nothing) in the keys variable.
fn spawn_with_keys(origin: std::net::SocketAddr, dir: &Path, config: &str, keys: &str) -> EdgeProc {
    let addr = free_port();
    let admin = free_port();
    let path = dir.join("edge.toml");
    std::fs::write(&path, config).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_komora-edge"))
        .arg("--config")
        .arg(&path)
        .arg("--listen")
        .arg(addr.to_string())
        .arg("--origin")
        .arg(origin.to_string())
        .arg("--cache-dir")
        .arg(dir.join("cache"))
        .arg("--admin-listen")
        .arg(admin.to_string())
        .env("KOMORA_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("KOMORA_TEST_EDGE_KEYS", keys)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let edge = EdgeProc {
        child,
        addr,
        admin: Some(admin),
    };
    wait_listening(edge.addr);
    wait_listening(admin);
    edge
}

/// A signed media object at the test origin, answering `url` the way the real origin
/// answers a verified signed URL (private until expiry).
fn put_signed(origin: &Origin, url: &str, body: &bytes::Bytes, exp: u64) {
    let sha = sha256_hex(body);
    origin.put(
        url,
        body.clone(),
        &[
            (
                "cache-control",
                &format!("private, max-age={}", exp.saturating_sub(now())),
            ),
            ("etag", &format!("\"{sha}\"")),
            ("content-type", "image/jpeg"),
        ],
    );
}

/// `Cache-Control: private, max-age=N` with N the seconds left until `exp`.
fn assert_private_until(got: &Got, exp: u64) {
    let cc = got.header("cache-control");
    let max_age: u64 = cc
        .strip_prefix("private, max-age=")
        .unwrap_or_else(|| panic!("cache-control {cc:?}"))
        .parse()
        .unwrap();
    let left = exp - now();
    assert!(max_age <= left + 1 && max_age + 5 >= left, "{cc} vs {left}");
    assert_eq!(
        got.header("expires"),
        "",
        "no public Expires on signed media"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unsigned_expired_and_tampered_urls_get_403_without_an_origin_request() {
    let origin = Origin::start().await;
    let body = body_of(50_000, 21);
    let sha = sha256_hex(&body);
    let exp = now() + 86_400;
    let good = signed_url(KEY_A, &sha, exp);
    put_signed(&origin, &good, &body, exp);
    let dir = tempfile::tempdir().unwrap();
    let edge = spawn_with_keys(origin.addr, dir.path(), SIGNED_MEDIA, KEY_A);

    let past = now() - 5;
    let good_sig = sig(KEY_A, &sha, exp);
    let flipped = format!(
        "{}{}",
        if good_sig.starts_with('0') { "1" } else { "0" },
        &good_sig[1..]
    );
    let cases = [
        format!("/media/{sha}"),
        format!("/media/{sha}?cb=1"),
        format!("/media/{sha}?exp={exp}"),
        format!("/media/{sha}?sig={good_sig}"),
        signed_url(KEY_A, &sha, past),
        format!("/media/{sha}?exp={}&sig={good_sig}", exp + 1),
        format!("/media/{sha}?exp={exp}&sig={flipped}"),
        format!("/media/{sha}?exp=0{exp}&sig={good_sig}"),
        signed_url(KEY_B, &sha, exp),
        signed_url(KEY_A, &sha256_hex(b"other"), exp).replace(&sha256_hex(b"other"), &sha),
    ];
    for path in &cases {
        let r = get(&edge.url(path), &[]).await;
        assert_eq!(r.status, 403, "{path}");
        assert_eq!(r.header("content-type"), "application/json", "{path}");
        let json: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert!(json["error"].is_string(), "{path}: {json}");
        assert!(!r.body.windows(64).any(|w| w == &body[..64]));
    }
    // An unsigned POST cannot purge or reach the origin either.
    let r = client()
        .post(edge.url(&format!("/media/{sha}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(origin.requests(), 0, "refusals never reach the origin");

    // The good URL is served, and its copy is not handed to unsigned requests afterwards.
    let r = get(&edge.url(&good), &[]).await;
    assert_eq!((r.status, r.cache_status()), (200, "MISS"));
    assert_eq!(r.body, body);
    for _ in 0..2 {
        let r = get(&edge.url(&format!("/media/{sha}")), &[]).await;
        assert_eq!(r.status, 403);
        assert!(r.body.len() < 200);
    }
    assert_eq!(origin.requests(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_signature_of_one_object_is_one_entry_and_one_origin_fetch() {
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let keys = format!("{KEY_A},{KEY_B}");
    let edge = spawn_with_keys(origin.addr, dir.path(), SIGNED_MEDIA, &keys);
    // A small (memory, copied) and a large (sendfile from the entry file) object.
    for (len, seed) in [(10_000usize, 31u8), (300_000, 32)] {
        let body = body_of(len, seed);
        let sha = sha256_hex(&body);
        let (exp1, exp2) = (now() + 86_400, now() + 2 * 86_400 - 100);
        let first = signed_url(KEY_A, &sha, exp1);
        let second = signed_url(KEY_B, &sha, exp2);
        put_signed(&origin, &first, &body, exp1);
        put_signed(&origin, &second, &body, exp2);
        let before = origin.requests();

        let r = get(&edge.url(&first), &[]).await;
        assert_eq!((r.status, r.cache_status()), (200, "MISS"));
        assert_eq!(r.body, body);
        assert_private_until(&r, exp1);
        // The miss went to the origin with the request's own signed URL.
        assert_eq!(origin.requests_for(&first), 1);

        for (url, exp) in [(&second, exp2), (&first, exp1), (&second, exp2)] {
            let r = get(&edge.url(url), &[]).await;
            assert_eq!((r.status, r.cache_status()), (200, "HIT"), "{url}");
            assert_eq!(r.body, body);
            assert_private_until(&r, exp);
        }
        // pingora's own hit path (Range) and a conditional request say the same.
        let r = get(&edge.url(&second), &[("range", "bytes=0-9")]).await;
        assert_eq!((r.status, r.cache_status()), (206, "HIT"));
        assert_eq!(r.body, body.slice(0..10));
        assert_private_until(&r, exp2);
        let etag = format!("\"{sha}\"");
        let r = get(&edge.url(&second), &[("if-none-match", &etag)]).await;
        assert_eq!(r.status, 304);
        assert_private_until(&r, exp2);
        assert_eq!(origin.requests() - before, 1, "one origin fetch per object");
        assert_eq!(origin.requests_for(&second), 0);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn media_query_strings_are_one_entry_and_one_origin_fetch() {
    // Built-in routes (no config file): /media/ keys on the path alone.
    let origin = Origin::start().await;
    let body = body_of(40_000, 41);
    for q in ["?cb=1", "?cb=2", "?cb=3&x=y", ""] {
        origin.put_media(&format!("/media/q{q}"), body.clone());
    }
    let dir = tempfile::tempdir().unwrap();
    let edge = spawn_edge(origin.addr, &dir.path().join("c"), None);
    let r = get(&edge.url("/media/q?cb=1"), &[]).await;
    assert_eq!((r.status, r.cache_status()), (200, "MISS"));
    for url in [
        "/media/q?cb=2",
        "/media/q?cb=3&x=y",
        "/media/q",
        "/media/q?cb=1",
    ] {
        let r = get(&edge.url(url), &[]).await;
        assert_eq!((r.status, r.cache_status()), (200, "HIT"), "{url}");
        assert_eq!(r.body, body);
    }
    assert_eq!(origin.requests(), 1);
    assert_eq!(
        origin.requests_for("/media/q?cb=1"),
        1,
        "origin got the request's URL"
    );
    assert!(
        dir_bytes(&dir.path().join("c")) < 2 * body.len() as u64,
        "one stored copy"
    );
    // A write to any variant invalidates the one entry they share.
    let r = client()
        .post(edge.url("/media/q?cb=9"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = get(&edge.url("/media/q?cb=2"), &[]).await;
    assert_eq!((r.status, r.cache_status()), (200, "MISS"));
    assert_eq!(origin.requests_for("/media/q?cb=2"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn generic_routes_keep_the_query_and_lists_keep_only_named_parameters() {
    let origin = Origin::start().await;
    let config = r#"
[[route]]
prefix = "/files/"
default_ttl_secs = 600

[[route]]
prefix = "/thumbs/"
default_ttl_secs = 600
cache_key_query = ["w", "h"]

[[route]]
prefix = "/"
mode = "bypass"
"#;
    let urls = [
        "/files/a?v=1",
        "/files/a?v=2",
        "/thumbs/t?w=10&cb=1",
        "/thumbs/t?cb=2&w=10",
        "/thumbs/t?w=20",
        "/thumbs/t?h=5&w=10",
    ];
    for (i, u) in urls.iter().enumerate() {
        origin.put(
            u,
            body_of(1000, i as u8),
            &[("cache-control", "max-age=600")],
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let edge = spawn_edge(origin.addr, &dir.path().join("c"), Some(config));
    let statuses = {
        let mut v = Vec::new();
        for u in urls {
            v.push(get(&edge.url(u), &[]).await.cache_status().to_string());
        }
        v
    };
    assert_eq!(statuses, ["MISS", "MISS", "MISS", "HIT", "MISS", "MISS"]);
    // The generic route stores each query separately: both bodies come back as stored.
    assert_eq!(
        get(&edge.url("/files/a?v=2"), &[]).await.body,
        body_of(1000, 1)
    );
    assert_eq!(
        get(&edge.url("/files/a?v=1"), &[]).await.body,
        body_of(1000, 0)
    );
    assert_eq!(origin.requests(), 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn edge_refuses_to_start_without_keys_and_check_config_warns() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edge.toml");
    std::fs::write(&path, SIGNED_MEDIA).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_komora-edge"))
        .arg("--config")
        .arg(&path)
        .arg("--listen")
        .arg(free_port().to_string())
        .arg("--cache-dir")
        .arg(dir.path().join("cache"))
        .env_remove("KOMORA_TEST_EDGE_KEYS")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("signed_urls") && err.contains("KOMORA_TEST_EDGE_KEYS"),
        "{err}"
    );
    // --check-config validates the file: ok, with a warning about the environment.
    let out = Command::new(env!("CARGO_BIN_EXE_komora-edge"))
        .arg("--check-config")
        .arg(&path)
        .env_remove("KOMORA_TEST_EDGE_KEYS")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("warning"));
    // A short key is a config error naming the variable and the key, not its value.
    let out = Command::new(env!("CARGO_BIN_EXE_komora-edge"))
        .arg("--check-config")
        .arg(&path)
        .env("KOMORA_TEST_EDGE_KEYS", format!("{KEY_A},tiny"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("route[0].signed_urls") && err.contains("key 2"),
        "{err}"
    );
    assert!(!err.contains("tiny") && !err.contains(KEY_A), "{err}");
    // Bad cache_key_query values name their key.
    std::fs::write(
        &path,
        "[[route]]\nprefix = \"/x/\"\ncache_key_query = \"some\"\n[[route]]\nprefix = \"/y/\"\ncache_key_query = [\"a=b\"]\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_komora-edge"))
        .arg("--check-config")
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("route[0].cache_key_query"), "{err}");
    assert!(err.contains("route[1].cache_key_query"), "{err}");
}
