//! The ops console under `/console/`: login with an API key, the session cookie, CSRF
//! refusals, every action's effect on the database and its audit row, pause stopping
//! claims, purge's typed confirmation, operator keys reading but not acting, the
//! workers' heartbeat records, hashed immutable assets.

use std::sync::Arc;

use komora_origin::queue::store::now_ms;
use komora_origin::queue::tasks::TaskError;
use komora_origin::queue::NewTask;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::StatusCode;
use serde_json::json;

use crate::both_backends;
use crate::common::{count, fixture, spawn_app, TestApp};
use crate::queue::support::{enqueue, handler, state_of, worker};

/// A browser of the console: no redirects followed, cookies kept by hand.
struct Browser {
    base: String,
    http: reqwest::Client,
    cookie: Option<String>,
    csrf: String,
}

/// The value of the first `name="csrf" value="..."` in a page.
fn csrf_in(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    html[at..].split('"').next().unwrap().to_string()
}

/// The `name=value` of cookie `name` set by `resp`, if any.
fn set_cookie(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|v| v.starts_with(&format!("{name}=")))
}

fn first_pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_string()
}

impl Browser {
    fn new(app: &TestApp) -> Browser {
        Browser {
            base: app.base.clone(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookie: None,
            csrf: String::new(),
        }
    }

    /// Logs in with `key` through the login form; returns the POST's response.
    async fn try_login(&mut self, key: &str) -> reqwest::Response {
        let page = self
            .http
            .get(format!("{}/console/login?next=/console/queues", self.base))
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), 200);
        let login_cookie = first_pair(&set_cookie(&page, "komora_console_login").unwrap());
        let token = csrf_in(&page.text().await.unwrap());
        self.http
            .post(format!("{}/console/login", self.base))
            .header(COOKIE, login_cookie)
            .form(&[
                ("csrf", token.as_str()),
                ("key", key),
                ("next", "/console/queues"),
            ])
            .send()
            .await
            .unwrap()
    }

    async fn login(app: &TestApp, key: &str) -> Browser {
        let mut b = Browser::new(app);
        let resp = b.try_login(key).await;
        assert_eq!(resp.status(), StatusCode::SEE_OTHER);
        assert_eq!(resp.headers()[LOCATION], "/console/queues");
        let set = set_cookie(&resp, "komora_console").expect("a session cookie");
        assert!(set.contains("HttpOnly"), "{set}");
        assert!(set.contains("SameSite=Strict"), "{set}");
        assert!(set.contains("Path=/console/"), "{set}");
        assert!(!set.contains("Secure"), "plain HTTP: no Secure: {set}");
        b.cookie = Some(first_pair(&set));
        let page = b.get("/console/queues").await;
        assert_eq!(page.status(), 200);
        b.csrf = csrf_in(&page.text().await.unwrap());
        b
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        let mut req = self.http.get(format!("{}{path}", self.base));
        if let Some(c) = &self.cookie {
            req = req.header(COOKIE, c);
        }
        req.send().await.unwrap()
    }

    async fn text(&self, path: &str) -> String {
        let r = self.get(path).await;
        assert_eq!(r.status(), 200, "GET {path}");
        r.text().await.unwrap()
    }

    /// POSTs `fields` plus this session's CSRF token.
    async fn post(&self, path: &str, fields: &[(&str, &str)]) -> reqwest::Response {
        let mut all = vec![("csrf", self.csrf.as_str())];
        all.extend_from_slice(fields);
        self.post_raw(path, &all).await
    }

    async fn post_raw(&self, path: &str, fields: &[(&str, &str)]) -> reqwest::Response {
        let mut req = self.http.post(format!("{}{path}", self.base)).form(fields);
        if let Some(c) = &self.cookie {
            req = req.header(COOKIE, c);
        }
        req.send().await.unwrap()
    }
}

