//! The `NATS/1.0` header block carried by HPUB and HMSG.
//!
//! Wire form: a status line `NATS/1.0[ <3-digit code>[ <description>]]\r\n`, then zero or
//! more `Key: Value\r\n` lines, then an empty line `\r\n`. Keys are kept exactly as sent
//! (lookups are case-sensitive, as in nats.go since headers became case-preserving); a key
//! may repeat and every value is kept, in order. The decoder is separate from the protocol
//! decoder on purpose: nats-server does not inspect header blocks, so neither does
//! [`decode_client_op`](super::decode_client_op) — call [`HeaderMap::decode`] on
//! [`Pub::headers`](super::Pub::headers) when you need them.

use bytes::{BufMut, BytesMut};

const VERSION_LINE: &[u8] = b"NATS/1.0";

/// Why a header block was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// The block does not start with `NATS/1.0`.
    #[error("header block does not start with NATS/1.0")]
    MissingVersion,
    /// The status code after `NATS/1.0 ` is not three digits.
    #[error("bad status code {0:?}")]
    BadStatus(String),
    /// A line is not terminated by `\r\n`, or the block misses its final empty line.
    #[error("header block not terminated by CRLF CRLF")]
    Unterminated,
    /// A header line without `:`, with an empty key or a key containing whitespace.
    #[error("malformed header line {0:?}")]
    BadLine(String),
    /// The block is not UTF-8.
    #[error("header block is not UTF-8")]
    NotUtf8,
}

/// A parsed NATS header block: optional status, then ordered, possibly repeated entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderMap {
    status: Option<u16>,
    description: Option<String>,
    entries: Vec<(String, String)>,
}

impl HeaderMap {
    /// An empty block (`NATS/1.0\r\n\r\n`).
    pub fn new() -> Self {
        Self::default()
    }

    /// A block with a status line, e.g. `NATS/1.0 503` (no responders) or `408 Request Timeout`.
    pub fn with_status(code: u16, description: Option<&str>) -> Self {
        Self {
            status: Some(code),
            description: description.map(str::to_owned),
            entries: Vec::new(),
        }
    }

    /// The status code, if the status line has one.
    pub fn status(&self) -> Option<u16> {
        self.status
    }

