//! Record batch (magic v2) encoding, written by hand so records go straight from `Bytes` into
//! a reused buffer and repeated header keys survive (the `kafka-protocol` crate's `Record`
//! keeps headers in a map). Layout, from the Kafka protocol guide:
//!
//! ```text
//! baseOffset i64 | batchLength i32 | partitionLeaderEpoch i32 | magic i8 = 2 | crc u32 (crc32c
//! of everything after it) | attributes i16 | lastOffsetDelta i32 | baseTimestamp i64 |
//! maxTimestamp i64 | producerId i64 | producerEpoch i16 | baseSequence i32 | count i32 | records
//! record: length varint | attributes i8 | timestampDelta varlong | offsetDelta varint |
//!         keyLength varint | key | valueLength varint | value | headerCount varint | headers
//! header: keyLength varint | key | valueLength varint | value        (varints are zigzag)
//! ```
//! With compression the `records` part is compressed as a whole (attributes bits 0-2).

use bytes::{BufMut, BytesMut};
use kafka_protocol::compression::{Compressor, Gzip, Snappy};

use super::error::ProduceError;
use super::{Compression, ProduceRecord};
use crate::headers::{EdgeHeaders, Source};

/// Batch header bytes before the records.
const HEADER_LEN: usize = 61;
/// Offset of the attributes field, where the CRC coverage starts.
const CRC_START: usize = 21;

/// Producer identity stamped on a batch (all -1 for a non-idempotent producer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchIdentity {
    /// Producer id from InitProducerId, or -1.
    pub producer_id: i64,
    /// Producer epoch, or -1.
    pub producer_epoch: i16,
    /// Sequence number of the first record, or -1.
    pub base_sequence: i32,
    /// Part of a Kafka transaction (attributes bit 4): read_committed consumers see the batch
    /// only once its transaction commits.
    pub transactional: bool,
}

impl Default for BatchIdentity {
    fn default() -> Self {
        Self {
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            transactional: false,
        }
    }
}

/// The attributes bit of a transactional batch.
const TRANSACTIONAL_BIT: u8 = 0x10;

/// Byte offset of the producer id in the batch header (then the epoch and the base sequence).
const IDENTITY_AT: usize = 43;

/// Encodes `records` as one v2 record batch appended to `out`; `scratch` is reused for the
/// uncompressed records when compressing. Both buffers keep their capacity between calls.
pub fn encode_batch(
    records: &[ProduceRecord],
    compression: Compression,
    identity: BatchIdentity,
    scratch: &mut BytesMut,
    out: &mut BytesMut,
) -> Result<(), ProduceError> {
    let start = out.len();
    write_unstamped(records, compression, scratch, out)?;
    stamp(&mut out[start..], identity);
    Ok(())
}

/// A record batch encoded (and compressed) ahead of sending, without its producer identity.
/// The identity (producer id, epoch, base sequence) sits inside the CRC-covered header and is
/// only known when the batch is written, in order, under the connection's lock:
/// [`EncodedBatch::stamp`] fills it in and computes the CRC (hardware CRC32C: a few µs for a
/// 100 KiB batch, cheaper than `crc32c_combine` with a CRC of the records kept from here).
#[derive(Debug)]
pub struct EncodedBatch {
    /// The whole batch, identity fields -1 and CRC 0 until stamped.
    buf: BytesMut,
    /// Records in the batch.
    count: usize,
    /// Codec the records were compressed with.
    compression: Compression,
}

impl EncodedBatch {
    /// Encodes `records` with `compression`; `scratch` holds the uncompressed records while
    /// compressing (reused between calls).
    pub fn encode(
        records: &[ProduceRecord],
        compression: Compression,
        scratch: &mut BytesMut,
    ) -> Result<Self, ProduceError> {
        let mut buf = BytesMut::new();
        write_unstamped(records, compression, scratch, &mut buf)?;
        Ok(Self {
            buf,
            count: records.len(),
            compression,
        })
    }

    /// Records in the batch.
    pub fn count(&self) -> usize {
        self.count
    }

    /// The codec its records were compressed with.
    pub fn compression(&self) -> Compression {
        self.compression
    }

    /// Encoded size in bytes.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Always false: a batch holds at least one record.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The finished batch with `identity` stamped in (byte for byte what [`encode_batch`]
    /// writes for the same records and identity).
    pub fn stamp(mut self, identity: BatchIdentity) -> bytes::Bytes {
        stamp(&mut self.buf, identity);
        self.buf.freeze()
    }
}

