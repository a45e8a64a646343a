//! Webhook → AI reply → delivery, end to end against local stand-ins for the platform and
//! the RAG API; delivery errors; duplicate delivery; media download.

use std::sync::Arc;

use komora_origin::autobot::reply::ProcessAiReply;
use komora_origin::messaging::send::SendMessage;
use komora_origin::messaging::webhook::hmac_sha256;
use komora_origin::queue::store::{self, now_ms};
use komora_origin::queue::worker::Outcome;
use serde_json::json;
use sqlx::Row;

use super::support::*;
use crate::both_backends;
use crate::common::count;

fn signature(body: &[u8]) -> String {
    format!(
        "sha256={}",
        hex::encode(hmac_sha256(SECRET.as_bytes(), body))
    )
}

async fn post(app: &str, body: &[u8], headers: &[(&str, String)]) -> (u16, serde_json::Value) {
    let mut req = reqwest::Client::new()
        .post(format!("{app}/webhooks/telegram"))
        .header("content-type", "application/json")
        .body(body.to_vec());
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let v = resp.json().await.unwrap_or(serde_json::Value::Null);
    (status, v)
}

both_backends!(webhook_ai_reply_delivery_end_to_end, |t| {
    let platform = StandIn::start(telegram_ok()).await;
    let rag = StandIn::start(json_responder(
        200,
        json!({"answer": "We are closed; we answer at 9:00."}),
    ))
    .await;
    let cfg = flow_config(&platform.base_url, &rag.base_url, "");
    // Autobot on, no working hours at all: always closed, so it always answers.
    let office_id = office(&t.db, "Europe/Warsaw", true, "{}", "[]").await;
    let store: Arc<dyn object_store::ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let app = serve_app(&t.db, &cfg, store.clone()).await;

    let body = serde_json::to_vec(&json!({
        "chat_id": "chat-42", "message_id": "m-1", "text": "Are you open?",
        "sender": {"name": "Ann"}
    }))
    .unwrap();
    // Unsigned, wrongly signed, wrong secret: 401 JSON and nothing written.
    for headers in [
        vec![],
        vec![("x-komora-signature", "sha256=00ff".to_string())],
        vec![("x-komora-webhook-secret", "wrong-wrong-wrong".to_string())],
    ] {
        let (status, v) = post(&app, &body, &headers).await;
        assert_eq!(status, 401, "{v}");
        assert_eq!(v["code"], "bad_signature");
    }
    // Signed but not the expected shape: 400 JSON, nothing written.
    let bad = b"{\"chat\": 1}";
    let (status, v) = post(&app, bad, &[("x-komora-signature", signature(bad))]).await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(count(&t.db, "SELECT COUNT(*) FROM messages").await, 0);
    assert_eq!(count(&t.db, "SELECT COUNT(*) FROM conversations").await, 0);
    assert_eq!(count(&t.db, "SELECT COUNT(*) FROM tasks").await, 0);

    let (status, v) = post(&app, &body, &[("x-komora-signature", signature(&body))]).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["duplicate"], false);
    let inbound = v["message_id"].as_i64().unwrap();
    let conv = v["conversation_id"].as_i64().unwrap();
    let row = sqlx::query(
        "SELECT unread_count, last_message_id, office_id FROM conversations WHERE id = $1",
    )
    .bind(conv)
    .fetch_one(&t.db.pool)
    .await
    .unwrap();
    assert_eq!(row.get::<i64, _>(0), 1);
    assert_eq!(row.get::<i64, _>(1), inbound);
    assert_eq!(row.get::<Option<i64>, _>(2), Some(office_id));
    assert_eq!(count(&t.db, "SELECT COUNT(*) FROM tasks").await, 1);

    // The platform redelivers the same webhook (plain secret header this time).
    let (status, v) = post(
        &app,
        &body,
        &[("x-komora-webhook-secret", SECRET.to_string())],
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["duplicate"], true);
    assert_eq!(v["message_id"].as_i64().unwrap(), inbound);
    assert_eq!(count(&t.db, "SELECT COUNT(*) FROM messages").await, 1);
    assert_eq!(count(&t.db, "SELECT COUNT(*) FROM tasks").await, 1);

    let w = worker_with_store(&t.db, &cfg, store);
    let out = w.run_one(now_ms()).await.unwrap().unwrap();
    assert!(
        matches!(&out, Outcome::Done { kind, .. } if kind == "process_ai_reply"),
        "{out:?}"
    );
    assert_eq!(rag.count(), 1);
    let req = &rag.all()[0];
    assert_eq!(req.headers["authorization"], "Bearer rag-key");
    assert_eq!(req.json()["messages"][0]["text"], "Are you open?");
    assert_eq!(req.json()["messages"][0]["role"], "user");
    let reply = sqlx::query(
        "SELECT outbound_message_id, decision FROM ai_replies WHERE inbound_message_id = $1",
    )
    .bind(inbound)
    .fetch_one(&t.db.pool)
    .await
    .unwrap();
    let outbound: i64 = reply.get(0);
    assert_eq!(reply.get::<String, _>(1), "reply");

    let out = w.run_one(now_ms()).await.unwrap().unwrap();
    assert!(
        matches!(&out, Outcome::Done { kind, .. } if kind == "send_message"),
        "{out:?}"
    );
    assert_eq!(platform.count(), 1);
    let sent = &platform.all()[0];
    assert_eq!(sent.path, "/botTOKEN/sendMessage");
    assert_eq!(sent.json()["chat_id"], "chat-42");
    assert_eq!(sent.json()["text"], "We are closed; we answer at 9:00.");
    assert_eq!(
        sent.headers["idempotency-key"],
        format!("komora-message-{outbound}").as_str()
    );
    let m = sqlx::query("SELECT delivery_status, external_id, text FROM messages WHERE id = $1")
        .bind(outbound)
        .fetch_one(&t.db.pool)
        .await
        .unwrap();
    assert_eq!(m.get::<String, _>(0), "sent");
    assert_eq!(m.get::<Option<String>, _>(1).as_deref(), Some("1001"));
    assert_eq!(w.run_one(now_ms()).await.unwrap(), None);

    // Duplicate delivery prevented: the same message enqueued again (its first task is
    // done, so the key is free) and the AI task re-run do not reach the platform again.
    let mut tx = t.db.pool.begin().await.unwrap();
    store::enqueue_at(&mut tx, &cfg.queue, SendMessage::task(outbound), now_ms())
        .await
        .unwrap();
    store::enqueue_at(&mut tx, &cfg.queue, ProcessAiReply::task(inbound), now_ms())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    while let Some(out) = w.run_one(now_ms()).await.unwrap() {
        assert!(matches!(out, Outcome::Done { .. }), "{out:?}");
    }
    assert_eq!(platform.count(), 1, "delivered once");
    assert_eq!(rag.count(), 1, "asked once");
    assert_eq!(
        count(
            &t.db,
            "SELECT COUNT(*) FROM messages WHERE direction = 'out'"
        )
        .await,
        1
    );
});

