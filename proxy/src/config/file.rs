//! The edge's config file as written: serde structs that mirror `config/edge.toml` one to one
//! (`deny_unknown_fields`; every field optional, its default named in its doc and applied
//! by validation), read through the workspace's loader (`komora_config::parse`), and the
//! command-line overrides applied over them.

use serde::{Deserialize, Serialize};
use std::path::Path;

#[allow(unused_imports)] // the defaults are named in the field docs
use super::defaults::*;
use super::{ConfigError, ConfigErrors, Overrides};

/// An address list that may also be written as a single string (`listen = "0.0.0.0:8080"`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum AddrList {
    /// `"IP:PORT"`
    One(String),
    /// `["IP:PORT", ...]`
    Many(Vec<String>),
}

impl AddrList {
    pub(super) fn into_vec(self) -> Vec<String> {
        match self {
            AddrList::One(s) => vec![s],
            AddrList::Many(v) => v,
        }
    }
}

/// `[server]`: listeners and pingora server settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// Plain HTTP listen addresses. Unit: `IP:PORT`. Default `["0.0.0.0:8080"]` ([`DEFAULT_LISTEN`]). At least one
    /// of `listen` / `tls_listen` must be non-empty.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<AddrList>,
    /// HTTPS listen addresses (rustls, HTTP/2 offered over ALPN), a string or a list.
    /// Default `[]` (no TLS).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_listen: Option<AddrList>,
    /// PEM certificate chain for `tls_listen`. Path. Required when `tls_listen` is non-empty.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<String>,
    /// PEM private key for `tls_listen`. Path. Required when `tls_listen` is non-empty.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<String>,
    /// Worker threads per service. Count. Default: the CPUs this process may run on
    /// ([`default_threads`]), range 1..=1024.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threads: Option<u64>,
    /// Time SIGTERM waits for in-flight requests before exit. Seconds. Default 5
    /// ([`DEFAULT_GRACE_PERIOD_SECS`]), range 1..=3600.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grace_period_secs: Option<u64>,
    /// Unix socket used to hand listeners to a new process on upgrade. Path.
    /// Default `/tmp/komora-edge-upgrade.sock` ([`DEFAULT_UPGRADE_SOCK`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upgrade_sock: Option<String>,
    /// PID file written when daemonized. Path. Default `/tmp/komora-edge.pid`
    /// ([`DEFAULT_PID_FILE`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid_file: Option<String>,
    /// Total time a client has to send a whole request head (request line and headers),
    /// counted from the connection's accept for its first request and from the first byte
    /// for later ones; past it the edge answers 408 and closes (slow-header clients). On
    /// HTTP/2 it bounds the preface and first header block from accept, then each later
    /// header block (HEADERS + CONTINUATION frames); past it the connection is closed.
    /// Seconds. Default 10 ([`DEFAULT_REQUEST_HEADER_TIMEOUT_SECS`]), range 1..=3600.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_header_timeout_secs: Option<u64>,
    /// How long a connection may wait with no request in flight before the edge closes it:
    /// an HTTP/1.x keep-alive connection between requests, an HTTP/2 connection with no
    /// open stream. Seconds. Default 60 ([`DEFAULT_KEEPALIVE_TIMEOUT_SECS`]), range
    /// 1..=3600.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keepalive_timeout_secs: Option<u64>,
}

/// `[upstream]`: origin peers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    /// Origin peers, round-robin among healthy ones. Unit: `HOST:PORT`.
    /// Default `["127.0.0.1:8081"]` ([`DEFAULT_ORIGIN`]), at least one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origins: Option<Vec<String>>,
    /// TCP health-check period per origin. Seconds. Default 5
    /// ([`DEFAULT_HEALTH_CHECK_INTERVAL_SECS`]), range 1..=3600.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_check_interval_secs: Option<u64>,
    /// Connect timeout to an origin. Milliseconds. Default 2000
    /// ([`DEFAULT_CONNECT_TIMEOUT_MS`]), range 1..=600000.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect_timeout_ms: Option<u64>,
    /// Read timeout (idle, per read) from an origin. Milliseconds. Default 30000
    /// ([`DEFAULT_READ_TIMEOUT_MS`]), range 1..=3600000.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_timeout_ms: Option<u64>,
}

