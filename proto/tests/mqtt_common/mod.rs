//! Proptest strategies producing valid MQTT packets for either protocol version, shared by
//! the round-trip, differential and robustness tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use bytes::{Bytes, BytesMut};
use edge_proto::mqtt::properties::Context;
use edge_proto::mqtt::reason;
use edge_proto::mqtt::*;
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;

/// Any MQTT string (unicode, no U+0000), short.
pub fn mstring() -> impl Strategy<Value = MqttString> {
    "[a-zA-Z0-9 _./é€😀-]{0,12}".prop_map(|s| MqttString::try_from(s).unwrap())
}

/// A non-empty string (rumqttc maps empty user name/password to "absent").
pub fn mstring_nonempty() -> impl Strategy<Value = MqttString> {
    "[a-zA-Z0-9_é€-]{1,12}".prop_map(|s| MqttString::try_from(s).unwrap())
}

/// A valid topic name: non-empty, no wildcards.
pub fn topic_name() -> impl Strategy<Value = MqttString> {
    "[a-z0-9$é€_-]{1,6}(/[a-z0-9é_-]{0,6}){0,3}".prop_map(|s| MqttString::try_from(s).unwrap())
}

/// A valid topic filter (may contain `+` and a trailing `#`).
pub fn topic_filter() -> impl Strategy<Value = MqttString> {
    "([a-z0-9é_-]{1,5}|\\+)(/([a-z0-9é_-]{0,5}|\\+)){0,3}(/#)?"
        .prop_map(|s| MqttString::try_from(s).unwrap())
}

pub fn bin(max: usize) -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

pub fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

pub fn code_from(list: &'static [u8]) -> impl Strategy<Value = ReasonCode> {
    proptest::sample::select(list).prop_map(|c| ReasonCode::from_u8(c).unwrap())
}

/// A full property set with every property possibly present; [`restrict`] trims it to a
/// context.
pub fn any_properties() -> impl Strategy<Value = Properties> {
    let a = (
        option::of(any::<bool>()),
        option::of(any::<u32>()),
        option::of(mstring()),
        option::of(topic_name()),
        option::of(bin(16)),
        vec(1u32..=268_435_455, 0..3),
        option::of(any::<u32>()),
        option::of(mstring()),
        option::of(any::<u16>()),
        option::of(mstring()),
    );
    let b = (
        option::of(bin(16)),
        option::of(any::<bool>()),
        option::of(any::<u32>()),
        option::of(any::<bool>()),
        option::of(mstring()),
        option::of(mstring()),
        option::of(mstring()),
        option::of(1u16..),
        option::of(any::<u16>()),
        option::of(1u16..),
    );
    let c = (
        option::of(0u8..=1),
        option::of(any::<bool>()),
        vec((mstring(), mstring()), 0..3),
        option::of(1u32..),
        option::of(any::<bool>()),
        option::of(any::<bool>()),
        option::of(any::<bool>()),
    );
    (a, b, c).prop_map(|(a, b, c)| {
        PropertySet {
            payload_format_indicator: a.0,
            message_expiry_interval: a.1,
            content_type: a.2,
            response_topic: a.3,
            correlation_data: a.4,
            subscription_identifiers: a.5,
            session_expiry_interval: a.6,
            assigned_client_identifier: a.7,
            server_keep_alive: a.8,
            authentication_method: a.9,
            authentication_data: b.0,
            request_problem_information: b.1,
            will_delay_interval: b.2,
            request_response_information: b.3,
            response_information: b.4,
            server_reference: b.5,
            reason_string: b.6,
            receive_maximum: b.7,
            topic_alias_maximum: b.8,
            topic_alias: b.9,
            maximum_qos: c.0,
            retain_available: c.1,
            user_properties: c.2,
            maximum_packet_size: c.3,
            wildcard_subscription_available: c.4,
            subscription_identifiers_available: c.5,
            shared_subscription_available: c.6,
        }
        .into()
    })
}