both_backends!(inside_working_hours_records_why_and_does_nothing, |t| {
    let platform = StandIn::start(telegram_ok()).await;
    let rag = StandIn::start(json_responder(200, json!({"answer": "x"}))).await;
    let cfg = flow_config(&platform.base_url, &rag.base_url, "");
    let all_day = r#"{"mon":["00:00-24:00"],"tue":["00:00-24:00"],"wed":["00:00-24:00"],
        "thu":["00:00-24:00"],"fri":["00:00-24:00"],"sat":["00:00-24:00"],"sun":["00:00-24:00"]}"#;
    office(&t.db, "Asia/Tokyo", true, all_day, "[]").await;
    let store: Arc<dyn object_store::ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let app = serve_app(&t.db, &cfg, store.clone()).await;
    let body = br#"{"chat_id":"c1","message_id":"1","text":"hi"}"#;
    let (status, v) = post(&app, body, &[("x-komora-signature", signature(body))]).await;
    assert_eq!(status, 200, "{v}");
    let w = worker_with_store(&t.db, &cfg, store);
    let out = w.run_one(now_ms()).await.unwrap().unwrap();
    assert!(matches!(out, Outcome::Done { .. }), "{out:?}");
    let r = sqlx::query("SELECT decision, reason, outbound_message_id FROM ai_replies")
        .fetch_one(&t.db.pool)
        .await
        .unwrap();
    assert_eq!(r.get::<String, _>(0), "skip");
    let reason: String = r.get(1);
    assert!(reason.starts_with("inside working hours"), "{reason}");
    assert!(reason.contains("Asia/Tokyo"), "{reason}");
    assert_eq!(r.get::<Option<i64>, _>(2), None);
    assert_eq!(rag.count(), 0);
    assert_eq!(platform.count(), 0);
    assert_eq!(w.run_one(now_ms()).await.unwrap(), None);
});

