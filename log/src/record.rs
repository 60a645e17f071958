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

/// A record's fields but its headers, borrowed: what [`crate::EncodedRecords::push`] encodes (the
/// fields of a [`NewRecord`], from whatever holds them).
#[derive(Debug, Clone, Copy)]
pub struct RecordFields<'a> {
    /// Ingest time, unix milliseconds.
    pub timestamp_ms: u64,
    /// Protocol the event came from.
    pub source: Source,
    /// Original MQTT topic or NATS subject.
    pub topic: &'a str,
    /// Publishing client id.
    pub client_id: &'a str,
    /// Where the record goes upstream.
    pub destination: &'a Destination,
    /// The message body.
    pub payload: &'a [u8],
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

/// A UTF-8 string that shares the memory it was read from (a slice of the log's read buffer,
/// like a record's payload), or holds a copy of one given to it. Reading a record allocates
/// no string this way.
///
/// Checked to be UTF-8 when made; [`Text::as_str`] (and `Deref`) checks again, in O(length),
/// because this crate has no `unsafe`: for the bytes alone use [`Text::as_bytes`].
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Text(Bytes);

impl Text {
    /// `bytes` as text, if they are UTF-8.
    pub fn from_utf8(bytes: Bytes) -> Result<Text, std::str::Utf8Error> {
        std::str::from_utf8(&bytes)?;
        Ok(Text(bytes))
    }

    /// Text from bytes the caller checked to be UTF-8 (the decoder: a record's strings are
    /// checked while its body is parsed). Were they not, `as_str` would give "".
    pub(crate) fn from_checked(bytes: Bytes) -> Text {
        Text(bytes)
    }

    /// The string (checked again: see the type's docs).
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The UTF-8 bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The bytes, shared (no copy).
    pub fn bytes(&self) -> &Bytes {
        &self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether it is the empty string.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::ops::Deref for Text {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Text {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl From<&str> for Text {
    fn from(s: &str) -> Text {
        Text(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl From<String> for Text {
    fn from(s: String) -> Text {
        Text(Bytes::from(s))
    }
}

impl From<&String> for Text {
    fn from(s: &String) -> Text {
        Text::from(s.as_str())
    }
}

impl From<Text> for Bytes {
    fn from(t: Text) -> Bytes {
        t.0
    }
}

impl PartialEq<str> for Text {
    fn eq(&self, other: &str) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl PartialEq<&str> for Text {
    fn eq(&self, other: &&str) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl PartialEq<String> for Text {
    fn eq(&self, other: &String) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl PartialEq<Text> for str {
    fn eq(&self, other: &Text) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl PartialEq<Text> for &str {
    fn eq(&self, other: &Text) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl std::fmt::Debug for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl std::fmt::Display for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Text {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
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
    /// Original MQTT topic or NATS subject (sharing the read buffer).
    pub topic: Text,
    /// Publishing client id (sharing the read buffer).
    pub client_id: Text,
    /// Where the record goes upstream; `None` for records written before destinations were
    /// stored (segment format version 1), which the forwarder routes when it reads them.
    pub destination: Option<Destination>,
    /// MQTT 5 user properties / NATS headers.
    pub headers: Vec<Header>,
    /// The message body.
    pub payload: Bytes,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_checked_utf8_and_reads_like_a_str() {
        assert!(Text::from_utf8(Bytes::from_static(b"\xff\xfe")).is_err());
        let t = Text::from_utf8(Bytes::from_static("grüße/a".as_bytes())).unwrap();
        assert_eq!(t.as_str(), "grüße/a");
        assert_eq!(&*t, "grüße/a");
        assert_eq!(t, "grüße/a");
        assert_eq!(t, Text::from("grüße/a"));
        assert_eq!(t, String::from("grüße/a"));
        assert_eq!((t.len(), t.is_empty()), (9, false));
        assert_eq!(format!("{t} {t:?}"), "grüße/a \"grüße/a\"");
        assert_eq!(
            Bytes::from(t.clone()),
            Bytes::from_static("grüße/a".as_bytes())
        );
        assert!(Text::default().is_empty());
    }
}
