//! The access log: one line per request, written off the hot path.
//!
//! A request's `logging` hook builds a compact [`Record`] (no formatting, no allocation: the
//! target is copied inline, header values are reference-counted) and hands it to a bounded
//! lock-free queue. One writer thread owns the destination: every few milliseconds it
//! drains the queue, formats each record (`combined` or `json`), writes them with one flush,
//! and it reopens the file on SIGUSR1 so logrotate can move it away. A full queue never makes
//! a request wait: the line is dropped and counted in `komora_edge_access_log_dropped_total`.
//!
//! `combined` is nginx's `combined` followed by six fields (`-` when unknown):
//!
//! ```text
//! $remote_addr - - [$time_local] "$request" $status $body_bytes_sent "$http_referer"
//!     "$http_user_agent" $cache_status $upstream_status $upstream_time $request_time
//!     $bytes_sent $request_id
//! ```
//!
//! Times are seconds with millisecond precision; `$upstream_time` runs from choosing the
//! origin to the end of its response body, `$request_time` from the parsed request head to
//! the end of the response. `$bytes_sent` includes the response head (its HTTP/1.1 size). A
//! request the client abandoned before any response was written is logged with status 499,
//! as nginx does.
//!
//! This module also owns the request id: a sane client `X-Request-Id` is kept, otherwise one
//! is generated (process prefix + counter) and sent to the origin.

use crate::cache_status::CacheStatus;
use crate::config::{AccessLogFormat, AccessLogSettings, AccessLogTarget};
use crate::metrics::METRICS;
use crossbeam_queue::ArrayQueue;
use http::{HeaderValue, Method, Uri, Version};
use once_cell::sync::Lazy;
use std::borrow::Cow;
use std::fmt::{self, Write as _};
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Longest client `X-Request-Id` kept as is; longer ones are replaced by a generated id.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// Write buffer of the writer thread; flushed after each drain.
const WRITE_BUFFER_BYTES: usize = 64 << 10;

/// How often the writer drains the queue. Polling (rather than waiting on the queue) means
/// a request's push never has to wake a parked thread: no syscall on the hot path. Each
/// wake-up of the writer costs the request threads sharing its core a context switch and
/// the caches it evicts; profiled at 2 ms, the wake-ups, not the formatting, were most of
/// the writer's share of the core, so it wakes 50 times a second. A drain is then ~2,000
/// lines at 100k req/s (well inside the default 16,384-line queue), formatted in about a
/// millisecond. Lines reach the file within about this long.
const DRAIN_INTERVAL: Duration = Duration::from_millis(20);

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
                let mut s = String::with_capacity(24);
                push_request_id(&mut s, self);
                f.write_str(&s)
            }
        }
    }
}

/// What one access log line says, captured at the end of a request.
#[derive(Debug)]
pub struct Record {
    /// When the response finished.
    pub time: SystemTime,
    /// Client address (`None` for a Unix socket peer).
    pub client: Option<IpAddr>,
    /// Request method.
    pub method: Method,
    /// Request target as received.
    pub target: Target,
    /// HTTP version of the request.
    pub version: Version,
    /// Response status (499 when the client left before any response).
    pub status: u16,
    /// Response body bytes written.
    pub body_bytes: u64,
    /// Response head and body bytes written.
    pub bytes_sent: u64,
    /// `Referer` request header.
    pub referer: Option<HeaderValue>,
    /// `User-Agent` request header.
    pub user_agent: Option<HeaderValue>,
    /// `X-Cache-Status` of the response.
    pub cache_status: CacheStatus,
    /// Status of the origin's response, when the origin was asked.
    pub upstream_status: Option<u16>,
    /// Origin time, when the origin was asked.
    pub upstream_time: Option<Duration>,
    /// Total request time.
    pub request_time: Duration,
    /// The request id.
    pub request_id: RequestId,
}

/// Targets up to this long are kept inline in the [`Record`] (a media path is ~71 bytes).
const TARGET_INLINE: usize = 120;

