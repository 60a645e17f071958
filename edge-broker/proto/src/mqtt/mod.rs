//! MQTT 3.1.1 and 5.0 codec: bytes in, [`Packet`]s out, and back. Sans-io: no sockets, no
//! timers, no session state.
//!
//! Module map:
//! - [`packet`] (re-exported here): the [`Packet`] enum and one struct per control packet,
//!   shared by both protocol versions; v5-only fields are ignored when encoding 3.1.1.
//! - [`properties`]: the typed v5 [`Properties`] set and which property may appear where.
//! - [`reason`]: [`ReasonCode`], every v5 reason code with the spec's value and name, and its
//!   mapping onto 3.1.1 return codes.
//! - [`string`]: [`MqttString`], a zero-copy UTF-8 string (a [`bytes::Bytes`] slice of the
//!   frame) that is checked once at decode time (well-formed, no U+0000).
//! - [`decode`] (re-exported): [`decode()`], [`decode_connect()`], [`DecodeError`] with
//!   [`DecodeError::reason_code()`].
//! - [`encode`] (re-exported): [`encode()`], [`encode_limited()`], [`encoded_len()`],
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

pub mod decode;
pub mod encode;
pub mod packet;
pub mod properties;
pub mod reason;
pub mod string;
pub mod topic;

mod wire;

pub use decode::{DecodeError, decode, decode_connect};
pub use encode::{EncodeError, encode, encode_limited, encoded_len};
pub use packet::*;
pub use properties::{Properties, PropertyId};
pub use reason::ReasonCode;
pub use string::{InvalidString, MqttString};