/// Writes `identity` into a batch written by [`write_unstamped`], then its CRC (attributes to
/// the end).
fn stamp(batch: &mut [u8], identity: BatchIdentity) {
    batch[IDENTITY_AT..IDENTITY_AT + 8].copy_from_slice(&identity.producer_id.to_be_bytes());
    batch[IDENTITY_AT + 8..IDENTITY_AT + 10]
        .copy_from_slice(&identity.producer_epoch.to_be_bytes());
    batch[IDENTITY_AT + 10..IDENTITY_AT + 14]
        .copy_from_slice(&identity.base_sequence.to_be_bytes());
    // attributes is an i16 at CRC_START; the transactional bit is in its low byte.
    if identity.transactional {
        batch[CRC_START + 1] |= TRANSACTIONAL_BIT;
    } else {
        batch[CRC_START + 1] &= !TRANSACTIONAL_BIT;
    }
    let crc = crc32c::crc32c(&batch[CRC_START..]);
    batch[17..CRC_START].copy_from_slice(&crc.to_be_bytes());
}

/// Appends one batch of `records` to `out` with the identity left at -1 and the CRC at 0 (see
/// [`stamp`]); the batch length is filled in.
fn write_unstamped(
    records: &[ProduceRecord],
    compression: Compression,
    scratch: &mut BytesMut,
    out: &mut BytesMut,
) -> Result<(), ProduceError> {
    let Some(first) = records.first() else {
        return Err(ProduceError::EmptyBatch);
    };
    let count = i32::try_from(records.len()).map_err(|_| ProduceError::Encode {
        what: "record batch",
        reason: format!("{} records do not fit one batch", records.len()),
    })?;
    let base_ts = first.timestamp_ms;
    let max_ts = records
        .iter()
        .map(|r| r.timestamp_ms)
        .max()
        .unwrap_or(base_ts);

    let start = out.len();
    let identity = BatchIdentity::default();
    // LZ4 frames get their room below, once the uncompressed size is known: room guessed
    // here would be outgrown there, and growing copies the whole guess.
    let guess = match compression {
        Compression::Lz4 => 0,
        _ => records.len() * 64,
    };
    out.reserve(HEADER_LEN + guess);
    out.put_i64(0); // baseOffset: assigned by the broker
    out.put_i32(0); // batchLength: filled below
    out.put_i32(-1); // partitionLeaderEpoch
    out.put_i8(2); // magic
    out.put_u32(0); // crc: filled by `stamp`
    out.put_i16(compression.attribute()); // CreateTime, not transactional, not control
    out.put_i32(count - 1); // lastOffsetDelta
    out.put_i64(base_ts);
    out.put_i64(max_ts);
    out.put_i64(identity.producer_id); // identity: filled by `stamp`
    out.put_i16(identity.producer_epoch);
    out.put_i32(identity.base_sequence);
    out.put_i32(count);

    match compression {
        Compression::None => write_records(records, base_ts, out),
        codec => {
            scratch.clear();
            write_records(records, base_ts, scratch);
            if codec == Compression::Lz4 {
                // Room for the worst case, so the frame is written without regrowing `out`.
                out.reserve(lz4_frame_bound(scratch.len()));
            }
            compress(codec, scratch, out)?;
        }
    }

    let batch_len = out.len() - start - 12;
    let batch_len = i32::try_from(batch_len).map_err(|_| ProduceError::Encode {
        what: "record batch",
        reason: format!("{batch_len} bytes exceed the i32 batch length"),
    })?;
    out[start + 8..start + 12].copy_from_slice(&batch_len.to_be_bytes());
    Ok(())
}

fn write_records(records: &[ProduceRecord], base_ts: i64, buf: &mut BytesMut) {
    let mut digits = itoa::Buffer::new();
    for (i, r) in records.iter().enumerate() {
        let ts_delta = r.timestamp_ms.wrapping_sub(base_ts);
        let offset_delta = i as i64;
        let edge = r
            .edge
            .as_ref()
            .map(|e| (e, digits.format(e.offset).as_bytes()));
        let header_count = r.headers.len() as i64 + if edge.is_some() { 4 } else { 0 };
        let mut len = 1 + varint_len(ts_delta) + varint_len(offset_delta);
        len += bytes_field_len(r.key.as_deref());
        len += bytes_field_len(r.value.as_deref());
        len += varint_len(header_count);
        if let Some((e, offset)) = edge {
            len += edge_headers_len(e, offset.len());
        }
        for h in &r.headers {
            len += bytes_field_len(Some(&h.key)) + bytes_field_len(Some(&h.value));
        }
        buf.reserve(len + 5);
        put_varint(buf, len as i64);
        buf.put_i8(0);
        put_varint(buf, ts_delta);
        put_varint(buf, offset_delta);
        put_bytes_field(buf, r.key.as_deref());
        put_bytes_field(buf, r.value.as_deref());
        put_varint(buf, header_count);
        if let Some((e, offset)) = edge {
            put_edge_headers(buf, e, offset);
        }
        for h in &r.headers {
            put_bytes_field(buf, Some(&h.key));
            put_bytes_field(buf, Some(&h.value));
        }
    }
}