/// The request target, copied: no allocation for the usual short ones, and the request's
/// buffers are not held until the writer gets to the line.
#[derive(Debug)]
pub enum Target {
    /// Short targets.
    Inline {
        /// Used bytes of `buf`.
        len: u8,
        /// The target's bytes.
        buf: [u8; TARGET_INLINE],
    },
    /// Longer ones.
    Heap(Box<str>),
}

impl Target {
    /// The target of `uri` as received (origin-form `/path?query`, or the whole absolute
    /// URI when it has an authority).
    pub fn of(uri: &Uri) -> Self {
        match (uri.authority(), uri.path_and_query()) {
            (None, Some(pq)) => Self::from_str(pq.as_str()),
            _ => Target::Heap(uri.to_string().into_boxed_str()),
        }
    }

    fn from_str(s: &str) -> Self {
        let mut buf = [0u8; TARGET_INLINE];
        match (buf.get_mut(..s.len()), u8::try_from(s.len())) {
            (Some(dst), Ok(len)) => {
                dst.copy_from_slice(s.as_bytes());
                Target::Inline { len, buf }
            }
            _ => Target::Heap(s.into()),
        }
    }

    /// The target's text.
    pub fn as_str(&self) -> &str {
        match self {
            Target::Inline { len, buf } => buf
                .get(..usize::from(*len))
                .and_then(|b| std::str::from_utf8(b).ok())
                .unwrap_or(""),
            Target::Heap(s) => s,
        }
    }
}

/// The sending half, held by the proxy service; cheap to call from every request: a
/// lock-free bounded queue (one compare-and-swap per push), drained by the writer thread.
#[derive(Debug, Clone)]
pub struct AccessLog {
    queue: Arc<ArrayQueue<Record>>,
}

/// Why the access log could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The log file could not be opened for append.
    #[error("access_log.path {0}: {1}")]
    Open(String, io::Error),
    /// The writer thread or its SIGUSR1 handler could not be set up.
    #[error("access log writer: {0}")]
    Writer(io::Error),
}

