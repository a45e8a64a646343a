//! Messages of a conversation: pages (offset and keyset), media URLs, bad input, sending
//! (transactional with the enqueue), marking read.

use serde_json::{json, Value};

use crate::both_backends;
use crate::common::{count, fixture, spawn_app};

both_backends!(messages_page_by_offset_and_cursor, |t| {
    let f = fixture(&t.db, 1, 25).await;
    let app = spawn_app(&t).await;
    let conv = f.conversations[0];
    let resp = app
        .get(&format!("/api/conversations/{conv}/messages"))
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["cache-control"], "private, no-store");
    let body: Value = resp.json().await.unwrap();
    let all: Vec<i64> = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_i64().unwrap())
        .collect();
    assert_eq!(all.len(), 25);
    assert!(all.windows(2).all(|w| w[0] > w[1]), "newest first");
    assert!(body["next_cursor"].is_null());

    let page: Value = app
        .get(&format!(
            "/api/conversations/{conv}/messages?limit=10&offset=10"
        ))
        .await
        .json()
        .await
        .unwrap();
    let ids: Vec<i64> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, all[10..20].to_vec());

    // Keyset: walk with `before` and get the same sequence.
    let mut seen = Vec::new();
    let mut before: Option<String> = None;
    loop {
        let path = match &before {
            Some(c) => format!("/api/conversations/{conv}/messages?limit=7&before={c}"),
            None => format!("/api/conversations/{conv}/messages?limit=7"),
        };
        let body: Value = app.get(&path).await.json().await.unwrap();
        for m in body["messages"].as_array().unwrap() {
            seen.push(m["id"].as_i64().unwrap());
        }
        match body["next_cursor"].as_str() {
            Some(c) => before = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, all);
});

