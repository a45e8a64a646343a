//! `[queue]`, `[ai]` and `[platforms.<name>]` sections of `config/origin.toml`.
//!
//! Each section has a serde struct that mirrors the file (unknown keys are errors) and a
//! validated twin the code uses. Validation pushes every problem with its dotted key path.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::config::ConfigError;

/// The three queues, highest priority first.
pub const QUEUES: [&str; 3] = ["high", "default", "low"];

/// `[queue]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueFile {
    /// Run a worker inside the server process too. Default `false` (run `komora-origin worker`).
    pub worker_in_server: bool,
    /// How long a claim is valid without a heartbeat, milliseconds. Default 30000; 1000..=3600000.
    /// A worker killed mid-task gives its task back this long after the last heartbeat.
    pub lease_ms: u64,
    /// Heartbeat period, milliseconds. Default 10000; 100..=lease_ms/2.
    pub heartbeat_ms: u64,
    /// Idle poll period when every queue is empty, milliseconds. Default 200; 10..=60000.
    pub poll_ms: u64,
    /// Tasks claimed per round trip by the worker loop. Default 32; 1..=1000.
    pub claim_batch: u32,
    /// Tasks one worker process runs at once (all kinds). Default 16; 1..=1024.
    pub worker_concurrency: u32,
    /// Period of the expired-lease sweep and the prune, milliseconds. Default 5000; 100..=3600000.
    pub sweep_ms: u64,
    /// Finished (`done`) tasks older than this are deleted, hours. Default 168; 1..=87600.
    pub prune_after_hours: u64,
    /// Weighted round-robin shares: of every `high+default+low` claims, that many go to each
    /// queue first (an empty queue falls through to the next). Defaults 6/3/1; each 1..=100.
    pub weights: WeightsFile,
    /// Per-kind settings, `[queue.kinds.<kind>]`.
    pub kinds: BTreeMap<String, KindFile>,
}

impl Default for QueueFile {
    fn default() -> Self {
        QueueFile {
            worker_in_server: false,
            lease_ms: 30_000,
            heartbeat_ms: 10_000,
            poll_ms: 200,
            claim_batch: 32,
            worker_concurrency: 16,
            sweep_ms: 5_000,
            prune_after_hours: 168,
            weights: WeightsFile::default(),
            kinds: BTreeMap::new(),
        }
    }
}

/// `[queue] weights = { high = 6, default = 3, low = 1 }`.
#[derive(Debug, Clone, Deserialize)]
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
        WeightsFile {
            high: 6,
            default: 3,
            low: 1,
        }
    }
}

/// `[queue.kinds.<kind>]`: every key optional; missing ones take the kind's defaults.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KindFile {
    /// `high`, `default` or `low`. Default: `high` for send_message and process_ai_reply,
    /// `low` for download_and_save_media, `default` otherwise.
    pub queue: Option<String>,
    /// Most tasks of this kind one worker runs at once. Default 8; 1..=1024.
    pub concurrency: Option<u32>,
    /// A run longer than this is cut and retried, milliseconds. Default 30000; 10..=3600000.
    pub timeout_ms: Option<u64>,
    /// Runs before the task is dead. Default 5; 1..=100.
    pub max_attempts: Option<u32>,
    /// First retry delay, doubled each attempt, with ±25 % jitter, milliseconds.
    /// Default 1000; 1..=3600000.
    pub backoff_base_ms: Option<u64>,
    /// Cap of the retry delay, milliseconds. Default 600000; >= backoff_base_ms.
    pub backoff_max_ms: Option<u64>,
}

/// Validated settings of one task kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KindConfig {
    pub queue: &'static str,
    pub concurrency: u32,
    pub timeout: Duration,
    pub max_attempts: u32,
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
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
    pub kinds: BTreeMap<String, KindConfig>,
}

impl Default for QueueConfig {
    fn default() -> Self {
        let mut errors = Vec::new();
        match QueueFile::default().validate("queue", &mut errors) {
            Some(c) => c,
            // The defaults are within every range; this arm only keeps the code panic-free.
            None => QueueConfig {
                worker_in_server: false,
                lease_ms: 30_000,
                heartbeat_ms: 10_000,
                poll_ms: 200,
                claim_batch: 32,
                worker_concurrency: 16,
                sweep_ms: 5_000,
                prune_after_ms: 168 * 3_600_000,
                weights: [6, 3, 1],
                kinds: BTreeMap::new(),
            },
        }
    }
}

