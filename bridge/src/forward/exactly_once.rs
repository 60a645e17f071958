//! Exactly-once delivery in the forwarder: chunks grouped into Kafka transactions, the position
//! committed inside each ([`crate::producer::txn`], bridge/README.md "Exactly once").
//!
//! The sender asks [`Transactions`] before it sends a chunk's batches ([`Transactions::add`]:
//! AddPartitionsToTxn for partitions new to the open transaction), adds the position's group
//! while the transaction's first batches are in flight ([`Transactions::add_offsets`]: the
//! round trip overlaps theirs), tells it when a chunk was
//! acknowledged ([`Transactions::completed`]) instead of reporting the position to the reader,
//! and commits ([`Transactions::commit`]: TxnOffsetCommit, then EndTxn) once nothing is in flight
//! and the transaction is due — [`TXN_INTERVAL`] after it opened or [`TXN_RECORDS`] records
//! into it, both stretched while commits are slow ([`Sizing`]) — or the input ended. Only a
//! committed transaction's position reaches the reader, so the local cursor never passes what
//! Kafka has not committed. A produce error that ends the
//! transaction (the producer epoch refused, a sequence gap, fenced) halts the sender; the
//! forwarder then aborts the transaction and starts again from the committed position.

use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::plan::Plan;
use crate::position::LogIdentity;
use crate::producer::ProduceError;
use crate::producer::txn::{Step, TopicPartition, TxnBroker, TxnError, TxnPosition, TxnSession};

/// A transaction commits this long after it opened (while records keep coming), unless its
/// commits are slow (see [`Sizing`]).
pub const TXN_INTERVAL: Duration = Duration::from_millis(100);

/// A transaction commits once it holds this many records (scaled like [`TXN_INTERVAL`]).
pub const TXN_RECORDS: usize = 10_000;

/// A transaction spans at least this many times its commit pause (the wait for the chunks in
/// flight, TxnOffsetCommit and EndTxn, during which nothing is sent): the pause stays within
/// a tenth of the time.
pub const SPAN_PER_PAUSE: u32 = 9;

/// How long transactions stay open: [`TXN_INTERVAL`] and [`TXN_RECORDS`], both stretched by
/// the same factor while the last commit pause times [`SPAN_PER_PAUSE`] is longer than
/// [`TXN_INTERVAL`] (a slow uplink, a busy coordinator), up to the configured maximum
/// interval. A read_committed consumer sees records at commit, so the maximum bounds the
/// delay it sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizing {
    /// The longest span (`kafka.max_transaction_interval`).
    pub max: Duration,
    /// The last commit's pause.
    pub pause: Duration,
}

impl Sizing {
    /// A transaction's span: at least [`TXN_INTERVAL`], at most `max`.
    pub fn interval(&self) -> Duration {
        (self.pause * SPAN_PER_PAUSE)
            .min(self.max)
            .max(TXN_INTERVAL)
    }

    /// Records after which a transaction is due: [`TXN_RECORDS`] per [`TXN_INTERVAL`] of span.
    pub fn records(&self) -> usize {
        let scaled = TXN_RECORDS as u128 * self.interval().as_micros() / TXN_INTERVAL.as_micros();
        usize::try_from(scaled).unwrap_or(usize::MAX)
    }
}

/// The open transaction, as far as the sender knows it.
#[derive(Debug, Default)]
struct Open {
    /// When its first partition was added.
    since: Option<Instant>,
    /// Records acknowledged in it.
    records: usize,
    /// The position after the chunks acknowledged in it.
    next: Option<u64>,
    /// AddOffsetsToTxn was done in it.
    offsets: bool,
    /// When the sender first found it due (what follows until the commit starts is the wait
    /// for the chunks in flight).
    due_at: Option<Instant>,
}

/// The transaction side of the sender (see the module docs).
pub(super) struct Transactions<B> {
    session: tokio::sync::Mutex<TxnSession<B>>,
    identity: LogIdentity,
    open: parking_lot::Mutex<Open>,
    sizing: parking_lot::Mutex<Sizing>,
}

impl<B: TxnBroker> Transactions<B> {
    /// Transactions of `session` (initialised), committing positions of log `identity`, each
    /// open at most `max_interval` while records keep coming.
    pub fn new(session: TxnSession<B>, identity: LogIdentity, max_interval: Duration) -> Self {
        Self {
            session: tokio::sync::Mutex::new(session),
            identity,
            open: parking_lot::Mutex::new(Open::default()),
            sizing: parking_lot::Mutex::new(Sizing {
                max: max_interval,
                pause: Duration::ZERO,
            }),
        }
    }

