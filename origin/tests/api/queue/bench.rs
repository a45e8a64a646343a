//! Queue benchmarks (ignored by default; `bench/queue-bench.sh` runs them in release mode):
//! no-op tasks per second, and the wait of high-priority tasks while 100k low-priority
//! tasks are queued. Numbers are printed as `BENCH …` lines.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use komora_origin::db::{Backend, Db};
use komora_origin::queue::store::now_ms;
use sqlx::Row;
use tokio::sync::watch;

use super::support::*;
use crate::common::TestDb;

/// Inserts `n` due no-op tasks into `queue`, 500 rows per statement.
async fn fill(db: &Db, queue: &str, kind: &str, n: usize, now: i64) {
    let mut left = n;
    while left > 0 {
        let k = left.min(500);
        let mut sql = String::from(
            "INSERT INTO tasks (queue, kind, payload, state, priority, attempts, max_attempts, \
             run_at, errors, created_at) VALUES ",
        );
        for i in 0..k {
            if i > 0 {
                sql.push(',');
            }
            sql.push_str(&format!(
                "('{queue}', '{kind}', '{{}}', 'queued', 0, 0, 5, {now}, '[]', {now})"
            ));
        }
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&db.pool)
            .await
            .unwrap();
        left -= k;
    }
}

async fn done_count(db: &Db, kind: &str) -> i64 {
    sqlx::query("SELECT COUNT(*) FROM tasks WHERE state = 'done' AND kind = $1")
        .bind(kind)
        .fetch_one(&db.pool)
        .await
        .unwrap()
        .get(0)
}

/// Throughput settings: big batches.
const BENCH_CONFIG: &str = "[queue]\nworker_concurrency = 256\nclaim_batch = 128\npoll_ms = 10\n\
     sweep_ms = 60000\n[queue.kinds.noop]\nconcurrency = 256\n\
     [queue.kinds.noop_high]\nqueue = \"high\"\nconcurrency = 256\n\
     [queue.kinds.noop_low]\nqueue = \"low\"\nconcurrency = 256\n";

/// Latency settings: smaller batches, so a round (and SQLite's write lock) is short.
const LATENCY_CONFIG: &str = "[queue]\nworker_concurrency = 64\nclaim_batch = 32\npoll_ms = 10\n\
     sweep_ms = 60000\n[queue.kinds.noop]\nconcurrency = 64\n\
     [queue.kinds.noop_high]\nqueue = \"high\"\nconcurrency = 64\n\
     [queue.kinds.noop_low]\nqueue = \"low\"\nconcurrency = 64\n";

fn start(db: &Db, settings: &str) -> (watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    start_counting(db, settings, Arc::default())
}

/// Like [`start`], with `noop` runs counted in `runs`.
fn start_counting(
    db: &Db,
    settings: &str,
    runs: Arc<AtomicUsize>,
) -> (watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    let cfg = config(settings);
    let noop = handler(|_| Ok(()));
    let counted = handler(move |_| {
        runs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    });
    let w = Arc::new(
        worker(db, &cfg)
            .with_handler("noop", counted)
            .with_handler("noop_high", noop.clone())
            .with_handler("noop_low", noop),
    );
    let (tx, rx) = watch::channel(false);
    let h = tokio::spawn(w.run(rx));
    (tx, h)
}

/// CPU seconds used so far by this process and by the whole machine (all cores), from
/// `/proc` (Linux; clock ticks of 1/100 s). `None` elsewhere.
fn cpu_now() -> Option<(f64, f64)> {
    let me = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start at state, field 3.
    let rest = me.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok());
    let own = ticks(11)? + ticks(12)?; // utime, stime
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu: Vec<f64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system (idle iowait) irq softirq steal
    let busy = [0, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|&i| cpu.get(i))
        .sum::<f64>();
    Some((own / 100.0, busy / 100.0))
}

/// "cpu ours X%, rest of machine Y%" over `secs` (100% = one core).
fn cpu_split(before: Option<(f64, f64)>, secs: f64) -> String {
    match (before, cpu_now()) {
        (Some((o0, b0)), Some((o1, b1))) => format!(
            "cpu ours {:.0}%, rest of machine {:.0}% (100% = one core)",
            100.0 * (o1 - o0) / secs,
            100.0 * ((b1 - b0) - (o1 - o0)) / secs
        ),
        _ => "cpu split n/a".into(),
    }
}

/// No-op tasks per second: `n` tasks queued before the clock starts; the clock stops when
/// the last has run and the worker has stopped, which writes every completion first (so
/// nothing polls the database meanwhile). Every task is then checked to be `done`.
async fn throughput(backend: Backend) {
    let Some(t) = TestDb::new(backend).await else {
        return;
    };
    let n = 20_000;
    fill(&t.db, "default", "noop", n, now_ms()).await;
    let runs = Arc::new(AtomicUsize::new(0));
    let cpu = cpu_now();
    let started = Instant::now();
    let (stop, h) = start_counting(&t.db, BENCH_CONFIG, runs.clone());
    while runs.load(Ordering::Relaxed) < n {
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert!(started.elapsed() < Duration::from_secs(300), "too slow");
    }
    stop.send(true).unwrap();
    h.await.unwrap();
    let secs = started.elapsed().as_secs_f64();
    let split = cpu_split(cpu, secs);
    assert_eq!(done_count(&t.db, "noop").await, n as i64);
    println!(
        "BENCH {backend:?} throughput: {n} no-op tasks in {secs:.2} s = {:.0} tasks/s; {split}",
        n as f64 / secs
    );
}

async fn high_wait(backend: Backend) {
    let Some(t) = TestDb::new(backend).await else {
        return;
    };
    let cfg = config(LATENCY_CONFIG);
    fill(&t.db, "low", "noop_low", 100_000, now_ms()).await;
    let (stop, h) = start(&t.db, LATENCY_CONFIG);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let highs = 300;
    for _ in 0..highs {
        enqueue(
            &t.db,
            &cfg,
            komora_origin::queue::NewTask::new("noop_high", serde_json::json!({})),
            now_ms(),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    while done_count(&t.db, "noop_high").await < highs {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let low_done = done_count(&t.db, "noop_low").await;
    stop.send(true).unwrap();
    h.await.unwrap();
    let mut waits: Vec<i64> = sqlx::query(
        "SELECT started_at - run_at FROM tasks WHERE kind = 'noop_high' AND state = 'done'",
    )
    .fetch_all(&t.db.pool)
    .await
    .unwrap()
    .iter()
    .map(|r| r.get::<i64, _>(0))
    .collect();
    waits.sort_unstable();
    let p = |q: f64| waits[((waits.len() as f64 - 1.0) * q).round() as usize];
    println!(
        "BENCH {backend:?} high wait with 100k low queued: p50 {} ms, p99 {} ms, max {} ms \
         ({} high, {low_done} low done meanwhile)",
        p(0.5),
        p(0.99),
        p(1.0),
        waits.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run bench/queue-bench.sh"]
async fn queue_bench_throughput_sqlite() {
    throughput(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run bench/queue-bench.sh"]
async fn queue_bench_throughput_postgres() {
    throughput(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run bench/queue-bench.sh"]
async fn queue_bench_high_wait_sqlite() {
    high_wait(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run bench/queue-bench.sh"]
async fn queue_bench_high_wait_postgres() {
    high_wait(Backend::Postgres).await;
}