/// An outbound message in a fresh conversation; returns its id.
async fn outbound_message(db: &komora_origin::db::Db) -> i64 {
    let client: i64 =
        sqlx::query("INSERT INTO clients (name, created_at) VALUES ('A', 0) RETURNING id")
            .fetch_one(&db.pool)
            .await
            .unwrap()
            .get(0);
    let conv: i64 = sqlx::query(
        "INSERT INTO conversations (platform, client_id, external_chat_id, last_activity_at, \
         created_at) VALUES ('telegram', $1, 'c9', 0, 0) RETURNING id",
    )
    .bind(client)
    .fetch_one(&db.pool)
    .await
    .unwrap()
    .get(0);
    sqlx::query(
        "INSERT INTO messages (conversation_id, direction, text, created_at) \
         VALUES ($1, 'out', 'hello', 0) RETURNING id",
    )
    .bind(conv)
    .fetch_one(&db.pool)
    .await
    .unwrap()
    .get(0)
}

async fn delivery_status(db: &komora_origin::db::Db, id: i64) -> String {
    sqlx::query("SELECT delivery_status FROM messages WHERE id = $1")
        .bind(id)
        .fetch_one(&db.pool)
        .await
        .unwrap()
        .get(0)
}

both_backends!(platform_4xx_fails_for_good_5xx_retries, |t| {
    // 1st call 503, 2nd 200; a separate message gets 400.
    let platform = StandIn::start(Arc::new(|_, body: &[u8], n| {
        let v: serde_json::Value = serde_json::from_slice(body).unwrap();
        if v["text"] == "refused" {
            (
                400,
                br#"{"ok":false,"description":"chat not found"}"#.to_vec(),
                "application/json",
            )
        } else if n == 1 {
            (503, b"busy".to_vec(), "text/plain")
        } else {
            (
                200,
                br#"{"ok":true,"result":{"message_id":7}}"#.to_vec(),
                "application/json",
            )
        }
    }))
    .await;
    let cfg = flow_config(&platform.base_url, "http://127.0.0.1:9", "");
    let w = worker(&t.db, &cfg);
    let id = outbound_message(&t.db).await;
    enqueue(&t.db, &cfg, SendMessage::task(id), T0).await;
    let out = w.run_one(T0).await.unwrap().unwrap();
    let Outcome::Retry { run_at, error, .. } = out else {
        panic!("{out:?}")
    };
    assert!(error.contains("503"), "{error}");
    assert_eq!(delivery_status(&t.db, id).await, "pending");
    let out = w.run_one(run_at).await.unwrap().unwrap();
    assert!(matches!(out, Outcome::Done { .. }), "{out:?}");
    assert_eq!(delivery_status(&t.db, id).await, "sent");

    let refused = outbound_message_text(&t.db, "refused").await;
    let task = enqueue(&t.db, &cfg, SendMessage::task(refused), T0).await;
    let out = w.run_one(run_at).await.unwrap().unwrap();
    assert!(matches!(out, Outcome::Dead { .. }), "{out:?}");
    assert_eq!(delivery_status(&t.db, refused).await, "failed");
    let row = store::get(&t.db, task).await.unwrap().unwrap();
    assert!(row.last_error.unwrap().contains("chat not found"));
    assert_eq!(platform.count(), 3);
});

