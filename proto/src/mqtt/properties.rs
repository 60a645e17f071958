//! MQTT 5.0 properties (spec 2.2.2): the typed [`Properties`] set, [`PropertyId`], and the
//! table of which property may appear in which packet.
//!
//! One struct serves every packet: a property that is not allowed on a packet is rejected by
//! the decoder ([`DecodeError::PropertyNotAllowed`], a Protocol Error) and by the encoder
//! ([`EncodeError::PropertyNotAllowed`]). Properties that may appear once are `Option`s (a
//! second occurrence is a Protocol Error); user properties and subscription identifiers keep
//! their wire order in `Vec`s.

use std::ops::{Deref, DerefMut};

use bytes::Bytes;

use super::error::{DecodeError, EncodeError};
use super::ids::PacketType;
pub use super::ids::PropertyId;
use super::string::MqttString;
use super::topic;
use super::wire::{Counter, Reader, Sink, VBI_MAX};

/// A packet's MQTT 5.0 properties: no allocation while there are none, one boxed
/// [`PropertySet`] once any is set.
///
/// Almost every packet a broker handles carries no property at all (every 3.1.1 packet, most
/// v5 PUBLISHes and acks), yet the full set is ~400 bytes: inline, it made every decoded
/// [`super::packet::Packet`] ~470 bytes, copied at each move from the decoder to its handler
/// and dropped field by field. Boxed, a packet is a few words and an empty set costs nothing.
///
/// Reading a field goes through [`Deref`] (an unset `Properties` reads as the empty set);
/// writing one through [`DerefMut`], which allocates the set on the first write. Equality
/// compares the sets, so "none" equals an allocated empty set.
#[derive(Clone, Default)]
pub struct Properties(Option<Box<PropertySet>>);

/// The empty set an unset [`Properties`] reads as.
static EMPTY: PropertySet = PropertySet::EMPTY;

impl Deref for Properties {
    type Target = PropertySet;

    fn deref(&self) -> &PropertySet {
        self.0.as_deref().unwrap_or(&EMPTY)
    }
}

impl DerefMut for Properties {
    /// Allocates the set if none was: call it to write, not to read.
    fn deref_mut(&mut self) -> &mut PropertySet {
        self.0.get_or_insert_with(Box::default)
    }
}

impl PartialEq for Properties {
    fn eq(&self, other: &Properties) -> bool {
        **self == **other
    }
}

impl Eq for Properties {}

impl std::fmt::Debug for Properties {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (**self).fmt(f)
    }
}

impl From<PropertySet> for Properties {
    fn from(set: PropertySet) -> Properties {
        Properties(Some(Box::new(set)))
    }
}

impl Properties {
    /// The set, moved out (empty if none was set).
    pub fn into_set(self) -> PropertySet {
        self.0.map(|set| *set).unwrap_or_default()
    }

    /// True when no property is set.
    pub fn is_empty(&self) -> bool {
        self.0.as_deref().is_none_or(PropertySet::is_empty)
    }

    /// [`PropertySet::strip_diagnostics`], without allocating when there is nothing to strip.
    pub fn strip_diagnostics(&mut self) -> bool {
        self.0
            .as_deref_mut()
            .is_some_and(PropertySet::strip_diagnostics)
    }
}

