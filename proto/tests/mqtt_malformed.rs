//! Hand-built malformed and protocol-violating frames: each must fail with the right
//! [`DecodeError`] variant and the right v5 reason code.

// Test helpers outside #[test] fns: panicking on a broken invariant is the point.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::BytesMut;
use edge_proto::mqtt::*;

const V3: ProtocolVersion = ProtocolVersion::V311;
const V5: ProtocolVersion = ProtocolVersion::V5;
const MAX: u32 = 1 << 20;

fn dec(bytes: &[u8], v: ProtocolVersion) -> Result<Option<Packet>, DecodeError> {
    decode(&mut BytesMut::from(bytes), v, MAX)
}

fn err(bytes: &[u8], v: ProtocolVersion) -> DecodeError {
    match dec(bytes, v) {
        Err(e) => e,
        Ok(p) => panic!("expected an error for {bytes:02X?}, got {p:?}"),
    }
}

/// Asserts the error's reason code and returns the error for variant checks.
fn fails(bytes: &[u8], v: ProtocolVersion, code: ReasonCode) -> DecodeError {
    let e = err(bytes, v);
    assert_eq!(e.reason_code(), code, "{e} for {bytes:02X?}");
    // Every error renders a message naming what went wrong.
    assert!(!e.to_string().is_empty());
    e
}

/// Wraps a body in a fixed header (remaining length < 128).
fn frame(first: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![first, body.len() as u8];
    v.extend_from_slice(body);
    v
}

/// A v5 CONNECT with the given flags, properties block and trailing payload fields.
fn connect5(flags: u8, props: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 5, flags, 0, 60];
    body.push(props.len() as u8);
    body.extend_from_slice(props);
    body.extend_from_slice(&[0, 2, b'i', b'd']);
    body.extend_from_slice(payload);
    frame(0x10, &body)
}

use ReasonCode::{
    MalformedPacket as M, PacketTooLarge as TL, ProtocolError as P, TopicNameInvalid as TN,
};

#[test]
fn sane_baseline_decodes() {
    // The helpers produce valid packets when nothing is wrong.
    assert!(dec(&connect5(0x02, &[], &[]), V5).unwrap().is_some());
    assert!(
        dec(&frame(0x30, &[0, 1, b'a', 0, b'x']), V5)
            .unwrap()
            .is_some()
    );
    assert!(
        dec(&frame(0x30, &[0, 1, b'a', b'x']), V3)
            .unwrap()
            .is_some()
    );
    assert!(
        dec(&frame(0x82, &[0, 1, 0, 0, 1, b'a', 0]), V5)
            .unwrap()
            .is_some()
    );
}

#[test]
fn reserved_fixed_header_flags() {
    for (first, v) in [
        (0x41u8, V5),
        (0x41, V3),
        (0x80, V5),
        (0x60, V3),
        (0xA3, V5),
        (0xC1, V3),
        (0xE8, V5),
        (0x21, V5),
    ] {
        let e = fails(&frame(first, &[0, 1]), v, M);
        assert!(matches!(e, DecodeError::ReservedFlags { .. }), "{e:?}");
    }
}

#[test]
fn reserved_packet_types() {
    let e = fails(&[0x00, 0x00], V5, M);
    assert!(matches!(e, DecodeError::InvalidPacketType { .. }));
    // AUTH does not exist in 3.1.1.
    let e = fails(&[0xF0, 0x00], V3, M);
    assert!(matches!(e, DecodeError::InvalidPacketType { .. }));
    assert!(dec(&[0xF0, 0x00], V5).unwrap().is_some());
}

#[test]
fn qos_3() {
    let e = fails(&frame(0x36, &[0, 1, b'a', 0, 1]), V5, M);
    assert!(matches!(e, DecodeError::InvalidQoS { .. }));
    // Subscription options with QoS 3.
    let e = fails(&frame(0x82, &[0, 1, 0, 0, 1, b'a', 3]), V5, M);
    assert!(matches!(e, DecodeError::InvalidQoS { .. }));
    // Will QoS 3 (will flag set).
    let e = fails(&connect5(0x04 | 0x18, &[], &[0, 0, 1, b't', 0, 0]), V5, M);
    assert!(matches!(e, DecodeError::InvalidQoS { .. }));
}

