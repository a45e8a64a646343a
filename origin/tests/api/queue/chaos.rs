//! Chaos, bounded: two thousand sends through real `komora-origin worker` processes that
//! are SIGKILLed at random and restarted, with every database connection cut once
//! (PostgreSQL). Afterwards no task is queued or running, and no message reached the
//! platform twice: each is done (sent exactly once), dead, or `delivery_unknown` (sent at
//! most once, waiting for an operator).

use std::collections::HashMap;
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use komora_origin::db::Backend;
use komora_origin::messaging::send::SendMessage;
use komora_origin::queue::store;
use rand::Rng;
use sqlx::Row;

use super::support::*;
use crate::both_backends;
use crate::common::count;

const MESSAGES: usize = 2000;

fn spawn_worker(config_path: &std::path::Path, log: &std::path::Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Command::new(env!("CARGO_BIN_EXE_komora-origin"))
        .arg("--config")
        .arg(config_path)
        .arg("worker")
        .env("RUST_LOG", "warn")
        .env_remove("KOMORA_DATABASE_URL")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap()
}

/// Tasks still queued or running (`None` while the database is unreachable).
async fn open_tasks(db: &komora_origin::db::Db) -> Option<i64> {
    sqlx::query_scalar("SELECT COUNT(*) FROM tasks WHERE state IN ('queued', 'running')")
        .fetch_one(&db.pool)
        .await
        .ok()
}

both_backends!(
    sigkilled_workers_and_a_cut_database_send_nothing_twice,
    |t| {
        // Each send takes a little while, so kills land mid-send.
        let platform =
            StandIn::start_delayed(telegram_ok(), Arc::new(|_| Duration::from_millis(15))).await;
        let dir = tempfile::tempdir().unwrap();
        let config_text = format!(
            "[database]\nurl = \"{}\"\n[media]\nstore_url = \"file://{}/media\"\n\
         [queue]\nlease_ms = 1000\nheartbeat_ms = 200\npoll_ms = 20\nsweep_ms = 200\n\
         [queue.kinds.send_message]\nconcurrency = 16\nbackoff_base_ms = 10\nbackoff_max_ms = 100\n\
         [platforms.telegram]\nbase_url = \"{}\"\ntoken = \"T\"\nwebhook_secret = \"{SECRET}\"\n\
         timeout_ms = 5000\nallowed_hosts = [\"{}\"]\n",
            t.url,
            dir.path().display(),
            platform.base_url,
            host_port(&platform.base_url)
        );
        let config_path = dir.path().join("origin.toml");
        std::fs::write(&config_path, &config_text).unwrap();
        let cfg = config(&config_text);

        // Two thousand outbound messages and their sends, in one transaction.
        let mut tx = t.db.pool.begin().await.unwrap();
        let client: i64 =
            sqlx::query("INSERT INTO clients (name, created_at) VALUES ('C', 0) RETURNING id")
                .fetch_one(&mut *tx)
                .await
                .unwrap()
                .get(0);
        let conv: i64 = sqlx::query(
            "INSERT INTO conversations (platform, client_id, external_chat_id, last_activity_at, \
         created_at) VALUES ('telegram', $1, 'chaos', 0, 0) RETURNING id",
        )
        .bind(client)
        .fetch_one(&mut *tx)
        .await
        .unwrap()
        .get(0);
        let now = store::now_ms();
        for i in 0..MESSAGES {
            let id: i64 = sqlx::query(
                "INSERT INTO messages (conversation_id, direction, text, created_at) \
             VALUES ($1, 'out', $2, 0) RETURNING id",
            )
            .bind(conv)
            .bind(format!("m{i}"))
            .fetch_one(&mut *tx)
            .await
            .unwrap()
            .get(0);
            store::enqueue_at(&mut tx, &cfg.queue, SendMessage::task(id), now)
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();

        let log = dir.path().join("workers.log");
        let mut workers = vec![
            spawn_worker(&config_path, &log),
            spawn_worker(&config_path, &log),
        ];
        let mut kills = 0;
        let mut cut = t.db.backend != Backend::Postgres;
        // A bound on a hang, not a speed test: on a loaded 2-core box (other test threads,
        // other sessions) the 2,000 sends with 12 kills took over 45 s.
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let pause = rand::thread_rng().gen_range(150..450);
            tokio::time::sleep(Duration::from_millis(pause)).await;
            let open = open_tasks(&t.db).await;
            if open == Some(0) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{open:?} tasks still open after {kills} kills; log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            // Kill for the first few seconds, then let the survivors finish.
            if kills < 12 {
                let i = rand::thread_rng().gen_range(0..workers.len());
                workers[i].kill().unwrap(); // SIGKILL
                workers[i].wait().unwrap();
                workers[i] = spawn_worker(&config_path, &log);
                kills += 1;
            }
            if !cut && kills == 4 {
                let name = t.url.rsplit('/').next().unwrap().to_string();
                // A plain pool on the admin database: `Db::connect` would run our migrations there.
                sqlx::any::install_default_drivers();
                let admin = sqlx::AnyPool::connect(&crate::common::pg_admin_url())
                    .await
                    .unwrap();
                let n = sqlx::query(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = $1 AND pid <> pg_backend_pid()",
                )
                .bind(name.as_str())
                .fetch_all(&admin)
                .await
                .unwrap()
                .len();
                assert!(n > 0, "no connection to cut");
                cut = true;
            }
        }
        for mut w in workers {
            w.kill().ok();
            w.wait().ok();
        }

        // Every task finished one way or the other; nothing left running past its lease.
        let by_state = sqlx::query("SELECT state, COUNT(*) FROM tasks GROUP BY state")
            .fetch_all(&t.db.pool)
            .await
            .unwrap();
        let by_state: HashMap<String, i64> =
            by_state.iter().map(|r| (r.get(0), r.get(1))).collect();
        for state in by_state.keys() {
            assert!(
                ["done", "dead", "delivery_unknown"].contains(&state.as_str()),
                "{by_state:?}"
            );
        }
        assert_eq!(
            by_state.values().sum::<i64>(),
            MESSAGES as i64,
            "{by_state:?}"
        );
        // The kills hit sends in flight, and those were not sent blindly again.
        assert!(kills >= 4, "only {kills} kills");

        // No message reached the platform twice; every done send reached it exactly once.
        let mut sends: HashMap<String, usize> = HashMap::new();
        for r in platform.all() {
            *sends
                .entry(r.json()["text"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
        let twice: Vec<_> = sends.iter().filter(|(_, n)| **n > 1).collect();
        assert!(twice.is_empty(), "sent more than once: {twice:?}");
        let done = sqlx::query("SELECT payload FROM tasks WHERE state = 'done'")
            .fetch_all(&t.db.pool)
            .await
            .unwrap();
        for r in &done {
            let payload: String = r.get(0);
            let id = serde_json::from_str::<serde_json::Value>(&payload).unwrap()["message_id"]
                .as_i64()
                .unwrap();
            let text: String = sqlx::query("SELECT text FROM messages WHERE id = $1")
                .bind(id)
                .fetch_one(&t.db.pool)
                .await
                .unwrap()
                .get(0);
            assert_eq!(
                sends.get(&text),
                Some(&1),
                "done send {text} not delivered once"
            );
        }
        assert_eq!(
            count(
                &t.db,
                "SELECT COUNT(*) FROM messages WHERE delivery_status = 'sent'"
            )
            .await,
            by_state.get("done").copied().unwrap_or(0),
        );
        eprintln!(
            "chaos: {kills} kills, states {by_state:?}, {} sends",
            sends.len()
        );
    }
);
