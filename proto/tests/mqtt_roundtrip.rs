//! Property tests: every valid packet of both versions survives encode → decode unchanged,
//! decodes incrementally ("need more bytes" until the last byte), respects size limits, and
//! the decoder never panics on arbitrary or mutated input.

// Test helpers outside #[test] fns: panicking on a broken invariant is the point.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod mqtt_common;

use bytes::BytesMut;
use edge_proto::mqtt::*;
use mqtt_common::*;
use proptest::prelude::*;

const MAX: u32 = 1 << 20;

fn decode_all(bytes: &[u8], v: ProtocolVersion) -> Result<Option<Packet>, DecodeError> {
    let mut buf = BytesMut::from(bytes);
    let r = decode(&mut buf, v, MAX);
    if let Ok(Some(_)) = r {
        assert!(buf.is_empty(), "decoder left {} bytes", buf.len());
    }
    r
}

fn roundtrip(p: Packet, v: ProtocolVersion) {
    let wire = enc(&p, v);
    assert_eq!(encoded_len(&p, v).unwrap(), wire.len());
    let back = decode_all(&wire, v).unwrap().unwrap();
    assert_eq!(back, p);
    if let Packet::Connect(c) = &p {
        let mut buf = BytesMut::from(&wire[..]);
        let first = decode_connect(&mut buf, MAX).unwrap().unwrap();
        assert_eq!(&first, c.as_ref());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn roundtrip_v311(p in packet(ProtocolVersion::V311)) {
        roundtrip(p, ProtocolVersion::V311);
    }

    #[test]
    fn roundtrip_v5(p in packet(ProtocolVersion::V5)) {
        roundtrip(p, ProtocolVersion::V5);
    }

    /// Feeding a frame byte by byte yields Ok(None) until the final byte, consuming nothing.
    #[test]
    fn incremental(v in version(), p0 in packet(ProtocolVersion::V5), p3 in packet(ProtocolVersion::V311)) {
        let p = if v == ProtocolVersion::V5 { p0 } else { p3 };
        let wire = enc(&p, v);
        let mut buf = BytesMut::new();
        for (i, b) in wire.iter().enumerate() {
            buf.extend_from_slice(&[*b]);
            let r = decode(&mut buf, v, MAX).unwrap();
            if i + 1 < wire.len() {
                prop_assert!(r.is_none());
                prop_assert_eq!(buf.len(), i + 1);
            } else {
                prop_assert_eq!(r, Some(p.clone()));
                prop_assert!(buf.is_empty());
            }
        }
    }

    /// Several packets back to back come out in order.
    #[test]
    fn stream_of_packets(ps in proptest::collection::vec(packet(ProtocolVersion::V5), 1..6)) {
        let v = ProtocolVersion::V5;
        let mut buf = BytesMut::new();
        for p in &ps {
            encode(p, v, &mut buf).unwrap();
        }
        let mut out = Vec::new();
        while let Some(p) = decode(&mut buf, v, MAX).unwrap() {
            out.push(p);
        }
        prop_assert_eq!(out, ps);
    }

    /// encode_limited refuses exactly the packets above the limit, writing nothing.
    #[test]
    fn encode_limit(p in packet(ProtocolVersion::V5), slack in -3i64..3) {
        let v = ProtocolVersion::V5;
        let len = encoded_len(&p, v).unwrap();
        let max = (len as i64 + slack).max(0) as u32;
        let mut out = BytesMut::from(&b"xy"[..]);
        match encode_limited(&p, v, max, &mut out) {
            Ok(n) => {
                prop_assert!(len as u64 <= u64::from(max));
                prop_assert_eq!(n, len);
                prop_assert_eq!(out.len(), 2 + len);
            }
            Err(EncodeError::PacketTooLarge { size, max: m, .. }) => {
                prop_assert!(len as u64 > u64::from(max));
                prop_assert_eq!((size, m), (len, max));
                prop_assert_eq!(&out[..], b"xy");
            }
            Err(e) => prop_assert!(false, "unexpected error {e}"),
        }
    }

    /// The decoder's own limit: a frame of exactly `max` bytes passes, one byte less fails
    /// with PacketTooLarge from the fixed header alone.
    #[test]
    fn decode_limit(p in packet(ProtocolVersion::V5)) {
        let v = ProtocolVersion::V5;
        let wire = enc(&p, v);
        let len = wire.len() as u32;
        prop_assert!(decode(&mut BytesMut::from(&wire[..]), v, len).unwrap().is_some());
        let header_only = &wire[..wire.len().min(5)];
        let err = decode(&mut BytesMut::from(&wire[..]), v, len - 1).unwrap_err();
        prop_assert_eq!(err.reason_code(), ReasonCode::PacketTooLarge);
        if wire.len() > 5 {
            let err = decode(&mut BytesMut::from(header_only), v, len - 1).unwrap_err();
            prop_assert!(matches!(err, DecodeError::PacketTooLarge { .. }), "{:?}", err);
        }
    }

    /// `is_empty` (used for the short v5 ack forms) agrees with "equal to the default".
    #[test]
    fn properties_is_empty(p in prop_oneof![Just(Properties::default()), any_properties()]) {
        prop_assert_eq!(p.is_empty(), p == Properties::default());
    }

    /// Arbitrary bytes never panic; whatever decodes re-encodes to something that decodes
    /// to the same packet.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        for v in [ProtocolVersion::V311, ProtocolVersion::V5] {
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(p)) = decode(&mut buf, v, MAX) {
                let again = reenc(&p, v);
                prop_assert_eq!(decode_all(&again, v).unwrap(), Some(p));
            }
        }
        let _ = decode_connect(&mut BytesMut::from(&bytes[..]), MAX);
    }

    /// Single-byte mutations of valid frames never panic, and anything that still decodes
    /// re-encodes consistently.
    #[test]
    fn mutated_frames_never_panic(
        v in version(),
        p0 in packet(ProtocolVersion::V5),
        p3 in packet(ProtocolVersion::V311),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let p = if v == ProtocolVersion::V5 { p0 } else { p3 };
        let mut wire = enc(&p, v).to_vec();
        let i = at.index(wire.len());
        wire[i] = byte;
        // A mutated length may make a shorter frame valid: bytes may be left over.
        if let Ok(Some(q)) = decode(&mut BytesMut::from(&wire[..]), v, MAX) {
            let again = reenc(&q, v);
            prop_assert_eq!(decode_all(&again, v).unwrap(), Some(q));
        }
        let _ = decode_connect(&mut BytesMut::from(&wire[..]), MAX);
    }
}

