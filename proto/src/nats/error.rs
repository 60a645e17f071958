//! Errors of the NATS codec, and the catalogue of `-ERR` replies a NATS server sends.
//!
//! The wording of every `-ERR` text is nats-server 2.9.10's, byte for byte (checked against
//! the real server by `tests/nats_differential.rs`), and so is the decision whether the
//! connection is closed afterwards. Some violations make nats-server close the connection
//! *without* any `-ERR` (a malformed `PUB` argument list, a bad size, CONNECT JSON that does
//! not parse): for those [`DecodeError::err_message`] is `None`.

use std::borrow::Cow;

/// `-ERR` text for an unknown verb or a payload not followed by `\r\n`.
pub const ERR_UNKNOWN_PROTOCOL_OPERATION: &str = "Unknown Protocol Operation";
/// `-ERR` text for a PUB/HPUB whose declared size exceeds `max_payload`.
pub const ERR_MAX_PAYLOAD: &str = "Maximum Payload Violation";
/// `-ERR` text for a control line longer than `max_control_line` (lower case in nats-server).
pub const ERR_MAX_CONTROL_LINE: &str = "maximum control line exceeded";
/// `-ERR` text for a SUB whose subject is not a valid subscription subject.
pub const ERR_INVALID_SUBJECT: &str = "Invalid Subject";
/// `-ERR` text for a PUB to a non-literal subject on a `pedantic` connection.
pub const ERR_INVALID_PUBLISH_SUBJECT: &str = "Invalid Publish Subject";
/// `-ERR` text for a CONNECT whose `protocol` is outside 0..=1.
pub const ERR_INVALID_CLIENT_PROTOCOL: &str = "invalid client protocol";
/// `-ERR` text for a CONNECT asking for `no_responders` without `headers`.
pub const ERR_NO_RESPONDERS_REQUIRES_HEADERS: &str = "no responders requires headers support";
/// `-ERR` text for failed authentication or an op before CONNECT when auth is required.
pub const ERR_AUTHORIZATION_VIOLATION: &str = "Authorization Violation";
/// `-ERR` text when no CONNECT arrived within the auth timeout.
pub const ERR_AUTHENTICATION_TIMEOUT: &str = "Authentication Timeout";
/// `-ERR` text when too many PINGs went unanswered.
pub const ERR_STALE_CONNECTION: &str = "Stale Connection";
/// `-ERR` text for a client that cannot keep up (edge-broker sends it; nats-server only closes).
pub const ERR_SLOW_CONSUMER: &str = "Slow Consumer";
/// `-ERR` text when the server is at its connection limit.
pub const ERR_MAX_CONNECTIONS: &str = "maximum connections exceeded";
/// `-ERR` text when the connection is at its subscription limit.
pub const ERR_MAX_SUBSCRIPTIONS: &str = "maximum subscriptions exceeded";
/// `-ERR` text when TLS is required but the client did not do TLS.
pub const ERR_TLS_REQUIRED: &str = "Secure Connection - TLS Required";

