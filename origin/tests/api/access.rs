//! Access control: admin and operator keys, office scoping everywhere in `/api`, the admin
//! API on the internal listener only, expiry, revocation, last use, and `keys` commands.
//! Asserted on statuses, bodies and rows.
//!
//! Over 600 lines on purpose: the access matrix (role x endpoint x office) is one table of
//! cases, and its checks read best side by side; each test is short and self-contained.

use std::collections::BTreeSet;

use komora_origin::store::api_keys::{self, NewKey, Role};
use komora_origin::store::{clients, messages};
use serde_json::{json, Value};

use crate::both_backends;
use crate::common::{count, fixture, spawn_app, TestApp};

/// A second office with `n` conversations (one client each, one inbound message each).
async fn other_office(db: &komora_origin::db::Db, n: usize) -> (i64, Vec<i64>, Vec<i64>) {
    let mut tx = db.pool.begin().await.unwrap();
    let office = clients::create_office(&mut tx, "Krakow", "Europe/Warsaw")
        .await
        .unwrap();
    let (mut convs, mut cls) = (Vec::new(), Vec::new());
    for i in 0..n {
        let client = clients::create_client(
            &mut tx,
            &format!("Zofia{i} Nowak"),
            Some(&format!("+4860000{i:04}")),
            None,
        )
        .await
        .unwrap();
        let conv = clients::create_conversation(
            &mut tx,
            "telegram",
            client,
            Some(office),
            &format!("kr-{i}"),
        )
        .await
        .unwrap();
        messages::insert_message(
            &mut tx,
            &messages::NewMessage::inbound(conv, "passport scan"),
        )
        .await
        .unwrap();
        convs.push(conv);
        cls.push(client);
    }
    tx.commit().await.unwrap();
    (office, convs, cls)
}

async fn operator(db: &komora_origin::db::Db, offices: Vec<i64>) -> String {
    let key = NewKey {
        name: "operator".into(),
        role: Role::Operator,
        offices,
        expires_at: None,
    };
    api_keys::create_key(db, &key).await.unwrap().1
}

async fn get(app: &TestApp, key: &str, path: &str) -> reqwest::Response {
    app.client
        .get(format!("{}{path}", app.base))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
}

async fn post(app: &TestApp, key: &str, path: &str, body: Value) -> reqwest::Response {
    app.client
        .post(format!("{}{path}", app.base))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap()
}

fn ids(v: &Value, list: &str) -> BTreeSet<i64> {
    v[list]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_i64().unwrap())
        .collect()
}

