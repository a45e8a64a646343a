//! The process's diagnostic log (stderr, `RUST_LOG`), and the rule that a client closing its
//! connection is normal behaviour, not an error: it is counted in
//! `komora_edge_client_closed_total` and logged at debug, so ERROR lines are left for what an
//! operator must act on.
//!
//! Closes while a request is in flight reach our hooks, and [`crate::service`] handles them
//! (`suppress_error_log`). A request head the client abandoned half-way does not: pingora's
//! `handle_new_request` logs "Fail to proxy: Downstream ConnectionClosed …" with `error!`
//! before any hook runs, and offers no hook there. [`ClientClosedFilter`] is the one place
//! that sees that line; it takes exactly pingora's downstream close and reset errors
//! (`ConnectionClosed`, `ReadError`) from `pingora_proxy` and nothing else.
//!
//! The `Error` itself never reaches us there, only its `Display` (source, then type, then
//! context), so the filter reads the source and type back out of the line and compares them
//! with pingora's own [`ErrorSource`] and [`ErrorType`] values ([`client_closed_head`]),
//! not with a hand-written copy of the message: a renamed variant fails to compile or the
//! unit test below, instead of silently logging errors again.

use crate::metrics::{ClientClosedPhase, METRICS};
use pingora::{ErrorSource, ErrorType};
use std::fmt::{self, Write as _};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// Default filter when `RUST_LOG` is unset.
pub const DEFAULT_FILTER: &str = "warn,pingora_cache::meta=error";

/// What `pingora_proxy` writes before the error of a request that failed before any hook.
const FAIL_TO_PROXY: &str = "Fail to proxy: ";

/// The source and types of pingora's error for a client that went away before its request
/// head was complete: `read_request` fails with `ConnectionClosed` when the stream ends after
/// part of a head and with `ReadError` when a read fails (a reset), both from downstream.
const CLIENT_CLOSED_SOURCE: ErrorSource = ErrorSource::Downstream;
const CLIENT_CLOSED_TYPES: [ErrorType; 2] = [ErrorType::ConnectionClosed, ErrorType::ReadError];

/// Whether `text` is pingora's "Fail to proxy" line for an error whose source and type are
/// a client closing mid head (see [`CLIENT_CLOSED_TYPES`]). An `Error` displays as its
/// source, a space, its type, then ` context: ...` / ` cause: ...`; pingora appends
/// `, downstream session type: ...`.
fn client_closed_head(text: &str) -> bool {
    let Some(error) = text.strip_prefix(FAIL_TO_PROXY) else {
        return false;
    };
    let mut words = error.split(' ');
    let (Some(source), Some(etype)) = (words.next(), words.next()) else {
        return false;
    };
    let etype = etype.trim_end_matches(',');
    source == CLIENT_CLOSED_SOURCE.as_str()
        && CLIENT_CLOSED_TYPES.iter().any(|t| t.as_str() == etype)
}

/// Install the stderr subscriber with [`ClientClosedFilter`]. Call once, first thing.
pub fn init() {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    tracing_subscriber::registry()
        .with(ClientClosedFilter)
        .with(filter)
        .with(tracing_subscriber::fmt::layer())
        .init();
}

/// Turns pingora's error line for a client that closed mid request head into a counter and
/// a debug line (see the module docs).
pub struct ClientClosedFilter;

impl<S: Subscriber> Layer<S> for ClientClosedFilter {
    fn event_enabled(&self, event: &Event<'_>, _ctx: Context<'_, S>) -> bool {
        let meta = event.metadata();
        // pingora logs through the `log` crate: such events carry the target "log" and the
        // real one in their `log.target` field.
        let bridged = meta.target() == "log";
        if *meta.level() != Level::ERROR || !(bridged || meta.target().starts_with(PINGORA_PROXY)) {
            return true;
        }
        let mut head = MessageHead::default();
        event.record(&mut head);
        let text = head.as_str();
        if (bridged && !head.from_pingora_proxy) || !client_closed_head(text) {
            return true;
        }
        METRICS.client_closed(ClientClosedPhase::RequestHead);
        tracing::debug!(target: "komora_proxy::client_closed", "{text}");
        false
    }
}

/// The crate whose error line [`ClientClosedFilter`] takes.
const PINGORA_PROXY: &str = "pingora_proxy";

/// The first bytes of an event's `message` (enough to match a prefix, no allocation), and
/// whether its `log.target` is pingora's proxy crate.
struct MessageHead {
    buf: [u8; 128],
    len: usize,
    from_pingora_proxy: bool,
}

impl Default for MessageHead {
    fn default() -> Self {
        MessageHead {
            buf: [0; 128],
            len: 0,
            from_pingora_proxy: false,
        }
    }
}

impl MessageHead {
    fn as_str(&self) -> &str {
        let bytes = self.buf.get(..self.len).unwrap_or_default();
        match std::str::from_utf8(bytes) {
            Ok(s) => s,
            // Cut inside a multi-byte character: keep the valid part.
            Err(e) => std::str::from_utf8(bytes.get(..e.valid_up_to()).unwrap_or_default())
                .unwrap_or_default(),
        }
    }
}

impl fmt::Write for MessageHead {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = self.buf.len() - self.len;
        let take = s.len().min(room);
        if let (Some(dst), Some(src)) = (
            self.buf.get_mut(self.len..self.len + take),
            s.as_bytes().get(..take),
        ) {
            dst.copy_from_slice(src);
            self.len += take;
        }
        // Stop formatting once full.
        if take < s.len() {
            Err(fmt::Error)
        } else {
            Ok(())
        }
    }
}

impl Visit for MessageHead {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" && self.len == 0 {
            let _ = write!(self, "{value:?}");
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" if self.len == 0 => {
                let _ = self.write_str(value);
            }
            "log.target" => self.from_pingora_proxy = value.starts_with(PINGORA_PROXY),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora::Error;

    /// pingora's line for `e`, as `handle_new_request` formats it.
    fn line(e: &Error) -> String {
        format!("{FAIL_TO_PROXY}{e}, downstream session type: HTTP/1.1")
    }

    #[test]
    fn takes_exactly_downstream_closes_and_resets_mid_head() {
        let mut closed = Error::explain(
            ErrorType::ConnectionClosed,
            "while reading request headers, bytes already read: 5",
        );
        closed.as_down();
        assert!(client_closed_head(&line(&closed)));
        let mut reset = Error::because(
            ErrorType::ReadError,
            "while reading request headers",
            std::io::Error::from(std::io::ErrorKind::ConnectionReset),
        );
        reset.as_down();
        assert!(client_closed_head(&line(&reset)));
        // No context at all: the type ends at the comma pingora appends.
        let mut bare = Error::new(ErrorType::ConnectionClosed);
        bare.as_down();
        assert!(client_closed_head(&line(&bare)));

        // Other sources or types are errors an operator may need to see.
        let mut upstream = Error::new(ErrorType::ConnectionClosed);
        upstream.as_up();
        assert!(!client_closed_head(&line(&upstream)));
        let mut write = Error::new(ErrorType::WriteError);
        write.as_down();
        assert!(!client_closed_head(&line(&write)));
        let mut invalid = Error::new(ErrorType::InvalidHTTPHeader);
        invalid.as_down();
        assert!(!client_closed_head(&line(&invalid)));
        assert!(!client_closed_head(&format!("something else: {closed}")));
    }
}
