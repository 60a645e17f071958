//! Named, persisted read positions. A cursor reads only durable records, skips (and counts)
//! records that retention dropped or that are corrupt, and commits crash-safely.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use tokio::sync::watch;

use crate::error::{LogError, ReadError};
use crate::format::{self, FRAME_HEADER_LEN, FrameError, HeaderCheck, SEGMENT_HEADER_LEN};
use crate::log::{DurableState, Located, READ_CHUNK, Segment, Shared, lock};
use crate::record::Record;
use crate::storage::{Storage, read_full_at, write_all_at};

const HINTS: usize = 32;

/// Loads every persisted cursor (`<name>.cur`), deleting leftover temp files.
pub(crate) fn load_all(
    storage: &dyn Storage,
    dir: &Path,
) -> Result<BTreeMap<String, u64>, LogError> {
    let mut out = BTreeMap::new();
    let names = storage.list(dir).map_err(|source| LogError::Io {
        op: "list directory",
        path: dir.to_path_buf(),
        source,
    })?;
    for name in names {
        let path = dir.join(&name);
        if name.ends_with(".cur.tmp") {
            let _ = storage.remove(&path);
            continue;
        }
        let Some(cursor) = name.strip_suffix(".cur") else {
            continue;
        };
        let io = |op: &'static str| {
            let path = path.clone();
            move |source| LogError::Io { op, path, source }
        };
        let file = storage.open(&path).map_err(io("open cursor"))?;
        let mut buf = [0u8; format::CURSOR_FILE_LEN + 1];
        let n = read_full_at(file.as_ref(), &mut buf, 0).map_err(io("read cursor"))?;
        let committed =
            format::parse_cursor_file(&buf[..n]).map_err(|reason| LogError::Corrupt {
                what: "cursor file",
                path: path.clone(),
                reason,
            })?;
        out.insert(cursor.to_owned(), committed);
    }
    Ok(out)
}

/// Writes a cursor file crash-safely: temp file, fdatasync, rename, fsync directory.
fn persist(shared: &Shared, name: &str, committed: u64) -> Result<(), LogError> {
    let dir = &shared.cursor_dir;
    let tmp = dir.join(format!("{name}.cur.tmp"));
    let dst = dir.join(format!("{name}.cur"));
    let io = |op: &'static str, p: &Path| {
        let path = p.to_path_buf();
        move |source| LogError::Io { op, path, source }
    };
    let file = shared
        .storage
        .create(&tmp)
        .map_err(io("create cursor temp", &tmp))?;
    write_all_at(file.as_ref(), &format::cursor_file(committed), 0)
        .map_err(io("write cursor temp", &tmp))?;
    file.sync_data()
        .map_err(io("fdatasync cursor temp", &tmp))?;
    drop(file);
    shared
        .storage
        .rename(&tmp, &dst)
        .map_err(io("rename cursor", &dst))?;
    shared
        .storage
        .sync_dir(dir)
        .map_err(io("sync cursor directory", dir))?;
    Ok(())
}

