//! The sending stage: the forwarder's one path to Kafka. Every batch — first sent or resent,
//! whole or split — goes out through [`KafkaProducer::send`], and every failure is handled by
//! the same rules ([`Step`]).
//!
//! Up to [`CHUNKS_IN_FLIGHT`] chunks are in flight: their batches are sent (written in chunk
//! order) without waiting for the answers to earlier chunks. Chunks complete strictly in
//! order, and only then is the position after them reported for the reader to commit, so the
//! cursor never passes a record Kafka has not acknowledged.
//!
//! When a batch fails, the sender starts nothing new, awaits every answer in flight, and then
//! settles the chunks one by one, in order: the batches that failed are sent again in rounds
//! (all of a chunk's failed batches in one round, after one backoff wait) until each is
//! acknowledged or dead-lettered. The producer refuses first sends to a partition after a
//! failure until the failed batch is resent (the first batch of a partition in a round goes as
//! [`Attempt::Resend`]), and the idempotent producer's sequence numbers make Kafka refuse a
//! batch that would overtake a failed one; so records do not reach Kafka out of log order, and
//! a resent batch Kafka already had is written once or carries the same `edge-offset` header.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use edge_log::Record;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::exactly_once::Transactions;
use super::pace::Pace;
use super::planning::Planning;
use super::{CHUNKS_IN_FLIGHT, ForwardConfig, Job, Read};
use crate::dead_letter::{self, DeadLetter};
use crate::metrics::{ForwardMetrics, UplinkState};
use crate::plan::PartitionBatch;
use crate::producer::txn::{TxnBroker, TxnError};
use crate::producer::{Attempt, ErrorClass, KafkaProducer, ProduceAck, ProduceError};
use crate::topition::Topition;
use crate::uplink::{Mark, Uplink};

/// Delivery was interrupted by `abort`.
#[derive(Debug)]
pub(super) struct Aborted;

/// Why the sender stopped before its input ended.
#[derive(Debug)]
pub(super) enum Halt {
    /// `abort`.
    Aborted,
    /// Exactly-once delivery: the transaction cannot go on (or this producer was fenced).
    Txn(TxnError),
}

impl From<Aborted> for Halt {
    fn from(_: Aborted) -> Self {
        Halt::Aborted
    }
}

impl From<TxnError> for Halt {
    fn from(e: TxnError) -> Self {
        match e {
            TxnError::Cancelled => Halt::Aborted,
            e => Halt::Txn(e),
        }
    }
}

/// How the sender ended.
#[derive(Debug)]
pub(super) enum SenderEnd {
    /// Its input ended and everything was settled (and committed).
    Finished,
    /// Halted (see [`Halt`]).
    Halted(Halt),
}

/// What to do with a batch Kafka did not take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    /// Send it again after a backoff: the uplink, a leader, a timeout — and errors no retry
    /// fixes by itself (a refused ACL, an unsupported broker): nothing is ever dropped.
    Resend,
    /// Kafka refuses these records: send the halves, in order.
    Split,
    /// Kafka refuses this one record for good: it goes to the dead letter.
    Dead,
    /// The partition no longer exists: plan its records again.
    Replan,
}

impl Step {
    /// The step after `error` for a batch of `records` records.
    pub fn after(error: &ProduceError, records: usize) -> Self {
        match error.class() {
            ErrorClass::Retriable | ErrorClass::Fatal => Step::Resend,
            ErrorClass::UnknownTopic => match error {
                ProduceError::UnknownPartition { .. } => Step::Replan,
                _ => Step::Resend,
            },
            ErrorClass::Rejected if records > 1 => Step::Split,
            ErrorClass::Rejected => Step::Dead,
        }
    }
}

