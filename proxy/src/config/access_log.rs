//! `[access_log]` validated into where lines go and in which format.

use std::num::NonZeroUsize;
use std::path::PathBuf;

use super::check::{nz_usize, Checker};
use super::defaults::*;
use super::file::RawAccessLog;

/// Where access log lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogTarget {
    /// Standard output (containers).
    Stdout,
    /// A file, appended to and reopened on SIGUSR1.
    File(PathBuf),
}

/// Access log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessLogFormat {
    /// nginx `combined` plus the edge's fields.
    Combined,
    /// One JSON object per line.
    Json,
}

/// Validated `[access_log]`, present only when `path` is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLogSettings {
    /// Destination.
    pub target: AccessLogTarget,
    /// Line format.
    pub format: AccessLogFormat,
    /// Bounded queue capacity.
    pub queue_lines: NonZeroUsize,
}

/// Validates `[access_log]`: `None` when `path` is unset (no access log).
pub(super) fn validate_access_log(c: &mut Checker, l: RawAccessLog) -> Option<AccessLogSettings> {
    let format = match l.format.as_deref().unwrap_or("combined") {
        "combined" => AccessLogFormat::Combined,
        "json" => AccessLogFormat::Json,
        other => {
            c.err(
                "access_log.format",
                format!("must be \"combined\" or \"json\", got {other:?}"),
            );
            AccessLogFormat::Combined
        }
    };
    let queue_lines = nz_usize(c.range(
        "access_log.queue_lines",
        l.queue_lines,
        DEFAULT_ACCESS_LOG_QUEUE_LINES,
        1,
        MAX_ACCESS_LOG_QUEUE_LINES,
    ));
    match l.path.as_deref() {
        None => None,
        Some("") => {
            c.err(
                "access_log.path",
                "must not be empty (a file path, or \"-\" for stdout)",
            );
            None
        }
        Some(p) => Some(AccessLogSettings {
            target: if p == "-" {
                AccessLogTarget::Stdout
            } else {
                AccessLogTarget::File(PathBuf::from(p))
            },
            format,
            queue_lines,
        }),
    }
}
