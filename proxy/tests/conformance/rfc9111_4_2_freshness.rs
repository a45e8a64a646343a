//! RFC 9111 §4.2: a stored response is fresh while its freshness lifetime exceeds its
//! current age. The age counts the upstream `Age`, the response delay and the apparent age
//! from `Date` (§4.2.3); `Expires` counts from `Date`, not from our clock (§4.2.1); an
//! invalid `Expires` is in the past (§5.3); every response from cache carries `Age` (§5.1).

use crate::common::{get, sha256_hex};
use crate::edge;
use crate::origin::{Origin, Resp};
use std::time::{Duration, SystemTime};

fn http_date(offset_secs: i64) -> String {
    let now = SystemTime::now();
    let t = if offset_secs >= 0 {
        now + Duration::from_secs(offset_secs as u64)
    } else {
        now - Duration::from_secs(offset_secs.unsigned_abs())
    };
    httpdate::fmt_http_date(t)
}

/// Serve `headers` (computed per request) at `path`; returns after two GETs the second
/// response and how many requests reached the origin.
async fn twice(
    headers: impl Fn() -> Vec<(String, String)> + Send + Sync + 'static,
) -> (crate::common::Got, usize) {
    let origin = Origin::start().await;
    origin.on("/rfc/f", move |r| {
        let h = headers();
        let refs: Vec<(&str, &str)> = h.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        Resp::new(200, &refs, format!("v{}", r.n))
    });
    let dir = tempfile::tempdir().unwrap();
    let edge = edge(&origin, &dir.path().join("c"), "");
    let first = get(&edge.url("/rfc/f"), &[]).await;
    assert_eq!((first.status, first.sha()), (200, sha256_hex(b"v1")));
    let second = get(&edge.url("/rfc/f"), &[]).await;
    assert_eq!(second.status, 200);
    let n = origin.count("/rfc/f");
    // A hit repeats the first body; a refetch got the origin's second one.
    let want = if n == 1 { "v1" } else { "v2" };
    assert_eq!(second.sha(), sha256_hex(want.as_bytes()));
    (second, n)
}

fn h(pairs: &[(&str, String)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

fn age(g: &crate::common::Got) -> u64 {
    g.header("age")
        .parse()
        .expect("Age on a response from cache")
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_age_counts_toward_the_current_age() {
    // Age 50 of max-age 100: fresh, and the hit reports at least the upstream's age.
    let (hit, n) = twice(|| {
        h(&[
            ("cache-control", "max-age=100".into()),
            ("age", "50".into()),
        ])
    })
    .await;
    assert_eq!(n, 1);
    assert_eq!(hit.cache_status(), "HIT");
    assert!((50..60).contains(&age(&hit)), "Age {}", age(&hit));
    // Age 150 of max-age 100: stale on arrival, the next request goes to the origin.
    let (_, n) = twice(|| {
        h(&[
            ("cache-control", "max-age=100".into()),
            ("age", "150".into()),
        ])
    })
    .await;
    assert_eq!(n, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_date_in_the_past_is_apparent_age() {
    let (hit, n) = twice(|| {
        h(&[
            ("cache-control", "max-age=100".into()),
            ("date", http_date(-40)),
        ])
    })
    .await;
    assert_eq!(n, 1);
    assert!((40..50).contains(&age(&hit)), "Age {}", age(&hit));
    let (_, n) = twice(|| {
        h(&[
            ("cache-control", "max-age=100".into()),
            ("date", http_date(-200)),
        ])
    })
    .await;
    assert_eq!(n, 2, "200 s old of a 100 s lifetime is stale");
}

#[tokio::test(flavor = "multi_thread")]
async fn expires_counts_from_date_not_from_our_clock() {
    // The origin's clock is an hour ahead; its Expires is 10 s before its own Date. By our
    // clock that Expires is still an hour away, but the lifetime is Expires − Date: none.
    let (_, n) = twice(|| h(&[("date", http_date(3600)), ("expires", http_date(3590))])).await;
    assert_eq!(n, 2);
    // Same skew, Expires 600 s after the origin's Date: fresh, and a future Date is no age.
    let (hit, n) = twice(|| h(&[("date", http_date(3600)), ("expires", http_date(4200))])).await;
    assert_eq!(n, 1);
    assert!(age(&hit) < 10);
}

#[tokio::test(flavor = "multi_thread")]
async fn expires_in_the_past_or_invalid_is_stale() {
    for expires in [http_date(-10), "0".to_string(), "not a date".to_string()] {
        let e = expires.clone();
        let (_, n) = twice(move || h(&[("date", http_date(0)), ("expires", e.clone())])).await;
        assert_eq!(n, 2, "Expires: {expires}");
    }
    // max-age wins over an Expires in the past (§5.3).
    let (hit, n) = twice(|| {
        h(&[
            ("cache-control", "max-age=600".into()),
            ("expires", http_date(-10)),
        ])
    })
    .await;
    assert_eq!((n, hit.cache_status()), (1, "HIT"));
}

#[tokio::test(flavor = "multi_thread")]
async fn every_hit_carries_age_also_range_and_head() {
    let origin = Origin::start().await;
    origin.on("/rfc/a", |_| {
        Resp::new(
            200,
            &[("cache-control", "max-age=600"), ("age", "7")],
            "0123456789",
        )
    });
    let dir = tempfile::tempdir().unwrap();
    let edge = edge(&origin, &dir.path().join("c"), "");
    get(&edge.url("/rfc/a"), &[]).await;
    let hit = get(&edge.url("/rfc/a"), &[]).await;
    assert_eq!((hit.status, hit.cache_status()), (200, "HIT"));
    assert!(age(&hit) >= 7);
    // A Range hit goes through pingora's hit path rather than the direct one.
    let part = get(&edge.url("/rfc/a"), &[("range", "bytes=0-3")]).await;
    assert_eq!((part.status, part.sha()), (206, sha256_hex(b"0123")));
    assert!(age(&part) >= 7);
    let head = crate::common::client()
        .head(edge.url("/rfc/a"))
        .send()
        .await
        .unwrap();
    let head_age: u64 = head.headers()["age"].to_str().unwrap().parse().unwrap();
    assert!(head_age >= 7);
    assert_eq!(origin.count("/rfc/a"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_304_from_the_cache_carries_age() {
    // §4: a stored response used without validation gets Age, the 304 form of it too.
    let origin = Origin::start().await;
    origin.on("/rfc/a304", |_| {
        Resp::new(
            200,
            &[
                ("cache-control", "max-age=600"),
                ("age", "7"),
                ("etag", "\"e\""),
            ],
            "0123456789",
        )
    });
    let dir = tempfile::tempdir().unwrap();
    let edge = edge(&origin, &dir.path().join("c"), "");
    get(&edge.url("/rfc/a304"), &[]).await;
    for extra in [vec![], vec![("range", "bytes=0-1")]] {
        let mut h = vec![("if-none-match", "\"e\"")];
        h.extend(extra);
        let r = get(&edge.url("/rfc/a304"), &h).await;
        assert_eq!((r.status, r.cache_status()), (304, "HIT"), "{h:?}");
        assert!(age(&r) >= 7, "{h:?}: {:?}", r.headers);
    }
    assert_eq!(origin.count("/rfc/a304"), 1);
}