/// A chunk whose batches were sent.
struct SentChunk {
    read: Read,
    batches: Vec<PartitionBatch>,
    unrouted: u64,
    /// Bytes of keys, values and headers.
    bytes: u64,
    /// Resolves to the answer of each batch, in `batches` order.
    answers: JoinHandle<Vec<Result<i64, ProduceError>>>,
    /// A batch was refused before it left.
    refused_at_once: bool,
    /// When it was sent (see [`Mark`]).
    mark: Mark,
}

impl SentChunk {
    fn done(&self) -> Done {
        Done {
            next: self.read.next,
            bytes: self.bytes,
            unrouted: self.unrouted,
        }
    }
}

/// What a completed chunk adds up to.
struct Done {
    /// The cursor position after it.
    next: u64,
    bytes: u64,
    unrouted: u64,
}

/// What the sender waits for next.
enum Event {
    Abort,
    Answered(Vec<Result<i64, ProduceError>>),
    Job(Option<Job>),
    /// Exactly-once: the open transaction is due.
    TxnDue,
}

/// The sending stage (see the module docs).
pub(super) struct Sender<P, B> {
    producer: P,
    planning: Arc<Planning<P>>,
    uplink: Uplink,
    config: ForwardConfig,
    metrics: Arc<ForwardMetrics>,
    /// Exactly-once delivery: the transactions chunks are sent in.
    txn: Option<Arc<Transactions<B>>>,
}

