//! The encoder: [`encode()`], [`encode_limited()`] (respects the peer's Maximum Packet Size),
//! [`encoded_len()`], and [`EncodeError`] (defined in the private `error` room, below the
//! property codec, which fails with it too).
//!
//! Each packet is serialised by one function generic over a sink; it runs once against a
//! byte counter (which also validates, so nothing is written on error) and once against the
//! output buffer. 3.1.1 encoding ignores v5-only fields (properties, reason codes other than
//! the 3.1.1 return codes, subscription options beyond QoS).

use bytes::BytesMut;

pub use super::error::EncodeError;
use super::packet::*;
use super::properties::{Context, Properties};
use super::reason::{self, ReasonCode};
use super::string::MqttString;
use super::wire::{Counter, Sink, VBI_MAX, vbi_len};

/// Encodes `packet` for `version`, appending it to `out`. Returns the number of bytes written.
pub fn encode(
    packet: &Packet,
    version: ProtocolVersion,
    out: &mut BytesMut,
) -> Result<usize, EncodeError> {
    encode_inner(packet, version, None, out)
}

/// Like [`encode()`], but refuses with [`EncodeError::PacketTooLarge`] (writing nothing) when
/// the whole packet would exceed `max_packet_size` bytes, the client's v5 Maximum Packet Size.
pub fn encode_limited(
    packet: &Packet,
    version: ProtocolVersion,
    max_packet_size: u32,
    out: &mut BytesMut,
) -> Result<usize, EncodeError> {
    encode_inner(packet, version, Some(max_packet_size), out)
}

/// A PUBLISH without properties, given by its parts: what a broker sends for most
/// deliveries (every 3.1.1 one; a v5 one whose message has no property, no subscription
/// identifier and no topic alias).
///
/// [`PlainPublish::encode_limited`] writes the same bytes, and refuses with the same error, as
/// [`encode_limited()`] of the [`Publish`] with these fields, its topic made by
/// `MqttString::try_from(topic)` (empty if that refuses) and no properties: a test holds it
/// to that. It builds no packet, copies no topic into a new buffer and checks no UTF-8 again
/// (a `&str` is UTF-8); it only looks for the U+0000 an MQTT string may not hold.
#[derive(Debug, Clone, Copy)]
pub struct PlainPublish<'a> {
    /// DUP flag.
    pub dup: bool,
    /// QoS of this delivery.
    pub qos: QoS,
    /// RETAIN flag.
    pub retain: bool,
    /// Topic name.
    pub topic: &'a str,
    /// Packet identifier: `Some` (non-zero) exactly when `qos` is 1 or 2.
    pub packet_id: Option<u16>,
    /// Application payload.
    pub payload: &'a [u8],
}

impl PlainPublish<'_> {
    /// Appends the PUBLISH to `out` unless it would exceed `max_packet_size` bytes; returns
    /// the bytes written. Nothing is written on error.
    pub fn encode_limited(
        &self,
        version: ProtocolVersion,
        max_packet_size: u32,
        out: &mut BytesMut,
    ) -> Result<usize, EncodeError> {
        let t = PacketType::Publish;
        if self.dup && self.qos == QoS::AtMostOnce {
            return Err(EncodeError::Invalid {
                packet: t,
                detail: "DUP set on a QoS 0 message",
            });
        }
        // What MqttString::try_from refuses becomes the empty topic, as the packet path has it.
        let topic = self.topic.as_bytes();
        if topic.is_empty() || topic.len() > usize::from(u16::MAX) || topic.contains(&0) {
            return Err(EncodeError::Invalid {
                packet: t,
                detail: "empty topic without a topic alias",
            });
        }
        let id = match (self.qos, self.packet_id) {
            (QoS::AtMostOnce, None) => None,
            (QoS::AtLeastOnce | QoS::ExactlyOnce, Some(id)) => Some(packet_id(id, t)?),
            _ => {
                return Err(EncodeError::Invalid {
                    packet: t,
                    detail: "packet identifier must be present exactly when QoS > 0",
                });
            }
        };
        let v5 = version == ProtocolVersion::V5;
        let body = 2 + topic.len() + 2 * usize::from(id.is_some()) + usize::from(v5);
        let len = body + self.payload.len();
        let remaining =
            u32::try_from(len)
                .ok()
                .filter(|r| *r <= VBI_MAX)
                .ok_or(EncodeError::TooLarge {
                    packet: t,
                    what: "remaining length",
                    len,
                })?;
        let total = 1 + vbi_len(remaining) + len;
        if total as u64 > u64::from(max_packet_size) {
            return Err(EncodeError::PacketTooLarge {
                packet: t,
                size: total,
                max: max_packet_size,
            });
        }
        out.reserve(total);
        out.u8(0x30 | (u8::from(self.dup) << 3) | ((self.qos as u8) << 1) | u8::from(self.retain));
        out.vbi(remaining);
        out.u16(topic.len() as u16);
        out.slice(topic);
        if let Some(id) = id {
            out.u16(id);
        }
        if v5 {
            out.u8(0); // no properties
        }
        out.slice(self.payload);
        Ok(total)
    }
}

