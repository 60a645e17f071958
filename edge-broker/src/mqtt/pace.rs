//! Pacing a publishing connection for a subscriber slower than it (`[mqtt]
//! slow_subscriber_wait`).
//!
//! The policy: when a QoS 0 delivery meets an online subscriber's full queue
//! (`max_queued_messages` or `max_queued_bytes`), the subscriber's session hands it back
//! ([`crate::hub::Offer::Full`]) instead of dropping it. The publishing connection keeps it in
//! its [`Pace`], stops decoding and reading its socket (TCP backpressure on the device), keeps
//! writing its own output, and offers the delivery again each time the subscriber's
//! connection takes deliveries out ([`crate::hub::Room`]). A subscriber is waited for only
//! while it made room within the last `slow_subscriber_wait` (taking deliveries out, or an
//! empty queue taking one in: an idle subscriber is not a stalled one): past that, the delivery is
//! dropped and counted (`edge_messages_dropped_total`), and so is every later one that meets
//! it full, until it reads again; input resumes.
//!
//! Bounds: a publisher waits for one publish at a time (at most
//! [`crate::hub::MAX_WAITING`] deliveries of it), so it holds no more than that publish. It is
//! held at most `slow_subscriber_wait` after the last time any subscriber it waits for made
//! room: subscribers that stopped reading hold it that long once, together, however many
//! they are and however many publishes meet them. A subscriber that keeps reading, however
//! slowly, paces it. QoS 1/2 deliveries, the total budget (`max_queued_bytes_total`), wills,
//! `$SYS` and NATS publishers never wait (they drop as before).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use tokio::time::Instant;

use crate::hub::{Retried, Waiting};
use crate::metrics::front::{FrontMetrics, inc};

/// One connection's deliveries waiting for room.
pub struct Pace {
    enabled: bool,
    waiting: Vec<Waiting>,
    started: Option<Instant>,
    /// A delivery of the current wait was dropped.
    dropped: bool,
    metrics: Arc<FrontMetrics>,
    /// The wait for room or the bound ([`Pace::poll_woken`]): made at its first poll and
    /// kept until `waiting` changes. It owns what it waits on, so that the connection's turn
    /// can poll it beside the rest of the connection.
    wait: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl std::fmt::Debug for Pace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pace")
            .field("enabled", &self.enabled)
            .field("waiting", &self.waiting)
            .field("started", &self.started)
            .field("dropped", &self.dropped)
            .field("wait", &self.wait.is_some())
            .finish_non_exhaustive()
    }
}

impl Pace {
    /// A pace that waits if `enabled` (`slow_subscriber_wait` > 0), counting into `metrics`.
    pub fn new(enabled: bool, metrics: Arc<FrontMetrics>) -> Pace {
        Pace {
            enabled,
            waiting: Vec::new(),
            started: None,
            dropped: false,
            metrics,
            wait: None,
        }
    }

    /// Where a publish's fan-out hands back the deliveries that wait (`None`: waiting is off,
    /// full queues drop at once).
    pub fn collect(&mut self) -> Option<&mut Vec<Waiting>> {
        self.wait = None;
        self.enabled.then_some(&mut self.waiting)
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

    /// Ready when the first waiting subscriber made room, or a waiting delivery's bound
    /// passed (at once if nothing waits): time to [`Pace::settle`].
    pub fn poll_woken(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.wait.is_none() {
            let Some(first) = self.waiting.first() else {
                return Poll::Ready(());
            };
            let until = self
                .waiting
                .iter()
                .map(|w| w.until)
                .min()
                .unwrap_or(first.until);
            let room = first.room();
            self.wait = Some(Box::pin(async move {
                tokio::select! {
                    () = room => {}
                    () = tokio::time::sleep_until(until) => {}
                }
            }));
        }
        let Some(wait) = &mut self.wait else {
            return Poll::Ready(());
        };
        std::task::ready!(wait.as_mut().poll(cx));
        self.wait = None;
        Poll::Ready(())
    }

    /// Offers the waiting deliveries again: those kept or refused leave, those whose bound
    /// passed are given up (dropped and counted), the rest keep waiting.
    pub fn settle(&mut self) {
        self.wait = None;
        let now = Instant::now();
        let mut before = std::mem::take(&mut self.waiting);
        for waiting in before.drain(..) {
            match waiting.retry() {
                Retried::Kept => {}
                Retried::Refused => self.dropped = true,
                Retried::Full(waiting) if waiting.until <= now => {
                    self.dropped |= !waiting.give_up();
                }
                Retried::Full(waiting) => self.waiting.push(waiting),
            }
        }
        if self.waiting.is_empty() {
            // Keep a small allocation for the next wait.
            if before.capacity() <= 4 {
                self.waiting = before;
            }
            self.settled();
        }
    }

    /// The connection is closing: gives up what waits and never waits again.
    pub fn stop(&mut self) {
        self.wait = None;
        for waiting in self.waiting.drain(..) {
            self.dropped |= !waiting.give_up();
        }
        self.settled();
        self.enabled = false;
    }

    fn settled(&mut self) {
        if let Some(started) = self.started.take() {
            let outcome = usize::from(std::mem::take(&mut self.dropped));
            inc(&self.metrics.publisher_waits[outcome]);
            let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            self.metrics
                .publisher_wait_micros
                .fetch_add(micros, Ordering::Relaxed);
        }
    }
}
