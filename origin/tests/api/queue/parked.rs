//! The engine's `on_parked` hook: a kind whose run ends `delivery_unknown` marks its own
//! rows in the transaction that parks the task. The send task marks its message this way
//! (no database trigger does it any more); a hook that fails rolls the park back with its
//! marks; a run that lost its lease parks nothing and calls no hook.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use komora_origin::queue::store::{self, ClaimedTask};
use komora_origin::queue::tasks::{MessageInput, TaskContext, TaskError};
use komora_origin::queue::worker::Outcome;
use sqlx::{AnyConnection, Row};

use super::support::*;
use crate::both_backends;
use crate::common::count;

/// A kind whose every run may have delivered: its hook marks the input's message
/// `delivery_unknown` through the park's connection, then fails when `fail` says so.
/// `steal` makes the run hand the task to another worker first (the lease is lost).
struct MaybeSent {
    hooks: Arc<AtomicUsize>,
    fail: bool,
    steal: bool,
}

#[async_trait::async_trait]
impl komora_queue::Task for MaybeSent {
    const KIND: &'static str = "maybe_sent";
    type Input = MessageInput;
    type Context = TaskContext;

    async fn run(
        &self,
        ctx: &TaskContext,
        _input: MessageInput,
        task: &ClaimedTask,
    ) -> Result<(), TaskError> {
        if self.steal {
            sqlx::query("UPDATE tasks SET worker_id = 'another-worker' WHERE id = $1")
                .bind(task.id)
                .execute(&ctx.db.pool)
                .await?;
        }
        Err(TaskError::DeliveryUnknown(
            "the platform did not answer".into(),
        ))
    }

    async fn on_parked(
        &self,
        _ctx: &TaskContext,
        input: MessageInput,
        _task: &ClaimedTask,
        conn: &mut AnyConnection,
    ) -> Result<(), sqlx::Error> {
        self.hooks.fetch_add(1, Ordering::SeqCst);
        komora_origin::store::messages::mark_delivery_unknown(conn, input.message_id).await?;
        if self.fail {
            return Err(sqlx::Error::Protocol("hook refused".into()));
        }
        Ok(())
    }
}

async fn enqueue_maybe_sent(t: &crate::common::TestDb, message: i64) -> i64 {
    let cfg = config("");
    let mut tx = t.db.pool.begin().await.unwrap();
    let id = komora_queue::enqueue::<MaybeSent>(
        &mut tx,
        &cfg.queue,
        &MessageInput {
            message_id: message,
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    id
}

both_backends!(the_delivery_unknown_trigger_is_gone, |t| {
    let triggers =
        match t.db.backend {
            komora_origin::db::Backend::Sqlite => count(
                &t.db,
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'tasks'",
            )
            .await,
            komora_origin::db::Backend::Postgres => {
                count(
                    &t.db,
                    "SELECT COUNT(*) FROM pg_trigger WHERE tgrelid = 'tasks'::regclass \
                 AND NOT tgisinternal",
                )
                .await
            }
        };
    assert_eq!(
        triggers, 0,
        "the send's hook marks its message, not a trigger"
    );
});

both_backends!(on_parked_marks_rows_with_the_park, |t| {
    let hooks = Arc::new(AtomicUsize::new(0));
    let cfg = config("");
    let w = worker(&t.db, &cfg).with_task(MaybeSent {
        hooks: hooks.clone(),
        fail: false,
        steal: false,
    });
    let message = outbound(&t.db, "p1").await;
    let id = enqueue_maybe_sent(&t, message).await;
    let out = w.run_one(T0).await.unwrap().unwrap();
    assert!(matches!(out, Outcome::DeliveryUnknown { .. }), "{out:?}");
    assert_eq!(hooks.load(Ordering::SeqCst), 1);
    assert_eq!(state_of(&t.db, id).await, "delivery_unknown");
    assert_eq!(delivery_of(&t.db, message).await, "delivery_unknown");
});

both_backends!(a_failing_on_parked_rolls_the_park_back, |t| {
    let hooks = Arc::new(AtomicUsize::new(0));
    let cfg = config("[queue]\nlease_ms = 5000\nheartbeat_ms = 1000\n");
    let w = worker(&t.db, &cfg).with_task(MaybeSent {
        hooks: hooks.clone(),
        fail: true,
        steal: false,
    });
    let message = outbound(&t.db, "p2").await;
    let id = enqueue_maybe_sent(&t, message).await;
    let out = w.run_one(T0).await.unwrap().unwrap();
    // Every write of the outcome was rolled back; the worker let the task go.
    assert!(matches!(out, Outcome::LeaseLost { .. }), "{out:?}");
    assert_eq!(
        hooks.load(Ordering::SeqCst) as u32,
        komora_queue::worker::OUTCOME_TRIES
    );
    assert_eq!(state_of(&t.db, id).await, "running", "not parked");
    assert_eq!(
        delivery_of(&t.db, message).await,
        "pending",
        "the hook's mark was rolled back with the park"
    );
    assert!(w.in_flight().is_empty(), "out of the heartbeat");
    // Its lease runs out and the sweep queues it again: the next run decides anew.
    assert_eq!(store::sweep_expired(&t.db, T0 + 5001).await.unwrap(), 1);
    assert_eq!(state_of(&t.db, id).await, "queued");
});

both_backends!(a_run_that_lost_its_lease_parks_nothing, |t| {
    let hooks = Arc::new(AtomicUsize::new(0));
    let cfg = config("");
    let w = worker(&t.db, &cfg).with_task(MaybeSent {
        hooks: hooks.clone(),
        fail: false,
        steal: true,
    });
    let message = outbound(&t.db, "p3").await;
    let id = enqueue_maybe_sent(&t, message).await;
    let out = w.run_one(T0).await.unwrap().unwrap();
    assert!(matches!(out, Outcome::LeaseLost { .. }), "{out:?}");
    assert_eq!(hooks.load(Ordering::SeqCst), 0, "no hook without a park");
    let row = sqlx::query("SELECT state, worker_id FROM tasks WHERE id = $1")
        .bind(id)
        .fetch_one(&t.db.pool)
        .await
        .unwrap();
    assert_eq!(row.get::<String, _>(0), "running");
    assert_eq!(row.get::<String, _>(1), "another-worker");
    assert_eq!(delivery_of(&t.db, message).await, "pending");
});