/// `[cache.memory]`: the in-RAM tier.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawMemory {
    /// Memory tier budget (moka `max_capacity` with a byte weigher). Bytes.
    /// Default 268435456 (256 MiB, [`DEFAULT_MEMORY_MAX_CAPACITY`]), must be > 0.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_capacity: Option<u64>,
    /// Largest body kept in (or promoted to) memory; larger bodies stream from disk in chunks.
    /// Bytes. Default 1048576 (1 MiB, [`DEFAULT_MEMORY_MAX_OBJECT_SIZE`]), range
    /// 0..=max_capacity.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_object_size: Option<u64>,
    /// Memory hits with a body of at least this size, on plain-HTTP/1.1 keep-alive
    /// connections, are sent with sendfile(2) from the entry's disk file instead of copying
    /// the in-memory bytes into the socket (TLS and HTTP/2 always copy). Bytes. Default
    /// 32768 ([`DEFAULT_SENDFILE_MIN_SIZE`]), range 0..=max_object_size; 0 turns zero-copy off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sendfile_min_size: Option<u64>,
    /// Hits with a body larger than this (memory entries, and disk objects above
    /// `max_object_size`) are copied into the socket even on those connections, disk bodies
    /// read in 256 KiB steps: on loopback TCP here sendfile of 1 MiB ran at a third of the
    /// copy's rate while up to 512 KiB it beat it (bench/README-edge.md, "2026-12-03").
    /// Bytes. Default 524288 ([`DEFAULT_SENDFILE_MAX_SIZE`], raised to `sendfile_min_size`
    /// when that is larger), range sendfile_min_size and up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sendfile_max_size: Option<u64>,
    /// At most this many entry files are held open for zero-copy sends (each memory entry
    /// of at least `sendfile_min_size` holds one). Count. Default 4096
    /// ([`DEFAULT_SENDFILE_MAX_OPEN_FILES`]), range 0..=1000000;
    /// keep it well below the process's open-file limit, which the edge raises to its hard
    /// limit at start. A held file the disk tier evicts, purges or rewrites stays allocated
    /// until its memory entry goes: disk use can exceed the disk budget by up to the memory
    /// tier's `max_capacity`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sendfile_max_open_files: Option<u64>,
}

/// `[cache.disk]`: the on-disk tier.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawDisk {
    /// Disk tier budget; least recently used entries are evicted above it. Bytes.
    /// Default 10737418240 (10 GiB, [`DEFAULT_DISK_MAX_CAPACITY`]), must be > 0.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_capacity: Option<u64>,
    /// Read size when streaming a large body from disk. Bytes. Default 262144 (256 KiB,
    /// [`DEFAULT_DISK_CHUNK_SIZE`]), range 4096..=16777216.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chunk_size: Option<u64>,
}

/// `[cache]`: storage location, tiers and the cache lock.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawCache {
    /// Cache directory (created if missing). Path. Default `/var/cache/komora`
    /// ([`DEFAULT_CACHE_DIR`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dir: Option<String>,
    /// How long a cache-lock writer may fill before waiters give up on it. Milliseconds.
    /// Default 10000 ([`DEFAULT_LOCK_AGE_TIMEOUT_MS`]), range 1..=600000.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lock_age_timeout_ms: Option<u64>,
    /// How long a request waits on another request's fill before going to the origin itself.
    /// Milliseconds. Default 10000 ([`DEFAULT_LOCK_WAIT_TIMEOUT_MS`]), range 1..=600000.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lock_wait_timeout_ms: Option<u64>,
    /// Let readers of an object being filled stream the bytes already written instead of
    /// waiting for the whole body. Boolean, default true ([`DEFAULT_STREAMING_FILL`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub streaming_fill: Option<bool>,
    /// Memory tier.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<RawMemory>,
    /// Disk tier.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk: Option<RawDisk>,
}

