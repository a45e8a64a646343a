//! The `[queue]` config section: a serde struct that mirrors the file (unknown keys are
//! errors) and the validated [`QueueConfig`] the engine runs with.
//!
//! The application embeds [`QueueFile`] in its own config file and calls
//! [`QueueFile::validate`], handing it the default options of its task kinds (see
//! [`crate::Handlers::defaults`]): `[queue.kinds.<kind>]` keys apply on top of those.
//! Every problem is pushed with its dotted key path as a [`ConfigError`] (`komora_config`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use crate::task::TaskOptions;

/// Settings of one task kind once config is applied (the same shape as its defaults).
pub type KindConfig = TaskOptions;

/// One invalid key: its dotted path and why its value is rejected (the workspace's one
/// config-error shape, `komora_config`).
pub use komora_config::ConfigError;

/// The three queues, highest priority first.
pub const QUEUES: [&str; 3] = ["high", "default", "low"];

/// Default `queue.lease_ms`.
pub const DEFAULT_LEASE_MS: u64 = 30_000;
/// Default `queue.heartbeat_ms`.
pub const DEFAULT_HEARTBEAT_MS: u64 = 10_000;
/// Default `queue.poll_ms`.
pub const DEFAULT_POLL_MS: u64 = 200;
/// Default `queue.claim_batch`.
pub const DEFAULT_CLAIM_BATCH: u32 = 32;
/// Default `queue.worker_concurrency`.
pub const DEFAULT_WORKER_CONCURRENCY: u32 = 16;
/// Default `queue.sweep_ms`.
pub const DEFAULT_SWEEP_MS: u64 = 5_000;
/// Default `queue.prune_after_hours` (a week).
pub const DEFAULT_PRUNE_AFTER_HOURS: u64 = 168;
/// Default `queue.weights`, in [`QUEUES`] order (high, default, low).
pub const DEFAULT_WEIGHTS: [u32; 3] = [6, 3, 1];

/// `[queue]` as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueFile {
    /// Run a worker inside the server process too. Default `false` (run `komora-origin worker`).
    pub worker_in_server: bool,
    /// How long a claim is valid without a heartbeat, milliseconds. Default 30000 ([`DEFAULT_LEASE_MS`]); 1000..=3600000.
    /// A worker killed mid-task gives its task back this long after the last heartbeat.
    pub lease_ms: u64,
    /// Heartbeat period, milliseconds. Default 10000 ([`DEFAULT_HEARTBEAT_MS`]); 100..=lease_ms/2.
    pub heartbeat_ms: u64,
    /// Idle poll period when every queue is empty, milliseconds. Default 200 ([`DEFAULT_POLL_MS`]); 10..=60000.
    pub poll_ms: u64,
    /// Tasks claimed per round trip by the worker loop. Default 32 ([`DEFAULT_CLAIM_BATCH`]); 1..=1000.
    pub claim_batch: u32,
    /// Tasks one worker process runs at once (all kinds). Default 16 ([`DEFAULT_WORKER_CONCURRENCY`]); 1..=1024.
    pub worker_concurrency: u32,
    /// Period of the expired-lease sweep and the prune, milliseconds. Default 5000 ([`DEFAULT_SWEEP_MS`]);
    /// 100..=3600000.
    pub sweep_ms: u64,
    /// Finished (`done`) tasks older than this are deleted, hours. Default 168 ([`DEFAULT_PRUNE_AFTER_HOURS`]);
    /// 1..=87600.
    pub prune_after_hours: u64,
    /// Weighted round-robin shares: of every `high+default+low` claims, that many go to each
    /// queue first (an empty queue falls through to the next). Defaults 6/3/1 ([`DEFAULT_WEIGHTS`]); each 1..=100.
    pub weights: WeightsFile,
    /// Per-kind settings, `[queue.kinds.<kind>]`.
    pub kinds: BTreeMap<String, KindFile>,
}

