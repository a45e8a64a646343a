//! RFC 9111 §4.1: a stored response is reused only for requests whose headers named by its
//! `Vary` match; `Vary: *` always fails to match. Variants live side by side (memory and
//! disk), are all removed by a purge or an invalidation of the URL, and survive a restart.

use crate::common::{client, get, sha256_hex, ADMIN_TOKEN};
use crate::edge;
use crate::origin::{Origin, Resp};

/// A URL whose body depends on `Accept-Encoding` and says so in `Vary`.
fn vary_origin(origin: &Origin, path: &str) {
    origin.on(path, |r| {
        let ae = r
            .header("accept-encoding")
            .unwrap_or("identity")
            .to_string();
        Resp::new(
            200,
            &[
                ("cache-control", "max-age=600"),
                ("vary", "Accept-Encoding"),
            ],
            format!("body for {ae}"),
        )
    });
}

fn want(ae: &str) -> String {
    sha256_hex(format!("body for {ae}").as_bytes())
}

async fn fetch(url: &str, ae: Option<&str>) -> crate::common::Got {
    // reqwest adds no Accept-Encoding of its own (no compression features enabled).
    match ae {
        Some(v) => get(url, &[("accept-encoding", v)]).await,
        None => get(url, &[]).await,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn each_accept_encoding_gets_its_own_variant() {
    let origin = Origin::start().await;
    vary_origin(&origin, "/rfc/v");
    let dir = tempfile::tempdir().unwrap();
    let edge = edge(&origin, &dir.path().join("c"), "");
    let url = edge.url("/rfc/v");
    for (i, ae) in [Some("gzip"), Some("br"), None].into_iter().enumerate() {
        let r = fetch(&url, ae).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.sha(), want(ae.unwrap_or("identity")), "{ae:?}");
        assert_eq!(origin.count("/rfc/v"), i + 1, "{ae:?} is a new variant");
    }
    // Every variant is now stored and answered from cache with its own body.
    for _ in 0..2 {
        for ae in [Some("gzip"), Some("br"), None] {
            let r = fetch(&url, ae).await;
            assert_eq!(r.status, 200);
            assert_eq!(r.cache_status(), "HIT", "{ae:?}");
            assert_eq!(r.sha(), want(ae.unwrap_or("identity")), "{ae:?}");
        }
    }
    assert_eq!(origin.count("/rfc/v"), 3);
    // Normalized: whitespace around list members does not make a new variant.
    let a = fetch(&url, Some("gzip, br")).await;
    let b = fetch(&url, Some("gzip,br")).await;
    assert_eq!((a.sha(), b.sha()), (want("gzip, br"), want("gzip, br")));
    assert_eq!(b.cache_status(), "HIT");
    assert_eq!(origin.count("/rfc/v"), 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn vary_star_is_never_stored() {
    let origin = Origin::start().await;
    origin.on("/rfc/star", |r| {
        Resp::new(
            200,
            &[("cache-control", "max-age=600"), ("vary", "*")],
            format!("n={}", r.n),
        )
    });
    let dir = tempfile::tempdir().unwrap();
    let edge = edge(&origin, &dir.path().join("c"), "");
    for n in 1..=3 {
        let r = get(&edge.url("/rfc/star"), &[]).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.sha(), sha256_hex(format!("n={n}").as_bytes()));
        assert_ne!(r.cache_status(), "HIT");
    }
    assert_eq!(origin.count("/rfc/star"), 3);
}

/// Fill the gzip and br variants of `path`; the origin has then seen two requests.
async fn fill_two(origin: &Origin, url: &str, path: &str) {
    for ae in ["gzip", "br"] {
        assert_eq!(fetch(url, Some(ae)).await.sha(), want(ae));
    }
    for ae in ["gzip", "br"] {
        assert_eq!(fetch(url, Some(ae)).await.cache_status(), "HIT");
    }
    assert_eq!(origin.count(path), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn purge_and_invalidation_remove_every_variant() {
    let origin = Origin::start().await;
    vary_origin(&origin, "/rfc/p");
    origin.on("/rfc/p2", |_| Resp::new(204, &[], ""));
    let dir = tempfile::tempdir().unwrap();
    let edge = edge(&origin, &dir.path().join("c"), "");
    let url = edge.url("/rfc/p");
    fill_two(&origin, &url, "/rfc/p").await;

    let purged = client()
        .post(edge.admin_url("/purge?url=/rfc/p"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(purged.status(), 200);
    for ae in ["gzip", "br"] {
        let r = fetch(&url, Some(ae)).await;
        assert_ne!(r.cache_status(), "HIT", "{ae} purged");
        assert_eq!(r.sha(), want(ae));
    }
    assert_eq!(origin.count("/rfc/p"), 4);

    // A successful unsafe request to the URL invalidates both variants too (§4.4).
    for ae in ["gzip", "br"] {
        assert_eq!(fetch(&url, Some(ae)).await.cache_status(), "HIT");
    }
    let posted = client().post(&url).body("x").send().await.unwrap();
    assert_eq!(posted.status(), 200);
    assert_eq!(origin.count("/rfc/p"), 5);
    for ae in ["gzip", "br"] {
        let r = fetch(&url, Some(ae)).await;
        assert_ne!(r.cache_status(), "HIT", "{ae} invalidated");
        assert_eq!(r.sha(), want(ae));
    }
    assert_eq!(origin.count("/rfc/p"), 7);
}

#[tokio::test(flavor = "multi_thread")]
async fn variants_survive_a_restart() {
    let origin = Origin::start().await;
    vary_origin(&origin, "/rfc/r");
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("c");
    let mut e = edge(&origin, &cache, "");
    let url = e.url("/rfc/r");
    fill_two(&origin, &url, "/rfc/r").await;
    e.kill();

    let e = edge(&origin, &cache, "");
    let url = e.url("/rfc/r");
    for ae in ["br", "gzip", "br", "gzip"] {
        let r = fetch(&url, Some(ae)).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.cache_status(), "HIT", "{ae} after restart");
        assert_eq!(r.sha(), want(ae));
    }
    assert_eq!(origin.count("/rfc/r"), 2);
}