/// Most bytes [`write_records`] writes for `record`: its length with the timestamp and offset
/// deltas at their widest (they are known only once the batch is), for sizing batches before
/// they are encoded.
pub fn record_len_bound(r: &ProduceRecord) -> usize {
    // length prefix + attributes + timestamp delta + offset delta + header count, widest.
    let mut len = 5 + 1 + 10 + 5 + 5;
    len += bytes_field_len(r.key.as_deref());
    len += bytes_field_len(r.value.as_deref());
    if let Some(e) = &r.edge {
        // An offset's decimal digits, without writing them.
        let digits = e.offset.checked_ilog10().map_or(1, |d| d as usize + 1);
        len += edge_headers_len(e, digits);
    }
    for h in &r.headers {
        len += bytes_field_len(Some(&h.key)) + bytes_field_len(Some(&h.value));
    }
    len
}

/// Bytes of records (by [`record_len_bound`]) that one batch may hold to stay within
/// `max_request_bytes` once encoded: less the batch header and 1/64 for a codec's growth on
/// incompressible records (lz4 adds about 0.4 %; gzip, snappy and zstd less). A batch over
/// the limit all the same is split when it is sent.
pub fn records_room(max_request_bytes: usize) -> usize {
    max_request_bytes.saturating_sub(HEADER_LEN + max_request_bytes / 64)
}

/// The edge headers' fixed parts as a batch holds them (a name is its zigzag varint length,
/// then its bytes): the `edge-node` name, the `edge-offset` name, and from the `edge-source`
/// name through the `edge-topic` name (the source's value is one of two). The same bytes for
/// every forwarded record, so each is one copy; `edge_header_names_are_header_fields` checks
/// them against the fields written one by one.
const EDGE_NODE_NAME: &[u8] = b"\x12edge-node";
const EDGE_OFFSET_NAME: &[u8] = b"\x16edge-offset";
const EDGE_SOURCE_MQTT_TOPIC_NAME: &[u8] = b"\x16edge-source\x08mqtt\x14edge-topic";
const EDGE_SOURCE_NATS_TOPIC_NAME: &[u8] = b"\x16edge-source\x08nats\x14edge-topic";

fn edge_source_topic_name(source: Source) -> &'static [u8] {
    match source {
        Source::Mqtt => EDGE_SOURCE_MQTT_TOPIC_NAME,
        Source::Nats => EDGE_SOURCE_NATS_TOPIC_NAME,
    }
}

/// Bytes [`put_edge_headers`] writes; the offset takes `offset_digits` decimal digits.
fn edge_headers_len(e: &EdgeHeaders, offset_digits: usize) -> usize {
    EDGE_NODE_NAME.len()
        + bytes_field_len(Some(&e.node))
        + EDGE_OFFSET_NAME.len()
        + varint_len(offset_digits as i64)
        + offset_digits
        + edge_source_topic_name(e.source).len()
        + bytes_field_len(Some(&e.topic))
}

/// Writes the four edge headers, byte for byte what writing [`EdgeHeaders::to_headers`] one
/// by one writes.
fn put_edge_headers(buf: &mut BytesMut, e: &EdgeHeaders, offset: &[u8]) {
    buf.put_slice(EDGE_NODE_NAME);
    put_bytes_field(buf, Some(&e.node));
    buf.put_slice(EDGE_OFFSET_NAME);
    put_bytes_field(buf, Some(offset));
    buf.put_slice(edge_source_topic_name(e.source));
    put_bytes_field(buf, Some(&e.topic));
}

