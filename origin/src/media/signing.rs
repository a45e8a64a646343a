//! Signed media URLs on the origin: `/media/<sha256>?exp=<unix seconds>&sig=<hex
//! HMAC-SHA256(key, "<sha256>.<exp>")>`, made by [`MediaSigner::query`] for every media URL
//! the API hands out and checked by `serve.rs` before an object is looked up.
//!
//! The format, the key ring (first key signs, every key verifies: rotate by prepending the
//! new key, dropping the old one two windows later) and the window rounding live in the
//! `komora-signing` crate, which the edge (`proxy/src/signing.rs`) verifies with too; this
//! module adds the origin's window. Every function takes the current time as an argument so
//! tests control the clock.

pub use komora_signing::{unix_now, Denied, KeyRing, DEFAULT_WINDOW_SECS, KEYS_ENV, MIN_KEY_LEN};

/// Signs and verifies media URLs with a window. `Debug` never prints the keys.
#[derive(Debug, Clone)]
pub struct MediaSigner {
    keys: KeyRing,
    window: u64,
}

/// Parses the comma-separated key list of [`KEYS_ENV`]; blanks around keys are ignored, and
/// at least one key is required. Errors say which key is wrong, never its value.
pub fn parse_keys(list: &str) -> Result<KeyRing, String> {
    KeyRing::parse_non_empty(list).map_err(|e| e.to_string())
}

impl MediaSigner {
    /// A signer over `keys` (non-empty; the first signs) with a `window` of seconds (0
    /// counts as 1).
    pub fn new(keys: KeyRing, window: u64) -> MediaSigner {
        MediaSigner {
            keys,
            window: window.max(1),
        }
    }

    /// The expiry of a URL made at `now`: `now + window` rounded up to a multiple of the
    /// window, so it is the same for every URL made within one window.
    pub fn expiry(&self, now: u64) -> u64 {
        komora_signing::expiry(now, self.window)
    }

    /// Hex HMAC-SHA256 of `"<sha256>.<exp>"` with the signing (first) key.
    pub fn sign(&self, sha256: &str, exp: u64) -> String {
        self.keys.sign(sha256, exp)
    }

    /// The query string (`exp=…&sig=…`) of the URL of `sha256` made at `now`.
    pub fn query(&self, sha256: &str, now: u64) -> String {
        self.keys.query(sha256, self.expiry(now))
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
        self.keys.verify(sha256, exp, sig, now).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_made_in_one_window_repeat_and_verify() {
        let s = MediaSigner::new(parse_keys(&"k".repeat(32)).unwrap(), 100); // unwrap: test-only
        assert_eq!(s.query("abc", 1001), s.query("abc", 1099));
        let q = s.query("abc", 1001);
        let (exp, sig) = komora_signing::signature_params(Some(&q));
        assert_eq!(exp, Some("1200"));
        assert_eq!(s.verify("abc", exp, sig, 1199), Ok(()));
        assert_eq!(s.verify("abc", exp, sig, 1200), Err(Denied::Expired));
    }

    #[test]
    fn keys_are_checked_without_echoing_them() {
        assert!(parse_keys(" , ").is_err());
        let e = parse_keys(&format!("{},short", "a".repeat(32))).unwrap_err();
        assert!(e.contains("key 2") && !e.contains("short"), "{e}");
        assert_eq!(parse_keys(&"a".repeat(40)).map(|k| k.len()), Ok(1));
    }
}
