//! Delivers one [`Plan`] to Kafka: every partition batch concurrently, only failed batches
//! retried, with jittered backoff, until all are acknowledged. Only then may the cursor be
//! committed past the chunk, so an acknowledged event is never skipped.
//!
//! Per error class (see [`ErrorClass`]):
//! - `Retriable`: back off and resend the same batch (same records, so an idempotent producer
//!   keeps its sequence number and Kafka can drop a copy).
//! - `UnknownTopic`: back off and resend while the partition still exists; if the topic now
//!   has fewer partitions than the batch targets, stop with [`DeliverError::Replan`].
//! - `Rejected`: split the batch in halves and resend them in order; a single record still
//!   rejected is a dead letter, reported in [`Delivered::dead_letters`] and not retried.
//! - `Fatal`: stop with [`DeliverError::Fatal`]; the chunk stays uncommitted.
//!
//! Splitting keeps log order within the partition: the halves go out one after the other.

use std::time::Duration;

use thiserror::Error;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::plan::{PartitionBatch, Plan};
use crate::producer::{ErrorClass, KafkaProducer, ProduceError};

/// Retry timing for [`deliver`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliverConfig {
    /// First retry delay.
    pub backoff_base: Duration,
    /// Longest retry delay.
    pub backoff_cap: Duration,
}

impl Default for DeliverConfig {
    fn default() -> Self {
        Self {
            backoff_base: Duration::from_millis(100),
            backoff_cap: Duration::from_secs(5),
        }
    }
}

/// A record Kafka refused for good.
#[derive(Debug)]
pub struct DeadLetter {
    /// Kafka topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Log offset of the record.
    pub offset: u64,
    /// Why it was refused.
    pub error: ProduceError,
}

/// What a successful delivery did.
#[derive(Debug, Default)]
pub struct Delivered {
    /// Records acknowledged by Kafka.
    pub records: usize,
    /// Produce attempts that failed and were retried.
    pub retries: usize,
    /// Records refused for good (not retried); the caller dead-letters them.
    pub dead_letters: Vec<DeadLetter>,
}

/// Why a plan was not (fully) delivered. The chunk must not be committed.
#[derive(Debug, Error)]
pub enum DeliverError {
    /// Cancelled (shutdown); batches may be partly delivered, the replay resends them.
    #[error("delivery cancelled")]
    Cancelled,
    /// The topic's partitions changed under the plan: re-read counts and plan again.
    #[error("{topic}/{partition} no longer exists ({source}); plan the chunk again")]
    Replan {
        /// Kafka topic.
        topic: String,
        /// Partition the batch targeted.
        partition: i32,
        /// The error that showed it.
        source: ProduceError,
    },
    /// A non-retriable error: configuration, authorization, protocol.
    #[error("fatal error producing to {topic}/{partition}: {source}")]
    Fatal {
        /// Kafka topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// The error.
        source: ProduceError,
    },
    /// A delivery task panicked or was aborted.
    #[error("delivery task failed: {0}")]
    Task(String),
}

/// Delivers every batch of `plan`, concurrently per partition, retrying until all are
/// acknowledged, dead-lettered, or a fatal error / cancellation stops it.
pub async fn deliver<P>(
    producer: &P,
    plan: Plan,
    config: DeliverConfig,
    cancel: &CancellationToken,
) -> Result<Delivered, DeliverError>
where
    P: KafkaProducer + Clone + 'static,
{
    let mut tasks = JoinSet::new();
    for batch in plan.batches {
        let (producer, cancel) = (producer.clone(), cancel.clone());
        tasks.spawn(async move { deliver_batch(&producer, batch, config, &cancel).await });
    }
    let mut total = Delivered::default();
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(d)) => {
                total.records += d.records;
                total.retries += d.retries;
                total.dead_letters.extend(d.dead_letters);
            }
            Ok(Err(e)) => {
                // Stop the other batches: the chunk will be replayed anyway.
                tasks.abort_all();
                first_error.get_or_insert(e);
            }
            Err(e) if e.is_cancelled() => {}
            Err(e) => {
                tasks.abort_all();
                first_error.get_or_insert(DeliverError::Task(e.to_string()));
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(total),
    }
}