impl AccessLog {
    /// Open the destination and start the writer thread (with its SIGUSR1 handler installed
    /// before this returns, so a rotation signal never hits the default action).
    pub fn start(settings: &AccessLogSettings) -> Result<Self, StartError> {
        let out = Output::open(&settings.target)?;
        let queue = Arc::new(ArrayQueue::new(settings.queue_lines.get()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let format = settings.format;
        let rx = queue.clone();
        std::thread::Builder::new()
            .name("access-log".to_string())
            .spawn(move || writer_thread(rx, out, format, ready_tx))
            .map_err(StartError::Writer)?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(AccessLog { queue }),
            Ok(Err(e)) => Err(StartError::Writer(e)),
            Err(_) => Err(StartError::Writer(io::Error::other("writer thread exited"))),
        }
    }

    /// Queue a record; never waits. A full queue drops it and counts the drop.
    pub fn send(&self, record: Record) {
        if self.queue.push(record).is_err() {
            METRICS.access_log_dropped.inc();
        }
    }
}

/// The destination, reopenable.
enum Output {
    Stdout(BufWriter<io::Stdout>),
    File(PathBuf, BufWriter<File>),
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl Output {
    fn open(target: &AccessLogTarget) -> Result<Self, StartError> {
        Ok(match target {
            AccessLogTarget::Stdout => {
                Output::Stdout(BufWriter::with_capacity(WRITE_BUFFER_BYTES, io::stdout()))
            }
            AccessLogTarget::File(p) => {
                let f = open_append(p).map_err(|e| StartError::Open(p.display().to_string(), e))?;
                Output::File(p.clone(), BufWriter::with_capacity(WRITE_BUFFER_BYTES, f))
            }
        })
    }

    fn writer(&mut self) -> &mut dyn Write {
        match self {
            Output::Stdout(w) => w,
            Output::File(_, w) => w,
        }
    }

    /// Flush, then reopen the file at its path (after logrotate renamed it). On failure the
    /// old file keeps receiving lines.
    fn reopen(&mut self) -> io::Result<()> {
        self.writer().flush()?;
        if let Output::File(path, w) = self {
            *w = BufWriter::with_capacity(WRITE_BUFFER_BYTES, open_append(path)?);
        }
        Ok(())
    }
}

/// Logs write failures on the transition from working to failing only (a full disk would
/// otherwise log once per flush), and counts every one.
struct WriteHealth {
    failing: bool,
}

impl WriteHealth {
    fn result(&mut self, what: &str, r: io::Result<()>) {
        match r {
            Ok(()) => self.failing = false,
            Err(e) => {
                METRICS.access_log_write_errors.inc();
                if !self.failing {
                    tracing::warn!(error = %e, "access log {what} failed; lines are being lost");
                }
                self.failing = true;
            }
        }
    }
}

fn writer_thread(
    rx: Arc<ArrayQueue<Record>>,
    mut out: Output,
    format: AccessLogFormat,
    ready: std::sync::mpsc::Sender<io::Result<()>>,
) {
    use tokio::signal::unix::{signal, SignalKind};
    let setup = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .and_then(|rt| {
            let _guard = rt.enter();
            let usr1 = signal(SignalKind::user_defined1())?;
            Ok((rt, usr1))
        });
    let (rt, mut usr1) = match setup {
        Ok(s) => {
            let _ = ready.send(Ok(()));
            s
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let mut fmt = Formatter::default();
    let mut health = WriteHealth { failing: false };
    rt.block_on(async move {
        let mut tick = tokio::time::interval(DRAIN_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    // Drain what is queued, then flush once: one write(2) per interval.
                    let mut wrote = false;
                    while let Some(r) = rx.pop() {
                        let written = out.writer().write_all(fmt.line(format, &r));
                        health.result("write", written);
                        wrote = true;
                    }
                    if wrote {
                        let flushed = out.writer().flush();
                        health.result("flush", flushed);
                    }
                }
                Some(()) = usr1.recv() => {
                    let reopened = out.reopen();
                    health.result("reopen", reopened);
                }
            }
        }
    });
}

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
struct Formatter {
    line: String,
    /// Unix second the cached texts belong to.
    second: Option<u64>,
    /// `$time_local` of that second.
    local: String,
    /// RFC 3339 UTC of that second, without fraction and zone.
    utc: String,
    scratch: String,
}

impl Formatter {
    fn line(&mut self, format: AccessLogFormat, r: &Record) -> &[u8] {
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
        self.line.push('\n');
        self.line.as_bytes()
    }
}

/// Append `bytes` the way nginx escapes log variables: `"`, `\` and bytes outside printable
/// ASCII as `\xHH`, so a client cannot forge fields or lines.
fn push_escaped(out: &mut String, bytes: &[u8]) {
    let plain = |b: u8| b != b'"' && b != b'\\' && (0x20..0x7f).contains(&b);
    if let Some(s) = std::str::from_utf8(bytes)
        .ok()
        .filter(|_| bytes.iter().all(|b| plain(*b)))
    {
        // The usual case, copied at once.
        out.push_str(s);
        return;
    }
    for &b in bytes {
        if plain(b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "\\x{b:02X}");
        }
    }
}

fn push_opt_header(out: &mut String, v: Option<&HeaderValue>) {
    match v {
        Some(v) => push_escaped(out, v.as_bytes()),
        None => out.push('-'),
    }
}

/// Decimal digits of `n`. The writer formats ~100k lines/s on the proxy's own core, and
/// `core::fmt` machinery is most of a line's cost; this is the one number format it needs.
fn push_u64(out: &mut String, mut n: u64) {
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
        out.push(char::from(d));
    }
}

/// `n` as exactly `width` lowercase hex digits (its low `4 * width` bits).
fn push_hex(out: &mut String, n: u64, width: u32) {
    for shift in (0..width).rev() {
        let nibble = (n >> (shift * 4)) & 0xf;
        out.push(char::from(b"0123456789abcdef"[nibble as usize]));
    }
}

