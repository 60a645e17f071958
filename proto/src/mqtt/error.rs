//! The codec's two error types: [`DecodeError`] (why bytes are not a packet, with the v5
//! reason code to answer with) and [`EncodeError`] (why a packet cannot be written).
//!
//! They live below the code that raises them: the wire reader (`wire`) and the property
//! list codec (`properties`) fail with them as much as the packet decoder and encoder do, so
//! neither has to import `decode` or `encode`. This file names only the leaves (`ids`,
//! `reason`, `string`, `topic`). Users reach the types where they always did:
//! `decode::DecodeError`, `encode::EncodeError`, and the `mqtt` root.

use super::ids::{PacketType, PropertyId, ProtocolVersion};
use super::reason::ReasonCode;
use super::string::InvalidString;
use super::topic::TopicError;

/// Why bytes could not be decoded into a packet. Each variant maps to the v5 reason code to
/// send (CONNACK before the session exists, DISCONNECT after) via [`DecodeError::reason_code`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The frame (fixed header + remaining length) is larger than allowed.
    #[error("packet of {size} bytes exceeds the maximum packet size of {max} bytes")]
    PacketTooLarge {
        /// Declared frame size in bytes.
        size: u64,
        /// The limit in force.
        max: u32,
    },
    /// The remaining length does not end within 4 bytes.
    #[error("remaining length is not a variable byte integer of at most 4 bytes")]
    RemainingLengthTooLong,
    /// The packet type nibble is reserved (0, or 15 = AUTH in 3.1.1).
    #[error("first byte 0x{byte:02X} names a reserved packet type for MQTT {version:?}")]
    InvalidPacketType {
        /// The first byte of the frame.
        byte: u8,
        /// The protocol version in force.
        version: ProtocolVersion,
    },
    /// The fixed-header flags are not the ones the spec requires for this type.
    #[error("{packet}: reserved fixed-header flags 0b{flags:04b}")]
    ReservedFlags {
        /// Packet type.
        packet: PacketType,
        /// The low nibble of the first byte.
        flags: u8,
    },
    /// A QoS field holds 3.
    #[error("{packet}: QoS 3 in {field}")]
    InvalidQoS {
        /// Packet type.
        packet: PacketType,
        /// Which QoS field.
        field: &'static str,
    },
    /// The frame ends before a field is complete.
    #[error("{packet}: frame ends in the middle of {field}")]
    Truncated {
        /// Packet type.
        packet: PacketType,
        /// The field being read.
        field: &'static str,
    },
    /// Bytes are left after the last field.
    #[error("{packet}: {extra} unexpected bytes after the last field")]
    TrailingBytes {
        /// Packet type.
        packet: PacketType,
        /// Number of extra bytes.
        extra: usize,
    },
    /// A variable byte integer inside the packet uses more than 4 bytes.
    #[error("{packet}: {field} is a variable byte integer longer than 4 bytes")]
    VarIntTooLong {
        /// Packet type.
        packet: PacketType,
        /// The field being read.
        field: &'static str,
    },
    /// A string is not well-formed UTF-8 or contains U+0000.
    #[error("{packet}: {field} is not a valid MQTT string: {source}")]
    InvalidString {
        /// Packet type.
        packet: PacketType,
        /// The field being read.
        field: &'static str,
        /// What is wrong with it.
        source: InvalidString,
    },
    /// Another structural violation (reserved bits set, inconsistent flags).
    #[error("{packet}: malformed: {detail}")]
    Malformed {
        /// Packet type.
        packet: PacketType,
        /// What is wrong.
        detail: &'static str,
    },
    /// CONNECT names a protocol other than "MQTT".
    #[error("CONNECT: unsupported protocol name {name:?}")]
    UnsupportedProtocolName {
        /// The protocol name sent (lossy UTF-8).
        name: String,
    },
    /// CONNECT names a protocol level other than 4 or 5.
    #[error("CONNECT: unsupported protocol level {level} (supported: 4 = 3.1.1, 5 = 5.0)")]
    UnsupportedProtocolVersion {
        /// The level sent.
        level: u8,
    },
    /// The first packet of a connection is not CONNECT.
    #[error("expected CONNECT as the first packet, got {packet}")]
    ExpectedConnect {
        /// What arrived instead.
        packet: PacketType,
    },
    /// A packet identifier is 0 where a non-zero one is required.
    #[error("{packet}: packet identifier must be non-zero")]
    ZeroPacketId {
        /// Packet type.
        packet: PacketType,
    },
    /// SUBSCRIBE or UNSUBSCRIBE without any topic filter.
    #[error("{packet}: no topic filters")]
    NoTopicFilters {
        /// Packet type.
        packet: PacketType,
    },
    /// A property identifier the spec does not define.
    #[error("{packet}: unknown property identifier 0x{id:02X}")]
    UnknownProperty {
        /// Packet type.
        packet: PacketType,
        /// The identifier read.
        id: u32,
    },
    /// A property that this packet may not carry.
    #[error("{packet}: property {id:?} is not allowed here (will properties: {will})")]
    PropertyNotAllowed {
        /// Packet type.
        packet: PacketType,
        /// The property.
        id: PropertyId,
        /// True if it was in the Will Properties of CONNECT.
        will: bool,
    },
    /// A property that may appear once appears again.
    #[error("{packet}: property {id:?} appears more than once")]
    DuplicateProperty {
        /// Packet type.
        packet: PacketType,
        /// The property.
        id: PropertyId,
    },
    /// A property value the spec forbids (0 where non-zero is required, a flag above 1, ...).
    #[error("{packet}: property {id:?} has the invalid value {value}")]
    InvalidPropertyValue {
        /// Packet type.
        packet: PacketType,
        /// The property.
        id: PropertyId,
        /// The value read.
        value: u32,
    },
    /// A reason code that is not defined, or not valid for this packet type.
    #[error("{packet}: reason code 0x{code:02X} is not valid here")]
    InvalidReasonCode {
        /// Packet type.
        packet: PacketType,
        /// The code read.
        code: u8,
    },
    /// A PUBLISH or Will topic name is not a valid topic name.
    #[error("{packet}: invalid topic name: {source}")]
    TopicNameInvalid {
        /// Packet type.
        packet: PacketType,
        /// What is wrong with it.
        source: TopicError,
    },
    /// Parsed, but not allowed by the protocol.
    #[error("{packet}: protocol error: {detail}")]
    Protocol {
        /// Packet type.
        packet: PacketType,
        /// What is wrong.
        detail: &'static str,
    },
}

