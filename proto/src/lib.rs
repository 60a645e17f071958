//! Sans-io codecs for the protocols edge-broker speaks. No tokio, no sockets: bytes in,
//! packets out, and back.
//!
//! Crate map:
//! - [`mqtt`]: MQTT 3.1.1 and 5.0 packets, encoder and decoder.
//! - [`nats`]: the NATS client protocol (INFO, CONNECT, PUB, HPUB, SUB, ...).
//!
//! Rules every codec here follows: frames are size-capped before they are buffered, "need
//! more bytes" is `Ok(None)`, payloads are zero-copy [`bytes::Bytes`] slices of the input.

pub mod mqtt;
pub mod nats;
