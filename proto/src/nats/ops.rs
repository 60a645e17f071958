//! The protocol operations, in both directions, and their encoders.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// Options a client sends in `CONNECT {json}`.
///
/// Defaults follow nats-server: a field left out keeps the server default (`verbose`,
/// `pedantic` and `echo` are **true** unless the client says otherwise). Unknown fields are
/// ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connect {
    /// Ask for `+OK` after every op.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub verbose: bool,
    /// Ask the server to check subjects strictly (`-ERR 'Invalid Publish Subject'`).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub pedantic: bool,
    /// The client requires TLS.
    #[serde(default, skip_serializing_if = "is_false")]
    pub tls_required: bool,
    /// Token authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_token: Option<String>,
    /// User name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pass: Option<String>,
    /// Client name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Client library language.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lang: Option<String>,
    /// Client library version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Protocol level: 0 original, 1 async INFO. Others are refused.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub protocol: i64,
    /// Deliver the client's own publishes back to its matching subscriptions.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub echo: bool,
    /// NKey signature of the server nonce.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sig: Option<String>,
    /// User JWT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<String>,
    /// Public NKey.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nkey: Option<String>,
    /// Ask for a `503` status HMSG when a request has no responders (needs `headers`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub no_responders: bool,
    /// The client understands HPUB/HMSG.
    #[serde(default, skip_serializing_if = "is_false")]
    pub headers: bool,
}

impl Default for Connect {
    fn default() -> Self {
        Self {
            verbose: true,
            pedantic: true,
            tls_required: false,
            auth_token: None,
            user: None,
            pass: None,
            name: None,
            lang: None,
            version: None,
            protocol: 0,
            echo: true,
            sig: None,
            jwt: None,
            nkey: None,
            no_responders: false,
            headers: false,
        }
    }
}

/// What a server announces in `INFO {json}` when a client connects.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Info {
    /// Unique server id.
    #[serde(default)]
    pub server_id: String,
    /// Server name.
    #[serde(default)]
    pub server_name: String,
    /// Server version.
    #[serde(default)]
    pub version: String,
    /// Go version (nats-server) or implementation note.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub go: Option<String>,
    /// Protocol level the server speaks (1).
    #[serde(default)]
    pub proto: i64,
    /// Host the server listens on.
    #[serde(default)]
    pub host: String,
    /// Port the server listens on.
    #[serde(default)]
    pub port: u16,
    /// The server supports HPUB/HMSG.
    #[serde(default, skip_serializing_if = "is_false")]
    pub headers: bool,
    /// Largest payload the server accepts.
    #[serde(default)]
    pub max_payload: i64,
    /// Id the server gave this connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<u64>,
    /// The client's address as the server sees it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<String>,
    /// Clients must authenticate in CONNECT.
    #[serde(default, skip_serializing_if = "is_false")]
    pub auth_required: bool,
    /// Clients must use TLS.
    #[serde(default, skip_serializing_if = "is_false")]
    pub tls_required: bool,
    /// The server verifies client certificates.
    #[serde(default, skip_serializing_if = "is_false")]
    pub tls_verify: bool,
    /// TLS is available but optional.
    #[serde(default, skip_serializing_if = "is_false")]
    pub tls_available: bool,
    /// Nonce to sign for NKey authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// Other server URLs clients may use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_urls: Option<Vec<String>>,
    /// Lame-duck mode: the server is about to go away.
    #[serde(default, skip_serializing_if = "is_false")]
    pub ldm: bool,
    /// JetStream is available.
    #[serde(default, skip_serializing_if = "is_false")]
    pub jetstream: bool,
}

/// A message published by a client: `PUB` (no headers) or `HPUB` (headers present).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pub {
    /// Subject to publish to (not validated by the decoder, as in nats-server). Shared: a
    /// connection's decoder hands out one `Arc` while the subject repeats (`LastSubject`).
    pub subject: Arc<str>,
    /// Optional reply subject: it travels on to the answer that goes to it (see
    /// [`ReplySubject`]: under a prefix that repeats, no allocation per PUB).
    pub reply: Option<ReplySubject>,
    /// Raw `NATS/1.0` header block (HPUB), zero-copy; parse with [`super::HeaderMap::decode`].
    /// nats-server closes the connection (without `-ERR`) on an HPUB from a client whose
    /// CONNECT did not set `headers: true`; the session has to check that.
    pub headers: Option<Bytes>,
    /// The payload, zero-copy.
    pub payload: Bytes,
}

