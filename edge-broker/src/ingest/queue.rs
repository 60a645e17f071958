//! One connection's ingest queue: routed records in ordered batches to the log, and the
//! answers the client is owed, in arrival order.
//!
//! A plain state machine, no I/O of its own: the front end pushes what it decoded, calls
//! [`IngestQueue::submit`] when a read buffer is done, awaits [`IngestQueue::progress`] in its
//! select loop (cancel-safe), then takes [`Event`]s (in log order: deliver locally, or count a
//! refusal) and [`Answer`]s (in arrival order: acknowledge) until there are none.
//!
//! ```text
//! push_routed ─▶ collecting ─submit─▶ Submitting ─▶ Writing ─▶ Syncing ─▶ done
//!   (record)      (one batch)          (log has     (offsets)  (fdatasync)
//!                                       no room: ─▶ holds_input)
//!                                           Event::Written / Event::Refused   Outcome::Durable
//! push_answer ─────────────────────────────────────────────────────────▶ Outcome::Given
//! ```
//!
//! Invariants:
//! - **Order into the log.** One [`Log::submit_many`] at a time: the next batch is handed over
//!   only after the previous one is queued, so records enter the log in the order they were
//!   pushed (edge-log promises nothing for concurrent submissions).
//! - **Local delivery once written.** A record's [`Event::Written`] comes when the log gave it
//!   an offset, before it is durable, in log order.
//! - **Answers in arrival order.** Every answer (routed or not, refused or durable) waits for
//!   the answers pushed before it; a routed record's answer is settled only when it is durable
//!   ([`Outcome::Durable`]) or can never be ([`Outcome::Refused`], [`Outcome::NotDurable`]).
//! - **Backpressure from the log.** While a submission waits (for log space under
//!   `when_full = "block"`, or for room in the writer's queue), [`IngestQueue::holds_input`] is
//!   true: the front end stops reading its socket. So it does while the records not yet
//!   settled or the answers owed reach their bounds.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use edge_log::{
    AppendError, AppendedBatch, EncodedRecords, Log, NewRecord, RecordFields, SubmittedBatch,
};

use crate::input_pool::InputLease;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Bounds of one connection's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IngestLimits {
    /// Routed records held from push until written and, if answered, durable.
    pub max_records: usize,
    /// Encoded bytes of those records (the memory bound per connection).
    pub max_bytes: usize,
    /// Answers owed to the client, settled or not.
    pub max_answers: usize,
    /// A collected batch is handed to the log once it holds this many records...
    pub batch_records: usize,
    /// ... or this many encoded bytes (and whenever the front end says so).
    pub batch_bytes: usize,
}

impl Default for IngestLimits {
    /// Many records in flight let one fdatasync cover many of them (group commit).
    fn default() -> Self {
        IngestLimits {
            max_records: 8192,
            max_bytes: 4 << 20,
            max_answers: 8192,
            batch_records: 2048,
            batch_bytes: 1 << 20,
        }
    }
}

/// What the log did with a routed record, in log order.
#[derive(Debug)]
pub enum Event<L> {
    /// The record has an offset (it is not durable yet): deliver `local` to subscribers now.
    Written {
        /// What the front end pushed for local delivery.
        local: L,
        /// The record's log offset.
        offset: u64,
    },
    /// The log refused the record (full, too large, failed, closed).
    Refused {
        /// What the front end pushed for local delivery (not to be delivered).
        local: L,
        /// The log's reason.
        error: AppendError,
        /// An answer waits for this record ([`Outcome::Refused`] follows in answer order).
        answered: bool,
    },
}

/// How an answer owed to the client was settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Settled without the log (not routed, a duplicate, invalid): the tag says what to answer.
    Given,
    /// The record is durable at this offset: acknowledge it.
    Durable(u64),
    /// The log refused the record.
    Refused(AppendError),
    /// The record was written but will never be durable (fsync failed, log closed): it must
    /// never be acknowledged.
    NotDurable(AppendError),
}

/// An answer owed to the client, settled, in arrival order.
#[derive(Debug)]
pub struct Answer<T> {
    /// What the front end pushed with it (packet id, reply subject, ...).
    pub tag: T,
    /// How it was settled.
    pub outcome: Outcome,
}

/// An answer slot in arrival order.
struct Slot<T> {
    tag: T,
    state: SlotState,
    /// When a routed record owed this answer was pushed (for the durable-ack latency).
    pushed_at: Option<std::time::Instant>,
}

enum SlotState {
    /// The record is on its way into the log.
    Waiting,
    /// Written at this offset; waits for its batch's sync.
    Written(u64),
    /// Ready to leave.
    Settled(Outcome),
}

/// A routed record in a batch (its encoding went to the log).
struct Item<L> {
    local: L,
    /// Absolute index of its answer slot, if it is answered.
    answer: Option<u64>,
    /// Written, it is only counted ([`IngestQueue::push_routed_quiet`]).
    quiet: bool,
}

/// Routed records pushed since the last submission.
struct Collecting<L> {
    /// The records, encoded on the connection's thread (the log's writer only frames them).
    records: EncodedRecords,
    items: Vec<Item<L>>,
    bytes: usize,
    /// When the first answered record of the batch was pushed (timed answers only): the
    /// batch's records are pushed while one read buffer is decoded (a front end submits after
    /// each, and holds input while a submission waits), so they share one clock reading.
    pushed_at: Option<std::time::Instant>,
    /// Leases of the large packets its records came from ([`IngestQueue::keep_until_written`]).
    leases: Vec<InputLease>,
}

impl<L> Default for Collecting<L> {
    fn default() -> Self {
        Collecting {
            records: EncodedRecords::new(),
            items: Vec::new(),
            bytes: 0,
            pushed_at: None,
            leases: Vec::new(),
        }
    }
}

