//! On-disk format: segment header, record frames, versioned record body (see the crate docs).

use bytes::Bytes;
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use std::sync::Arc;

use crate::record::{Destination, Header, NewRecord, Record, RecordFields, Source, Text};

/// Magic bytes opening every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"EDGESEG\0";
/// Magic bytes opening every cursor file.
pub const CURSOR_MAGIC: [u8; 8] = *b"EDGECUR\0";
/// Segment format version written by this build: version 2 segments hold `RecordBody::V2`
/// records; version 1 segments (written before destinations were stored) hold `V1` only and
/// stay readable.
pub const SEGMENT_VERSION: u16 = 2;
/// Oldest segment format version this build reads.
pub const OLDEST_SEGMENT_VERSION: u16 = 1;
/// Cursor file format version written by this build: two slots (see [`cursor_slot`]).
pub const CURSOR_VERSION: u16 = 2;
/// The single-copy cursor file of builds before version 2 (24 bytes); still read.
pub const CURSOR_VERSION_V1: u16 = 1;
/// Segment header length in bytes.
pub const SEGMENT_HEADER_LEN: usize = 24;
/// Length of a version 1 cursor file in bytes.
pub const CURSOR_FILE_LEN: usize = 24;
/// Length of one slot of a version 2 cursor file.
pub const CURSOR_SLOT_LEN: usize = 32;
/// File position of slot `i` of a version 2 cursor file is `i * CURSOR_SLOT_SPACING`: the two
/// copies sit in different 4 KiB blocks, so a torn write of one cannot damage the other.
pub const CURSOR_SLOT_SPACING: u64 = 4096;
/// Length of a version 2 cursor file (two slots).
pub const CURSOR_FILE_V2_LEN: u64 = CURSOR_SLOT_SPACING + CURSOR_SLOT_LEN as u64;
/// Frame header length: `len u32 LE` + `crc32c u32 LE`.
pub const FRAME_HEADER_LEN: usize = 8;
/// The smallest frame any body version can make (a version 1 body with empty strings and
/// payload and offset and timestamp below 128 is 8 bytes). Recovery uses it to bound how many
/// records a damaged byte range can have held.
pub const MIN_FRAME_LEN: usize = FRAME_HEADER_LEN + 8;

/// Borrowed byte string that postcard writes as `varint len + raw bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blob<'a>(pub &'a [u8]);

impl Serialize for Blob<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Blob<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Blob<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("borrowed bytes")
            }
            fn visit_borrowed_bytes<E: de::Error>(self, v: &'de [u8]) -> Result<Self::Value, E> {
                Ok(Blob(v))
            }
        }
        d.deserialize_bytes(V)
    }
}

/// Versioned record body. New versions are added as new variants; old ones stay readable.
#[derive(Debug, Serialize, Deserialize)]
pub enum RecordBody<'a> {
    /// Format version 1: no destination (the forwarder routes it when it reads it).
    #[serde(borrow)]
    V1(RecordV1<'a>),
    /// Format version 2: the upstream destination decided at ingest travels with the record.
    #[serde(borrow)]
    V2(RecordV2<'a>),
}

/// Version 2 of a record body (field order is the wire order).
#[derive(Debug, Serialize, Deserialize)]
pub struct RecordV2<'a> {
    /// Log offset.
    pub offset: u64,
    /// Ingest time, unix ms.
    pub timestamp_ms: u64,
    /// Protocol.
    pub source: Source,
    /// Topic / subject.
    pub topic: &'a str,
    /// Client id.
    pub client_id: &'a str,
    /// Kafka topic.
    pub kafka_topic: &'a str,
    /// Record key, if any.
    #[serde(borrow)]
    pub key: Option<Blob<'a>>,
    /// Pinned partition, if any.
    pub partition: Option<i32>,
    /// Headers.
    #[serde(borrow)]
    pub headers: Vec<HeaderV1<'a>>,
    /// Payload.
    #[serde(borrow)]
    pub payload: Blob<'a>,
}

/// Version 1 of a record body (field order is the wire order).
#[derive(Debug, Serialize, Deserialize)]
pub struct RecordV1<'a> {
    /// Log offset.
    pub offset: u64,
    /// Ingest time, unix ms.
    pub timestamp_ms: u64,
    /// Protocol.
    pub source: Source,
    /// Topic / subject.
    pub topic: &'a str,
    /// Client id.
    pub client_id: &'a str,
    /// Headers.
    #[serde(borrow)]
    pub headers: Vec<HeaderV1<'a>>,
    /// Payload.
    #[serde(borrow)]
    pub payload: Blob<'a>,
}

/// Version 1 of a header.
#[derive(Debug, Serialize, Deserialize)]
pub struct HeaderV1<'a> {
    /// Name.
    pub key: &'a str,
    /// Value.
    #[serde(borrow)]
    pub value: Blob<'a>,
}

/// Builds the borrowed (version 2) body of `record` at `offset`, for encoding.
pub fn body_ref(offset: u64, record: &NewRecord) -> RecordBody<'_> {
    let destination = &record.destination;
    RecordBody::V2(RecordV2 {
        offset,
        timestamp_ms: record.timestamp_ms,
        source: record.source,
        topic: &record.topic,
        client_id: &record.client_id,
        kafka_topic: &destination.topic,
        key: destination.key.as_deref().map(Blob),
        partition: destination.partition,
        headers: headers_ref(&record.headers),
        payload: Blob(&record.payload),
    })
}

/// Builds the borrowed body of a record that was read back (version 1 if it has no
/// destination), for measuring or re-encoding it.
pub fn body_of(record: &Record) -> RecordBody<'_> {
    match &record.destination {
        Some(destination) => RecordBody::V2(RecordV2 {
            offset: record.offset,
            timestamp_ms: record.timestamp_ms,
            source: record.source,
            topic: &record.topic,
            client_id: &record.client_id,
            kafka_topic: &destination.topic,
            key: destination.key.as_deref().map(Blob),
            partition: destination.partition,
            headers: headers_ref(&record.headers),
            payload: Blob(&record.payload),
        }),
        None => RecordBody::V1(RecordV1 {
            offset: record.offset,
            timestamp_ms: record.timestamp_ms,
            source: record.source,
            topic: &record.topic,
            client_id: &record.client_id,
            headers: headers_ref(&record.headers),
            payload: Blob(&record.payload),
        }),
    }
}

fn headers_ref(headers: &[Header]) -> Vec<HeaderV1<'_>> {
    headers
        .iter()
        .map(|h| HeaderV1 {
            key: &h.key,
            value: Blob(&h.value),
        })
        .collect()
}

