//! Edge configuration: the flat TOML file (`config/edge.toml`), its validation into typed
//! values, and the command-line overrides.
//!
//! Parsing is two-step, like Cloudflare River: serde structs mirror the TOML one-to-one
//! (`deny_unknown_fields`, every field optional with a documented default), then
//! [`RawConfig::validate`] turns them into [`EdgeConfig`] with `SocketAddr`, `PathBuf`,
//! `Duration` and `NonZero*` values. Validation collects every error with its key path instead
//! of stopping at the first one, so `komora-edge --check-config` reports them all at once.

use serde::Deserialize;
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::num::{NonZeroU64, NonZeroUsize};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One validation problem, with the dotted key path it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted key path, e.g. `cache.memory.max_capacity` or `route[1].prefix`.
    pub key: String,
    /// What is wrong with the value.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Every error found in one configuration source, prefixed with the source name on display.
#[derive(Debug, Clone)]
pub struct ConfigErrors {
    /// File name (or `<defaults>`), printed before each error.
    pub source: String,
    /// All errors found, in key order of discovery.
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}: {}", self.source, e)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// An address list that may also be written as a single string (`listen = "0.0.0.0:8080"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum AddrList {
    /// `"IP:PORT"`
    One(String),
    /// `["IP:PORT", ...]`
    Many(Vec<String>),
}

impl AddrList {
    fn into_vec(self) -> Vec<String> {
        match self {
            AddrList::One(s) => vec![s],
            AddrList::Many(v) => v,
        }
    }
}

/// `[server]`: listeners and pingora server settings.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// Plain HTTP listen addresses. Unit: `IP:PORT`. Default `["0.0.0.0:8080"]`. At least one
    /// of `listen` / `tls_listen` must be non-empty.
    pub listen: Option<AddrList>,
    /// HTTPS listen addresses (rustls, HTTP/2 offered over ALPN), a string or a list.
    /// Default `[]` (no TLS).
    pub tls_listen: Option<AddrList>,
    /// PEM certificate chain for `tls_listen`. Path. Required when `tls_listen` is non-empty.
    pub tls_cert: Option<String>,
    /// PEM private key for `tls_listen`. Path. Required when `tls_listen` is non-empty.
    pub tls_key: Option<String>,
    /// Worker threads per service. Count. Default 2, range 1..=1024.
    pub threads: Option<u64>,
    /// Time SIGTERM waits for in-flight requests before exit. Seconds. Default 5, range 1..=3600.
    pub grace_period_secs: Option<u64>,
    /// Unix socket used to hand listeners to a new process on upgrade. Path.
    /// Default `/tmp/komora-edge-upgrade.sock`.
    pub upgrade_sock: Option<String>,
    /// PID file written when daemonized. Path. Default `/tmp/komora-edge.pid`.
    pub pid_file: Option<String>,
    /// Total time a client has to send a whole request head (request line and headers),
    /// counted from the connection's accept for its first request and from the first byte
    /// for later ones; past it the edge answers 408 and closes (slow-header clients). On
    /// HTTP/2 it bounds the preface and first header block from accept, then each later
    /// header block (HEADERS + CONTINUATION frames); past it the connection is closed.
    /// Seconds. Default 10 ([`DEFAULT_REQUEST_HEADER_TIMEOUT_SECS`]), range 1..=3600.
    pub request_header_timeout_secs: Option<u64>,
}

/// Default `server.request_header_timeout_secs` (nginx `client_header_timeout` is 60 s; a
/// request head is a few hundred bytes, 10 s is generous for any real client).
pub const DEFAULT_REQUEST_HEADER_TIMEOUT_SECS: u64 = 10;

/// `[upstream]`: origin peers.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    /// Origin peers, round-robin among healthy ones. Unit: `HOST:PORT`.
    /// Default `["127.0.0.1:8081"]`, at least one.
    pub origins: Option<Vec<String>>,
    /// TCP health-check period per origin. Seconds. Default 5, range 1..=3600.
    pub health_check_interval_secs: Option<u64>,
    /// Connect timeout to an origin. Milliseconds. Default 2000, range 1..=600000.
    pub connect_timeout_ms: Option<u64>,
    /// Read timeout (idle, per read) from an origin. Milliseconds. Default 30000,
    /// range 1..=3600000.
    pub read_timeout_ms: Option<u64>,
}

/// `[cache.memory]`: the in-RAM tier.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMemory {
    /// Memory tier budget (moka `max_capacity` with a byte weigher). Bytes.
    /// Default 268435456 (256 MiB), must be > 0.
    pub max_capacity: Option<u64>,
    /// Largest body kept in (or promoted to) memory; larger bodies stream from disk in chunks.
    /// Bytes. Default 1048576 (1 MiB), range 0..=max_capacity.
    pub max_object_size: Option<u64>,
    /// Memory hits with a body of at least this size, on plain-HTTP/1.1 keep-alive
    /// connections, are sent with sendfile(2) from the entry's disk file instead of copying
    /// the in-memory bytes into the socket (TLS and HTTP/2 always copy). Bytes. Default
    /// 32768, range 0..=max_object_size; 0 turns zero-copy off.
    pub sendfile_min_size: Option<u64>,
    /// At most this many entry files are held open for zero-copy sends (each memory entry
    /// of at least `sendfile_min_size` holds one). Count. Default 4096, range 0..=1000000;
    /// keep it well below the process's open-file limit, which the edge raises to its hard
    /// limit at start. A held file the disk tier evicts, purges or rewrites stays allocated
    /// until its memory entry goes: disk use can exceed the disk budget by up to the memory
    /// tier's `max_capacity`.
    pub sendfile_max_open_files: Option<u64>,
}

