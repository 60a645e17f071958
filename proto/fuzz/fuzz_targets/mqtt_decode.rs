//! Fuzz the MQTT decoder: arbitrary bytes must never panic, and every packet that decodes
//! must re-encode and decode back to itself (for both protocol versions and for the
//! first-packet path `decode_connect`).
#![no_main]

use bytes::BytesMut;
use edge_proto::mqtt::{Packet, ProtocolVersion, decode, decode_connect, encode};
use libfuzzer_sys::fuzz_target;

const MAX: u32 = 1 << 16;

fn reencode(p: &Packet, version: ProtocolVersion) {
    // A CONNECT carries its own protocol level.
    let version = match p {
        Packet::Connect(c) => c.protocol_version,
        _ => version,
    };
    let mut out = BytesMut::new();
    let n = encode(p, version, &mut out).expect("a decoded packet must re-encode");
    assert_eq!(n, out.len());
    let again = decode(&mut out, version, u32::MAX)
        .expect("re-encoded packet must decode")
        .expect("re-encoded packet is complete");
    assert_eq!(&again, p);
    assert!(out.is_empty());
}

fuzz_target!(|data: &[u8]| {
    for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
        let mut buf = BytesMut::from(data);
        while let Ok(Some(p)) = decode(&mut buf, version, MAX) {
            reencode(&p, version);
        }
    }
    let mut buf = BytesMut::from(data);
    if let Ok(Some(c)) = decode_connect(&mut buf, MAX) {
        reencode(&Packet::Connect(Box::new(c)), ProtocolVersion::V5);
    }
});