fn compress(codec: Compression, input: &[u8], out: &mut BytesMut) -> Result<(), ProduceError> {
    let fail = |reason: String| ProduceError::Encode {
        what: "compressed records",
        reason,
    };
    match codec {
        Compression::None => out.extend_from_slice(input),
        Compression::Gzip => {
            Gzip::compress(out, |tmp: &mut BytesMut| {
                tmp.extend_from_slice(input);
                Ok(())
            })
            .map_err(|e| fail(format!("gzip: {e:#}")))?;
        }
        Compression::Snappy => {
            Snappy::compress(out, |tmp: &mut BytesMut| {
                tmp.extend_from_slice(input);
                Ok(())
            })
            .map_err(|e| fail(format!("snappy: {e:#}")))?;
        }
        Compression::Lz4 => lz4_frame(input, out).map_err(|e| fail(format!("lz4: {e}")))?,
        Compression::Zstd => {
            ruzstd::encoding::compress(
                input,
                out.writer(),
                ruzstd::encoding::CompressionLevel::Fastest,
            );
        }
    }
    Ok(())
}

/// LZ4 frame header: magic, FLG = version 1 + independent blocks (no checksums, no content
/// size: what Kafka's Java reader wants), BD = 64 KiB blocks, header checksum.
const LZ4_FRAME_HEADER: [u8; 7] = [0x04, 0x22, 0x4D, 0x18, 0x60, 0x40, 0x82];
/// LZ4 frame block size (BD above).
const LZ4_BLOCK: usize = 64 * 1024;

/// Largest LZ4 frame [`lz4_frame`] writes for `len` input bytes.
fn lz4_frame_bound(len: usize) -> usize {
    let blocks = len.div_ceil(LZ4_BLOCK).max(1);
    LZ4_FRAME_HEADER.len()
        + blocks * 4
        + lz4_flex::block::get_maximum_output_size(len.min(LZ4_BLOCK)) * blocks
        + 4
}

/// Per-thread LZ4 work space, kept between frames: the block compressor's hash tables and its
/// output (the largest compressed block). Allocated once per thread, not once per block.
///
/// Both tables are kept because the compressor picks its table by input size (16-bit entries
/// below `u16::MAX` bytes, 32-bit ones above), and the two find different matches: using the
/// one `lz4_flex::block::compress_into` would use keeps the bytes exactly the same.
struct Lz4Space {
    small: lz4_flex::block::CompressTable,
    large: lz4_flex::block::CompressTable,
    block: Vec<u8>,
}

thread_local! {
    static LZ4_SPACE: std::cell::RefCell<Lz4Space> = std::cell::RefCell::new(Lz4Space {
        small: lz4_flex::block::CompressTable::small(),
        large: lz4_flex::block::CompressTable::large(),
        block: vec![0; lz4_flex::block::get_maximum_output_size(LZ4_BLOCK)],
    });
}

/// Writes `input` as one LZ4 frame onto `out`: each block is compressed into the thread's
/// [`Lz4Space`] and only its compressed bytes are copied out (unlike
/// `lz4_flex::frame::FrameEncoder`, which allocates its buffers per frame, or compressing into
/// `out`'s spare room, which zeroes the largest possible block first).
fn lz4_frame(input: &[u8], out: &mut BytesMut) -> Result<(), lz4_flex::block::CompressError> {
    out.extend_from_slice(&LZ4_FRAME_HEADER);
    LZ4_SPACE.with_borrow_mut(|space| {
        for block in input.chunks(LZ4_BLOCK) {
            let table = if block.len() < usize::from(u16::MAX) {
                &mut space.small
            } else {
                &mut space.large
            };
            let n = lz4_flex::block::compress_into_with_table(block, &mut space.block, table)?;
            if n < block.len() {
                out.extend_from_slice(&(n as u32).to_le_bytes());
                out.extend_from_slice(&space.block[..n]);
            } else {
                // Incompressible: store the block as is (high bit set).
                out.extend_from_slice(&(block.len() as u32 | 0x8000_0000).to_le_bytes());
                out.extend_from_slice(block);
            }
        }
        Ok::<(), lz4_flex::block::CompressError>(())
    })?;
    out.extend_from_slice(&0u32.to_le_bytes()); // end mark
    Ok(())
}

fn varint_len(v: i64) -> usize {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    let mut n = 1;
    while z >= 0x80 {
        z >>= 7;
        n += 1;
    }
    n
}