/// `[cache.disk]`: the on-disk tier.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDisk {
    /// Disk tier budget; least recently used entries are evicted above it. Bytes.
    /// Default 10737418240 (10 GiB), must be > 0.
    pub max_capacity: Option<u64>,
    /// Read size when streaming a large body from disk. Bytes. Default 262144 (256 KiB),
    /// range 4096..=16777216.
    pub chunk_size: Option<u64>,
}

/// `[cache]`: storage location, tiers and the cache lock.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCache {
    /// Cache directory (created if missing). Path. Default `/var/cache/komora`.
    pub dir: Option<String>,
    /// How long a cache-lock writer may fill before waiters give up on it. Milliseconds.
    /// Default 10000, range 1..=600000.
    pub lock_age_timeout_ms: Option<u64>,
    /// How long a request waits on another request's fill before going to the origin itself.
    /// Milliseconds. Default 10000, range 1..=600000.
    pub lock_wait_timeout_ms: Option<u64>,
    /// Let readers of an object being filled stream the bytes already written instead of
    /// waiting for the whole body. Boolean, default true.
    pub streaming_fill: Option<bool>,
    /// Memory tier.
    pub memory: Option<RawMemory>,
    /// Disk tier.
    pub disk: Option<RawDisk>,
}

/// `[[route]]`: policy for one request path prefix; the longest matching prefix wins.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// Request path prefix, must start with `/`. Required.
    pub prefix: Option<String>,
    /// `"cache"` (store cacheable GET/HEAD responses), `"bypass"` (pass through, never
    /// stored) or `"deny"` (answered 404 by the edge, never sent to the origin: internal
    /// paths). Default `"cache"`.
    pub mode: Option<String>,
    /// Freshness when the origin sends neither Cache-Control max-age nor Expires (nginx
    /// `proxy_cache_valid`). Seconds. Default 604800 (7 d), range 0..=31536000.
    pub default_ttl_secs: Option<u64>,
    /// How long past expiry a stale copy may be served when the origin is down or answers 5xx,
    /// unless the origin sends `stale-if-error`. Seconds. Default 86400, range 0..=31536000.
    pub stale_if_error_secs: Option<u64>,
    /// How long past expiry a stale copy is served while one background refresh runs, unless
    /// the origin sends `stale-while-revalidate`. Seconds. Default 0, range 0..=31536000.
    pub stale_while_revalidate_secs: Option<u64>,
    /// When > 0, successful responses on this route go to clients with
    /// `Cache-Control: public, max-age=N, immutable` and `Expires: now+N` (nginx `expires`).
    /// Seconds. Default 0 (origin headers pass through), range 0..=31536000.
    pub client_max_age_secs: Option<u64>,
    /// Which query parameters are part of the cache key: `"all"`, `"none"` (the path alone:
    /// `?cb=1`, `?cb=2` and every signature are one entry and one origin fetch), or a list of
    /// parameter names kept (in request order). Default `"none"` for a prefix starting with
    /// `/media/` (content-addressed: the path is the object), `"all"` otherwise. The origin
    /// always gets the request's own URL.
    pub cache_key_query: Option<RawKeyQuery>,
    /// Require signed URLs (`?exp=<unix s>&sig=<hex HMAC-SHA256(key, "<last path
    /// segment>.<exp>")>`, as the origin's `media.signed_urls` makes them): anything else gets
    /// 403 before any cache lookup or origin request; verified responses reach the browser
    /// as `Cache-Control: private, max-age=<seconds until exp>` instead of the route's
    /// `client_max_age_secs`, while the edge keeps its own copy for `default_ttl_secs`.
    /// Boolean, default false. The edge refuses to start when the keys are missing.
    pub signed_urls: Option<bool>,
    /// Environment variable with the verifying keys: comma-separated, at least 32 bytes each
    /// (the origin's `KOMORA_MEDIA_SIGNING_KEYS`). Default `"KOMORA_MEDIA_SIGNING_KEYS"`.
    pub signing_keys_env: Option<String>,
    // HTTP caching choices the RFCs leave to the cache (MAY); see `crate::rfc::Semantics`.
    /// Store a final response of any status when it has explicit freshness (`s-maxage`,
    /// `max-age`, `Expires`; RFC 9111 §3). Default false: only 200 is stored.
    pub store_any_status: Option<bool>,
    /// Heuristic freshness (RFC 9111 §4.2.2) for heuristically cacheable statuses without
    /// explicit freshness: this percent of `Date − Last-Modified`. Percent, default 0 (off:
    /// `default_ttl_secs` applies to a 200 instead), range 0..=100.
    pub heuristic_percent: Option<u64>,
    /// Cap of a heuristic lifetime. Seconds, default 86400, range 0..=31536000.
    pub heuristic_max_secs: Option<u64>,
    /// Honor the client's `Cache-Control` request directives (`max-age`, `min-fresh`,
    /// `max-stale`, `no-cache`, `no-store`, `only-if-cached`; RFC 9111 §5.2.1). Default false:
    /// a shared cache may ignore them, and any client could otherwise force origin fetches.
    pub request_directives: Option<bool>,
    /// Targeted cache-control fields (RFC 9213) that, when present, govern this edge instead
    /// of `Cache-Control`/`Expires` and are not forwarded; first present one wins. Header
    /// names, default `["CDN-Cache-Control"]`, `[]` turns targeted fields off.
    pub targeted_fields: Option<Vec<String>>,
}

/// `cache_key_query` as written: `"all"`, `"none"`, or `["name", ...]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawKeyQuery {
    /// `"all"` or `"none"`.
    Mode(String),
    /// Parameter names kept in the key.
    Names(Vec<String>),
}

/// `[admin]`: purge API and Prometheus metrics.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// Admin listen address. Unit: `IP:PORT`. Default unset (admin listener disabled).
    pub listen: Option<String>,
    /// Environment variable holding the bearer token for purge calls. Default
    /// `KOMORA_ADMIN_TOKEN`. When the variable is unset or empty, purge calls are refused.
    pub token_env: Option<String>,
}

