//! Prometheus metrics of the queue, registered in `prometheus::default_registry()` (the
//! application serves `/metrics` from it).
//!
//! Counters and histograms are updated where things happen; the gauges (depth, running,
//! dead, delivery_unknown) are refreshed from the database by [`refresh`], which the worker calls on its sweep
//! period and `/metrics` and `/admin/queues` on each request, so they are right whichever
//! process updates the queues.

use std::sync::OnceLock;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts};

use crate::store::QueueStats;

struct Metrics {
    depth: IntGaugeVec,
    running: IntGaugeVec,
    dead: IntGaugeVec,
    delivery_unknown: IntGaugeVec,
    enqueued: IntCounterVec,
    failed: IntCounterVec,
    completed: IntCounterVec,
    wait: HistogramVec,
    duration: HistogramVec,
}

fn register<C: prometheus::core::Collector + Clone + 'static>(c: C) -> C {
    // A second registration (tests build several apps in one process) is harmless: the
    // first registered collector keeps being served, this one still counts locally.
    let _ = prometheus::default_registry().register(Box::new(c.clone()));
    c
}

fn metrics() -> Option<&'static Metrics> {
    static M: OnceLock<Option<Metrics>> = OnceLock::new();
    M.get_or_init(|| {
        let buckets = vec![
            0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
        ];
        Some(Metrics {
            depth: register(
                IntGaugeVec::new(
                    Opts::new("komora_queue_depth", "Queued tasks due now, per queue"),
                    &["queue"],
                )
                .ok()?,
            ),
            running: register(
                IntGaugeVec::new(
                    Opts::new("komora_queue_running", "Tasks running, per queue"),
                    &["queue"],
                )
                .ok()?,
            ),
            dead: register(
                IntGaugeVec::new(
                    Opts::new("komora_queue_dead", "Dead tasks kept for retry, per queue"),
                    &["queue"],
                )
                .ok()?,
            ),
            delivery_unknown: register(
                IntGaugeVec::new(
                    Opts::new(
                        "komora_queue_delivery_unknown",
                        "Sends that may have reached the platform, waiting for an operator",
                    ),
                    &["queue"],
                )
                .ok()?,
            ),
            enqueued: register(
                IntCounterVec::new(
                    Opts::new("komora_queue_enqueued_total", "Tasks enqueued, per queue"),
                    &["queue"],
                )
                .ok()?,
            ),
            failed: register(
                IntCounterVec::new(
                    Opts::new(
                        "komora_queue_failed_total",
                        "Failed task runs, per kind and outcome (retry or dead)",
                    ),
                    &["kind", "outcome"],
                )
                .ok()?,
            ),
            completed: register(
                IntCounterVec::new(
                    Opts::new("komora_queue_completed_total", "Tasks done, per kind"),
                    &["kind"],
                )
                .ok()?,
            ),
            wait: register(
                HistogramVec::new(
                    HistogramOpts::new(
                        "komora_queue_wait_seconds",
                        "Time from a task becoming due to its start, per queue",
                    )
                    .buckets(buckets.clone()),
                    &["queue"],
                )
                .ok()?,
            ),
            duration: register(
                HistogramVec::new(
                    HistogramOpts::new("komora_queue_duration_seconds", "Run time, per kind")
                        .buckets(buckets),
                    &["kind"],
                )
                .ok()?,
            ),
        })
    })
    .as_ref()
}

/// Makes sure the metrics exist in the default registry (so `/metrics` lists them at once).
pub fn init() {
    let _ = metrics();
}

pub fn enqueued(queue: &str) {
    if let Some(m) = metrics() {
        m.enqueued.with_label_values(&[queue]).inc();
    }
}

pub fn started(queue: &str, wait_ms: i64) {
    if let Some(m) = metrics() {
        m.wait
            .with_label_values(&[queue])
            .observe(wait_ms.max(0) as f64 / 1000.0);
    }
}

pub fn finished(kind: &str, outcome: &str, duration_ms: f64) {
    if let Some(m) = metrics() {
        m.duration
            .with_label_values(&[kind])
            .observe(duration_ms / 1000.0);
        if outcome == "done" {
            m.completed.with_label_values(&[kind]).inc();
        } else {
            m.failed.with_label_values(&[kind, outcome]).inc();
        }
    }
}

/// Sets the gauges from fresh counts.
pub fn refresh(stats: &[QueueStats]) {
    if let Some(m) = metrics() {
        for s in stats {
            m.depth.with_label_values(&[&s.queue]).set(s.due);
            m.running.with_label_values(&[&s.queue]).set(s.running);
            m.dead.with_label_values(&[&s.queue]).set(s.dead);
            m.delivery_unknown
                .with_label_values(&[&s.queue])
                .set(s.delivery_unknown);
        }
    }
}