/// Delivers one partition batch; splits it on `Rejected`.
async fn deliver_batch<P: KafkaProducer>(
    producer: &P,
    batch: PartitionBatch,
    config: DeliverConfig,
    cancel: &CancellationToken,
) -> Result<Delivered, DeliverError> {
    let mut done = Delivered::default();
    let mut backoff = Backoff::new(config.backoff_base, config.backoff_cap);
    // Work list of [start, end) ranges of the batch, in log order.
    let mut pending = vec![(0, batch.records.len())];
    while let Some((start, end)) = pending.pop() {
        loop {
            let attempt = tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(DeliverError::Cancelled),
                r = producer.produce(&batch.topic, batch.partition, &batch.records[start..end]) => r,
            };
            let error = match attempt {
                Ok(_) => {
                    done.records += end - start;
                    backoff.reset();
                    break;
                }
                Err(e) => e,
            };
            match error.class() {
                ErrorClass::Retriable => {}
                ErrorClass::UnknownTopic => {
                    if let ProduceError::UnknownPartition { .. } = error {
                        return Err(DeliverError::Replan {
                            topic: batch.topic.clone(),
                            partition: batch.partition,
                            source: error,
                        });
                    }
                }
                ErrorClass::Rejected if end - start > 1 => {
                    // Send the halves in order: the stack pops the first half first.
                    let mid = start + (end - start) / 2;
                    pending.push((mid, end));
                    pending.push((start, mid));
                    break;
                }
                ErrorClass::Rejected => {
                    done.dead_letters.push(DeadLetter {
                        topic: batch.topic.clone(),
                        partition: batch.partition,
                        offset: batch.offsets.get(start).copied().unwrap_or_default(),
                        error,
                    });
                    break;
                }
                ErrorClass::Fatal => {
                    return Err(DeliverError::Fatal {
                        topic: batch.topic.clone(),
                        partition: batch.partition,
                        source: error,
                    });
                }
            }
            done.retries += 1;
            tracing::warn!(topic = %batch.topic, partition = batch.partition, error = %error, "produce failed; retrying");
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(DeliverError::Cancelled),
                _ = tokio::time::sleep(backoff.next_delay()) => {}
            }
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use bytes::Bytes;

    use super::*;
    use crate::producer::{ProduceRecord, codes};

    /// Injects the faults a real broker cannot produce on demand: scripted errors per call,
    /// and MESSAGE_TOO_LARGE for any batch holding a record whose value is `BIG`.
    #[derive(Clone, Default)]
    struct FaultyProducer {
        script: Arc<Mutex<Vec<ProduceError>>>,
        written: Arc<Mutex<Vec<(i32, String)>>>,
        calls: Arc<Mutex<usize>>,
    }

    fn broker_error(code: i16) -> ProduceError {
        ProduceError::Broker {
            api: "Produce",
            topic: "t".into(),
            partition: 0,
            code,
            name: crate::producer::code_name(code),
            message: None,
        }
    }

    impl KafkaProducer for FaultyProducer {
        async fn produce(
            &self,
            _topic: &str,
            partition: i32,
            records: &[ProduceRecord],
        ) -> Result<i64, ProduceError> {
            *self.calls.lock().unwrap() += 1;
            if let Some(e) = self.script.lock().unwrap().pop() {
                return Err(e);
            }
            if records.iter().any(|r| r.value.as_deref() == Some(b"BIG")) {
                return Err(broker_error(codes::MESSAGE_TOO_LARGE));
            }
            let mut w = self.written.lock().unwrap();
            let base = w.len() as i64;
            for r in records {
                w.push((
                    partition,
                    String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned(),
                ));
            }
            Ok(base)
        }

        async fn partition_count(&self, _topic: &str) -> Result<i32, ProduceError> {
            Ok(2)
        }
    }

    fn plan(values: &[(i32, &str)]) -> Plan {
        let mut plan = Plan::default();
        for (i, (partition, v)) in values.iter().enumerate() {
            let idx = match plan.batches.iter().position(|b| b.partition == *partition) {
                Some(i) => i,
                None => {
                    plan.batches.push(PartitionBatch {
                        topic: "t".into(),
                        partition: *partition,
                        records: Vec::new(),
                        offsets: Vec::new(),
                    });
                    plan.batches.len() - 1
                }
            };
            plan.batches[idx].records.push(ProduceRecord {
                value: Some(Bytes::from(v.to_string())),
                ..Default::default()
            });
            plan.batches[idx].offsets.push(i as u64);
        }
        plan
    }

    const FAST: DeliverConfig = DeliverConfig {
        backoff_base: Duration::from_millis(1),
        backoff_cap: Duration::from_millis(5),
    };

    #[tokio::test]
    async fn retriable_errors_are_retried_until_delivered() {
        let p = FaultyProducer::default();
        *p.script.lock().unwrap() = vec![
            broker_error(codes::NOT_LEADER_OR_FOLLOWER),
            ProduceError::Io {
                broker: "b".into(),
                source: std::io::ErrorKind::ConnectionReset.into(),
            },
            broker_error(codes::UNKNOWN_TOPIC_OR_PARTITION),
        ];
        let d = deliver(
            &p,
            plan(&[(0, "a"), (1, "b"), (0, "c")]),
            FAST,
            &CancellationToken::new(),
        )
        .await
        .unwrap();
        assert_eq!(d.records, 3);
        assert_eq!(d.retries, 3);
        assert!(d.dead_letters.is_empty());
        let w = p.written.lock().unwrap().clone();
        let p0: Vec<&str> = w
            .iter()
            .filter(|(p, _)| *p == 0)
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(p0, vec!["a", "c"]);
        assert_eq!(w.len(), 3);
    }

    #[tokio::test]
    async fn rejected_batches_are_split_and_only_the_bad_record_is_dead_lettered() {
        let p = FaultyProducer::default();
        let values: Vec<(i32, &str)> = vec![
            (0, "r0"),
            (0, "r1"),
            (0, "BIG"),
            (0, "r3"),
            (0, "r4"),
            (0, "r5"),
            (0, "r6"),
        ];
        let d = deliver(&p, plan(&values), FAST, &CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(d.records, 6);
        assert_eq!(d.dead_letters.len(), 1);
        assert_eq!(d.dead_letters[0].offset, 2);
        assert_eq!(d.dead_letters[0].error.class(), ErrorClass::Rejected);
        let order: Vec<String> = p
            .written
            .lock()
            .unwrap()
            .iter()
            .map(|(_, v)| v.clone())
            .collect();
        assert_eq!(
            order,
            vec!["r0", "r1", "r3", "r4", "r5", "r6"],
            "log order kept across splits"
        );
    }

    #[tokio::test]
    async fn fatal_and_vanished_partitions_stop_delivery() {
        let p = FaultyProducer::default();
        *p.script.lock().unwrap() = vec![broker_error(29)]; // TOPIC_AUTHORIZATION_FAILED
        let err = deliver(&p, plan(&[(0, "a")]), FAST, &CancellationToken::new())
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                DeliverError::Fatal {
                    source: ProduceError::Broker { code: 29, .. },
                    ..
                }
            ),
            "{err}"
        );

        *p.script.lock().unwrap() = vec![ProduceError::UnknownPartition {
            topic: "t".into(),
            partition: 1,
            partitions: 1,
        }];
        let err = deliver(&p, plan(&[(1, "a")]), FAST, &CancellationToken::new())
            .await
            .unwrap_err();
        assert!(
            matches!(err, DeliverError::Replan { partition: 1, .. }),
            "{err}"
        );
    }

    #[tokio::test]
    async fn cancellation_stops_a_retry_loop() {
        let p = FaultyProducer::default();
        *p.script.lock().unwrap() = (0..10_000)
            .map(|_| broker_error(codes::LEADER_NOT_AVAILABLE))
            .collect();
        let cancel = CancellationToken::new();
        let slow = DeliverConfig {
            backoff_base: Duration::from_millis(20),
            backoff_cap: Duration::from_millis(20),
        };
        let (r, _) = tokio::join!(deliver(&p, plan(&[(0, "a")]), slow, &cancel), async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            cancel.cancel();
        });
        assert!(matches!(r, Err(DeliverError::Cancelled)), "{r:?}");
        let calls = *p.calls.lock().unwrap();
        assert!(
            (2..=20).contains(&calls),
            "retried with backoff, then stopped: {calls} calls"
        );
        assert!(p.written.lock().unwrap().is_empty());
    }
}
