//! What a routed publish becomes in the log: its fields ([`edge_log::RecordFields`]: the
//! destination decided at ingest, the payload) with the protocol's headers, encoded into the
//! connection's batch by [`crate::ingest::IngestQueue::push_routed`]; or a whole
//! [`edge_log::NewRecord`] where no connection's queue takes it (an MQTT will).

use std::sync::Arc;

use bytes::Bytes;
use edge_log::{Destination, Header, NewRecord, Source};
use edge_proto::mqtt::MqttString;
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

/// A message's MQTT 5 user properties as record headers (name, value), in order.
pub fn user_properties(message: &Message) -> impl Iterator<Item = (&[u8], &[u8])> + Clone {
    message
        .properties
        .user_properties
        .iter()
        .map(|(key, value)| (key.as_bytes(), value.as_bytes()))
}

/// A PUBLISH's user properties as record headers, for a publish stored without a
/// [`Message`] (nobody subscribes to its topic and it is not retained): the headers
/// [`user_properties`] gives for the message it would have made.
pub fn publish_user_properties(
    properties: &[(MqttString, MqttString)],
) -> impl Iterator<Item = (&[u8], &[u8])> + Clone {
    properties
        .iter()
        .map(|(key, value)| (key.as_str().as_bytes(), value.as_str().as_bytes()))
}

/// A NATS HPUB's headers as record headers, in order (repeated keys kept).
pub fn nats_headers(headers: Option<&HeaderMap>) -> impl Iterator<Item = (&[u8], &[u8])> + Clone {
    headers
        .into_iter()
        .flat_map(HeaderMap::iter)
        .map(|(key, value)| (key.as_bytes(), value.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{MessageProperties, Origin};
    use edge_proto::mqtt::QoS;

    /// A publish stored without a message is the record the message would have made: user
    /// properties as headers, in order (a repeated name kept).
    #[test]
    fn a_publish_without_a_message_makes_the_same_record() {
        let pairs = [("unit", "C"), ("site", "north"), ("unit", "K")];
        let publish_properties: Vec<(MqttString, MqttString)> = pairs
            .iter()
            .map(|(k, v)| {
                (
                    MqttString::try_from(*k).unwrap(),
                    MqttString::try_from(*v).unwrap(),
                )
            })
            .collect();
        let topic: Arc<str> = "sensors/7/t".into();
        let payload = Bytes::from_static(b"21.5");
        let destination = Destination {
            topic: "t".into(),
            key: Some(Bytes::from_static(b"7")),
            partition: None,
        };
        let message = Message {
            topic: Arc::clone(&topic),
            payload: payload.clone(),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: MessageProperties {
                user_properties: pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
                ..MessageProperties::default()
            },
            received_ms: 1234,
            origin: Origin::Mqtt,
            publisher: None,
            nats_subject: None,
        };
        let fields = edge_log::RecordFields {
            timestamp_ms: 1234,
            source: Source::Mqtt,
            topic: &topic,
            client_id: "dev",
            destination: &destination,
            payload: &payload,
        };
        let mut encoded = edge_log::EncodedRecords::new();
        encoded.push(fields, user_properties(&message));
        encoded.push(fields, publish_user_properties(&publish_properties));
        encoded.push_record(&mqtt(&message, "dev".into(), destination.clone()));
        let tails: Vec<&[u8]> = encoded.tails().collect();
        assert_eq!(tails[0], tails[1]);
        assert_eq!(tails[0], tails[2]);
        assert_eq!(user_properties(&message).count(), 3);
    }

    /// NATS headers become record headers in order, a repeated name kept; none, none.
    #[test]
    fn nats_headers_keep_their_order() {
        let mut map = HeaderMap::new();
        map.append("unit", "C");
        map.append("site", "north");
        map.append("unit", "K");
        let got: Vec<_> = nats_headers(Some(&map)).collect();
        assert_eq!(
            got,
            [
                (&b"unit"[..], &b"C"[..]),
                (b"site", b"north"),
                (b"unit", b"K")
            ]
        );
        assert_eq!(nats_headers(None).count(), 0);
    }
}
