//! Signed media URLs: `/media/<sha256>?exp=<unix seconds>&sig=<hex HMAC-SHA256(key,
//! "<sha256>.<exp>")>`.
//!
//! A media URL that leaks (a forwarded screenshot, a Referer, a log line) stops working at
//! `exp`. `exp` is rounded up to a multiple of the window so the same object gets the same
//! URL for a while and browsers can cache it: a URL is valid at least one window and less
//! than two. Keys come from the environment only ([`KEYS_ENV`], comma-separated): the first
//! signs, every key verifies, so a key is rotated by prepending the new one, waiting two
//! windows, then dropping the old one. The edge (`proxy/src/signing.rs`) verifies the same
//! way with the same keys.
//!
//! Every function takes the current time as an argument so tests control the clock.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Environment variable holding the signing keys, comma-separated; the first signs.
pub const KEYS_ENV: &str = "KOMORA_MEDIA_SIGNING_KEYS";
/// Shortest accepted key, bytes (a key is used as its UTF-8 bytes).
pub const MIN_KEY_LEN: usize = 32;
/// Default window, seconds: a URL is valid at least one day and less than two.
pub const DEFAULT_WINDOW_SECS: u64 = 86_400;

type HmacSha256 = Hmac<Sha256>;

/// Why a media request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// `exp` or `sig` missing or not well-formed.
    Unsigned,
    /// `exp` is in the past.
    Expired,
    /// No key produces this signature.
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

/// Signs and verifies media URLs. `Debug` never prints the keys.
#[derive(Clone)]
pub struct MediaSigner {
    keys: Vec<Vec<u8>>,
    window: u64,
}

impl std::fmt::Debug for MediaSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaSigner")
            .field("keys", &self.keys.len())
            .field("window", &self.window)
            .finish()
    }
}

/// Parses the comma-separated key list of [`KEYS_ENV`]; blanks around keys are ignored.
/// Errors say which key is wrong, never its value.
pub fn parse_keys(list: &str) -> Result<Vec<Vec<u8>>, String> {
    let keys: Vec<&str> = list
        .split(',')
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .collect();
    if keys.is_empty() {
        return Err("no key (expected comma-separated keys; the first signs)".into());
    }
    for (i, k) in keys.iter().enumerate() {
        if k.len() < MIN_KEY_LEN {
            return Err(format!(
                "key {} is {} bytes; use at least {MIN_KEY_LEN} (e.g. `openssl rand -hex 32`)",
                i + 1,
                k.len()
            ));
        }
    }
    Ok(keys.into_iter().map(|k| k.as_bytes().to_vec()).collect())
}

impl MediaSigner {
    /// A signer over `keys` (non-empty; the first signs) with a `window` of seconds (> 0).
    pub fn new(keys: Vec<Vec<u8>>, window: u64) -> MediaSigner {
        MediaSigner {
            keys,
            window: window.max(1),
        }
    }

    /// The expiry of a URL made at `now`: `now + window` rounded up to a multiple of the
    /// window, so it is the same for every URL made within one window.
    pub fn expiry(&self, now: u64) -> u64 {
        now.saturating_add(self.window)
            .div_ceil(self.window)
            .saturating_mul(self.window)
    }

    fn mac(key: &[u8], sha256: &str, exp: u64) -> HmacSha256 {
        // new_from_slice accepts any key length for HMAC; the fallback is never taken.
        let mut mac = HmacSha256::new_from_slice(key)
            .unwrap_or_else(|_| HmacSha256::new(&Default::default()));
        mac.update(sha256.as_bytes());
        mac.update(b".");
        mac.update(exp.to_string().as_bytes());
        mac
    }

    /// Hex HMAC-SHA256 of `"<sha256>.<exp>"` with the signing (first) key.
    pub fn sign(&self, sha256: &str, exp: u64) -> String {
        let key = self.keys.first().map_or(&[][..], Vec::as_slice);
        hex::encode(Self::mac(key, sha256, exp).finalize().into_bytes())
    }

    /// The query string (`exp=…&sig=…`) of the URL of `sha256` made at `now`.
    pub fn query(&self, sha256: &str, now: u64) -> String {
        let exp = self.expiry(now);
        format!("exp={exp}&sig={}", self.sign(sha256, exp))
    }

    /// Checks the `exp` and `sig` of a request for `sha256` at `now` (constant-time compare
    /// against each key).
    pub fn verify(
        &self,
        sha256: &str,
        exp: Option<&str>,
        sig: Option<&str>,
        now: u64,
    ) -> Result<(), Denied> {
        let (Some(exp), Some(sig)) = (exp, sig) else {
            return Err(Denied::Unsigned);
        };
        let exp_ok = !exp.is_empty() && exp.len() <= 20 && exp.bytes().all(|b| b.is_ascii_digit());
        let Some(exp_n) = exp_ok.then(|| exp.parse::<u64>().ok()).flatten() else {
            return Err(Denied::Unsigned);
        };
        let Some(sig) = (sig.len() == 64).then(|| hex::decode(sig).ok()).flatten() else {
            return Err(Denied::Unsigned);
        };
        if exp_n <= now {
            return Err(Denied::Expired);
        }
        // The signed text is the canonical decimal; `exp=0123` is not what was signed.
        if exp_n.to_string() != exp {
            return Err(Denied::BadSignature);
        }
        let ok = self
            .keys
            .iter()
            .any(|k| Self::mac(k, sha256, exp_n).verify_slice(&sig).is_ok());
        if ok {
            Ok(())
        } else {
            Err(Denied::BadSignature)
        }
    }
}

/// Seconds since the Unix epoch now (0 if the clock is before it): the origin's one clock,
/// `crate::db::now_ms`, in seconds.
pub fn unix_now() -> u64 {
    u64::try_from(crate::db::now_ms().div_euclid(1000)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer(window: u64) -> MediaSigner {
        MediaSigner::new(vec![b"k".repeat(32)], window)
    }

    #[test]
    fn expiry_is_at_least_one_window_and_less_than_two() {
        let s = signer(100);
        assert_eq!(s.expiry(1000), 1100);
        assert_eq!(s.expiry(1001), 1200);
        assert_eq!(s.expiry(1099), 1200);
        for now in 1000..1300 {
            let left = s.expiry(now) - now;
            assert!((100..200).contains(&left), "{now}: {left}");
        }
    }

    #[test]
    fn keys_are_checked_without_echoing_them() {
        assert!(parse_keys(" , ").is_err());
        let e = parse_keys(&format!("{},short", "a".repeat(32))).unwrap_err();
        assert!(e.contains("key 2") && !e.contains("short"), "{e}");
        assert_eq!(parse_keys(&"a".repeat(40)).map(|k| k.len()), Ok(1));
    }
}
