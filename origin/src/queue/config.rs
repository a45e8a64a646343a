//! `[ai]` and `[platforms.<name>]` sections of `config/origin.toml`; `[queue]` is the
//! engine's (`komora_queue::config`), re-exported here.
//!
//! Each section has a serde struct that mirrors the file (unknown keys are errors) and a
//! validated twin the code uses. Validation pushes every problem with its dotted key path.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

pub use komora_queue::config::{KindConfig, KindFile, QueueConfig, QueueFile, WeightsFile, QUEUES};

fn check_range<T: PartialOrd + std::fmt::Display + Copy>(
    key: String,
    value: T,
    min: T,
    max: T,
    errors: &mut Vec<ConfigError>,
) {
    komora_config::check_range(errors, key, value, min, max);
}

/// `[ai]` as written: the RAG API the autobot calls.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AiFile {
    /// Master switch of the autobot. Default `false`.
    pub enabled: bool,
    /// RAG API endpoint (POSTed the recent conversation, answers `{"answer": "..."}`).
    /// Default empty; required (http or https URL) when `enabled`.
    pub url: String,
    /// Bearer key for the RAG API. Default empty; env `KOMORA_AI_API_KEY` overrides.
    pub api_key: String,
    /// Request timeout, milliseconds. Default 20000 ([`DEFAULT_AI_TIMEOUT_MS`]); 100..=300000.
    pub timeout_ms: u64,
    /// Platforms (channels) the autobot answers on. Default `["telegram"]` ([`DEFAULT_AI_CHANNELS`]).
    pub channels: Vec<String>,
    /// Messages of history sent with the request. Default 20 ([`DEFAULT_AI_HISTORY`]); 1..=200.
    pub history: u32,
    /// Hosts the RAG API may be reached on although they are not public addresses
    /// (`host`, `host:port`, `[v6]:port`), e.g. a local RAG service. Default empty.
    pub allowed_hosts: Vec<String>,
}

/// Default `ai.timeout_ms`.
pub const DEFAULT_AI_TIMEOUT_MS: u64 = 20_000;
/// Default `ai.channels`.
pub const DEFAULT_AI_CHANNELS: [&str; 1] = ["telegram"];
/// Default `ai.history`.
pub const DEFAULT_AI_HISTORY: u32 = 20;

impl Default for AiFile {
    fn default() -> Self {
        AiFile {
            enabled: false,
            url: String::new(),
            api_key: String::new(),
            timeout_ms: DEFAULT_AI_TIMEOUT_MS,
            channels: DEFAULT_AI_CHANNELS.map(String::from).to_vec(),
            history: DEFAULT_AI_HISTORY,
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
    pub allowed_hosts: Vec<crate::fetch::AllowedHost>,
}

impl Default for AiConfig {
    fn default() -> Self {
        AiConfig {
            enabled: false,
            url: String::new(),
            api_key: None,
            timeout: Duration::from_millis(DEFAULT_AI_TIMEOUT_MS),
            channels: DEFAULT_AI_CHANNELS.map(String::from).to_vec(),
            history: DEFAULT_AI_HISTORY,
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
        let allowed_hosts = crate::fetch::parse_allowed(
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
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(transparent)]
pub struct PlatformsFile {
    pub platforms: BTreeMap<String, PlatformFile>,
}

/// `[platforms.<name>]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub office_id: Option<i64>,
    /// Outbound request timeout, milliseconds. Default 10000
    /// ([`DEFAULT_PLATFORM_TIMEOUT_MS`]); 100..=120000.
    pub timeout_ms: u64,
    /// Largest media file downloaded, bytes. Default 20 MiB ([`DEFAULT_MEDIA_MAX_BYTES`]);
    /// 1..=2 GiB.
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

/// Default `platforms.<name>.timeout_ms`.
pub const DEFAULT_PLATFORM_TIMEOUT_MS: u64 = 10_000;
/// Default `platforms.<name>.media_max_bytes` (20 MiB).
pub const DEFAULT_MEDIA_MAX_BYTES: u64 = 20 * 1024 * 1024;

impl Default for PlatformFile {
    fn default() -> Self {
        PlatformFile {
            base_url: String::new(),
            token: String::new(),
            webhook_secret: String::new(),
            office_id: None,
            timeout_ms: DEFAULT_PLATFORM_TIMEOUT_MS,
            media_max_bytes: DEFAULT_MEDIA_MAX_BYTES,
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
    pub allowed_hosts: Vec<crate::fetch::AllowedHost>,
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
) -> Vec<crate::fetch::AllowedHost> {
    if name == "telegram" && p.honours_idempotency_key {
        errors.push(ConfigError::new(
            format!("{pkey}.honours_idempotency_key"),
            "telegram's Bot API ignores Idempotency-Key; a resend after a crash could deliver twice",
        ));
    }
    crate::fetch::parse_allowed(&format!("{pkey}.allowed_hosts"), &p.allowed_hosts, errors)
}
