//! Wire primitives shared by the decoder and the encoder: a bounds-checked reader over a
//! frozen frame, and a write sink that either counts or writes, so the encoder computes the
//! remaining length with the very code that later writes the bytes.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::error::DecodeError;
use super::ids::PacketType;
use super::string::MqttString;

/// Largest value a variable byte integer (4 bytes) can hold.
pub(crate) const VBI_MAX: u32 = 268_435_455;

/// Number of bytes `v` takes as a variable byte integer (`v` ≤ [`VBI_MAX`]).
pub(crate) const fn vbi_len(v: u32) -> usize {
    if v < 128 {
        1
    } else if v < 16_384 {
        2
    } else if v < 2_097_152 {
        3
    } else {
        4
    }
}

/// Outcome of parsing a variable byte integer from a possibly incomplete buffer.
pub(crate) enum VbiParse {
    /// Value and the number of bytes it used.
    Done(u32, usize),
    /// More bytes are needed.
    Incomplete,
    /// A fifth byte would be needed: malformed.
    TooLong,
    /// Not the shortest encoding (a trailing zero byte): malformed (MQTT-1.5.5-1).
    NonMinimal,
}

/// Parses a variable byte integer at the start of `bytes`.
pub(crate) fn parse_vbi(bytes: &[u8]) -> VbiParse {
    let mut value: u32 = 0;
    for (i, b) in bytes.iter().take(4).enumerate() {
        value |= u32::from(b & 0x7F) << (7 * i);
        if b & 0x80 == 0 {
            if i > 0 && *b == 0 {
                return VbiParse::NonMinimal;
            }
            return VbiParse::Done(value, i + 1);
        }
    }
    if bytes.len() >= 4 {
        VbiParse::TooLong
    } else {
        VbiParse::Incomplete
    }
}

/// Where encoded bytes go: a real buffer or a byte counter.
pub(crate) trait Sink {
    /// Appends one byte.
    fn u8(&mut self, v: u8);
    /// Appends a big-endian u16.
    fn u16(&mut self, v: u16);
    /// Appends a big-endian u32.
    fn u32(&mut self, v: u32);
    /// Appends raw bytes.
    fn slice(&mut self, v: &[u8]);

    /// Appends a variable byte integer (caller guarantees `v` ≤ [`VBI_MAX`]).
    fn vbi(&mut self, mut v: u32) {
        loop {
            let mut b = (v & 0x7F) as u8;
            v >>= 7;
            if v > 0 {
                b |= 0x80;
            }
            self.u8(b);
            if v == 0 {
                break;
            }
        }
    }
}

/// A sink that only counts.
#[derive(Default)]
pub(crate) struct Counter(pub usize);

impl Sink for Counter {
    fn u8(&mut self, _: u8) {
        self.0 += 1;
    }
    fn u16(&mut self, _: u16) {
        self.0 += 2;
    }
    fn u32(&mut self, _: u32) {
        self.0 += 4;
    }
    fn slice(&mut self, v: &[u8]) {
        self.0 += v.len();
    }
}

impl Sink for BytesMut {
    fn u8(&mut self, v: u8) {
        self.put_u8(v);
    }
    fn u16(&mut self, v: u16) {
        self.put_u16(v);
    }
    fn u32(&mut self, v: u32) {
        self.put_u32(v);
    }
    fn slice(&mut self, v: &[u8]) {
        self.put_slice(v);
    }
}

/// Bounds-checked reader over the body of one frame. Every read that runs past the end is a
/// [`DecodeError::Truncated`] naming the field.
pub(crate) struct Reader {
    pub(crate) buf: Bytes,
    pub(crate) packet: PacketType,
}

impl Reader {
    pub(crate) fn new(buf: Bytes, packet: PacketType) -> Self {
        Reader { buf, packet }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    fn need(&self, n: usize, field: &'static str) -> Result<(), DecodeError> {
        if self.buf.len() < n {
            Err(DecodeError::Truncated {
                packet: self.packet,
                field,
            })
        } else {
            Ok(())
        }
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        self.need(1, field)?;
        Ok(self.buf.get_u8())
    }

    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        self.need(2, field)?;
        Ok(self.buf.get_u16())
    }

    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        self.need(4, field)?;
        Ok(self.buf.get_u32())
    }

    pub(crate) fn vbi(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        match parse_vbi(&self.buf) {
            VbiParse::Done(v, n) => {
                self.buf.advance(n);
                Ok(v)
            }
            VbiParse::Incomplete => Err(DecodeError::Truncated {
                packet: self.packet,
                field,
            }),
            VbiParse::TooLong => Err(DecodeError::VarIntTooLong {
                packet: self.packet,
                field,
            }),
            VbiParse::NonMinimal => Err(DecodeError::Malformed {
                packet: self.packet,
                detail: "variable byte integer not in its shortest form",
            }),
        }
    }

    /// Takes the next `n` bytes as a zero-copy slice.
    pub(crate) fn take(&mut self, n: usize, field: &'static str) -> Result<Bytes, DecodeError> {
        self.need(n, field)?;
        Ok(self.buf.split_to(n))
    }

    /// Takes everything left.
    pub(crate) fn rest(&mut self) -> Bytes {
        self.buf.split_off(0)
    }

    /// Binary Data: two-byte length, then bytes.
    pub(crate) fn binary(&mut self, field: &'static str) -> Result<Bytes, DecodeError> {
        let len = self.u16(field)?;
        self.take(usize::from(len), field)
    }

    /// UTF-8 Encoded String: two-byte length, then checked bytes.
    pub(crate) fn string(&mut self, field: &'static str) -> Result<MqttString, DecodeError> {
        let raw = self.binary(field)?;
        MqttString::from_bytes(raw).map_err(|source| DecodeError::InvalidString {
            packet: self.packet,
            field,
            source,
        })
    }

    /// [`Reader::string`], with `inspect`'s answer about the checked text
    /// ([`MqttString::from_bytes_inspect`]).
    pub(crate) fn string_inspect<T>(
        &mut self,
        field: &'static str,
        inspect: impl FnOnce(&str) -> T,
    ) -> Result<(MqttString, T), DecodeError> {
        let raw = self.binary(field)?;
        MqttString::from_bytes_inspect(raw, inspect).map_err(|source| DecodeError::InvalidString {
            packet: self.packet,
            field,
            source,
        })
    }

    /// Fails if bytes are left over.
    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes {
                packet: self.packet,
                extra: self.buf.len(),
            })
        }
    }
}