#[test]
fn invalid_utf8_and_null() {
    for bad in [
        &[0xC3u8, 0x28][..],
        &[0xED, 0xA0, 0x80],
        &[0xC0, 0x80],
        &[0xFF],
        &[b'a', 0x00],
    ] {
        let mut body = vec![0, bad.len() as u8];
        body.extend_from_slice(bad);
        let e = fails(&frame(0x30, &body), V5, M);
        assert!(matches!(e, DecodeError::InvalidString { .. }), "{e:?}");
        // Same in a subscription filter and in a user property.
        let mut sub = vec![0, 1, 0];
        sub.extend_from_slice(&body);
        sub.push(0);
        let e = fails(&frame(0x82, &sub), V5, M);
        assert!(matches!(e, DecodeError::InvalidString { .. }), "{e:?}");
        let mut props = vec![0x26];
        props.extend_from_slice(&body);
        props.extend_from_slice(&[0, 0]);
        let mut ack = vec![0, 1, 0x10, props.len() as u8];
        ack.extend_from_slice(&props);
        let e = fails(&frame(0x40, &ack), V5, M);
        assert!(matches!(e, DecodeError::InvalidString { .. }), "{e:?}");
    }
}

#[test]
fn variable_byte_integer_too_long() {
    let e = fails(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01], V5, M);
    assert_eq!(e, DecodeError::RemainingLengthTooLong);
    // Four bytes with continuation and nothing after: already known to be malformed.
    let e = fails(&[0x30, 0x80, 0x80, 0x80, 0x80], V5, M);
    assert_eq!(e, DecodeError::RemainingLengthTooLong);
    // Property length as a 5-byte VBI.
    let e = fails(
        &frame(0x40, &[0, 1, 0x00, 0x80, 0x80, 0x80, 0x80, 0x01]),
        V5,
        M,
    );
    assert!(matches!(e, DecodeError::VarIntTooLong { .. }), "{e:?}");
    // Non-minimal encodings: remaining length 0 in two bytes, a property length of 0 in two.
    let e = fails(&[0xC0, 0x80, 0x00], V5, M);
    assert!(matches!(e, DecodeError::Malformed { .. }), "{e:?}");
    let e = fails(&frame(0x40, &[0, 1, 0x00, 0x80, 0x00]), V5, M);
    assert!(matches!(e, DecodeError::Malformed { .. }), "{e:?}");
    // Subscription identifier as a 5-byte VBI.
    let e = fails(
        &frame(0x30, &[0, 1, b'a', 6, 0x0B, 0x80, 0x80, 0x80, 0x80, 0x01]),
        V5,
        M,
    );
    assert!(matches!(e, DecodeError::VarIntTooLong { .. }), "{e:?}");
}

#[test]
fn duplicate_properties() {
    // Two reason strings in PUBACK.
    let e = fails(
        &frame(0x40, &[0, 1, 0x10, 6, 0x1F, 0, 0, 0x1F, 0, 0]),
        V5,
        P,
    );
    assert!(matches!(
        e,
        DecodeError::DuplicateProperty {
            id: PropertyId::ReasonString,
            ..
        }
    ));
    // Two topic aliases in PUBLISH.
    let e = fails(
        &frame(0x30, &[0, 1, b'a', 6, 0x23, 0, 1, 0x23, 0, 2]),
        V5,
        P,
    );
    assert!(matches!(
        e,
        DecodeError::DuplicateProperty {
            id: PropertyId::TopicAlias,
            ..
        }
    ));
    // Two session expiry intervals in CONNECT.
    let e = fails(
        &connect5(0, &[0x11, 0, 0, 0, 1, 0x11, 0, 0, 0, 2], &[]),
        V5,
        P,
    );
    assert!(matches!(
        e,
        DecodeError::DuplicateProperty {
            id: PropertyId::SessionExpiryInterval,
            ..
        }
    ));
    // Two subscription identifiers in SUBSCRIBE.
    let e = fails(
        &frame(0x82, &[0, 1, 4, 0x0B, 1, 0x0B, 2, 0, 1, b'a', 0]),
        V5,
        P,
    );
    assert!(matches!(
        e,
        DecodeError::DuplicateProperty {
            id: PropertyId::SubscriptionIdentifier,
            ..
        }
    ));
    // ...but PUBLISH may carry several, and user properties may repeat anywhere.
    let Some(Packet::Publish(p)) =
        dec(&frame(0x30, &[0, 1, b'a', 4, 0x0B, 1, 0x0B, 2]), V5).unwrap()
    else {
        panic!("expected PUBLISH")
    };
    assert_eq!(p.properties.subscription_identifiers, vec![1, 2]);
    let ack = frame(
        0x40,
        &[0, 1, 0x10, 11, 0x26, 0, 0, 0, 0, 0x26, 0, 1, b'k', 0, 0],
    );
    let Some(Packet::PubAck(a)) = dec(&ack, V5).unwrap() else {
        panic!("expected PUBACK")
    };
    assert_eq!(a.properties.user_properties.len(), 2);
}