/// `[access_log]`: one line per request (nginx `combined` plus cache status, upstream
/// status, upstream and total time, bytes sent and request id, or one JSON object per line),
/// written by a background thread fed through a bounded queue: when the queue is full the
/// line is dropped and counted (`komora_edge_access_log_dropped_total`), never waited for.
/// The file is opened for append and reopened on SIGUSR1 (logrotate `postrotate`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccessLog {
    /// Where lines go: a file path (created if missing, appended to), or `"-"` for stdout.
    /// Default unset (no access log).
    pub path: Option<String>,
    /// `"combined"` (nginx combined, then cache status, upstream status, upstream time and
    /// total time in seconds, bytes sent including the head, request id; `-` when unknown) or
    /// `"json"` (one object per line, the same fields by name). Default `"combined"`.
    pub format: Option<String>,
    /// Lines queued for the writer before new ones are dropped (it drains every 20 ms).
    /// Count. Default 16384, range 1..=1048576; the queue is allocated up front, about
    /// 400 bytes per line.
    pub queue_lines: Option<u64>,
}

/// The whole file, exactly as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// `[server]`
    pub server: Option<RawServer>,
    /// `[upstream]`
    pub upstream: Option<RawUpstream>,
    /// `[cache]`
    pub cache: Option<RawCache>,
    /// `[[route]]`; default: `/media/` cached with 7 d client max-age, keyed on the path
    /// alone, not signed (the origin's private answers to signed URLs then pass through
    /// unstored), `/` bypass.
    pub route: Option<Vec<RawRoute>>,
    /// `[admin]`
    pub admin: Option<RawAdmin>,
    /// `[access_log]`
    pub access_log: Option<RawAccessLog>,
}

/// Validated `[server]`.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Plain HTTP listeners.
    pub listen: Vec<SocketAddr>,
    /// HTTPS listeners.
    pub tls_listen: Vec<SocketAddr>,
    /// Certificate and key paths, set when `tls_listen` is non-empty.
    pub tls_cert_key: Option<(PathBuf, PathBuf)>,
    /// Worker threads.
    pub threads: NonZeroUsize,
    /// Drain time on SIGTERM.
    pub grace_period: Duration,
    /// Upgrade socket path.
    pub upgrade_sock: PathBuf,
    /// PID file path.
    pub pid_file: PathBuf,
    /// Deadline for a whole request head.
    pub request_header_timeout: Duration,
}

/// Validated `[upstream]`.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    /// `HOST:PORT` strings that resolved at validation time.
    pub origins: Vec<String>,
    /// Health check period.
    pub health_check_interval: Duration,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Read timeout.
    pub read_timeout: Duration,
}

/// Validated `[cache]`.
#[derive(Debug, Clone)]
pub struct CacheSettings {
    /// Cache directory.
    pub dir: PathBuf,
    /// Cache lock age timeout.
    pub lock_age_timeout: Duration,
    /// Cache lock wait timeout.
    pub lock_wait_timeout: Duration,
    /// Memory tier byte budget.
    pub memory_max_capacity: NonZeroU64,
    /// Largest body held in memory.
    pub memory_max_object_size: u64,
    /// Disk tier byte budget.
    pub disk_max_capacity: NonZeroU64,
    /// Disk streaming chunk size.
    pub disk_chunk_size: NonZeroUsize,
    /// Streaming partial reads of fills.
    pub streaming_fill: bool,
    /// Smallest memory-hit body sent with sendfile; `None` = zero-copy off.
    pub sendfile_min_size: Option<u64>,
    /// Most entry files held open for zero-copy sends.
    pub sendfile_max_open_files: usize,
}

/// What a route does with requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteMode {
    /// Cacheable GET/HEAD responses are stored.
    Cache,
    /// Everything passes through.
    Bypass,
    /// Answered 404 by the edge; nothing reaches the origin.
    Deny,
}

/// Validated `[[route]]`.
#[derive(Debug, Clone)]
pub struct Route {
    /// Path prefix.
    pub prefix: String,
    /// Cache or bypass.
    pub mode: RouteMode,
    /// Freshness when the origin gives none.
    pub default_ttl: Duration,
    /// Default stale-if-error window.
    pub stale_if_error: Duration,
    /// Default stale-while-revalidate window.
    pub stale_while_revalidate: Duration,
    /// Client-facing max-age override, `None` when 0.
    pub client_max_age: Option<Duration>,
    /// Which query parameters are part of the cache key.
    pub cache_key_query: KeyQuery,
    /// Signed URLs required: the keys that verify them.
    pub signed: Option<std::sync::Arc<crate::signing::UrlVerifier>>,
    /// HTTP caching choices left to the cache (the `store_any_status` … keys).
    pub semantics: crate::rfc::Semantics,
}

/// Which query parameters are part of a route's cache key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyQuery {
    /// The whole query string.
    All,
    /// None: the path alone.
    None,
    /// Only these parameters, in request order.
    Keep(Vec<String>),
}

/// Validated `[admin]`.
#[derive(Debug, Clone)]
pub struct AdminSettings {
    /// Admin listener, `None` disables it.
    pub listen: Option<SocketAddr>,
    /// Environment variable with the bearer token.
    pub token_env: String,
}

/// Where access log lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogTarget {
    /// Standard output (containers).
    Stdout,
    /// A file, appended to and reopened on SIGUSR1.
    File(PathBuf),
}

/// Access log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessLogFormat {
    /// nginx `combined` plus the edge's fields.
    Combined,
    /// One JSON object per line.
    Json,
}

/// Default `access_log.queue_lines`.
pub const DEFAULT_ACCESS_LOG_QUEUE_LINES: u64 = 16_384;
/// Largest `access_log.queue_lines`.
pub const MAX_ACCESS_LOG_QUEUE_LINES: u64 = 1 << 20;