/// Deletes a cursor's file and forgets its position.
pub(crate) fn remove(shared: &Shared, name: &str) -> Result<(), LogError> {
    if !valid_name(name) {
        return Err(LogError::InvalidCursorName { name: name.into() });
    }
    {
        let mut st = lock(&shared.state);
        if st.open_cursors.contains(name) {
            return Err(LogError::CursorInUse { name: name.into() });
        }
        if st.cursors.remove(name).is_none() {
            return Ok(());
        }
    }
    let path = shared.cursor_dir.join(format!("{name}.cur"));
    shared
        .storage
        .remove(&path)
        .map_err(|source| LogError::Io {
            op: "remove cursor",
            path,
            source,
        })?;
    shared
        .storage
        .sync_dir(&shared.cursor_dir)
        .map_err(|source| LogError::Io {
            op: "sync cursor directory",
            path: shared.cursor_dir.clone(),
            source,
        })?;
    shared.retain();
    Ok(())
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

/// Sequential frame reader over one segment with a read-ahead buffer.
#[derive(Debug, Default)]
struct Reader {
    seg: Option<Arc<Segment>>,
    /// Offset of the frame at `pos`.
    at: u64,
    /// File position of the next frame.
    pos: u64,
    buf: Bytes,
    buf_start: u64,
    /// Frames with offsets below this were durable when `buf` was read, so `buf` holds them whole.
    buf_limit: u64,
    /// Recently seen (offset, segment base, file position) pairs: cheap seeks back to them.
    hints: VecDeque<(u64, u64, u64)>,
}

enum Step {
    Frame(Record, usize),
    /// Records in `[at, to)` cannot be read; the reader moved past them.
    Skip {
        to: u64,
        reason: String,
    },
}

impl Reader {
    fn reset(&mut self) {
        self.seg = None;
        self.buf = Bytes::new();
    }

    fn place(&mut self, seg: Arc<Segment>, target: u64) {
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
        match best {
            Some((o, p)) => {
                self.at = o;
                self.pos = p;
            }
            None => {
                self.at = seg.base;
                self.pos = SEGMENT_HEADER_LEN as u64;
            }
        }
        self.seg = Some(seg);
        self.buf = Bytes::new();
    }

    fn remember(&mut self) {
        if let Some(seg) = &self.seg {
            if self.hints.len() == HINTS {
                self.hints.pop_front();
            }
            self.hints.push_back((self.at, seg.base, self.pos));
        }
    }

    fn fill(&mut self, seg: &Segment, want: usize, durable: u64) -> Result<(), ReadError> {
        // Read ahead up to READ_CHUNK, but not far past what is written (live tailing reads
        // small amounts often).
        let avail = seg.len.load(Ordering::SeqCst).saturating_sub(self.pos) as usize;
        let size = want.max(READ_CHUNK.min(avail)).max(FRAME_HEADER_LEN);
        let mut v = vec![0u8; size];
        let n =
            read_full_at(seg.file.as_ref(), &mut v, self.pos).map_err(|source| ReadError::Io {
                path: seg.path.clone(),
                source,
            })?;
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

    /// Reads the frame at `pos` without advancing.
    fn step(
        &mut self,
        seg: &Arc<Segment>,
        next_base: Option<u64>,
        durable: u64,
        max: u32,
    ) -> Result<Step, ReadError> {
        if self.pos == 0 || (self.pos == SEGMENT_HEADER_LEN as u64 && self.at == seg.base) {
            let mut head = [0u8; SEGMENT_HEADER_LEN];
            let n =
                read_full_at(seg.file.as_ref(), &mut head, 0).map_err(|source| ReadError::Io {
                    path: seg.path.clone(),
                    source,
                })?;
            if !matches!(format::check_segment_header(&head[..n]), HeaderCheck::Ok { base, .. } if base == seg.base)
            {
                return self.give_up(seg, next_base, "bad segment header".into());
            }
        }
        let mut fresh = false;
        loop {
            let view = self.view();
            match format::decode_frame(&view, max) {
                Ok((rec, n)) if rec.offset == self.at => return Ok(Step::Frame(rec, n)),
                Ok((rec, _)) => {
                    let reason = format!(
                        "offset discontinuity: expected {}, found {}",
                        self.at, rec.offset
                    );
                    return self.resync(seg, next_base, durable, max, reason);
                }
                Err(FrameError::Incomplete) if !fresh => {
                    let want =
                        format::frame_header(&view, max).map_or(0, |(l, _)| FRAME_HEADER_LEN + l);
                    self.fill(seg, want, durable)?;
                    fresh = true;
                }
                Err(FrameError::Incomplete) => {
                    return match next_base {
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
                    };
                }
                Err(e) => return self.resync(seg, next_base, durable, max, e.to_string()),
            }
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

    /// After a bad frame, looks for the next frame in this segment that has a valid CRC, decodes,
    /// and carries an offset in `(at, limit)`. Falls back to the next segment.
    fn resync(
        &mut self,
        seg: &Arc<Segment>,
        next_base: Option<u64>,
        durable: u64,
        max: u32,
        reason: String,
    ) -> Result<Step, ReadError> {
        // Sealed: offsets below the next segment's base; active: durable ones only.
        let limit = next_base.unwrap_or(durable);
        let file_len = seg.file.size().map_err(|source| ReadError::Io {
            path: seg.path.clone(),
            source,
        })?;
        const PEEK: usize = FRAME_HEADER_LEN + 11;
        let mut window = Bytes::new();
        let mut window_start = 0u64;
        let mut p = self.pos + 1;
        while p + PEEK as u64 <= file_len {
            if p < window_start || p + PEEK as u64 > window_start + window.len() as u64 {
                let mut v = vec![0u8; READ_CHUNK];
                let n =
                    read_full_at(seg.file.as_ref(), &mut v, p).map_err(|source| ReadError::Io {
                        path: seg.path.clone(),
                        source,
                    })?;
                v.truncate(n);
                window = Bytes::from(v);
                window_start = p;
                if window.len() < PEEK {
                    break;
                }
            }
            let w = &window[(p - window_start) as usize..];
            if let Ok((len, _)) = format::frame_header(w, max) {
                let plausible = format::peek_offset(&w[FRAME_HEADER_LEN..PEEK])
                    .is_some_and(|o| o > self.at && o < limit)
                    && p + (FRAME_HEADER_LEN + len) as u64 <= file_len;
                if plausible {
                    let mut v = vec![0u8; FRAME_HEADER_LEN + len];
                    let n = read_full_at(seg.file.as_ref(), &mut v, p).map_err(|source| {
                        ReadError::Io {
                            path: seg.path.clone(),
                            source,
                        }
                    })?;
                    v.truncate(n);
                    if let Ok((rec, _)) = format::decode_frame(&Bytes::from(v), max) {
                        tracing::warn!(segment = %seg.path.display(), from = self.at, to = rec.offset, %reason, "edge-log skipped corrupt records (resynchronised)");
                        let to = rec.offset;
                        self.at = to;
                        self.pos = p;
                        self.buf = Bytes::new();
                        return Ok(Step::Skip { to, reason });
                    }
                }
            }
            p += 1;
        }
        tracing::warn!(segment = %seg.path.display(), from = self.at, %reason, "edge-log skipping rest of corrupt segment");
        self.give_up(seg, next_base, reason)
    }
}

/// A named, persisted read position over the durable part of the log.
#[derive(Debug)]
pub struct Cursor {
    shared: Arc<Shared>,
    name: String,
    position: u64,
    committed: u64,
    skipped: u64,
    rx: watch::Receiver<DurableState>,
    rd: Reader,
}

impl Drop for Cursor {
    fn drop(&mut self) {
        lock(&self.shared.state).open_cursors.remove(&self.name);
    }
}

impl Cursor {
    pub(crate) fn open(shared: Arc<Shared>, name: &str) -> Result<Cursor, LogError> {
        if !valid_name(name) {
            return Err(LogError::InvalidCursorName { name: name.into() });
        }
        let (committed, created) = {
            let mut st = lock(&shared.state);
            if !st.open_cursors.insert(name.to_owned()) {
                return Err(LogError::CursorInUse { name: name.into() });
            }
            let oldest = st.segments.first().map_or(0, |s| s.base);
            match st.cursors.get(name) {
                Some(&c) => (c, false),
                None => {
                    st.cursors.insert(name.to_owned(), oldest);
                    (oldest, true)
                }
            }
        };
        let rx = shared.durable.subscribe();
        let cursor = Cursor {
            shared,
            name: name.to_owned(),
            position: committed,
            committed,
            skipped: 0,
            rx,
            rd: Reader::default(),
        };
        if created {
            persist(&cursor.shared, name, committed)?;
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
        let durable = self.shared.durable_end();
        let max = self.shared.cfg.max_record_bytes;
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let mut first = true;
        while out.len() < max_records && self.position < durable {
            let (seg, next_base) = match self.shared.locate(self.position) {
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
            let same = self.rd.seg.as_ref().is_some_and(|s| Arc::ptr_eq(s, &seg));
            if !same || self.rd.at > self.position {
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
                        self.rd.at += 1;
                        self.rd.pos += n as u64;
                        continue;
                    }
                    if !out.is_empty() && bytes + n > max_bytes {
                        break;
                    }
                    self.rd.at += 1;
                    self.rd.pos += n as u64;
                    self.position += 1;
                    bytes += n;
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
                self.shared.corrupt_skipped.fetch_add(n, Ordering::SeqCst);
            }
            tracing::warn!(cursor = %self.name, from = self.position, to, records = n, reason, "edge-log cursor skipped records");
            self.position = to;
        }
    }

    /// Persists "everything below `next_offset` is consumed" crash-safely (temp, fdatasync,
    /// rename, fsync dir) and lets retention delete whole segments below every cursor.
    /// Commits are monotonic: a lower offset than `committed()` is a no-op.
    pub async fn commit(&mut self, next_offset: u64) -> Result<(), LogError> {
        if next_offset <= self.committed {
            return Ok(());
        }
        let durable_end = self.shared.durable_end();
        if next_offset > durable_end {
            return Err(LogError::CommitBeyondDurable {
                name: self.name.clone(),
                requested: next_offset,
                durable_end,
            });
        }
        let shared = self.shared.clone();
        let name = self.name.clone();
        tokio::task::spawn_blocking(move || {
            persist(&shared, &name, next_offset)?;
            lock(&shared.state).cursors.insert(name, next_offset);
            shared.retain();
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

#[cfg(test)]
mod tests {
    use super::valid_name;

    #[test]
    fn cursor_names_map_safely_to_files() {
        assert!(valid_name("kafka-bridge.v1_a"));
        for bad in ["", ".hidden", "a/b", "..", "a b", &"x".repeat(65)] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }
}
