//! The Kafka producer the bridge forwards through.
//!
//! [`KafkaProducer`] is the seam: the forwarder produces one batch for one topic-partition and
//! gets the base offset back, or a [`ProduceError`] whose [`ErrorClass`] says what to do next
//! (retry with backoff, re-resolve the topic, dead-letter, or stop).
//!
//! [`WireProducer`] is the implementation: a small client of our own on the `kafka-protocol`
//! crate's message types, because the pure-Rust alternative (rskafka 0.6) leaves Nagle on and
//! stalls mid-size requests ~44 ms, has no request timeout and no socket options.
//! - `conn`: one TCP connection (TCP_NODELAY, ApiVersions handshake, framed request/response
//!   with a size cap and a timeout).
//! - `batch`: record-batch v2 encoding and compression (none, gzip, snappy, lz4, zstd — all pure
//!   Rust), into reused buffers, duplicate header keys preserved; [`EncodedBatch`]: encoded
//!   ahead, the producer identity stamped in when the batch is written.
//! - [`tls`]: TLS to the brokers (rustls, ring), CA bundle and optional client certificate.
//! - [`txn`]: the transaction state machine for exactly-once forwarding (InitProducerId,
//!   AddPartitionsToTxn, TxnOffsetCommit of the position, EndTxn; fencing, recovery, retries),
//!   over a [`txn::TxnBroker`] transport.
//! - `client`: metadata cache (refreshed on leader errors and periodically), per-broker
//!   connections, Produce with acks=all, CreateTopics for tooling and tests.

mod batch;
mod client;
mod conn;
pub mod tls;
pub mod txn;

use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::time::Duration;

use bytes::Bytes;
use thiserror::Error;

pub use batch::BatchIdentity;
pub use batch::EncodedBatch;
pub use batch::encode_batch;
pub use client::{ProducerConfig, ProducerIdentity, WireProducer};

/// One Kafka record header. Kafka allows repeated keys; order is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordHeader {
    /// Header name (UTF-8).
    pub key: Bytes,
    /// Header value.
    pub value: Bytes,
}

impl RecordHeader {
    /// A header from a name and a value.
    pub fn new(key: Bytes, value: Bytes) -> Self {
        Self { key, value }
    }
}

/// One record to produce.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProduceRecord {
    /// Record key; `None` is Kafka's null key.
    pub key: Option<Bytes>,
    /// Record value; `None` is a tombstone.
    pub value: Option<Bytes>,
    /// Headers, in order.
    pub headers: Vec<RecordHeader>,
    /// Create time, unix milliseconds.
    pub timestamp_ms: i64,
}

/// Record-batch compression codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// No compression.
    None,
    /// gzip (miniz_oxide).
    Gzip,
    /// Snappy with the xerial framing the Java client uses.
    Snappy,
    /// LZ4 frame format (lz4_flex); the default: cheap on small ARM cores.
    #[default]
    Lz4,
    /// Zstandard (ruzstd, "fastest" level).
    Zstd,
}

impl Compression {
    /// The codec id in the record batch's attributes.
    pub fn attribute(self) -> i16 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }

    /// The name used in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

/// A compression name that is not one of none, gzip, snappy, lz4, zstd.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("unknown compression {0:?}: expected none, gzip, snappy, lz4 or zstd")]
pub struct UnknownCompression(pub String);

impl FromStr for Compression {
    type Err = UnknownCompression;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "none" => Compression::None,
            "gzip" => Compression::Gzip,
            "snappy" => Compression::Snappy,
            "lz4" => Compression::Lz4,
            "zstd" => Compression::Zstd,
            other => return Err(UnknownCompression(other.to_owned())),
        })
    }
}

/// What the caller should do about a failed produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Transient (leader moved, broker down, connection reset, timeout with unknown outcome):
    /// back off and send the same records again. Kafka may already hold them; the `edge-offset`
    /// header lets consumers drop the duplicates.
    Retriable,
    /// The topic or partition does not exist (any more): re-resolve partitions, maybe wait
    /// for it to be created, then retry.
    UnknownTopic,
    /// The broker refused these records for good (too large, invalid): dead-letter them.
    Rejected,
    /// Configuration or protocol problem retrying cannot fix (auth, unsupported broker).
    Fatal,
}

