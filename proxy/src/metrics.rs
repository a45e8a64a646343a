//! Prometheus metrics for the edge, exposed by the admin listener at `/metrics`.
//!
//! One process-wide registry ([`METRICS`]) because pingora services, storage and the admin
//! app all live for the whole process. Names follow `komora_edge_*`.

use crate::cache_status::CacheStatus;
use once_cell::sync::Lazy;
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// All edge metrics.
pub struct Metrics {
    registry: Registry,
    /// Requests by `X-Cache-Status` value.
    pub requests: IntCounterVec,
    /// Body bytes sent to clients by source tier (`memory`, `disk`, `origin`).
    pub bytes_served: IntCounterVec,
    /// `bytes_served` per [`Tier`], resolved once (the hit path counts every response).
    served_by: Vec<IntCounter>,
    /// Entries currently stored, by tier.
    pub entries: IntGaugeVec,
    /// Bytes currently stored, by tier.
    pub stored_bytes: IntGaugeVec,
    /// Entries evicted to stay in budget, by tier (not purges).
    pub evictions: IntCounterVec,
    /// Entries purged by invalidation (admin purge, unsafe methods), by tier.
    pub purges: IntCounterVec,
    /// Entries that failed their length/sha256 check and were removed instead of served.
    pub integrity_failures: IntCounter,
    /// Time from sending the request to the origin to its response header.
    pub origin_latency: Histogram,
    /// Requests that waited on another request's cache fill (cache lock readers).
    pub lock_waits: IntCounter,
    /// Memory hits whose body went out with sendfile (zero-copy).
    pub sendfile_responses: IntCounter,
    /// Entry files held open for zero-copy sends (bounded by
    /// `cache.memory.sendfile_max_open_files`).
    pub sendfile_open_files: IntGauge,
    /// Fills that stopped writing to the disk tier after an I/O error (a full disk, ...);
    /// their bodies kept streaming to every reader, uncached.
    pub cache_write_failures: IntCounter,
    /// Readers of such a fill cut off for falling further behind than its memory tail holds.
    pub fill_readers_cut_off: IntCounter,
    /// `requests` children resolved once, in [`CacheStatus::ALL`] order (no label hashing per request).
    by_status: Vec<IntCounter>,
    /// Responses by status class and cache status (downstream view, every request).
    pub responses: IntCounterVec,
    /// `responses` children resolved once: `[class][cache status]`, [`STATUS_CLASSES`] ×
    /// [`CacheStatus::ALL`] order.
    responses_by: Vec<Vec<IntCounter>>,
    /// Time from the parsed request head to the end of the response, every request.
    pub request_duration: Histogram,
    /// Client connections that closed or reset before a complete request head, or while
    /// a request was in flight (normal client behaviour: counted and debug-logged, not
    /// logged as errors), by `phase` (`request_head`, `in_flight`).
    pub client_closed: IntCounterVec,
    /// Access log lines dropped because the writer's queue was full.
    pub access_log_dropped: IntCounter,
    /// Access log writes, flushes or reopens that failed.
    pub access_log_write_errors: IntCounter,
}

/// Status class labels of `komora_edge_responses_total`; `other` for a status outside
/// 100..=599.
pub const STATUS_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"];

/// Where a client closed its connection (`komora_edge_client_closed_total{phase}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientClosedPhase {
    /// Before a complete request head (half-sent request).
    RequestHead,
    /// While its request was being served.
    InFlight,
}

impl ClientClosedPhase {
    fn label(self) -> &'static str {
        match self {
            ClientClosedPhase::RequestHead => "request_head",
            ClientClosedPhase::InFlight => "in_flight",
        }
    }
}

