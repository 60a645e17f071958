//! Public record types: what an ingress appends and what a cursor reads back. Their sizes on
//! disk (`encoded_len`) are computed in [`crate::format`], which owns the byte layout.

use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Protocol an event arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Source {
    /// MQTT 3.1.1 or 5.
    Mqtt,
    /// NATS client protocol.
    Nats,
}

impl Source {
    /// Lower-case protocol name (`mqtt` / `nats`), as used in the `edge-source` Kafka header.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Mqtt => "mqtt",
            Source::Nats => "nats",
        }
    }
}

/// One header: an MQTT 5 user property or a NATS header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Header name.
    pub key: String,
    /// Header value (opaque bytes).
    pub value: Bytes,
}

/// Where a record goes upstream, decided once when it is ingested (the first matching route,
/// its rendered key) and stored with it, so the forwarder never decides again.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Destination {
    /// Kafka topic (shared by every record of one route).
    pub topic: Arc<str>,
    /// Record key, or none (Kafka's sticky partitioning for null keys).
    pub key: Option<Bytes>,
    /// The partition the route pins, instead of hashing the key.
    pub partition: Option<i32>,
}

impl Destination {
    /// A destination on `topic` with no key and no pinned partition.
    pub fn topic(topic: impl Into<Arc<str>>) -> Destination {
        Destination {
            topic: topic.into(),
            key: None,
            partition: None,
        }
    }
}

/// What an ingress hands to the log. The log assigns the offset; the timestamp is set by the
/// caller (ingest time, unix ms).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRecord {
    /// Ingest time, unix milliseconds.
    pub timestamp_ms: u64,
    /// Protocol the event came from.
    pub source: Source,
    /// Original MQTT topic or NATS subject (shared: a NATS connection hands over one `Arc`
    /// while the subject repeats, so a PUB allocates no topic and the writer thread frees none).
    pub topic: Arc<str>,
    /// Publishing client id (shared: a connection's records all carry the same one).
    pub client_id: Arc<str>,
    /// Where the record goes upstream.
    pub destination: Destination,
    /// MQTT 5 user properties / NATS headers.
    pub headers: Vec<Header>,
    /// The message body.
    pub payload: Bytes,
}

/// A record read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Log offset (dense, starting at 0 for a new log).
    pub offset: u64,
    /// Ingest time, unix milliseconds.
    pub timestamp_ms: u64,
    /// Protocol the event came from.
    pub source: Source,
    /// Original MQTT topic or NATS subject.
    pub topic: String,
    /// Publishing client id.
    pub client_id: String,
    /// Where the record goes upstream; `None` for records written before destinations were
    /// stored (segment format version 1), which the forwarder routes when it reads them.
    pub destination: Option<Destination>,
    /// MQTT 5 user properties / NATS headers.
    pub headers: Vec<Header>,
    /// The message body.
    pub payload: Bytes,
}
