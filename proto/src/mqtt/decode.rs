//! The decoder: [`decode()`] for a running connection, [`decode_connect()`] for the first
//! packet, and [`DecodeError`] with its v5 reason code (defined in the private `error` room,
//! below the wire reader and the property codec, which fail with it too).
//!
//! Framing first reads the fixed header (type, flags, remaining length) and rejects a bad
//! first byte or a frame above `max_packet_size` *before* waiting for the body, so a peer
//! cannot make the server buffer a huge declared length. A complete frame is split off the
//! buffer and frozen; strings and payloads in the returned packet are slices of it.

use bytes::{Buf, BytesMut};

pub use super::error::DecodeError;
use super::packet::*;
use super::properties::{Context, Properties};
use super::reason::{self, ReasonCode};
use super::topic;
use super::wire::{Reader, VbiParse, parse_vbi};

/// The fixed header of a frame whose body has fully arrived.
struct Frame {
    packet: PacketType,
    flags: u8,
    body: Reader,
}

/// Checks the first byte; `Err` on a reserved type or wrong flags.
fn check_first_byte(byte: u8, version: ProtocolVersion) -> Result<(PacketType, u8), DecodeError> {
    let packet = PacketType::from_nibble(byte >> 4)
        .filter(|t| *t != PacketType::Auth || version == ProtocolVersion::V5)
        .ok_or(DecodeError::InvalidPacketType { byte, version })?;
    let flags = byte & 0x0F;
    let ok = match packet {
        PacketType::Publish => (flags >> 1) & 0b11 != 0b11,
        PacketType::PubRel | PacketType::Subscribe | PacketType::Unsubscribe => flags == 0b0010,
        _ => flags == 0,
    };
    if !ok {
        if packet == PacketType::Publish {
            return Err(DecodeError::InvalidQoS {
                packet,
                field: "fixed header",
            });
        }
        return Err(DecodeError::ReservedFlags { packet, flags });
    }
    Ok((packet, flags))
}

/// Splits one complete frame off `buf`, or says more bytes are needed.
fn frame(
    buf: &mut BytesMut,
    version: ProtocolVersion,
    max_packet_size: u32,
) -> Result<Option<Frame>, DecodeError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let (packet, flags) = check_first_byte(first, version)?;
    let (remaining, vbi_len) = match parse_vbi(buf.get(1..).unwrap_or_default()) {
        VbiParse::Done(v, n) => (v, n),
        VbiParse::Incomplete => return Ok(None),
        VbiParse::TooLong => return Err(DecodeError::RemainingLengthTooLong),
        VbiParse::NonMinimal => {
            return Err(DecodeError::Malformed {
                packet,
                detail: "remaining length not in its shortest form",
            });
        }
    };
    let total = 1 + vbi_len + remaining as usize;
    if total as u64 > u64::from(max_packet_size) {
        return Err(DecodeError::PacketTooLarge {
            size: total as u64,
            max: max_packet_size,
        });
    }
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    let mut bytes = buf.split_to(total).freeze();
    bytes.advance(1 + vbi_len);
    Ok(Some(Frame {
        packet,
        flags,
        body: Reader::new(bytes, packet),
    }))
}

/// The whole length (fixed header included) of the packet at the start of `buf`, when its
/// fixed header is there and the rest is not: what a connection is still waiting for, so it
/// can account for the bytes before they arrive. `None` when `buf` starts with a whole packet,
/// holds too little of a fixed header to tell, or a malformed one (which [`decode`] reports).
/// Neither the packet type nor any limit is checked: [`decode`] does that.
pub fn awaited_packet_len(buf: &[u8]) -> Option<usize> {
    let VbiParse::Done(remaining, vbi_len) = parse_vbi(buf.get(1..)?) else {
        return None;
    };
    let total = 1 + vbi_len + remaining as usize;
    (buf.len() < total).then_some(total)
}

