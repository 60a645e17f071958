//! The forwarder: a named edge-log cursor → chunks → plans → Kafka → dead letters → cursor
//! commit, forever, in three stages that overlap:
//!
//! - [`reader`]: reads chunks from the cursor (up to `max_batch_records` / `max_batch_bytes`;
//!   a chunk that caught up with the log lingers `linger` and is topped up, a backlog is read
//!   in full chunks without waiting) and commits the cursor up to what Kafka acknowledged.
//! - [`planning`]: the one planner. Looks the partition counts up (retrying; creating topics
//!   when `auto_create_partitions` is set), splits each chunk into per-partition batches, and
//!   starts encoding them on a blocking thread, up to [`READ_AHEAD`] chunks ahead.
//! - [`sender`]: the one sending path. Sends the batches of up to [`CHUNKS_IN_FLIGHT`] chunks
//!   without waiting for earlier answers; when a batch fails, awaits every answer in flight and
//!   resends, chunk by chunk in order, what failed — through the same path, with the retry,
//!   split and dead-letter rules — then reports how far Kafka acknowledged.
//! - [`pace`]: `max_bytes_per_sec` for metered uplinks.
//! - [`exactly_once`]: exactly-once delivery (`[kafka] delivery = "exactly_once"`): chunks
//!   grouped into Kafka transactions with the position committed inside each; on start the
//!   position is read back from Kafka and [`crate::position::resume`] decides where to go on;
//!   a transaction that cannot go on is aborted and its chunks resent from the committed
//!   position; a fenced forwarder stops forwarding and says why.
//!
//! Only when every batch of a chunk was acknowledged (or dead-lettered, and the dead letter is
//! durable) is the cursor committed past it. Nothing is ever dropped on an upstream error: the
//! same records are sent again after a backoff ([`Uplink::pause`], cut short by a probe when
//! Kafka answers again), so after a restart or outage the forwarder resumes at the committed
//! offset, in log order per partition; a resent record carries the same `edge-offset` header.
//! How the uplink is doing is told by [`Uplink`] (state in `/metrics`, a few log lines per
//! outage).
//!
//! Stopping: `stop` ends reading; the chunks already read are still sent. `abort` interrupts
//! delivery, which is then not committed (the next start resends it).

mod exactly_once;
mod pace;
mod planning;
mod reader;
mod sender;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use edge_log::{Cursor, Log, LogError, Record};
use thiserror::Error;
use tokio_util::sync::CancellationToken;

use crate::backoff::{Backoff, RetryWaits};
use crate::dead_letter::DeadLetterSink;
use crate::metrics::ForwardMetrics;
use crate::plan::{Plan, Planner, Router};
use crate::position::{LogIdentity, Resume};
use crate::producer::txn::{AtLeastOnce, TxnBroker, TxnError, TxnSession};
use crate::producer::txn_wire::POSITION_TOPIC;
use crate::producer::{EncodedBatch, KafkaProducer};
use crate::uplink::{Retry, Uplink};
use exactly_once::Transactions;
pub use exactly_once::{TXN_INTERVAL, TXN_RECORDS};
use sender::{Halt, SenderEnd};

/// The cursor name the Kafka forwarder uses in the log.
pub const CURSOR_NAME: &str = "kafka";

/// While draining a backlog, the cursor is committed at most this often (each commit is a
/// crash-safe file replace: two fsyncs). A caught-up forwarder commits after every chunk.
/// A crash resends at most this much more (same `edge-offset`).
pub const COMMIT_INTERVAL: Duration = Duration::from_millis(100);

/// Chunks read and planned ahead of the ones being sent (each at most `max_batch_bytes`).
pub const READ_AHEAD: usize = 2;

/// Chunks whose produce requests may be in flight at once. Their batches are written in chunk
/// order, so within a partition requests leave in log order; each connection further caps its
/// requests in flight (`ProducerConfig::max_in_flight`).
pub const CHUNKS_IN_FLIGHT: usize = 4;

