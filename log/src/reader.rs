//! A cursor's sequential frame reader over one segment at a time: read-ahead buffer, seek via
//! recent positions and the segment's sparse index, and the skip rules for damage. It sees a
//! segment and the limits the cursor gives it (durable end, next segment's base), nothing else.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;

use crate::error::ReadError;
use crate::format::{self, FRAME_HEADER_LEN, FrameError, HeaderCheck, SEGMENT_HEADER_LEN};
use crate::record::Record;
use crate::scan::{self, Damage, Past, READ_CHUNK};
use crate::segment::Segment;
use crate::storage::read_full_at;

/// Recent positions kept for cheap seeks back.
const HINTS: usize = 32;

/// What [`Reader::step`] found.
pub(crate) enum Step {
    /// A record and its frame length.
    Frame(Record, usize),
    /// Records in `[at, to)` cannot be read; the reader moved past them.
    Skip { to: u64, reason: String },
}

/// Sequential frame reader over one segment with a read-ahead buffer.
#[derive(Debug, Default)]
pub(crate) struct Reader {
    seg: Option<Arc<Segment>>,
    /// Offset of the frame at `pos`.
    pub at: u64,
    /// File position of the next frame.
    pub pos: u64,
    buf: Bytes,
    buf_start: u64,
    /// Frames with offsets below this were durable when `buf` was read, so `buf` holds them whole.
    buf_limit: u64,
    /// Recently seen (offset, segment base, file position) triples: cheap seeks back to them.
    hints: VecDeque<(u64, u64, u64)>,
    /// The last Kafka topic decoded, shared by the records after it.
    topics: format::TopicCache,
}

fn io(seg: &Segment) -> impl FnOnce(std::io::Error) -> ReadError + '_ {
    move |source| ReadError::Io {
        path: seg.path.clone(),
        source,
    }
}

impl Reader {
    /// Forgets the current segment (the next read places the reader again).
    pub fn reset(&mut self) {
        self.seg = None;
        self.buf = Bytes::new();
    }

    /// Whether the reader is on `seg` at or before `offset`.
    pub fn is_on(&self, seg: &Arc<Segment>, offset: u64) -> bool {
        self.seg.as_ref().is_some_and(|s| Arc::ptr_eq(s, seg)) && self.at <= offset
    }

    /// Places the reader on `seg` at the closest known frame at or before `target`.
    pub fn place(&mut self, seg: Arc<Segment>, target: u64) {
        let hint = self
            .hints
            .iter()
            .filter(|&&(o, b, _)| b == seg.base && o <= target)
            .max_by_key(|&&(o, _, _)| o)
            .map(|&(o, _, p)| (o, p));
        let indexed = seg.lookup(target);
        let best = match (hint, indexed) {
            (Some(h), Some(i)) => Some(if h.0 >= i.0 { h } else { i }),
            (h, i) => h.or(i),
        };
        (self.at, self.pos) = best.unwrap_or((seg.base, SEGMENT_HEADER_LEN as u64));
        self.seg = Some(seg);
        self.buf = Bytes::new();
    }

    /// Remembers the current position for a later seek back.
    pub fn remember(&mut self) {
        if let Some(seg) = &self.seg {
            if self.hints.len() == HINTS {
                self.hints.pop_front();
            }
            self.hints.push_back((self.at, seg.base, self.pos));
        }
    }

    /// Moves past the frame just returned by [`Reader::step`].
    pub fn advance(&mut self, n: usize) {
        self.at += 1;
        self.pos += n as u64;
    }

    fn fill(&mut self, seg: &Segment, want: usize, durable: u64) -> Result<(), ReadError> {
        // Read ahead up to READ_CHUNK, but not far past what is written (live tailing reads
        // small amounts often).
        let avail = seg.len().saturating_sub(self.pos) as usize;
        let size = want.max(READ_CHUNK.min(avail)).max(FRAME_HEADER_LEN);
        let mut v = vec![0u8; size];
        let n = read_full_at(seg.file.as_ref(), &mut v, self.pos).map_err(io(seg))?;
        v.truncate(n);
        self.buf = Bytes::from(v);
        self.buf_start = self.pos;
        self.buf_limit = durable;
        Ok(())
    }

    fn view(&self) -> Bytes {
        let in_buf = self.pos >= self.buf_start
            && self.pos - self.buf_start <= self.buf.len() as u64
            && self.at < self.buf_limit;
        if in_buf {
            self.buf.slice((self.pos - self.buf_start) as usize..)
        } else {
            Bytes::new()
        }
    }

