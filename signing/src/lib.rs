//! Signed, expiring media URLs, the one format the origin (which signs and verifies) and the
//! edge (which verifies) share:
//!
//! `/media/<object>?exp=<unix seconds>&sig=<hex HMAC-SHA256(key, "<object>.<exp>")>`
//!
//! where `<object>` is the last path segment (the media's sha256) and `<exp>` is the
//! canonical decimal of the expiry. A URL that leaks (a forwarded screenshot, a Referer, a
//! log line) stops working at `exp`.
//!
//! - [`KeyRing`]: the keys from [`KEYS_ENV`] (comma-separated, at least [`MIN_KEY_LEN`] bytes
//!   each): the first signs, every key verifies, so a key is rotated by prepending the new
//!   one, waiting two windows, then dropping the old one.
//! - [`expiry`]: `exp` rounded up to a multiple of a window, so one object has one URL for a
//!   while and browsers can cache it (valid at least one window, less than two).
//! - [`signature_params`]: `exp` and `sig` of a raw query string.
//!
//! Every function takes the current time as an argument so callers' tests control the clock.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Environment variable holding the signing keys, comma-separated; the first signs.
pub const KEYS_ENV: &str = "KOMORA_MEDIA_SIGNING_KEYS";
/// Shortest accepted key, bytes (a key is used as its UTF-8 bytes).
pub const MIN_KEY_LEN: usize = 32;
/// Default window, seconds: a URL is valid at least one day and less than two.
pub const DEFAULT_WINDOW_SECS: u64 = 86_400;
/// Length of a signature in hex (HMAC-SHA256).
const SIG_HEX_LEN: usize = 64;
/// Longest accepted `exp` text (u64::MAX has 20 digits).
const MAX_EXP_DIGITS: usize = 20;

type HmacSha256 = Hmac<Sha256>;

/// Why a signed URL is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// `exp` or `sig` missing or not well-formed.
    Unsigned,
    /// `exp` is not in the future.
    Expired,
    /// No key produces this signature (or nothing to sign: an empty object).
    BadSignature,
}

impl Denied {
    /// The message a client sees.
    pub fn message(self) -> &'static str {
        match self {
            Denied::Unsigned => "media URL is not signed (exp and sig required)",
            Denied::Expired => "media URL has expired",
            Denied::BadSignature => "media URL signature is invalid",
        }
    }
}

/// A key list that cannot be used. The message names the key by position, never its value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The list holds no key at all.
    #[error("no key (expected comma-separated keys; the first signs)")]
    Empty,
    /// Key number `index` (1-based) is shorter than [`MIN_KEY_LEN`].
    #[error(
        "key {index} is {len} bytes; use at least {MIN_KEY_LEN} (e.g. `openssl rand -hex 32`)"
    )]
    TooShort {
        /// Position in the list, 1-based.
        index: usize,
        /// Its length in bytes.
        len: usize,
    },
}

/// The signing keys: the first signs, every one verifies. `Debug` shows how many, never the
/// keys. An empty ring verifies nothing and signs nothing useful: callers refuse to start
/// with one where signing is on ([`KeyRing::is_empty`]).
#[derive(Clone, Default)]
pub struct KeyRing {
    keys: Vec<Vec<u8>>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("keys", &self.keys.len())
            .finish()
    }
}

impl KeyRing {
    /// Keys from a comma-separated `list` (blanks around keys and empty members ignored).
    /// A blank list is an empty ring; a key under [`MIN_KEY_LEN`] bytes is an error.
    pub fn parse(list: &str) -> Result<KeyRing, KeyError> {
        let keys: Vec<&str> = list
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .collect();
        for (i, k) in keys.iter().enumerate() {
            if k.len() < MIN_KEY_LEN {
                return Err(KeyError::TooShort {
                    index: i + 1,
                    len: k.len(),
                });
            }
        }
        Ok(KeyRing {
            keys: keys.into_iter().map(|k| k.as_bytes().to_vec()).collect(),
        })
    }