/// Validated `[access_log]`, present only when `path` is set.
#[derive(Debug, Clone)]
pub struct AccessLogSettings {
    /// Destination.
    pub target: AccessLogTarget,
    /// Line format.
    pub format: AccessLogFormat,
    /// Bounded queue capacity.
    pub queue_lines: NonZeroUsize,
}

/// The validated configuration the edge runs with.
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    /// `[server]`
    pub server: ServerSettings,
    /// `[upstream]`
    pub upstream: UpstreamSettings,
    /// `[cache]`
    pub cache: CacheSettings,
    /// `[[route]]`, sorted longest prefix first.
    pub routes: Vec<Route>,
    /// `[admin]`
    pub admin: AdminSettings,
    /// `[access_log]`, `None` when off.
    pub access_log: Option<AccessLogSettings>,
}

/// Command-line values that replace file values (`--listen`, `--origin`, `--cache-dir`).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// Replaces `server.listen` (and clears `server.tls_listen`).
    pub listen: Option<String>,
    /// Replaces `upstream.origins`.
    pub origin: Option<String>,
    /// Replaces `cache.dir`.
    pub cache_dir: Option<String>,
    /// Replaces `admin.listen`.
    pub admin_listen: Option<String>,
    /// Replaces `access_log.path`.
    pub access_log: Option<String>,
}

/// Keys each table accepts; mirrors the `Raw*` structs (their `deny_unknown_fields` is the
/// backstop if this list ever drifts).
fn known_keys(table: &str) -> &'static [&'static str] {
    match table {
        "" => &[
            "server",
            "upstream",
            "cache",
            "route",
            "admin",
            "access_log",
        ],
        "server" => &[
            "listen",
            "tls_listen",
            "tls_cert",
            "tls_key",
            "threads",
            "grace_period_secs",
            "upgrade_sock",
            "pid_file",
            "request_header_timeout_secs",
        ],
        "upstream" => &[
            "origins",
            "health_check_interval_secs",
            "connect_timeout_ms",
            "read_timeout_ms",
        ],
        "cache" => &[
            "dir",
            "lock_age_timeout_ms",
            "lock_wait_timeout_ms",
            "streaming_fill",
            "memory",
            "disk",
        ],
        "cache.memory" => &[
            "max_capacity",
            "max_object_size",
            "sendfile_min_size",
            "sendfile_max_open_files",
        ],
        "cache.disk" => &["max_capacity", "chunk_size"],
        "route" => &[
            "prefix",
            "mode",
            "default_ttl_secs",
            "stale_if_error_secs",
            "stale_while_revalidate_secs",
            "client_max_age_secs",
            "cache_key_query",
            "signed_urls",
            "signing_keys_env",
            "store_any_status",
            "heuristic_percent",
            "heuristic_max_secs",
            "request_directives",
            "targeted_fields",
        ],
        "admin" => &["listen", "token_env"],
        "access_log" => &["path", "format", "queue_lines"],
        _ => &[],
    }
}

/// Remove every key not in [`known_keys`] from `t` (the table at `schema`, e.g.
/// `cache.memory`, found at `path`, e.g. `route[1]`), reporting each with its path.
fn strip_unknown(schema: &str, path: &str, t: &mut toml::Table, out: &mut Vec<ConfigError>) {
    let known = known_keys(schema);
    for (k, v) in t.iter_mut() {
        let key_path = if path.is_empty() {
            k.clone()
        } else {
            format!("{path}.{k}")
        };
        if !known.contains(&k.as_str()) {
            out.push(ConfigError {
                key: key_path,
                message: format!("unknown key (expected one of: {})", known.join(", ")),
            });
            continue;
        }
        let child = if schema.is_empty() {
            k.clone()
        } else {
            format!("{schema}.{k}")
        };
        match v {
            toml::Value::Table(sub) if !known_keys(&child).is_empty() => {
                strip_unknown(&child, &key_path, sub, out)
            }
            toml::Value::Array(items) if child == "route" => {
                for (i, item) in items.iter_mut().enumerate() {
                    if let toml::Value::Table(sub) = item {
                        strip_unknown("route", &format!("route[{i}]"), sub, out);
                    }
                }
            }
            _ => {}
        }
    }
    t.retain(|k, _| known.contains(&k));
}

/// The `[table]` (or `[[table]]`) header in effect at the end of `before`, for error paths.
fn enclosing_table(before: &str) -> String {
    before
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string())
        .unwrap_or_else(|| "<root>".to_string())
}

const MAX_SECS: u64 = 31_536_000;

/// Origin paths the default routes deny: its Prometheus metrics, its readiness probe (it
/// tells the internet whether the database is up) and its queue admin API.
const DENY_METRICS: &str = "/metrics";
/// See [`DENY_METRICS`].
const DENY_READYZ: &str = "/readyz";
/// See [`DENY_METRICS`].
const DENY_ADMIN: &str = "/admin/";

struct Checker {
    errors: Vec<ConfigError>,
}

impl Checker {
    fn err(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError {
            key: key.into(),
            message: message.into(),
        });
    }

    fn range(&mut self, key: &str, v: Option<u64>, default: u64, min: u64, max: u64) -> u64 {
        let v = v.unwrap_or(default);
        if v < min || v > max {
            self.err(key, format!("must be in {min}..={max}, got {v}"));
            return default;
        }
        v
    }

    fn addr(&mut self, key: &str, s: &str) -> Option<SocketAddr> {
        match s.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                self.err(key, format!("must be IP:PORT, got {s:?}"));
                None
            }
        }
    }

    fn host_port(&mut self, key: &str, s: &str) -> Option<String> {
        let ok = s
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
        if !ok {
            self.err(key, format!("must be HOST:PORT, got {s:?}"));
            return None;
        }
        match s.to_socket_addrs().map(|mut it| it.next()) {
            Ok(Some(_)) => Some(s.to_string()),
            _ => {
                self.err(key, format!("{s:?} does not resolve"));
                None
            }
        }
    }
}

