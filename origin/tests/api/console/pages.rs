//! The workers page over a real worker's heartbeats, and the hashed assets.

use std::sync::Arc;

use komora_origin::queue::tasks::TaskError;
use serde_json::json;

use super::*;
use crate::both_backends;
use crate::common::{count, spawn_app};
use crate::queue::support::worker;

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
