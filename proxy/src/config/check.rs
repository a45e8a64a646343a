//! The validation helper every section uses: it collects each problem with its key path.

use std::net::{SocketAddr, ToSocketAddrs};
use std::num::{NonZeroU64, NonZeroUsize};

use super::ConfigError;

/// Largest duration in seconds any key accepts (a year).
pub(super) const MAX_SECS: u64 = 31_536_000;

/// Collects every validation problem of one file, each with its key path.
pub(super) struct Checker {
    pub(super) errors: Vec<ConfigError>,
}

impl Checker {
    pub(super) fn err(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError::new(key, message));
    }

    pub(super) fn range(
        &mut self,
        key: &str,
        v: Option<u64>,
        default: u64,
        min: u64,
        max: u64,
    ) -> u64 {
        let v = v.unwrap_or(default);
        if v < min || v > max {
            self.err(key, format!("must be in {min}..={max}, got {v}"));
            return default;
        }
        v
    }

    pub(super) fn addr(&mut self, key: &str, s: &str) -> Option<SocketAddr> {
        match s.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                self.err(key, format!("must be IP:PORT, got {s:?}"));
                None
            }
        }
    }

    pub(super) fn host_port(&mut self, key: &str, s: &str) -> Option<String> {
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

pub(super) fn nz_u64(v: u64) -> NonZeroU64 {
    NonZeroU64::new(v).unwrap_or(NonZeroU64::MIN)
}

pub(super) fn nz_usize(v: u64) -> NonZeroUsize {
    NonZeroUsize::new(usize::try_from(v).unwrap_or(usize::MAX)).unwrap_or(NonZeroUsize::MIN)
}