    /// The status description, if any.
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }

    /// Adds a value for `key`, keeping earlier values of the same key.
    pub fn append(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.entries.push((key.into(), value.into()));
    }

    /// Replaces all values of `key` with one value.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<String>) {
        let key = key.into();
        self.entries.retain(|(k, _)| *k != key);
        self.entries.push((key, value.into()));
    }

    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// All values of `key`, in the order they were sent.
    pub fn get_all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.entries
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// All entries in wire order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + Clone {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Number of entries (a repeated key counts once per value).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there are no entries (a status line may still be present).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes [`encode`](Self::encode) will write.
    pub fn encoded_len(&self) -> usize {
        let mut n = VERSION_LINE.len() + 2 + 2;
        if self.status.is_some() {
            n += 4;
            if let Some(d) = &self.description {
                n += 1 + d.len();
            }
        }
        for (k, v) in &self.entries {
            n += k.len() + 2 + v.len() + 2;
        }
        n
    }

    /// Appends the wire form (status line, entries, empty line) to `dst`.
    ///
    /// Keys and values are written as given; callers must not put `\r`, `\n` (or `:` in a key)
    /// into them. A status code is written as three digits.
    pub fn encode(&self, dst: &mut BytesMut) {
        dst.reserve(self.encoded_len());
        dst.put_slice(VERSION_LINE);
        if let Some(code) = self.status {
            dst.put_slice(format!(" {code:03}").as_bytes());
            if let Some(d) = &self.description {
                dst.put_u8(b' ');
                dst.put_slice(d.as_bytes());
            }
        }
        dst.put_slice(b"\r\n");
        for (k, v) in &self.entries {
            dst.put_slice(k.as_bytes());
            dst.put_slice(b": ");
            dst.put_slice(v.as_bytes());
            dst.put_slice(b"\r\n");
        }
        dst.put_slice(b"\r\n");
    }

    /// Parses a complete header block (exactly the header bytes of an HPUB/HMSG).
    ///
    /// Values have leading and trailing spaces/tabs trimmed, as Go's textproto does.
    pub fn decode(block: &[u8]) -> Result<Self, HeaderError> {
        let text = std::str::from_utf8(block).map_err(|_| HeaderError::NotUtf8)?;
        let rest = text
            .strip_prefix("NATS/1.0")
            .ok_or(HeaderError::MissingVersion)?;
        let (status_line, mut rest) = rest.split_once("\r\n").ok_or(HeaderError::Unterminated)?;
        let mut map = HeaderMap::new();
        let status_line = status_line.trim_start_matches([' ', '\t']);
        if !status_line.is_empty() {
            let (code, desc) = match status_line.split_once([' ', '\t']) {
                Some((c, d)) => (c, Some(d.trim())),
                None => (status_line, None),
            };
            if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
                return Err(HeaderError::BadStatus(code.to_owned()));
            }
            let code: u16 = code
                .parse()
                .map_err(|_| HeaderError::BadStatus(code.to_owned()))?;
            map.status = Some(code);
            map.description = desc.filter(|d| !d.is_empty()).map(str::to_owned);
        }
        loop {
            let (line, next) = rest.split_once("\r\n").ok_or(HeaderError::Unterminated)?;
            rest = next;
            if line.is_empty() {
                break;
            }
            let (k, v) = line
                .split_once(':')
                .ok_or_else(|| HeaderError::BadLine(line.to_owned()))?;
            if k.is_empty()
                || k.bytes()
                    .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
            {
                return Err(HeaderError::BadLine(line.to_owned()));
            }
            map.entries
                .push((k.to_owned(), v.trim_matches([' ', '\t']).to_owned()));
        }
        if !rest.is_empty() {
            // Bytes after the empty line: the header size did not match the block.
            return Err(HeaderError::Unterminated);
        }
        Ok(map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_status_only_503() {
        let h = HeaderMap::decode(b"NATS/1.0 503\r\n\r\n").unwrap();
        assert_eq!(h.status(), Some(503));
        assert_eq!(h.description(), None);
        assert!(h.is_empty());
    }

    #[test]
    fn decodes_status_with_description_and_multi_values_in_order() {
        let h = HeaderMap::decode(b"NATS/1.0 408 Request Timeout\r\nA: 1\r\nB:2\r\nA:  3 \r\n\r\n")
            .unwrap();
        assert_eq!(h.status(), Some(408));
        assert_eq!(h.description(), Some("Request Timeout"));
        assert_eq!(h.get("A"), Some("1"));
        assert_eq!(h.get_all("A").collect::<Vec<_>>(), vec!["1", "3"]);
        assert_eq!(h.get("B"), Some("2"));
        assert_eq!(h.get("a"), None, "lookups are case-sensitive");
        assert_eq!(
            h.iter().collect::<Vec<_>>(),
            vec![("A", "1"), ("B", "2"), ("A", "3")]
        );
    }

    #[test]
    fn encode_matches_wire_form() {
        let mut h = HeaderMap::with_status(503, None);
        h.append("Nats-Subject", "foo");
        let mut b = BytesMut::new();
        h.encode(&mut b);
        assert_eq!(&b[..], b"NATS/1.0 503\r\nNats-Subject: foo\r\n\r\n");
        assert_eq!(b.len(), h.encoded_len());
    }

    #[test]
    fn insert_replaces_all_values() {
        let mut h = HeaderMap::new();
        h.append("k", "1");
        h.append("k", "2");
        h.insert("k", "3");
        assert_eq!(h.get_all("k").collect::<Vec<_>>(), vec!["3"]);
    }

    #[test]
    fn refuses_malformed_blocks() {
        assert_eq!(
            HeaderMap::decode(b"HTTP/1.1\r\n\r\n"),
            Err(HeaderError::MissingVersion)
        );
        assert_eq!(
            HeaderMap::decode(b"NATS/1.0 5x3\r\n\r\n"),
            Err(HeaderError::BadStatus("5x3".into()))
        );
        assert_eq!(
            HeaderMap::decode(b"NATS/1.0\r\nA: 1\r\n"),
            Err(HeaderError::Unterminated)
        );
        assert_eq!(
            HeaderMap::decode(b"NATS/1.0\r\nnocolon\r\n\r\n"),
            Err(HeaderError::BadLine("nocolon".into()))
        );
        assert_eq!(
            HeaderMap::decode(b"NATS/1.0\r\n: v\r\n\r\n"),
            Err(HeaderError::BadLine(": v".into()))
        );
        assert_eq!(
            HeaderMap::decode(b"NATS/1.0\r\n\r\nextra"),
            Err(HeaderError::Unterminated)
        );
        assert_eq!(
            HeaderMap::decode(b"NATS/1.0\r\n\xff: 1\r\n\r\n"),
            Err(HeaderError::NotUtf8)
        );
    }
}