/// `[[route]]`: policy for one request path prefix; the longest matching prefix wins.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// Request path prefix, must start with `/`. Required.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// `"cache"` (store cacheable GET/HEAD responses), `"bypass"` (pass through, never
    /// stored) or `"deny"` (answered 404 by the edge, never sent to the origin: internal
    /// paths). Default `"cache"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Freshness when the origin sends neither Cache-Control max-age nor Expires (nginx
    /// `proxy_cache_valid`). Seconds. Default 604800 (7 d, [`DEFAULT_TTL_SECS`]), range 0..=31536000.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_ttl_secs: Option<u64>,
    /// How long past expiry a stale copy may be served when the origin is down or answers 5xx,
    /// unless the origin sends `stale-if-error`. Seconds. Default 86400
    /// ([`DEFAULT_STALE_IF_ERROR_SECS`]), range 0..=31536000.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stale_if_error_secs: Option<u64>,
    /// How long past expiry a stale copy is served while one background refresh runs, unless
    /// the origin sends `stale-while-revalidate`. Seconds. Default 0
    /// ([`DEFAULT_STALE_WHILE_REVALIDATE_SECS`]), range 0..=31536000.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stale_while_revalidate_secs: Option<u64>,
    /// When > 0, successful responses on this route go to clients with
    /// `Cache-Control: public, max-age=N, immutable` and `Expires: now+N` (nginx `expires`).
    /// Seconds. Default 0 (origin headers pass through, [`DEFAULT_CLIENT_MAX_AGE_SECS`]),
    /// range 0..=31536000.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_max_age_secs: Option<u64>,
    /// Which query parameters are part of the cache key: `"all"`, `"none"` (the path alone:
    /// `?cb=1`, `?cb=2` and every signature are one entry and one origin fetch), or a list of
    /// parameter names kept (in request order). Default `"none"` for a prefix starting with
    /// `/media/` (content-addressed: the path is the object), `"all"` otherwise. The origin
    /// always gets the request's own URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_key_query: Option<RawKeyQuery>,
    /// Require signed URLs (`?exp=<unix s>&sig=<hex HMAC-SHA256(key, "<last path
    /// segment>.<exp>")>`, as the origin's `media.signed_urls` makes them): anything else gets
    /// 403 before any cache lookup or origin request; verified responses reach the browser
    /// as `Cache-Control: private, max-age=<seconds until exp>` instead of the route's
    /// `client_max_age_secs`, while the edge keeps its own copy for `default_ttl_secs`.
    /// Boolean, default false. The edge refuses to start when the keys are missing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signed_urls: Option<bool>,
    /// Environment variable with the verifying keys: comma-separated, at least 32 bytes each
    /// (the origin's `KOMORA_MEDIA_SIGNING_KEYS`). Default `"KOMORA_MEDIA_SIGNING_KEYS"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signing_keys_env: Option<String>,
    // HTTP caching choices the RFCs leave to the cache (MAY); see `crate::rfc::Semantics`.
    /// Store a final response of any status when it has explicit freshness (`s-maxage`,
    /// `max-age`, `Expires`; RFC 9111 §3). Default false: only 200 is stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store_any_status: Option<bool>,
    /// Heuristic freshness (RFC 9111 §4.2.2) for heuristically cacheable statuses without
    /// explicit freshness: this percent of `Date − Last-Modified`. Percent, default 0 (off:
    /// `default_ttl_secs` applies to a 200 instead; [`DEFAULT_HEURISTIC_PERCENT`]), range 0..=100.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heuristic_percent: Option<u64>,
    /// Cap of a heuristic lifetime. Seconds, default 86400, range 0..=31536000.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heuristic_max_secs: Option<u64>,
    /// Honor the client's `Cache-Control` request directives (`max-age`, `min-fresh`,
    /// `max-stale`, `no-cache`, `no-store`, `only-if-cached`; RFC 9111 §5.2.1). Default false:
    /// a shared cache may ignore them, and any client could otherwise force origin fetches.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_directives: Option<bool>,
    /// Targeted cache-control fields (RFC 9213) that, when present, govern this edge instead
    /// of `Cache-Control`/`Expires` and are not forwarded; first present one wins. Header
    /// names, default `["CDN-Cache-Control"]`, `[]` turns targeted fields off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub targeted_fields: Option<Vec<String>>,
}