/// A PUB's reply subject, as the two parts it is written in: a shared head and a last token
/// of up to [`ReplySubject::INLINE`] bytes kept inline. A JetStream client's replies
/// (`_INBOX.<id>.<n>`, a new one every PUB) repeat their prefix: the decoder shares that
/// prefix (`Arc`) between them and copies only the last token, so a reply costs no
/// allocation while it travels to its answer. Any other reply is the head alone (an empty
/// tail). Equality is that of the whole subject, whichever way it is split. 24 bytes (a
/// [`Pub`] is moved for every PUB, a core one too).
#[derive(Clone)]
pub struct ReplySubject {
    /// The prefix up to and including its last `.` when the tail is not empty; else the
    /// whole subject.
    head: Arc<str>,
    /// The last token (no `.`, no NUL), UTF-8, padded with NULs.
    tail: [u8; ReplySubject::INLINE],
}

impl ReplySubject {
    /// The longest last token kept inline (nats.go's reply tokens are 8 bytes); longer ones
    /// share the whole subject.
    pub const INLINE: usize = 8;

    /// `head` ending in `.` followed by `last` (no `.` or NUL, at most [`Self::INLINE`]
    /// bytes); `None` if they do not fit that shape.
    pub fn split(head: Arc<str>, last: &str) -> Option<ReplySubject> {
        if !head.ends_with('.') || last.len() > Self::INLINE || last.contains(['.', '\0']) {
            return None;
        }
        Some(Self::split_checked(head, last))
    }

    /// [`Self::split`] for a caller that checked the shape already (the decoder).
    pub(super) fn split_checked(head: Arc<str>, last: &str) -> ReplySubject {
        debug_assert!(head.ends_with('.') && last.len() <= Self::INLINE);
        debug_assert!(!last.contains(['.', '\0']));
        let mut tail = [0; Self::INLINE];
        tail[..last.len()].copy_from_slice(last.as_bytes());
        ReplySubject { head, tail }
    }

    fn tail_len(&self) -> usize {
        self.tail
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(Self::INLINE)
    }

    /// The subject in two parts whose concatenation is the whole: `(prefix ending in '.',
    /// last token)` when kept split, else `(whole subject, "")`.
    pub fn parts(&self) -> (&str, &str) {
        let tail = std::str::from_utf8(&self.tail[..self.tail_len()]).unwrap_or("");
        (&self.head, tail)
    }

    /// Length of the whole subject in bytes.
    pub fn len(&self) -> usize {
        self.head.len() + self.tail_len()
    }

    /// True for an empty subject (never decoded; only `ReplySubject::from("")`).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends the whole subject to `out`.
    pub fn write_to(&self, out: &mut String) {
        let (head, tail) = self.parts();
        out.push_str(head);
        out.push_str(tail);
    }

    /// The whole subject as one shared `str` (the head itself when it is not split).
    pub fn to_shared(&self) -> Arc<str> {
        if self.tail[0] == 0 {
            return Arc::clone(&self.head);
        }
        Arc::from(self.to_string())
    }

    /// The whole subject as one `str` (borrowed when it is not split).
    pub fn to_text(&self) -> std::borrow::Cow<'_, str> {
        match self.parts() {
            (whole, "") => std::borrow::Cow::Borrowed(whole),
            _ => std::borrow::Cow::Owned(self.to_string()),
        }
    }
}

impl From<Arc<str>> for ReplySubject {
    fn from(whole: Arc<str>) -> ReplySubject {
        ReplySubject {
            head: whole,
            tail: [0; Self::INLINE],
        }
    }
}

impl From<&str> for ReplySubject {
    fn from(whole: &str) -> ReplySubject {
        ReplySubject::from(Arc::<str>::from(whole))
    }
}