fn nz_u64(v: u64) -> NonZeroU64 {
    NonZeroU64::new(v).unwrap_or(NonZeroU64::MIN)
}

fn nz_usize(v: u64) -> NonZeroUsize {
    NonZeroUsize::new(usize::try_from(v).unwrap_or(usize::MAX)).unwrap_or(NonZeroUsize::MIN)
}

impl RawConfig {
    /// Parse TOML text. Syntax errors stop parsing; then every unknown key is reported with
    /// its key path (all of them, not just the first); then type errors, with the table they
    /// are in and the line.
    pub fn parse(source: &str, text: &str) -> Result<Self, ConfigErrors> {
        let fail = |errors: Vec<ConfigError>| ConfigErrors {
            source: source.to_string(),
            errors,
        };
        let line_of = |e: &toml::de::Error| {
            e.span().map(|s| {
                let before = text.get(..s.start).unwrap_or(text);
                (before, before.lines().count().max(1))
            })
        };
        let table: toml::Table = toml::from_str(text).map_err(|e| {
            let line = line_of(&e).map_or(String::new(), |(_, l)| format!(" (line {l})"));
            fail(vec![ConfigError {
                key: "<toml>".to_string(),
                message: format!("{}{line}", e.message()),
            }])
        })?;
        let mut known = table;
        let mut unknown = Vec::new();
        strip_unknown("", "", &mut known, &mut unknown);
        if !unknown.is_empty() {
            // Report the value errors of the known keys in the same run, so one
            // --check-config shows everything.
            if let Ok(raw) = toml::Value::Table(known).try_into::<RawConfig>() {
                if let Err(e) = raw.validate(source) {
                    unknown.extend(e.errors);
                }
            }
            return Err(fail(unknown));
        }
        toml::from_str::<RawConfig>(text).map_err(|e| {
            let (key, line) = match line_of(&e) {
                Some((before, l)) => (enclosing_table(before), format!(" (line {l})")),
                None => ("<toml>".to_string(), String::new()),
            };
            fail(vec![ConfigError {
                key,
                message: format!("{}{line}", e.message().trim()),
            }])
        })
    }

