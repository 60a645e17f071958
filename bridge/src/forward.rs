//! The forwarder: a named edge-log cursor → chunks → [`Planner`] → [`deliver`] → dead letters →
//! cursor commit, one chunk at a time, forever.
//!
//! - A chunk is read with [`Cursor::read`] (up to `max_batch_records` / `max_batch_bytes`); if
//!   it came back short, the forwarder lingers `linger` and tops it up, so a trickle of events
//!   still goes out in batches. A backlog is read in full chunks without lingering (replay).
//! - Every routed topic's partition count is looked up (unknown topics are retried, and created
//!   when `auto_create_partitions` is set), the chunk is planned into per-partition batches and
//!   delivered with acks=all. Only when every batch was acknowledged (or dead-lettered, and the
//!   dead letter is durable) is the cursor committed past the chunk. Nothing is ever dropped on
//!   an upstream error: the same chunk is planned and sent again after a backoff, so after a
//!   restart or outage the forwarder resumes at the committed offset, in log order per
//!   partition. A resent record carries the same `edge-offset` header.
//! - Stopping: `stop` ends the loop between chunks (a chunk in flight is finished); `abort`
//!   interrupts a delivery, which is then not committed (the next start resends it).
//! - `max_bytes_per_sec` paces the upload for metered uplinks.
//! - Three stages overlap: the reader reads the next chunk while a planning task plans the one
//!   before (and a blocking thread encodes its batches) and the sender writes earlier ones.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use edge_log::{Cursor, Log, LogError, ReadError, Record};
use thiserror::Error;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::dead_letter::{self, DeadLetterSink, Letter};
use crate::deliver::{DeadLetter, DeliverConfig, DeliverError, deliver};
use crate::metrics::{ForwardMetrics, error_kind};
use crate::plan::PartitionBatch;
use crate::plan::{Plan, PlanError, Planner, Router};
use crate::producer::{
    EncodedBatch, ErrorClass, KafkaProducer, ProduceAck, ProduceError, ProduceRecord,
};

/// The cursor name the Kafka forwarder uses in the log.
pub const CURSOR_NAME: &str = "kafka";

/// While draining a backlog, the cursor is committed at most this often (each commit is a
/// crash-safe file replace: two fsyncs). A caught-up forwarder commits after every chunk.
/// A crash resends at most this much more (same `edge-offset`).
pub const COMMIT_INTERVAL: Duration = Duration::from_millis(100);

/// Forwarder settings (the batching and retry part of `[kafka]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardConfig {
    /// Gateway id (`edge-node` header).
    pub node_id: String,
    /// How long a chunk that caught up with the log waits for more records (a backlog never
    /// waits).
    pub linger: Duration,
    /// Most on-disk bytes of log records per chunk.
    pub max_batch_bytes: usize,
    /// Most records per chunk.
    pub max_batch_records: usize,
    /// First retry delay.
    pub backoff_min: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// Upload cap in bytes per second (keys, values and headers), if any.
    pub max_bytes_per_sec: Option<u64>,
    /// Create unknown topics with this many partitions (None: wait for someone to create them).
    pub auto_create_partitions: Option<i32>,
    /// Where records Kafka refuses for good go.
    pub dead_letter: DeadLetterSink,
}

impl ForwardConfig {
    /// Defaults: 5 ms linger, 1 MiB / 10 000 records per chunk, backoff 100 ms..5 s, no upload
    /// cap, no auto-create, dead letters to `dead-letter` in the working directory.
    pub fn new(node_id: &str) -> Self {
        Self {
            node_id: node_id.to_owned(),
            linger: Duration::from_millis(5),
            max_batch_bytes: 1 << 20,
            max_batch_records: 10_000,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            max_bytes_per_sec: None,
            auto_create_partitions: None,
            dead_letter: DeadLetterSink::File("dead-letter".into()),
        }
    }
}

/// Why the forwarder could not start or had to stop.
#[derive(Debug, Error)]
pub enum ForwardError {
    /// The forwarder's cursor could not be opened (or created).
    #[error("opening log cursor {name:?}: {source}")]
    Cursor {
        /// Cursor name.
        name: String,
        /// What went wrong.
        source: LogError,
    },
}

/// A producer wrapper that counts every failed attempt by kind.
#[derive(Clone)]
struct Observed<P> {
    inner: P,
    metrics: Arc<ForwardMetrics>,
}

impl<P: KafkaProducer> KafkaProducer for Observed<P> {
    async fn produce(
        &self,
        topic: &str,
        partition: i32,
        records: &[ProduceRecord],
    ) -> Result<i64, ProduceError> {
        let result = self.inner.produce(topic, partition, records).await;
        observe(&self.metrics, &result);
        result
    }

    async fn send(&self, topic: &str, partition: i32, records: &[ProduceRecord]) -> ProduceAck {
        let ack = self.inner.send(topic, partition, records).await;
        self.observed(ack)
    }

    fn encode(&self, records: &[ProduceRecord]) -> Option<EncodedBatch> {
        self.inner.encode(records)
    }

    async fn send_encoded(
        &self,
        topic: &str,
        partition: i32,
        records: &[ProduceRecord],
        encoded: Option<EncodedBatch>,
    ) -> ProduceAck {
        let ack = self
            .inner
            .send_encoded(topic, partition, records, encoded)
            .await;
        self.observed(ack)
    }

    async fn partition_count(&self, topic: &str) -> Result<i32, ProduceError> {
        self.inner.partition_count(topic).await
    }

    async fn create_topic(&self, topic: &str, partitions: i32) -> Result<bool, ProduceError> {
        self.inner.create_topic(topic, partitions).await
    }

    fn forget_topic(&self, topic: &str) {
        self.inner.forget_topic(topic);
    }
}

impl<P> Observed<P> {
    /// `ack`, counting its outcome.
    fn observed(&self, ack: ProduceAck) -> ProduceAck {
        let metrics = Arc::clone(&self.metrics);
        Box::pin(async move {
            let result = ack.await;
            observe(&metrics, &result);
            result
        })
    }
}

/// Counts a produce outcome. A request refused only because an earlier one failed
/// ([`ProduceError::Blocked`]) is not another error.
fn observe(metrics: &ForwardMetrics, result: &Result<i64, ProduceError>) {
    match result {
        Ok(_) => metrics.upstream_down.store(false, Ordering::Relaxed),
        Err(ProduceError::Blocked { .. }) => {}
        Err(e) => {
            metrics.count_error(error_kind(e));
            if e.class() != ErrorClass::Rejected {
                metrics.upstream_down.store(true, Ordering::Relaxed);
            }
        }
    }
}

/// Delivery was interrupted by `abort`.
struct Aborted;

/// What one delivered chunk amounted to.
struct ChunkDone {
    records: usize,
    bytes: u64,
}

