//! Turns records read from the log into per-partition Kafka batches: partition choice and
//! headers, in log order. Where a record goes (Kafka topic, key, pinned partition) travels with
//! it from ingest; only records written before that (format version 1) ask the [`Router`].
//!
//! One call plans one chunk read from the cursor. Records of one topic-partition stay in log
//! order inside their batch; batches for different partitions may be sent concurrently. A
//! partition's records that would not fit one produce request (`max_request_bytes`, judged by
//! [`record_len_bound`] before encoding) go into several batches, in log order. The
//! cursor may be committed past the chunk only once every batch of the plan was acknowledged.
//! Keyless records of one topic go to one partition per chunk (sticky per batch, round-robin
//! across chunks). Old records no route takes any more are skipped and listed in
//! [`Plan::unrouted`].

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use edge_log::Destination;
use thiserror::Error;

use crate::headers::{EdgeHeaders, Record, user_headers};
use crate::partition::{NullKeyPartitioner, PartitionError, partition_for_key};
use crate::producer::{ProduceRecord, record_len_bound, records_room};
use crate::topition::Topition;

/// Decides where a record without a stored destination goes: records written before
/// destinations were stored with them (segment format version 1). The broker supplies its
/// routes.
pub trait Router: Send + Sync + std::fmt::Debug {
    /// The destination of `record`, or `None` when no route takes it.
    fn destination(&self, record: &Record) -> Option<Destination>;
}

/// A router that takes nothing: for logs written with destinations only.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoRoutes;

impl Router for NoRoutes {
    fn destination(&self, _record: &Record) -> Option<Destination> {
        None
    }
}

/// Where `record` goes: its own destination, or the router's for an old record.
fn destination_of<'a>(router: &dyn Router, record: &'a Record) -> Option<Cow<'a, Destination>> {
    match &record.destination {
        Some(destination) => Some(Cow::Borrowed(destination)),
        None => router.destination(record).map(Cow::Owned),
    }
}

/// Why a chunk could not be planned.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum PlanError {
    /// The caller did not supply the partition count of a routed topic.
    #[error("no partition count known for Kafka topic {topic}")]
    MissingPartitionCount {
        /// Kafka topic.
        topic: String,
    },
    /// A route pins a partition the topic does not have.
    #[error("route to {topic} pins partition {partition}, but the topic has {partitions}")]
    PartitionOutOfRange {
        /// Kafka topic.
        topic: String,
        /// Pinned partition.
        partition: i32,
        /// Partitions the topic has.
        partitions: i32,
    },
    /// The topic reports no partitions.
    #[error("Kafka topic {topic}: {source}")]
    Partition {
        /// Kafka topic.
        topic: String,
        /// Underlying error.
        source: PartitionError,
    },
}

/// Records for one topic-partition, in log order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionBatch {
    /// Kafka topic and partition.
    pub tp: Topition,
    /// Records to produce, in log order.
    pub records: Vec<ProduceRecord>,
    /// Log offset of each record (same order), for logging and dead-lettering.
    pub offsets: Vec<u64>,
}

impl PartitionBatch {
    /// The records from `at` on, as a batch of their own (this one keeps those before).
    pub fn split_off(&mut self, at: usize) -> PartitionBatch {
        PartitionBatch {
            tp: self.tp.clone(),
            records: self.records.split_off(at),
            offsets: self.offsets.split_off(at),
        }
    }

    /// Bytes of keys, values and headers.
    pub fn payload_bytes(&self) -> u64 {
        self.records
            .iter()
            .map(|r| {
                let edge: usize = r.edge.as_ref().map_or(0, |e| {
                    e.pairs(&mut itoa::Buffer::new())
                        .iter()
                        .map(|(k, v)| k.len() + v.len())
                        .sum()
                });
                let headers: usize = r.headers.iter().map(|h| h.key.len() + h.value.len()).sum();
                (r.key.as_ref().map_or(0, |k| k.len())
                    + r.value.as_ref().map_or(0, |v| v.len())
                    + edge
                    + headers) as u64
            })
            .sum()
    }
}