/// Decodes the next packet from `buf` for a connection speaking `version`.
///
/// `Ok(None)`: more bytes are needed (nothing consumed). `Ok(Some(p))`: the frame was removed
/// from `buf`. `Err`: close the connection (after a CONNACK/DISCONNECT with
/// [`DecodeError::reason_code`] in v5); the buffer is left in an unspecified state. A frame
/// larger than `max_packet_size` bytes (whole packet, as v5's Maximum Packet Size counts it)
/// fails as soon as its fixed header is in, without waiting for the body.
pub fn decode(
    buf: &mut BytesMut,
    version: ProtocolVersion,
    max_packet_size: u32,
) -> Result<Option<Packet>, DecodeError> {
    let Some(f) = frame(buf, version, max_packet_size)? else {
        return Ok(None);
    };
    decode_body(f, version).map(Some)
}

/// Decodes the first packet of a connection, which must be CONNECT; its protocol level
/// decides the version for the rest of the connection (`connect.protocol_version`).
/// Anything else is [`DecodeError::ExpectedConnect`], reported before its body arrives.
pub fn decode_connect(
    buf: &mut BytesMut,
    max_packet_size: u32,
) -> Result<Option<Connect>, DecodeError> {
    if let Some(&first) = buf.first() {
        let t = PacketType::from_nibble(first >> 4);
        if t != Some(PacketType::Connect) {
            return Err(match t {
                Some(packet) => DecodeError::ExpectedConnect { packet },
                None => DecodeError::InvalidPacketType {
                    byte: first,
                    version: ProtocolVersion::V5,
                },
            });
        }
    }
    let Some(mut f) = frame(buf, ProtocolVersion::V5, max_packet_size)? else {
        return Ok(None);
    };
    read_connect(&mut f.body).map(Some)
}

/// Per-connection decoding state: expects CONNECT first, then decodes in the version the
/// CONNECT named. A thin convenience over [`decode_connect()`] and [`decode()`].
#[derive(Debug, Clone)]
pub struct Decoder {
    version: Option<ProtocolVersion>,
    max_packet_size: u32,
}

impl Decoder {
    /// A decoder for a new connection that accepts frames up to `max_packet_size` bytes.
    pub fn new(max_packet_size: u32) -> Self {
        Decoder {
            version: None,
            max_packet_size,
        }
    }

    /// The version negotiated by CONNECT, once it has been decoded.
    pub fn version(&self) -> Option<ProtocolVersion> {
        self.version
    }

    /// The frame size limit in force.
    pub fn max_packet_size(&self) -> u32 {
        self.max_packet_size
    }

    /// Changes the frame size limit.
    pub fn set_max_packet_size(&mut self, max_packet_size: u32) {
        self.max_packet_size = max_packet_size;
    }

    /// Decodes the next packet: the first must be CONNECT (which fixes the version), the
    /// rest are decoded in that version. Same `Ok(None)` / `Err` contract as [`decode()`].
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Packet>, DecodeError> {
        match self.version {
            Some(v) => decode(buf, v, self.max_packet_size),
            None => Ok(decode_connect(buf, self.max_packet_size)?.map(|c| {
                self.version = Some(c.protocol_version);
                Packet::Connect(Box::new(c))
            })),
        }
    }
}

