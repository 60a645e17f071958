//! The log handle: open + recovery, append with group commit on a writer thread, retention,
//! disk budget, stats.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, oneshot, watch};

use crate::config::{FsyncPolicy, LogConfig, WhenFull};
use crate::cursor::{self, Cursor};
use crate::error::{AppendError, LogError};
use crate::format::{self, FRAME_HEADER_LEN, FrameError, HeaderCheck, SEGMENT_HEADER_LEN};
use crate::record::NewRecord;
use crate::storage::{StdStorage, Storage, StorageFile, read_full_at, write_all_at};

/// Queue slots between appenders and the writer thread.
const QUEUE_SLOTS: usize = 1024;
/// Queued bytes between appenders and the writer thread (raised to fit one max record).
const QUEUE_BYTES: u64 = 16 << 20;
/// The writer stops draining the queue into one write once this many bytes are staged.
const MAX_BATCH_BYTES: usize = 4 << 20;
/// Read size used by recovery and cursors.
pub(crate) const READ_CHUNK: usize = 256 << 10;

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One segment file.
#[derive(Debug)]
pub(crate) struct Segment {
    pub base: u64,
    pub path: PathBuf,
    pub file: Arc<dyn StorageFile>,
    pub len: AtomicU64,
    /// Sparse in-memory index: (offset, file position) of every INDEX_EVERY-th record seen by
    /// the writer or a reader. Makes `seek` cost at most INDEX_EVERY frame decodes.
    pub index: Mutex<Vec<(u64, u64)>>,
}

/// Spacing of the sparse segment index, in records.
pub(crate) const INDEX_EVERY: u64 = 1024;

impl Segment {
    fn new(base: u64, path: PathBuf, file: Arc<dyn StorageFile>, len: u64) -> Self {
        Self {
            base,
            path,
            file,
            len: AtomicU64::new(len),
            index: Mutex::new(Vec::new()),
        }
    }

    /// Records where the frame of `offset` starts (only every INDEX_EVERY-th offset is kept).
    pub fn note(&self, offset: u64, pos: u64) {
        if !offset.is_multiple_of(INDEX_EVERY) || offset == self.base {
            return;
        }
        let mut idx = lock(&self.index);
        if let Err(i) = idx.binary_search_by_key(&offset, |&(o, _)| o) {
            idx.insert(i, (offset, pos));
        }
    }

    /// The indexed frame closest at or below `target`.
    pub fn lookup(&self, target: u64) -> Option<(u64, u64)> {
        let idx = lock(&self.index);
        let i = idx.partition_point(|&(o, _)| o <= target);
        i.checked_sub(1).map(|i| idx[i])
    }
}

#[derive(Debug)]
pub(crate) struct State {
    /// Sorted by base offset; the last one is the active segment.
    pub segments: Vec<Arc<Segment>>,
    /// Sum of segment file lengths.
    pub bytes: u64,
    /// Budget reserved by appends queued for the writer.
    pub reserved: u64,
    /// Committed position of every known cursor (persisted ones included).
    pub cursors: BTreeMap<String, u64>,
    /// Cursor names with a live handle.
    pub open_cursors: HashSet<String>,
    /// First storage failure; refuses writes until reopen.
    pub sticky: Option<String>,
    pub closed: bool,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct DurableState {
    pub end: u64,
    pub failed: Option<String>,
    pub closed: bool,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub cfg: LogConfig,
    pub storage: Arc<dyn Storage>,
    pub cursor_dir: PathBuf,
    pub state: Mutex<State>,
    pub durable: watch::Sender<DurableState>,
    pub space: Notify,
    pub next_offset: AtomicU64,
    pub dropped_records: AtomicU64,
    pub corrupt_skipped: AtomicU64,
    pub fsyncs: AtomicU64,
    pub bytes_written: AtomicU64,
}

/// Where an offset lives.
pub(crate) enum Located {
    /// In `seg`; `next_base` is the base of the following segment (None for the active one).
    In {
        seg: Arc<Segment>,
        next_base: Option<u64>,
    },
    /// Below the oldest retained offset.
    Before { oldest: u64 },
}

impl Shared {
    pub fn durable_end(&self) -> u64 {
        self.durable.borrow().end
    }

    pub fn locate(&self, offset: u64) -> Located {
        let st = lock(&self.state);
        let idx = st.segments.partition_point(|s| s.base <= offset);
        if idx == 0 {
            return Located::Before {
                oldest: st.segments.first().map_or(offset, |s| s.base),
            };
        }
        Located::In {
            seg: st.segments[idx - 1].clone(),
            next_base: st.segments.get(idx).map(|s| s.base),
        }
    }

    fn min_committed(st: &State) -> Option<u64> {
        st.cursors.values().copied().min()
    }

    /// Deletes the oldest segment (never the active one). Caller checked `segments.len() > 1`.
    fn remove_oldest(&self, st: &mut State, unconsumed: bool) {
        let seg = st.segments.remove(0);
        let records = st.segments[0].base - seg.base;
        st.bytes = st.bytes.saturating_sub(seg.len.load(Ordering::SeqCst));
        if unconsumed {
            self.dropped_records.fetch_add(records, Ordering::SeqCst);
            tracing::warn!(segment = %seg.path.display(), records, "edge-log dropped an unconsumed segment to stay within max_bytes");
        }
        if let Err(e) = self.storage.remove(&seg.path) {
            tracing::error!(segment = %seg.path.display(), error = %e, "edge-log could not delete segment");
        }
    }

    /// Retention: deletes whole sealed segments below every cursor's committed position.
    pub fn retain(&self) {
        {
            let mut st = lock(&self.state);
            while st.segments.len() > 1 {
                let end = st.segments[1].base;
                match Self::min_committed(&st) {
                    Some(min) if end <= min => self.remove_oldest(&mut st, false),
                    _ => break,
                }
            }
        }
        self.space.notify_waiters();
    }

