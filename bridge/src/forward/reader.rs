//! The reading stage: chunks from the cursor for the planner, and cursor commits up to what
//! the sender reports Kafka acknowledged.
//!
//! A chunk is read with [`Cursor::read`] (up to `max_batch_records` / `max_batch_bytes`). One
//! that caught up with the log's durable end lingers `linger` and is topped up with
//! [`Cursor::try_read`], so a trickle of events still goes out in batches. A chunk a limit cut
//! (more durable records already waiting) is a backlog: no linger, `replaying` is set. A byte
//! limit always cuts one record short of `max_batch_bytes`, so "full" is judged by the records
//! waiting, not by the sizes.
//!
//! Commits: at once when Kafka acknowledged everything durable, otherwise at most every
//! [`COMMIT_INTERVAL`] (each commit is a crash-safe file replace).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use edge_log::{Cursor, Log, ReadError, Record};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::{COMMIT_INTERVAL, ForwardConfig, Read, sleep_or_cancel};
use crate::backoff::Backoff;
use crate::metrics::ForwardMetrics;
use crate::uplink::Uplink;

/// The reading stage (see the module docs).
pub(super) struct Reader {
    pub log: Log,
    pub cursor: Cursor,
    pub config: ForwardConfig,
    pub metrics: Arc<ForwardMetrics>,
    pub uplink: Uplink,
}

impl Reader {
    /// Reads chunks into `reads` and commits what `acked` reports, until `stop` or `abort`
    /// (or the log closes, or the later stages stop); then lets `stages` finish, commits what
    /// they acknowledged last and returns the committed offset.
    pub async fn run<T>(
        &mut self,
        reads: mpsc::Sender<Read>,
        mut acked: watch::Receiver<u64>,
        stop: &CancellationToken,
        abort: &CancellationToken,
        stages: impl Future<Output = T>,
    ) -> (u64, T) {
        let stopped = either(stop, abort);
        let mut read_backoff = Backoff::new(self.config.backoff_min, self.config.backoff_max);
        let mut last_commit = Instant::now();
        loop {
            let position = *acked.borrow_and_update();
            self.commit_if_due(position, &mut last_commit).await;
            let permit = tokio::select! {
                biased;
                _ = stopped.cancelled() => break,
                r = acked.changed() => match r {
                    Ok(()) => continue,
                    Err(_) => break, // the sender stopped (abort)
                },
                p = reads.reserve() => match p {
                    Ok(p) => p,
                    Err(_) => break, // the planner stopped (abort)
                },
            };
            let read = tokio::select! {
                biased;
                _ = stopped.cancelled() => break,
                r = acked.changed() => match r {
                    Ok(()) => continue,
                    Err(_) => break,
                },
                r = self.cursor.read(self.config.max_batch_records, self.config.max_batch_bytes) => r,
            };
            let records = match read {
                Ok(records) => records,
                Err(ReadError::Closed) => break,
                Err(e) => {
                    self.metrics.count_error("local_log");
                    tracing::error!(error = %e, "reading the log for Kafka failed; retrying");
                    if sleep_or_cancel(read_backoff.next_delay(), &stopped).await {
                        break;
                    }
                    continue;
                }
            };
            read_backoff.reset();
            let Some(chunk) = self.chunk(records, &stopped).await else {
                continue;
            };
            permit.send(chunk);
        }
        drop(reads);
        stopped.cancel();
        let ended = stages.await;
        let position = *acked.borrow();
        commit(&mut self.cursor, &self.metrics, position).await;
        (self.cursor.committed(), ended)
    }

    /// Makes a chunk of `records`: lingers and tops it up if it caught up with the log.
    async fn chunk(
        &mut self,
        mut records: Vec<Record>,
        stopped: &CancellationToken,
    ) -> Option<Read> {
        let config = &self.config;
        let mut disk_bytes: usize = records.iter().map(Record::encoded_len).sum();
        let full = self.cursor.position() < self.log.durable_end()
            || records.len() >= config.max_batch_records
            || disk_bytes >= config.max_batch_bytes;
        if !full && !config.linger.is_zero() {
            sleep_or_cancel(config.linger, stopped).await;
            let (n, b) = (
                config.max_batch_records - records.len(),
                config.max_batch_bytes - disk_bytes,
            );
            let resume = self.cursor.position();
            match self.cursor.try_read(n, b) {
                Ok(more) => {
                    disk_bytes += more.iter().map(Record::encoded_len).sum::<usize>();
                    records.extend(more);
                }
                Err(e) => {
                    // Forward what we have; the next read meets the error again.
                    self.metrics.count_error("local_log");
                    tracing::warn!(error = %e, "reading more records for the batch failed");
                    self.cursor.seek(resume);
                }
            }
        }
        let first = records.first()?;
        // Nothing was pending (caught up, or just started): this chunk holds the oldest
        // unforwarded record. The sender moves it on as chunks complete.
        let _ = self.metrics.oldest_pending_ms.compare_exchange(
            0,
            first.timestamp_ms.max(1),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        self.metrics.observe_record_sizes(records.len(), disk_bytes);
        Some(Read {
            records,
            next: self.cursor.position(),
            full,
        })
    }

    /// Commits what Kafka acknowledged: at once when that is everything durable, else every
    /// [`COMMIT_INTERVAL`].
    async fn commit_if_due(&mut self, position: u64, last_commit: &mut Instant) {
        if position <= self.cursor.committed() {
            return;
        }
        let caught_up = position >= self.log.durable_end();
        if !caught_up && last_commit.elapsed() < COMMIT_INTERVAL {
            return;
        }
        commit(&mut self.cursor, &self.metrics, position).await;
        *last_commit = Instant::now();
        self.uplink.committed(self.cursor.committed());
        if caught_up {
            self.metrics.oldest_pending_ms.store(0, Ordering::Relaxed);
            self.metrics.replaying.store(false, Ordering::Relaxed);
        }
    }
}

/// A token cancelled when either `a` or `b` is.
pub(super) fn either(a: &CancellationToken, b: &CancellationToken) -> CancellationToken {
    let both = CancellationToken::new();
    let (a, b, out) = (a.clone(), b.clone(), both.clone());
    tokio::spawn(async move {
        tokio::select! {
            _ = a.cancelled() => {}
            _ = b.cancelled() => {}
            _ = out.cancelled() => {}
        }
        out.cancel();
    });
    both
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
            metrics.count_error("local_log");
            tracing::error!(error = %e, "committing the Kafka cursor failed");
        }
    }
}
