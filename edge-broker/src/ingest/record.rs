//! What a routed publish becomes in the log: an [`edge_log::NewRecord`] carrying the
//! destination decided at ingest, the protocol's headers and the payload (shared, not copied).

use std::sync::Arc;

use bytes::Bytes;
use edge_log::{Destination, Header, NewRecord, Source};
use edge_proto::nats::HeaderMap;

use crate::message::Message;

/// The record of a routed MQTT publish or will: MQTT 5 user properties become headers.
pub fn mqtt(message: &Message, client_id: Arc<str>, destination: Destination) -> NewRecord {
    NewRecord {
        timestamp_ms: message.received_ms,
        source: Source::Mqtt,
        topic: Arc::clone(&message.topic),
        client_id,
        destination,
        headers: message
            .properties
            .user_properties
            .iter()
            .map(|(key, value)| Header {
                key: key.clone(),
                value: Bytes::from(value.clone()),
            })
            .collect(),
        payload: message.payload.clone(),
    }
}

/// The record of a routed NATS PUB/HPUB received at `timestamp_ms`: NATS headers in order
/// (repeated keys kept).
pub fn nats(
    subject: Arc<str>,
    client_id: Arc<str>,
    headers: Option<&HeaderMap>,
    payload: Bytes,
    timestamp_ms: u64,
    destination: Destination,
) -> NewRecord {
    NewRecord {
        timestamp_ms,
        source: Source::Nats,
        topic: subject,
        client_id,
        destination,
        headers: headers
            .map(|h| {
                h.iter()
                    .map(|(k, v)| Header {
                        key: k.to_owned(),
                        value: Bytes::copy_from_slice(v.as_bytes()),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        payload,
    }
}
