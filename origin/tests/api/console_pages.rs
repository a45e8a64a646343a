//! The console's Edge caches, Keys, Doctor and Inbox preview pages: a session is required,
//! actions refuse a missing CSRF token and an operator key, a created key's token is
//! shown once and works against `/api` until it is revoked, the doctor page shows every
//! check, the inbox preview lists conversations with thumbnails that load, and bad input
//! is a 4xx page. (A purge reaching a real edge is `stack/tests/console_pages.rs`.)

use komora_origin::edge_admin::EdgeFile;
use komora_origin::store::api_keys::{self, NewKey, Role};
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::StatusCode;

use crate::both_backends;
use crate::common::{count, fixture, spawn_app, spawn_app_with, TestApp};

/// A console user: cookies by hand, no redirects followed.
struct Browser {
    base: String,
    http: reqwest::Client,
    cookie: String,
    csrf: String,
}

fn csrf_in(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    html[at..].split('"').next().unwrap().to_string()
}

fn cookie_pair(resp: &reqwest::Response, name: &str) -> String {
    resp.headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap())
        .find(|v| v.starts_with(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} cookie"))
        .split(';')
        .next()
        .unwrap()
        .to_string()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

impl Browser {
    async fn login(app: &TestApp, key: &str) -> Browser {
        let http = client();
        let page = http
            .get(format!("{}/console/login", app.base))
            .send()
            .await
            .unwrap();
        let login_cookie = cookie_pair(&page, "komora_console_login");
        let token = csrf_in(&page.text().await.unwrap());
        let resp = http
            .post(format!("{}/console/login", app.base))
            .header(COOKIE, login_cookie)
            .form(&[
                ("csrf", token.as_str()),
                ("key", key),
                ("next", "/console/doctor"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::SEE_OTHER, "login");
        let mut b = Browser {
            base: app.base.clone(),
            http,
            cookie: cookie_pair(&resp, "komora_console"),
            csrf: String::new(),
        };
        let page = b.get("/console/inbox").await;
        assert_eq!(page.status(), 200);
        b.csrf = csrf_in(&page.text().await.unwrap());
        b
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.base))
            .header(COOKIE, &self.cookie)
            .send()
            .await
            .unwrap()
    }

    async fn text(&self, path: &str) -> String {
        let r = self.get(path).await;
        assert_eq!(r.status(), 200, "GET {path}");
        r.text().await.unwrap()
    }

    /// POSTs `fields` with this session's CSRF token.
    async fn post(&self, path: &str, fields: &[(&str, &str)]) -> reqwest::Response {
        let mut all = vec![("csrf", self.csrf.as_str())];
        all.extend_from_slice(fields);
        self.post_raw(path, &all).await
    }

    async fn post_raw(&self, path: &str, fields: &[(&str, &str)]) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.base))
            .header(COOKIE, &self.cookie)
            .form(fields)
            .send()
            .await
            .unwrap()
    }
}

/// An operator key of `office`.
async fn operator_key(app: &TestApp, office: i64) -> String {
    api_keys::create_key(
        &app.state.db,
        &NewKey {
            name: "desk".into(),
            role: Role::Operator,
            offices: vec![office],
            expires_at: None,
        },
    )
    .await
    .unwrap()
    .1
}

