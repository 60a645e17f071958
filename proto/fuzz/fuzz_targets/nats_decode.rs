//! Fuzz target for the NATS decoders: both directions must never panic or stall, and every
//! op they accept must survive encode -> decode unchanged.
//!
//! Run: `cargo fuzz run nats_decode` in `proto/fuzz` (seeds in `corpus/nats_decode`).

#![no_main]

use bytes::{Bytes, BytesMut};
use edge_proto::nats::{
    ClientOp, DecodeError, Limits, ServerOp, decode_client_op, decode_server_op,
};
use libfuzzer_sys::fuzz_target;

fn limits_for(data: &[u8]) -> Limits {
    // The first byte picks tight or default limits so both the limit checks and the normal
    // paths are explored.
    match data.first() {
        Some(b) if b & 1 == 1 => Limits {
            max_control_line: 32,
            max_payload: 64,
        },
        _ => Limits::default(),
    }
}

/// Decodes `data` to the end with `decode`: no panic, no stall (every op or non-fatal error
/// consumes input), and every op survives `encode` -> `decode` unchanged.
fn exercise<Op: PartialEq + std::fmt::Debug>(
    data: &[u8],
    limits: &Limits,
    decode: fn(&mut BytesMut, &Limits) -> Result<Option<Op>, DecodeError>,
    encode: fn(&Op) -> Bytes,
    direction: &str,
) {
    let unlimited = Limits {
        max_control_line: usize::MAX / 4,
        max_payload: usize::MAX / 4,
    };
    let mut buf = BytesMut::from(data);
    loop {
        let before = buf.len();
        match decode(&mut buf, limits) {
            Ok(Some(op)) => {
                assert!(buf.len() < before, "{direction} op without consuming input");
                let wire = encode(&op);
                let mut again = BytesMut::from(&wire[..]);
                let back = decode(&mut again, &unlimited);
                assert_eq!(
                    back,
                    Ok(Some(op)),
                    "{direction} op does not round-trip: {wire:?}"
                );
                assert!(again.is_empty());
            }
            Ok(None) => break,
            Err(e) => {
                let _ = (e.err_message(), e.to_string());
                if e.closes_connection() {
                    break;
                }
                assert!(
                    buf.len() < before,
                    "non-fatal error without consuming input"
                );
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let limits = limits_for(data);
    exercise(
        data,
        &limits,
        decode_client_op,
        ClientOp::to_bytes,
        "client",
    );
    exercise(
        data,
        &limits,
        decode_server_op,
        ServerOp::to_bytes,
        "server",
    );
});