/// Every MQTT 5.0 property. Unset fields are `None` / empty; [`PropertySet::default()`] is
/// "no properties". Packets hold it boxed, as [`Properties`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PropertySet {
    /// 0x01: `true` = payload is UTF-8 (PUBLISH, Will).
    pub payload_format_indicator: Option<bool>,
    /// 0x02: message lifetime in seconds (PUBLISH, Will).
    pub message_expiry_interval: Option<u32>,
    /// 0x03: MIME-like content type (PUBLISH, Will).
    pub content_type: Option<MqttString>,
    /// 0x08: topic name for a response (PUBLISH, Will).
    pub response_topic: Option<MqttString>,
    /// 0x09: request/response correlation (PUBLISH, Will).
    pub correlation_data: Option<Bytes>,
    /// 0x0B: subscription identifiers, 1..=268,435,455 (one in SUBSCRIBE, any number in
    /// PUBLISH from the server).
    pub subscription_identifiers: Vec<u32>,
    /// 0x11: session expiry in seconds (CONNECT, CONNACK, DISCONNECT).
    pub session_expiry_interval: Option<u32>,
    /// 0x12: client id assigned by the server (CONNACK).
    pub assigned_client_identifier: Option<MqttString>,
    /// 0x13: keep alive imposed by the server (CONNACK).
    pub server_keep_alive: Option<u16>,
    /// 0x15: enhanced authentication method (CONNECT, CONNACK, AUTH).
    pub authentication_method: Option<MqttString>,
    /// 0x16: enhanced authentication data (CONNECT, CONNACK, AUTH).
    pub authentication_data: Option<Bytes>,
    /// 0x17: client wants reason strings / user properties on failures (CONNECT).
    pub request_problem_information: Option<bool>,
    /// 0x18: delay before the Will is sent, in seconds (Will).
    pub will_delay_interval: Option<u32>,
    /// 0x19: client asks for Response Information (CONNECT).
    pub request_response_information: Option<bool>,
    /// 0x1A: basis for response topics (CONNACK).
    pub response_information: Option<MqttString>,
    /// 0x1C: another server to use (CONNACK, DISCONNECT).
    pub server_reference: Option<MqttString>,
    /// 0x1F: human-readable reason (acks, CONNACK, DISCONNECT, AUTH).
    pub reason_string: Option<MqttString>,
    /// 0x21: in-flight QoS 1/2 limit, non-zero (CONNECT, CONNACK).
    pub receive_maximum: Option<u16>,
    /// 0x22: highest topic alias accepted (CONNECT, CONNACK).
    pub topic_alias_maximum: Option<u16>,
    /// 0x23: topic alias, non-zero (PUBLISH).
    pub topic_alias: Option<u16>,
    /// 0x24: highest QoS the server supports, 0 or 1 when present (CONNACK).
    pub maximum_qos: Option<u8>,
    /// 0x25: retained messages supported (CONNACK).
    pub retain_available: Option<bool>,
    /// 0x26: user properties (name, value), order preserved (every packet but PINGs).
    pub user_properties: Vec<(MqttString, MqttString)>,
    /// 0x27: largest packet the sender accepts, non-zero (CONNECT, CONNACK).
    pub maximum_packet_size: Option<u32>,
    /// 0x28: wildcard subscriptions supported (CONNACK).
    pub wildcard_subscription_available: Option<bool>,
    /// 0x29: subscription identifiers supported (CONNACK).
    pub subscription_identifiers_available: Option<bool>,
    /// 0x2A: shared subscriptions supported (CONNACK).
    pub shared_subscription_available: Option<bool>,
}

const fn mask(ids: &[PropertyId]) -> u64 {
    let mut m = 0;
    let mut i = 0;
    while i < ids.len() {
        m |= ids[i].bit();
        i += 1;
    }
    m
}

use PropertyId as P;

const CONNECT: u64 = mask(&[
    P::SessionExpiryInterval,
    P::AuthenticationMethod,
    P::AuthenticationData,
    P::RequestProblemInformation,
    P::RequestResponseInformation,
    P::ReceiveMaximum,
    P::TopicAliasMaximum,
    P::UserProperty,
    P::MaximumPacketSize,
]);
const WILL: u64 = mask(&[
    P::PayloadFormatIndicator,
    P::MessageExpiryInterval,
    P::ContentType,
    P::ResponseTopic,
    P::CorrelationData,
    P::WillDelayInterval,
    P::UserProperty,
]);
const CONNACK: u64 = mask(&[
    P::SessionExpiryInterval,
    P::AssignedClientIdentifier,
    P::ServerKeepAlive,
    P::AuthenticationMethod,
    P::AuthenticationData,
    P::ResponseInformation,
    P::ServerReference,
    P::ReasonString,
    P::ReceiveMaximum,
    P::TopicAliasMaximum,
    P::MaximumQoS,
    P::RetainAvailable,
    P::UserProperty,
    P::MaximumPacketSize,
    P::WildcardSubscriptionAvailable,
    P::SubscriptionIdentifierAvailable,
    P::SharedSubscriptionAvailable,
]);
const PUBLISH: u64 = mask(&[
    P::PayloadFormatIndicator,
    P::MessageExpiryInterval,
    P::ContentType,
    P::ResponseTopic,
    P::CorrelationData,
    P::SubscriptionIdentifier,
    P::TopicAlias,
    P::UserProperty,
]);
const ACK: u64 = mask(&[P::ReasonString, P::UserProperty]);
const SUBSCRIBE: u64 = mask(&[P::SubscriptionIdentifier, P::UserProperty]);
const UNSUBSCRIBE: u64 = mask(&[P::UserProperty]);
const DISCONNECT: u64 = mask(&[
    P::SessionExpiryInterval,
    P::ReasonString,
    P::UserProperty,
    P::ServerReference,
]);
const AUTH: u64 = mask(&[
    P::AuthenticationMethod,
    P::AuthenticationData,
    P::ReasonString,
    P::UserProperty,
]);

