//! MQTT 3.1.1 and 5.0 codec: bytes in, [`Packet`]s out, and back. Sans-io: no sockets, no
//! timers, no session state.
//!
//! Module map. Public:
//! - [`packet`] (re-exported here): the [`Packet`] enum and one struct per control packet,
//!   shared by both protocol versions; v5-only fields are ignored when encoding 3.1.1. Also
//!   re-exports [`PacketType`] and [`ProtocolVersion`] (defined in `ids`, below).
//! - [`properties`]: the typed v5 [`PropertySet`], held by packets as [`Properties`] (boxed, none
//!   allocated while empty), which property may appear where ([`properties::Context`]), and
//!   the property list's reading and writing. Also re-exports [`PropertyId`] (from `ids`).
//! - [`reason`]: [`ReasonCode`], every v5 reason code with the spec's value and name, and its
//!   mapping onto 3.1.1 return codes.
//! - [`string`]: [`MqttString`], a zero-copy UTF-8 string (a [`bytes::Bytes`] slice of the
//!   frame) that is checked once at decode time (well-formed, no U+0000).
//! - [`mod@decode`] (re-exported): [`decode()`], [`decode_connect()`], the per-connection
//!   [`Decoder`], [`awaited_packet_len()`]; and re-exports [`DecodeError`] with
//!   [`DecodeError::reason_code()`] (defined in `error`).
//! - [`mod@encode`] (re-exported): [`encode()`], [`encode_limited()`], [`encoded_len()`],
//!   [`PlainPublish`]; and re-exports [`EncodeError`] (defined in `error`).
//! - [`topic`]: topic name / filter validation, wildcard matching with the `$` rule, and
//!   `$share/{group}/{filter}` parsing.
//!
//! Inside (private), each a room of one concern; their types are reached through the public
//! paths above:
//! - `ids`: the numbers the wire names things by, as plain enums: [`ProtocolVersion`],
//!   [`PacketType`], [`PropertyId`].
//! - `error`: [`DecodeError`] and [`EncodeError`], the errors of every layer below the two
//!   entry points as much as of the entry points themselves.
//! - `wire`: the bounds-checked reader over one frame (a read past the end is
//!   [`DecodeError::Truncated`] naming the field), the write sink that counts or writes, and
//!   variable byte integers.
//!
//! Imports run one way, downwards: a file imports only files on lower lines, never one on its
//! own line or above (decode and encode share a line: neither imports the other; `mod.rs`
//! only declares and re-exports).
//!
//! ```text
//! decode      the decoder                   -> packet, properties, wire, error, reason, topic
//! encode      the encoder                   -> packet, properties, wire, error, reason, string
//! packet      Packet and its structs        -> properties, ids, reason, string
//! properties  the v5 property set, codec    -> wire, error, ids, string, topic
//! wire        reader, sink, varints         -> error, ids, string
//! error       DecodeError, EncodeError      -> ids, reason, string, topic
//! ids, reason, string, topic                   (import no sibling)
//! ```
//!
//! So a new error variant goes into `error`, a new v5 property into `ids` (its identifier)
//! and `properties` (its field, allow-tables, reading and writing), and a helper that the
//! reader, the property codec or an error needs goes at or below their line, never into
//! `packet`, `decode` or `encode`.
//!
//! Typical server loop: read from the socket into a `BytesMut`, call [`decode_connect()`]
//! until the CONNECT arrives (it carries the protocol level), then [`decode()`] with that
//! version and the server's own maximum packet size. On `Err`, send the error's
//! [`DecodeError::reason_code()`] (CONNACK or DISCONNECT in v5) and close the connection: the
//! buffer's content is unspecified after an error. Outgoing packets go through
//! [`encode_limited()`] with the client's Maximum Packet Size, which refuses (and writes
//! nothing) when the packet would be too large, so the server can drop properties or the
//! message as the spec requires.
//!
//! ```
//! use bytes::BytesMut;
//! use edge_proto::mqtt::{ConnAck, Decoder, Packet, Properties, ReasonCode, encode_limited};
//!
//! // A 3.1.1 CONNECT as it arrives from the socket (client id "s1").
//! let mut inbox = BytesMut::from(&b"\x10\x0e\x00\x04MQTT\x04\x02\x00\x3c\x00\x02s1"[..]);
//! let mut decoder = Decoder::new(64 * 1024);
//! let Some(Packet::Connect(connect)) = decoder.decode(&mut inbox)? else { panic!() };
//! assert_eq!(connect.client_id, "s1");
//! let version = decoder.version().unwrap();
//!
//! let ack = Packet::ConnAck(ConnAck {
//!     session_present: false,
//!     reason_code: ReasonCode::Success,
//!     properties: Properties::default(),
//! });
//! let mut outbox = BytesMut::new();
//! let client_max = connect.properties.maximum_packet_size.unwrap_or(u32::MAX);
//! encode_limited(&ack, version, client_max, &mut outbox)?;
//! assert_eq!(&outbox[..], b"\x20\x02\x00\x00");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Design choices:
//! - One packet model for both versions. v5-only fields default to "absent" and are dropped
//!   when encoding 3.1.1; 3.1.1 return codes map onto [`ReasonCode`] (CONNACK 0..=5, SUBACK
//!   0x80), so the server handles one set of types whatever the client speaks.
//! - Properties are one typed struct for every packet; an allow-table per packet type (and
//!   for the Will) makes a misplaced property a decode error and an encode error alike.
//! - Zero-copy: a complete frame is split off the read buffer and frozen once; topics,
//!   strings, binary fields and payloads are `Bytes` slices of it ([`MqttString`] validates
//!   UTF-8 once, at decode time).
//! - The encoder serialises through one sink-generic function run twice (count, then write),
//!   so the length prefix can never disagree with the body, and validation happens before
//!   the first byte is written.
//! - Strict on input, the server's policy left to the server: reserved bits, QoS 3, bad
//!   UTF-8, U+0000, 5-byte varints, duplicate or misplaced properties, zero packet ids,
//!   empty SUBSCRIBE/UNSUBSCRIBE and wildcard topic names are refused with the spec's reason
//!   code; topic *filter* syntax, client-id rules, topic-alias ranges and payload-format
//!   checks are left to the session, which answers per filter / per message.

pub mod decode;
pub mod encode;
pub mod packet;
pub mod properties;
pub mod reason;
pub mod string;
pub mod topic;

mod error;
mod ids;
mod wire;

pub use decode::{DecodeError, Decoder, awaited_packet_len, decode, decode_connect};
pub use encode::{EncodeError, PlainPublish, encode, encode_limited, encoded_len};
pub use packet::*;
pub use properties::{Properties, PropertyId, PropertySet};
pub use reason::ReasonCode;
pub use string::{InvalidString, MqttString};
