//! The ledger: the state the writer, the appenders and the readers share, and the only way any
//! of them touches it. The writer never reaches into a cursor and a cursor never into the
//! writer; both go through these methods (the shape of vector's `disk_v2` ledger).
//!
//! It owns: the segment list (the index of what is on disk), the disk budget (bytes in
//! segments plus bytes reserved by queued appends), the committed position of every cursor
//! (retention deletes below the lowest), the durable end (a watch channel appenders and readers
//! wait on), the sticky failure, the counters behind [`crate::LogStats`], and the record
//! vectors the writer emptied, kept for the next submissions ([`Ledger::recycle_records`]).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;
use tokio::sync::{Notify, watch};

use crate::config::{LogConfig, WhenFull};
use crate::encoded::EncodedRecords;
use crate::error::{AppendError, LogError};
use crate::health::{Full, LogHealth};
use crate::segment::Segment;
use crate::storage::Storage;

/// What appenders and readers wait on: how far the log is durable, and whether it can still get
/// there.
#[derive(Debug, Clone, Default)]
pub(crate) struct DurableState {
    /// One past the last durable record.
    pub end: u64,
    /// The sticky storage failure, if any: nothing not yet durable will ever be.
    pub failed: Option<String>,
    /// The log was closed: nothing more will become durable.
    pub closed: bool,
}

/// Waits until every offset below `end` is durable; fails if the log failed or closed first.
/// The one implementation behind [`crate::Appended::durable`] and
/// [`crate::AppendedBatch::durable`].
pub(crate) async fn wait_durable(
    rx: &mut watch::Receiver<DurableState>,
    end: u64,
) -> Result<(), AppendError> {
    let waited = rx
        .wait_for(|d| d.end >= end || d.failed.is_some() || d.closed)
        .await
        .map(|d| d.clone());
    let outcome = match waited {
        Ok(d) => d,
        Err(_) => rx.borrow().clone(),
    };
    if outcome.end >= end {
        Ok(())
    } else if let Some(cause) = outcome.failed {
        Err(AppendError::Storage { cause })
    } else {
        Err(AppendError::Closed)
    }
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

/// Upper bounds, in seconds, of the fdatasync latency histogram's buckets (then +Inf).
pub const FSYNC_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024,
];

/// Counters behind [`crate::LogStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Records deleted before every cursor consumed them.
    pub dropped_records: AtomicU64,
    /// Records readers skipped (corrupt or missing).
    pub corrupt_skipped: AtomicU64,
    /// fdatasync calls on segment files.
    pub fsyncs: AtomicU64,
    /// Bytes written to segment files.
    pub bytes_written: AtomicU64,
    /// Writes sent to the device as whole sectors (`sector_writes`).
    pub sector_writes: AtomicU64,
    /// Records recovery could not keep at open (`RecoveryReport::records_skipped`).
    pub recovery_skipped: AtomicU64,
    /// Latency of the fdatasyncs that make appends durable: count per bucket of
    /// [`FSYNC_BUCKETS`] (the last one is everything slower), and the sum in microseconds.
    pub fsync_buckets: [AtomicU64; FSYNC_BUCKETS.len() + 1],
    /// Sum of those latencies, microseconds.
    pub fsync_micros: AtomicU64,
}

#[derive(Debug)]
struct State {
    /// Sorted by base offset; the last one is the active segment.
    segments: Vec<Arc<Segment>>,
    /// Sum of segment file lengths.
    bytes: u64,
    /// Budget reserved by appends queued for the writer.
    reserved: u64,
    /// Committed position of every known cursor (persisted ones included).
    cursors: BTreeMap<String, u64>,
    /// Cursor names with a live handle.
    open_cursors: HashSet<String>,
    /// First storage failure; refuses writes until reopen.
    sticky: Option<String>,
    /// The file system reported no space; cleared by the next successful write.
    no_space: Option<String>,
    /// Frame bytes of the last append that found the budget full (cleared once it fits).
    budget_full: Option<u64>,
    closed: bool,
}

/// A snapshot of the ledger for [`crate::LogStats`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Snapshot {
    pub bytes: u64,
    pub segments: u64,
    pub oldest: u64,
}

/// The shared state of one open log.
#[derive(Debug)]
pub(crate) struct Ledger {
    cfg: LogConfig,
    storage: Arc<dyn Storage>,
    state: Mutex<State>,
    durable: watch::Sender<DurableState>,
    space: Notify,
    next_offset: AtomicU64,
    /// `close` was called: a writer waiting for disk space gives up.
    closing: AtomicBool,
    /// The counters (atomics: the writer and readers bump them without the lock).
    pub counters: Counters,
    /// Encoded records the writer framed, emptied for the next submissions (at most
    /// [`SPARE_RECORD_VECS`], each room for [`SPARE_MIN_RECORDS`]..=[`SPARE_MAX_RECORDS`]
    /// records and at most [`SPARE_MAX_BYTES`]).
    spare_records: Mutex<Vec<EncodedRecords>>,
}