fn decode_body(mut f: Frame, version: ProtocolVersion) -> Result<Packet, DecodeError> {
    let v5 = version == ProtocolVersion::V5;
    let r = &mut f.body;
    let p = match f.packet {
        PacketType::Connect => Packet::Connect(Box::new(read_connect(r)?)),
        PacketType::ConnAck => Packet::ConnAck(read_connack(r, v5)?),
        PacketType::Publish => Packet::Publish(read_publish(r, f.flags, v5)?),
        PacketType::PubAck => {
            let (packet_id, reason_code, properties) = read_pub_response(r, v5, reason::PUBACK)?;
            Packet::PubAck(PubAck {
                packet_id,
                reason_code,
                properties,
            })
        }
        PacketType::PubRec => {
            let (packet_id, reason_code, properties) = read_pub_response(r, v5, reason::PUBACK)?;
            Packet::PubRec(PubRec {
                packet_id,
                reason_code,
                properties,
            })
        }
        PacketType::PubRel => {
            let (packet_id, reason_code, properties) = read_pub_response(r, v5, reason::PUBREL)?;
            Packet::PubRel(PubRel {
                packet_id,
                reason_code,
                properties,
            })
        }
        PacketType::PubComp => {
            let (packet_id, reason_code, properties) = read_pub_response(r, v5, reason::PUBREL)?;
            Packet::PubComp(PubComp {
                packet_id,
                reason_code,
                properties,
            })
        }
        PacketType::Subscribe => Packet::Subscribe(read_subscribe(r, v5)?),
        PacketType::SubAck => Packet::SubAck(read_suback(r, v5)?),
        PacketType::Unsubscribe => Packet::Unsubscribe(read_unsubscribe(r, v5)?),
        PacketType::UnsubAck => Packet::UnsubAck(read_unsuback(r, v5)?),
        PacketType::PingReq => Packet::PingReq,
        PacketType::PingResp => Packet::PingResp,
        PacketType::Disconnect => {
            let (reason_code, properties) = read_reason_and_props(r, v5, reason::DISCONNECT)?;
            Packet::Disconnect(Disconnect {
                reason_code,
                properties,
            })
        }
        PacketType::Auth => {
            let (reason_code, properties) = read_reason_and_props(r, v5, reason::AUTH)?;
            Packet::Auth(Auth {
                reason_code,
                properties,
            })
        }
    };
    r.finish()?;
    Ok(p)
}

fn props(r: &mut Reader, v5: bool) -> Result<Properties, DecodeError> {
    if v5 {
        Properties::read(r, Context::Packet(r.packet))
    } else {
        Ok(Properties::default())
    }
}

fn packet_id(r: &mut Reader) -> Result<u16, DecodeError> {
    let id = r.u16("packet identifier")?;
    if id == 0 {
        return Err(DecodeError::ZeroPacketId { packet: r.packet });
    }
    Ok(id)
}

fn reason_code(r: &mut Reader, allowed: &[u8]) -> Result<ReasonCode, DecodeError> {
    let code = r.u8("reason code")?;
    allowed
        .contains(&code)
        .then(|| ReasonCode::from_u8(code))
        .flatten()
        .ok_or(DecodeError::InvalidReasonCode {
            packet: r.packet,
            code,
        })
}

fn check_topic_name(topic: &str, packet: PacketType) -> Result<(), DecodeError> {
    topic::validate_name(topic).map_err(|source| DecodeError::TopicNameInvalid { packet, source })
}

fn read_connect(r: &mut Reader) -> Result<Connect, DecodeError> {
    let packet = PacketType::Connect;
    let name = r.binary("protocol name")?;
    let level = r.u8("protocol level")?;
    if name.as_ref() != b"MQTT" {
        if name.as_ref() == b"MQIsdp" {
            return Err(DecodeError::UnsupportedProtocolVersion { level });
        }
        return Err(DecodeError::UnsupportedProtocolName {
            name: String::from_utf8_lossy(&name).into_owned(),
        });
    }
    let version = ProtocolVersion::from_level(level)
        .ok_or(DecodeError::UnsupportedProtocolVersion { level })?;
    let v5 = version == ProtocolVersion::V5;
    let flags = r.u8("connect flags")?;
    if flags & 0x01 != 0 {
        return Err(DecodeError::Malformed {
            packet,
            detail: "reserved connect flag bit 0 is set",
        });
    }
    let clean_start = flags & 0x02 != 0;
    let will_flag = flags & 0x04 != 0;
    let will_qos_bits = (flags >> 3) & 0b11;
    let will_retain = flags & 0x20 != 0;
    let password_flag = flags & 0x40 != 0;
    let username_flag = flags & 0x80 != 0;
    if !will_flag && (will_qos_bits != 0 || will_retain) {
        return Err(DecodeError::Malformed {
            packet,
            detail: "will QoS or will retain set without the will flag",
        });
    }
    let will_qos = QoS::from_u8(will_qos_bits).ok_or(DecodeError::InvalidQoS {
        packet,
        field: "will QoS",
    })?;
    if !v5 && password_flag && !username_flag {
        return Err(DecodeError::Protocol {
            packet,
            detail: "password flag set without the user name flag (3.1.1)",
        });
    }
    let keep_alive = r.u16("keep alive")?;
    let properties = props(r, v5)?;
    let client_id = r.string("client identifier")?;
    let will = if will_flag {
        let properties = if v5 {
            Properties::read(r, Context::Will)?
        } else {
            Properties::default()
        };
        let topic = r.string("will topic")?;
        check_topic_name(&topic, packet)?;
        let payload = r.binary("will payload")?;
        Some(Will {
            topic,
            payload,
            qos: will_qos,
            retain: will_retain,
            properties,
        })
    } else {
        None
    };
    let username = if username_flag {
        Some(r.string("user name")?)
    } else {
        None
    };
    let password = if password_flag {
        Some(r.binary("password")?)
    } else {
        None
    };
    r.finish()?;
    Ok(Connect {
        protocol_version: version,
        clean_start,
        keep_alive,
        client_id,
        will,
        username,
        password,
        properties,
    })
}

