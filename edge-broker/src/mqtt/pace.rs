//! Pacing a publishing connection for a subscriber slower than it (`[mqtt]
//! slow_subscriber_wait`).
//!
//! The policy: when a QoS 0 delivery meets an online subscriber's full queue
//! (`max_queued_messages` or `max_queued_bytes`), the subscriber's session hands it back
//! ([`crate::hub::Offer::Full`]) instead of dropping it. The publishing connection keeps it in
//! its [`Pace`], stops decoding and reading its socket (TCP backpressure on the device), keeps
//! writing its own output, and offers the delivery again each time the subscriber's
//! connection takes deliveries out ([`crate::hub::Room`]). After `slow_subscriber_wait` without
//! room, the delivery is dropped and counted (`edge_messages_dropped_total`), the subscriber
//! is marked stalled (publishers do not wait for it again until it reads), and input resumes.
//!
//! Bounds: a publisher waits for one publish at a time (at most one delivery per matching
//! subscriber, and [`crate::hub::MAX_WAITING`]), so it holds no more than that publish; it is
//! held at most
//! `slow_subscriber_wait` per publish, and a subscriber that never reads holds it once.
//! QoS 1/2 deliveries, the total budget (`max_queued_bytes_total`), wills, `$SYS` and NATS
//! publishers never wait (they drop as before).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use crate::hub::Waiting;
use crate::metrics::front::{FrontMetrics, inc};

/// How a wait of [`Pace::woken`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Woken {
    /// A subscriber made room: offer again ([`Pace::retry`]).
    Room,
    /// `slow_subscriber_wait` ran out ([`Pace::expire`]).
    Deadline,
}

/// One connection's deliveries waiting for room, and how long they may wait.
#[derive(Debug)]
pub struct Pace {
    wait: Duration,
    waiting: Vec<Waiting>,
    started: Option<Instant>,
    metrics: Arc<FrontMetrics>,
}

impl Pace {
    /// Waits up to `wait` per publish (`Duration::ZERO`: never waits), counting into `metrics`.
    pub fn new(wait: Duration, metrics: Arc<FrontMetrics>) -> Pace {
        Pace {
            wait,
            waiting: Vec::new(),
            started: None,
            metrics,
        }
    }

    /// Where a publish's fan-out hands back the deliveries that wait (`None`: waiting is off,
    /// full queues drop at once).
    pub fn collect(&mut self) -> Option<&mut Vec<Waiting>> {
        (!self.wait.is_zero()).then_some(&mut self.waiting)
    }

    /// After a publish's fan-out: starts the clock if deliveries wait.
    pub fn arm(&mut self) {
        if !self.waiting.is_empty() && self.started.is_none() {
            self.started = Some(Instant::now());
        }
    }

    /// Whether deliveries wait: the connection takes no input until they are settled.
    pub fn is_waiting(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// Resolves when the first waiting subscriber made room, or the wait ran out.
    pub async fn woken(&self) -> Woken {
        let (Some(first), Some(started)) = (self.waiting.first(), self.started) else {
            return Woken::Deadline;
        };
        tokio::select! {
            () = first.room() => Woken::Room,
            () = tokio::time::sleep_until(started + self.wait) => Woken::Deadline,
        }
    }

    /// Offers the waiting deliveries again; keeps those still refused.
    pub fn retry(&mut self) {
        let mut before = std::mem::take(&mut self.waiting);
        for waiting in before.drain(..) {
            if let Some(waiting) = waiting.retry() {
                self.waiting.push(waiting);
            }
        }
        if self.waiting.is_empty() {
            // Keep a small allocation for the next wait.
            if before.capacity() <= 4 {
                self.waiting = before;
            }
            self.settled(0);
        }
    }

    /// The wait ran out: what finds room now is kept (only the first subscriber's room is
    /// watched); the rest is given up (dropped and counted), its subscribers marked stalled.
    pub fn expire(&mut self) {
        self.retry();
        if self.waiting.is_empty() {
            return;
        }
        for waiting in self.waiting.drain(..) {
            waiting.give_up();
        }
        self.settled(1);
    }

    /// The connection is closing: gives up what waits and never waits again.
    pub fn stop(&mut self) {
        self.expire();
        self.wait = Duration::ZERO;
    }

    fn settled(&mut self, outcome: usize) {
        if let Some(started) = self.started.take() {
            inc(&self.metrics.publisher_waits[outcome]);
            let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            self.metrics
                .publisher_wait_micros
                .fetch_add(micros, Ordering::Relaxed);
        }
    }
}