fn push_secs(out: &mut String, d: Option<Duration>) {
    match d {
        Some(d) => {
            push_u64(out, d.as_secs());
            let ms = d.subsec_millis();
            out.push('.');
            for digit in [ms / 100, ms / 10 % 10, ms % 10] {
                out.push(char::from(b'0' + digit as u8));
            }
        }
        None => out.push('-'),
    }
}

fn push_ip(out: &mut String, ip: Option<IpAddr>) {
    match ip {
        Some(IpAddr::V4(v4)) => {
            for (i, o) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                push_u64(out, u64::from(o));
            }
        }
        Some(v6) => {
            let _ = write!(out, "{v6}");
        }
        None => out.push('-'),
    }
}

fn push_request_id(out: &mut String, id: &RequestId) {
    match id {
        // Checked by `from_client`: nothing that needs escaping.
        RequestId::Client(v) => out.push_str(v.to_str().unwrap_or("-")),
        RequestId::Generated(n) => {
            out.push_str(&ID_PREFIX);
            out.push('-');
            push_hex(out, *n, GENERATED_ID_DIGITS);
        }
    }
}

fn format_combined(out: &mut String, time_local: &str, r: &Record) {
    push_ip(out, r.client);
    out.push_str(" - - [");
    out.push_str(time_local);
    out.push_str("] \"");
    out.push_str(r.method.as_str());
    out.push(' ');
    push_escaped(out, r.target.as_str().as_bytes());
    out.push(' ');
    out.push_str(version_str(r.version));
    out.push_str("\" ");
    push_u64(out, u64::from(r.status));
    out.push(' ');
    push_u64(out, r.body_bytes);
    out.push_str(" \"");
    push_opt_header(out, r.referer.as_ref());
    out.push_str("\" \"");
    push_opt_header(out, r.user_agent.as_ref());
    out.push_str("\" ");
    out.push_str(r.cache_status.as_str());
    out.push(' ');
    match r.upstream_status {
        Some(s) => push_u64(out, u64::from(s)),
        None => out.push('-'),
    }
    out.push(' ');
    push_secs(out, r.upstream_time);
    out.push(' ');
    push_secs(out, Some(r.request_time));
    out.push(' ');
    push_u64(out, r.bytes_sent);
    out.push(' ');
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

fn format_json(out: &mut String, time: &str, r: &Record) {
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
    if let Ok(s) = serde_json::to_string(&line) {
        out.push_str(&s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let mut s = String::new();
        format_combined(&mut s, "14/Nov/2023:22:13:20 +0000", &record());
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
    fn a_queued_line_costs_about_400_bytes() {
        // Documented for `access_log.queue_lines` (the queue is allocated up front).
        assert!(
            std::mem::size_of::<Record>() <= 400,
            "{}",
            std::mem::size_of::<Record>()
        );
    }

    #[test]
    fn numbers_format_like_core_fmt() {
        for n in [0u64, 7, 10, 99, 1000, 1_234_567, u64::MAX] {
            let mut s = String::new();
            push_u64(&mut s, n);
            assert_eq!(s, n.to_string());
        }
        let mut s = String::new();
        push_hex(&mut s, 0xabc, 12);
        assert_eq!(s, "000000000abc");
        for (d, want) in [
            (Duration::from_micros(1_500), "0.001"),
            (Duration::from_millis(61_042), "61.042"),
        ] {
            let mut s = String::new();
            push_secs(&mut s, Some(d));
            assert_eq!(s, want);
        }
        let mut s = String::new();
        push_ip(&mut s, Some("10.0.255.1".parse().unwrap())); // unwrap: test-only
        assert_eq!(s, "10.0.255.1");
    }

    #[test]
    fn json_line_is_one_object() {
        let mut s = String::new();
        format_json(&mut s, "2023-11-14T22:13:20.000Z", &record());
        let v: serde_json::Value = serde_json::from_str(&s).unwrap(); // unwrap: test-only
        assert_eq!(v["status"], 200);
        assert_eq!(v["user_agent"], "curl \"evil\"");
        assert_eq!(v["upstream_time"], 0.012);
        assert_eq!(v["referer"], serde_json::Value::Null);
        assert!(!s.contains('\n'));
    }

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