#[test]
fn decoded_payload_is_zero_copy() {
    let p = Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: MqttString::from_static("a/b").unwrap(),
        packet_id: Some(7),
        properties: Properties::default(),
        payload: bytes::Bytes::from_static(b"hello world"),
    });
    let mut buf = enc(&p, ProtocolVersion::V5);
    let base = buf.as_ptr() as usize;
    let end = base + buf.len();
    let Some(Packet::Publish(d)) = decode(&mut buf, ProtocolVersion::V5, MAX).unwrap() else {
        panic!("expected PUBLISH");
    };
    for ptr in [
        d.payload.as_ptr() as usize,
        d.topic.as_bytes().as_ptr() as usize,
    ] {
        assert!(
            (base..end).contains(&ptr),
            "slice does not point into the frame"
        );
    }
}

#[test]
fn v3_encoding_ignores_v5_fields() {
    let props = PropertySet {
        reason_string: Some(MqttString::from_static("nope").unwrap()),
        ..PropertySet::default()
    }
    .into();
    let p = Packet::PubAck(PubAck {
        packet_id: 9,
        reason_code: ReasonCode::NotAuthorized,
        properties: props,
    });
    let wire = enc(&p, ProtocolVersion::V311);
    assert_eq!(&wire[..], &[0x40, 0x02, 0x00, 0x09]);
    let p = Packet::ConnAck(ConnAck {
        session_present: false,
        reason_code: ReasonCode::Banned,
        properties: Properties::default(),
    });
    assert_eq!(
        &enc(&p, ProtocolVersion::V311)[..],
        &[0x20, 0x02, 0x00, 0x05]
    );
    let p = Packet::SubAck(SubAck {
        packet_id: 1,
        reason_codes: vec![ReasonCode::GrantedQoS1, ReasonCode::TopicFilterInvalid],
        properties: Properties::default(),
    });
    assert_eq!(
        &enc(&p, ProtocolVersion::V311)[..],
        &[0x90, 0x04, 0x00, 0x01, 0x01, 0x80]
    );
    let auth = Packet::Auth(Auth::default());
    assert!(matches!(
        encode(&auth, ProtocolVersion::V311, &mut BytesMut::new()),
        Err(EncodeError::NotInVersion { .. })
    ));
}

#[test]
fn v5_short_forms() {
    // Success without properties: the reason code and property length are omitted.
    let p = Packet::PubAck(PubAck::new(5));
    assert_eq!(&enc(&p, ProtocolVersion::V5)[..], &[0x40, 0x02, 0x00, 0x05]);
    let p = Packet::PubRec(PubRec {
        packet_id: 5,
        reason_code: ReasonCode::QuotaExceeded,
        properties: Properties::default(),
    });
    assert_eq!(
        &enc(&p, ProtocolVersion::V5)[..],
        &[0x50, 0x03, 0x00, 0x05, 0x97]
    );
    assert_eq!(
        &enc(
            &Packet::Disconnect(Disconnect::default()),
            ProtocolVersion::V5
        )[..],
        &[0xE0, 0x00]
    );
    // The full forms decode to the same packets.
    let mut long = BytesMut::from(&[0x40, 0x04, 0x00, 0x05, 0x00, 0x00][..]);
    assert_eq!(
        decode(&mut long, ProtocolVersion::V5, MAX).unwrap(),
        Some(Packet::PubAck(PubAck::new(5)))
    );
    let mut long = BytesMut::from(&[0xE0, 0x02, 0x00, 0x00][..]);
    assert_eq!(
        decode(&mut long, ProtocolVersion::V5, MAX).unwrap(),
        Some(Packet::Disconnect(Disconnect::default()))
    );
}

