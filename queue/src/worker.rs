//! The worker: claims tasks by weighted round-robin, runs each with its kind's timeout while a
//! heartbeat renews the leases, and records the outcome (done, retry with backoff, dead).
//!
//! [`Worker::run_one`] does one claim-run-record step at a given `now_ms`, so tests drive the
//! queue deterministically; [`Worker::run`] is the long-running loop with batched claims,
//! the periodic sweep of expired leases and prune of old tasks, and a graceful stop.
//!
//! Limits are per worker process: `[queue.kinds.<kind>] concurrency` caps the tasks of a
//! kind one worker runs at once (N workers run up to N times that). `run_one` does not
//! heartbeat (a task it runs must finish within the lease); `run` does.
//!
//! The heartbeat renews exactly the tasks in flight (claimed and not yet recorded). An
//! outcome that cannot be written (the database restarted, a connection was cut) is tried
//! again [`OUTCOME_TRIES`] times with backoff; then the worker lets the task go: it leaves
//! the in-flight set, its lease runs out, and the sweep queues it again (at-least-once).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};

use crate::completions::{flush_completions, Completion};
use crate::config::KindConfig;
use crate::held::Held;
use crate::routing::Wrr;
use crate::store::{self, ClaimedTask, FailResult};
use crate::task::{Handler, Handlers, TaskError};
use crate::{backoff, metrics, Context, QueueDb};

/// What happened to one claimed task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Done {
        id: i64,
        kind: String,
    },
    /// Failed; queued again, due at `run_at`.
    Retry {
        id: i64,
        kind: String,
        error: String,
        run_at: i64,
    },
    /// Failed for good (permanent error or last attempt); kept with its error history.
    Dead {
        id: i64,
        kind: String,
        error: String,
    },
    /// An earlier run may have delivered; parked as `delivery_unknown` for an operator.
    DeliveryUnknown {
        id: i64,
        kind: String,
        error: String,
    },
    /// The lease expired while it ran and another worker took the task over.
    LeaseLost {
        id: i64,
        kind: String,
    },
}

impl Outcome {
    pub fn id(&self) -> i64 {
        match self {
            Outcome::Done { id, .. }
            | Outcome::Retry { id, .. }
            | Outcome::Dead { id, .. }
            | Outcome::DeliveryUnknown { id, .. }
            | Outcome::LeaseLost { id, .. } => *id,
        }
    }
}

/// One worker (one per process, running many tasks at once) on application context `C`.
pub struct Worker<C: Context> {
    pub id: String,
    ctx: Arc<C>,
    handlers: Handlers<C>,
    wrr: Wrr,
    /// Tasks running per kind, for the per-kind concurrency limit.
    running: Mutex<HashMap<String, u32>>,
    /// Set by [`Worker::run`]: successful tasks are marked done in batches by a flusher.
    completions: std::sync::OnceLock<mpsc::UnboundedSender<Completion>>,
    /// Tasks claimed and not yet recorded (or given up on): what the heartbeat renews.
    in_flight: Mutex<HashSet<i64>>,
}

/// Writes of one outcome before the worker gives the task up to the sweep.
pub const OUTCOME_TRIES: u32 = 5;
/// Wait before the second write of an outcome, doubled for each later one.
const OUTCOME_RETRY_BASE: Duration = Duration::from_millis(50);

/// The wait before write number `try_no + 1` of an outcome (`try_no` from 1).
pub(crate) fn outcome_backoff(try_no: u32) -> Duration {
    OUTCOME_RETRY_BASE.saturating_mul(1 << try_no.saturating_sub(1).min(10))
}

