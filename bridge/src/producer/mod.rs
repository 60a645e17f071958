//! The Kafka producer the bridge forwards through.
//!
//! [`KafkaProducer`] is the seam: the forwarder produces one batch for one topic-partition and
//! gets the base offset back, or a [`ProduceError`] whose [`ErrorClass`] says what to do next
//! (retry with backoff, re-resolve the topic, dead-letter, or stop).
//!
//! [`WireProducer`] is the implementation: a small client of our own on the `kafka-protocol`
//! crate's message types, because the pure-Rust alternative (rskafka 0.6) leaves Nagle on and
//! stalls mid-size requests ~44 ms, has no request timeout and no socket options.
//! - `conn`: one TCP connection (TCP_NODELAY, TLS, ApiVersions handshake, SASL; one request
//!   at a time with a size cap and a timeout) and its set-up counts ([`ConnectionSetups`]).
//! - `pipeline`: a connection with up to `max_in_flight` Produce requests in flight, answered
//!   in order by a reader task; timeouts, the broker's throttle, SASL renewal in place.
//! - `frame`: request and response frames (encoding, correlation ids, decoding, the batch
//!   written in place of its mark), API version choice.
//! - `batch`: record-batch v2 encoding and compression (none, gzip, snappy, lz4, zstd — all pure
//!   Rust), into reused buffers, duplicate header keys preserved; [`EncodedBatch`]: encoded
//!   ahead, the producer identity stamped in when the batch is written.
//! - [`tls`]: TLS to the brokers (rustls, ring), CA bundle and optional client certificate.
//! - [`sasl`]: SASL PLAIN, SCRAM-SHA-256/512 and OAUTHBEARER after the ApiVersions handshake,
//!   re-authentication when the session lifetime runs out (KIP-368), and [`sasl::SaslStatus`].
//! - [`txn`]: the transaction state machine for exactly-once forwarding (InitProducerId,
//!   AddPartitionsToTxn, TxnOffsetCommit of the position, EndTxn; fencing, recovery, retries),
//!   over a [`txn::TxnBroker`] transport.
//! - `client`: metadata cache (refreshed on leader errors and periodically), per-broker
//!   connections, Produce with acks=all, CreateTopics for tooling and tests.

mod batch;
mod client;
mod conn;
mod counted;
mod frame;
mod metadata;
mod pipeline;
pub mod sasl;
pub mod sequence;
pub mod tls;
pub mod txn;
pub mod txn_wire;

use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::time::Duration;

use bytes::Bytes;
use thiserror::Error;

pub use batch::BatchIdentity;
pub use batch::EncodedBatch;
pub use batch::encode_batch;
pub use batch::{record_len_bound, records_room};
pub use client::{ProducerConfig, ProducerIdentity, WireProducer};
pub use conn::{ConnectionSetups, SetupStep};
pub use counted::WireBytes;
pub use sequence::{Attempt, Sequencer, Session};

// Defined with the other header types, in `headers` (the producer depends on it, not back).
pub use crate::headers::RecordHeader;

use crate::headers::EdgeHeaders;
use crate::topition::Topition;