impl<P: KafkaProducer + Clone + 'static, B: TxnBroker> Sender<P, B> {
    /// Sends through `producer`; `planning` plans records again whose partition vanished;
    /// inside transactions when `txn` is given.
    pub fn new(
        producer: P,
        planning: Arc<Planning<P>>,
        uplink: Uplink,
        config: ForwardConfig,
        metrics: Arc<ForwardMetrics>,
        txn: Option<Arc<Transactions<B>>>,
    ) -> Self {
        Self {
            producer,
            planning,
            uplink,
            config,
            metrics,
            txn,
        }
    }

    /// Exactly-once: commits the open transaction and reports its position.
    async fn commit(
        &self,
        txn: &Transactions<B>,
        acked: &watch::Sender<u64>,
        abort: &CancellationToken,
    ) -> Result<(), Halt> {
        if let Some(next) = txn.commit(abort).await? {
            self.metrics.transactions.fetch_add(1, Ordering::Relaxed);
            acked.send_replace(next);
        }
        Ok(())
    }

    /// Sends jobs in order until the planner hangs up (and everything is settled) or `abort`;
    /// reports the position after each acknowledged (exactly-once: committed) chunk on `acked`.
    pub async fn run(
        self,
        jobs: mpsc::Receiver<Job>,
        acked: watch::Sender<u64>,
        stop: CancellationToken,
        abort: CancellationToken,
    ) -> SenderEnd {
        let mut in_flight: VecDeque<SentChunk> = VecDeque::new();
        let end = self
            .deliver(jobs, &acked, &stop, &abort, &mut in_flight)
            .await;
        // Answers still awaited belong to a transaction that is aborted, or to a shutdown:
        // nobody waits for them.
        for chunk in in_flight {
            chunk.answers.abort();
        }
        match end {
            Ok(()) => SenderEnd::Finished,
            Err(halt) => SenderEnd::Halted(halt),
        }
    }

    async fn deliver(
        &self,
        mut jobs: mpsc::Receiver<Job>,
        acked: &watch::Sender<u64>,
        stop: &CancellationToken,
        abort: &CancellationToken,
        in_flight: &mut VecDeque<SentChunk>,
    ) -> Result<(), Halt> {
        let mut pace = Pace::new(self.config.max_bytes_per_sec);
        let mut open = true;
        // A batch was refused before it left: start nothing new until it is settled.
        let mut held = false;
        loop {
            let txn_due = self.txn.as_ref().is_some_and(|t| t.due());
            if let Some(txn) = &self.txn
                && in_flight.is_empty()
                && txn.is_open()
                && (txn_due || !open)
            {
                self.commit(txn, acked, abort).await?;
                continue;
            }
            if !open && in_flight.is_empty() {
                return Ok(());
            }
            let room = open && !held && !txn_due && in_flight.len() < CHUNKS_IN_FLIGHT;
            let deadline = match &self.txn {
                Some(txn) if in_flight.is_empty() => txn.deadline(),
                _ => None,
            };
            let event = {
                let front = in_flight.front_mut().map(|c| &mut c.answers);
                tokio::select! {
                    biased;
                    _ = abort.cancelled() => Event::Abort,
                    r = async {
                        match front {
                            Some(answers) => answers.await,
                            None => std::future::pending().await,
                        }
                    } => Event::Answered(r.unwrap_or_default()),
                    _ = async {
                        match deadline {
                            Some(d) => tokio::time::sleep_until(d).await,
                            None => std::future::pending().await,
                        }
                    } => Event::TxnDue,
                    j = jobs.recv(), if room => Event::Job(j),
                }
            };
            match event {
                Event::Abort => {
                    tracing::debug!("Kafka sender aborted; the chunks in flight stay uncommitted");
                    return Err(Halt::Aborted);
                }
                Event::TxnDue => {}
                Event::Job(None) => open = false,
                Event::Job(Some(job)) => {
                    let chunk = self.start(job, in_flight.is_empty(), abort).await?;
                    held |= chunk.refused_at_once;
                    let bytes = chunk.bytes;
                    in_flight.push_back(chunk);
                    if let Some(txn) = &self.txn {
                        // With the batches on their way (the commit no longer waits for it).
                        txn.add_offsets(abort).await?;
                    }
                    if !stop.is_cancelled() {
                        pace.wait(bytes, abort).await;
                    }
                }
                Event::Answered(answers) => {
                    let Some(front) = in_flight.pop_front() else {
                        continue;
                    };
                    let all_ok =
                        answers.len() == front.batches.len() && answers.iter().all(Result::is_ok);
                    if all_ok {
                        self.uplink.succeeded(front.mark);
                        let records = front.batches.iter().map(|b| b.records.len()).sum();
                        self.complete(front.done(), records, acked);
                        self.note_oldest(in_flight.front().map(|c| &c.read));
                        continue;
                    }
                    // Every answer first; then each chunk's failures, in order.
                    let mut settling = vec![(front, answers)];
                    while let Some(mut chunk) = in_flight.pop_front() {
                        let answers = tokio::select! {
                            biased;
                            _ = abort.cancelled() => return Err(Halt::Aborted),
                            r = &mut chunk.answers => r.unwrap_or_default(),
                        };
                        settling.push((chunk, answers));
                    }
                    for (chunk, answers) in settling {
                        self.note_oldest(Some(&chunk.read));
                        self.settle(chunk, answers, acked, abort).await?;
                    }
                    held = false;
                }
            }
        }
    }

    /// Sends every batch of the job's plan (with the batches encoded ahead) and returns the
    /// chunk in flight.
    async fn start(
        &self,
        job: Job,
        first_in_flight: bool,
        abort: &CancellationToken,
    ) -> Result<SentChunk, Halt> {
        let encoded = tokio::select! {
            biased;
            _ = abort.cancelled() => return Err(Halt::Aborted),
            r = job.encoding => r,
        };
        let (plan, encoded) = match encoded {
            Ok(planned) => planned,
            // The encoding thread failed: plan the chunk again and encode when sending.
            Err(_) => (
                self.planning
                    .plan(&job.read.records, abort)
                    .await
                    .ok_or(Aborted)?,
                Vec::new(),
            ),
        };
        if let Some(txn) = &self.txn {
            txn.add(&plan, abort).await?;
        }
        if first_in_flight {
            self.note_oldest(Some(&job.read));
        }
        self.metrics
            .replaying
            .store(job.read.full, Ordering::Relaxed);
        let bytes = plan.batches.iter().map(PartitionBatch::payload_bytes).sum();
        let mark = self.uplink.mark();
        let mut acks: Vec<ProduceAck> = Vec::with_capacity(plan.batches.len());
        let mut refused_at_once = false;
        let mut encoded = encoded.into_iter();
        let sent_at = std::time::Instant::now();
        let mut unreachable = false;
        for b in &plan.batches {
            let encoded = encoded.next().flatten();
            let ack = if unreachable {
                not_sent(&b.tp)
            } else {
                tokio::select! {
                    biased;
                    _ = abort.cancelled() => return Err(Halt::Aborted),
                    a = self.producer.send(&b.tp, &b.records, encoded, Attempt::First) => a,
                }
            };
            unreachable |= holds_the_round(&ack);
            refused_at_once |= ack.failed_at_once();
            acks.push(ack);
        }
        let metrics = Arc::clone(&self.metrics);
        let answers = tokio::spawn(async move {
            let mut results = Vec::with_capacity(acks.len());
            for ack in acks {
                let result = ack.await;
                if result.is_ok() {
                    // Answers are awaited in order: a later one may have come earlier.
                    metrics.produce_latency.observe(sent_at.elapsed());
                }
                results.push(result);
            }
            results
        });
        Ok(SentChunk {
            read: job.read,
            batches: plan.batches,
            unrouted: plan.unrouted.len() as u64,
            bytes,
            answers,
            refused_at_once,
            mark,
        })
    }

    /// Completes a chunk with failed batches: resends them until each is acknowledged or
    /// dead-lettered (the dead letters made durable), then reports the chunk acknowledged.
    async fn settle(
        &self,
        chunk: SentChunk,
        answers: Vec<Result<i64, ProduceError>>,
        acked: &watch::Sender<u64>,
        abort: &CancellationToken,
    ) -> Result<(), Halt> {
        self.uplink.outcome(chunk.mark, &answers);
        let SentChunk {
            read,
            batches,
            unrouted,
            bytes,
            ..
        } = chunk;
        let mut delivered = 0;
        let mut failed = Vec::new();
        let mut answers = answers.into_iter();
        for batch in batches {
            match answers.next() {
                Some(Ok(_)) => delivered += batch.records.len(),
                Some(Err(e)) => failed.push((batch, e)),
                None => failed.push((batch, unanswered())),
            }
        }
        let (resent, dead) = self.resend(&read.records, failed, abort).await?;
        if !dead.is_empty() {
            self.dead_letters(&read.records, &dead, abort).await?;
        }
        self.complete(
            Done {
                next: read.next,
                bytes,
                unrouted,
            },
            delivered + resent,
            acked,
        );
        Ok(())
    }

    /// Sends `failed` batches again, in rounds, until each is acknowledged or dead-lettered.
    /// Returns the records acknowledged and the dead letters.
    async fn resend(
        &self,
        records: &[Record],
        mut pending: Vec<(PartitionBatch, ProduceError)>,
        abort: &CancellationToken,
    ) -> Result<(usize, Vec<DeadLetter>), Halt> {
        let mut retry = self.config.retry();
        let mut delivered = 0;
        let mut dead = Vec::new();
        // Rounds resent at once in a row (see below), bounded so that a broker answering with
        // sequence errors over and over is not hammered.
        let mut quick_rounds = 0;
        while !pending.is_empty() {
            let mut round: Vec<PartitionBatch> = Vec::with_capacity(pending.len());
            let mut replan: Vec<u64> = Vec::new();
            let mut wait: Option<ProduceError> = None;
            if let Some(txn) = &self.txn {
                // A failure that ends the transaction ends this delivery: the forwarder aborts
                // it and resends from the committed position.
                for (_, error) in &pending {
                    txn.produce_failed(error, abort).await?;
                }
            }
            for (mut batch, error) in pending.drain(..) {
                match Step::after(&error, batch.records.len()) {
                    Step::Resend => {
                        round.push(batch);
                        // A batch refused only because an earlier one failed, or whose producer
                        // session must start over, is resent at once: the failure it followed
                        // was resent already, or a new session is what it needs.
                        if (!follows_a_failure(&error) || quick_rounds >= QUICK_ROUNDS)
                            && wait.is_none()
                        {
                            wait = Some(error);
                        }
                    }
                    Step::Split => {
                        let second = batch.split_off(batch.records.len() / 2);
                        round.push(batch);
                        round.push(second);
                    }
                    Step::Dead => {
                        let offset = batch.offsets.first().copied().unwrap_or_default();
                        tracing::error!(offset, tp = %batch.tp, error = %error, "Kafka refused a record for good; dead-lettering it");
                        dead.push(DeadLetter {
                            tp: batch.tp,
                            offset,
                            error,
                        });
                    }
                    Step::Replan => {
                        tracing::warn!(tp = %batch.tp, error = %error, "the partition is gone; planning its records again");
                        replan.extend(batch.offsets);
                    }
                }
            }
            if !replan.is_empty() {
                replan.sort_unstable();
                let again: Vec<Record> = records
                    .iter()
                    .filter(|r| replan.binary_search(&r.offset).is_ok())
                    .cloned()
                    .collect();
                let plan = self.planning.plan(&again, abort).await.ok_or(Aborted)?;
                round.extend(plan.batches);
            }
            // While Kafka refuses what it is sent (and writes none of it), one record asks as
            // well as the whole round whether it still does.
            let held = match &wait {
                Some(error) if error.wrote_nothing() => probe_round(&mut round),
                _ => Vec::new(),
            };
            if let Some(error) = wait {
                quick_rounds = 0;
                retry.failed(Some(&error));
                if self.uplink.pause(&self.producer, &mut retry, abort).await {
                    return Err(Halt::Aborted);
                }
            } else {
                quick_rounds += 1;
            }
            let mark = self.uplink.mark();
            let results = self.send_round(&round, abort).await?;
            self.uplink.outcome(mark, &results);
            for (batch, result) in round.into_iter().zip(results) {
                match result {
                    Ok(_) => {
                        delivered += batch.records.len();
                        retry.succeeded();
                    }
                    Err(e) => pending.push((batch, e)),
                }
            }
            // Behind the probe, in order: sent at once when it was taken.
            pending.extend(held.into_iter().map(|b| {
                let error = not_sent_error(&b.tp);
                (b, error)
            }));
        }
        Ok((delivered, dead))
    }

    /// Sends one round of resends and awaits the answers. The first batch of a partition goes
    /// as a resend (lifting the producer's block after the failure), the ones after it, in
    /// order, behind it.
    async fn send_round(
        &self,
        round: &[PartitionBatch],
        abort: &CancellationToken,
    ) -> Result<Vec<Result<i64, ProduceError>>, Aborted> {
        let mut resent: Vec<&Topition> = Vec::new();
        let mut acks = Vec::with_capacity(round.len());
        let mut unreachable = false;
        for b in round {
            if unreachable {
                acks.push(not_sent(&b.tp));
                continue;
            }
            let attempt = if resent.contains(&&b.tp) {
                Attempt::First
            } else {
                resent.push(&b.tp);
                Attempt::Resend
            };
            let ack = tokio::select! {
                biased;
                _ = abort.cancelled() => return Err(Aborted),
                a = self.producer.send(&b.tp, &b.records, None, attempt) => a,
            };
            unreachable |= holds_the_round(&ack);
            acks.push(ack);
        }
        let mut results = Vec::with_capacity(acks.len());
        for ack in acks {
            results.push(tokio::select! {
                biased;
                _ = abort.cancelled() => return Err(Aborted),
                r = ack => r,
            });
        }
        Ok(results)
    }

    /// Makes every dead letter durable (file fsynced or topic acknowledged) before the cursor
    /// may move past it; retries until it is.
    async fn dead_letters(
        &self,
        records: &[Record],
        letters: &[DeadLetter],
        abort: &CancellationToken,
    ) -> Result<(), Aborted> {
        let mut retry = self.config.retry();
        let mut told = false;
        loop {
            let written = dead_letter::write(
                &self.config.dead_letter,
                &self.config.node_id,
                &self.producer,
                records,
                letters,
            )
            .await;
            match written {
                Ok(()) => {
                    self.metrics
                        .dead_letters
                        .fetch_add(letters.len() as u64, Ordering::Relaxed);
                    return Ok(());
                }
                Err(e) => {
                    self.metrics.count_error("local_log");
                    if !told {
                        tracing::error!(error = %e, "writing dead letters failed; retrying until it works (the cursor waits)");
                        told = true;
                    }
                    retry.failed(None);
                    if self.uplink.pause(&self.producer, &mut retry, abort).await {
                        return Err(Aborted);
                    }
                }
            }
        }
    }

    /// Counts a completed chunk of which Kafka acknowledged `records`, and reports the
    /// position after it.
    fn complete(&self, done: Done, records: usize, acked: &watch::Sender<u64>) {
        let m = &self.metrics;
        m.records.fetch_add(records as u64, Ordering::Relaxed);
        m.bytes.fetch_add(done.bytes, Ordering::Relaxed);
        m.batches.fetch_add(1, Ordering::Relaxed);
        m.unrouted.fetch_add(done.unrouted, Ordering::Relaxed);
        match &self.txn {
            // Reported when its transaction commits.
            Some(txn) => txn.completed(done.next, records),
            None => {
                acked.send_replace(done.next);
            }
        }
    }

    /// Points `oldest_pending_ms` at the first record of `read` (the oldest not acknowledged).
    fn note_oldest(&self, read: Option<&Read>) {
        if let Some(first) = read.and_then(|r| r.records.first()) {
            self.metrics
                .oldest_pending_ms
                .store(first.timestamp_ms.max(1), Ordering::Relaxed);
        }
    }
}

