//! RFC 9111 §5.2.2 response directives as a shared cache reads them, and §3.5 (requests
//! with `Authorization`).

use crate::common::{client, get, sha256_hex, Got};
use crate::edge;
use crate::origin::{Origin, Resp};

/// An edge in front of an origin answering `path` with status 200, `headers` and body
/// `v<n>`; with `fail_after`, requests after that many answer 503.
async fn setup(
    headers: &'static [(&'static str, &'static str)],
    fail_after: Option<usize>,
) -> (Origin, crate::common::EdgeProc, tempfile::TempDir) {
    let origin = Origin::start().await;
    origin.on("/rfc/d", move |r| {
        if fail_after.is_some_and(|f| r.n > f) {
            return Resp::new(503, &[], "down");
        }
        Resp::new(200, headers, format!("v{}", r.n))
    });
    let dir = tempfile::tempdir().unwrap();
    let e = edge(&origin, &dir.path().join("c"), "");
    (origin, e, dir)
}

fn body(n: usize) -> String {
    sha256_hex(format!("v{n}").as_bytes())
}

async fn fetch(e: &crate::common::EdgeProc) -> Got {
    get(&e.url("/rfc/d"), &[]).await
}

#[tokio::test(flavor = "multi_thread")]
async fn no_store_and_private_are_never_stored() {
    for cc in [
        &[("cache-control", "no-store, max-age=600")][..],
        &[("cache-control", "private, max-age=600")][..],
    ] {
        let (origin, e, _d) = setup(cc, None).await;
        for n in 1..=3 {
            let r = fetch(&e).await;
            assert_eq!((r.status, r.sha()), (200, body(n)), "{cc:?}");
        }
        assert_eq!(origin.count("/rfc/d"), 3, "{cc:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn no_cache_is_stored_but_revalidated_on_every_use() {
    let origin = Origin::start().await;
    origin.on("/rfc/nc", |r| {
        let h = [
            ("cache-control", "no-cache, max-age=600"),
            ("etag", "\"e1\""),
        ];
        if r.header("if-none-match") == Some("\"e1\"") {
            Resp::new(304, &h, "")
        } else {
            Resp::new(200, &h, "stored body")
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let e = edge(&origin, &dir.path().join("c"), "");
    for n in 1..=3 {
        let r = get(&e.url("/rfc/nc"), &[]).await;
        assert_eq!((r.status, r.sha()), (200, sha256_hex(b"stored body")));
        assert_eq!(origin.count("/rfc/nc"), n, "every use reaches the origin");
        if n > 1 {
            // Stored: the edge validates with the stored ETag instead of refetching.
            let h = origin.last_headers("/rfc/nc");
            assert!(h.iter().any(|(k, v)| k == "if-none-match" && v == "\"e1\""));
            assert_eq!(r.cache_status(), "REVALIDATED");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn private_and_no_cache_fields_are_stored_without_those_fields() {
    for cc in [
        "max-age=600, private=\"x-user\"",
        "max-age=600, no-cache=\"x-user\"",
    ] {
        let origin = Origin::start().await;
        origin.on("/rfc/pf", move |_| {
            Resp::new(
                200,
                &[("cache-control", cc), ("x-user", "alice"), ("x-other", "1")],
                "b",
            )
        });
        let dir = tempfile::tempdir().unwrap();
        let e = edge(&origin, &dir.path().join("c"), "");
        // pingora sends a stored miss with the header as stored, so the field is gone from
        // the first answer too (allowed: the directive only forbids storing it).
        let miss = get(&e.url("/rfc/pf"), &[]).await;
        assert_eq!((miss.status, miss.sha()), (200, sha256_hex(b"b")));
        let hit = get(&e.url("/rfc/pf"), &[]).await;
        assert_eq!(
            (hit.status, hit.cache_status(), hit.sha()),
            (200, "HIT", sha256_hex(b"b"))
        );
        assert_eq!(hit.header("x-user"), "", "{cc}: field not stored");
        assert_eq!(hit.header("x-other"), "1");
        assert_eq!(origin.count("/rfc/pf"), 1);
    }
}

/// Stale on arrival (`Age` past `max-age`) with a generous `stale-if-error`, then the
/// origin fails: `extra` decides whether the stale copy may go out.
async fn stale_on_error(cc: &'static [(&'static str, &'static str)]) -> Got {
    let (origin, e, _d) = setup(cc, Some(1)).await;
    assert_eq!(fetch(&e).await.sha(), body(1));
    let r = fetch(&e).await;
    assert_eq!(origin.count("/rfc/d"), 2);
    r
}

#[tokio::test(flavor = "multi_thread")]
async fn must_revalidate_proxy_revalidate_s_maxage_never_serve_stale() {
    // Control: without them the stale copy answers the origin's error.
    let r = stale_on_error(&[
        ("cache-control", "max-age=10, stale-if-error=600"),
        ("age", "20"),
    ])
    .await;
    assert_eq!((r.status, r.sha()), (200, body(1)));
    for cc in [
        "max-age=10, stale-if-error=600, must-revalidate",
        "max-age=10, stale-if-error=600, proxy-revalidate",
        "s-maxage=10, stale-if-error=600",
    ] {
        let headers: &'static [(&'static str, &'static str)] =
            Box::leak(Box::new([("cache-control", cc), ("age", "20")]));
        let r = stale_on_error(headers).await;
        assert_eq!(r.status, 503, "{cc}: the error, never the stale copy");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn s_maxage_overrides_max_age() {
    let (origin, e, _d) = setup(&[("cache-control", "max-age=0, s-maxage=600")], None).await;
    fetch(&e).await;
    let r = fetch(&e).await;
    assert_eq!(
        (r.cache_status(), r.sha(), origin.count("/rfc/d")),
        ("HIT", body(1), 1)
    );
    let (origin, e, _d) = setup(&[("cache-control", "max-age=600, s-maxage=0")], None).await;
    fetch(&e).await;
    let r = fetch(&e).await;
    assert_eq!((r.sha(), origin.count("/rfc/d")), (body(2), 2));
}

#[tokio::test(flavor = "multi_thread")]
async fn must_understand_overrides_no_store_for_understood_statuses_only() {
    let (origin, e, _d) = setup(
        &[("cache-control", "no-store, must-understand, max-age=600")],
        None,
    )
    .await;
    fetch(&e).await;
    let r = fetch(&e).await;
    assert_eq!(
        (r.cache_status(), r.sha(), origin.count("/rfc/d")),
        ("HIT", body(1), 1)
    );

    // A status the edge does not understand is not stored with must-understand, even on a
    // route that stores any status with explicit freshness.
    let origin = Origin::start().await;
    origin.on("/rfc/mu", |r| {
        Resp::new(
            299,
            &[("cache-control", "must-understand, max-age=600")],
            format!("v{}", r.n),
        )
    });
    let dir = tempfile::tempdir().unwrap();
    let e = edge(&origin, &dir.path().join("c"), "store_any_status = true\n");
    for n in 1..=2 {
        let r = get(&e.url("/rfc/mu"), &[]).await;
        assert_eq!((r.status, r.sha()), (299, body(n)));
    }
    assert_eq!(origin.count("/rfc/mu"), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn authorization_responses_stored_only_when_allowed() {
    for (cc, stored) in [
        ("max-age=600", false),
        ("max-age=600, public", true),
        ("s-maxage=600", true),
        ("max-age=600, must-revalidate", true),
    ] {
        let headers: &'static [(&'static str, &'static str)] =
            Box::leak(Box::new([("cache-control", cc)]));
        let (origin, e, _d) = setup(headers, None).await;
        for _ in 0..2 {
            let r = client()
                .get(e.url("/rfc/d"))
                .header("authorization", "Bearer t")
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        }
        let want = if stored { 1 } else { 2 };
        assert_eq!(origin.count("/rfc/d"), want, "{cc}");
    }
}
