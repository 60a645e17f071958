//! What a Kafka refusal or failure is, and how the forwarder treats it: [`ProduceError`] (every
//! way a produce, metadata or admin request fails, on our side or the broker's), [`ErrorClass`]
//! (what to do next), the Kafka error [`codes`] the bridge names, and the rules that sort one
//! into the other. Plain code, no I/O; it imports nothing from the rest of the crate, and the
//! producer's parts (`conn`, `pipeline`, `client`, `sasl`, `txn`, …) import it from here.
//!
//! Invariants (the forwarder, the uplink state and the metrics rely on them):
//! - [`ErrorClass::Retriable`]: whatever may pass — a broker or connection lost, a timeout with
//!   the outcome unknown, no leader, SASL refused (the credentials may be fixed while we wait),
//!   a TLS handshake refused (the certificate may be fixed on the other side), a batch
//!   [`Blocked`](ProduceError::Blocked) or [`NotSent`](ProduceError::NotSent) behind a failed
//!   one, a transaction needing a new epoch. Of Kafka's codes: those `kafka-protocol` calls
//!   retriable, plus `BROKER_NOT_AVAILABLE` (Kafka calls it non-retriable; for a forwarder it is
//!   transient) and the idempotence codes `OUT_OF_ORDER_SEQUENCE_NUMBER`,
//!   `DUPLICATE_SEQUENCE_NUMBER`, `INVALID_PRODUCER_EPOCH`, `UNKNOWN_PRODUCER_ID` (a new producer
//!   session and a resend: a duplicate is possible, never a loss).
//! - [`ErrorClass::UnknownTopic`]: `UNKNOWN_TOPIC_OR_PARTITION`, or a partition index the topic
//!   does not have.
//! - [`ErrorClass::Rejected`] (dead-letter): `MESSAGE_TOO_LARGE`, `RECORD_LIST_TOO_LARGE`,
//!   `INVALID_RECORD`, or a batch above `max_request_bytes`.
//! - [`ErrorClass::Fatal`]: everything else, including codes we do not know: they are never
//!   retried blindly.
//! - [`ProduceError::is_auth_failure`] (the cluster refused who we are: TLS, SASL, ACLs) is told
//!   apart from the class: a SASL refusal is retried, an ACL refusal is not, both are refusals.
//! - [`ProduceError::wrote_nothing`] promises Kafka wrote none of the batch and took none of its
//!   sequence numbers, for a reason that may last (a refusal of who we are;
//!   `LEADER_NOT_AVAILABLE`, `NOT_LEADER_OR_FOLLOWER`; `NOT_ENOUGH_REPLICAS`), so one record may
//!   be split off and resent to ask whether it still holds. Never true when the batch may be
//!   written (a timeout, `NOT_ENOUGH_REPLICAS_AFTER_APPEND`): its resend must match it.
//! - `poisons_connection`: the stream state is unknown (I/O error, timeout, oversized response,
//!   undecodable response); the connection is dropped. `stales_metadata`: the leader moved, the
//!   topic or partition vanished, or its broker could not be reached; the cached metadata for
//!   the topic is dropped.

use std::time::Duration;

use thiserror::Error;

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
}