/// A reason the NATS decoder refused its input.
///
/// What a server does with it: if [`err_message`](Self::err_message) is `Some`, write
/// `-ERR '<message>'\r\n`; then, if [`closes_connection`](Self::closes_connection), flush and
/// close. When the connection stays open the offending op has already been consumed from the
/// buffer and decoding can continue with the next call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The bytes do not start a known protocol verb (or the verb is followed by junk).
    #[error("unknown protocol operation at byte {offset}: {snippet:?}")]
    UnknownOperation {
        /// Offset of the offending byte in the buffer.
        offset: usize,
        /// Up to 32 bytes from the start of the op, lossily as text.
        snippet: String,
    },
    /// A message payload was not followed by `\r\n`.
    #[error("payload of {size} bytes on {verb} not followed by CRLF")]
    BadPayloadTerminator {
        /// The verb whose payload is malformed.
        verb: &'static str,
        /// Declared payload size.
        size: usize,
    },
    /// The control line (arguments after the verb) is longer than allowed.
    #[error("control line of {len} bytes exceeds max_control_line {max}")]
    MaxControlLine {
        /// Length seen so far.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The declared payload size exceeds `max_payload` (checked before buffering it).
    #[error("{verb} payload of {size} bytes exceeds max_payload {max}")]
    MaxPayload {
        /// The verb.
        verb: &'static str,
        /// Declared (total) size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// Wrong number of arguments for the verb.
    #[error("{verb} parse error: {line:?}")]
    BadArguments {
        /// The verb.
        verb: &'static str,
        /// The argument text.
        line: String,
    },
    /// A size argument is missing, not decimal, or longer than 9 digits.
    #[error("{verb} bad or missing size: {line:?}")]
    BadSize {
        /// The verb.
        verb: &'static str,
        /// The argument text.
        line: String,
    },
    /// HPUB/HMSG header size larger than the total size.
    #[error("{verb} header size {header} larger than total size {total}")]
    HeaderLargerThanTotal {
        /// The verb.
        verb: &'static str,
        /// Header size.
        header: usize,
        /// Total size.
        total: usize,
    },
    /// A SUB subject that is not a valid subscription subject (connection stays open).
    #[error("invalid subscription subject {subject:?}")]
    InvalidSubject {
        /// The subject as sent.
        subject: String,
    },
    /// A subject, reply, sid or queue that is not UTF-8 (edge-broker refuses; nats-server passes it).
    #[error("{verb} argument is not UTF-8")]
    NotUtf8 {
        /// The verb.
        verb: &'static str,
    },
    /// CONNECT JSON that does not parse.
    #[error("CONNECT JSON invalid: {reason}")]
    BadConnectJson {
        /// serde_json's message.
        reason: String,
    },
    /// CONNECT `protocol` outside 0..=1.
    #[error("CONNECT asks for unsupported client protocol {protocol}")]
    InvalidClientProtocol {
        /// The requested protocol.
        protocol: i64,
    },
    /// CONNECT with `no_responders: true` but not `headers: true`.
    #[error("CONNECT asks for no_responders without headers")]
    NoRespondersRequiresHeaders,
    /// INFO JSON that does not parse.
    #[error("INFO JSON invalid: {reason}")]
    BadInfoJson {
        /// serde_json's message.
        reason: String,
    },
    /// A client sent `-ERR`; nats-server logs it and closes the connection.
    #[error("client sent -ERR {message:?}")]
    ClientSentErr {
        /// The client's message.
        message: String,
    },
}

impl DecodeError {
    /// The text nats-server 2.9.10 sends as `-ERR '<text>'` for this error, if it sends one.
    pub fn err_message(&self) -> Option<&'static str> {
        match self {
            Self::UnknownOperation { .. } | Self::BadPayloadTerminator { .. } => {
                Some(ERR_UNKNOWN_PROTOCOL_OPERATION)
            }
            Self::MaxControlLine { .. } => Some(ERR_MAX_CONTROL_LINE),
            Self::MaxPayload { .. } => Some(ERR_MAX_PAYLOAD),
            Self::InvalidSubject { .. } => Some(ERR_INVALID_SUBJECT),
            // Deviation: nats-server accepts non-UTF-8 subjects; we refuse them as invalid.
            Self::NotUtf8 { .. } => Some(ERR_INVALID_SUBJECT),
            Self::InvalidClientProtocol { .. } => Some(ERR_INVALID_CLIENT_PROTOCOL),
            Self::NoRespondersRequiresHeaders => Some(ERR_NO_RESPONDERS_REQUIRES_HEADERS),
            Self::BadArguments { .. }
            | Self::BadSize { .. }
            | Self::HeaderLargerThanTotal { .. }
            | Self::BadConnectJson { .. }
            | Self::BadInfoJson { .. }
            | Self::ClientSentErr { .. } => None,
        }
    }

    /// Whether nats-server closes the connection after this error.
    pub fn closes_connection(&self) -> bool {
        !matches!(self, Self::InvalidSubject { .. })
    }

    /// The `-ERR` line (`-ERR '<text>'\r\n`) to send, if any.
    pub fn err_line(&self) -> Option<String> {
        self.err_message().map(|m| format!("-ERR '{m}'\r\n"))
    }
}