/// The most tail bytes a batch reserves at its first record for the size of the last one:
/// one 64 KiB read of small publishes. A batch that held a large publish (leased from
/// `max_partial_packet_bytes_total`) does not make the next one, maybe of a single small
/// publish that a full log holds, reserve its size.
const ROOM_CARRIED_OVER_MAX: usize = 64 << 10;

/// Size of the last batch handed to the log.
#[derive(Debug, Clone, Copy, Default)]
struct LastBatch {
    records: usize,
    /// Encoded tail bytes.
    bytes: usize,
}

/// A batch handed to the log, oldest first.
struct Batch<L> {
    /// Until written; empty afterwards.
    items: Vec<Item<L>>,
    /// Answer slots written by this batch that wait for its sync.
    syncing: Vec<u64>,
    records: usize,
    bytes: usize,
    phase: Phase,
    /// Until written: the leases of the large packets its records came from.
    leases: Vec<InputLease>,
}

enum Phase {
    /// Waiting for log space and the writer's queue (the log's backpressure).
    Submitting(BoxFuture<SubmittedBatch>),
    /// Queued: waiting for the offsets.
    Writing(BoxFuture<AppendedBatch>),
    /// Written and delivered: waiting for the fdatasync covering it.
    Syncing(BoxFuture<Result<(), AppendError>>),
    /// Nothing left to wait for.
    Done,
}

/// What moved a batch on (computed while the batch is borrowed, applied after).
enum Step {
    Submitted(SubmittedBatch),
    Written(AppendedBatch),
    Synced(Result<(), AppendError>),
}

/// One connection's ingest queue; `L` travels with a routed record to its [`Event`], `T` with
/// an answer to its [`Answer`].
pub struct IngestQueue<L, T> {
    log: Log,
    limits: IngestLimits,
    collecting: Collecting<L>,
    batches: VecDeque<Batch<L>>,
    answers: VecDeque<Slot<T>>,
    /// Absolute index of `answers.front()`.
    answers_base: u64,
    events: VecDeque<Event<L>>,
    /// Routed records pushed so far.
    pushed: u64,
    /// Routed records written or refused so far.
    written: u64,
    /// Quiet records written since [`IngestQueue::take_quiet_written`] last took the count.
    quiet_written: u64,
    /// Records and bytes from push until their batch is done.
    held_records: usize,
    held_bytes: usize,
    /// Where the time from push to a durable answer is counted, if anywhere.
    ack_latency: Option<std::sync::Arc<edge_bridge::metrics::LatencyHistogram>>,
    /// When the queue last saw a batch of timed answers become durable: the end of their
    /// time (one clock reading per sync, not one per answer).
    synced_at: Option<std::time::Instant>,
    /// The last batch handed to the log: the room the next one starts with.
    last_batch: LastBatch,
}

impl<L, T> std::fmt::Debug for IngestQueue<L, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngestQueue")
            .field("collecting", &self.collecting.records.len())
            .field("batches", &self.batches.len())
            .field("answers", &self.answers.len())
            .field("pushed", &self.pushed)
            .field("written", &self.written)
            .finish_non_exhaustive()
    }
}

