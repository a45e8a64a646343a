//! Signed media URLs at the edge: on a route with `signed_urls = true`, a request needs
//! `?exp=<unix seconds>&sig=<hex HMAC-SHA256(key, "<last path segment>.<exp>")>`, the URL
//! the origin hands out (`origin/src/media/signing.rs`), checked before any cache lookup or
//! origin request. Unsigned, expired or tampered requests get a JSON 403.
//!
//! Keys come from the environment (`signing_keys_env`, default [`DEFAULT_KEYS_ENV`]):
//! comma-separated, at least [`MIN_KEY_LEN`] bytes each, every key verifies (the origin signs
//! with the first). The edge only verifies; it never signs.
//!
//! A verified request is cached under its path alone (`cache_key_query = "none"`), so every
//! signature of one object shares one entry, while the miss goes to the origin with the
//! request's own signed URL (the origin verifies too). The browser is told
//! `Cache-Control: private, max-age=<seconds until exp>`, never the route's public max-age.

use hmac::{Hmac, Mac};
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use sha2::Sha256;

/// Default environment variable holding the keys (the origin reads the same one).
pub const DEFAULT_KEYS_ENV: &str = "KOMORA_MEDIA_SIGNING_KEYS";
/// Shortest accepted key, bytes (a key is used as its UTF-8 bytes).
pub const MIN_KEY_LEN: usize = 32;

type HmacSha256 = Hmac<Sha256>;

/// Why a request is refused.
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
    /// The message the client sees.
    pub fn message(self) -> &'static str {
        match self {
            Denied::Unsigned => "media URL is not signed (exp and sig required)",
            Denied::Expired => "media URL has expired",
            Denied::BadSignature => "media URL signature is invalid",
        }
    }
}

/// The keys of one signed route. `Debug` shows how many, never the keys.
#[derive(Clone)]
pub struct UrlVerifier {
    keys: Vec<Vec<u8>>,
    /// The variable the keys came from, for messages.
    pub env: String,
}

impl std::fmt::Debug for UrlVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UrlVerifier")
            .field("keys", &self.keys.len())
            .field("env", &self.env)
            .finish()
    }
}

impl UrlVerifier {
    /// Keys from `value` (the content of variable `env`; `None` or blank: no keys, nothing
    /// verifies, and the edge refuses to start, see [`UrlVerifier::has_keys`]). Errors say
    /// which key is wrong, never its value.
    pub fn from_value(env: &str, value: Option<&str>) -> Result<UrlVerifier, String> {
        let keys: Vec<&str> = value
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .collect();
        for (i, k) in keys.iter().enumerate() {
            if k.len() < MIN_KEY_LEN {
                return Err(format!(
                    "{env}: key {} is {} bytes; use at least {MIN_KEY_LEN} \
                     (e.g. `openssl rand -hex 32`)",
                    i + 1,
                    k.len()
                ));
            }
        }
        Ok(UrlVerifier {
            keys: keys.into_iter().map(|k| k.as_bytes().to_vec()).collect(),
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
        let object = path.rsplit('/').next().unwrap_or("");
        let (mut exp, mut sig) = (None, None);
        for pair in query.unwrap_or("").split('&') {
            match pair.split_once('=') {
                Some(("exp", v)) if exp.is_none() => exp = Some(v),
                Some(("sig", v)) if sig.is_none() => sig = Some(v),
                _ => {}
            }
        }
        let (Some(exp), Some(sig)) = (exp, sig) else {
            return Err(Denied::Unsigned);
        };
        let digits = !exp.is_empty() && exp.len() <= 20 && exp.bytes().all(|b| b.is_ascii_digit());
        let Some(exp_n) = digits.then(|| exp.parse::<u64>().ok()).flatten() else {
            return Err(Denied::Unsigned);
        };
        let Some(sig) = (sig.len() == 64).then(|| hex::decode(sig).ok()).flatten() else {
            return Err(Denied::Unsigned);
        };
        if exp_n <= now {
            return Err(Denied::Expired);
        }
        // Only the canonical decimal was signed (`exp=0123` is another text).
        if object.is_empty() || exp_n.to_string() != exp {
            return Err(Denied::BadSignature);
        }
        let good = self.keys.iter().any(|key| {
            HmacSha256::new_from_slice(key).is_ok_and(|mut mac| {
                mac.update(object.as_bytes());
                mac.update(b".");
                mac.update(exp.as_bytes());
                // Constant-time comparison.
                mac.verify_slice(&sig).is_ok()
            })
        });
        if good {
            Ok(exp_n)
        } else {
            Err(Denied::BadSignature)
        }
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

/// Seconds since the Unix epoch now.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(key: &str, object: &str, exp: u64) -> String {
        let mut mac = HmacSha256::new_from_slice(key.as_bytes()).unwrap(); // unwrap: test-only, HMAC takes any key length
        mac.update(format!("{object}.{exp}").as_bytes());
        hex::encode(mac.finalize().into_bytes())
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