/// One chunk handed from the reader to the sender: its records, the plan (if the reader could
/// make one) with its batches being encoded, and the cursor position after it.
struct Job {
    records: Vec<Record>,
    plan: Option<Encoding>,
    next: u64,
    full: bool,
}

/// A plan whose batches are encoded (and compressed) on a blocking thread, off the sender's
/// path: resolves to the plan and one encoded batch (or None) per plan batch.
type Encoding = tokio::task::JoinHandle<(Plan, Vec<Option<EncodedBatch>>)>;

/// Starts encoding the batches of `plan` ahead of their sending. CPU work that would otherwise
/// hold up the sender, which writes the requests one after the other; it runs while earlier
/// chunks are sent and answered. The reader hands at most `READ_AHEAD` jobs to the sender, so
/// few chunks are encoded ahead.
fn encode_ahead<P: KafkaProducer + Clone + 'static>(producer: &P, plan: Plan) -> Encoding {
    let producer = producer.clone();
    tokio::task::spawn_blocking(move || {
        let encoded = plan
            .batches
            .iter()
            .map(|b| producer.encode(&b.records))
            .collect();
        (plan, encoded)
    })
}

/// Chunks read and planned ahead of the ones being delivered (each at most `max_batch_bytes`).
const READ_AHEAD: usize = 2;

/// Chunks whose produce requests may be in flight at once. Their batches are written in chunk
/// order, so within a partition requests leave in log order; each connection further caps its
/// requests in flight (`ProducerConfig::max_in_flight`).
pub const CHUNKS_IN_FLIGHT: usize = 4;

/// A chunk whose batches were sent and whose answers are awaited.
struct InFlightChunk {
    records: Vec<Record>,
    next: u64,
    batches: Vec<PartitionBatch>,
    unrouted: u64,
    bytes: u64,
    /// Resolves to the answer of each batch, in `batches` order.
    acks: tokio::task::JoinHandle<Vec<Result<i64, ProduceError>>>,
}

/// What the sender waits for next.
enum Event {
    Abort,
    Answered(Result<Vec<Result<i64, ProduceError>>, tokio::task::JoinError>),
    Job(Option<Job>),
}

/// Forwards the log to Kafka through one named cursor.
pub struct Forwarder<P> {
    log: Log,
    cursor: Cursor,
    planner: Planner,
    sender: Sender<P>,
    config: ForwardConfig,
    metrics: Arc<ForwardMetrics>,
}

/// The delivering half: plans again when needed, delivers, dead-letters.
struct Sender<P> {
    producer: Observed<P>,
    /// Partitions with a failed batch not resent yet: later batches are not sent to them.
    blocked: HashSet<(String, i32)>,
    planner: Planner,
    config: ForwardConfig,
    metrics: Arc<ForwardMetrics>,
}

impl<P: KafkaProducer + Clone + 'static> Forwarder<P> {
    /// Opens (creating if needed) cursor `cursor_name` of `log`. Call this before devices can
    /// publish: with the cursor in place, retention never deletes unforwarded records.
    pub fn open(
        log: &Log,
        cursor_name: &str,
        router: Arc<dyn Router>,
        producer: P,
        config: ForwardConfig,
    ) -> Result<Self, ForwardError> {
        let cursor = log
            .cursor(cursor_name)
            .map_err(|source| ForwardError::Cursor {
                name: cursor_name.to_owned(),
                source,
            })?;
        let metrics = Arc::new(ForwardMetrics::default());
        metrics
            .committed
            .store(cursor.committed(), Ordering::Relaxed);
        Ok(Self {
            log: log.clone(),
            cursor,
            planner: Planner::new(Arc::clone(&router), &config.node_id),
            sender: Sender {
                producer: Observed {
                    inner: producer,
                    metrics: Arc::clone(&metrics),
                },
                blocked: HashSet::new(),
                planner: Planner::new(router, &config.node_id),
                config: config.clone(),
                metrics: Arc::clone(&metrics),
            },
            config,
            metrics,
        })
    }

    /// The forwarder's counters, for `/metrics`.
    pub fn metrics(&self) -> Arc<ForwardMetrics> {
        Arc::clone(&self.metrics)
    }

    /// Forwards until `stop` (the chunks already read are still delivered) or `abort`
    /// (mid-delivery, uncommitted), or the log closes.
    ///
    /// Three stages: this task reads chunks; a planning task plans them (and starts encoding
    /// their batches on a blocking thread) up to [`READ_AHEAD`] chunks ahead; a sender task
    /// delivers them strictly one after the other (so per-partition log order holds) and
    /// reports how far Kafka acknowledged; this task commits the cursor up to there.
    pub async fn run(self, stop: CancellationToken, abort: CancellationToken) {
        let Forwarder {
            log,
            mut cursor,
            planner,
            sender,
            config,
            metrics,
        } = self;
        let stop_any = {
            let both = CancellationToken::new();
            let (s, a, b) = (stop.clone(), abort.clone(), both.clone());
            tokio::spawn(async move {
                tokio::select! {
                    _ = s.cancelled() => {}
                    _ = a.cancelled() => {}
                }
                b.cancel();
            });
            both
        };
        tracing::info!(
            cursor = cursor.name(),
            committed = cursor.committed(),
            durable_end = log.durable_end(),
            "Kafka forwarder started"
        );
        let (jobs_tx, jobs_rx) = tokio::sync::mpsc::channel::<Job>(READ_AHEAD);
        let (read_tx, read_rx) = tokio::sync::mpsc::channel::<Read>(1);
        let (acked_tx, mut acked_rx) = tokio::sync::watch::channel(cursor.committed());
        let probe = sender.producer.clone();
        let sending = tokio::spawn(sender.run(jobs_rx, acked_tx, stop.clone(), abort.clone()));
        let planning = tokio::spawn(plan_stage(planner, probe, read_rx, jobs_tx, abort.clone()));

        let mut read_backoff = Backoff::new(config.backoff_min, config.backoff_max);
        let mut last_commit = Instant::now();
        loop {
            // Commit what Kafka acknowledged: when caught up at once, else every interval.
            let acked = *acked_rx.borrow_and_update();
            if acked > cursor.committed()
                && (acked >= log.durable_end() || last_commit.elapsed() >= COMMIT_INTERVAL)
            {
                commit(&mut cursor, &metrics, acked).await;
                last_commit = Instant::now();
                if acked >= log.durable_end() {
                    metrics.oldest_pending_ms.store(0, Ordering::Relaxed);
                    metrics.replaying.store(false, Ordering::Relaxed);
                }
            }
            let permit = tokio::select! {
                biased;
                _ = stop_any.cancelled() => break,
                r = acked_rx.changed() => match r {
                    Ok(()) => continue,
                    Err(_) => break, // the sender stopped (abort)
                },
                p = read_tx.reserve() => match p {
                    Ok(p) => p,
                    Err(_) => break, // the sender stopped (abort)
                },
            };
            let read = tokio::select! {
                biased;
                _ = stop_any.cancelled() => break,
                r = acked_rx.changed() => match r {
                    Ok(()) => continue,
                    Err(_) => break, // the sender stopped (abort)
                },
                r = cursor.read(config.max_batch_records, config.max_batch_bytes) => r,
            };
            let mut records = match read {
                Ok(records) => records,
                Err(ReadError::Closed) => break,
                Err(e) => {
                    metrics.count_error("log");
                    tracing::error!(error = %e, "reading the log for Kafka failed; retrying");
                    if sleep_or_cancel(read_backoff.next_delay(), &stop_any).await {
                        break;
                    }
                    continue;
                }
            };
            read_backoff.reset();
            let mut disk_bytes: usize = records.iter().map(Record::encoded_len).sum();
            // Full when a limit stopped the read: then more durable records are waiting (a
            // byte-limited chunk ends one record short of `max_batch_bytes`, so comparing the
            // sizes is not enough). Only a chunk that caught up with the log lingers.
            let full = cursor.position() < log.durable_end()
                || records.len() >= config.max_batch_records
                || disk_bytes >= config.max_batch_bytes;
            if !full && !config.linger.is_zero() {
                sleep_or_cancel(config.linger, &stop_any).await;
                let (n, b) = (
                    config.max_batch_records - records.len(),
                    config.max_batch_bytes - disk_bytes,
                );
                let resume = cursor.position();
                match cursor.try_read(n, b) {
                    Ok(more) => {
                        disk_bytes += more.iter().map(Record::encoded_len).sum::<usize>();
                        records.extend(more);
                    }
                    Err(e) => {
                        // Forward what we have; the next read meets the error again.
                        metrics.count_error("log");
                        tracing::warn!(error = %e, "reading more records for the batch failed");
                        cursor.seek(resume);
                    }
                }
            }
            if records.is_empty() {
                continue;
            }
            metrics.observe_record_sizes(records.len(), disk_bytes);
            permit.send(Read {
                records,
                next: cursor.position(),
                full,
            });
        }
        drop(read_tx);
        stop_any.cancel();
        if planning.await.is_err() {
            tracing::error!("Kafka planning task failed");
        }
        if sending.await.is_err() {
            tracing::error!("Kafka sender task failed");
        }
        let acked = *acked_rx.borrow();
        commit(&mut cursor, &metrics, acked).await;
        tracing::info!(committed = cursor.committed(), "Kafka forwarder stopped");
    }
}