/// Chunks the forwarder holds at most while it drains a backlog: one read (or waiting to be
/// planned), one being planned, [`READ_AHEAD`] planned and encoded, [`CHUNKS_IN_FLIGHT`] sent.
/// Each holds its log bytes, its records as read back and as planned for Kafka, and its
/// encoded batches (the memory budget counts five times `max_batch_bytes` for one).
pub const CHUNKS_HELD: usize = 2 + READ_AHEAD + CHUNKS_IN_FLIGHT;

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
    /// The producer's largest produce request: a partition's share of a chunk is planned in
    /// batches that stay within it.
    pub max_request_bytes: usize,
    /// First retry delay.
    pub backoff_min: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// Longest retry delay while the cluster refuses us (credentials, certificates, ACLs): each
    /// attempt is paid for on a metered uplink and only a fix ends it (a changed password file
    /// is tried at once, see [`Uplink::pause`](crate::uplink::Uplink::pause)).
    pub auth_backoff_max: Duration,
    /// Upload cap in bytes per second (keys, values and headers), if any.
    pub max_bytes_per_sec: Option<u64>,
    /// Create unknown topics with this many partitions (None: wait for someone to create them).
    pub auto_create_partitions: Option<i32>,
    /// Where records Kafka refuses for good go.
    pub dead_letter: DeadLetterSink,
    /// While the uplink is down, a summary line (backlog, budget, time to full) this often.
    pub outage_log_interval: Duration,
    /// Exactly-once: the longest a transaction stays open while records keep coming
    /// ([`TXN_INTERVAL`] unless commits are slow, see `exactly_once`).
    pub max_transaction_interval: Duration,
}

impl ForwardConfig {
    /// Defaults: 5 ms linger, 1 MiB / 10 000 records per chunk, backoff 100 ms..5 s (60 s while
    /// refused), no upload
    /// cap, no auto-create, dead letters to `dead-letter` in the working directory, an outage
    /// summary every minute, transactions open at most 1 s.
    pub fn new(node_id: &str) -> Self {
        Self {
            node_id: node_id.to_owned(),
            linger: Duration::from_millis(5),
            max_batch_bytes: 1 << 20,
            max_batch_records: 10_000,
            max_request_bytes: 1 << 20,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            auth_backoff_max: Duration::from_secs(60),
            max_bytes_per_sec: None,
            auto_create_partitions: None,
            dead_letter: DeadLetterSink::File("dead-letter".into()),
            outage_log_interval: Duration::from_secs(60),
            max_transaction_interval: Duration::from_secs(1),
        }
    }

    /// This configuration's retry waits.
    pub fn retry_waits(&self) -> RetryWaits {
        RetryWaits {
            min: self.backoff_min,
            max: self.backoff_max,
            refused_max: self.auth_backoff_max,
        }
    }

    /// A retry loop with this configuration's waits.
    pub(crate) fn retry(&self) -> Retry {
        Retry::new(self.retry_waits())
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

/// A chunk read from the log, on its way to the planning stage.
#[derive(Debug)]
struct Read {
    records: Vec<Record>,
    /// The cursor position after it.
    next: u64,
    /// A limit cut it: more durable records were waiting (a backlog).
    full: bool,
}

/// A planned chunk on its way to the sender; its batches are being encoded.
struct Job {
    read: Read,
    encoding: Encoding,
}

/// A plan whose batches are encoded (and compressed) on a blocking thread, off the sender's
/// path: resolves to the plan and one encoded batch (or None) per plan batch.
type Encoding = tokio::task::JoinHandle<(Plan, Vec<Option<EncodedBatch>>)>;

/// Forwards the log to Kafka through one named cursor; at-least-once (`B` = [`AtLeastOnce`])
/// or, after [`Forwarder::exactly_once`], in transactions over `B`.
pub struct Forwarder<P, B = AtLeastOnce> {
    log: Log,
    cursor: Cursor,
    planner: Planner,
    producer: P,
    config: ForwardConfig,
    metrics: Arc<ForwardMetrics>,
    txn: Option<(TxnSession<B>, LogIdentity)>,
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
            planner: Planner::new(router, &config.node_id)
                .with_max_request_bytes(config.max_request_bytes),
            producer,
            config,
            metrics,
            txn: None,
        })
    }

    /// Exactly-once delivery: forwards in the transactions of `session` (not initialised
    /// yet; its producer must be the one given to [`Forwarder::open`]), committing positions
    /// of the log `identity`.
    pub fn exactly_once<B: TxnBroker + 'static>(
        self,
        session: TxnSession<B>,
        identity: LogIdentity,
    ) -> Forwarder<P, B> {
        Forwarder {
            log: self.log,
            cursor: self.cursor,
            planner: self.planner,
            producer: self.producer,
            config: self.config,
            metrics: self.metrics,
            txn: Some((session, identity)),
        }
    }
}

