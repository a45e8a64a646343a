//! Heartbeats renew exactly the tasks in flight, and an outcome the worker cannot write is
//! retried and then released to the sweep: no task stays `running` while its worker lives.
//! The database is made to refuse the writes for real (a trigger), or its connections are
//! killed (`pg_terminate_backend`) mid-run.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use komora_origin::db::{Backend, Db};
use komora_origin::queue::store;
use komora_origin::queue::tasks::TaskError;
use komora_origin::queue::NewTask;
use serde_json::json;

use super::support::*;
use crate::both_backends;
use crate::common::{count, TestDb};

both_backends!(heartbeat_renews_only_the_tasks_it_is_given, |t| {
    let cfg = config("[queue]\nlease_ms = 5000\nheartbeat_ms = 1000\n");
    let a = enqueue(&t.db, &cfg, NewTask::new("noop", json!({})), T0).await;
    let b = enqueue(&t.db, &cfg, NewTask::new("noop", json!({})), T0).await;
    let w = worker(&t.db, &cfg);
    assert_eq!(w.claim(2, T0).await.unwrap().len(), 2);
    assert_eq!(w.in_flight(), vec![a, b]);
    // Only `a` is still in flight: `b` (say, its outcome could not be written) is not renewed.
    let held = store::heartbeat(&t.db, &w.id, &[a], T0 + 4000, 5000)
        .await
        .unwrap();
    assert_eq!(held, 1);
    assert_eq!(store::sweep_expired(&t.db, T0 + 5001).await.unwrap(), 1);
    assert_eq!(state_of(&t.db, a).await, "running");
    assert_eq!(state_of(&t.db, b).await, "queued");
    // No ids, no renewal (and no statement with an empty IN list).
    assert_eq!(
        store::heartbeat(&t.db, &w.id, &[], T0 + 6000, 5000)
            .await
            .unwrap(),
        0
    );
});

/// A real database trigger that rejects every outcome write (done, retry, dead) while the
/// `outage` table has a row; the sweep's requeue (which appends a "lease expired" error)
/// and the release of an unstarted claim (which takes the attempt back) pass.
async fn install_outage_trigger(db: &Db) {
    let guard = "EXISTS (SELECT 1 FROM outage) AND OLD.state = 'running' \
                 AND NEW.state <> 'running' AND NEW.attempts >= OLD.attempts AND NOT (COALESCE(NEW.last_error, '') \
                 LIKE 'lease expired%' AND NEW.errors <> OLD.errors)";
    sqlx::query("CREATE TABLE outage (x INTEGER)")
        .execute(&db.pool)
        .await
        .unwrap();
    let stmts = match db.backend {
        Backend::Sqlite => vec![format!(
            "CREATE TRIGGER block_outcomes BEFORE UPDATE ON tasks WHEN {guard} \
             BEGIN SELECT RAISE(ABORT, 'outcome writes are down'); END"
        )],
        Backend::Postgres => vec![
            format!(
                "CREATE FUNCTION block_outcomes() RETURNS trigger AS $$ BEGIN \
                 IF {guard} THEN RAISE EXCEPTION 'outcome writes are down'; END IF; \
                 RETURN NEW; END $$ LANGUAGE plpgsql"
            ),
            "CREATE TRIGGER block_outcomes BEFORE UPDATE ON tasks FOR EACH ROW \
             EXECUTE FUNCTION block_outcomes()"
                .to_string(),
        ],
    };
    for s in stmts {
        sqlx::query(sqlx::AssertSqlSafe(s))
            .execute(&db.pool)
            .await
            .unwrap();
    }
}