/// Rounds of resends without a backoff wait in a row at most (see [`follows_a_failure`]).
const QUICK_ROUNDS: u32 = 3;

/// True if `error` says the batch was refused because of an earlier failure (held back, not
/// sent, or out of sequence), or that the producer session must start over: no reason to wait.
fn follows_a_failure(error: &ProduceError) -> bool {
    matches!(
        error,
        ProduceError::Blocked { .. } | ProduceError::NotSent { .. }
    ) || crate::producer::sequence::ends_session(error)
}

/// True if `ack` is a batch refused before it left because Kafka cannot be reached now (a
/// connection that could not be set up, a metadata or InitProducerId request unanswered: each
/// bounded by a timeout). The batches after it in the same round are then not sent
/// ([`not_sent`]): each would first spend its own timeout on the same cause (one connection
/// per partition lane, set up one after the other), and the round's outcome — the uplink's
/// WARN, the backoff — would wait for all of them (a first chunk of 4 partitions met by a
/// Kafka that answered 2.5 s late, with a 2 s request timeout, said nothing for as long as
/// that lasted, 6 s in `kafka_faults`; a Metadata refresh and a reconnect follow a failed
/// connection, each with its own timeout).
fn holds_the_round(ack: &ProduceAck) -> bool {
    ack.error_at_once()
        .is_some_and(|e| UplinkState::after(e).is_some())
}

