//! RFC 9213: a targeted cache-control field (`CDN-Cache-Control` by default, the list is the
//! route's `targeted_fields`) governs the edge instead of `Cache-Control` and `Expires`,
//! and is not forwarded; `Cache-Control` still goes to the client unchanged.

use crate::common::get;
use crate::edge;
use crate::origin::{Origin, Resp};

/// Two GETs; returns (origin requests, headers of the second response).
async fn twice(
    route: &str,
    headers: &'static [(&'static str, &'static str)],
) -> (usize, crate::common::Got) {
    let origin = Origin::start().await;
    origin.on("/rfc/t", move |r| {
        Resp::new(200, headers, format!("v{}", r.n))
    });
    let dir = tempfile::tempdir().unwrap();
    let e = edge(&origin, &dir.path().join("c"), route);
    let first = get(&e.url("/rfc/t"), &[]).await;
    let second = get(&e.url("/rfc/t"), &[]).await;
    assert_eq!((first.status, second.status), (200, 200));
    (origin.count("/rfc/t"), second)
}

#[tokio::test(flavor = "multi_thread")]
async fn cdn_cache_control_governs_the_edge_and_is_not_forwarded() {
    let (n, hit) = twice(
        "",
        &[
            ("cache-control", "no-store"),
            ("cdn-cache-control", "max-age=600"),
        ],
    )
    .await;
    assert_eq!((n, hit.cache_status()), (1, "HIT"));
    assert_eq!(
        hit.header("cache-control"),
        "no-store",
        "for the client, unchanged"
    );
    assert_eq!(hit.header("cdn-cache-control"), "");
    // The other way round: the edge does not store what the targeted field forbids.
    let (n, r) = twice(
        "",
        &[
            ("cache-control", "max-age=600"),
            ("cdn-cache-control", "no-store"),
        ],
    )
    .await;
    assert_eq!(n, 2);
    assert_eq!(r.header("cdn-cache-control"), "");
    // Expires is ignored when a targeted field is present.
    let (n, _) = twice(
        "",
        &[
            ("cdn-cache-control", "public"),
            ("expires", "Wed, 01 Dec 2100 00:00:00 GMT"),
        ],
    )
    .await;
    assert_eq!(n, 2, "no freshness in the targeted field, default_ttl 0");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_targeted_field_list_is_configurable() {
    let both: &'static [(&'static str, &'static str)] = &[
        ("cache-control", "no-store"),
        ("cdn-cache-control", "no-store"),
        ("komora-cache-control", "max-age=600"),
    ];
    let (n, hit) = twice("targeted_fields = [\"Komora-Cache-Control\"]\n", both).await;
    assert_eq!((n, hit.cache_status()), (1, "HIT"));
    assert_eq!(hit.header("komora-cache-control"), "");
    assert_eq!(
        hit.header("cdn-cache-control"),
        "no-store",
        "not ours: forwarded"
    );
    // Off: Cache-Control alone decides, and CDN-Cache-Control passes through.
    let (n, r) = twice(
        "targeted_fields = []\n",
        &[
            ("cache-control", "no-store"),
            ("cdn-cache-control", "max-age=600"),
        ],
    )
    .await;
    assert_eq!(n, 2);
    assert_eq!(r.header("cdn-cache-control"), "max-age=600");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_empty_or_unparsable_targeted_field_is_ignored() {
    // RFC 9213 §2.2: parsed as a Structured Fields Dictionary; empty or a parse error and
    // the field is ignored, so Cache-Control (max-age=600) decides.
    for bad in ["", "Max-Age=0", "max-age=0 seconds", "no-store,,"] {
        let headers: &'static [(&'static str, &'static str)] = Box::leak(Box::new([
            ("cache-control", "max-age=600"),
            ("cdn-cache-control", bad),
        ]));
        let (n, hit) = twice("", headers).await;
        assert_eq!((n, hit.cache_status()), (1, "HIT"), "{bad:?}");
    }
    // The control: a valid one still governs.
    let (n, _) = twice(
        "",
        &[
            ("cache-control", "max-age=600"),
            ("cdn-cache-control", "max-age=0"),
        ],
    )
    .await;
    assert_eq!(n, 2);
}