/// Exact postcard length of a body.
pub fn body_len(body: &RecordBody<'_>) -> usize {
    // The Size flavor cannot fail for these types; 0 would only under-reserve, never corrupt.
    postcard::serialize_with_flavor::<_, postcard::ser_flavors::Size, usize>(
        body,
        postcard::ser_flavors::Size::default(),
    )
    .unwrap_or(0)
}

/// Appends one frame (`len`, `crc32c`, body) to `out`. Returns the frame length.
pub fn encode_frame(body: &RecordBody<'_>, out: &mut Vec<u8>) -> Result<usize, postcard::Error> {
    let start = out.len();
    out.extend_from_slice(&[0u8; FRAME_HEADER_LEN]);
    let taken = std::mem::take(out);
    *out = postcard::to_extend(body, taken)?;
    let body_bytes = &out[start + FRAME_HEADER_LEN..];
    let len = u32::try_from(body_bytes.len()).map_err(|_| postcard::Error::SerializeBufferFull)?;
    let crc = crc32c::crc32c(body_bytes);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    Ok(out.len() - start)
}

/// Exact body length of `record` appended at `offset`: the postcard encoding of its version 2
/// body ([`body_ref`]), computed from the field lengths without serializing (the size of a
/// frame is asked on every append; [`encode_record_frame`] writes the same bytes).
pub fn record_body_len(offset: u64, record: &NewRecord) -> usize {
    let destination = &record.destination;
    let mut len = 1 // variant index 1 (V2)
        + varint_len(offset)
        + varint_len(record.timestamp_ms)
        + varint_len(source_index(record.source))
        + str_len(record.topic.len())
        + str_len(record.client_id.len())
        + str_len(destination.topic.len())
        + 1 // key: Option tag
        + 1 // partition: Option tag
        + varint_len(record.headers.len() as u64)
        + str_len(record.payload.len());
    if let Some(key) = &destination.key {
        len += str_len(key.len());
    }
    if let Some(partition) = destination.partition {
        len += varint_len(u64::from(zigzag(partition)));
    }
    for header in &record.headers {
        len += str_len(header.key.len()) + str_len(header.value.len());
    }
    len
}

/// Appends the frame of `record` at `offset` to `out` in one pass: the same bytes as
/// [`encode_frame`] of [`body_ref`] (the format spec's version 2 body, postcard's encoding
/// written out field by field), without serde. Returns the frame length.
///
/// The length field is what was written (no second walk over the fields to size it first);
/// debug builds check it against [`record_body_len`], which sizes records before they are
/// queued.
pub fn encode_record_frame(
    offset: u64,
    record: &NewRecord,
    out: &mut Vec<u8>,
) -> Result<usize, postcard::Error> {
    let start = begin_frame(offset, out);
    put_record_tail(out, record.fields(), record.header_pairs());
    debug_assert_eq!(
        out.len() - start - FRAME_HEADER_LEN,
        record_body_len(offset, record),
        "record_body_len disagrees with the encoder"
    );
    finish_frame(start, out)
}

/// Appends the frame of a record at `offset` whose tail (its body after the offset, see
/// [`crate::EncodedRecords`]) was encoded already: the bytes [`encode_record_frame`] writes for
/// the record. Returns the frame length.
pub fn encode_tail_frame(
    offset: u64,
    tail: &[u8],
    out: &mut Vec<u8>,
) -> Result<usize, postcard::Error> {
    let start = begin_frame(offset, out);
    out.extend_from_slice(tail);
    finish_frame(start, out)
}

/// Exact frame length of a record at `offset` whose tail is `tail_len` bytes.
pub fn tail_frame_len(offset: u64, tail_len: usize) -> usize {
    FRAME_HEADER_LEN + tail_body_len(offset, tail_len)
}

/// Body length of a record at `offset` whose tail is `tail_len` bytes: the variant index and
/// the offset come before the tail.
pub(crate) fn tail_body_len(offset: u64, tail_len: usize) -> usize {
    1 + varint_len(offset) + tail_len
}

/// Starts a frame: a header to fill in, the version 2 variant index, the offset. Returns where
/// the frame starts.
fn begin_frame(offset: u64, out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0u8; FRAME_HEADER_LEN]);
    out.push(1);
    put_varint(out, offset);
    start
}

/// Fills in the header of the frame from `start` to the end of `out` (length, CRC of the
/// body). Returns the frame length; a body too long for the length field is cut off again.
fn finish_frame(start: usize, out: &mut Vec<u8>) -> Result<usize, postcard::Error> {
    let body = &out[start + FRAME_HEADER_LEN..];
    let Ok(len) = u32::try_from(body.len()) else {
        out.truncate(start);
        return Err(postcard::Error::SerializeBufferFull);
    };
    let crc = crc32c::crc32c(body);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    Ok(out.len() - start)
}

/// Appends a version 2 body's fields after the offset (the *tail*): timestamp, source, topic,
/// client id, destination, headers (name, value), payload.
pub(crate) fn put_record_tail<'h, H>(out: &mut Vec<u8>, fields: RecordFields<'_>, headers: H)
where
    H: Iterator<Item = (&'h [u8], &'h [u8])> + Clone,
{
    let destination = fields.destination;
    put_varint(out, fields.timestamp_ms);
    put_varint(out, source_index(fields.source));
    put_bytes(out, fields.topic.as_bytes());
    put_bytes(out, fields.client_id.as_bytes());
    put_bytes(out, destination.topic.as_bytes());
    match &destination.key {
        Some(key) => {
            out.push(1);
            put_bytes(out, key);
        }
        None => out.push(0),
    }
    match destination.partition {
        Some(partition) => {
            out.push(1);
            put_varint(out, u64::from(zigzag(partition)));
        }
        None => out.push(0),
    }
    put_varint(out, headers.clone().count() as u64);
    for (key, value) in headers {
        put_bytes(out, key);
        put_bytes(out, value);
    }
    put_bytes(out, fields.payload);
}

/// `Source` as postcard writes a unit variant: its index.
fn source_index(source: Source) -> u64 {
    match source {
        Source::Mqtt => 0,
        Source::Nats => 1,
    }
}

/// Bytes of a LEB128 varint of `v` (postcard's integer and length encoding): ⌈bits / 7⌉,
/// computed as `(9 * (bits - 1) + 73) / 64` (a multiply and a shift, no division; equal for
/// every bit count 1..=64, tested). Asked ~11 times per record before it is queued.
fn varint_len(v: u64) -> usize {
    let high_bit = 63 - (v | 1).leading_zeros() as usize;
    (high_bit * 9 + 73) / 64
}

/// Bytes of a string or byte string of `n` bytes: varint length, then the bytes.
fn str_len(n: usize) -> usize {
    varint_len(n as u64) + n
}

#[inline]
fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

#[inline]
fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// postcard's zigzag encoding of an `i32`.
fn zigzag(v: i32) -> u32 {
    ((v << 1) ^ (v >> 31)) as u32
}