/// The number of bytes [`encode()`] would write, validating the packet on the way.
pub fn encoded_len(packet: &Packet, version: ProtocolVersion) -> Result<usize, EncodeError> {
    let (_, total) = measure(packet, version)?;
    Ok(total)
}

/// Returns (remaining length, total length).
fn measure(packet: &Packet, version: ProtocolVersion) -> Result<(u32, usize), EncodeError> {
    let mut c = Counter::default();
    write_body(packet, version, &mut c)?;
    let remaining =
        u32::try_from(c.0)
            .ok()
            .filter(|r| *r <= VBI_MAX)
            .ok_or(EncodeError::TooLarge {
                packet: packet.packet_type(),
                what: "remaining length",
                len: c.0,
            })?;
    Ok((remaining, 1 + vbi_len(remaining) + c.0))
}

fn encode_inner(
    packet: &Packet,
    version: ProtocolVersion,
    limit: Option<u32>,
    out: &mut BytesMut,
) -> Result<usize, EncodeError> {
    let (remaining, total) = measure(packet, version)?;
    if let Some(max) = limit
        && total as u64 > u64::from(max)
    {
        return Err(EncodeError::PacketTooLarge {
            packet: packet.packet_type(),
            size: total,
            max,
        });
    }
    out.reserve(total);
    out.u8(first_byte(packet));
    out.vbi(remaining);
    write_body(packet, version, out)?;
    Ok(total)
}

fn first_byte(packet: &Packet) -> u8 {
    let t = (packet.packet_type() as u8) << 4;
    match packet {
        Packet::Publish(p) => {
            t | (u8::from(p.dup) << 3) | ((p.qos as u8) << 1) | u8::from(p.retain)
        }
        Packet::PubRel(_) | Packet::Subscribe(_) | Packet::Unsubscribe(_) => t | 0b0010,
        _ => t,
    }
}

fn string<S: Sink>(s: &mut S, v: &MqttString) {
    // MqttString guarantees len <= u16::MAX.
    s.u16(v.len() as u16);
    s.slice(v.as_bytes());
}

fn binary<S: Sink>(
    s: &mut S,
    v: &[u8],
    packet: PacketType,
    what: &'static str,
) -> Result<(), EncodeError> {
    let len = u16::try_from(v.len()).map_err(|_| EncodeError::TooLarge {
        packet,
        what,
        len: v.len(),
    })?;
    s.u16(len);
    s.slice(v);
    Ok(())
}

fn packet_id(id: u16, packet: PacketType) -> Result<u16, EncodeError> {
    if id == 0 {
        return Err(EncodeError::Invalid {
            packet,
            detail: "packet identifier must be non-zero",
        });
    }
    Ok(id)
}