/// Clears every property `ctx` does not allow (and keeps one subscription identifier
/// outside PUBLISH).
pub fn restrict(mut p: Properties, ctx: Context) -> Properties {
    use PropertyId as P;
    macro_rules! keep {
        ($field:ident, $id:expr) => {
            if !ctx.allows($id) {
                p.$field = Default::default();
            }
        };
    }
    keep!(payload_format_indicator, P::PayloadFormatIndicator);
    keep!(message_expiry_interval, P::MessageExpiryInterval);
    keep!(content_type, P::ContentType);
    keep!(response_topic, P::ResponseTopic);
    keep!(correlation_data, P::CorrelationData);
    keep!(subscription_identifiers, P::SubscriptionIdentifier);
    keep!(session_expiry_interval, P::SessionExpiryInterval);
    keep!(assigned_client_identifier, P::AssignedClientIdentifier);
    keep!(server_keep_alive, P::ServerKeepAlive);
    keep!(authentication_method, P::AuthenticationMethod);
    keep!(authentication_data, P::AuthenticationData);
    keep!(request_problem_information, P::RequestProblemInformation);
    keep!(will_delay_interval, P::WillDelayInterval);
    keep!(request_response_information, P::RequestResponseInformation);
    keep!(response_information, P::ResponseInformation);
    keep!(server_reference, P::ServerReference);
    keep!(reason_string, P::ReasonString);
    keep!(receive_maximum, P::ReceiveMaximum);
    keep!(topic_alias_maximum, P::TopicAliasMaximum);
    keep!(topic_alias, P::TopicAlias);
    keep!(maximum_qos, P::MaximumQoS);
    keep!(retain_available, P::RetainAvailable);
    keep!(user_properties, P::UserProperty);
    keep!(maximum_packet_size, P::MaximumPacketSize);
    keep!(
        wildcard_subscription_available,
        P::WildcardSubscriptionAvailable
    );
    keep!(
        subscription_identifiers_available,
        P::SubscriptionIdentifierAvailable
    );
    keep!(
        shared_subscription_available,
        P::SharedSubscriptionAvailable
    );
    if ctx != Context::Packet(PacketType::Publish) {
        p.subscription_identifiers.truncate(1);
    }
    p
}

/// Properties for `ctx`, or none at all in 3.1.1.
pub fn props(v: ProtocolVersion, ctx: Context) -> BoxedStrategy<Properties> {
    match v {
        ProtocolVersion::V311 => Just(Properties::default()).boxed(),
        ProtocolVersion::V5 => prop_oneof![
            1 => Just(Properties::default()),
            3 => any_properties().prop_map(move |p| restrict(p, ctx)),
        ]
        .boxed(),
    }
}

fn pctx(t: PacketType) -> Context {
    Context::Packet(t)
}

pub fn will(v: ProtocolVersion) -> impl Strategy<Value = Will> {
    (
        topic_name(),
        bin(32),
        qos(),
        any::<bool>(),
        props(v, Context::Will),
    )
        .prop_map(|(topic, payload, qos, retain, properties)| Will {
            topic,
            payload,
            qos,
            retain,
            properties,
        })
}

pub fn connect(v: ProtocolVersion) -> impl Strategy<Value = Connect> {
    (
        any::<bool>(),
        any::<u16>(),
        mstring(),
        option::of(will(v)),
        option::of(mstring()),
        option::of(bin(16)),
        props(v, pctx(PacketType::Connect)),
    )
        .prop_map(
            move |(clean_start, keep_alive, client_id, will, username, password, properties)| {
                // 3.1.1 forbids a password without a user name.
                let password = if v == ProtocolVersion::V311 && username.is_none() {
                    None
                } else {
                    password
                };
                Connect {
                    protocol_version: v,
                    clean_start,
                    keep_alive,
                    client_id,
                    will,
                    username,
                    password,
                    properties,
                }
            },
        )
}

