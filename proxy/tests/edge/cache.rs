//! Cache behaviour through the edge: miss → hit, policy, validation, collapsing, Range, stale.
//! Expiry is reached on the cache's test clock (`EdgeProc::advance_clock`), not by sleeping.

use crate::common::*;
use std::sync::atomic::Ordering;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn miss_then_hit_without_config_file() {
    let origin = Origin::start().await;
    let sha = origin.put_media("/media/a", body_of(100_000, 1));
    let dir = tempfile::tempdir().unwrap();
    let edge = spawn_edge(origin.addr, &dir.path().join("c"), None);

    let r1 = get(&edge.url("/media/a"), &[]).await;
    assert_eq!(r1.status, 200);
    assert_eq!(r1.cache_status(), "MISS");
    assert_eq!(r1.sha(), sha);
    let r2 = get(&edge.url("/media/a"), &[]).await;
    assert_eq!(r2.status, 200);
    assert_eq!(r2.cache_status(), "HIT");
    assert_eq!(r2.sha(), sha);
    assert_eq!(origin.requests_for("/media/a"), 1);
    // nginx `expires 7d` on media
    assert_eq!(
        r2.header("cache-control"),
        "public, max-age=604800, immutable"
    );
    let expires = httpdate::parse_http_date(r2.header("expires")).unwrap();
    let ahead = expires
        .duration_since(std::time::SystemTime::now())
        .unwrap();
    assert!(ahead > Duration::from_secs(604_700), "{ahead:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn api_never_stored() {
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let edge = spawn_edge(origin.addr, &dir.path().join("c"), None);
    for _ in 0..3 {
        let r = get(&edge.url("/api/contacts"), &[("authorization", "Bearer x")]).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.cache_status(), "BYPASS");
        assert_eq!(r.header("cache-control"), "private, no-store");
    }
    assert_eq!(origin.requests_for("/api/contacts"), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn private_no_store_set_cookie_authorization_not_stored() {
    let origin = Origin::start().await;
    origin.put(
        "/media/p",
        body_of(10, 1),
        &[("cache-control", "private, max-age=600")],
    );
    origin.put("/media/n", body_of(10, 2), &[("cache-control", "no-store")]);
    origin.put(
        "/media/c",
        body_of(10, 3),
        &[("cache-control", "max-age=600"), ("set-cookie", "s=1")],
    );
    origin.put(
        "/media/auth",
        body_of(10, 4),
        &[("cache-control", "max-age=600")],
    );
    let pub_sha = origin.put_media("/media/authpub", body_of(10, 5));
    let dir = tempfile::tempdir().unwrap();
    let edge = spawn_edge(origin.addr, &dir.path().join("c"), None);
    for p in ["/media/p", "/media/n", "/media/c"] {
        get(&edge.url(p), &[]).await;
        let r = get(&edge.url(p), &[]).await;
        assert_eq!(r.status, 200);
        assert_ne!(r.cache_status(), "HIT", "{p}");
        assert_eq!(origin.requests_for(p), 2, "{p}");
    }
    let auth = [("authorization", "Bearer t")];
    get(&edge.url("/media/auth"), &auth).await;
    get(&edge.url("/media/auth"), &auth).await;
    assert_eq!(origin.requests_for("/media/auth"), 2);
    // `public` responses to authorized requests are stored
    get(&edge.url("/media/authpub"), &auth).await;
    let r = get(&edge.url("/media/authpub"), &auth).await;
    assert_eq!(r.cache_status(), "HIT");
    assert_eq!(r.sha(), pub_sha);
    assert_eq!(origin.requests_for("/media/authpub"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn if_none_match_answered_304_from_cache() {
    let origin = Origin::start().await;
    let sha = origin.put_media("/media/e", body_of(5000, 7));
    let dir = tempfile::tempdir().unwrap();
    let edge = spawn_edge(origin.addr, &dir.path().join("c"), None);
    get(&edge.url("/media/e"), &[]).await;
    let etag = format!("\"{sha}\"");
    let r = get(&edge.url("/media/e"), &[("if-none-match", &etag)]).await;
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    let r = get(&edge.url("/media/e"), &[("if-none-match", "\"other\"")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.sha(), sha);
    origin.put(
        "/media/lm",
        body_of(100, 8),
        &[
            ("cache-control", "public, max-age=600"),
            ("last-modified", "Mon, 02 Nov 2026 10:00:00 GMT"),
        ],
    );
    get(&edge.url("/media/lm"), &[]).await;
    let r = get(
        &edge.url("/media/lm"),
        &[("if-modified-since", "Mon, 02 Nov 2026 10:00:00 GMT")],
    )
    .await;
    assert_eq!(r.status, 304);
    assert_eq!(r.cache_status(), "HIT");
    assert_eq!(origin.requests_for("/media/e"), 1);
    assert_eq!(origin.requests_for("/media/lm"), 1);
    assert_eq!(origin.state.conditional.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_object_revalidated_with_304() {
    let origin = Origin::start().await;
    let body = body_of(3000, 9);
    let sha = sha256_hex(&body);
    let etag = format!("\"{sha}\"");
    origin.put(
        "/media/r",
        body,
        &[("cache-control", "public, max-age=1"), ("etag", &etag)],
    );
    let dir = tempfile::tempdir().unwrap();
    let edge = spawn_edge_clocked(origin.addr, &dir.path().join("c"), None);
    assert_eq!(get(&edge.url("/media/r"), &[]).await.cache_status(), "MISS");
    // let max-age=1 run out
    edge.advance_clock(Duration::from_millis(2100)).await;
    let r = get(&edge.url("/media/r"), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.cache_status(), "REVALIDATED");
    assert_eq!(r.sha(), sha);
    assert_eq!(origin.state.not_modified.load(Ordering::SeqCst), 1);
    let r = get(&edge.url("/media/r"), &[]).await;
    assert_eq!(r.cache_status(), "HIT");
    assert_eq!(r.sha(), sha);
    assert_eq!(origin.requests_for("/media/r"), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_cold_requests_collapse_to_one_origin_request() {
    let origin = Origin::start().await;
    let sha = origin.put_media("/media/hot", body_of(200_000, 11));
    // Long enough that all 200 requests arrive while the one fetch is in flight, also on a
    // loaded machine (a request arriving after the fill is a plain hit, not a lock wait).
    origin.state.delay_ms.store(1000, Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let edge = spawn_edge(origin.addr, &dir.path().join("c"), Some("[admin]\n"));
    let url = edge.url("/media/hot");
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move { get(&url, &[]).await }));
    }
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.sha(), sha);
    }
    assert_eq!(origin.requests_for("/media/hot"), 1);
    // the others waited on the cache lock (counted once each request is logged)
    let mut waits = 0.0;
    for _ in 0..50 {
        waits = metric(&edge, "komora_edge_cache_lock_waits_total", "").await;
        if waits >= 100.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(waits >= 100.0, "lock waits {waits}");
}

#[tokio::test(flavor = "multi_thread")]
async fn range_from_cache_multipart_and_416() {
    let origin = Origin::start().await;
    let body = body_of(10_000, 13);
    origin.put_media("/media/rg", body.clone());
    let big = body_of(3 << 20, 14);
    origin.put_media("/media/rgbig", big.clone());
    let dir = tempfile::tempdir().unwrap();
    let edge = spawn_edge(origin.addr, &dir.path().join("c"), None);

    // a Range request on a miss fills the cache with the whole object
    let r = get(&edge.url("/media/rg"), &[("range", "bytes=10-19")]).await;
    assert_eq!(r.status, 206);
    assert_eq!(&r.body[..], &body[10..20]);
    let r = get(&edge.url("/media/rg"), &[]).await;
    assert_eq!(r.cache_status(), "HIT");
    assert_eq!(r.sha(), sha256_hex(&body));
    assert_eq!(origin.requests_for("/media/rg"), 1);

    let r = get(&edge.url("/media/rg"), &[("range", "bytes=9990-")]).await;
    assert_eq!(r.status, 206);
    assert_eq!(&r.body[..], &body[9990..]);
    assert_eq!(r.header("content-range"), "bytes 9990-9999/10000");

    let r = get(&edge.url("/media/rg"), &[("range", "bytes=0-1,100-101")]).await;
    assert_eq!(r.status, 206);
    assert!(r.header("content-type").starts_with("multipart/byteranges"));
    let text = r.body.clone();
    assert!(find_sub(&text, &body[0..2]) && find_sub(&text, &body[100..102]));

    let r = get(&edge.url("/media/rg"), &[("range", "bytes=20000-")]).await;
    assert_eq!(r.status, 416);

    // large object streamed from disk also seeks
    get(&edge.url("/media/rgbig"), &[]).await;
    let r = get(
        &edge.url("/media/rgbig"),
        &[("range", "bytes=2000000-2000099")],
    )
    .await;
    assert_eq!(r.status, 206);
    assert_eq!(r.cache_status(), "HIT");
    assert_eq!(&r.body[..], &big[2_000_000..2_000_100]);
    assert_eq!(origin.requests_for("/media/rgbig"), 1);
}

fn find_sub(h: &[u8], n: &[u8]) -> bool {
    h.windows(n.len()).any(|w| w == n)
}

#[tokio::test(flavor = "multi_thread")]
async fn stale_served_when_origin_stopped() {
    let mut origin = Origin::start().await;
    let body = body_of(4000, 15);
    origin.put(
        "/media/s",
        body.clone(),
        &[("cache-control", "public, max-age=1")],
    );
    let dir = tempfile::tempdir().unwrap();
    let edge = spawn_edge_clocked(origin.addr, &dir.path().join("c"), None);
    assert_eq!(get(&edge.url("/media/s"), &[]).await.cache_status(), "MISS");
    origin.stop();
    edge.advance_clock(Duration::from_millis(2100)).await;
    let r = get(&edge.url("/media/s"), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.cache_status(), "STALE");
    assert_eq!(r.sha(), sha256_hex(&body));
}

#[tokio::test(flavor = "multi_thread")]
async fn stale_served_on_origin_5xx() {
    let origin = Origin::start().await;
    let body = body_of(4000, 16);
    origin.put(
        "/media/s5",
        body.clone(),
        &[("cache-control", "public, max-age=1")],
    );
    let dir = tempfile::tempdir().unwrap();
    let edge = spawn_edge_clocked(origin.addr, &dir.path().join("c"), None);
    get(&edge.url("/media/s5"), &[]).await;
    origin.state.fail_5xx.store(true, Ordering::SeqCst);
    edge.advance_clock(Duration::from_millis(2100)).await;
    let r = get(&edge.url("/media/s5"), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.cache_status(), "STALE");
    assert_eq!(r.sha(), sha256_hex(&body));
}

#[tokio::test(flavor = "multi_thread")]
async fn unsafe_methods_pass_through_and_invalidate() {
    let origin = Origin::start().await;
    origin.put_media("/media/w", body_of(100, 17));
    let dir = tempfile::tempdir().unwrap();
    let edge = spawn_edge(origin.addr, &dir.path().join("c"), None);
    get(&edge.url("/media/w"), &[]).await;
    assert_eq!(get(&edge.url("/media/w"), &[]).await.cache_status(), "HIT");
    let r = client()
        .post(edge.url("/media/w"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    assert_eq!(get(&edge.url("/media/w"), &[]).await.cache_status(), "MISS");
    assert_eq!(origin.requests_for("/media/w"), 3);
}

const SWR_CFG: &str = r#"
[[route]]
prefix = "/media/"
stale_while_revalidate_secs = 60
client_max_age_secs = 604800
[[route]]
prefix = "/"
mode = "bypass"
"#;

#[tokio::test(flavor = "multi_thread")]
async fn stale_while_revalidate_serves_stale_and_refreshes_once() {
    let origin = Origin::start().await;
    let body = body_of(4000, 18);
    origin.put(
        "/media/swr",
        body.clone(),
        &[("cache-control", "public, max-age=1")],
    );
    let dir = tempfile::tempdir().unwrap();
    let edge = spawn_edge_clocked(origin.addr, &dir.path().join("c"), Some(SWR_CFG));
    get(&edge.url("/media/swr"), &[]).await;
    edge.advance_clock(Duration::from_millis(2100)).await;
    let r = get(&edge.url("/media/swr"), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.cache_status(), "UPDATING");
    assert_eq!(r.sha(), sha256_hex(&body));
    // exactly one background refresh reaches the origin
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while origin.requests_for("/media/swr") < 2 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(origin.requests_for("/media/swr"), 2);
    // The origin has answered the refresh; the edge stores it right after. Until then a
    // request may still see the stale copy (UPDATING), but never causes another fetch.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let r = loop {
        let r = get(&edge.url("/media/swr"), &[]).await;
        if r.cache_status() != "UPDATING" || std::time::Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(r.cache_status(), "HIT");
    assert_eq!(r.sha(), sha256_hex(&body));
    assert_eq!(
        origin.requests_for("/media/swr"),
        2,
        "one background refresh only"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn origin_down_without_copy_is_502_with_cache_status() {
    let mut origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let edge = spawn_edge(origin.addr, &dir.path().join("c"), None);
    origin.stop();
    let r = get(&edge.url("/media/none"), &[]).await;
    assert_eq!(r.status, 502);
    assert_eq!(r.cache_status(), "MISS");
    let r = get(&edge.url("/api/none"), &[]).await;
    assert_eq!(r.status, 502);
    assert_eq!(r.cache_status(), "BYPASS");
}

#[tokio::test(flavor = "multi_thread")]
async fn second_reader_streams_an_object_while_it_is_filled() {
    let origin = Origin::start().await;
    let body = body_of(2 << 20, 19);
    let sha = origin.put_media("/media/fill", body);
    origin.state.trickle_ms.store(150, Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let edge = spawn_edge(origin.addr, &dir.path().join("c"), None);
    let url = edge.url("/media/fill");
    // the first reader has body bytes, so its fill is registered and the cache lock released
    let mut first = client().get(&url).send().await.unwrap();
    let mut first_body = first.chunk().await.unwrap().unwrap().to_vec();
    assert_eq!(origin.requests_for("/media/fill"), 1);
    let resp = client().get(&url).send().await.unwrap();
    // headers of the second reader arrive while the origin is still sending the body
    assert_eq!(origin.state.completed.load(Ordering::SeqCst), 0);
    assert_eq!(resp.status().as_u16(), 200);
    let second = resp.bytes().await.unwrap();
    assert_eq!(sha256_hex(&second), sha);
    while let Some(c) = first.chunk().await.unwrap() {
        first_body.extend_from_slice(&c);
    }
    assert_eq!(sha256_hex(&first_body), sha);
    assert_eq!(origin.requests_for("/media/fill"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_object_without_validators_is_refetched() {
    let origin = Origin::start().await;
    origin.put(
        "/media/x",
        body_of(2000, 20),
        &[("cache-control", "public, max-age=1")],
    );
    let dir = tempfile::tempdir().unwrap();
    let edge = spawn_edge_clocked(origin.addr, &dir.path().join("c"), None);
    get(&edge.url("/media/x"), &[]).await;
    let new_body = body_of(2500, 21);
    origin.put(
        "/media/x",
        new_body.clone(),
        &[("cache-control", "public, max-age=600")],
    );
    edge.advance_clock(Duration::from_millis(2100)).await;
    let r = get(&edge.url("/media/x"), &[]).await;
    assert_eq!(r.cache_status(), "EXPIRED");
    assert_eq!(r.sha(), sha256_hex(&new_body));
    let r = get(&edge.url("/media/x"), &[]).await;
    assert_eq!(r.cache_status(), "HIT");
    assert_eq!(r.sha(), sha256_hex(&new_body));
    assert_eq!(origin.requests_for("/media/x"), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn head_is_served_from_the_same_entry() {
    let origin = Origin::start().await;
    origin.put_media("/media/hd", body_of(3000, 22));
    let dir = tempfile::tempdir().unwrap();
    let edge = spawn_edge(origin.addr, &dir.path().join("c"), None);
    get(&edge.url("/media/hd"), &[]).await;
    let r = client().head(edge.url("/media/hd")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["x-cache-status"], "HIT");
    assert_eq!(r.headers()["content-length"], "3000");
    assert_eq!(origin.requests_for("/media/hd"), 1);
}

/// Memory hits are answered by the edge's fast path (`hit::serve`); the response
/// must look like pingora's own cache hit: Age, Accept-Ranges, stored validators, HEAD
/// without a body, 304 without representation headers.
#[tokio::test(flavor = "multi_thread")]
async fn memory_hit_headers_get_head_and_304() {
    let origin = Origin::start().await;
    let sha = origin.put_media("/media/fast", body_of(65_536, 9));
    let dir = tempfile::tempdir().unwrap();
    let edge = spawn_edge(origin.addr, &dir.path().join("c"), None);
    assert_eq!(
        get(&edge.url("/media/fast"), &[]).await.cache_status(),
        "MISS"
    );

    let r = get(&edge.url("/media/fast"), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.cache_status(), "HIT");
    assert_eq!(r.sha(), sha);
    assert_eq!(r.header("content-length"), "65536");
    assert_eq!(r.header("accept-ranges"), "bytes");
    assert!(r.header("age").parse::<u64>().is_ok(), "{:?}", r.headers);
    assert_eq!(r.header("etag"), format!("\"{sha}\""));
    assert_eq!(
        r.header("cache-control"),
        "public, max-age=604800, immutable"
    );
    assert!(!r.header("expires").is_empty());

    let h = client().head(edge.url("/media/fast")).send().await.unwrap();
    assert_eq!(h.status().as_u16(), 200);
    assert_eq!(h.headers()["x-cache-status"], "HIT");
    assert_eq!(h.headers()["content-length"], "65536");
    assert!(h.bytes().await.unwrap().is_empty());

    let etag = format!("\"{sha}\"");
    let r = get(&edge.url("/media/fast"), &[("if-none-match", &etag)]).await;
    assert_eq!(r.status, 304);
    assert_eq!(r.cache_status(), "HIT");
    assert!(r.body.is_empty());
    assert!(r.headers.get("content-type").is_none());
    assert!(r.headers.get("accept-ranges").is_none());
    assert_eq!(r.header("etag"), etag);

    // Range is left to pingora's hit path
    let r = get(&edge.url("/media/fast"), &[("range", "bytes=10-19")]).await;
    assert_eq!(r.status, 206);
    assert_eq!(r.body.len(), 10);
    assert_eq!(origin.requests_for("/media/fast"), 1);
}
