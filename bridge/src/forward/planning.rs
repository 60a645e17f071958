//! The planning stage, and the forwarder's one planner: chunks → per-partition batches.
//!
//! Planning needs every destination topic's partition count. The counts of the previous
//! chunk's topics are looked up first (cached by the producer, so no request) and the chunk is
//! planned with them; a topic new in this chunk is looked up when the plan misses it, and the
//! plan made again. That spares a route match per record on every chunk whose topics did not
//! change. A count that cannot be had is retried (the producer's answer says why: unreachable,
//! unknown topic — created when `auto_create_partitions` is set), so every chunk leaves this
//! stage planned. The sender asks the same planner again for records whose partition vanished.
//!
//! Each plan's batches are encoded (record batch v2 + compression) on a blocking thread, up to
//! [`READ_AHEAD`](super::READ_AHEAD) chunks ahead of the sender; the producer identity is
//! stamped in only when a batch is written.

use std::collections::HashMap;
use std::sync::Arc;

use edge_log::Record;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Encoding, ForwardConfig, Job, Read};
use crate::metrics::ForwardMetrics;
use crate::plan::{Plan, PlanError, Planner};
use crate::producer::{ErrorClass, KafkaProducer, ProduceError};
use crate::uplink::Uplink;

/// The planner and what it needs to plan (see the module docs).
pub(super) struct Planning<P> {
    planner: parking_lot::Mutex<Planner>,
    /// Kafka topics of the previous chunk.
    topics: parking_lot::Mutex<Vec<Arc<str>>>,
    /// The last plan error logged (a pinned partition the topic lacks): told once, not per
    /// retry.
    told: parking_lot::Mutex<Option<String>>,
    producer: P,
    uplink: Uplink,
    config: ForwardConfig,
    metrics: Arc<ForwardMetrics>,
}

impl<P: KafkaProducer + Clone + 'static> Planning<P> {
    /// Plans with `planner` through `producer`.
    pub fn new(
        planner: Planner,
        producer: P,
        uplink: Uplink,
        config: &ForwardConfig,
        metrics: Arc<ForwardMetrics>,
    ) -> Self {
        Self {
            planner: parking_lot::Mutex::new(planner),
            topics: parking_lot::Mutex::new(Vec::new()),
            told: parking_lot::Mutex::new(None),
            producer,
            uplink,
            config: config.clone(),
            metrics,
        }
    }

    /// Plans each chunk from `reads` (in order: keyless records rotate partitions chunk by
    /// chunk), starts encoding its batches and passes it on to `jobs`. Ends when the reader
    /// hangs up (after passing on what it has), the sender is gone, or `abort`.
    pub async fn run(
        self: Arc<Self>,
        mut reads: mpsc::Receiver<Read>,
        jobs: mpsc::Sender<Job>,
        abort: CancellationToken,
    ) {
        while let Some(read) = reads.recv().await {
            let Ok(permit) = jobs.reserve().await else {
                return; // the sender stopped (abort)
            };
            let Some(plan) = self.plan(&read.records, &abort).await else {
                return;
            };
            permit.send(Job {
                read,
                encoding: self.encode_ahead(plan),
            });
        }
    }

    /// Plans `records`, retrying until every destination's partition count is known; None if
    /// `cancel` fired first.
    pub async fn plan(&self, records: &[Record], cancel: &CancellationToken) -> Option<Plan> {
        let mut counts: HashMap<String, i32> = HashMap::new();
        let previous = self.topics.lock().clone();
        for topic in previous {
            // Cached by the producer; one that fails now is only missed if this chunk needs it.
            let n = tokio::select! {
                biased;
                _ = cancel.cancelled() => return None,
                r = self.producer.partition_count(&topic) => r,
            };
            if let Ok(n) = n
                && n > 0
            {
                counts.insert(topic.to_string(), n);
            }
        }
        let mut retry = self.config.retry();
        loop {
            let planned = self.planner.lock().plan(records, &counts);
            match planned {
                Ok(plan) => {
                    let mut topics = self.topics.lock();
                    topics.clear();
                    for b in &plan.batches {
                        if !topics.contains(b.tp.topic_arc()) {
                            topics.push(Arc::clone(b.tp.topic_arc()));
                        }
                    }
                    *self.told.lock() = None;
                    return Some(plan);
                }
                Err(PlanError::MissingPartitionCount { topic }) => {
                    let n = self.partition_count(&topic, cancel).await?;
                    counts.insert(topic, n);
                }
                Err(e) => {
                    // A route pins a partition the topic does not have (yet): look the counts
                    // up afresh after a while.
                    self.metrics.count_error("partition_missing");
                    let message = e.to_string();
                    if self.told.lock().replace(message.clone()).as_ref() != Some(&message) {
                        tracing::error!(error = %message, "cannot plan Kafka batches; retrying until the topic has the partition");
                    }
                    for topic in counts.keys() {
                        self.producer.forget_topic(topic);
                    }
                    counts.clear();
                    retry.failed(None);
                    if self.uplink.pause(&self.producer, &mut retry, cancel).await {
                        return None;
                    }
                }
            }
        }
    }

    /// The partition count of `topic`, retried (and the topic created if configured) until
    /// known; None if `cancel` fired first.
    async fn partition_count(&self, topic: &str, cancel: &CancellationToken) -> Option<i32> {
        let mut retry = self.config.retry();
        loop {
            let result = tokio::select! {
                biased;
                _ = cancel.cancelled() => return None,
                r = self.producer.partition_count(topic) => r,
            };
            let error = match result {
                // Not told to the uplink: the count may come from the producer's cache. The
                // sender tells when Kafka takes records again.
                Ok(n) if n > 0 => return Some(n),
                Ok(_) => ProduceError::UnknownPartition {
                    topic: topic.to_owned(),
                    partition: 0,
                    partitions: 0,
                },
                Err(e) => e,
            };
            self.uplink.failed(&error);
            if error.class() == ErrorClass::UnknownTopic
                && let Some(partitions) = self.config.auto_create_partitions
            {
                match self.producer.create_topic(topic, partitions).await {
                    Ok(created) => {
                        tracing::info!(%topic, partitions, created, "created Kafka topic");
                        continue;
                    }
                    Err(e) => self.uplink.failed(&e),
                }
            }
            retry.failed(Some(&error));
            if self.uplink.pause(&self.producer, &mut retry, cancel).await {
                return None;
            }
        }
    }

    /// Starts encoding the batches of `plan` ahead of their sending, on a blocking thread:
    /// CPU work that would otherwise hold up the sender, which writes the requests one after
    /// the other. It runs while earlier chunks are sent and answered.
    fn encode_ahead(&self, plan: Plan) -> Encoding {
        let producer = self.producer.clone();
        tokio::task::spawn_blocking(move || {
            let encoded = plan
                .batches
                .iter()
                .map(|b| producer.encode(&b.records))
                .collect();
            (plan, encoded)
        })
    }
}