pub fn connack(v: ProtocolVersion) -> BoxedStrategy<ConnAck> {
    let codes: &'static [u8] = match v {
        ProtocolVersion::V311 => &[0x00, 0x84, 0x85, 0x88, 0x86, 0x87],
        ProtocolVersion::V5 => reason::CONNACK,
    };
    (
        any::<bool>(),
        code_from(codes),
        props(v, pctx(PacketType::ConnAck)),
    )
        .prop_map(|(session_present, reason_code, properties)| ConnAck {
            session_present,
            reason_code,
            properties,
        })
        .boxed()
}

pub fn publish(v: ProtocolVersion) -> impl Strategy<Value = Publish> {
    (
        qos(),
        any::<bool>(),
        any::<bool>(),
        topic_name(),
        1u16..,
        props(v, pctx(PacketType::Publish)),
        bin(64),
    )
        .prop_map(
            |(qos, dup, retain, topic, id, properties, payload)| Publish {
                dup: dup && qos != QoS::AtMostOnce,
                qos,
                retain,
                topic,
                packet_id: (qos != QoS::AtMostOnce).then_some(id),
                properties,
                payload,
            },
        )
}

/// (packet id, reason code, properties) for a PUBACK-like packet.
pub fn pub_response(
    v: ProtocolVersion,
    t: PacketType,
    codes: &'static [u8],
) -> BoxedStrategy<(u16, ReasonCode, Properties)> {
    let code = match v {
        ProtocolVersion::V311 => Just(ReasonCode::Success).boxed(),
        ProtocolVersion::V5 => code_from(codes).boxed(),
    };
    (1u16.., code, props(v, pctx(t))).boxed()
}

pub fn sub_options(v: ProtocolVersion) -> BoxedStrategy<SubscriptionOptions> {
    match v {
        ProtocolVersion::V311 => qos()
            .prop_map(|qos| SubscriptionOptions {
                qos,
                ..Default::default()
            })
            .boxed(),
        ProtocolVersion::V5 => (
            qos(),
            any::<bool>(),
            any::<bool>(),
            prop_oneof![
                Just(RetainHandling::SendAtSubscribe),
                Just(RetainHandling::SendAtSubscribeIfNew),
                Just(RetainHandling::DoNotSend)
            ],
        )
            .prop_map(
                |(qos, no_local, retain_as_published, retain_handling)| SubscriptionOptions {
                    qos,
                    no_local,
                    retain_as_published,
                    retain_handling,
                },
            )
            .boxed(),
    }
}

pub fn subscribe(v: ProtocolVersion) -> impl Strategy<Value = Subscribe> {
    (
        1u16..,
        vec(
            (topic_filter(), sub_options(v))
                .prop_map(|(filter, options)| SubscribeFilter { filter, options }),
            1..4,
        ),
        props(v, pctx(PacketType::Subscribe)),
    )
        .prop_map(|(packet_id, filters, properties)| Subscribe {
            packet_id,
            filters,
            properties,
        })
}

pub fn suback(v: ProtocolVersion) -> impl Strategy<Value = SubAck> {
    let codes: &'static [u8] = match v {
        ProtocolVersion::V311 => &[0x00, 0x01, 0x02, 0x80],
        ProtocolVersion::V5 => reason::SUBACK,
    };
    (
        1u16..,
        vec(code_from(codes), 1..5),
        props(v, pctx(PacketType::SubAck)),
    )
        .prop_map(|(packet_id, reason_codes, properties)| SubAck {
            packet_id,
            reason_codes,
            properties,
        })
}

pub fn unsubscribe(v: ProtocolVersion) -> impl Strategy<Value = Unsubscribe> {
    (
        1u16..,
        vec(topic_filter(), 1..4),
        props(v, pctx(PacketType::Unsubscribe)),
    )
        .prop_map(|(packet_id, filters, properties)| Unsubscribe {
            packet_id,
            filters,
            properties,
        })
}

