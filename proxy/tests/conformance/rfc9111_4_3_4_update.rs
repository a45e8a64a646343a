//! RFC 9111 §4.3.4 / §3.2: a 304 to a revalidation updates the stored response with every
//! header field it carries (`Cache-Control`, `Expires`, `Date`, others), so the freshness it
//! grants is the one the 304 says.

use crate::common::{get, sha256_hex};
use crate::edge;
use crate::origin::{Origin, Resp};
use std::time::{Duration, SystemTime};

fn date(offset: i64) -> String {
    let now = SystemTime::now();
    httpdate::fmt_http_date(if offset >= 0 {
        now + Duration::from_secs(offset as u64)
    } else {
        now - Duration::from_secs(offset.unsigned_abs())
    })
}

/// The 200 carries `first` (stale on arrival); a conditional request gets a 304 with
/// `update`. Returns the third response (after the 304) and the origin's count.
async fn revalidate(
    first: fn() -> Vec<(&'static str, String)>,
    update: fn() -> Vec<(&'static str, String)>,
) -> (crate::common::Got, crate::common::Got, usize) {
    let origin = Origin::start().await;
    origin.on("/rfc/u", move |r| {
        let mut h = if r.header("if-none-match") == Some("\"u1\"") {
            update()
        } else {
            first()
        };
        h.push(("etag", "\"u1\"".into()));
        let refs: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
        if r.header("if-none-match") == Some("\"u1\"") {
            Resp::new(304, &refs, "")
        } else {
            Resp::new(200, &refs, "original")
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let e = edge(&origin, &dir.path().join("c"), "");
    let url = e.url("/rfc/u");
    assert_eq!(get(&url, &[]).await.sha(), sha256_hex(b"original"));
    let second = get(&url, &[]).await;
    assert_eq!(
        (second.status, second.sha()),
        (200, sha256_hex(b"original"))
    );
    assert_eq!(origin.count("/rfc/u"), 2, "the stale copy was revalidated");
    let third = get(&url, &[]).await;
    assert_eq!((third.status, third.sha()), (200, sha256_hex(b"original")));
    (second, third, origin.count("/rfc/u"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_304_replaces_cache_control_and_other_fields() {
    let (second, third, n) = revalidate(
        || {
            vec![
                ("cache-control", "max-age=0".into()),
                ("x-version", "1".into()),
            ]
        },
        || {
            vec![
                ("cache-control", "max-age=600".into()),
                ("x-version", "2".into()),
            ]
        },
    )
    .await;
    assert_eq!(n, 2, "fresh again after the 304's max-age");
    assert_eq!(third.cache_status(), "HIT");
    assert_eq!(second.header("x-version"), "2");
    assert_eq!(third.header("x-version"), "2");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_304_replaces_expires() {
    let (_, third, n) = revalidate(
        || vec![("date", date(0)), ("expires", date(-5))],
        || vec![("date", date(0)), ("expires", date(600))],
    )
    .await;
    assert_eq!((n, third.cache_status()), (2, "HIT"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_304_replaces_date_so_the_age_restarts() {
    // Stored 1000 s old by its Date (stale for max-age=600); the 304 dates it now.
    let (_, third, n) = revalidate(
        || {
            vec![
                ("cache-control", "max-age=600".into()),
                ("date", date(-1000)),
            ]
        },
        || vec![("cache-control", "max-age=600".into()), ("date", date(0))],
    )
    .await;
    assert_eq!((n, third.cache_status()), (2, "HIT"));
    let age: u64 = third.header("age").parse().unwrap();
    assert!(age < 60, "Age {age} restarted at the validation");
}