impl Default for QueueFile {
    fn default() -> Self {
        QueueFile {
            worker_in_server: false,
            lease_ms: DEFAULT_LEASE_MS,
            heartbeat_ms: DEFAULT_HEARTBEAT_MS,
            poll_ms: DEFAULT_POLL_MS,
            claim_batch: DEFAULT_CLAIM_BATCH,
            worker_concurrency: DEFAULT_WORKER_CONCURRENCY,
            sweep_ms: DEFAULT_SWEEP_MS,
            prune_after_hours: DEFAULT_PRUNE_AFTER_HOURS,
            weights: WeightsFile::default(),
            kinds: BTreeMap::new(),
        }
    }
}

/// `[queue] weights = { high = 6, default = 3, low = 1 }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WeightsFile {
    /// Share of the high queue. Default 6; 1..=100.
    pub high: u32,
    /// Share of the default queue. Default 3; 1..=100.
    pub default: u32,
    /// Share of the low queue. Default 1; 1..=100 (never 0: low must not starve).
    pub low: u32,
}

impl Default for WeightsFile {
    fn default() -> Self {
        let [high, default, low] = DEFAULT_WEIGHTS;
        WeightsFile { high, default, low }
    }
}

/// `[queue.kinds.<kind>]`: every key optional; missing ones take the kind's defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct KindFile {
    /// `high`, `default` or `low`. Default: the kind's own (its `Task::options`), `default`
    /// for a kind without options.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// Most tasks of this kind one worker runs at once. Default 8; 1..=1024.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    /// A run longer than this is cut and retried, milliseconds. Default 30000; 10..=3600000.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Runs before the task is dead. Default 5; 1..=100.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// First retry delay, doubled each attempt, with ±25 % jitter, milliseconds.
    /// Default 1000; 1..=3600000.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backoff_base_ms: Option<u64>,
    /// Cap of the retry delay, milliseconds. Default 600000; >= backoff_base_ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backoff_max_ms: Option<u64>,
}

/// Validated `[queue]` settings.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    pub worker_in_server: bool,
    pub lease_ms: u64,
    pub heartbeat_ms: u64,
    pub poll_ms: u64,
    pub claim_batch: u32,
    pub worker_concurrency: u32,
    pub sweep_ms: u64,
    pub prune_after_ms: i64,
    /// Shares in [`QUEUES`] order.
    pub weights: [u32; 3],
    /// Kinds with a `[queue.kinds.<kind>]` entry, resolved on their defaults.
    pub kinds: BTreeMap<String, KindConfig>,
    /// The application's kinds and their default options (no entry: [`TaskOptions::default`]).
    pub defaults: BTreeMap<String, TaskOptions>,
}

impl Default for QueueConfig {
    fn default() -> Self {
        let mut errors: Vec<ConfigError> = Vec::new();
        match QueueFile::default().validate("queue", &BTreeMap::new(), &mut errors) {
            Some(c) => c,
            // The defaults are within every range; this arm only keeps the code panic-free.
            None => QueueConfig {
                worker_in_server: false,
                lease_ms: DEFAULT_LEASE_MS,
                heartbeat_ms: DEFAULT_HEARTBEAT_MS,
                poll_ms: DEFAULT_POLL_MS,
                claim_batch: DEFAULT_CLAIM_BATCH,
                worker_concurrency: DEFAULT_WORKER_CONCURRENCY,
                sweep_ms: DEFAULT_SWEEP_MS,
                prune_after_ms: DEFAULT_PRUNE_AFTER_HOURS as i64 * 3_600_000,
                weights: DEFAULT_WEIGHTS,
                kinds: BTreeMap::new(),
                defaults: BTreeMap::new(),
            },
        }
    }
}

impl QueueConfig {
    /// Settings of `kind`: its `[queue.kinds.<kind>]` entry or the kind's defaults.
    pub fn kind(&self, kind: &str) -> KindConfig {
        self.kinds
            .get(kind)
            .or_else(|| self.defaults.get(kind))
            .cloned()
            .unwrap_or_default()
    }
}

fn check_range<T: PartialOrd + std::fmt::Display + Copy>(
    key: String,
    value: T,
    min: T,
    max: T,
    errors: &mut Vec<ConfigError>,
) {
    komora_config::check_range(errors, key, value, min, max);
}

