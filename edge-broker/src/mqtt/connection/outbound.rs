//! What we send the client: deliveries from the session queue within its Receive Maximum,
//! topic aliases, resending what was in flight, and the QoS 2 PUBREC/PUBREL exchange.

use std::collections::HashMap;
use std::sync::Arc;

use edge_proto::mqtt::{
    self, EncodeError, MqttString, Packet, PlainPublish, Properties, ProtocolVersion, PubRec,
    PubRel, Publish, QoS, ReasonCode,
};

use super::state::{Connection, Exit, OUT_HIGH_WATER};
use crate::hub::Delivery;
use crate::message::{MessageProperties, now_ms};
use crate::metrics::front::DropReason;
use crate::mqtt::session::Outbound;

impl Connection {
    /// After a reconnect with a present session: PUBLISH again (DUP) or PUBREL what is in flight.
    pub(super) fn resend_inflight(&mut self) {
        let session = Arc::clone(&self.session);
        let inflight: Vec<(u16, Outbound)> = session
            .lock()
            .inflight()
            .iter()
            .map(|(id, out)| (*id, out.clone()))
            .collect();
        let now = now_ms();
        for (packet_id, out) in inflight {
            if out.released {
                self.write(&Packet::PubRel(PubRel::new(packet_id)));
            } else if out.delivery.message.is_expired(now) {
                // Sent before, unacknowledged, and expired while the client was away: not
                // sent again with a lifetime of 0 (as Mosquitto does; MQTT 5 §3.3.2.3.3).
                session.lock().inflight_mut().remove(&packet_id);
                self.server.metrics.dropped(DropReason::Expired);
            } else {
                let (packet, alias) =
                    self.publish_packet(&out.delivery, Some(packet_id), true, now);
                if self.write(&packet) {
                    self.remember_alias(alias);
                } else {
                    // Too large for the client's new Maximum Packet Size: discarded (MQTT 5
                    // §3.1.2.11.4) rather than left in flight, where it would hold one of the
                    // client's Receive Maximum slots for ever.
                    session.lock().inflight_mut().remove(&packet_id);
                    self.server.metrics.dropped(DropReason::TooLargeForClient);
                }
            }
        }
    }

    /// The client acknowledged QoS 1 delivery `packet_id`: it leaves the in-flight table
    /// (an unknown id, or one of a QoS 2 delivery, changes nothing).
    pub(super) fn on_puback(&mut self, packet_id: u16) {
        let mut state = self.session.lock();
        if state
            .inflight()
            .get(&packet_id)
            .is_some_and(|o| o.delivery.qos == QoS::AtLeastOnce)
        {
            state.inflight_mut().remove(&packet_id);
            drop(state);
            self.session.room.made();
        }
    }

    pub(super) fn on_pubrec(&mut self, rec: PubRec) -> Result<(), Exit> {
        let known = {
            let mut state = self.session.lock();
            match state.inflight().get(&rec.packet_id) {
                Some(out) if out.delivery.qos == QoS::ExactlyOnce => {
                    if rec.reason_code.is_success() {
                        state.inflight_mut().release(rec.packet_id);
                    } else {
                        state.inflight_mut().remove(&rec.packet_id);
                        return Ok(());
                    }
                    true
                }
                _ => false,
            }
        };
        let mut rel = PubRel::new(rec.packet_id);
        if !known {
            rel.reason_code = ReasonCode::PacketIdentifierNotFound;
        }
        self.write(&Packet::PubRel(rel));
        Ok(())
    }

    /// Moves queued deliveries into the output, within the client's Receive Maximum.
    pub(super) fn pump_outbound(&mut self) {
        let session = Arc::clone(&self.session);
        let now = now_ms();
        let mut state = session.lock();
        let queued = state.queue.len();
        while self.outbuf.len() < OUT_HIGH_WATER {
            let Some(front) = state.queue.front() else {
                break;
            };
            if front.qos != QoS::AtMostOnce
                && state.inflight().len() >= usize::from(self.client_receive_max)
            {
                break;
            }
            let Some(delivery) = state.queue.pop_front() else {
                break;
            };
            if delivery.message.is_expired(now) {
                self.server.metrics.dropped(DropReason::Expired);
                continue;
            }
            let packet_id = if delivery.qos != QoS::AtMostOnce {
                match state.next_packet_id() {
                    Some(id) => Some(id),
                    None => {
                        state.queue.push_front(delivery);
                        break;
                    }
                }
            } else {
                None
            };
            let encoded = match self.plain_publish(&delivery, packet_id) {
                Some(plain) => plain
                    .encode_limited(self.version, self.client_max_packet, &mut self.outbuf)
                    .map(|_| None),
                None => {
                    let (packet, alias) = self.publish_packet(&delivery, packet_id, false, now);
                    mqtt::encode_limited(
                        &packet,
                        self.version,
                        self.client_max_packet,
                        &mut self.outbuf,
                    )
                    .map(|_| alias)
                }
            };
            match encoded {
                Ok(alias) => {
                    self.remember_alias(alias);
                    self.server.metrics.sent(delivery.qos);
                    if let Some(id) = packet_id {
                        state.inflight_mut().insert(
                            id,
                            Outbound {
                                delivery,
                                released: false,
                            },
                        );
                    }
                }
                Err(EncodeError::PacketTooLarge { .. }) => {
                    // MQTT 5 §3.1.2.11.4: a message larger than the client accepts is discarded.
                    self.server.metrics.dropped(DropReason::TooLargeForClient);
                }
                Err(err) => {
                    tracing::warn!(client_id = %self.session.client_id, "cannot encode a delivery: {err}")
                }
            }
        }
        if state.queue.len() < queued {
            // Publishers waiting for room in this queue may offer again.
            drop(state);
            session.room.made();
        }
    }