/// A produce, metadata or admin request that failed.
#[derive(Debug, Error)]
pub enum ProduceError {
    /// TLS material that does not load, or a broker name TLS cannot verify.
    #[error("Kafka TLS settings: {message}")]
    Tls {
        /// Which file or name is wrong, and why.
        message: String,
    },
    /// No broker address was configured.
    #[error("no bootstrap brokers configured")]
    NoBrokers,
    /// TCP connect failed.
    #[error("connecting to Kafka broker {broker}: {source}")]
    Connect {
        /// Broker address.
        broker: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The connection failed mid-request: the outcome of a produce is unknown.
    #[error("I/O with Kafka broker {broker}: {source}")]
    Io {
        /// Broker address.
        broker: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// No answer within the request timeout: the outcome of a produce is unknown.
    #[error("Kafka broker {broker} did not answer {api} within {after:?}")]
    Timeout {
        /// Broker address.
        broker: String,
        /// Which request.
        api: &'static str,
        /// The timeout that expired.
        after: Duration,
    },
    /// The broker answered with a Kafka error code.
    #[error("Kafka broker refused {api} for {topic}/{partition}: {name} (code {code}){}", message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    Broker {
        /// Which request.
        api: &'static str,
        /// Topic concerned.
        topic: String,
        /// Partition concerned (-1 for topic-level errors).
        partition: i32,
        /// Kafka error code.
        code: i16,
        /// Kafka's name for the code.
        name: String,
        /// Error message from the broker, if any.
        message: Option<String>,
    },
    /// The topic has no partition with this index.
    #[error("topic {topic} has {partitions} partitions, no partition {partition}")]
    UnknownPartition {
        /// Topic.
        topic: String,
        /// Requested partition.
        partition: i32,
        /// Partitions the topic has.
        partitions: i32,
    },
    /// Metadata named a leader we have no address for, or no leader at all.
    #[error("no leader known for {topic}/{partition}")]
    NoLeader {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
    },
    /// The encoded batch is over `max_request_bytes`; split it or dead-letter the record.
    #[error("record batch of {bytes} bytes exceeds max_request_bytes {max}")]
    BatchTooLarge {
        /// Encoded size.
        bytes: usize,
        /// Limit.
        max: usize,
    },
    /// Nothing to produce.
    #[error("empty record batch")]
    EmptyBatch,
    /// An earlier request to this partition failed while this one would have followed it:
    /// nothing is sent to the partition until the failed batch is resent (with `produce`),
    /// so records never overtake each other.
    #[error("an earlier produce request to {topic}/{partition} failed; it must be resent first")]
    Blocked {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
    },
    /// A response frame above the configured cap (refused before buffering it).
    #[error("Kafka broker {broker} sent a {bytes}-byte response, above the {max}-byte cap")]
    ResponseTooLarge {
        /// Broker address.
        broker: String,
        /// Announced size.
        bytes: usize,
        /// Cap.
        max: usize,
    },
    /// The broker lacks an API version we need.
    #[error("Kafka broker {broker} does not support {api} v{need} or later (has v{min}..=v{max})")]
    UnsupportedVersion {
        /// Broker address.
        broker: String,
        /// Which API.
        api: &'static str,
        /// Lowest version we can speak.
        need: i16,
        /// Broker's lowest.
        min: i16,
        /// Broker's highest.
        max: i16,
    },
    /// A response did not decode or did not match the request.
    #[error("protocol error with Kafka broker {broker}: {reason}")]
    Protocol {
        /// Broker address.
        broker: String,
        /// What went wrong.
        reason: String,
    },
    /// A record batch or request could not be encoded.
    #[error("encoding {what}: {reason}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// Why it failed.
        reason: String,
    },
}