#[test]
fn encoder_rejects_invalid_packets() {
    let v = ProtocolVersion::V5;
    let bad_id = Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: MqttString::from_static("t").unwrap(),
        packet_id: None,
        properties: Properties::default(),
        payload: bytes::Bytes::new(),
    });
    assert!(matches!(
        encode(&bad_id, v, &mut BytesMut::new()),
        Err(EncodeError::Invalid { .. })
    ));
    let props = PropertySet {
        topic_alias: Some(3),
        ..PropertySet::default()
    }
    .into();
    let bad_prop = Packet::Disconnect(Disconnect {
        reason_code: ReasonCode::Success,
        properties: props,
    });
    assert!(matches!(
        encode(&bad_prop, v, &mut BytesMut::new()),
        Err(EncodeError::PropertyNotAllowed {
            id: PropertyId::TopicAlias,
            ..
        })
    ));
    let bad_code = Packet::PubAck(PubAck {
        packet_id: 1,
        reason_code: ReasonCode::Banned,
        properties: Properties::default(),
    });
    assert!(matches!(
        encode(&bad_code, v, &mut BytesMut::new()),
        Err(EncodeError::ReasonCodeNotAllowed { .. })
    ));
    let empty = Packet::Subscribe(Subscribe {
        packet_id: 1,
        filters: vec![],
        properties: Properties::default(),
    });
    assert!(matches!(
        encode(&empty, v, &mut BytesMut::new()),
        Err(EncodeError::Invalid { .. })
    ));
}

#[test]
fn strip_diagnostics_makes_an_ack_fit() {
    let v = ProtocolVersion::V5;
    let mut ack = PubAck {
        packet_id: 1,
        reason_code: ReasonCode::NotAuthorized,
        properties: PropertySet {
            reason_string: Some(MqttString::try_from("x".repeat(100)).unwrap()),
            user_properties: vec![(
                MqttString::from_static("k").unwrap(),
                MqttString::from_static("v").unwrap(),
            )],
            ..PropertySet::default()
        }
        .into(),
    };
    let mut out = BytesMut::new();
    let err = encode_limited(&Packet::PubAck(ack.clone()), v, 16, &mut out).unwrap_err();
    assert!(matches!(err, EncodeError::PacketTooLarge { .. }));
    assert!(out.is_empty());
    assert!(ack.properties.strip_diagnostics());
    assert!(!ack.properties.strip_diagnostics());
    assert_eq!(
        encode_limited(&Packet::PubAck(ack), v, 16, &mut out).unwrap(),
        5
    );
}

/// A topic for the plain PUBLISH encoder: valid ones, and each kind `MqttString` refuses.
fn plain_topic() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z/+#é]{1,24}",
        1 => Just(String::new()),
        1 => Just("a\u{0}b".to_owned()),
        1 => Just("t".repeat(usize::from(u16::MAX))),
        1 => Just("t".repeat(usize::from(u16::MAX) + 1)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// `PlainPublish` writes exactly what the packet encoder writes for the same PUBLISH
    /// without properties, and refuses exactly what it refuses (DUP on QoS 0, a topic
    /// MqttString refuses, packet id 0 or missing or extra, over the size limit), writing
    /// nothing then.
    #[test]
    fn a_plain_publish_is_what_the_packet_encoder_writes(
        v in version(),
        topic in plain_topic(),
        qos in prop_oneof![Just(QoS::AtMostOnce), Just(QoS::AtLeastOnce), Just(QoS::ExactlyOnce)],
        id in prop::option::of(prop_oneof![1 => Just(0u16), 8 => 1u16..]),
        dup in any::<bool>(),
        retain in any::<bool>(),
        payload in prop::collection::vec(any::<u8>(), 0..300),
        slack in prop_oneof![1 => Just(None), 4 => (-3i64..3).prop_map(Some)],
    ) {
        let packet = Packet::Publish(Publish {
            dup,
            qos,
            retain,
            topic: MqttString::try_from(topic.as_str()).unwrap_or_default(),
            packet_id: id,
            properties: Properties::default(),
            payload: bytes::Bytes::from(payload.clone()),
        });
        let size = encoded_len(&packet, v).unwrap_or(100);
        let max = slack.map_or(u32::MAX, |s| u32::try_from((size as i64 + s).max(0)).unwrap());
        let plain = PlainPublish { dup, qos, retain, topic: &topic, packet_id: id, payload: &payload };
        let (mut a, mut b) = (BytesMut::from(&b"x"[..]), BytesMut::from(&b"x"[..]));
        let want = encode_limited(&packet, v, max, &mut a);
        let got = plain.encode_limited(v, max, &mut b);
        prop_assert_eq!(&got, &want);
        prop_assert_eq!(&b[..], &a[..]);
    }
}