/// Why a frame could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// Fewer bytes than the frame header or announced body.
    Incomplete,
    /// A zero length (zero-filled region) or one above the cap.
    BadLength(u32),
    /// Checksum mismatch.
    BadCrc,
    /// Body does not decode as a known version.
    Undecodable(String),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Incomplete => f.write_str("incomplete frame"),
            FrameError::BadLength(l) => write!(f, "implausible frame length {l}"),
            FrameError::BadCrc => f.write_str("crc32c mismatch"),
            FrameError::Undecodable(e) => write!(f, "undecodable body: {e}"),
        }
    }
}

/// Reads the frame header at the start of `buf`: (body length, crc).
pub fn frame_header(buf: &[u8], max_record: u32) -> Result<(usize, u32), FrameError> {
    if buf.len() < FRAME_HEADER_LEN {
        return Err(FrameError::Incomplete);
    }
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let crc = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    if len == 0 || len > max_record {
        return Err(FrameError::BadLength(len));
    }
    Ok((len as usize, crc))
}

/// Decodes the frame at the start of `chunk` into a record whose payload, key and header
/// values share `chunk`'s memory. Returns the record and the frame length.
pub fn decode_frame(chunk: &Bytes, max_record: u32) -> Result<(Record, usize), FrameError> {
    decode_frame_with(chunk, max_record, &mut TopicCache::default())
}

/// The Kafka topic of the last record decoded: the records of a run share one `Arc` instead of
/// allocating one each. Only ever a cache: a different topic replaces it.
#[derive(Debug, Default, Clone)]
pub struct TopicCache(Option<Arc<str>>);

impl TopicCache {
    /// The cached topic for `None` (the body held the cached topic's bytes), else `topic`,
    /// which becomes the cached one.
    fn get(&mut self, topic: Option<&str>) -> Arc<str> {
        match (&self.0, topic) {
            (Some(t), None) => Arc::clone(t),
            (Some(t), Some(topic)) if **t == *topic => Arc::clone(t),
            (_, topic) => {
                let t: Arc<str> = Arc::from(topic.unwrap_or_default());
                self.0 = Some(Arc::clone(&t));
                t
            }
        }
    }
}

/// [`decode_frame`] sharing Kafka topics through `topics` (a cursor's reader keeps one).
pub fn decode_frame_with(
    chunk: &Bytes,
    max_record: u32,
    topics: &mut TopicCache,
) -> Result<(Record, usize), FrameError> {
    let (len, crc) = frame_header(chunk, max_record)?;
    let end = FRAME_HEADER_LEN + len;
    if chunk.len() < end {
        return Err(FrameError::Incomplete);
    }
    let body = &chunk[FRAME_HEADER_LEN..end];
    if crc32c::crc32c(body) != crc {
        return Err(FrameError::BadCrc);
    }
    let (parsed, used) = parse_body(body, topics.0.as_deref())?;
    if used != body.len() {
        return Err(FrameError::Undecodable(format!(
            "{} trailing bytes",
            body.len() - used
        )));
    }
    Ok((parsed.into_record(chunk, topics), end))
}

/// A version 2 body's Kafka topic (None: the one `parse_body` was told it already knows),
/// key and pinned partition.
type ParsedDestination<'a> = (Option<&'a str>, Option<&'a [u8]>, Option<i32>);

/// A body parsed in place: every string and byte string borrows the body.
struct Parsed<'a> {
    offset: u64,
    timestamp_ms: u64,
    source: Source,
    topic: &'a str,
    client_id: &'a str,
    /// Version 2: Kafka topic, key, pinned partition.
    destination: Option<ParsedDestination<'a>>,
    /// The bytes of the headers (count, then key and value of each), parsed again when the
    /// record is built: no list is allocated for a record without headers.
    headers: (usize, &'a [u8]),
    payload: &'a [u8],
}

impl Parsed<'_> {
    fn into_record(self, chunk: &Bytes, topics: &mut TopicCache) -> Record {
        let mut headers = Vec::with_capacity(self.headers.0);
        let mut at = Body(self.headers.1);
        for _ in 0..self.headers.0 {
            // Parsed once already by `parse_body`: cannot fail.
            let (Ok(key), Ok(value)) = (at.str(), at.bytes()) else {
                break;
            };
            headers.push(Header {
                key: key.to_owned(),
                value: chunk.slice_ref(value),
            });
        }
        Record {
            offset: self.offset,
            timestamp_ms: self.timestamp_ms,
            source: self.source,
            topic: Text::from_checked(chunk.slice_ref(self.topic.as_bytes())),
            client_id: Text::from_checked(chunk.slice_ref(self.client_id.as_bytes())),
            destination: self.destination.map(|(topic, key, partition)| Destination {
                topic: topics.get(topic),
                key: key.map(|k| chunk.slice_ref(k)),
                partition,
            }),
            headers,
            payload: chunk.slice_ref(self.payload),
        }
    }
}

/// Parses a record body (any version) by postcard's rules, written out field by field like
/// [`encode_record_frame`]: what `postcard::take_from_bytes::<RecordBody>` accepts, the same
/// values, in loops only (nothing recurses). Returns the parsed body and the bytes it used.
///
/// A Kafka topic whose bytes are `known_topic`'s is not checked for UTF-8 again (equal bytes
/// are valid) and is returned as None.
fn parse_body<'a>(
    body: &'a [u8],
    known_topic: Option<&str>,
) -> Result<(Parsed<'a>, usize), FrameError> {
    let mut b = Body(body);
    let version = b.varint_u32()?;
    if version > 1 {
        return Err(FrameError::Undecodable(format!(
            "unknown body version index {version}"
        )));
    }
    let offset = b.varint_u64()?;
    let timestamp_ms = b.varint_u64()?;
    let source = match b.varint_u32()? {
        0 => Source::Mqtt,
        1 => Source::Nats,
        n => return Err(FrameError::Undecodable(format!("unknown source index {n}"))),
    };
    let topic = b.str()?;
    let client_id = b.str()?;
    let destination = if version == 1 {
        let raw = b.bytes()?;
        let kafka_topic = match known_topic {
            Some(known) if known.as_bytes() == raw => None,
            _ => Some(std::str::from_utf8(raw).map_err(|_| undecodable("string is not UTF-8"))?),
        };
        let key = if b.option()? { Some(b.bytes()?) } else { None };
        let partition = if b.option()? {
            let z = b.varint_u32()?;
            Some(((z >> 1) as i32) ^ -((z & 1) as i32))
        } else {
            None
        };
        Some((kafka_topic, key, partition))
    } else {
        None
    };
    let count = b.varint_usize()?;
    let headers_at = b.0;
    let mut n: usize = 0;
    while (n as u64) < count {
        b.str()?;
        b.bytes()?;
        n += 1;
    }
    let headers = (n, &headers_at[..headers_at.len() - b.0.len()]);
    let payload = b.bytes()?;
    let used = body.len() - b.0.len();
    Ok((
        Parsed {
            offset,
            timestamp_ms,
            source,
            topic,
            client_id,
            destination,
            headers,
            payload,
        },
        used,
    ))
}