    /// Reserves budget for one append, reclaiming segments the policy allows.
    fn try_reserve(&self, need: u64) -> Result<(), AppendError> {
        let mut st = lock(&self.state);
        loop {
            if let Some(cause) = &st.sticky {
                return Err(AppendError::Storage {
                    cause: cause.clone(),
                });
            }
            if st.closed {
                return Err(AppendError::Closed);
            }
            let used = st.bytes + st.reserved;
            if used + need <= self.cfg.max_bytes {
                st.reserved += need;
                return Ok(());
            }
            if st.segments.len() > 1 {
                let end = st.segments[1].base;
                let min = Self::min_committed(&st);
                let consumed = min.is_some_and(|m| end <= m);
                // With zero cursors nothing will ever read the data, so budget pressure
                // retires the oldest sealed segment under every policy (counted as dropped).
                if consumed || min.is_none() || self.cfg.when_full == WhenFull::DropOldest {
                    self.remove_oldest(&mut st, !consumed);
                    continue;
                }
            }
            return Err(AppendError::Full {
                needed: need,
                used,
                max_bytes: self.cfg.max_bytes,
            });
        }
    }

    fn release(&self, reserved: u64) {
        let mut st = lock(&self.state);
        st.reserved = st.reserved.saturating_sub(reserved);
    }

    fn set_sticky(&self, cause: &str) {
        {
            let mut st = lock(&self.state);
            if st.sticky.is_none() {
                st.sticky = Some(cause.to_owned());
            }
        }
        self.durable.send_modify(|d| {
            if d.failed.is_none() {
                d.failed = Some(cause.to_owned());
            }
        });
        self.space.notify_waiters();
    }
}

/// Counters and gauges for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogStats {
    /// Bytes in segment files.
    pub bytes: u64,
    /// Number of segment files.
    pub segments: u64,
    /// Records retained (`next_offset - oldest_offset`, gaps from corruption included).
    pub records: u64,
    /// Oldest retained offset.
    pub oldest_offset: u64,
    /// Offset the next append gets.
    pub next_offset: u64,
    /// One past the last durable record.
    pub durable_end: u64,
    /// Records deleted before any cursor consumed them (drop_oldest, or budget pressure with zero cursors).
    pub dropped_records: u64,
    /// Records skipped by readers because of corruption or missing segments.
    pub corrupt_skipped: u64,
    /// fdatasync calls on segment files.
    pub fsyncs: u64,
    /// Bytes written to segment files (headers and frames).
    pub bytes_written: u64,
}

/// What recovery cut from the tail segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncation {
    /// Byte range removed from the tail segment file.
    pub byte_range: std::ops::Range<u64>,
    /// Frames found in that range (best effort: walks frame lengths from the first bad one).
    pub records: u64,
    /// Why the first dropped frame was refused.
    pub reason: String,
}

/// What `Log::open` found and repaired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segment files present after recovery.
    pub segments: u64,
    /// Oldest retained offset.
    pub oldest_offset: u64,
    /// Next offset to be assigned (= durable end after open).
    pub next_offset: u64,
    /// The tail segment that was scanned.
    pub tail_segment: PathBuf,
    /// Valid records in the tail segment.
    pub tail_records: u64,
    /// Truncated tail, if any.
    pub truncated: Option<Truncation>,
    /// The tail segment's header was torn (creation cut off) and rewritten.
    pub header_rewritten: bool,
    /// The log was created empty.
    pub created: bool,
    /// Persisted cursors found.
    pub cursors: u64,
    /// Offsets skipped because a cursor had committed past the recovered end (their records
    /// were lost; see `FsyncPolicy::Never`).
    pub offsets_skipped: u64,
}

impl fmt::Display for RecoveryReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "edge-log {}: {} segment(s), offsets {}..{}, {} cursor(s); tail {}: {} record(s) ok",
            if self.created { "created" } else { "recovered" },
            self.segments,
            self.oldest_offset,
            self.next_offset,
            self.cursors,
            self.tail_segment.display(),
            self.tail_records,
        )?;
        if self.header_rewritten {
            f.write_str(", torn header rewritten")?;
        }
        if self.offsets_skipped > 0 {
            write!(
                f,
                ", LOST {} committed offset(s): skipped ahead",
                self.offsets_skipped
            )?;
        }
        match &self.truncated {
            Some(t) => write!(
                f,
                ", TRUNCATED {} byte(s) [{}..{}) holding {} record(s): {}",
                t.byte_range.end - t.byte_range.start,
                t.byte_range.start,
                t.byte_range.end,
                t.records,
                t.reason
            ),
            None => f.write_str(", nothing truncated"),
        }
    }
}

struct AppendReq {
    record: NewRecord,
    reserved: u64,
    reply: oneshot::Sender<Result<u64, AppendError>>,
    _permits: (OwnedSemaphorePermit, OwnedSemaphorePermit),
}

/// A chunk of a batch: records in order, their frame lengths, one answer (first offset).
struct BatchReq {
    records: Vec<NewRecord>,
    frame_lens: Vec<u64>,
    reserved: u64,
    reply: oneshot::Sender<Result<u64, AppendError>>,
    _permits: (OwnedSemaphorePermit, OwnedSemaphorePermit),
}

enum Msg {
    Append(AppendReq),
    Batch(BatchReq),
    Close(oneshot::Sender<Result<(), LogError>>),
}