/// One record to produce.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProduceRecord {
    /// Record key; `None` is Kafka's null key.
    pub key: Option<Bytes>,
    /// Record value; `None` is a tombstone.
    pub value: Option<Bytes>,
    /// A forwarded record's four `edge-*` headers, written first (see [`EdgeHeaders`]);
    /// `None` for records that carry only `headers`.
    pub edge: Option<EdgeHeaders>,
    /// Headers, in order (after `edge`'s).
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
    /// SASL authentication failed (wrong credentials, unsupported mechanism, unreadable
    /// secret file). Retried with backoff: the credentials may be fixed while we wait.
    #[error("Kafka SASL {mechanism} authentication with {broker} failed: {reason}")]
    Authentication {
        /// Broker address.
        broker: String,
        /// The mechanism's wire name.
        mechanism: &'static str,
        /// Why, as the broker or our check said it.
        reason: String,
    },
    /// TCP connect failed.
    #[error("connecting to Kafka broker {broker}: {source}")]
    Connect {
        /// Broker address.
        broker: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The TLS handshake failed: the broker's certificate was not trusted, or it refused ours.
    #[error("TLS handshake with Kafka broker {broker}: {source}")]
    TlsHandshake {
        /// Broker address.
        broker: String,
        /// The TLS error.
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
    #[error("no leader known for {topic}/{partition}{}", after_loss.as_deref().map(|l| format!(" (after {l})")).unwrap_or_default())]
    NoLeader {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// The connection lost shortly before, if any: which broker went away, for the
        /// operator (in a cluster the error that follows a broker's loss may not name it).
        after_loss: Option<String>,
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
    /// Not sent: an earlier batch of the same round of sends failed before it left because
    /// Kafka could not be reached (a connection that could not be set up, a metadata or
    /// producer-id request without an answer), so this one waits for that one's resend rather
    /// than spend another timeout on the same cause. Says nothing about the uplink by itself.
    #[error(
        "not sent to {topic}/{partition}: an earlier batch of the same round could not reach Kafka"
    )]
    NotSent {
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
    /// Exactly-once delivery: the producer epoch of the transaction is no longer usable
    /// (the broker refused its state); the transaction must be aborted and resent.
    #[error(
        "the transactional producer {transactional_id:?} needs a new transaction epoch; the transaction is aborted and resent"
    )]
    NoTransaction {
        /// The transactional.id.
        transactional_id: String,
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

/// Kafka error codes the bridge treats specially (see `ProduceError::class`) and those of the
/// transactional protocol (`txn`).
pub mod codes {
    /// UNKNOWN_SERVER_ERROR (Tansu 0.6's answer to a KIP-588 recovery).
    pub const UNKNOWN_SERVER_ERROR: i16 = -1;
    /// CORRUPT_MESSAGE (CRC mismatch on the wire; retriable).
    pub const CORRUPT_MESSAGE: i16 = 2;
    /// UNKNOWN_TOPIC_OR_PARTITION.
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    /// LEADER_NOT_AVAILABLE.
    pub const LEADER_NOT_AVAILABLE: i16 = 5;
    /// NOT_LEADER_OR_FOLLOWER.
    pub const NOT_LEADER_OR_FOLLOWER: i16 = 6;
    /// REQUEST_TIMED_OUT.
    pub const REQUEST_TIMED_OUT: i16 = 7;
    /// BROKER_NOT_AVAILABLE (Kafka calls it non-retriable; for a forwarder it is transient).
    pub const BROKER_NOT_AVAILABLE: i16 = 8;
    /// MESSAGE_TOO_LARGE.
    pub const MESSAGE_TOO_LARGE: i16 = 10;
    /// COORDINATOR_LOAD_IN_PROGRESS.
    pub const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
    /// COORDINATOR_NOT_AVAILABLE.
    pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
    /// NOT_COORDINATOR.
    pub const NOT_COORDINATOR: i16 = 16;
    /// RECORD_LIST_TOO_LARGE.
    pub const RECORD_LIST_TOO_LARGE: i16 = 18;
    /// NOT_ENOUGH_REPLICAS (fewer in-sync replicas than `min.insync.replicas`: not written).
    pub const NOT_ENOUGH_REPLICAS: i16 = 19;
    /// TOPIC_AUTHORIZATION_FAILED.
    pub const TOPIC_AUTHORIZATION_FAILED: i16 = 29;
    /// GROUP_AUTHORIZATION_FAILED.
    pub const GROUP_AUTHORIZATION_FAILED: i16 = 30;
    /// CLUSTER_AUTHORIZATION_FAILED.
    pub const CLUSTER_AUTHORIZATION_FAILED: i16 = 31;
    /// UNSUPPORTED_SASL_MECHANISM.
    pub const UNSUPPORTED_SASL_MECHANISM: i16 = 33;
    /// ILLEGAL_SASL_STATE.
    pub const ILLEGAL_SASL_STATE: i16 = 34;
    /// UNSUPPORTED_VERSION.
    pub const UNSUPPORTED_VERSION: i16 = 35;
    /// TOPIC_ALREADY_EXISTS.
    pub const TOPIC_ALREADY_EXISTS: i16 = 36;
    /// OUT_OF_ORDER_SEQUENCE_NUMBER.
    pub const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
    /// DUPLICATE_SEQUENCE_NUMBER.
    pub const DUPLICATE_SEQUENCE_NUMBER: i16 = 46;
    /// INVALID_PRODUCER_EPOCH.
    pub const INVALID_PRODUCER_EPOCH: i16 = 47;
    /// INVALID_TXN_STATE.
    pub const INVALID_TXN_STATE: i16 = 48;
    /// INVALID_PRODUCER_ID_MAPPING.
    pub const INVALID_PRODUCER_ID_MAPPING: i16 = 49;
    /// INVALID_TRANSACTION_TIMEOUT.
    pub const INVALID_TRANSACTION_TIMEOUT: i16 = 50;
    /// CONCURRENT_TRANSACTIONS.
    pub const CONCURRENT_TRANSACTIONS: i16 = 51;
    /// TRANSACTIONAL_ID_AUTHORIZATION_FAILED.
    pub const TRANSACTIONAL_ID_AUTHORIZATION_FAILED: i16 = 53;
    /// OPERATION_NOT_ATTEMPTED.
    pub const OPERATION_NOT_ATTEMPTED: i16 = 55;
    /// SASL_AUTHENTICATION_FAILED.
    pub const SASL_AUTHENTICATION_FAILED: i16 = 58;
    /// UNKNOWN_PRODUCER_ID.
    pub const UNKNOWN_PRODUCER_ID: i16 = 59;
    /// FENCED_LEADER_EPOCH.
    pub const FENCED_LEADER_EPOCH: i16 = 74;
    /// UNKNOWN_LEADER_EPOCH.
    pub const UNKNOWN_LEADER_EPOCH: i16 = 75;
    /// INVALID_RECORD.
    pub const INVALID_RECORD: i16 = 87;
    /// PRODUCER_FENCED.
    pub const PRODUCER_FENCED: i16 = 90;
    /// TRANSACTIONAL_ID_NOT_FOUND.
    pub const TRANSACTIONAL_ID_NOT_FOUND: i16 = 105;
    /// TRANSACTION_ABORTABLE.
    pub const TRANSACTION_ABORTABLE: i16 = 120;
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
            // A certificate may be fixed on the other side: retried like an unreachable broker.
            ProduceError::Connect { .. }
            | ProduceError::TlsHandshake { .. }
            | ProduceError::Io { .. }
            | ProduceError::Timeout { .. }
            | ProduceError::NoLeader { .. }
            | ProduceError::Authentication { .. }
            | ProduceError::Blocked { .. }
            | ProduceError::NotSent { .. }
            | ProduceError::NoTransaction { .. } => ErrorClass::Retriable,
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

    /// The broker's refusal of `api` for `topic`/`partition` (-1: topic-level) with `code`,
    /// named as Kafka names it.
    pub fn refused(
        api: &'static str,
        topic: &str,
        partition: i32,
        code: i16,
        message: Option<String>,
    ) -> Self {
        ProduceError::Broker {
            api,
            topic: topic.to_owned(),
            partition,
            code,
            name: code_name(code),
            message,
        }
    }

    /// True if the cluster refused who we are: TLS certificates, SASL credentials, ACLs.
    pub fn is_auth_failure(&self) -> bool {
        match self {
            ProduceError::Tls { .. }
            | ProduceError::TlsHandshake { .. }
            | ProduceError::Authentication { .. } => true,
            ProduceError::Broker { code, .. } => matches!(
                *code,
                codes::TOPIC_AUTHORIZATION_FAILED
                    | codes::GROUP_AUTHORIZATION_FAILED
                    | codes::CLUSTER_AUTHORIZATION_FAILED
                    | codes::UNSUPPORTED_SASL_MECHANISM
                    | codes::ILLEGAL_SASL_STATE
                    | codes::TRANSACTIONAL_ID_AUTHORIZATION_FAILED
                    | codes::SASL_AUTHENTICATION_FAILED
            ),
            _ => false,
        }
    }

    /// True if Kafka wrote none of the batch, for a reason that may last: a refusal (credentials,
    /// certificates, ACLs), no leader, too few in-sync replicas. One record resent tells as
    /// well as the whole batch whether it still holds, and may be split off: no sequence number
    /// of the batch was taken. (Not a timeout, nor NOT_ENOUGH_REPLICAS_AFTER_APPEND: the batch
    /// may be written, and its resend must match it for Kafka to recognise the duplicate.)
    pub fn wrote_nothing(&self) -> bool {
        self.is_auth_failure()
            || matches!(
                self,
                ProduceError::Broker {
                    code: codes::LEADER_NOT_AVAILABLE
                        | codes::NOT_LEADER_OR_FOLLOWER
                        | codes::NOT_ENOUGH_REPLICAS,
                    ..
                }
            )
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
            | ProduceError::TlsHandshake { .. }
            | ProduceError::Io { .. }
            | ProduceError::Timeout { .. }
            | ProduceError::NoLeader { .. }
            | ProduceError::UnknownPartition { .. } => true,
            _ => false,
        }
    }
}