fn build() -> Result<Metrics, prometheus::Error> {
    let registry = Registry::new();
    let requests = IntCounterVec::new(
        Opts::new("komora_edge_requests_total", "Requests by cache status"),
        &["cache_status"],
    )?;
    let bytes_served = IntCounterVec::new(
        Opts::new(
            "komora_edge_bytes_served_total",
            "Body bytes served by tier",
        ),
        &["tier"],
    )?;
    let entries = IntGaugeVec::new(
        Opts::new("komora_edge_cache_entries", "Stored entries by tier"),
        &["tier"],
    )?;
    let stored_bytes = IntGaugeVec::new(
        Opts::new("komora_edge_cache_bytes", "Stored bytes by tier"),
        &["tier"],
    )?;
    let evictions = IntCounterVec::new(
        Opts::new("komora_edge_evictions_total", "Entries evicted by tier"),
        &["tier"],
    )?;
    let purges = IntCounterVec::new(
        Opts::new("komora_edge_purges_total", "Entries purged by tier"),
        &["tier"],
    )?;
    let integrity_failures = IntCounter::new(
        "komora_edge_integrity_failures_total",
        "Entries that failed the integrity check",
    )?;
    let origin_latency = Histogram::with_opts(
        HistogramOpts::new(
            "komora_edge_origin_latency_seconds",
            "Origin time to response header",
        )
        .buckets(vec![
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ]),
    )?;
    let lock_waits = IntCounter::new(
        "komora_edge_cache_lock_waits_total",
        "Requests that waited on a cache lock",
    )?;
    let sendfile_responses = IntCounter::new(
        "komora_edge_sendfile_responses_total",
        "Memory hits sent with sendfile",
    )?;
    let sendfile_open_files = IntGauge::new(
        "komora_edge_sendfile_open_files",
        "Entry files held open for sendfile",
    )?;
    let cache_write_failures = IntCounter::new(
        "komora_edge_cache_write_failures_total",
        "Fills that stopped writing to disk after an I/O error, streamed uncached",
    )?;
    let fill_readers_cut_off = IntCounter::new(
        "komora_edge_fill_readers_cut_off_total",
        "Readers of an uncached fill cut off for lagging past its memory tail",
    )?;
    registry.register(Box::new(cache_write_failures.clone()))?;
    registry.register(Box::new(fill_readers_cut_off.clone()))?;
    registry.register(Box::new(sendfile_responses.clone()))?;
    registry.register(Box::new(sendfile_open_files.clone()))?;
    registry.register(Box::new(requests.clone()))?;
    registry.register(Box::new(bytes_served.clone()))?;
    registry.register(Box::new(entries.clone()))?;
    registry.register(Box::new(stored_bytes.clone()))?;
    registry.register(Box::new(evictions.clone()))?;
    registry.register(Box::new(purges.clone()))?;
    registry.register(Box::new(integrity_failures.clone()))?;
    registry.register(Box::new(origin_latency.clone()))?;
    registry.register(Box::new(lock_waits.clone()))?;
    let responses = IntCounterVec::new(
        Opts::new(
            "komora_edge_responses_total",
            "Responses by status class and cache status",
        ),
        &["status_class", "cache_status"],
    )?;
    let request_duration = Histogram::with_opts(
        HistogramOpts::new(
            "komora_edge_request_duration_seconds",
            "Time from request head to end of response",
        )
        .buckets(vec![
            0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
            2.5, 5.0, 10.0, 30.0,
        ]),
    )?;
    let client_closed = IntCounterVec::new(
        Opts::new(
            "komora_edge_client_closed_total",
            "Client connections closed before or during a request, by phase",
        ),
        &["phase"],
    )?;
    let access_log_dropped = IntCounter::new(
        "komora_edge_access_log_dropped_total",
        "Access log lines dropped on a full queue",
    )?;
    let access_log_write_errors = IntCounter::new(
        "komora_edge_access_log_write_errors_total",
        "Access log writes that failed",
    )?;
    registry.register(Box::new(responses.clone()))?;
    registry.register(Box::new(request_duration.clone()))?;
    registry.register(Box::new(client_closed.clone()))?;
    registry.register(Box::new(access_log_dropped.clone()))?;
    registry.register(Box::new(access_log_write_errors.clone()))?;
    for phase in [ClientClosedPhase::RequestHead, ClientClosedPhase::InFlight] {
        // Present from the start, so a dashboard sees 0 rather than no series.
        client_closed.with_label_values(&[phase.label()]);
    }
    let responses_by = STATUS_CLASSES
        .iter()
        .map(|c| {
            CacheStatus::ALL
                .iter()
                .map(|s| responses.with_label_values(&[*c, s.as_str()]))
                .collect()
        })
        .collect();
    let by_status = CacheStatus::ALL
        .iter()
        .map(|s| requests.with_label_values(&[s.as_str()]))
        .collect();
    let served_by = Tier::ALL
        .iter()
        .map(|t| bytes_served.with_label_values(&[t.as_str()]))
        .collect();
    Ok(Metrics {
        served_by,
        cache_write_failures,
        fill_readers_cut_off,
        by_status,
        responses,
        responses_by,
        request_duration,
        client_closed,
        access_log_dropped,
        access_log_write_errors,
        registry,
        requests,
        bytes_served,
        entries,
        stored_bytes,
        evictions,
        purges,
        integrity_failures,
        origin_latency,
        lock_waits,
        sendfile_responses,
        sendfile_open_files,
    })
}