/// The unread rest of a body (see [`parse_body`]).
struct Body<'a>(&'a [u8]);

#[cold]
fn undecodable(what: &str) -> FrameError {
    FrameError::Undecodable(what.to_owned())
}

impl<'a> Body<'a> {
    #[inline]
    fn byte(&mut self) -> Result<u8, FrameError> {
        let (&first, rest) = self
            .0
            .split_first()
            .ok_or_else(|| undecodable("body ends early"))?;
        self.0 = rest;
        Ok(first)
    }

    /// A LEB128 varint of at most `max_bytes` bytes whose last byte is at most `max_last`
    /// (postcard's bounds for the type).
    #[inline]
    fn varint(&mut self, max_bytes: usize, max_last: u8) -> Result<u64, FrameError> {
        let mut out: u64 = 0;
        for i in 0..max_bytes {
            let byte = self.byte()?;
            out |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                if i == max_bytes - 1 && byte > max_last {
                    break;
                }
                return Ok(out);
            }
        }
        Err(undecodable("bad varint"))
    }

    #[inline]
    fn varint_u64(&mut self) -> Result<u64, FrameError> {
        self.varint(10, 0x01)
    }

    #[inline]
    fn varint_u32(&mut self) -> Result<u32, FrameError> {
        // At most 5 bytes with the last one below 0x10: the value fits 32 bits.
        Ok(self.varint(5, 0x0f)? as u32)
    }

    /// A length: postcard's `usize` varint (32 or 64 bits, by target).
    #[inline]
    fn varint_usize(&mut self) -> Result<u64, FrameError> {
        if cfg!(target_pointer_width = "64") {
            self.varint_u64()
        } else {
            self.varint_u32().map(u64::from)
        }
    }

    #[inline]
    fn bytes(&mut self) -> Result<&'a [u8], FrameError> {
        let len = self.varint_usize()?;
        let len = usize::try_from(len).map_err(|_| undecodable("length too large"))?;
        if len > self.0.len() {
            return Err(undecodable("body ends early"));
        }
        let (taken, rest) = self.0.split_at(len);
        self.0 = rest;
        Ok(taken)
    }

    #[inline]
    fn str(&mut self) -> Result<&'a str, FrameError> {
        std::str::from_utf8(self.bytes()?).map_err(|_| undecodable("string is not UTF-8"))
    }

    /// postcard's `Option` tag: one byte, 0 or 1.
    #[inline]
    fn option(&mut self) -> Result<bool, FrameError> {
        match self.byte()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(undecodable("bad option tag")),
        }
    }
}

/// Segment format version a decoded record's body belongs to (1: no destination).
pub fn version_of(record: &Record) -> u16 {
    if record.destination.is_some() {
        SEGMENT_VERSION
    } else {
        OLDEST_SEGMENT_VERSION
    }
}

/// Decodes a frame whose length field may be damaged: the body is self-delimiting (postcard),
/// so decode it from the bytes after the header and accept it only if the stored checksum
/// matches what was decoded. Returns the record and the true frame length. (A torn frame
/// cannot pass: its body ends early, so it does not decode.)
pub fn decode_ignoring_length(chunk: &Bytes, max_record: u32) -> Option<(Record, usize)> {
    if chunk.len() <= FRAME_HEADER_LEN {
        return None;
    }
    let crc = u32::from_le_bytes([chunk[4], chunk[5], chunk[6], chunk[7]]);
    let avail = (chunk.len() - FRAME_HEADER_LEN).min(max_record as usize);
    let body = &chunk[FRAME_HEADER_LEN..FRAME_HEADER_LEN + avail];
    let (_, len) = parse_body(body, None).ok()?;
    if len == 0 || crc32c::crc32c(&body[..len]) != crc {
        return None;
    }
    let mut frame = Vec::with_capacity(FRAME_HEADER_LEN + len);
    frame.extend_from_slice(&u32::try_from(len).ok()?.to_le_bytes());
    frame.extend_from_slice(&crc.to_le_bytes());
    frame.extend_from_slice(&body[..len]);
    decode_frame(&Bytes::from(frame), max_record).ok()
}

