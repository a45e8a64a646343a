//! Disk tier through the edge: restart survival, integrity, byte budget, streaming of large
//! objects, purge, metrics.

use crate::common::*;
use std::time::Duration;

const ADMIN_CFG: &str = "[admin]\ntoken_env = \"KOMORA_ADMIN_TOKEN\"\n";

#[tokio::test(flavor = "multi_thread")]
async fn restart_keeps_hits_without_origin_requests() {
    let origin = Origin::start().await;
    let small = origin.put_media("/media/small", body_of(10_000, 21));
    let large = origin.put_media("/media/large", body_of(3 << 20, 22));
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("c");
    let mut edge = spawn_edge(origin.addr, &cache, None);
    get(&edge.url("/media/small"), &[]).await;
    get(&edge.url("/media/large"), &[]).await;
    assert_eq!(origin.requests(), 2);
    edge.kill();

    let edge = spawn_edge(origin.addr, &cache, None);
    for (p, sha) in [("/media/small", &small), ("/media/large", &large)] {
        let r = get(&edge.url(p), &[]).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.cache_status(), "HIT", "{p}");
        assert_eq!(&r.sha(), sha, "{p}");
    }
    assert_eq!(origin.requests(), 2);
}

fn flip_last_byte(path: &std::path::Path) {
    let mut b = std::fs::read(path).unwrap();
    let n = b.len() - 1;
    b[n] ^= 0xff;
    std::fs::write(path, b).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn flipped_byte_is_never_served() {
    let origin = Origin::start().await;
    let small = origin.put_media("/media/f1", body_of(20_000, 23));
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("c");
    let mut edge = spawn_edge(origin.addr, &cache, Some(ADMIN_CFG));
    get(&edge.url("/media/f1"), &[]).await;
    edge.kill();
    let files = entry_files(&cache);
    assert_eq!(files.len(), 1);
    flip_last_byte(&files[0]);

    let edge = spawn_edge(origin.addr, &cache, Some(ADMIN_CFG));
    let r = get(&edge.url("/media/f1"), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.cache_status(), "MISS");
    assert_eq!(r.sha(), small);
    assert_eq!(origin.requests_for("/media/f1"), 2);
    assert_eq!(
        metric(&edge, "komora_edge_integrity_failures_total", "").await,
        1.0
    );
    // refilled entry is good again
    let r = get(&edge.url("/media/f1"), &[]).await;
    assert_eq!(r.cache_status(), "HIT");
    assert_eq!(r.sha(), small);
}

#[tokio::test(flavor = "multi_thread")]
async fn flipped_byte_in_large_streamed_entry_is_never_served() {
    let origin = Origin::start().await;
    let sha = origin.put_media("/media/f2", body_of(2 << 20, 24));
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("c");
    let mut edge = spawn_edge(origin.addr, &cache, None);
    get(&edge.url("/media/f2"), &[]).await;
    edge.kill();
    let files = entry_files(&cache);
    flip_last_byte(&files[0]);
    let edge = spawn_edge(origin.addr, &cache, None);
    let r = get(&edge.url("/media/f2"), &[]).await;
    assert_eq!(r.cache_status(), "MISS");
    assert_eq!(r.sha(), sha);
    assert_eq!(origin.requests_for("/media/f2"), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn disk_budget_holds_under_burst_of_ten_times_its_size() {
    let origin = Origin::start().await;
    const BUDGET: u64 = 1 << 20;
    let n = 100;
    let size = (10 * BUDGET as usize) / n;
    for i in 0..n {
        origin.put_media(&format!("/media/b{i}"), body_of(size, i as u8));
    }
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("c");
    let cfg = format!("{ADMIN_CFG}[cache.disk]\nmax_capacity = {BUDGET}\n");
    let edge = spawn_edge(origin.addr, &cache, Some(&cfg));
    let mut tasks = Vec::new();
    for i in 0..n {
        let url = edge.url(&format!("/media/b{i}"));
        tasks.push(tokio::spawn(async move { get(&url, &[]).await.status }));
        if i % 10 == 9 {
            for t in tasks.drain(..) {
                assert_eq!(t.await.unwrap(), 200);
            }
            let used = dir_bytes(&cache);
            assert!(used <= BUDGET, "disk use {used} > budget {BUDGET}");
        }
    }
    let used = dir_bytes(&cache);
    assert!(used <= BUDGET && used > BUDGET / 2, "disk use {used}");
    assert!(metric(&edge, "komora_edge_evictions_total", "disk").await >= 80.0);
}

fn vm_hwm_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn large_object_streams_with_bounded_rss() {
    let origin = Origin::start().await;
    let body = body_of(64 << 20, 31);
    let sha = origin.put_media("/media/huge", body);
    let dir = tempfile::tempdir().unwrap();
    let edge = spawn_edge(origin.addr, &dir.path().join("c"), None);
    let before = vm_hwm_kib(edge.pid());
    let r1 = get(&edge.url("/media/huge"), &[]).await;
    assert_eq!(r1.cache_status(), "MISS");
    assert_eq!(r1.sha(), sha);
    drop(r1);
    let r2 = get(&edge.url("/media/huge"), &[]).await;
    assert_eq!(r2.cache_status(), "HIT");
    assert_eq!(r2.sha(), sha);
    let peak = vm_hwm_kib(edge.pid());
    // the object is 64 MiB; the edge's peak RSS must grow by well under that
    const BOUND_KIB: u64 = 40 * 1024;
    eprintln!("edge VmHWM before {before} KiB, after 64 MiB miss + hit {peak} KiB");
    assert!(
        peak.saturating_sub(before) < BOUND_KIB,
        "edge peak RSS grew by {} KiB (before {before} KiB, peak {peak} KiB)",
        peak - before
    );
    assert_eq!(origin.requests_for("/media/huge"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn purge_by_url_and_prefix() {
    let origin = Origin::start().await;
    for p in ["/media/x/1", "/media/x/2", "/media/y/1"] {
        origin.put_media(p, body_of(1000, 41));
    }
    let dir = tempfile::tempdir().unwrap();
    let edge = spawn_edge(origin.addr, &dir.path().join("c"), Some(ADMIN_CFG));
    for p in ["/media/x/1", "/media/x/2", "/media/y/1"] {
        get(&edge.url(p), &[]).await;
        assert_eq!(get(&edge.url(p), &[]).await.cache_status(), "HIT");
    }
    let c = client();
    // no token → refused
    let r = c
        .post(edge.admin_url("/purge?url=/media/y/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let r = c
        .post(edge.admin_url("/purge?url=/media/y/1"))
        .header("authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.text().await.unwrap(), r#"{"purged":1}"#);
    assert_eq!(
        get(&edge.url("/media/y/1"), &[]).await.cache_status(),
        "MISS"
    );

    let r = c
        .post(edge.admin_url("/purge?prefix=/media/x/"))
        .header("authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), r#"{"purged":2}"#);
    assert_eq!(
        get(&edge.url("/media/x/1"), &[]).await.cache_status(),
        "MISS"
    );
    assert_eq!(
        get(&edge.url("/media/x/2"), &[]).await.cache_status(),
        "MISS"
    );
    assert_eq!(
        get(&edge.url("/media/y/1"), &[]).await.cache_status(),
        "HIT"
    );
    assert_eq!(origin.requests(), 6);
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_requests_and_bytes_by_tier() {
    let origin = Origin::start().await;
    origin.put_media("/media/m", body_of(1000, 51));
    let dir = tempfile::tempdir().unwrap();
    let edge = spawn_edge(origin.addr, &dir.path().join("c"), Some(ADMIN_CFG));
    get(&edge.url("/media/m"), &[]).await;
    get(&edge.url("/media/m"), &[]).await;
    get(&edge.url("/api/z"), &[]).await;
    // logging runs after the response is written; poll briefly
    let mut ok = false;
    for _ in 0..50 {
        if metric(&edge, "komora_edge_requests_total", "HIT").await == 1.0
            && metric(&edge, "komora_edge_requests_total", "MISS").await == 1.0
            && metric(&edge, "komora_edge_requests_total", "BYPASS").await == 1.0
        {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ok);
    assert_eq!(
        metric(&edge, "komora_edge_bytes_served_total", "memory").await,
        1000.0
    );
    assert_eq!(
        metric(&edge, "komora_edge_cache_entries", "disk").await,
        1.0
    );
    assert!(metric(&edge, "komora_edge_origin_latency_seconds_count", "").await >= 2.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn index_rebuilt_after_restart_enforces_a_smaller_budget() {
    let origin = Origin::start().await;
    for i in 0..8 {
        origin.put_media(&format!("/media/r{i}"), body_of(100_000, 70 + i));
    }
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("c");
    let mut edge = spawn_edge(origin.addr, &cache, None);
    for i in 0..8 {
        get(&edge.url(&format!("/media/r{i}")), &[]).await;
    }
    edge.kill();
    assert!(dir_bytes(&cache) > 800_000);
    // restart with a quarter of the space: the background rebuild indexes every entry and
    // evicts down to the new budget without any request
    let edge = spawn_edge(
        origin.addr,
        &cache,
        Some("[cache.disk]\nmax_capacity = 262144\n"),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while dir_bytes(&cache) > 262_144 {
        assert!(
            std::time::Instant::now() < deadline,
            "disk use {} after rebuild",
            dir_bytes(&cache)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        metric(&edge, "komora_edge_cache_entries", "disk").await,
        2.0
    );
    assert_eq!(origin.requests(), 8);
}

/// Purging a URL removes every `Vary` variant of it from memory and from disk (the tiers
/// find them through their URL indexes), and a restart does not bring any of them back.
#[tokio::test(flavor = "multi_thread")]
async fn purge_by_url_removes_every_variant_in_both_tiers_for_good() {
    let origin = Origin::start().await;
    origin.put(
        "/media/v",
        body_of(3000, 61),
        &[
            ("cache-control", "public, max-age=600"),
            ("vary", "Accept-Encoding"),
        ],
    );
    let other = origin.put_media("/media/other", body_of(3000, 62));
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("c");
    let mut edge = spawn_edge(origin.addr, &cache, Some(ADMIN_CFG));
    let encodings = ["gzip", "br", "identity"];
    for ae in encodings {
        get(&edge.url("/media/v"), &[("accept-encoding", ae)]).await;
    }
    get(&edge.url("/media/other"), &[]).await;
    for ae in encodings {
        let r = get(&edge.url("/media/v"), &[("accept-encoding", ae)]).await;
        assert_eq!(r.cache_status(), "HIT", "{ae}");
    }
    assert_eq!(origin.requests_for("/media/v"), 3, "one variant each");
    assert_eq!(entry_files(&cache).len(), 4);

    let r = client()
        .post(edge.admin_url("/purge?url=/media/v"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.text().await.unwrap(), r#"{"purged":1}"#);
    // Every variant left both tiers; the other URL is untouched.
    assert_eq!(
        metric(&edge, "komora_edge_purges_total", "memory").await,
        3.0
    );
    assert_eq!(metric(&edge, "komora_edge_purges_total", "disk").await, 3.0);
    assert_eq!(
        metric(&edge, "komora_edge_cache_entries", "memory").await,
        1.0
    );
    assert_eq!(entry_files(&cache).len(), 1);
    edge.kill();

    let edge = spawn_edge(origin.addr, &cache, Some(ADMIN_CFG));
    for ae in encodings {
        let r = get(&edge.url("/media/v"), &[("accept-encoding", ae)]).await;
        assert_eq!(r.cache_status(), "MISS", "{ae} after restart");
    }
    assert_eq!(origin.requests_for("/media/v"), 6);
    let r = get(&edge.url("/media/other"), &[]).await;
    assert_eq!((r.cache_status(), r.sha()), ("HIT", other));
    assert_eq!(origin.requests_for("/media/other"), 1);
}

/// A purge by URL names the object the way a request does: the URL is reduced to its cache
/// key by the route's `cache_key_query` (`/media/` keys on the path alone), so purging
/// `/media/q` drops what `/media/q?cb=1` cached, and the other way round.
#[tokio::test(flavor = "multi_thread")]
async fn purge_by_url_reduces_the_url_to_its_cache_key() {
    let origin = Origin::start().await;
    // The test origin looks objects up by path and query as received; the edge forwards
    // the request's own URL (its key is what drops the query).
    origin.put_media("/media/q?cb=1", body_of(1000, 63));
    origin.put_media("/media/r", body_of(1000, 64));
    let dir = tempfile::tempdir().unwrap();
    let edge = spawn_edge(origin.addr, &dir.path().join("c"), Some(ADMIN_CFG));
    let purge = |target: &'static str| {
        let url = edge.admin_url(&format!("/purge?url={target}"));
        async move {
            let r = client()
                .post(url)
                .bearer_auth(ADMIN_TOKEN)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 200);
            r.text().await.unwrap()
        }
    };

    // Cached with a query, purged without it.
    let r = get(&edge.url("/media/q?cb=1"), &[]).await;
    assert_eq!(r.cache_status(), "MISS");
    assert_eq!(get(&edge.url("/media/q"), &[]).await.cache_status(), "HIT");
    assert_eq!(origin.requests(), 1);
    assert_eq!(purge("/media/q").await, r#"{"purged":1}"#);
    let r = get(&edge.url("/media/q?cb=1"), &[]).await;
    assert_eq!(r.cache_status(), "MISS");
    assert_eq!(origin.requests(), 2);

    // Cached without a query, purged with one (percent-encoded, as a client would send it).
    assert_eq!(get(&edge.url("/media/r"), &[]).await.cache_status(), "MISS");
    let r = get(&edge.url("/media/r?cb=2"), &[]).await;
    assert_eq!(r.cache_status(), "HIT");
    assert_eq!(origin.requests(), 3);
    assert_eq!(purge("/media/r%3Fcb%3D1").await, r#"{"purged":1}"#);
    assert_eq!(get(&edge.url("/media/r"), &[]).await.cache_status(), "MISS");
    assert_eq!(origin.requests(), 4);
}

/// The test clock hook exists only when the edge was started with it: without the
/// variable `POST /clock/advance` is an unknown path; with it, it needs the admin token.
#[tokio::test(flavor = "multi_thread")]
async fn clock_hook_only_with_its_variable_and_the_token() {
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let c = client();
    let edge = spawn_edge(origin.addr, &dir.path().join("a"), Some(ADMIN_CFG));
    let r = c
        .post(edge.admin_url("/clock/advance?ms=1000"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);

    let edge = spawn_edge_clocked(origin.addr, &dir.path().join("b"), Some(ADMIN_CFG));
    let url = edge.admin_url("/clock/advance?ms=1000");
    assert_eq!(c.post(&url).send().await.unwrap().status().as_u16(), 401);
    let bad = edge.admin_url("/clock/advance?ms=soon");
    let r = c.post(bad).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let answer = edge.advance_clock(Duration::from_millis(1000)).await;
    assert_eq!(answer, r#"{"advanced_ms":1000,"memory":0,"disk":0}"#);
}
