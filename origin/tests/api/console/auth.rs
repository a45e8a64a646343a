//! Console login, the session cookie, CSRF refusals and what an operator key may do.

use komora_origin::queue::store::now_ms;
use reqwest::header::{COOKIE, LOCATION};
use reqwest::StatusCode;
use serde_json::json;

use super::*;
use crate::both_backends;
use crate::common::{count, fixture, spawn_app};
use crate::queue::support::state_of;

both_backends!(console_pages_need_a_login, |t| {
    let app = spawn_app(&t).await;
    let b = Browser::new(&app);
    for path in [
        "/console/queues",
        "/console/tasks?view=dead",
        "/console/tasks/1",
        "/console/workers",
        "/console/keys",
    ] {
        let r = b.get(path).await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "{path}");
        let to = r.headers()[LOCATION].to_str().unwrap().to_string();
        assert!(
            to.starts_with("/console/login?next=%2Fconsole%2F"),
            "{path}: {to}"
        );
    }
    // An action without a session changes nothing.
    let r = b
        .post_raw("/console/queues/default/pause", &[("csrf", "x")])
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(count(&t.db, "SELECT COUNT(*) FROM queue_pauses").await, 0);
    // A made-up session cookie is no session.
    let mut fake = Browser::new(&app);
    fake.cookie = Some(format!("komora_console={}", "ab".repeat(32)));
    assert_eq!(
        fake.get("/console/queues").await.status(),
        StatusCode::SEE_OTHER
    );
});

both_backends!(
    console_login_refuses_a_bad_key_and_a_missing_login_token,
    |t| {
        let app = spawn_app(&t).await;
        let mut b = Browser::new(&app);
        let r = b.try_login("not-a-key").await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert!(set_cookie(&r, "komora_console").is_none());
        assert!(r.text().await.unwrap().contains("not a live API key"));
        // A revoked key is refused too.
        let (id, key) = komora_origin::store::api_keys::create(&t.db, "old", true)
            .await
            .unwrap();
        komora_origin::store::api_keys::revoke(&t.db, id, now_ms())
            .await
            .unwrap();
        assert_eq!(b.try_login(&key).await.status(), StatusCode::UNAUTHORIZED);
        // The login form's token must come with its cookie (no logins forced from elsewhere).
        let r = b
            .post_raw(
                "/console/login",
                &[("csrf", "abc"), ("key", app.admin_key.as_str())],
            )
            .await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            count(&t.db, "SELECT COUNT(*) FROM console_sessions").await,
            0
        );
    }
);

