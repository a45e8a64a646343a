//! Error mapping: the client's mistakes are 4xx naming the parameter, a busy or lost
//! database is 503 with `Retry-After` — never 500 — and upload types come from the bytes.

use serde_json::{json, Value};

use crate::both_backends;
use crate::common::{count, fixture, spawn_app, TestDb};

both_backends!(search_text_the_index_cannot_take_is_400_naming_q, |t| {
    fixture(&t.db, 2, 0).await;
    let app = spawn_app(&t).await;
    for q in ["ab%00cd", "%00%00%00", "abc%0Adef", "kow%07al"] {
        let r = app.get(&format!("/api/clients?q={q}")).await;
        assert_eq!(r.status(), 400, "{q}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["parameter"], "q", "{q}");
    }
    // FTS operators and quotes are still literal text, not errors.
    for q in [
        "a%22b%22c",
        "NEAR(abc)",
        "abc*",
        "%22%22%22%22",
        "a%27b%27c",
    ] {
        let r = app.get(&format!("/api/clients?q={q}")).await;
        assert_eq!(r.status(), 200, "{q}");
    }
});

/// Holds SQLite's write lock from another connection, as a long write would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_locked_write_is_503_with_retry_after_and_writes_nothing() {
    use sqlx::Connection;
    let t = TestDb::new(komora_origin::db::Backend::Sqlite)
        .await
        .unwrap();
    let f = fixture(&t.db, 1, 1).await;
    let app = spawn_app(&t).await;
    let mut locker = sqlx::AnyConnection::connect(&t.url).await.unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut locker)
        .await
        .unwrap();
    let before = count(&t.db, "SELECT count(*) FROM messages").await;
    let conv = f.conversations[0];
    let r = app
        .post_json(
            &format!("/api/conversations/{conv}/messages"),
            json!({"text": "hello"}),
        )
        .await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    let body: Value = r.json().await.unwrap();
    assert!(body["error"].is_string());
    let r = app
        .post_json(&format!("/api/conversations/{conv}/read"), json!({}))
        .await;
    assert_eq!(r.status(), 503);
    sqlx::query("ROLLBACK").execute(&mut locker).await.unwrap();
    assert_eq!(count(&t.db, "SELECT count(*) FROM messages").await, before);
    // Once the lock is gone the same request succeeds.
    let r = app
        .post_json(
            &format!("/api/conversations/{conv}/messages"),
            json!({"text": "hello"}),
        )
        .await;
    assert_eq!(r.status(), 201);
}

/// A PostgreSQL restart as the pool sees it: every connection of the test's database is
/// terminated by the server. The next requests get fresh connections, not 500s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_terminated_connections_are_replaced_not_500() {
    use sqlx::Connection;
    let Some(t) = TestDb::new(komora_origin::db::Backend::Postgres).await else {
        return;
    };
    let f = fixture(&t.db, 3, 2).await;
    let app = spawn_app(&t).await;
    // Warm the pool with several connections.
    let warm: Vec<_> = (0..4).map(|_| app.get("/api/inbox")).collect();
    for r in futures::future::join_all(warm).await {
        assert_eq!(r.status(), 200);
    }
    let name = t.url.rsplit('/').next().unwrap().to_string();
    let mut admin = sqlx::AnyConnection::connect(&crate::common::pg_admin_url())
        .await
        .unwrap();
    let killed: i64 = {
        use sqlx::Row;
        sqlx::query(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = $1 AND pid <> pg_backend_pid()",
        )
        .bind(&name)
        .fetch_one(&mut admin)
        .await
        .unwrap()
        .get(0)
    };
    assert!(killed >= 1, "the pool's connections were terminated");
    let conv = f.conversations[0];
    for path in [
        "/api/inbox".to_string(),
        format!("/api/conversations/{conv}/messages"),
        "/api/clients?q=kowal".to_string(),
    ] {
        let r = app.get(&path).await;
        assert_eq!(r.status(), 200, "{path} after the backends were terminated");
    }
    let r = app
        .post_json(
            &format!("/api/conversations/{conv}/messages"),
            json!({"text": "after restart"}),
        )
        .await;
    assert_eq!(r.status(), 201);
}

/// PostgreSQL unreachable (nothing listens): 503 with `Retry-After`, not 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_unreachable_is_503() {
    use komora_origin::db::{Backend, Db};
    let Some(t) = TestDb::new(Backend::Postgres).await else {
        return;
    };
    let app = spawn_app(&t).await;
    // The same app state over a pool whose server has gone away.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    sqlx::any::install_default_drivers();
    let pool = sqlx::any::AnyPoolOptions::new()
        .acquire_timeout(std::time::Duration::from_millis(300))
        .connect_lazy(&format!("postgres://postgres@127.0.0.1:{port}/gone"))
        .unwrap();
    let mut state = app.state.clone();
    state.db = Db {
        pool,
        backend: Backend::Postgres,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        komora_origin::app::App::from_state(state, listener).run_until(std::future::pending()),
    );
    let r = app
        .client
        .get(format!("http://{addr}/api/inbox"))
        .bearer_auth(&app.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    let body: Value = r.json().await.unwrap();
    assert!(body["error"].is_string());
}

