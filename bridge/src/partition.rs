//! Kafka's default key partitioner, bit for bit: the Java client's `Utils.murmur2` (seed
//! `0x9747b28c`) followed by `toPositive(hash) % num_partitions`, so records keyed here land
//! on the same partition as records with the same key from a Java (or librdkafka
//! `murmur2_random`) producer.
//!
//! Null key: the bridge keeps every record of one forwarded batch on one partition ("sticky
//! per batch", like the Java client's sticky partitioner since KIP-480) and moves to the next
//! partition for the next batch, round-robin. That keeps Produce requests large and still
//! spreads keyless traffic evenly over time. See [`NullKeyPartitioner`].

use thiserror::Error;

/// Why a partition could not be chosen.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum PartitionError {
    /// The topic reported zero (or a negative number of) partitions.
    #[error("topic has {num_partitions} partitions; need at least one to choose from")]
    NoPartitions {
        /// The partition count that was given.
        num_partitions: i32,
    },
}

/// Java's `org.apache.kafka.common.utils.Utils.murmur2(byte[])`, returning the same signed value.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    // Java computes `seed ^ length` with an int length; truncation is what Java does too.
    let mut h: u32 = SEED ^ (data.len() as u32);
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// Java's `Utils.toPositive`: clears the sign bit (not `abs`, which overflows on `i32::MIN`).
pub fn to_positive(n: i32) -> i32 {
    n & 0x7fff_ffff
}

/// The partition Kafka's default partitioner picks for a non-null `key`.
pub fn partition_for_key(key: &[u8], num_partitions: i32) -> Result<i32, PartitionError> {
    if num_partitions <= 0 {
        return Err(PartitionError::NoPartitions { num_partitions });
    }
    Ok(to_positive(murmur2(key)) % num_partitions)
}

/// Chooses partitions for keyless records: one partition per batch, round-robin across batches.
#[derive(Debug, Clone, Default)]
pub struct NullKeyPartitioner {
    next: u32,
}

impl NullKeyPartitioner {
    /// Starts at partition `start` (e.g. derived from the node id so gateways spread out).
    pub fn new(start: u32) -> Self {
        Self { next: start }
    }

    /// The partition for the next keyless batch; advances the round-robin position.
    pub fn next_batch(&mut self, num_partitions: i32) -> Result<i32, PartitionError> {
        if num_partitions <= 0 {
            return Err(PartitionError::NoPartitions { num_partitions });
        }
        let p = (self.next % num_partitions as u32) as i32;
        self.next = self.next.wrapping_add(1);
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Apache Kafka, clients/src/test/java/org/apache/kafka/common/utils/UtilsTest.java,
    /// `testMurmur2`: the Java client's own expected values.
    #[test]
    fn matches_kafka_utils_test_vectors() {
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (input, want) in cases {
            assert_eq!(
                murmur2(input),
                want,
                "murmur2({:?})",
                String::from_utf8_lossy(input)
            );
        }
    }

    /// librdkafka src/rdmurmur2.c, `unittest_murmur2` (`java_murmur2_results`), which covers
    /// every tail length (0..=3 trailing bytes) and the empty key.
    #[test]
    fn matches_librdkafka_unittest_vectors() {
        let short: &[u8] = b"1234";
        let long: &[u8] = b"PreAmbleWillBeRemoved,ThePrePartThatIs";
        let cases: [(&[u8], u32); 11] = [
            (b"kafka", 0xd067_cf64),
            (b"giberish123456789", 0x8f55_2b0c),
            (short, 0x9fc9_7b14),
            (&short[1..], 0xe7c0_09ca),
            (&short[2..], 0x8739_30da),
            (&short[3..], 0x5a4b_5ca1),
            (long, 0x7842_4f1c),
            (&long[1..], 0x4a62_b377),
            (&long[2..], 0xe0e4_e09e),
            (&long[3..], 0x62b8_b43f),
            (b"", 0x106e_08d9),
        ];
        for (input, want) in cases {
            assert_eq!(
                murmur2(input) as u32,
                want,
                "murmur2({:?})",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn partition_uses_to_positive_not_abs() {
        // "foobar" hashes negative (-790332482); toPositive keeps the low 31 bits:
        // 0x7fffffff & -790332482 = 1357151166, and 1357151166 % 50 = 16.
        assert_eq!(partition_for_key(b"foobar", 50), Ok(16));
        assert_eq!(to_positive(i32::MIN), 0);
        assert_eq!(to_positive(-1), i32::MAX);
        for n in 1..=16 {
            let p = partition_for_key(b"sensor-42", n).unwrap_or(-1);
            assert!((0..n).contains(&p));
        }
    }

    #[test]
    fn zero_partitions_is_an_error() {
        assert_eq!(
            partition_for_key(b"k", 0),
            Err(PartitionError::NoPartitions { num_partitions: 0 })
        );
        assert!(NullKeyPartitioner::new(0).next_batch(-1).is_err());
    }

    #[test]
    fn null_keys_round_robin_per_batch() {
        let mut p = NullKeyPartitioner::new(2);
        let got: Vec<i32> = (0..6).map(|_| p.next_batch(4).unwrap_or(-1)).collect();
        assert_eq!(got, vec![2, 3, 0, 1, 2, 3]);
    }
}
