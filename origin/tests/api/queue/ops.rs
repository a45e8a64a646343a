//! Operations: `GET /admin/queues`, Prometheus metrics, `doctor` checks and the
//! `komora-origin queue …` / `doctor` commands.

use std::process::Command;
use std::sync::Arc;

use komora_origin::doctor::{doctor_checks, HoursNow, Reach, Subject};
use komora_origin::messaging::send::SendMessage;
use komora_origin::queue::store::{self, now_ms};
use komora_origin::queue::tasks::TaskError;
use komora_origin::queue::NewTask;
use serde_json::json;

use super::support::*;
use crate::both_backends;

both_backends!(admin_queues_needs_an_admin_key, |t| {
    let cfg = config("");
    let store: Arc<dyn object_store::ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    // The admin API lives on the internal listener.
    let app = serve_internal(&t.db, &cfg, store).await;
    let now = now_ms();
    enqueue(&t.db, &cfg, SendMessage::task(1), now).await;
    enqueue(&t.db, &cfg, NewTask::new("noop", json!({})), now).await;
    let bad = enqueue(&t.db, &cfg, NewTask::new("bad", json!({})), now).await;
    let w = worker(&t.db, &cfg)
        .with_handler("bad", handler(|_| Err(TaskError::Permanent("no".into()))));
    // Run the default queue's two tasks (noop, bad); send_message stays queued in high.
    sqlx::query("UPDATE tasks SET run_at = $1 WHERE queue = 'high'")
        .bind(now + 3_600_000)
        .execute(&t.db.pool)
        .await
        .unwrap();
    w.run_one(now).await.unwrap().unwrap();
    w.run_one(now).await.unwrap().unwrap();

    let (_, admin) = komora_origin::store::api_keys::create(&t.db, "ops", true)
        .await
        .unwrap();
    let (_, user) = komora_origin::store::api_keys::create(&t.db, "user", false)
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let url = format!("{app}/admin/queues");
    for token in [None, Some("nonsense")] {
        let mut req = http.get(&url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 401);
        let v: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(v["code"], "unauthorized");
    }
    // A live key that is not an admin key (an operator key) is known but not allowed.
    let resp = http.get(&url).bearer_auth(&user).send().await.unwrap();
    assert_eq!(resp.status(), 403);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["code"], "forbidden");
    let resp = http.get(&url).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let v: serde_json::Value = resp.json().await.unwrap();
    let queues = v["queues"].as_array().unwrap();
    assert_eq!(queues.len(), 3);
    assert_eq!(queues[0]["queue"], "high");
    assert_eq!(queues[0]["queued"], 1);
    assert_eq!(queues[0]["due"], 0, "scheduled for later");
    assert_eq!(queues[1]["done"], 1);
    assert_eq!(queues[1]["dead"], 1);
    assert_eq!(v["dead"][0]["id"], bad);
    assert_eq!(v["dead"][0]["last_error"], "no");

    // The metrics are in the default registry, which the API serves on /metrics.
    let text = {
        use prometheus::Encoder;
        let mut buf = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&prometheus::gather(), &mut buf)
            .unwrap();
        String::from_utf8(buf).unwrap()
    };
    for name in [
        "komora_queue_depth",
        "komora_queue_running",
        "komora_queue_dead",
        "komora_queue_failed_total",
        "komora_queue_wait_seconds",
        "komora_queue_duration_seconds",
    ] {
        assert!(text.contains(name), "{name} missing from:\n{text}");
    }
});