/// The answer to a produce request already sent with [`KafkaProducer::send`]: the offset Kafka
/// gave the first record (-1 if Kafka only said it had the batch already), or the error. A
/// request refused before it was written is answered at once, and
/// [`ProduceAck::failed_at_once`] tells so without polling.
#[must_use = "the answer says whether Kafka has the batch"]
pub struct ProduceAck(Answer);

enum Answer {
    /// Known when the request was sent (taken when polled).
    Ready(Option<Result<i64, ProduceError>>),
    /// Arrives with the broker's response.
    Pending(Pin<Box<dyn Future<Output = Result<i64, ProduceError>> + Send>>),
}

impl ProduceAck {
    /// An answer known already.
    pub fn ready(result: Result<i64, ProduceError>) -> Self {
        Self(Answer::Ready(Some(result)))
    }

    /// An answer that arrives with `future`.
    pub fn pending(
        future: impl Future<Output = Result<i64, ProduceError>> + Send + 'static,
    ) -> Self {
        Self(Answer::Pending(Box::pin(future)))
    }

    /// True if the request was refused before it left (the answer is an error, known now).
    pub fn failed_at_once(&self) -> bool {
        self.error_at_once().is_some()
    }

    /// The error of a request refused before it left (None: sent, or not refused).
    pub fn error_at_once(&self) -> Option<&ProduceError> {
        match &self.0 {
            Answer::Ready(Some(Err(e))) => Some(e),
            _ => None,
        }
    }
}

