//! Retry delays for every reconnect loop in Agora: the SDK's driver (and so Marathon and `agora execute`), the
//! agent's link to the master, the leader detector and the ZooKeeper election.
//!
//! A loop that fails retries after `initial × 2^attempt`, capped at `max`, with part of that delay random
//! ("jitter") so that many clients that lost the same master do not come back in lockstep. Nothing retries at once
//! however it failed, so a loop never spins when its peer refuses connections, is gone, or has no leader.
//!
//! [`Backoff::delay`] is the decision, a pure function of the attempt and a uniform draw from [0, 1); the loops
//! keep a [`Retry`] (the attempt count, drawing from [`random_unit`]). The crate depends on nothing of Agora's, so
//! every crate that reconnects already depends on this one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Exponential backoff with jitter: the delay before retry `attempt` (0 for the first retry) lies in
/// `[(1 - jitter) × ceiling, ceiling]` with `ceiling = min(initial × 2^attempt, max)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    /// The random part of each delay, from 0 (none) to 1 (uniform in `[0, ceiling]`, as Mesos's agents and
    /// scheduler drivers back off); values outside [0, 1] are clamped.
    pub jitter: f64,
}

/// The jitter of [`Backoff::new`]: each delay lies between half the ceiling and the ceiling, so retries spread
/// out but never come sooner than half the nominal delay.
pub const DEFAULT_JITTER: f64 = 0.5;

impl Backoff {
    /// Doubling from `initial` up to `max`, with [`DEFAULT_JITTER`].
    pub const fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff { initial, max, jitter: DEFAULT_JITTER }
    }

    pub const fn with_jitter(self, jitter: f64) -> Backoff {
        Backoff { jitter, ..self }
    }

    /// `initial × 2^attempt`, capped at `max` (never above `max`, even when `initial` is).
    pub fn ceiling(&self, attempt: u32) -> Duration {
        self.initial.saturating_mul(1u32 << attempt.min(31)).min(self.max)
    }

    /// The delay before retry `attempt`, given `unit`, a draw from [0, 1) (clamped into it).
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let jitter = if self.jitter.is_nan() { 0.0 } else { self.jitter.clamp(0.0, 1.0) };
        let unit = if unit.is_nan() { 0.0 } else { unit.clamp(0.0, 1.0) };
        self.ceiling(attempt).mul_f64(1.0 - jitter * unit)
    }
}

/// The state of one retry loop: how many attempts failed since the last success.
#[derive(Clone, Debug)]
pub struct Retry {
    backoff: Backoff,
    failures: u32,
}

impl Retry {
    pub fn new(backoff: Backoff) -> Retry {
        Retry { backoff, failures: 0 }
    }

    /// Counts a failed attempt and returns how long to wait before the next one.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.backoff.delay(self.failures, random_unit());
        self.failures = self.failures.saturating_add(1);
        delay
    }

    /// After a success: the next failure waits the initial delay again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// Failed attempts since the last [`Retry::reset`].
    pub fn failures(&self) -> u32 {
        self.failures
    }

    pub fn backoff(&self) -> &Backoff {
        &self.backoff
    }
}

/// A uniform draw from [0, 1): SplitMix64 over a process-wide counter seeded from the standard library's random
/// hash keys (no dependency for this; the jitter needs spread, not cryptographic quality).
pub fn random_unit() -> f64 {
    static STATE: AtomicU64 = AtomicU64::new(0);
    const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;
    if STATE.load(Ordering::Relaxed) == 0 {
        use std::hash::{BuildHasher, Hasher};
        let seed = std::collections::hash_map::RandomState::new().build_hasher().finish() | 1;
        let _ = STATE.compare_exchange(0, seed, Ordering::Relaxed, Ordering::Relaxed);
    }
    let mut z = STATE.fetch_add(GAMMA, Ordering::Relaxed).wrapping_add(GAMMA);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    // The top 53 bits as a fraction: exactly representable, strictly below 1.
    (z >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn the_ceiling_doubles_from_initial_up_to_max() {
        let b = Backoff::new(MS(250), Duration::from_secs(10));
        let ceilings: Vec<u64> = (0..9).map(|n| b.ceiling(n).as_millis() as u64).collect();
        assert_eq!(ceilings, [250, 500, 1000, 2000, 4000, 8000, 10_000, 10_000, 10_000]);
        assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(10));
        // An initial delay above the cap is capped too.
        assert_eq!(Backoff::new(Duration::from_secs(99), Duration::from_secs(5)).ceiling(0), Duration::from_secs(5));
    }

    #[test]
    fn jitter_takes_its_share_of_the_ceiling_off() {
        let b = Backoff::new(MS(1000), Duration::from_secs(60));
        assert_eq!(b.delay(0, 0.0), MS(1000));
        assert_eq!(b.delay(0, 0.5), MS(750));
        assert_eq!(b.delay(1, 0.5), MS(1500));
        let full = b.with_jitter(1.0);
        assert_eq!(full.delay(2, 0.25), MS(3000));
        assert_eq!(full.delay(2, 0.0), MS(4000));
        let none = b.with_jitter(0.0);
        assert_eq!(none.delay(3, 0.9), MS(8000));
    }

    #[test]
    fn out_of_range_draws_and_jitters_are_clamped() {
        let b = Backoff::new(MS(1000), Duration::from_secs(60));
        assert_eq!(b.delay(0, -3.0), MS(1000));
        assert_eq!(b.delay(0, 7.0), MS(500));
        assert_eq!(b.delay(0, f64::NAN), MS(1000));
        assert_eq!(b.with_jitter(5.0).delay(0, 0.5), MS(500));
        assert_eq!(b.with_jitter(-1.0).delay(0, 0.5), MS(1000));
        assert_eq!(b.with_jitter(f64::NAN).delay(0, 0.5), MS(1000));
    }

    #[test]
    fn a_retry_backs_off_within_bounds_and_starts_over_after_reset() {
        let b = Backoff::new(MS(100), MS(1000));
        let mut retry = Retry::new(b);
        for attempt in 0..20 {
            let d = retry.next_delay();
            let ceiling = b.ceiling(attempt);
            assert!(
                d <= ceiling && d >= ceiling / 2,
                "attempt {attempt}: {d:?} outside [{:?}, {ceiling:?}]",
                ceiling / 2
            );
        }
        assert_eq!(retry.failures(), 20);
        retry.reset();
        assert_eq!(retry.failures(), 0);
        assert!(retry.next_delay() <= MS(100));
    }

    #[test]
    fn random_units_are_in_range_and_spread() {
        let draws: Vec<f64> = (0..10_000).map(|_| random_unit()).collect();
        assert!(draws.iter().all(|u| (0.0..1.0).contains(u)));
        // Every tenth of [0, 1) is hit, none grossly over-represented (expected 1,000 each).
        let mut buckets = [0u32; 10];
        for u in &draws {
            buckets[(u * 10.0) as usize] += 1;
        }
        assert!(buckets.iter().all(|&n| (700..1300).contains(&n)), "{buckets:?}");
    }
}