/// Kafka error codes the bridge treats specially (see `ProduceError::class`).
pub mod codes {
    /// CORRUPT_MESSAGE (CRC mismatch on the wire; retriable).
    pub const CORRUPT_MESSAGE: i16 = 2;
    /// UNKNOWN_TOPIC_OR_PARTITION.
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    /// LEADER_NOT_AVAILABLE.
    pub const LEADER_NOT_AVAILABLE: i16 = 5;
    /// NOT_LEADER_OR_FOLLOWER.
    pub const NOT_LEADER_OR_FOLLOWER: i16 = 6;
    /// BROKER_NOT_AVAILABLE (Kafka calls it non-retriable; for a forwarder it is transient).
    pub const BROKER_NOT_AVAILABLE: i16 = 8;
    /// MESSAGE_TOO_LARGE.
    pub const MESSAGE_TOO_LARGE: i16 = 10;
    /// RECORD_LIST_TOO_LARGE.
    pub const RECORD_LIST_TOO_LARGE: i16 = 18;
    /// UNSUPPORTED_VERSION.
    pub const UNSUPPORTED_VERSION: i16 = 35;
    /// TOPIC_ALREADY_EXISTS.
    pub const TOPIC_ALREADY_EXISTS: i16 = 36;
    /// INVALID_RECORD.
    pub const INVALID_RECORD: i16 = 87;
    /// OUT_OF_ORDER_SEQUENCE_NUMBER.
    pub const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
    /// DUPLICATE_SEQUENCE_NUMBER.
    pub const DUPLICATE_SEQUENCE_NUMBER: i16 = 46;
    /// INVALID_PRODUCER_EPOCH.
    pub const INVALID_PRODUCER_EPOCH: i16 = 47;
    /// UNKNOWN_PRODUCER_ID.
    pub const UNKNOWN_PRODUCER_ID: i16 = 59;
    /// FENCED_LEADER_EPOCH.
    pub const FENCED_LEADER_EPOCH: i16 = 74;
    /// UNKNOWN_LEADER_EPOCH.
    pub const UNKNOWN_LEADER_EPOCH: i16 = 75;
}

/// Classifies a Kafka error code.
pub fn classify_code(code: i16) -> ErrorClass {
    use kafka_protocol::error::ResponseError;
    match code {
        codes::UNKNOWN_TOPIC_OR_PARTITION => ErrorClass::UnknownTopic,
        codes::MESSAGE_TOO_LARGE | codes::RECORD_LIST_TOO_LARGE | codes::INVALID_RECORD => {
            ErrorClass::Rejected
        }
        codes::BROKER_NOT_AVAILABLE => ErrorClass::Retriable,
        // Idempotence state lost or out of step: the producer starts a new session (new
        // producer id) and the batch can be resent; a duplicate is possible, never a loss.
        codes::OUT_OF_ORDER_SEQUENCE_NUMBER
        | codes::DUPLICATE_SEQUENCE_NUMBER
        | codes::INVALID_PRODUCER_EPOCH
        | codes::UNKNOWN_PRODUCER_ID => ErrorClass::Retriable,
        c => match ResponseError::try_from_code(c) {
            Some(e) if e.is_retriable() => ErrorClass::Retriable,
            _ => ErrorClass::Fatal,
        },
    }
}

/// Kafka's name for an error code, e.g. `NotLeaderOrFollower`.
pub fn code_name(code: i16) -> String {
    match kafka_protocol::error::ResponseError::try_from_code(code) {
        Some(e) => e.to_string(),
        None => "None".to_owned(),
    }
}

impl ProduceError {
    /// What the caller should do about this error.
    pub fn class(&self) -> ErrorClass {
        match self {
            ProduceError::Connect { .. }
            | ProduceError::Io { .. }
            | ProduceError::Timeout { .. }
            | ProduceError::NoLeader { .. }
            | ProduceError::Blocked { .. } => ErrorClass::Retriable,
            ProduceError::Broker { code, .. } => classify_code(*code),
            ProduceError::UnknownPartition { .. } => ErrorClass::UnknownTopic,
            ProduceError::BatchTooLarge { .. } => ErrorClass::Rejected,
            ProduceError::NoBrokers
            | ProduceError::Tls { .. }
            | ProduceError::EmptyBatch
            | ProduceError::ResponseTooLarge { .. }
            | ProduceError::UnsupportedVersion { .. }
            | ProduceError::Protocol { .. }
            | ProduceError::Encode { .. } => ErrorClass::Fatal,
        }
    }

