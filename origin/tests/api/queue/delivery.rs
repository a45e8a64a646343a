//! No blind resend: a send whose attempt may have reached the platform (cut off in flight,
//! timed out, answer lost) is not sent again by the next run; the task waits as
//! `delivery_unknown` until an operator retries it or marks it sent. A platform that drops
//! repeats by `Idempotency-Key` gets the resend instead.

use std::sync::Arc;
use std::time::Duration;

use komora_origin::messaging::send::SendMessage;
use komora_origin::queue::store;
use komora_origin::queue::worker::Outcome;
use komora_origin::queue::NewTask;
use serde_json::json;
use sqlx::Row;

use super::support::*;
use crate::both_backends;
use crate::common::count;

/// A platform that never answers its first request in time and accepts every later one.
async fn hangs_first() -> StandIn {
    StandIn::start_delayed(
        telegram_ok(),
        Arc::new(|n| Duration::from_secs(if n == 1 { 30 } else { 0 })),
    )
    .await
}

fn platform_config(name: &str, url: &str, extra: &str) -> Arc<komora_origin::config::Config> {
    config(&format!(
        "[platforms.{name}]\nbase_url = \"{url}\"\ntoken = \"T\"\nwebhook_secret = \"{SECRET}\"\n\
         timeout_ms = 300\nallowed_hosts = [\"{}\"]\n{extra}",
        host_port(url)
    ))
}

/// An outbound message in a new conversation on `platform`.
async fn outbound_on(db: &komora_origin::db::Db, platform: &str) -> i64 {
    let client: i64 =
        sqlx::query("INSERT INTO clients (name, created_at) VALUES ('D', 0) RETURNING id")
            .fetch_one(&db.pool)
            .await
            .unwrap()
            .get(0);
    let conv: i64 = sqlx::query(
        "INSERT INTO conversations (platform, client_id, external_chat_id, last_activity_at, \
         created_at) VALUES ($1, $2, 'd1', 0, 0) RETURNING id",
    )
    .bind(platform)
    .bind(client)
    .fetch_one(&db.pool)
    .await
    .unwrap()
    .get(0);
    sqlx::query(
        "INSERT INTO messages (conversation_id, direction, text, created_at) \
         VALUES ($1, 'out', 'your translation is ready', 0) RETURNING id",
    )
    .bind(conv)
    .fetch_one(&db.pool)
    .await
    .unwrap()
    .get(0)
}

/// The real API as an operator sees it: a message's `delivery_status` in
/// GET /api/conversations/{id}/messages.
struct Api {
    base: String,
    key: String,
}

impl Api {
    async fn start(db: &komora_origin::db::Db, cfg: &Arc<komora_origin::config::Config>) -> Api {
        let media: Arc<dyn object_store::ObjectStore> =
            Arc::new(object_store::memory::InMemory::new());
        let base = serve_app(db, cfg, media).await;
        let (_, key) = komora_origin::store::api_keys::create(db, "operator desk", true)
            .await
            .unwrap();
        Api { base, key }
    }

    async fn status_of(&self, db: &komora_origin::db::Db, message: i64) -> String {
        let conv: i64 = sqlx::query("SELECT conversation_id FROM messages WHERE id = $1")
            .bind(message)
            .fetch_one(&db.pool)
            .await
            .unwrap()
            .get(0);
        let r = reqwest::Client::new()
            .get(format!("{}/api/conversations/{conv}/messages", self.base))
            .bearer_auth(&self.key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let v: serde_json::Value = r.json().await.unwrap();
        let m = v["messages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == message)
            .unwrap_or_else(|| panic!("message {message} not listed: {v}"));
        m["delivery_status"].as_str().unwrap().to_string()
    }
}

/// Runs the send until it stops retrying: first attempt times out in flight.
async fn first_attempt_times_out(w: &komora_origin::queue::worker::Worker) -> i64 {
    match w.run_one(T0).await.unwrap().unwrap() {
        Outcome::Retry { run_at, error, .. } => {
            assert!(error.contains("timed out"), "{error}");
            run_at
        }
        other => panic!("{other:?}"),
    }
}

both_backends!(
    send_cut_off_in_flight_waits_for_an_operator_then_retry_sends,
    |t| {
        let platform = hangs_first().await;
        let cfg = platform_config("telegram", &platform.base_url, "");
        let w = worker(&t.db, &cfg);
        let message = outbound_on(&t.db, "telegram").await;
        let task = enqueue(&t.db, &cfg, SendMessage::task(message), T0).await;
        let run_at = first_attempt_times_out(&w).await;
        assert_eq!(platform.count(), 1);

        // The next run does not send: the first may have been delivered.
        let out = w.run_one(run_at).await.unwrap().unwrap();
        let Outcome::DeliveryUnknown { error, .. } = out else {
            panic!("{out:?}")
        };
        assert!(
            error.contains("may have reached platform telegram"),
            "{error}"
        );
        assert_eq!(platform.count(), 1, "no second send");
        assert_eq!(state_of(&t.db, task).await, "delivery_unknown");
        // The message says so too, in the API the operators read.
        assert_eq!(delivery_of(&t.db, message).await, "delivery_unknown");
        let api = Api::start(&t.db, &cfg).await;
        assert_eq!(api.status_of(&t.db, message).await, "delivery_unknown");
        // Parked: never claimed, swept or pruned; counted and listed for operators.
        assert_eq!(w.run_one(run_at + 3_600_000).await.unwrap(), None);
        store::sweep_expired(&t.db, run_at + 3_600_000)
            .await
            .unwrap();
        store::prune(&t.db, run_at + 10 * 3_600_000, 1)
            .await
            .unwrap();
        assert_eq!(state_of(&t.db, task).await, "delivery_unknown");
        let stats = store::stats(&t.db, run_at).await.unwrap();
        assert_eq!(stats[0].queue, "high");
        assert_eq!(stats[0].delivery_unknown, 1);
        let listed = store::list(&t.db, store::TaskState::DeliveryUnknown, 10)
            .await
            .unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].id, task);

        let store_: Arc<dyn object_store::ObjectStore> =
            Arc::new(object_store::memory::InMemory::new());
        // `/admin/queues` is served on the internal listener.
        let app = serve_internal(&t.db, &cfg, store_).await;
        let (_, admin) = komora_origin::store::api_keys::create(&t.db, "ops", true)
            .await
            .unwrap();
        let v: serde_json::Value = reqwest::Client::new()
            .get(format!("{app}/admin/queues"))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["queues"][0]["delivery_unknown"], 1, "{v}");
        assert_eq!(v["delivery_unknown"][0]["id"], task, "{v}");