/// Cheap pre-check used when resynchronising: the offset a body claims, if it looks like a
/// known version.
pub fn peek_offset(body_prefix: &[u8]) -> Option<u64> {
    // Variant index (varint: 0 = V1, 1 = V2), then the offset varint: the same in every version.
    if !matches!(body_prefix.first(), Some(0 | 1)) {
        return None;
    }
    let mut value: u64 = 0;
    for (i, b) in body_prefix[1..].iter().take(10).enumerate() {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// Segment header: magic, version, reserved, base offset, crc32c of the preceding 20 bytes.
pub fn segment_header(base: u64) -> [u8; SEGMENT_HEADER_LEN] {
    segment_header_of_version(base, SEGMENT_VERSION)
}

/// A segment header of a given format version (recovery rebuilds a damaged header with the
/// version of the bodies it finds).
pub fn segment_header_of_version(base: u64, version: u16) -> [u8; SEGMENT_HEADER_LEN] {
    let mut h = [0u8; SEGMENT_HEADER_LEN];
    h[0..8].copy_from_slice(&SEGMENT_MAGIC);
    h[8..10].copy_from_slice(&version.to_le_bytes());
    h[12..20].copy_from_slice(&base.to_le_bytes());
    let crc = crc32c::crc32c(&h[0..20]);
    h[20..24].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Result of checking a segment header.
#[derive(Debug, PartialEq, Eq)]
pub enum HeaderCheck {
    /// Valid, with this base offset, in a format version this build reads.
    Ok {
        /// Base offset.
        base: u64,
        /// Format version (`OLDEST_SEGMENT_VERSION..=SEGMENT_VERSION`).
        version: u16,
    },
    /// Too short or all zero: a segment whose creation was cut off.
    Torn,
    /// Not an edge-log segment or damaged.
    Bad(String),
    /// A version this build does not read.
    Version(u16),
}

/// Validates a segment header.
pub fn check_segment_header(h: &[u8]) -> HeaderCheck {
    if h.len() < SEGMENT_HEADER_LEN || h[..SEGMENT_HEADER_LEN].iter().all(|&b| b == 0) {
        return HeaderCheck::Torn;
    }
    if h[0..8] != SEGMENT_MAGIC {
        return HeaderCheck::Bad("bad magic".into());
    }
    let crc = u32::from_le_bytes([h[20], h[21], h[22], h[23]]);
    if crc32c::crc32c(&h[0..20]) != crc {
        return HeaderCheck::Bad("header crc mismatch".into());
    }
    let version = u16::from_le_bytes([h[8], h[9]]);
    if !(OLDEST_SEGMENT_VERSION..=SEGMENT_VERSION).contains(&version) {
        return HeaderCheck::Version(version);
    }
    let mut b = [0u8; 8];
    b.copy_from_slice(&h[12..20]);
    HeaderCheck::Ok {
        base: u64::from_le_bytes(b),
        version,
    }
}

/// Version 1 cursor file: magic, version, reserved, committed offset, crc32c of the preceding
/// 20 bytes. Written by builds before version 2; only read now (tests write it to check that).
pub fn cursor_file(committed: u64) -> [u8; CURSOR_FILE_LEN] {
    let mut h = [0u8; CURSOR_FILE_LEN];
    h[0..8].copy_from_slice(&CURSOR_MAGIC);
    h[8..10].copy_from_slice(&CURSOR_VERSION_V1.to_le_bytes());
    h[12..20].copy_from_slice(&committed.to_le_bytes());
    let crc = crc32c::crc32c(&h[0..20]);
    h[20..24].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Parses a version 1 cursor file into its committed offset.
pub fn parse_cursor_file(h: &[u8]) -> Result<u64, String> {
    if h.len() != CURSOR_FILE_LEN {
        return Err(format!("length {} (expected {CURSOR_FILE_LEN})", h.len()));
    }
    if h[0..8] != CURSOR_MAGIC {
        return Err("bad magic".into());
    }
    let crc = u32::from_le_bytes([h[20], h[21], h[22], h[23]]);
    if crc32c::crc32c(&h[0..20]) != crc {
        return Err("crc mismatch".into());
    }
    let version = u16::from_le_bytes([h[8], h[9]]);
    if version != CURSOR_VERSION_V1 {
        return Err(format!("unsupported version {version}"));
    }
    let mut b = [0u8; 8];
    b.copy_from_slice(&h[12..20]);
    Ok(u64::from_le_bytes(b))
}

/// One slot of a version 2 cursor file: magic, version, reserved, sequence number, committed
/// offset, crc32c of the preceding 28 bytes. Commit `seq` goes to slot `seq % 2`; the valid
/// slot with the higher sequence number is the committed position.
pub fn cursor_slot(seq: u64, committed: u64) -> [u8; CURSOR_SLOT_LEN] {
    let mut h = [0u8; CURSOR_SLOT_LEN];
    h[0..8].copy_from_slice(&CURSOR_MAGIC);
    h[8..10].copy_from_slice(&CURSOR_VERSION.to_le_bytes());
    h[12..20].copy_from_slice(&seq.to_le_bytes());
    h[20..28].copy_from_slice(&committed.to_le_bytes());
    let crc = crc32c::crc32c(&h[0..28]);
    h[28..32].copy_from_slice(&crc.to_le_bytes());
    h
}

/// A valid cursor slot: its sequence number and committed offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CursorSlot {
    /// Commit sequence number (higher is newer).
    pub seq: u64,
    /// Committed offset.
    pub committed: u64,
}

/// Parses one slot of a version 2 cursor file.
pub fn parse_cursor_slot(h: &[u8]) -> Result<CursorSlot, String> {
    if h.len() < CURSOR_SLOT_LEN {
        return Err(format!(
            "slot of {} bytes (expected {CURSOR_SLOT_LEN})",
            h.len()
        ));
    }
    if h[0..8] != CURSOR_MAGIC {
        return Err("bad magic".into());
    }
    let crc = u32::from_le_bytes([h[28], h[29], h[30], h[31]]);
    if crc32c::crc32c(&h[0..28]) != crc {
        return Err("crc mismatch".into());
    }
    let version = u16::from_le_bytes([h[8], h[9]]);
    if version != CURSOR_VERSION {
        return Err(format!("unsupported slot version {version}"));
    }
    let word = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&h[at..at + 8]);
        u64::from_le_bytes(b)
    };
    Ok(CursorSlot {
        seq: word(12),
        committed: word(20),
    })
}

/// What a cursor file holds: the newest valid copy, and what was wrong with the other one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CursorFile {
    /// The newest valid copy.
    pub slot: CursorSlot,
    /// Format version of the file (1: a single copy, written by older builds).
    pub version: u16,
    /// Why the other copy was not used, if it was damaged (a version 2 file).
    pub damaged_copy: Option<String>,
}

/// Parses a whole cursor file of either version: the newest valid copy, or why none is.
pub fn parse_cursor(bytes: &[u8]) -> Result<CursorFile, String> {
    if bytes.len() == CURSOR_FILE_LEN {
        return parse_cursor_file(bytes).map(|committed| CursorFile {
            slot: CursorSlot { seq: 0, committed },
            version: CURSOR_VERSION_V1,
            damaged_copy: None,
        });
    }
    let at = CURSOR_SLOT_SPACING as usize;
    let a = parse_cursor_slot(&bytes[..bytes.len().min(CURSOR_SLOT_LEN)]);
    let b = parse_cursor_slot(bytes.get(at..).unwrap_or(&[]));
    match (a, b) {
        (Ok(a), Ok(b)) => Ok(CursorFile {
            slot: if b.seq > a.seq { b } else { a },
            version: CURSOR_VERSION,
            damaged_copy: None,
        }),
        (Ok(slot), Err(e)) | (Err(e), Ok(slot)) => Ok(CursorFile {
            slot,
            version: CURSOR_VERSION,
            damaged_copy: Some(e),
        }),
        (Err(a), Err(b)) => Err(format!(
            "no valid copy in {} bytes: first copy: {a}; second copy: {b}",
            bytes.len()
        )),
    }
}

/// File name of the segment starting at `base`.
pub fn segment_name(base: u64) -> String {
    format!("{base:020}.seg")
}

/// Base offset from a segment file name, if it is one.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".seg")?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

impl Record {
    /// Bytes this record occupies on disk, frame header included: the postcard length of its
    /// body ([`body_of`]), computed from the field lengths (the forwarder sizes every record
    /// it reads).
    pub fn encoded_len(&self) -> usize {
        let mut len = 1 // body version index (0 or 1)
            + varint_len(self.offset)
            + varint_len(self.timestamp_ms)
            + varint_len(source_index(self.source))
            + str_len(self.topic.len())
            + str_len(self.client_id.len())
            + varint_len(self.headers.len() as u64)
            + str_len(self.payload.len());
        if let Some(destination) = &self.destination {
            len += str_len(destination.topic.len()) + 2; // + key and partition Option tags
            if let Some(key) = &destination.key {
                len += str_len(key.len());
            }
            if let Some(partition) = destination.partition {
                len += varint_len(u64::from(zigzag(partition)));
            }
        }
        for header in &self.headers {
            len += str_len(header.key.len()) + str_len(header.value.len());
        }
        FRAME_HEADER_LEN + len
    }
}

