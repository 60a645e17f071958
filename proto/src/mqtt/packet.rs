//! The [`Packet`] enum and one struct per MQTT control packet, shared by 3.1.1 and 5.0.
//!
//! Fields that only exist in v5 (properties, reason codes other than success, subscription
//! options beyond QoS) are ignored when encoding for 3.1.1 and take their neutral value
//! (`Properties::default()`, [`ReasonCode::Success`]) when decoding 3.1.1.

use bytes::Bytes;

pub use super::ids::{PacketType, ProtocolVersion};
use super::properties::Properties;
use super::reason::ReasonCode;
use super::string::MqttString;

/// Quality of service of a message or subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum QoS {
    /// QoS 0: at most once.
    #[default]
    AtMostOnce = 0,
    /// QoS 1: at least once.
    AtLeastOnce = 1,
    /// QoS 2: exactly once.
    ExactlyOnce = 2,
}

impl QoS {
    /// The QoS for its two-bit value; 3 is invalid.
    pub const fn from_u8(v: u8) -> Option<QoS> {
        match v {
            0 => Some(QoS::AtMostOnce),
            1 => Some(QoS::AtLeastOnce),
            2 => Some(QoS::ExactlyOnce),
            _ => None,
        }
    }
}

/// One MQTT control packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// CONNECT, client to server (boxed: it carries two property sets).
    Connect(Box<Connect>),
    /// CONNACK, server to client.
    ConnAck(ConnAck),
    /// PUBLISH, both directions.
    Publish(Publish),
    /// PUBACK (QoS 1 acknowledgement).
    PubAck(PubAck),
    /// PUBREC (QoS 2, part 1).
    PubRec(PubRec),
    /// PUBREL (QoS 2, part 2).
    PubRel(PubRel),
    /// PUBCOMP (QoS 2, part 3).
    PubComp(PubComp),
    /// SUBSCRIBE, client to server.
    Subscribe(Subscribe),
    /// SUBACK, server to client.
    SubAck(SubAck),
    /// UNSUBSCRIBE, client to server.
    Unsubscribe(Unsubscribe),
    /// UNSUBACK, server to client.
    UnsubAck(UnsubAck),
    /// PINGREQ, client to server.
    PingReq,
    /// PINGRESP, server to client.
    PingResp,
    /// DISCONNECT (both directions in v5).
    Disconnect(Disconnect),
    /// AUTH (v5 only).
    Auth(Auth),
}

impl Packet {
    /// The control packet type.
    pub fn packet_type(&self) -> PacketType {
        match self {
            Packet::Connect(_) => PacketType::Connect,
            Packet::ConnAck(_) => PacketType::ConnAck,
            Packet::Publish(_) => PacketType::Publish,
            Packet::PubAck(_) => PacketType::PubAck,
            Packet::PubRec(_) => PacketType::PubRec,
            Packet::PubRel(_) => PacketType::PubRel,
            Packet::PubComp(_) => PacketType::PubComp,
            Packet::Subscribe(_) => PacketType::Subscribe,
            Packet::SubAck(_) => PacketType::SubAck,
            Packet::Unsubscribe(_) => PacketType::Unsubscribe,
            Packet::UnsubAck(_) => PacketType::UnsubAck,
            Packet::PingReq => PacketType::PingReq,
            Packet::PingResp => PacketType::PingResp,
            Packet::Disconnect(_) => PacketType::Disconnect,
            Packet::Auth(_) => PacketType::Auth,
        }
    }
}

/// CONNECT: opens a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// Protocol level; decoding fills it from the wire, encoding requires it to match.
    pub protocol_version: ProtocolVersion,
    /// Clean Start (v5) / Clean Session (3.1.1).
    pub clean_start: bool,
    /// Keep alive in seconds (0 = off).
    pub keep_alive: u16,
    /// Client identifier (may be empty; whether that is allowed is the server's call).
    pub client_id: MqttString,
    /// Will message, if the Will Flag is set.
    pub will: Option<Will>,
    /// User name, if the User Name Flag is set.
    pub username: Option<MqttString>,
    /// Password (binary), if the Password Flag is set.
    pub password: Option<Bytes>,
    /// CONNECT properties (v5).
    pub properties: Properties,
}

/// The Will message carried in CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    /// Will topic (a topic name, no wildcards).
    pub topic: MqttString,
    /// Will payload.
    pub payload: Bytes,
    /// Will QoS.
    pub qos: QoS,
    /// Will Retain.
    pub retain: bool,
    /// Will properties (v5): payload format, expiry, content type, response topic,
    /// correlation data, will delay, user properties.
    pub properties: Properties,
}

/// CONNACK: the server's answer to CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnAck {
    /// Session Present flag.
    pub session_present: bool,
    /// Connect reason code; 3.1.1 maps it via [`ReasonCode::to_v3_connack`].
    pub reason_code: ReasonCode,
    /// CONNACK properties (v5).
    pub properties: Properties,
}