/// The process-wide metrics. Construction only fails on duplicate names, which is a
/// programming error caught by any test run.
pub static METRICS: Lazy<Metrics> = Lazy::new(|| {
    #[allow(clippy::expect_used)]
    build().expect("metric names are unique") // unwrap: static names, checked by tests
});

/// Where served body bytes came from (the `tier` label of `komora_edge_bytes_served_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// The memory tier.
    Memory,
    /// The disk tier.
    Disk,
    /// An object being filled, read from the fill.
    Fill,
    /// Straight from the origin.
    Origin,
}

impl Tier {
    /// Every tier, in label order.
    pub const ALL: [Tier; 4] = [Tier::Memory, Tier::Disk, Tier::Fill, Tier::Origin];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Memory => "memory",
            Tier::Disk => "disk",
            Tier::Fill => "fill",
            Tier::Origin => "origin",
        }
    }
}

tokio::task_local! {
    /// Set for the task of a request whose response nobody reads (a background fill's
    /// subrequest, whose output is drained; see [`unread`]).
    static UNREAD: ();
}

/// Run `request` (a whole request of its own, e.g. a pingora subrequest) as one whose
/// response no client reads: what it reads from a fill is not counted as served. The bytes
/// are counted where a client does read them (the parent reading the same fill).
pub fn unread<F: std::future::Future>(request: F) -> impl std::future::Future<Output = F::Output> {
    UNREAD.scope((), request)
}

impl Metrics {
    /// Count `bytes` of response body served from `tier`. Fill reads of a request nobody
    /// reads ([`unread`]) are not counted; the check is only made for fill reads, so hits
    /// pay nothing for it.
    pub fn served(&self, tier: Tier, bytes: u64) {
        if matches!(tier, Tier::Fill) && UNREAD.try_with(|_| ()).is_ok() {
            return;
        }
        match self.served_by.get(tier as usize) {
            Some(c) => c.inc_by(bytes),
            None => self
                .bytes_served
                .with_label_values(&[tier.as_str()])
                .inc_by(bytes),
        }
    }

    /// Count one request with its cache status.
    pub fn request(&self, status: CacheStatus) {
        match self.by_status.get(status.index()) {
            Some(c) => c.inc(),
            None => self.requests.with_label_values(&[status.as_str()]).inc(),
        }
    }

    /// Count one finished response (`status` as written, `cache_status` its
    /// `X-Cache-Status`) and its duration.
    pub fn response(&self, status: u16, cache_status: CacheStatus, duration: std::time::Duration) {
        self.request_duration.observe(duration.as_secs_f64());
        let class = match status {
            100..=599 => usize::from(status / 100 - 1),
            _ => STATUS_CLASSES.len() - 1,
        };
        let counter = self
            .responses_by
            .get(class)
            .and_then(|c| c.get(cache_status.index()));
        match counter {
            Some(c) => c.inc(),
            None => self
                .responses
                .with_label_values(&[
                    STATUS_CLASSES.get(class).copied().unwrap_or("other"),
                    cache_status.as_str(),
                ])
                .inc(),
        }
    }

    /// Count a client that closed its connection in `phase`.
    pub fn client_closed(&self, phase: ClientClosedPhase) {
        self.client_closed.with_label_values(&[phase.label()]).inc();
    }

    /// Text exposition format.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metric families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}