/// Where a property list sits: a packet's variable header, or the Will in CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    /// The properties of this packet type.
    Packet(PacketType),
    /// The Will Properties of CONNECT.
    Will,
}

impl Context {
    /// Bit set of the properties allowed here.
    const fn allowed(self) -> u64 {
        match self {
            Context::Will => WILL,
            Context::Packet(t) => match t {
                PacketType::Connect => CONNECT,
                PacketType::ConnAck => CONNACK,
                PacketType::Publish => PUBLISH,
                PacketType::PubAck
                | PacketType::PubRec
                | PacketType::PubRel
                | PacketType::PubComp
                | PacketType::SubAck
                | PacketType::UnsubAck => ACK,
                PacketType::Subscribe => SUBSCRIBE,
                PacketType::Unsubscribe => UNSUBSCRIBE,
                PacketType::Disconnect => DISCONNECT,
                PacketType::Auth => AUTH,
                PacketType::PingReq | PacketType::PingResp => 0,
            },
        }
    }

    /// Whether `id` may appear here.
    pub const fn allows(self, id: PropertyId) -> bool {
        self.allowed() & id.bit() != 0
    }

    fn packet(self) -> PacketType {
        match self {
            Context::Packet(t) => t,
            Context::Will => PacketType::Connect,
        }
    }
}

impl PropertySet {
    /// No property set (what an unset [`Properties`] reads as).
    pub const EMPTY: PropertySet = PropertySet {
        payload_format_indicator: None,
        message_expiry_interval: None,
        content_type: None,
        response_topic: None,
        correlation_data: None,
        subscription_identifiers: Vec::new(),
        session_expiry_interval: None,
        assigned_client_identifier: None,
        server_keep_alive: None,
        authentication_method: None,
        authentication_data: None,
        request_problem_information: None,
        will_delay_interval: None,
        request_response_information: None,
        response_information: None,
        server_reference: None,
        reason_string: None,
        receive_maximum: None,
        topic_alias_maximum: None,
        topic_alias: None,
        maximum_qos: None,
        retain_available: None,
        user_properties: Vec::new(),
        maximum_packet_size: None,
        wildcard_subscription_available: None,
        subscription_identifiers_available: None,
        shared_subscription_available: None,
    };

    /// Removes the Reason String and User Properties: on acks, CONNACK, DISCONNECT and AUTH
    /// these are what a sender omits to fit the receiver's Maximum Packet Size (spec
    /// 3.1.2.11.4). Not for PUBLISH, whose user properties belong to the message (a PUBLISH
    /// that does not fit is dropped instead). Returns true if anything was removed.
    pub fn strip_diagnostics(&mut self) -> bool {
        let had = self.reason_string.is_some() || !self.user_properties.is_empty();
        self.reason_string = None;
        self.user_properties.clear();
        had
    }

    /// True when no property is set.
    pub fn is_empty(&self) -> bool {
        self.payload_format_indicator.is_none()
            && self.message_expiry_interval.is_none()
            && self.content_type.is_none()
            && self.response_topic.is_none()
            && self.correlation_data.is_none()
            && self.subscription_identifiers.is_empty()
            && self.session_expiry_interval.is_none()
            && self.assigned_client_identifier.is_none()
            && self.server_keep_alive.is_none()
            && self.authentication_method.is_none()
            && self.authentication_data.is_none()
            && self.request_problem_information.is_none()
            && self.will_delay_interval.is_none()
            && self.request_response_information.is_none()
            && self.response_information.is_none()
            && self.server_reference.is_none()
            && self.reason_string.is_none()
            && self.receive_maximum.is_none()
            && self.topic_alias_maximum.is_none()
            && self.topic_alias.is_none()
            && self.maximum_qos.is_none()
            && self.retain_available.is_none()
            && self.user_properties.is_empty()
            && self.maximum_packet_size.is_none()
            && self.wildcard_subscription_available.is_none()
            && self.subscription_identifiers_available.is_none()
            && self.shared_subscription_available.is_none()
    }

