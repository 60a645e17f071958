//! [`MqttString`]: an MQTT "UTF-8 Encoded String" held as a zero-copy [`Bytes`] slice.

use std::fmt;
use std::ops::Deref;

use bytes::Bytes;

/// Why some bytes are not a valid MQTT string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidString {
    /// The bytes are not well-formed UTF-8 (spec 1.5.4, MQTT-1.5.4-1).
    #[error("string is not well-formed UTF-8 (first bad byte at offset {valid_up_to})")]
    NotUtf8 {
        /// Length of the valid prefix.
        valid_up_to: usize,
    },
    /// The string contains U+0000 (MQTT-1.5.4-2).
    #[error("string contains the null character U+0000 at offset {offset}")]
    NullChar {
        /// Byte offset of the first U+0000.
        offset: usize,
    },
    /// Longer than the 65,535 bytes a two-byte length prefix can describe.
    #[error("string is {len} bytes long, more than the 65535 an MQTT string can hold")]
    TooLong {
        /// Length in bytes.
        len: usize,
    },
}

/// A UTF-8 string without U+0000, at most 65,535 bytes, backed by [`Bytes`] so decoded
/// strings share the frame's memory. The invariant is checked once when it is built.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MqttString(Bytes);

/// Checks the MQTT string rules on raw bytes.
pub fn check_str_bytes(bytes: &[u8]) -> Result<&str, InvalidString> {
    if bytes.len() > usize::from(u16::MAX) {
        return Err(InvalidString::TooLong { len: bytes.len() });
    }
    let s = std::str::from_utf8(bytes).map_err(|e| InvalidString::NotUtf8 {
        valid_up_to: e.valid_up_to(),
    })?;
    if let Some(offset) = bytes.iter().position(|b| *b == 0) {
        return Err(InvalidString::NullChar { offset });
    }
    Ok(s)
}

impl MqttString {
    /// The empty string.
    pub const fn new() -> Self {
        MqttString(Bytes::new())
    }

    /// Wraps a static string, checking the MQTT rules.
    pub fn from_static(s: &'static str) -> Result<Self, InvalidString> {
        check_str_bytes(s.as_bytes())?;
        Ok(MqttString(Bytes::from_static(s.as_bytes())))
    }

    /// Wraps bytes (zero-copy), checking UTF-8, U+0000 and length.
    pub fn from_bytes(bytes: Bytes) -> Result<Self, InvalidString> {
        check_str_bytes(&bytes)?;
        Ok(MqttString(bytes))
    }

    /// [`MqttString::from_bytes`], also handing the checked text to `inspect` (its answer
    /// returned beside the string): a caller that looks at the text once it is checked does
    /// not pay [`MqttString::as_str`]'s second UTF-8 check (this crate forbids `unsafe`).
    pub fn from_bytes_inspect<T>(
        bytes: Bytes,
        inspect: impl FnOnce(&str) -> T,
    ) -> Result<(Self, T), InvalidString> {
        let seen = inspect(check_str_bytes(&bytes)?);
        Ok((MqttString(bytes), seen))
    }

    /// The string as `&str`.
    pub fn as_str(&self) -> &str {
        // The invariant was checked at construction; the fallback is unreachable.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The underlying bytes (cheap clone of the shared buffer).
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    /// Consumes the string and returns its bytes.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True for the empty string.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Deref for MqttString {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for MqttString {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Debug for MqttString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for MqttString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TryFrom<&str> for MqttString {
    type Error = InvalidString;
    fn try_from(s: &str) -> Result<Self, InvalidString> {
        check_str_bytes(s.as_bytes())?;
        Ok(MqttString(Bytes::copy_from_slice(s.as_bytes())))
    }
}

impl TryFrom<String> for MqttString {
    type Error = InvalidString;
    fn try_from(s: String) -> Result<Self, InvalidString> {
        check_str_bytes(s.as_bytes())?;
        Ok(MqttString(Bytes::from(s)))
    }
}

impl TryFrom<Bytes> for MqttString {
    type Error = InvalidString;
    fn try_from(b: Bytes) -> Result<Self, InvalidString> {
        MqttString::from_bytes(b)
    }
}

impl PartialEq<str> for MqttString {
    fn eq(&self, other: &str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl PartialEq<&str> for MqttString {
    fn eq(&self, other: &&str) -> bool {
        self.0 == other.as_bytes()
    }
}
