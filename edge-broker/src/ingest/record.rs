//! What a routed publish becomes in the log: an [`edge_log::NewRecord`] carrying the
//! destination decided at ingest, the protocol's headers and the payload (shared, not copied).

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

/// The record of a routed MQTT publish for which no [`Message`] is made (nobody subscribes
/// to its topic and it is not retained): as [`mqtt`] would make it, from the PUBLISH's parts.
pub fn mqtt_publish(
    topic: Arc<str>,
    client_id: Arc<str>,
    user_properties: &[(MqttString, MqttString)],
    payload: Bytes,
    timestamp_ms: u64,
    destination: Destination,
) -> NewRecord {
    NewRecord {
        timestamp_ms,
        source: Source::Mqtt,
        topic,
        client_id,
        destination,
        headers: user_properties
            .iter()
            .map(|(key, value)| Header {
                key: key.as_str().to_owned(),
                value: Bytes::copy_from_slice(value.as_bytes()),
            })
            .collect(),
        payload,
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
        let user_properties: Vec<(MqttString, MqttString)> = pairs
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
        let from_message = mqtt(&message, "dev".into(), destination.clone());
        let from_parts = mqtt_publish(
            topic,
            "dev".into(),
            &user_properties,
            payload,
            1234,
            destination,
        );
        assert_eq!(from_parts, from_message);
        assert_eq!(from_parts.headers.len(), 3);
    }
}