both_backends!(console_session_ends_with_logout_and_with_its_key, |t| {
    let app = spawn_app(&t).await;
    let b = Browser::login(&app, &app.admin_key).await;
    assert_eq!(
        count(&t.db, "SELECT COUNT(*) FROM console_sessions").await,
        1
    );
    // Logout needs the token as well.
    assert_eq!(
        b.post_raw("/console/logout", &[]).await.status(),
        StatusCode::FORBIDDEN
    );
    let r = b.post("/console/logout", &[]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let cleared = set_cookie(&r, "komora_console").unwrap();
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    assert_eq!(
        count(&t.db, "SELECT COUNT(*) FROM console_sessions").await,
        0
    );
    assert_eq!(
        b.get("/console/queues").await.status(),
        StatusCode::SEE_OTHER
    );

    // Revoking the key ends its sessions at once.
    let (id, key) = komora_origin::store::api_keys::create(&t.db, "temp", true)
        .await
        .unwrap();
    let b = Browser::login(&app, &key).await;
    komora_origin::store::api_keys::revoke(&t.db, id, now_ms())
        .await
        .unwrap();
    assert_eq!(
        b.get("/console/queues").await.status(),
        StatusCode::SEE_OTHER
    );
});

both_backends!(console_cookie_is_secure_when_the_edge_saw_tls, |t| {
    let app = spawn_app(&t).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let page = http
        .get(format!("{}/console/login", app.base))
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    let login = set_cookie(&page, "komora_console_login").unwrap();
    assert!(login.contains("; Secure"), "{login}");
    let token = csrf_in(&page.text().await.unwrap());
    let r = http
        .post(format!("{}/console/login", app.base))
        .header("x-forwarded-proto", "https")
        .header(COOKIE, first_pair(&login))
        .form(&[("csrf", token.as_str()), ("key", app.admin_key.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let set = set_cookie(&r, "komora_console").unwrap();
    assert!(set.contains("; Secure"), "{set}");
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
});

both_backends!(console_actions_need_the_csrf_token, |t| {
    let app = spawn_app(&t).await;
    let b = Browser::login(&app, &app.admin_key).await;
    let dead = dead_task(&app).await;
    for fields in [vec![], vec![("csrf", "0".repeat(64))]] {
        let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = b.post_raw("/console/queues/default/pause", &fields).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert!(r.text().await.unwrap().contains("security token"));
        let r = b
            .post_raw(&format!("/console/tasks/{dead}/retry"), &fields)
            .await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
    }
    assert_eq!(count(&t.db, "SELECT COUNT(*) FROM queue_pauses").await, 0);
    assert_eq!(state_of(&t.db, dead).await, "dead");
    assert_eq!(count(&t.db, "SELECT COUNT(*) FROM console_audit").await, 0);
});

both_backends!(
    console_operator_reads_its_offices_tasks_but_cannot_act,
    |t| {
        let app = spawn_app(&t).await;
        let mine = fixture(&t.db, 2, 1).await;
        // The second conversation belongs to another office.
        let other_office =
            crate::queue::support::office(&t.db, "Europe/Berlin", false, "{}", "[]").await;
        sqlx::query("UPDATE conversations SET office_id = $1 WHERE id = $2")
            .bind(other_office)
            .bind(mine.conversations[1])
            .execute(&t.db.pool)
            .await
            .unwrap();
        let message_of = |conv: i64| {
            let db = t.db.clone();
            async move {
                sqlx::query_scalar::<_, i64>("SELECT id FROM messages WHERE conversation_id = $1")
                    .bind(conv)
                    .fetch_one(&db.pool)
                    .await
                    .unwrap()
            }
        };
        let my_msg = message_of(mine.conversations[0]).await;
        let their_msg = message_of(mine.conversations[1]).await;
        let my_task = task(&app, "console_msg", json!({ "message_id": my_msg })).await;
        let their_task = task(&app, "console_msg", json!({ "message_id": their_msg })).await;
        let (_, key) = komora_origin::store::api_keys::create_key(
            &t.db,
            &komora_origin::store::api_keys::NewKey {
                name: "warsaw-desk".into(),
                role: komora_origin::store::api_keys::Role::Operator,
                offices: vec![mine.office],
                expires_at: None,
            },
        )
        .await
        .unwrap();
        let b = Browser::login(&app, &key).await;
        // Reads: its office's task, not the other office's.
        let page = b.text("/console/tasks").await;
        assert!(page.contains(&format!("/console/tasks/{my_task}\"")));
        assert!(!page.contains(&format!("/console/tasks/{their_task}\"")));
        assert_eq!(
            b.get(&format!("/console/tasks/{my_task}")).await.status(),
            200
        );
        assert_eq!(
            b.get(&format!("/console/tasks/{their_task}"))
                .await
                .status(),
            StatusCode::NOT_FOUND
        );
        let queues = b.text("/console/queues").await;
        assert!(queues.contains("Operator key"));
        assert!(
            !queues.contains("Purge"),
            "no action buttons for an operator"
        );
        // Acts: never, with a valid token.
        for (path, fields) in [
            ("/console/queues/default/pause", vec![]),
            (
                "/console/queues/default/purge",
                vec![("confirm", "default")],
            ),
            (&*format!("/console/tasks/{my_task}/cancel"), vec![]),
            ("/console/tasks/actions", vec![("action", "cancel_all")]),
        ] {
            let r = b.post(path, &fields).await;
            assert_eq!(r.status(), StatusCode::FORBIDDEN, "{path}");
            assert!(r.text().await.unwrap().contains("operator key"));
        }
        assert_eq!(state_of(&t.db, my_task).await, "queued");
        assert_eq!(count(&t.db, "SELECT COUNT(*) FROM queue_pauses").await, 0);
        assert_eq!(count(&t.db, "SELECT COUNT(*) FROM tasks").await, 2);
        assert_eq!(count(&t.db, "SELECT COUNT(*) FROM console_audit").await, 0);
    }
);
