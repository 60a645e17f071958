//! Turns records read from the log into per-partition Kafka batches: route lookup, key
//! rendering, partition choice and headers, in log order.
//!
//! One call plans one chunk read from the cursor. Records of one topic-partition stay in log
//! order inside their batch; batches for different partitions may be sent concurrently. The
//! cursor may be committed past the chunk only once every batch of the plan was acknowledged.
//! Keyless records of one topic go to one partition per chunk (sticky per batch, round-robin
//! across chunks). Records that match no route (possible after a config change) are skipped
//! and listed in [`Plan::unrouted`].

use std::collections::HashMap;

use bytes::{Bytes, BytesMut};
use thiserror::Error;

use crate::headers::{Record, build_headers_in};
use crate::partition::{NullKeyPartitioner, PartitionError, partition_for_key};
use crate::producer::ProduceRecord;
use crate::route::Routes;

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
    /// Kafka topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Records to produce, in log order.
    pub records: Vec<ProduceRecord>,
    /// Log offset of each record (same order), for logging and dead-lettering.
    pub offsets: Vec<u64>,
}

/// The batches for one chunk of log records.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// One batch per topic-partition, ordered by first log offset.
    pub batches: Vec<PartitionBatch>,
    /// Log offsets of records no route matched (skipped).
    pub unrouted: Vec<u64>,
}

/// Plans batches; keeps the scratch buffers and the null-key rotation between chunks.
#[derive(Debug)]
pub struct Planner {
    routes: Routes,
    node_id: String,
    node_id_bytes: Bytes,
    null_keys: NullKeyPartitioner,
    key_buf: Vec<u8>,
}

impl Planner {
    /// A planner for `routes` on gateway `node_id`.
    pub fn new(routes: Routes, node_id: &str) -> Self {
        // Start the keyless rotation at a node-specific partition so gateways spread out.
        let start =
            crate::partition::to_positive(crate::partition::murmur2(node_id.as_bytes())) as u32;
        Self {
            routes,
            node_id: node_id.to_owned(),
            node_id_bytes: Bytes::from(node_id.to_owned()),
            null_keys: NullKeyPartitioner::new(start),
            key_buf: Vec::new(),
        }
    }

