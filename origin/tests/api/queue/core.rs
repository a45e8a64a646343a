//! Enqueue, claim, lease, complete, fail, backoff, dead letter, priority — on both backends.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use komora_origin::messaging::send::SendMessage;
use komora_origin::queue::store;
use komora_origin::queue::tasks::TaskError;
use komora_origin::queue::worker::Outcome;
use komora_origin::queue::NewTask;
use serde_json::json;

use super::support::*;
use crate::both_backends;
use crate::common::count;

both_backends!(enqueue_run_complete, |t| {
    let cfg = config("");
    let id = enqueue(&t.db, &cfg, NewTask::new("noop", json!({"a": 1})), T0).await;
    let w = worker(&t.db, &cfg);
    assert_eq!(
        w.run_one(T0 - 1).await.unwrap(),
        None,
        "not due before run_at"
    );
    let out = w.run_one(T0).await.unwrap().unwrap();
    assert_eq!(
        out,
        Outcome::Done {
            id,
            kind: "noop".into()
        }
    );
    assert_eq!(state_of(&t.db, id).await, "done");
    assert_eq!(w.run_one(T0).await.unwrap(), None);
});

both_backends!(transactional_enqueue_rolls_back_with_its_write, |t| {
    let cfg = config("");
    sqlx::query("CREATE TABLE notes (id BIGINT PRIMARY KEY)")
        .execute(&t.db.pool)
        .await
        .unwrap();
    let mut tx = t.db.pool.begin().await.unwrap();
    sqlx::query("INSERT INTO notes (id) VALUES (1)")
        .execute(&mut *tx)
        .await
        .unwrap();
    let id = komora_origin::queue::enqueue(&mut tx, &cfg.queue, NewTask::new("noop", json!({})))
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    assert!(store::get(&t.db, id).await.unwrap().is_none());
    let n = count(&t.db, "SELECT COUNT(*) FROM notes").await;
    assert_eq!(n, 0);
    let n = count(&t.db, "SELECT COUNT(*) FROM tasks").await;
    assert_eq!(n, 0);

    // Committed, both exist.
    let mut tx = t.db.pool.begin().await.unwrap();
    sqlx::query("INSERT INTO notes (id) VALUES (2)")
        .execute(&mut *tx)
        .await
        .unwrap();
    let id = komora_origin::queue::enqueue(&mut tx, &cfg.queue, NewTask::new("noop", json!({})))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(state_of(&t.db, id).await, "queued");
});

both_backends!(idempotency_key_dedups_live_tasks, |t| {
    let cfg = config("");
    let a = enqueue(&t.db, &cfg, SendMessage::task(7), T0).await;
    let b = enqueue(&t.db, &cfg, SendMessage::task(7), T0).await;
    assert_eq!(a, b);
    let other = enqueue(&t.db, &cfg, SendMessage::task(8), T0).await;
    assert_ne!(a, other);
    let row = store::get(&t.db, a).await.unwrap().unwrap();
    assert_eq!(row.queue, "high", "send_message routes to high");
    let w = worker(&t.db, &cfg).with_handler("send_message", handler(|_| Ok(())));
    w.run_one(T0).await.unwrap().unwrap();
    w.run_one(T0).await.unwrap().unwrap();
    // Once done, the key is free again (the task itself guards against a repeat effect).
    let c = enqueue(&t.db, &cfg, SendMessage::task(7), T0).await;
    assert_ne!(c, a);
});

both_backends!(routing_by_kind_and_config, |t| {
    let cfg = config("[queue.kinds.custom]\nqueue = \"low\"\n");
    for (kind, queue) in [
        ("send_message", "high"),
        ("process_ai_reply", "high"),
        ("download_and_save_media", "low"),
        ("something_else", "default"),
        ("custom", "low"),
    ] {
        let id = enqueue(&t.db, &cfg, NewTask::new(kind, json!({})), T0).await;
        assert_eq!(
            store::get(&t.db, id).await.unwrap().unwrap().queue,
            queue,
            "{kind}"
        );
    }
});