impl<P: KafkaProducer + Clone + 'static, B: TxnBroker + 'static> Forwarder<P, B> {
    /// The forwarder's counters, for `/metrics`.
    pub fn metrics(&self) -> Arc<ForwardMetrics> {
        Arc::clone(&self.metrics)
    }

    /// Forwards until `stop` (the chunks already read are still delivered) or `abort`
    /// (mid-delivery, uncommitted), or the log closes.
    ///
    /// This task reads and commits; a planning task plans up to [`READ_AHEAD`] chunks ahead;
    /// a sender task sends them and reports how far Kafka acknowledged, in log order. Under
    /// exactly-once delivery the stages start again from the committed position after an
    /// aborted transaction.
    pub async fn run(self, stop: CancellationToken, abort: CancellationToken) {
        let Forwarder {
            log,
            cursor,
            planner,
            producer,
            config,
            metrics,
            txn,
        } = self;
        let uplink = Uplink::new(
            log.clone(),
            Arc::clone(&metrics),
            config.outage_log_interval,
        );
        tracing::info!(
            cursor = cursor.name(),
            committed = cursor.committed(),
            durable_end = log.durable_end(),
            exactly_once = txn.is_some(),
            "Kafka forwarder started"
        );
        let planning = Arc::new(planning::Planning::new(
            planner,
            producer.clone(),
            uplink.clone(),
            &config,
            Arc::clone(&metrics),
        ));
        let telling = CancellationToken::new();
        let story = tokio::spawn(uplink.clone().tell(telling.clone()));
        let mut reader = reader::Reader {
            log: log.clone(),
            cursor,
            config: config.clone(),
            metrics: Arc::clone(&metrics),
            uplink: uplink.clone(),
        };
        let either = reader::either(&stop, &abort);
        let txn = match txn {
            None => None,
            Some((session, identity)) => {
                let txn = Arc::new(Transactions::new(
                    session,
                    identity,
                    config.max_transaction_interval,
                ));
                match start_transactions(&txn, &producer, &mut reader, &config, &either).await {
                    Ok(()) => Some(txn),
                    Err(Halt::Aborted) => None,
                    Err(Halt::Txn(e)) => {
                        stopped_for_good(&uplink, &e, &stop, &abort).await;
                        telling.cancel();
                        let _ = story.await;
                        return;
                    }
                }
            }
        };
        if either.is_cancelled() {
            telling.cancel();
            let _ = story.await;
            return;
        }
        let committed = loop {
            let (jobs_tx, jobs_rx) = tokio::sync::mpsc::channel::<Job>(READ_AHEAD);
            let (reads_tx, reads_rx) = tokio::sync::mpsc::channel::<Read>(1);
            let (acked_tx, acked_rx) = tokio::sync::watch::channel(reader.cursor.committed());
            let sender = sender::Sender::new(
                producer.clone(),
                Arc::clone(&planning),
                uplink.clone(),
                config.clone(),
                Arc::clone(&metrics),
                txn.clone(),
            );
            let sending = tokio::spawn(sender.run(jobs_rx, acked_tx, stop.clone(), abort.clone()));
            let planned = tokio::spawn(Arc::clone(&planning).run(reads_rx, jobs_tx, abort.clone()));
            let (committed, ended) = reader
                .run(reads_tx, acked_rx, &stop, &abort, async {
                    if planned.await.is_err() {
                        tracing::error!("Kafka planning task failed");
                    }
                    match sending.await {
                        Ok(end) => end,
                        Err(_) => {
                            tracing::error!("Kafka sender task failed");
                            SenderEnd::Halted(Halt::Aborted)
                        }
                    }
                })
                .await;
            let (Some(txn), SenderEnd::Halted(Halt::Txn(error))) = (&txn, ended) else {
                break committed;
            };
            // The transaction cannot go on: abort it, resend from the committed position.
            match error {
                TxnError::Abortable { .. } => {
                    metrics.transactions_aborted.fetch_add(1, Ordering::Relaxed);
                    metrics.count_error("transaction");
                    tracing::warn!(error = %error, committed, "Kafka transaction aborted; resending from the committed position");
                    let aborted = txn.session().await.abort(&either).await;
                    txn.forget();
                    match aborted {
                        Ok(()) => {}
                        Err(TxnError::Cancelled) => break committed,
                        Err(e) => {
                            stopped_for_good(&uplink, &e, &stop, &abort).await;
                            break committed;
                        }
                    }
                    reader.cursor.seek(committed);
                }
                e => {
                    stopped_for_good(&uplink, &e, &stop, &abort).await;
                    break committed;
                }
            }
        };
        telling.cancel();
        let _ = story.await;
        let unforwarded = log.durable_end().saturating_sub(committed);
        if unforwarded == 0 {
            tracing::info!(committed, "Kafka forwarder stopped");
        } else {
            tracing::info!(
                committed,
                unforwarded,
                "Kafka forwarder stopped; the {unforwarded} records Kafka has not acknowledged \
                 stay in the log and are sent at the next start"
            );
        }
    }
}

