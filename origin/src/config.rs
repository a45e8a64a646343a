//! The origin's configuration: `config/origin.toml`.
//!
//! The serde structs below mirror the file one to one (unknown keys are errors); they are
//! then validated into [`Config`], the typed values the rest of the code uses. Validation
//! collects every problem with its key path instead of stopping at the first, so
//! `komora-origin --check-config FILE` can list them all.
//!
//! Sections owned by other modules (`[queue]`, `[worker]`, `[ai]`, `[platforms.*]`) are
//! declared in `crate::queue::config` and validated there.

use std::fmt;
use std::path::Path;

use serde::Deserialize;

/// One problem found in a config file: the dotted key path and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted path of the offending key, e.g. `database.max_connections`.
    pub key: String,
    /// Why the value is rejected.
    pub reason: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// Every problem found in one file, each printed as `FILE: KEY: REASON`.
#[derive(Debug, Clone)]
pub struct ConfigErrors {
    /// The file the errors are about (`<defaults>` when no file was given).
    pub file: String,
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}: {}: {}", self.file, e.key, e.reason)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// `config/origin.toml` as written. Every section is optional; missing keys take defaults.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConfigFile {
    pub queue: crate::queue::config::QueueFile,
    pub ai: crate::queue::config::AiFile,
    pub platforms: crate::queue::config::PlatformsFile,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub queue: crate::queue::config::QueueConfig,
    pub ai: crate::queue::config::AiConfig,
    pub platforms: crate::queue::config::PlatformsConfig,
}

impl ConfigFile {
    /// Validates every section, collecting all errors.
    pub fn validate(&self, errors: &mut Vec<ConfigError>) -> Option<Config> {
        let queue = self.queue.validate("queue", errors);
        let ai = self.ai.validate("ai", errors);
        let platforms = self.platforms.validate("platforms", errors);
        if !errors.is_empty() {
            return None;
        }
        Some(Config {
            queue: queue?,
            ai: ai?,
            platforms: platforms?,
        })
    }
}

impl Config {
    /// Reads, parses and validates a file; all problems are reported together.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigErrors {
            file: file.clone(),
            errors: vec![ConfigError::new("<file>", format!("cannot read: {e}"))],
        })?;
        Config::parse(&file, &text)
    }

    /// Parses and validates TOML text; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Config, ConfigErrors> {
        let raw: ConfigFile = toml::from_str(text).map_err(|e| ConfigErrors {
            file: file.to_string(),
            errors: vec![toml_error(e)],
        })?;
        let mut errors = Vec::new();
        match raw.validate(&mut errors) {
            Some(config) if errors.is_empty() => Ok(config),
            _ => Err(ConfigErrors {
                file: file.to_string(),
                errors,
            }),
        }
    }

    /// The built-in defaults (what an empty file gives).
    pub fn defaults() -> Result<Config, ConfigErrors> {
        Config::parse("<defaults>", "")
    }
}

/// Turns a TOML parse error into a key-path error where toml tells us the span.
fn toml_error(e: toml::de::Error) -> ConfigError {
    // toml's message already names the unknown or mistyped key; keep it on one line.
    let reason = e.message().replace('\n', " ");
    ConfigError::new("<toml>", reason)
}
