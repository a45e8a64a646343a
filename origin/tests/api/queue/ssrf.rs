//! SSRF guard of the worker's fetches: media downloads, platform sends and the RAG API
//! refuse loopback, private, link-local (cloud metadata) and other non-public addresses
//! unless the platform's `allowed_hosts` names the host; redirects are re-checked. Every
//! case checks the target server saw no request, and the task ended dead with the reason.

use std::sync::Arc;

use komora_origin::autobot::reply::ProcessAiReply;
use komora_origin::messaging::send::SendMessage;
use komora_origin::messaging::webhook::hmac_sha256;
use komora_origin::queue::store::{self, now_ms};
use komora_origin::queue::worker::Outcome;
use komora_origin::queue::NewTask;
use serde_json::json;

use super::support::*;
use crate::both_backends;
use crate::common::count;

/// Config with telegram's API at `platform_url` and `allowed_hosts` as given.
fn ssrf_config(platform_url: &str, allowed: &[&str]) -> Arc<komora_origin::config::Config> {
    let list: Vec<String> = allowed.iter().map(|h| format!("\"{h}\"")).collect();
    config(&format!(
        "[platforms.telegram]\nbase_url = \"{platform_url}\"\ntoken = \"T\"\n\
         webhook_secret = \"{SECRET}\"\ntimeout_ms = 2000\nallowed_hosts = [{}]\n",
        list.join(", ")
    ))
}

/// A media download for message `message` (refused ones never get to the message).
fn download_for(message: i64, url: &str) -> NewTask {
    NewTask::new(
        "download_and_save_media",
        json!({"message_id": message, "position": 0, "url": url, "platform": "telegram"}),
    )
}

fn download(url: &str) -> NewTask {
    NewTask::new(
        "download_and_save_media",
        json!({"message_id": 1, "position": 0, "url": url, "platform": "telegram"}),
    )
}

fn files() -> Responder {
    Arc::new(|_, _, _| (200, b"secret-bytes".to_vec(), "text/plain"))
}

fn memory_store() -> Arc<dyn object_store::ObjectStore> {
    Arc::new(object_store::memory::InMemory::new())
}

/// Runs the one due task and returns its dead error (panics on any other outcome).
async fn dead_error(w: &komora_origin::queue::worker::Worker) -> String {
    match w.run_one(now_ms()).await.unwrap().unwrap() {
        Outcome::Dead { error, .. } => error,
        other => panic!("expected dead, got {other:?}"),
    }
}

both_backends!(signed_webhook_media_url_on_loopback_is_not_fetched, |t| {
    // The attacker's target: something on loopback (the edge's admin metrics, say).
    let target = StandIn::start(files()).await;
    let cfg = ssrf_config("http://127.0.0.1:9", &[]);
    let store = memory_store();
    let app = serve_app(&t.db, &cfg, store.clone()).await;
    let body = serde_json::to_vec(&json!({
        "chat_id": "c1", "message_id": "m1", "text": "see attachment",
        "media": [{"url": format!("{}/metrics", target.base_url)}]
    }))
    .unwrap();
    let sig = format!(
        "sha256={}",
        hex::encode(hmac_sha256(SECRET.as_bytes(), &body))
    );
    let resp = reqwest::Client::new()
        .post(format!("{app}/webhooks/telegram"))
        .header("x-komora-signature", sig)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let w = worker_with_store(&t.db, &cfg, store.clone());
    let error = dead_error(&w).await;
    assert!(
        error.contains("refused") && error.contains("loopback"),
        "{error}"
    );
    assert_eq!(target.count(), 0, "the loopback target must see no request");
    assert_eq!(count(&t.db, "SELECT COUNT(*) FROM media").await, 0);
    assert_eq!(count(&t.db, "SELECT COUNT(*) FROM message_media").await, 0);
    assert_eq!(
        count(&t.db, "SELECT COUNT(*) FROM tasks WHERE state = 'dead'").await,
        1
    );
});

both_backends!(allowed_host_is_fetched_other_port_is_not, |t| {
    let allowed = StandIn::start(files()).await;
    let other = StandIn::start(files()).await;
    let cfg = ssrf_config("http://127.0.0.1:9", &[host_port(&allowed.base_url)]);
    let w = worker_with_store(&t.db, &cfg, memory_store());
    let message = outbound(&t.db, "c1").await;
    let task = download_for(message, &format!("{}/a.jpg", allowed.base_url));
    enqueue(&t.db, &cfg, task, 0).await;
    let out = w.run_one(now_ms()).await.unwrap().unwrap();
    assert!(matches!(out, Outcome::Done { .. }), "{out:?}");
    assert_eq!(allowed.count(), 1);
    assert_eq!(count(&t.db, "SELECT COUNT(*) FROM media").await, 1);
    // Same address, another port: not in the list.
    enqueue(
        &t.db,
        &cfg,
        download(&format!("{}/b.jpg", other.base_url)),
        0,
    )
    .await;
    let error = dead_error(&w).await;
    assert!(error.contains("refused"), "{error}");
    assert_eq!(other.count(), 0);
});

