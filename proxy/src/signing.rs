//! Signed media URLs at the edge: on a route with `signed_urls = true`, a request needs
//! `?exp=<unix seconds>&sig=<hex HMAC-SHA256(key, "<last path segment>.<exp>")>`, the URL
//! the origin hands out (`origin/src/media/signing.rs`), checked before any cache lookup or
//! origin request. Unsigned, expired or tampered requests get a JSON 403.
//!
//! Keys come from the environment (`signing_keys_env`, default [`DEFAULT_KEYS_ENV`]):
//! comma-separated, at least [`MIN_KEY_LEN`] bytes each, every key verifies (the origin signs
//! with the first). The edge only verifies; it never signs. The format and the key ring are
//! the `komora-signing` crate's, shared with the origin; this module adds the edge's side
//! (a route's verifier, the 403 it writes, the browser's `Cache-Control`).
//!
//! A verified request is cached under its path alone (`cache_key_query = "none"`), so every
//! signature of one object shares one entry, while the miss goes to the origin with the
//! request's own signed URL (the origin verifies too). The browser is told
//! `Cache-Control: private, max-age=<seconds until exp>`, never the route's public max-age.

use pingora::http::ResponseHeader;
use pingora::proxy::Session;

// The edge's one clock (`crate::clock`), re-exported for the checks callers make here.
pub use crate::clock::unix_now;
pub use komora_signing::{Denied, MIN_KEY_LEN};

/// Default environment variable holding the keys (the origin reads the same one).
pub const DEFAULT_KEYS_ENV: &str = komora_signing::KEYS_ENV;

/// The keys of one signed route. `Debug` shows how many, never the keys.
#[derive(Debug, Clone)]
pub struct UrlVerifier {
    keys: komora_signing::KeyRing,
    /// The variable the keys came from, for messages.
    pub env: String,
}

impl UrlVerifier {
    /// Keys from `value` (the content of variable `env`; `None` or blank: no keys, nothing
    /// verifies, and the edge refuses to start, see [`UrlVerifier::has_keys`]). Errors say
    /// which key is wrong, never its value.
    pub fn from_value(env: &str, value: Option<&str>) -> Result<UrlVerifier, String> {
        let keys = komora_signing::KeyRing::parse(value.unwrap_or(""))
            .map_err(|e| format!("{env}: {e}"))?;
        Ok(UrlVerifier {
            keys,
            env: env.to_string(),
        })
    }

    /// Whether any key is configured.
    pub fn has_keys(&self) -> bool {
        !self.keys.is_empty()
    }

    /// Checks a request for `path` with `query` at `now` (Unix seconds): the signed object
    /// is the last path segment. Returns `exp` when the signature is good.
    pub fn verify(&self, path: &str, query: Option<&str>, now: u64) -> Result<u64, Denied> {
        let (exp, sig) = komora_signing::signature_params(query);
        self.keys
            .verify(komora_signing::object_of(path), exp, sig, now)
    }
}

/// `Cache-Control` for a verified signed response: private, fresh until the URL expires.
pub fn apply_private_until(resp: &mut ResponseHeader, exp: u64, now: u64) -> pingora::Result<()> {
    if !matches!(resp.status.as_u16(), 200 | 206 | 304) {
        return Ok(());
    }
    resp.insert_header(
        http::header::CACHE_CONTROL,
        format!("private, max-age={}", exp.saturating_sub(now)),
    )?;
    resp.remove_header(&http::header::EXPIRES);
    Ok(())
}

/// Answers a refused request: 403 with a JSON body, never stored.
pub async fn write_denied(session: &mut Session, why: Denied) -> pingora::Result<()> {
    let body = serde_json::json!({ "error": why.message() }).to_string();
    let mut resp = ResponseHeader::build(403, Some(4))?;
    resp.insert_header(http::header::CONTENT_TYPE, "application/json")?;
    resp.insert_header(http::header::CONTENT_LENGTH, body.len())?;
    resp.insert_header(http::header::CACHE_CONTROL, "no-store")?;
    resp.insert_header(
        "x-cache-status",
        crate::cache_status::CacheStatus::Bypass.as_str(),
    )?;
    session.write_response_header(Box::new(resp), false).await?;
    session
        .write_response_body(Some(bytes::Bytes::from(body)), true)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(key: &str, object: &str, exp: u64) -> String {
        komora_signing::KeyRing::parse(key)
            .unwrap() // unwrap: test-only
            .sign(object, exp)
    }

    #[test]
    fn verifies_exp_and_sig_against_every_key() {
        let (k1, k2) = ("a".repeat(32), "b".repeat(40));
        let v = UrlVerifier::from_value("K", Some(&format!("{k1} , {k2}"))).unwrap(); // unwrap: test-only
        let path = "/media/abc";
        let q = |key: &str, exp: u64| format!("exp={exp}&sig={}", sign(key, "abc", exp));
        assert_eq!(v.verify(path, Some(&q(&k1, 200)), 100), Ok(200));
        assert_eq!(
            v.verify(path, Some(&format!("cb=1&{}", q(&k2, 200))), 100),
            Ok(200)
        );
        assert_eq!(
            v.verify(path, Some(&q(&k1, 100)), 100),
            Err(Denied::Expired)
        );
        assert_eq!(v.verify(path, None, 100), Err(Denied::Unsigned));
        assert_eq!(
            v.verify(path, Some(&q(&"c".repeat(32), 200)), 100),
            Err(Denied::BadSignature)
        );
        assert_eq!(
            v.verify("/media/abd", Some(&q(&k1, 200)), 100),
            Err(Denied::BadSignature)
        );
    }

    #[test]
    fn short_keys_are_refused_without_echoing_them() {
        let e = UrlVerifier::from_value("K", Some(&format!("{},tiny", "a".repeat(32))));
        let e = e.unwrap_err();
        assert!(e.contains("key 2") && !e.contains("tiny"), "{e}");
        assert!(!UrlVerifier::from_value("K", None).unwrap().has_keys()); // unwrap: test-only
    }
}
