//! Media: upload (streamed, deduplicated, size-limited) and serving (ETag, 304, ranges,
//! safe headers), through the local store and through a real S3-compatible server (moto).

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::both_backends;
use crate::common::{count, spawn_app, spawn_app_with, TestApp};

async fn upload_ok(app: &TestApp, bytes: &[u8], ctype: &str) -> Value {
    let resp = app.upload(bytes.to_vec(), ctype).await;
    assert!(
        resp.status() == 201 || resp.status() == 200,
        "{}",
        resp.status()
    );
    assert_eq!(resp.headers()["cache-control"], "private, no-store");
    resp.json().await.unwrap()
}

/// The whole serve contract against whatever store `app` uses.
async fn check_serving(app: &TestApp) {
    let mut bytes: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    // The stored type is sniffed from the bytes: start like a PNG.
    bytes[..8].copy_from_slice(b"\x89PNG\r\n\x1a\n");
    let sha = hex::encode(Sha256::digest(&bytes));
    let first = app.upload(bytes.clone(), "image/png").await;
    assert_eq!(first.status(), 201);
    let up: Value = first.json().await.unwrap();
    assert_eq!(up["sha256"], sha);
    assert_eq!(up["size"], 100_000);
    assert_eq!(up["url"], format!("/media/{sha}"));
    assert_eq!(up["created"], true);
    // Same bytes again: same row, not stored twice.
    let again = app.upload(bytes.clone(), "image/png").await;
    assert_eq!(again.status(), 200);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["id"], up["id"]);
    assert_eq!(again["created"], false);

    let url = format!("{}/media/{sha}", app.base);
    let get = app.client.get(&url).send().await.unwrap();
    assert_eq!(get.status(), 200);
    let h = get.headers().clone();
    assert_eq!(h["etag"], format!("\"{sha}\""));
    assert_eq!(h["cache-control"], "public, max-age=604800, immutable");
    assert_eq!(h["content-type"], "image/png");
    assert_eq!(h["content-length"], "100000");
    assert_eq!(h["accept-ranges"], "bytes");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert!(h.contains_key("last-modified"));
    assert!(!h.contains_key("content-disposition"));
    assert_eq!(get.bytes().await.unwrap().as_ref(), bytes.as_slice());

    let head = app.client.head(&url).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-length"], "100000");
    assert_eq!(head.headers()["etag"], format!("\"{sha}\""));

    for inm in [
        format!("\"{sha}\""),
        "*".to_string(),
        format!("\"x\", W/\"{sha}\""),
    ] {
        let r = app
            .client
            .get(&url)
            .header("if-none-match", inm.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 304, "{inm}");
        assert_eq!(r.headers()["etag"], format!("\"{sha}\""));
    }
    let other = app
        .client
        .get(&url)
        .header("if-none-match", "\"other\"")
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 200);

    for (range, start, end) in [
        ("bytes=0-9", 0usize, 9usize),
        ("bytes=99990-", 99_990, 99_999),
        ("bytes=-5", 99_995, 99_999),
        ("bytes=50000-50000", 50_000, 50_000),
        ("bytes=99000-200000", 99_000, 99_999),
    ] {
        let r = app
            .client
            .get(&url)
            .header("range", range)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 206, "{range}");
        assert_eq!(
            r.headers()["content-range"],
            format!("bytes {start}-{end}/100000"),
            "{range}"
        );
        assert_eq!(r.headers()["content-length"], (end - start + 1).to_string());
        assert_eq!(
            r.bytes().await.unwrap().as_ref(),
            &bytes[start..=end],
            "{range}"
        );
    }
    for range in ["bytes=100000-", "bytes=200000-300000", "bytes=-0"] {
        let r = app
            .client
            .get(&url)
            .header("range", range)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 416, "{range}");
        assert_eq!(r.headers()["content-range"], "bytes */100000");
    }
    // Several ranges or nonsense: the whole content.
    for range in ["bytes=0-1,5-6", "lines=1-2", "bytes=x-y", "bytes=9-1"] {
        let r = app
            .client
            .get(&url)
            .header("range", range)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{range}");
    }
}