/// How many emptied [`EncodedRecords`] the ledger keeps for reuse.
pub(crate) const SPARE_RECORD_VECS: usize = 4;
/// The smallest room worth keeping (a single append's is not).
pub(crate) const SPARE_MIN_RECORDS: usize = 16;
/// The most records' room kept.
pub(crate) const SPARE_MAX_RECORDS: usize = 1024;
/// The most bytes' room kept (a read buffer's worth of records is a quarter of it): all four
/// stay at 1 MiB.
pub(crate) const SPARE_MAX_BYTES: usize = 256 << 10;

impl Ledger {
    /// A ledger over recovered segments (sorted, the last one active) and cursor positions.
    pub fn new(
        cfg: LogConfig,
        storage: Arc<dyn Storage>,
        segments: Vec<Arc<Segment>>,
        cursors: BTreeMap<String, u64>,
        next_offset: u64,
        fsyncs: u64,
    ) -> Ledger {
        let bytes = segments.iter().map(|s| s.len()).sum();
        let (durable, _) = watch::channel(DurableState {
            end: next_offset,
            failed: None,
            closed: false,
        });
        Ledger {
            cfg,
            storage,
            state: Mutex::new(State {
                segments,
                bytes,
                reserved: 0,
                cursors,
                open_cursors: HashSet::new(),
                sticky: None,
                no_space: None,
                budget_full: None,
                closed: false,
            }),
            durable,
            space: Notify::new(),
            next_offset: AtomicU64::new(next_offset),
            closing: AtomicBool::new(false),
            counters: Counters {
                fsyncs: AtomicU64::new(fsyncs),
                ..Counters::default()
            },
            spare_records: Mutex::new(Vec::new()),
        }
    }

    // --- encoded records' room --------------------------------------------------------------

    /// The largest emptied [`EncodedRecords`] the writer gave back, if one is kept: a
    /// submitter reuses it instead of allocating (the writer frees nothing the submitter's
    /// thread must allocate, and touch as fresh pages, again).
    pub fn take_spare_records(&self) -> Option<EncodedRecords> {
        let mut spare = self.spare_records.lock();
        let largest = (0..spare.len()).max_by_key(|&i| spare[i].capacity())?;
        Some(spare.swap_remove(largest))
    }

    /// Keeps encoded records the writer framed for a later submission (emptied here,
    /// outside the lock), unless enough are kept or their room is not worth keeping.
    pub fn recycle_records(&self, mut records: EncodedRecords) {
        if !(SPARE_MIN_RECORDS..=SPARE_MAX_RECORDS).contains(&records.capacity())
            || records.bytes_capacity() > SPARE_MAX_BYTES
        {
            return;
        }
        records.clear();
        let mut spare = self.spare_records.lock();
        if spare.len() < SPARE_RECORD_VECS {
            spare.push(records);
        }
    }

    /// The configuration the log was opened with.
    pub fn cfg(&self) -> &LogConfig {
        &self.cfg
    }

    /// The file system.
    pub fn storage(&self) -> &dyn Storage {
        self.storage.as_ref()
    }

    // --- durability -----------------------------------------------------------------------

    /// One past the last durable record.
    pub fn durable_end(&self) -> u64 {
        self.durable.borrow().end
    }

    /// A receiver of durability changes.
    pub fn subscribe(&self) -> watch::Receiver<DurableState> {
        self.durable.subscribe()
    }

    /// Everything below `end` is durable (writer only; never moves backwards).
    pub fn publish_durable(&self, end: u64) {
        self.durable.send_if_modified(|d| {
            let moved = end > d.end;
            d.end = d.end.max(end);
            moved
        });
    }

    /// Offset the next append gets.
    pub fn next_offset(&self) -> u64 {
        self.next_offset.load(Ordering::Acquire)
    }

    /// Publishes the offset the next append gets (writer only).
    pub fn publish_next(&self, next: u64) {
        self.next_offset.store(next, Ordering::Release);
    }