    /// The Kafka topics `records` route to (look their partition counts up before `plan`).
    pub fn topics<'a>(&'a self, records: &'a [Record]) -> Vec<&'a str> {
        let mut topics: Vec<&str> = Vec::new();
        for r in records {
            if let Some(route) = self.routes.find(r.source, &r.topic)
                && !topics.contains(&route.kafka_topic.as_str())
            {
                topics.push(&route.kafka_topic);
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
        let mut keyless: HashMap<String, i32> = HashMap::new();
        // Offset and topic header values are cut from here: one allocation per 16 KiB.
        let mut arena = BytesMut::new();
        for r in records {
            let Some(route) = self.routes.find(r.source, &r.topic) else {
                plan.unrouted.push(r.offset);
                continue;
            };
            let topic = route.kafka_topic.as_str();
            let count =
                *partition_counts
                    .get(topic)
                    .ok_or_else(|| PlanError::MissingPartitionCount {
                        topic: topic.to_owned(),
                    })?;
            let has_key = route.render_key(
                r.source,
                &r.topic,
                &r.client_id,
                &self.node_id,
                &mut self.key_buf,
            );
            if arena.capacity() - arena.len() < 64 + r.topic.len() + self.key_buf.len() {
                arena.reserve(16 * 1024 + self.key_buf.len() + r.topic.len());
            }
            let key = has_key.then(|| {
                arena.extend_from_slice(&self.key_buf);
                arena.split().freeze()
            });
            let partition = match (route.partition, &key) {
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
            let mut headers = Vec::new();
            build_headers_in(r, &self.node_id_bytes, &mut arena, &mut headers);
            let record = ProduceRecord {
                key,
                value: Some(r.payload.clone()),
                headers,
                timestamp_ms: i64::try_from(r.timestamp_ms).unwrap_or(i64::MAX),
            };
            // A chunk has few batches (topics × partitions): a scan beats hashing an owned key
            // per record.
            let slot = match plan
                .batches
                .iter()
                .position(|b| b.partition == partition && b.topic == topic)
            {
                Some(i) => i,
                None => {
                    plan.batches.push(PartitionBatch {
                        topic: topic.to_owned(),
                        partition,
                        records: Vec::with_capacity(records.len() / count.max(1) as usize + 1),
                        offsets: Vec::with_capacity(records.len() / count.max(1) as usize + 1),
                    });
                    plan.batches.len() - 1
                }
            };
            plan.batches[slot].records.push(record);
            plan.batches[slot].offsets.push(r.offset);
        }
        Ok(plan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::RouteConfig;
    use edge_log::Source;

    fn rec(offset: u64, source: Source, topic: &str) -> Record {
        Record {
            offset,
            timestamp_ms: 1000 + offset,
            source,
            topic: topic.into(),
            client_id: "c1".into(),
            headers: Vec::new(),
            payload: Bytes::from(format!("p{offset}")),
        }
    }

    fn planner() -> Planner {
        let routes = Routes::compile(&[
            RouteConfig {
                mqtt: Some("sensors/+/temperature".into()),
                kafka_topic: "temp".into(),
                key: Some("{topic.2}".into()),
                ..Default::default()
            },
            RouteConfig {
                nats: Some("logs.>".into()),
                kafka_topic: "logs".into(),
                ..Default::default()
            },
            RouteConfig {
                mqtt: Some("alarms/#".into()),
                kafka_topic: "alarms".into(),
                key: Some("{client_id}".into()),
                partition: Some(1),
                ..Default::default()
            },
        ])
        .unwrap();
        Planner::new(routes, "gw-01")
    }

    fn counts() -> HashMap<String, i32> {
        [("temp", 4), ("logs", 3), ("alarms", 2)]
            .into_iter()
            .map(|(t, n)| (t.to_string(), n))
            .collect()
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
                "log order inside {}/{}",
                b.topic,
                b.partition
            );
            for (r, off) in b.records.iter().zip(&b.offsets) {
                assert_eq!(r.headers[1].value, Bytes::from(off.to_string()));
                assert_eq!(r.value, Some(Bytes::from(format!("p{off}"))));
                match b.topic.as_str() {
                    "temp" => {
                        let key = r.key.clone().unwrap();
                        assert_eq!(key, Bytes::from(format!("dev-{}", off % 7)));
                        assert_eq!(b.partition, partition_for_key(&key, 4).unwrap());
                    }
                    "logs" => assert_eq!(r.key, None),
                    "alarms" => {
                        assert_eq!(b.partition, 1, "pinned partition");
                        assert_eq!(r.key, Some(Bytes::from_static(b"c1")));
                    }
                    t => panic!("unexpected topic {t}"),
                }
            }
        }
        // Keyless records of one chunk stick to one partition.
        assert_eq!(plan.batches.iter().filter(|b| b.topic == "logs").count(), 1);
    }

    #[test]
    fn keyless_partition_rotates_across_chunks() {
        let mut p = planner();
        let chunk = [rec(0, Source::Nats, "logs.a")];
        let parts: Vec<i32> = (0..6)
            .map(|_| p.plan(&chunk, &counts()).unwrap().batches[0].partition)
            .collect();
        for w in parts.windows(2) {
            assert_eq!((w[0] + 1) % 3, w[1], "{parts:?}");
        }
    }

    #[test]
    fn unrouted_missing_counts_and_bad_pins_are_reported() {
        let mut p = planner();
        let plan = p
            .plan(
                &[
                    rec(5, Source::Mqtt, "other/topic"),
                    rec(6, Source::Nats, "sensors.x.temperature"),
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
