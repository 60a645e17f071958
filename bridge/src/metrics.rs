//! Counters and gauges of the forwarder, shared with whoever renders `/metrics`.
//!
//! Plain atomics: the forwarder task writes them, the metrics endpoint reads them. Lag and the
//! age of the oldest unforwarded record are derived at read time from the log's durable end and
//! the cursor's committed offset, so they stay right while the forwarder is stuck in a retry.
//! The uplink's state and last error are written by [`crate::uplink::Uplink`]; the state's type,
//! [`UplinkState`] (its labels, the number it is stored as, and what a failed request says
//! about the uplink, beside [`error_kind`]), is defined here and re-exported as
//! `uplink::UplinkState`.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::producer::{ErrorClass, ProduceError};

/// Error kinds counted in [`ForwardMetrics::errors`], in this order.
pub const ERROR_KINDS: [&str; 12] = [
    "unreachable",
    "connection_reset",
    "timeout",
    "unknown_topic",
    "rejected",
    "broker_retriable",
    "auth",
    "fatal",
    // A route pins a partition the Kafka topic does not have (the planner cannot place a record).
    "partition_missing",
    // Reading the local log or committing the forwarder's cursor failed.
    "local_log",
    // A Kafka transaction step failed (exactly once).
    "transaction",
    // Another gateway with this node id took over the transactional id: forwarding stopped.
    "fenced",
];

/// The error-kind label of a produce error (one of [`ERROR_KINDS`]).
pub fn error_kind(error: &ProduceError) -> &'static str {
    if error.is_auth_failure() {
        return "auth";
    }
    match error {
        ProduceError::NoBrokers | ProduceError::Connect { .. } | ProduceError::NoLeader { .. } => {
            "unreachable"
        }
        ProduceError::Io { .. } => "connection_reset",
        ProduceError::Authentication { .. } => "authentication",
        ProduceError::Timeout { .. } => "timeout",
        ProduceError::UnknownPartition { .. } => "unknown_topic",
        ProduceError::BatchTooLarge { .. } => "rejected",
        _ => match error.class() {
            ErrorClass::Retriable => "broker_retriable",
            ErrorClass::UnknownTopic => "unknown_topic",
            ErrorClass::Rejected => "rejected",
            ErrorClass::Fatal => "fatal",
        },
    }
}

/// The uplink's state, as `/metrics` shows it (`edge_kafka_uplink_state{state=...}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UplinkState {
    /// Nothing answered yet (just started).
    Connecting,
    /// The last request was answered.
    Up,
    /// Requests fail: unreachable, timeouts, broker errors, a missing topic.
    Down,
    /// The cluster refused us: TLS certificate, SASL credentials or ACLs.
    AuthFailed,
    /// Exactly-once delivery: another producer with this gateway's transactional.id (a second
    /// gateway with the same node id) fenced this one; forwarding stopped until a restart.
    Fenced,
}

impl UplinkState {
    /// Every state, in the order of their numbers.
    pub const ALL: [UplinkState; 5] = [
        UplinkState::Connecting,
        UplinkState::Up,
        UplinkState::Down,
        UplinkState::AuthFailed,
        UplinkState::Fenced,
    ];

