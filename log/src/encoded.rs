//! Records encoded by the appender ([`EncodedRecords`]): every field of a record's version 2
//! body after its offset (the *tail*), written on the appender's thread into one buffer per
//! batch. The writer only frames them: variant index, offset, the tail, then length and CRC
//! ([`crate::format::encode_tail_frame`]; the same bytes as
//! [`crate::format::encode_record_frame`] of the record, tested).
//!
//! Why the appender encodes: when the writer encoded [`NewRecord`]s, every record carried
//! reference counts the appending connection had just taken (its subject's and client id's
//! `Arc`s, its destination's, its payload's `Bytes`), and the writer dropped them on its own
//! thread. Each record then cost a locked increment on one core and a locked decrement on the
//! other, on cache lines both kept writing: a sampling profile of a NATS connection task put
//! one such increment at half of its decoder's time. An appender copies the fields here while
//! they are hot in its cache and shares nothing with the writer but this buffer.
//!
//! Invariants:
//! - `ends` is increasing and its last entry is `bytes.len()`: record `i`'s tail is
//!   `bytes[ends[i - 1]..ends[i]]` (from 0 for the first).
//! - A tail is exactly what [`crate::format::encode_record_frame`] writes after the offset.

use crate::format::{self, FRAME_HEADER_LEN};
use crate::record::{NewRecord, RecordFields};

/// Records of one submission, each encoded but for its offset (see the module docs).
#[derive(Debug, Default)]
pub struct EncodedRecords {
    /// The tails, back to back.
    bytes: Vec<u8>,
    /// Where each record's tail ends in `bytes`.
    ends: Vec<usize>,
}

impl EncodedRecords {
    /// No records, nothing allocated.
    pub fn new() -> EncodedRecords {
        EncodedRecords::default()
    }

    /// No records, with room for `records` records of `bytes` tail bytes in all.
    pub fn with_capacity(records: usize, bytes: usize) -> EncodedRecords {
        EncodedRecords {
            bytes: Vec::with_capacity(bytes),
            ends: Vec::with_capacity(records),
        }
    }

    /// Encodes one record (`headers`: name and value pairs, in order) after the others.
    /// Returns the bytes its tail took.
    pub fn push<'h, H>(&mut self, fields: RecordFields<'_>, headers: H) -> usize
    where
        H: Iterator<Item = (&'h [u8], &'h [u8])> + Clone,
    {
        let start = self.bytes.len();
        format::put_record_tail(&mut self.bytes, fields, headers);
        self.ends.push(self.bytes.len());
        self.bytes.len() - start
    }

    /// Encodes a [`NewRecord`] after the others. Returns the bytes its tail took.
    pub fn push_record(&mut self, record: &NewRecord) -> usize {
        self.push(record.fields(), record.header_pairs())
    }

    /// Copies a tail encoded elsewhere (a batch split into chunks).
    pub(crate) fn push_tail(&mut self, tail: &[u8]) {
        self.bytes.extend_from_slice(tail);
        self.ends.push(self.bytes.len());
    }

    /// How many records.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Tail bytes of all records.
    pub fn bytes(&self) -> usize {
        self.bytes.len()
    }

    /// The tails, in order.
    pub fn tails(&self) -> impl Iterator<Item = &[u8]> {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let tail = &self.bytes[start..end];
            start = end;
            tail
        })
    }

    /// Forgets every record and keeps the room.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
    }

    /// Room for records.
    pub fn capacity(&self) -> usize {
        self.ends.capacity()
    }

    /// Room for bytes of tails.
    pub fn bytes_capacity(&self) -> usize {
        self.bytes.capacity()
    }

    /// Makes room for `records` more records of `bytes` more tail bytes in all.
    pub fn reserve(&mut self, records: usize, bytes: usize) {
        self.ends.reserve(records);
        self.bytes.reserve(bytes);
    }
}

/// Bytes of the tail [`EncodedRecords::push_record`] writes for `record`.
pub(crate) fn tail_len(record: &NewRecord) -> usize {
    format::record_body_len(0, record) - format::tail_body_len(0, 0)
}