#[derive(Debug)]
struct LogInner {
    shared: Arc<Shared>,
    tx: Mutex<Option<SyncSender<Msg>>>,
    slots: Arc<Semaphore>,
    queue_bytes: Arc<Semaphore>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for LogInner {
    fn drop(&mut self) {
        lock(&self.tx).take();
        if let Some(h) = lock(&self.writer).take() {
            let _ = h.join();
        }
    }
}

/// Handle to an open log. Cheap to clone, usable from many tokio tasks. Dropping the last
/// handle syncs and stops the writer thread, blocking until it has exited: prefer
/// [`Log::close`] from async code.
#[derive(Debug, Clone)]
pub struct Log {
    inner: Arc<LogInner>,
}

/// An appended record: it has an offset and is written; `durable()` waits for the sync.
#[derive(Debug)]
pub struct Appended {
    /// The offset the log assigned.
    pub offset: u64,
    rx: watch::Receiver<DurableState>,
}

impl Appended {
    /// Resolves when the record is durable under the fsync policy (Always: after the
    /// fdatasync covering it; Interval: after the interval's sync; Never: once written).
    pub async fn durable(mut self) -> Result<u64, AppendError> {
        let off = self.offset;
        let waited = self
            .rx
            .wait_for(|d| d.end > off || d.failed.is_some() || d.closed)
            .await
            .map(|d| d.clone());
        let outcome = match waited {
            Ok(d) => d,
            Err(_) => self.rx.borrow().clone(),
        };
        if outcome.end > off {
            Ok(off)
        } else if let Some(cause) = outcome.failed {
            Err(AppendError::Storage { cause })
        } else {
            Err(AppendError::Closed)
        }
    }
}

/// One queued chunk of a [`SubmittedBatch`].
#[derive(Debug)]
struct Chunk {
    count: usize,
    state: ChunkState,
}

#[derive(Debug)]
enum ChunkState {
    /// Queued: the writer answers with the chunk's first offset.
    Queued(oneshot::Receiver<Result<u64, AppendError>>),
    /// Answered, or refused before it was queued.
    Done(Result<u64, AppendError>),
}

/// A batch handed to the writer in order ([`Log::submit_many`]); [`SubmittedBatch::written`]
/// waits for its offsets.
#[derive(Debug)]
pub struct SubmittedBatch {
    len: usize,
    /// Records refused before queueing (too large), by ascending index.
    refused: Vec<(usize, AppendError)>,
    /// The accepted records, in order, as queued chunks.
    chunks: Vec<Chunk>,
    rx: watch::Receiver<DurableState>,
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
    pub async fn written(mut self) -> AppendedBatch {
        for chunk in &mut self.chunks {
            if let ChunkState::Queued(rx) = &mut chunk.state {
                let answer = rx.await.unwrap_or(Err(AppendError::Closed));
                chunk.state = ChunkState::Done(answer);
            }
        }
        let mut outcomes = Vec::with_capacity(self.len);
        let mut refused = self.refused.into_iter().peekable();
        let mut chunks = self.chunks.into_iter();
        let mut current: Option<(usize, Result<u64, AppendError>)> = None;
        let mut end = None;
        for i in 0..self.len {
            if refused.peek().is_some_and(|(at, _)| *at == i) {
                if let Some((_, e)) = refused.next() {
                    outcomes.push(Err(e));
                }
                continue;
            }
            if current.as_ref().is_none_or(|(left, _)| *left == 0) {
                current = chunks.next().map(|c| match c.state {
                    ChunkState::Done(r) => (c.count, r),
                    ChunkState::Queued(_) => (c.count, Err(AppendError::Closed)),
                });
            }
            match current.as_mut() {
                Some((left, Ok(next))) => {
                    outcomes.push(Ok(*next));
                    end = Some(*next + 1);
                    *next += 1;
                    *left -= 1;
                }
                Some((left, Err(e))) => {
                    outcomes.push(Err(e.clone()));
                    *left -= 1;
                }
                None => outcomes.push(Err(AppendError::Closed)),
            }
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
        let Some(end) = self.end else {
            return Ok(());
        };
        let waited = self
            .rx
            .wait_for(|d| d.end >= end || d.failed.is_some() || d.closed)
            .await
            .map(|d| d.clone());
        let outcome = match waited {
            Ok(d) => d,
            Err(_) => self.rx.borrow().clone(),
        };
        if outcome.end >= end {
            Ok(())
        } else if let Some(cause) = outcome.failed {
            Err(AppendError::Storage { cause })
        } else {
            Err(AppendError::Closed)
        }
    }
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> LogError + 'a {
    move |source| LogError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

impl Log {
    /// Opens (creating if needed) and recovers the log on the real file system. Blocking I/O:
    /// call at startup or in `spawn_blocking`.
    pub fn open(config: LogConfig) -> Result<(Log, RecoveryReport), LogError> {
        Self::open_with_storage(config, Arc::new(StdStorage))
    }

    /// Same with an injected storage backend (fault-injection tests).
    pub fn open_with_storage(
        config: LogConfig,
        storage: Arc<dyn Storage>,
    ) -> Result<(Log, RecoveryReport), LogError> {
        config.validate()?;
        let dir = config.dir.clone();
        let cursor_dir = dir.join("cursors");
        storage
            .create_dir_all(&cursor_dir)
            .map_err(io_err("create directory", &cursor_dir))?;
        storage
            .sync_dir(&dir)
            .map_err(io_err("sync directory", &dir))?;
        // The data directory's own entry must survive a power cut too.
        let parent = match dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        storage
            .sync_dir(&parent)
            .map_err(io_err("sync directory", &parent))?;
        let cursors = cursor::load_all(storage.as_ref(), &cursor_dir)?;

        let mut bases: Vec<u64> = storage
            .list(&dir)
            .map_err(io_err("list directory", &dir))?
            .iter()
            .filter_map(|n| format::parse_segment_name(n))
            .collect();
        bases.sort_unstable();

        let mut segments = Vec::with_capacity(bases.len().max(1));
        let mut bytes = 0;
        let mut report = RecoveryReport {
            segments: 0,
            oldest_offset: 0,
            next_offset: 0,
            tail_segment: PathBuf::new(),
            tail_records: 0,
            truncated: None,
            header_rewritten: false,
            created: bases.is_empty(),
            cursors: cursors.len() as u64,
            offsets_skipped: 0,
        };
        let fsyncs = AtomicU64::new(0);
        let next_offset;
        if let Some((&tail_base, sealed)) = bases.split_last() {
            for &base in sealed {
                let path = dir.join(format::segment_name(base));
                let file = storage.open(&path).map_err(io_err("open segment", &path))?;
                let len = file.size().map_err(io_err("stat segment", &path))?;
                bytes += len;
                segments.push(Arc::new(Segment::new(base, path, file, len)));
            }
            let path = dir.join(format::segment_name(tail_base));
            let file = storage.open(&path).map_err(io_err("open segment", &path))?;
            let tail = recover_tail(&config, &path, file.as_ref(), tail_base, &fsyncs)?;
            report.tail_records = tail.records;
            report.truncated = tail.truncated;
            report.header_rewritten = tail.header_rewritten;
            next_offset = tail_base + tail.records;
            if tail.version == format::SEGMENT_VERSION {
                bytes += tail.len;
                segments.push(Arc::new(Segment::new(tail_base, path, file, tail.len)));
            } else if tail.records == 0 {
                // An empty tail of an older version: rewrite its header in place.
                file.truncate(0)
                    .map_err(io_err("truncate segment", &path))?;
                write_all_at(file.as_ref(), &format::segment_header(tail_base), 0)
                    .map_err(io_err("write segment header", &path))?;
                file.sync_data()
                    .map_err(io_err("fdatasync segment", &path))?;
                fsyncs.fetch_add(1, Ordering::SeqCst);
                bytes += SEGMENT_HEADER_LEN as u64;
                segments.push(Arc::new(Segment::new(
                    tail_base,
                    path,
                    file,
                    SEGMENT_HEADER_LEN as u64,
                )));
            } else {
                // An older version's tail is sealed as it is: new records go to a segment of
                // the current version (a segment never mixes in newer bodies).
                bytes += tail.len;
                segments.push(Arc::new(Segment::new(tail_base, path, file, tail.len)));
                segments.push(create_segment(
                    storage.as_ref(),
                    &dir,
                    next_offset,
                    &fsyncs,
                )?);
                bytes += SEGMENT_HEADER_LEN as u64;
            }
        } else {
            // No segment: continue after every cursor so offsets are never reused.
            let base = cursors.values().copied().max().unwrap_or(0);
            let seg = create_segment(storage.as_ref(), &dir, base, &fsyncs)?;
            bytes += SEGMENT_HEADER_LEN as u64;
            next_offset = base;
            segments.push(seg);
        }
        // A cursor committed past the recovered end (possible only with FsyncPolicy::Never or a
        // damaged disk): start a new segment at its position so offsets already forwarded
        // upstream are never reused. Readers see the gap as missing records.
        let mut next_offset = next_offset;
        let max_committed = cursors.values().copied().max().unwrap_or(0);
        if max_committed > next_offset {
            let seg = create_segment(storage.as_ref(), &dir, max_committed, &fsyncs)?;
            tracing::warn!(
                from = next_offset,
                to = max_committed,
                "edge-log skipping offsets already committed by a cursor"
            );
            report.offsets_skipped = max_committed - next_offset;
            bytes += SEGMENT_HEADER_LEN as u64;
            next_offset = max_committed;
            segments.push(seg);
        }
        report.segments = segments.len() as u64;
        report.oldest_offset = segments.first().map_or(0, |s| s.base);
        report.next_offset = next_offset;
        report.tail_segment = segments.last().map(|s| s.path.clone()).unwrap_or_default();

        let active = segments.last().cloned().ok_or_else(|| LogError::Writer {
            reason: "no active segment after recovery".into(),
        })?;
        let active_len = active.len.load(Ordering::SeqCst);
        let (durable, _) = watch::channel(DurableState {
            end: next_offset,
            failed: None,
            closed: false,
        });
        let shared = Arc::new(Shared {
            cfg: config.clone(),
            storage,
            cursor_dir,
            state: Mutex::new(State {
                segments,
                bytes,
                reserved: 0,
                cursors,
                open_cursors: HashSet::new(),
                sticky: None,
                closed: false,
            }),
            durable,
            space: Notify::new(),
            next_offset: AtomicU64::new(next_offset),
            dropped_records: AtomicU64::new(0),
            corrupt_skipped: AtomicU64::new(0),
            fsyncs,
            bytes_written: AtomicU64::new(0),
        });
        shared.retain();

        let (tx, rx) = mpsc::sync_channel(QUEUE_SLOTS);
        let mut writer = Writer {
            shared: shared.clone(),
            rx,
            active,
            active_len,
            next_offset,
            buf: Vec::with_capacity(64 << 10),
            staged: Vec::new(),
            written: Vec::new(),
            batch_reserved: 0,
            unsynced: false,
            last_sync: Instant::now(),
            failed: None,
        };
        let handle = std::thread::Builder::new()
            .name("edge-log-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| LogError::Writer {
                reason: e.to_string(),
            })?;
        let queue_bytes = QUEUE_BYTES.max(u64::from(config.max_record_bytes) + 64) as usize;
        Ok((
            Log {
                inner: Arc::new(LogInner {
                    shared,
                    tx: Mutex::new(Some(tx)),
                    slots: Arc::new(Semaphore::new(QUEUE_SLOTS)),
                    queue_bytes: Arc::new(Semaphore::new(queue_bytes)),
                    writer: Mutex::new(Some(handle)),
                }),
            },
            report,
        ))
    }

    /// Appends one record: resolves once it is written and has an offset (waits for space
    /// under `WhenFull::Block`; other tasks keep running). Dropping the future while it waits
    /// for space appends nothing; dropping it after the record was queued may still append it.
    ///
    /// Concurrent `append` futures (even of one task) may reach the writer in any order; use
    /// [`Log::submit_many`] / [`Log::append_many`] when records must keep their order.
    pub async fn append(&self, record: NewRecord) -> Result<Appended, AppendError> {
        let need = self.frame_len_checked(&record)?;
        let rx = self.inner.shared.durable.subscribe();
        let reply_rx = self
            .queue(need, |reply, permits| {
                Msg::Append(AppendReq {
                    record,
                    reserved: need,
                    reply,
                    _permits: permits,
                })
            })
            .await?;
        let offset = reply_rx.await.map_err(|_| AppendError::Closed)??;
        Ok(Appended { offset, rx })
    }

    /// Queues `records` for the writer **in order**, as one hand-off per chunk (a chunk holds
    /// up to [`Log::max_chunk_bytes`] of frames, so ordinary batches are one chunk), and
    /// resolves once every chunk is queued; [`SubmittedBatch::written`] then yields the offsets.
    ///
    /// Ordering: the accepted records of one batch get increasing offsets in the order given,
    /// contiguous within a chunk; batches submitted one after the other by one caller (each
    /// `submit_many` awaited before the next starts) are appended in that order. Nothing is
    /// dropped silently: every record gets an outcome in [`AppendedBatch::outcomes`]:
    /// - a record over `max_record_bytes` is refused alone (`AppendError::TooLarge`), the others
    ///   are appended;
    /// - the disk budget is reserved per chunk: under `WhenFull::Block` this waits for space
    ///   (the caller is held back, which is the backpressure); under `Reject` a chunk that does
    ///   not fit is refused whole (`AppendError::Full` for each of its records);
    /// - a sticky storage failure or a closed log refuses the chunks not yet written; a
    ///   failure while a chunk is being written refuses that whole chunk (some of its records
    ///   may be on disk but are never reported durable, as with [`Log::append`]).
    ///
    /// Dropping the future while it waits appends the chunks already queued and none after.
    pub async fn submit_many(&self, records: Vec<NewRecord>) -> SubmittedBatch {
        let shared = &self.inner.shared;
        let limit = self.max_chunk_bytes();
        let len = records.len();
        let mut refused = Vec::new();
        let mut chunks = Vec::new();
        let mut cur: Vec<NewRecord> = Vec::new();
        let mut cur_lens: Vec<u64> = Vec::new();
        let mut cur_bytes = 0u64;
        let rx = shared.durable.subscribe();
        // The usual case: every record fits and the batch is one chunk; hand the vector over
        // as it is.
        let mut lens = Vec::with_capacity(len);
        let mut total = 0u64;
        for record in &records {
            match self.frame_len_checked(record) {
                Ok(need) if total + need <= limit => {
                    lens.push(need);
                    total += need;
                }
                _ => break,
            }
        }
        if lens.len() == len {
            if len > 0 {
                chunks.push(self.queue_chunk(records, lens, total).await);
            }
            return SubmittedBatch {
                len,
                refused,
                chunks,
                rx,
            };
        }
        for (i, record) in records.into_iter().enumerate() {
            let need = match self.frame_len_checked(&record) {
                Ok(need) => need,
                Err(e) => {
                    refused.push((i, e));
                    continue;
                }
            };
            if !cur.is_empty() && cur_bytes + need > limit {
                let records = std::mem::take(&mut cur);
                let lens = std::mem::take(&mut cur_lens);
                chunks.push(self.queue_chunk(records, lens, cur_bytes).await);
                cur_bytes = 0;
            }
            cur.push(record);
            cur_lens.push(need);
            cur_bytes += need;
        }
        if !cur.is_empty() {
            chunks.push(self.queue_chunk(cur, cur_lens, cur_bytes).await);
        }
        SubmittedBatch {
            len,
            refused,
            chunks,
            rx,
        }
    }

    /// [`Log::submit_many`], then waits until the batch is written ([`SubmittedBatch::written`]).
    pub async fn append_many(&self, records: Vec<NewRecord>) -> AppendedBatch {
        self.submit_many(records).await.written().await
    }

    /// Largest chunk [`Log::submit_many`] hands to the writer at once (bytes of frames).
    pub fn max_chunk_bytes(&self) -> u64 {
        let cfg = &self.inner.shared.cfg;
        let one = u64::from(cfg.max_record_bytes) + FRAME_HEADER_LEN as u64;
        cfg.segment_bytes.max(one).min(self.queue_capacity())
    }

    fn queue_capacity(&self) -> u64 {
        QUEUE_BYTES.max(u64::from(self.inner.shared.cfg.max_record_bytes) + 64)
    }

    /// Bytes `record` takes on disk, or `TooLarge`.
    fn frame_len_checked(&self, record: &NewRecord) -> Result<u64, AppendError> {
        let max = self.inner.shared.cfg.max_record_bytes;
        let body = format::body_ref(u64::MAX, record);
        let body_len = format::body_len(&body) as u64;
        if body_len > u64::from(max) {
            return Err(AppendError::TooLarge {
                size: body_len,
                max,
            });
        }
        Ok(body_len + FRAME_HEADER_LEN as u64)
    }

    async fn queue_chunk(&self, records: Vec<NewRecord>, lens: Vec<u64>, need: u64) -> Chunk {
        let count = records.len();
        let queued = self
            .queue(need, |reply, permits| {
                Msg::Batch(BatchReq {
                    records,
                    frame_lens: lens,
                    reserved: need,
                    reply,
                    _permits: permits,
                })
            })
            .await;
        Chunk {
            count,
            state: match queued {
                Ok(rx) => ChunkState::Queued(rx),
                Err(e) => ChunkState::Done(Err(e)),
            },
        }
    }

    /// Reserves `need` bytes of budget and queue space (waiting as the policy says), then
    /// hands the message to the writer. Returns the receiver of the writer's answer.
    async fn queue(
        &self,
        need: u64,
        msg: impl FnOnce(
            oneshot::Sender<Result<u64, AppendError>>,
            (OwnedSemaphorePermit, OwnedSemaphorePermit),
        ) -> Msg,
    ) -> Result<oneshot::Receiver<Result<u64, AppendError>>, AppendError> {
        let shared = &self.inner.shared;
        loop {
            let notified = shared.space.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match shared.try_reserve(need) {
                Ok(()) => break,
                Err(AppendError::Full { .. })
                    if shared.cfg.when_full == WhenFull::Block
                        || (shared.cfg.when_full == WhenFull::DropOldest
                            && lock(&shared.state).reserved > 0) =>
                {
                    // DropOldest only waits when queued appends hold the budget: the writer
                    // releases it within one batch.
                    notified.await;
                }
                Err(e) => return Err(e),
            }
        }
        let reservation = Reservation {
            shared,
            bytes: need,
        };
        let slot = self
            .inner
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| AppendError::Closed)?;
        let permits = need.min(self.queue_capacity());
        let bytes_permit = self
            .inner
            .queue_bytes
            .clone()
            .acquire_many_owned(u32::try_from(permits).unwrap_or(u32::MAX))
            .await
            .map_err(|_| AppendError::Closed)?;
        let (reply, reply_rx) = oneshot::channel();
        let tx = lock(&self.inner.tx).clone().ok_or(AppendError::Closed)?;
        tx.try_send(msg(reply, (slot, bytes_permit)))
            .map_err(|_| AppendError::Closed)?;
        std::mem::forget(reservation);
        Ok(reply_rx)
    }