/// The batches for one chunk of log records.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// One batch per topic-partition (several, in log order, where one would exceed the
    /// request limit), ordered by first log offset.
    pub batches: Vec<PartitionBatch>,
    /// Log offsets of records no route matched (skipped).
    pub unrouted: Vec<u64>,
}

/// Plans batches; keeps the null-key rotation between chunks.
#[derive(Debug)]
pub struct Planner {
    router: Arc<dyn Router>,
    node_id_bytes: Bytes,
    null_keys: NullKeyPartitioner,
    /// Bytes of records one batch may hold ([`records_room`] of `max_request_bytes`).
    room: usize,
}

impl Planner {
    /// A planner on gateway `node_id`; `router` places records without a destination.
    pub fn new(router: Arc<dyn Router>, node_id: &str) -> Self {
        // Start the keyless rotation at a node-specific partition so gateways spread out.
        let start =
            crate::partition::to_positive(crate::partition::murmur2(node_id.as_bytes())) as u32;
        Self {
            router,
            node_id_bytes: Bytes::from(node_id.to_owned()),
            null_keys: NullKeyPartitioner::new(start),
            room: usize::MAX,
        }
    }

    /// Plans batches that stay within `max_request_bytes` once encoded (a single record
    /// larger than that still gets a batch of its own, which Kafka's limit then decides on).
    /// Without it a batch holds all of a chunk's records for its partition.
    pub fn with_max_request_bytes(mut self, max_request_bytes: usize) -> Self {
        self.room = records_room(max_request_bytes);
        self
    }

    /// The Kafka topics `records` go to (look their partition counts up before `plan`).
    pub fn topics(&self, records: &[Record]) -> Vec<String> {
        let mut topics: Vec<String> = Vec::new();
        for r in records {
            if let Some(destination) = destination_of(self.router.as_ref(), r)
                && !topics.iter().any(|t| **t == *destination.topic)
            {
                topics.push(destination.topic.to_string());
            }
        }
        topics
    }

    /// Splits `records` into per-partition batches; `partition_counts` maps every routed topic
    /// to its partition count.
    pub fn plan(
        &mut self,
        records: &[Record],
        partition_counts: &HashMap<String, i32>,
    ) -> Result<Plan, PlanError> {
        let mut plan = Plan::default();
        // Bytes of records in each batch of the plan (same index), by `record_len_bound`.
        let mut filled: Vec<usize> = Vec::new();
        let mut keyless: HashMap<String, i32> = HashMap::new();
        // The last topic's partition count: records of a chunk mostly share their topic (one
        // `Arc` per run of records read back), so most skip hashing it.
        let mut last: Option<(Arc<str>, i32)> = None;
        for r in records {
            let Some(destination) = destination_of(self.router.as_ref(), r) else {
                plan.unrouted.push(r.offset);
                continue;
            };
            let topic: &str = &destination.topic;
            let count = match &last {
                Some((t, n)) if Arc::ptr_eq(t, &destination.topic) || **t == *topic => *n,
                _ => {
                    let n = *partition_counts.get(topic).ok_or_else(|| {
                        PlanError::MissingPartitionCount {
                            topic: topic.to_owned(),
                        }
                    })?;
                    last = Some((Arc::clone(&destination.topic), n));
                    n
                }
            };
            let key = destination.key.clone();
            let partition = match (destination.partition, &key) {
                (Some(p), _) if p >= count => {
                    return Err(PlanError::PartitionOutOfRange {
                        topic: topic.to_owned(),
                        partition: p,
                        partitions: count,
                    });
                }
                (Some(p), _) => p,
                (None, Some(k)) => {
                    partition_for_key(k, count).map_err(|source| PlanError::Partition {
                        topic: topic.to_owned(),
                        source,
                    })?
                }
                (None, None) => match keyless.get(topic) {
                    Some(p) => *p,
                    None => {
                        let p = self.null_keys.next_batch(count).map_err(|source| {
                            PlanError::Partition {
                                topic: topic.to_owned(),
                                source,
                            }
                        })?;
                        keyless.insert(topic.to_owned(), p);
                        p
                    }
                },
            };
            // The edge headers as values, written into the batch by the encoder; a list only
            // for user headers (none: no allocation).
            let record = ProduceRecord {
                key,
                value: Some(r.payload.clone()),
                edge: Some(EdgeHeaders::of(r, &self.node_id_bytes)),
                headers: user_headers(r),
                timestamp_ms: i64::try_from(r.timestamp_ms).unwrap_or(i64::MAX),
            };
            let len = record_len_bound(&record);
            // A chunk has few batches (topics × partitions): a scan beats hashing an owned key
            // per record. The partition's last batch takes the record if it has room.
            let slot = match plan
                .batches
                .iter()
                .rposition(|b| b.tp.partition() == partition && b.tp.topic() == topic)
            {
                Some(i) if filled[i].saturating_add(len) <= self.room => i,
                last => {
                    // The partition's next batch holds about as many records as its full one
                    // before it, not its whole share again.
                    let room = match last {
                        Some(i) => plan.batches[i].records.len(),
                        None => batch_room(records.len(), count),
                    };
                    plan.batches.push(PartitionBatch {
                        tp: Topition::new(Arc::clone(&destination.topic), partition),
                        records: Vec::with_capacity(room),
                        offsets: Vec::with_capacity(room),
                    });
                    filled.push(0);
                    plan.batches.len() - 1
                }
            };
            filled[slot] += len;
            plan.batches[slot].records.push(record);
            plan.batches[slot].offsets.push(r.offset);
        }
        Ok(plan)
    }
}