impl DecodeError {
    /// The v5 reason code to report this error with (0x81 Malformed Packet, 0x82 Protocol
    /// Error, 0x84 Unsupported Protocol Version, 0x90 Topic Name invalid, 0x95 Packet too
    /// large). For a 3.1.1 CONNECT, [`ReasonCode::to_v3_connack`] gives the return code.
    pub fn reason_code(&self) -> ReasonCode {
        use DecodeError::*;
        match self {
            PacketTooLarge { .. } => ReasonCode::PacketTooLarge,
            RemainingLengthTooLong
            | InvalidPacketType { .. }
            | ReservedFlags { .. }
            | InvalidQoS { .. }
            | Truncated { .. }
            | TrailingBytes { .. }
            | VarIntTooLong { .. }
            | InvalidString { .. }
            | Malformed { .. }
            | UnknownProperty { .. } => ReasonCode::MalformedPacket,
            UnsupportedProtocolName { .. } | UnsupportedProtocolVersion { .. } => {
                ReasonCode::UnsupportedProtocolVersion
            }
            ExpectedConnect { .. }
            | ZeroPacketId { .. }
            | NoTopicFilters { .. }
            | PropertyNotAllowed { .. }
            | DuplicateProperty { .. }
            | InvalidPropertyValue { .. }
            | InvalidReasonCode { .. }
            | Protocol { .. } => ReasonCode::ProtocolError,
            TopicNameInvalid { .. } => ReasonCode::TopicNameInvalid,
        }
    }
}

/// Why a packet could not be encoded. Nothing is written to the output when this is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The encoded packet is larger than the receiver's Maximum Packet Size: drop optional
    /// properties (reason string, user properties) and retry, or drop the message.
    #[error("{packet} of {size} bytes exceeds the receiver's maximum packet size of {max} bytes")]
    PacketTooLarge {
        /// Packet type.
        packet: PacketType,
        /// Encoded size in bytes.
        size: usize,
        /// The limit.
        max: u32,
    },
    /// A length-prefixed field or the whole packet exceeds what the wire format can express.
    #[error("{packet}: {what} is {len} bytes, more than the wire format allows")]
    TooLarge {
        /// Packet type.
        packet: PacketType,
        /// The field.
        what: &'static str,
        /// Its length.
        len: usize,
    },
    /// A property this packet may not carry.
    #[error("{packet}: property {id:?} is not allowed in this packet")]
    PropertyNotAllowed {
        /// Packet type.
        packet: PacketType,
        /// The property.
        id: PropertyId,
    },
    /// A property value the spec forbids.
    #[error("{packet}: property {id:?} has the invalid value {value}")]
    InvalidPropertyValue {
        /// Packet type.
        packet: PacketType,
        /// The property.
        id: PropertyId,
        /// The value.
        value: u32,
    },
    /// A reason code this packet type cannot carry.
    #[error("{packet}: reason code {code} is not valid in this packet")]
    ReasonCodeNotAllowed {
        /// Packet type.
        packet: PacketType,
        /// The code.
        code: ReasonCode,
    },
    /// The packet does not exist in this protocol version (AUTH in 3.1.1).
    #[error("{packet} does not exist in MQTT {version:?}")]
    NotInVersion {
        /// Packet type.
        packet: PacketType,
        /// The version asked for.
        version: ProtocolVersion,
    },
    /// CONNECT's `protocol_version` differs from the version asked for.
    #[error("CONNECT says {packet_version:?} but encoding was asked for {version:?}")]
    VersionMismatch {
        /// The packet's protocol_version field.
        packet_version: ProtocolVersion,
        /// The version asked for.
        version: ProtocolVersion,
    },
    /// Fields are inconsistent (QoS without packet id, empty filter list, ...).
    #[error("{packet}: invalid packet: {detail}")]
    Invalid {
        /// Packet type.
        packet: PacketType,
        /// What is wrong.
        detail: &'static str,
    },
}