/// Exactly-once start: a producer epoch for the transactional.id (fencing older instances and
/// aborting what they left open), the position topic, the position committed in Kafka, and
/// where to resume ([`crate::position::resume`]); the cursor is moved there. Retries what a
/// retry can fix; a fence or a refusal ends it.
async fn start_transactions<P: KafkaProducer, B: TxnBroker>(
    txn: &Transactions<B>,
    producer: &P,
    reader: &mut reader::Reader,
    config: &ForwardConfig,
    cancel: &CancellationToken,
) -> Result<(), Halt> {
    // The session retries its steps with a backoff growing to `backoff_max`; a forwarder
    // started while Kafka is down (a gateway booting during an outage) would notice Kafka's
    // return only after that wait. Wait for a connection to Kafka first, as the at-least-once
    // retries do: probed `uplink::probe_interval` apart while it is unreachable, and at the
    // refusal's backoff while it refuses our credentials (each attempt a handshake on the
    // uplink), told as an outage.
    let mut retry = config.retry();
    while let Err(e) = producer.probe().await {
        reader.uplink.failed(&e);
        retry.failed(Some(&e));
        if reader.uplink.pause(producer, &mut retry, cancel).await {
            return Err(Halt::Aborted);
        }
    }
    let identity = txn.session().await.init(cancel).await?;
    let mut backoff = Backoff::new(config.backoff_min, config.backoff_max);
    loop {
        match producer.create_topic(POSITION_TOPIC, 1).await {
            Ok(_) => break,
            Err(e) => {
                tracing::warn!(error = %e, topic = POSITION_TOPIC, "creating the position topic failed; retrying");
                if sleep_or_cancel(backoff.next_delay(), cancel).await {
                    return Err(Halt::Aborted);
                }
            }
        }
    }
    backoff.reset();
    // A commit of the previous instance may still be landing: Kafka makes InitProducerId wait
    // for it (CONCURRENT_TRANSACTIONS), Tansu 0.6 does not and applies the committed offset
    // after the commit markers (bridge/README.md, "What Tansu 0.6 supports"). So the position
    // is read until it stays the same for POSITION_SETTLE — unless this producer is the
    // transactional.id's first (see `may_have_predecessor`): then nothing can be landing.
    let mut kafka = fetch_position(txn, &mut backoff, cancel).await?;
    let rounds = if may_have_predecessor(identity) {
        POSITION_SETTLE_ROUNDS
    } else {
        tracing::debug!(
            producer_id = identity.producer_id,
            "first producer epoch of the transactional.id: no earlier commit can be landing"
        );
        0
    };
    for _ in 0..rounds {
        if sleep_or_cancel(POSITION_SETTLE, cancel).await {
            return Err(Halt::Aborted);
        }
        let again = fetch_position(txn, &mut backoff, cancel).await?;
        if again == kafka {
            break;
        }
        tracing::info!(before = ?kafka, now = ?again, "the position in Kafka moved after the start (a commit of the previous instance landed)");
        kafka = again;
    }
    let cursor = &mut reader.cursor;
    let resume = crate::position::resume(
        cursor.committed(),
        reader.log.durable_end(),
        kafka.as_ref(),
        txn.identity(),
    );
    if resume.is_suspicious() {
        tracing::warn!("{resume}");
    } else {
        tracing::info!("{resume}");
    }
    if let Resume::Kafka { at, .. } = resume {
        cursor.seek(at);
        if let Err(e) = cursor.commit(at).await {
            reader.metrics.count_error("local_log");
            tracing::error!(error = %e, "committing the Kafka cursor failed");
        }
        reader
            .metrics
            .committed
            .store(cursor.committed(), Ordering::Relaxed);
    }
    Ok(())
}