    /// Bit set of the property identifiers that are set.
    fn present_mask(&self) -> u64 {
        const fn bit(present: bool, id: PropertyId) -> u64 {
            (present as u64) << (id as u8)
        }
        bit(
            self.payload_format_indicator.is_some(),
            P::PayloadFormatIndicator,
        ) | bit(
            self.message_expiry_interval.is_some(),
            P::MessageExpiryInterval,
        ) | bit(self.content_type.is_some(), P::ContentType)
            | bit(self.response_topic.is_some(), P::ResponseTopic)
            | bit(self.correlation_data.is_some(), P::CorrelationData)
            | bit(
                !self.subscription_identifiers.is_empty(),
                P::SubscriptionIdentifier,
            )
            | bit(
                self.session_expiry_interval.is_some(),
                P::SessionExpiryInterval,
            )
            | bit(
                self.assigned_client_identifier.is_some(),
                P::AssignedClientIdentifier,
            )
            | bit(self.server_keep_alive.is_some(), P::ServerKeepAlive)
            | bit(
                self.authentication_method.is_some(),
                P::AuthenticationMethod,
            )
            | bit(self.authentication_data.is_some(), P::AuthenticationData)
            | bit(
                self.request_problem_information.is_some(),
                P::RequestProblemInformation,
            )
            | bit(self.will_delay_interval.is_some(), P::WillDelayInterval)
            | bit(
                self.request_response_information.is_some(),
                P::RequestResponseInformation,
            )
            | bit(self.response_information.is_some(), P::ResponseInformation)
            | bit(self.server_reference.is_some(), P::ServerReference)
            | bit(self.reason_string.is_some(), P::ReasonString)
            | bit(self.receive_maximum.is_some(), P::ReceiveMaximum)
            | bit(self.topic_alias_maximum.is_some(), P::TopicAliasMaximum)
            | bit(self.topic_alias.is_some(), P::TopicAlias)
            | bit(self.maximum_qos.is_some(), P::MaximumQoS)
            | bit(self.retain_available.is_some(), P::RetainAvailable)
            | bit(!self.user_properties.is_empty(), P::UserProperty)
            | bit(self.maximum_packet_size.is_some(), P::MaximumPacketSize)
            | bit(
                self.wildcard_subscription_available.is_some(),
                P::WildcardSubscriptionAvailable,
            )
            | bit(
                self.subscription_identifiers_available.is_some(),
                P::SubscriptionIdentifierAvailable,
            )
            | bit(
                self.shared_subscription_available.is_some(),
                P::SharedSubscriptionAvailable,
            )
    }

    /// The first property whose value the spec forbids (zero where non-zero is required,
    /// Maximum QoS above 1, subscription identifier out of range), as (id, value).
    fn bad_value(&self) -> Option<(PropertyId, u32)> {
        if self.receive_maximum == Some(0) {
            return Some((P::ReceiveMaximum, 0));
        }
        if self.maximum_packet_size == Some(0) {
            return Some((P::MaximumPacketSize, 0));
        }
        if self.topic_alias == Some(0) {
            return Some((P::TopicAlias, 0));
        }
        if let Some(q) = self.maximum_qos.filter(|q| *q > 1) {
            return Some((P::MaximumQoS, u32::from(q)));
        }
        self.subscription_identifiers
            .iter()
            .find(|id| **id == 0 || **id > VBI_MAX)
            .map(|id| (P::SubscriptionIdentifier, *id))
    }
}

