//! `GET /api/inbox`: ordering, filter, keyset pages, unread counts, previews, bad input,
//! auth, and a constant number of SQL statements whatever the page size.

use serde_json::Value;

use crate::both_backends;
use crate::common::{fixture, spawn_app};

both_backends!(inbox_orders_by_activity_with_client_preview_unread, |t| {
    let f = fixture(&t.db, 7, 3).await;
    let app = spawn_app(&t).await;
    let resp = app.get("/api/inbox?limit=50").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["cache-control"], "private, no-store");
    let body: Value = resp.json().await.unwrap();
    let convs = body["conversations"].as_array().unwrap();
    assert_eq!(convs.len(), 7);
    let ids: Vec<i64> = convs.iter().map(|c| c["id"].as_i64().unwrap()).collect();
    let mut expected = f.conversations.clone();
    expected.reverse();
    assert_eq!(ids, expected, "newest activity first");
    let first = &convs[0];
    assert_eq!(first["client"]["name"], "Client6 Kowalska");
    // 3 messages: in, out, in -> two unread inbound, last one inbound.
    assert_eq!(first["unread_count"], 2);
    assert_eq!(first["last_message"]["preview"], "hello 6/2");
    assert_eq!(first["last_message"]["direction"], "in");
    assert!(body["next_cursor"].is_null());
});

both_backends!(inbox_keyset_pages_cover_everything_once, |t| {
    let f = fixture(&t.db, 12, 1).await;
    let app = spawn_app(&t).await;
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/inbox?limit=5&cursor={c}"),
            None => "/api/inbox?limit=5".to_string(),
        };
        let body: Value = app.get(&path).await.json().await.unwrap();
        for c in body["conversations"].as_array().unwrap() {
            seen.push(c["id"].as_i64().unwrap());
        }
        match body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let mut expected = f.conversations.clone();
    expected.reverse();
    assert_eq!(seen, expected);
    // Offset pages agree with the keyset walk.
    let body: Value = app
        .get("/api/inbox?limit=5&offset=5")
        .await
        .json()
        .await
        .unwrap();
    let ids: Vec<i64> = body["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, expected[5..10].to_vec());
});

both_backends!(inbox_filters_by_platform, |t| {
    fixture(&t.db, 10, 1).await;
    let app = spawn_app(&t).await;
    let body: Value = app
        .get("/api/inbox?platform=whatsapp")
        .await
        .json()
        .await
        .unwrap();
    let convs = body["conversations"].as_array().unwrap();
    assert_eq!(convs.len(), 2);
    assert!(convs.iter().all(|c| c["platform"] == "whatsapp"));
});

both_backends!(inbox_rejects_bad_parameters, |t| {
    let app = spawn_app(&t).await;
    for (query, param) in [
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("limit=abc", "limit"),
        ("limit=-1", "limit"),
        ("platform=myspace", "platform"),
        ("cursor=zz", "cursor"),
        ("cursor=3132", "cursor"),
        ("offset=-1", "offset"),
        ("offset=1000001", "offset"),
        ("offset=x", "offset"),
    ] {
        let resp = app.get(&format!("/api/inbox?{query}")).await;
        assert_eq!(resp.status(), 400, "{query}");
        assert_eq!(resp.headers()["cache-control"], "private, no-store");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["parameter"], param, "{query}");
        assert!(body["error"].is_string());
    }
});

both_backends!(api_requires_a_valid_bearer_token, |t| {
    let app = spawn_app(&t).await;
    let url = format!("{}/api/inbox", app.base);
    let none = app.client.get(&url).send().await.unwrap();
    assert_eq!(none.status(), 401);
    assert_eq!(none.headers()["cache-control"], "private, no-store");
    // No body was refused, so the connection stays reusable.
    assert!(none.headers().get("connection").is_none());
    let body: Value = none.json().await.unwrap();
    assert!(body["error"].is_string());
    for bad in ["wrong", &"a".repeat(64), &"x".repeat(5000)] {
        let resp = app.client.get(&url).bearer_auth(bad).send().await.unwrap();
        assert_eq!(resp.status(), 401);
    }
    let basic = app
        .client
        .get(&url)
        .header("authorization", format!("Basic {}", app.admin_key))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), 401);
    let ok = app
        .client
        .get(&url)
        .bearer_auth(&app.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
});

/// Runs one request in-process and counts the SQL statements it issued.
async fn statements_for(app: &crate::common::TestApp, uri: &str) -> u64 {
    use std::cell::Cell;
    use tower::ServiceExt;
    let router = komora_origin::app::router(app.state.clone());
    let req = axum::http::Request::get(uri)
        .header("authorization", format!("Bearer {}", app.admin_key))
        .body(axum::body::Body::empty())
        .unwrap();
    komora_origin::db::STATEMENTS
        .scope(Cell::new(0), async move {
            let resp = router.oneshot(req).await.unwrap();
            assert_eq!(resp.status(), 200, "{uri}");
            komora_origin::db::STATEMENTS.with(|c| c.get())
        })
        .await
}

both_backends!(statements_per_request_do_not_grow_with_page_size, |t| {
    let f = fixture(&t.db, 60, 3).await;
    let app = spawn_app(&t).await;
    let small = statements_for(&app, "/api/inbox?limit=1").await;
    let large = statements_for(&app, "/api/inbox?limit=50").await;
    assert_eq!(small, large);
    // Bearer lookup + the inbox query.
    assert_eq!(large, 2);
    let conv = f.conversations[0];
    let small = statements_for(&app, &format!("/api/conversations/{conv}/messages?limit=1")).await;
    let large = statements_for(
        &app,
        &format!("/api/conversations/{conv}/messages?limit=500"),
    )
    .await;
    assert_eq!(small, large);
    // Bearer lookup + page + media of the page.
    assert_eq!(large, 3);
});