        // The operator checked the chat (nothing arrived) and retries: now it is sent.
        store::retry(&t.db, task, run_at).await.unwrap();
        assert_eq!(api.status_of(&t.db, message).await, "pending");
        let out = w.run_one(run_at).await.unwrap().unwrap();
        assert!(matches!(out, Outcome::Done { .. }), "{out:?}");
        assert_eq!(platform.count(), 2);
        assert_eq!(delivery_of(&t.db, message).await, "sent");
        assert_eq!(api.status_of(&t.db, message).await, "sent");
    }
);

both_backends!(delivery_unknown_marked_sent_is_not_sent_again, |t| {
    let platform = hangs_first().await;
    let cfg = platform_config("telegram", &platform.base_url, "");
    let w = worker(&t.db, &cfg);
    let message = outbound_on(&t.db, "telegram").await;
    let task = enqueue(&t.db, &cfg, SendMessage::task(message), T0).await;
    let run_at = first_attempt_times_out(&w).await;
    let out = w.run_one(run_at).await.unwrap().unwrap();
    assert!(matches!(out, Outcome::DeliveryUnknown { .. }), "{out:?}");
    // Only a delivery_unknown send can be marked sent.
    let other = enqueue(&t.db, &cfg, NewTask::new("noop", json!({})), T0).await;
    assert!(store::mark_sent(&t.db, other, run_at).await.is_err());

    store::mark_sent(&t.db, task, run_at).await.unwrap();
    assert_eq!(state_of(&t.db, task).await, "done");
    assert_eq!(delivery_of(&t.db, message).await, "sent");
    assert!(store::mark_sent(&t.db, task, run_at).await.is_err());
    assert!(
        store::retry(&t.db, task, run_at).await.is_err(),
        "done is final"
    );
    while w.run_one(run_at).await.unwrap().is_some() {}
    assert_eq!(platform.count(), 1, "never sent twice");
    assert_eq!(
        count(
            &t.db,
            "SELECT COUNT(*) FROM messages WHERE send_attempted_at IS NOT NULL"
        )
        .await,
        0
    );
});

