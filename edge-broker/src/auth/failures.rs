//! Failed logins, counted per source address, slow down the next guesses from there.
//!
//! Each failed login from a source waits before it is answered: 100 ms after the first failure,
//! doubling per failure up to `[auth] max_login_delay` (default 2 s). Once a source has failed,
//! its login attempts are also taken one at a time (a per-source gate), so opening many
//! connections at once does not multiply its guessing rate: 200 guesses from one address take
//! minutes instead of the 0.04 s issue 12 measured. A successful login is never delayed
//! (it may wait for the gate while another attempt from the same address is being delayed).
//!
//! Waiting for the gate is bounded ([`LoginFailures::max_wait`], three maximum delays): beyond
//! it the attempt is refused without being checked, so one address cannot park connections on
//! the gate for ever.
//!
//! Sources are IPv4 addresses and IPv6 /64 networks (one subscriber line usually owns a whole
//! /64). The table is bounded: at most `max_sources` entries, entries idle for
//! [`FORGET_AFTER`] are dropped, and when it is full the entry whose last failure is oldest
//! makes room, so an attacker with many addresses cannot grow memory; it only gets fresh (short)
//! delays on the addresses it rotates through.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Delay after the first failure; it doubles with every further one.
pub const FIRST_DELAY: Duration = Duration::from_millis(100);
/// A source with no failure for this long starts again from no failures.
pub const FORGET_AFTER: Duration = Duration::from_secs(600);

/// A source address as counted: an IPv4 address or an IPv6 /64.
///
/// Kept as bytes, not a `u128`: that would align whatever holds one to 16 bytes (every
/// logged-in connection's seat, and the connection around it: 8 bytes of padding in each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Source([u8; 16]);

impl Source {
    /// The source an address belongs to.
    pub fn of(ip: IpAddr) -> Source {
        match ip {
            IpAddr::V4(v4) => Source::from_bits(u128::from(u32::from(v4))),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Source::from_bits(u128::from(u32::from(v4))),
                // The /64 prefix, tagged so it can never equal an IPv4 source.
                None => Source::from_bits((u128::from(v6) & !u128::from(u64::MAX)) | 1),
            },
        }
    }

    fn from_bits(bits: u128) -> Source {
        Source(bits.to_be_bytes())
    }
}

#[derive(Debug)]
struct Entry {
    failures: u32,
    last: Instant,
    gate: Arc<tokio::sync::Mutex<()>>,
}

/// The failure table (see the module docs).
#[derive(Debug)]
pub struct LoginFailures {
    max_delay: Duration,
    max_sources: usize,
    table: Mutex<HashMap<Source, Entry>>,
}

impl LoginFailures {
    /// An empty table of at most `max_sources` sources, delays up to `max_delay`.
    pub fn new(max_delay: Duration, max_sources: usize) -> LoginFailures {
        LoginFailures {
            max_delay,
            max_sources: max_sources.max(1),
            table: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Source, Entry>> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The gate a login from `ip` must hold, if that source failed recently.
    pub fn gate(&self, ip: IpAddr, now: Instant) -> Option<Arc<tokio::sync::Mutex<()>>> {
        let table = self.lock();
        table
            .get(&Source::of(ip))
            .filter(|e| now.duration_since(e.last) < FORGET_AFTER)
            .map(|e| Arc::clone(&e.gate))
    }

    /// Counts a failure from `ip` and returns how long its answer waits.
    pub fn record(&self, ip: IpAddr, now: Instant) -> Duration {
        let source = Source::of(ip);
        let mut table = self.lock();
        if !table.contains_key(&source) && table.len() >= self.max_sources {
            table.retain(|_, e| now.duration_since(e.last) < FORGET_AFTER);
            if table.len() >= self.max_sources
                && let Some(oldest) = table.iter().min_by_key(|(_, e)| e.last).map(|(s, _)| *s)
            {
                table.remove(&oldest);
            }
        }
        let entry = table.entry(source).or_insert_with(|| Entry {
            failures: 0,
            last: now,
            gate: Arc::new(tokio::sync::Mutex::new(())),
        });
        if now.duration_since(entry.last) >= FORGET_AFTER {
            entry.failures = 0;
        }
        entry.failures = entry.failures.saturating_add(1);
        entry.last = now;
        self.delay(entry.failures)
    }

    /// The delay after `failures` failures in a row.
    pub fn delay(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(20);
        FIRST_DELAY
            .saturating_mul(1 << doublings)
            .min(self.max_delay)
    }

    /// The longest a login waits for its source's gate: a few delays' worth.
    pub fn max_wait(&self) -> std::time::Duration {
        self.max_delay.saturating_mul(3)
    }

    /// Sources tracked now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no source is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Failures counted for the source of `ip` (0 if none or forgotten).
    pub fn failures(&self, ip: IpAddr) -> u32 {
        self.lock().get(&Source::of(ip)).map_or(0, |e| e.failures)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn v4(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(n))
    }

    #[test]
    fn delays_double_up_to_the_cap() {
        let f = LoginFailures::new(Duration::from_secs(2), 10);
        let now = Instant::now();
        let delays: Vec<u64> = (0..7)
            .map(|_| f.record(v4(1), now).as_millis() as u64)
            .collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 2000, 2000]);
        assert!(f.gate(v4(1), now).is_some());
        assert!(f.gate(v4(2), now).is_none(), "other sources are not gated");
        assert!(
            f.gate(v4(1), now + FORGET_AFTER).is_none(),
            "forgotten after a quiet period"
        );
        assert_eq!(f.record(v4(1), now + FORGET_AFTER), FIRST_DELAY);
    }

    #[test]
    fn the_table_is_bounded_and_evicts_the_oldest() {
        let f = LoginFailures::new(Duration::from_secs(2), 100);
        let start = Instant::now();
        for n in 0..10_000u32 {
            f.record(v4(n), start + Duration::from_millis(u64::from(n)));
        }
        assert_eq!(f.len(), 100);
        assert_eq!(f.failures(v4(9_999)), 1, "the newest are kept");
        assert_eq!(f.failures(v4(0)), 0, "the oldest made room");
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_v4_as_v4() {
        let a: Ipv6Addr = "2001:db8:1:2::1".parse().unwrap();
        let b: Ipv6Addr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: Ipv6Addr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(Source::of(IpAddr::V6(a)), Source::of(IpAddr::V6(b)));
        assert_ne!(Source::of(IpAddr::V6(a)), Source::of(IpAddr::V6(c)));
        let mapped = IpAddr::V6(Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped());
        assert_eq!(
            Source::of(mapped),
            Source::of(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)))
        );
    }
}
