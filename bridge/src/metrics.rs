//! Counters and gauges of the forwarder, shared with whoever renders `/metrics`.
//!
//! Plain atomics: the forwarder task writes them, the metrics endpoint reads them. Lag and the
//! age of the oldest unforwarded record are derived at read time from the log's durable end and
//! the cursor's committed offset, so they stay right while the forwarder is stuck in a retry.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::producer::{ErrorClass, ProduceError};

/// Error kinds counted in [`ForwardMetrics::errors`], in this order.
pub const ERROR_KINDS: [&str; 10] = [
    "unreachable",
    "connection_reset",
    "timeout",
    "unknown_topic",
    "rejected",
    "broker_retriable",
    "authentication",
    "fatal",
    "plan",
    "log",
];

/// The error-kind label of a produce error (one of [`ERROR_KINDS`]).
pub fn error_kind(error: &ProduceError) -> &'static str {
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

/// What the forwarder did so far.
#[derive(Debug, Default)]
pub struct ForwardMetrics {
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
    /// True while the upstream is failing (set on a failed attempt, cleared on success).
    pub upstream_down: AtomicBool,
}

impl ForwardMetrics {
    /// Counts one failed attempt of `kind` (one of [`ERROR_KINDS`]; others count as `fatal`).
    pub fn count_error(&self, kind: &str) {
        let i = ERROR_KINDS
            .iter()
            .position(|k| *k == kind)
            .unwrap_or(ERROR_KINDS.len() - 3);
        self.errors[i].fetch_add(1, Ordering::Relaxed);
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
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        now.saturating_sub(ts) as f64 / 1000.0
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::producer::codes;

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
