//! The worker's completion flusher: successful runs of [`crate::Worker::run`] are marked
//! done in batches, one statement (and one commit) per batch instead of per task, on a
//! connection the flusher keeps (`crate::held`).
//!
//! Until its completion is written a task stays in flight: the heartbeat renews its lease,
//! and a worker that dies meanwhile leaves it to the sweep (at-least-once).

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::held::Held;
use crate::store;
use crate::worker::{outcome_backoff, OUTCOME_TRIES};
use crate::{Context, QueueDb, Worker};

/// A message to the completion flusher.
pub(crate) enum Completion {
    Done(i64),
    /// Write everything received so far, then answer.
    Flush(oneshot::Sender<()>),
}

/// How long an idle flusher keeps its connection.
const IDLE_KEEP: std::time::Duration = std::time::Duration::from_millis(200);

/// Most completions written by one statement.
const COMPLETE_BATCH: usize = 500;

/// Writes completions in batches: whatever arrived while the previous write ran goes in the
/// next statement, so the batch size follows the load with no timer. A failed write is
/// retried [`OUTCOME_TRIES`] times in all; then the tasks leave the in-flight set and the
/// sweep gives them back once their leases expire.
pub(crate) async fn flush_completions<C: Context>(
    worker: Arc<Worker<C>>,
    mut rx: mpsc::UnboundedReceiver<Completion>,
) {
    let db = worker.context().db();
    let mut held = Held::new(db.pool());
    let mut ids: Vec<i64> = Vec::with_capacity(COMPLETE_BATCH);
    let mut acks: Vec<oneshot::Sender<()>> = Vec::new();
    // Failed writes of the current batch so far.
    let mut failures = 0u32;
    let take = |msg: Completion, ids: &mut Vec<i64>, acks: &mut Vec<oneshot::Sender<()>>| match msg
    {
        Completion::Done(id) => ids.push(id),
        Completion::Flush(ack) => acks.push(ack),
    };
    loop {
        if ids.is_empty() && acks.is_empty() {
            // Idle: the connection goes back to the pool after a while, so a worker whose
            // run was aborted (its flusher lives on, waiting) does not keep it for good.
            let msg = match tokio::time::timeout(IDLE_KEEP, rx.recv()).await {
                Ok(msg) => msg,
                Err(_) => {
                    held.release();
                    rx.recv().await
                }
            };
            match msg {
                Some(msg) => take(msg, &mut ids, &mut acks),
                None => return,
            }
        }
        while ids.len() < COMPLETE_BATCH {
            match rx.try_recv() {
                Ok(msg) => take(msg, &mut ids, &mut acks),
                Err(_) => break,
            }
        }
        if !ids.is_empty() {
            let n = ids.len().min(COMPLETE_BATCH);
            let written = match held.conn().await {
                Ok(conn) => {
                    store::complete_many(conn, db.backend(), &ids[..n], &worker.id, store::now_ms())
                        .await
                }
                Err(e) => Err(e),
            };
            held.after(written.is_ok());
            match written {
                Ok(_) => {
                    worker.land(&ids[..n]);
                    ids.drain(..n);
                    failures = 0;
                }
                Err(e) if failures + 1 < OUTCOME_TRIES => {
                    failures += 1;
                    tracing::warn!(error = %e, tasks = n, "could not record completions; retrying");
                    tokio::time::sleep(outcome_backoff(failures)).await;
                }
                Err(e) => {
                    // Let them go: out of the heartbeat, their leases expire and the sweep
                    // queues them again (at-least-once).
                    tracing::warn!(error = %e, tasks = n, "could not record completions; released to the sweep");
                    worker.land(&ids[..n]);
                    ids.drain(..n);
                    failures = 0;
                }
            }
            if !ids.is_empty() {
                continue;
            }
        }
        for ack in acks.drain(..) {
            let _ = ack.send(());
        }
    }
}
