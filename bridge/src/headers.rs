//! The Kafka record headers every forwarded record carries: `edge-node` (gateway id),
//! `edge-offset` (log offset, decimal ASCII), `edge-source` (`mqtt` | `nats`), `edge-topic`
//! (original MQTT topic or NATS subject), then the original MQTT 5 user properties / NATS
//! headers in their original order (duplicate keys kept, as Kafka allows).
//!
//! User headers whose key is one of the four reserved `edge-*` names are dropped, so a device
//! cannot forge the identity consumers use to recognise duplicates.
//!
//! Records are [`edge_log::Record`]s as the cursor reads them; [`Source`] and [`Header`] are
//! re-exported from edge-log.

use bytes::{Bytes, BytesMut};

use crate::producer::RecordHeader;

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

/// The `edge-source` header value for `source`.
pub fn source_name(source: Source) -> &'static str {
    source.as_str()
}

/// Appends the forwarding headers of `record` to `out` (cleared first, so it can be reused).
/// `node_id` is passed as `Bytes` so each record shares it instead of copying it.
pub fn build_headers(record: &Record, node_id: &Bytes, out: &mut Vec<RecordHeader>) {
    build_headers_in(record, node_id, &mut BytesMut::new(), out);
}

/// [`build_headers`] with the offset value cut from `arena` (one allocation shared by many
/// records instead of one per record). Reserve room in `arena` for a chunk up front.
pub fn build_headers_in(
    record: &Record,
    node_id: &Bytes,
    arena: &mut BytesMut,
    out: &mut Vec<RecordHeader>,
) {
    out.clear();
    out.reserve(4 + record.headers.len());
    out.push(RecordHeader::new(
        Bytes::from_static(EDGE_NODE.as_bytes()),
        node_id.clone(),
    ));
    put_decimal(arena, record.offset);
    out.push(RecordHeader::new(
        Bytes::from_static(EDGE_OFFSET.as_bytes()),
        arena.split().freeze(),
    ));
    out.push(RecordHeader::new(
        Bytes::from_static(EDGE_SOURCE.as_bytes()),
        Bytes::from_static(source_name(record.source).as_bytes()),
    ));
    // The topic as read: it shares the log's read buffer, like the payload.
    out.push(RecordHeader::new(
        Bytes::from_static(EDGE_TOPIC.as_bytes()),
        record.topic.bytes().clone(),
    ));
    for h in &record.headers {
        if RESERVED.contains(&h.key.as_str()) {
            continue;
        }
        out.push(RecordHeader::new(
            Bytes::from(h.key.clone()),
            h.value.clone(),
        ));
    }
}

/// Appends `v` in decimal ASCII (what `write!(arena, "{v}")` writes, without the formatting
/// machinery: this runs once per forwarded record).
fn put_decimal(arena: &mut BytesMut, v: u64) {
    arena.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
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
        let mut arena = BytesMut::new();
        for v in samples {
            put_decimal(&mut arena, v);
            assert_eq!(arena.split().freeze(), Bytes::from(v.to_string()), "{v}");
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