impl QueueConfig {
    /// Settings of `kind`: its `[queue.kinds.<kind>]` entry or the built-in defaults.
    pub fn kind(&self, kind: &str) -> KindConfig {
        self.kinds
            .get(kind)
            .cloned()
            .unwrap_or_else(|| default_kind(kind))
    }
}

/// The queue a kind goes to when config does not say.
pub fn default_queue(kind: &str) -> &'static str {
    match kind {
        "send_message" | "process_ai_reply" => "high",
        "download_and_save_media" => "low",
        _ => "default",
    }
}

fn default_kind(kind: &str) -> KindConfig {
    KindConfig {
        queue: default_queue(kind),
        concurrency: 8,
        timeout: Duration::from_millis(30_000),
        max_attempts: 5,
        backoff_base_ms: 1_000,
        backoff_max_ms: 600_000,
    }
}

fn check_range<T: PartialOrd + std::fmt::Display + Copy>(
    key: String,
    value: T,
    min: T,
    max: T,
    errors: &mut Vec<ConfigError>,
) {
    if value < min || value > max {
        errors.push(ConfigError::new(
            key,
            format!("{value} is out of range {min}..={max}"),
        ));
    }
}

impl QueueFile {
    /// Validates the section found at `key` (its dotted path), pushing every problem.
    pub fn validate(&self, key: &str, errors: &mut Vec<ConfigError>) -> Option<QueueConfig> {
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
            let mut c = default_kind(kind);
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
        })
    }
}

/// `[ai]` as written: the RAG API the autobot calls.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AiFile {
    /// Master switch of the autobot. Default `false`.
    pub enabled: bool,
    /// RAG API endpoint (POSTed the recent conversation, answers `{"answer": "..."}`).
    /// Default empty; required (http or https URL) when `enabled`.
    pub url: String,
    /// Bearer key for the RAG API. Default empty; env `KOMORA_AI_API_KEY` overrides.
    pub api_key: String,
    /// Request timeout, milliseconds. Default 20000; 100..=300000.
    pub timeout_ms: u64,
    /// Platforms (channels) the autobot answers on. Default `["telegram"]`.
    pub channels: Vec<String>,
    /// Messages of history sent with the request. Default 20; 1..=200.
    pub history: u32,
    /// Hosts the RAG API may be reached on although they are not public addresses
    /// (`host`, `host:port`, `[v6]:port`), e.g. a local RAG service. Default empty.
    pub allowed_hosts: Vec<String>,
}

impl Default for AiFile {
    fn default() -> Self {
        AiFile {
            enabled: false,
            url: String::new(),
            api_key: String::new(),
            timeout_ms: 20_000,
            channels: vec!["telegram".into()],
            history: 20,
            allowed_hosts: Vec::new(),
        }
    }
}

/// Validated `[ai]`.
#[derive(Debug, Clone)]
pub struct AiConfig {
    pub enabled: bool,
    pub url: String,
    pub api_key: Option<String>,
    pub timeout: Duration,
    pub channels: Vec<String>,
    pub history: u32,
    pub allowed_hosts: Vec<super::fetch::AllowedHost>,
}

impl Default for AiConfig {
    fn default() -> Self {
        AiConfig {
            enabled: false,
            url: String::new(),
            api_key: None,
            timeout: Duration::from_millis(20_000),
            channels: vec!["telegram".into()],
            history: 20,
            allowed_hosts: Vec::new(),
        }
    }
}

fn check_url(key: String, url: &str, errors: &mut Vec<ConfigError>) {
    match url::Url::parse(url) {
        Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {}
        Ok(u) => errors.push(ConfigError::new(
            key,
            format!("scheme {:?} is not http or https", u.scheme()),
        )),
        Err(e) => errors.push(ConfigError::new(key, format!("{url:?} is not a URL: {e}"))),
    }
}

