//! Fuzz target for the NATS decoders: both directions must never panic or stall, and every
//! op they accept must survive encode -> decode unchanged.
//!
//! Run: `cargo fuzz run nats_decode` in `edge-broker/proto/fuzz` (seeds in `corpus/nats_decode`).

#![no_main]

use bytes::BytesMut;
use edge_proto::nats::{Limits, decode_client_op, decode_server_op};
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

fuzz_target!(|data: &[u8]| {
    let limits = limits_for(data);

    let mut buf = BytesMut::from(data);
    loop {
        let before = buf.len();
        match decode_client_op(&mut buf, &limits) {
            Ok(Some(op)) => {
                assert!(buf.len() < before, "op without consuming input");
                let wire = op.to_bytes();
                let mut again = BytesMut::from(&wire[..]);
                let back = decode_client_op(&mut again, &Limits { max_control_line: usize::MAX / 4, max_payload: usize::MAX / 4 });
                assert_eq!(back, Ok(Some(op)), "client op does not round-trip: {wire:?}");
                assert!(again.is_empty());
            }
            Ok(None) => break,
            Err(e) => {
                let _ = (e.err_message(), e.to_string());
                if e.closes_connection() {
                    break;
                }
                assert!(buf.len() < before, "non-fatal error without consuming input");
            }
        }
    }

    let mut buf = BytesMut::from(data);
    loop {
        let before = buf.len();
        match decode_server_op(&mut buf, &limits) {
            Ok(Some(op)) => {
                assert!(buf.len() < before, "op without consuming input");
                let wire = op.to_bytes();
                let mut again = BytesMut::from(&wire[..]);
                let back = decode_server_op(&mut again, &Limits { max_control_line: usize::MAX / 4, max_payload: usize::MAX / 4 });
                assert_eq!(back, Ok(Some(op)), "server op does not round-trip: {wire:?}");
                assert!(again.is_empty());
            }
            Ok(None) => break,
            Err(e) => {
                let _ = (e.err_message(), e.to_string());
                if e.closes_connection() {
                    break;
                }
                assert!(buf.len() < before, "non-fatal error without consuming input");
            }
        }
    }
});