    /// Reads the frame at `pos` without advancing. `next_base` is the base of the following
    /// segment (None for the active one), `durable` the durable end. A frame is only taken for
    /// damage once the read-ahead holds as many bytes as its length field claims (or the file
    /// ends first): a frame longer than [`READ_CHUNK`] is never mistaken for a damaged one.
    pub fn step(
        &mut self,
        seg: &Arc<Segment>,
        next_base: Option<u64>,
        durable: u64,
        max: u32,
    ) -> Result<Step, ReadError> {
        if self.pos == 0 || (self.pos == SEGMENT_HEADER_LEN as u64 && self.at == seg.base) {
            let mut head = [0u8; SEGMENT_HEADER_LEN];
            let n = read_full_at(seg.file.as_ref(), &mut head, 0).map_err(io(seg))?;
            match format::check_segment_header(&head[..n]) {
                HeaderCheck::Ok { base, .. } if base == seg.base => {}
                HeaderCheck::Version(found) => {
                    return self.give_up(
                        seg,
                        next_base,
                        format!("segment format version {found} is newer than this build"),
                    );
                }
                // The frames carry their offsets: read them, the name gives the base.
                other => {
                    tracing::warn!(segment = %seg.path.display(), header = ?other, "edge-log reading a segment whose header is damaged");
                }
            }
        }
        // The `want` of the fill made for this frame, if any: 0 when it was made before the
        // frame's header was in view (its length unknown, so it read only the read-ahead).
        let mut filled = None;
        loop {
            let view = self.view();
            let error = match format::decode_frame_with(&view, max, &mut self.topics) {
                Ok((rec, n)) if rec.offset == self.at => return Ok(Step::Frame(rec, n)),
                Ok((rec, n)) => {
                    let reason = format!(
                        "offset discontinuity: expected {}, found {}",
                        self.at, rec.offset
                    );
                    let from = self.pos + n as u64;
                    return self.resync(seg, next_base, durable, max, from, reason);
                }
                Err(FrameError::Incomplete) => {
                    let want =
                        format::frame_header(&view, max).map_or(0, |(l, _)| FRAME_HEADER_LEN + l);
                    // A first fill; a second only when the first did not know the length and
                    // the header is now readable. At most two: a frame still incomplete after
                    // them runs past the end of the file (the damage path below).
                    if filled.is_none_or(|first| first == 0 && want > 0) {
                        self.fill(seg, want, durable)?;
                        filled = Some(want);
                        continue;
                    }
                    FrameError::Incomplete
                }
                Err(e) => e,
            };
            let file_len = seg.file.size().map_err(io(seg))?;
            let past = scan::past_bad_frame(seg.file.as_ref(), self.pos, file_len, &error, max)
                .map_err(io(seg))?;
            return match past {
                Past::Repaired(rec, n) if rec.offset == self.at => {
                    tracing::warn!(segment = %seg.path.display(), offset = rec.offset, "edge-log read a record whose length field is damaged (its checksum matches)");
                    Ok(Step::Frame(rec, n))
                }
                // A frame running past the end of the file: torn or missing data. Its own
                // bytes are not searched (they would be its body).
                _ if error == FrameError::Incomplete => match next_base {
                    Some(_) => self.give_up(
                        seg,
                        next_base,
                        "segment ends early (missing or truncated data)".into(),
                    ),
                    None => Err(ReadError::Corrupt {
                        path: seg.path.clone(),
                        offset: self.at,
                        reason: "durable record missing from the active segment".into(),
                    }),
                },
                Past::Repaired(rec, n) => {
                    let reason = format!(
                        "offset discontinuity: expected {}, found {}",
                        self.at, rec.offset
                    );
                    let from = self.pos + n as u64;
                    self.resync(seg, next_base, durable, max, from, reason)
                }
                Past::SearchFrom(from) => {
                    self.resync(seg, next_base, durable, max, from, error.to_string())
                }
                Past::Torn => {
                    let from = self.pos + 1;
                    self.resync(seg, next_base, durable, max, from, error.to_string())
                }
            };
        }
    }

    fn give_up(
        &mut self,
        seg: &Segment,
        next_base: Option<u64>,
        reason: String,
    ) -> Result<Step, ReadError> {
        match next_base {
            Some(to) => {
                self.reset();
                Ok(Step::Skip { to, reason })
            }
            None => Err(ReadError::Corrupt {
                path: seg.path.clone(),
                offset: self.at,
                reason,
            }),
        }
    }

    /// After a bad frame, continues at the next frame of this segment (searching from `from`)
    /// that [`scan::resync`] accepts; falls back to the next segment.
    fn resync(
        &mut self,
        seg: &Arc<Segment>,
        next_base: Option<u64>,
        durable: u64,
        max: u32,
        from: u64,
        reason: String,
    ) -> Result<Step, ReadError> {
        // Sealed: offsets below the next segment's base; active: durable ones only.
        let limit = next_base.unwrap_or(durable);
        let file_len = seg.file.size().map_err(io(seg))?;
        let damage = Damage {
            pos: self.pos,
            at: self.at,
            limit,
        };
        if let Some(found) =
            scan::resync(seg.file.as_ref(), file_len, damage, from, max).map_err(io(seg))?
        {
            let to = found.record.offset;
            tracing::warn!(segment = %seg.path.display(), from = self.at, to, %reason, "edge-log skipped corrupt records (resynchronised)");
            self.at = to;
            self.pos = found.pos;
            self.buf = Bytes::new();
            return Ok(Step::Skip { to, reason });
        }
        tracing::warn!(segment = %seg.path.display(), from = self.at, %reason, "edge-log skipping rest of corrupt segment");
        self.give_up(seg, next_base, reason)
    }
}
