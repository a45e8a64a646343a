//! Signed media URLs at the origin (the API hands out `?exp=…&sig=…`, `/media` refuses
//! anything else with a JSON 403, keys rotate, `exp` repeats within a window), the
//! configuration around them, and `/media`'s conditional (`If-Modified-Since`) and range
//! edge cases.

use hmac::{Hmac, Mac};
use komora_origin::config::{ConfigFile, MediaAccess};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::both_backends;
use crate::common::{spawn_app_with, TestApp};

const KEY_OLD: &str = "old-key-0123456789abcdef0123456789abcdef";
const KEY_NEW: &str = "new-key-fedcba9876543210fedcba9876543210";
const DAY: u64 = 86_400;

fn signed(keys: &'static str) -> impl FnOnce(&mut ConfigFile) {
    move |raw| {
        raw.media.signed_urls = true;
        raw.media.signing_keys = Some(keys.to_string());
    }
}

fn now() -> u64 {
    komora_origin::media::signing::unix_now()
}

/// Hex HMAC-SHA256 of `"<sha>.<exp>"`, computed here independently of the origin's code.
fn hmac_hex(key: &str, sha: &str, exp: u64) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(format!("{sha}.{exp}").as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Uploads `bytes`; returns (sha256, the URL the API gave).
async fn upload(app: &TestApp, bytes: &[u8]) -> (String, String) {
    let resp = app.upload(bytes.to_vec(), "image/png").await;
    assert!(resp.status().is_success(), "{}", resp.status());
    let v: Value = resp.json().await.unwrap();
    (
        v["sha256"].as_str().unwrap().to_string(),
        v["url"].as_str().unwrap().to_string(),
    )
}

async fn fetch(app: &TestApp, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut rb = app.client.get(format!("{}{path}", app.base));
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    rb.send().await.unwrap()
}

/// A 403 with the origin's JSON error body, and none of the object's bytes.
async fn assert_forbidden(resp: reqwest::Response, secret: &[u8]) {
    assert_eq!(resp.status(), 403);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let body = resp.bytes().await.unwrap();
    let json: Value = serde_json::from_slice(&body).unwrap();
    assert!(json["error"].is_string(), "{json}");
    assert!(!body.windows(secret.len()).any(|w| w == secret));
}

both_backends!(api_returns_signed_urls_that_the_origin_serves, |t| {
    let app = spawn_app_with(&t, signed(KEY_OLD), None).await;
    let bytes = b"passport scan \x00\x01\x02 signed".repeat(100);
    let (sha, url) = upload(&app, &bytes).await;
    let before = now();
    let (path, query) = url.split_once('?').unwrap();
    assert_eq!(path, format!("/media/{sha}"));
    let exp: u64 = query
        .strip_prefix("exp=")
        .and_then(|q| q.split('&').next())
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(exp % DAY, 0, "exp is rounded to the window");
    assert!(exp >= before + DAY && exp < before + 2 * DAY + 5, "{exp}");
    assert_eq!(
        query,
        format!("exp={exp}&sig={}", hmac_hex(KEY_OLD, &sha, exp))
    );

    // The message list hands out the same signed URL.
    let conv = crate::common::fixture(&t.db, 1, 0).await.conversations[0];
    let media_id: i64 = sqlx::query_scalar("SELECT id FROM media WHERE sha256 = $1")
        .bind(&sha)
        .fetch_one(&t.db.pool)
        .await
        .unwrap();
    let sent = app
        .post_json(
            &format!("/api/conversations/{conv}/messages"),
            serde_json::json!({"text": "your scan", "media_ids": [media_id]}),
        )
        .await;
    assert!(sent.status().is_success(), "{}", sent.status());
    let list: Value = app
        .get(&format!("/api/conversations/{conv}/messages"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        list.to_string().matches(&url).count(),
        1,
        "listed url: {list}"
    );

    let got = fetch(&app, &url, &[]).await;
    assert_eq!(got.status(), 200);
    let cc = got.headers()["cache-control"].to_str().unwrap().to_string();
    let max_age: u64 = cc
        .strip_prefix("private, max-age=")
        .unwrap()
        .parse()
        .unwrap();
    let after = now();
    assert!(
        max_age <= exp - before && max_age + 5 >= exp - after,
        "{cc}"
    );
    assert_eq!(got.bytes().await.unwrap().as_ref(), bytes.as_slice());
});

both_backends!(unsigned_expired_and_tampered_media_urls_get_json_403, |t| {
    let app = spawn_app_with(&t, signed(KEY_OLD), None).await;
    let bytes = b"diploma scan".repeat(50);
    let (sha, _) = upload(&app, &bytes).await;
    let n = now();
    let future = n + DAY;
    let past = n - 10;
    let other = hex::encode(Sha256::digest(b"another object"));
    let good_sig = hmac_hex(KEY_OLD, &sha, future);
    let cases = [
        format!("/media/{sha}"),
        format!("/media/{sha}?exp={future}"),
        format!("/media/{sha}?sig={good_sig}"),
        // Expired, though correctly signed.
        format!(
            "/media/{sha}?exp={past}&sig={}",
            hmac_hex(KEY_OLD, &sha, past)
        ),
        // exp moved later than what was signed.
        format!("/media/{sha}?exp={}&sig={good_sig}", future + 1),
        // Another object's signature.
        format!(
            "/media/{sha}?exp={future}&sig={}",
            hmac_hex(KEY_OLD, &other, future)
        ),
        // Signed with a key the origin does not have.
        format!(
            "/media/{sha}?exp={future}&sig={}",
            hmac_hex("attacker-key-0123456789abcdef012345", &sha, future)
        ),
        // One hex digit flipped, a truncated and a non-hex signature, a padded exp.
        format!(
            "/media/{sha}?exp={future}&sig={}{}",
            if good_sig.starts_with('0') { "1" } else { "0" },
            &good_sig[1..]
        ),
        format!("/media/{sha}?exp={future}&sig={}", &good_sig[..40]),
        format!("/media/{sha}?exp={future}&sig={}", "z".repeat(64)),
        format!("/media/{sha}?exp=0{future}&sig={good_sig}"),
        format!("/media/{sha}?exp=99999999999999999999999&sig={good_sig}"),
    ];
    for path in &cases {
        assert_forbidden(fetch(&app, path, &[]).await, &bytes).await;
    }
    // HEAD is refused too, and an unknown object is refused before it is looked up.
    let head = app
        .client
        .head(format!("{}/media/{sha}", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 403);
    let missing = hex::encode(Sha256::digest(b"never uploaded"));
    assert_forbidden(fetch(&app, &format!("/media/{missing}"), &[]).await, &bytes).await;
    let f = n + DAY;
    let ok = format!(
        "/media/{missing}?exp={f}&sig={}",
        hmac_hex(KEY_OLD, &missing, f)
    );
    assert_eq!(fetch(&app, &ok, &[]).await.status(), 404);
    // The correctly signed URL, with an unrelated parameter added, is served.
    let ok = format!("/media/{sha}?exp={future}&sig={good_sig}&cb=1");
    let got = fetch(&app, &ok, &[]).await;
    assert_eq!(got.status(), 200);
    assert_eq!(got.bytes().await.unwrap().as_ref(), bytes.as_slice());
});

both_backends!(rotated_keys_sign_with_the_first_and_verify_with_all, |t| {
    // KEY_NEW was prepended to KEY_OLD: URLs handed out before the rotation still work.
    let keys: &'static str = Box::leak(format!("{KEY_NEW}, {KEY_OLD}").into_boxed_str());
    let app = spawn_app_with(&t, signed(keys), None).await;
    let bytes = b"contract".repeat(40);
    let (sha, url) = upload(&app, &bytes).await;
    let exp: u64 = url
        .split("exp=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        url.ends_with(&format!("sig={}", hmac_hex(KEY_NEW, &sha, exp))),
        "{url}"
    );
    let old = format!(
        "/media/{sha}?exp={exp}&sig={}",
        hmac_hex(KEY_OLD, &sha, exp)
    );
    let got = fetch(&app, &old, &[]).await;
    assert_eq!(got.status(), 200);
    assert_eq!(got.bytes().await.unwrap().as_ref(), bytes.as_slice());
    assert_eq!(fetch(&app, &url, &[]).await.status(), 200);
});

both_backends!(signed_url_expiry_repeats_within_a_window, |t| {
    let app = spawn_app_with(
        &t,
        |raw| {
            signed(KEY_OLD)(raw);
            raw.media.signed_url_window_secs = 3600;
        },
        None,
    )
    .await;
    let sha = hex::encode(Sha256::digest(b"x"));
    let exp_of = |url: &str| -> u64 {
        url.split("exp=")
            .nth(1)
            .unwrap()
            .split('&')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let base = 1_800_000_000u64; // a multiple of 3600
    assert_eq!(base % 3600, 0);
    // Everything made within one window gets one URL, valid at least a window.
    let first = app.state.media_url_at(&sha, base + 1);
    for t in [base + 1, base + 1800, base + 3599, base + 3600] {
        assert_eq!(app.state.media_url_at(&sha, t), first, "at {t}");
    }
    assert_eq!(exp_of(&first), base + 7200);
    // The next window moves it by one window.
    let next = app.state.media_url_at(&sha, base + 3601);
    assert_eq!(exp_of(&next), base + 3 * 3600);
    for t in (base..base + 4 * 3600).step_by(97) {
        let left = exp_of(&app.state.media_url_at(&sha, t)) - t;
        assert!((3600..7200).contains(&left), "{t}: {left}");
    }
});

both_backends!(public_media_switch_serves_unsigned_urls, |t| {
    let app = spawn_app_with(
        &t,
        |raw| {
            signed(KEY_OLD)(raw);
            raw.media.signed_urls = false;
        },
        None,
    )
    .await;
    let bytes = b"public brochure".repeat(10);
    let (sha, url) = upload(&app, &bytes).await;
    assert_eq!(url, format!("/media/{sha}"));
    let got = fetch(&app, &url, &[]).await;
    assert_eq!(got.status(), 200);
    assert_eq!(
        got.headers()["cache-control"],
        "public, max-age=604800, immutable"
    );
});

both_backends!(signing_without_keys_refuses_every_media_request, |t| {
    // Only reachable without App::build (which refuses to start): fail closed.
    let app = spawn_app_with(&t, |raw| raw.media.signed_urls = true, None).await;
    assert!(matches!(app.state.config.media.access, MediaAccess::NoKeys));
    let bytes = b"no keys".repeat(10);
    let (sha, url) = upload(&app, &bytes).await;
    assert_eq!(url, format!("/media/{sha}"));
    assert_forbidden(fetch(&app, &url, &[]).await, &bytes).await;
});

#[tokio::test]
async fn serve_refuses_to_start_without_keys_and_check_config_names_bad_keys() {
    use komora_origin::config::Config;
    let config = crate::common::test_config(|raw| raw.media.signed_urls = true);
    let err = komora_origin::app::App::build(config, None)
        .await
        .err()
        .expect("must refuse to start");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("media.signed_urls") && msg.contains("KOMORA_MEDIA_SIGNING_KEYS"),
        "{msg}"
    );

    // The shipped defaults are valid without the environment (keys are read at serve time).
    assert!(matches!(
        Config::parse("<t>", "").unwrap().media.access,
        MediaAccess::NoKeys
    ));
    // A short key is a config error that names the variable and the key, not its value.
    let env = |k: &str| (k == "KOMORA_MEDIA_SIGNING_KEYS").then(|| format!("{KEY_OLD},tiny"));
    let e = Config::parse_with_env("x.toml", "", env)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("x.toml: media.signed_urls (env KOMORA_MEDIA_SIGNING_KEYS): key 2"),
        "{e}"
    );
    assert!(!e.contains("tiny") && !e.contains(KEY_OLD), "{e}");
    // Keys cannot be written in the file.
    let e = Config::parse("x.toml", "[media]\nsigning_keys = \"abc\"\n").unwrap_err();
    assert!(e.to_string().contains("signing_keys"), "{e}");
    let e = Config::parse("x.toml", "[media]\nsigned_url_window_secs = 10\n").unwrap_err();
    assert!(
        e.to_string().contains("media.signed_url_window_secs"),
        "{e}"
    );
    let env = |k: &str| (k == "KOMORA_MEDIA_SIGNING_KEYS").then(|| KEY_OLD.to_string());
    let c = Config::parse_with_env("x.toml", "", env).unwrap();
    assert!(matches!(c.media.access, MediaAccess::Signed(_)));
    assert!(
        !format!("{c:?}").contains(KEY_OLD),
        "Debug must not print keys"
    );
}

both_backends!(
    if_modified_since_gets_304_unless_if_none_match_decides,
    |t| {
        let app = spawn_app_with(&t, |_| {}, None).await;
        let bytes = b"ims".repeat(1000);
        let (sha, url) = upload(&app, &bytes).await;
        let first = fetch(&app, &url, &[]).await;
        let lm = first.headers()["last-modified"]
            .to_str()
            .unwrap()
            .to_string();
        let modified = httpdate::parse_http_date(&lm).unwrap();
        let earlier = httpdate::fmt_http_date(modified - std::time::Duration::from_secs(1));
        let later = httpdate::fmt_http_date(modified + std::time::Duration::from_secs(3600));
        let etag = format!("\"{sha}\"");

        for ims in [lm.as_str(), later.as_str()] {
            let r = fetch(&app, &url, &[("if-modified-since", ims)]).await;
            assert_eq!(r.status(), 304, "IMS {ims}");
            assert_eq!(r.headers()["etag"], etag.as_str());
            assert!(r.bytes().await.unwrap().is_empty());
        }
        // RFC 850 form of the same date is understood too.
        let rfc850 = chrono::DateTime::<chrono::Utc>::from(modified)
            .format("%A, %d-%b-%y %H:%M:%S GMT")
            .to_string();
        assert_eq!(
            fetch(&app, &url, &[("if-modified-since", &rfc850)])
                .await
                .status(),
            304
        );
        // Older than Last-Modified, or not a date: the full body.
        for ims in [earlier.as_str(), "yesterday", ""] {
            let r = fetch(&app, &url, &[("if-modified-since", ims)]).await;
            assert_eq!(r.status(), 200, "IMS {ims:?}");
            assert_eq!(r.bytes().await.unwrap().as_ref(), bytes.as_slice());
        }
        // If-None-Match takes precedence: a non-matching tag means 200 even with a fresh IMS,
        // a matching one 304 even with an old IMS.
        let r = fetch(
            &app,
            &url,
            &[
                ("if-none-match", "\"other\""),
                ("if-modified-since", &later),
            ],
        )
        .await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.bytes().await.unwrap().as_ref(), bytes.as_slice());
        let r = fetch(
            &app,
            &url,
            &[("if-none-match", &etag), ("if-modified-since", &earlier)],
        )
        .await;
        assert_eq!(r.status(), 304);

        // Signed media revalidate the same way, with their private Cache-Control.
        let app = spawn_app_with(&t, signed(KEY_OLD), None).await;
        let (_, url) = upload(&app, &bytes).await;
        let r = fetch(&app, &url, &[("if-modified-since", &later)]).await;
        assert_eq!(r.status(), 304);
        assert!(r.headers()["cache-control"]
            .to_str()
            .unwrap()
            .starts_with("private, max-age="));
    }
);

both_backends!(range_edge_cases_answer_like_the_edge, |t| {
    let app = spawn_app_with(&t, |_| {}, None).await;
    let bytes: Vec<u8> = (0..8192u32).map(|i| (i * 7 % 253) as u8).collect();
    let (_, url) = upload(&app, &bytes).await;
    // Unsatisfiable: an empty suffix, a first position at or past the end, however large.
    for range in [
        "bytes=-0",
        "bytes=8192-",
        "bytes=99999999999999999999-",
        "bytes=99999999999999999999-99999999999999999999",
    ] {
        let r = fetch(&app, &url, &[("range", range)]).await;
        assert_eq!(r.status(), 416, "{range}");
        assert_eq!(r.headers()["content-range"], "bytes */8192", "{range}");
    }
    // Invalid range-specs are ignored: 200 with the whole body.
    for range in ["bytes=10-5", "bytes=-", "bytes=1-2-3", "bytes=+5-9"] {
        let r = fetch(&app, &url, &[("range", range)]).await;
        assert_eq!(r.status(), 200, "{range}");
        assert!(r.headers().get("content-range").is_none());
        assert_eq!(
            r.bytes().await.unwrap().as_ref(),
            bytes.as_slice(),
            "{range}"
        );
    }
    // A huge last position or suffix is clamped to the object.
    for (range, start) in [
        ("bytes=8000-99999999999999999999", 8000usize),
        ("bytes=-99999999999999999999", 0),
    ] {
        let r = fetch(&app, &url, &[("range", range)]).await;
        assert_eq!(r.status(), 206, "{range}");
        assert_eq!(
            r.headers()["content-range"],
            format!("bytes {start}-8191/8192").as_str()
        );
        assert_eq!(r.bytes().await.unwrap().as_ref(), &bytes[start..]);
    }
});
