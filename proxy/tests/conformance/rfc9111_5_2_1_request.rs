//! RFC 9111 §5.2.1 request directives, honored only on routes with
//! `request_directives = true` (a shared cache may ignore them; the default ignores them).

use crate::common::{get, sha256_hex, EdgeProc};
use crate::edge;
use crate::origin::{Origin, Resp};

const ON: &str = "request_directives = true\n";

/// `/rfc/q` answers `cc` with ETag `"q"` (304 to a matching If-None-Match).
async fn setup(route: &str, cc: &'static str) -> (Origin, EdgeProc, tempfile::TempDir) {
    let origin = Origin::start().await;
    origin.on("/rfc/q", move |r| {
        let h = [("cache-control", cc), ("etag", "\"q\"")];
        if r.header("if-none-match") == Some("\"q\"") {
            Resp::new(304, &h, "")
        } else {
            Resp::new(200, &h, "q body")
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let e = edge(&origin, &dir.path().join("c"), route);
    (origin, e, dir)
}

async fn ask(e: &EdgeProc, cc: &str) -> crate::common::Got {
    let r = get(&e.url("/rfc/q"), &[("cache-control", cc)]).await;
    if r.status == 200 {
        assert_eq!(r.sha(), sha256_hex(b"q body"));
    }
    r
}

#[tokio::test(flavor = "multi_thread")]
async fn no_cache_and_max_age_force_validation_only_when_on() {
    for cc in ["no-cache", "max-age=0"] {
        let (origin, e, _d) = setup(ON, "max-age=600").await;
        get(&e.url("/rfc/q"), &[]).await;
        let r = ask(&e, cc).await;
        assert_eq!(r.status, 200);
        assert_eq!(origin.count("/rfc/q"), 2, "{cc}: validated with the origin");
        let (origin, e, _d) = setup("", "max-age=600").await;
        get(&e.url("/rfc/q"), &[]).await;
        assert_eq!(
            ask(&e, cc).await.cache_status(),
            "HIT",
            "{cc}: ignored by default"
        );
        assert_eq!(origin.count("/rfc/q"), 1);
    }
    // Pragma: no-cache without Cache-Control is no-cache (§5.4).
    let (origin, e, _d) = setup(ON, "max-age=600").await;
    get(&e.url("/rfc/q"), &[]).await;
    get(&e.url("/rfc/q"), &[("pragma", "no-cache")]).await;
    assert_eq!(origin.count("/rfc/q"), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn min_fresh_and_max_stale() {
    let (origin, e, _d) = setup(ON, "max-age=600").await;
    get(&e.url("/rfc/q"), &[]).await;
    assert_eq!(ask(&e, "min-fresh=60").await.cache_status(), "HIT");
    assert_eq!(origin.count("/rfc/q"), 1);
    ask(&e, "min-fresh=6000").await;
    assert_eq!(origin.count("/rfc/q"), 2, "not fresh for 6000 s more");

    // Stale from the start (max-age=0): max-stale accepts it without the origin...
    let (origin, e, _d) = setup(ON, "max-age=0").await;
    get(&e.url("/rfc/q"), &[]).await;
    let r = ask(&e, "max-stale").await;
    assert_eq!((r.status, origin.count("/rfc/q")), (200, 1));
    let r = ask(&e, "max-stale=60").await;
    assert_eq!((r.status, origin.count("/rfc/q")), (200, 1));
    // ...but never past must-revalidate.
    let (origin, e, _d) = setup(ON, "max-age=0, must-revalidate").await;
    get(&e.url("/rfc/q"), &[]).await;
    ask(&e, "max-stale").await;
    assert_eq!(origin.count("/rfc/q"), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn only_if_cached_is_504_without_a_stored_response() {
    let (origin, e, _d) = setup(ON, "max-age=600").await;
    let r = ask(&e, "only-if-cached").await;
    assert_eq!(r.status, 504);
    assert_eq!(origin.count("/rfc/q"), 0);
    get(&e.url("/rfc/q"), &[]).await;
    let r = ask(&e, "only-if-cached").await;
    assert_eq!((r.status, origin.count("/rfc/q")), (200, 1));
    // Default route: ignored, the origin answers.
    let (origin, e, _d) = setup("", "max-age=600").await;
    assert_eq!(ask(&e, "only-if-cached").await.status, 200);
    assert_eq!(origin.count("/rfc/q"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn no_store_request_keeps_the_response_out_of_the_cache() {
    let (origin, e, _d) = setup(ON, "max-age=600").await;
    assert_eq!(ask(&e, "no-store").await.status, 200);
    let r = get(&e.url("/rfc/q"), &[]).await;
    assert_ne!(r.cache_status(), "HIT");
    assert_eq!(origin.count("/rfc/q"), 2);
}