impl NewRecord {
    /// Bytes this record takes on disk once appended, frame header included (an upper bound:
    /// it is measured with the largest offset; the budget and [`crate::Log::has_room`] use it).
    pub fn encoded_len(&self) -> usize {
        FRAME_HEADER_LEN + record_body_len(u64::MAX, self)
    }

    /// Its fields but the headers, borrowed (what [`crate::EncodedRecords::push`] encodes).
    pub fn fields(&self) -> RecordFields<'_> {
        RecordFields {
            timestamp_ms: self.timestamp_ms,
            source: self.source,
            topic: &self.topic,
            client_id: &self.client_id,
            destination: &self.destination,
            payload: &self.payload,
        }
    }

    /// Its headers as name and value pairs, in order.
    pub fn header_pairs(&self) -> impl Iterator<Item = (&[u8], &[u8])> + Clone {
        self.headers
            .iter()
            .map(|h| (h.key.as_bytes(), h.value.as_ref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(destination: Option<Destination>) -> Record {
        Record {
            offset: 300,
            timestamp_ms: 1_700_000_000_123,
            source: Source::Nats,
            topic: "sensors.a.humidity".into(),
            client_id: "c1".into(),
            destination,
            headers: vec![Header {
                key: "k".into(),
                value: Bytes::from_static(b"v"),
            }],
            payload: Bytes::from_static(b"hello"),
        }
    }

    fn new_record(topic: &str, payload: &[u8]) -> NewRecord {
        NewRecord {
            timestamp_ms: 2,
            source: Source::Mqtt,
            topic: topic.into(),
            client_id: "c".into(),
            destination: Destination::topic("k"),
            headers: Vec::new(),
            payload: Bytes::copy_from_slice(payload),
        }
    }

    #[test]
    fn frame_roundtrip_and_len() {
        let keyed = Destination {
            topic: "sensor-humidity".into(),
            key: Some(Bytes::from_static(b"a")),
            partition: Some(3),
        };
        // Both versions: V2 (with a destination) and V1 (read from old segments).
        for r in [sample(Some(keyed)), sample(None)] {
            let body = body_of(&r);
            let mut out = vec![0xAA];
            let n = encode_frame(&body, &mut out).unwrap();
            assert_eq!(n, r.encoded_len());
            let chunk = Bytes::from(out).slice(1..);
            let (back, used) = decode_frame(&chunk, 1 << 20).unwrap();
            assert_eq!(used, n);
            assert_eq!(back, r);
            assert_eq!(peek_offset(&chunk[8..]), Some(300));
        }
    }

    #[test]
    fn frame_errors() {
        let record = new_record("t", b"p");
        let body = body_ref(1, &record);
        let mut out = Vec::new();
        encode_frame(&body, &mut out).unwrap();
        let full = Bytes::from(out.clone());
        assert_eq!(
            decode_frame(&full.slice(..full.len() - 1), 1024).unwrap_err(),
            FrameError::Incomplete
        );
        assert_eq!(
            decode_frame(&full, 3).unwrap_err(),
            FrameError::BadLength(full.len() as u32 - 8)
        );
        let mut flipped = out.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert_eq!(
            decode_frame(&Bytes::from(flipped), 1024).unwrap_err(),
            FrameError::BadCrc
        );
        assert_eq!(
            decode_frame(&Bytes::from(vec![0u8; 32]), 1024).unwrap_err(),
            FrameError::BadLength(0)
        );
    }

    fn arb_record() -> impl proptest::strategy::Strategy<Value = (u64, NewRecord)> {
        use proptest::prelude::*;
        let text = || prop_oneof![".{0,3}", ".{120,140}"];
        let blob = || {
            prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..4),
                proptest::collection::vec(any::<u8>(), 120..20_000),
            ]
        };
        let header = (text(), blob()).prop_map(|(key, value)| Header {
            key,
            value: Bytes::from(value),
        });
        (
            (
                any::<u64>(),
                any::<u64>(),
                any::<bool>(),
                text(),
                text(),
                text(),
            ),
            (
                proptest::option::of(blob()),
                proptest::option::of(any::<i32>()),
                proptest::collection::vec(header, 0..3),
                blob(),
            ),
        )
            .prop_map(
                |(
                    (offset, timestamp_ms, nats, topic, client_id, kafka),
                    (key, partition, headers, payload),
                )| {
                    let record = NewRecord {
                        timestamp_ms,
                        source: if nats { Source::Nats } else { Source::Mqtt },
                        topic: topic.into(),
                        client_id: client_id.into(),
                        destination: Destination {
                            topic: kafka.into(),
                            key: key.map(Bytes::from),
                            partition,
                        },
                        headers,
                        payload: Bytes::from(payload),
                    };
                    (offset, record)
                },
            )
    }

    proptest::proptest! {
        /// The one-pass encoder writes postcard's bytes exactly (the format stays byte for
        /// byte), and the arithmetic length is postcard's size.
        #[test]
        fn the_one_pass_encoder_writes_postcards_bytes((offset, record) in arb_record()) {
            let mut by_serde = vec![0x55];
            let serde_len = encode_frame(&body_ref(offset, &record), &mut by_serde).unwrap();
            let mut by_hand = vec![0x55];
            let hand_len = encode_record_frame(offset, &record, &mut by_hand).unwrap();
            proptest::prop_assert_eq!(hand_len, serde_len);
            proptest::prop_assert_eq!(&by_hand, &by_serde);
            proptest::prop_assert_eq!(record_body_len(offset, &record), body_len(&body_ref(offset, &record)));
            proptest::prop_assert_eq!(
                record.encoded_len(),
                FRAME_HEADER_LEN + body_len(&body_ref(u64::MAX, &record))
            );
        }
    }

    #[test]
    fn varint_lengths_at_every_boundary() {
        for bits in 1..=64usize {
            let v = u64::MAX >> (64 - bits);
            assert_eq!(varint_len(v), bits.div_ceil(7), "{bits} bits");
        }
        for bits in 0..64u32 {
            for v in [1u64 << bits, (1u64 << bits) - 1, (1u64 << bits) + 1] {
                let mut out = Vec::new();
                put_varint(&mut out, v);
                assert_eq!(out.len(), varint_len(v), "{v}");
                assert_eq!(out, postcard::to_stdvec(&v).unwrap(), "{v}");
            }
        }
        for v in [0, 1, -1, 63, -64, 64, -65, i32::MAX, i32::MIN] {
            let mut out = Vec::new();
            put_varint(&mut out, u64::from(zigzag(v)));
            assert_eq!(out, postcard::to_stdvec(&v).unwrap(), "{v}");
        }
    }

    proptest::proptest! {
        #[test]
        fn decoding_garbage_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300), flip in 0usize..300) {
            let _ = decode_frame(&Bytes::from(bytes.clone()), 256);
            let _ = check_segment_header(&bytes);
            let _ = parse_cursor_file(&bytes);
            let _ = peek_offset(&bytes);
            // A valid frame with any single bit flipped is refused, never misread.
            let record = new_record("t", &bytes);
            let body = body_ref(7, &record);
            let mut frame = Vec::new();
            encode_frame(&body, &mut frame).unwrap();
            let i = flip % frame.len();
            frame[i] ^= 1 << (flip % 8);
            if let Ok((r, _)) = decode_frame(&Bytes::from(frame), 1024) {
                proptest::prop_assert!(false, "bit flip at byte {} accepted as {:?}", i, r);
            }
        }
    }

    #[test]
    fn a_frame_with_a_damaged_length_decodes_by_its_checksum_a_torn_one_does_not() {
        let record = new_record("t", b"payload");
        let mut out = Vec::new();
        let n = encode_frame(&body_ref(5, &record), &mut out).unwrap();
        out.extend_from_slice(b"next frame bytes");
        let mut damaged = out.clone();
        damaged[2] ^= 0x40;
        let (rec, len) = decode_ignoring_length(&Bytes::from(damaged), 1 << 20).unwrap();
        assert_eq!((rec.offset, len), (5, n));
        // Torn: the body ends early.
        assert!(decode_ignoring_length(&Bytes::from(out[..n - 2].to_vec()), 1 << 20).is_none());
        // A damaged body fails its checksum.
        let mut bad_body = out.clone();
        bad_body[n - 1] ^= 1;
        bad_body[2] ^= 0x40;
        assert!(decode_ignoring_length(&Bytes::from(bad_body), 1 << 20).is_none());
    }

    #[test]
    fn headers_roundtrip() {
        assert_eq!(
            check_segment_header(&segment_header(42)),
            HeaderCheck::Ok {
                base: 42,
                version: SEGMENT_VERSION
            }
        );
        assert_eq!(check_segment_header(&[0u8; 24]), HeaderCheck::Torn);
        assert_eq!(check_segment_header(&[1u8; 10]), HeaderCheck::Torn);
        let mut h = segment_header(42);
        h[13] ^= 1;
        assert!(matches!(check_segment_header(&h), HeaderCheck::Bad(_)));
        assert_eq!(parse_cursor_file(&cursor_file(77)), Ok(77));
        assert_eq!(parse_cursor(&cursor_file(77)).unwrap().slot.committed, 77);
        // Version 2: the newer valid copy wins; one damaged copy falls back to the other.
        let mut two = vec![0u8; CURSOR_FILE_V2_LEN as usize];
        two[..CURSOR_SLOT_LEN].copy_from_slice(&cursor_slot(4, 40));
        two[CURSOR_SLOT_SPACING as usize..].copy_from_slice(&cursor_slot(5, 50));
        let f = parse_cursor(&two).unwrap();
        assert_eq!(
            (f.slot.seq, f.slot.committed, f.damaged_copy),
            (5, 50, None)
        );
        two[CURSOR_SLOT_SPACING as usize + 25] ^= 1;
        let f = parse_cursor(&two).unwrap();
        assert_eq!(f.slot.committed, 40);
        assert!(f.damaged_copy.is_some());
        two[3] ^= 1;
        assert!(parse_cursor(&two).is_err());
        assert!(parse_cursor(&[]).is_err());
        assert_eq!(parse_segment_name(&segment_name(123)), Some(123));
        assert_eq!(parse_segment_name("123.seg"), None);
    }
}