both_backends!(doctor_reports_offices_ai_database_and_queue, |t| {
    let cfg = config(
        "[ai]\nenabled = true\nurl = \"http://127.0.0.1:1/rag\"\nchannels = [\"telegram\", \"whatsapp\"]\n",
    );
    let weekdays = r#"{"mon":["09:00-18:00"],"tue":["09:00-18:00"],"wed":["09:00-18:00"],
        "thu":["09:00-18:00"],"fri":["09:00-18:00"]}"#;
    office(&t.db, "Europe/Warsaw", true, weekdays, "[]").await;
    office(
        &t.db,
        "America/New_York",
        false,
        weekdays,
        r#"["2026-11-24"]"#,
    )
    .await;
    office(&t.db, "Nowhere/Else", true, "{}", "[]").await;
    let store: Arc<dyn object_store::ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    // Tue 2026-11-24 10:00 UTC = 11:00 in Warsaw (open), 05:00 in New York (a day off).
    let now = 1_795_514_400_000;
    let checks = doctor_checks(&cfg, Ok(&t.db), Some(&store), now).await;
    let line = |prefix: &str| {
        checks
            .iter()
            .find(|c| c.name.starts_with(prefix))
            .unwrap_or_else(|| panic!("{prefix} missing: {checks:?}"))
            .clone()
    };
    let ai = line("ai");
    assert!(ai.detail.contains("key NOT SET"), "{ai:?}");
    assert!(ai.detail.contains("telegram, whatsapp"), "{ai:?}");
    assert!(line("database").ok);
    assert!(line("object store").ok);
    assert!(line("queue").ok, "{:?}", line("queue"));
    let warsaw = line("office 1");
    assert!(warsaw.ok);
    assert!(warsaw.detail.starts_with("autobot ON"), "{warsaw:?}");
    assert!(warsaw.detail.contains("inside working hours"), "{warsaw:?}");
    let ny = line("office 2");
    assert!(ny.detail.starts_with("autobot OFF"), "{ny:?}");
    assert!(ny.detail.contains("2026-11-24 is a day off"), "{ny:?}");
    let bad = line("office 3");
    assert!(!bad.ok, "{bad:?}");
    // The same facts, structured for the console's page.
    let hours = |c: &komora_origin::doctor::Check| match &c.subject {
        Subject::Office { hours, autobot, .. } => (*hours, *autobot),
        other => panic!("not an office: {other:?}"),
    };
    assert_eq!(hours(&warsaw), (HoursNow::Open, true));
    assert_eq!(hours(&ny), (HoursNow::Closed, false));
    assert_eq!(hours(&bad), (HoursNow::Invalid, true));
    assert_eq!(line("database").subject, Subject::Database);

    // A dead task makes the queue line fail.
    let w =
        worker(&t.db, &cfg).with_handler("bad", handler(|_| Err(TaskError::Permanent("x".into()))));
    enqueue(&t.db, &cfg, NewTask::new("bad", json!({})), now).await;
    w.run_one(now).await.unwrap();
    let checks = doctor_checks(&cfg, Ok(&t.db), Some(&store), now).await;
    let q = checks.iter().find(|c| c.name == "queue").unwrap();
    assert!(!q.ok && q.detail.contains("1 dead"), "{q:?}");
    // No database: one failing line, no panic.
    let checks = doctor_checks(&cfg, Err("refused".into()), None, now).await;
    assert!(checks.iter().any(|c| c.name == "database" && !c.ok));
});

both_backends!(
    doctor_probes_each_platform_and_says_which_is_unreachable,
    |t| {
        // A real listener that answers every request 404, and a port nothing listens on.
        let up = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let up_addr = up.local_addr().unwrap();
        let app = axum::Router::new().fallback(|| async { axum::http::StatusCode::NOT_FOUND });
        tokio::spawn(async move { axum::serve(up, app).await });
        let down_addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let cfg = config(&format!(
            "[platforms.telegram]\nbase_url = \"http://{up_addr}\"\ntoken = \"T\"\n\
         allowed_hosts = [\"{up_addr}\"]\n\
         [platforms.whatsapp]\nbase_url = \"http://{down_addr}\"\ntoken = \"T\"\n\
         allowed_hosts = [\"{down_addr}\"]\n\
         [platforms.email]\nbase_url = \"http://{up_addr}\"\ntoken = \"T\"\n"
        ));
        let store: Arc<dyn object_store::ObjectStore> =
            Arc::new(object_store::memory::InMemory::new());
        let checks = doctor_checks(&cfg, Ok(&t.db), Some(&store), now_ms()).await;
        let find = |name: &str| checks.iter().find(|c| c.name == name).unwrap().clone();
        let telegram = find("platform telegram");
        assert!(telegram.ok, "{telegram:?}");
        assert!(
            matches!(
                &telegram.subject,
                Subject::Platform {
                    reach: Reach::Answered { status: 404, .. },
                    ..
                }
            ),
            "{telegram:?}"
        );
        assert!(
            telegram.detail.contains("reachable (HTTP 404"),
            "{telegram:?}"
        );
        let whatsapp = find("platform whatsapp");
        assert!(!whatsapp.ok, "{whatsapp:?}");
        assert!(whatsapp.detail.contains("UNREACHABLE"), "{whatsapp:?}");
        // Loopback without allowed_hosts: the SSRF guard refuses it, as it would the sends.
        let email = find("platform email");
        assert!(!email.ok, "{email:?}");
        assert!(
            matches!(&email.subject, Subject::Platform { reach: Reach::Unreachable(why), .. } if why.contains("loopback")),
            "{email:?}"
        );
    }
);