/// Room made for one partition's batch of a chunk of `records` records spread over `count`
/// partitions: its share and an eighth more, since keys do not spread evenly (a batch that
/// outgrows its room is copied whole into twice the room), never more than the chunk.
fn batch_room(records: usize, count: i32) -> usize {
    let share = records / usize::try_from(count.max(1)).unwrap_or(1);
    share
        .saturating_add(share / 8)
        .saturating_add(16)
        .min(records)
}

#[cfg(test)]
mod tests {
    use super::*;
    use edge_log::Source;

    /// Destinations as the broker's routes would decide them for the records of these tests:
    /// `sensors/<dev>/temperature` → `temp` keyed by the device, `logs.>` (NATS) → `logs`
    /// without a key, `alarms/#` → `alarms` keyed by the client, pinned to partition 1.
    #[derive(Debug)]
    struct TestRoutes;

    impl Router for TestRoutes {
        fn destination(&self, r: &Record) -> Option<Destination> {
            let levels: Vec<&str> = r.topic.split(['/', '.']).collect();
            match (r.source, levels.as_slice()) {
                (Source::Mqtt, ["sensors", dev, "temperature"]) => Some(Destination {
                    topic: "temp".into(),
                    key: Some(Bytes::copy_from_slice(dev.as_bytes())),
                    partition: None,
                }),
                (Source::Nats, ["logs", _, ..]) => Some(Destination::topic("logs")),
                (Source::Mqtt, ["alarms", ..]) => Some(Destination {
                    topic: "alarms".into(),
                    key: Some(Bytes::copy_from_slice(r.client_id.as_bytes())),
                    partition: Some(1),
                }),
                _ => None,
            }
        }
    }

    /// A record as ingest writes it: with its destination (none when no route took it).
    fn rec(offset: u64, source: Source, topic: &str) -> Record {
        let mut record = old_rec(offset, source, topic);
        record.destination = TestRoutes.destination(&record);
        record
    }

    /// A record as written before destinations were stored.
    fn old_rec(offset: u64, source: Source, topic: &str) -> Record {
        Record {
            offset,
            timestamp_ms: 1000 + offset,
            source,
            topic: topic.into(),
            client_id: "c1".into(),
            destination: None,
            headers: Vec::new(),
            payload: Bytes::from(format!("p{offset}")),
        }
    }

    fn planner() -> Planner {
        Planner::new(Arc::new(NoRoutes), "gw-01")
    }