pub fn unsuback(v: ProtocolVersion) -> impl Strategy<Value = UnsubAck> {
    let n = if v == ProtocolVersion::V5 { 1..5 } else { 0..1 };
    (
        1u16..,
        vec(code_from(reason::UNSUBACK), n),
        props(v, pctx(PacketType::UnsubAck)),
    )
        .prop_map(|(packet_id, reason_codes, properties)| UnsubAck {
            packet_id,
            reason_codes,
            properties,
        })
}

pub fn disconnect(v: ProtocolVersion) -> BoxedStrategy<Disconnect> {
    match v {
        ProtocolVersion::V311 => Just(Disconnect::default()).boxed(),
        ProtocolVersion::V5 => (
            code_from(reason::DISCONNECT),
            props(v, pctx(PacketType::Disconnect)),
        )
            .prop_map(|(reason_code, properties)| Disconnect {
                reason_code,
                properties,
            })
            .boxed(),
    }
}

pub fn auth() -> impl Strategy<Value = Auth> {
    (
        code_from(reason::AUTH),
        props(ProtocolVersion::V5, pctx(PacketType::Auth)),
    )
        .prop_map(|(reason_code, properties)| Auth {
            reason_code,
            properties,
        })
}

/// Any valid packet for `v` (AUTH only in v5).
pub fn packet(v: ProtocolVersion) -> BoxedStrategy<Packet> {
    let common = prop_oneof![
        connect(v).prop_map(|c| Packet::Connect(Box::new(c))),
        connack(v).prop_map(Packet::ConnAck),
        publish(v).prop_map(Packet::Publish),
        pub_response(v, PacketType::PubAck, reason::PUBACK).prop_map(
            |(packet_id, reason_code, properties)| Packet::PubAck(PubAck {
                packet_id,
                reason_code,
                properties
            })
        ),
        pub_response(v, PacketType::PubRec, reason::PUBACK).prop_map(
            |(packet_id, reason_code, properties)| Packet::PubRec(PubRec {
                packet_id,
                reason_code,
                properties
            })
        ),
        pub_response(v, PacketType::PubRel, reason::PUBREL).prop_map(
            |(packet_id, reason_code, properties)| Packet::PubRel(PubRel {
                packet_id,
                reason_code,
                properties
            })
        ),
        pub_response(v, PacketType::PubComp, reason::PUBREL).prop_map(
            |(packet_id, reason_code, properties)| Packet::PubComp(PubComp {
                packet_id,
                reason_code,
                properties
            })
        ),
        subscribe(v).prop_map(Packet::Subscribe),
        suback(v).prop_map(Packet::SubAck),
        unsubscribe(v).prop_map(Packet::Unsubscribe),
        unsuback(v).prop_map(Packet::UnsubAck),
        Just(Packet::PingReq),
        Just(Packet::PingResp),
        disconnect(v).prop_map(Packet::Disconnect),
    ];
    match v {
        ProtocolVersion::V311 => common.boxed(),
        ProtocolVersion::V5 => {
            prop_oneof![14 => common, 1 => auth().prop_map(Packet::Auth)].boxed()
        }
    }
}

pub fn version() -> impl Strategy<Value = ProtocolVersion> {
    prop_oneof![Just(ProtocolVersion::V311), Just(ProtocolVersion::V5)]
}

/// Encodes with our encoder, panicking on error.
pub fn enc(p: &Packet, v: ProtocolVersion) -> BytesMut {
    let mut out = BytesMut::new();
    let n = encode(p, v, &mut out).unwrap();
    assert_eq!(n, out.len());
    out
}

/// Re-encodes a decoded packet (a CONNECT in the version it names) for consistency checks.
pub fn reenc(p: &Packet, v: ProtocolVersion) -> BytesMut {
    match p {
        Packet::Connect(c) => enc(p, c.protocol_version),
        _ => enc(p, v),
    }
}