fn cli(config_path: &std::path::Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_komora-origin"))
        .arg("--config")
        .arg(config_path)
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("KOMORA_DATABASE_URL")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

both_backends!(queue_commands_stats_dead_retry_purge, |t| {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[database]\nurl = \"{}\"\n[media]\nstore_url = \"file://{}/media\"\n",
        t.url,
        dir.path().display()
    );
    let path = dir.path().join("origin.toml");
    std::fs::write(&path, &text).unwrap();
    let cfg = config(&text);
    let now = now_ms();
    let dead = enqueue(&t.db, &cfg, NewTask::new("bad", json!({})), now).await;
    worker(&t.db, &cfg)
        .with_handler(
            "bad",
            handler(|_| Err(TaskError::Permanent("refused".into()))),
        )
        .run_one(now)
        .await
        .unwrap();
    enqueue(&t.db, &cfg, NewTask::new("noop", json!({})), now).await;
    enqueue(&t.db, &cfg, SendMessage::task(3), now).await;

    let (ok, out) = cli(&path, &["queue", "stats"]);
    assert!(ok, "{out}");
    assert!(out.contains("high"), "{out}");
    let default_line = out.lines().find(|l| l.starts_with("default")).unwrap();
    let cols: Vec<&str> = default_line.split_whitespace().collect();
    assert_eq!(&cols[1..6], &["1", "1", "0", "0", "1"], "{out}");

    let (ok, out) = cli(&path, &["queue", "dead"]);
    assert!(
        ok && out.contains("refused") && out.contains("1 dead"),
        "{out}"
    );
    let (ok, out) = cli(&path, &["queue", "active"]);
    assert!(ok && out.contains("0 running"), "{out}");
    let (ok, out) = cli(&path, &["queue", "retry", &dead.to_string()]);
    assert!(ok, "{out}");
    assert_eq!(state_of(&t.db, dead).await, "queued");
    let (ok, out) = cli(&path, &["queue", "retry", "999999"]);
    assert!(!ok && out.contains("not found"), "{out}");

    let (ok, out) = cli(&path, &["queue", "purge", "default"]);
    assert!(!ok && out.contains("--yes"), "{out}");
    let (ok, out) = cli(&path, &["queue", "purge", "nope", "--yes"]);
    assert!(!ok, "{out}");
    let (ok, out) = cli(&path, &["queue", "purge", "default", "--yes"]);
    assert!(ok && out.contains("deleted 2"), "{out}");
    let stats = store::stats(&t.db, now).await.unwrap();
    assert_eq!(stats[1].queued, 0);
    assert_eq!(stats[0].queued, 1, "high untouched");

    let (ok, out) = cli(&path, &["doctor"]);
    assert!(ok, "{out}");
    assert!(out.contains("OK   database"), "{out}");
    assert!(out.contains("OK   queue"), "{out}");
});

both_backends!(worker_runs_inside_the_server_when_configured, |t| {
    let off = config("");
    let store: Arc<dyn object_store::ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let state = |cfg: &Arc<komora_origin::config::Config>| komora_origin::app::AppState {
        db: t.db.clone(),
        config: cfg.clone(),
        media: store.clone(),
    };
    assert!(komora_origin::queue::start_in_server(&state(&off)).is_none());
    let on = config("[queue]\nworker_in_server = true\npoll_ms = 10\n");
    let id = enqueue(&t.db, &on, NewTask::new("noop", json!({})), now_ms()).await;
    let handle = komora_origin::queue::start_in_server(&state(&on)).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while state_of(&t.db, id).await != "done" {
        assert!(
            std::time::Instant::now() < deadline,
            "in-server worker did not run the task"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    handle.abort();
});