both_backends!(priority_weights_and_no_starvation, |t| {
    let cfg = config(
        "[queue.kinds.a_high]\nqueue = \"high\"\n[queue.kinds.a_default]\nqueue = \"default\"\n\
         [queue.kinds.a_low]\nqueue = \"low\"\n",
    );
    // Enqueued lowest first, so age alone would favour low.
    for q in ["a_low", "a_default", "a_high"] {
        for _ in 0..20 {
            enqueue(&t.db, &cfg, NewTask::new(q, json!({})), T0).await;
        }
    }
    let ok = |_: &_| Ok(());
    let w = worker(&t.db, &cfg)
        .with_handler("a_high", handler(ok))
        .with_handler("a_default", handler(ok))
        .with_handler("a_low", handler(ok));
    let mut order = Vec::new();
    for _ in 0..30 {
        let out = w.run_one(T0).await.unwrap().unwrap();
        let Outcome::Done { kind, .. } = out else {
            panic!("{out:?}")
        };
        order.push(kind);
    }
    let count = |slice: &[String], k: &str| slice.iter().filter(|x| *x == k).count();
    // Every cycle of ten claims: 6 high, 3 default, 1 low — high first, low not starved.
    for cycle in order.chunks(10).take(2) {
        assert_eq!(count(cycle, "a_high"), 6, "{order:?}");
        assert_eq!(count(cycle, "a_default"), 3, "{order:?}");
        assert_eq!(count(cycle, "a_low"), 1, "{order:?}");
    }
    assert_eq!(order[0], "a_high");
    // High ran dry after 20 (in the fourth cycle), its slots fall through to the others.
    for _ in 0..30 {
        w.run_one(T0).await.unwrap().unwrap();
    }
    assert_eq!(w.run_one(T0).await.unwrap(), None);
});

both_backends!(backoff_then_dead_then_retry_by_command, |t| {
    let cfg = config(
        "[queue.kinds.flaky]\nmax_attempts = 3\nbackoff_base_ms = 1000\nbackoff_max_ms = 60000\n",
    );
    let fail = Arc::new(AtomicUsize::new(0));
    let f = fail.clone();
    let w = worker(&t.db, &cfg).with_handler(
        "flaky",
        handler(move |task| {
            if f.fetch_add(1, Ordering::SeqCst) < 3 {
                Err(TaskError::Retry(format!("boom {}", task.attempts)))
            } else {
                Ok(())
            }
        }),
    );
    let id = enqueue(&t.db, &cfg, NewTask::new("flaky", json!({})), T0).await;
    let mut now = T0;
    for attempt in 1..=2i64 {
        let out = w.run_one(now).await.unwrap().unwrap();
        let Outcome::Retry { run_at, error, .. } = out else {
            panic!("{out:?}")
        };
        assert_eq!(error, format!("boom {attempt}"));
        let base = 1000 * (1 << (attempt - 1));
        let delay = run_at - now;
        assert!(
            delay >= base * 3 / 4 && delay <= base * 5 / 4,
            "attempt {attempt}: delay {delay}"
        );
        // Not due before the backoff ends.
        assert_eq!(w.run_one(run_at - 1).await.unwrap(), None);
        now = run_at;
    }
    let out = w.run_one(now).await.unwrap().unwrap();
    assert!(matches!(out, Outcome::Dead { .. }), "{out:?}");
    let row = store::get(&t.db, id).await.unwrap().unwrap();
    assert_eq!(row.state, "dead");
    assert_eq!(row.attempts, 3);
    assert_eq!(row.last_error.as_deref(), Some("boom 3"));
    assert_eq!(row.errors.as_array().unwrap().len(), 3, "{:?}", row.errors);
    assert_eq!(
        w.run_one(now + 10_000_000).await.unwrap(),
        None,
        "dead stays dead"
    );
    assert_eq!(
        store::list(&t.db, store::TaskState::Dead, 10)
            .await
            .unwrap()
            .len(),
        1
    );

    store::retry(&t.db, id, now).await.unwrap();
    assert!(
        store::retry(&t.db, id, now).await.is_err(),
        "only dead tasks"
    );
    let out = w.run_one(now).await.unwrap().unwrap();
    assert!(matches!(out, Outcome::Done { .. }), "{out:?}");
    let row = store::get(&t.db, id).await.unwrap().unwrap();
    assert_eq!(row.errors.as_array().unwrap().len(), 3, "history kept");
});

both_backends!(permanent_error_is_dead_at_once, |t| {
    let cfg = config("");
    let w = worker(&t.db, &cfg)
        .with_handler("bad", handler(|_| Err(TaskError::Permanent("400".into()))));
    let id = enqueue(&t.db, &cfg, NewTask::new("bad", json!({})), T0).await;
    let out = w.run_one(T0).await.unwrap().unwrap();
    assert!(matches!(out, Outcome::Dead { .. }), "{out:?}");
    assert_eq!(store::get(&t.db, id).await.unwrap().unwrap().attempts, 1);
    // An unknown kind is permanent too.
    let id = enqueue(
        &t.db,
        &cfg,
        NewTask::new("nobody_handles_this", json!({})),
        T0,
    )
    .await;
    let out = w.run_one(T0).await.unwrap().unwrap();
    assert!(matches!(out, Outcome::Dead { .. }), "{out:?}");
    assert_eq!(state_of(&t.db, id).await, "dead");
});