/// `cache_key_query` as written: `"all"`, `"none"`, or `["name", ...]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum RawKeyQuery {
    /// `"all"` or `"none"`.
    Mode(String),
    /// Parameter names kept in the key.
    Names(Vec<String>),
}

/// `[admin]`: purge API and Prometheus metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// Admin listen address. Unit: `IP:PORT`. Default unset (admin listener disabled).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// Environment variable holding the bearer token for purge calls. Default
    /// `KOMORA_ADMIN_TOKEN` ([`DEFAULT_ADMIN_TOKEN_ENV`]). When the variable is unset or empty, purge calls are refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
}

/// `[access_log]`: one line per request (nginx `combined` plus cache status, upstream
/// status, upstream and total time, bytes sent and request id, or one JSON object per line),
/// written by a background thread fed through a bounded queue: when the queue is full the
/// line is dropped and counted (`komora_edge_access_log_dropped_total`), never waited for.
/// The file is opened for append and reopened on SIGUSR1 (logrotate `postrotate`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccessLog {
    /// Where lines go: a file path (created if missing, appended to), or `"-"` for stdout.
    /// Default unset (no access log).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `"combined"` (nginx combined, then cache status, upstream status, upstream time and
    /// total time in seconds, bytes sent including the head, request id; `-` when unknown) or
    /// `"json"` (one object per line, the same fields by name). Default `"combined"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// Lines queued for the writer before new ones are dropped (it drains every 20 ms).
    /// Count. Default 16384 ([`DEFAULT_ACCESS_LOG_QUEUE_LINES`]), range 1..=1048576; the queue is allocated up front, about
    /// 400 bytes per line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_lines: Option<u64>,
}

/// The whole file, exactly as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// `[server]`
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<RawServer>,
    /// `[upstream]`
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<RawUpstream>,
    /// `[cache]`
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<RawCache>,
    /// `[[route]]`; default: `/media/` cached with 7 d client max-age, keyed on the path
    /// alone, not signed (the origin's private answers to signed URLs then pass through
    /// unstored), `/` bypass.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<Vec<RawRoute>>,
    /// `[admin]`
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin: Option<RawAdmin>,
    /// `[access_log]`
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_log: Option<RawAccessLog>,
}

impl RawConfig {
    /// Parse TOML text (`komora_config::parse`): a syntax error stops parsing; otherwise
    /// every key that does not deserialize (unknown, mistyped) is reported with its key
    /// path, all of them, together with the value errors of the other keys, so one
    /// `--check-config` shows everything.
    pub fn parse(source: &str, text: &str) -> Result<Self, ConfigErrors> {
        let parsed = komora_config::parse::<RawConfig>(source, text)?;
        if parsed.errors.is_empty() {
            return Ok(parsed.value);
        }
        let mut errors: Vec<ConfigError> = parsed.errors;
        if let Err(e) = parsed.value.validate(source) {
            errors.extend(e.errors);
        }
        Err(ConfigErrors::new(source, errors))
    }

    /// Read and parse a file.
    pub fn load(path: &Path) -> Result<Self, ConfigErrors> {
        Self::parse(&path.display().to_string(), &komora_config::read(path)?)
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
}