#[test]
fn properties_not_allowed_or_unknown() {
    // Topic alias in CONNECT.
    let e = fails(&connect5(0, &[0x23, 0, 1], &[]), V5, P);
    assert!(matches!(
        e,
        DecodeError::PropertyNotAllowed {
            id: PropertyId::TopicAlias,
            will: false,
            ..
        }
    ));
    // Will delay interval in CONNECT properties (it belongs in the will properties).
    let e = fails(&connect5(0, &[0x18, 0, 0, 0, 1], &[]), V5, P);
    assert!(matches!(
        e,
        DecodeError::PropertyNotAllowed {
            id: PropertyId::WillDelayInterval,
            ..
        }
    ));
    // Session expiry in will properties.
    let e = fails(
        &connect5(0x04, &[], &[5, 0x11, 0, 0, 0, 1, 0, 1, b't', 0, 0]),
        V5,
        P,
    );
    assert!(matches!(
        e,
        DecodeError::PropertyNotAllowed { will: true, .. }
    ));
    // And will delay there is fine.
    assert!(
        dec(
            &connect5(0x04, &[], &[5, 0x18, 0, 0, 0, 1, 0, 1, b't', 0, 0]),
            V5
        )
        .unwrap()
        .is_some()
    );
    // Reason string in PUBLISH.
    let e = fails(&frame(0x30, &[0, 1, b'a', 3, 0x1F, 0, 0]), V5, P);
    assert!(matches!(
        e,
        DecodeError::PropertyNotAllowed {
            id: PropertyId::ReasonString,
            ..
        }
    ));
    // Unknown identifier 0x05.
    let e = fails(&frame(0x30, &[0, 1, b'a', 2, 0x05, 0]), V5, M);
    assert!(matches!(e, DecodeError::UnknownProperty { id: 0x05, .. }));
}

#[test]
fn invalid_property_values() {
    let cases: &[(&[u8], PropertyId)] = &[
        (&[0x21, 0, 0], PropertyId::ReceiveMaximum),
        (&[0x27, 0, 0, 0, 0], PropertyId::MaximumPacketSize),
        (&[0x17, 2], PropertyId::RequestProblemInformation),
    ];
    for (props, id) in cases {
        let e = fails(&connect5(0, props, &[]), V5, P);
        assert!(
            matches!(e, DecodeError::InvalidPropertyValue { id: got, .. } if got == *id),
            "{e:?}"
        );
    }
    // Topic alias 0, payload format indicator 2, subscription identifier 0 in PUBLISH.
    for props in [&[0x23u8, 0, 0][..], &[0x01, 2], &[0x0B, 0]] {
        let mut body = vec![0, 1, b'a', props.len() as u8];
        body.extend_from_slice(props);
        let e = fails(&frame(0x30, &body), V5, P);
        assert!(
            matches!(e, DecodeError::InvalidPropertyValue { .. }),
            "{e:?}"
        );
    }
    // Maximum QoS 2 in CONNACK.
    let e = fails(&frame(0x20, &[0, 0, 2, 0x24, 2]), V5, P);
    assert!(matches!(
        e,
        DecodeError::InvalidPropertyValue {
            id: PropertyId::MaximumQoS,
            value: 2,
            ..
        }
    ));
    // Response topic with a wildcard.
    let e = fails(&frame(0x30, &[0, 1, b'a', 4, 0x08, 0, 1, b'#']), V5, P);
    assert!(matches!(e, DecodeError::Protocol { .. }));
}