both_backends!(media_upload_and_serve_local, |t| {
    let app = spawn_app(&t).await;
    check_serving(&app).await;
});

both_backends!(media_types_that_could_run_are_downloads, |t| {
    let app = spawn_app(&t).await;
    for (i, ctype) in [
        "text/html",
        "image/svg+xml",
        "application/xml",
        "text/xml",
        "application/javascript",
        "text/javascript",
        "application/octet-stream",
        "application/x-whatever",
    ]
    .iter()
    .enumerate()
    {
        let up = upload_ok(&app, format!("<script>{i}</script>").as_bytes(), ctype).await;
        let r = app
            .client
            .get(format!("{}{}", app.base, up["url"].as_str().unwrap()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-disposition"], "attachment", "{ctype}");
        assert_eq!(r.headers()["content-security-policy"], "sandbox", "{ctype}");
        assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    }
    // No content type at all is stored as octet-stream (a download).
    let r = app
        .client
        .post(format!("{}/api/media", app.base))
        .bearer_auth(&app.admin_key)
        .body("untyped")
        .send()
        .await
        .unwrap();
    let up: Value = r.json().await.unwrap();
    assert_eq!(up["content_type"], "application/octet-stream");
    // Types shown inline, with bytes that really are of that type (the type is sniffed).
    for (ctype, magic) in [
        ("image/jpeg", &b"\xff\xd8\xff\xe0jpeg"[..]),
        ("video/mp4", &b"\x00\x00\x00\x18ftypmp42mp4"[..]),
        ("audio/ogg", &b"OggS\x00\x02ogg"[..]),
        ("text/plain", &b"text/plain"[..]),
    ] {
        let up = upload_ok(&app, magic, ctype).await;
        assert_eq!(up["content_type"], ctype);
        let r = app
            .client
            .get(format!("{}{}", app.base, up["url"].as_str().unwrap()))
            .send()
            .await
            .unwrap();
        assert!(!r.headers().contains_key("content-disposition"), "{ctype}");
    }
});

both_backends!(media_bad_ids_and_unknown, |t| {
    let app = spawn_app(&t).await;
    for bad in [
        "abc",
        "zz",
        &"g".repeat(64),
        &"a".repeat(63),
        &"a".repeat(65),
    ] {
        let r = app
            .client
            .get(format!("{}/media/{bad}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{bad}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["parameter"], "sha256");
    }
    let r = app
        .client
        .get(format!("{}/media/{}", app.base, "a".repeat(64)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let body: Value = r.json().await.unwrap();
    assert!(body["error"].is_string());
});

both_backends!(media_upload_limits_and_auth, |t| {
    let app = spawn_app_with(&t, |raw| raw.media.max_upload_bytes = 1000, None).await;
    let ok = app.upload(vec![7u8; 1000], "image/png").await;
    assert_eq!(ok.status(), 201);
    // Streamed to its end: the connection stays reusable.
    assert!(ok.headers().get("connection").is_none());
    let big = app.upload(vec![7u8; 1001], "image/png").await;
    assert_eq!(big.status(), 413);
    // Refused unread: the client is told the connection ends, so it does not reuse it.
    assert_eq!(big.headers()["connection"], "close");
    let body: Value = big.json().await.unwrap();
    assert_eq!(body["parameter"], "body");
    // Without Content-Length (chunked): still cut off while streaming.
    let stream = futures::stream::iter(
        (0..10).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![1u8; 500]))),
    );
    let chunked = app
        .client
        .post(format!("{}/api/media", app.base))
        .bearer_auth(&app.admin_key)
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(chunked.status(), 413);
    assert_eq!(chunked.headers()["connection"], "close");
    // Nothing of the refused uploads was recorded.
    let n = count(&t.db, "SELECT count(*) FROM media").await;
    assert_eq!(n, 1);
    let long_name = "n".repeat(300);
    let r = app
        .client
        .post(format!("{}/api/media?filename={long_name}", app.base))
        .bearer_auth(&app.admin_key)
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["connection"], "close");
    let anon = app
        .client
        .post(format!("{}/api/media", app.base))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(anon.status(), 401);
    assert_eq!(anon.headers()["connection"], "close");
});

both_backends!(media_large_upload_goes_multipart, |t| {
    let app = spawn_app(&t).await;
    // Over the single-put threshold: streamed as a multipart upload.
    let bytes: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    let up = upload_ok(&app, &bytes, "video/mp4").await;
    let r = app
        .client
        .get(format!("{}{}", app.base, up["url"].as_str().unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().as_ref(), bytes.as_slice());
});

both_backends!(health_and_readiness, |t| {
    let app = spawn_app(&t).await;
    let h = app
        .client
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(h.status(), 200);
    let r = app
        .client
        .get(format!("{}/readyz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["database"], "ok");
    assert_eq!(body["object_store"], "ok");
});

/// A moto S3 server on a free local port, killed on drop.
pub struct Moto {
    child: std::process::Child,
    pub endpoint: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Moto {
    /// Starts `moto_server`; `None` (skip) outside CI when it is not installed.
    pub async fn start() -> Option<Moto> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        let child = match child {
            Ok(c) => c,
            Err(e) if !crate::common::in_ci() => {
                eprintln!("SKIPPED: moto_server not available: {e}");
                return None;
            }
            Err(e) => panic!("moto_server not available under CI=true: {e}"),
        };
        let moto = Moto {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Some(moto);
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("moto_server did not start on port {port}");
    }

    /// Creates `bucket` and returns an object store on it.
    pub async fn bucket(&self, bucket: &str) -> komora_origin::media::store::MediaStore {
        let r = reqwest::Client::new()
            .put(format!("{}/{bucket}", self.endpoint))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "create bucket: {}", r.status());
        let location = komora_origin::config::StoreLocation::S3 {
            bucket: bucket.to_string(),
            s3: komora_origin::config::S3File {
                endpoint: Some(self.endpoint.clone()),
                region: Some("us-east-1".into()),
                access_key_id: Some("testing".into()),
                secret_access_key: Some("testing".into()),
                allow_http: true,
            },
        };
        komora_origin::media::store::open(&location).unwrap()
    }
}

both_backends!(media_upload_and_serve_s3, |t| {
    let Some(moto) = Moto::start().await else {
        return;
    };
    let store = moto.bucket("komora-test").await;
    let app = spawn_app_with(&t, |_| {}, Some(store)).await;
    check_serving(&app).await;
    let bytes: Vec<u8> = (0..3_000_000u32).map(|i| (i % 241) as u8).collect();
    let up = upload_ok(&app, &bytes, "video/mp4").await;
    let r = app
        .client
        .get(format!("{}{}", app.base, up["url"].as_str().unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().as_ref(), bytes.as_slice());
    let ready = app
        .client
        .get(format!("{}/readyz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
});

both_backends!(readiness_fails_when_the_database_is_gone, |t| {
    let app = spawn_app(&t).await;
    app.state.db.pool.close().await;
    let r = app
        .client
        .get(format!("{}/readyz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["database"], "unreachable");
    // Liveness does not depend on the database.
    let h = app
        .client
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(h.status(), 200);
});

both_backends!(metrics_report_queue_depth_read_from_the_database, |t| {
    let app = spawn_app(&t).await;
    let mut conn = t.db.pool.acquire().await.unwrap();
    let task = komora_origin::queue::NewTask {
        kind: "download_and_save_media".into(),
        payload: serde_json::json!({}),
        idempotency_key: None,
        run_at_ms: None,
    };
    komora_origin::queue::enqueue(&mut conn, &app.state.config.queue, task)
        .await
        .unwrap();
    drop(conn);
    let r = app
        .client
        .get(format!("{}/metrics", app.internal))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/plain; version=0.0.4");
    let text = r.text().await.unwrap();
    // Gauges are global to the test process (other tests scrape too), so assert the series
    // exists rather than its exact value.
    assert!(
        text.contains("komora_queue_depth{queue=\"low\"}"),
        "no low-queue depth in /metrics:\n{text}"
    );
});
