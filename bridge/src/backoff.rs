//! Jittered exponential backoff with a cap, for retrying the upstream after retriable errors.
//!
//! Delay for attempt `n` (0-based) is drawn uniformly from `[d/2, d]` where
//! `d = min(cap, base * 2^n)` ("equal jitter"): never zero, so a flapping broker is not
//! hammered, and spread out so many gateways restarting together do not retry in lockstep.
//! The randomness is a tiny xorshift64* seeded from the clock; it only spreads retries.
//!
//! [`RetryBackoff`] is the one rule for refusals (credentials, certificates, ACLs): their
//! delays grow to a longer ceiling (`auth_retry_backoff_max`), every other failure's to
//! `retry_backoff_max`. The forwarder's retries (`uplink::Retry`) and the transaction
//! session's steps both wait with it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Retry delays that double from `base` up to `cap`, with jitter.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
    rng: u64,
}

impl Backoff {
    /// A backoff starting at `base` and never exceeding `cap`, seeded from the clock.
    pub fn new(base: Duration, cap: Duration) -> Self {
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9e37_79b9_7f4a_7c15);
        Self::with_seed(base, cap, seed)
    }

    /// Same as [`Backoff::new`] with an explicit seed (deterministic tests).
    pub fn with_seed(base: Duration, cap: Duration, seed: u64) -> Self {
        Self {
            base,
            cap: cap.max(base),
            attempt: 0,
            // xorshift must not start at zero.
            rng: seed | 1,
        }
    }

    /// The delay before the next retry; each call doubles the ceiling until `cap`.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling(self.attempt);
        self.attempt = self.attempt.saturating_add(1);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        let half = nanos / 2;
        let jitter = if half == 0 {
            0
        } else {
            self.next_u64() % (half + 1)
        };
        Duration::from_nanos(nanos - half + jitter)
    }

    /// Forgets past failures: the next delay starts from `base` again (call after a success).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// How many delays were handed out since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.base
            .checked_mul(factor)
            .unwrap_or(self.cap)
            .min(self.cap)
    }

    fn next_u64(&mut self) -> u64 {
        // xorshift64* (Vigna).
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// The waits of a retry loop: from `min` doubling up to `max`, or up to `refused_max` after a
/// refusal (`[kafka] retry_backoff_min`, `retry_backoff_max`, `auth_retry_backoff_max`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryWaits {
    /// The first wait.
    pub min: Duration,
    /// The longest wait.
    pub max: Duration,
    /// The longest wait after a refusal (credentials, certificates, ACLs).
    pub refused_max: Duration,
}

/// The backoff of a retry loop that tells refusals apart: after a refusal (credentials,
/// certificates, ACLs: only a fix ends it, and every try costs the uplink a handshake or a
/// request) the delays grow to `refused_max`, after any other failure to `max`.
#[derive(Debug, Clone)]
pub struct RetryBackoff {
    failed: Backoff,
    refused: Backoff,
}

impl RetryBackoff {
    /// Delays as `waits` says (`refused_max` at least `max`).
    pub fn new(waits: RetryWaits) -> Self {
        Self {
            failed: Backoff::new(waits.min, waits.max),
            refused: Backoff::new(waits.min, waits.refused_max.max(waits.max)),
        }
    }

    /// The delay before the next retry after a failure, `refused` or not.
    pub fn next_delay(&mut self, refused: bool) -> Duration {
        if refused {
            self.refused.next_delay()
        } else {
            self.failed.next_delay()
        }
    }

    /// Forgets past failures (call after a success).
    pub fn reset(&mut self) {
        self.failed.reset();
        self.refused.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn doubles_within_jitter_bounds_then_caps() {
        let mut b = Backoff::with_seed(100 * MS, 5000 * MS, 42);
        let mut ceiling = 100 * MS;
        for _ in 0..12 {
            let d = b.next_delay();
            assert!(
                d >= ceiling / 2 && d <= ceiling,
                "{d:?} outside [{:?}, {ceiling:?}]",
                ceiling / 2
            );
            ceiling = (ceiling * 2).min(5000 * MS);
        }
        assert_eq!(b.attempts(), 12);
    }

    #[test]
    fn reset_starts_over() {
        let mut b = Backoff::with_seed(10 * MS, 1000 * MS, 7);
        for _ in 0..8 {
            b.next_delay();
        }
        b.reset();
        assert!(b.next_delay() <= 10 * MS);
    }

    #[test]
    fn jitter_varies_and_huge_attempts_do_not_overflow() {
        let mut b = Backoff::with_seed(MS, Duration::from_secs(30), 99);
        let delays: Vec<Duration> = (0..200).map(|_| b.next_delay()).collect();
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(30)));
        let tail = &delays[100..];
        assert!(
            tail.iter().any(|d| *d != tail[0]),
            "jitter should vary delays"
        );
    }

    #[test]
    fn cap_below_base_is_raised_to_base() {
        let mut b = Backoff::with_seed(50 * MS, MS, 3);
        let d = b.next_delay();
        assert!(d >= 25 * MS && d <= 50 * MS);
    }
}