    fn counts() -> HashMap<String, i32> {
        [("temp", 4), ("logs", 3), ("alarms", 2)]
            .into_iter()
            .map(|(t, n)| (t.to_string(), n))
            .collect()
    }

    /// Old records are placed by the router, new ones by their own destination (the router
    /// is not asked for them: here it would send them elsewhere).
    #[test]
    fn records_without_a_destination_ask_the_router() {
        #[derive(Debug)]
        struct Everything;
        impl Router for Everything {
            fn destination(&self, _: &Record) -> Option<Destination> {
                Some(Destination::topic("logs"))
            }
        }
        let mut p = Planner::new(Arc::new(Everything), "gw-01");
        let records = [
            old_rec(0, Source::Mqtt, "x/y"),
            rec(1, Source::Mqtt, "alarms/door"),
        ];
        assert_eq!(p.topics(&records), vec!["logs", "alarms"]);
        let plan = p.plan(&records, &counts()).unwrap();
        let topics: Vec<(&str, &[u64])> = plan
            .batches
            .iter()
            .map(|b| (b.tp.topic(), b.offsets.as_slice()))
            .collect();
        assert_eq!(topics, vec![("logs", &[0][..]), ("alarms", &[1][..])]);
        // Without a router an old record is unrouted, not lost silently.
        let plan = planner().plan(&records[..1], &counts()).unwrap();
        assert_eq!(plan.unrouted, vec![0]);
    }

    /// Room for a batch: its share of the chunk and an eighth more, at most the chunk.
    #[test]
    fn a_batch_has_room_for_its_share_and_some_more_never_more_than_the_chunk() {
        assert_eq!(batch_room(3_500, 4), 875 + 109 + 16);
        assert_eq!(batch_room(3_500, 1), 3_500);
        assert_eq!(batch_room(10, 3), 10);
        assert_eq!(batch_room(0, 0), 0);
    }

    #[test]
    fn records_split_by_partition_in_log_order_with_keys_and_headers() {
        let mut p = planner();
        let records: Vec<Record> = (0..40)
            .map(|i| match i % 4 {
                0 | 1 => rec(
                    i,
                    Source::Mqtt,
                    &format!("sensors/dev-{}/temperature", i % 7),
                ),
                2 => rec(i, Source::Nats, "logs.app.warn"),
                _ => rec(i, Source::Mqtt, "alarms/door"),
            })
            .collect();
        assert_eq!(p.topics(&records), vec!["temp", "logs", "alarms"]);
        let plan = p.plan(&records, &counts()).unwrap();
        assert!(plan.unrouted.is_empty());
        let total: usize = plan.batches.iter().map(|b| b.records.len()).sum();
        assert_eq!(total, 40);
        for b in &plan.batches {
            assert!(
                b.offsets.windows(2).all(|w| w[0] < w[1]),
                "log order inside {}",
                b.tp
            );
            for (r, off) in b.records.iter().zip(&b.offsets) {
                let edge = r.edge.as_ref().unwrap();
                assert_eq!((edge.offset, &edge.node[..]), (*off, &b"gw-01"[..]));
                assert!(r.headers.is_empty(), "no user headers, no list");
                assert_eq!(r.value, Some(Bytes::from(format!("p{off}"))));
                match b.tp.topic() {
                    "temp" => {
                        let key = r.key.clone().unwrap();
                        assert_eq!(key, Bytes::from(format!("dev-{}", off % 7)));
                        assert_eq!(b.tp.partition(), partition_for_key(&key, 4).unwrap());
                    }
                    "logs" => assert_eq!(r.key, None),
                    "alarms" => {
                        assert_eq!(b.tp.partition(), 1, "pinned partition");
                        assert_eq!(r.key, Some(Bytes::from_static(b"c1")));
                    }
                    t => panic!("unexpected topic {t}"),
                }
            }
        }
        // Keyless records of one chunk stick to one partition.
        assert_eq!(
            plan.batches
                .iter()
                .filter(|b| b.tp.topic() == "logs")
                .count(),
            1
        );
    }

