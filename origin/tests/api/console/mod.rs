//! The ops console under `/console/`: login with an API key, the session cookie, CSRF
//! refusals, every action's effect on the database and its audit row, pause stopping
//! claims, purge's typed confirmation, operator keys reading but not acting, the
//! workers' heartbeat records, hashed immutable assets: `auth` (login, session, CSRF,
//! roles), `actions` (each action's effect and audit), `pages` (workers, assets); the
//! browser helper is here.

mod actions;
mod auth;
mod pages;

use komora_origin::queue::store::now_ms;
use komora_origin::queue::tasks::TaskError;
use komora_origin::queue::NewTask;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::StatusCode;
use serde_json::json;

use crate::common::{count, TestApp};
use crate::queue::support::{enqueue, handler, state_of, worker};

/// A browser of the console: no redirects followed, cookies kept by hand.
pub struct Browser {
    pub base: String,
    pub http: reqwest::Client,
    pub cookie: Option<String>,
    pub csrf: String,
}

/// The value of the first `name="csrf" value="..."` in a page.
pub fn csrf_in(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    html[at..].split('"').next().unwrap().to_string()
}

/// The `name=value` of cookie `name` set by `resp`, if any.
pub fn set_cookie(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|v| v.starts_with(&format!("{name}=")))
}

pub fn first_pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_string()
}

impl Browser {
    pub fn new(app: &TestApp) -> Browser {
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
    pub async fn try_login(&mut self, key: &str) -> reqwest::Response {
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

    pub async fn login(app: &TestApp, key: &str) -> Browser {
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

    pub async fn get(&self, path: &str) -> reqwest::Response {
        let mut req = self.http.get(format!("{}{path}", self.base));
        if let Some(c) = &self.cookie {
            req = req.header(COOKIE, c);
        }
        req.send().await.unwrap()
    }

    pub async fn text(&self, path: &str) -> String {
        let r = self.get(path).await;
        assert_eq!(r.status(), 200, "GET {path}");
        r.text().await.unwrap()
    }

    /// POSTs `fields` plus this session's CSRF token.
    pub async fn post(&self, path: &str, fields: &[(&str, &str)]) -> reqwest::Response {
        let mut all = vec![("csrf", self.csrf.as_str())];
        all.extend_from_slice(fields);
        self.post_raw(path, &all).await
    }

    pub async fn post_raw(&self, path: &str, fields: &[(&str, &str)]) -> reqwest::Response {
        let mut req = self.http.post(format!("{}{path}", self.base)).form(fields);
        if let Some(c) = &self.cookie {
            req = req.header(COOKIE, c);
        }
        req.send().await.unwrap()
    }
}

/// A task of kind `kind` enqueued now in its default queue.
pub async fn task(app: &TestApp, kind: &str, payload: serde_json::Value) -> i64 {
    enqueue(
        &app.state.db,
        &app.state.config,
        NewTask::new(kind, payload),
        now_ms(),
    )
    .await
}

/// A dead task: enqueued and run once by a worker whose handler fails for good.
pub async fn dead_task(app: &TestApp) -> i64 {
    let id = task(app, "console_fail", json!({ "n": 1 })).await;
    let w = worker(&app.state.db, &app.state.config).with_handler(
        "console_fail",
        handler(|_| Err(TaskError::Permanent("broken on purpose".into()))),
    );
    w.run_one(now_ms()).await.unwrap().unwrap();
    assert_eq!(state_of(&app.state.db, id).await, "dead");
    id
}

pub async fn audit_rows(app: &TestApp, action: &str) -> i64 {
    count(
        &app.state.db,
        sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM console_audit WHERE action = '{action}'"
        )),
    )
    .await
}