    /// An fdatasync that makes appends durable took `took` (syncer only).
    pub fn record_fsync(&self, took: std::time::Duration) {
        let c = &self.counters;
        c.fsyncs.fetch_add(1, Ordering::Relaxed);
        let secs = took.as_secs_f64();
        let bucket = FSYNC_BUCKETS
            .iter()
            .position(|&le| secs <= le)
            .unwrap_or(FSYNC_BUCKETS.len());
        c.fsync_buckets[bucket].fetch_add(1, Ordering::Relaxed);
        c.fsync_micros.fetch_add(
            u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    // --- failure and close ----------------------------------------------------------------

    /// Records the first storage failure: appends and durability waits fail from now on.
    pub fn fail(&self, cause: &str) {
        {
            let mut st = self.state.lock();
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

    /// The sticky storage failure, if any.
    pub fn failure(&self) -> Option<String> {
        self.state.lock().sticky.clone()
    }

    /// `close` was called (the writer stops waiting for disk space).
    pub fn start_closing(&self) {
        self.closing.store(true, Ordering::Release);
    }

    /// Whether `close` was called.
    pub fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// The file system reported no space (writer only). Logs the first report of an episode.
    pub fn set_no_space(&self, cause: &str) {
        let mut st = self.state.lock();
        if st.no_space.is_none() {
            tracing::error!(%cause, policy = ?self.cfg.when_full, "edge-log: no space on the file system; partial writes cut back, retrying");
        }
        st.no_space = Some(cause.to_owned());
    }

    /// A write succeeded (writer only): ends a no-space episode.
    pub fn clear_no_space(&self) {
        let was = self.state.lock().no_space.take();
        if was.is_some() {
            tracing::warn!("edge-log: space returned; appends are stored again");
            self.space.notify_waiters();
        }
    }

    /// Whether the log takes appends now.
    pub fn health(&self) -> LogHealth {
        let mut st = self.state.lock();
        if st.closed {
            return LogHealth::Closed;
        }
        if let Some(cause) = &st.sticky {
            return LogHealth::Failed {
                cause: cause.clone(),
            };
        }
        if let Some(cause) = &st.no_space {
            return LogHealth::Full(Full::Disk {
                cause: cause.clone(),
            });
        }
        match st.budget_full {
            Some(needed) if !self.fits(&st, needed) => LogHealth::Full(Full::Budget { needed }),
            Some(_) => {
                st.budget_full = None;
                LogHealth::Ok
            }
            None => LogHealth::Ok,
        }
    }

    /// The writer stopped: appends fail with `Closed`, waiters are released.
    pub fn close(&self) {
        self.state.lock().closed = true;
        self.durable.send_modify(|d| d.closed = true);
        self.space.notify_waiters();
    }

    // --- segments -------------------------------------------------------------------------

    /// Where `offset` lives.
    pub fn locate(&self, offset: u64) -> Located {
        let st = self.state.lock();
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

    /// A new active segment (writer only).
    pub fn push_segment(&self, seg: Arc<Segment>) {
        let mut st = self.state.lock();
        st.bytes += seg.len();
        self.counters
            .bytes_written
            .fetch_add(seg.len(), Ordering::Relaxed);
        st.segments.push(seg);
    }

    /// The active segment grew by `n` bytes (writer only).
    pub fn grew(&self, n: u64) {
        self.state.lock().bytes += n;
        self.counters.bytes_written.fetch_add(n, Ordering::Relaxed);
    }

    /// The active segment was cut back by `n` bytes (writer only).
    pub fn shrank(&self, n: u64) {
        let mut st = self.state.lock();
        st.bytes = st.bytes.saturating_sub(n);
    }

    /// Sizes for stats.
    pub fn snapshot(&self) -> Snapshot {
        let st = self.state.lock();
        Snapshot {
            bytes: st.bytes,
            segments: st.segments.len() as u64,
            oldest: st.segments.first().map_or(0, |s| s.base),
        }
    }

    // --- disk budget and retention --------------------------------------------------------

    /// The space notification: fires when budget may have been freed or the log failed/closed.
    pub fn space(&self) -> &Notify {
        &self.space
    }

    /// Reserves budget for `need` bytes of frames, reclaiming segments the policy allows.
    pub fn try_reserve(&self, need: u64) -> Result<(), AppendError> {
        let mut st = self.state.lock();
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
                st.budget_full = None;
                return Ok(());
            }
            if self.reclaim_one(&mut st) {
                continue;
            }
            st.budget_full = Some(need);
            return Err(AppendError::Full {
                needed: need,
                used,
                max_bytes: self.cfg.max_bytes,
            });
        }
    }

    /// Whether `need` more bytes of frames fit the budget now, counting the sealed segments the
    /// policy would delete to make room (see [`Ledger::try_reserve`]); false once the log
    /// failed or closed (no append will succeed).
    pub fn has_room(&self, need: u64) -> bool {
        let st = self.state.lock();
        if st.sticky.is_some() || st.closed {
            return false;
        }
        // Out of disk space, the writer holds appends until it can write them, except under
        // `Reject`, where each append is tried (and refused while the disk is full).
        if st.no_space.is_some() && self.cfg.when_full != WhenFull::Reject {
            return false;
        }
        self.fits(&st, need)
    }

    fn fits(&self, st: &State, need: u64) -> bool {
        let used = st.bytes + st.reserved;
        used + need <= self.cfg.max_bytes.saturating_add(self.reclaimable(st))
    }

    /// The file system is full: deletes the oldest sealed segment if the policy allows it
    /// under pressure (as for the budget). True if one was deleted (try again).
    pub fn reclaim_for_space(&self) -> bool {
        let mut st = self.state.lock();
        self.reclaim_one(&mut st)
    }

    /// Bytes of the oldest sealed segments [`Ledger::reclaim_one`] would delete in a row.
    fn reclaimable(&self, st: &State) -> u64 {
        let min = st.cursors.values().copied().min();
        let mut freed = 0;
        for pair in st.segments.windows(2) {
            let consumed = min.is_some_and(|m| pair[1].base <= m);
            if !(consumed || min.is_none() || self.cfg.when_full == WhenFull::DropOldest) {
                break;
            }
            freed += pair[0].len();
        }
        freed
    }

    /// Whether the log can no longer take appends (failed or closed).
    pub fn is_done(&self) -> bool {
        let st = self.state.lock();
        st.sticky.is_some() || st.closed
    }

    /// Whether queued appends hold budget the writer will release within one batch.
    pub fn has_reservations(&self) -> bool {
        self.state.lock().reserved > 0
    }

    /// Returns budget reserved by an append (written, refused or cancelled).
    pub fn release(&self, reserved: u64) {
        let mut st = self.state.lock();
        st.reserved = st.reserved.saturating_sub(reserved);
    }

    /// Deletes the oldest sealed segment if the policy allows it under budget pressure:
    /// consumed by every cursor, or no cursor at all (nothing will ever read it), or
    /// `DropOldest`.
    fn reclaim_one(&self, st: &mut State) -> bool {
        if st.segments.len() < 2 {
            return false;
        }
        let end = st.segments[1].base;
        let min = st.cursors.values().copied().min();
        let consumed = min.is_some_and(|m| end <= m);
        if consumed || min.is_none() || self.cfg.when_full == WhenFull::DropOldest {
            self.remove_oldest(st, !consumed);
            return true;
        }
        false
    }

    /// Deletes the oldest segment (never the active one). Caller checked `segments.len() > 1`.
    fn remove_oldest(&self, st: &mut State, unconsumed: bool) {
        let seg = st.segments.remove(0);
        let records = st.segments[0].base - seg.base;
        st.bytes = st.bytes.saturating_sub(seg.len());
        if unconsumed {
            self.counters
                .dropped_records
                .fetch_add(records, Ordering::Relaxed);
            tracing::warn!(segment = %seg.path.display(), records, "edge-log dropped an unconsumed segment to stay within max_bytes");
        }
        if let Err(e) = self.storage.remove(&seg.path) {
            tracing::error!(segment = %seg.path.display(), error = %e, "edge-log could not delete segment");
        }
    }

    /// Retention: deletes whole sealed segments below every cursor's committed position.
    pub fn retain(&self) {
        {
            let mut st = self.state.lock();
            while st.segments.len() > 1 {
                let end = st.segments[1].base;
                match st.cursors.values().copied().min() {
                    Some(min) if end <= min => self.remove_oldest(&mut st, false),
                    _ => break,
                }
            }
        }
        self.space.notify_waiters();
    }

    // --- cursor positions -----------------------------------------------------------------

    /// Marks `name` as having a live handle and returns its committed position (creating it at
    /// the oldest retained offset if unknown) and whether it was created.
    pub fn open_cursor(&self, name: &str) -> Result<(u64, bool), LogError> {
        let mut st = self.state.lock();
        if !st.open_cursors.insert(name.to_owned()) {
            return Err(LogError::CursorInUse { name: name.into() });
        }
        let oldest = st.segments.first().map_or(0, |s| s.base);
        Ok(match st.cursors.get(name) {
            Some(&c) => (c, false),
            None => {
                st.cursors.insert(name.to_owned(), oldest);
                (oldest, true)
            }
        })
    }

    /// The handle of `name` was dropped.
    pub fn close_cursor(&self, name: &str) {
        self.state.lock().open_cursors.remove(name);
    }

    /// `name` durably committed `offset`; retention may now delete below it.
    pub fn committed(&self, name: &str, offset: u64) {
        self.state.lock().cursors.insert(name.to_owned(), offset);
        self.retain();
    }

    /// Forgets cursor `name` (no live handle allowed). `Ok(false)` if it was unknown.
    pub fn forget_cursor(&self, name: &str) -> Result<bool, LogError> {
        let mut st = self.state.lock();
        if st.open_cursors.contains(name) {
            return Err(LogError::CursorInUse { name: name.into() });
        }
        Ok(st.cursors.remove(name).is_some())
    }
}