    /// Opens (or creates at the oldest offset) a named cursor, persisted under `dir/cursors`.
    pub fn cursor(&self, name: &str) -> Result<Cursor, LogError> {
        Cursor::open(self.inner.shared.clone(), name)
    }

    /// Deletes a persisted cursor (it no longer holds back retention). Fails if a handle is open.
    pub fn remove_cursor(&self, name: &str) -> Result<(), LogError> {
        cursor::remove(&self.inner.shared, name)
    }

    /// Counters and gauges for metrics.
    pub fn stats(&self) -> LogStats {
        let shared = &self.inner.shared;
        let st = lock(&shared.state);
        let oldest = st.segments.first().map_or(0, |s| s.base);
        let next = shared.next_offset.load(Ordering::SeqCst);
        LogStats {
            bytes: st.bytes,
            segments: st.segments.len() as u64,
            records: next.saturating_sub(oldest),
            oldest_offset: oldest,
            next_offset: next,
            durable_end: shared.durable_end(),
            dropped_records: shared.dropped_records.load(Ordering::SeqCst),
            corrupt_skipped: shared.corrupt_skipped.load(Ordering::SeqCst),
            fsyncs: shared.fsyncs.load(Ordering::SeqCst),
            bytes_written: shared.bytes_written.load(Ordering::SeqCst),
        }
    }