/// A chunk read from the log, on its way to the planning stage.
struct Read {
    records: Vec<Record>,
    next: u64,
    full: bool,
}

/// The middle stage: plans each chunk the reader hands over (in order: keyless records rotate
/// partitions chunk by chunk), starts encoding its batches and passes it on to the sender. A
/// stage of its own so reading the next chunk overlaps planning this one. Ends when the reader
/// hangs up (after passing on what it has) or the sender is gone.
async fn plan_stage<P: KafkaProducer + Clone + 'static>(
    mut planner: Planner,
    producer: P,
    mut reads: tokio::sync::mpsc::Receiver<Read>,
    jobs: tokio::sync::mpsc::Sender<Job>,
    abort: CancellationToken,
) {
    let mut topics = Vec::new();
    while let Some(read) = reads.recv().await {
        let Ok(permit) = jobs.reserve().await else {
            return; // the sender stopped (abort)
        };
        let plan = try_plan(&mut planner, &producer, &read.records, &mut topics, &abort)
            .await
            .map(|plan| encode_ahead(&producer, plan));
        permit.send(Job {
            records: read.records,
            plan,
            next: read.next,
            full: read.full,
        });
    }
}

/// Plans `records` if every topic's partition count is at hand now (no retries: the sender
/// retries when this returns None). `topics` holds the Kafka topics the previous chunk went to:
/// their (cached, periodically refreshed) counts are looked up first and the chunk planned with
/// them, and a topic the plan then misses is looked up and the plan made again. That spares a
/// route match per record (what `Planner::topics` costs) on every chunk whose topics did not
/// change.
async fn try_plan<P: KafkaProducer>(
    planner: &mut Planner,
    producer: &P,
    records: &[Record],
    topics: &mut Vec<String>,
    cancel: &CancellationToken,
) -> Option<Plan> {
    let mut counts = HashMap::with_capacity(topics.len());
    let mut lookup = std::mem::take(topics);
    loop {
        for topic in lookup.drain(..) {
            let n = tokio::select! {
                biased;
                _ = cancel.cancelled() => return None,
                r = producer.partition_count(&topic) => r.ok().filter(|n| *n > 0),
            };
            // A topic of an earlier chunk that fails now is only missed if this chunk needs it.
            if let Some(n) = n {
                counts.insert(topic, n);
            }
        }
        match planner.plan(records, &counts) {
            Ok(plan) => {
                for b in &plan.batches {
                    if !topics.contains(&b.topic) {
                        topics.push(b.topic.clone());
                    }
                }
                return Some(plan);
            }
            Err(PlanError::MissingPartitionCount { topic }) if !counts.contains_key(&topic) => {
                let n = tokio::select! {
                    biased;
                    _ = cancel.cancelled() => return None,
                    r = producer.partition_count(&topic) => r.ok().filter(|n| *n > 0)?,
                };
                counts.insert(topic, n);
            }
            Err(_) => return None,
        }
    }
}

/// Commits `cursor` at `next` (everything below was acknowledged by Kafka).
async fn commit(cursor: &mut Cursor, metrics: &ForwardMetrics, next: u64) {
    if next <= cursor.committed() {
        return;
    }
    match cursor.commit(next).await {
        Ok(()) => metrics.committed.store(next, Ordering::Relaxed),
        Err(e) => {
            // Forwarding goes on; the next successful commit covers this chunk too.
            metrics.count_error("log");
            tracing::error!(error = %e, "committing the Kafka cursor failed");
        }
    }
}