both_backends!(expired_lease_is_swept_and_run_by_another_worker, |t| {
    let cfg = config("[queue]\nlease_ms = 5000\nheartbeat_ms = 1000\n");
    let id = enqueue(&t.db, &cfg, NewTask::new("noop", json!({})), T0).await;
    // Worker A claims and then "dies" (never heartbeats nor records).
    let a = worker(&t.db, &cfg);
    let claimed = a.claim(1, T0).await.unwrap();
    assert_eq!(claimed.len(), 1);
    let b = worker(&t.db, &cfg);
    assert_eq!(b.run_one(T0 + 1000).await.unwrap(), None, "leased");
    // A heartbeat keeps it: the sweep before expiry does nothing.
    assert_eq!(a.heartbeat(T0 + 4000).await.unwrap(), 1);
    assert_eq!(store::sweep_expired(&t.db, T0 + 8000).await.unwrap(), 0);
    assert_eq!(store::sweep_expired(&t.db, T0 + 9001).await.unwrap(), 1);
    let out = b.run_one(T0 + 9001).await.unwrap().unwrap();
    assert_eq!(
        out,
        Outcome::Done {
            id,
            kind: "noop".into()
        }
    );
    let row = store::get(&t.db, id).await.unwrap().unwrap();
    assert_eq!(row.attempts, 2);
    assert!(row.errors.to_string().contains("lease expired"));
    // A's late completion is refused: it no longer holds the lease.
    assert!(!store::complete(&t.db, id, &a.id, T0 + 9002).await.unwrap());
});

both_backends!(timeout_cuts_a_run_and_retries, |t| {
    let cfg = config("[queue.kinds.slow]\ntimeout_ms = 50\n");
    struct Slow;
    #[async_trait::async_trait]
    impl komora_origin::queue::tasks::TaskHandler<komora_origin::queue::tasks::TaskContext> for Slow {
        async fn run(
            &self,
            _: &komora_origin::queue::tasks::TaskContext,
            _: &store::ClaimedTask,
        ) -> Result<(), TaskError> {
            tokio::time::sleep(std::time::Duration::from_secs(30)).await;
            Ok(())
        }
    }
    let w = worker(&t.db, &cfg).with_handler("slow", Arc::new(Slow));
    enqueue(&t.db, &cfg, NewTask::new("slow", json!({})), T0).await;
    let started = std::time::Instant::now();
    let out = w.run_one(T0).await.unwrap().unwrap();
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    let Outcome::Retry { error, .. } = out else {
        panic!("{out:?}")
    };
    assert!(error.contains("timed out"), "{error}");
});

both_backends!(prune_deletes_old_done_tasks_only, |t| {
    let cfg = config("[queue]\nprune_after_hours = 1\n");
    let w =
        worker(&t.db, &cfg).with_handler("bad", handler(|_| Err(TaskError::Permanent("x".into()))));
    let done = enqueue(&t.db, &cfg, NewTask::new("noop", json!({})), T0).await;
    let dead = enqueue(&t.db, &cfg, NewTask::new("bad", json!({})), T0).await;
    w.run_one(T0).await.unwrap();
    w.run_one(T0).await.unwrap();
    let hour = 3_600_000;
    assert_eq!(store::prune(&t.db, T0 + hour - 1, hour).await.unwrap(), 0);
    w.maintain(T0 + hour + 1).await.unwrap();
    assert!(store::get(&t.db, done).await.unwrap().is_none());
    assert_eq!(state_of(&t.db, dead).await, "dead");
});

both_backends!(per_kind_concurrency_limits_a_batch, |t| {
    let cfg = config("[queue.kinds.solo]\nconcurrency = 1\n");
    for _ in 0..3 {
        enqueue(&t.db, &cfg, NewTask::new("solo", json!({})), T0).await;
    }
    enqueue(&t.db, &cfg, NewTask::new("noop", json!({})), T0).await;
    let w = worker(&t.db, &cfg);
    let got = w.claim(10, T0).await.unwrap();
    let solo = got.iter().filter(|t| t.kind == "solo").count();
    assert_eq!(solo, 1, "{got:?}");
    assert_eq!(got.len(), 2);
    // The extra ones went back without using an attempt; the next claim skips the kind.
    let again = w.claim(10, T0).await.unwrap();
    assert!(again.is_empty(), "{again:?}");
    let stats = store::stats(&t.db, T0).await.unwrap();
    let default = stats.iter().find(|s| s.queue == "default").unwrap();
    assert_eq!((default.queued, default.running), (2, 2));
    let rows = store::list(&t.db, store::TaskState::Queued, 10)
        .await
        .unwrap();
    assert!(rows.iter().all(|r| r.attempts == 0));
});

