//! Disk work off the async workers, with a bound on how much runs at once.
//!
//! Whole-file work (lookups that open an entry and read its meta or body, verification,
//! meta rewrites, removals) runs on tokio's blocking pool, which starts a thread whenever
//! none is idle, up to 512. On the media-library run (`run-mix`: 64 connections, ~15 % of
//! requests looking an object up on disk) it grew to 40 threads, and each thread's allocator
//! heap kept the body buffers it had read for promotion after the memory tier dropped them:
//! the edge's RSS rose by ~0.9 GiB over the 256 MiB tier (bench/README-edge.md,
//! "2026-12-03"). [`blocking`] lets at most [`MAX_IN_FLIGHT`] of these jobs run at a time,
//! so the pool stays that small; the others wait their turn on the async side, holding no
//! thread.

use tokio::sync::Semaphore;
use tokio::task::JoinError;

/// Disk jobs running at once, at most. Each thread the pool keeps also keeps an allocator
/// heap with what it last read, so fewer threads hold less: on the library run, 16 slots
/// peaked at 486 MiB RSS and 2 at 435 MiB with the same req/s (page-cache reads take
/// microseconds). Four leave room for a whole-body verification (milliseconds for a large
/// file) next to lookups, and for cold reads from a disk that serves several at once.
pub const MAX_IN_FLIGHT: usize = 4;

static PERMITS: Semaphore = Semaphore::const_new(MAX_IN_FLIGHT);

/// Run `f` on the blocking pool once a slot is free. Dropping the returned future before
/// `f` starts gives the slot back and `f` never runs; once it runs it finishes (the blocking
/// pool does not cancel) and its slot is released when it returns. `Err` when `f` panicked.
pub async fn blocking<F, T>(f: F) -> Result<T, JoinError>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    // `acquire` fails only on a closed semaphore; this one is never closed.
    let permit = PERMITS.acquire().await.ok();
    tokio::task::spawn_blocking(move || {
        let out = f();
        drop(permit);
        out
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_more_than_max_in_flight_jobs_run_at_once() -> Result<(), JoinError> {
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let jobs = (0..MAX_IN_FLIGHT * 4).map(|_| {
            let (running, peak) = (running.clone(), peak.clone());
            tokio::spawn(blocking(move || {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                std::thread::sleep(std::time::Duration::from_millis(5));
                running.fetch_sub(1, Ordering::SeqCst);
            }))
        });
        for j in jobs.collect::<Vec<_>>() {
            j.await??;
        }
        let peak = peak.load(Ordering::SeqCst);
        assert!(peak <= MAX_IN_FLIGHT, "peak {peak}");
        assert!(peak > 1, "jobs ran one at a time: {peak}");
        Ok(())
    }
}
