//! Waiting for an HTTP/1 connection's next request head with no request state allocated.
//!
//! Between requests a keep-alive connection needs nothing but its socket. pingora waits for
//! the next head inside `process_new_http`, whose future is sized for the whole proxy state
//! machine and which allocates a 4 KiB head buffer before its first read, so every idle or
//! slow client held all of that for as long as it liked (`bench/README-edge.md`, "Memory").
//! [`read_head`] waits in the edge's connection loop instead, reading through a buffer on
//! the stack, and keeps only the bytes received (the head so far) until the head is
//! complete; the loop then starts pingora's session with those bytes as its "pipelined
//! prefix", so pingora parses them without a read of its own.
//!
//! The head deadline still applies: the reads go through [`crate::connection::HeadDeadline`],
//! which answers 408 and fails the read when a head takes too long.

use crate::metrics::{ClientClosedPhase, METRICS};
use bytes::BytesMut;
use pingora::apps::HttpPersistentSettings;
use std::fmt::{self, Write as _};
use std::future::{poll_fn, Future};
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::Notify;

/// Bytes read per read call (on the stack, not kept).
const READ_CHUNK: usize = 4096;

/// A head still incomplete at this size is handed to pingora as it is: pingora reads the
/// rest and enforces its own header size limit (400 beyond it).
const MAX_HELD_HEAD: usize = 64 * 1024;

/// Room pingora gets behind a head handed over incomplete, so its next read is not a
/// 64-byte one.
const HANDOVER_SPARE: usize = 4096;

/// The edge's "stop taking requests" signal for connections waiting here (pingora's own
/// waiters are woken by its `http_cleanup`).
#[derive(Debug, Default)]
pub struct Closing {
    closed: AtomicBool,
    notify: Notify,
}

impl Closing {
    /// Wake every waiting connection and make later waits return at once.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    /// Whether [`Self::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

/// Whether a head is complete in `buf`: a line feed, an optional carriage return, then a
/// line feed (httparse, which pingora uses, accepts bare LF line ends too). `from` is where
/// the bytes not scanned before start; the scan backs up two bytes so a terminator split
/// across reads is found.
fn head_complete_in(buf: &[u8], from: usize) -> bool {
    let start = from.saturating_sub(2);
    let tail = buf.get(start..).unwrap_or_default();
    // memchr: this runs over every request head, and a byte-at-a-time scan was the largest
    // of the idle loop's own costs on a 304 (callgrind, ~1.3k instructions per request).
    memchr::memchr_iter(b'\n', tail).any(|i| match tail.get(i + 1) {
        Some(b'\n') => true,
        Some(b'\r') => tail.get(i + 2) == Some(&b'\n'),
        _ => false,
    })
}

/// Read into `held` until it holds a complete head (or more than [`MAX_HELD_HEAD`]
/// bytes), or the stream ends. Nothing but `held` outlives a poll.
fn poll_head<S: AsyncRead + Unpin>(
    stream: &mut S,
    held: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<io::Result<()>> {
    loop {
        // Uninitialized: zeroing 4 KiB on every poll (twice per request on a keep-alive
        // connection) was a visible share of a hot hit's instructions.
        let mut chunk = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
        let mut rb = ReadBuf::uninit(&mut chunk);
        match Pin::new(&mut *stream).poll_read(cx, &mut rb) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Ready(Ok(())) => {}
        }
        let got = rb.filled();
        if got.is_empty() {
            return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
        }
        let from = held.len();
        held.extend_from_slice(got);
        if head_complete_in(held, from) {
            return Poll::Ready(Ok(()));
        }
        if held.len() > MAX_HELD_HEAD {
            held.reserve(HANDOVER_SPARE);
            return Poll::Ready(Ok(()));
        }
    }
}

/// How long a keep-alive connection still waits for its next request once `closing` is
/// signalled (seconds; shorter than any grace period, `server.grace_period_secs` ≥ 1). A
/// busy client sends one in this time and is answered (with `Connection: close`, as every
/// response during shutdown) instead of having its connection closed just as its request
/// is on the way, which it sees as a reset; only a client idle for the whole linger races
/// the close, as with any keep-alive timeout.
pub const SHUTDOWN_LINGER: Duration = Duration::from_secs(1);

/// Wait for the next request head on `stream`: its bytes (the complete head, plus whatever
/// followed it in the same reads), or `None` when the connection should just close: the
/// client hung up or sent nothing for `idle`, a read failed (the head deadline's 408
/// included), or nothing arrived within [`SHUTDOWN_LINGER`] of `closing` being signalled.
///
/// `closing` is `None` for a connection's first request: a client that has just connected
/// (or just finished its TLS handshake) is about to send one, and closing it unanswered at
/// shutdown would fail a request the listener had already accepted (nginx too closes only
/// keep-alive connections at a graceful shutdown). Its wait stays bounded by `idle` and the
/// head deadline, and the process by its grace period.
pub async fn read_head<S: AsyncRead + Unpin>(
    stream: &mut S,
    idle: Duration,
    closing: Option<&Closing>,
) -> Option<BytesMut> {
    let mut held = BytesMut::new();
    let idle_timer = tokio::time::sleep(idle);
    tokio::pin!(idle_timer);
    let notified = closing.map(|c| c.notify.notified());
    tokio::pin!(notified);
    let mut lingering = false;
    let done = poll_fn(|cx| {
        if held.is_empty() {
            // Idle: no head has started; the keep-alive timeout and shutdown apply.
            if let (Some(closing), Some(notified), false) =
                (closing, notified.as_mut().as_pin_mut(), lingering)
            {
                if closing.is_closed() || notified.poll(cx).is_ready() {
                    lingering = true;
                    let linger = tokio::time::Instant::now() + SHUTDOWN_LINGER;
                    if linger < idle_timer.deadline() {
                        idle_timer.as_mut().reset(linger);
                    }
                }
            }
            if idle_timer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(io::ErrorKind::TimedOut.into()));
            }
        }
        poll_head(stream, &mut held, cx)
    })
    .await;
    match done {
        Ok(()) => Some(held),
        Err(e) => {
            // A head cut short (the client hung up, or the deadline's 408) is counted as
            // pingora's own head reads count it (`crate::logging`); a connection that sent
            // nothing just ended its keep-alive.
            if !held.is_empty() {
                METRICS.client_closed(ClientClosedPhase::RequestHead);
                tracing::debug!(error = %e, bytes = held.len(), "client closed mid-head");
            }
            None
        }
    }
}