impl From<String> for ReplySubject {
    fn from(whole: String) -> ReplySubject {
        ReplySubject::from(Arc::<str>::from(whole))
    }
}

impl PartialEq for ReplySubject {
    fn eq(&self, other: &ReplySubject) -> bool {
        let (a, b) = (self.parts(), other.parts());
        self.len() == other.len()
            && a.0
                .bytes()
                .chain(a.1.bytes())
                .eq(b.0.bytes().chain(b.1.bytes()))
    }
}

impl Eq for ReplySubject {}

impl PartialEq<str> for ReplySubject {
    fn eq(&self, other: &str) -> bool {
        let (head, tail) = self.parts();
        other.len() == self.len() && other.starts_with(head) && other.ends_with(tail)
    }
}

impl std::fmt::Display for ReplySubject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (head, tail) = self.parts();
        f.write_str(head)?;
        f.write_str(tail)
    }
}

impl std::fmt::Debug for ReplySubject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&*self.to_text(), f)
    }
}

/// A subscription request: `SUB <subject> [queue] <sid>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sub {
    /// Subject, possibly with wildcards (validated by the decoder).
    pub subject: String,
    /// Optional queue group.
    pub queue_group: Option<String>,
    /// Client-chosen subscription id.
    pub sid: String,
}

/// `UNSUB <sid> [max_msgs]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsub {
    /// Subscription id.
    pub sid: String,
    /// Unsubscribe after this many messages in total. `None` (also for `0` or an unparsable
    /// count, as nats-server treats them) means now.
    pub max_msgs: Option<u64>,
}

/// A message delivered by the server: `MSG` (no headers) or `HMSG` (headers present).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg {
    /// Subject the message was published to.
    pub subject: String,
    /// Subscription id it is delivered for.
    pub sid: String,
    /// Optional reply subject.
    pub reply: Option<String>,
    /// Raw `NATS/1.0` header block (HMSG), zero-copy.
    pub headers: Option<Bytes>,
    /// The payload, zero-copy.
    pub payload: Bytes,
}

/// An operation a client sends to a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientOp {
    /// `CONNECT {json}`.
    Connect(Box<Connect>),
    /// `PUB` / `HPUB`.
    Pub(Pub),
    /// `SUB`.
    Sub(Sub),
    /// `UNSUB`.
    Unsub(Unsub),
    /// `PING`.
    Ping,
    /// `PONG`.
    Pong,
}

/// An operation a server sends to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerOp {
    /// `INFO {json}`.
    Info(Box<Info>),
    /// `MSG` / `HMSG`.
    Msg(Msg),
    /// `PING`.
    Ping,
    /// `PONG`.
    Pong,
    /// `+OK`.
    Ok,
    /// `-ERR '<text>'` (the text without quotes).
    Err(String),
}

fn put_usize(dst: &mut BytesMut, n: usize) {
    dst.put_slice(itoa::Buffer::new().format(n).as_bytes());
}

fn put_json<T: Serialize>(dst: &mut BytesMut, verb: &[u8], value: &T) {
    dst.put_slice(verb);
    // Serialising these plain structs cannot fail (string keys, no maps with non-string keys).
    let json = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    dst.put_slice(&json);
    dst.put_slice(b"\r\n");
}

/// Appends a `PUB`/`HPUB` to `dst` without building a [`Pub`] (hot path for clients).
///
/// Arguments are written as given: subjects must not contain whitespace.
pub fn encode_pub(
    dst: &mut BytesMut,
    subject: &str,
    reply: Option<&str>,
    headers: Option<&[u8]>,
    payload: &[u8],
) {
    encode_payload_op(
        dst, b"PUB ", b"HPUB ", subject, None, reply, headers, payload,
    );
}

/// Appends a `MSG`/`HMSG` to `dst` without building a [`Msg`] (hot path for fan-out).
///
/// Arguments are written as given: subjects and sids must not contain whitespace.
pub fn encode_msg(
    dst: &mut BytesMut,
    subject: &str,
    sid: &str,
    reply: Option<&str>,
    headers: Option<&[u8]>,
    payload: &[u8],
) {
    encode_payload_op(
        dst,
        b"MSG ",
        b"HMSG ",
        subject,
        Some(sid),
        reply,
        headers,
        payload,
    );
}