impl<L: Send + 'static, T> IngestQueue<L, T> {
    /// An empty queue in front of `log`.
    pub fn new(log: Log, limits: IngestLimits) -> Self {
        IngestQueue {
            log,
            limits,
            collecting: Collecting::default(),
            batches: VecDeque::new(),
            answers: VecDeque::new(),
            answers_base: 0,
            events: VecDeque::new(),
            pushed: 0,
            written: 0,
            quiet_written: 0,
            held_records: 0,
            held_bytes: 0,
            ack_latency: None,
            synced_at: None,
            last_batch: LastBatch::default(),
        }
    }

    /// Counts, in `histogram`, the time from pushing each answered routed record to the queue
    /// seeing it durable (its answer leaves then, after those before it).
    pub fn measure_acks(
        mut self,
        histogram: std::sync::Arc<edge_bridge::metrics::LatencyHistogram>,
    ) -> Self {
        self.ack_latency = Some(histogram);
        self
    }

    /// Queues a routed record for the log (`headers`: name and value pairs, in order),
    /// encoded now; `answer` takes its place in the answer order. A full batch is handed to
    /// the log at once (unless a submission is still waiting).
    pub fn push_routed<'h, H>(
        &mut self,
        record: RecordFields<'_>,
        headers: H,
        local: L,
        answer: Option<T>,
    ) where
        H: Iterator<Item = (&'h [u8], &'h [u8])> + Clone,
    {
        self.push_item(record, headers, local, answer, false);
    }

    /// [`IngestQueue::push_routed`] for a record whose `local` asks nothing once it is written
    /// (nobody to deliver to, nothing to remember): no [`Event::Written`] is queued for it,
    /// the write is only counted ([`IngestQueue::take_quiet_written`]); a refusal still comes
    /// as [`Event::Refused`], and its answer is settled as any other.
    pub fn push_routed_quiet<'h, H>(
        &mut self,
        record: RecordFields<'_>,
        headers: H,
        local: L,
        answer: Option<T>,
    ) where
        H: Iterator<Item = (&'h [u8], &'h [u8])> + Clone,
    {
        self.push_item(record, headers, local, answer, true);
    }

    /// Quiet records written (given an offset) since the last call, in no event.
    pub fn take_quiet_written(&mut self) -> u64 {
        std::mem::take(&mut self.quiet_written)
    }

    fn push_item<'h, H>(
        &mut self,
        record: RecordFields<'_>,
        headers: H,
        local: L,
        answer: Option<T>,
        quiet: bool,
    ) where
        H: Iterator<Item = (&'h [u8], &'h [u8])> + Clone,
    {
        // The clock is read only for a record whose durable answer is timed: a publish nobody
        // waits for (NATS core PUB, MQTT QoS 0) pays no clock read (it was ~9% of a NATS
        // connection task's time at 1M PUB/s), and a batch reads it once.
        let answer = answer.map(|tag| {
            let pushed_at = match self.ack_latency {
                Some(_) => Some(
                    *self
                        .collecting
                        .pushed_at
                        .get_or_insert_with(std::time::Instant::now),
                ),
                None => None,
            };
            self.push_slot(tag, SlotState::Waiting, pushed_at)
        });
        if self.collecting.records.capacity() == 0 {
            // Taken when the batch starts, not when the last one is handed over: a quiet
            // connection holds none. The log hands back room its writer emptied: the records
            // are not encoded into memory freed on the writer's thread and fresh again here
            // (page faults and allocator work were ~9% of a NATS connection task).
            let bytes = self.last_batch.bytes.min(ROOM_CARRIED_OVER_MAX);
            self.collecting.records = self.log.encoded_records(self.last_batch.records, bytes);
        }
        if self.collecting.items.capacity() == 0 {
            self.collecting.items = Vec::with_capacity(self.last_batch.records);
        }
        let bytes = self.collecting.records.push(record, headers);
        self.collecting.items.push(Item {
            local,
            answer,
            quiet,
        });
        self.collecting.bytes += bytes;
        self.held_records += 1;
        self.held_bytes += bytes;
        self.pushed += 1;
        if self.batch_full() {
            self.submit();
        }
    }

    /// Queues an answer settled without the log ([`Outcome::Given`]); it leaves after the
    /// answers before it.
    pub fn push_answer(&mut self, tag: T) {
        self.push_slot(tag, SlotState::Settled(Outcome::Given), None);
    }

    fn push_slot(
        &mut self,
        tag: T,
        state: SlotState,
        pushed_at: Option<std::time::Instant>,
    ) -> u64 {
        self.answers.push_back(Slot {
            tag,
            state,
            pushed_at,
        });
        self.answers_base + self.answers.len() as u64 - 1
    }

    fn batch_full(&self) -> bool {
        self.collecting.records.len() >= self.limits.batch_records
            || self.collecting.bytes >= self.limits.batch_bytes
    }

    fn submission_pending(&self) -> bool {
        self.batches
            .back()
            .is_some_and(|b| matches!(b.phase, Phase::Submitting(_)))
    }

    /// Hands the collected records to the log as one ordered batch, unless the previous
    /// submission is still waiting (then they go when it is through).
    pub fn submit(&mut self) {
        if self.collecting.records.is_empty() || self.submission_pending() {
            return;
        }
        let n = self.collecting.records.len();
        self.last_batch = LastBatch {
            records: n,
            bytes: self.collecting.records.bytes(),
        };
        let collected = std::mem::take(&mut self.collecting);
        let log = self.log.clone();
        let records = collected.records;
        let mut future: BoxFuture<SubmittedBatch> =
            Box::pin(async move { log.submit_encoded(records).await });
        // Usually the log has room at once: no trip through the caller's select loop. (Still
        // pending: it is polled with a real waker by `poll_progress`.)
        let mut cx = Context::from_waker(Waker::noop());
        let phase = match future.as_mut().poll(&mut cx) {
            Poll::Ready(submitted) => Phase::Writing(Box::pin(submitted.written())),
            Poll::Pending => Phase::Submitting(future),
        };
        self.batches.push_back(Batch {
            items: collected.items,
            syncing: Vec::new(),
            records: n,
            bytes: collected.bytes,
            phase,
            leases: collected.leases,
        });
    }

    /// Keeps `lease` until the record just pushed is written: the lease of the large packet
    /// it came from, taken from `max_partial_packet_bytes_total` when the packet began to
    /// arrive ([`crate::input_pool`]). `pushed_before` is [`IngestQueue::pushed`] before the
    /// packet was handled: if no record was pushed since, the packet did not become one and
    /// the lease is given back now. So a log that takes nothing (full under
    /// `when_full = "block"`) makes connections hold no more large packets than the pool, not
    /// one per connection.
    pub fn keep_until_written(&mut self, lease: InputLease, pushed_before: u64) {
        if !lease.is_held() || self.pushed == pushed_before {
            return;
        }
        if !self.collecting.records.is_empty() {
            self.collecting.leases.push(lease);
        } else if let Some(batch) = self
            .batches
            .back_mut()
            .filter(|b| matches!(b.phase, Phase::Submitting(_) | Phase::Writing(_)))
        {
            // A full batch was handed over with the record.
            batch.leases.push(lease);
        }
    }

    /// Routed records pushed so far.
    pub fn pushed(&self) -> u64 {
        self.pushed
    }

    /// Whether the front end must stop taking input: the log holds a submission back (no
    /// room under `when_full = "block"`, or its writer's queue is full), or the records not yet
    /// settled or the answers owed reached their bounds.
    pub fn holds_input(&self) -> bool {
        self.submission_pending()
            || self.held_records >= self.limits.max_records
            || self.held_bytes >= self.limits.max_bytes
            || self.answers.len() >= self.limits.max_answers
    }

    /// Answers owed and not yet taken by [`IngestQueue::next_answer`].
    pub fn answers_owed(&self) -> usize {
        self.answers.len()
    }

    /// Whether the log holds something of this queue ([`IngestQueue::progress`] will move).
    pub fn is_busy(&self) -> bool {
        !self.batches.is_empty()
    }

    /// Whether nothing is left: no record on its way, no answer owed.
    pub fn is_settled(&self) -> bool {
        self.batches.is_empty()
            && self.collecting.records.is_empty()
            && self.answers.is_empty()
            && self.events.is_empty()
    }

    /// Routed records pushed so far (a mark for [`IngestQueue::written_through`]).
    pub fn mark(&self) -> u64 {
        self.pushed
    }

    /// Whether every routed record pushed before `mark` was written or refused.
    pub fn written_through(&self, mark: u64) -> bool {
        self.written >= mark
    }

    /// Whether every routed record pushed so far was written or refused.
    pub fn all_written(&self) -> bool {
        self.written == self.pushed
    }

    /// Resolves once something moved (a batch written or synced, a submission through) or an
    /// event or answer is ready. Cancel-safe: every result stays in the queue.
    pub async fn progress(&mut self) {
        std::future::poll_fn(|cx| self.poll_progress(cx)).await
    }

    /// The poll form of [`IngestQueue::progress`].
    pub fn poll_progress(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let mut progressed = false;
        loop {
            let mut moved = false;
            // Batches are written in order: only the oldest one still writing is polled for
            // its offsets; syncs and the (single) submission are polled wherever they are.
            let mut writing_polled = false;
            for i in 0..self.batches.len() {
                let step = match &mut self.batches[i].phase {
                    Phase::Submitting(future) => future.as_mut().poll(cx).map(Step::Submitted),
                    Phase::Writing(future) if !writing_polled => {
                        writing_polled = true;
                        future.as_mut().poll(cx).map(Step::Written)
                    }
                    Phase::Syncing(future) => future.as_mut().poll(cx).map(Step::Synced),
                    Phase::Writing(_) | Phase::Done => Poll::Pending,
                };
                if let Poll::Ready(step) = step {
                    moved = true;
                    match step {
                        Step::Submitted(submitted) => {
                            self.batches[i].phase = Phase::Writing(Box::pin(submitted.written()));
                        }
                        Step::Written(appended) => self.on_written(i, appended),
                        Step::Synced(durable) => self.on_synced(i, durable),
                    }
                }
            }
            while self
                .batches
                .front()
                .is_some_and(|b| matches!(b.phase, Phase::Done))
            {
                self.batches.pop_front();
            }
            if !self.collecting.records.is_empty() && !self.submission_pending() {
                self.submit();
                moved = true;
            }
            if !moved {
                break;
            }
            progressed = true;
        }
        if progressed || !self.events.is_empty() || self.answer_ready() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Batch `i` was written (or refused): events in log order, answers of refused records
    /// settled, the batch waits for its sync if any of its records is answered.
    fn on_written(&mut self, i: usize, appended: AppendedBatch) {
        self.batches[i].leases.clear();
        let mut items = std::mem::take(&mut self.batches[i].items);
        let mut syncing = Vec::new();
        let outcomes = appended.outcomes();
        let records = items.len();
        for (at, item) in items.drain(..).enumerate() {
            // The log gives one outcome per record; a missing one counts as never written.
            let outcome = outcomes
                .get(at)
                .cloned()
                .unwrap_or(Err(AppendError::Closed));
            match outcome {
                Ok(offset) => {
                    if let Some(index) = item.answer {
                        self.set_slot(index, SlotState::Written(offset));
                        if syncing.capacity() == 0 {
                            // Sized once for the rest of the batch, instead of grown by
                            // doubling (~60 instructions a QoS 1 publish).
                            syncing.reserve_exact(records - at);
                        }
                        syncing.push(index);
                    }
                    if item.quiet {
                        self.quiet_written += 1;
                        continue;
                    }
                    self.events.push_back(Event::Written {
                        local: item.local,
                        offset,
                    });
                }
                Err(error) => {
                    if let Some(index) = item.answer {
                        self.set_slot(index, SlotState::Settled(Outcome::Refused(error.clone())));
                    }
                    self.events.push_back(Event::Refused {
                        local: item.local,
                        error,
                        answered: item.answer.is_some(),
                    });
                }
            }
        }
        if self.collecting.items.capacity() == 0 {
            // The next batch collects its items in this one's vector.
            self.collecting.items = items;
        }
        let batch = &mut self.batches[i];
        self.written += batch.records as u64;
        if syncing.is_empty() {
            // Nobody waits for these records to be durable.
            self.finish(i);
        } else {
            batch.syncing = syncing;
            let mut appended = appended;
            batch.phase = Phase::Syncing(Box::pin(async move { appended.durable().await }));
        }
    }

    /// Batch `i` is durable, or never will be: settle the answers it holds.
    fn on_synced(&mut self, i: usize, durable: Result<(), AppendError>) {
        let syncing = std::mem::take(&mut self.batches[i].syncing);
        if self.ack_latency.is_some() && durable.is_ok() {
            self.synced_at = Some(std::time::Instant::now());
        }
        for index in syncing {
            let Some(slot) = self.slot_mut(index) else {
                continue;
            };
            if let SlotState::Written(offset) = slot.state {
                slot.state = SlotState::Settled(match &durable {
                    Ok(()) => Outcome::Durable(offset),
                    Err(error) => Outcome::NotDurable(error.clone()),
                });
            }
        }
        self.finish(i);
    }

    fn finish(&mut self, i: usize) {
        let batch = &mut self.batches[i];
        batch.phase = Phase::Done;
        self.held_records -= batch.records;
        self.held_bytes -= batch.bytes;
    }

    fn slot_mut(&mut self, index: u64) -> Option<&mut Slot<T>> {
        let at = usize::try_from(index.checked_sub(self.answers_base)?).ok()?;
        self.answers.get_mut(at)
    }

    fn set_slot(&mut self, index: u64, state: SlotState) {
        if let Some(slot) = self.slot_mut(index) {
            slot.state = state;
        }
    }

    fn answer_ready(&self) -> bool {
        self.answers
            .front()
            .is_some_and(|s| matches!(s.state, SlotState::Settled(_)))
    }

    /// The next written or refused record, in log order.
    pub fn next_event(&mut self) -> Option<Event<L>> {
        self.events.pop_front()
    }

    /// The next answer, once it and every answer before it are settled.
    pub fn next_answer(&mut self) -> Option<Answer<T>> {
        if !self.answer_ready() {
            return None;
        }
        let slot = self.answers.pop_front()?;
        self.answers_base += 1;
        if let (Some(histogram), Some(pushed_at), SlotState::Settled(Outcome::Durable(_))) =
            (&self.ack_latency, slot.pushed_at, &slot.state)
        {
            // Settled durable: a sync was seen since it was pushed.
            let took = match self.synced_at {
                Some(synced_at) => synced_at.saturating_duration_since(pushed_at),
                None => pushed_at.elapsed(),
            };
            histogram.observe(took);
        }
        match slot.state {
            SlotState::Settled(outcome) => Some(Answer {
                tag: slot.tag,
                outcome,
            }),
            SlotState::Waiting | SlotState::Written(_) => None,
        }
    }
}