    /// True if the connection this came from can no longer be trusted (unknown stream state).
    pub(crate) fn poisons_connection(&self) -> bool {
        matches!(
            self,
            ProduceError::Io { .. }
                | ProduceError::Timeout { .. }
                | ProduceError::ResponseTooLarge { .. }
                | ProduceError::Protocol { .. }
        )
    }

    /// True if the idempotent producer must start a new session (new producer id).
    pub(crate) fn resets_producer_id(&self) -> bool {
        matches!(
            self,
            ProduceError::Broker {
                code: codes::OUT_OF_ORDER_SEQUENCE_NUMBER
                    | codes::DUPLICATE_SEQUENCE_NUMBER
                    | codes::INVALID_PRODUCER_EPOCH
                    | codes::UNKNOWN_PRODUCER_ID,
                ..
            }
        )
    }

    /// True if cached metadata for the topic should be dropped (leader moved, topic vanished).
    pub(crate) fn stales_metadata(&self) -> bool {
        match self {
            ProduceError::Broker { code, .. } => matches!(
                *code,
                codes::UNKNOWN_TOPIC_OR_PARTITION
                    | codes::LEADER_NOT_AVAILABLE
                    | codes::NOT_LEADER_OR_FOLLOWER
                    | codes::FENCED_LEADER_EPOCH
                    | codes::UNKNOWN_LEADER_EPOCH
                    | codes::BROKER_NOT_AVAILABLE
            ),
            ProduceError::Connect { .. }
            | ProduceError::Io { .. }
            | ProduceError::Timeout { .. }
            | ProduceError::NoLeader { .. }
            | ProduceError::UnknownPartition { .. } => true,
            _ => false,
        }
    }
}

/// The answer to a produce request already sent with [`KafkaProducer::send`]: the offset Kafka
/// gave the first record (-1 if Kafka only said it had the batch already), or the error.
pub type ProduceAck = Pin<Box<dyn Future<Output = Result<i64, ProduceError>> + Send>>;

/// Produces record batches to Kafka. Implemented by [`WireProducer`]; tests may inject faults
/// with their own implementation.
pub trait KafkaProducer: Send + Sync {
    /// Sends `records` to `topic`/`partition` as one batch without waiting for Kafka's answer.
    /// When the returned future completes, the request is ordered before any later `send` or
    /// `produce` to the same partition; the [`ProduceAck`] resolves to what `produce` would
    /// return. Once a request failed, later `send`s to the partition fail with
    /// [`ProduceError::Blocked`] until `produce` resent the failed batch, so nothing overtakes
    /// it. The default implementation keeps nothing in flight: it produces and answers.
    fn send(
        &self,
        topic: &str,
        partition: i32,
        records: &[ProduceRecord],
    ) -> impl Future<Output = ProduceAck> + Send {
        // The answer is itself a future: that is the point of `send`.
        #[allow(clippy::async_yields_async)]
        async move {
            let result = self.produce(topic, partition, records).await;
            Box::pin(std::future::ready(result)) as ProduceAck
        }
    }

    /// Encodes `records` as the batch `send_encoded` will send, ahead of time and off the
    /// send path (the forwarder runs it on a blocking thread while earlier chunks are sent).
    /// None if this producer does not encode ahead (the default) or the records do not
    /// encode (then `send` meets the error itself).
    fn encode(&self, _records: &[ProduceRecord]) -> Option<EncodedBatch> {
        None
    }

    /// [`send`](KafkaProducer::send) with the batch `encode` made of the same `records`
    /// (identity stamped in when it is written); without one, or from a producer that does not
    /// encode ahead, exactly `send`.
    fn send_encoded(
        &self,
        topic: &str,
        partition: i32,
        records: &[ProduceRecord],
        encoded: Option<EncodedBatch>,
    ) -> impl Future<Output = ProduceAck> + Send {
        drop(encoded);
        self.send(topic, partition, records)
    }

    /// Appends `records`, in order, to `topic`/`partition` as one batch and waits for the
    /// broker's acknowledgement (acks=all). Returns the offset Kafka gave the first record.
    /// This is also how a failed batch is resent: once no request to the partition is in
    /// flight any more it lifts the block `send` set (before that: [`ProduceError::Blocked`]).
    fn produce(
        &self,
        topic: &str,
        partition: i32,
        records: &[ProduceRecord],
    ) -> impl Future<Output = Result<i64, ProduceError>> + Send;