#[test]
fn zero_packet_identifiers() {
    let cases: &[(u8, &[u8])] = &[
        (0x32, &[0, 1, b'a', 0, 0, 0]), // PUBLISH QoS 1
        (0x34, &[0, 1, b'a', 0, 0, 0]), // PUBLISH QoS 2
        (0x40, &[0, 0]),                // PUBACK
        (0x50, &[0, 0]),                // PUBREC
        (0x62, &[0, 0]),                // PUBREL
        (0x70, &[0, 0]),                // PUBCOMP
        (0x82, &[0, 0, 0, 0, 1, b'a', 0]),
        (0x90, &[0, 0, 0, 0]),
        (0xA2, &[0, 0, 0, 0, 1, b'a']),
        (0xB0, &[0, 0, 0, 0]),
    ];
    for (first, body) in cases {
        let e = fails(&frame(*first, body), V5, P);
        assert!(matches!(e, DecodeError::ZeroPacketId { .. }), "{e:?}");
    }
    let e = fails(&frame(0x40, &[0, 0]), V3, P);
    assert!(matches!(e, DecodeError::ZeroPacketId { .. }));
}

#[test]
fn subscribe_and_unsubscribe_without_filters() {
    let e = fails(&frame(0x82, &[0, 1, 0]), V5, P);
    assert!(matches!(
        e,
        DecodeError::NoTopicFilters {
            packet: PacketType::Subscribe
        }
    ));
    let e = fails(&frame(0x82, &[0, 1]), V3, P);
    assert!(matches!(e, DecodeError::NoTopicFilters { .. }));
    let e = fails(&frame(0xA2, &[0, 1, 0]), V5, P);
    assert!(matches!(
        e,
        DecodeError::NoTopicFilters {
            packet: PacketType::Unsubscribe
        }
    ));
    let e = fails(&frame(0x90, &[0, 1, 0]), V5, P);
    assert!(matches!(e, DecodeError::Protocol { .. }));
}

#[test]
fn subscription_option_rules() {
    // Reserved bits 6-7 in v5, bits 2-7 in 3.1.1.
    fails(&frame(0x82, &[0, 1, 0, 0, 1, b'a', 0x40]), V5, M);
    fails(&frame(0x82, &[0, 1, 0, 1, b'a', 0x04]), V3, M);
    // Retain handling 3.
    let e = fails(&frame(0x82, &[0, 1, 0, 0, 1, b'a', 0x30]), V5, P);
    assert!(matches!(e, DecodeError::Protocol { .. }));
    // Invalid filters are not the decoder's business (SUBACK 0x8F per filter).
    assert!(
        dec(&frame(0x82, &[0, 1, 0, 0, 2, b'a', b'#', 0]), V5)
            .unwrap()
            .is_some()
    );
}

#[test]
fn packet_too_large_before_body() {
    // 100 MB declared, 5 bytes buffered: refused at once, not Ok(None).
    let mut buf = BytesMut::from(&[0x30u8, 0x80, 0x80, 0x80, 0x30][..]);
    let e = decode(&mut buf, V5, 1 << 20).unwrap_err();
    assert_eq!(
        e,
        DecodeError::PacketTooLarge {
            size: 100_663_301,
            max: 1 << 20
        }
    );
    assert_eq!(e.reason_code(), TL);
    // The size counts the fixed header: a 2-byte PINGREQ needs max >= 2.
    assert!(
        decode(&mut BytesMut::from(&[0xC0u8, 0][..]), V5, 2)
            .unwrap()
            .is_some()
    );
    assert_eq!(
        decode(&mut BytesMut::from(&[0xC0u8, 0][..]), V5, 1)
            .unwrap_err()
            .reason_code(),
        TL
    );
    // decode_connect applies the same limit.
    let mut buf = BytesMut::from(&[0x10u8, 0xFF, 0xFF, 0x03][..]);
    assert_eq!(
        decode_connect(&mut buf, 4096).unwrap_err().reason_code(),
        TL
    );
}

#[test]
fn need_more_bytes_is_ok_none() {
    for partial in [&[][..], &[0x30], &[0x30, 0x80], &[0x30, 0x05, 0, 1]] {
        let mut buf = BytesMut::from(partial);
        assert_eq!(decode(&mut buf, V5, MAX), Ok(None));
        assert_eq!(buf.len(), partial.len(), "nothing consumed");
    }
    assert_eq!(
        decode_connect(&mut BytesMut::from(&[0x10u8, 0x10, 0, 4][..]), MAX),
        Ok(None)
    );
}