async fn outbound_message_text(db: &komora_origin::db::Db, text: &str) -> i64 {
    let id = outbound_message_in(db, "c10").await;
    sqlx::query("UPDATE messages SET text = $1 WHERE id = $2")
        .bind(text)
        .bind(id)
        .execute(&db.pool)
        .await
        .unwrap();
    id
}

async fn outbound_message_in(db: &komora_origin::db::Db, chat: &str) -> i64 {
    let client: i64 =
        sqlx::query("INSERT INTO clients (name, created_at) VALUES ('B', 0) RETURNING id")
            .fetch_one(&db.pool)
            .await
            .unwrap()
            .get(0);
    let conv: i64 = sqlx::query(
        "INSERT INTO conversations (platform, client_id, external_chat_id, last_activity_at, \
         created_at) VALUES ('telegram', $1, $2, 0, 0) RETURNING id",
    )
    .bind(client)
    .bind(chat)
    .fetch_one(&db.pool)
    .await
    .unwrap()
    .get(0);
    sqlx::query(
        "INSERT INTO messages (conversation_id, direction, text, created_at) \
         VALUES ($1, 'out', 'x', 0) RETURNING id",
    )
    .bind(conv)
    .fetch_one(&db.pool)
    .await
    .unwrap()
    .get(0)
}

both_backends!(platform_timeout_is_retried, |t| {
    let slow = StandIn::start_delayed(
        json_responder(200, json!({})),
        Arc::new(|_| std::time::Duration::from_millis(1500)),
    )
    .await;
    let cfg = config(&format!(
        "[platforms.telegram]\nbase_url = \"{}\"\ntoken = \"T\"\nwebhook_secret = \"{SECRET}\"\n\
         timeout_ms = 100\nallowed_hosts = [\"{}\"]\n",
        slow.base_url,
        host_port(&slow.base_url)
    ));
    let id = outbound_message(&t.db).await;
    enqueue(&t.db, &cfg, SendMessage::task(id), T0).await;
    let out = worker(&t.db, &cfg).run_one(T0).await.unwrap().unwrap();
    let Outcome::Retry { error, .. } = out else {
        panic!("{out:?}")
    };
    assert!(error.contains("timed out"), "{error}");
});

