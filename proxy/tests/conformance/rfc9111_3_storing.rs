//! RFC 9111 §3 (storing responses): hop-by-hop fields are not stored or forwarded
//! (§3.1, RFC 9110 §7.6.1); which statuses are stored (§3, route `store_any_status`);
//! heuristic freshness (§4.2.2, route `heuristic_percent`).

use crate::common::{get, sha256_hex};
use crate::edge;
use crate::origin::{Origin, Resp};
use std::time::{Duration, SystemTime};

#[tokio::test(flavor = "multi_thread")]
async fn connection_named_fields_are_neither_stored_nor_forwarded() {
    let origin = Origin::start().await;
    origin.on("/rfc/c", |_| {
        Resp::new(
            200,
            &[
                ("cache-control", "max-age=600"),
                ("connection", "x-hop"),
                ("x-hop", "secret"),
                ("x-end", "kept"),
            ],
            "c",
        )
    });
    let dir = tempfile::tempdir().unwrap();
    let e = edge(&origin, &dir.path().join("c"), "");
    for status in ["MISS", "HIT"] {
        let r = get(&e.url("/rfc/c"), &[]).await;
        assert_eq!(
            (r.status, r.cache_status(), r.sha()),
            (200, status, sha256_hex(b"c"))
        );
        assert_eq!(r.header("x-hop"), "", "{status}");
        assert_eq!(r.header("x-end"), "kept", "{status}");
    }
    assert_eq!(origin.count("/rfc/c"), 1);
}

/// Two GETs of `path` answered with `status` and `cc`; returns the origin's request count.
async fn stored(route: &str, status: u16, headers: Vec<(&'static str, String)>) -> usize {
    let origin = Origin::start().await;
    origin.on("/rfc/s", move |r| {
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        Resp::new(status, &h, format!("v{}", r.n))
    });
    let dir = tempfile::tempdir().unwrap();
    let e = edge(&origin, &dir.path().join("c"), route);
    for n in 1..=2 {
        let r = get(&e.url("/rfc/s"), &[]).await;
        assert_eq!(r.status, status);
        let n = if origin.count("/rfc/s") == 1 { 1 } else { n };
        assert_eq!(r.sha(), sha256_hex(format!("v{n}").as_bytes()));
    }
    origin.count("/rfc/s")
}

#[tokio::test(flavor = "multi_thread")]
async fn explicit_freshness_makes_any_final_status_storable_on_opt_in_routes() {
    let cc = || vec![("cache-control", "max-age=600".to_string())];
    for status in [404, 410, 301, 500, 299] {
        assert_eq!(
            stored("store_any_status = true\n", status, cc()).await,
            1,
            "{status}"
        );
        // Default route: only 200 is stored.
        assert_eq!(stored("", status, cc()).await, 2, "{status}");
    }
    // Without explicit freshness a 404 is not stored, even on an opt-in route.
    assert_eq!(stored("store_any_status = true\n", 404, vec![]).await, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn heuristic_freshness_is_a_route_option() {
    let now = SystemTime::now();
    let lm = || {
        vec![
            ("date", httpdate::fmt_http_date(SystemTime::now())),
            (
                "last-modified",
                httpdate::fmt_http_date(now - Duration::from_secs(100_000)),
            ),
        ]
    };
    // 10 % of 100000 s: fresh for about 10000 s.
    assert_eq!(stored("heuristic_percent = 10\n", 200, lm()).await, 1);
    assert_eq!(stored("heuristic_percent = 10\n", 404, lm()).await, 1);
    // Not heuristically cacheable: no heuristic.
    assert_eq!(stored("heuristic_percent = 10\n", 302, lm()).await, 2);
    // Off by default: the route's default_ttl (0 here) applies.
    assert_eq!(stored("", 200, lm()).await, 2);
    // Capped: a 0 s cap leaves nothing fresh.
    assert_eq!(
        stored(
            "heuristic_percent = 10\nheuristic_max_secs = 0\n",
            200,
            lm()
        )
        .await,
        2
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn interim_responses_are_not_cached() {
    let origin = Origin::start().await;
    origin.on("/rfc/i1", |r| {
        Resp::new(
            200,
            &[("cache-control", "max-age=600")],
            format!("v{}", r.n),
        )
        .after_early_hints("</style.css>; rel=preload")
    });
    let dir = tempfile::tempdir().unwrap();
    let e = edge(&origin, &dir.path().join("c"), "");
    for status in ["MISS", "HIT", "HIT"] {
        let r = get(&e.url("/rfc/i1"), &[]).await;
        // The final 200 is what is stored and served, never the 103.
        assert_eq!(
            (r.status, r.cache_status(), r.sha()),
            (200, status, sha256_hex(b"v1"))
        );
    }
    assert_eq!(origin.count("/rfc/i1"), 1);
}