impl Properties {
    /// Decodes a property list (length prefix included) from `r` for `ctx`; an empty list
    /// allocates nothing.
    pub(crate) fn read(r: &mut Reader, ctx: Context) -> Result<Properties, DecodeError> {
        let packet = r.packet;
        let len = r.vbi("property length")?;
        if len == 0 {
            return Ok(Properties::default());
        }
        let body = r.take(len as usize, "properties")?;
        let mut r = Reader::new(body, packet);
        let mut p = Properties::default();
        let mut seen: u64 = 0;
        let multi_ok = P::UserProperty.bit()
            | if ctx == Context::Packet(PacketType::Publish) {
                P::SubscriptionIdentifier.bit()
            } else {
                0
            };
        while r.remaining() > 0 {
            let raw = r.vbi("property identifier")?;
            let id = PropertyId::from_u32(raw)
                .ok_or(DecodeError::UnknownProperty { packet, id: raw })?;
            if !ctx.allows(id) {
                return Err(DecodeError::PropertyNotAllowed {
                    packet,
                    id,
                    will: ctx == Context::Will,
                });
            }
            if seen & id.bit() != 0 && multi_ok & id.bit() == 0 {
                return Err(DecodeError::DuplicateProperty { packet, id });
            }
            seen |= id.bit();
            let flag = |r: &mut Reader, field| -> Result<bool, DecodeError> {
                match r.u8(field)? {
                    0 => Ok(false),
                    1 => Ok(true),
                    v => Err(DecodeError::InvalidPropertyValue {
                        packet,
                        id,
                        value: u32::from(v),
                    }),
                }
            };
            match id {
                P::PayloadFormatIndicator => {
                    p.payload_format_indicator = Some(flag(&mut r, "payload format indicator")?)
                }
                P::MessageExpiryInterval => {
                    p.message_expiry_interval = Some(r.u32("message expiry interval")?)
                }
                P::ContentType => p.content_type = Some(r.string("content type")?),
                P::ResponseTopic => {
                    let t = r.string("response topic")?;
                    if topic::validate_name(&t).is_err() {
                        return Err(DecodeError::Protocol {
                            packet,
                            detail: "response topic is not a valid topic name",
                        });
                    }
                    p.response_topic = Some(t)
                }
                P::CorrelationData => p.correlation_data = Some(r.binary("correlation data")?),
                P::SubscriptionIdentifier => {
                    let v = r.vbi("subscription identifier")?;
                    p.subscription_identifiers.push(v)
                }
                P::SessionExpiryInterval => {
                    p.session_expiry_interval = Some(r.u32("session expiry interval")?)
                }
                P::AssignedClientIdentifier => {
                    p.assigned_client_identifier = Some(r.string("assigned client identifier")?)
                }
                P::ServerKeepAlive => p.server_keep_alive = Some(r.u16("server keep alive")?),
                P::AuthenticationMethod => {
                    p.authentication_method = Some(r.string("authentication method")?)
                }
                P::AuthenticationData => {
                    p.authentication_data = Some(r.binary("authentication data")?)
                }
                P::RequestProblemInformation => {
                    p.request_problem_information =
                        Some(flag(&mut r, "request problem information")?)
                }
                P::WillDelayInterval => p.will_delay_interval = Some(r.u32("will delay interval")?),
                P::RequestResponseInformation => {
                    p.request_response_information =
                        Some(flag(&mut r, "request response information")?)
                }
                P::ResponseInformation => {
                    p.response_information = Some(r.string("response information")?)
                }
                P::ServerReference => p.server_reference = Some(r.string("server reference")?),
                P::ReasonString => p.reason_string = Some(r.string("reason string")?),
                P::ReceiveMaximum => p.receive_maximum = Some(r.u16("receive maximum")?),
                P::TopicAliasMaximum => p.topic_alias_maximum = Some(r.u16("topic alias maximum")?),
                P::TopicAlias => p.topic_alias = Some(r.u16("topic alias")?),
                P::MaximumQoS => p.maximum_qos = Some(r.u8("maximum qos")?),
                P::RetainAvailable => p.retain_available = Some(flag(&mut r, "retain available")?),
                P::UserProperty => {
                    let k = r.string("user property name")?;
                    let v = r.string("user property value")?;
                    p.user_properties.push((k, v))
                }
                P::MaximumPacketSize => p.maximum_packet_size = Some(r.u32("maximum packet size")?),
                P::WildcardSubscriptionAvailable => {
                    p.wildcard_subscription_available =
                        Some(flag(&mut r, "wildcard subscription available")?)
                }
                P::SubscriptionIdentifierAvailable => {
                    p.subscription_identifiers_available =
                        Some(flag(&mut r, "subscription identifier available")?)
                }
                P::SharedSubscriptionAvailable => {
                    p.shared_subscription_available =
                        Some(flag(&mut r, "shared subscription available")?)
                }
            }
        }
        if let Some((id, value)) = p.bad_value() {
            return Err(DecodeError::InvalidPropertyValue { packet, id, value });
        }
        Ok(p)
    }