impl AiFile {
    pub fn validate(&self, key: &str, errors: &mut Vec<ConfigError>) -> Option<AiConfig> {
        let before = errors.len();
        if self.enabled || !self.url.is_empty() {
            check_url(format!("{key}.url"), &self.url, errors);
        }
        check_range(
            format!("{key}.timeout_ms"),
            self.timeout_ms,
            100,
            300_000,
            errors,
        );
        check_range(format!("{key}.history"), self.history, 1, 200, errors);
        let allowed_hosts = super::fetch::parse_allowed(
            &format!("{key}.allowed_hosts"),
            &self.allowed_hosts,
            errors,
        );
        let api_key = std::env::var("KOMORA_AI_API_KEY")
            .ok()
            .filter(|s| !s.is_empty())
            .or_else(|| Some(self.api_key.clone()).filter(|s| !s.is_empty()));
        // Checked after the override: a placeholder is as bad from the environment.
        if let Some(reason) = api_key.as_deref().and_then(placeholder) {
            errors.push(ConfigError::new(format!("{key}.api_key"), reason));
        }
        if errors.len() > before {
            return None;
        }
        Some(AiConfig {
            enabled: self.enabled,
            url: self.url.clone(),
            api_key,
            timeout: Duration::from_millis(self.timeout_ms),
            channels: self.channels.clone(),
            history: self.history,
            allowed_hosts,
        })
    }
}

/// Shortest accepted webhook secret, characters (e.g. `openssl rand -hex 32` gives 64).
pub const MIN_WEBHOOK_SECRET_CHARS: usize = 32;

/// Words that mark a value as a placeholder someone forgot to replace.
const PLACEHOLDER_WORDS: [&str; 7] = [
    "change-me",
    "changeme",
    "change_me",
    "replace",
    "example",
    "placeholder",
    "your-secret",
];

/// Why `value` looks like a placeholder rather than a secret, if it does.
pub fn placeholder(value: &str) -> Option<String> {
    let lower = value.to_ascii_lowercase();
    PLACEHOLDER_WORDS
        .iter()
        .find(|w| lower.contains(*w))
        .map(|w| format!("looks like a placeholder (contains {w:?}): set a real random secret"))
}

/// Why `secret` is not acceptable: a placeholder, or shorter than `min` characters.
pub fn weak_secret(secret: &str, min: usize) -> Option<String> {
    placeholder(secret).or_else(|| {
        let n = secret.chars().count();
        (n < min).then(|| format!("{n} characters; must be at least {min} (random)"))
    })
}

/// The environment variable that overrides `platforms.<name>.webhook_secret`.
pub fn webhook_secret_env(name: &str) -> String {
    format!(
        "KOMORA_PLATFORM_{}_WEBHOOK_SECRET",
        name.to_ascii_uppercase()
    )
}

impl PlatformsConfig {
    /// One line per platform whose webhook is disabled for want of a secret.
    pub fn warnings(&self) -> Vec<String> {
        self.platforms
            .values()
            .filter(|p| p.webhook_secret.is_none())
            .map(|p| {
                format!(
                    "platforms.{0}.webhook_secret: not set (env {1}); the webhook is \
                     disabled: POST /webhooks/{0} answers 404",
                    p.name,
                    webhook_secret_env(&p.name)
                )
            })
            .collect()
    }
}

/// `[platforms]` as written: `[platforms.<name>]` per messaging platform.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct PlatformsFile {
    pub platforms: BTreeMap<String, PlatformFile>,
}

/// `[platforms.<name>]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlatformFile {
    /// Base URL of the platform's bot API, e.g. `https://api.telegram.org`. Required.
    pub base_url: String,
    /// Bot token. Default empty; env `KOMORA_PLATFORM_<NAME>_TOKEN` overrides.
    pub token: String,
    /// Shared secret of inbound webhooks: sent as `X-Komora-Webhook-Secret`, or used as the
    /// HMAC-SHA256 key of `X-Komora-Signature: sha256=<hex>`. At least 32 characters, not a
    /// placeholder (change-me, replace, example …). Default empty: the platform's webhook is
    /// disabled (404), with a warning at start. Put it in the environment, not the file:
    /// env `KOMORA_PLATFORM_<NAME>_WEBHOOK_SECRET` overrides.
    pub webhook_secret: String,
    /// Office that new conversations from this platform belong to. Default: the first office.
    pub office_id: Option<i64>,
    /// Outbound request timeout, milliseconds. Default 10000; 100..=120000.
    pub timeout_ms: u64,
    /// Largest media file downloaded, bytes. Default 20 MiB; 1..=2 GiB.
    pub media_max_bytes: u64,
    /// Hosts this platform's API calls and media downloads may reach although they resolve
    /// to loopback, private or other non-public addresses (`host`, `host:port`, `[v6]:port`),
    /// e.g. a local stand-in. Default empty: only public addresses are fetched from.
    pub allowed_hosts: Vec<String>,
    /// The platform (or its relay) drops a repeated send carrying the same `Idempotency-Key`,
    /// so a send whose outcome a crash left unknown is sent again instead of waiting as
    /// `delivery_unknown` for an operator. Default false; telegram's Bot API does not.
    pub honours_idempotency_key: bool,
}

