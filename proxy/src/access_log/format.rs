//! Access log line formatting: `combined` (nginx's, plus six fields) and `json`, into one
//! reused buffer. Runs on the writer thread only, never on a request's path.

use super::request_id::push_request_id;
use super::{Record, RequestId};
use crate::config::AccessLogFormat;
use http::{HeaderValue, Version};
use std::borrow::Cow;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

fn version_str(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/?",
    }
}

/// Formats lines into one reused buffer; the timestamp text is made once per second.
#[derive(Default)]
pub(super) struct Formatter {
    /// Bytes, not a `String`: the combined line is pushed byte by byte, and a `String` would
    /// re-check UTF-8 for every piece (a measurable share of the writer's work per line).
    line: Vec<u8>,
    /// Unix second the cached texts belong to.
    second: Option<u64>,
    /// `$time_local` of that second.
    local: String,
    /// RFC 3339 UTC of that second, without fraction and zone.
    utc: String,
    scratch: String,
}

impl Formatter {
    pub(super) fn line(&mut self, format: AccessLogFormat, r: &Record) -> &[u8] {
        let since = r
            .time
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        if self.second != Some(since.as_secs()) {
            self.second = Some(since.as_secs());
            let local: chrono::DateTime<chrono::Local> = r.time.into();
            let utc: chrono::DateTime<chrono::Utc> = r.time.into();
            self.local.clear();
            let _ = write!(self.local, "{}", local.format("%d/%b/%Y:%H:%M:%S %z"));
            self.utc.clear();
            let _ = write!(self.utc, "{}", utc.format("%Y-%m-%dT%H:%M:%S"));
        }
        self.line.clear();
        match format {
            AccessLogFormat::Combined => format_combined(&mut self.line, &self.local, r),
            AccessLogFormat::Json => {
                self.scratch.clear();
                let _ = write!(self.scratch, "{}.{:03}Z", self.utc, since.subsec_millis());
                format_json(&mut self.line, &self.scratch, r);
            }
        }
        self.line.push(b'\n');
        &self.line
    }
}

/// Append `bytes` the way nginx escapes log variables: `"`, `\` and bytes outside printable
/// ASCII as `\xHH`, so a client cannot forge fields or lines.
fn push_escaped(out: &mut Vec<u8>, bytes: &[u8]) {
    let plain = |b: u8| b != b'"' && b != b'\\' && (0x20..0x7f).contains(&b);
    if bytes.iter().all(|b| plain(*b)) {
        // The usual case, copied at once.
        out.extend_from_slice(bytes);
        return;
    }
    for &b in bytes {
        if plain(b) {
            out.push(b);
        } else {
            out.extend_from_slice(b"\\x");
            out.push(b"0123456789ABCDEF"[usize::from(b >> 4)]);
            out.push(b"0123456789ABCDEF"[usize::from(b & 0xf)]);
        }
    }
}

fn push_opt_header(out: &mut Vec<u8>, v: Option<&HeaderValue>) {
    match v {
        Some(v) => push_escaped(out, v.as_bytes()),
        None => out.push(b'-'),
    }
}

/// Decimal digits of `n`. The writer formats ~100k lines/s on the proxy's own core, and
/// `core::fmt` machinery is most of a line's cost; this is the one number format it needs.
fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        if let Some(d) = digits.get_mut(i) {
            *d = b'0' + (n % 10) as u8;
        }
        n /= 10;
        if n == 0 || i == 0 {
            break;
        }
    }
    for &d in digits.get(i..).unwrap_or_default() {
        out.push(d);
    }
}

fn push_secs(out: &mut Vec<u8>, d: Option<Duration>) {
    match d {
        Some(d) => {
            push_u64(out, d.as_secs());
            let ms = d.subsec_millis();
            out.push(b'.');
            for digit in [ms / 100, ms / 10 % 10, ms % 10] {
                out.push(b'0' + digit as u8);
            }
        }
        None => out.push(b'-'),
    }
}

fn push_ip(out: &mut Vec<u8>, ip: Option<IpAddr>) {
    match ip {
        Some(IpAddr::V4(v4)) => {
            for (i, o) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                push_u64(out, u64::from(o));
            }
        }
        Some(v6) => {
            out.extend_from_slice(v6.to_string().as_bytes());
        }
        None => out.push(b'-'),
    }
}

fn format_combined(out: &mut Vec<u8>, time_local: &str, r: &Record) {
    push_ip(out, r.client);
    out.extend_from_slice(" - - [".as_bytes());
    out.extend_from_slice(time_local.as_bytes());
    out.extend_from_slice("] \"".as_bytes());
    out.extend_from_slice(r.method.as_str().as_bytes());
    out.push(b' ');
    push_escaped(out, r.target.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(version_str(r.version).as_bytes());
    out.extend_from_slice("\" ".as_bytes());
    push_u64(out, u64::from(r.status));
    out.push(b' ');
    push_u64(out, r.body_bytes);
    out.extend_from_slice(" \"".as_bytes());
    push_opt_header(out, r.referer.as_ref());
    out.extend_from_slice("\" \"".as_bytes());
    push_opt_header(out, r.user_agent.as_ref());
    out.extend_from_slice("\" ".as_bytes());
    out.extend_from_slice(r.cache_status.as_str().as_bytes());
    out.push(b' ');
    match r.upstream_status {
        Some(s) => push_u64(out, u64::from(s)),
        None => out.push(b'-'),
    }
    out.push(b' ');
    push_secs(out, r.upstream_time);
    out.push(b' ');
    push_secs(out, Some(r.request_time));
    out.push(b' ');
    push_u64(out, r.bytes_sent);
    out.push(b' ');
    push_request_id(out, &r.request_id);
}

/// The JSON line: the same fields by name; times in seconds as numbers, absent values null.
#[derive(serde::Serialize)]
struct JsonLine<'a> {
    time: &'a str,
    remote_addr: Option<IpAddr>,
    method: &'a str,
    uri: &'a str,
    protocol: &'static str,
    status: u16,
    body_bytes_sent: u64,
    bytes_sent: u64,
    referer: Option<Cow<'a, str>>,
    user_agent: Option<Cow<'a, str>>,
    cache_status: &'static str,
    upstream_status: Option<u16>,
    upstream_time: Option<f64>,
    request_time: f64,
    request_id: Cow<'a, str>,
}

