//! `GET /api/clients?q=`: substring search by name, phone or email.

use serde_json::Value;

use crate::both_backends;
use crate::common::{fixture, spawn_app};

both_backends!(clients_search_by_name_phone_email, |t| {
    let f = fixture(&t.db, 12, 0).await;
    let app = spawn_app(&t).await;
    let names = |body: Value| -> Vec<i64> {
        body["clients"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_i64().unwrap())
            .collect()
    };
    let by_name: Value = app
        .get("/api/clients?q=client11")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(names(by_name), vec![f.clients[11]]);
    let by_phone: Value = app
        .get("/api/clients?q=500000007")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(names(by_phone), vec![f.clients[7]]);
    let by_email: Value = app
        .get("/api/clients?q=client3%40example")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(names(by_email), vec![f.clients[3]]);
    let all: Value = app
        .get("/api/clients?q=KOWAL&limit=100")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(names(all).len(), 12);
    let limited: Value = app
        .get("/api/clients?q=kowal&limit=5")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(names(limited).len(), 5);
    // Special characters are literal, not patterns or FTS syntax.
    for q in ["%%%", "___", "\"\"\"", "a\"b OR c", "*:^"] {
        let resp = app.get(&format!("/api/clients?q={}", urlencode(q))).await;
        assert_eq!(resp.status(), 200, "{q}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(names(body).len(), 0, "{q}");
    }
});

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

both_backends!(clients_search_rejects_bad_parameters, |t| {
    let app = spawn_app(&t).await;
    for (query, param) in [
        ("", "q"),
        ("q=", "q"),
        ("q=ab", "q"),
        ("q=%20%20ab%20", "q"),
        ("limit=5&q=abc&limit=0", "limit"),
        ("q=abc&limit=101", "limit"),
        ("q=abc&limit=zz", "limit"),
    ] {
        let resp = app.get(&format!("/api/clients?{query}")).await;
        assert_eq!(resp.status(), 400, "{query}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["parameter"], param, "{query}");
    }
    let long = "x".repeat(101);
    let resp = app.get(&format!("/api/clients?q={long}")).await;
    assert_eq!(resp.status(), 400);
});