impl<P: KafkaProducer + Clone + 'static> Sender<P> {
    /// Delivers jobs in order until the reader hangs up or `abort`; reports the position after
    /// each acknowledged chunk on `acked`.
    ///
    /// Up to [`CHUNKS_IN_FLIGHT`] chunks are in flight: their batches are sent (written in
    /// order) without waiting for the answers of the chunks before. Chunks complete strictly in
    /// order, so `acked` only ever covers a prefix Kafka acknowledged. If a batch failed, every
    /// answer in flight is awaited first; then the failed batches are resent chunk by chunk, in
    /// order, with the retry, split and dead-letter rules of [`deliver`]. The producer refuses
    /// to send to a partition after a failure until that resend (see
    /// [`KafkaProducer::send`]), and the idempotent producer's sequence numbers make Kafka
    /// refuse a batch that would overtake a failed one; so records do not reach Kafka out of
    /// log order, and a resent batch Kafka already had is written once or carries the same
    /// `edge-offset` header.
    async fn run(
        mut self,
        mut jobs: tokio::sync::mpsc::Receiver<Job>,
        acked: tokio::sync::watch::Sender<u64>,
        stop: CancellationToken,
        abort: CancellationToken,
    ) {
        let mut pace = Pace::new(self.config.max_bytes_per_sec);
        let mut in_flight: VecDeque<InFlightChunk> = VecDeque::new();
        let mut open = true;
        loop {
            if !open && in_flight.is_empty() {
                return;
            }
            let room = open && in_flight.len() < CHUNKS_IN_FLIGHT;
            let event = {
                let front = in_flight.front_mut().map(|c| &mut c.acks);
                tokio::select! {
                    biased;
                    _ = abort.cancelled() => Event::Abort,
                    r = async {
                        match front {
                            Some(acks) => acks.await,
                            None => std::future::pending().await,
                        }
                    } => Event::Answered(r),
                    j = jobs.recv(), if room => Event::Job(j),
                }
            };
            let done = match event {
                Event::Abort => {
                    tracing::info!(
                        delivered = *acked.borrow(),
                        "Kafka forwarder aborted mid-delivery; the chunks in flight are resent at next start"
                    );
                    return;
                }
                Event::Job(None) => {
                    open = false;
                    continue;
                }
                Event::Job(Some(job)) => {
                    let plan = match job.plan {
                        Some(encoding) => tokio::select! {
                            biased;
                            _ = abort.cancelled() => return,
                            // A failed encoding task: plan and deliver the chunk on its own.
                            r = encoding => r.ok(),
                        },
                        None => None,
                    };
                    if plan.is_none() {
                        // Planning needs retries (unknown partition counts): finish the chunks
                        // in flight, then deliver this one on its own.
                        while let Some(mut chunk) = in_flight.pop_front() {
                            let results = tokio::select! {
                                biased;
                                _ = abort.cancelled() => return,
                                r = &mut chunk.acks => r,
                            };
                            let Ok(done) = self.settle(chunk, results, &acked, &abort).await else {
                                return;
                            };
                            self.count(&done);
                            self.note_front(in_flight.front());
                        }
                        self.blocked.clear();
                    }
                    if in_flight.is_empty()
                        && let Some(first) = job.records.first()
                    {
                        self.metrics
                            .oldest_pending_ms
                            .store(first.timestamp_ms.max(1), Ordering::Relaxed);
                    }
                    self.metrics.replaying.store(job.full, Ordering::Relaxed);
                    match plan {
                        Some((plan, encoded)) => {
                            let Some(chunk) = self
                                .start(job.records, job.next, plan, encoded, &abort)
                                .await
                            else {
                                return;
                            };
                            let bytes = chunk.bytes;
                            in_flight.push_back(chunk);
                            if !stop.is_cancelled() {
                                pace.wait(bytes, &abort).await;
                            }
                            continue;
                        }
                        None => match self.forward_chunk(&job.records, None, &abort).await {
                            Ok(done) => {
                                acked.send_replace(job.next);
                                done
                            }
                            Err(Aborted) => return,
                        },
                    }
                }
                Event::Answered(results) => {
                    let Some(chunk) = in_flight.pop_front() else {
                        continue;
                    };
                    let Ok(done) = self.settle(chunk, results, &acked, &abort).await else {
                        return;
                    };
                    if in_flight.is_empty() {
                        // Every failed batch was resent: partitions are open again.
                        self.blocked.clear();
                    }
                    self.note_front(in_flight.front());
                    done
                }
            };
            self.count(&done);
        }
    }

    /// Counts a completed chunk.
    fn count(&self, done: &ChunkDone) {
        self.metrics
            .records
            .fetch_add(done.records as u64, Ordering::Relaxed);
        self.metrics.bytes.fetch_add(done.bytes, Ordering::Relaxed);
        self.metrics.batches.fetch_add(1, Ordering::Relaxed);
    }

    /// Points `oldest_pending_ms` at the oldest chunk still in flight.
    fn note_front(&self, front: Option<&InFlightChunk>) {
        if let Some(first) = front.and_then(|c| c.records.first()) {
            self.metrics
                .oldest_pending_ms
                .store(first.timestamp_ms.max(1), Ordering::Relaxed);
        }
    }

    /// Sends every batch of `plan` (in plan order, with the batches encoded ahead) and returns
    /// the chunk in flight; None if aborted.
    async fn start(
        &mut self,
        records: Vec<Record>,
        next: u64,
        plan: Plan,
        encoded: Vec<Option<EncodedBatch>>,
        abort: &CancellationToken,
    ) -> Option<InFlightChunk> {
        let bytes = plan_bytes(&plan);
        let mut acks: Vec<ProduceAck> = Vec::with_capacity(plan.batches.len());
        let mut encoded = encoded.into_iter();
        for b in &plan.batches {
            let encoded = encoded.next().flatten();
            if self.blocked.contains(&(b.topic.clone(), b.partition)) {
                acks.push(Box::pin(std::future::ready(Err(ProduceError::Blocked {
                    topic: b.topic.clone(),
                    partition: b.partition,
                }))));
                continue;
            }
            let mut ack = tokio::select! {
                biased;
                _ = abort.cancelled() => return None,
                a = self.producer.send_encoded(&b.topic, b.partition, &b.records, encoded) => a,
            };
            // A producer that answers at once (no pipelining of its own) may already have
            // failed: send nothing more to that partition until the resend.
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            if let std::task::Poll::Ready(result) = ack.as_mut().poll(&mut cx) {
                if result.is_err() {
                    self.blocked.insert((b.topic.clone(), b.partition));
                }
                ack = Box::pin(std::future::ready(result));
            }
            acks.push(ack);
        }
        let acks = tokio::spawn(async move {
            let mut results = Vec::with_capacity(acks.len());
            for ack in acks {
                results.push(ack.await);
            }
            results
        });
        Some(InFlightChunk {
            records,
            next,
            batches: plan.batches,
            unrouted: plan.unrouted.len() as u64,
            bytes,
            acks,
        })
    }

    /// Completes the oldest chunk in flight: if a batch failed, resends the failed batches
    /// (retrying until acknowledged or dead-lettered). Then reports the chunk acknowledged.
    async fn settle(
        &mut self,
        chunk: InFlightChunk,
        results: Result<Vec<Result<i64, ProduceError>>, tokio::task::JoinError>,
        acked: &tokio::sync::watch::Sender<u64>,
        abort: &CancellationToken,
    ) -> Result<ChunkDone, Aborted> {
        let results = match results {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "waiting for Kafka's answers failed; resending the chunk");
                Vec::new()
            }
        };
        let mut ok_records = 0;
        let mut failed = Vec::new();
        let mut results = results.into_iter();
        for batch in chunk.batches {
            match results.next() {
                Some(Ok(_)) => ok_records += batch.records.len(),
                Some(Err(e)) => {
                    if !matches!(e, ProduceError::Blocked { .. }) {
                        tracing::warn!(topic = %batch.topic, partition = batch.partition, error = %e, "produce failed; resending from the first unacknowledged batch");
                    }
                    failed.push(batch);
                }
                None => failed.push(batch),
            }
        }
        let mut done = ChunkDone {
            records: ok_records,
            bytes: chunk.bytes,
        };
        if !failed.is_empty() {
            let plan = Plan {
                batches: failed,
                unrouted: Vec::new(),
            };
            let resent = self
                .forward_chunk(&chunk.records, Some(plan), abort)
                .await?;
            done.records += resent.records;
        }
        self.metrics
            .unrouted
            .fetch_add(chunk.unrouted, Ordering::Relaxed);
        acked.send_replace(chunk.next);
        Ok(done)
    }

    /// Plans (unless `plan` is given) and delivers one chunk until every record is acknowledged
    /// or dead-lettered.
    async fn forward_chunk(
        &mut self,
        records: &[Record],
        mut plan: Option<Plan>,
        abort: &CancellationToken,
    ) -> Result<ChunkDone, Aborted> {
        let mut backoff = Backoff::new(self.config.backoff_min, self.config.backoff_max);
        loop {
            let plan = match plan.take() {
                Some(plan) => plan,
                None => {
                    let topics = self.planner.topics(records);
                    let mut counts = HashMap::with_capacity(topics.len());
                    for topic in topics {
                        let n = self.partition_count(&topic, abort).await?;
                        counts.insert(topic, n);
                    }
                    match self.planner.plan(records, &counts) {
                        Ok(plan) => plan,
                        Err(e) => {
                            self.metrics.count_error("plan");
                            tracing::error!(error = %e, "cannot plan Kafka batches; retrying");
                            for topic in counts.keys() {
                                self.producer.forget_topic(topic);
                            }
                            if sleep_or_cancel(backoff.next_delay(), abort).await {
                                return Err(Aborted);
                            }
                            continue;
                        }
                    }
                }
            };
            let unrouted = plan.unrouted.len() as u64;
            let bytes = plan_bytes(&plan);
            let deliver_config = DeliverConfig {
                backoff_base: self.config.backoff_min,
                backoff_cap: self.config.backoff_max,
            };
            match deliver(&self.producer, plan, deliver_config, abort).await {
                Ok(delivered) => {
                    self.dead_letter(records, &delivered.dead_letters, abort)
                        .await?;
                    self.metrics.unrouted.fetch_add(unrouted, Ordering::Relaxed);
                    return Ok(ChunkDone {
                        records: delivered.records,
                        bytes,
                    });
                }
                Err(DeliverError::Cancelled) => return Err(Aborted),
                Err(DeliverError::Replan { topic, source, .. }) => {
                    tracing::warn!(%topic, error = %source, "partitions changed; planning the chunk again");
                    self.producer.forget_topic(&topic);
                }
                Err(e) => {
                    if matches!(e, DeliverError::Task(_)) {
                        self.metrics.count_error("fatal");
                    }
                    tracing::error!(error = %e, "Kafka refused the batch; retrying after backoff (nothing is dropped)");
                    if sleep_or_cancel(backoff.next_delay(), abort).await {
                        return Err(Aborted);
                    }
                }
            }
        }
    }

    /// The partition count of `topic`, retried (and the topic created if configured) until
    /// known.
    async fn partition_count(
        &self,
        topic: &str,
        abort: &CancellationToken,
    ) -> Result<i32, Aborted> {
        let mut backoff = Backoff::new(self.config.backoff_min, self.config.backoff_max);
        loop {
            let result = tokio::select! {
                biased;
                _ = abort.cancelled() => return Err(Aborted),
                r = self.producer.partition_count(topic) => r,
            };
            let error = match result {
                Ok(n) if n > 0 => return Ok(n),
                Ok(_) => ProduceError::UnknownPartition {
                    topic: topic.to_owned(),
                    partition: 0,
                    partitions: 0,
                },
                Err(e) => e,
            };
            self.metrics.count_error(error_kind(&error));
            self.metrics.upstream_down.store(true, Ordering::Relaxed);
            if error.class() == ErrorClass::UnknownTopic
                && let Some(partitions) = self.config.auto_create_partitions
            {
                match self.producer.create_topic(topic, partitions).await {
                    Ok(created) => {
                        tracing::info!(%topic, partitions, created, "created Kafka topic");
                        continue;
                    }
                    Err(e) => tracing::warn!(%topic, error = %e, "creating Kafka topic failed"),
                }
            }
            tracing::warn!(%topic, error = %error, "Kafka topic metadata unavailable; retrying");
            if sleep_or_cancel(backoff.next_delay(), abort).await {
                return Err(Aborted);
            }
        }
    }

    /// Makes every dead letter durable (file fsynced or topic acknowledged) before the cursor
    /// may move past it.
    async fn dead_letter(
        &self,
        records: &[Record],
        letters: &[DeadLetter],
        abort: &CancellationToken,
    ) -> Result<(), Aborted> {
        if letters.is_empty() {
            return Ok(());
        }
        let mut backoff = Backoff::new(self.config.backoff_min, self.config.backoff_max);
        let letters: Vec<Letter<'_>> = letters
            .iter()
            .filter_map(|dl| {
                let i = records.binary_search_by_key(&dl.offset, |r| r.offset).ok()?;
                tracing::error!(offset = dl.offset, topic = %dl.topic, partition = dl.partition, error = %dl.error, "Kafka refused a record for good; dead-lettering it");
                Some(Letter {
                    node: &self.config.node_id,
                    record: &records[i],
                    kafka_topic: &dl.topic,
                    partition: dl.partition,
                    error: dl.error.to_string(),
                })
            })
            .collect();
        loop {
            let written = match &self.config.dead_letter {
                DeadLetterSink::File(path) => {
                    let lines: Vec<String> = letters.iter().map(|l| l.to_json(true)).collect();
                    let path = path.clone();
                    match tokio::task::spawn_blocking(move || {
                        dead_letter::append_file(&path, &lines)
                    })
                    .await
                    {
                        Ok(Ok(())) => Ok(()),
                        Ok(Err(e)) => Err(e.to_string()),
                        Err(e) => Err(e.to_string()),
                    }
                }
                DeadLetterSink::Topic(topic) => {
                    let batch: Vec<ProduceRecord> =
                        letters.iter().map(Letter::to_produce_record).collect();
                    self.producer
                        .produce(topic, 0, &batch)
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                }
            };
            match written {
                Ok(()) => {
                    self.metrics
                        .dead_letters
                        .fetch_add(letters.len() as u64, Ordering::Relaxed);
                    return Ok(());
                }
                Err(e) => {
                    self.metrics.count_error("log");
                    tracing::error!(error = %e, "writing dead letters failed; retrying");
                    if sleep_or_cancel(backoff.next_delay(), abort).await {
                        return Err(Aborted);
                    }
                }
            }
        }
    }
}