fn lossy(v: Option<&HeaderValue>) -> Option<Cow<'_, str>> {
    v.map(|v| String::from_utf8_lossy(v.as_bytes()))
}

fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

fn format_json(out: &mut Vec<u8>, time: &str, r: &Record) {
    let request_id = match &r.request_id {
        RequestId::Client(v) => Cow::Borrowed(v.to_str().unwrap_or("-")),
        id @ RequestId::Generated(_) => Cow::Owned(id.to_string()),
    };
    let line = JsonLine {
        time,
        remote_addr: r.client,
        method: r.method.as_str(),
        uri: r.target.as_str(),
        protocol: version_str(r.version),
        status: r.status,
        body_bytes_sent: r.body_bytes,
        bytes_sent: r.bytes_sent,
        referer: lossy(r.referer.as_ref()),
        user_agent: lossy(r.user_agent.as_ref()),
        cache_status: r.cache_status.as_str(),
        upstream_status: r.upstream_status,
        upstream_time: r.upstream_time.map(millis),
        request_time: millis(r.request_time),
        request_id,
    };
    // Serializing strings and numbers into memory cannot fail.
    let _ = serde_json::to_writer(out, &line);
}

#[cfg(test)]
mod tests {
    use super::super::Target;
    use super::*;
    use crate::access_log::request_id::push_hex;
    use crate::cache_status::CacheStatus;
    use http::{Method, Uri};

    fn record() -> Record {
        Record {
            time: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            client: Some("192.0.2.7".parse().unwrap()), // unwrap: test-only
            method: Method::GET,
            target: Target::of(&Uri::from_static("/media/a?x=1")),
            version: Version::HTTP_11,
            status: 200,
            body_bytes: 1024,
            bytes_sent: 1300,
            referer: None,
            user_agent: Some(HeaderValue::from_static("curl \"evil\"")),
            cache_status: CacheStatus::Miss,
            upstream_status: Some(200),
            upstream_time: Some(Duration::from_millis(12)),
            request_time: Duration::from_micros(13_400),
            request_id: RequestId::Client(HeaderValue::from_static("abc-1")),
        }
    }

    #[test]
    fn combined_line_has_every_field_and_escapes_quotes() {
        let mut s = Vec::new();
        format_combined(&mut s, "14/Nov/2023:22:13:20 +0000", &record());
        let s = String::from_utf8(s).unwrap(); // unwrap: test-only
        assert!(
            s.starts_with("192.0.2.7 - - [14/Nov/2023:22:13:20 +0000]"),
            "{s}"
        );
        assert!(
            s.ends_with(
                "] \"GET /media/a?x=1 HTTP/1.1\" 200 1024 \"-\" \"curl \\x22evil\\x22\" \
                 MISS 200 0.012 0.013 1300 abc-1"
            ),
            "{s}"
        );
    }

    #[test]
    fn numbers_format_like_core_fmt() {
        for n in [0u64, 7, 10, 99, 1000, 1_234_567, u64::MAX] {
            let mut s = Vec::new();
            push_u64(&mut s, n);
            assert_eq!(s, n.to_string().as_bytes());
        }
        let mut s = Vec::new();
        push_hex(&mut s, 0xabc, 12);
        assert_eq!(s, b"000000000abc");
        for (d, want) in [
            (Duration::from_micros(1_500), "0.001"),
            (Duration::from_millis(61_042), "61.042"),
        ] {
            let mut s = Vec::new();
            push_secs(&mut s, Some(d));
            assert_eq!(s, want.as_bytes());
        }
        let mut s = Vec::new();
        push_ip(&mut s, Some("10.0.255.1".parse().unwrap())); // unwrap: test-only
        assert_eq!(s, b"10.0.255.1");
    }

    #[test]
    fn json_line_is_one_object() {
        let mut s = Vec::new();
        format_json(&mut s, "2023-11-14T22:13:20.000Z", &record());
        let s = String::from_utf8(s).unwrap(); // unwrap: test-only
        let v: serde_json::Value = serde_json::from_str(&s).unwrap(); // unwrap: test-only
        assert_eq!(v["status"], 200);
        assert_eq!(v["user_agent"], "curl \"evil\"");
        assert_eq!(v["upstream_time"], 0.012);
        assert_eq!(v["referer"], serde_json::Value::Null);
        assert!(!s.contains('\n'));
    }
}
