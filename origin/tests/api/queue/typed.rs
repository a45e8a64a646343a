//! Typed tasks: a kind enqueued through `enqueue::<Kind>` is stored under its `KIND` and
//! options and runs with the input it was given; a payload that is not the kind's input
//! fails for good, naming the kind.

use std::sync::Arc;

use komora_origin::media::download::{DownloadInput, DownloadMedia};
use komora_origin::queue::store::{self, now_ms};
use komora_origin::queue::worker::Outcome;
use komora_origin::queue::NewTask;
use serde_json::json;
use sqlx::Row;

use super::support::*;
use crate::both_backends;

both_backends!(download_media_enqueued_typed_is_run, |t| {
    let files = StandIn::start(Arc::new(|_: &str, _: &[u8], _| {
        (200, b"typed-bytes".to_vec(), "image/png")
    }))
    .await;
    let cfg = flow_config(&files.base_url, &files.base_url, "");
    let media: Arc<dyn object_store::ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let message = outbound(&t.db, "c1").await;
    let input = DownloadInput {
        message_id: message,
        position: 0,
        url: format!("{}/a.png", files.base_url),
        content_type: None,
        name: Some("a.png".into()),
        platform: Some("telegram".into()),
    };
    let mut tx = t.db.pool.begin().await.unwrap();
    let id = komora_queue::enqueue::<DownloadMedia>(&mut tx, &cfg.queue, &input)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let row = store::get(&t.db, id).await.unwrap().unwrap();
    assert_eq!(row.kind, "download_and_save_media");
    assert_eq!(row.queue, "low");
    assert_eq!(row.payload["message_id"], json!(message));

    let w = worker_with_store(&t.db, &cfg, media.clone());
    let outcome = w.run_one(now_ms()).await.unwrap();
    assert!(
        matches!(&outcome, Some(Outcome::Done { id: done, .. }) if *done == id),
        "{outcome:?}"
    );
    assert_eq!(files.count(), 1);
    let row = sqlx::query(
        "SELECT m.content_type, m.original_name, m.size FROM media m \
         JOIN message_media mm ON mm.media_id = m.id WHERE mm.message_id = $1",
    )
    .bind(message)
    .fetch_one(&t.db.pool)
    .await
    .unwrap();
    assert_eq!(row.get::<String, _>(0), "image/png");
    assert_eq!(row.get::<Option<String>, _>(1).as_deref(), Some("a.png"));
    assert_eq!(row.get::<i64, _>(2), 11);
});

both_backends!(payload_not_the_kinds_input_is_dead_at_once, |t| {
    let cfg = config("");
    // `{media_id, url}`: what an untyped builder once wrote for this kind.
    let task = NewTask::new(
        "download_and_save_media",
        json!({ "media_id": 1, "url": "http://example.invalid/x" }),
    );
    let id = enqueue(&t.db, &cfg, task, T0).await;
    let w = worker(&t.db, &cfg);
    match w.run_one(T0).await.unwrap() {
        Some(Outcome::Dead {
            id: dead, error, ..
        }) => {
            assert_eq!(dead, id);
            assert!(error.contains("download_and_save_media"), "{error}");
            assert!(error.contains("message_id"), "{error}");
        }
        other => panic!("expected a dead task, got {other:?}"),
    }
    assert_eq!(state_of(&t.db, id).await, "dead");
});