both_backends!(redirect_from_allowed_host_to_loopback_is_refused, |t| {
    let target = StandIn::start(files()).await;
    // An allowed host that redirects to another (not allowed) loopback port.
    let location = format!("{}/metrics", target.base_url);
    let app = axum::Router::new().fallback(move || {
        let location = location.clone();
        async move { axum::response::Redirect::temporary(&location) }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let cfg = ssrf_config("http://127.0.0.1:9", &[&addr.to_string()]);
    let w = worker_with_store(&t.db, &cfg, memory_store());
    enqueue(&t.db, &cfg, download(&format!("http://{addr}/x.jpg")), 0).await;
    let error = dead_error(&w).await;
    assert!(error.contains("refused"), "{error}");
    assert_eq!(target.count(), 0, "the redirect target must see no request");
    assert_eq!(count(&t.db, "SELECT COUNT(*) FROM media").await, 0);
});

both_backends!(metadata_ipv6_loopback_and_localhost_are_refused, |t| {
    let target = StandIn::start(files()).await;
    let port = target.base_url.rsplit(':').next().unwrap().to_string();
    // A listener on [::1] too, when the machine has IPv6 loopback, to count requests there.
    let v6 = tokio::net::TcpListener::bind("[::1]:0").await.ok();
    let v6_hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let v6_port = match v6 {
        Some(l) => {
            let p = l.local_addr().unwrap().port();
            let hits = v6_hits.clone();
            tokio::spawn(async move {
                while let Ok((_s, _)) = l.accept().await {
                    hits.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            });
            p
        }
        None => 9,
    };
    let cfg = ssrf_config("http://127.0.0.1:9", &[]);
    let w = worker_with_store(&t.db, &cfg, memory_store());
    for (url, why) in [
        (
            "http://169.254.169.254/latest/meta-data/".to_string(),
            "link-local",
        ),
        (format!("http://[::1]:{v6_port}/"), "loopback"),
        (format!("http://localhost:{port}/metrics"), "localhost"),
        (format!("http://0x7f000001:{port}/metrics"), "loopback"),
        (format!("http://[::ffff:127.0.0.1]:{port}/"), "IPv4-mapped"),
        ("http://10.0.0.1/".to_string(), "private"),
        ("http://100.64.0.1/".to_string(), "carrier-grade NAT"),
    ] {
        enqueue(&t.db, &cfg, download(&url), 0).await;
        let error = dead_error(&w).await;
        assert!(error.contains("refused"), "{url}: {error}");
        assert!(error.contains(why), "{url}: {error}");
    }
    assert_eq!(target.count(), 0);
    assert_eq!(v6_hits.load(std::sync::atomic::Ordering::SeqCst), 0);
});

both_backends!(platform_send_and_rag_on_loopback_need_allowed_hosts, |t| {
    let platform = StandIn::start(telegram_ok()).await;
    let cfg = ssrf_config(&platform.base_url, &[]);
    let w = worker(&t.db, &cfg);
    let id = outbound(&t.db, "c1").await;
    enqueue(&t.db, &cfg, SendMessage::task(id), 0).await;
    let error = dead_error(&w).await;
    assert!(error.contains("platform telegram refused"), "{error}");
    assert_eq!(platform.count(), 0);
    assert_eq!(delivery_of(&t.db, id).await, "failed");

    // The RAG API: only through [ai] allowed_hosts.
    let rag = StandIn::start(json_responder(200, json!({"answer": "hi"}))).await;
    let cfg = config(&format!(
        "[ai]\nenabled = true\nurl = \"{}/answer\"\nchannels = [\"telegram\"]\n\
         [platforms.telegram]\nbase_url = \"{}\"\nwebhook_secret = \"{SECRET}\"\n",
        rag.base_url, platform.base_url
    ));
    let office = office(&t.db, "UTC", true, "{}", "[]").await;
    let conv: i64 = sqlx::Row::get(
        &sqlx::query(
            "INSERT INTO conversations (platform, client_id, office_id, external_chat_id, \
             last_activity_at, created_at) VALUES ('telegram', (SELECT MIN(id) FROM clients), \
             $1, 'c2', 0, 0) RETURNING id",
        )
        .bind(office)
        .fetch_one(&t.db.pool)
        .await
        .unwrap(),
        0,
    );
    let inbound: i64 = sqlx::Row::get(
        &sqlx::query(
            "INSERT INTO messages (conversation_id, direction, text, created_at, \
             delivery_status) VALUES ($1, 'in', 'hello?', 0, 'received') RETURNING id",
        )
        .bind(conv)
        .fetch_one(&t.db.pool)
        .await
        .unwrap(),
        0,
    );
    enqueue(&t.db, &cfg, ProcessAiReply::task(inbound), 0).await;
    let error = dead_error(&worker(&t.db, &cfg)).await;
    assert!(error.contains("RAG API refused"), "{error}");
    assert_eq!(rag.count(), 0);
    let _ = store::stats(&t.db, now_ms()).await.unwrap();
});

#[test]
fn bad_allowed_hosts_entry_names_its_key() {
    let err = komora_origin::config::Config::parse(
        "x.toml",
        &format!(
            "[platforms.telegram]\nbase_url = \"http://x\"\nwebhook_secret = \"{SECRET}\"\n\
             allowed_hosts = [\"ok.example\", \"http://bad/\"]\n\
             honours_idempotency_key = true\n\
             [ai]\nallowed_hosts = [\"\"]\n"
        ),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("x.toml: platforms.telegram.allowed_hosts[1]: "),
        "{err}"
    );
    assert!(err.contains("x.toml: ai.allowed_hosts[0]: "), "{err}");
    assert!(
        err.contains("x.toml: platforms.telegram.honours_idempotency_key: "),
        "{err}"
    );
}