/// PUBLISH: an application message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// DUP flag (redelivery).
    pub dup: bool,
    /// QoS of this delivery.
    pub qos: QoS,
    /// RETAIN flag.
    pub retain: bool,
    /// Topic name (empty in v5 when a Topic Alias stands for it).
    pub topic: MqttString,
    /// Packet identifier: `Some` (non-zero) exactly when `qos` is 1 or 2.
    pub packet_id: Option<u16>,
    /// PUBLISH properties (v5).
    pub properties: Properties,
    /// Application payload, a zero-copy slice of the frame.
    pub payload: Bytes,
}

macro_rules! pub_response {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $name {
            /// Packet identifier of the PUBLISH being acknowledged (non-zero).
            pub packet_id: u16,
            /// Reason code (v5; always Success in 3.1.1).
            pub reason_code: ReasonCode,
            /// Properties (v5): reason string and user properties.
            pub properties: Properties,
        }

        impl $name {
            /// A successful response for `packet_id` with no properties.
            pub fn new(packet_id: u16) -> Self {
                $name { packet_id, reason_code: ReasonCode::Success, properties: Properties::default() }
            }
        }
    };
}

pub_response!(
    /// PUBACK: acknowledges a QoS 1 PUBLISH.
    PubAck
);
pub_response!(
    /// PUBREC: first acknowledgement of a QoS 2 PUBLISH.
    PubRec
);
pub_response!(
    /// PUBREL: releases a QoS 2 PUBLISH.
    PubRel
);
pub_response!(
    /// PUBCOMP: completes a QoS 2 exchange.
    PubComp
);

/// What the server does with retained messages when a subscription is made (v5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RetainHandling {
    /// 0: send retained messages at subscribe time.
    #[default]
    SendAtSubscribe = 0,
    /// 1: send them only if the subscription did not exist.
    SendAtSubscribeIfNew = 1,
    /// 2: do not send retained messages.
    DoNotSend = 2,
}

/// Subscription options byte (QoS only in 3.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SubscriptionOptions {
    /// Maximum QoS.
    pub qos: QoS,
    /// No Local (v5): do not forward the client's own publications.
    pub no_local: bool,
    /// Retain As Published (v5).
    pub retain_as_published: bool,
    /// Retain Handling (v5).
    pub retain_handling: RetainHandling,
}

/// One topic filter with its options in SUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeFilter {
    /// The topic filter, as sent. The decoder checks it is a valid string only: filter
    /// syntax is reported per filter in SUBACK (use [`crate::mqtt::topic::validate_filter`]).
    pub filter: MqttString,
    /// Subscription options.
    pub options: SubscriptionOptions,
}

/// SUBSCRIBE: one or more topic filters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// Packet identifier (non-zero).
    pub packet_id: u16,
    /// Filters, at least one.
    pub filters: Vec<SubscribeFilter>,
    /// SUBSCRIBE properties (v5): subscription identifier, user properties.
    pub properties: Properties,
}

/// SUBACK: one reason code per filter of the SUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    /// Packet identifier of the SUBSCRIBE.
    pub packet_id: u16,
    /// One code per filter: Granted QoS 0/1/2 or an error (3.1.1: any error is 0x80).
    pub reason_codes: Vec<ReasonCode>,
    /// SUBACK properties (v5).
    pub properties: Properties,
}

/// UNSUBSCRIBE: one or more topic filters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    /// Packet identifier (non-zero).
    pub packet_id: u16,
    /// Filters, at least one.
    pub filters: Vec<MqttString>,
    /// UNSUBSCRIBE properties (v5): user properties.
    pub properties: Properties,
}

/// UNSUBACK: acknowledges UNSUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsubAck {
    /// Packet identifier of the UNSUBSCRIBE.
    pub packet_id: u16,
    /// One code per filter (v5 only; empty and ignored in 3.1.1).
    pub reason_codes: Vec<ReasonCode>,
    /// UNSUBACK properties (v5).
    pub properties: Properties,
}

/// DISCONNECT: closes the connection (sent by either side in v5).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Disconnect {
    /// Reason code (v5; Normal disconnection in 3.1.1).
    pub reason_code: ReasonCode,
    /// DISCONNECT properties (v5).
    pub properties: Properties,
}

/// AUTH: enhanced authentication exchange (v5 only).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Auth {
    /// Success, Continue authentication or Re-authenticate.
    pub reason_code: ReasonCode,
    /// AUTH properties: method, data, reason string, user properties.
    pub properties: Properties,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The point of boxing the property set: a decoded packet is a few words, not the ~470
    /// bytes it was with the set inline (and moved several times between the decoder and its
    /// handler).
    #[test]
    fn a_packet_stays_small() {
        assert_eq!(std::mem::size_of::<Properties>(), 8);
        let packet = std::mem::size_of::<Packet>();
        assert!(packet <= 96, "Packet is {packet} bytes");
    }
}