/// Bytes a record whose tail is `tail_len` bytes takes on disk, frame header included, at the
/// largest offset: the bound the budget reserves, as [`NewRecord::encoded_len`].
pub fn frame_len_max(tail_len: usize) -> usize {
    FRAME_HEADER_LEN + format::tail_body_len(u64::MAX, tail_len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Destination, Header, Source};
    use bytes::Bytes;
    use proptest::prelude::*;

    fn record(
        topic: String,
        client: String,
        key: Option<Vec<u8>>,
        partition: Option<i32>,
        headers: Vec<(String, Vec<u8>)>,
        payload: Vec<u8>,
        timestamp_ms: u64,
    ) -> NewRecord {
        NewRecord {
            timestamp_ms,
            source: if timestamp_ms.is_multiple_of(2) {
                Source::Mqtt
            } else {
                Source::Nats
            },
            topic: topic.into(),
            client_id: client.into(),
            destination: Destination {
                topic: "kafka-topic".into(),
                key: key.map(Bytes::from),
                partition,
            },
            headers: headers
                .into_iter()
                .map(|(key, value)| Header {
                    key,
                    value: Bytes::from(value),
                })
                .collect(),
            payload: Bytes::from(payload),
        }
    }

    proptest! {
        /// A frame made from an encoded tail is the frame the writer made from the record,
        /// byte for byte, at any offset; the bound reserved is never below it and is
        /// `NewRecord::encoded_len`.
        #[test]
        fn a_tail_framed_at_an_offset_is_the_records_frame(
            records in proptest::collection::vec(
                (
                    ".{0,20}", ".{0,12}",
                    proptest::option::of(proptest::collection::vec(any::<u8>(), 0..8)),
                    proptest::option::of(any::<i32>()),
                    proptest::collection::vec((".{0,6}", proptest::collection::vec(any::<u8>(), 0..6)), 0..3),
                    proptest::collection::vec(any::<u8>(), 0..300),
                    any::<u64>(),
                ),
                1..6,
            ),
            offsets in proptest::collection::vec(any::<u64>(), 6),
        ) {
            let records: Vec<NewRecord> = records
                .into_iter()
                .map(|(t, c, k, p, h, b, ts)| record(t, c, k, p, h, b, ts))
                .collect();
            let mut encoded = EncodedRecords::new();
            for r in &records {
                encoded.push_record(r);
            }
            prop_assert_eq!(encoded.len(), records.len());
            for ((r, tail), &offset) in records.iter().zip(encoded.tails()).zip(&offsets) {
                prop_assert_eq!(tail_len(r), tail.len());
                let mut want = Vec::new();
                format::encode_record_frame(offset, r, &mut want).unwrap();
                let mut got = Vec::new();
                let len = format::encode_tail_frame(offset, tail, &mut got).unwrap();
                prop_assert_eq!(&got, &want);
                prop_assert_eq!(len, got.len());
                prop_assert_eq!(len, format::tail_frame_len(offset, tail.len()));
                prop_assert!(frame_len_max(tail.len()) >= len);
                prop_assert_eq!(frame_len_max(tail.len()), r.encoded_len());
            }
        }
    }

    #[test]
    fn cleared_records_keep_their_room_and_split_tails_are_copied_whole() {
        let r = record(
            "a.b".into(),
            "c".into(),
            None,
            None,
            vec![],
            b"xyz".to_vec(),
            7,
        );
        let mut encoded = EncodedRecords::with_capacity(4, 256);
        let n = encoded.push_record(&r);
        encoded.push_record(&r);
        assert_eq!(encoded.bytes(), 2 * n);
        let mut copy = EncodedRecords::new();
        for tail in encoded.tails() {
            copy.push_tail(tail);
        }
        assert!(copy.tails().eq(encoded.tails()));
        encoded.clear();
        assert!(encoded.is_empty());
        assert_eq!(encoded.tails().count(), 0);
        assert_eq!((encoded.capacity(), encoded.bytes_capacity()), (4, 256));
    }
}
