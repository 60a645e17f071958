//! The fuzz seed corpus (`fuzz/corpus/mqtt_decode/`): one valid frame per packet kind and
//! version. This test checks every committed seed still decodes to the packet it was made
//! from; `MQTT_WRITE_CORPUS=1 cargo test -p edge-proto --test mqtt_corpus` rewrites them.

// Test helpers outside #[test] fns: panicking on a broken invariant is the point.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use bytes::{Bytes, BytesMut};
use edge_proto::mqtt::*;

fn t(s: &'static str) -> MqttString {
    MqttString::from_static(s).unwrap()
}

fn rich_props() -> Properties {
    PropertySet {
        user_properties: vec![(t("site"), t("gw-01"))],
        reason_string: Some(t("because")),
        ..PropertySet::default()
    }
    .into()
}

fn seeds() -> Vec<(&'static str, ProtocolVersion, Packet)> {
    use ProtocolVersion::{V5, V311};
    let will = Will {
        topic: t("status/s1"),
        payload: Bytes::from_static(b"offline"),
        qos: QoS::AtLeastOnce,
        retain: true,
        properties: Properties::default(),
    };
    let connect = |v: ProtocolVersion, props: Properties, will_props: Properties| {
        Packet::Connect(Box::new(Connect {
            protocol_version: v,
            clean_start: true,
            keep_alive: 30,
            client_id: t("s1"),
            will: Some(Will {
                properties: will_props,
                ..will.clone()
            }),
            username: Some(t("user")),
            password: Some(Bytes::from_static(b"secret")),
            properties: props,
        }))
    };
    let publish = |qos: QoS, props: Properties| {
        Packet::Publish(Publish {
            dup: false,
            qos,
            retain: false,
            topic: t("sensors/s1/temperature"),
            packet_id: (qos != QoS::AtMostOnce).then_some(7),
            properties: props,
            payload: Bytes::from_static(b"21.5"),
        })
    };
    let connect_props = PropertySet {
        session_expiry_interval: Some(60),
        receive_maximum: Some(10),
        maximum_packet_size: Some(65_536),
        topic_alias_maximum: Some(8),
        authentication_method: Some(t("SCRAM-SHA-256")),
        ..PropertySet::default()
    }
    .into();
    let will_props = PropertySet {
        will_delay_interval: Some(5),
        payload_format_indicator: Some(true),
        ..PropertySet::default()
    }
    .into();
    let publish_props = PropertySet {
        topic_alias: Some(1),
        message_expiry_interval: Some(3600),
        content_type: Some(t("text/plain")),
        response_topic: Some(t("replies/s1")),
        correlation_data: Some(Bytes::from_static(b"\x01\x02")),
        subscription_identifiers: vec![3],
        user_properties: vec![(t("unit"), t("C"))],
        ..PropertySet::default()
    }
    .into();
    let connack_props = PropertySet {
        assigned_client_identifier: Some(t("auto-1")),
        maximum_qos: Some(1),
        retain_available: Some(true),
        shared_subscription_available: Some(true),
        server_keep_alive: Some(60),
        ..PropertySet::default()
    }
    .into();
    let subscribe = |v: ProtocolVersion, props: Properties| {
        let mut options = SubscriptionOptions {
            qos: QoS::AtLeastOnce,
            ..Default::default()
        };
        if v == V5 {
            options.no_local = true;
            options.retain_handling = RetainHandling::DoNotSend;
        }
        Packet::Subscribe(Subscribe {
            packet_id: 1,
            filters: vec![
                SubscribeFilter {
                    filter: t("sensors/+/temperature"),
                    options,
                },
                SubscribeFilter {
                    filter: t("$share/g/alerts/#"),
                    options,
                },
            ],
            properties: props,
        })
    };
    let mut out = vec![
        (
            "v311-connect",
            V311,
            connect(V311, Properties::default(), Properties::default()),
        ),
        ("v5-connect", V5, connect(V5, connect_props, will_props)),
        (
            "v311-connack",
            V311,
            Packet::ConnAck(ConnAck {
                session_present: true,
                reason_code: ReasonCode::Success,
                properties: Properties::default(),
            }),
        ),
        (
            "v5-connack",
            V5,
            Packet::ConnAck(ConnAck {
                session_present: false,
                reason_code: ReasonCode::Success,
                properties: connack_props,
            }),
        ),
        (
            "v5-connack-refused",
            V5,
            Packet::ConnAck(ConnAck {
                session_present: false,
                reason_code: ReasonCode::Banned,
                properties: Properties::default(),
            }),
        ),
        (
            "v311-publish-qos0",
            V311,
            publish(QoS::AtMostOnce, Properties::default()),
        ),
        (
            "v311-publish-qos2",
            V311,
            publish(QoS::ExactlyOnce, Properties::default()),
        ),
        (
            "v5-publish-qos1",
            V5,
            publish(QoS::AtLeastOnce, publish_props),
        ),
        (
            "v311-subscribe",
            V311,
            subscribe(V311, Properties::default()),
        ),
        (
            "v5-subscribe",
            V5,
            subscribe(
                V5,
                PropertySet {
                    subscription_identifiers: vec![3],
                    ..PropertySet::default()
                }
                .into(),
            ),
        ),
        (
            "v311-suback",
            V311,
            Packet::SubAck(SubAck {
                packet_id: 1,
                reason_codes: vec![ReasonCode::GrantedQoS1, ReasonCode::UnspecifiedError],
                properties: Properties::default(),
            }),
        ),
        (
            "v5-suback",
            V5,
            Packet::SubAck(SubAck {
                packet_id: 1,
                reason_codes: vec![ReasonCode::GrantedQoS1, ReasonCode::TopicFilterInvalid],
                properties: rich_props(),
            }),
        ),
        (
            "v311-unsubscribe",
            V311,
            Packet::Unsubscribe(Unsubscribe {
                packet_id: 2,
                filters: vec![t("a/b"), t("c/#")],
                properties: Properties::default(),
            }),
        ),
        (
            "v5-unsubscribe",
            V5,
            Packet::Unsubscribe(Unsubscribe {
                packet_id: 2,
                filters: vec![t("a/b")],
                properties: PropertySet {
                    user_properties: vec![(t("k"), t("v"))],
                    ..PropertySet::default()
                }
                .into(),
            }),
        ),
        (
            "v311-unsuback",
            V311,
            Packet::UnsubAck(UnsubAck {
                packet_id: 2,
                reason_codes: vec![],
                properties: Properties::default(),
            }),
        ),
        (
            "v5-unsuback",
            V5,
            Packet::UnsubAck(UnsubAck {
                packet_id: 2,
                reason_codes: vec![ReasonCode::Success, ReasonCode::NoSubscriptionExisted],
                properties: rich_props(),
            }),
        ),
        ("v311-pingreq", V311, Packet::PingReq),
        ("v311-pingresp", V311, Packet::PingResp),
        (
            "v311-disconnect",
            V311,
            Packet::Disconnect(Disconnect::default()),
        ),
        (
            "v5-disconnect",
            V5,
            Packet::Disconnect(Disconnect {
                reason_code: ReasonCode::ServerShuttingDown,
                properties: PropertySet {
                    server_reference: Some(t("other:1883")),
                    session_expiry_interval: Some(0),
                    ..PropertySet::default()
                }
                .into(),
            }),
        ),
        (
            "v5-auth",
            V5,
            Packet::Auth(Auth {
                reason_code: ReasonCode::ContinueAuthentication,
                properties: PropertySet {
                    authentication_method: Some(t("SCRAM-SHA-256")),
                    authentication_data: Some(Bytes::from_static(b"nonce")),
                    ..PropertySet::default()
                }
                .into(),
            }),
        ),
    ];
    for (v, code) in [
        (V311, ReasonCode::Success),
        (V5, ReasonCode::NoMatchingSubscribers),
    ] {
        let props = if v == V5 {
            rich_props()
        } else {
            Properties::default()
        };
        let p = PubAck {
            packet_id: 7,
            reason_code: code,
            properties: props.clone(),
        };
        let rel = if v == V5 {
            ReasonCode::PacketIdentifierNotFound
        } else {
            ReasonCode::Success
        };
        let (a, b, c, d) = if v == V5 {
            ("v5-puback", "v5-pubrec", "v5-pubrel", "v5-pubcomp")
        } else {
            ("v311-puback", "v311-pubrec", "v311-pubrel", "v311-pubcomp")
        };
        out.push((a, v, Packet::PubAck(p.clone())));
        out.push((
            b,
            v,
            Packet::PubRec(PubRec {
                packet_id: 7,
                reason_code: code,
                properties: props.clone(),
            }),
        ));
        out.push((
            c,
            v,
            Packet::PubRel(PubRel {
                packet_id: 7,
                reason_code: rel,
                properties: props.clone(),
            }),
        ));
        out.push((
            d,
            v,
            Packet::PubComp(PubComp {
                packet_id: 7,
                reason_code: rel,
                properties: props,
            }),
        ));
    }
    out
}