/// The hand-written decoder against postcard's (the serde types stay the format's reference).
#[cfg(test)]
mod decode_tests {
    use super::*;

    /// The decoder this crate had before `parse_body`: postcard through serde.
    fn by_postcard(chunk: &Bytes, max_record: u32) -> Result<(Record, usize), FrameError> {
        let (len, crc) = frame_header(chunk, max_record)?;
        let end = FRAME_HEADER_LEN + len;
        if chunk.len() < end {
            return Err(FrameError::Incomplete);
        }
        let body = &chunk[FRAME_HEADER_LEN..end];
        if crc32c::crc32c(body) != crc {
            return Err(FrameError::BadCrc);
        }
        let (parsed, rest): (RecordBody<'_>, &[u8]) =
            postcard::take_from_bytes(body).map_err(|e| FrameError::Undecodable(e.to_string()))?;
        if !rest.is_empty() {
            return Err(FrameError::Undecodable("trailing bytes".into()));
        }
        let headers = |headers: &[HeaderV1<'_>]| {
            headers
                .iter()
                .map(|h| Header {
                    key: h.key.to_owned(),
                    value: chunk.slice_ref(h.value.0),
                })
                .collect()
        };
        let record = match parsed {
            RecordBody::V1(v1) => Record {
                offset: v1.offset,
                timestamp_ms: v1.timestamp_ms,
                source: v1.source,
                topic: v1.topic.into(),
                client_id: v1.client_id.into(),
                destination: None,
                headers: headers(&v1.headers),
                payload: chunk.slice_ref(v1.payload.0),
            },
            RecordBody::V2(v2) => Record {
                offset: v2.offset,
                timestamp_ms: v2.timestamp_ms,
                source: v2.source,
                topic: v2.topic.into(),
                client_id: v2.client_id.into(),
                destination: Some(Destination {
                    topic: Arc::from(v2.kafka_topic),
                    key: v2.key.map(|k| chunk.slice_ref(k.0)),
                    partition: v2.partition,
                }),
                headers: headers(&v2.headers),
                payload: chunk.slice_ref(v2.payload.0),
            },
        };
        Ok((record, end))
    }

    /// A frame around `body` with a correct length and checksum.
    fn frame(body: &[u8]) -> Bytes {
        let mut out = Vec::with_capacity(FRAME_HEADER_LEN + body.len());
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc32c::crc32c(body).to_le_bytes());
        out.extend_from_slice(body);
        Bytes::from(out)
    }

    /// Both decoders on `chunk`: both refuse it, or both read the same record — the hand
    /// decoder once with nothing cached and once more with its Kafka topic known.
    fn agree(chunk: &Bytes) -> Result<(), String> {
        let mut topics = TopicCache::default();
        let reference = by_postcard(chunk, 1 << 20);
        for _ in 0..2 {
            match (decode_frame_with(chunk, 1 << 20, &mut topics), &reference) {
                (Ok(a), Ok(b)) if a == *b => {}
                (Err(_), Err(_)) => {}
                (a, b) => return Err(format!("by hand {a:?}, by postcard {b:?}")),
            }
        }
        Ok(())
    }

