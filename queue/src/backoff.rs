//! Retry delays: exponential backoff with jitter.
//!
//! The jitter spreads retries of tasks that failed together (a platform outage) so they do
//! not all come back in the same millisecond.

/// Delay before the retry that follows failed run number `attempt` (1-based):
/// `base * 2^(attempt-1)`, capped at `max`, then scaled by a factor in `[0.75, 1.25)` from
/// `jitter01` (a number in `[0, 1)`), and capped at `max` again.
pub fn delay_ms(attempt: i64, base_ms: u64, max_ms: u64, jitter01: f64) -> i64 {
    let shift = u32::try_from(attempt.saturating_sub(1).clamp(0, 62)).unwrap_or(62);
    let raw = base_ms.saturating_mul(1u64.checked_shl(shift).unwrap_or(u64::MAX));
    let capped = raw.min(max_ms) as f64;
    let factor = 0.75 + 0.5 * jitter01.clamp(0.0, 1.0);
    let jittered = (capped * factor).round().min(max_ms as f64).max(0.0);
    jittered as i64
}

/// [`delay_ms`] with a random jitter.
pub fn random_delay_ms(attempt: i64, base_ms: u64, max_ms: u64) -> i64 {
    delay_ms(attempt, base_ms, max_ms, rand::random::<f64>())
}

#[cfg(test)]
mod tests {
    use super::delay_ms;

    #[test]
    fn doubles_then_caps() {
        assert_eq!(delay_ms(1, 1000, 60_000, 0.5), 1000);
        assert_eq!(delay_ms(2, 1000, 60_000, 0.5), 2000);
        assert_eq!(delay_ms(3, 1000, 60_000, 0.5), 4000);
        assert_eq!(delay_ms(30, 1000, 60_000, 0.5), 60_000);
        assert_eq!(delay_ms(i64::MAX, 1000, 60_000, 0.5), 60_000);
    }

    #[test]
    fn jitter_is_within_a_quarter() {
        assert_eq!(delay_ms(1, 1000, 60_000, 0.0), 750);
        assert_eq!(delay_ms(1, 1000, 60_000, 0.999_999), 1250);
        // The cap holds after jitter too.
        assert_eq!(delay_ms(30, 1000, 60_000, 0.999), 60_000);
    }
}
