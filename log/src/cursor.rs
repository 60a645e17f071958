//! Named, persisted read positions. A cursor reads only durable records, skips (and counts)
//! records that retention dropped or that are corrupt, and commits crash-safely. It works
//! through the ledger (positions, durability, segment lookup) and a segment reader.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::watch;

use crate::cursor_store::{CursorFiles, valid_name};
use crate::error::{LogError, ReadError};
use crate::ledger::{DurableState, Ledger, Located};
use crate::reader::{Reader, Step};
use crate::record::Record;

/// A named, persisted read position over the durable part of the log.
#[derive(Debug)]
pub struct Cursor {
    ledger: Arc<Ledger>,
    files: Arc<CursorFiles>,
    name: String,
    position: u64,
    committed: u64,
    skipped: u64,
    rx: watch::Receiver<DurableState>,
    rd: Reader,
}

impl Drop for Cursor {
    fn drop(&mut self) {
        self.ledger.close_cursor(&self.name);
    }
}

impl Cursor {
    pub(crate) fn open(
        ledger: Arc<Ledger>,
        files: Arc<CursorFiles>,
        name: &str,
    ) -> Result<Cursor, LogError> {
        if !valid_name(name) {
            return Err(LogError::InvalidCursorName { name: name.into() });
        }
        let (committed, created) = ledger.open_cursor(name)?;
        let rx = ledger.subscribe();
        let cursor = Cursor {
            ledger,
            files,
            name: name.to_owned(),
            position: committed,
            committed,
            skipped: 0,
            rx,
            rd: Reader::default(),
        };
        if created {
            cursor.files.commit(name, committed)?;
        }
        Ok(cursor)
    }

    /// The cursor's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Next offset this cursor will read.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Last committed position (records below it are consumed), persisted.
    pub fn committed(&self) -> u64 {
        self.committed
    }

    /// Records this handle jumped over: dropped by `drop_oldest`, corrupt, or in missing segments.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Moves the read position (e.g. back to `committed()` after a failed upstream send).
    pub fn seek(&mut self, offset: u64) {
        self.position = offset;
    }

    /// Reads up to `max_records` / `max_bytes` durable records from the position, waiting
    /// (cancel-safe) until at least one is available. At least one record is returned even if
    /// it alone exceeds `max_bytes`.
    pub async fn read(
        &mut self,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<Record>, ReadError> {
        loop {
            let recs = self.try_read(max_records, max_bytes)?;
            if !recs.is_empty() || max_records == 0 {
                return Ok(recs);
            }
            let pos = self.position;
            let state = match self.rx.wait_for(|d| d.end > pos || d.closed).await {
                Ok(d) => d.clone(),
                Err(_) => return Err(ReadError::Closed),
            };
            if state.end <= pos {
                return Err(ReadError::Closed);
            }
        }
    }

    /// Like `read`, without waiting (may return empty).
    pub fn try_read(
        &mut self,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<Record>, ReadError> {
        let durable = self.ledger.durable_end();
        let max = self.ledger.cfg().max_record_bytes;
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let mut first = true;
        while out.len() < max_records && self.position < durable {
            let (seg, next_base) = match self.ledger.locate(self.position) {
                Located::Before { oldest } => {
                    self.skip_to(
                        oldest.min(durable),
                        "deleted by retention (drop_oldest)",
                        false,
                    );
                    self.rd.reset();
                    continue;
                }
                Located::In { seg, next_base } => (seg, next_base),
            };
            if !self.rd.is_on(&seg, self.position) {
                self.rd.place(seg.clone(), self.position);
            }
            if first && self.rd.at == self.position {
                self.rd.remember();
                first = false;
            }
            match self.rd.step(&seg, next_base, durable, max)? {
                Step::Frame(rec, n) => {
                    seg.note(rec.offset, self.rd.pos);
                    if rec.offset < self.position {
                        self.rd.advance(n);
                        continue;
                    }
                    if !out.is_empty() && bytes + n > max_bytes {
                        break;
                    }
                    self.rd.advance(n);
                    self.position += 1;
                    bytes += n;
                    if out.is_empty() {
                        out.reserve_exact(chunk_estimate(
                            max_records,
                            max_bytes,
                            n,
                            durable - self.position + 1,
                        ));
                    }
                    out.push(rec);
                }
                Step::Skip { to, reason } => {
                    self.skip_to(to, &reason, true);
                }
            }
        }
        Ok(out)
    }

    fn skip_to(&mut self, to: u64, reason: &str, corrupt: bool) {
        if to > self.position {
            let n = to - self.position;
            self.skipped += n;
            if corrupt {
                self.ledger
                    .counters
                    .corrupt_skipped
                    .fetch_add(n, Ordering::Relaxed);
            }
            tracing::warn!(cursor = %self.name, from = self.position, to, records = n, reason, "edge-log cursor skipped records");
            self.position = to;
        }
    }

    /// Persists "everything below `next_offset` is consumed" crash-safely (overwrites the older
    /// of the file's two copies and syncs it) and lets retention delete whole segments below
    /// every cursor.
    /// Commits are monotonic: a lower offset than `committed()` is a no-op.
    pub async fn commit(&mut self, next_offset: u64) -> Result<(), LogError> {
        if next_offset <= self.committed {
            return Ok(());
        }
        let durable_end = self.ledger.durable_end();
        if next_offset > durable_end {
            return Err(LogError::CommitBeyondDurable {
                name: self.name.clone(),
                requested: next_offset,
                durable_end,
            });
        }
        let ledger = self.ledger.clone();
        let files = self.files.clone();
        let name = self.name.clone();
        tokio::task::spawn_blocking(move || {
            files.commit(&name, next_offset)?;
            ledger.committed(&name, next_offset);
            Ok::<_, LogError>(())
        })
        .await
        .map_err(|e| LogError::Writer {
            reason: format!("commit task failed: {e}"),
        })??;
        self.committed = next_offset;
        Ok(())
    }
}

/// Records a read is likely to return, judged by its first frame (`first_len` bytes) and
/// the durable records left (`left`, that one included): room for them is made once, instead
/// of the `Vec` doubling (and copying every record read so far) a dozen times per chunk.
/// Frames of one log are mostly alike, so `max_bytes` holds about as many more as it holds of
/// the first (a sixteenth more for frames a little shorter than it); when they are not, a
/// guess too small doubles once and a guess too large is at most `max_records`.
fn chunk_estimate(max_records: usize, max_bytes: usize, first_len: usize, left: u64) -> usize {
    let by_bytes = max_bytes / first_len.max(1);
    let by_bytes = by_bytes.saturating_add(by_bytes / 16).saturating_add(1);
    let left = usize::try_from(left).unwrap_or(usize::MAX);
    max_records.min(by_bytes).min(left)
}

#[cfg(test)]
mod tests {
    use super::chunk_estimate;

    /// The room made for a read: what `max_bytes` holds of frames like the first one, never
    /// more than `max_records` or the records left.
    #[test]
    fn a_read_makes_room_for_what_its_limits_allow() {
        assert_eq!(chunk_estimate(10_000, 1 << 20, 300, 1_000_000), 3_714);
        assert_eq!(chunk_estimate(10_000, 1 << 20, 30, 1_000_000), 10_000);
        assert_eq!(chunk_estimate(10_000, 1 << 20, 300, 17), 17);
        assert_eq!(chunk_estimate(10_000, 1 << 20, 0, 5), 5);
        assert_eq!(chunk_estimate(10, 100, 1 << 20, 50), 1);
    }
}