    /// Read and parse a file.
    pub fn load(path: &Path) -> Result<Self, ConfigErrors> {
        let source = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigErrors {
            source: source.clone(),
            errors: vec![ConfigError {
                key: "<file>".to_string(),
                message: e.to_string(),
            }],
        })?;
        Self::parse(&source, &text)
    }

    /// Apply command-line overrides on top of the file values.
    pub fn apply(&mut self, o: &Overrides) {
        if let Some(l) = &o.listen {
            let s = self.server.get_or_insert_with(Default::default);
            s.listen = Some(AddrList::One(l.clone()));
            s.tls_listen = Some(AddrList::Many(Vec::new()));
        }
        if let Some(origin) = &o.origin {
            self.upstream.get_or_insert_with(Default::default).origins = Some(vec![origin.clone()]);
        }
        if let Some(d) = &o.cache_dir {
            self.cache.get_or_insert_with(Default::default).dir = Some(d.clone());
        }
        if let Some(a) = &o.admin_listen {
            self.admin.get_or_insert_with(Default::default).listen = Some(a.clone());
        }
        if let Some(p) = &o.access_log {
            self.access_log.get_or_insert_with(Default::default).path = Some(p.clone());
        }
    }

    /// Validate into typed values, collecting every error with its key path.
    pub fn validate(self, source: &str) -> Result<EdgeConfig, ConfigErrors> {
        let mut c = Checker { errors: Vec::new() };

        let s = self.server.unwrap_or_default();
        let listen_raw = s
            .listen
            .map_or_else(|| vec!["0.0.0.0:8080".to_string()], AddrList::into_vec);
        let listen: Vec<SocketAddr> = listen_raw
            .iter()
            .enumerate()
            .filter_map(|(i, a)| c.addr(&format!("server.listen[{i}]"), a))
            .collect();
        let tls_listen: Vec<SocketAddr> = s
            .tls_listen
            .map(AddrList::into_vec)
            .unwrap_or_default()
            .iter()
            .enumerate()
            .filter_map(|(i, a)| c.addr(&format!("server.tls_listen[{i}]"), a))
            .collect();
        if listen_raw.is_empty() && tls_listen.is_empty() {
            c.err(
                "server.listen",
                "at least one of listen / tls_listen is required",
            );
        }
        let tls_cert_key = if tls_listen.is_empty() {
            None
        } else {
            match (&s.tls_cert, &s.tls_key) {
                (Some(cert), Some(key)) => {
                    for (k, p) in [("server.tls_cert", cert), ("server.tls_key", key)] {
                        if !Path::new(p).is_file() {
                            c.err(k, format!("file {p:?} not found"));
                        }
                    }
                    Some((PathBuf::from(cert), PathBuf::from(key)))
                }
                _ => {
                    if s.tls_cert.is_none() {
                        c.err("server.tls_cert", "required when tls_listen is set");
                    }
                    if s.tls_key.is_none() {
                        c.err("server.tls_key", "required when tls_listen is set");
                    }
                    None
                }
            }
        };
        let server = ServerSettings {
            listen,
            tls_listen,
            tls_cert_key,
            threads: nz_usize(c.range("server.threads", s.threads, 2, 1, 1024)),
            grace_period: Duration::from_secs(c.range(
                "server.grace_period_secs",
                s.grace_period_secs,
                5,
                1,
                3600,
            )),
            upgrade_sock: PathBuf::from(
                s.upgrade_sock
                    .unwrap_or_else(|| "/tmp/komora-edge-upgrade.sock".to_string()),
            ),
            pid_file: PathBuf::from(
                s.pid_file
                    .unwrap_or_else(|| "/tmp/komora-edge.pid".to_string()),
            ),
            request_header_timeout: Duration::from_secs(c.range(
                "server.request_header_timeout_secs",
                s.request_header_timeout_secs,
                DEFAULT_REQUEST_HEADER_TIMEOUT_SECS,
                1,
                3600,
            )),
        };

        let u = self.upstream.unwrap_or_default();
        let origins_raw = u
            .origins
            .unwrap_or_else(|| vec!["127.0.0.1:8081".to_string()]);
        if origins_raw.is_empty() {
            c.err("upstream.origins", "at least one origin is required");
        }
        let origins = origins_raw
            .iter()
            .enumerate()
            .filter_map(|(i, o)| c.host_port(&format!("upstream.origins[{i}]"), o))
            .collect();
        let upstream = UpstreamSettings {
            origins,
            health_check_interval: Duration::from_secs(c.range(
                "upstream.health_check_interval_secs",
                u.health_check_interval_secs,
                5,
                1,
                3600,
            )),
            connect_timeout: Duration::from_millis(c.range(
                "upstream.connect_timeout_ms",
                u.connect_timeout_ms,
                2000,
                1,
                600_000,
            )),
            read_timeout: Duration::from_millis(c.range(
                "upstream.read_timeout_ms",
                u.read_timeout_ms,
                30_000,
                1,
                3_600_000,
            )),
        };

        let k = self.cache.unwrap_or_default();
        let dir = k.dir.unwrap_or_else(|| "/var/cache/komora".to_string());
        if dir.is_empty() {
            c.err("cache.dir", "must not be empty");
        }
        let m = k.memory.unwrap_or_default();
        let mem_cap = m.max_capacity.unwrap_or(256 << 20);
        if mem_cap == 0 {
            c.err("cache.memory.max_capacity", "must be > 0");
        }
        // Only meaningful against a valid capacity; a zero capacity is reported above.
        let mem_obj = if mem_cap == 0 {
            m.max_object_size.unwrap_or(0)
        } else {
            c.range(
                "cache.memory.max_object_size",
                m.max_object_size,
                (1 << 20u64).min(mem_cap),
                0,
                mem_cap,
            )
        };
        let sendfile_min = c.range(
            "cache.memory.sendfile_min_size",
            m.sendfile_min_size,
            (32 << 10u64).min(mem_obj),
            0,
            mem_obj,
        );
        let sendfile_max_open = c.range(
            "cache.memory.sendfile_max_open_files",
            m.sendfile_max_open_files,
            4096,
            0,
            1_000_000,
        );
        let d = k.disk.unwrap_or_default();
        let disk_cap = d.max_capacity.unwrap_or(10 << 30);
        if disk_cap == 0 {
            c.err("cache.disk.max_capacity", "must be > 0");
        }
        let cache = CacheSettings {
            dir: PathBuf::from(dir),
            lock_age_timeout: Duration::from_millis(c.range(
                "cache.lock_age_timeout_ms",
                k.lock_age_timeout_ms,
                10_000,
                1,
                600_000,
            )),
            lock_wait_timeout: Duration::from_millis(c.range(
                "cache.lock_wait_timeout_ms",
                k.lock_wait_timeout_ms,
                10_000,
                1,
                600_000,
            )),
            streaming_fill: k.streaming_fill.unwrap_or(true),
            sendfile_min_size: (sendfile_min > 0).then_some(sendfile_min),
            sendfile_max_open_files: usize::try_from(sendfile_max_open).unwrap_or(usize::MAX),
            memory_max_capacity: nz_u64(mem_cap),
            memory_max_object_size: mem_obj,
            disk_max_capacity: nz_u64(disk_cap),
            disk_chunk_size: nz_usize(c.range(
                "cache.disk.chunk_size",
                d.chunk_size,
                256 << 10,
                4096,
                16 << 20,
            )),
        };

        let raw_routes = self.route.unwrap_or_else(|| {
            let deny = |p: &str| RawRoute {
                prefix: Some(p.to_string()),
                mode: Some("deny".to_string()),
                ..Default::default()
            };
            vec![
                // The origin's probes, metrics and queue admin API are not for the internet.
                deny(DENY_METRICS),
                deny(DENY_READYZ),
                deny(DENY_ADMIN),
                RawRoute {
                    prefix: Some("/media/".to_string()),
                    client_max_age_secs: Some(604_800),
                    ..Default::default()
                },
                RawRoute {
                    prefix: Some("/".to_string()),
                    mode: Some("bypass".to_string()),
                    ..Default::default()
                },
            ]
        });
        let mut routes = Vec::new();
        for (i, r) in raw_routes.into_iter().enumerate() {
            let key = |f: &str| format!("route[{i}].{f}");
            let prefix = match r.prefix {
                Some(p) if p.starts_with('/') => Some(p),
                Some(p) => {
                    c.err(key("prefix"), format!("must start with '/', got {p:?}"));
                    None
                }
                None => {
                    c.err(key("prefix"), "required");
                    None
                }
            };
            if let Some(p) = &prefix {
                if routes.iter().any(|x: &Route| &x.prefix == p) {
                    c.err(key("prefix"), format!("duplicate prefix {p:?}"));
                }
            }
            let mode = match r.mode.as_deref().unwrap_or("cache") {
                "cache" => RouteMode::Cache,
                "bypass" => RouteMode::Bypass,
                "deny" => RouteMode::Deny,
                other => {
                    c.err(
                        key("mode"),
                        format!("must be \"cache\", \"bypass\" or \"deny\", got {other:?}"),
                    );
                    RouteMode::Bypass
                }
            };
            let secs = |c: &mut Checker, f: &str, v, d| {
                Duration::from_secs(c.range(&key(f), v, d, 0, MAX_SECS))
            };
            let default_ttl = secs(&mut c, "default_ttl_secs", r.default_ttl_secs, 604_800);
            let stale_if_error = secs(&mut c, "stale_if_error_secs", r.stale_if_error_secs, 86_400);
            let stale_while_revalidate = secs(
                &mut c,
                "stale_while_revalidate_secs",
                r.stale_while_revalidate_secs,
                0,
            );
            let cma = secs(&mut c, "client_max_age_secs", r.client_max_age_secs, 0);
            let media = prefix.as_deref().is_some_and(|p| p.starts_with("/media/"));
            let cache_key_query = match r.cache_key_query {
                None if media => KeyQuery::None,
                None => KeyQuery::All,
                Some(RawKeyQuery::Mode(m)) => match m.as_str() {
                    "all" => KeyQuery::All,
                    "none" => KeyQuery::None,
                    other => {
                        c.err(
                            key("cache_key_query"),
                            format!("must be \"all\", \"none\" or a list of names, got {other:?}"),
                        );
                        KeyQuery::All
                    }
                },
                Some(RawKeyQuery::Names(names)) => {
                    let bad = names
                        .iter()
                        .find(|n| n.is_empty() || n.contains(['&', '=', '#']));
                    if let Some(n) = bad {
                        c.err(
                            key("cache_key_query"),
                            format!("{n:?} is not a query parameter name"),
                        );
                    }
                    KeyQuery::Keep(names)
                }
            };
            let keys_env = r
                .signing_keys_env
                .unwrap_or_else(|| crate::signing::DEFAULT_KEYS_ENV.to_string());
            if keys_env.is_empty() {
                c.err(key("signing_keys_env"), "must not be empty");
            }
            let signed = if r.signed_urls.unwrap_or(false) {
                let value = std::env::var(&keys_env).ok();
                match crate::signing::UrlVerifier::from_value(&keys_env, value.as_deref()) {
                    Ok(v) => Some(std::sync::Arc::new(v)),
                    Err(e) => {
                        c.err(key("signed_urls"), e);
                        None
                    }
                }
            } else {
                None
            };
            let percent = c.range(&key("heuristic_percent"), r.heuristic_percent, 0, 0, 100);
            let heuristic_max = secs(
                &mut c,
                "heuristic_max_secs",
                r.heuristic_max_secs,
                crate::rfc::DEFAULT_HEURISTIC_MAX_SECS,
            );
            let semantics = crate::rfc::Semantics {
                store_any_status: r.store_any_status.unwrap_or(false),
                heuristic: (percent > 0).then(|| crate::rfc::Heuristic {
                    percent: u32::try_from(percent).unwrap_or(100),
                    max: heuristic_max,
                }),
                request_directives: r.request_directives.unwrap_or(false),
                targeted: match r.targeted_fields {
                    None => vec![http::header::HeaderName::from_static(
                        crate::rfc::DEFAULT_TARGETED_FIELD,
                    )],
                    Some(names) => names
                        .iter()
                        .filter_map(|n| match http::header::HeaderName::try_from(n.as_str()) {
                            Ok(h) => Some(h),
                            Err(_) => {
                                c.err(key("targeted_fields"), format!("not a header name: {n:?}"));
                                None
                            }
                        })
                        .collect(),
                },
            };
            let Some(prefix) = prefix else { continue };
            routes.push(Route {
                prefix,
                mode,
                default_ttl,
                stale_if_error,
                stale_while_revalidate,
                client_max_age: (!cma.is_zero()).then_some(cma),
                cache_key_query,
                signed,
                semantics,
            });
        }
        routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));

        let a = self.admin.unwrap_or_default();
        let admin = AdminSettings {
            listen: a.listen.as_deref().and_then(|l| c.addr("admin.listen", l)),
            token_env: match a.token_env {
                Some(t) if t.is_empty() => {
                    c.err("admin.token_env", "must not be empty");
                    t
                }
                Some(t) => t,
                None => "KOMORA_ADMIN_TOKEN".to_string(),
            },
        };

        let l = self.access_log.unwrap_or_default();
        let format = match l.format.as_deref().unwrap_or("combined") {
            "combined" => AccessLogFormat::Combined,
            "json" => AccessLogFormat::Json,
            other => {
                c.err(
                    "access_log.format",
                    format!("must be \"combined\" or \"json\", got {other:?}"),
                );
                AccessLogFormat::Combined
            }
        };
        let queue_lines = nz_usize(c.range(
            "access_log.queue_lines",
            l.queue_lines,
            DEFAULT_ACCESS_LOG_QUEUE_LINES,
            1,
            MAX_ACCESS_LOG_QUEUE_LINES,
        ));
        let access_log = match l.path.as_deref() {
            None => None,
            Some("") => {
                c.err(
                    "access_log.path",
                    "must not be empty (a file path, or \"-\" for stdout)",
                );
                None
            }
            Some(p) => Some(AccessLogSettings {
                target: if p == "-" {
                    AccessLogTarget::Stdout
                } else {
                    AccessLogTarget::File(PathBuf::from(p))
                },
                format,
                queue_lines,
            }),
        };

        if c.errors.is_empty() {
            Ok(EdgeConfig {
                server,
                upstream,
                cache,
                routes,
                admin,
                access_log,
            })
        } else {
            Err(ConfigErrors {
                source: source.to_string(),
                errors: c.errors,
            })
        }
    }
}