impl QueueFile {
    /// Validates the section found at `key` (its dotted path), pushing every problem.
    /// `defaults` are the application's kinds and their options (what `kinds` entries
    /// override).
    pub fn validate(
        &self,
        key: &str,
        defaults: &BTreeMap<String, TaskOptions>,
        errors: &mut Vec<ConfigError>,
    ) -> Option<QueueConfig> {
        let before = errors.len();
        check_range(
            format!("{key}.lease_ms"),
            self.lease_ms,
            1_000,
            3_600_000,
            errors,
        );
        check_range(
            format!("{key}.heartbeat_ms"),
            self.heartbeat_ms,
            100,
            (self.lease_ms / 2).max(100),
            errors,
        );
        check_range(format!("{key}.poll_ms"), self.poll_ms, 10, 60_000, errors);
        check_range(
            format!("{key}.claim_batch"),
            self.claim_batch,
            1,
            1_000,
            errors,
        );
        check_range(
            format!("{key}.worker_concurrency"),
            self.worker_concurrency,
            1,
            1_024,
            errors,
        );
        check_range(
            format!("{key}.sweep_ms"),
            self.sweep_ms,
            100,
            3_600_000,
            errors,
        );
        check_range(
            format!("{key}.prune_after_hours"),
            self.prune_after_hours,
            1,
            87_600,
            errors,
        );
        let w = &self.weights;
        for (name, v) in [("high", w.high), ("default", w.default), ("low", w.low)] {
            check_range(format!("{key}.weights.{name}"), v, 1, 100, errors);
        }
        let mut kinds = BTreeMap::new();
        for (kind, k) in &self.kinds {
            let kkey = format!("{key}.kinds.{kind}");
            let mut c = defaults.get(kind).cloned().unwrap_or_default();
            if let Some(q) = &k.queue {
                match QUEUES.iter().find(|n| **n == q.as_str()) {
                    Some(n) => c.queue = n,
                    None => errors.push(ConfigError::new(
                        format!("{kkey}.queue"),
                        format!("{q:?} is not one of high, default, low"),
                    )),
                }
            }
            if let Some(v) = k.concurrency {
                check_range(format!("{kkey}.concurrency"), v, 1, 1_024, errors);
                c.concurrency = v;
            }
            if let Some(v) = k.timeout_ms {
                check_range(format!("{kkey}.timeout_ms"), v, 10, 3_600_000, errors);
                c.timeout = Duration::from_millis(v);
            }
            if let Some(v) = k.max_attempts {
                check_range(format!("{kkey}.max_attempts"), v, 1, 100, errors);
                c.max_attempts = v;
            }
            if let Some(v) = k.backoff_base_ms {
                check_range(format!("{kkey}.backoff_base_ms"), v, 1, 3_600_000, errors);
                c.backoff_base_ms = v;
            }
            if let Some(v) = k.backoff_max_ms {
                c.backoff_max_ms = v;
            }
            if c.backoff_max_ms < c.backoff_base_ms {
                errors.push(ConfigError::new(
                    format!("{kkey}.backoff_max_ms"),
                    format!(
                        "{} is below backoff_base_ms {}",
                        c.backoff_max_ms, c.backoff_base_ms
                    ),
                ));
            }
            kinds.insert(kind.clone(), c);
        }
        if errors.len() > before {
            return None;
        }
        Some(QueueConfig {
            worker_in_server: self.worker_in_server,
            lease_ms: self.lease_ms,
            heartbeat_ms: self.heartbeat_ms,
            poll_ms: self.poll_ms,
            claim_batch: self.claim_batch,
            worker_concurrency: self.worker_concurrency,
            sweep_ms: self.sweep_ms,
            prune_after_ms: i64::try_from(self.prune_after_hours)
                .unwrap_or(87_600)
                .saturating_mul(3_600_000),
            weights: [w.high, w.default, w.low],
            kinds,
            defaults: defaults.clone(),
        })
    }
}