    /// Offset one past the last durable record (what readers may see).
    pub fn durable_end(&self) -> u64 {
        self.inner.shared.durable_end()
    }

    /// The storage failure that stopped appends (sticky until reopen), if any.
    pub fn failure(&self) -> Option<String> {
        lock(&self.inner.shared.state).sticky.clone()
    }

    /// The configuration the log was opened with.
    pub fn config(&self) -> &LogConfig {
        &self.inner.shared.cfg
    }

    /// Flushes and syncs everything written, stops the writer; later appends fail with `Closed`.
    pub async fn close(&self) -> Result<(), LogError> {
        let Some(tx) = lock(&self.inner.tx).take() else {
            return Ok(());
        };
        let (reply, rx) = oneshot::channel();
        // The queue may be full; hand the blocking send to a blocking thread.
        let sent = tokio::task::spawn_blocking(move || tx.send(Msg::Close(reply)).is_ok())
            .await
            .unwrap_or(false);
        if !sent {
            return Err(LogError::Closed);
        }
        rx.await.map_err(|_| LogError::Writer {
            reason: "writer exited before confirming close".into(),
        })?
    }
}

/// Returns reserved budget if an append is cancelled before reaching the writer.
struct Reservation<'a> {
    shared: &'a Shared,
    bytes: u64,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.shared.release(self.bytes);
    }
}

