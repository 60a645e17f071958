//! The numbers the wire names things by, as plain enums: [`ProtocolVersion`] (CONNECT's
//! protocol level), [`PacketType`] (the fixed header's high nibble) and [`PropertyId`] (a v5
//! property identifier).
//!
//! They sit at the bottom of the codec, under the errors, the wire reader and the property
//! set, which all name them; this file imports nothing from its siblings. Users reach them
//! where they always did: `packet::{PacketType, ProtocolVersion}`, `properties::PropertyId`,
//! and the `mqtt` root.

/// The protocol level from CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProtocolVersion {
    /// MQTT 3.1.1 (protocol level 4).
    V311,
    /// MQTT 5.0 (protocol level 5).
    V5,
}

impl ProtocolVersion {
    /// The protocol level byte sent in CONNECT.
    pub const fn level(self) -> u8 {
        match self {
            ProtocolVersion::V311 => 4,
            ProtocolVersion::V5 => 5,
        }
    }

    /// The version for a protocol level byte (4 or 5).
    pub const fn from_level(level: u8) -> Option<Self> {
        match level {
            4 => Some(ProtocolVersion::V311),
            5 => Some(ProtocolVersion::V5),
            _ => None,
        }
    }
}

/// The 4-bit control packet type of the fixed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PacketType {
    /// CONNECT (1).
    Connect = 1,
    /// CONNACK (2).
    ConnAck = 2,
    /// PUBLISH (3).
    Publish = 3,
    /// PUBACK (4).
    PubAck = 4,
    /// PUBREC (5).
    PubRec = 5,
    /// PUBREL (6).
    PubRel = 6,
    /// PUBCOMP (7).
    PubComp = 7,
    /// SUBSCRIBE (8).
    Subscribe = 8,
    /// SUBACK (9).
    SubAck = 9,
    /// UNSUBSCRIBE (10).
    Unsubscribe = 10,
    /// UNSUBACK (11).
    UnsubAck = 11,
    /// PINGREQ (12).
    PingReq = 12,
    /// PINGRESP (13).
    PingResp = 13,
    /// DISCONNECT (14).
    Disconnect = 14,
    /// AUTH (15, v5 only).
    Auth = 15,
}

impl PacketType {
    /// The packet type for the high nibble of the first byte.
    pub const fn from_nibble(n: u8) -> Option<PacketType> {
        use PacketType::*;
        Some(match n {
            1 => Connect,
            2 => ConnAck,
            3 => Publish,
            4 => PubAck,
            5 => PubRec,
            6 => PubRel,
            7 => PubComp,
            8 => Subscribe,
            9 => SubAck,
            10 => Unsubscribe,
            11 => UnsubAck,
            12 => PingReq,
            13 => PingResp,
            14 => Disconnect,
            15 => Auth,
            _ => return None,
        })
    }

    /// The spec's upper-case name.
    pub const fn name(self) -> &'static str {
        use PacketType::*;
        match self {
            Connect => "CONNECT",
            ConnAck => "CONNACK",
            Publish => "PUBLISH",
            PubAck => "PUBACK",
            PubRec => "PUBREC",
            PubRel => "PUBREL",
            PubComp => "PUBCOMP",
            Subscribe => "SUBSCRIBE",
            SubAck => "SUBACK",
            Unsubscribe => "UNSUBSCRIBE",
            UnsubAck => "UNSUBACK",
            PingReq => "PINGREQ",
            PingResp => "PINGRESP",
            Disconnect => "DISCONNECT",
            Auth => "AUTH",
        }
    }
}

