//! The edge's built-in defaults, one named constant per key: validation applies them to keys
//! the file leaves out, and the field docs in [`super::file`] name them. `config/edge.toml`
//! writes the same values out (a test holds it to that).

/// Default `server.listen`.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8080";
/// Most `server.threads`.
pub const MAX_THREADS: u64 = 1024;

/// Default `server.threads`: the CPUs this process may run on (`available_parallelism`, which
/// reads its CPU affinity and cgroup quota), at most [`MAX_THREADS`], 1 when that is unknown.
/// Not a constant: more worker threads than cores time-slice one core between them, and a
/// connection whose thread is preempted waits a whole slice (on the harness's one pinned
/// core, 2 threads had 2.5-3x the p99 of 1 on 304s at the same req/s; `bench/README-edge.md`,
/// "2026-12-04").
pub fn default_threads() -> u64 {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get() as u64)
        .min(MAX_THREADS)
}
/// Default `server.grace_period_secs`.
pub const DEFAULT_GRACE_PERIOD_SECS: u64 = 5;
/// Default `server.upgrade_sock`.
pub const DEFAULT_UPGRADE_SOCK: &str = "/tmp/komora-edge-upgrade.sock";
/// Default `server.pid_file`.
pub const DEFAULT_PID_FILE: &str = "/tmp/komora-edge.pid";
/// Default `server.request_header_timeout_secs` (nginx `client_header_timeout` is 60 s; a
/// request head is a few hundred bytes, 10 s is generous for any real client).
pub const DEFAULT_REQUEST_HEADER_TIMEOUT_SECS: u64 = 10;
/// Default `server.keepalive_timeout_secs` (nginx `keepalive_timeout` is 75 s; pingora's
/// HTTP/2 connections had none: an idle one stayed open, ~47 KiB, for as long as the client
/// kept it).
pub const DEFAULT_KEEPALIVE_TIMEOUT_SECS: u64 = 60;

/// Default `upstream.origins` (one origin).
pub const DEFAULT_ORIGIN: &str = "127.0.0.1:8081";
/// Default `upstream.health_check_interval_secs`.
pub const DEFAULT_HEALTH_CHECK_INTERVAL_SECS: u64 = 5;
/// Default `upstream.connect_timeout_ms`.
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 2_000;
/// Default `upstream.read_timeout_ms`.
pub const DEFAULT_READ_TIMEOUT_MS: u64 = 30_000;

/// Default `cache.dir`.
pub const DEFAULT_CACHE_DIR: &str = "/var/cache/komora";
/// Default `cache.lock_age_timeout_ms`.
pub const DEFAULT_LOCK_AGE_TIMEOUT_MS: u64 = 10_000;
/// Default `cache.lock_wait_timeout_ms`.
pub const DEFAULT_LOCK_WAIT_TIMEOUT_MS: u64 = 10_000;
/// Default `cache.streaming_fill`.
pub const DEFAULT_STREAMING_FILL: bool = true;
/// Default `cache.memory.max_capacity` (256 MiB).
pub const DEFAULT_MEMORY_MAX_CAPACITY: u64 = 256 << 20;
/// Default `cache.memory.max_object_size` (1 MiB; capped at `max_capacity`).
pub const DEFAULT_MEMORY_MAX_OBJECT_SIZE: u64 = 1 << 20;
/// Default `cache.memory.sendfile_min_size` (32 KiB; capped at `max_object_size`).
pub const DEFAULT_SENDFILE_MIN_SIZE: u64 = 32 << 10;
/// Default `cache.memory.sendfile_max_size` (512 KiB; at least sendfile_min_size).
pub const DEFAULT_SENDFILE_MAX_SIZE: u64 = 512 << 10;
/// Default `cache.memory.sendfile_max_open_files`.
pub const DEFAULT_SENDFILE_MAX_OPEN_FILES: u64 = 4096;
/// Default `cache.disk.max_capacity` (10 GiB).
pub const DEFAULT_DISK_MAX_CAPACITY: u64 = 10 << 30;
/// Default `cache.disk.chunk_size` (256 KiB).
pub const DEFAULT_DISK_CHUNK_SIZE: u64 = 256 << 10;

/// Default `route[].default_ttl_secs` (7 days).
pub const DEFAULT_TTL_SECS: u64 = 604_800;
/// Default `route[].stale_if_error_secs` (1 day).
pub const DEFAULT_STALE_IF_ERROR_SECS: u64 = 86_400;
/// Default `route[].stale_while_revalidate_secs` (off).
pub const DEFAULT_STALE_WHILE_REVALIDATE_SECS: u64 = 0;
/// Default `route[].client_max_age_secs` (0: the origin's headers pass through).
pub const DEFAULT_CLIENT_MAX_AGE_SECS: u64 = 0;
/// `client_max_age_secs` of the default `/media/` route (7 days).
pub const DEFAULT_MEDIA_CLIENT_MAX_AGE_SECS: u64 = 604_800;
/// Default `route[].heuristic_percent` (0: heuristic freshness off).
pub const DEFAULT_HEURISTIC_PERCENT: u64 = 0;

/// Default `admin.token_env`.
pub const DEFAULT_ADMIN_TOKEN_ENV: &str = "KOMORA_ADMIN_TOKEN";

/// Default `access_log.queue_lines`.
pub const DEFAULT_ACCESS_LOG_QUEUE_LINES: u64 = 16_384;
/// Largest `access_log.queue_lines`.
pub const MAX_ACCESS_LOG_QUEUE_LINES: u64 = 1 << 20;
