//! MQTT 3.1.1 and 5.0 codec: bytes in, [`Packet`]s out, and back. Sans-io: no sockets, no
//! timers, no session state.
//!
//! Module map:
//! - [`packet`] (re-exported here): the [`Packet`] enum and one struct per control packet,
//!   shared by both protocol versions; v5-only fields are ignored when encoding 3.1.1.
//! - [`properties`]: the typed v5 [`PropertySet`], held by packets as [`Properties`] (boxed, none
//!   allocated while empty), and which property may appear where.
//! - [`reason`]: [`ReasonCode`], every v5 reason code with the spec's value and name, and its
//!   mapping onto 3.1.1 return codes.
//! - [`string`]: [`MqttString`], a zero-copy UTF-8 string (a [`bytes::Bytes`] slice of the
//!   frame) that is checked once at decode time (well-formed, no U+0000).
//! - [`mod@decode`] (re-exported): [`decode()`], [`decode_connect()`], the per-connection
//!   [`Decoder`], and [`DecodeError`] with [`DecodeError::reason_code()`].
//! - [`mod@encode`] (re-exported): [`encode()`], [`encode_limited()`], [`encoded_len()`],
//!   [`EncodeError`].
//! - [`topic`]: topic name / filter validation, wildcard matching with the `$` rule, and
//!   `$share/{group}/{filter}` parsing.
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