    /// As [`KeyRing::parse`], but a list without any key is an error too.
    pub fn parse_non_empty(list: &str) -> Result<KeyRing, KeyError> {
        let ring = KeyRing::parse(list)?;
        if ring.is_empty() {
            return Err(KeyError::Empty);
        }
        Ok(ring)
    }

    /// A ring over raw keys (the first signs). No length check: for keys already checked.
    pub fn from_keys(keys: Vec<Vec<u8>>) -> KeyRing {
        KeyRing { keys }
    }

    /// Whether the ring holds no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// How many keys the ring holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    fn mac(key: &[u8], object: &str, exp: u64) -> HmacSha256 {
        // HMAC takes a key of any length, so the fallback is never taken.
        let mut mac = HmacSha256::new_from_slice(key)
            .unwrap_or_else(|_| HmacSha256::new(&Default::default()));
        mac.update(object.as_bytes());
        mac.update(b".");
        mac.update(exp.to_string().as_bytes());
        mac
    }

    /// Hex HMAC-SHA256 of `"<object>.<exp>"` with the signing (first) key.
    pub fn sign(&self, object: &str, exp: u64) -> String {
        let key = self.keys.first().map_or(&[][..], Vec::as_slice);
        hex::encode(Self::mac(key, object, exp).finalize().into_bytes())
    }

    /// The query string (`exp=…&sig=…`) of a URL for `object` expiring at `exp`.
    pub fn query(&self, object: &str, exp: u64) -> String {
        format!("exp={exp}&sig={}", self.sign(object, exp))
    }

    /// Checks the `exp` and `sig` of a request for `object` at `now` (Unix seconds), in
    /// constant time against each key. Returns `exp` when the signature is good.
    ///
    /// `exp` must be the canonical decimal that was signed (`0123` is another text) and in
    /// the future; `sig` must be 64 hex digits.
    pub fn verify(
        &self,
        object: &str,
        exp: Option<&str>,
        sig: Option<&str>,
        now: u64,
    ) -> Result<u64, Denied> {
        let (Some(exp), Some(sig)) = (exp, sig) else {
            return Err(Denied::Unsigned);
        };
        let digits = !exp.is_empty()
            && exp.len() <= MAX_EXP_DIGITS
            && exp.bytes().all(|b| b.is_ascii_digit());
        let Some(exp_n) = digits.then(|| exp.parse::<u64>().ok()).flatten() else {
            return Err(Denied::Unsigned);
        };
        let Some(sig) = (sig.len() == SIG_HEX_LEN)
            .then(|| hex::decode(sig).ok())
            .flatten()
        else {
            return Err(Denied::Unsigned);
        };
        if exp_n <= now {
            return Err(Denied::Expired);
        }
        if object.is_empty() || exp_n.to_string() != exp {
            return Err(Denied::BadSignature);
        }
        let good = self
            .keys
            .iter()
            .any(|k| Self::mac(k, object, exp_n).verify_slice(&sig).is_ok());
        if good {
            Ok(exp_n)
        } else {
            Err(Denied::BadSignature)
        }
    }
}

/// The expiry of a URL made at `now` with `window` seconds (0 counts as 1): `now + window`
/// rounded up to a multiple of the window, so every URL made within one window gets the
/// same one, valid at least one window and less than two.
pub fn expiry(now: u64, window: u64) -> u64 {
    let window = window.max(1);
    now.saturating_add(window)
        .div_ceil(window)
        .saturating_mul(window)
}

/// The first `exp` and the first `sig` of a raw query string, as sent (not decoded: a
/// well-formed value has only digits and hex).
pub fn signature_params(query: Option<&str>) -> (Option<&str>, Option<&str>) {
    let (mut exp, mut sig) = (None, None);
    for pair in query.unwrap_or("").split('&') {
        match pair.split_once('=') {
            Some(("exp", v)) if exp.is_none() => exp = Some(v),
            Some(("sig", v)) if sig.is_none() => sig = Some(v),
            _ => {}
        }
    }
    (exp, sig)
}

/// The signed object of a URL path: its last segment.
pub fn object_of(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or("")
}

/// Seconds since the Unix epoch now (0 if the clock is before it).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests;