async fn api_inbox_status(app: &TestApp, token: &str) -> StatusCode {
    app.client
        .get(format!("{}/api/inbox", app.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
}

/// What starts a thumbnail's URL in a page.
const THUMB: &str = "class=\"thumb\" src=\"";

const PAGES: [&str; 5] = [
    "/console/edge",
    "/console/keys",
    "/console/doctor",
    "/console/inbox",
    "/console/inbox/1",
];

both_backends!(console_pages_need_a_session, |t| {
    let app = spawn_app(&t).await;
    let http = client();
    for path in PAGES {
        let r = http
            .get(format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "{path}");
        let to = r.headers()[LOCATION].to_str().unwrap().to_string();
        assert!(to.starts_with("/console/login?next="), "{path}: {to}");
    }
    for path in [
        "/console/keys",
        "/console/keys/1/revoke",
        "/console/edge/purge",
    ] {
        let r = http
            .post(format!("{}{path}", app.base))
            .form(&[("name", "x"), ("target", "/media/x")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "POST {path}");
    }
    assert_eq!(
        count(&t.db, "SELECT count(*) FROM api_keys").await,
        1,
        "nothing created"
    );
    // A session ends with its key: pages go back to the login.
    let b = Browser::login(&app, &app.admin_key).await;
    assert_eq!(b.get("/console/keys").await.status(), 200);
    sqlx::query("UPDATE api_keys SET revoked_at = 1")
        .execute(&t.db.pool)
        .await
        .unwrap();
    assert_eq!(b.get("/console/keys").await.status(), StatusCode::SEE_OTHER);
});

both_backends!(
    created_key_is_shown_once_works_on_the_api_and_revoked_fails,
    |t| {
        let f = fixture(&t.db, 1, 1).await;
        let app = spawn_app(&t).await;
        let b = Browser::login(&app, &app.admin_key).await;
        let office = f.office.to_string();
        let form = [
            ("name", "warsaw-desk"),
            ("role", "operator"),
            ("office", office.as_str()),
            ("days", "30"),
        ];
        // No CSRF token, or a wrong one: 403 and no key.
        let r = b.post_raw("/console/keys", &form).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        let mut wrong = vec![("csrf", "0".repeat(64))];
        wrong.extend(form.iter().map(|(k, v)| (*k, v.to_string())));
        let wrong: Vec<(&str, &str)> = wrong.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(
            b.post_raw("/console/keys", &wrong).await.status(),
            StatusCode::FORBIDDEN
        );
        assert_eq!(count(&t.db, "SELECT count(*) FROM api_keys").await, 1);

        let r = b.post("/console/keys", &form).await;
        assert_eq!(r.status(), 200);
        let page = r.text().await.unwrap();
        let at = page.find("id=\"new-token\"").expect("the token field");
        let value = page[at..].find("value=\"").unwrap() + at + 7;
        let token = page[value..value + 64].to_string();
        assert!(token.bytes().all(|c| c.is_ascii_hexdigit()), "{token}");
        assert!(page.contains("shown only now"), "{page}");
        // The token works against the API, scoped to its office.
        assert_eq!(api_inbox_status(&app, &token).await, 200);
        let key = api_keys::authenticate(&t.db, &token)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (key.role, key.offices.clone()),
            (Role::Operator, vec![f.office])
        );
        // Shown once: the list never shows it again.
        let list = b.text("/console/keys").await;
        assert!(list.contains("warsaw-desk"), "{list}");
        assert!(!list.contains(&token), "the token is not listed");
        assert_eq!(
            count(
                &t.db,
                "SELECT count(*) FROM console_audit WHERE action = 'key create'"
            )
            .await,
            1
        );

        // Revoke: refused without the token, then done; the key stops working.
        let path = format!("/console/keys/{}/revoke", key.id);
        assert_eq!(b.post_raw(&path, &[]).await.status(), StatusCode::FORBIDDEN);
        assert_eq!(api_inbox_status(&app, &token).await, 200);
        let r = b.post(&path, &[]).await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        assert_eq!(
            r.headers()[LOCATION],
            format!("/console/keys?revoked={}", key.id).as_str()
        );
        assert_eq!(api_inbox_status(&app, &token).await, 401);
        assert!(b
            .text(&format!("/console/keys?revoked={}", key.id))
            .await
            .contains("is revoked"));
        assert_eq!(
            count(
                &t.db,
                "SELECT count(*) FROM console_audit WHERE action = 'key revoke'"
            )
            .await,
            1
        );

        // Bad input: 4xx pages, nothing created.
        let before = count(&t.db, "SELECT count(*) FROM api_keys").await;
        for (fields, status) in [
            (vec![("name", "x"), ("role", "root")], 400),
            (vec![("name", "x"), ("role", "operator")], 400),
            (
                vec![("name", "x"), ("role", "operator"), ("office", "99999")],
                400,
            ),
            (
                vec![("name", "x"), ("role", "operator"), ("office", "abc")],
                400,
            ),
            (
                vec![("name", "x"), ("role", "admin"), ("days", "soon")],
                400,
            ),
            (vec![("name", ""), ("role", "admin")], 400),
        ] {
            let r = b.post("/console/keys", &fields).await;
            assert_eq!(r.status().as_u16(), status, "{fields:?}");
            assert!(r.text().await.unwrap().contains("role=\"alert\""));
        }
        assert_eq!(count(&t.db, "SELECT count(*) FROM api_keys").await, before);
        assert_eq!(
            b.post("/console/keys/abc/revoke", &[]).await.status(),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            b.post("/console/keys/99999/revoke", &[]).await.status(),
            StatusCode::NOT_FOUND
        );
    }
);

both_backends!(operator_key_reads_pages_but_cannot_act, |t| {
    let f = fixture(&t.db, 1, 1).await;
    let app = spawn_app_with(
        &t,
        |raw| {
            raw.console.edges.push(EdgeFile {
                name: "edge-1".into(),
                admin_url: "http://127.0.0.1:9".into(),
                admin_token_env: "EDGE_TOKEN".into(),
                token: Some("t".repeat(32)),
            })
        },
        None,
    )
    .await;
    let key = operator_key(&app, f.office).await;
    let b = Browser::login(&app, &key).await;
    assert_eq!(b.get("/console/doctor").await.status(), 200);
    let edge = b.text("/console/edge").await;
    assert!(edge.contains("edge-1"), "{edge}");
    assert!(
        !edge.contains("action=\"/console/edge/purge\""),
        "no purge form"
    );
    let keys = b.get("/console/keys").await;
    assert_eq!(keys.status(), StatusCode::FORBIDDEN);
    let office = f.office.to_string();
    for (path, fields) in [
        (
            "/console/edge/purge",
            vec![("kind", "url"), ("target", "/media/x")],
        ),
        ("/console/keys", vec![("name", "mine"), ("role", "admin")]),
        (
            "/console/keys",
            vec![
                ("name", "mine"),
                ("role", "operator"),
                ("office", office.as_str()),
            ],
        ),
        ("/console/keys/1/revoke", vec![]),
    ] {
        let r = b.post(path, &fields).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{path}");
        assert!(r.text().await.unwrap().contains("operator key"));
    }
    assert_eq!(count(&t.db, "SELECT count(*) FROM api_keys").await, 2);
    assert_eq!(
        count(
            &t.db,
            "SELECT count(*) FROM api_keys WHERE revoked_at IS NOT NULL"
        )
        .await,
        0
    );
    assert_eq!(count(&t.db, "SELECT count(*) FROM console_audit").await, 0);
});

both_backends!(doctor_page_shows_each_check, |t| {
    fixture(&t.db, 1, 1).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let app = spawn_app_with(
        &t,
        |raw| {
            let p = komora_origin::queue::config::PlatformFile {
                base_url: format!("http://{closed}"),
                token: "T".into(),
                allowed_hosts: vec![closed.to_string()],
                ..Default::default()
            };
            raw.platforms.platforms.insert("telegram".into(), p);
        },
        None,
    )
    .await;
    let b = Browser::login(&app, &app.admin_key).await;
    let page = b.text("/console/doctor").await;
    let checks = komora_origin::doctor::doctor_checks(
        &app.state.config,
        Ok(&app.state.db),
        Some(&app.state.media),
        komora_origin::db::now_ms(),
    )
    .await;
    assert!(checks.len() >= 6, "{checks:?}");
    for c in &checks {
        let name = c.name.replace('"', "&quot;");
        assert!(
            page.contains(&format!("<th scope=\"row\">{name}</th>")),
            "{} missing:\n{page}",
            c.name
        );
    }
    // The unreachable platform fails, the database passes, the office's hours are a fact.
    assert!(page.contains("unreachable"), "{page}");
    assert!(page.contains("1 of "), "one failing check: {page}");
    assert!(
        page.contains("hours-open") || page.contains("hours-closed"),
        "{page}"
    );
});

both_backends!(
    inbox_preview_lists_conversations_with_thumbnails_that_load,
    |t| {
        let f = fixture(&t.db, 3, 2).await;
        let app = spawn_app(&t).await;
        let png = b"\x89PNG\r\n\x1a\n not really, but typed as an image".to_vec();
        let up: serde_json::Value = app
            .upload(png.clone(), "image/png")
            .await
            .json()
            .await
            .unwrap();
        let conv = f.conversations[2];
        let sent = app
            .post_json(
                &format!("/api/conversations/{conv}/messages"),
                serde_json::json!({"text": "scan attached", "media_ids": [up["id"]]}),
            )
            .await;
        assert!(sent.status().is_success(), "{}", sent.status());

        let b = Browser::login(&app, &app.admin_key).await;
        let list = b.text("/console/inbox").await;
        for i in 0..3 {
            assert!(list.contains(&format!("Client{i} Kowalska")), "{list}");
        }
        assert!(
            list.contains("scan attached"),
            "last message preview: {list}"
        );
        let page = b.text(&format!("/console/inbox/{conv}")).await;
        assert!(
            page.contains("hello 2/0") && page.contains("reply 2/1"),
            "{page}"
        );
        let at = page.find(THUMB).expect("a thumbnail") + THUMB.len();
        let src = page[at..].split('"').next().unwrap().replace("&amp;", "&");
        assert_eq!(
            src,
            up["url"].as_str().unwrap(),
            "the URL the API hands out"
        );
        let img = app
            .client
            .get(format!("{}{src}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(img.status(), 200);
        assert_eq!(img.bytes().await.unwrap().as_ref(), png.as_slice());

        // Platform filter, pages and bad input.
        let telegram = b.text("/console/inbox?platform=telegram").await;
        assert!(telegram.contains("Client0 Kowalska") && !telegram.contains("Client1 Kowalska"));
        for bad in [
            "/console/inbox?platform=myspace",
            "/console/inbox?cursor=zz",
            "/console/inbox/abc",
            "/console/inbox/1?before=zz",
        ] {
            assert_eq!(b.get(bad).await.status(), StatusCode::BAD_REQUEST, "{bad}");
        }
        assert_eq!(
            b.get("/console/inbox/99999").await.status(),
            StatusCode::NOT_FOUND
        );

        // An operator of another office sees none of them.
        let other = {
            let mut tx = t.db.pool.begin().await.unwrap();
            let o =
                komora_origin::store::clients::create_office(&mut tx, "Kraków", "Europe/Warsaw")
                    .await
                    .unwrap();
            tx.commit().await.unwrap();
            o
        };
        let key = operator_key(&app, other).await;
        let op = Browser::login(&app, &key).await;
        assert!(op
            .text("/console/inbox")
            .await
            .contains("No conversations."));
        assert_eq!(
            op.get(&format!("/console/inbox/{conv}")).await.status(),
            StatusCode::NOT_FOUND
        );
    }
);

both_backends!(
    edge_page_says_why_an_edge_is_unreachable_and_purge_reports_each_edge,
    |t| {
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let app = spawn_app_with(
            &t,
            |raw| {
                raw.console.edges.push(EdgeFile {
                    name: "edge-down".into(),
                    admin_url: format!("http://{closed}"),
                    admin_token_env: "EDGE_DOWN_TOKEN".into(),
                    token: Some("t".repeat(32)),
                });
                raw.console.edges.push(EdgeFile {
                    name: "edge-no-token".into(),
                    admin_url: format!("http://{closed}"),
                    admin_token_env: "EDGE_UNSET_TOKEN".into(),
                    token: None,
                });
            },
            None,
        )
        .await;
        let b = Browser::login(&app, &app.admin_key).await;
        let page = b.text("/console/edge").await;
        assert!(page.contains("No figures: unreachable"), "{page}");
        assert!(page.contains("EDGE_UNSET_TOKEN"), "{page}");
        let r = b
            .post(
                "/console/edge/purge",
                &[("kind", "url"), ("target", "/media/abc")],
            )
            .await;
        assert_eq!(r.status(), 200);
        let result = r.text().await.unwrap();
        assert!(result.contains("did not accept the purge"), "{result}");
        assert!(result.contains("unreachable"), "{result}");
        assert!(result.contains("EDGE_UNSET_TOKEN is not set"), "{result}");
        assert_eq!(
            count(
                &t.db,
                "SELECT count(*) FROM console_audit WHERE action = 'edge purge'"
            )
            .await,
            1
        );
        for (kind, target) in [("url", "media/abc"), ("everything", "/"), ("url", "")] {
            let r = b
                .post("/console/edge/purge", &[("kind", kind), ("target", target)])
                .await;
            assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{kind} {target}");
        }
        // No edge configured: the page says so and a purge is a 400.
        let t2 = crate::common::TestDb::new(komora_origin::db::Backend::Sqlite)
            .await
            .unwrap();
        let bare = spawn_app(&t2).await;
        let b2 = Browser::login(&bare, &bare.admin_key).await;
        assert!(b2
            .text("/console/edge")
            .await
            .contains("No edge is configured"));
        let r = b2
            .post(
                "/console/edge/purge",
                &[("kind", "url"), ("target", "/media/abc")],
            )
            .await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    }
);
