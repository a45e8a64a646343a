//! Freshness and age (RFC 9111 §4.2): how long a stored response is fresh, and how old it
//! already was when it arrived.
//!
//! Pingora's meta measures age from one timestamp (`created`/`updated`) and freshness as an
//! absolute `fresh_until`. We set that timestamp to the response's *epoch*: the receipt time
//! minus its corrected initial age (§4.2.3), so `Age` on every hit is the RFC's current_age
//! (`corrected_initial_age + resident_time`) and `fresh_until = epoch + freshness_lifetime`
//! compares exactly like `freshness_lifetime > current_age` (§4.2).

use http::header::{AGE, DATE, EXPIRES};
use http::HeaderMap;
use pingora::cache::cache_control::CacheControl;
use std::time::{Duration, SystemTime};

/// Largest `Age` we represent (§1.2.2: delta-seconds overflow is sent as 2^31).
const MAX_DELTA_SECONDS: u64 = 1 << 31;

/// When the request went to the origin and when its response arrived (§4.2.3
/// `request_time` / `response_time`).
#[derive(Debug, Clone, Copy)]
pub struct Exchange {
    /// Just before the request was sent upstream.
    pub request_time: SystemTime,
    /// When the response header was received.
    pub response_time: SystemTime,
}

/// A single HTTP-date header value; `None` if absent, repeated or not a valid date.
fn date_header(headers: &HeaderMap, name: http::HeaderName) -> Option<SystemTime> {
    let mut all = headers.get_all(name).iter();
    let (Some(v), None) = (all.next(), all.next()) else {
        return None;
    };
    httpdate::parse_http_date(v.to_str().ok()?).ok()
}

/// The `Age` value (§5.1): delta-seconds; the first value if repeated, ignored if invalid.
fn age_value(headers: &HeaderMap) -> Duration {
    let secs = headers
        .get(AGE)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
        .map_or(0, |v| v.parse::<u64>().unwrap_or(MAX_DELTA_SECONDS));
    Duration::from_secs(secs.min(MAX_DELTA_SECONDS))
}

/// `corrected_initial_age` (§4.2.3): the larger of the apparent age (receipt time minus
/// `Date`, never negative) and the upstream `Age` plus the response delay. A `Date` ahead of
/// our clock counts as no apparent age; one behind it makes the response older, as the RFC
/// computes it.
pub fn initial_age(headers: &HeaderMap, ex: Exchange) -> Duration {
    let apparent = date_header(headers, DATE)
        .and_then(|d| ex.response_time.duration_since(d).ok())
        .unwrap_or_default();
    let delay = ex
        .response_time
        .duration_since(ex.request_time)
        .unwrap_or_default();
    apparent.max(age_value(headers) + delay)
}

/// The explicit freshness lifetime for a shared cache (§4.2.1): `s-maxage`, else `max-age`,
/// else `Expires − Date` (our receipt time when `Date` is missing). `None` when the response
/// has none (heuristic freshness or a route default may then apply).
///
/// Conservative readings the RFC allows or requires: `no-cache` (without field names) is a
/// zero lifetime, so the stored response is revalidated on every use (§5.2.2.4); an invalid
/// or repeated `max-age`/`s-maxage` makes the response stale (§4.2.1: "considered stale");
/// an invalid or repeated `Expires` is a time in the past (§5.3).
///
/// `field` is the header `cc` was parsed from (`Cache-Control`, or a targeted field).
pub fn lifetime(
    cc: Option<&CacheControl>,
    field: &http::HeaderName,
    headers: &HeaderMap,
    ex: Exchange,
) -> Option<Duration> {
    if let Some(cc) = cc {
        if cc.no_cache() {
            return Some(Duration::ZERO);
        }
        for (key, parsed) in [("s-maxage", cc.s_maxage()), ("max-age", cc.max_age())] {
            if cc.has_key(key) {
                return Some(match parsed {
                    Ok(Some(s)) if !repeated(headers, field, key) => {
                        Duration::from_secs(u64::from(s))
                    }
                    _ => Duration::ZERO,
                });
            }
        }
    }
    if !headers.contains_key(EXPIRES) {
        return None;
    }
    let Some(expires) = date_header(headers, EXPIRES) else {
        return Some(Duration::ZERO);
    };
    let date = date_header(headers, DATE).unwrap_or(ex.response_time);
    Some(expires.duration_since(date).unwrap_or_default())
}

/// A heuristic lifetime (§4.2.2): `percent` of the time between `Last-Modified` and `Date`
/// (our receipt time when `Date` is missing), at most `max`. `None` without a valid
/// `Last-Modified` not after `Date`.
pub fn heuristic(headers: &HeaderMap, ex: Exchange, h: crate::rfc::Heuristic) -> Option<Duration> {
    let modified = date_header(headers, http::header::LAST_MODIFIED)?;
    let date = date_header(headers, DATE).unwrap_or(ex.response_time);
    let since = date.duration_since(modified).ok()?;
    Some((since * h.percent / 100).min(h.max))
}