fn check_code(code: ReasonCode, allowed: &[u8], packet: PacketType) -> Result<u8, EncodeError> {
    if allowed.contains(&code.value()) {
        Ok(code.value())
    } else {
        Err(EncodeError::ReasonCodeNotAllowed { packet, code })
    }
}

fn write_props<S: Sink>(s: &mut S, p: &Properties, t: PacketType) -> Result<(), EncodeError> {
    p.write(s, Context::Packet(t))
}

fn write_body<S: Sink>(
    packet: &Packet,
    version: ProtocolVersion,
    s: &mut S,
) -> Result<(), EncodeError> {
    let v5 = version == ProtocolVersion::V5;
    let t = packet.packet_type();
    match packet {
        Packet::Connect(c) => write_connect(c, version, s),
        Packet::ConnAck(c) => {
            s.u8(u8::from(c.session_present));
            if v5 {
                s.u8(check_code(c.reason_code, reason::CONNACK, t)?);
                write_props(s, &c.properties, t)?;
            } else {
                s.u8(c.reason_code.to_v3_connack());
            }
            Ok(())
        }
        Packet::Publish(p) => {
            if p.dup && p.qos == QoS::AtMostOnce {
                return Err(EncodeError::Invalid {
                    packet: t,
                    detail: "DUP set on a QoS 0 message",
                });
            }
            if p.topic.is_empty() && !(v5 && p.properties.topic_alias.is_some()) {
                return Err(EncodeError::Invalid {
                    packet: t,
                    detail: "empty topic without a topic alias",
                });
            }
            string(s, &p.topic);
            match (p.qos, p.packet_id) {
                (QoS::AtMostOnce, None) => {}
                (QoS::AtLeastOnce | QoS::ExactlyOnce, Some(id)) => s.u16(packet_id(id, t)?),
                _ => {
                    return Err(EncodeError::Invalid {
                        packet: t,
                        detail: "packet identifier must be present exactly when QoS > 0",
                    });
                }
            }
            if v5 {
                write_props(s, &p.properties, t)?;
            }
            s.slice(&p.payload);
            Ok(())
        }
        Packet::PubAck(a) => write_pub_response(
            s,
            a.packet_id,
            a.reason_code,
            &a.properties,
            v5,
            t,
            reason::PUBACK,
        ),
        Packet::PubRec(a) => write_pub_response(
            s,
            a.packet_id,
            a.reason_code,
            &a.properties,
            v5,
            t,
            reason::PUBACK,
        ),
        Packet::PubRel(a) => write_pub_response(
            s,
            a.packet_id,
            a.reason_code,
            &a.properties,
            v5,
            t,
            reason::PUBREL,
        ),
        Packet::PubComp(a) => write_pub_response(
            s,
            a.packet_id,
            a.reason_code,
            &a.properties,
            v5,
            t,
            reason::PUBREL,
        ),
        Packet::Subscribe(sub) => {
            s.u16(packet_id(sub.packet_id, t)?);
            if v5 {
                write_props(s, &sub.properties, t)?;
            }
            if sub.filters.is_empty() {
                return Err(EncodeError::Invalid {
                    packet: t,
                    detail: "no topic filters",
                });
            }
            for f in &sub.filters {
                string(s, &f.filter);
                let o = &f.options;
                let mut b = o.qos as u8;
                if v5 {
                    b |= u8::from(o.no_local) << 2
                        | u8::from(o.retain_as_published) << 3
                        | (o.retain_handling as u8) << 4;
                }
                s.u8(b);
            }
            Ok(())
        }
        Packet::SubAck(a) => {
            s.u16(packet_id(a.packet_id, t)?);
            if v5 {
                write_props(s, &a.properties, t)?;
            }
            if a.reason_codes.is_empty() {
                return Err(EncodeError::Invalid {
                    packet: t,
                    detail: "no reason codes",
                });
            }
            for code in &a.reason_codes {
                s.u8(if v5 {
                    check_code(*code, reason::SUBACK, t)?
                } else {
                    code.to_v3_suback()
                });
            }
            Ok(())
        }
        Packet::Unsubscribe(u) => {
            s.u16(packet_id(u.packet_id, t)?);
            if v5 {
                write_props(s, &u.properties, t)?;
            }
            if u.filters.is_empty() {
                return Err(EncodeError::Invalid {
                    packet: t,
                    detail: "no topic filters",
                });
            }
            for f in &u.filters {
                string(s, f);
            }
            Ok(())
        }
        Packet::UnsubAck(a) => {
            s.u16(packet_id(a.packet_id, t)?);
            if v5 {
                write_props(s, &a.properties, t)?;
                if a.reason_codes.is_empty() {
                    return Err(EncodeError::Invalid {
                        packet: t,
                        detail: "no reason codes",
                    });
                }
                for code in &a.reason_codes {
                    s.u8(check_code(*code, reason::UNSUBACK, t)?);
                }
            }
            Ok(())
        }
        Packet::PingReq | Packet::PingResp => Ok(()),
        Packet::Disconnect(d) => {
            if v5 {
                write_reason_and_props(s, d.reason_code, &d.properties, t, reason::DISCONNECT)?;
            }
            Ok(())
        }
        Packet::Auth(a) => {
            if !v5 {
                return Err(EncodeError::NotInVersion { packet: t, version });
            }
            write_reason_and_props(s, a.reason_code, &a.properties, t, reason::AUTH)
        }
    }
}