/// A unique worker id: host, process id and a random suffix.
pub fn new_worker_id() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "host".into());
    format!(
        "{host}-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

impl<C: Context> Worker<C> {
    /// A worker with the context's kinds ([`Context::handlers`]).
    pub fn new(ctx: C) -> Worker<C> {
        Worker {
            id: new_worker_id(),
            ctx: Arc::new(ctx),
            handlers: C::handlers(),
            wrr: Wrr::default(),
            running: Mutex::new(HashMap::new()),
            completions: std::sync::OnceLock::new(),
            in_flight: Mutex::new(HashSet::new()),
        }
    }

    /// Adds or replaces the untyped handler of `kind` (tests and benchmarks add their own
    /// kinds).
    pub fn with_handler(mut self, kind: &str, handler: Arc<dyn Handler<C>>) -> Worker<C> {
        self.handlers.insert(kind, handler);
        self
    }

    /// Adds or replaces typed kind `T`.
    pub fn with_task<T: crate::Task<Context = C>>(mut self, task: T) -> Worker<C> {
        self.handlers.register(task);
        self
    }

    pub fn context(&self) -> &C {
        &self.ctx
    }

    /// Settings of `kind`: `[queue.kinds.<kind>]` on the kind's defaults.
    fn kind(&self, kind: &str) -> KindConfig {
        let qc = self.ctx.queue_config();
        match (qc.kinds.get(kind), self.handlers.defaults().get(kind)) {
            (Some(k), _) => k.clone(),
            (None, Some(d)) => d.clone(),
            (None, None) => qc.kind(kind),
        }
    }

    fn lease_ms(&self) -> i64 {
        i64::try_from(self.ctx.queue_config().lease_ms).unwrap_or(30_000)
    }

    fn running_lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        // A poisoned map only means a panic elsewhere mid-update; the counts are still usable.
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn in_flight_lock(&self) -> std::sync::MutexGuard<'_, HashSet<i64>> {
        // As for `running`: a poisoned set is still a set of ids.
        self.in_flight.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The tasks this worker holds and has not recorded yet (what its heartbeat renews).
    pub fn in_flight(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = self.in_flight_lock().iter().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Takes recorded (or given up) tasks out of the in-flight set.
    pub(crate) fn land(&self, ids: &[i64]) {
        let mut set = self.in_flight_lock();
        for id in ids {
            set.remove(id);
        }
    }

    /// Renews the leases of the tasks in flight, at `now_ms`.
    pub async fn heartbeat(&self, now_ms: i64) -> Result<u64, sqlx::Error> {
        let ids = self.in_flight();
        store::heartbeat(self.ctx.db(), &self.id, &ids, now_ms, self.lease_ms()).await
    }

    fn saturated_kinds(&self) -> Vec<String> {
        self.running_lock()
            .iter()
            .filter(|(kind, n)| **n >= self.kind(kind).concurrency)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Counts a claimed task as running unless its kind is at its limit (then `false`).
    fn admit(&self, kind: &str) -> bool {
        let limit = self.kind(kind).concurrency;
        let mut map = self.running_lock();
        let n = map.entry(kind.to_string()).or_insert(0);
        if *n >= limit {
            return false;
        }
        *n += 1;
        true
    }

    fn finish(&self, kind: &str) {
        let mut map = self.running_lock();
        if let Some(n) = map.get_mut(kind) {
            *n = n.saturating_sub(1);
        }
    }

    /// Claims up to `free` tasks: each queue first gets its weighted round-robin share, then
    /// slots left over (a queue had fewer due) go to the other queues in priority order.
    pub async fn claim(&self, free: usize, now_ms: i64) -> Result<Vec<ClaimedTask>, sqlx::Error> {
        let mut conn = self.ctx.db().pool().acquire().await?;
        self.claim_on(&mut conn, free, now_ms).await
    }

    /// [`Worker::claim`] on `conn`: one statement for the whole batch (`crate::claim`).
    async fn claim_on(
        &self,
        conn: &mut sqlx::AnyConnection,
        free: usize,
        now_ms: i64,
    ) -> Result<Vec<ClaimedTask>, sqlx::Error> {
        if free == 0 {
            return Ok(Vec::new());
        }
        let shares = self.wrr.take(free as u64, self.ctx.queue_config().weights);
        let exclude = self.saturated_kinds();
        let backend = self.ctx.db().backend();
        let got = store::claim(
            conn,
            backend,
            &self.id,
            shares,
            &exclude,
            now_ms,
            self.lease_ms(),
        )
        .await?;
        // A batch may hold more of one kind than its limit allows: give the extra back.
        let mut admitted = Vec::with_capacity(got.len());
        for t in got {
            if self.admit(&t.kind) {
                self.in_flight_lock().insert(t.id);
                admitted.push(t);
            } else if let Err(e) = store::release(self.ctx.db(), &self.id, t.id).await {
                // Not an error of the claim: the admitted tasks must still run (their kind
                // slots are taken). The unreleased one comes back when its lease expires.
                tracing::warn!(task = t.id, error = %e, "could not give back a claimed task");
            }
        }
        Ok(admitted)
    }

    /// Runs a claimed task with its kind's timeout and records the outcome. `end_ms` is the
    /// time the outcome is recorded at (`None` = the clock).
    pub async fn execute(&self, task: ClaimedTask, end_ms: Option<i64>) -> Outcome {
        let kind_cfg = self.kind(&task.kind);
        metrics::started(&task.queue, task.started_at.saturating_sub(task.run_at));
        let started = Instant::now();
        let result = match self.handlers.get(&task.kind) {
            None => Err(TaskError::Permanent(format!(
                "no handler for task kind {:?}",
                task.kind
            ))),
            Some(handler) => {
                let handler = handler.clone();
                let ctx = self.ctx.clone();
                let t = task.clone();
                // Its own tokio task: a panicking handler fails its task, not the worker.
                let run = tokio::spawn(async move { handler.run(&ctx, &t).await });
                let abort = run.abort_handle();
                match tokio::time::timeout(kind_cfg.timeout, run).await {
                    Ok(Ok(r)) => r,
                    Ok(Err(e)) => Err(TaskError::Retry(format!("task panicked: {e}"))),
                    Err(_) => {
                        abort.abort();
                        Err(TaskError::Retry(format!(
                            "timed out after {} ms",
                            kind_cfg.timeout.as_millis()
                        )))
                    }
                }
            }
        };
        let elapsed = started.elapsed().as_secs_f64() * 1000.0;
        let now = end_ms.unwrap_or_else(store::now_ms);
        let outcome = self.record(&task, result, now).await;
        self.finish(&task.kind);
        let label = match &outcome {
            Outcome::Done { .. } => "done",
            Outcome::Retry { .. } => "retry",
            Outcome::Dead { .. } => "dead",
            Outcome::DeliveryUnknown { .. } => "delivery_unknown",
            Outcome::LeaseLost { .. } => "lease_lost",
        };
        metrics::finished(&task.kind, label, elapsed);
        outcome
    }

    async fn record(&self, task: &ClaimedTask, result: Result<(), TaskError>, now: i64) -> Outcome {
        let id = task.id;
        let kind = task.kind.clone();
        let db = self.ctx.db();
        if result.is_ok() {
            if let Some(tx) = self.completions.get() {
                if tx.send(Completion::Done(id)).is_ok() {
                    // Recorded by the flusher shortly; until then the lease still holds it.
                    return Outcome::Done { id, kind };
                }
            }
        }
        let (error, permanent) = match &result {
            Ok(()) => (String::new(), false),
            Err(TaskError::Retry(m)) => (m.clone(), false),
            Err(TaskError::Permanent(m) | TaskError::DeliveryUnknown(m)) => (m.clone(), true),
        };
        let k = self.kind(&task.kind);
        let delay = backoff::random_delay_ms(task.attempts, k.backoff_base_ms, k.backoff_max_ms);
        let mut try_no = 1;
        let outcome = loop {
            let write = match result {
                Ok(()) => store::complete(db, id, &self.id, now).await.map(|held| {
                    if held {
                        Outcome::Done {
                            id,
                            kind: kind.clone(),
                        }
                    } else {
                        Outcome::LeaseLost {
                            id,
                            kind: kind.clone(),
                        }
                    }
                }),
                Err(TaskError::DeliveryUnknown(_)) => {
                    self.park(task, now, &error).await.map(|held| {
                        if held {
                            Outcome::DeliveryUnknown {
                                id,
                                kind: kind.clone(),
                                error: error.clone(),
                            }
                        } else {
                            Outcome::LeaseLost {
                                id,
                                kind: kind.clone(),
                            }
                        }
                    })
                }
                Err(_) => store::fail(db, task, &self.id, now, &error, permanent, delay)
                    .await
                    .map(|r| match r {
                        FailResult::Retry(run_at) => Outcome::Retry {
                            id,
                            kind: kind.clone(),
                            error: error.clone(),
                            run_at,
                        },
                        FailResult::Dead => Outcome::Dead {
                            id,
                            kind: kind.clone(),
                            error: error.clone(),
                        },
                        FailResult::LeaseLost => Outcome::LeaseLost {
                            id,
                            kind: kind.clone(),
                        },
                    }),
            };
            match write {
                Ok(o) => break o,
                Err(e) if try_no < OUTCOME_TRIES => {
                    tracing::warn!(task = id, try_no, error = %e, "could not record task outcome; retrying");
                    tokio::time::sleep(outcome_backoff(try_no)).await;
                    try_no += 1;
                }
                Err(e) => {
                    // Let it go: out of the heartbeat, its lease expires and the sweep
                    // queues it again (at-least-once).
                    tracing::warn!(task = id, error = %e, "could not record task outcome; released to the sweep");
                    break Outcome::LeaseLost {
                        id,
                        kind: kind.clone(),
                    };
                }
            }
        };
        self.land(&[id]);
        outcome
    }

    /// Parks `task` as `delivery_unknown` and runs its kind's [`Handler::on_parked`] in the
    /// same transaction: both commit, or neither. `false` when the lease was lost (nothing is
    /// written and the hook does not run).
    async fn park(&self, task: &ClaimedTask, now: i64, error: &str) -> Result<bool, sqlx::Error> {
        let mut tx = self.ctx.db().pool().begin().await?;
        if !store::park_unknown(&mut tx, task, &self.id, now, error).await? {
            return Ok(false); // dropping the transaction rolls it back
        }
        if let Some(handler) = self.handlers.get(&task.kind) {
            handler.on_parked(&self.ctx, task, &mut tx).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Claims one due task (respecting the weights), runs it and records the outcome, all at
    /// `now_ms`. `None` when nothing is due.
    pub async fn run_one(&self, now_ms: i64) -> Result<Option<Outcome>, sqlx::Error> {
        let mut tasks = self.claim(1, now_ms).await?;
        let Some(task) = tasks.pop() else {
            return Ok(None);
        };
        Ok(Some(self.execute(task, Some(now_ms)).await))
    }

    /// Expired-lease sweep, prune, and gauge refresh: the queue's periodic duties.
    pub async fn maintain(&self, now_ms: i64) -> Result<(), sqlx::Error> {
        let db = self.ctx.db();
        let swept = store::sweep_expired(db, now_ms).await?;
        if swept > 0 {
            tracing::warn!(swept, "requeued tasks whose lease expired");
        }
        store::prune(db, now_ms, self.ctx.queue_config().prune_after_ms).await?;
        metrics::refresh(&store::stats(db, now_ms).await?);
        Ok(())
    }

    /// Runs until `stop` turns true: claims in batches, runs tasks concurrently, heartbeats,
    /// sweeps. On stop it claims nothing more and waits for the running tasks to finish.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let qc = self.ctx.queue_config().clone();
        metrics::init();
        tracing::info!(worker = %self.id, "worker started");
        let heartbeat = {
            let me = self.clone();
            let started = store::now_ms();
            let concurrency = i64::from(qc.worker_concurrency);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(qc.heartbeat_ms));
                loop {
                    tick.tick().await;
                    let now = store::now_ms();
                    if let Err(e) = me.heartbeat(now).await {
                        tracing::warn!(error = %e, "heartbeat failed");
                    }
                    // The worker's own record, for operators (crate::workers).
                    let db = me.ctx.db();
                    if let Err(e) =
                        crate::workers::beat(db, &me.id, started, concurrency, now).await
                    {
                        tracing::warn!(error = %e, "worker record not written");
                    }
                }
            })
        };
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let flusher = if self.completions.set(done_tx).is_ok() {
            Some(tokio::spawn(flush_completions(self.clone(), done_rx)))
        } else {
            None // run() twice on one worker: the first flusher serves both
        };
        let mut running = tokio::task::JoinSet::new();
        // The claims' own connection (`crate::held`): no ping before each batch.
        let mut claims = Held::new(self.ctx.db().pool());
        let mut last_maintain = 0i64;
        let concurrency = qc.worker_concurrency as usize;
        let batch = qc.claim_batch as usize;
        while !*stop.borrow() {
            let now = store::now_ms();
            if now.saturating_sub(last_maintain) >= i64::try_from(qc.sweep_ms).unwrap_or(5_000) {
                last_maintain = now;
                if let Err(e) = self.maintain(now).await {
                    tracing::warn!(error = %e, "queue maintenance failed");
                }
            }
            while running.try_join_next().is_some() {}
            let free = concurrency.saturating_sub(running.len()).min(batch);
            let mut claimed = 0;
            if free > 0 {
                let got = match claims.conn().await {
                    Ok(conn) => self.claim_on(conn, free, now).await,
                    Err(e) => Err(e),
                };
                claims.after(got.is_ok());
                match got {
                    Ok(tasks) => {
                        claimed = tasks.len();
                        for t in tasks {
                            let me = self.clone();
                            running.spawn(async move { me.execute(t, None).await });
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "claim failed"),
                }
            }
            if claimed == 0 || free == 0 {
                // Idle or full: wait for a poll tick, a finished task or the stop signal.
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(qc.poll_ms)) => {}
                    Some(_) = running.join_next(), if !running.is_empty() => {}
                    changed = stop.changed() => {
                        // The sender is gone: nobody can ask us to stop any more, so stop now.
                        if changed.is_err() {
                            break;
                        }
                    }
                }
            }
        }
        tracing::info!(worker = %self.id, running = running.len(), "worker stopping");
        while running.join_next().await.is_some() {}
        if let Some(tx) = self.completions.get() {
            let (ack, wait) = oneshot::channel();
            if tx.send(Completion::Flush(ack)).is_ok()
                && tokio::time::timeout(Duration::from_secs(10), wait)
                    .await
                    .is_err()
            {
                tracing::warn!("completions not recorded before stop; those tasks will run again");
            }
        }
        if let Some(f) = flusher {
            f.abort();
        }
        heartbeat.abort();
        if let Err(e) = crate::workers::gone(self.ctx.db(), &self.id).await {
            tracing::warn!(error = %e, "worker record not removed");
        }
        tracing::info!(worker = %self.id, "worker stopped");
    }
}