/// Stores one record through a queue of its own (an MQTT will: there is no connection left to
/// own one) and returns its offset once written; durability is not waited for (nobody is
/// answered).
pub async fn ingest_one(log: &Log, record: &NewRecord) -> Result<u64, AppendError> {
    let mut queue: IngestQueue<(), ()> = IngestQueue::new(log.clone(), IngestLimits::default());
    queue.push_routed(record.fields(), record.header_pairs(), (), None);
    queue.submit();
    loop {
        if let Some(event) = queue.next_event() {
            return match event {
                Event::Written { offset, .. } => Ok(offset),
                Event::Refused { error, .. } => Err(error),
            };
        }
        if !queue.is_busy() {
            return Err(AppendError::Closed);
        }
        queue.progress().await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use bytes::Bytes;
    use edge_log::testing::{FaultyStorage, MemStorage};
    use edge_log::{Destination, FsyncPolicy, LogConfig, Source, WhenFull};

    use super::*;

    const WAIT: Duration = Duration::from_secs(5);

    fn config(when_full: WhenFull) -> LogConfig {
        LogConfig {
            segment_bytes: 1024,
            max_bytes: 4096,
            fsync: FsyncPolicy::Always,
            when_full,
            max_record_bytes: 256,
            ..LogConfig::new("/q")
        }
    }

    fn mem_log(when_full: WhenFull) -> Log {
        log_in_memory(config(when_full))
    }

    fn log_in_memory(config: LogConfig) -> Log {
        Log::open_with_storage(config, MemStorage::new()).unwrap().0
    }

    /// The tests push whole records.
    trait PushRecord<L, T> {
        fn push_record(&mut self, record: NewRecord, local: L, answer: Option<T>);
        fn push_record_quiet(&mut self, record: NewRecord, local: L, answer: Option<T>);
    }

    impl<L: Send + 'static, T> PushRecord<L, T> for IngestQueue<L, T> {
        fn push_record(&mut self, record: NewRecord, local: L, answer: Option<T>) {
            self.push_routed(record.fields(), record.header_pairs(), local, answer);
        }

        fn push_record_quiet(&mut self, record: NewRecord, local: L, answer: Option<T>) {
            self.push_routed_quiet(record.fields(), record.header_pairs(), local, answer);
        }
    }

    fn record(i: u64, payload: usize) -> NewRecord {
        NewRecord {
            timestamp_ms: i,
            source: Source::Mqtt,
            topic: format!("t/{i}").into(),
            client_id: Arc::from("c"),
            destination: Destination::topic("k"),
            headers: Vec::new(),
            payload: Bytes::from(vec![b'x'; payload]),
        }
    }

    /// What came out of a queue: events as ("w" | "r", local), answers as (tag, outcome).
    #[derive(Debug, Default)]
    struct Seen {
        written: Vec<(u32, u64)>,
        refused: Vec<(u32, AppendError)>,
        answers: Vec<(&'static str, Outcome)>,
    }

    fn take(queue: &mut IngestQueue<u32, &'static str>, seen: &mut Seen) {
        while let Some(event) = queue.next_event() {
            match event {
                Event::Written { local, offset } => seen.written.push((local, offset)),
                Event::Refused { local, error, .. } => seen.refused.push((local, error)),
            }
        }
        while let Some(answer) = queue.next_answer() {
            seen.answers.push((answer.tag, answer.outcome));
        }
    }

    /// Drives the queue until nothing is left (panics after `WAIT`).
    async fn settle(queue: &mut IngestQueue<u32, &'static str>, seen: &mut Seen) {
        queue.submit();
        loop {
            take(queue, seen);
            if queue.is_settled() {
                return;
            }
            tokio::time::timeout(WAIT, queue.progress())
                .await
                .expect("the queue settles");
        }
    }

    /// A batch's record vector comes back from the log's writer and collects the next batch;
    /// between batches the queue holds none (a quiet connection keeps no record vector).
    #[tokio::test]
    async fn the_next_batch_is_collected_in_a_vector_the_writer_emptied() {
        let log = log_in_memory(LogConfig {
            segment_bytes: 1 << 20,
            max_bytes: 16 << 20,
            ..config(WhenFull::Block)
        });
        let mut queue = IngestQueue::new(log.clone(), IngestLimits::default());
        let mut seen = Seen::default();
        for i in 0..40 {
            queue.push_record(record(i, 10), i as u32, None);
        }
        let first_bytes = queue.collecting.records.bytes();
        settle(&mut queue, &mut seen).await;
        assert_eq!(seen.written.len(), 40);
        assert_eq!(
            queue.collecting.records.capacity(),
            0,
            "no vector held between batches"
        );
        queue.push_record(record(40, 10), 40, None);
        assert!(
            queue.collecting.records.bytes_capacity() >= first_bytes,
            "the first batch's room, back from the writer (a new one grows from one record's)"
        );
        assert!(queue.collecting.records.capacity() >= 40);
        settle(&mut queue, &mut seen).await;
        let offsets: Vec<u64> = seen.written.iter().map(|&(_, offset)| offset).collect();
        assert_eq!(offsets, (0..41).collect::<Vec<u64>>());
    }

    /// A batch in a new vector (the writer kept none for reuse) starts with room for the last
    /// batch's bytes, up to one read's: it neither grows by doubling, copying its records each
    /// time, nor carries a large publish's room into a batch of small ones.
    #[tokio::test]
    async fn a_new_batch_reserves_the_last_ones_bytes_up_to_one_read() {
        let log = log_in_memory(LogConfig {
            segment_bytes: 4 << 20,
            max_bytes: 64 << 20,
            max_record_bytes: 1 << 20,
            ..config(WhenFull::Block)
        });
        let mut queue = IngestQueue::new(log, IngestLimits::default());
        let mut seen = Seen::default();
        // More records than the writer keeps room for: the next batch gets a new vector.
        for i in 0..1100 {
            queue.push_record(record(i, 10), i as u32, None);
        }
        let small_batch = queue.collecting.records.bytes();
        settle(&mut queue, &mut seen).await;
        queue.push_record(record(1100, 10), 1100, None);
        assert!(
            queue.collecting.records.bytes_capacity() >= small_batch,
            "room for the last batch's {small_batch} bytes, not {}",
            queue.collecting.records.bytes_capacity()
        );
        settle(&mut queue, &mut seen).await;
        // More bytes than the writer keeps room for, in large records.
        for i in 1101..1103 {
            queue.push_record(record(i, 200 << 10), i as u32, None);
        }
        settle(&mut queue, &mut seen).await;
        queue.push_record(record(1103, 10), 1103, None);
        assert_eq!(
            queue.collecting.records.bytes_capacity(),
            ROOM_CARRIED_OVER_MAX
        );
        settle(&mut queue, &mut seen).await;
        assert_eq!(seen.written.len(), 1104);
    }

    /// Only durable answers of routed records are timed: given answers, unanswered records and
    /// refusals are not.
    #[tokio::test]
    async fn durable_answers_are_timed_from_push() {
        let log = mem_log(WhenFull::Block);
        let histogram = Arc::new(edge_bridge::metrics::LatencyHistogram::new(&[0.5]));
        let mut queue =
            IngestQueue::new(log, IngestLimits::default()).measure_acks(Arc::clone(&histogram));
        let mut seen = Seen::default();
        queue.push_answer("unrouted");
        queue.push_record(record(0, 10), 0, Some("routed"));
        queue.push_record(record(1, 10), 1, None);
        queue.push_record(record(2, 1000), 2, Some("too large"));
        queue.push_record(record(3, 10), 3, Some("routed again"));
        settle(&mut queue, &mut seen).await;
        assert_eq!(seen.answers.len(), 4);
        assert!(
            matches!(seen.answers[2].1, Outcome::Refused(_)),
            "{:?}",
            seen.answers
        );
        let counts = histogram.snapshot().counts;
        assert_eq!(counts.iter().sum::<u64>(), 2, "{counts:?}");
    }

    /// A durable answer is timed from its push (the batch's first clock reading), not from
    /// its batch's submission or its answer: a wait between push and submission is counted.
    #[tokio::test]
    async fn an_answer_is_timed_from_its_push_through_its_sync() {
        let log = mem_log(WhenFull::Block);
        let histogram = Arc::new(edge_bridge::metrics::LatencyHistogram::new(&[0.5]));
        let mut queue =
            IngestQueue::new(log, IngestLimits::default()).measure_acks(Arc::clone(&histogram));
        let mut seen = Seen::default();
        queue.push_record(record(0, 10), 0, Some("first"));
        std::thread::sleep(std::time::Duration::from_millis(20));
        queue.push_record(record(1, 10), 1, Some("second"));
        settle(&mut queue, &mut seen).await;
        let first = histogram.snapshot();
        assert_eq!(first.counts.iter().sum::<u64>(), 2);
        assert!(
            first.sum_seconds >= 0.020,
            "the first is timed from its push, not its submission: {first:?}"
        );
        // The next batch has a clock of its own.
        queue.push_record(record(2, 10), 2, Some("third"));
        settle(&mut queue, &mut seen).await;
        let second = histogram.snapshot();
        assert_eq!(second.counts.iter().sum::<u64>(), 3);
        assert_eq!(seen.answers.len(), 3);
    }

    #[tokio::test]
    async fn answers_leave_in_arrival_order_and_records_enter_the_log_in_push_order() {
        let log = mem_log(WhenFull::Block);
        let mut queue = IngestQueue::new(log.clone(), IngestLimits::default());
        let mut seen = Seen::default();
        queue.push_answer("unrouted qos1");
        queue.push_record(record(0, 10), 0, Some("routed qos1"));
        queue.push_record(record(1, 10), 1, None);
        queue.push_answer("unrouted qos2");
        queue.push_record(record(2, 10), 2, Some("routed qos2"));
        // Only the first answer may leave before the log has the routed record after it.
        take(&mut queue, &mut seen);
        assert_eq!(seen.answers, [("unrouted qos1", Outcome::Given)]);
        assert!(!queue.all_written());
        let mark = queue.mark();
        settle(&mut queue, &mut seen).await;
        assert!(queue.written_through(mark));
        assert_eq!(seen.written, [(0, 0), (1, 1), (2, 2)]);
        assert_eq!(
            seen.answers,
            [
                ("unrouted qos1", Outcome::Given),
                ("routed qos1", Outcome::Durable(0)),
                ("unrouted qos2", Outcome::Given),
                ("routed qos2", Outcome::Durable(2)),
            ]
        );
        assert_eq!(log.durable_end(), 3, "answered records are durable");
    }

    #[tokio::test]
    async fn many_batches_keep_the_push_order_in_the_log() {
        let log = mem_log(WhenFull::Block);
        let limits = IngestLimits {
            batch_records: 3,
            ..IngestLimits::default()
        };
        let mut queue = IngestQueue::new(log.clone(), limits);
        let mut seen = Seen::default();
        for i in 0..20u32 {
            let answer = (i % 2 == 0).then_some("even");
            queue.push_record(record(u64::from(i), 20), i, answer);
        }
        settle(&mut queue, &mut seen).await;
        let expected: Vec<(u32, u64)> = (0..20).map(|i| (i, u64::from(i))).collect();
        assert_eq!(seen.written, expected);
        let offsets: Vec<Outcome> = seen.answers.iter().map(|(_, o)| o.clone()).collect();
        let even: Vec<Outcome> = (0..20).step_by(2).map(Outcome::Durable).collect();
        assert_eq!(offsets, even);
        let mut cursor = log.cursor("check").unwrap();
        let back: Vec<String> = cursor
            .try_read(usize::MAX, usize::MAX)
            .unwrap()
            .into_iter()
            .map(|r| r.topic.to_string())
            .collect();
        let pushed: Vec<String> = (0..20).map(|i| format!("t/{i}")).collect();
        assert_eq!(back, pushed);
    }

    #[tokio::test]
    async fn refusals_keep_their_place_in_the_answer_order() {
        let log = mem_log(WhenFull::Block);
        let mut queue = IngestQueue::new(log, IngestLimits::default());
        let mut seen = Seen::default();
        queue.push_record(record(0, 10), 0, Some("first"));
        queue.push_record(record(1, 1000), 1, Some("too large"));
        queue.push_answer("given");
        queue.push_record(record(2, 10), 2, None);
        settle(&mut queue, &mut seen).await;
        assert_eq!(seen.written, [(0, 0), (2, 1)]);
        assert!(matches!(
            seen.refused[..],
            [(1, AppendError::TooLarge { .. })]
        ));
        let tags: Vec<&str> = seen.answers.iter().map(|(t, _)| *t).collect();
        assert_eq!(tags, ["first", "too large", "given"]);
        assert!(matches!(
            seen.answers[1].1,
            Outcome::Refused(AppendError::TooLarge { .. })
        ));
    }

    /// A quiet record (nothing to deliver once written) is only counted when written: no
    /// event, the others keep theirs in log order; refused, it still comes as an event, and
    /// answers are settled (durable or refused) as for any record.
    #[tokio::test]
    async fn quiet_records_are_counted_not_evented_unless_refused() {
        let log = mem_log(WhenFull::Block);
        let mut queue = IngestQueue::new(log, IngestLimits::default());
        let mut seen = Seen::default();
        queue.push_record_quiet(record(0, 10), 0, None);
        queue.push_record(record(1, 10), 1, None);
        queue.push_record_quiet(record(2, 10), 2, Some("quiet, answered"));
        queue.push_record_quiet(record(3, 1000), 3, Some("quiet, too large"));
        queue.push_record_quiet(record(4, 10), 4, None);
        let mark = queue.mark();
        settle(&mut queue, &mut seen).await;
        assert_eq!(seen.written, [(1, 1)], "only the record that is not quiet");
        assert!(matches!(
            seen.refused[..],
            [(3, AppendError::TooLarge { .. })]
        ));
        assert_eq!(queue.take_quiet_written(), 3);
        assert_eq!(queue.take_quiet_written(), 0, "taken once");
        assert!(queue.written_through(mark));
        assert_eq!(seen.answers.len(), 2);
        assert_eq!(seen.answers[0], ("quiet, answered", Outcome::Durable(2)));
        assert!(matches!(
            seen.answers[1],
            (
                "quiet, too large",
                Outcome::Refused(AppendError::TooLarge { .. })
            )
        ));
    }

    #[tokio::test]
    async fn a_record_whose_fsync_failed_is_never_acknowledged() {
        let faulty = FaultyStorage::new(MemStorage::new());
        let log = Log::open_with_storage(config(WhenFull::Block), faulty.clone())
            .unwrap()
            .0;
        faulty.faults.fail_sync.store(true, Ordering::SeqCst);
        let mut queue = IngestQueue::new(log, IngestLimits::default());
        let mut seen = Seen::default();
        queue.push_record(record(0, 10), 0, Some("a"));
        settle(&mut queue, &mut seen).await;
        assert_eq!(seen.written, [(0, 0)], "written (delivered locally)...");
        assert!(
            matches!(
                seen.answers[..],
                [("a", Outcome::NotDurable(AppendError::Storage { .. }))]
            ),
            "...but never acknowledged: {seen:?}"
        );
    }

    #[tokio::test]
    async fn a_full_blocking_log_holds_input_and_answers_until_there_is_room() {
        let log = mem_log(WhenFull::Block);
        // A reader that has not caught up keeps every segment: the budget fills up.
        let mut reader = log.cursor("uplink").unwrap();
        let mut queue = IngestQueue::new(log.clone(), IngestLimits::default());
        let mut seen = Seen::default();
        let mut pushed = 0u32;
        // Until input is held because the log is full: input is also held while the writer's
        // queue has no room (a writer thread starved on a loaded machine), with the budget not
        // used up; then every record goes through and the check below fails. That is the likely
        // cause of one failure in a suite run (not reproduced on demand, 0 of 25 under load).
        while !queue.holds_input() || log.has_room(record(0, 200).encoded_len() as u64) {
            assert!(
                pushed < 100,
                "a 4 KiB log never held back 100 records of 200 B"
            );
            queue.push_record(record(u64::from(pushed), 200), pushed, Some("ack"));
            queue.submit();
            // Let the log take what fits (and the queue notice the rest waits).
            let _ = tokio::time::timeout(Duration::from_millis(50), queue.progress()).await;
            take(&mut queue, &mut seen);
            pushed += 1;
        }
        // What fitted is written and answered, however slow the machine (each wait above was
        // short); then nothing moves while the reader does not move.
        let mut quiet = false;
        for _ in 0..100 {
            if tokio::time::timeout(Duration::from_millis(200), queue.progress())
                .await
                .is_err()
            {
                quiet = true;
                break;
            }
            take(&mut queue, &mut seen);
        }
        assert!(quiet, "the queue kept making progress with the log full");
        let answered = seen.answers.len();
        assert!(answered > 0, "records that fitted were answered");
        assert!(
            answered < pushed as usize,
            "the record waiting for room is not answered"
        );
        assert!(queue.holds_input());
        // The reader catches up: retention frees segments, the submission goes through.
        let end = log.durable_end();
        reader.commit(end).await.unwrap();
        settle(&mut queue, &mut seen).await;
        assert!(!queue.holds_input());
        assert_eq!(seen.answers.len(), pushed as usize);
        assert!(
            seen.answers
                .iter()
                .all(|(_, o)| matches!(o, Outcome::Durable(_)))
        );
        let offsets: Vec<u64> = seen.written.iter().map(|(_, o)| *o).collect();
        assert!(offsets.windows(2).all(|w| w[1] == w[0] + 1), "{offsets:?}");
    }

    /// A large packet's lease, kept by its record, is held while the log holds the record
    /// back (full, `when_full = "block"`) and given back once the record is written: a full
    /// log cannot make connections hold more large packets than the pool.
    #[tokio::test]
    async fn a_record_keeps_its_packets_lease_until_written() {
        use crate::config::ByteSize;
        use crate::input_pool::{InputLease, InputPool};
        let log = mem_log(WhenFull::Block);
        let mut reader = log.cursor("uplink").unwrap();
        let pool = InputPool::new(
            "t.pool",
            ByteSize(1 << 20),
            Arc::new(std::sync::atomic::AtomicU64::new(0)),
        );
        let mut queue: IngestQueue<u32, &str> =
            IngestQueue::new(log.clone(), IngestLimits::default());
        let mut seen = Seen::default();
        // Fill the log until a submission waits for room.
        let mut i = 0u64;
        while !queue.holds_input() || log.has_room(record(0, 200).encoded_len() as u64) {
            assert!(i < 100, "a 4 KiB log never held back 100 records");
            queue.push_record(record(i, 200), i as u32, Some("ack"));
            queue.submit();
            let _ = tokio::time::timeout(Duration::from_millis(50), queue.progress()).await;
            take(&mut queue, &mut seen);
            i += 1;
        }
        // The record of a large packet comes now: it waits behind the held submission.
        let mut lease = InputLease::default();
        let mut buf = bytes::BytesMut::new();
        lease.cover(&pool, &mut buf, Some(100 << 10), 8192).unwrap();
        let before = queue.pushed();
        // A packet that became no record: its lease is given back at once.
        let mut other = InputLease::default();
        other.cover(&pool, &mut buf, Some(50 << 10), 8192).unwrap();
        queue.keep_until_written(other.take_whole(usize::MAX), before);
        assert_eq!(pool.leased(), 100 << 10, "no record, no lease kept");
        queue.push_record(record(i, 200), i as u32, Some("ack"));
        queue.keep_until_written(lease.take_whole(usize::MAX), before);
        queue.submit();
        let _ = tokio::time::timeout(Duration::from_millis(100), queue.progress()).await;
        take(&mut queue, &mut seen);
        assert_eq!(
            pool.leased(),
            100 << 10,
            "held while the log holds the record"
        );
        reader.commit(log.durable_end()).await.unwrap();
        settle(&mut queue, &mut seen).await;
        assert_eq!(seen.answers.len() as u64, i + 1);
        assert_eq!(pool.leased(), 0, "given back once written");
    }

    #[tokio::test]
    async fn bounds_hold_input_until_answers_leave() {
        let log = mem_log(WhenFull::Block);
        let limits = IngestLimits {
            max_answers: 2,
            max_records: 3,
            ..IngestLimits::default()
        };
        let mut queue = IngestQueue::new(log, limits);
        let mut seen = Seen::default();
        queue.push_record(record(0, 10), 0, Some("a"));
        assert!(!queue.holds_input());
        queue.push_record(record(1, 10), 1, Some("b"));
        assert!(queue.holds_input(), "two answers owed");
        settle(&mut queue, &mut seen).await;
        assert!(!queue.holds_input());
        for i in 2..5 {
            queue.push_record(record(i, 10), i as u32, None);
        }
        assert!(queue.holds_input(), "three records not yet written");
        settle(&mut queue, &mut seen).await;
        assert!(!queue.holds_input());
    }

    #[tokio::test]
    async fn one_record_through_its_own_queue() {
        let log = mem_log(WhenFull::Block);
        assert_eq!(ingest_one(&log, &record(0, 10)).await, Ok(0));
        assert_eq!(ingest_one(&log, &record(1, 10)).await, Ok(1));
        assert!(matches!(
            ingest_one(&log, &record(2, 1000)).await,
            Err(AppendError::TooLarge { .. })
        ));
    }
}
