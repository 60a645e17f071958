//! Sans-io codecs for the protocols edge-broker speaks. No tokio, no sockets: bytes in,
//! packets out, and back.
//!
//! Crate map:
//! - [`mqtt`]: MQTT 3.1.1 and 5.0 packets, encoder and decoder.
//! - [`nats`]: the NATS client protocol (INFO, CONNECT, PUB, HPUB, SUB, ...).
//!
//! The two never import each other. Inside each, files import along a one-way graph, no
//! circles: each module's own docs list its files, what each owns, and the arrows between
//! them (in `mqtt`: decode / encode → packet → properties → wire → error → the leaves `ids`,
//! `reason`, `string`, `topic`; in `nats`: decode → error, ops, subject).
//!
//! Rules every codec here follows: frames are size-capped before they are buffered, "need
//! more bytes" is `Ok(None)`, payloads are zero-copy [`bytes::Bytes`] slices of the input.

pub mod mqtt;
pub mod nats;
