//! Kafka request and response frames, shared by `conn` and `pipeline`: [`encode_request`]
//! writes length prefix, request header and body under the next correlation id;
//! [`decode_response`] checks a response frame's correlation id and decodes it;
//! [`splice_payload`] lets a Produce request be written around its record batch (marked by
//! [`PAYLOAD_MARK`]) instead of copying the batch into the request; [`version_of`] picks the
//! version of an API both sides speak; [`api_name`] names the APIs in errors.
//!
//! Plain functions on buffers, no I/O, using neither `conn` nor `pipeline`: a request spliced
//! around its payload is byte for byte the request with the payload in it (tested below). The
//! [`Frame`](super::pipeline::Frame) a pipeline hands back (a response frame, or why none came)
//! is `pipeline`'s; [`decode_response`] decodes it.

use std::collections::HashMap;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use super::error::ProduceError;

/// Decodes a response frame of `api`/`version`, checking the correlation id.
pub(crate) fn decode_response<Resp: Decodable>(
    broker: &str,
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    mut body: Bytes,
) -> Result<Resp, ProduceError> {
    let protocol = |reason: String| ProduceError::Protocol {
        broker: broker.to_owned(),
        reason,
    };
    let rh = ResponseHeader::decode(&mut body, api.response_header_version(version))
        .map_err(|e| protocol(format!("{} response header: {e:#}", api_name(api))))?;
    if rh.correlation_id != correlation_id {
        return Err(protocol(format!(
            "{} response has correlation id {}, expected {correlation_id}",
            api_name(api),
            rh.correlation_id
        )));
    }
    Resp::decode(&mut body, version)
        .map_err(|e| protocol(format!("{} v{version} response: {e:#}", api_name(api))))
}

/// Stands in for the payload of [`Pipeline::send`](super::pipeline::Pipeline::send) while
/// its request is encoded. Only a few bytes of tagged fields follow the payload, so its place
/// is the mark's last occurrence, whatever an earlier field (a transactional id) holds.
pub(crate) const PAYLOAD_MARK: &[u8] = b"\xffedge-broker payload goes here\xff";

/// Turns a request frame encoded by [`encode_request`] with [`PAYLOAD_MARK`] as the value of
/// a bytes field into the frame for a `payload_len`-byte value there: `buf` keeps the bytes
/// before the value (the field's length and the frame's length prefix set for the payload),
/// the bytes after it are returned (a few: the tagged fields that close the structures it is
/// in). The field is BYTES (i32 length) or, in flexible versions, COMPACT_BYTES (unsigned
/// varint length + 1); the mark is the last one in the frame.
pub(super) fn splice_payload(buf: &mut BytesMut, payload_len: usize) -> Result<Vec<u8>, String> {
    let mark = PAYLOAD_MARK.len();
    let at = buf
        .windows(mark)
        .rposition(|w| w == PAYLOAD_MARK)
        .ok_or("the payload's place is not marked")?;
    let tail = buf[at + mark..].to_vec();
    let compact_len = u8::try_from(mark + 1).map_err(|_| "mark too long")?;
    let (field_at, compact) = if at >= 1 && buf[at - 1] == compact_len {
        (at - 1, true)
    } else if at >= 4 && buf[at - 4..at] == (mark as u32).to_be_bytes() {
        (at - 4, false)
    } else {
        return Err("the payload's place is not a bytes field".into());
    };
    buf.truncate(field_at);
    if compact {
        let mut v = payload_len as u64 + 1;
        while v >= 0x80 {
            buf.extend_from_slice(&[(v as u8 & 0x7f) | 0x80]);
            v >>= 7;
        }
        buf.extend_from_slice(&[v as u8]);
    } else {
        let len = i32::try_from(payload_len).map_err(|_| "payload above 2 GiB")?;
        buf.extend_from_slice(&len.to_be_bytes());
    }
    let frame = buf.len() - 4 + payload_len + tail.len();
    let frame = u32::try_from(frame).map_err(|_| "request above 4 GiB")?;
    buf[..4].copy_from_slice(&frame.to_be_bytes());
    Ok(tail)
}

