//! Which queue a claim goes to: weighted round-robin between high, default and low.
//!
//! Of every `high + default + low` claim slots, `high` go to the high queue first, then
//! `default`, then `low` (so with 6:3:1 low still gets one slot in ten and never starves).
//! A queue with nothing due gives its slot to the next queue in priority order, so an idle
//! system serves whatever is there at once (the worker's claim does that fall-through).

use std::sync::atomic::{AtomicU64, Ordering};

/// The round-robin position, shared by the claims of one worker.
#[derive(Debug, Default)]
pub struct Wrr {
    counter: AtomicU64,
}

/// Queue index (into [`crate::config::QUEUES`]) that owns slot `n` of the cycle.
pub fn slot_owner(n: u64, weights: [u32; 3]) -> usize {
    let total: u64 = weights.iter().map(|w| u64::from(*w)).sum::<u64>().max(1);
    let mut pos = n % total;
    for (i, w) in weights.iter().enumerate() {
        let w = u64::from(*w);
        if pos < w {
            return i;
        }
        pos -= w;
    }
    0
}

impl Wrr {
    /// Takes the next `n` slots: how many each queue is owed.
    pub fn take(&self, n: u64, weights: [u32; 3]) -> [u64; 3] {
        let start = self.counter.fetch_add(n, Ordering::Relaxed);
        let mut owed = [0u64; 3];
        for s in start..start.saturating_add(n) {
            owed[slot_owner(s, weights)] += 1;
        }
        owed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_follow_weights() {
        let w = Wrr::default();
        assert_eq!(w.take(10, [6, 3, 1]), [6, 3, 1]);
        assert_eq!(w.take(20, [6, 3, 1]), [12, 6, 2]);
        let owners: Vec<usize> = (0..10).map(|n| slot_owner(n, [6, 3, 1])).collect();
        assert_eq!(owners, vec![0, 0, 0, 0, 0, 0, 1, 1, 1, 2]);
    }
}