both_backends!(operator_sees_only_its_offices, |t| {
    let f = fixture(&t.db, 4, 2).await;
    let (krakow, kr_convs, kr_clients) = other_office(&t.db, 3).await;
    let app = spawn_app(&t).await;
    let op = operator(&t.db, vec![f.office]).await;

    // Inbox: exactly the operator's office, whatever the platform filter or page.
    let inbox: Value = get(&app, &op, "/api/inbox?limit=200")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        ids(&inbox, "conversations"),
        f.conversations.iter().copied().collect()
    );
    let tg: Value = get(&app, &op, "/api/inbox?platform=telegram")
        .await
        .json()
        .await
        .unwrap();
    for c in tg["conversations"].as_array().unwrap() {
        assert_eq!(c["office_id"], f.office);
    }
    let page: Value = get(&app, &op, "/api/inbox?limit=2")
        .await
        .json()
        .await
        .unwrap();
    let cursor = page["next_cursor"].as_str().unwrap().to_string();
    let rest: Value = get(&app, &op, &format!("/api/inbox?limit=200&cursor={cursor}"))
        .await
        .json()
        .await
        .unwrap();
    let mut paged = ids(&page, "conversations");
    paged.extend(ids(&rest, "conversations"));
    assert_eq!(paged, f.conversations.iter().copied().collect());
    // The admin still sees both offices.
    let all: Value = app.get("/api/inbox?limit=200").await.json().await.unwrap();
    assert_eq!(ids(&all, "conversations").len(), 7);

    // Another office's conversation is indistinguishable from a missing one.
    let missing = get(&app, &op, "/api/conversations/999999/messages").await;
    assert_eq!(missing.status(), 404);
    let missing: Value = missing.json().await.unwrap();
    let foreign = kr_convs[0];
    let r = get(&app, &op, &format!("/api/conversations/{foreign}/messages")).await;
    assert_eq!(r.status(), 404);
    assert_eq!(r.json::<Value>().await.unwrap(), missing);
    let own = get(
        &app,
        &op,
        &format!("/api/conversations/{}/messages", f.conversations[0]),
    )
    .await;
    assert_eq!(own.status(), 200);

    // Writing to it is refused the same way, and writes nothing.
    let before = count(&t.db, "SELECT count(*) FROM messages").await;
    let tasks_before = count(&t.db, "SELECT count(*) FROM tasks").await;
    let r = post(
        &app,
        &op,
        &format!("/api/conversations/{foreign}/messages"),
        json!({"text": "hi"}),
    )
    .await;
    assert_eq!(r.status(), 404);
    let r = post(
        &app,
        &op,
        &format!("/api/conversations/{foreign}/read"),
        json!({}),
    )
    .await;
    assert_eq!(r.status(), 404);
    assert_eq!(count(&t.db, "SELECT count(*) FROM messages").await, before);
    assert_eq!(
        count(&t.db, "SELECT count(*) FROM tasks").await,
        tasks_before
    );
    let unread = count(
        &t.db,
        sqlx::AssertSqlSafe(format!(
            "SELECT unread_count FROM conversations WHERE id = {foreign}"
        )),
    )
    .await;
    assert_eq!(unread, 1, "not marked read");
    // Its own conversations it can write to.
    let r = post(
        &app,
        &op,
        &format!("/api/conversations/{}/messages", f.conversations[0]),
        json!({"text": "ready"}),
    )
    .await;
    assert_eq!(r.status(), 201);

    // Client search: only clients with a conversation in the operator's offices.
    let r: Value = get(&app, &op, "/api/clients?q=nowak&limit=100")
        .await
        .json()
        .await
        .unwrap();
    assert!(ids(&r, "clients").is_empty(), "{r}");
    let r: Value = get(&app, &op, "/api/clients?q=kowal&limit=100")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(ids(&r, "clients"), f.clients.iter().copied().collect());
    let r: Value = app
        .get("/api/clients?q=nowak&limit=100")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(ids(&r, "clients"), kr_clients.iter().copied().collect());

    // An operator of both offices sees both.
    let both = operator(&t.db, vec![f.office, krakow]).await;
    let inbox: Value = get(&app, &both, "/api/inbox?limit=200")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(ids(&inbox, "conversations").len(), 7);
});