/// Waits until no task is queued or running, or panics after `limit`.
async fn wait_settled(db: &Db, limit: Duration, what: &str) {
    let deadline = Instant::now() + limit;
    loop {
        // The connections may just have been cut: a failed count is simply asked again.
        let open: Option<i64> =
            sqlx::query_scalar("SELECT COUNT(*) FROM tasks WHERE state IN ('queued', 'running')")
                .fetch_one(&db.pool)
                .await
                .ok();
        if open == Some(0) {
            return;
        }
        if Instant::now() > deadline {
            let rows = store::list(db, store::TaskState::Running, 5).await.unwrap();
            panic!("{what}: {open:?} tasks still queued or running after {limit:?}: {rows:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs until `open` turns false: keeps the worker's in-flight set non-empty, so a
/// heartbeat that renewed every row of the worker would keep the given-up tasks too.
struct Sleeper(Arc<std::sync::atomic::AtomicBool>);

#[async_trait::async_trait]
impl komora_origin::queue::tasks::TaskHandler<komora_origin::queue::tasks::TaskContext>
    for Sleeper
{
    async fn run(
        &self,
        _ctx: &komora_origin::queue::tasks::TaskContext,
        _task: &store::ClaimedTask,
    ) -> Result<(), TaskError> {
        while self.0.load(std::sync::atomic::Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }
}

const FAST: &str = "[queue]\nlease_ms = 1000\nheartbeat_ms = 200\npoll_ms = 20\nsweep_ms = 200\n\
                    [queue.kinds.flaky]\nmax_attempts = 100\nbackoff_base_ms = 1\nbackoff_max_ms = 10\n";

both_backends!(
    unwritable_outcome_is_released_to_the_sweep_not_renewed,
    |t| {
        let cfg = config(FAST);
        install_outage_trigger(&t.db).await;
        let runs: Arc<Mutex<HashMap<i64, u32>>> = Arc::default();
        let seen = runs.clone();
        // The first run fails (its retry cannot be written while the outage lasts), later runs
        // succeed (their completion cannot be written either until it ends).
        let outage = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let w = Arc::new(
            worker(&t.db, &cfg)
                .with_handler(
                    "flaky",
                    handler(move |task| {
                        *seen.lock().unwrap().entry(task.id).or_default() += 1;
                        if task.attempts == 1 {
                            Err(TaskError::Retry("flaky".into()))
                        } else {
                            Ok(())
                        }
                    }),
                )
                .with_handler("sleeper", Arc::new(Sleeper(outage.clone()))),
        );
        let sleeper = enqueue(
            &t.db,
            &cfg,
            NewTask::new("sleeper", json!({})),
            store::now_ms(),
        )
        .await;
        let mut ids = Vec::new();
        for _ in 0..20 {
            ids.push(
                enqueue(
                    &t.db,
                    &cfg,
                    NewTask::new("flaky", json!({})),
                    store::now_ms(),
                )
                .await,
            );
        }
        sqlx::query("INSERT INTO outage (x) VALUES (1)")
            .execute(&t.db.pool)
            .await
            .unwrap();
        let (stop, rx) = tokio::sync::watch::channel(false);
        let run = tokio::spawn(w.clone().run(rx));
        // Every task has run once and none could record it.
        let deadline = Instant::now() + Duration::from_secs(20);
        while runs.lock().unwrap().len() < ids.len() {
            assert!(Instant::now() < deadline, "tasks never ran");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // While the worker lives, given-up tasks are swept back (lease 1 s, sweep 0.2 s) rather
        // than kept alive by its heartbeat.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let swept = count(
                &t.db,
                "SELECT COUNT(*) FROM tasks WHERE kind = 'flaky' AND errors LIKE '%lease expired%'",
            )
            .await;
            if swept == ids.len() as i64 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "only {swept} of {} tasks swept back while their worker lives",
                ids.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The sleeper was in flight all along and kept its lease.
        assert_eq!(state_of(&t.db, sleeper).await, "running");
        sqlx::query("DELETE FROM outage")
            .execute(&t.db.pool)
            .await
            .unwrap();
        outage.store(false, std::sync::atomic::Ordering::SeqCst);
        // Lease + sweep (+ the write retries and scheduling slack).
        wait_settled(&t.db, Duration::from_secs(10), "after the outage").await;
        assert_eq!(
            count(&t.db, "SELECT COUNT(*) FROM tasks WHERE state = 'done'").await,
            ids.len() as i64 + 1
        );
        assert!(w.in_flight().is_empty(), "{:?}", w.in_flight());
        stop.send(true).unwrap();
        run.await.unwrap();
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_killed_mid_run_every_task_ends_done_or_dead() {
    let Some(t) = TestDb::new(Backend::Postgres).await else {
        return;
    };
    let cfg = config(FAST);
    let runs: Arc<Mutex<HashMap<i64, u32>>> = Arc::default();
    let seen = runs.clone();
    let w = Arc::new(worker(&t.db, &cfg).with_handler(
        "flaky",
        handler(move |task| {
            *seen.lock().unwrap().entry(task.id).or_default() += 1;
            Ok(())
        }),
    ));
    let total = 600;
    for _ in 0..total {
        enqueue(
            &t.db,
            &cfg,
            NewTask::new("flaky", json!({})),
            store::now_ms(),
        )
        .await;
    }
    let (stop, rx) = tokio::sync::watch::channel(false);
    let run = tokio::spawn(w.clone().run(rx));
    // Cut every connection of the test database a few times while the worker is busy.
    let name = t.url.rsplit('/').next().unwrap().to_string();
    // A plain pool on the admin database: `Db::connect` would run our migrations there.
    sqlx::any::install_default_drivers();
    let admin = sqlx::AnyPool::connect(&crate::common::pg_admin_url())
        .await
        .unwrap();
    let mut killed = 0i64;
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(60)).await;
        let rows = sqlx::query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = $1 AND pid <> pg_backend_pid()",
        )
        .bind(name.as_str())
        .fetch_all(&admin)
        .await
        .unwrap();
        killed += rows.len() as i64;
    }
    assert!(killed > 0, "no connection was cut");
    wait_settled(&t.db, Duration::from_secs(20), "after the cuts").await;
    let open = count(
        &t.db,
        "SELECT COUNT(*) FROM tasks WHERE state NOT IN ('done', 'dead')",
    )
    .await;
    assert_eq!(open, 0);
    // Every task ran; none was lost.
    assert_eq!(runs.lock().unwrap().len(), total);
    assert!(w.in_flight().is_empty(), "{:?}", w.in_flight());
    stop.send(true).unwrap();
    run.await.unwrap();
}