fn read_connack(r: &mut Reader, v5: bool) -> Result<ConnAck, DecodeError> {
    let flags = r.u8("connect acknowledge flags")?;
    if flags & 0xFE != 0 {
        return Err(DecodeError::Malformed {
            packet: r.packet,
            detail: "reserved connect acknowledge flag bits are set",
        });
    }
    let reason_code = if v5 {
        reason_code(r, reason::CONNACK)?
    } else {
        let code = r.u8("return code")?;
        ReasonCode::from_v3_connack(code).ok_or(DecodeError::InvalidReasonCode {
            packet: r.packet,
            code,
        })?
    };
    let properties = props(r, v5)?;
    Ok(ConnAck {
        session_present: flags & 1 != 0,
        reason_code,
        properties,
    })
}

fn read_publish(r: &mut Reader, flags: u8, v5: bool) -> Result<Publish, DecodeError> {
    let packet = PacketType::Publish;
    let dup = flags & 0b1000 != 0;
    let retain = flags & 0b0001 != 0;
    let qos = QoS::from_u8((flags >> 1) & 0b11).ok_or(DecodeError::InvalidQoS {
        packet,
        field: "fixed header",
    })?;
    if dup && qos == QoS::AtMostOnce {
        return Err(DecodeError::Protocol {
            packet,
            detail: "DUP flag set on a QoS 0 message",
        });
    }
    // The name is validated on the text the string check returns (not through `Deref`, which
    // checks the UTF-8 again), and the verdict is raised where it always was: after the
    // packet id and the properties.
    let (topic, name_check) = r.string_inspect("topic name", |name| {
        (!name.is_empty()).then(|| check_topic_name(name, packet))
    })?;
    let packet_id = if qos == QoS::AtMostOnce {
        None
    } else {
        Some(packet_id(r)?)
    };
    let properties = props(r, v5)?;
    match name_check {
        Some(checked) => checked?,
        None if !v5 => check_topic_name("", packet)?,
        None if properties.topic_alias.is_none() => {
            return Err(DecodeError::Protocol {
                packet,
                detail: "empty topic name without a topic alias",
            });
        }
        None => {}
    }
    let payload = r.rest();
    Ok(Publish {
        dup,
        qos,
        retain,
        topic,
        packet_id,
        properties,
        payload,
    })
}

fn read_pub_response(
    r: &mut Reader,
    v5: bool,
    allowed: &[u8],
) -> Result<(u16, ReasonCode, Properties), DecodeError> {
    let id = packet_id(r)?;
    if !v5 || r.remaining() == 0 {
        return Ok((id, ReasonCode::Success, Properties::default()));
    }
    let code = reason_code(r, allowed)?;
    let properties = if r.remaining() > 0 {
        props(r, v5)?
    } else {
        Properties::default()
    };
    Ok((id, code, properties))
}