#[test]
fn topic_names() {
    for (topic, v) in [(&b"a/+"[..], V5), (b"#", V3), (b"a/#/b", V5)] {
        let mut body = vec![0, topic.len() as u8];
        body.extend_from_slice(topic);
        if v == V5 {
            body.push(0);
        }
        let e = fails(&frame(0x30, &body), v, TN);
        assert!(matches!(e, DecodeError::TopicNameInvalid { .. }), "{e:?}");
    }
    // Empty topic: invalid in 3.1.1, a protocol error in v5 without a topic alias...
    fails(&frame(0x30, &[0, 0]), V3, TN);
    fails(&frame(0x30, &[0, 0, 0]), V5, P);
    // ...and fine in v5 with one.
    assert!(
        dec(&frame(0x30, &[0, 0, 3, 0x23, 0, 1]), V5)
            .unwrap()
            .is_some()
    );
    // Will topic with a wildcard.
    fails(&connect5(0x04, &[], &[0, 0, 1, b'+', 0, 0]), V5, TN);
    // A wildcard topic and a bad packet id or bad properties: the topic's verdict comes after
    // them, as it always has (the name is checked as it is read, raised later).
    fails(&frame(0x32, &[0, 3, b'a', b'/', b'+', 0, 0, 0]), V5, P);
    fails(&frame(0x30, &[0, 3, b'a', b'/', b'+', 2, 0x23, 0]), V5, M);
    // And with both sound, the topic is refused.
    fails(&frame(0x32, &[0, 3, b'a', b'/', b'+', 0, 1, 0]), V5, TN);
}

#[test]
fn structural_violations() {
    // Trailing bytes: 3.1.1 PUBACK of length 3, PINGREQ with a body, v3 DISCONNECT with a body.
    let e = fails(&frame(0x40, &[0, 1, 0]), V3, M);
    assert!(matches!(e, DecodeError::TrailingBytes { extra: 1, .. }));
    fails(&frame(0xC0, &[0]), V5, M);
    fails(&frame(0xE0, &[0]), V3, M);
    // String length beyond the frame.
    let e = fails(&frame(0x30, &[0, 9, b'a']), V5, M);
    assert!(matches!(e, DecodeError::Truncated { .. }));
    // Property length beyond the frame.
    let e = fails(&frame(0x40, &[0, 1, 0, 9, 0x1F]), V5, M);
    assert!(matches!(e, DecodeError::Truncated { .. }));
    // CONNECT reserved flag bit 0.
    let e = fails(&connect5(0x01, &[], &[]), V5, M);
    assert!(matches!(e, DecodeError::Malformed { .. }));
    // Will QoS without the will flag.
    fails(&connect5(0x08, &[], &[]), V5, M);
    // CONNACK reserved flag bits.
    fails(&frame(0x20, &[0x02, 0, 0]), V5, M);
    // DUP on QoS 0.
    fails(&frame(0x38, &[0, 1, b'a', 0]), V5, P);
}

#[test]
fn connect_version_detection() {
    let mut buf = BytesMut::from(&connect5(0x02, &[], &[])[..]);
    let c = decode_connect(&mut buf, MAX).unwrap().unwrap();
    assert_eq!(c.protocol_version, V5);
    assert!(buf.is_empty());
    let mut v3 = vec![
        0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 2, b'i', b'd',
    ];
    let c = decode_connect(&mut BytesMut::from(&v3[..]), MAX)
        .unwrap()
        .unwrap();
    assert_eq!(c.protocol_version, V3);
    assert_eq!(c.client_id, "id");
    // Level 6, level 3 under "MQIsdp", a foreign protocol name: Unsupported Protocol Version.
    v3[8] = 6;
    let e = decode_connect(&mut BytesMut::from(&v3[..]), MAX).unwrap_err();
    assert_eq!(e, DecodeError::UnsupportedProtocolVersion { level: 6 });
    assert_eq!(e.reason_code(), ReasonCode::UnsupportedProtocolVersion);
    assert_eq!(e.reason_code().to_v3_connack(), 1);
    let mqisdp = [
        0x10, 16, 0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 3, 0x02, 0, 60, 0, 2, b'i', b'd',
    ];
    let e = decode_connect(&mut BytesMut::from(&mqisdp[..]), MAX).unwrap_err();
    assert_eq!(e, DecodeError::UnsupportedProtocolVersion { level: 3 });
    v3[7] = b'X';
    let e = decode_connect(&mut BytesMut::from(&v3[..]), MAX).unwrap_err();
    assert!(matches!(e, DecodeError::UnsupportedProtocolName { .. }));
    assert_eq!(e.reason_code(), ReasonCode::UnsupportedProtocolVersion);
    // First packet must be CONNECT, refused from its first byte.
    let e = decode_connect(&mut BytesMut::from(&[0x30u8][..]), MAX).unwrap_err();
    assert_eq!(
        e,
        DecodeError::ExpectedConnect {
            packet: PacketType::Publish
        }
    );
    assert_eq!(e.reason_code(), P);
    // 3.1.1 password without user name.
    let pw = [
        0x10, 16, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x42, 0, 60, 0, 2, b'i', b'd', 0, 0,
    ];
    fails(&pw, V3, P);
}