    fn arb_body() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::strategy::Strategy;
        arb_read_record().prop_map(|record| postcard::to_stdvec(&body_of(&record)).unwrap())
    }

    fn arb_read_record() -> impl proptest::strategy::Strategy<Value = Record> {
        use proptest::prelude::*;
        let text = || prop_oneof![".{0,3}", ".{120,140}"];
        let blob = || proptest::collection::vec(any::<u8>(), 0..200);
        (
            (any::<u64>(), any::<u64>(), any::<bool>(), text(), text()),
            (
                proptest::option::of((
                    text(),
                    proptest::option::of(blob()),
                    proptest::option::of(any::<i32>()),
                )),
                proptest::collection::vec((text(), blob()), 0..3),
                blob(),
            ),
        )
            .prop_map(
                |((offset, timestamp_ms, nats, topic, client_id), (dest, headers, payload))| {
                    Record {
                        offset,
                        timestamp_ms,
                        source: if nats { Source::Nats } else { Source::Mqtt },
                        topic: topic.into(),
                        client_id: client_id.into(),
                        destination: dest.map(|(topic, key, partition)| Destination {
                            topic: topic.into(),
                            key: key.map(Bytes::from),
                            partition,
                        }),
                        headers: headers
                            .into_iter()
                            .map(|(key, value)| Header {
                                key,
                                value: Bytes::from(value),
                            })
                            .collect(),
                        payload: Bytes::from(payload),
                    }
                },
            )
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]
        /// Every body of either version reads back as postcard reads it, and so does every
        /// body with one byte changed, cut short or lengthened (the checksum made to match, so
        /// the parser itself must refuse what postcard refuses).
        #[test]
        fn the_hand_decoder_reads_what_postcard_reads(
            body in arb_body(),
            at in 0usize..1000,
            byte in proptest::prelude::any::<u8>(),
            cut in 0usize..8,
        ) {
            let whole = frame(&body);
            proptest::prop_assert!(decode_frame(&whole, 1 << 20).is_ok());
            proptest::prop_assert_eq!(agree(&whole), Ok(()));
            let mut changed = body.clone();
            let i = at % changed.len();
            changed[i] = byte;
            proptest::prop_assert_eq!(agree(&frame(&changed)), Ok(()));
            let short = &body[..body.len().saturating_sub(cut + 1)];
            if !short.is_empty() {
                proptest::prop_assert_eq!(agree(&frame(short)), Ok(()));
            }
            let mut long = body.clone();
            long.push(byte);
            proptest::prop_assert_eq!(agree(&frame(&long)), Ok(()));
        }

        /// A read record's size by arithmetic is postcard's size of its body.
        #[test]
        fn read_records_are_sized_like_postcard(record in arb_read_record()) {
            proptest::prop_assert_eq!(
                record.encoded_len(),
                FRAME_HEADER_LEN + body_len(&body_of(&record))
            );
        }

        /// Arbitrary bytes with a matching checksum: the decoders agree.
        #[test]
        fn the_hand_decoder_refuses_what_postcard_refuses(
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 1..64),
        ) {
            proptest::prop_assert_eq!(agree(&frame(&body)), Ok(()));
        }
    }

    /// Varints at postcard's limits: the longest u64 and u32, one byte too many, a last byte
    /// above the type's bits, and non-canonical (padded) encodings.
    #[test]
    fn varint_edges_match_postcard() {
        let record = Record {
            offset: u64::MAX,
            timestamp_ms: 0,
            source: Source::Nats,
            topic: "t".into(),
            client_id: Text::default(),
            destination: Some(Destination {
                topic: "k".into(),
                key: None,
                partition: Some(i32::MIN),
            }),
            headers: Vec::new(),
            payload: Bytes::new(),
        };
        let body = postcard::to_stdvec(&body_of(&record)).unwrap();
        agree(&frame(&body)).unwrap();
        // The offset is 10 bytes at 1..11; pad, overflow and lengthen it.
        let offset = 1..11;
        for last in [0x00, 0x01, 0x02, 0x7f] {
            let mut b = body.clone();
            b[offset.end - 1] = last;
            agree(&frame(&b)).unwrap();
        }
        let mut padded = body.clone();
        padded.splice(1..11, [0x80, 0x80, 0x00]);
        agree(&frame(&padded)).unwrap();
        let mut eleven = body.clone();
        eleven[10] |= 0x80;
        eleven.insert(11, 0x00);
        agree(&frame(&eleven)).unwrap();
        // Version and source indices past the known ones, and as padded varints.
        for (at, values) in [(0usize, [2u8, 0x81]), (12, [2, 0x81])] {
            for v in values {
                let mut b = body.clone();
                b[at] = v;
                agree(&frame(&b)).unwrap();
            }
        }
    }

    /// A read record's topic and client id are slices of the frame, like its payload: reading
    /// allocates no strings.
    #[test]
    fn read_strings_share_the_frame() {
        let record = NewRecord {
            timestamp_ms: 1,
            source: Source::Mqtt,
            topic: "sensors/a/t".into(),
            client_id: "dev-a".into(),
            destination: Destination::topic("k"),
            headers: Vec::new(),
            payload: Bytes::from_static(b"p"),
        };
        let mut out = Vec::new();
        encode_frame(&body_ref(9, &record), &mut out).unwrap();
        let chunk = Bytes::from(out);
        let (r, _) = decode_frame(&chunk, 1024).unwrap();
        let frame = chunk.as_ptr_range();
        for s in [r.topic.as_bytes(), r.client_id.as_bytes()] {
            assert!(frame.contains(&s.as_ptr()), "{s:?} was copied");
        }
        assert_eq!((r.topic.as_str(), &*r.client_id), ("sensors/a/t", "dev-a"));
    }

    /// Records of one Kafka topic read in a row share one allocation of it.
    #[test]
    fn a_run_of_records_shares_its_kafka_topic() {
        let mut topics = TopicCache::default();
        let mut read = |topic: &str, offset: u64| {
            let record = NewRecord {
                timestamp_ms: 1,
                source: Source::Mqtt,
                topic: "a/b".into(),
                client_id: "c".into(),
                destination: Destination::topic(topic),
                headers: Vec::new(),
                payload: Bytes::from_static(b"p"),
            };
            let mut out = Vec::new();
            encode_frame(&body_ref(offset, &record), &mut out).unwrap();
            let (r, _) = decode_frame_with(&Bytes::from(out), 1024, &mut topics).unwrap();
            assert_eq!(r.offset, offset);
            r.destination.unwrap().topic
        };
        let (a, b, c, d) = (read("x", 1), read("x", 2), read("y", 3), read("x", 4));
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!((&*c, &*d), ("y", "x"));
        assert!(
            !Arc::ptr_eq(&a, &d),
            "a different topic in between replaced it"
        );
    }
}