impl EdgeConfig {
    /// Load `path` (or built-in defaults when `None`), apply overrides, validate.
    pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigErrors> {
        let (mut raw, source) = match path {
            Some(p) => (RawConfig::load(p)?, p.display().to_string()),
            None => (RawConfig::default(), "<defaults>".to_string()),
        };
        raw.apply(overrides);
        raw.validate(&source)
    }

    /// One line per signed route whose keys are missing from the environment: the edge
    /// refuses to serve them (nothing would verify), `--check-config` warns.
    pub fn missing_signing_keys(&self) -> Vec<String> {
        self.routes
            .iter()
            .filter_map(|r| {
                let v = r.signed.as_ref().filter(|v| !v.has_keys())?;
                Some(format!(
                    "route {:?}: signed_urls = true, but {} is unset or empty \
                     (set it to the origin's KOMORA_MEDIA_SIGNING_KEYS)",
                    r.prefix, v.env
                ))
            })
            .collect()
    }

    /// The route for a request path: longest matching prefix, `None` when nothing matches.
    pub fn route(&self, path: &str) -> Option<&Route> {
        self.routes.iter().find(|r| path.starts_with(&r.prefix))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        let c = EdgeConfig::load(None, &Overrides::default()).unwrap(); // unwrap: test-only
        assert_eq!(c.server.grace_period, Duration::from_secs(5));
        assert_eq!(c.route("/media/abc").unwrap().mode, RouteMode::Cache); // unwrap: test-only
        assert_eq!(c.route("/api/x").unwrap().mode, RouteMode::Bypass); // unwrap: test-only
    }