both_backends!(purge_deletes_queued_of_one_queue, |t| {
    let cfg = config("");
    enqueue(&t.db, &cfg, NewTask::new("noop", json!({})), T0).await;
    enqueue(&t.db, &cfg, SendMessage::task(1), T0).await;
    assert_eq!(store::purge(&t.db, "default").await.unwrap(), 1);
    let stats = store::stats(&t.db, T0).await.unwrap();
    assert_eq!(stats[0].queue, "high");
    assert_eq!(stats[0].queued, 1);
    assert_eq!(stats[1].queued, 0);
});

both_backends!(batched_claims_split_by_weight_and_fill_up, |t| {
    let cfg = config(
        "[queue.kinds.h]\nqueue = \"high\"\n[queue.kinds.d]\nqueue = \"default\"\n\
         [queue.kinds.l]\nqueue = \"low\"\nconcurrency = 100\n",
    );
    for k in ["h", "d", "l"] {
        for _ in 0..30 {
            enqueue(&t.db, &cfg, NewTask::new(k, json!({})), T0).await;
        }
    }
    let w = worker(&t.db, &cfg);
    let count = |v: &[store::ClaimedTask], q: &str| v.iter().filter(|t| t.queue == q).count();
    let got = w.claim(10, T0).await.unwrap();
    assert_eq!(
        (
            count(&got, "high"),
            count(&got, "default"),
            count(&got, "low")
        ),
        (6, 3, 1)
    );
    // Only low left: a whole batch goes to it (slots fall through).
    sqlx::query("DELETE FROM tasks WHERE state = 'queued' AND queue <> 'low'")
        .execute(&t.db.pool)
        .await
        .unwrap();
    let got = w.claim(10, T0).await.unwrap();
    assert_eq!(count(&got, "low"), 10);
    // Claims never hand the same task out twice.
    let mut ids: Vec<i64> = got.iter().map(|t| t.id).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 10);
});

both_backends!(leftover_slots_go_to_the_queues_in_priority_order, |t| {
    let cfg = config(
        "[queue.kinds.h]\nqueue = \"high\"\n[queue.kinds.d]\nqueue = \"default\"\n\
         concurrency = 100\n[queue.kinds.l]\nqueue = \"low\"\nconcurrency = 100\n",
    );
    // High has fewer due than its share (6 of 10): its 4 spare slots go to default first,
    // though low could take them too.
    for (k, n) in [("h", 2), ("d", 30), ("l", 30)] {
        for _ in 0..n {
            enqueue(&t.db, &cfg, NewTask::new(k, json!({})), T0).await;
        }
    }
    let w = worker(&t.db, &cfg);
    let got = w.claim(10, T0).await.unwrap();
    let queues: Vec<&str> = got.iter().map(|t| t.queue.as_str()).collect();
    // In priority order, each queue's tasks oldest first.
    let mut want = vec!["high"; 2];
    want.extend(["default"; 7]);
    want.push("low");
    assert_eq!(queues, want);
    let ids: Vec<i64> = got.iter().map(|t| t.id).collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    assert_eq!(ids, sorted, "enqueued in queue order, so ids rise");
    // A paused queue's share goes to the others too.
    let mut conn = t.db.pool.acquire().await.unwrap();
    komora_queue::control::pause(&mut conn, "default", "test", T0)
        .await
        .unwrap();
    drop(conn);
    let got = w.claim(10, T0).await.unwrap();
    assert_eq!(got.len(), 10);
    assert!(got.iter().all(|t| t.queue == "low"), "{got:?}");
});

both_backends!(concurrent_workers_never_share_a_task, |t| {
    let cfg = config("[queue.kinds.noop]\nconcurrency = 1000\n");
    for _ in 0..200 {
        enqueue(&t.db, &cfg, NewTask::new("noop", json!({})), T0).await;
    }
    let mut handles = Vec::new();
    for _ in 0..4 {
        let w = Arc::new(worker(&t.db, &cfg));
        handles.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let got = w.claim(7, T0).await.unwrap();
                if got.is_empty() {
                    break;
                }
                mine.extend(got.into_iter().map(|t| t.id));
            }
            mine
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.unwrap());
    }
    all.sort_unstable();
    let n = all.len();
    all.dedup();
    assert_eq!((n, all.len()), (200, 200));
});
