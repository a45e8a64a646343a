//! A real `komora-origin worker` process killed with SIGKILL mid-send: after its lease
//! expires another worker process takes the task over, but does not send blindly (the first
//! attempt may have arrived): the task waits as `delivery_unknown` until `queue retry`; then
//! the worker stops on SIGTERM.

use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use komora_origin::messaging::send::SendMessage;
use komora_origin::queue::store;
use sqlx::Row;

use super::support::*;
use crate::both_backends;

fn spawn_worker(config_path: &std::path::Path, log: &std::path::Path) -> Child {
    let log = std::fs::File::create(log).unwrap();
    Command::new(env!("CARGO_BIN_EXE_komora-origin"))
        .arg("--config")
        .arg(config_path)
        .arg("worker")
        .env("RUST_LOG", "info")
        .env_remove("KOMORA_DATABASE_URL")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap()
}

async fn wait_until<F, Fut>(what: &str, log: &std::path::Path, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f().await {
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            panic!("timed out waiting for {what}; worker log:\n{log}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

both_backends!(sigkilled_worker_task_completed_by_another, |t| {
    // The platform hangs on the first request (the worker is mid-task when killed) and
    // accepts every later one.
    let platform = StandIn::start_delayed(
        Arc::new(|_, _, _| {
            (
                200,
                br#"{"ok":true,"result":{"message_id":5}}"#.to_vec(),
                "application/json",
            )
        }),
        Arc::new(|n| Duration::from_secs(if n == 1 { 60 } else { 0 })),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config_text = format!(
        "[database]\nurl = \"{}\"\n[media]\nstore_url = \"file://{}/media\"\n\
         [queue]\nlease_ms = 1000\nheartbeat_ms = 200\npoll_ms = 20\nsweep_ms = 200\n\
         [platforms.telegram]\nbase_url = \"{}\"\ntoken = \"T\"\nwebhook_secret = \"{SECRET}\"\n\
         timeout_ms = 60000\nallowed_hosts = [\"{}\"]\n",
        t.url,
        dir.path().display(),
        platform.base_url,
        host_port(&platform.base_url)
    );
    let config_path = dir.path().join("origin.toml");
    std::fs::write(&config_path, &config_text).unwrap();
    let cfg = config(&config_text);

    let client: i64 =
        sqlx::query("INSERT INTO clients (name, created_at) VALUES ('K', 0) RETURNING id")
            .fetch_one(&t.db.pool)
            .await
            .unwrap()
            .get(0);
    let conv: i64 = sqlx::query(
        "INSERT INTO conversations (platform, client_id, external_chat_id, last_activity_at, \
         created_at) VALUES ('telegram', $1, 'k1', 0, 0) RETURNING id",
    )
    .bind(client)
    .fetch_one(&t.db.pool)
    .await
    .unwrap()
    .get(0);
    let message: i64 = sqlx::query(
        "INSERT INTO messages (conversation_id, direction, text, created_at) \
         VALUES ($1, 'out', 'survive', 0) RETURNING id",
    )
    .bind(conv)
    .fetch_one(&t.db.pool)
    .await
    .unwrap()
    .get(0);
    let task = enqueue(&t.db, &cfg, SendMessage::task(message), store::now_ms()).await;

    let log1 = dir.path().join("worker1.log");
    let mut first = spawn_worker(&config_path, &log1);
    wait_until("the first worker to reach the platform", &log1, || async {
        platform.count() >= 1
    })
    .await;
    let row = store::get(&t.db, task).await.unwrap().unwrap();
    assert_eq!(row.state, "running");
    let first_worker = row.worker_id.clone().unwrap();
    first.kill().unwrap(); // SIGKILL: no chance to record anything
    first.wait().unwrap();

    let log2 = dir.path().join("worker2.log");
    let mut second = spawn_worker(&config_path, &log2);
    // The first attempt may have reached telegram, which cannot be asked: the second worker
    // does not send blindly, the task waits for an operator.
    wait_until("the second worker to park the send", &log2, || async {
        store::get(&t.db, task).await.unwrap().unwrap().state == "delivery_unknown"
    })
    .await;
    assert_eq!(platform.count(), 1, "no blind second send");
    // The operator checked the chat and sends again, with the real CLI.
    let retry = Command::new(env!("CARGO_BIN_EXE_komora-origin"))
        .arg("--config")
        .arg(&config_path)
        .args(["queue", "retry", &task.to_string()])
        .env_remove("KOMORA_DATABASE_URL")
        .output()
        .unwrap();
    assert!(retry.status.success(), "{retry:?}");
    wait_until("the second worker to deliver", &log2, || async {
        store::get(&t.db, task).await.unwrap().unwrap().state == "done"
    })
    .await;
    let row = store::get(&t.db, task).await.unwrap().unwrap();
    // Two runs before the operator (cut off, parked), one after the retry.
    assert_eq!(row.attempts, 1);
    assert!(
        row.errors.to_string().contains("lease expired"),
        "{:?}",
        row.errors
    );
    assert!(row.errors.to_string().contains(&first_worker));
    assert_eq!(platform.count(), 2);
    let status: String = sqlx::query("SELECT delivery_status FROM messages WHERE id = $1")
        .bind(message)
        .fetch_one(&t.db.pool)
        .await
        .unwrap()
        .get(0);
    assert_eq!(status, "sent");

    // SIGTERM: the worker stops gracefully and exits 0.
    let ok = Command::new("kill")
        .arg("-TERM")
        .arg(second.id().to_string())
        .status()
        .unwrap();
    assert!(ok.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = second.try_wait().unwrap() {
            assert!(status.success(), "{status:?}");
            break;
        }
        if Instant::now() > deadline {
            second.kill().ok();
            panic!("worker did not stop on SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = std::fs::read_to_string(&log2).unwrap();
    assert!(log.contains("worker stopped"), "{log}");
});
