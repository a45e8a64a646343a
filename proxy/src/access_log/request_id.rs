//! The request id of an access log line (and of the origin request): a sane client
//! `X-Request-Id` is kept, otherwise one is generated from a process prefix and a counter.

use http::HeaderValue;
use once_cell::sync::Lazy;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

/// Longest client `X-Request-Id` kept as is; longer ones are replaced by a generated id.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// A request's id: the client's own when it sent a sane one, else generated on demand.
#[derive(Debug, Clone)]
pub enum RequestId {
    /// The client's `X-Request-Id`, checked by [`RequestId::from_client`].
    Client(HeaderValue),
    /// Generated: this process's prefix and a counter.
    Generated(u64),
}

/// Process-unique prefix for generated ids: start time and pid, so ids from two processes
/// (an old and a new one across an upgrade) do not collide.
static ID_PREFIX: Lazy<String> = Lazy::new(|| {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mixed = nanos.rotate_left(17) ^ u64::from(std::process::id()).wrapping_mul(0x9e37_79b9);
    format!("{:08x}", mixed as u32)
});
static ID_COUNTER: AtomicU64 = AtomicU64::new(1);
/// Hex digits of a generated id's counter part.
const GENERATED_ID_DIGITS: u32 = 12;

impl RequestId {
    /// The client's id if it is 1..=[`MAX_REQUEST_ID_LEN`] bytes of `[A-Za-z0-9._:+/=-]`
    /// (safe to log and to forward), else `None`.
    pub fn from_client(v: &HeaderValue) -> Option<Self> {
        let b = v.as_bytes();
        let sane = !b.is_empty()
            && b.len() <= MAX_REQUEST_ID_LEN
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || b"._:+/=-".contains(c));
        sane.then(|| RequestId::Client(v.clone()))
    }

    /// A new process-unique id.
    pub fn generate() -> Self {
        RequestId::Generated(ID_COUNTER.fetch_add(1, Ordering::Relaxed))
    }

    /// The id as a header value (for the origin request).
    pub fn header_value(&self) -> HeaderValue {
        match self {
            RequestId::Client(v) => v.clone(),
            // Hex digits and '-' only: always a valid header value.
            RequestId::Generated(_) => {
                HeaderValue::from_str(&self.to_string()).unwrap_or(HeaderValue::from_static("-"))
            }
        }
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestId::Client(v) => f.write_str(v.to_str().unwrap_or("-")),
            RequestId::Generated(_) => {
                let mut s = Vec::with_capacity(24);
                push_request_id(&mut s, self);
                f.write_str(std::str::from_utf8(&s).unwrap_or("-"))
            }
        }
    }
}

/// `n` as exactly `width` lowercase hex digits (its low `4 * width` bits).
pub(super) fn push_hex(out: &mut Vec<u8>, n: u64, width: u32) {
    for shift in (0..width).rev() {
        let nibble = (n >> (shift * 4)) & 0xf;
        out.push(b"0123456789abcdef"[nibble as usize]);
    }
}

pub(super) fn push_request_id(out: &mut Vec<u8>, id: &RequestId) {
    match id {
        // Checked by `from_client`: nothing that needs escaping.
        RequestId::Client(v) => out.extend_from_slice(v.as_bytes()),
        RequestId::Generated(n) => {
            out.extend_from_slice(ID_PREFIX.as_bytes());
            out.push(b'-');
            push_hex(out, *n, GENERATED_ID_DIGITS);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids_are_kept_only_when_sane() {
        let ok = HeaderValue::from_static("req-42.a:b");
        assert!(RequestId::from_client(&ok).is_some());
        for bad in [
            "",
            "has space",
            "quote\"",
            &"x".repeat(MAX_REQUEST_ID_LEN + 1),
        ] {
            let v = HeaderValue::from_str(bad).unwrap(); // unwrap: test-only
            assert!(RequestId::from_client(&v).is_none(), "{bad:?}");
        }
        let (a, b) = (RequestId::generate(), RequestId::generate());
        assert_ne!(a.to_string(), b.to_string());
    }
}