fn put_varint(buf: &mut BytesMut, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        buf.put_u8((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
    buf.put_u8(z as u8);
}

fn bytes_field_len(b: Option<&[u8]>) -> usize {
    match b {
        None => varint_len(-1),
        Some(b) => varint_len(b.len() as i64) + b.len(),
    }
}

fn put_bytes_field(buf: &mut BytesMut, b: Option<&[u8]>) {
    match b {
        None => put_varint(buf, -1),
        Some(b) => {
            put_varint(buf, b.len() as i64);
            buf.put_slice(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use bytes::Bytes;
    use kafka_protocol::records::{Compression as KCompression, RecordBatchDecoder};

    use super::*;
    use crate::headers::RecordHeader;

    /// Every codec the encoder writes.
    /// `batch_bytes_are_pinned`: (codec, length, FNV-1a 64) of the encoder's output at 3d157e2.
    const PINNED: &[(Compression, usize, u64)] = &[
        (Compression::None, 118_505, 7_193_386_471_559_625_411),
        (Compression::Gzip, 6_319, 15_978_732_502_600_154_194),
        (Compression::Snappy, 13_054, 7_232_127_567_304_347_791),
        (Compression::Lz4, 9_155, 4_353_814_865_940_077_796),
        (Compression::Zstd, 7_773, 1_388_333_604_129_766_136),
    ];

    const ALL_CODECS: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    fn records(n: usize) -> Vec<ProduceRecord> {
        (0..n)
            .map(|i| ProduceRecord {
                key: if i % 3 == 0 {
                    None
                } else {
                    Some(Bytes::from(format!("key-{i}")))
                },
                value: Some(Bytes::from(vec![b'a' + (i % 26) as u8; 200])),
                edge: None,
                headers: vec![
                    RecordHeader::new(
                        Bytes::from_static(b"edge-offset"),
                        Bytes::from(i.to_string()),
                    ),
                    RecordHeader::new(Bytes::from_static(b"empty"), Bytes::new()),
                ],
                // Out of order on purpose: deltas may be negative.
                timestamp_ms: 1_700_000_000_000 + (i as i64 % 5) * 10 - 20,
            })
            .collect()
    }

    fn decompress(buf: &mut Bytes, c: KCompression) -> anyhow::Result<Bytes> {
        let mut out = Vec::new();
        match c {
            KCompression::None => return Ok(buf.clone()),
            KCompression::Lz4 => {
                lz4_flex::frame::FrameDecoder::new(&buf[..]).read_to_end(&mut out)?;
            }
            KCompression::Zstd => {
                ruzstd::decoding::StreamingDecoder::new(&buf[..])
                    .map_err(|e| anyhow::anyhow!("{e}"))?
                    .read_to_end(&mut out)?;
            }
            KCompression::Gzip => {
                use kafka_protocol::compression::Decompressor;
                return Gzip::decompress(buf, |b: &mut Bytes| Ok(b.clone()));
            }
            KCompression::Snappy => {
                use kafka_protocol::compression::Decompressor;
                return Snappy::decompress(buf, |b: &mut Bytes| Ok(b.clone()));
            }
        }
        Ok(Bytes::from(out))
    }

    /// Our encoder against an independent decoder (the kafka-protocol crate's, which checks
    /// the CRC), for every codec.
    #[test]
    fn batches_decode_with_an_independent_decoder() {
        let input = records(50);
        for codec in ALL_CODECS {
            let mut scratch = BytesMut::new();
            let mut out = BytesMut::new();
            let id = BatchIdentity {
                producer_id: 77,
                producer_epoch: 3,
                base_sequence: 1000,
                transactional: true,
            };
            encode_batch(&input, codec, id, &mut scratch, &mut out).unwrap();
            let mut bytes = out.freeze();
            let set =
                RecordBatchDecoder::decode_with_custom_compression(&mut bytes, Some(decompress))
                    .unwrap_or_else(|e| panic!("{codec:?}: {e:#}"));
            assert_eq!(set.compression as i16, codec.attribute());
            assert_eq!(set.records.len(), input.len(), "{codec:?}");
            for (i, (got, want)) in set.records.iter().zip(&input).enumerate() {
                assert_eq!(got.offset, i as i64);
                assert_eq!(got.timestamp, want.timestamp_ms, "{codec:?} #{i}");
                assert_eq!(got.key, want.key);
                assert_eq!(got.value, want.value);
                assert_eq!(got.producer_id, 77);
                assert_eq!(got.producer_epoch, 3);
                assert_eq!(got.sequence, 1000 + i as i32);
                assert!(
                    got.transactional && !got.control,
                    "{codec:?}: attributes bit 4"
                );
                let headers: Vec<(String, Option<Bytes>)> = got
                    .headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.clone()))
                    .collect();
                assert_eq!(
                    headers,
                    vec![
                        ("edge-offset".to_string(), Some(Bytes::from(i.to_string()))),
                        ("empty".to_string(), Some(Bytes::new())),
                    ]
                );
            }
            assert!(bytes.is_empty(), "{codec:?}: trailing bytes");
        }
    }

    fn arb_record() -> impl proptest::strategy::Strategy<Value = ProduceRecord> {
        use proptest::prelude::*;
        let bytes = |max| proptest::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from);
        (
            proptest::option::of(bytes(300)),
            // Now and then a value past lz4's 64 KiB block and the varint 2-byte boundary.
            prop_oneof![4 => proptest::option::of(bytes(500)), 1 => bytes(70_000).prop_map(Some)],
            proptest::collection::btree_map("[a-z-]{1,12}", bytes(40), 0..4),
            -1_000_000i64..1_000_000,
            // A forwarded record's edge headers (topics past the varint 1-byte boundary).
            proptest::option::of((bytes(20), any::<u64>(), any::<bool>(), bytes(300))),
        )
            .prop_map(|(key, value, headers, ts, edge)| ProduceRecord {
                key,
                value,
                edge: edge.map(|(node, offset, mqtt, topic)| EdgeHeaders {
                    node,
                    offset,
                    source: if mqtt { Source::Mqtt } else { Source::Nats },
                    topic,
                }),
                headers: headers
                    .into_iter()
                    .map(|(k, v)| RecordHeader::new(Bytes::from(k), v))
                    .collect(),
                timestamp_ms: 1_700_000_000_000 + ts,
            })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]
        /// Arbitrary records (null keys and values, tombstones, large values, headers,
        /// timestamps in any order) survive every codec, checked by the independent decoder.
        #[test]
        fn arbitrary_batches_round_trip(records in proptest::collection::vec(arb_record(), 1..40), codec in 0usize..5) {
            let codec = [Compression::None, Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd][codec];
            let mut out = BytesMut::new();
            encode_batch(&records, codec, BatchIdentity::default(), &mut BytesMut::new(), &mut out).unwrap();
            let mut bytes = out.freeze();
            let set = RecordBatchDecoder::decode_with_custom_compression(&mut bytes, Some(decompress)).unwrap();
            proptest::prop_assert_eq!(set.records.len(), records.len());
            for (got, want) in set.records.iter().zip(&records) {
                proptest::prop_assert_eq!(&got.key, &want.key);
                proptest::prop_assert_eq!(&got.value, &want.value);
                proptest::prop_assert_eq!(got.timestamp, want.timestamp_ms);
                let headers: Vec<(Bytes, Option<Bytes>)> =
                    got.headers.iter().map(|(k, v)| (Bytes::copy_from_slice(k.as_bytes()), v.clone())).collect();
                let expected: Vec<(Bytes, Option<Bytes>)> = want
                    .edge
                    .iter()
                    .flat_map(EdgeHeaders::to_headers)
                    .chain(want.headers.iter().cloned())
                    .map(|h| (h.key, Some(h.value)))
                    .collect();
                proptest::prop_assert_eq!(headers, expected);
            }
        }

        /// `record_len_bound` never undercounts what records take in a batch, whatever their
        /// timestamps and positions (the planner sizes batches with it before encoding).
        #[test]
        fn record_len_bound_covers_the_encoded_record(records in proptest::collection::vec(arb_record(), 1..40)) {
            let mut out = BytesMut::new();
            encode_batch(&records, Compression::None, BatchIdentity::default(), &mut BytesMut::new(), &mut out).unwrap();
            let bound: usize = records.iter().map(record_len_bound).sum();
            proptest::prop_assert!(out.len() - HEADER_LEN <= bound, "{} > {}", out.len() - HEADER_LEN, bound);
        }
    }

    /// A batch encoded ahead and stamped later is byte for byte the one encoded with its
    /// identity in one go, for every codec and for a second identity (a new producer session).
    #[test]
    fn stamped_batches_equal_batches_encoded_with_their_identity() {
        let input = records(300);
        for codec in ALL_CODECS {
            for id in [
                BatchIdentity::default(),
                BatchIdentity {
                    producer_id: 77,
                    producer_epoch: 3,
                    base_sequence: 1000,
                    transactional: false,
                },
                BatchIdentity {
                    producer_id: i64::MAX - 5,
                    producer_epoch: i16::MAX,
                    base_sequence: i32::MAX - 10,
                    transactional: true,
                },
            ] {
                let mut want = BytesMut::new();
                encode_batch(&input, codec, id, &mut BytesMut::new(), &mut want).unwrap();
                let mut scratch = BytesMut::from(&b"left over from an earlier batch"[..]);
                let early = EncodedBatch::encode(&input, codec, &mut scratch).unwrap();
                assert_eq!(early.count(), input.len());
                assert_eq!(early.compression(), codec);
                assert_eq!(early.len(), want.len());
                let got = early.stamp(id);
                assert_eq!(&got[..], &want[..], "{codec:?} {id:?}");
            }
        }
        assert!(matches!(
            EncodedBatch::encode(&[], Compression::Lz4, &mut BytesMut::new()),
            Err(ProduceError::EmptyBatch)
        ));
    }

    /// FNV-1a 64 of `bytes`: a fingerprint to pin encoded batches with.
    fn fnv64(bytes: &[u8]) -> u64 {
        bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
    }

    /// Records shaped like the forwarder's (a key, the four edge-* headers, a 200-byte
    /// payload), over 64 KiB in all so lz4 writes several blocks.
    fn forwarded_like(n: usize) -> Vec<ProduceRecord> {
        (0..n)
            .map(|i| {
                let offset = 1_000_000 + i as u64 * 7;
                ProduceRecord {
                    key: Some(Bytes::from(format!("dev-{}", i % 16))),
                    value: Some(Bytes::from(
                        (0..200)
                            .map(|j| b'a' + ((i * 31 + j * 7) % 26) as u8)
                            .collect::<Vec<u8>>(),
                    )),
                    edge: None,
                    headers: vec![
                        RecordHeader::new(
                            Bytes::from_static(b"edge-node"),
                            Bytes::from_static(b"gw-01"),
                        ),
                        RecordHeader::new(
                            Bytes::from_static(b"edge-offset"),
                            Bytes::from(offset.to_string()),
                        ),
                        RecordHeader::new(
                            Bytes::from_static(b"edge-source"),
                            Bytes::from_static(b"mqtt"),
                        ),
                        RecordHeader::new(
                            Bytes::from_static(b"edge-topic"),
                            Bytes::from(format!("sensors/dev-{}/t", i % 16)),
                        ),
                    ],
                    timestamp_ms: 1_765_000_000_000 + (i as i64 / 3),
                }
            })
            .collect()
    }

    /// [`forwarded_like`] as the forwarder plans them: the edge headers as values, no list.
    fn forwarded_like_edge(n: usize) -> Vec<ProduceRecord> {
        forwarded_like(n)
            .into_iter()
            .enumerate()
            .map(|(i, r)| ProduceRecord {
                edge: Some(EdgeHeaders {
                    node: Bytes::from_static(b"gw-01"),
                    offset: 1_000_000 + i as u64 * 7,
                    source: Source::Mqtt,
                    topic: Bytes::from(format!("sensors/dev-{}/t", i % 16)),
                }),
                headers: Vec::new(),
                ..r
            })
            .collect()
    }

    /// The exact bytes of a batch, pinned (length and fingerprint) for every codec: the
    /// encoder may get faster, Kafka must keep receiving the same bytes. Records with their
    /// edge headers as values give the bytes of the same headers as a list.
    #[test]
    fn batch_bytes_are_pinned() {
        for input in [forwarded_like(400), forwarded_like_edge(400)] {
            batch_bytes_are_pinned_for(&input);
        }
    }

    fn batch_bytes_are_pinned_for(input: &[ProduceRecord]) {
        let id = BatchIdentity {
            producer_id: 4242,
            producer_epoch: 7,
            base_sequence: 123_456,
            transactional: false,
        };
        let mut got = Vec::new();
        let mut scratch = BytesMut::new();
        for codec in ALL_CODECS {
            let mut out = BytesMut::new();
            encode_batch(input, codec, id, &mut scratch, &mut out).unwrap();
            let early = EncodedBatch::encode(input, codec, &mut scratch).unwrap();
            assert_eq!(&early.stamp(id)[..], &out[..], "{codec:?}");
            got.push((codec, out.len(), fnv64(&out)));
        }
        assert_eq!(got, PINNED);
    }

    /// The edge headers' fixed bytes are the header fields written one by one, for both
    /// sources, and a record with edge and user headers is the record with all of them listed.
    #[test]
    fn edge_header_names_are_header_fields() {
        let field = |b: &[u8]| {
            let mut out = BytesMut::new();
            put_bytes_field(&mut out, Some(b));
            out
        };
        assert_eq!(EDGE_NODE_NAME, &field(b"edge-node")[..]);
        assert_eq!(EDGE_OFFSET_NAME, &field(b"edge-offset")[..]);
        for (source, name) in [(Source::Mqtt, "mqtt"), (Source::Nats, "nats")] {
            let mut want = field(b"edge-source");
            want.extend_from_slice(&field(name.as_bytes()));
            want.extend_from_slice(&field(b"edge-topic"));
            assert_eq!(edge_source_topic_name(source), &want[..]);
            let edge = EdgeHeaders {
                node: Bytes::from_static(b"gw-9"),
                offset: 18_446_744_073_709_551_615,
                source,
                topic: Bytes::from(vec![b't'; 200]),
            };
            let user = vec![RecordHeader::new(
                Bytes::from_static(b"unit"),
                Bytes::from_static(b"C"),
            )];
            let with_edge = ProduceRecord {
                key: Some(Bytes::from_static(b"k")),
                value: Some(Bytes::from_static(b"v")),
                edge: Some(edge.clone()),
                headers: user.clone(),
                timestamp_ms: 5,
            };
            let listed = ProduceRecord {
                edge: None,
                headers: edge.to_headers().into_iter().chain(user).collect(),
                ..with_edge.clone()
            };
            let (mut a, mut b) = (BytesMut::new(), BytesMut::new());
            write_records(&[with_edge.clone(), with_edge], 3, &mut a);
            write_records(&[listed.clone(), listed], 3, &mut b);
            assert_eq!(a, b, "{source:?}");
        }
    }

    #[test]
    fn compression_shrinks_repetitive_records() {
        let input = records(100);
        let mut sizes = Vec::new();
        for codec in [Compression::None, Compression::Lz4, Compression::Zstd] {
            let mut out = BytesMut::new();
            encode_batch(
                &input,
                codec,
                BatchIdentity::default(),
                &mut BytesMut::new(),
                &mut out,
            )
            .unwrap();
            sizes.push(out.len());
        }
        assert!(
            sizes[1] < sizes[0] / 2 && sizes[2] < sizes[0] / 2,
            "{sizes:?}"
        );
    }

    #[test]
    fn empty_batch_is_refused_and_varints_match_kafka() {
        let err = encode_batch(
            &[],
            Compression::None,
            BatchIdentity::default(),
            &mut BytesMut::new(),
            &mut BytesMut::new(),
        );
        assert!(matches!(err, Err(ProduceError::EmptyBatch)));
        // Zigzag varints as in Kafka's ByteUtils.writeVarint.
        let cases: [(i64, &[u8]); 5] = [
            (0, &[0]),
            (-1, &[1]),
            (1, &[2]),
            (63, &[0x7e]),
            (64, &[0x80, 0x01]),
        ];
        for (v, want) in cases {
            let mut b = BytesMut::new();
            put_varint(&mut b, v);
            assert_eq!(&b[..], want, "{v}");
            assert_eq!(varint_len(v), want.len());
        }
        assert_eq!(varint_len(i64::MIN), 10);
    }

    #[test]
    fn lz4_frames_match_the_reference_encoder_header_and_decode() {
        let mut reference = Vec::new();
        let info = lz4_flex::frame::FrameInfo::new()
            .block_mode(lz4_flex::frame::BlockMode::Independent)
            .block_size(lz4_flex::frame::BlockSize::Max64KB);
        let mut enc = lz4_flex::frame::FrameEncoder::with_frame_info(info, &mut reference);
        enc.write_all(b"x").unwrap();
        enc.finish().unwrap();
        assert_eq!(reference[..7], LZ4_FRAME_HEADER);
        // Compressible, incompressible and multi-block inputs, and the empty one.
        let mut x: u32 = 1;
        let noise: Vec<u8> = (0..70_000)
            .map(|_| {
                x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (x >> 24) as u8
            })
            .collect();
        let text: Vec<u8> = b"sensor reading 21.5 C ".repeat(10_000);
        for input in [&b""[..], &noise[..], &text[..], &noise[..100]] {
            let mut out = BytesMut::new();
            lz4_frame(input, &mut out).unwrap();
            let mut back = Vec::new();
            lz4_flex::frame::FrameDecoder::new(&out[..])
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, input);
        }
    }
}
