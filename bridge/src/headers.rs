//! The Kafka record headers every forwarded record carries: `edge-node` (gateway id),
//! `edge-offset` (log offset, decimal ASCII), `edge-source` (`mqtt` | `nats`), `edge-topic`
//! (original MQTT topic or NATS subject), then the original MQTT 5 user properties / NATS
//! headers in their original order (duplicate keys kept, as Kafka allows).
//!
//! User headers whose key is one of the four reserved `edge-*` names are dropped, so a device
//! cannot forge the identity consumers use to recognise duplicates.
//!
//! Records are [`edge_log::Record`]s as the cursor reads them; [`Source`] and [`Header`] are
//! re-exported from edge-log. [`RecordHeader`], one Kafka record header as the producer writes
//! it, is defined here (the producer takes headers from this module, never the other way) and
//! re-exported as `producer::RecordHeader`.

use bytes::Bytes;

/// Header carrying the gateway's node id.
pub const EDGE_NODE: &str = "edge-node";
/// Header carrying the record's offset in the gateway's log, in decimal.
pub const EDGE_OFFSET: &str = "edge-offset";
/// Header carrying the ingress protocol: `mqtt` or `nats`.
pub const EDGE_SOURCE: &str = "edge-source";
/// Header carrying the original MQTT topic or NATS subject.
pub const EDGE_TOPIC: &str = "edge-topic";

const RESERVED: [&str; 4] = [EDGE_NODE, EDGE_OFFSET, EDGE_SOURCE, EDGE_TOPIC];

pub use edge_log::{Header, Record, Source};

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

/// The `edge-source` header value for `source`.
pub fn source_name(source: Source) -> &'static str {
    source.as_str()
}

/// The four `edge-*` headers of one forwarded record, kept as their values: the producer
/// writes them into the record batch ahead of the record's own headers, so a forwarded record
/// needs no list of headers (one allocation per record, kept until Kafka's answer) unless it
/// carries user headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeHeaders {
    /// `edge-node`: the gateway's node id (shared by every record, not copied).
    pub node: Bytes,
    /// `edge-offset`: the record's log offset, written in decimal.
    pub offset: u64,
    /// `edge-source`: the ingress protocol.
    pub source: Source,
    /// `edge-topic`: the original MQTT topic or NATS subject (shares the log's read buffer).
    pub topic: Bytes,
}

impl EdgeHeaders {
    /// The edge headers of `record` forwarded by gateway `node_id`.
    pub fn of(record: &Record, node_id: &Bytes) -> Self {
        Self {
            node: node_id.clone(),
            offset: record.offset,
            source: record.source,
            topic: record.topic.bytes().clone(),
        }
    }

    /// `(key, value)` of the four headers in the order they are written; the offset's digits
    /// are written into `digits`.
    pub fn pairs<'a>(&'a self, digits: &'a mut itoa::Buffer) -> [(&'static [u8], &'a [u8]); 4] {
        [
            (EDGE_NODE.as_bytes(), &self.node[..]),
            (
                EDGE_OFFSET.as_bytes(),
                digits.format(self.offset).as_bytes(),
            ),
            (EDGE_SOURCE.as_bytes(), source_name(self.source).as_bytes()),
            (EDGE_TOPIC.as_bytes(), &self.topic[..]),
        ]
    }

    /// The four headers as [`RecordHeader`]s (tests, tools: the forwarder writes them
    /// straight into the batch).
    pub fn to_headers(&self) -> Vec<RecordHeader> {
        self.pairs(&mut itoa::Buffer::new())
            .into_iter()
            .map(|(k, v)| RecordHeader::new(Bytes::from_static(k), Bytes::copy_from_slice(v)))
            .collect()
    }
}

/// The record's own headers (MQTT 5 user properties, NATS headers) forwarded after the edge
/// headers, in order, those with a reserved name left out. Empty (no allocation) for a record
/// without any.
pub fn user_headers(record: &Record) -> Vec<RecordHeader> {
    record
        .headers
        .iter()
        .filter(|h| !RESERVED.contains(&h.key.as_str()))
        .map(|h| RecordHeader::new(Bytes::from(h.key.clone()), h.value.clone()))
        .collect()
}

