//! `[queue]` (and related) sections of `config/origin.toml`.

use serde::Deserialize;

use crate::config::ConfigError;

/// `[queue]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueFile {}

/// Validated `[queue]` settings.
#[derive(Debug, Clone, Default)]
pub struct QueueConfig {}

impl QueueFile {
    /// Validates the section found at `key` (its dotted path), pushing every problem.
    pub fn validate(&self, _key: &str, _errors: &mut Vec<ConfigError>) -> Option<QueueConfig> {
        Some(QueueConfig {})
    }
}

/// `[ai]` as written: the RAG API the autobot calls.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AiFile {}

/// Validated `[ai]`.
#[derive(Debug, Clone, Default)]
pub struct AiConfig {}

impl AiFile {
    pub fn validate(&self, _key: &str, _errors: &mut Vec<ConfigError>) -> Option<AiConfig> {
        Some(AiConfig {})
    }
}

/// `[platforms.<name>]` as written: one HTTP adapter per messaging platform.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlatformsFile {}

/// Validated `[platforms]`.
#[derive(Debug, Clone, Default)]
pub struct PlatformsConfig {}

impl PlatformsFile {
    pub fn validate(&self, _key: &str, _errors: &mut Vec<ConfigError>) -> Option<PlatformsConfig> {
        Some(PlatformsConfig {})
    }
}