/// False if InitProducerId answered `identity` as the transactional.id's first producer (a
/// new producer id at epoch 0): no earlier instance of it exists whose commit could still be
/// landing, so the position read at start needs no settling. Every later start (epoch > 0)
/// settles. Kafka also answers epoch 0 after an exhausted epoch or an expired
/// transactional.id, but Kafka serialises a commit and its successor anyway.
fn may_have_predecessor(identity: crate::producer::ProducerIdentity) -> bool {
    identity.epoch != 0
}

/// How long the position read at start must stay the same (see `start_transactions`).
const POSITION_SETTLE: Duration = Duration::from_secs(1);
/// Reads of the position at start at most, after the first.
const POSITION_SETTLE_ROUNDS: usize = 10;

/// The position committed in Kafka, retried until read.
async fn fetch_position<B: TxnBroker>(
    txn: &Transactions<B>,
    backoff: &mut Backoff,
    cancel: &CancellationToken,
) -> Result<Option<crate::position::KafkaPosition>, Halt> {
    loop {
        let fetched = txn.session().await.broker().fetch_position().await;
        match fetched {
            Ok(kafka) => return Ok(kafka),
            Err(e) => {
                tracing::warn!(error = %e, "reading the position committed in Kafka failed; retrying");
                if sleep_or_cancel(backoff.next_delay(), cancel).await {
                    return Err(Halt::Aborted);
                }
            }
        }
    }
}

/// Exactly-once delivery ended for good (fenced, refused): says so and waits for the broker
/// to stop. Nothing more is sent; the log keeps everything for the next start.
async fn stopped_for_good(
    uplink: &Uplink,
    error: &TxnError,
    stop: &CancellationToken,
    abort: &CancellationToken,
) {
    let text = error.to_string();
    match error {
        TxnError::Fenced { .. } => {
            tracing::error!(error = %text, "Kafka forwarding stopped: fenced; restart this gateway once the other one with its node id is gone");
            uplink.stopped(crate::metrics::UplinkState::Fenced, &text);
        }
        _ => {
            tracing::error!(error = %text, "Kafka forwarding stopped: the transactional protocol was refused; fix the cause and restart (or use kafka.delivery = \"at_least_once\")");
            uplink.stopped(crate::metrics::UplinkState::AuthFailed, &text);
        }
    }
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = abort.cancelled() => {}
    }
}

/// Sleeps `d`; true if `cancel` fired first.
async fn sleep_or_cancel(d: Duration, cancel: &CancellationToken) -> bool {
    tokio::select! {
        biased;
        _ = cancel.cancelled() => true,
        _ = tokio::time::sleep(d) => false,
    }
}

#[cfg(test)]
mod tests;