#[allow(clippy::too_many_arguments)]
fn encode_payload_op(
    dst: &mut BytesMut,
    plain: &[u8],
    with_headers: &[u8],
    subject: &str,
    sid: Option<&str>,
    reply: Option<&str>,
    headers: Option<&[u8]>,
    payload: &[u8],
) {
    let hlen = headers.map_or(0, <[u8]>::len);
    dst.reserve(
        8 + subject.len()
            + sid.map_or(0, |s| s.len() + 1)
            + reply.map_or(0, |r| r.len() + 1)
            + 24
            + hlen
            + payload.len()
            + 2,
    );
    dst.put_slice(if headers.is_some() {
        with_headers
    } else {
        plain
    });
    dst.put_slice(subject.as_bytes());
    if let Some(sid) = sid {
        dst.put_u8(b' ');
        dst.put_slice(sid.as_bytes());
    }
    if let Some(reply) = reply {
        dst.put_u8(b' ');
        dst.put_slice(reply.as_bytes());
    }
    dst.put_u8(b' ');
    if let Some(h) = headers {
        put_usize(dst, h.len());
        dst.put_u8(b' ');
    }
    put_usize(dst, hlen + payload.len());
    dst.put_slice(b"\r\n");
    if let Some(h) = headers {
        dst.put_slice(h);
    }
    dst.put_slice(payload);
    dst.put_slice(b"\r\n");
}

impl ClientOp {
    /// Appends the wire form to `dst`.
    pub fn encode(&self, dst: &mut BytesMut) {
        match self {
            ClientOp::Connect(c) => put_json(dst, b"CONNECT ", c),
            ClientOp::Pub(p) => encode_pub(
                dst,
                &p.subject,
                p.reply.as_ref().map(ReplySubject::to_text).as_deref(),
                p.headers.as_deref(),
                &p.payload,
            ),
            ClientOp::Sub(s) => {
                dst.put_slice(b"SUB ");
                dst.put_slice(s.subject.as_bytes());
                if let Some(q) = &s.queue_group {
                    dst.put_u8(b' ');
                    dst.put_slice(q.as_bytes());
                }
                dst.put_u8(b' ');
                dst.put_slice(s.sid.as_bytes());
                dst.put_slice(b"\r\n");
            }
            ClientOp::Unsub(u) => {
                dst.put_slice(b"UNSUB ");
                dst.put_slice(u.sid.as_bytes());
                if let Some(max) = u.max_msgs {
                    dst.put_u8(b' ');
                    put_usize(dst, usize::try_from(max).unwrap_or(usize::MAX));
                }
                dst.put_slice(b"\r\n");
            }
            ClientOp::Ping => dst.put_slice(b"PING\r\n"),
            ClientOp::Pong => dst.put_slice(b"PONG\r\n"),
        }
    }

    /// The wire form as a new buffer.
    pub fn to_bytes(&self) -> Bytes {
        let mut b = BytesMut::new();
        self.encode(&mut b);
        b.freeze()
    }
}

impl ServerOp {
    /// Appends the wire form to `dst`.
    pub fn encode(&self, dst: &mut BytesMut) {
        match self {
            ServerOp::Info(i) => put_json(dst, b"INFO ", i),
            ServerOp::Msg(m) => encode_msg(
                dst,
                &m.subject,
                &m.sid,
                m.reply.as_deref(),
                m.headers.as_deref(),
                &m.payload,
            ),
            ServerOp::Ping => dst.put_slice(b"PING\r\n"),
            ServerOp::Pong => dst.put_slice(b"PONG\r\n"),
            ServerOp::Ok => dst.put_slice(b"+OK\r\n"),
            ServerOp::Err(text) => {
                dst.put_slice(b"-ERR '");
                dst.put_slice(text.as_bytes());
                dst.put_slice(b"'\r\n");
            }
        }
    }

    /// The wire form as a new buffer.
    pub fn to_bytes(&self) -> Bytes {
        let mut b = BytesMut::new();
        self.encode(&mut b);
        b.freeze()
    }
}