#[test]
fn reason_codes_per_packet() {
    // 0x8F is not a PUBACK reason code; 0x03 is no reason code at all.
    let e = fails(&frame(0x40, &[0, 1, 0x8F]), V5, P);
    assert_eq!(
        e,
        DecodeError::InvalidReasonCode {
            packet: PacketType::PubAck,
            code: 0x8F
        }
    );
    fails(&frame(0x40, &[0, 1, 0x03]), V5, P);
    fails(&frame(0xF0, &[0x01]), V5, P);
    fails(&frame(0xE0, &[0x01]), V5, P);
    fails(&frame(0x20, &[0, 0x01, 0]), V5, P);
    // 3.1.1 CONNACK return code 6, SUBACK return code 3.
    fails(&frame(0x20, &[0, 6]), V3, P);
    fails(&frame(0x90, &[0, 1, 3]), V3, P);
}

#[test]
fn reason_code_table() {
    use edge_proto::mqtt::reason::ALL;
    // Values are distinct, ascending, round-trip through from_u8, and have names.
    for w in ALL.windows(2) {
        assert!(w[0].value() < w[1].value());
    }
    for c in ALL {
        assert_eq!(ReasonCode::from_u8(c.value()), Some(c));
        assert!(!c.name().is_empty());
    }
    assert_eq!(ReasonCode::from_u8(0x03), None);
    assert_eq!(ReasonCode::PacketTooLarge.value(), 0x95);
    assert_eq!(ReasonCode::WildcardSubscriptionsNotSupported.value(), 0xA2);
    assert_eq!(ReasonCode::NORMAL_DISCONNECTION.value(), 0);
    assert_eq!(
        ReasonCode::TopicNameInvalid.to_string(),
        "Topic Name invalid (0x90)"
    );
}

#[test]
fn per_connection_decoder() {
    let mut d = Decoder::new(MAX);
    assert_eq!(d.version(), None);
    // Before CONNECT, anything else is refused.
    let e = d.decode(&mut BytesMut::from(&[0xC0u8, 0][..])).unwrap_err();
    assert_eq!(e.reason_code(), P);
    // CONNECT in two pieces, then a PINGREQ, in the version CONNECT named.
    let c = connect5(0x02, &[], &[]);
    let mut buf = BytesMut::from(&c[..3]);
    assert_eq!(d.decode(&mut buf), Ok(None));
    buf.extend_from_slice(&c[3..]);
    buf.extend_from_slice(&[0xC0, 0x00]);
    assert!(matches!(d.decode(&mut buf), Ok(Some(Packet::Connect(_)))));
    assert_eq!(d.version(), Some(V5));
    assert_eq!(d.decode(&mut buf), Ok(Some(Packet::PingReq)));
    assert_eq!(d.decode(&mut buf), Ok(None));
    // The limit can be tightened after CONNECT.
    d.set_max_packet_size(4);
    assert_eq!(d.max_packet_size(), 4);
    let e = d
        .decode(&mut BytesMut::from(
            &frame(0x30, &[0, 1, b'a', 0, 1, 2])[..],
        ))
        .unwrap_err();
    assert_eq!(e.reason_code(), TL);
}