both_backends!(admin_api_is_internal_and_admin_only, |t| {
    let f = fixture(&t.db, 1, 1).await;
    let app = spawn_app(&t).await;
    let op = operator(&t.db, vec![f.office]).await;
    let http = &app.client;
    // The public listener does not have /metrics or /admin/*, whoever asks.
    for key in [app.admin_key.as_str(), op.as_str()] {
        for path in ["/metrics", "/admin/queues", "/admin/anything"] {
            let r = get(&app, key, path).await;
            assert_eq!(r.status(), 404, "{path}");
            let body: Value = r.json().await.unwrap();
            assert!(body["error"].is_string(), "JSON error for {path}");
        }
    }
    let r = http
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // Probes stay on the public listener.
    for path in ["/healthz", "/readyz"] {
        let r = http
            .get(format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    // The internal listener: metrics, probes, and the admin API for admin keys only.
    let r = http
        .get(format!("{}/metrics", app.internal))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("komora_queue_depth"));
    for path in ["/healthz", "/readyz"] {
        let r = http
            .get(format!("{}{path}", app.internal))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    let queues = format!("{}/admin/queues", app.internal);
    let r = http.get(&queues).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = http.get(&queues).bearer_auth(&op).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "forbidden");
    let r = http
        .get(&queues)
        .bearer_auth(&app.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["queues"].as_array().unwrap().len(), 3);
    // The internal listener has no /api.
    let r = http
        .get(format!("{}/api/inbox", app.internal))
        .bearer_auth(&app.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
});

both_backends!(operator_attaches_only_media_it_may_see, |t| {
    let f = fixture(&t.db, 1, 1).await;
    let (_, kr_convs, _) = other_office(&t.db, 1).await;
    let app = spawn_app(&t).await;
    let op = operator(&t.db, vec![f.office]).await;
    // The admin attaches a document to the other office's conversation.
    let passport = b"\x89PNG\r\n\x1a\nKrakow passport".to_vec();
    let up: Value = app
        .upload(passport.clone(), "image/png")
        .await
        .json()
        .await
        .unwrap();
    let foreign_media = up["id"].as_i64().unwrap();
    let r = app
        .post_json(
            &format!("/api/conversations/{}/messages", kr_convs[0]),
            json!({"media_ids": [foreign_media]}),
        )
        .await;
    assert_eq!(r.status(), 201);

    // The operator cannot pull it into its own conversation by id (and so get its URL).
    let own = f.conversations[0];
    let before = count(&t.db, "SELECT count(*) FROM message_media").await;
    let r = post(
        &app,
        &op,
        &format!("/api/conversations/{own}/messages"),
        json!({"media_ids": [foreign_media]}),
    )
    .await;
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["parameter"], "media_ids");
    assert_eq!(
        count(&t.db, "SELECT count(*) FROM message_media").await,
        before
    );

    // What it uploads itself it may attach; so may it what it re-uploads (it has the bytes).
    let mine = app
        .client
        .post(format!("{}/api/media", app.base))
        .bearer_auth(&op)
        .header("content-type", "image/png")
        .body(b"\x89PNG\r\n\x1a\nmy scan".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(mine.status(), 201);
    let mine: Value = mine.json().await.unwrap();
    let again = app
        .client
        .post(format!("{}/api/media", app.base))
        .bearer_auth(&op)
        .body(passport)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["id"], foreign_media);
    let r = post(
        &app,
        &op,
        &format!("/api/conversations/{own}/messages"),
        json!({"media_ids": [mine["id"], foreign_media]}),
    )
    .await;
    assert_eq!(r.status(), 201);
});

both_backends!(expired_and_revoked_keys_do_not_authenticate, |t| {
    let f = fixture(&t.db, 1, 1).await;
    let app = spawn_app(&t).await;
    let now = komora_origin::db::now_ms();
    let key = |expires_at| NewKey {
        name: "k".into(),
        role: Role::Operator,
        offices: vec![f.office],
        expires_at,
    };
    let (_, expired) = api_keys::create_key(&t.db, &key(Some(now - 1)))
        .await
        .unwrap();
    let (id, live) = api_keys::create_key(&t.db, &key(Some(now + 3_600_000)))
        .await
        .unwrap();
    assert_eq!(get(&app, &expired, "/api/inbox").await.status(), 401);
    assert_eq!(get(&app, &live, "/api/inbox").await.status(), 200);

    // The use is recorded (off the request path: wait for the row).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let k = api_keys::list(&t.db).await.unwrap();
        let k = k.iter().find(|k| k.id == id).unwrap();
        if let Some(at) = k.last_used_at {
            assert!(at >= now);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "last_used_at never set"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    assert!(api_keys::revoke(&t.db, id, komora_origin::db::now_ms())
        .await
        .unwrap());
    assert_eq!(get(&app, &live, "/api/inbox").await.status(), 401);
    assert!(!api_keys::revoke(&t.db, 999_999, 0).await.unwrap());
    let k = api_keys::list(&t.db).await.unwrap();
    let k = k.iter().find(|k| k.id == id).unwrap();
    assert!(k.revoked_at.is_some());
    assert_eq!(k.offices, vec![f.office]);

    // Creating: an operator needs offices that exist; an admin takes none.
    let bad = |role, offices: Vec<i64>| NewKey {
        name: "x".into(),
        role,
        offices,
        expires_at: None,
    };
    for (role, offices) in [
        (Role::Operator, vec![]),
        (Role::Operator, vec![999_999]),
        (Role::Admin, vec![f.office]),
    ] {
        assert!(api_keys::create_key(&t.db, &bad(role, offices))
            .await
            .is_err());
    }
});

fn bin() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_komora-origin"))
}

#[test]
fn keys_commands_create_list_and_revoke() {
    let dir = tempfile::tempdir().unwrap();
    let db_url = format!("sqlite://{}/k.db", dir.path().display());
    let run = |args: &[&str]| {
        let out = bin()
            .args(args)
            .env("KOMORA_DATABASE_URL", &db_url)
            .env(
                "KOMORA_MEDIA_STORE_URL",
                format!("file://{}/m", dir.path().display()),
            )
            .current_dir(dir.path())
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (ok, _, err) = run(&["seed", "--conversations", "4", "--messages", "1"]);
    assert!(ok, "{err}");
    let (ok, admin, err) = run(&["keys", "create", "--name", "boss", "--admin"]);
    assert!(ok, "{err}");
    let admin = admin.trim().to_string();
    assert_eq!(admin.len(), 64);
    assert!(admin
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    let (ok, op, err) = run(&[
        "keys",
        "create",
        "--name",
        "anna",
        "--office",
        "1",
        "--office",
        "2",
        "--expires-in",
        "90d",
    ]);
    assert!(ok, "{err}");
    assert_eq!(op.trim().len(), 64);
    // Refused: neither role, both, an unknown office, a bad lifetime.
    for args in [
        &["keys", "create", "--name", "x"][..],
        &["keys", "create", "--name", "x", "--admin", "--office", "1"],
        &["keys", "create", "--name", "x", "--office", "999"],
        &[
            "keys",
            "create",
            "--name",
            "x",
            "--admin",
            "--expires-in",
            "soon",
        ],
    ] {
        let (ok, out, _) = run(args);
        assert!(!ok, "{args:?}");
        assert!(out.trim().is_empty(), "no token printed for {args:?}");
    }
    let (_, _, err) = run(&["keys", "create", "--name", "x", "--office", "999"]);
    assert!(err.contains("office 999"), "{err}");

    let (ok, list, err) = run(&["keys", "list"]);
    assert!(ok, "{err}");
    let rows: Vec<Vec<&str>> = list.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(rows.len(), 2, "{list}");
    assert_eq!(&rows[0][..4], ["1", "boss", "admin", "all"]);
    assert_eq!(&rows[1][..4], ["2", "anna", "operator", "1,2"]);
    assert_eq!(rows[0][6], "-", "the admin key never expires");
    let year: i32 = rows[1][6][..4].parse().unwrap();
    assert!(year >= 2026, "{list}");
    assert_eq!(rows[1][7], "-", "not revoked");

    let (ok, _, err) = run(&["keys", "revoke", "2"]);
    assert!(ok, "{err}");
    let (ok, _, _) = run(&["keys", "revoke", "77"]);
    assert!(!ok, "no such key");
    let (_, list, _) = run(&["keys", "list"]);
    let row: Vec<&str> = list.lines().nth(1).unwrap().split('\t').collect();
    assert_ne!(row[7], "-", "revoked: {list}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let db = komora_origin::db::Db::connect(&db_url, &Default::default())
            .await
            .unwrap();
        assert!(api_keys::authenticate(&db, op.trim())
            .await
            .unwrap()
            .is_none());
        let k = api_keys::authenticate(&db, &admin).await.unwrap().unwrap();
        assert_eq!(k.role, Role::Admin);
    });
}

both_backends!(an_operators_inbox_walks_its_office_index, |t| {
    use sqlx::Row;
    let dir = tempfile::tempdir().unwrap();
    let store = komora_origin::media::store::open(&komora_origin::config::StoreLocation::Local(
        dir.path().to_path_buf(),
    ))
    .unwrap();
    let args = komora_origin::seed::SeedArgs {
        conversations: 3000,
        messages: 1,
        rng_seed: 1,
    };
    komora_origin::seed::seed(&t.db, &store, &args)
        .await
        .unwrap();
    let sql = komora_origin::store::inbox::inbox_sql_scoped(false, false, Some(1));
    let mut conn = t.db.pool.acquire().await.unwrap();
    let (explain, col) = match t.db.backend {
        komora_origin::db::Backend::Sqlite => (format!("EXPLAIN QUERY PLAN {sql}"), 3),
        komora_origin::db::Backend::Postgres => {
            sqlx::query("SET enable_seqscan = off")
                .execute(&mut *conn)
                .await
                .unwrap();
            (format!("EXPLAIN {sql}"), 0)
        }
    };
    let rows = sqlx::query(sqlx::AssertSqlSafe(explain))
        .bind(1i64)
        .bind(50i64)
        .bind(0i64)
        .fetch_all(&mut *conn)
        .await
        .unwrap();
    let lines: Vec<String> = rows.iter().map(|r| r.get::<String, _>(col)).collect();
    let plan = lines.join("\n");
    assert!(plan.contains("conversations_office_inbox"), "{plan}");
    assert!(!plan.contains("TEMP B-TREE FOR ORDER BY"), "{plan}");
    if t.db.backend == komora_origin::db::Backend::Postgres {
        // The page is the first rows of the index walk, not a sort of the office's rows
        // (the joins above the 50 rows may sort those).
        let limit = lines.iter().position(|l| l.contains("Limit")).unwrap();
        assert!(
            lines[limit + 1].contains("Index Scan using conversations_office_inbox"),
            "{plan}"
        );
    }
});

#[test]
fn internal_listen_is_validated() {
    use komora_origin::config::Config;
    let keys = |text: &str| -> Vec<String> {
        Config::parse("<t>", text)
            .err()
            .map(|e| e.errors.into_iter().map(|e| e.key).collect())
            .unwrap_or_default()
    };
    assert_eq!(
        keys("[server]\ninternal_listen = \"nope\"\n"),
        ["server.internal_listen"]
    );
    assert_eq!(
        keys("[server]\nlisten = \"0.0.0.0:8081\"\ninternal_listen = \"0.0.0.0:8081\"\n"),
        ["server.internal_listen"]
    );
    let c = Config::defaults().unwrap();
    assert_eq!(c.server.internal_listen.to_string(), "127.0.0.1:9181");
}

/// The real `komora-origin serve`: public and internal listeners from the config file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_binds_the_internal_listener_from_the_config() {
    let free = || {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (public, internal) = (free(), free());
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("origin.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{public}\"\ninternal_listen = \"127.0.0.1:{internal}\"\n\
             [database]\nurl = \"sqlite://{0}/o.db\"\n[media]\nstore_url = \"file://{0}/m\"\n\
             signed_urls = false\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let child = bin()
        .arg("--config")
        .arg(&config)
        .arg("serve")
        .env_remove("KOMORA_DATABASE_URL")
        .env_remove("KOMORA_LISTEN")
        .env_remove("KOMORA_INTERNAL_LISTEN")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _child = Kill(child);
    let http = reqwest::Client::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while http
        .get(format!("http://127.0.0.1:{internal}/healthz"))
        .send()
        .await
        .is_err()
    {
        assert!(std::time::Instant::now() < deadline, "serve did not start");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let status = |url: String| {
        let http = http.clone();
        async move { http.get(url).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(
        status(format!("http://127.0.0.1:{internal}/metrics")).await,
        200
    );
    assert_eq!(
        status(format!("http://127.0.0.1:{internal}/admin/queues")).await,
        401
    );
    assert_eq!(
        status(format!("http://127.0.0.1:{public}/metrics")).await,
        404
    );
    assert_eq!(
        status(format!("http://127.0.0.1:{public}/admin/queues")).await,
        404
    );
    assert_eq!(
        status(format!("http://127.0.0.1:{public}/readyz")).await,
        200
    );
}