    /// A chunk whose records for one partition would not fit one produce request is planned
    /// in several batches, each within the limit once encoded (incompressible payloads, every
    /// codec), in log order; before, one batch held them all and was refused when sent.
    #[test]
    fn a_partition_share_over_the_request_limit_is_planned_in_batches_within_it() {
        use crate::producer::{BatchIdentity, Compression, encode_batch};
        const LIMIT: usize = 64 << 10;
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let records: Vec<Record> = (0..2_000)
            .map(|i| {
                let mut r = rec(i, Source::Nats, "logs.app");
                let payload: Vec<u8> = (0..200)
                    .map(|_| {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        seed as u8
                    })
                    .collect();
                r.payload = Bytes::from(payload);
                r
            })
            .collect();
        let unlimited = planner().plan(&records, &counts()).unwrap();
        assert_eq!(
            unlimited.batches.len(),
            1,
            "keyless: one partition per chunk"
        );
        let plan = planner()
            .with_max_request_bytes(LIMIT)
            .plan(&records, &counts())
            .unwrap();
        assert!(plan.batches.len() > 1, "{} batches", plan.batches.len());
        let offsets: Vec<u64> = plan
            .batches
            .iter()
            .flat_map(|b| b.offsets.clone())
            .collect();
        assert_eq!(
            offsets,
            (0..2_000).collect::<Vec<u64>>(),
            "every record, in log order"
        );
        assert!(plan.batches.iter().all(|b| b.tp == plan.batches[0].tp));
        // Each batch after the first makes room for what the one before held, not for the
        // partition's whole share of the chunk again.
        for pair in plan.batches.windows(2) {
            let (full, next) = (&pair[0], &pair[1]);
            assert!(next.records.capacity() <= full.records.len().max(next.records.len()));
        }
        for codec in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let encoded = |records: &[ProduceRecord]| {
                let mut out = bytes::BytesMut::new();
                let (id, mut scratch) = (BatchIdentity::default(), bytes::BytesMut::new());
                encode_batch(records, codec, id, &mut scratch, &mut out).unwrap();
                out.len()
            };
            assert!(encoded(&unlimited.batches[0].records) > LIMIT, "{codec:?}");
            for b in &plan.batches {
                let len = encoded(&b.records);
                assert!(len <= LIMIT, "{codec:?}: {len} bytes");
                // Not cut much shorter than it needs to be either.
                let last = b == plan.batches.last().unwrap();
                assert!(
                    last || codec != Compression::None || len > LIMIT * 7 / 8,
                    "{len}"
                );
            }
        }
    }

    #[test]
    fn keyless_partition_rotates_across_chunks() {
        let mut p = planner();
        let chunk = [rec(0, Source::Nats, "logs.a")];
        let parts: Vec<i32> = (0..6)
            .map(|_| p.plan(&chunk, &counts()).unwrap().batches[0].tp.partition())
            .collect();
        for w in parts.windows(2) {
            assert_eq!((w[0] + 1) % 3, w[1], "{parts:?}");
        }
    }

    #[test]
    fn unrouted_missing_counts_and_bad_pins_are_reported() {
        let mut p = Planner::new(Arc::new(TestRoutes), "gw-01");
        let plan = p
            .plan(
                &[
                    old_rec(5, Source::Mqtt, "other/topic"),
                    old_rec(6, Source::Nats, "sensors.x.temperature"),
                ],
                &counts(),
            )
            .unwrap();
        assert_eq!(plan.unrouted, vec![5, 6]);
        assert!(plan.batches.is_empty());
        let err = p
            .plan(&[rec(1, Source::Nats, "logs.x")], &HashMap::new())
            .unwrap_err();
        assert_eq!(
            err,
            PlanError::MissingPartitionCount {
                topic: "logs".into()
            }
        );
        let mut small = counts();
        small.insert("alarms".into(), 1);
        let err = p
            .plan(&[rec(1, Source::Mqtt, "alarms/x")], &small)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "route to alarms pins partition 1, but the topic has 1"
        );
    }
}