/// A task of kind `kind` enqueued now in its default queue.
async fn task(app: &TestApp, kind: &str, payload: serde_json::Value) -> i64 {
    enqueue(
        &app.state.db,
        &app.state.config,
        NewTask::new(kind, payload),
        now_ms(),
    )
    .await
}

/// A dead task: enqueued and run once by a worker whose handler fails for good.
async fn dead_task(app: &TestApp) -> i64 {
    let id = task(app, "console_fail", json!({ "n": 1 })).await;
    let w = worker(&app.state.db, &app.state.config).with_handler(
        "console_fail",
        handler(|_| Err(TaskError::Permanent("broken on purpose".into()))),
    );
    w.run_one(now_ms()).await.unwrap().unwrap();
    assert_eq!(state_of(&app.state.db, id).await, "dead");
    id
}

async fn audit_rows(app: &TestApp, action: &str) -> i64 {
    count(
        &app.state.db,
        sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM console_audit WHERE action = '{action}'"
        )),
    )
    .await
}

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

/// A handler that runs until its watch turns true.
struct WaitFor(tokio::sync::watch::Receiver<bool>);

#[async_trait::async_trait]
impl komora_origin::queue::tasks::TaskHandler<komora_origin::queue::tasks::TaskContext>
    for WaitFor
{
    async fn run(
        &self,
        _ctx: &komora_origin::queue::tasks::TaskContext,
        _task: &komora_origin::queue::store::ClaimedTask,
    ) -> Result<(), TaskError> {
        let mut rx = self.0.clone();
        let _ = rx.wait_for(|v| *v).await;
        Ok(())
    }
}

both_backends!(
    console_workers_page_shows_heartbeats_and_running_tasks,
    |t| {
        let app = spawn_app(&t).await;
        let b = Browser::login(&app, &app.admin_key).await;
        let (release, wait) = tokio::sync::watch::channel(false);
        let id = task(&app, "console_slow", json!({})).await;
        let w = Arc::new(
            worker(&app.state.db, &app.state.config)
                .with_handler("console_slow", Arc::new(WaitFor(wait))),
        );
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let run = tokio::spawn(w.clone().run(stop_rx));
        // The worker records itself at its first heartbeat and claims the task.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let page = b.text("/console/workers").await;
            if page.contains(&w.id) && page.contains(&format!("/console/tasks/{id}\"")) {
                assert!(page.contains("alive"));
                assert!(page.contains("1 / 16"), "running / concurrency: {page}");
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "worker not shown: {page}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        release.send(true).unwrap();
        stop_tx.send(true).unwrap();
        run.await.unwrap();
        assert_eq!(
            count(&t.db, "SELECT COUNT(*) FROM queue_workers").await,
            0,
            "removed on stop"
        );
        assert!(!b.text("/console/workers").await.contains(&w.id));
    }
);

both_backends!(console_assets_are_hashed_and_immutable, |t| {
    let app = spawn_app(&t).await;
    let b = Browser::login(&app, &app.admin_key).await;
    let page = b.text("/console/queues").await;
    let at = page.find("/console/assets/console.").unwrap();
    let css = page[at..].split('"').next().unwrap().to_string();
    assert!(css.ends_with(".css"), "{css}");
    // No session needed, cached for a year by anyone.
    let r = reqwest::get(format!("{}{css}", app.base)).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["cache-control"],
        "public, max-age=31536000, immutable"
    );
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/css"));
    let body = r.bytes().await.unwrap();
    use sha2::Digest;
    let hash = hex::encode(sha2::Sha256::digest(&body));
    assert!(
        css.contains(&hash[..16]),
        "the name carries the content hash"
    );
    let r = reqwest::get(format!("{}/console/assets/console.0000.css", app.base))
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // Pages are private.
    let r = b.get("/console/queues").await;
    assert_eq!(r.headers()["cache-control"], "private, no-store");
    assert!(r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("frame-ancestors 'none'"));
});
