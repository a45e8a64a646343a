//! The access log: one line per request, written off the hot path.
//!
//! A request's `logging` hook builds a compact [`Record`] (no formatting, no allocation: the
//! target is copied inline, header values are reference-counted) and hands it to a bounded
//! lock-free queue. One writer thread owns the destination: every few milliseconds it
//! drains the queue, formats each record (`combined` or `json`), writes them with one flush,
//! and it reopens the file on SIGUSR1 so logrotate can move it away. A full queue never makes
//! a request wait: the line is dropped and counted in `komora_edge_access_log_dropped_total`.
//!
//! `combined` is nginx's `combined` followed by six fields (`-` when unknown):
//!
//! ```text
//! $remote_addr - - [$time_local] "$request" $status $body_bytes_sent "$http_referer"
//!     "$http_user_agent" $cache_status $upstream_status $upstream_time $request_time
//!     $bytes_sent $request_id
//! ```
//!
//! Times are seconds with millisecond precision; `$upstream_time` runs from choosing the
//! origin to the end of its response body, `$request_time` from the parsed request head to
//! the end of the response. `$bytes_sent` includes the response head (its HTTP/1.1 size). A
//! request the client abandoned before any response was written is logged with status 499,
//! as nginx does.
//!
//! Files: this one has the [`Record`] a request hands over and the sending half
//! ([`AccessLog`]); `format.rs` turns a record into a line; `writer.rs` is the writer thread
//! (drain, flush, reopen on SIGUSR1); `request_id.rs` the request id.
//!
//! This module also owns the request id: a sane client `X-Request-Id` is kept, otherwise one
//! is generated (process prefix + counter) and sent to the origin.

mod format;
mod request_id;
mod writer;

pub use request_id::{RequestId, MAX_REQUEST_ID_LEN};

use crate::cache_status::CacheStatus;
use crate::config::AccessLogSettings;
use crate::metrics::METRICS;
use crossbeam_queue::ArrayQueue;
use http::{HeaderValue, Method, Uri, Version};
use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// What one access log line says, captured at the end of a request.
#[derive(Debug)]
pub struct Record {
    /// When the response finished.
    pub time: SystemTime,
    /// Client address (`None` for a Unix socket peer).
    pub client: Option<IpAddr>,
    /// Request method.
    pub method: Method,
    /// Request target as received.
    pub target: Target,
    /// HTTP version of the request.
    pub version: Version,
    /// Response status (499 when the client left before any response).
    pub status: u16,
    /// Response body bytes written.
    pub body_bytes: u64,
    /// Response head and body bytes written.
    pub bytes_sent: u64,
    /// `Referer` request header.
    pub referer: Option<HeaderValue>,
    /// `User-Agent` request header.
    pub user_agent: Option<HeaderValue>,
    /// `X-Cache-Status` of the response.
    pub cache_status: CacheStatus,
    /// Status of the origin's response, when the origin was asked.
    pub upstream_status: Option<u16>,
    /// Origin time, when the origin was asked.
    pub upstream_time: Option<Duration>,
    /// Total request time.
    pub request_time: Duration,
    /// The request id.
    pub request_id: RequestId,
}

/// Targets up to this long are kept inline in the [`Record`] (a media path is ~71 bytes).
const TARGET_INLINE: usize = 120;

/// The request target, copied: no allocation for the usual short ones, and the request's
/// buffers are not held until the writer gets to the line.
#[derive(Debug)]
pub enum Target {
    /// Short targets.
    Inline {
        /// Used bytes of `buf`.
        len: u8,
        /// The target's bytes.
        buf: [u8; TARGET_INLINE],
    },
    /// Longer ones.
    Heap(Box<str>),
}

impl Target {
    /// The target of `uri` as received (origin-form `/path?query`, or the whole absolute
    /// URI when it has an authority).
    pub fn of(uri: &Uri) -> Self {
        match (uri.authority(), uri.path_and_query()) {
            (None, Some(pq)) => Self::from_str(pq.as_str()),
            _ => Target::Heap(uri.to_string().into_boxed_str()),
        }
    }

    fn from_str(s: &str) -> Self {
        let mut buf = [0u8; TARGET_INLINE];
        match (buf.get_mut(..s.len()), u8::try_from(s.len())) {
            (Some(dst), Ok(len)) => {
                dst.copy_from_slice(s.as_bytes());
                Target::Inline { len, buf }
            }
            _ => Target::Heap(s.into()),
        }
    }

    /// The target's text.
    pub fn as_str(&self) -> &str {
        match self {
            Target::Inline { len, buf } => buf
                .get(..usize::from(*len))
                .and_then(|b| std::str::from_utf8(b).ok())
                .unwrap_or(""),
            Target::Heap(s) => s,
        }
    }
}

/// The sending half, held by the proxy service; cheap to call from every request: a
/// lock-free bounded queue (one compare-and-swap per push), drained by the writer thread.
#[derive(Debug, Clone)]
pub struct AccessLog {
    queue: Arc<ArrayQueue<Record>>,
}

/// Why the access log could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The log file could not be opened for append.
    #[error("access_log.path {0}: {1}")]
    Open(String, io::Error),
    /// The writer thread or its SIGUSR1 handler could not be set up.
    #[error("access log writer: {0}")]
    Writer(io::Error),
}

impl AccessLog {
    /// Open the destination and start the writer thread (with its SIGUSR1 handler installed
    /// before this returns, so a rotation signal never hits the default action).
    pub fn start(settings: &AccessLogSettings) -> Result<Self, StartError> {
        let out = writer::Output::open(&settings.target)?;
        let queue = Arc::new(ArrayQueue::new(settings.queue_lines.get()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let format = settings.format;
        let rx = queue.clone();
        std::thread::Builder::new()
            .name("access-log".to_string())
            .spawn(move || writer::writer_thread(rx, out, format, ready_tx))
            .map_err(StartError::Writer)?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(AccessLog { queue }),
            Ok(Err(e)) => Err(StartError::Writer(e)),
            Err(_) => Err(StartError::Writer(io::Error::other("writer thread exited"))),
        }
    }

    /// Queue a record; never waits. A full queue drops it and counts the drop.
    pub fn send(&self, record: Record) {
        if self.queue.push(record).is_err() {
            METRICS.access_log_dropped.inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queued_line_costs_about_400_bytes() {
        // Documented for `access_log.queue_lines` (the queue is allocated up front).
        assert!(
            std::mem::size_of::<Record>() <= 400,
            "{}",
            std::mem::size_of::<Record>()
        );
    }
}