both_backends!(upload_types_are_sniffed_from_the_bytes, |t| {
    let app = spawn_app(&t).await;
    let stored = |v: &Value| v["content_type"].as_str().unwrap().to_string();
    // Random bytes claimed as an image are not believed: a download.
    let noise: Vec<u8> = (0..5000u32).map(|i| (i * 7919 % 251) as u8).collect();
    let up: Value = app.upload(noise, "image/jpeg").await.json().await.unwrap();
    assert_eq!(stored(&up), "application/octet-stream");
    let r = app
        .client
        .get(format!("{}{}", app.base, up["url"].as_str().unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], "application/octet-stream");
    assert_eq!(r.headers()["content-disposition"], "attachment");
    // HTML and SVG sent as images are what they are, and get the script protections.
    for (bytes, claimed, sniffed) in [
        (
            &b"<!DOCTYPE html><html><script>alert(1)</script>"[..],
            "image/png",
            "text/html",
        ),
        (
            &b"<?xml version=\"1.0\"?><svg onload=\"alert(1)\"/>"[..],
            "image/gif",
            "text/xml",
        ),
    ] {
        let up: Value = app
            .upload(bytes.to_vec(), claimed)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(stored(&up), sniffed, "{claimed}");
        let r = app
            .client
            .get(format!("{}{}", app.base, up["url"].as_str().unwrap()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()["content-type"], sniffed);
        assert_eq!(r.headers()["content-disposition"], "attachment");
        assert_eq!(r.headers()["content-security-policy"], "sandbox");
    }
    // A real JPEG claimed as a PNG (or untyped) is a JPEG.
    let jpeg = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00rest".to_vec();
    let up: Value = app.upload(jpeg, "image/png").await.json().await.unwrap();
    assert_eq!(stored(&up), "image/jpeg");
    let pdf = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3 contract".to_vec();
    let r = app
        .client
        .post(format!("{}/api/media", app.base))
        .bearer_auth(&app.admin_key)
        .body(pdf)
        .send()
        .await
        .unwrap();
    let up: Value = r.json().await.unwrap();
    assert_eq!(stored(&up), "application/pdf");
    // Plain text stays plain text; binary claimed as text does not.
    let up: Value = app
        .upload(b"Dzien dobry".to_vec(), "text/plain")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(stored(&up), "text/plain");
    let up: Value = app
        .upload(vec![0xff, 0xfe, 0x00, 0x80, 0x81], "text/plain")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(stored(&up), "application/octet-stream");
});

// One bad request per endpoint family: each answers the one error shape,
// `{"error": "<message>", "code": "<code>"}` (plus `parameter` when one is at fault),
// never cacheable.
both_backends!(every_endpoint_family_answers_the_one_error_shape, |t| {
    let app = crate::common::spawn_app_with(&t, |raw| raw.media.max_upload_bytes = 4, None).await;
    let http = &app.client;
    let public = |p: &str| format!("{}{p}", app.base);
    let internal = |p: &str| format!("{}{p}", app.internal);
    let cases = [
        // API: a bad parameter, an unknown route, a missing key.
        (
            "api parameter",
            http.get(public("/api/inbox?limit=x"))
                .bearer_auth(&app.admin_key),
            400,
            "bad_request",
        ),
        (
            "api route",
            http.get(public("/api/nope")).bearer_auth(&app.admin_key),
            404,
            "not_found",
        ),
        ("auth", http.get(public("/api/inbox")), 401, "unauthorized"),
        // Media: not a sha256.
        (
            "media",
            http.get(public("/media/not-a-hash")),
            400,
            "bad_request",
        ),
        (
            "upload",
            http.post(public("/api/media?filename=f.bin"))
                .bearer_auth(&app.admin_key)
                .body(vec![0u8; 16]),
            413,
            "payload_too_large",
        ),
        // Webhooks: a platform the config does not have.
        (
            "webhook",
            http.post(public("/webhooks/nowhere")).body("{}"),
            404,
            "unknown_platform",
        ),
        // Admin API: no key, and a path it does not have.
        (
            "admin auth",
            http.get(internal("/admin/queues")),
            401,
            "unauthorized",
        ),
        (
            "admin route",
            http.get(internal("/admin/nope"))
                .bearer_auth(&app.admin_key),
            404,
            "not_found",
        ),
        (
            "internal on public",
            http.get(public("/admin/queues")),
            404,
            "not_found",
        ),
    ];
    for (family, req, status, code) in cases {
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), status, "{family}");
        assert_eq!(
            r.headers()["cache-control"],
            "private, no-store",
            "{family}"
        );
        let body: Value = r.json().await.unwrap();
        let obj = body.as_object().unwrap();
        assert!(
            body["error"].as_str().is_some_and(|m| !m.is_empty()),
            "{family}: {body}"
        );
        assert_eq!(body["code"], code, "{family}: {body}");
        assert!(
            obj.keys()
                .all(|k| ["error", "code", "parameter"].contains(&k.as_str())),
            "{family}: {body}"
        );
    }
});