both_backends!(webhook_media_is_downloaded_content_addressed, |t| {
    let files = StandIn::start(Arc::new(|path: &str, _: &[u8], _| {
        if path == "/big.bin" {
            (200, vec![7u8; 5000], "application/octet-stream")
        } else if path == "/gone.jpg" {
            (404, b"nope".to_vec(), "text/plain")
        } else {
            (200, b"fake-jpeg-bytes".to_vec(), "image/jpeg")
        }
    }))
    .await;
    let cfg = flow_config(&files.base_url, &files.base_url, "");
    let store: Arc<dyn object_store::ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let app = serve_app(&t.db, &cfg, store.clone()).await;
    let body = serde_json::to_vec(&json!({
        "chat_id": "c1", "message_id": "p1", "text": "",
        "media": [
            {"url": format!("{}/photo.jpg", files.base_url), "name": "photo.jpg"},
            {"url": format!("{}/big.bin", files.base_url)},
            {"url": format!("{}/gone.jpg", files.base_url)},
        ]
    }))
    .unwrap();
    let (status, v) = post(&app, &body, &[("x-komora-signature", signature(&body))]).await;
    assert_eq!(status, 200, "{v}");
    let message = v["message_id"].as_i64().unwrap();
    sqlx::query("DELETE FROM tasks WHERE kind = 'process_ai_reply'")
        .execute(&t.db.pool)
        .await
        .unwrap();
    let w = worker_with_store(&t.db, &cfg, store.clone());
    let mut outcomes = Vec::new();
    while let Some(o) = w.run_one(now_ms()).await.unwrap() {
        outcomes.push(o);
    }
    assert_eq!(outcomes.len(), 3, "{outcomes:?}");
    assert!(matches!(outcomes[0], Outcome::Done { .. }), "{outcomes:?}");
    // Over media_max_bytes (1000) and a 404: both dead at once.
    assert!(matches!(outcomes[1], Outcome::Dead { .. }), "{outcomes:?}");
    assert!(matches!(outcomes[2], Outcome::Dead { .. }), "{outcomes:?}");
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"fake-jpeg-bytes"));
    let row = sqlx::query(
        "SELECT m.sha256, m.size, m.content_type, m.original_name, m.object_key \
         FROM media m JOIN message_media mm ON mm.media_id = m.id WHERE mm.message_id = $1",
    )
    .bind(message)
    .fetch_one(&t.db.pool)
    .await
    .unwrap();
    assert_eq!(row.get::<String, _>(0), sha);
    assert_eq!(row.get::<i64, _>(1), 15);
    assert_eq!(row.get::<String, _>(2), "image/jpeg");
    assert_eq!(
        row.get::<Option<String>, _>(3).as_deref(),
        Some("photo.jpg")
    );
    let key: String = row.get(4);
    assert_eq!(key, format!("media/{}/{}/{sha}", &sha[0..2], &sha[2..4]));
    let got = object_store::ObjectStoreExt::get(&*store, &object_store::path::Path::from(key))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(&got[..], b"fake-jpeg-bytes");
});

both_backends!(webhook_accepts_telegram_updates, |t| {
    let cfg = flow_config("http://127.0.0.1:9", "http://127.0.0.1:9", "");
    let store: Arc<dyn object_store::ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let app = serve_app(&t.db, &cfg, store).await;
    let update = serde_json::to_vec(&json!({
        "update_id": 10,
        "message": {
            "message_id": 77, "date": 1, "chat": {"id": 4242, "type": "private"},
            "from": {"id": 1, "first_name": "Olga", "last_name": "K"}, "text": "hello"
        }
    }))
    .unwrap();
    let secret = ("x-telegram-bot-api-secret-token", SECRET.to_string());
    let (status, v) = post(&app, &update, std::slice::from_ref(&secret)).await;
    assert_eq!(status, 200, "{v}");
    let row = sqlx::query(
        "SELECT m.text, m.external_id, c.external_chat_id, cl.name FROM messages m \
         JOIN conversations c ON c.id = m.conversation_id JOIN clients cl ON cl.id = c.client_id \
         WHERE m.id = $1",
    )
    .bind(v["message_id"].as_i64().unwrap())
    .fetch_one(&t.db.pool)
    .await
    .unwrap();
    assert_eq!(row.get::<String, _>(0), "hello");
    assert_eq!(row.get::<Option<String>, _>(1).as_deref(), Some("77"));
    assert_eq!(row.get::<String, _>(2), "4242");
    assert_eq!(row.get::<String, _>(3), "Olga K");
    // An update without a message is acknowledged and ignored.
    let other = br#"{"update_id": 11, "callback_query": {"id": "x"}}"#;
    let (status, v) = post(&app, other, &[secret]).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["ignored"], true);
    assert_eq!(count(&t.db, "SELECT COUNT(*) FROM messages").await, 1);
});

