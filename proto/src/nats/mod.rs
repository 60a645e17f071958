//! The NATS client protocol (text protocol over TCP), both directions, sans-io.
//!
//! Module map:
//! - [`ops`]: [`ClientOp`] (CONNECT, PUB/HPUB, SUB, UNSUB, PING, PONG) and [`ServerOp`]
//!   (INFO, MSG/HMSG, PING, PONG, +OK, -ERR), their payload types and encoders
//!   ([`ClientOp::encode`], [`ServerOp::encode`], and the allocation-free [`encode_pub`] /
//!   [`encode_msg`]).
//! - [`decode`](mod@decode): [`decode_client_op`] (what a server reads; a connection uses
//!   [`decode_client_op_reusing`], so a repeated PUB subject is one shared `Arc`:
//!   [`LastSubject`], and a reply under a repeating prefix shares that prefix:
//!   [`ReplySubject`]) and [`decode_server_op`] (what a client reads), bounded by [`Limits`].
//!   "Need more bytes" is `Ok(None)`.
//! - [`error`]: [`DecodeError`] with nats-server's exact `-ERR` wording
//!   ([`DecodeError::err_message`]) and close behaviour ([`DecodeError::closes_connection`]);
//!   [`ServerError`] for session-level `-ERR`s (auth, permissions, stale connection, ...).
//! - [`headers`]: the `NATS/1.0` header block ([`HeaderMap`]).
//! - [`subject`]: subject validation, wildcard matching, and the NATS ↔ MQTT name mapping.
//!
//! Imports run one way: [`decode`](mod@decode) → [`error`], [`ops`], [`subject`]; the other
//! files import no sibling (`mod.rs` only declares and re-exports).
//!
//! A server session reads into a `BytesMut` and drains it like this:
//!
//! ```
//! use bytes::BytesMut;
//! use edge_proto::nats::{ClientOp, Limits, ServerOp, decode_client_op};
//!
//! let limits = Limits::default();
//! let mut inbuf = BytesMut::from(&b"CONNECT {}\r\nSUB foo.. 1\r\nPUB foo 2\r\nhi\r\nPING\r\n"[..]);
//! let mut out = BytesMut::new();
//! loop {
//!     match decode_client_op(&mut inbuf, &limits) {
//!         Ok(Some(ClientOp::Ping)) => ServerOp::Pong.encode(&mut out),
//!         Ok(Some(_op)) => { /* route, ack, ... */ }
//!         Ok(None) => break, // read more from the socket, then call again
//!         Err(e) => {
//!             if let Some(line) = e.err_line() {
//!                 out.extend_from_slice(line.as_bytes());
//!             }
//!             if e.closes_connection() {
//!                 break; // flush `out`, then close
//!             }
//!         }
//!     }
//! }
//! assert_eq!(&out[..], b"-ERR 'Invalid Subject'\r\nPONG\r\n");
//! ```
//!
//! Behaviour is nats-server 2.9.10's, checked against the real server in
//! `tests/nats_differential.rs`. Known, deliberate deviations:
//! - non-UTF-8 subjects, replies, sids and queue names are refused ([`DecodeError::NotUtf8`]);
//! - the blank run after a verb and the junk after `PING`/`PONG`/`+OK` count against
//!   `max_control_line` (nats-server does not bound them);
//! - SUB subjects containing `\f` or DEL are invalid (nats-server only rejects empty tokens
//!   and tokens after `>` there);
//! - CONNECT JSON keys are case-sensitive (Go's decoder is not), and `CONNECT null` is refused.

pub mod decode;
pub mod error;
pub mod headers;
pub mod ops;
pub mod subject;

pub use decode::{
    DEFAULT_MAX_CONTROL_LINE, DEFAULT_MAX_PAYLOAD, LastSubject, Limits, RepeatedPub,
    awaited_op_len, decode_client_op, decode_client_op_reusing, decode_server_op,
    peek_repeated_pub,
};
pub use error::{DecodeError, ServerError};
pub use headers::{HeaderError, HeaderMap};
pub use ops::{
    ClientOp, Connect, Info, Msg, Pub, ReplySubject, ServerOp, Sub, Unsub, encode_msg, encode_pub,
};