    /// Writes the property list with its length prefix (see [`PropertySet::write`]).
    pub(crate) fn write<S: Sink>(&self, s: &mut S, ctx: Context) -> Result<(), EncodeError> {
        match self.0.as_deref() {
            None => {
                s.vbi(0);
                Ok(())
            }
            Some(set) => set.write(s, ctx),
        }
    }
}

impl PropertySet {
    /// Checks that these properties may be encoded in `ctx`.
    fn check_encodable(&self, ctx: Context) -> Result<(), EncodeError> {
        let present = self.present_mask();
        let extra = present & !ctx.allowed();
        if extra != 0 {
            let bit = extra.trailing_zeros();
            let id = PropertyId::from_u32(bit).unwrap_or(P::UserProperty);
            return Err(EncodeError::PropertyNotAllowed {
                packet: ctx.packet(),
                id,
            });
        }
        if ctx != Context::Packet(PacketType::Publish) && self.subscription_identifiers.len() > 1 {
            return Err(EncodeError::PropertyNotAllowed {
                packet: ctx.packet(),
                id: P::SubscriptionIdentifier,
            });
        }
        if let Some((id, value)) = self.bad_value() {
            return Err(EncodeError::InvalidPropertyValue {
                packet: ctx.packet(),
                id,
                value,
            });
        }
        Ok(())
    }

    /// Writes the property list with its length prefix, after checking every property is
    /// allowed in `ctx` and has a legal value.
    pub(crate) fn write<S: Sink>(&self, s: &mut S, ctx: Context) -> Result<(), EncodeError> {
        self.check_encodable(ctx)?;
        let mut c = Counter::default();
        self.write_body(&mut c, ctx)?;
        let len =
            u32::try_from(c.0)
                .ok()
                .filter(|l| *l <= VBI_MAX)
                .ok_or(EncodeError::TooLarge {
                    packet: ctx.packet(),
                    what: "property list",
                    len: c.0,
                })?;
        s.vbi(len);
        self.write_body(s, ctx)
    }