both_backends!(messages_reject_bad_parameters, |t| {
    let f = fixture(&t.db, 1, 1).await;
    let app = spawn_app(&t).await;
    let conv = f.conversations[0];
    for (query, param) in [
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=1.5", "limit"),
        ("limit=abc", "limit"),
        ("offset=-1", "offset"),
        ("offset=x", "offset"),
        ("offset=99999999999999999999", "offset"),
        ("before=nothex", "before"),
        ("before=", "none"),
    ] {
        let resp = app
            .get(&format!("/api/conversations/{conv}/messages?{query}"))
            .await;
        if param == "none" {
            assert_eq!(resp.status(), 200, "{query}");
            continue;
        }
        assert_eq!(resp.status(), 400, "{query}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["parameter"], param, "{query}");
    }
    for bad in ["abc", "0", "-3", "1.5", "99999999999999999999"] {
        let resp = app.get(&format!("/api/conversations/{bad}/messages")).await;
        assert_eq!(resp.status(), 400, "{bad}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["parameter"], "id");
    }
    let resp = app.get("/api/conversations/999999/messages").await;
    assert_eq!(resp.status(), 404);
    let body: Value = resp.json().await.unwrap();
    assert!(body["error"].is_string());
});

both_backends!(messages_list_their_media_with_urls, |t| {
    let f = fixture(&t.db, 1, 0).await;
    let app = spawn_app(&t).await;
    let conv = f.conversations[0];
    let up: Value = app
        // A PNG signature: the stored type is sniffed from the bytes.
        .upload(b"\x89PNG\r\n\x1a\nhello image".to_vec(), "image/png")
        .await
        .json()
        .await
        .unwrap();
    let media_id = up["id"].as_i64().unwrap();
    let sha = up["sha256"].as_str().unwrap().to_string();
    let mut msg = komora_origin::store::messages::NewMessage::inbound(conv, "see photo");
    msg.media_ids = vec![media_id];
    let mut conn = t.db.pool.acquire().await.unwrap();
    komora_origin::store::messages::insert_message(&mut conn, &msg)
        .await
        .unwrap();
    drop(conn);
    let body: Value = app
        .get(&format!("/api/conversations/{conv}/messages"))
        .await
        .json()
        .await
        .unwrap();
    let media = &body["messages"][0]["media"];
    assert_eq!(media.as_array().unwrap().len(), 1);
    assert_eq!(media[0]["url"], format!("/media/{sha}"));
    assert_eq!(media[0]["content_type"], "image/png");
    // The URL serves the bytes.
    let got = app
        .client
        .get(format!("{}/media/{sha}", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(
        got.bytes().await.unwrap().as_ref(),
        b"\x89PNG\r\n\x1a\nhello image"
    );
});

both_backends!(send_is_atomic_with_the_enqueue, |t| {
    let f = fixture(&t.db, 1, 1).await;
    let app = spawn_app(&t).await;
    let conv = f.conversations[0];
    let messages = || count(&t.db, "SELECT count(*) FROM messages");
    // Make the enqueue fail whatever the queue's state: its table is gone.
    sqlx::query("DROP TABLE tasks")
        .execute(&t.db.pool)
        .await
        .unwrap();
    let before = messages().await;
    let resp = app
        .post_json(
            &format!("/api/conversations/{conv}/messages"),
            json!({"text": "hi"}),
        )
        .await;
    assert_eq!(resp.status(), 503);
    let body: Value = resp.json().await.unwrap();
    assert!(body["error"].is_string());
    assert_eq!(messages().await, before, "message must not be stored");
});

both_backends!(send_stores_and_enqueues_or_stores_nothing, |t| {
    let f = fixture(&t.db, 1, 1).await;
    let app = spawn_app(&t).await;
    let conv = f.conversations[0];
    let resp = app
        .post_json(
            &format!("/api/conversations/{conv}/messages"),
            json!({"text": "hello out"}),
        )
        .await;
    let status = resp.status().as_u16();
    // The body was read to its end: the connection stays reusable.
    assert!(resp.headers().get("connection").is_none());
    let sent: Value = resp.json().await.unwrap();
    let body: Value = app
        .get(&format!("/api/conversations/{conv}/messages"))
        .await
        .json()
        .await
        .unwrap();
    let stored = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["text"] == "hello out");
    match status {
        // The queue is implemented: stored, newest, pending.
        201 => {
            assert!(stored);
            assert_eq!(body["messages"][0]["direction"], "out");
            assert_eq!(body["messages"][0]["delivery_status"], "pending");
            // ...and its send task exists, committed with it.
            // An integer from our own response: safe to put into the SQL text.
            let task_id = sent["task_id"].as_i64().unwrap();
            let tasks = count(
                &t.db,
                sqlx::AssertSqlSafe(format!(
                    "SELECT count(*) FROM tasks WHERE kind = 'send_message' AND id = {task_id}"
                )),
            )
            .await;
            assert_eq!(tasks, 1);
            assert_eq!(sent["id"], body["messages"][0]["id"]);
        }
        // The queue refuses: nothing stored.
        503 => assert!(!stored),
        other => panic!("unexpected status {other}"),
    }
});

both_backends!(send_rejects_bad_input, |t| {
    let f = fixture(&t.db, 1, 1).await;
    let app = spawn_app_small_body(&t).await;
    let conv = f.conversations[0];
    let path = format!("/api/conversations/{conv}/messages");
    for (body, param) in [
        (json!({"text": ""}), "text"),
        (json!({"text": "a", "media_ids": [424242]}), "media_ids"),
        (json!({"text": "a", "bogus": 1}), "body"),
        (json!({"text": 5}), "body"),
        (
            json!({"text": "a", "media_ids": (1..=21).collect::<Vec<i64>>()}),
            "media_ids",
        ),
    ] {
        let resp = app.post_json(&path, body.clone()).await;
        assert_eq!(resp.status(), 400, "{body}");
        let got: Value = resp.json().await.unwrap();
        assert_eq!(got["parameter"], param, "{body}");
    }
    let raw = app
        .client
        .post(format!("{}{path}", app.base))
        .bearer_auth(&app.admin_key)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 400);
    let huge = app
        .client
        .post(format!("{}{path}", app.base))
        .bearer_auth(&app.admin_key)
        .body(vec![b' '; 4096])
        .send()
        .await
        .unwrap();
    assert_eq!(huge.status(), 413);
    assert_eq!(huge.headers()["connection"], "close");
    let got: Value = huge.json().await.unwrap();
    assert_eq!(got["parameter"], "body");
    // Over the text limit (with a body limit large enough to carry it).
    let roomy = spawn_app(&t).await;
    let long = roomy
        .post_json(&path, json!({"text": "x".repeat(10_001)}))
        .await;
    assert_eq!(long.status(), 400);
    let got: Value = long.json().await.unwrap();
    assert_eq!(got["parameter"], "text");
    let missing = app
        .post_json("/api/conversations/999999/messages", json!({"text": "x"}))
        .await;
    assert!(missing.status() == 404 || missing.status() == 503);
    let bad_id = app
        .post_json("/api/conversations/x/messages", json!({"text": "x"}))
        .await;
    assert_eq!(bad_id.status(), 400);
    // Refused on its path before the body was read: the connection is not reusable, and the
    // response says so although no handler code asked for it.
    assert_eq!(bad_id.headers()["connection"], "close");
});

async fn spawn_app_small_body(t: &crate::common::TestDb) -> crate::common::TestApp {
    crate::common::spawn_app_with(t, |raw| raw.server.json_body_limit_bytes = 1024, None).await
}

both_backends!(read_marks_inbound_messages_and_zeroes_unread, |t| {
    let f = fixture(&t.db, 1, 5).await;
    let app = spawn_app(&t).await;
    let conv = f.conversations[0];
    let inbox: Value = app.get("/api/inbox").await.json().await.unwrap();
    assert_eq!(inbox["conversations"][0]["unread_count"], 3);
    let resp = app
        .post_json(&format!("/api/conversations/{conv}/read"), json!({}))
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["cache-control"], "private, no-store");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["marked"], 3);
    let inbox: Value = app.get("/api/inbox").await.json().await.unwrap();
    assert_eq!(inbox["conversations"][0]["unread_count"], 0);
    let msgs: Value = app
        .get(&format!("/api/conversations/{conv}/messages"))
        .await
        .json()
        .await
        .unwrap();
    for m in msgs["messages"].as_array().unwrap() {
        assert_eq!(m["read_at"].is_null(), m["direction"] == "out");
    }
    // Again: nothing left to mark.
    let again: Value = app
        .post_json(&format!("/api/conversations/{conv}/read"), json!({}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again["marked"], 0);
    let missing = app
        .post_json("/api/conversations/999999/read", json!({}))
        .await;
    assert_eq!(missing.status(), 404);
    let bad = app
        .post_json("/api/conversations/abc/read", json!({}))
        .await;
    assert_eq!(bad.status(), 400);
});