    /// The session, for the forwarder's start and restarts.
    pub async fn session(&self) -> tokio::sync::MutexGuard<'_, TxnSession<B>> {
        self.session.lock().await
    }

    /// The log identity positions are committed for.
    pub fn identity(&self) -> LogIdentity {
        self.identity
    }

    /// Adds the partitions of `plan` to the transaction (opening it if none is open).
    pub async fn add(&self, plan: &Plan, cancel: &CancellationToken) -> Result<(), TxnError> {
        let mut partitions: Vec<TopicPartition> = plan
            .batches
            .iter()
            .map(|b| TopicPartition {
                topic: b.tp.topic().to_owned(),
                partition: b.tp.partition(),
            })
            .collect();
        partitions.sort();
        partitions.dedup();
        if partitions.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        self.session
            .lock()
            .await
            .add_partitions(&partitions, cancel)
            .await?;
        tracing::trace!(
            partitions = partitions.len(),
            ms = started.elapsed().as_millis(),
            "partitions in the Kafka transaction"
        );
        let mut open = self.open.lock();
        if open.since.is_none() {
            open.since = Some(Instant::now());
        }
        Ok(())
    }

    /// Adds the position's group to the open transaction (AddOffsetsToTxn), once per
    /// transaction: the sender calls it with the transaction's first batches in flight, so
    /// that the round trip overlaps theirs instead of lengthening the commit.
    pub async fn add_offsets(&self, cancel: &CancellationToken) -> Result<(), TxnError> {
        if self.open.lock().offsets {
            return Ok(());
        }
        self.session.lock().await.add_offsets(cancel).await?;
        let mut open = self.open.lock();
        open.offsets = true;
        if open.since.is_none() {
            open.since = Some(Instant::now());
        }
        Ok(())
    }

    /// A chunk of `records` records was acknowledged (or dead-lettered); the position after
    /// it is `next`.
    pub fn completed(&self, next: u64, records: usize) {
        let mut open = self.open.lock();
        open.records += records;
        open.next = Some(next);
        if open.since.is_none() {
            // A chunk with nothing to send (every record unrouted): its position still needs
            // a commit.
            open.since = Some(Instant::now());
        }
    }

    /// True if a transaction is open (a chunk was added or completed since the last commit).
    pub fn is_open(&self) -> bool {
        self.open.lock().since.is_some()
    }

    /// When the open transaction is due, if one is open.
    pub fn deadline(&self) -> Option<Instant> {
        let sizing = *self.sizing.lock();
        let open = self.open.lock();
        let since = open.since?;
        if open.records >= sizing.records() {
            return Some(since);
        }
        Some(since + sizing.interval())
    }

    /// True if the open transaction should commit as soon as nothing is in flight.
    pub fn due(&self) -> bool {
        let now = Instant::now();
        let due = self.deadline().is_some_and(|d| now >= d);
        if due {
            self.open.lock().due_at.get_or_insert(now);
        }
        due
    }

    /// Commits the open transaction with the position after its last acknowledged chunk;
    /// returns that position (None if nothing was acknowledged in it: nothing to commit).
    pub async fn commit(&self, cancel: &CancellationToken) -> Result<Option<u64>, TxnError> {
        let next = self.open.lock().next;
        let Some(next) = next else {
            *self.open.lock() = Open::default();
            return Ok(None);
        };
        let position = TxnPosition {
            next,
            metadata: self.identity.metadata(),
        };
        let started = Instant::now();
        self.session.lock().await.commit(position, cancel).await?;
        let open = std::mem::take(&mut *self.open.lock());
        let committing = started.elapsed();
        // Waiting for the chunks in flight is part of the pause, once the transaction was due.
        let draining = open
            .due_at
            .map(|d| started.saturating_duration_since(d))
            .unwrap_or_default();
        let sizing = {
            let mut sizing = self.sizing.lock();
            sizing.pause = draining + committing;
            *sizing
        };
        tracing::debug!(
            next,
            records = open.records,
            open_ms = open.since.map(|s| s.elapsed().as_millis()),
            drain_ms = draining.as_millis(),
            commit_ms = committing.as_millis(),
            next_interval_ms = sizing.interval().as_millis(),
            "Kafka transaction committed"
        );
        Ok(Some(next))
    }

    /// Forgets the open transaction (it was aborted; its chunks are resent).
    pub fn forget(&self) {
        *self.open.lock() = Open::default();
    }

    /// Checks a produce failure inside the transaction: Ok(()) if the delivery may resend the
    /// batch as usual; the transaction's end otherwise.
    pub async fn produce_failed(
        &self,
        error: &ProduceError,
        cancel: &CancellationToken,
    ) -> Result<(), TxnError> {
        match error {
            ProduceError::NoTransaction { .. } => Err(TxnError::Abortable {
                step: Step::Produce,
                reason: error.to_string(),
            }),
            ProduceError::Broker {
                api: "Produce",
                code,
                ..
            } => {
                self.session
                    .lock()
                    .await
                    .produce_failed(*code, cancel)
                    .await
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::producer::ProducerIdentity;
    use crate::producer::txn::{TxnConfig, TxnReply, TxnRequest};

    /// A named fake coordinator: answers everything at once, except EndTxn(commit), which
    /// takes `end_txn_ms` (a slow uplink or coordinator).
    struct SlowCommits {
        end_txn_ms: std::sync::atomic::AtomicU64,
    }

    impl TxnBroker for SlowCommits {
        async fn call(&self, request: TxnRequest) -> TxnReply {
            match request {
                TxnRequest::InitProducerId { .. } => TxnReply::Initialised(ProducerIdentity {
                    producer_id: 1,
                    epoch: 0,
                }),
                TxnRequest::EndTxn { .. } => {
                    let ms = self.end_txn_ms.load(std::sync::atomic::Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    TxnReply::Ok
                }
                _ => TxnReply::Ok,
            }
        }

        async fn fetch_position(
            &self,
        ) -> Result<Option<crate::position::KafkaPosition>, ProduceError> {
            Ok(None)
        }
    }

    async fn transactions(end_txn_ms: u64) -> Transactions<SlowCommits> {
        let mut session = TxnSession::new(
            SlowCommits {
                end_txn_ms: end_txn_ms.into(),
            },
            TxnConfig {
                transactional_id: "edge-bridge.gw".into(),
                transaction_timeout: Duration::from_secs(60),
                waits: crate::backoff::RetryWaits {
                    min: Duration::from_millis(10),
                    max: Duration::from_millis(100),
                    refused_max: Duration::from_millis(100),
                },
            },
        );
        session.init(&CancellationToken::new()).await.unwrap();
        Transactions::new(session, LogIdentity(7), Duration::from_secs(1))
    }

    /// Opens a transaction of `records` records, lets it come due, and commits it.
    async fn one(txn: &Transactions<SlowCommits>, next: u64, records: usize) -> Duration {
        txn.completed(next, records);
        let interval = txn.deadline().unwrap() - Instant::now();
        tokio::time::sleep(interval).await;
        assert!(txn.due());
        assert_eq!(
            txn.commit(&CancellationToken::new()).await.unwrap(),
            Some(next)
        );
        assert!(!txn.is_open());
        interval
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_commit_stretches_the_next_transaction_and_a_fast_one_shrinks_it_back() {
        let txn = transactions(5).await;
        assert_eq!(one(&txn, 10, 5).await, TXN_INTERVAL);
        assert_eq!(one(&txn, 20, 5).await, TXN_INTERVAL, "after a 5 ms commit");
        txn.session()
            .await
            .broker()
            .end_txn_ms
            .store(50, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(one(&txn, 30, 5).await, TXN_INTERVAL);
        assert_eq!(
            one(&txn, 40, 5).await,
            Duration::from_millis(450),
            "after a 50 ms commit: 9 times as long"
        );
        // The record limit is stretched alike: 45,000 records are due at once.
        txn.completed(50, 44_999);
        assert!(!txn.due());
        txn.completed(50, 1);
        assert!(txn.due());
        txn.session()
            .await
            .broker()
            .end_txn_ms
            .store(5, std::sync::atomic::Ordering::Relaxed);
        txn.commit(&CancellationToken::new()).await.unwrap();
        assert_eq!(one(&txn, 60, 5).await, TXN_INTERVAL, "fast again");
    }

    fn sizing(pause_ms: u64, max_ms: u64) -> Sizing {
        Sizing {
            max: Duration::from_millis(max_ms),
            pause: Duration::from_millis(pause_ms),
        }
    }

    #[test]
    fn cheap_commits_keep_100ms_and_10000_records_and_slow_ones_stretch_both_up_to_the_max() {
        for pause in [0, 5, 11] {
            let s = sizing(pause, 1_000);
            assert_eq!(s.interval(), TXN_INTERVAL, "pause {pause} ms");
            assert_eq!(s.records(), TXN_RECORDS);
        }
        // A 30 ms pause: at least 270 ms of sending per commit (a tenth of the time).
        let s = sizing(30, 1_000);
        assert_eq!(s.interval(), Duration::from_millis(270));
        assert_eq!(s.records(), 27_000);
        // A 500 ms pause (a slow uplink) is capped by the configured maximum.
        let s = sizing(500, 1_000);
        assert_eq!(s.interval(), Duration::from_secs(1));
        assert_eq!(s.records(), 100_000);
        // A maximum of 100 ms is the old fixed sizing, whatever the pause.
        let s = sizing(500, 100);
        assert_eq!((s.interval(), s.records()), (TXN_INTERVAL, TXN_RECORDS));
    }
}
