//! Exactly-once delivery in the forwarder: chunks grouped into Kafka transactions, the position
//! committed inside each ([`crate::producer::txn`], bridge/README.md "Exactly once").
//!
//! The sender asks [`Transactions`] before it sends a chunk's batches ([`Transactions::add`]:
//! AddPartitionsToTxn for partitions new to the open transaction), tells it when a chunk was
//! acknowledged ([`Transactions::completed`]) instead of reporting the position to the reader,
//! and commits ([`Transactions::commit`]: the position, then EndTxn) once nothing is in flight
//! and the transaction is due — [`TXN_INTERVAL`] after it opened or [`TXN_RECORDS`] records
//! into it — or the input ended. Only a committed transaction's position reaches the reader,
//! so the local cursor never passes what Kafka has not committed. A produce error that ends the
//! transaction (the producer epoch refused, a sequence gap, fenced) halts the sender; the
//! forwarder then aborts the transaction and starts again from the committed position.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::plan::Plan;
use crate::position::LogIdentity;
use crate::producer::ProduceError;
use crate::producer::txn::{Step, TopicPartition, TxnBroker, TxnError, TxnPosition, TxnSession};

/// A transaction commits at most this long after it opened (while records keep coming): the
/// cost of a transaction is four coordinator round trips (BENCHMARKS.md).
pub const TXN_INTERVAL: Duration = Duration::from_millis(100);

/// A transaction commits once it holds this many records.
pub const TXN_RECORDS: usize = 10_000;

/// The open transaction, as far as the sender knows it.
#[derive(Debug, Default)]
struct Open {
    /// When its first partition was added.
    since: Option<Instant>,
    /// Records acknowledged in it.
    records: usize,
    /// The position after the chunks acknowledged in it.
    next: Option<u64>,
}

/// The transaction side of the sender (see the module docs).
pub(super) struct Transactions<B> {
    session: tokio::sync::Mutex<TxnSession<B>>,
    identity: LogIdentity,
    open: parking_lot::Mutex<Open>,
}

impl<B: TxnBroker> Transactions<B> {
    /// Transactions of `session` (initialised), committing positions of log `identity`.
    pub fn new(session: TxnSession<B>, identity: LogIdentity) -> Self {
        Self {
            session: tokio::sync::Mutex::new(session),
            identity,
            open: parking_lot::Mutex::new(Open::default()),
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
        let open = self.open.lock();
        let since = open.since?;
        if open.records >= TXN_RECORDS {
            return Some(since);
        }
        Some(since + TXN_INTERVAL)
    }

    /// True if the open transaction should commit as soon as nothing is in flight.
    pub fn due(&self) -> bool {
        self.deadline().is_some_and(|d| Instant::now() >= d)
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
        tracing::debug!(
            next,
            records = open.records,
            open_ms = open.since.map(|s| s.elapsed().as_millis()),
            commit_ms = started.elapsed().as_millis(),
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
