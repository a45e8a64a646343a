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

use crate::metrics::{ClientClosedPhase, METRICS};
use std::fmt::{self, Write as _};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// Default filter when `RUST_LOG` is unset.
pub const DEFAULT_FILTER: &str = "warn,pingora_cache::meta=error";

/// The `pingora_proxy` error lines that mean "the client went away before its request head
/// was complete" (its `Error` display: source, then type).
const CLIENT_CLOSED_PREFIXES: [&str; 2] = [
    "Fail to proxy: Downstream ConnectionClosed",
    "Fail to proxy: Downstream ReadError",
];

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
        if (bridged && !head.from_pingora_proxy)
            || !CLIENT_CLOSED_PREFIXES.iter().any(|p| text.starts_with(p))
        {
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