    #[test]
    fn defaults_deny_internal_paths_and_bound_request_heads() {
        let c = EdgeConfig::load(None, &Overrides::default()).unwrap(); // unwrap: test-only
        for p in ["/metrics", "/readyz", "/admin/queues"] {
            assert_eq!(c.route(p).unwrap().mode, RouteMode::Deny, "{p}"); // unwrap: test-only
        }
        assert_eq!(c.route("/media/x").unwrap().mode, RouteMode::Cache); // unwrap: test-only
        assert_eq!(c.server.request_header_timeout, Duration::from_secs(10));
        let e = RawConfig::parse(
            "t.toml",
            "[server]\nrequest_header_timeout_secs = 0\n[[route]]\nprefix = \"/\"\nmode = \"nope\"\n",
        )
        .unwrap() // unwrap: test-only
        .validate("t.toml")
        .unwrap_err();
        let keys: Vec<_> = e.errors.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            ["server.request_header_timeout_secs", "route[0].mode"],
            "{e}"
        );
        assert!(e.to_string().contains("\"deny\""), "{e}");
    }

    #[test]
    fn every_error_has_its_key_path() {
        let raw = RawConfig::parse(
            "t.toml",
            r#"
            [server]
            listen = ["nope"]
            threads = 0
            [cache.memory]
            max_capacity = 0
            [[route]]
            prefix = "media"
            "#,
        )
        .unwrap(); // unwrap: test-only
        let e = raw.validate("t.toml").unwrap_err();
        let keys: Vec<_> = e.errors.iter().map(|e| e.key.as_str()).collect();
        assert!(keys.contains(&"server.listen[0]"), "{keys:?}");
        assert!(keys.contains(&"server.threads"), "{keys:?}");
        assert!(keys.contains(&"cache.memory.max_capacity"), "{keys:?}");
        assert!(keys.contains(&"route[0].prefix"), "{keys:?}");
        assert!(e
            .to_string()
            .contains("t.toml: cache.memory.max_capacity: must be > 0"));
    }

    #[test]
    fn http_semantics_route_keys() {
        let c = EdgeConfig::load(None, &Overrides::default()).unwrap(); // unwrap: test-only
        let media = &c.route("/media/x").unwrap().semantics; // unwrap: test-only
        assert!(!media.store_any_status && !media.request_directives);
        assert!(media.heuristic.is_none());
        assert_eq!(media.targeted, ["cdn-cache-control"]);
        let c = RawConfig::parse(
            "t.toml",
            "[[route]]\nprefix = \"/\"\nstore_any_status = true\nheuristic_percent = 10\n\
             request_directives = true\ntargeted_fields = [\"Edge-CC\", \"CDN-Cache-Control\"]\n",
        )
        .unwrap() // unwrap: test-only
        .validate("t.toml")
        .unwrap(); // unwrap: test-only
        let s = &c.route("/x").unwrap().semantics; // unwrap: test-only
        assert!(s.store_any_status && s.request_directives);
        let h = s.heuristic.unwrap(); // unwrap: test-only
        assert_eq!((h.percent, h.max), (10, Duration::from_secs(86_400)));
        assert_eq!(s.targeted, ["edge-cc", "cdn-cache-control"]);
        let e = RawConfig::parse(
            "t.toml",
            "[[route]]\nprefix = \"/\"\nheuristic_percent = 101\ntargeted_fields = [\"a b\"]\n",
        )
        .unwrap() // unwrap: test-only
        .validate("t.toml")
        .unwrap_err();
        let keys: Vec<_> = e.errors.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            ["route[0].heuristic_percent", "route[0].targeted_fields"],
            "{e}"
        );
    }

    #[test]
    fn unknown_keys_are_errors() {
        let e = RawConfig::parse(
            "t.toml",
            "top = 1\n[cache]\nbogus = 1\n[cache.memory]\nx = 2\n[[route]]\nprefix = \"/\"\ny = 3\n",
        )
        .unwrap_err();
        let keys: Vec<_> = e.errors.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys.len(), 4, "{e}");
        for k in ["top", "cache.bogus", "cache.memory.x", "route[0].y"] {
            assert!(keys.contains(&k), "{k} missing: {e}");
        }
    }

    #[test]
    fn unknown_keys_and_value_errors_reported_together() {
        let e = RawConfig::parse("t.toml", "[server]\nthreads = 0\nbogus = 1\n").unwrap_err();
        let keys: Vec<_> = e.errors.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["server.bogus", "server.threads"], "{e}");
    }

    #[test]
    fn type_errors_name_their_table() {
        let e = RawConfig::parse("t.toml", "[cache.disk]\nmax_capacity = \"big\"\n").unwrap_err();
        assert_eq!(e.errors[0].key, "cache.disk", "{e}");
    }
}
