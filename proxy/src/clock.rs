//! Wall-clock time in one place: Unix seconds and milliseconds for the edge's own code, and
//! the switch for the edge tests' virtual time.
//!
//! Cache freshness is not read from here: pingora 0.9.1 reads `SystemTime::now()` itself
//! (freshness, stale windows, `Age`), and a process-wide fake clock could not reach it. The
//! edge tests instead move the *cache* through time: [`TEST_CLOCK_ENV`] enables the admin
//! endpoint `POST /clock/advance?ms=N`, which makes every stored entry `N` ms older (see
//! `TieredStorage::advance_clock`), the same to pingora and to our RFC code as waiting that
//! long. It is a test hook: off unless the variable is exactly `1`, and logged as a warning
//! at startup when on.

use std::time::{Duration, SystemTime};

/// Environment variable that enables the test clock hook (value `1`).
pub const TEST_CLOCK_ENV: &str = "KOMORA_EDGE_TEST_CLOCK";

/// Time since the Unix epoch (zero if the system clock is before it).
fn since_epoch() -> Duration {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    since_epoch().as_secs()
}

/// Milliseconds since the Unix epoch.
pub fn unix_now_ms() -> u64 {
    u64::try_from(since_epoch().as_millis()).unwrap_or(u64::MAX)
}

/// Whether this process was started with the test clock hook enabled.
pub fn test_clock_enabled() -> bool {
    std::env::var_os(TEST_CLOCK_ENV).is_some_and(|v| v == "1")
}