both_backends!(webhook_text_and_body_are_capped_with_json_errors, |t| {
    let cfg = flow_config("http://127.0.0.1:9", "http://127.0.0.1:9", "");
    let store: Arc<dyn object_store::ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let app = serve_app(&t.db, &cfg, store).await;
    let max = komora_origin::api::messages::MAX_TEXT_CHARS;
    let message = |text: String| {
        serde_json::to_vec(&json!({"chat_id": "c", "message_id": "m", "text": text})).unwrap()
    };
    // One character over the outbound cap: 400 naming the text, nothing stored.
    let long = message("ж".repeat(max + 1));
    let (status, v) = post(&app, &long, &[("x-komora-signature", signature(&long))]).await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["parameter"], "text", "{v}");
    assert!(v["error"].as_str().unwrap().contains("longer than"), "{v}");
    // 1.9 MB: over the body limit, a JSON 413.
    let huge = message("a".repeat(1_900_000));
    let (status, v) = post(&app, &huge, &[("x-komora-signature", signature(&huge))]).await;
    assert_eq!(status, 413, "{v}");
    assert_eq!(v["parameter"], "body", "{v}");
    assert_eq!(count(&t.db, "SELECT COUNT(*) FROM messages").await, 0);
    assert_eq!(count(&t.db, "SELECT COUNT(*) FROM tasks").await, 0);
    // At the cap exactly: stored.
    let ok = message("ж".repeat(max));
    let (status, v) = post(&app, &ok, &[("x-komora-signature", signature(&ok))]).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(count(&t.db, "SELECT COUNT(*) FROM messages").await, 1);
});

both_backends!(ai_reply_to_an_older_message_keeps_the_newer_preview, |t| {
    let platform = StandIn::start(telegram_ok()).await;
    let rag = StandIn::start(json_responder(200, json!({"answer": "Closed now."}))).await;
    let cfg = flow_config(&platform.base_url, &rag.base_url, "");
    office(&t.db, "Europe/Warsaw", true, "{}", "[]").await;
    let store: Arc<dyn object_store::ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let app = serve_app(&t.db, &cfg, store.clone()).await;
    let body = br#"{"chat_id":"c-old","message_id":"o-1","text":"hello?"}"#;
    let (status, v) = post(&app, body, &[("x-komora-signature", signature(body))]).await;
    assert_eq!(status, 200, "{v}");
    let conv = v["conversation_id"].as_i64().unwrap();
    // A newer message (an operator's, an hour on) lands before the autobot task runs.
    let later = now_ms() + 3_600_000;
    let newer: i64 = sqlx::query(
        "INSERT INTO messages (conversation_id, direction, text, created_at, delivery_status) \
         VALUES ($1, 'out', 'newer', $2, 'sent') RETURNING id",
    )
    .bind(conv)
    .bind(later)
    .fetch_one(&t.db.pool)
    .await
    .unwrap()
    .get(0);
    sqlx::query(
        "UPDATE conversations SET last_message_id = $1, last_activity_at = $2 WHERE id = $3",
    )
    .bind(newer)
    .bind(later)
    .bind(conv)
    .execute(&t.db.pool)
    .await
    .unwrap();

    let w = worker_with_store(&t.db, &cfg, store);
    let out = w.run_one(now_ms()).await.unwrap().unwrap();
    assert!(
        matches!(&out, Outcome::Done { kind, .. } if kind == "process_ai_reply"),
        "{out:?}"
    );
    let reply: i64 = sqlx::query("SELECT outbound_message_id FROM ai_replies")
        .fetch_one(&t.db.pool)
        .await
        .unwrap()
        .get(0);
    assert_ne!(reply, newer);
    let row =
        sqlx::query("SELECT last_message_id, last_activity_at FROM conversations WHERE id = $1")
            .bind(conv)
            .fetch_one(&t.db.pool)
            .await
            .unwrap();
    assert_eq!(
        row.get::<i64, _>(0),
        newer,
        "the newest message stays the preview"
    );
    assert_eq!(row.get::<i64, _>(1), later);
});