both_backends!(platform_honouring_idempotency_key_gets_the_resend, |t| {
    let platform = hangs_first().await;
    let cfg = platform_config(
        "whatsapp",
        &platform.base_url,
        "honours_idempotency_key = true\n",
    );
    let w = worker(&t.db, &cfg);
    let message = outbound_on(&t.db, "whatsapp").await;
    enqueue(&t.db, &cfg, SendMessage::task(message), T0).await;
    let run_at = first_attempt_times_out(&w).await;
    let out = w.run_one(run_at).await.unwrap().unwrap();
    assert!(matches!(out, Outcome::Done { .. }), "{out:?}");
    let got = platform.all();
    assert_eq!(got.len(), 2);
    let key = |i: usize| {
        got[i].headers["idempotency-key"]
            .to_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(key(0), format!("komora-message-{message}"));
    assert_eq!(key(0), key(1), "the platform can drop the repeat");
    assert_eq!(delivery_of(&t.db, message).await, "sent");
});

both_backends!(a_send_that_certainly_failed_is_retried_as_before, |t| {
    // Nothing listens: the connection is refused, the message cannot have arrived.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let cfg = platform_config("telegram", &closed, "");
    let w = worker(&t.db, &cfg);
    let message = outbound_on(&t.db, "telegram").await;
    enqueue(&t.db, &cfg, SendMessage::task(message), T0).await;
    let out = w.run_one(T0).await.unwrap().unwrap();
    let Outcome::Retry { run_at, .. } = out else {
        panic!("{out:?}")
    };
    let out = w.run_one(run_at).await.unwrap().unwrap();
    assert!(
        matches!(out, Outcome::Retry { .. }),
        "still retried, not parked: {out:?}"
    );
});

both_backends!(doctor_reports_sends_waiting_for_an_operator, |t| {
    let platform = hangs_first().await;
    let cfg = platform_config("telegram", &platform.base_url, "");
    let w = worker(&t.db, &cfg);
    let message = outbound_on(&t.db, "telegram").await;
    enqueue(&t.db, &cfg, SendMessage::task(message), T0).await;
    let run_at = first_attempt_times_out(&w).await;
    let out = w.run_one(run_at).await.unwrap().unwrap();
    assert!(matches!(out, Outcome::DeliveryUnknown { .. }), "{out:?}");
    let store_: Arc<dyn object_store::ObjectStore> =
        Arc::new(object_store::memory::InMemory::new());
    let checks = komora_origin::doctor::doctor_checks(&cfg, Ok(&t.db), Some(&store_), run_at).await;
    let queue = checks.iter().find(|c| c.name == "queue").unwrap();
    assert!(!queue.ok, "{queue:?}");
    assert!(
        queue.detail.contains("1 sends may have reached"),
        "{queue:?}"
    );
});

both_backends!(
    mark_sent_through_the_cli_shows_sent_and_sends_nothing,
    |t| {
        let platform = hangs_first().await;
        let dir = tempfile::tempdir().unwrap();
        let platform_text = format!(
        "[platforms.telegram]\nbase_url = \"{}\"\ntoken = \"T\"\nwebhook_secret = \"{SECRET}\"\n\
         timeout_ms = 300\nallowed_hosts = [\"{}\"]\n",
        platform.base_url,
        host_port(&platform.base_url)
    );
        let config_text = format!(
            "[database]\nurl = \"{}\"\n[media]\nstore_url = \"file://{}/media\"\n{platform_text}",
            t.url,
            dir.path().display(),
        );
        let config_path = dir.path().join("origin.toml");
        std::fs::write(&config_path, &config_text).unwrap();
        let cfg = config(&platform_text);
        let w = worker(&t.db, &cfg);
        let message = outbound_on(&t.db, "telegram").await;
        let task = enqueue(&t.db, &cfg, SendMessage::task(message), T0).await;
        let run_at = first_attempt_times_out(&w).await;
        let out = w.run_one(run_at).await.unwrap().unwrap();
        assert!(matches!(out, Outcome::DeliveryUnknown { .. }), "{out:?}");
        let api = Api::start(&t.db, &cfg).await;
        assert_eq!(api.status_of(&t.db, message).await, "delivery_unknown");
        assert_eq!(platform.count(), 1, "only the attempt cut off in flight");

        // The operator found the message in the chat and records it, with the real CLI.
        let cli = |args: &[&str]| {
            std::process::Command::new(env!("CARGO_BIN_EXE_komora-origin"))
                .arg("--config")
                .arg(&config_path)
                .args(args)
                .env_remove("KOMORA_DATABASE_URL")
                .output()
                .unwrap()
        };
        let id = task.to_string();
        let listed = cli(&["queue", "unknown"]);
        assert!(listed.status.success(), "{listed:?}");
        assert!(
            String::from_utf8_lossy(&listed.stdout).contains(&id),
            "{listed:?}"
        );
        let marked = cli(&["queue", "mark-sent", &id]);
        assert!(marked.status.success(), "{marked:?}");
        assert!(
            String::from_utf8_lossy(&marked.stdout).contains("marked sent"),
            "{marked:?}"
        );
        assert_eq!(state_of(&t.db, task).await, "done");
        assert_eq!(delivery_of(&t.db, message).await, "sent");
        assert_eq!(api.status_of(&t.db, message).await, "sent");
        // Marking twice is refused with a clear error, not a second effect.
        let again = cli(&["queue", "mark-sent", &id]);
        assert!(!again.status.success(), "{again:?}");
        assert!(
            String::from_utf8_lossy(&again.stderr).contains("is done"),
            "{again:?}"
        );
        // Nothing left to run, and the platform got no request from the mark or after it.
        assert_eq!(w.run_one(run_at + 3_600_000).await.unwrap(), None);
        assert_eq!(platform.count(), 1, "mark-sent sends nothing");
    }
);