impl std::fmt::Debug for ProduceAck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Answer::Ready(result) => f.debug_tuple("ProduceAck::Ready").field(result).finish(),
            Answer::Pending(_) => f.write_str("ProduceAck::Pending"),
        }
    }
}

impl Future for ProduceAck {
    type Output = Result<i64, ProduceError>;

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        match &mut self.0 {
            Answer::Ready(result) => std::task::Poll::Ready(result.take().unwrap_or_else(|| {
                Err(ProduceError::Protocol {
                    broker: String::new(),
                    reason: "produce answer polled after it was taken".into(),
                })
            })),
            Answer::Pending(future) => future.as_mut().poll(cx),
        }
    }
}

/// Produces record batches to Kafka. Implemented by [`WireProducer`]; tests inject faults
/// with their own implementation (they implement `produce`; the default `send` answers at
/// once with its result).
pub trait KafkaProducer: Send + Sync {
    /// Sends `records` to `tp` as one batch without waiting for Kafka's answer: when the
    /// returned future completes the request is ordered before any later `send` to the
    /// partition, and the [`ProduceAck`] resolves to Kafka's answer. `encoded` is the batch
    /// [`encode`](KafkaProducer::encode) made of the same records, if any. After a failure,
    /// [`Attempt::First`] sends to the partition fail with [`ProduceError::Blocked`] until an
    /// [`Attempt::Resend`] of the failed batch, which waits for the answers still in flight
    /// (it is refused with `Blocked` before that); so nothing overtakes a failed batch.
    fn send(
        &self,
        tp: &Topition,
        records: &[ProduceRecord],
        encoded: Option<EncodedBatch>,
        attempt: Attempt,
    ) -> impl Future<Output = ProduceAck> + Send {
        drop((encoded, attempt));
        // The answer is itself a future: that is the point of `send`.
        #[allow(clippy::async_yields_async)]
        async move {
            ProduceAck::ready(self.produce(tp, records).await)
        }
    }

    /// Encodes `records` as the batch `send` will send, ahead of time and off the send path
    /// (the forwarder runs it on a blocking thread while earlier chunks are sent). None if this
    /// producer does not encode ahead (the default) or the records do not encode (then `send`
    /// meets the error itself).
    fn encode(&self, _records: &[ProduceRecord]) -> Option<EncodedBatch> {
        None
    }

    /// Appends `records`, in order, to `tp` as one batch and waits for the broker's
    /// acknowledgement (acks=all): a [`send`](KafkaProducer::send) as a resend, awaited.
    /// Returns the offset Kafka gave the first record.
    fn produce(
        &self,
        tp: &Topition,
        records: &[ProduceRecord],
    ) -> impl Future<Output = Result<i64, ProduceError>> + Send;

    /// The topic's partition count (cached; refreshed on leader errors, after a lost
    /// connection and periodically, so partitions added to a topic are picked up).
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

    /// A cheap check that the cluster answers again (a connection and its ApiVersions
    /// handshake), tried while the forwarder waits out a backoff: Ok ends the wait early.
    /// Producers that cannot tell never resolve (the default), so the backoff runs out.
    fn probe(&self) -> impl Future<Output = Result<(), ProduceError>> + Send {
        std::future::pending()
    }

    /// A fingerprint of the local credentials read at every authentication (the SASL password
    /// or token file), read now; None without any (the default). A retry after a refusal is
    /// cut short when it changes: an operator fixed the file.
    fn credentials(&self) -> Option<u64> {
        None
    }
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
