//! Each console action's effect on the database and its audit row.

use komora_origin::queue::store::now_ms;
use reqwest::header::LOCATION;
use reqwest::StatusCode;
use serde_json::json;

use super::*;
use crate::both_backends;
use crate::common::{count, spawn_app};
use crate::queue::support::{handler, state_of, worker};

both_backends!(
    console_retry_run_now_and_cancel_change_the_task_and_are_audited,
    |t| {
        let app = spawn_app(&t).await;
        let b = Browser::login(&app, &app.admin_key).await;
        let dead = dead_task(&app).await;

        // Retry: dead -> queued with a fresh budget; the error history stays.
        let r = b.post(&format!("/console/tasks/{dead}/retry"), &[]).await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        assert_eq!(
            r.headers()[LOCATION],
            format!("/console/tasks/{dead}?done=retry&n=1").as_str()
        );
        let row = komora_origin::queue::store::get(&t.db, dead)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.state.as_str(), "queued");
        assert_eq!(row.attempts, 0);
        assert_eq!(row.errors.as_array().unwrap().len(), 1);
        // Retrying it again is a 400 page (it is not dead any more), not a 500.
        let r = b.post(&format!("/console/tasks/{dead}/retry"), &[]).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);

        // Run now: a task scheduled an hour ahead becomes due.
        let later = task(&app, "console_later", json!({})).await;
        sqlx::query("UPDATE tasks SET run_at = $1 WHERE id = $2")
            .bind(now_ms() + 3_600_000)
            .bind(later)
            .execute(&t.db.pool)
            .await
            .unwrap();
        let before = now_ms();
        let r = b
            .post(&format!("/console/tasks/{later}/run_now"), &[])
            .await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        let row = komora_origin::queue::store::get(&t.db, later)
            .await
            .unwrap()
            .unwrap();
        assert!(row.run_at >= before && row.run_at <= now_ms(), "due now");

        // Cancel: queued -> dead, with who cancelled it as the last error.
        let r = b.post(&format!("/console/tasks/{later}/cancel"), &[]).await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        let row = komora_origin::queue::store::get(&t.db, later)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.state.as_str(), "dead");
        assert!(row.last_error.unwrap().contains("test-admin"));

        // Bad input: 4xx pages.
        assert_eq!(
            b.post("/console/tasks/abc/retry", &[]).await.status(),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            b.post("/console/tasks/999999/retry", &[]).await.status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            b.post(&format!("/console/tasks/{dead}/explode"), &[])
                .await
                .status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            b.get("/console/tasks?view=nope").await.status(),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            b.get("/console/tasks/0").await.status(),
            StatusCode::BAD_REQUEST
        );

        // The audit: one row per action, shown on the task's page with who did it.
        assert_eq!(audit_rows(&app, "retry").await, 1);
        assert_eq!(audit_rows(&app, "run_now").await, 1);
        assert_eq!(audit_rows(&app, "cancel").await, 1);
        let who: String = sqlx::query_scalar::<_, String>(
            "SELECT key_name FROM console_audit WHERE action = 'retry'",
        )
        .fetch_one(&t.db.pool)
        .await
        .unwrap();
        assert_eq!(who, "test-admin");
        let page = b.text(&format!("/console/tasks/{dead}")).await;
        assert!(
            page.contains("<strong>retry</strong> by test-admin"),
            "{page}"
        );
        assert!(page.contains("broken on purpose"), "error timeline shown");
        let page = b.text(&format!("/console/tasks/{later}")).await;
        assert!(page.contains("<strong>run_now</strong> by test-admin"));
        assert!(page.contains("<strong>cancel</strong> by test-admin"));
    }
);