fn read_reason_and_props(
    r: &mut Reader,
    v5: bool,
    allowed: &[u8],
) -> Result<(ReasonCode, Properties), DecodeError> {
    if !v5 || r.remaining() == 0 {
        return Ok((ReasonCode::Success, Properties::default()));
    }
    let code = reason_code(r, allowed)?;
    let properties = if r.remaining() > 0 {
        props(r, v5)?
    } else {
        Properties::default()
    };
    Ok((code, properties))
}

fn read_subscribe(r: &mut Reader, v5: bool) -> Result<Subscribe, DecodeError> {
    let packet = PacketType::Subscribe;
    let packet_id = packet_id(r)?;
    let properties = props(r, v5)?;
    let mut filters = Vec::new();
    while r.remaining() > 0 {
        let filter = r.string("topic filter")?;
        let o = r.u8("subscription options")?;
        let reserved = if v5 { 0b1100_0000 } else { 0b1111_1100 };
        if o & reserved != 0 {
            return Err(DecodeError::Malformed {
                packet,
                detail: "reserved subscription option bits are set",
            });
        }
        let qos = QoS::from_u8(o & 0b11).ok_or(DecodeError::InvalidQoS {
            packet,
            field: "subscription options",
        })?;
        let retain_handling = match (o >> 4) & 0b11 {
            0 => RetainHandling::SendAtSubscribe,
            1 => RetainHandling::SendAtSubscribeIfNew,
            2 => RetainHandling::DoNotSend,
            _ => {
                return Err(DecodeError::Protocol {
                    packet,
                    detail: "retain handling 3 is reserved",
                });
            }
        };
        let options = SubscriptionOptions {
            qos,
            no_local: o & 0b0100 != 0,
            retain_as_published: o & 0b1000 != 0,
            retain_handling,
        };
        filters.push(SubscribeFilter { filter, options });
    }
    if filters.is_empty() {
        return Err(DecodeError::NoTopicFilters { packet });
    }
    Ok(Subscribe {
        packet_id,
        filters,
        properties,
    })
}

fn read_suback(r: &mut Reader, v5: bool) -> Result<SubAck, DecodeError> {
    let packet_id = packet_id(r)?;
    let properties = props(r, v5)?;
    let mut reason_codes = Vec::with_capacity(r.remaining());
    while r.remaining() > 0 {
        let code = if v5 {
            reason_code(r, reason::SUBACK)?
        } else {
            let code = r.u8("return code")?;
            ReasonCode::from_v3_suback(code).ok_or(DecodeError::InvalidReasonCode {
                packet: r.packet,
                code,
            })?
        };
        reason_codes.push(code);
    }
    if reason_codes.is_empty() {
        return Err(DecodeError::Protocol {
            packet: r.packet,
            detail: "no return codes",
        });
    }
    Ok(SubAck {
        packet_id,
        reason_codes,
        properties,
    })
}

fn read_unsubscribe(r: &mut Reader, v5: bool) -> Result<Unsubscribe, DecodeError> {
    let packet_id = packet_id(r)?;
    let properties = props(r, v5)?;
    let mut filters = Vec::new();
    while r.remaining() > 0 {
        filters.push(r.string("topic filter")?);
    }
    if filters.is_empty() {
        return Err(DecodeError::NoTopicFilters { packet: r.packet });
    }
    Ok(Unsubscribe {
        packet_id,
        filters,
        properties,
    })
}

fn read_unsuback(r: &mut Reader, v5: bool) -> Result<UnsubAck, DecodeError> {
    let packet_id = packet_id(r)?;
    if !v5 {
        return Ok(UnsubAck {
            packet_id,
            reason_codes: Vec::new(),
            properties: Properties::default(),
        });
    }
    let properties = props(r, v5)?;
    let mut reason_codes = Vec::with_capacity(r.remaining());
    while r.remaining() > 0 {
        reason_codes.push(reason_code(r, reason::UNSUBACK)?);
    }
    if reason_codes.is_empty() {
        return Err(DecodeError::Protocol {
            packet: r.packet,
            detail: "no reason codes",
        });
    }
    Ok(UnsubAck {
        packet_id,
        reason_codes,
        properties,
    })
}