/// Bytes of keys, values and headers in a plan.
fn plan_bytes(plan: &Plan) -> u64 {
    plan.batches
        .iter()
        .flat_map(|b| &b.records)
        .map(|r| {
            let headers: usize = r.headers.iter().map(|h| h.key.len() + h.value.len()).sum();
            (r.key.as_ref().map_or(0, |k| k.len())
                + r.value.as_ref().map_or(0, |v| v.len())
                + headers) as u64
        })
        .sum()
}

/// Sleeps `d`; true if `cancel` fired first.
async fn sleep_or_cancel(d: Duration, cancel: &CancellationToken) -> bool {
    tokio::select! {
        biased;
        _ = cancel.cancelled() => true,
        _ = tokio::time::sleep(d) => false,
    }
}

/// Paces uploads to a byte rate (token bucket with up to one second of burst).
#[derive(Debug)]
struct Pace {
    rate: u64,
    start: Instant,
    sent: u64,
}

impl Pace {
    fn new(rate: Option<u64>) -> Self {
        Self {
            rate: rate.unwrap_or(0),
            start: Instant::now(),
            sent: 0,
        }
    }

    fn due(&self) -> Instant {
        self.start + Duration::from_secs_f64(self.sent as f64 / self.rate as f64)
    }

    async fn wait(&mut self, bytes: u64, cancel: &CancellationToken) {
        if self.rate == 0 {
            return;
        }
        let now = Instant::now();
        if now > self.due() + Duration::from_secs(1) {
            // Idle for a while: do not let the unused allowance become a huge burst.
            self.start = now;
            self.sent = 0;
        }
        self.sent += bytes;
        let due = self.due();
        if due > now {
            sleep_or_cancel(due - now, cancel).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use bytes::Bytes;
    use edge_log::{Destination, LogConfig, NewRecord, Source};

    use super::*;
    use crate::plan::NoRoutes;
    use crate::producer::codes;

    /// Runs `fwd` until it has committed `n` records (10 s at most), then stops it.
    async fn run_until_committed<P: KafkaProducer + Clone + Send + Sync + 'static>(
        fwd: Forwarder<P>,
        n: u64,
    ) -> Arc<ForwardMetrics> {
        let metrics = fwd.metrics();
        let (stop, abort) = (CancellationToken::new(), CancellationToken::new());
        let task = tokio::spawn(fwd.run(stop.clone(), abort.clone()));
        let deadline = Instant::now() + Duration::from_secs(10);
        while metrics.committed.load(Ordering::Relaxed) < n {
            assert!(Instant::now() < deadline, "not all committed");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        stop.cancel();
        task.await.unwrap();
        metrics
    }

    /// Injects what a real broker cannot do on demand: the first `fail_first` produce calls fail
    /// with a connection reset (outcome unknown), any batch holding a `BIG` value is refused
    /// with MESSAGE_TOO_LARGE, and `always_fail` makes every call fail.
    #[derive(Clone, Default)]
    struct FaultyProducer {
        fail_first: Arc<Mutex<usize>>,
        always_fail: bool,
        written: Arc<Mutex<Vec<(i32, Bytes, Bytes)>>>,
    }

    impl KafkaProducer for FaultyProducer {
        async fn produce(
            &self,
            topic: &str,
            partition: i32,
            records: &[ProduceRecord],
        ) -> Result<i64, ProduceError> {
            {
                let mut f = self.fail_first.lock().unwrap();
                if *f > 0 || self.always_fail {
                    *f = f.saturating_sub(1);
                    return Err(ProduceError::Io {
                        broker: "b".into(),
                        source: std::io::ErrorKind::ConnectionReset.into(),
                    });
                }
            }
            if records.iter().any(|r| r.value.as_deref() == Some(b"BIG")) {
                return Err(ProduceError::Broker {
                    api: "Produce",
                    topic: topic.into(),
                    partition,
                    code: codes::MESSAGE_TOO_LARGE,
                    name: "MESSAGE_TOO_LARGE".into(),
                    message: None,
                });
            }
            let mut w = self.written.lock().unwrap();
            for r in records {
                let offset = r.headers[1].value.clone();
                w.push((partition, offset, r.value.clone().unwrap()));
            }
            Ok(0)
        }

        async fn partition_count(&self, _topic: &str) -> Result<i32, ProduceError> {
            Ok(3)
        }
    }

    async fn log_with(dir: &std::path::Path, payloads: &[&str]) -> Log {
        let (log, _) = Log::open(LogConfig::new(dir)).unwrap();
        for (i, p) in payloads.iter().enumerate() {
            log.append(NewRecord {
                timestamp_ms: 1_000 + i as u64,
                source: Source::Mqtt,
                topic: format!("s/dev-{}/t", i % 5),
                client_id: "c".into(),
                destination: Destination {
                    topic: "t".into(),
                    key: Some(Bytes::from(format!("dev-{}", i % 5))),
                    partition: None,
                },
                headers: Vec::new(),
                payload: Bytes::from(p.to_string()),
            })
            .await
            .unwrap()
            .durable()
            .await
            .unwrap();
        }
        log
    }

    /// Every record of these tests carries its destination.
    fn routes() -> Arc<dyn Router> {
        Arc::new(NoRoutes)
    }

    /// Partition counts per topic ("ta" 2, "tb" 3) unless `ta_gone`; counts its lookups.
    #[derive(Default)]
    struct Counts {
        ta_gone: bool,
        lookups: Mutex<Vec<String>>,
    }

    impl KafkaProducer for Counts {
        async fn produce(
            &self,
            t: &str,
            p: i32,
            _r: &[ProduceRecord],
        ) -> Result<i64, ProduceError> {
            Err(ProduceError::NoLeader {
                topic: t.to_owned(),
                partition: p,
            })
        }

        async fn partition_count(&self, topic: &str) -> Result<i32, ProduceError> {
            self.lookups.lock().unwrap().push(topic.to_owned());
            match topic {
                "ta" if !self.ta_gone => Ok(2),
                "tb" => Ok(3),
                _ => Err(ProduceError::UnknownPartition {
                    topic: topic.to_owned(),
                    partition: 0,
                    partitions: 0,
                }),
            }
        }
    }

    /// The planning stage looks up the previous chunk's topics and plans without a `topics`
    /// pass; a topic new in this chunk is looked up and the chunk planned again, and an earlier
    /// topic that fails now does not hold up a chunk that does not need it.
    #[tokio::test]
    async fn planning_reuses_the_previous_chunks_topics_and_adds_new_ones() {
        let mut planner = Planner::new(routes(), "gw");
        // `a/<k>` goes to "ta" keyed by its second level, `b/<k>` to "tb" without a key, others
        // nowhere (written before destinations were stored, and no route takes them).
        let rec = |offset: u64, topic: &str| Record {
            offset,
            timestamp_ms: 1,
            source: Source::Mqtt,
            topic: topic.into(),
            client_id: "c".into(),
            destination: match topic.split_once('/') {
                Some(("a", key)) => Some(Destination {
                    topic: "ta".into(),
                    key: Some(Bytes::copy_from_slice(key.as_bytes())),
                    partition: None,
                }),
                Some(("b", _)) => Some(Destination::topic("tb")),
                _ => None,
            },
            headers: Vec::new(),
            payload: Bytes::from_static(b"x"),
        };
        let cancel = CancellationToken::new();
        let mut topics = Vec::new();
        let mut p = Counts::default();
        let placed = |plan: &Plan| -> Vec<(String, i32, Vec<u64>)> {
            plan.batches
                .iter()
                .map(|b| (b.topic.clone(), b.partition, b.offsets.clone()))
                .collect()
        };

        let one = [rec(0, "a/1"), rec(1, "a/2"), rec(2, "a/1")];
        let plan = try_plan(&mut planner, &p, &one, &mut topics, &cancel)
            .await
            .unwrap();
        assert_eq!(
            plan.batches.iter().map(|b| b.records.len()).sum::<usize>(),
            3
        );
        assert!(
            plan.batches
                .iter()
                .all(|b| b.topic == "ta" && b.partition < 2)
        );
        assert_eq!(topics, ["ta"]);

        let two = [rec(3, "a/1"), rec(4, "b/x"), rec(5, "b/y"), rec(6, "zzz")];
        let plan = try_plan(&mut planner, &p, &two, &mut topics, &cancel)
            .await
            .unwrap();
        // The same plan as with every count known up front (the first attempt stopped at the
        // first "tb" record, before the keyless rotation moved).
        let counts = HashMap::from([("ta".to_owned(), 2), ("tb".to_owned(), 3)]);
        let want = Planner::new(routes(), "gw").plan(&two, &counts).unwrap();
        assert_eq!(placed(&plan), placed(&want));
        assert_eq!(plan.unrouted, vec![6]);
        assert_eq!(
            plan.batches.iter().map(|b| b.records.len()).sum::<usize>(),
            3
        );
        topics.sort();
        assert_eq!(topics, ["ta", "tb"]);
        assert_eq!(*p.lookups.lock().unwrap(), ["ta", "ta", "tb"]);

        p.ta_gone = true;
        let three = [rec(7, "b/x")];
        let plan = try_plan(&mut planner, &p, &three, &mut topics, &cancel)
            .await
            .unwrap();
        assert_eq!(placed(&plan).len(), 1);
        assert_eq!(topics, ["tb"]);
        // A chunk that needs the failing topic is left to the sender's retries.
        assert!(
            try_plan(&mut planner, &p, &one, &mut topics, &cancel)
                .await
                .is_none()
        );
    }

    fn config(dir: &std::path::Path) -> ForwardConfig {
        let mut c = ForwardConfig::new("gw");
        c.max_batch_records = 7;
        c.backoff_min = Duration::from_millis(1);
        c.backoff_max = Duration::from_millis(5);
        c.dead_letter = DeadLetterSink::File(dir.join("dl"));
        c
    }

    #[tokio::test]
    async fn forwards_in_log_order_through_resets_and_dead_letters_the_poison_record() {
        let dir = tempfile::tempdir().unwrap();
        let mut payloads: Vec<String> = (0..40).map(|i| format!("m{i}")).collect();
        payloads[13] = "BIG".into();
        let refs: Vec<&str> = payloads.iter().map(String::as_str).collect();
        let log = log_with(&dir.path().join("log"), &refs).await;
        let producer = FaultyProducer {
            fail_first: Arc::new(Mutex::new(3)),
            ..Default::default()
        };
        let fwd = Forwarder::open(
            &log,
            "kafka",
            routes(),
            producer.clone(),
            config(dir.path()),
        )
        .unwrap();
        let metrics = run_until_committed(fwd, 40).await;

        let written = producer.written.lock().unwrap().clone();
        let mut per_partition: HashMap<i32, Vec<u64>> = HashMap::new();
        let mut seen = std::collections::BTreeSet::new();
        for (p, offset, value) in &written {
            let o: u64 = std::str::from_utf8(offset).unwrap().parse().unwrap();
            assert_eq!(
                value,
                &Bytes::from(format!("m{o}")),
                "edge-offset names the record"
            );
            let v = per_partition.entry(*p).or_default();
            if seen.insert(o) {
                assert!(
                    v.last().is_none_or(|l| *l < o),
                    "partition {p} out of order"
                );
                v.push(o);
            }
        }
        let expected: std::collections::BTreeSet<u64> = (0..40).filter(|o| *o != 13).collect();
        assert_eq!(seen, expected, "every record but the poison one");
        assert_eq!(metrics.dead_letters.load(Ordering::Relaxed), 1);
        assert_eq!(metrics.errors_of("connection_reset"), 3);
        assert!(metrics.errors_of("rejected") >= 1);
        let dl = std::fs::read_to_string(dir.path().join("dl")).unwrap();
        assert!(dl.contains("\"offset\":13,"), "{dl}");
        assert_eq!(log.cursor("kafka").unwrap().committed(), 40);
    }

    #[tokio::test]
    async fn a_backlog_cut_by_the_byte_limit_is_not_lingered_over() {
        // Chunks of a few records, limited by bytes (one record short of the limit, as a byte
        // limit always ends), and a linger far longer than the test may run: if a byte-limited
        // chunk counted as short, the first one would wait the linger out and nothing would be
        // committed. Only the tail chunk, which caught up with the log, may linger.
        let dir = tempfile::tempdir().unwrap();
        let payloads: Vec<String> = (0..40).map(|i| format!("m{i:02}")).collect();
        let refs: Vec<&str> = payloads.iter().map(String::as_str).collect();
        let log = log_with(&dir.path().join("log"), &refs).await;
        let one = log
            .cursor("probe")
            .unwrap()
            .try_read(1, usize::MAX)
            .unwrap()[0]
            .encoded_len();
        let mut config = config(dir.path());
        config.max_batch_records = 1_000;
        config.max_batch_bytes = one * 5 + one / 2;
        config.linger = Duration::from_secs(3_600);
        let producer = FaultyProducer::default();
        let fwd = Forwarder::open(&log, "kafka", routes(), producer.clone(), config).unwrap();
        let (stop, abort) = (CancellationToken::new(), CancellationToken::new());
        let task = tokio::spawn(fwd.run(stop.clone(), abort.clone()));
        let deadline = Instant::now() + Duration::from_secs(10);
        while producer.written.lock().unwrap().len() < 35 {
            assert!(
                Instant::now() < deadline,
                "the backlog waited for the linger"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        abort.cancel();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn nothing_is_committed_while_kafka_fails_and_abort_stops_the_retries() {
        let dir = tempfile::tempdir().unwrap();
        let log = log_with(&dir.path().join("log"), &["a", "b", "c"]).await;
        let producer = FaultyProducer {
            always_fail: true,
            ..Default::default()
        };
        let fwd = Forwarder::open(&log, "kafka", routes(), producer, config(dir.path())).unwrap();
        let metrics = fwd.metrics();
        let (stop, abort) = (CancellationToken::new(), CancellationToken::new());
        let task = tokio::spawn(fwd.run(stop.clone(), abort.clone()));
        tokio::time::sleep(Duration::from_millis(100)).await;
        stop.cancel();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!task.is_finished(), "stop waits for the chunk in flight");
        abort.cancel();
        task.await.unwrap();
        assert!(metrics.errors_of("connection_reset") > 3);
        assert_eq!(metrics.lag_records(log.durable_end()), 3);
        assert!(metrics.upstream_down.load(Ordering::Relaxed));
        assert_eq!(log.cursor("kafka").unwrap().committed(), 0);
    }

    /// A broker that keeps a partition's records in order the way Kafka and Tansu do with the
    /// idempotent producer (see the Tansu test in `producer::client`): it handles requests in
    /// the order they arrive and appends a batch only if it continues the log (its first
    /// `edge-offset` follows the last one appended); a batch after a gap is refused with
    /// OUT_OF_ORDER_SEQUENCE_NUMBER and a batch it has already gets DUPLICATE (written once).
    /// Answers to `send` arrive 20 ms late, so later requests are in flight when one fails;
    /// `fail_request` makes that request fail with NOT_LEADER_OR_FOLLOWER (not appended). At
    /// every request it checks that the cursor never got ahead of what the log holds.
    #[derive(Clone, Default)]
    struct OrderedFaultyBroker {
        fail_request: usize,
        requests: Arc<Mutex<usize>>,
        log: Arc<Mutex<Vec<u64>>>,
        outstanding: Arc<std::sync::atomic::AtomicUsize>,
        max_outstanding: Arc<std::sync::atomic::AtomicUsize>,
        metrics: Arc<Mutex<Option<Arc<ForwardMetrics>>>>,
    }

    impl OrderedFaultyBroker {
        fn handle(&self, records: &[ProduceRecord]) -> Result<i64, ProduceError> {
            let mut log = self.log.lock().unwrap();
            if let Some(m) = self.metrics.lock().unwrap().as_ref() {
                let committed = m.committed.load(Ordering::SeqCst);
                assert!(
                    committed <= log.len() as u64,
                    "cursor committed {committed} with only {} records in Kafka",
                    log.len()
                );
            }
            let n = {
                let mut r = self.requests.lock().unwrap();
                *r += 1;
                *r
            };
            let refuse = |code: i16| ProduceError::Broker {
                api: "Produce",
                topic: "t".into(),
                partition: 0,
                code,
                name: crate::producer::code_name(code),
                message: None,
            };
            if n == self.fail_request {
                return Err(refuse(codes::NOT_LEADER_OR_FOLLOWER));
            }
            let offsets: Vec<u64> = records
                .iter()
                .map(|r| {
                    std::str::from_utf8(&r.headers[1].value)
                        .unwrap()
                        .parse()
                        .unwrap()
                })
                .collect();
            let expected = log.len() as u64;
            match offsets[0].cmp(&expected) {
                std::cmp::Ordering::Equal => {
                    log.extend(offsets);
                    Ok(expected as i64)
                }
                std::cmp::Ordering::Less => Ok(-1),
                std::cmp::Ordering::Greater => Err(refuse(codes::OUT_OF_ORDER_SEQUENCE_NUMBER)),
            }
        }
    }

    impl KafkaProducer for OrderedFaultyBroker {
        async fn produce(
            &self,
            _topic: &str,
            _partition: i32,
            records: &[ProduceRecord],
        ) -> Result<i64, ProduceError> {
            self.handle(records)
        }

        async fn send(
            &self,
            _topic: &str,
            _partition: i32,
            records: &[ProduceRecord],
        ) -> ProduceAck {
            let result = self.handle(records);
            let outstanding = Arc::clone(&self.outstanding);
            let now = outstanding.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_outstanding.fetch_max(now, Ordering::SeqCst);
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                outstanding.fetch_sub(1, Ordering::SeqCst);
                result
            })
        }

        async fn partition_count(&self, _topic: &str) -> Result<i32, ProduceError> {
            Ok(1)
        }
    }

    #[tokio::test]
    async fn a_failed_request_with_later_ones_in_flight_is_resent_first_and_commits_wait() {
        let dir = tempfile::tempdir().unwrap();
        let payloads: Vec<String> = (0..60).map(|i| format!("m{i}")).collect();
        let refs: Vec<&str> = payloads.iter().map(String::as_str).collect();
        let log = log_with(&dir.path().join("log"), &refs).await;
        // Request 3 (the third chunk) fails while the chunks after it are in flight.
        let broker = OrderedFaultyBroker {
            fail_request: 3,
            ..Default::default()
        };
        let fwd =
            Forwarder::open(&log, "kafka", routes(), broker.clone(), config(dir.path())).unwrap();
        *broker.metrics.lock().unwrap() = Some(fwd.metrics());
        let metrics = run_until_committed(fwd, 60).await;

        assert!(
            broker.max_outstanding.load(Ordering::SeqCst) >= 2,
            "several requests were in flight"
        );
        let log_now = broker.log.lock().unwrap().clone();
        assert_eq!(
            log_now,
            (0..60).collect::<Vec<u64>>(),
            "every record once, in log order"
        );
        let refused = metrics.errors_of("broker_retriable");
        assert!(
            refused >= 2,
            "the failure and at least one refused follower: {refused}"
        );
        assert_eq!(log.cursor("kafka").unwrap().committed(), 60);
    }
}