impl std::fmt::Display for PacketType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Property identifiers (spec 2.2.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PropertyId {
    /// 0x01 Payload Format Indicator (byte).
    PayloadFormatIndicator = 0x01,
    /// 0x02 Message Expiry Interval (four-byte integer).
    MessageExpiryInterval = 0x02,
    /// 0x03 Content Type (string).
    ContentType = 0x03,
    /// 0x08 Response Topic (string).
    ResponseTopic = 0x08,
    /// 0x09 Correlation Data (binary).
    CorrelationData = 0x09,
    /// 0x0B Subscription Identifier (variable byte integer).
    SubscriptionIdentifier = 0x0B,
    /// 0x11 Session Expiry Interval (four-byte integer).
    SessionExpiryInterval = 0x11,
    /// 0x12 Assigned Client Identifier (string).
    AssignedClientIdentifier = 0x12,
    /// 0x13 Server Keep Alive (two-byte integer).
    ServerKeepAlive = 0x13,
    /// 0x15 Authentication Method (string).
    AuthenticationMethod = 0x15,
    /// 0x16 Authentication Data (binary).
    AuthenticationData = 0x16,
    /// 0x17 Request Problem Information (byte).
    RequestProblemInformation = 0x17,
    /// 0x18 Will Delay Interval (four-byte integer).
    WillDelayInterval = 0x18,
    /// 0x19 Request Response Information (byte).
    RequestResponseInformation = 0x19,
    /// 0x1A Response Information (string).
    ResponseInformation = 0x1A,
    /// 0x1C Server Reference (string).
    ServerReference = 0x1C,
    /// 0x1F Reason String (string).
    ReasonString = 0x1F,
    /// 0x21 Receive Maximum (two-byte integer).
    ReceiveMaximum = 0x21,
    /// 0x22 Topic Alias Maximum (two-byte integer).
    TopicAliasMaximum = 0x22,
    /// 0x23 Topic Alias (two-byte integer).
    TopicAlias = 0x23,
    /// 0x24 Maximum QoS (byte).
    MaximumQoS = 0x24,
    /// 0x25 Retain Available (byte).
    RetainAvailable = 0x25,
    /// 0x26 User Property (string pair).
    UserProperty = 0x26,
    /// 0x27 Maximum Packet Size (four-byte integer).
    MaximumPacketSize = 0x27,
    /// 0x28 Wildcard Subscription Available (byte).
    WildcardSubscriptionAvailable = 0x28,
    /// 0x29 Subscription Identifier Available (byte).
    SubscriptionIdentifierAvailable = 0x29,
    /// 0x2A Shared Subscription Available (byte).
    SharedSubscriptionAvailable = 0x2A,
}

impl PropertyId {
    /// The property with this identifier, if the spec defines one.
    pub const fn from_u32(id: u32) -> Option<PropertyId> {
        use PropertyId::*;
        Some(match id {
            0x01 => PayloadFormatIndicator,
            0x02 => MessageExpiryInterval,
            0x03 => ContentType,
            0x08 => ResponseTopic,
            0x09 => CorrelationData,
            0x0B => SubscriptionIdentifier,
            0x11 => SessionExpiryInterval,
            0x12 => AssignedClientIdentifier,
            0x13 => ServerKeepAlive,
            0x15 => AuthenticationMethod,
            0x16 => AuthenticationData,
            0x17 => RequestProblemInformation,
            0x18 => WillDelayInterval,
            0x19 => RequestResponseInformation,
            0x1A => ResponseInformation,
            0x1C => ServerReference,
            0x1F => ReasonString,
            0x21 => ReceiveMaximum,
            0x22 => TopicAliasMaximum,
            0x23 => TopicAlias,
            0x24 => MaximumQoS,
            0x25 => RetainAvailable,
            0x26 => UserProperty,
            0x27 => MaximumPacketSize,
            0x28 => WildcardSubscriptionAvailable,
            0x29 => SubscriptionIdentifierAvailable,
            0x2A => SharedSubscriptionAvailable,
            _ => return None,
        })
    }

    /// This property's bit in the allow-tables and presence masks of `properties`.
    pub(crate) const fn bit(self) -> u64 {
        1u64 << (self as u8)
    }
}
