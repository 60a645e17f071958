//! What appends hand back: [`Appended`] (one record), [`SubmittedBatch`] → [`AppendedBatch`]
//! (ordered batches), each waiting for durability through the ledger's one `wait_durable`.

use tokio::sync::{oneshot, watch};

use crate::error::AppendError;
use crate::ledger::{DurableState, wait_durable};
use crate::writer::ChunkAnswer;

/// An appended record: it has an offset and is written; `durable()` waits for the sync.
#[derive(Debug)]
pub struct Appended {
    /// The offset the log assigned.
    pub offset: u64,
    pub(crate) rx: watch::Receiver<DurableState>,
}

impl Appended {
    /// Resolves when the record is durable under the fsync policy (Always: after the
    /// fdatasync covering it; Interval: after the interval's sync; Never: once written).
    pub async fn durable(mut self) -> Result<u64, AppendError> {
        wait_durable(&mut self.rx, self.offset + 1).await?;
        Ok(self.offset)
    }
}

/// One queued chunk of a [`SubmittedBatch`].
#[derive(Debug)]
pub(crate) struct Chunk {
    /// Records in the chunk.
    pub count: usize,
    /// The writer's answer to come, or why the chunk was never queued.
    pub state: ChunkState,
}

#[derive(Debug)]
pub(crate) enum ChunkState {
    /// Queued: the writer answers.
    Queued(oneshot::Receiver<ChunkAnswer>),
    /// Refused before it was queued.
    Refused(AppendError),
}

/// A batch handed to the writer in order ([`crate::Log::submit_many`]);
/// [`SubmittedBatch::written`] waits for its offsets.
#[derive(Debug)]
pub struct SubmittedBatch {
    pub(crate) len: usize,
    /// Records refused before queueing (too large), by ascending index.
    pub(crate) refused: Vec<(usize, AppendError)>,
    /// The accepted records, in order, as queued chunks.
    pub(crate) chunks: Vec<Chunk>,
    pub(crate) rx: watch::Receiver<DurableState>,
}

impl SubmittedBatch {
    /// Number of records submitted (accepted and refused).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the batch had no records.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Resolves once the writer has written (or refused) every chunk: one outcome per record.
    pub async fn written(self) -> AppendedBatch {
        let mut answers = Vec::with_capacity(self.chunks.len());
        for chunk in self.chunks {
            let answer = match chunk.state {
                ChunkState::Queued(rx) => rx.await.unwrap_or(ChunkAnswer {
                    first: 0,
                    written: 0,
                    error: Some(AppendError::Closed),
                }),
                ChunkState::Refused(e) => ChunkAnswer {
                    first: 0,
                    written: 0,
                    error: Some(e),
                },
            };
            answers.push((chunk.count, answer));
        }
        let mut outcomes = Vec::with_capacity(self.len);
        let mut refused = self.refused.into_iter().peekable();
        let mut answers = answers.into_iter();
        // The chunk being expanded, and how many of its records were handed out.
        let mut current: Option<(usize, ChunkAnswer)> = None;
        let mut taken = 0usize;
        let mut end = None;
        for i in 0..self.len {
            if refused.peek().is_some_and(|(at, _)| *at == i) {
                if let Some((_, e)) = refused.next() {
                    outcomes.push(Err(e));
                }
                continue;
            }
            if current.as_ref().is_none_or(|(count, _)| taken == *count) {
                current = answers.next();
                taken = 0;
            }
            let Some((_, answer)) = &current else {
                outcomes.push(Err(AppendError::Closed));
                continue;
            };
            if taken < answer.written {
                let offset = answer.first + taken as u64;
                outcomes.push(Ok(offset));
                end = Some(offset + 1);
            } else {
                outcomes.push(Err(answer.error.clone().unwrap_or(AppendError::Closed)));
            }
            taken += 1;
        }
        AppendedBatch {
            outcomes,
            end,
            rx: self.rx,
        }
    }
}

/// A written batch: one outcome per submitted record (its offset, or why it was refused);
/// [`AppendedBatch::durable`] waits for the sync covering all of them.
#[derive(Debug)]
pub struct AppendedBatch {
    outcomes: Vec<Result<u64, AppendError>>,
    /// One past the highest offset of the batch.
    end: Option<u64>,
    rx: watch::Receiver<DurableState>,
}

impl AppendedBatch {
    /// The outcome of every record, in submission order.
    pub fn outcomes(&self) -> &[Result<u64, AppendError>] {
        &self.outcomes
    }

    /// Takes the outcomes.
    pub fn into_outcomes(self) -> Vec<Result<u64, AppendError>> {
        self.outcomes
    }

    /// Records that got an offset.
    pub fn accepted(&self) -> usize {
        self.outcomes.iter().filter(|o| o.is_ok()).count()
    }

    /// Resolves when every accepted record is durable under the fsync policy (see
    /// [`Appended::durable`]); `Ok` at once if none was accepted. On `Err` none of them may be
    /// acknowledged as durable.
    pub async fn durable(&mut self) -> Result<(), AppendError> {
        match self.end {
            Some(end) => wait_durable(&mut self.rx, end).await,
            None => Ok(()),
        }
    }
}