fn write_pub_response<S: Sink>(
    s: &mut S,
    id: u16,
    code: ReasonCode,
    props: &Properties,
    v5: bool,
    t: PacketType,
    allowed: &[u8],
) -> Result<(), EncodeError> {
    s.u16(packet_id(id, t)?);
    if v5 && (code != ReasonCode::Success || !props.is_empty()) {
        s.u8(check_code(code, allowed, t)?);
        if !props.is_empty() {
            write_props(s, props, t)?;
        }
    }
    Ok(())
}

fn write_reason_and_props<S: Sink>(
    s: &mut S,
    code: ReasonCode,
    props: &Properties,
    t: PacketType,
    allowed: &[u8],
) -> Result<(), EncodeError> {
    if code != ReasonCode::Success || !props.is_empty() {
        s.u8(check_code(code, allowed, t)?);
        if !props.is_empty() {
            write_props(s, props, t)?;
        }
    }
    Ok(())
}

fn write_connect<S: Sink>(
    c: &Connect,
    version: ProtocolVersion,
    s: &mut S,
) -> Result<(), EncodeError> {
    let t = PacketType::Connect;
    if c.protocol_version != version {
        return Err(EncodeError::VersionMismatch {
            packet_version: c.protocol_version,
            version,
        });
    }
    let v5 = version == ProtocolVersion::V5;
    if !v5 && c.password.is_some() && c.username.is_none() {
        return Err(EncodeError::Invalid {
            packet: t,
            detail: "3.1.1 does not allow a password without a user name",
        });
    }
    s.u16(4);
    s.slice(b"MQTT");
    s.u8(version.level());
    let mut flags = u8::from(c.clean_start) << 1;
    if let Some(w) = &c.will {
        flags |= 0x04 | (w.qos as u8) << 3 | u8::from(w.retain) << 5;
    }
    if c.password.is_some() {
        flags |= 0x40;
    }
    if c.username.is_some() {
        flags |= 0x80;
    }
    s.u8(flags);
    s.u16(c.keep_alive);
    if v5 {
        write_props(s, &c.properties, t)?;
    }
    string(s, &c.client_id);
    if let Some(w) = &c.will {
        if v5 {
            w.properties.write(s, Context::Will)?;
        }
        if w.topic.is_empty() {
            return Err(EncodeError::Invalid {
                packet: t,
                detail: "empty will topic",
            });
        }
        string(s, &w.topic);
        binary(s, &w.payload, t, "will payload")?;
    }
    if let Some(u) = &c.username {
        string(s, u);
    }
    if let Some(p) = &c.password {
        binary(s, p, t, "password")?;
    }
    Ok(())
}