both_backends!(console_bulk_actions_on_a_selection_and_on_a_filter, |t| {
    let app = spawn_app(&t).await;
    let b = Browser::login(&app, &app.admin_key).await;
    let mut dead = Vec::new();
    for _ in 0..4 {
        dead.push(dead_task(&app).await);
    }
    let waiting = task(&app, "console_other", json!({ "needle": "x" })).await;
    // A selection of two.
    let (a, c) = (dead[0].to_string(), dead[1].to_string());
    let r = b
        .post(
            "/console/tasks/actions",
            &[
                ("action", "retry"),
                ("ids", &a),
                ("ids", &c),
                ("back", "/console/tasks?view=dead"),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        r.headers()[LOCATION],
        "/console/tasks?view=dead&done=retry&n=2"
    );
    assert_eq!(state_of(&t.db, dead[0]).await, "queued");
    assert_eq!(state_of(&t.db, dead[1]).await, "queued");
    assert_eq!(state_of(&t.db, dead[2]).await, "dead");
    // Everything the filter matches: the other two dead ones, not the queued task.
    let r = b
        .post(
            "/console/tasks/actions",
            &[
                ("action", "retry_all"),
                ("view", "dead"),
                ("kind", "console_fail"),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(r.headers()[LOCATION]
        .to_str()
        .unwrap()
        .ends_with("done=retry&n=2"));
    for id in &dead {
        assert_eq!(state_of(&t.db, *id).await, "queued");
    }
    // Cancel everything whose payload contains "needle": only that task.
    let r = b
        .post(
            "/console/tasks/actions",
            &[("action", "cancel_all"), ("q", "NEEDLE")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(state_of(&t.db, waiting).await, "dead");
    assert_eq!(state_of(&t.db, dead[0]).await, "queued");
    assert_eq!(audit_rows(&app, "retry").await, 4, "one audit row per task");
    assert_eq!(audit_rows(&app, "cancel").await, 1);
    // Nothing selected, or a bad id: 400 pages.
    assert_eq!(
        b.post("/console/tasks/actions", &[("action", "retry")])
            .await
            .status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        b.post(
            "/console/tasks/actions",
            &[("action", "retry"), ("ids", "x1")]
        )
        .await
        .status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        b.post("/console/tasks/actions", &[("action", "zap"), ("ids", "1")])
            .await
            .status(),
        StatusCode::BAD_REQUEST
    );
    // The list shows the filter's tasks.
    let page = b.text("/console/tasks?kind=console_other").await;
    assert!(page.contains(&format!("/console/tasks/{waiting}\"")));
    assert!(!page.contains(&format!("/console/tasks/{}\"", dead[0])));
    // Find by id goes to the task's own page.
    let r = b.get(&format!("/console/tasks?id={waiting}")).await;
    assert_eq!(
        r.headers()[LOCATION],
        format!("/console/tasks/{waiting}").as_str()
    );
});

both_backends!(console_pause_stops_claims_until_resume, |t| {
    let app = spawn_app(&t).await;
    let b = Browser::login(&app, &app.admin_key).await;
    let id = task(&app, "console_noop", json!({})).await;
    let w =
        worker(&app.state.db, &app.state.config).with_handler("console_noop", handler(|_| Ok(())));
    let r = b.post("/console/queues/default/pause", &[]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(count(&t.db, "SELECT COUNT(*) FROM queue_pauses").await, 1);
    let page = b.text("/console/queues").await;
    assert!(page.contains("Paused by test-admin"), "{page}");
    assert!(
        w.run_one(now_ms()).await.unwrap().is_none(),
        "nothing claimed"
    );
    assert_eq!(state_of(&t.db, id).await, "queued");
    let r = b.post("/console/queues/default/resume", &[]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let out = w
        .run_one(now_ms())
        .await
        .unwrap()
        .expect("claimed after resume");
    assert_eq!(out.id(), id);
    assert_eq!(state_of(&t.db, id).await, "done");
    assert_eq!(audit_rows(&app, "pause").await, 1);
    assert_eq!(audit_rows(&app, "resume").await, 1);
    assert_eq!(
        b.post("/console/queues/nope/pause", &[]).await.status(),
        StatusCode::NOT_FOUND
    );
    // The queues page counts it done this minute.
    let page = b.text("/console/queues").await;
    assert!(page.contains("1 done in the last 60 minutes"), "{page}");
});

both_backends!(console_purge_needs_the_typed_queue_name, |t| {
    let app = spawn_app(&t).await;
    let b = Browser::login(&app, &app.admin_key).await;
    for _ in 0..3 {
        task(&app, "console_noop", json!({})).await;
    }
    for confirm in ["", "low", "defaul"] {
        let r = b
            .post("/console/queues/default/purge", &[("confirm", confirm)])
            .await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{confirm:?}");
    }
    assert_eq!(count(&t.db, "SELECT COUNT(*) FROM tasks").await, 3);
    let r = b
        .post("/console/queues/default/purge", &[("confirm", "default")])
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        r.headers()[LOCATION],
        "/console/queues?done=purge&queue=default&n=3"
    );
    assert_eq!(count(&t.db, "SELECT COUNT(*) FROM tasks").await, 0);
    let detail: String =
        sqlx::query_scalar::<_, String>("SELECT detail FROM console_audit WHERE action = 'purge'")
            .fetch_one(&t.db.pool)
            .await
            .unwrap();
    assert_eq!(detail, "3 waiting tasks deleted");
    assert!(b
        .text("/console/queues")
        .await
        .contains("3 waiting tasks deleted"));
});