/// The answer of a batch held back behind one that could not reach Kafka (see
/// [`holds_the_round`]); it is resent with that one.
fn not_sent(tp: &Topition) -> ProduceAck {
    ProduceAck::ready(Err(not_sent_error(tp)))
}

/// Why a batch of `tp` was held back this round.
fn not_sent_error(tp: &Topition) -> ProduceError {
    ProduceError::NotSent {
        topic: tp.topic().to_owned(),
        partition: tp.partition(),
    }
}

/// Cuts a round of resends down to its first record, a batch of its own, and returns the rest
/// in order (its first batch's other records first). Used while Kafka refuses what it is sent
/// and writes none of it ([`ProduceError::wrote_nothing`]: ACLs, credentials, too few in-sync
/// replicas): every byte of such a resend is paid for on a metered uplink and written by
/// nobody, and a round is resent every backoff until the cluster is fixed.
/// The rest follows at once when the probe is taken; the record goes first, so the order in its
/// partition holds.
fn probe_round(round: &mut Vec<PartitionBatch>) -> Vec<PartitionBatch> {
    let mut rest = round.split_off(round.len().min(1));
    if let Some(first) = round.first_mut()
        && first.records.len() > 1
    {
        rest.insert(0, first.split_off(1));
    }
    rest
}