/// Encodes length prefix, header and body of a request into `buf` under the next correlation
/// id after `last_correlation_id` (advanced), and returns that id.
pub(super) fn encode_request<Req: Encodable>(
    buf: &mut BytesMut,
    client_id: &StrBytes,
    last_correlation_id: &mut i32,
    api: ApiKey,
    version: i16,
    req: &Req,
) -> Result<i32, ProduceError> {
    *last_correlation_id = last_correlation_id.wrapping_add(1);
    let correlation_id = *last_correlation_id;
    let header = RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(client_id.clone()));
    buf.clear();
    buf.extend_from_slice(&[0; 4]);
    header
        .encode(buf, api.request_header_version(version))
        .map_err(|e| encode_err(api, e))?;
    req.encode(buf, version).map_err(|e| encode_err(api, e))?;
    let len = u32::try_from(buf.len() - 4).map_err(|_| ProduceError::Encode {
        what: api_name(api),
        reason: "request above 4 GiB".into(),
    })?;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    Ok(correlation_id)
}

/// Highest version of `api` in `versions` (the broker's ranges), at least `need`, at most `ours`.
pub(crate) fn version_of(
    versions: &HashMap<i16, (i16, i16)>,
    broker: &str,
    api: ApiKey,
    name: &'static str,
    need: i16,
    ours: i16,
) -> Result<i16, ProduceError> {
    let (min, max) = versions.get(&(api as i16)).copied().unwrap_or((-1, -1));
    let v = ours.min(max);
    if v < need || v < min {
        return Err(ProduceError::UnsupportedVersion {
            broker: broker.to_owned(),
            api: name,
            need,
            min,
            max,
        });
    }
    Ok(v)
}

fn encode_err(api: ApiKey, e: impl std::fmt::Display) -> ProduceError {
    ProduceError::Encode {
        what: api_name(api),
        reason: format!("{e:#}"),
    }
}

/// A static name for the APIs the producer uses (for error messages).
pub(crate) fn api_name(api: ApiKey) -> &'static str {
    match api {
        ApiKey::Produce => "Produce",
        ApiKey::Metadata => "Metadata",
        ApiKey::ApiVersions => "ApiVersions",
        ApiKey::CreateTopics => "CreateTopics",
        ApiKey::InitProducerId => "InitProducerId",
        ApiKey::SaslHandshake => "SaslHandshake",
        ApiKey::SaslAuthenticate => "SaslAuthenticate",
        _ => "request",
    }
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::ProduceRequest;

    use super::*;

    /// A Produce request written around its record batch (`Pipeline::send` with a payload)
    /// is byte for byte the request with the batch in it, in every version we speak (BYTES
    /// up to v8, COMPACT_BYTES from v9), with and without a transactional id, for batch
    /// lengths whose varint takes one, two and three bytes.
    #[test]
    fn a_request_spliced_around_its_batch_is_the_whole_request() {
        use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
        use kafka_protocol::messages::{TopicName, TransactionalId};
        let request = |records: Bytes, txn: Option<&str>| {
            ProduceRequest::default()
                .with_transactional_id(
                    txn.map(|t| TransactionalId(StrBytes::from_string(t.into()))),
                )
                .with_acks(-1)
                .with_timeout_ms(7_500)
                .with_topic_data(vec![
                    TopicProduceData::default()
                        .with_name(TopicName(StrBytes::from_static_str("sensor-temperature")))
                        .with_partition_data(vec![
                            PartitionProduceData::default()
                                .with_index(3)
                                .with_records(Some(records)),
                        ]),
                ])
        };
        let client_id = StrBytes::from_static_str("edge-broker-gw-01");
        for version in 3..=9 {
            for txn in [None, Some("edge-broker-gw-01")] {
                for len in [0usize, 1, 126, 127, 128, 300, 16_383, 16_384, 300_000] {
                    let batch: Bytes = (0..len).map(|i| (i * 7 % 251) as u8).collect();
                    let (mut whole, mut spliced) = (BytesMut::new(), BytesMut::new());
                    let (mut c1, mut c2) = (41, 41);
                    let api = ApiKey::Produce;
                    encode_request(
                        &mut whole,
                        &client_id,
                        &mut c1,
                        api,
                        version,
                        &request(batch.clone(), txn),
                    )
                    .unwrap();
                    let marked = request(Bytes::from_static(PAYLOAD_MARK), txn);
                    encode_request(&mut spliced, &client_id, &mut c2, api, version, &marked)
                        .unwrap();
                    let tail = splice_payload(&mut spliced, batch.len()).unwrap();
                    let mut joined = spliced.to_vec();
                    joined.extend_from_slice(&batch);
                    joined.extend_from_slice(&tail);
                    assert_eq!(joined, whole.to_vec(), "v{version} {txn:?} {len} bytes");
                }
            }
        }
        let mut unmarked = BytesMut::from(&b"\0\0\0\x05hello"[..]);
        assert!(splice_payload(&mut unmarked, 10).is_err());
    }
}