    /// The label value (`connecting`, `up`, `down`, `auth_failed`, `fenced`).
    pub fn as_str(self) -> &'static str {
        match self {
            UplinkState::Connecting => "connecting",
            UplinkState::Up => "up",
            UplinkState::Down => "down",
            UplinkState::AuthFailed => "auth_failed",
            UplinkState::Fenced => "fenced",
        }
    }

    /// The state stored as `n` (see [`UplinkState::ALL`]); unknown numbers read as down.
    pub fn from_u8(n: u8) -> Self {
        Self::ALL
            .get(usize::from(n))
            .copied()
            .unwrap_or(UplinkState::Down)
    }

    /// Its number in [`UplinkState::ALL`].
    pub fn as_u8(self) -> u8 {
        match self {
            UplinkState::Connecting => 0,
            UplinkState::Up => 1,
            UplinkState::Down => 2,
            UplinkState::AuthFailed => 3,
            UplinkState::Fenced => 4,
        }
    }

    /// True while Kafka is not taking records (down or refusing us).
    pub fn is_down(self) -> bool {
        matches!(
            self,
            UplinkState::Down | UplinkState::AuthFailed | UplinkState::Fenced
        )
    }

    /// The state a failed request leaves the uplink in; None if it says nothing about the
    /// uplink (a record Kafka refuses, a batch held back behind a failed one, a producer
    /// session to start over).
    pub fn after(error: &ProduceError) -> Option<Self> {
        if matches!(
            error,
            ProduceError::Blocked { .. } | ProduceError::NotSent { .. }
        ) || error.class() == ErrorClass::Rejected
            || crate::producer::sequence::ends_session(error)
        {
            // The record, the order behind a failure, or the producer session (a restarted
            // Kafka does not know our producer id: a new session follows at once).
            None
        } else if error.is_auth_failure() {
            Some(UplinkState::AuthFailed)
        } else {
            Some(UplinkState::Down)
        }
    }
}

/// Bucket bounds (seconds) of [`ForwardMetrics::produce_latency`]: a request over a mobile
/// uplink takes milliseconds to seconds.
pub const PRODUCE_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A latency histogram of fixed buckets, lock-free (one atomic add per bucket and one for the
/// sum): the broker renders it as a Prometheus histogram.
#[derive(Debug)]
pub struct LatencyHistogram {
    bounds: &'static [f64],
    /// Observations per bucket (not cumulative); the last is everything above the last bound.
    buckets: Box<[AtomicU64]>,
    sum_micros: AtomicU64,
}

/// A copy of a [`LatencyHistogram`]'s counts, for rendering.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// Upper bounds of the buckets, seconds (then +Inf).
    pub bounds: &'static [f64],
    /// Observations per bucket, not cumulative; one more than `bounds`.
    pub counts: Vec<u64>,
    /// Sum of the observations, seconds.
    pub sum_seconds: f64,
}

impl LatencyHistogram {
    /// An empty histogram with these bucket bounds (seconds, ascending).
    pub fn new(bounds: &'static [f64]) -> LatencyHistogram {
        LatencyHistogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
        }
    }

    /// Counts one observation.
    pub fn observe(&self, took: std::time::Duration) {
        let secs = took.as_secs_f64();
        let bucket = self
            .bounds
            .iter()
            .position(|&le| secs <= le)
            .unwrap_or(self.bounds.len());
        if let Some(b) = self.buckets.get(bucket) {
            b.fetch_add(1, Ordering::Relaxed);
        }
        self.sum_micros.fetch_add(
            u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// The counts so far.
    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            bounds: self.bounds,
            counts: self
                .buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
            sum_seconds: self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }
}

/// What the forwarder did so far.
#[derive(Debug)]
pub struct ForwardMetrics {
    /// Time from sending a produce request to seeing Kafka's successful acknowledgement.
    pub produce_latency: LatencyHistogram,
    /// Records Kafka acknowledged (a resent record counts again).
    pub records: AtomicU64,
    /// Payload bytes (value + key + headers) Kafka acknowledged.
    pub bytes: AtomicU64,
    /// Chunks delivered and committed.
    pub batches: AtomicU64,
    /// Failed attempts, by [`ERROR_KINDS`] index.
    pub errors: [AtomicU64; ERROR_KINDS.len()],
    /// Records written to the dead letter (file or topic).
    pub dead_letters: AtomicU64,
    /// Exactly-once delivery: transactions committed (records and position together).
    pub transactions: AtomicU64,
    /// Exactly-once delivery: transactions aborted (their chunks resent from the committed
    /// position).
    pub transactions_aborted: AtomicU64,
    /// Records no route matched any more (skipped).
    pub unrouted: AtomicU64,
    /// The cursor's committed offset (everything below is in Kafka).
    pub committed: AtomicU64,
    /// Ingest time (unix ms) of the oldest record read but not yet committed; 0 if none.
    pub oldest_pending_ms: AtomicU64,
    /// Mean on-disk size of recent records, for the lag-in-bytes estimate.
    pub mean_record_bytes: AtomicU64,
    /// True while the forwarder drains a backlog (its reads come back full).
    pub replaying: AtomicBool,
    /// [`UplinkState`] as its number.
    uplink: AtomicU8,
    /// When the uplink entered its state, unix ms (0: never changed).
    uplink_since_ms: AtomicU64,
    /// The last failed request, for `/metrics` and `edge-broker status`.
    pub last_error: parking_lot::Mutex<Option<LastError>>,
}