/// Appends all forwarding headers of `record` to `out` (cleared first, so it can be reused):
/// the edge headers, then [`user_headers`]. What the forwarder writes into a batch, as a list.
pub fn build_headers(record: &Record, node_id: &Bytes, out: &mut Vec<RecordHeader>) {
    out.clear();
    out.extend(EdgeHeaders::of(record, node_id).to_headers());
    out.extend(user_headers(record));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(headers: Vec<Header>) -> Record {
        Record {
            offset: 18_446_744_073_709_551_615,
            timestamp_ms: 1,
            source: Source::Nats,
            topic: "sensors.a.humidity".into(),
            client_id: "c1".into(),
            destination: None,
            headers,
            payload: Bytes::from_static(b"x"),
        }
    }

    fn pairs(h: &[RecordHeader]) -> Vec<(String, Vec<u8>)> {
        h.iter()
            .map(|h| {
                (
                    String::from_utf8_lossy(&h.key).into_owned(),
                    h.value.to_vec(),
                )
            })
            .collect()
    }

    #[test]
    fn edge_headers_first_then_user_headers_in_order_with_duplicates() {
        let r = record(vec![
            Header {
                key: "unit".into(),
                value: Bytes::from_static(b"C"),
            },
            Header {
                key: "tag".into(),
                value: Bytes::from_static(b"a"),
            },
            Header {
                key: "tag".into(),
                value: Bytes::from_static(b"b"),
            },
        ]);
        let mut out = vec![RecordHeader::new(
            Bytes::from_static(b"stale"),
            Bytes::new(),
        )];
        build_headers(&r, &Bytes::from_static(b"gw-01"), &mut out);
        assert_eq!(
            pairs(&out),
            vec![
                ("edge-node".into(), b"gw-01".to_vec()),
                ("edge-offset".into(), b"18446744073709551615".to_vec()),
                ("edge-source".into(), b"nats".to_vec()),
                ("edge-topic".into(), b"sensors.a.humidity".to_vec()),
                ("unit".into(), b"C".to_vec()),
                ("tag".into(), b"a".to_vec()),
                ("tag".into(), b"b".to_vec()),
            ]
        );
    }

    #[test]
    fn offsets_are_written_in_decimal_like_display() {
        let mut samples = vec![0, 1, 9, 10, 99, 100, 12_345, u64::MAX - 1, u64::MAX];
        samples.extend((0..20).map(|i| 10u64.pow(i) - 1));
        samples.extend((0..20).map(|i| 10u64.pow(i)));
        let mut r = record(Vec::new());
        let node = Bytes::from_static(b"gw");
        for v in samples {
            r.offset = v;
            let edge = EdgeHeaders::of(&r, &node);
            let mut digits = itoa::Buffer::new();
            let pairs = edge.pairs(&mut digits);
            assert_eq!(
                pairs[1],
                (&b"edge-offset"[..], v.to_string().as_bytes()),
                "{v}"
            );
        }
    }

    #[test]
    fn user_headers_cannot_forge_reserved_names() {
        let r = record(vec![
            Header {
                key: "edge-offset".into(),
                value: Bytes::from_static(b"0"),
            },
            Header {
                key: "edge-node".into(),
                value: Bytes::from_static(b"evil"),
            },
            Header {
                key: "Edge-Node-2".into(),
                value: Bytes::from_static(b"ok"),
            },
        ]);
        let mut out = Vec::new();
        build_headers(&r, &Bytes::from_static(b"gw"), &mut out);
        let p = pairs(&out);
        assert_eq!(p.len(), 5);
        assert_eq!(
            p[1],
            ("edge-offset".into(), b"18446744073709551615".to_vec())
        );
        assert_eq!(p[4], ("Edge-Node-2".into(), b"ok".to_vec()));
        assert_eq!(source_name(Source::Mqtt), "mqtt");
    }
}