/// An `-ERR` a NATS server sends for session-level conditions the decoder cannot see
/// (authentication, permissions, limits, liveness). Wording and close behaviour follow
/// nats-server 2.9.10.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerError {
    /// Unknown verb / malformed framing.
    UnknownProtocolOperation,
    /// Declared payload larger than `max_payload`.
    MaxPayloadViolation,
    /// Control line too long.
    MaxControlLineExceeded,
    /// SUB to an invalid subject (connection stays open).
    InvalidSubject,
    /// PUB to a non-literal subject with `pedantic` on (message is still delivered).
    InvalidPublishSubject,
    /// Authentication failed, or an op other than CONNECT came first while auth is required.
    AuthorizationViolation,
    /// No CONNECT within the authentication timeout.
    AuthenticationTimeout,
    /// Too many unanswered PINGs.
    StaleConnection,
    /// The client does not drain its messages fast enough.
    SlowConsumer,
    /// Server-wide connection limit reached.
    MaxConnectionsExceeded,
    /// Per-connection subscription limit reached (connection stays open).
    MaxSubscriptionsExceeded,
    /// CONNECT `protocol` not supported.
    InvalidClientProtocol,
    /// CONNECT `no_responders` without `headers`.
    NoRespondersRequiresHeaders,
    /// TLS required.
    TlsRequired,
    /// Publish permission denied for the subject (connection stays open).
    PublishPermissionViolation(String),
    /// Subscribe permission denied for the subject (connection stays open).
    SubscribePermissionViolation(String),
}

impl ServerError {
    /// The text inside `-ERR '...'`.
    pub fn err_message(&self) -> Cow<'static, str> {
        match self {
            Self::UnknownProtocolOperation => ERR_UNKNOWN_PROTOCOL_OPERATION.into(),
            Self::MaxPayloadViolation => ERR_MAX_PAYLOAD.into(),
            Self::MaxControlLineExceeded => ERR_MAX_CONTROL_LINE.into(),
            Self::InvalidSubject => ERR_INVALID_SUBJECT.into(),
            Self::InvalidPublishSubject => ERR_INVALID_PUBLISH_SUBJECT.into(),
            Self::AuthorizationViolation => ERR_AUTHORIZATION_VIOLATION.into(),
            Self::AuthenticationTimeout => ERR_AUTHENTICATION_TIMEOUT.into(),
            Self::StaleConnection => ERR_STALE_CONNECTION.into(),
            Self::SlowConsumer => ERR_SLOW_CONSUMER.into(),
            Self::MaxConnectionsExceeded => ERR_MAX_CONNECTIONS.into(),
            Self::MaxSubscriptionsExceeded => ERR_MAX_SUBSCRIPTIONS.into(),
            Self::InvalidClientProtocol => ERR_INVALID_CLIENT_PROTOCOL.into(),
            Self::NoRespondersRequiresHeaders => ERR_NO_RESPONDERS_REQUIRES_HEADERS.into(),
            Self::TlsRequired => ERR_TLS_REQUIRED.into(),
            // Go's %q: a double-quoted string.
            Self::PublishPermissionViolation(s) => {
                format!("Permissions Violation for Publish to {s:?}").into()
            }
            Self::SubscribePermissionViolation(s) => {
                format!("Permissions Violation for Subscription to {s:?}").into()
            }
        }
    }

    /// Whether nats-server closes the connection after sending this error.
    pub fn closes_connection(&self) -> bool {
        !matches!(
            self,
            Self::InvalidSubject
                | Self::InvalidPublishSubject
                | Self::MaxSubscriptionsExceeded
                | Self::PublishPermissionViolation(_)
                | Self::SubscribePermissionViolation(_)
        )
    }

    /// The full `-ERR '<text>'\r\n` line.
    pub fn err_line(&self) -> String {
        format!("-ERR '{}'\r\n", self.err_message())
    }
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.err_message())
    }
}

impl std::error::Error for ServerError {}