impl Default for ForwardMetrics {
    fn default() -> Self {
        ForwardMetrics {
            produce_latency: LatencyHistogram::new(PRODUCE_BUCKETS),
            records: AtomicU64::default(),
            bytes: AtomicU64::default(),
            batches: AtomicU64::default(),
            errors: Default::default(),
            dead_letters: AtomicU64::default(),
            unrouted: AtomicU64::default(),
            committed: AtomicU64::default(),
            oldest_pending_ms: AtomicU64::default(),
            mean_record_bytes: AtomicU64::default(),
            replaying: AtomicBool::default(),
            uplink: AtomicU8::default(),
            uplink_since_ms: AtomicU64::default(),
            last_error: parking_lot::Mutex::default(),
            transactions: AtomicU64::default(),
            transactions_aborted: AtomicU64::default(),
        }
    }
}

/// The last failed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastError {
    /// Its kind (one of [`ERROR_KINDS`]).
    pub kind: &'static str,
    /// The error message.
    pub message: String,
    /// When, unix ms.
    pub at_ms: u64,
}

impl ForwardMetrics {
    /// Counts one failed attempt of `kind` (one of [`ERROR_KINDS`]; others count as `fatal`).
    pub fn count_error(&self, kind: &str) {
        let index = |k: &str| ERROR_KINDS.iter().position(|known| *known == k);
        if let Some(i) = index(kind).or_else(|| index("fatal")) {
            self.errors[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The uplink's state.
    pub fn uplink_state(&self) -> UplinkState {
        UplinkState::from_u8(self.uplink.load(Ordering::Relaxed))
    }

    /// When the uplink entered its current state, unix ms (0 if it never changed).
    pub fn uplink_since_ms(&self) -> u64 {
        self.uplink_since_ms.load(Ordering::Relaxed)
    }

    /// Sets the uplink's state (noting when it changed).
    pub fn set_uplink_state(&self, state: UplinkState) {
        if self.uplink.swap(state.as_u8(), Ordering::Relaxed) != state.as_u8() {
            self.uplink_since_ms.store(now_ms(), Ordering::Relaxed);
        }
    }

    /// Failed attempts of `kind` so far.
    pub fn errors_of(&self, kind: &str) -> u64 {
        ERROR_KINDS
            .iter()
            .position(|k| *k == kind)
            .map_or(0, |i| self.errors[i].load(Ordering::Relaxed))
    }

    /// Records in the log not yet acknowledged by Kafka, given the log's durable end.
    pub fn lag_records(&self, durable_end: u64) -> u64 {
        durable_end.saturating_sub(self.committed.load(Ordering::Relaxed))
    }

    /// Estimated bytes of the lag (records × mean record size on disk).
    pub fn lag_bytes(&self, durable_end: u64) -> u64 {
        self.lag_records(durable_end)
            .saturating_mul(self.mean_record_bytes.load(Ordering::Relaxed))
    }

    /// Seconds since the oldest unforwarded record was ingested (0 when caught up).
    pub fn oldest_age_seconds(&self, durable_end: u64) -> f64 {
        let ts = self.oldest_pending_ms.load(Ordering::Relaxed);
        if ts == 0 || self.lag_records(durable_end) == 0 {
            return 0.0;
        }
        now_ms().saturating_sub(ts) as f64 / 1000.0
    }

    /// Folds the on-disk size of a chunk into the running mean record size.
    pub fn observe_record_sizes(&self, records: usize, bytes: usize) {
        if records == 0 {
            return;
        }
        let sample = (bytes / records) as u64;
        let old = self.mean_record_bytes.load(Ordering::Relaxed);
        let new = if old == 0 {
            sample
        } else {
            (old * 7 + sample) / 8
        };
        self.mean_record_bytes.store(new, Ordering::Relaxed);
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::producer::codes;

    #[test]
    fn latency_lands_in_the_first_bucket_that_holds_it() {
        let h = LatencyHistogram::new(&[0.01, 0.1]);
        h.observe(std::time::Duration::from_millis(10));
        h.observe(std::time::Duration::from_millis(50));
        h.observe(std::time::Duration::from_secs(3));
        let snap = h.snapshot();
        assert_eq!(snap.counts, vec![1, 1, 1]);
        assert!((snap.sum_seconds - 3.06).abs() < 1e-9);
    }

    #[test]
    fn errors_are_counted_by_kind() {
        let m = ForwardMetrics::default();
        let connect = ProduceError::Connect {
            broker: "b".into(),
            source: std::io::ErrorKind::ConnectionRefused.into(),
        };
        m.count_error(error_kind(&connect));
        let unknown = ProduceError::Broker {
            api: "Produce",
            topic: "t".into(),
            partition: 0,
            code: codes::UNKNOWN_TOPIC_OR_PARTITION,
            name: String::new(),
            message: None,
        };
        m.count_error(error_kind(&unknown));
        m.count_error(error_kind(&unknown));
        assert_eq!(m.errors_of("unreachable"), 1);
        assert_eq!(m.errors_of("unknown_topic"), 2);
        assert_eq!(
            error_kind(&ProduceError::BatchTooLarge { bytes: 2, max: 1 }),
            "rejected"
        );
        m.count_error("nonsense");
        assert_eq!(m.errors_of("fatal"), 1);
        let cert = ProduceError::TlsHandshake {
            broker: "b".into(),
            source: std::io::ErrorKind::InvalidData.into(),
        };
        assert_eq!(error_kind(&cert), "auth");
    }

    #[test]
    fn errors_map_to_states() {
        let refused = ProduceError::Connect {
            broker: "b".into(),
            source: std::io::ErrorKind::ConnectionRefused.into(),
        };
        assert_eq!(UplinkState::after(&refused), Some(UplinkState::Down));
        let too_big = ProduceError::BatchTooLarge { bytes: 2, max: 1 };
        assert_eq!(
            UplinkState::after(&too_big),
            None,
            "the record, not the uplink"
        );
        let refused = |code| ProduceError::refused("Produce", "t", 0, code, None);
        let acl = refused(codes::TOPIC_AUTHORIZATION_FAILED);
        assert_eq!(UplinkState::after(&acl), Some(UplinkState::AuthFailed));
        let restarted = refused(codes::UNKNOWN_PRODUCER_ID);
        assert_eq!(
            UplinkState::after(&restarted),
            None,
            "a new session, not an outage"
        );
        for s in UplinkState::ALL {
            assert_eq!(UplinkState::from_u8(s.as_u8()), s);
        }
    }

    #[test]
    fn the_uplink_state_notes_when_it_changed() {
        let m = ForwardMetrics::default();
        assert_eq!(m.uplink_state(), UplinkState::Connecting);
        assert_eq!(m.uplink_since_ms(), 0);
        m.set_uplink_state(UplinkState::Down);
        assert_eq!(m.uplink_state(), UplinkState::Down);
        let since = m.uplink_since_ms();
        assert!(since > 0);
        m.set_uplink_state(UplinkState::Down);
        assert_eq!(m.uplink_since_ms(), since, "no change, same time");
    }

    #[test]
    fn lag_and_age_follow_the_committed_offset() {
        let m = ForwardMetrics::default();
        m.committed.store(10, Ordering::Relaxed);
        m.observe_record_sizes(4, 400);
        assert_eq!(m.lag_records(15), 5);
        assert_eq!(m.lag_bytes(15), 500);
        assert_eq!(m.oldest_age_seconds(15), 0.0, "no pending record known");
        m.oldest_pending_ms.store(1, Ordering::Relaxed);
        assert!(m.oldest_age_seconds(15) > 1e6);
        assert_eq!(m.oldest_age_seconds(10), 0.0, "caught up");
    }
}
