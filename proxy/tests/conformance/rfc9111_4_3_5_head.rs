//! RFC 9111 §4.3.5 (freshening responses with HEAD): a HEAD on a stale stored response goes
//! to the origin as HEAD; a 200 whose validators and Content-Length match the stored
//! response updates its header fields as a 304 would (§3.2), one that does not match takes
//! the stored response out of use. A HEAD with nothing stored still fills with a GET, and a
//! fresh one is a hit (media routes unchanged).

use crate::common::{client, get, sha256_hex, Got};
use crate::edge;
use crate::origin::{Origin, Resp};

async fn head(url: &str) -> Got {
    let r = client().head(url).send().await.unwrap();
    Got {
        status: r.status().as_u16(),
        headers: r.headers().clone(),
        body: r.bytes().await.unwrap(),
    }
}

/// The origin's answer to a GET or a HEAD of one resource: `cc`, `etag` (if any), `body`.
/// HEAD answers carry the same Content-Length as the GET would (the scripted origin sends
/// the length of `body` and, for HEAD, no body).
fn answer(cc: &str, etag: Option<&str>, extra: &[(&str, &str)], body: &'static str) -> Resp {
    let mut h: Vec<(&str, &str)> = vec![("cache-control", cc)];
    if let Some(e) = etag {
        h.push(("etag", e));
    }
    h.extend_from_slice(extra);
    Resp::new(200, &h, body)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_matching_head_200_freshens_the_stored_response() {
    let origin = Origin::start().await;
    // An origin that ignores If-None-Match (a server MAY): it answers the HEAD with a 200.
    origin.on("/rfc/h", |r| {
        if r.method == "HEAD" {
            answer(
                "max-age=600",
                Some("\"h1\""),
                &[("x-version", "2")],
                "hello",
            )
        } else {
            answer("max-age=0", Some("\"h1\""), &[("x-version", "1")], "hello")
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let e = edge(&origin, &dir.path().join("c"), "");
    let url = e.url("/rfc/h");
    let first = get(&url, &[]).await;
    assert_eq!(
        (first.status, first.cache_status(), first.sha()),
        (200, "MISS", sha256_hex(b"hello"))
    );
    // Stale on arrival: the HEAD revalidates it with a HEAD, not a GET.
    let h = head(&url).await;
    assert_eq!((h.status, h.cache_status()), (200, "REVALIDATED"));
    assert_eq!(h.header("content-length"), "5");
    assert_eq!(h.header("x-version"), "2");
    assert!(h.body.is_empty());
    assert_eq!(origin.methods("/rfc/h"), ["GET", "HEAD"]);
    assert_eq!(
        crate::origin::header_of(&origin.last_headers("/rfc/h"), "if-none-match"),
        Some("\"h1\"".to_string()),
        "the HEAD carries the stored validator"
    );
    // The stored body with the HEAD's header fields, fresh for the HEAD's max-age.
    for _ in 0..2 {
        let r = get(&url, &[]).await;
        assert_eq!(
            (r.status, r.cache_status(), r.sha()),
            (200, "HIT", sha256_hex(b"hello"))
        );
        assert_eq!(r.header("x-version"), "2");
        assert_eq!(r.header("etag"), "\"h1\"");
    }
    assert_eq!(origin.count("/rfc/h"), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_head_200_without_validators_freshens_a_response_stored_without_them() {
    let origin = Origin::start().await;
    origin.on("/rfc/nv", |r| {
        if r.method == "HEAD" {
            answer("max-age=600", None, &[], "12345")
        } else {
            answer("max-age=0", None, &[], "12345")
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let e = edge(&origin, &dir.path().join("c"), "");
    let url = e.url("/rfc/nv");
    assert_eq!(get(&url, &[]).await.cache_status(), "MISS");
    assert_eq!(head(&url).await.cache_status(), "REVALIDATED");
    let r = get(&url, &[]).await;
    assert_eq!(
        (r.status, r.cache_status(), r.sha()),
        (200, "HIT", sha256_hex(b"12345"))
    );
    assert_eq!(origin.methods("/rfc/nv"), ["GET", "HEAD"]);
}

/// Store `body` stale (with `stale-if-error`, so only an invalidation keeps it from being
/// served when the origin fails), HEAD it with the origin answering `head_answer`, then GET
/// it while the origin fails. Returns the HEAD's and the GET's responses.
async fn head_then_failing_get(
    path: &'static str,
    stored: fn() -> Resp,
    head_answer: fn() -> Resp,
    send_head: bool,
) -> (Option<Got>, Got, Origin) {
    let origin = Origin::start().await;
    origin.on(path, move |r| match (r.method.as_str(), r.n) {
        ("HEAD", _) => head_answer(),
        (_, 1) => stored(),
        _ => Resp::new(500, &[], "origin down"),
    });
    let dir = tempfile::tempdir().unwrap();
    let e = edge(&origin, &dir.path().join("c"), "");
    let url = e.url(path);
    let first = get(&url, &[]).await;
    assert_eq!((first.status, first.cache_status()), (200, "MISS"));
    let h = if send_head {
        Some(head(&url).await)
    } else {
        None
    };
    let after = get(&url, &[]).await;
    (h, after, origin)
}

fn stored_a() -> Resp {
    answer(
        "max-age=0, stale-if-error=600",
        Some("\"a\""),
        &[],
        "old body",
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_head_the_failing_origin_gets_the_stale_copy() {
    // The control for the two tests below: stale-if-error serves the stored copy.
    let (_, after, origin) = head_then_failing_get("/rfc/ctl", stored_a, stored_a, false).await;
    assert_eq!(
        (after.status, after.cache_status(), after.sha()),
        (200, "STALE", sha256_hex(b"old body"))
    );
    assert_eq!(origin.count("/rfc/ctl"), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_head_with_another_etag_takes_the_stored_response_out_of_use() {
    let (h, after, origin) = head_then_failing_get(
        "/rfc/et",
        stored_a,
        || answer("max-age=600", Some("\"b\""), &[], "old body"),
        true,
    )
    .await;
    let h = h.unwrap();
    assert_eq!((h.status, h.cache_status()), (200, "EXPIRED"));
    assert_eq!(h.header("etag"), "\"b\"");
    // Not served, not even stale-if-error: the origin's 500 goes out (an uncacheable
    // answer to a miss), and the GET went out unconditionally (nothing stored to validate).
    assert_eq!(
        (after.status, after.sha()),
        (500, sha256_hex(b"origin down"))
    );
    assert_eq!(origin.methods("/rfc/et"), ["GET", "HEAD", "GET"]);
    let last = origin.last_headers("/rfc/et");
    assert_eq!(crate::origin::header_of(&last, "if-none-match"), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_head_with_another_content_length_takes_the_stored_response_out_of_use() {
    let (h, after, origin) = head_then_failing_get(
        "/rfc/cl",
        stored_a,
        // Same ETag, but the representation has another length: not the stored one.
        || answer("max-age=600", Some("\"a\""), &[], "a longer body"),
        true,
    )
    .await;
    let h = h.unwrap();
    assert_eq!((h.status, h.cache_status()), (200, "EXPIRED"));
    assert_eq!(h.header("content-length"), "13");
    assert_eq!(
        (after.status, after.sha()),
        (500, sha256_hex(b"origin down"))
    );
    assert_eq!(origin.methods("/rfc/cl"), ["GET", "HEAD", "GET"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_matching_head_that_now_forbids_storing_removes_the_stored_response() {
    let (h, after, _) = head_then_failing_get(
        "/rfc/ns",
        stored_a,
        || answer("no-store", Some("\"a\""), &[], "old body"),
        true,
    )
    .await;
    assert_eq!(h.unwrap().cache_status(), "EXPIRED");
    assert_eq!(
        (after.status, after.sha()),
        (500, sha256_hex(b"origin down"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_304_to_the_head_freshens_like_any_304() {
    let origin = Origin::start().await;
    origin.on("/rfc/h304", |r| {
        if r.method == "HEAD" && r.header("if-none-match") == Some("\"v\"") {
            Resp::new(
                304,
                &[("cache-control", "max-age=600"), ("etag", "\"v\"")],
                "",
            )
        } else {
            answer("max-age=0", Some("\"v\""), &[], "body v")
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let e = edge(&origin, &dir.path().join("c"), "");
    let url = e.url("/rfc/h304");
    get(&url, &[]).await;
    let h = head(&url).await;
    assert_eq!((h.status, h.cache_status()), (200, "REVALIDATED"));
    assert_eq!(h.header("content-length"), "6");
    assert!(h.body.is_empty());
    let r = get(&url, &[]).await;
    assert_eq!(
        (r.status, r.cache_status(), r.sha()),
        (200, "HIT", sha256_hex(b"body v"))
    );
    assert_eq!(origin.methods("/rfc/h304"), ["GET", "HEAD"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn head_misses_fill_with_get_and_fresh_heads_are_hits_on_a_media_route() {
    let origin = Origin::start().await;
    origin.on("/m/obj", |_| {
        answer(
            "public, max-age=604800, immutable",
            Some("\"obj\""),
            &[],
            "media bytes",
        )
    });
    origin.on("/m/plain", |_| {
        Resp::new(200, &[], "no freshness of its own")
    });
    let dir = tempfile::tempdir().unwrap();
    let route = "\n[[route]]\nprefix = \"/m/\"\nmode = \"cache\"\ndefault_ttl_secs = 600\n";
    let e = edge(&origin, &dir.path().join("c"), route);
    for path in ["/m/obj", "/m/plain"] {
        let url = e.url(path);
        let h = head(&url).await;
        assert_eq!((h.status, h.cache_status()), (200, "MISS"), "{path}");
        assert!(h.body.is_empty());
        // The miss was fetched as GET, so the object is stored whole.
        assert_eq!(origin.methods(path), ["GET"], "{path}");
        let h = head(&url).await;
        assert_eq!((h.status, h.cache_status()), (200, "HIT"), "{path}");
        let r = get(&url, &[]).await;
        assert_eq!(r.cache_status(), "HIT", "{path}");
        assert_eq!(origin.count(path), 1, "{path}");
    }
    let r = get(&e.url("/m/obj"), &[]).await;
    assert_eq!(r.sha(), sha256_hex(b"media bytes"));
    assert_eq!(
        get(&e.url("/m/plain"), &[]).await.sha(),
        sha256_hex(b"no freshness of its own")
    );
}