impl Default for PlatformFile {
    fn default() -> Self {
        PlatformFile {
            base_url: String::new(),
            token: String::new(),
            webhook_secret: String::new(),
            office_id: None,
            timeout_ms: 10_000,
            media_max_bytes: 20 * 1024 * 1024,
            allowed_hosts: Vec::new(),
            honours_idempotency_key: false,
        }
    }
}

/// Validated `[platforms.<name>]`.
#[derive(Debug, Clone)]
pub struct PlatformConfig {
    pub name: String,
    pub base_url: String,
    pub token: String,
    /// `None`: no secret configured, so the webhook is disabled (never open).
    pub webhook_secret: Option<String>,
    pub office_id: Option<i64>,
    pub timeout: Duration,
    pub media_max_bytes: u64,
    pub allowed_hosts: Vec<super::fetch::AllowedHost>,
    pub honours_idempotency_key: bool,
}

/// Validated `[platforms]`.
#[derive(Debug, Clone, Default)]
pub struct PlatformsConfig {
    pub platforms: BTreeMap<String, PlatformConfig>,
}

impl PlatformsConfig {
    pub fn get(&self, name: &str) -> Option<&PlatformConfig> {
        self.platforms.get(name)
    }
}

impl PlatformsFile {
    pub fn validate(&self, key: &str, errors: &mut Vec<ConfigError>) -> Option<PlatformsConfig> {
        let before = errors.len();
        let mut platforms = BTreeMap::new();
        for (name, p) in &self.platforms {
            let pkey = format!("{key}.{name}");
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            {
                errors.push(ConfigError::new(
                    pkey.clone(),
                    "platform names are lowercase letters, digits and _",
                ));
            }
            check_url(format!("{pkey}.base_url"), &p.base_url, errors);
            let webhook_secret = Some(p.webhook_secret.clone()).filter(|s| !s.is_empty());
            if let Some(secret) = &webhook_secret {
                if let Some(reason) = weak_secret(secret, MIN_WEBHOOK_SECRET_CHARS) {
                    errors.push(ConfigError::new(format!("{pkey}.webhook_secret"), reason));
                }
            }
            check_range(
                format!("{pkey}.timeout_ms"),
                p.timeout_ms,
                100,
                120_000,
                errors,
            );
            check_range(
                format!("{pkey}.media_max_bytes"),
                p.media_max_bytes,
                1,
                2 * 1024 * 1024 * 1024,
                errors,
            );
            let env = format!("KOMORA_PLATFORM_{}_TOKEN", name.to_ascii_uppercase());
            let token = std::env::var(&env)
                .ok()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| p.token.clone());
            // Checked after the override: a placeholder is as bad from the environment.
            if let Some(reason) = placeholder(&token) {
                errors.push(ConfigError::new(format!("{pkey}.token"), reason));
            }
            platforms.insert(
                name.clone(),
                PlatformConfig {
                    name: name.clone(),
                    base_url: p.base_url.trim_end_matches('/').to_string(),
                    token,
                    webhook_secret,
                    office_id: p.office_id,
                    timeout: Duration::from_millis(p.timeout_ms),
                    media_max_bytes: p.media_max_bytes,
                    allowed_hosts: platform_fetch(&pkey, name, p, errors),
                    honours_idempotency_key: p.honours_idempotency_key,
                },
            );
        }
        if errors.len() > before {
            return None;
        }
        Some(PlatformsConfig { platforms })
    }
}

/// `allowed_hosts` and `honours_idempotency_key` of `[platforms.<name>]`, validated.
fn platform_fetch(
    pkey: &str,
    name: &str,
    p: &PlatformFile,
    errors: &mut Vec<ConfigError>,
) -> Vec<super::fetch::AllowedHost> {
    if name == "telegram" && p.honours_idempotency_key {
        errors.push(ConfigError::new(
            format!("{pkey}.honours_idempotency_key"),
            "telegram's Bot API ignores Idempotency-Key; a resend after a crash could deliver twice",
        ));
    }
    super::fetch::parse_allowed(&format!("{pkey}.allowed_hosts"), &p.allowed_hosts, errors)
}
