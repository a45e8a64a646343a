//! `[server]`, `[upstream]` and `[admin]` validated into listeners, peers and timeouts.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::check::{nz_usize, Checker};
use super::defaults::*;
use super::file::{AddrList, RawAdmin, RawServer, RawUpstream};

/// Validated `[server]`.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// Idle time after which a connection with no request in flight is closed.
    pub keepalive_timeout: Duration,
}

/// Validated `[upstream]`.
#[derive(Debug, Clone, PartialEq, Eq)]
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

/// Validated `[admin]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSettings {
    /// Admin listener, `None` disables it.
    pub listen: Option<SocketAddr>,
    /// Environment variable with the bearer token.
    pub token_env: String,
}

/// Validates `[server]`.
pub(super) fn validate_server(c: &mut Checker, s: RawServer) -> ServerSettings {
    let listen_raw = s
        .listen
        .map_or_else(|| vec![DEFAULT_LISTEN.to_string()], AddrList::into_vec);
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
    ServerSettings {
        listen,
        tls_listen,
        tls_cert_key,
        threads: nz_usize(c.range(
            "server.threads",
            s.threads,
            default_threads(),
            1,
            MAX_THREADS,
        )),
        grace_period: Duration::from_secs(c.range(
            "server.grace_period_secs",
            s.grace_period_secs,
            DEFAULT_GRACE_PERIOD_SECS,
            1,
            3600,
        )),
        upgrade_sock: PathBuf::from(
            s.upgrade_sock
                .unwrap_or_else(|| DEFAULT_UPGRADE_SOCK.to_string()),
        ),
        pid_file: PathBuf::from(s.pid_file.unwrap_or_else(|| DEFAULT_PID_FILE.to_string())),
        request_header_timeout: Duration::from_secs(c.range(
            "server.request_header_timeout_secs",
            s.request_header_timeout_secs,
            DEFAULT_REQUEST_HEADER_TIMEOUT_SECS,
            1,
            3600,
        )),
        keepalive_timeout: Duration::from_secs(c.range(
            "server.keepalive_timeout_secs",
            s.keepalive_timeout_secs,
            DEFAULT_KEEPALIVE_TIMEOUT_SECS,
            1,
            3600,
        )),
    }
}

/// Validates `[upstream]`.
pub(super) fn validate_upstream(c: &mut Checker, u: RawUpstream) -> UpstreamSettings {
    let origins_raw = u
        .origins
        .unwrap_or_else(|| vec![DEFAULT_ORIGIN.to_string()]);
    if origins_raw.is_empty() {
        c.err("upstream.origins", "at least one origin is required");
    }
    let origins = origins_raw
        .iter()
        .enumerate()
        .filter_map(|(i, o)| c.host_port(&format!("upstream.origins[{i}]"), o))
        .collect();
    UpstreamSettings {
        origins,
        health_check_interval: Duration::from_secs(c.range(
            "upstream.health_check_interval_secs",
            u.health_check_interval_secs,
            DEFAULT_HEALTH_CHECK_INTERVAL_SECS,
            1,
            3600,
        )),
        connect_timeout: Duration::from_millis(c.range(
            "upstream.connect_timeout_ms",
            u.connect_timeout_ms,
            DEFAULT_CONNECT_TIMEOUT_MS,
            1,
            600_000,
        )),
        read_timeout: Duration::from_millis(c.range(
            "upstream.read_timeout_ms",
            u.read_timeout_ms,
            DEFAULT_READ_TIMEOUT_MS,
            1,
            3_600_000,
        )),
    }
}

/// Validates `[admin]`.
pub(super) fn validate_admin(c: &mut Checker, a: RawAdmin) -> AdminSettings {
    AdminSettings {
        listen: a.listen.as_deref().and_then(|l| c.addr("admin.listen", l)),
        token_env: match a.token_env {
            Some(t) if t.is_empty() => {
                c.err("admin.token_env", "must not be empty");
                t
            }
            Some(t) => t,
            None => DEFAULT_ADMIN_TOKEN_ENV.to_string(),
        },
    }
}