#[test]
fn corpus_seeds_decode() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/mqtt_decode");
    let write = std::env::var_os("MQTT_WRITE_CORPUS").is_some();
    let seeds = seeds();
    assert!(seeds.len() >= 29, "one seed per packet kind and version");
    for (name, v, packet) in seeds {
        let mut wire = BytesMut::new();
        encode(&packet, v, &mut wire).unwrap();
        let path = dir.join(name);
        if write {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &wire).unwrap();
        }
        let committed = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (regenerate with MQTT_WRITE_CORPUS=1)",
                path.display()
            )
        });
        assert_eq!(
            committed,
            wire.to_vec(),
            "{name} is stale (regenerate with MQTT_WRITE_CORPUS=1)"
        );
        let mut buf = BytesMut::from(&committed[..]);
        assert_eq!(
            decode(&mut buf, v, 1 << 16).unwrap(),
            Some(packet),
            "{name}"
        );
    }
}

/// `awaited_packet_len` names the length of every seed (and of a 20 KiB PUBLISH) from every
/// prefix that holds its fixed header and not all of it, and nothing otherwise; where it
/// names one, the decoder still waits for more bytes.
#[test]
fn awaited_packet_len_names_the_whole_length_once_the_fixed_header_is_in() {
    let mut seeds = seeds();
    seeds.push((
        "large publish",
        ProtocolVersion::V5,
        Packet::Publish(Publish {
            topic: t("t/large"),
            payload: Bytes::from(vec![7u8; 20 << 10]),
            qos: QoS::AtLeastOnce,
            packet_id: Some(9),
            dup: false,
            retain: false,
            properties: Properties::default(),
        }),
    ));
    for (name, v, packet) in seeds {
        let mut wire = BytesMut::new();
        encode(&packet, v, &mut wire).unwrap();
        // The fixed header: the type byte and the remaining length's bytes.
        let header = 1 + wire[1..].iter().position(|b| b & 0x80 == 0).unwrap() + 1;
        for cut in 0..=wire.len() {
            let prefix = &wire[..cut];
            let awaited = awaited_packet_len(prefix);
            let expected = (cut >= header && cut < wire.len()).then_some(wire.len());
            assert_eq!(awaited, expected, "{name}, {cut} of {} bytes", wire.len());
            if awaited.is_some() && cut > 0 {
                let mut buf = BytesMut::from(prefix);
                let decoded = if matches!(packet, Packet::Connect(_)) {
                    decode_connect(&mut buf, u32::MAX).map(|c| c.map(|_| ()))
                } else {
                    decode(&mut buf, v, u32::MAX).map(|p| p.map(|_| ()))
                };
                assert!(matches!(decoded, Ok(None)), "{name}, {cut}: {decoded:?}");
            }
        }
    }
    // A remaining length that would need a fifth byte says nothing.
    assert_eq!(
        awaited_packet_len(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01]),
        None
    );
}
