//! Public record types: what an ingress appends and what a cursor reads back.

use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::format;

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

/// What an ingress hands to the log. The log assigns the offset; the timestamp is set by the
/// caller (ingest time, unix ms).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRecord {
    /// Ingest time, unix milliseconds.
    pub timestamp_ms: u64,
    /// Protocol the event came from.
    pub source: Source,
    /// Original MQTT topic or NATS subject.
    pub topic: String,
    /// Publishing client id (shared: a connection's records all carry the same one).
    pub client_id: Arc<str>,
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
    /// MQTT 5 user properties / NATS headers.
    pub headers: Vec<Header>,
    /// The message body.
    pub payload: Bytes,
}

impl Record {
    /// Bytes this record occupies on disk, frame header included.
    pub fn encoded_len(&self) -> usize {
        let body = format::body_ref(
            self.offset,
            self.timestamp_ms,
            self.source,
            &self.topic,
            &self.client_id,
            &self.headers,
            &self.payload,
        );
        format::FRAME_HEADER_LEN + format::body_len(&body)
    }
}