struct TailScan {
    records: u64,
    len: u64,
    truncated: Option<Truncation>,
    header_rewritten: bool,
    /// Segment format version of the tail.
    version: u16,
}

fn create_segment(
    storage: &dyn Storage,
    dir: &Path,
    base: u64,
    fsyncs: &AtomicU64,
) -> Result<Arc<Segment>, LogError> {
    let path = dir.join(format::segment_name(base));
    let file = storage
        .create(&path)
        .map_err(io_err("create segment", &path))?;
    write_all_at(file.as_ref(), &format::segment_header(base), 0)
        .map_err(io_err("write segment header", &path))?;
    file.sync_data()
        .map_err(io_err("fdatasync segment", &path))?;
    fsyncs.fetch_add(1, Ordering::SeqCst);
    storage
        .sync_dir(dir)
        .map_err(io_err("sync directory", dir))?;
    Ok(Arc::new(Segment::new(
        base,
        path,
        file,
        SEGMENT_HEADER_LEN as u64,
    )))
}

/// Scans the tail segment and truncates it at the first bad record.
fn recover_tail(
    cfg: &LogConfig,
    path: &Path,
    file: &dyn StorageFile,
    base: u64,
    fsyncs: &AtomicU64,
) -> Result<TailScan, LogError> {
    let len = file.size().map_err(io_err("stat segment", path))?;
    let mut head = [0u8; SEGMENT_HEADER_LEN];
    let n = read_full_at(file, &mut head, 0).map_err(io_err("read segment header", path))?;
    let version = match format::check_segment_header(&head[..n]) {
        HeaderCheck::Ok { base: b, version } if b == base => version,
        HeaderCheck::Ok { base: b, .. } => {
            return Err(LogError::Corrupt {
                what: "segment header",
                path: path.to_path_buf(),
                reason: format!("header says base offset {b}, file name says {base}"),
            });
        }
        HeaderCheck::Bad(reason) => {
            return Err(LogError::Corrupt {
                what: "segment header",
                path: path.to_path_buf(),
                reason,
            });
        }
        HeaderCheck::Version(found) => {
            return Err(LogError::UnsupportedVersion {
                path: path.to_path_buf(),
                found,
                supported: format::SEGMENT_VERSION,
            });
        }
        HeaderCheck::Torn => {
            // Creation was cut off before the header was synced: no record can follow it.
            file.truncate(0).map_err(io_err("truncate segment", path))?;
            write_all_at(file, &format::segment_header(base), 0)
                .map_err(io_err("write segment header", path))?;
            file.sync_data()
                .map_err(io_err("fdatasync segment", path))?;
            fsyncs.fetch_add(1, Ordering::SeqCst);
            let truncated = (len > 0).then(|| Truncation {
                byte_range: 0..len,
                records: 0,
                reason: "torn segment header".into(),
            });
            return Ok(TailScan {
                records: 0,
                len: SEGMENT_HEADER_LEN as u64,
                truncated,
                header_rewritten: true,
                version: format::SEGMENT_VERSION,
            });
        }
    };

    let max = cfg.max_record_bytes;
    let mut pos = SEGMENT_HEADER_LEN as u64;
    let mut expected = base;
    let mut buf = Bytes::new();
    let mut buf_start = pos;
    let mut fresh = false;
    let mut bad: Option<String> = None;
    while pos < len {
        let rel = (pos - buf_start) as usize;
        let view = if rel <= buf.len() {
            buf.slice(rel..)
        } else {
            Bytes::new()
        };
        match format::decode_frame(&view, max) {
            Ok((rec, n)) => {
                if rec.offset != expected {
                    bad = Some(format!(
                        "offset discontinuity: expected {expected}, found {}",
                        rec.offset
                    ));
                    break;
                }
                expected += 1;
                pos += n as u64;
                fresh = false;
            }
            Err(FrameError::Incomplete) if !fresh => {
                let want = match format::frame_header(&view, max) {
                    Ok((l, _)) => (FRAME_HEADER_LEN + l).max(READ_CHUNK),
                    Err(_) => READ_CHUNK,
                };
                let want = want.min((len - pos) as usize);
                let mut v = vec![0u8; want];
                let got = read_full_at(file, &mut v, pos).map_err(io_err("read segment", path))?;
                v.truncate(got);
                buf = Bytes::from(v);
                buf_start = pos;
                fresh = true;
            }
            Err(e) => {
                bad = Some(match e {
                    FrameError::Incomplete => "partial frame at end of file".into(),
                    FrameError::BadLength(0) => "zero-filled region".into(),
                    other => other.to_string(),
                });
                break;
            }
        }
    }
    let mut truncated = None;
    if let Some(reason) = bad {
        let records = count_frames(file, pos, len, max);
        tracing::warn!(segment = %path.display(), from = pos, to = len, records, %reason, "edge-log truncating tail segment");
        file.truncate(pos)
            .map_err(io_err("truncate segment", path))?;
        file.sync_data()
            .map_err(io_err("fdatasync segment", path))?;
        fsyncs.fetch_add(1, Ordering::SeqCst);
        truncated = Some(Truncation {
            byte_range: pos..len,
            records,
            reason,
        });
    }
    Ok(TailScan {
        records: expected - base,
        len: pos,
        truncated,
        header_rewritten: false,
        version,
    })
}