/// The answer of a batch whose answer was lost (its awaiting task failed).
fn unanswered() -> ProduceError {
    ProduceError::Io {
        broker: String::new(),
        source: std::io::Error::other("the answer to the request was lost"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::producer::codes;

    fn broker(code: i16) -> ProduceError {
        ProduceError::refused("Produce", "t", 0, code, None)
    }

    fn batch(partition: i32, offsets: std::ops::Range<u64>) -> PartitionBatch {
        PartitionBatch {
            tp: Topition::new("t", partition),
            records: offsets
                .clone()
                .map(|_| crate::producer::ProduceRecord::default())
                .collect(),
            offsets: offsets.collect(),
        }
    }

    fn offsets(batches: &[PartitionBatch]) -> Vec<(i32, Vec<u64>)> {
        batches
            .iter()
            .map(|b| (b.tp.partition(), b.offsets.clone()))
            .collect()
    }

    #[test]
    fn a_probe_round_is_its_first_record_and_the_rest_follows_in_order() {
        let mut round = vec![batch(0, 10..13), batch(1, 13..15)];
        let rest = probe_round(&mut round);
        assert_eq!(offsets(&round), [(0, vec![10])]);
        assert_eq!(offsets(&rest), [(0, vec![11, 12]), (1, vec![13, 14])]);

        let mut round = vec![batch(2, 7..8), batch(0, 8..9)];
        let rest = probe_round(&mut round);
        assert_eq!(offsets(&round), [(2, vec![7])]);
        assert_eq!(offsets(&rest), [(0, vec![8])]);

        let mut round = Vec::new();
        assert!(probe_round(&mut round).is_empty());
    }

    #[test]
    fn every_failure_has_one_next_step() {
        let reset = ProduceError::Io {
            broker: "b".into(),
            source: std::io::ErrorKind::ConnectionReset.into(),
        };
        assert_eq!(Step::after(&reset, 5), Step::Resend);
        assert_eq!(
            Step::after(&broker(codes::NOT_LEADER_OR_FOLLOWER), 5),
            Step::Resend
        );
        assert_eq!(
            Step::after(&broker(codes::UNKNOWN_TOPIC_OR_PARTITION), 5),
            Step::Resend,
            "the topic may be (re)created"
        );
        assert_eq!(
            Step::after(&broker(codes::TOPIC_AUTHORIZATION_FAILED), 5),
            Step::Resend,
            "nothing is dropped"
        );
        assert_eq!(
            Step::after(&broker(codes::MESSAGE_TOO_LARGE), 5),
            Step::Split
        );
        assert_eq!(
            Step::after(&broker(codes::MESSAGE_TOO_LARGE), 1),
            Step::Dead
        );
        assert_eq!(
            Step::after(&ProduceError::BatchTooLarge { bytes: 2, max: 1 }, 1),
            Step::Dead
        );
        let gone = ProduceError::UnknownPartition {
            topic: "t".into(),
            partition: 3,
            partitions: 2,
        };
        assert_eq!(Step::after(&gone, 5), Step::Replan);
        let blocked = ProduceError::Blocked {
            topic: "t".into(),
            partition: 0,
        };
        assert_eq!(Step::after(&blocked, 5), Step::Resend);
    }
}