/// Whether `settings` carry bytes of the next request already read (a pipelined request):
/// then the next session must start at once, since the client may be waiting for the
/// answer to a request it has sent whole.
///
/// pingora keeps the prefix private and offers no accessor, so this reads the settings'
/// `Debug` output, stopping right after the field's first characters (no bytes of the
/// prefix are formatted). Should the field ever be missing from the output, the answer is
/// "yes": the session then starts at once and waits in pingora, which is correct, only
/// not as lean; `tests/edge/idle.rs` would show the memory, the pipelining tests the
/// correctness.
pub fn carries_prefix(settings: &HttpPersistentSettings) -> bool {
    /// Watches the derived `Debug` output's pieces: the field name arrives as one piece,
    /// then `": "`, then the value's first piece, which tells `Some` from `None`. The
    /// formatting stops there. Comparing pieces (not searching the text) keeps this to a few
    /// hundred instructions: it runs once per request on a keep-alive connection.
    struct Probe {
        after_name: bool,
        answer: Option<bool>,
    }
    const FIELD: &str = "pipelined_prefix";
    impl fmt::Write for Probe {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            if self.after_name {
                let value = s.trim_start_matches([':', ' ']);
                if !value.is_empty() {
                    self.answer = Some(!value.starts_with("None"));
                    return Err(fmt::Error);
                }
            } else if s == FIELD {
                self.after_name = true;
            }
            Ok(())
        }
    }
    let mut probe = Probe {
        after_name: false,
        answer: None,
    };
    let _ = write!(probe, "{settings:?}");
    probe.answer.unwrap_or(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_end_is_found_across_reads_and_line_ends() {
        assert!(head_complete_in(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 0));
        assert!(head_complete_in(b"GET / HTTP/1.1\nHost: a\n\n", 0));
        assert!(!head_complete_in(b"GET / HTTP/1.1\r\nHost: a\r\n", 0));
        // The terminator split over two reads: "\r\n" then "\r\n".
        let buf = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        assert!(head_complete_in(buf, buf.len() - 2));
        assert!(head_complete_in(buf, buf.len() - 1));
    }
}