    fn write_body<S: Sink>(&self, s: &mut S, ctx: Context) -> Result<(), EncodeError> {
        let packet = ctx.packet();
        let byte = |s: &mut S, id: PropertyId, v: u8| {
            s.u8(id as u8);
            s.u8(v);
        };
        let string = |s: &mut S, id: PropertyId, v: &MqttString| {
            s.u8(id as u8);
            s.u16(v.len() as u16);
            s.slice(v.as_bytes());
        };
        let binary = |s: &mut S, id: PropertyId, v: &Bytes, what| -> Result<(), EncodeError> {
            let len = u16::try_from(v.len()).map_err(|_| EncodeError::TooLarge {
                packet,
                what,
                len: v.len(),
            })?;
            s.u8(id as u8);
            s.u16(len);
            s.slice(v);
            Ok(())
        };
        if let Some(v) = self.payload_format_indicator {
            byte(s, P::PayloadFormatIndicator, u8::from(v));
        }
        if let Some(v) = self.message_expiry_interval {
            s.u8(P::MessageExpiryInterval as u8);
            s.u32(v);
        }
        if let Some(v) = &self.content_type {
            string(s, P::ContentType, v);
        }
        if let Some(v) = &self.response_topic {
            string(s, P::ResponseTopic, v);
        }
        if let Some(v) = &self.correlation_data {
            binary(s, P::CorrelationData, v, "correlation data")?;
        }
        for v in &self.subscription_identifiers {
            s.u8(P::SubscriptionIdentifier as u8);
            s.vbi(*v);
        }
        if let Some(v) = self.session_expiry_interval {
            s.u8(P::SessionExpiryInterval as u8);
            s.u32(v);
        }
        if let Some(v) = &self.assigned_client_identifier {
            string(s, P::AssignedClientIdentifier, v);
        }
        if let Some(v) = self.server_keep_alive {
            s.u8(P::ServerKeepAlive as u8);
            s.u16(v);
        }
        if let Some(v) = &self.authentication_method {
            string(s, P::AuthenticationMethod, v);
        }
        if let Some(v) = &self.authentication_data {
            binary(s, P::AuthenticationData, v, "authentication data")?;
        }
        if let Some(v) = self.request_problem_information {
            byte(s, P::RequestProblemInformation, u8::from(v));
        }
        if let Some(v) = self.will_delay_interval {
            s.u8(P::WillDelayInterval as u8);
            s.u32(v);
        }
        if let Some(v) = self.request_response_information {
            byte(s, P::RequestResponseInformation, u8::from(v));
        }
        if let Some(v) = &self.response_information {
            string(s, P::ResponseInformation, v);
        }
        if let Some(v) = &self.server_reference {
            string(s, P::ServerReference, v);
        }
        if let Some(v) = &self.reason_string {
            string(s, P::ReasonString, v);
        }
        if let Some(v) = self.receive_maximum {
            s.u8(P::ReceiveMaximum as u8);
            s.u16(v);
        }
        if let Some(v) = self.topic_alias_maximum {
            s.u8(P::TopicAliasMaximum as u8);
            s.u16(v);
        }
        if let Some(v) = self.topic_alias {
            s.u8(P::TopicAlias as u8);
            s.u16(v);
        }
        if let Some(v) = self.maximum_qos {
            byte(s, P::MaximumQoS, v);
        }
        if let Some(v) = self.retain_available {
            byte(s, P::RetainAvailable, u8::from(v));
        }
        for (k, v) in &self.user_properties {
            s.u8(P::UserProperty as u8);
            s.u16(k.len() as u16);
            s.slice(k.as_bytes());
            s.u16(v.len() as u16);
            s.slice(v.as_bytes());
        }
        if let Some(v) = self.maximum_packet_size {
            s.u8(P::MaximumPacketSize as u8);
            s.u32(v);
        }
        if let Some(v) = self.wildcard_subscription_available {
            byte(s, P::WildcardSubscriptionAvailable, u8::from(v));
        }
        if let Some(v) = self.subscription_identifiers_available {
            byte(s, P::SubscriptionIdentifierAvailable, u8::from(v));
        }
        if let Some(v) = self.shared_subscription_available {
            byte(s, P::SharedSubscriptionAvailable, u8::from(v));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    fn decode(list: &[u8], ctx: Context) -> Properties {
        let mut r = Reader::new(Bytes::copy_from_slice(list), PacketType::Publish);
        Properties::read(&mut r, ctx).unwrap()
    }

    /// An empty list, the common case, allocates nothing; reading an unset field does not
    /// either; one property allocates the set and holds it.
    #[test]
    fn only_a_set_property_allocates() {
        let ctx = Context::Packet(PacketType::Publish);
        let none = decode(&[0], ctx);
        assert!(none.0.is_none());
        assert_eq!(none.topic_alias, None);
        assert!(none.user_properties.is_empty() && none.is_empty());
        assert!(none.0.is_none(), "reading allocated the set");
        let one = decode(&[3, P::TopicAlias as u8, 0, 7], ctx);
        assert_eq!(one.topic_alias, Some(7));
        assert!(one.0.is_some() && !one.is_empty());
    }

    /// "None" and an allocated empty set are the same properties: equal, empty, and written
    /// as the same single zero byte.
    #[test]
    fn unset_and_allocated_empty_are_equal() {
        let unset = Properties::default();
        let empty = Properties::from(PropertySet::default());
        assert!(empty.0.is_some());
        assert_eq!(unset, empty);
        assert!(empty.is_empty());
        let ctx = Context::Packet(PacketType::PubAck);
        let (mut a, mut b) = (BytesMut::new(), BytesMut::new());
        unset.write(&mut a, ctx).unwrap();
        empty.write(&mut b, ctx).unwrap();
        assert_eq!((&a[..], &b[..]), (&[0u8][..], &[0u8][..]));
        let set = PropertySet {
            reason_string: Some(MqttString::try_from("why").unwrap()),
            ..PropertySet::default()
        };
        assert_ne!(unset, Properties::from(set));
    }

    /// Stripping diagnostics from unset properties leaves them unallocated; from a set it
    /// removes the reason string and user properties, as before.
    #[test]
    fn strip_diagnostics_on_unset_allocates_nothing() {
        let mut unset = Properties::default();
        assert!(!unset.strip_diagnostics());
        assert!(unset.0.is_none());
        let mut set = Properties::from(PropertySet {
            reason_string: Some(MqttString::try_from("why").unwrap()),
            topic_alias_maximum: Some(3),
            ..PropertySet::default()
        });
        assert!(set.strip_diagnostics());
        assert_eq!(set.reason_string, None);
        assert_eq!(set.topic_alias_maximum, Some(3));
        assert_eq!(set.into_set().topic_alias_maximum, Some(3));
    }
}