/// Whether the directive `key` appears more than once across the `field` lines.
fn repeated(headers: &HeaderMap, field: &http::HeaderName, key: &str) -> bool {
    headers
        .get_all(field)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter(|d| {
            d.split('=')
                .next()
                .is_some_and(|n| n.trim().eq_ignore_ascii_case(key))
        })
        .count()
        > 1
}

/// (`epoch`, `fresh_until`) for pingora's meta: `epoch` is the receipt time minus the
/// corrected initial age; `fresh_until` is `epoch + lifetime`, one second before the epoch
/// for a zero lifetime so the response is stale from the moment it is stored.
pub fn meta_times(
    initial_age: Duration,
    lifetime: Duration,
    ex: Exchange,
) -> (SystemTime, SystemTime) {
    let epoch = ex
        .response_time
        .checked_sub(initial_age)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let fresh_until = if lifetime.is_zero() {
        epoch.checked_sub(Duration::from_secs(1)).unwrap_or(epoch)
    } else {
        epoch
            .checked_add(lifetime)
            .unwrap_or(epoch + Duration::from_secs(MAX_DELTA_SECONDS))
    };
    (epoch, fresh_until)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(h: &[(&'static str, String)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in h {
            m.append(*k, http::HeaderValue::from_str(v).unwrap()); // unwrap: test-only
        }
        m
    }

    fn at(now: SystemTime, delay: u64) -> Exchange {
        Exchange {
            request_time: now - Duration::from_secs(delay),
            response_time: now,
        }
    }

    fn date(t: SystemTime) -> String {
        httpdate::fmt_http_date(t)
    }

    #[test]
    fn initial_age_is_the_larger_of_apparent_and_corrected_age() {
        let now = SystemTime::now();
        let s = Duration::from_secs;
        // Upstream Age plus the response delay.
        let h = headers(&[("age", "100".into()), ("date", date(now))]);
        assert_eq!(initial_age(&h, at(now, 2)).as_secs(), 102);
        // A Date an hour behind our clock: apparent age wins.
        let h = headers(&[("age", "10".into()), ("date", date(now - s(3600)))]);
        assert_eq!(initial_age(&h, at(now, 0)).as_secs(), 3600);
        // A Date in the future is no negative age.
        let h = headers(&[("date", date(now + s(3600)))]);
        assert_eq!(initial_age(&h, at(now, 0)), Duration::ZERO);
        // Invalid Age is ignored; overflow saturates at 2^31.
        let h = headers(&[("age", "-5".into())]);
        assert_eq!(initial_age(&h, at(now, 0)), Duration::ZERO);
        let h = headers(&[("age", "99999999999999999999".into())]);
        assert_eq!(initial_age(&h, at(now, 0)).as_secs(), 1 << 31);
    }

    #[test]
    fn lifetime_prefers_s_maxage_then_max_age_then_expires_minus_date() {
        let now = SystemTime::now();
        let s = Duration::from_secs;
        let life = |h: &[(&'static str, String)]| {
            let h = headers(h);
            let mut r = pingora::http::ResponseHeader::build(200, None).unwrap(); // unwrap: test-only
            for (k, v) in h.iter() {
                r.append_header(k.clone(), v.clone()).unwrap(); // unwrap: test-only
            }
            let cc = CacheControl::from_resp_headers(&r);
            lifetime(cc.as_ref(), &http::header::CACHE_CONTROL, &h, at(now, 0))
        };
        assert_eq!(
            life(&[("cache-control", "max-age=10, s-maxage=20".into())]),
            Some(s(20))
        );
        assert_eq!(
            life(&[
                ("cache-control", "max-age=10".into()),
                ("expires", date(now + s(999)))
            ]),
            Some(s(10))
        );
        // Expires − Date does not depend on our clock: an origin an hour behind still gives 60s.
        assert_eq!(
            life(&[
                ("date", date(now - s(3600))),
                ("expires", date(now - s(3540)))
            ]),
            Some(s(60))
        );
        assert_eq!(life(&[("expires", "0".into())]), Some(Duration::ZERO));
        assert_eq!(
            life(&[("cache-control", "max-age=abc".into())]),
            Some(Duration::ZERO)
        );
        assert_eq!(
            life(&[("cache-control", "max-age=5, max-age=50".into())]),
            Some(Duration::ZERO)
        );
        assert_eq!(
            life(&[("cache-control", "no-cache, max-age=60".into())]),
            Some(Duration::ZERO)
        );
        assert_eq!(life(&[("cache-control", "public".into())]), None);
        assert_eq!(life(&[]), None);
    }

    #[test]
    fn meta_times_make_age_and_freshness_compare_like_the_rfc() {
        let now = SystemTime::now();
        let s = Duration::from_secs;
        let (epoch, until) = meta_times(s(50), s(60), at(now, 0));
        assert_eq!(now.duration_since(epoch).unwrap(), s(50)); // unwrap: test-only
        assert!(until > now && until <= now + s(10));
        let (_, until) = meta_times(s(70), s(60), at(now, 0));
        assert!(
            until < now,
            "current age past the lifetime: stale on arrival"
        );
        let (epoch, until) = meta_times(Duration::ZERO, Duration::ZERO, at(now, 0));
        assert!(until < epoch);
    }
}