    /// The topic's partition count (cached; refreshed on leader errors and periodically, so
    /// partitions added to a topic are picked up).
    fn partition_count(
        &self,
        topic: &str,
    ) -> impl Future<Output = Result<i32, ProduceError>> + Send;

    /// Creates `topic` with `partitions` partitions; Ok(false) if it existed. Producers that
    /// cannot administer topics answer with the error they would get for an unknown topic.
    fn create_topic(
        &self,
        topic: &str,
        partitions: i32,
    ) -> impl Future<Output = Result<bool, ProduceError>> + Send {
        let error = ProduceError::UnknownPartition {
            topic: topic.to_owned(),
            partition: 0,
            partitions,
        };
        async move { Err(error) }
    }

    /// Drops anything cached about `topic` (its partitions changed or it vanished).
    fn forget_topic(&self, _topic: &str) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_are_classified() {
        assert_eq!(
            classify_code(codes::NOT_LEADER_OR_FOLLOWER),
            ErrorClass::Retriable
        );
        assert_eq!(
            classify_code(codes::LEADER_NOT_AVAILABLE),
            ErrorClass::Retriable
        );
        assert_eq!(classify_code(7), ErrorClass::Retriable, "REQUEST_TIMED_OUT");
        assert_eq!(
            classify_code(19),
            ErrorClass::Retriable,
            "NOT_ENOUGH_REPLICAS"
        );
        assert_eq!(
            classify_code(codes::UNKNOWN_TOPIC_OR_PARTITION),
            ErrorClass::UnknownTopic
        );
        assert_eq!(
            classify_code(codes::MESSAGE_TOO_LARGE),
            ErrorClass::Rejected
        );
        assert_eq!(
            classify_code(codes::RECORD_LIST_TOO_LARGE),
            ErrorClass::Rejected
        );
        assert_eq!(classify_code(codes::INVALID_RECORD), ErrorClass::Rejected);
        assert_eq!(
            classify_code(29),
            ErrorClass::Fatal,
            "TOPIC_AUTHORIZATION_FAILED"
        );
        assert_eq!(
            classify_code(9999),
            ErrorClass::Fatal,
            "unknown codes are not retried blindly"
        );
        assert_eq!(code_name(6), "NotLeaderOrFollower");
    }

    #[test]
    fn client_side_errors_are_classified() {
        let io = || std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert_eq!(
            ProduceError::Io {
                broker: "b".into(),
                source: io()
            }
            .class(),
            ErrorClass::Retriable
        );
        assert_eq!(
            ProduceError::Connect {
                broker: "b".into(),
                source: io()
            }
            .class(),
            ErrorClass::Retriable
        );
        assert_eq!(
            ProduceError::Timeout {
                broker: "b".into(),
                api: "Produce",
                after: Duration::from_secs(1)
            }
            .class(),
            ErrorClass::Retriable
        );
        assert_eq!(
            ProduceError::BatchTooLarge { bytes: 2, max: 1 }.class(),
            ErrorClass::Rejected
        );
        assert_eq!(
            ProduceError::UnknownPartition {
                topic: "t".into(),
                partition: 9,
                partitions: 4
            }
            .class(),
            ErrorClass::UnknownTopic
        );
        let e = ProduceError::Broker {
            api: "Produce",
            topic: "t".into(),
            partition: 1,
            code: 6,
            name: code_name(6),
            message: None,
        };
        assert_eq!(
            e.to_string(),
            "Kafka broker refused Produce for t/1: NotLeaderOrFollower (code 6)"
        );
        assert!(e.stales_metadata() && !e.poisons_connection());
    }

    #[test]
    fn compression_names_round_trip() {
        for c in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            assert_eq!(c.as_str().parse::<Compression>(), Ok(c));
        }
        assert_eq!(Compression::default(), Compression::Lz4);
        assert!(
            "brotli"
                .parse::<Compression>()
                .unwrap_err()
                .to_string()
                .contains("brotli")
        );
    }
}