    /// Records a topic alias once the PUBLISH that told the client about it is encoded.
    fn remember_alias(&mut self, alias: Option<(String, u16)>) {
        if let Some((topic, alias)) = alias {
            let aliases = self.topics.get_or_insert_with(Box::default);
            aliases.outbound.insert(topic, alias);
        }
    }

    /// A first delivery that needs no property, written from its parts
    /// ([`PlainPublish`]): every delivery to a 3.1.1 client, and to a v5 client one whose
    /// message has no property, no subscription identifier, and no topic alias to use (the
    /// client allows none). `None`: [`Connection::publish_packet`] builds it.
    fn plain_publish<'a>(
        &self,
        delivery: &'a Delivery,
        packet_id: Option<u16>,
    ) -> Option<PlainPublish<'a>> {
        let message = &delivery.message;
        let plain = self.version == ProtocolVersion::V311
            || (self.client_alias_max == 0
                && delivery.subscription_ids.is_empty()
                && has_no_property(&message.properties));
        plain.then(|| PlainPublish {
            dup: false,
            qos: delivery.qos,
            retain: delivery.retain,
            topic: &message.topic,
            packet_id,
            payload: &message.payload,
        })
    }

    /// The PUBLISH for a delivery, and the new topic alias it sets (to remember only if the
    /// packet is actually sent: a packet dropped as too large for the client must not leave
    /// the client an alias it never learned).
    fn publish_packet(
        &self,
        delivery: &Delivery,
        packet_id: Option<u16>,
        dup: bool,
        now: u64,
    ) -> (Packet, Option<(String, u16)>) {
        let mut new_alias = None;
        let message = &delivery.message;
        let mut properties = Properties::default();
        let mut topic = MqttString::try_from(&*message.topic).unwrap_or_default();
        if self.version == ProtocolVersion::V5 {
            // Only what is set is written: a delivery without properties allocates none.
            let p = &message.properties;
            if p.payload_utf8.is_some() {
                properties.payload_format_indicator = p.payload_utf8;
            }
            if let Some(expiry) = message.remaining_expiry(now) {
                properties.message_expiry_interval = Some(expiry);
            }
            if let Some(t) = p.content_type.as_deref() {
                properties.content_type = MqttString::try_from(t).ok();
            }
            if let Some(t) = p.response_topic.as_deref() {
                properties.response_topic = MqttString::try_from(t).ok();
            }
            if p.correlation_data.is_some() {
                properties.correlation_data = p.correlation_data.clone();
            }
            if !p.user_properties.is_empty() {
                properties.user_properties = p
                    .user_properties
                    .iter()
                    .filter_map(|(k, v)| {
                        Some((
                            MqttString::try_from(k.as_str()).ok()?,
                            MqttString::try_from(v.as_str()).ok()?,
                        ))
                    })
                    .collect();
            }
            if !delivery.subscription_ids.is_empty() {
                properties.subscription_identifiers = delivery.subscription_ids.clone();
            }
            if self.client_alias_max > 0 {
                let outbound = self.topics.as_ref().map(|a| &a.outbound);
                if let Some(&alias) = outbound.and_then(|o| o.get(&*message.topic)) {
                    properties.topic_alias = Some(alias);
                    topic = MqttString::default();
                } else if let Ok(next) = u16::try_from(outbound.map_or(0, HashMap::len) + 1)
                    && next <= self.client_alias_max
                {
                    new_alias = Some((message.topic.to_string(), next));
                    properties.topic_alias = Some(next);
                }
            }
        }
        let packet = Packet::Publish(Publish {
            dup,
            qos: delivery.qos,
            retain: delivery.retain,
            topic,
            packet_id,
            properties,
            payload: message.payload.clone(),
        });
        (packet, new_alias)
    }
}

/// Whether a message carries nothing a v5 PUBLISH would hold as a property (an expiry is
/// one: the remaining lifetime is sent). Every field is named, so a new one must be decided
/// here.
fn has_no_property(properties: &MessageProperties) -> bool {
    let MessageProperties {
        payload_utf8,
        expiry_secs,
        content_type,
        response_topic,
        correlation_data,
        user_properties,
    } = properties;
    payload_utf8.is_none()
        && expiry_secs.is_none()
        && content_type.is_none()
        && response_topic.is_none()
        && correlation_data.is_none()
        && user_properties.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each message property sends a delivery down the packet path (which writes it); only a
    /// message with none may be written plain.
    #[test]
    fn any_message_property_needs_the_packet_path() {
        assert!(has_no_property(&MessageProperties::default()));
        let one = |f: fn(&mut MessageProperties)| {
            let mut p = MessageProperties::default();
            f(&mut p);
            p
        };
        let each = [
            one(|p| p.payload_utf8 = Some(false)),
            one(|p| p.expiry_secs = Some(60)),
            one(|p| p.content_type = Some("text/plain".into())),
            one(|p| p.response_topic = Some("r/1".into())),
            one(|p| p.correlation_data = Some(bytes::Bytes::from_static(b"c"))),
            one(|p| p.user_properties = vec![("k".into(), "v".into())]),
        ];
        for p in &each {
            assert!(!has_no_property(p), "{p:?}");
        }
    }
}
