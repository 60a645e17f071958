//! The Kafka producer the bridge forwards through.
//!
//! [`KafkaProducer`] is the seam: the forwarder produces one batch for one topic-partition and
//! gets the base offset back, or a [`ProduceError`] whose [`ErrorClass`] says what to do next
//! (retry with backoff, re-resolve the topic, dead-letter, or stop).
//! - [`error`]: what a Kafka refusal or failure is and how the forwarder treats it:
//!   [`ProduceError`], [`ErrorClass`], the Kafka error [`codes`] the bridge names, and which
//!   errors are retriable, fatal, refusals of who we are, or wrote nothing. Re-exported here;
//!   the parts below import it from there, not from this file.
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
pub mod error;
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

use bytes::Bytes;
use thiserror::Error;

pub use batch::BatchIdentity;
pub use batch::EncodedBatch;
pub use batch::encode_batch;
pub use batch::{record_len_bound, records_room};
pub use client::{ProducerConfig, ProducerIdentity, WireProducer};
pub use conn::{ConnectionSetups, SetupStep};
pub use counted::WireBytes;
pub use error::{ErrorClass, ProduceError, classify_code, code_name, codes};
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
