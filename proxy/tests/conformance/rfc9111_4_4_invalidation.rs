//! RFC 9111 §4.4: a non-error response to an unsafe request invalidates the target URI and
//! the same-origin URIs in its `Location` and `Content-Location`; URIs of another origin are
//! left alone, and an error response invalidates nothing.

use crate::common::{client, get, sha256_hex};
use crate::edge;
use crate::origin::{Origin, Resp};

fn cached(origin: &Origin, path: &'static str) {
    origin.on(path, move |r| {
        Resp::new(
            200,
            &[("cache-control", "max-age=600")],
            format!("{path} {}", r.n),
        )
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn location_and_content_location_on_the_same_origin_are_invalidated() {
    let origin = Origin::start().await;
    for p in ["/rfc/i/new", "/rfc/i/cl", "/rfc/i/other"] {
        cached(&origin, p);
    }
    let dir = tempfile::tempdir().unwrap();
    let e = edge(&origin, &dir.path().join("c"), "");
    let host = e.addr.to_string();
    let cl = format!("http://{host}/rfc/i/cl");
    origin.on("/rfc/i/form", move |r| {
        let status = if r.n == 1 { 500 } else { 201 };
        Resp::new(
            status,
            &[("location", "new"), ("content-location", cl.as_str())],
            "",
        )
    });
    let fill = || async {
        for p in ["/rfc/i/new", "/rfc/i/cl", "/rfc/i/other"] {
            get(&e.url(p), &[]).await;
        }
    };
    fill().await;
    let post = || async {
        client()
            .post(e.url("/rfc/i/form"))
            .body("x")
            .send()
            .await
            .unwrap()
    };
    // A failed unsafe request invalidates nothing.
    assert_eq!(post().await.status(), 500);
    for p in ["/rfc/i/new", "/rfc/i/cl", "/rfc/i/other"] {
        let r = get(&e.url(p), &[]).await;
        assert_eq!(
            (r.cache_status(), r.sha()),
            ("HIT", sha256_hex(format!("{p} 1").as_bytes()))
        );
    }
    // A successful one invalidates its Location (relative) and Content-Location (absolute,
    // our own host), nothing else.
    assert_eq!(post().await.status(), 201);
    for (p, n) in [("/rfc/i/new", 2), ("/rfc/i/cl", 2), ("/rfc/i/other", 1)] {
        let r = get(&e.url(p), &[]).await;
        assert_eq!(r.sha(), sha256_hex(format!("{p} {n}").as_bytes()), "{p}");
        assert_eq!(origin.count(p), n, "{p}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn another_origins_location_is_not_invalidated() {
    let origin = Origin::start().await;
    cached(&origin, "/rfc/i/keep");
    origin.on("/rfc/i/post", |_| {
        Resp::new(
            303,
            &[
                ("location", "http://other.example/rfc/i/keep"),
                ("content-location", "//other.example/rfc/i/keep"),
            ],
            "",
        )
    });
    let dir = tempfile::tempdir().unwrap();
    let e = edge(&origin, &dir.path().join("c"), "");
    get(&e.url("/rfc/i/keep"), &[]).await;
    let c = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = c.post(e.url("/rfc/i/post")).body("x").send().await.unwrap();
    assert_eq!(r.status(), 303);
    let r = get(&e.url("/rfc/i/keep"), &[]).await;
    assert_eq!((r.cache_status(), origin.count("/rfc/i/keep")), ("HIT", 1));
}

#[tokio::test(flavor = "multi_thread")]
async fn methods_of_unknown_safety_invalidate_and_safe_ones_do_not() {
    let origin = Origin::start().await;
    origin.on("/rfc/i/x", |r| {
        if r.method == "GET" {
            Resp::new(
                200,
                &[("cache-control", "max-age=600")],
                format!("x {}", r.n),
            )
        } else {
            Resp::new(204, &[], "")
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let e = edge(&origin, &dir.path().join("c"), "");
    let url = e.url("/rfc/i/x");
    let send = |m: &'static str| {
        let url = url.clone();
        async move {
            let m = reqwest::Method::from_bytes(m.as_bytes()).unwrap();
            client().request(m, url).send().await.unwrap().status()
        }
    };
    assert_eq!(get(&url, &[]).await.sha(), sha256_hex(b"x 1"));
    // A safe method does not invalidate (OPTIONS is not cached, so it reaches the origin).
    assert_eq!(send("OPTIONS").await, 204);
    let r = get(&url, &[]).await;
    assert_eq!((r.cache_status(), r.sha()), ("HIT", sha256_hex(b"x 1")));
    // An extension method the edge knows nothing about does (RFC 9111 §4.4).
    assert_eq!(send("FROB").await, 204);
    let r = get(&url, &[]).await;
    assert_eq!((r.cache_status(), r.sha()), ("MISS", sha256_hex(b"x 4")));
    assert_eq!(
        origin.methods("/rfc/i/x"),
        ["GET", "OPTIONS", "FROB", "GET"]
    );
}