/// Best-effort count of frames in `[pos, len)`: walks plausible length fields.
fn count_frames(file: &dyn StorageFile, mut pos: u64, len: u64, max: u32) -> u64 {
    let mut n = 0;
    let mut head = [0u8; FRAME_HEADER_LEN];
    while pos < len {
        match read_full_at(file, &mut head, pos) {
            Ok(FRAME_HEADER_LEN) => {}
            _ => return n + 1,
        }
        match format::frame_header(&head, max) {
            Ok((l, _)) => {
                n += 1;
                pos += (FRAME_HEADER_LEN + l) as u64;
            }
            Err(_) => return n + 1,
        }
    }
    n
}

/// The single writer: drains queued appends, writes them with one write call, syncs once.
struct Writer {
    shared: Arc<Shared>,
    rx: mpsc::Receiver<Msg>,
    active: Arc<Segment>,
    active_len: u64,
    next_offset: u64,
    buf: Vec<u8>,
    staged: Vec<(oneshot::Sender<Result<u64, AppendError>>, u64)>,
    written: Vec<(oneshot::Sender<Result<u64, AppendError>>, u64)>,
    batch_reserved: u64,
    unsynced: bool,
    last_sync: Instant,
    failed: Option<String>,
}

impl Writer {
    fn run(&mut self) {
        loop {
            let first = match self.shared.cfg.fsync {
                FsyncPolicy::Interval(d) if self.unsynced => {
                    let wait = (self.last_sync + d).saturating_duration_since(Instant::now());
                    match self.rx.recv_timeout(wait) {
                        Ok(m) => m,
                        Err(RecvTimeoutError::Timeout) => {
                            self.sync_and_publish();
                            continue;
                        }
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
                _ => match self.rx.recv() {
                    Ok(m) => m,
                    Err(_) => break,
                },
            };
            let mut close = None;
            let mut next = Some(first);
            while let Some(msg) = next {
                match msg {
                    Msg::Append(req) => self.stage(req),
                    Msg::Batch(req) => self.stage_batch(req),
                    Msg::Close(reply) => {
                        close = Some(reply);
                        break;
                    }
                }
                if self.buf.len() >= MAX_BATCH_BYTES {
                    break;
                }
                next = self.rx.try_recv().ok();
            }
            self.finish_batch();
            if let Some(reply) = close {
                let res = self.shutdown();
                let _ = reply.send(res);
                return;
            }
        }
        let _ = self.shutdown();
    }

    fn shutdown(&mut self) -> Result<(), LogError> {
        if self.unsynced && self.failed.is_none() {
            self.sync_and_publish();
        }
        lock(&self.shared.state).closed = true;
        self.shared.durable.send_modify(|d| d.closed = true);
        self.shared.space.notify_waiters();
        match &self.failed {
            Some(cause) => Err(LogError::Sticky {
                cause: cause.clone(),
            }),
            None => Ok(()),
        }
    }

    fn fail(&mut self, op: &str, err: &std::io::Error) {
        let cause = format!("{op} {} failed: {err}", self.active.path.display());
        self.fail_with(cause);
    }

    fn fail_with(&mut self, cause: String) {
        tracing::error!(%cause, "edge-log storage failure; refusing writes until reopen");
        self.shared.set_sticky(&cause);
        for (reply, _) in self.staged.drain(..) {
            let _ = reply.send(Err(AppendError::Storage {
                cause: cause.clone(),
            }));
        }
        self.buf.clear();
        self.failed = Some(cause);
    }

    fn stage(&mut self, req: AppendReq) {
        self.batch_reserved += req.reserved;
        match self.stage_record(&req.record, None) {
            Ok(offset) => self.staged.push((req.reply, offset)),
            Err(e) => {
                let _ = req.reply.send(Err(e));
            }
        }
    }

    /// Stages a chunk: contiguous offsets, one answer (its first offset). A failure refuses
    /// the whole chunk; it is sticky, so nothing of the chunk is ever reported durable.
    fn stage_batch(&mut self, req: BatchReq) {
        self.batch_reserved += req.reserved;
        let first = self.next_offset;
        for (record, &len) in req.records.iter().zip(&req.frame_lens) {
            if let Err(e) = self.stage_record(record, Some(len)) {
                if self.failed.is_none() {
                    // Only encoding can fail without a storage failure; later records would
                    // get offsets the answer cannot describe, so stop writing altogether.
                    self.fail_with(e.to_string());
                }
                let _ = req.reply.send(Err(e));
                return;
            }
        }
        self.staged.push((req.reply, first));
    }

    /// Encodes one record into the write buffer (rolling the segment first if it would not
    /// fit) and returns its offset.
    fn stage_record(&mut self, r: &NewRecord, frame_len: Option<u64>) -> Result<u64, AppendError> {
        if let Some(cause) = &self.failed {
            return Err(AppendError::Storage {
                cause: cause.clone(),
            });
        }
        let body_at = |offset| format::body_ref(offset, r);
        let frame_len = match frame_len {
            Some(len) => len,
            None => (FRAME_HEADER_LEN + format::body_len(&body_at(self.next_offset))) as u64,
        };
        let filled = self.active_len + self.buf.len() as u64;
        if filled + frame_len > self.shared.cfg.segment_bytes && filled > SEGMENT_HEADER_LEN as u64
        {
            self.write_buf();
            if self.failed.is_none() {
                self.roll();
            }
            if let Some(cause) = &self.failed {
                return Err(AppendError::Storage {
                    cause: cause.clone(),
                });
            }
        }
        let body = body_at(self.next_offset);
        let pos = self.active_len + self.buf.len() as u64;
        if let Err(e) = format::encode_frame(&body, &mut self.buf) {
            return Err(AppendError::Storage {
                cause: format!("encoding record failed: {e}"),
            });
        }
        self.active.note(self.next_offset, pos);
        let offset = self.next_offset;
        self.next_offset += 1;
        Ok(offset)
    }

    fn write_buf(&mut self) {
        if self.buf.is_empty() {
            // A chunk whose frames went out with a roll's write is complete all the same.
            if self.failed.is_none() {
                self.written.append(&mut self.staged);
            }
            return;
        }
        let n = self.buf.len() as u64;
        if let Err(e) = write_all_at(self.active.file.as_ref(), &self.buf, self.active_len) {
            self.fail("write", &e);
            return;
        }
        self.active_len += n;
        self.active.len.store(self.active_len, Ordering::SeqCst);
        self.shared.bytes_written.fetch_add(n, Ordering::SeqCst);
        lock(&self.shared.state).bytes += n;
        self.buf.clear();
        self.unsynced = true;
        self.written.append(&mut self.staged);
    }

    fn sync_active(&mut self) -> bool {
        if let Err(e) = self.active.file.sync_data() {
            self.fail("fdatasync", &e);
            return false;
        }
        self.shared.fsyncs.fetch_add(1, Ordering::SeqCst);
        self.unsynced = false;
        self.last_sync = Instant::now();
        true
    }

    fn roll(&mut self) {
        if !self.sync_active() {
            return;
        }
        let dir = self.shared.cfg.dir.clone();
        match create_segment(
            self.shared.storage.as_ref(),
            &dir,
            self.next_offset,
            &self.shared.fsyncs,
        ) {
            Ok(seg) => {
                self.shared
                    .bytes_written
                    .fetch_add(SEGMENT_HEADER_LEN as u64, Ordering::SeqCst);
                let mut st = lock(&self.shared.state);
                st.segments.push(seg.clone());
                st.bytes += SEGMENT_HEADER_LEN as u64;
                drop(st);
                self.active = seg;
                self.active_len = SEGMENT_HEADER_LEN as u64;
            }
            Err(e) => {
                let cause = e.to_string();
                tracing::error!(%cause, "edge-log could not roll segment; refusing writes until reopen");
                self.shared.set_sticky(&cause);
                self.failed = Some(cause);
            }
        }
    }

    fn publish(&self, end: u64) {
        self.shared.durable.send_modify(|d| d.end = d.end.max(end));
    }

    fn sync_and_publish(&mut self) {
        if self.failed.is_some() {
            return;
        }
        if self.sync_active() {
            self.publish(self.next_offset);
        }
    }

    fn finish_batch(&mut self) {
        self.write_buf();
        self.shared
            .next_offset
            .store(self.next_offset, Ordering::SeqCst);
        let reserved = std::mem::take(&mut self.batch_reserved);
        self.shared.release(reserved);
        for (reply, offset) in self.written.drain(..) {
            let _ = reply.send(Ok(offset));
        }
        if self.failed.is_none() {
            match self.shared.cfg.fsync {
                FsyncPolicy::Always => {
                    if self.unsynced {
                        self.sync_and_publish();
                    } else {
                        self.publish(self.next_offset);
                    }
                }
                FsyncPolicy::Interval(d) => {
                    if self.unsynced && self.last_sync.elapsed() >= d {
                        self.sync_and_publish();
                    } else if !self.unsynced {
                        self.publish(self.next_offset);
                    }
                }
                FsyncPolicy::Never => self.publish(self.next_offset),
            }
        }
        self.shared.space.notify_waiters();
    }
}
