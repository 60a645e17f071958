//! The single writer thread: drains queued chunks, encodes their frames into one buffer, writes
//! it with one call, rolls segments, and hands "sync up to here" to the syncer thread, which
//! runs the fdatasync and publishes the durable end through the [`Ledger`] while the writer
//! writes the next batch (group commit, pipelined). It answers each chunk with how many of its
//! records were written; durability is waited for separately (`Ledger::subscribe`).
//!
//! **Gathered writes.** With sector writes under an interval policy, a batch that arrives
//! before the interval's sync is due is not written at once: its frames stay in the buffer and
//! its chunks are answered (offsets given, local delivery goes on), and the next sync writes
//! everything gathered since the last one as one run of sectors, then syncs it. Nothing waits
//! longer for durability than before (the interval's sync covers it), and the device gets one
//! write per sync instead of one per batch (issue 17's flash goal). Invariants:
//! - gathered frames lie inside the zero-filled region ahead of the writer, so writing them
//!   later allocates nothing (no `ENOSPC` is expected; if one comes anyway, the writer waits
//!   and retries: those records were answered and cannot be refused any more);
//! - readers see records only up to the durable end, which a sync publishes only after the
//!   frames it covers were written;
//! - a sticky failure drops gathered frames like written ones it cuts back: they were never
//!   durable, and their appenders hear it through the ledger.
//!
//! **Zeros ahead** (`preallocate`, `sector_writes`). The active segment is kept zero-filled at
//! least a step ahead of the frames, so an fdatasync overwrites initialised blocks and has no
//! file-system metadata to commit. With `preallocate` alone the zeros are written only while
//! they pay ([`ZeroPacing`]): while the fdatasyncs are small (at most [`ZEROS_PAY_UP_TO`] of
//! frames each, measured over the last step). Under bulk load the zeros would cost more bytes
//! and CPU than the journal commit they spare, and the frames are appended without them.
//! `sector_writes` always needs them (gathered frames must lie inside the zeros). On a
//! copy-on-write file system (btrfs, ZFS: [`crate::Storage::copy_on_write`]) no overwrite is in
//! place, so `preallocate` writes none.

use std::io;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, oneshot};

use crate::config::{FsyncPolicy, LogConfig, PREALLOCATE_STEP, WhenFull};
use crate::encoded::EncodedRecords;
use crate::error::{AppendError, LogError};
use crate::format::{self, SEGMENT_HEADER_LEN};
use crate::ledger::Ledger;
use crate::sectors::{SectorWriter, Sent};
use crate::segment::{Segment, create_segment};
use crate::storage::{Storage, StorageFile, write_all_at};
use crate::syncer::{Syncer, Target};

/// The writer stops draining the queue into one batch once this many bytes of frames are
/// staged in it. Counted per batch, not from the buffer (a segment roll writes the buffer out
/// and empties it): no chunk of a batch is answered before the batch ends, so this bounds how
/// long the first one waits (at most this plus one chunk, [`crate::Log::max_chunk_bytes`]).
const MAX_BATCH_BYTES: u64 = 4 << 20;
/// At most this many bytes are gathered for the next sync; more are written at once.
const MAX_GATHERED_BYTES: usize = 64 << 10;
/// How often the writer looks at a running sync's outcome while it has nothing else to do.
const SYNC_WATCH: Duration = Duration::from_millis(2);
/// First and longest wait between write attempts while the file system is full.
const NO_SPACE_BACKOFF: (Duration, Duration) =
    (Duration::from_millis(10), Duration::from_millis(500));

/// Whether an I/O error means the file system (or the quota) has no space left.
pub(crate) fn is_no_space(e: &io::Error) -> bool {
    // ENOSPC, EDQUOT
    matches!(e.raw_os_error(), Some(28 | 122)) || e.kind() == io::ErrorKind::StorageFull
}

/// Records to append in order, with contiguous offsets: one `append`, or one chunk of a batch.
pub(crate) struct ChunkReq {
    /// The records, in order, encoded but for their offsets.
    pub records: EncodedRecords,
    /// Budget reserved for them, released by the writer.
    pub reserved: u64,
    /// Where the answer goes.
    pub reply: oneshot::Sender<ChunkAnswer>,
    /// Queue slot and queue bytes, held until the writer takes the request.
    pub permits: (OwnedSemaphorePermit, OwnedSemaphorePermit),
}

/// The writer's answer to a chunk: records `[0, written)` got offsets `first..first + written`
/// and are written; the others were refused for `error`.
#[derive(Debug)]
pub(crate) struct ChunkAnswer {
    /// Offset of the chunk's first record (if written).
    pub first: u64,
    /// How many records, from the start, were written.
    pub written: usize,
    /// Why the rest was refused (`None` when every record was written).
    pub error: Option<AppendError>,
}

/// What appenders and `close` send to the writer.
pub(crate) enum Msg {
    /// Records to append.
    Chunk(ChunkReq),
    /// Sync everything, stop, and answer.
    Close(oneshot::Sender<Result<(), LogError>>),
}

/// A chunk of the current batch, answered when the batch is done.
struct Pending {
    reply: oneshot::Sender<ChunkAnswer>,
    first: u64,
    count: usize,
    /// Records encoded into the buffer or written.
    staged: usize,
    /// Records written to the file.
    written: usize,
    error: Option<AppendError>,
}

/// The single writer.
pub(crate) struct Writer {
    ledger: Arc<Ledger>,
    rx: mpsc::Receiver<Msg>,
    active: Arc<Segment>,
    /// Bytes written to the active segment.
    active_len: u64,
    /// Size of the active segment file (beyond `active_len`: zeros written ahead when
    /// preallocating).
    file_len: u64,
    /// Runs the fdatasyncs and publishes durability, overlapping the next write.
    syncer: Syncer,
    /// The active segment's direct handle, with `sector_writes` where the file system allows.
    sectors: Option<SectorWriter>,
    /// `sector_writes` was asked for and not (or no longer) refused by the storage.
    sectors_wanted: bool,
    next_offset: u64,
    buf: Vec<u8>,
    pending: Vec<Pending>,
    batch_reserved: u64,
    /// Frames at the start of `buf` that are answered and wait for the next sync to be
    /// written (see the module's "Gathered writes").
    gathered: Gathered,
    /// Why the rest of the current batch is refused (no space, closing), if it is.
    batch_refusal: Option<AppendError>,
    /// Written since the last sync was requested.
    unsynced: bool,
    /// When the last sync was requested.
    last_sync: Instant,
    /// Bytes of frames written since the writer started (all segments).
    appended: u64,
    /// Whether `preallocate`'s zeros pay for themselves at the current load.
    zero_pacing: ZeroPacing,
    /// After the file system refused zeros (full), none are tried again before `appended`
    /// reaches this: a step of frames later, not at every write.
    zeros_again_at: u64,
    failed: Option<String>,
}

/// Answered frames in the buffer, not yet written (see the module's "Gathered writes").
#[derive(Debug, Default, Clone, Copy)]
struct Gathered {
    /// How many records.
    records: u64,
    /// Disk budget reserved for them, released once they are written (or dropped).
    reserved: u64,
}

/// What to do after the file system reported no space.
enum OnNoSpace {
    /// Try the same write again (space was freed, or the policy waits).
    Retry,
    /// Refuse what is staged (`WhenFull::Reject`, or the log is closing).
    Refuse(AppendError),
}

impl Writer {
    /// Starts the writer thread on the active segment; returns its queue and handle. The queue
    /// is unbounded: the caller bounds it (`Log`'s `slots` and `queue_bytes` semaphores, whose
    /// permits travel in each [`ChunkReq`]).
    pub fn spawn(
        ledger: Arc<Ledger>,
        active: Arc<Segment>,
        next_offset: u64,
    ) -> Result<(Sender<Msg>, JoinHandle<()>), LogError> {
        let (tx, rx) = mpsc::channel();
        let syncer = Syncer::spawn(ledger.clone(), next_offset)?;
        let file_len = active
            .file
            .size()
            .map_err(crate::segment::io_err("stat segment", &active.path))?
            .max(active.len());
        let zero_pacing = ZeroPacing::for_log(ledger.cfg(), ledger.storage());
        let mut writer = Writer {
            active_len: active.len(),
            file_len,
            syncer,
            sectors: None,
            sectors_wanted: ledger.cfg().sector_writes,
            ledger,
            rx,
            active,
            next_offset,
            buf: Vec::with_capacity(64 << 10),
            pending: Vec::new(),
            batch_reserved: 0,
            gathered: Gathered::default(),
            batch_refusal: None,
            unsynced: false,
            last_sync: Instant::now(),
            appended: 0,
            zero_pacing,
            zeros_again_at: 0,
            failed: None,
        };
        writer.open_sectors();
        let handle = std::thread::Builder::new()
            .name("edge-log-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| LogError::Writer {
                reason: e.to_string(),
            })?;
        Ok((tx, handle))
    }

    fn run(&mut self) {
        loop {
            // While a sync runs, wake up now and then to notice it failing (the failure is
            // only reported to appenders once what it dooms is cut back).
            let interval = match self.ledger.cfg().fsync {
                FsyncPolicy::Interval(d) if self.owes_sync() => {
                    Some((self.last_sync + d).saturating_duration_since(Instant::now()))
                }
                _ => None,
            };
            let watch = match self.syncer.status() {
                _ if self.failed.is_some() => None,
                (_, Some(cause)) => {
                    self.fail_with(cause);
                    None
                }
                (outstanding, None) => outstanding.then_some(SYNC_WATCH),
            };
            let timeout = match (interval, watch) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let first = match timeout {
                Some(wait) => match self.rx.recv_timeout(wait) {
                    Ok(m) => m,
                    Err(RecvTimeoutError::Timeout) => {
                        self.check_syncer();
                        if let FsyncPolicy::Interval(d) = self.ledger.cfg().fsync
                            && self.owes_sync()
                            && self.failed.is_none()
                            && self.last_sync.elapsed() >= d
                        {
                            self.sync_now();
                        }
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                },
                None => match self.rx.recv() {
                    Ok(m) => m,
                    Err(_) => break,
                },
            };
            let mut close = None;
            let mut next = Some(first);
            let mut batch_bytes = 0u64;
            while let Some(msg) = next {
                match msg {
                    Msg::Chunk(req) => {
                        batch_bytes += req.reserved;
                        self.stage(req);
                    }
                    Msg::Close(reply) => {
                        close = Some(reply);
                        break;
                    }
                }
                if batch_bytes >= MAX_BATCH_BYTES {
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
        if self.failed.is_none() {
            if self.owes_sync() {
                self.sync_now();
            }
            if let Err(cause) = self.syncer.wait(self.next_offset) {
                self.fail_with(cause);
            }
        }
        self.syncer.abandon();
        self.ledger.close();
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

    /// Sticky failure: nothing staged and not yet written will be; the ledger refuses appends
    /// and durability waits from now on. What was written but not synced is refused too, so
    /// it is cut back (best effort: with the disk failing, the cut itself may not stick).
    fn fail_with(&mut self, cause: String) {
        tracing::error!(%cause, "edge-log storage failure; refusing writes until reopen");
        // A sync already running publishes what it covers before the failure does, so no
        // record that became durable is reported refused; what will never be durable is cut
        // back before anyone hears it was refused.
        self.syncer.abandon();
        self.unstage();
        self.sectors = None;
        let synced = self.active.synced();
        if self.active_len > synced {
            match self.active.file.truncate(synced) {
                Ok(()) => {
                    self.ledger.shrank(self.active_len - synced);
                    self.active_len = synced;
                    self.file_len = synced;
                    self.active.cut(synced);
                }
                Err(e) => {
                    tracing::error!(segment = %self.active.path.display(), error = %e, "edge-log could not cut back records that will never be durable; a restart may find them");
                }
            }
        }
        self.ledger.fail(&cause);
        self.failed = Some(cause);
    }

    /// The file system is full: cut back, then free space the policy allows, wait, or refuse.
    fn on_no_space(&mut self, cause: &str, backoff: &mut Duration) -> OnNoSpace {
        if self.ledger.reclaim_for_space() {
            return OnNoSpace::Retry;
        }
        self.ledger.set_no_space(cause);
        if self.ledger.is_closing() {
            return OnNoSpace::Refuse(AppendError::Closed);
        }
        if self.ledger.cfg().when_full == WhenFull::Reject {
            return OnNoSpace::Refuse(AppendError::NoSpace {
                cause: cause.to_owned(),
            });
        }
        std::thread::sleep(*backoff);
        *backoff = (*backoff * 2).min(NO_SPACE_BACKOFF.1);
        OnNoSpace::Retry
    }

    /// Drops the frames in the buffer: their records get no offset. Gathered frames go too
    /// (only a sticky failure drops them: see the module's "Gathered writes").
    fn unstage(&mut self) {
        let gathered = std::mem::take(&mut self.gathered);
        self.ledger.release(gathered.reserved);
        let mut dropped = gathered.records;
        for p in &mut self.pending {
            dropped += (p.staged - p.written) as u64;
            p.staged = p.written;
        }
        self.next_offset -= dropped;
        self.active.forget_from(self.next_offset);
        self.buf.clear();
    }

    /// Stages a chunk: contiguous offsets, one answer. A failure stops the chunk where it
    /// happened (the records before it keep their offsets).
    fn stage(&mut self, req: ChunkReq) {
        let ChunkReq {
            records,
            reserved,
            reply,
            permits,
        } = req;
        // The queue space is free again once the request is taken off the queue.
        drop(permits);
        self.batch_reserved += reserved;
        self.check_syncer();
        self.pending.push(Pending {
            reply,
            first: self.next_offset,
            count: records.len(),
            staged: 0,
            written: 0,
            error: None,
        });
        let me = self.pending.len() - 1;
        for tail in records.tails() {
            if self.failed.is_some() || self.batch_refusal.is_some() {
                break;
            }
            let frame_len = format::tail_frame_len(self.next_offset, tail.len()) as u64;
            let filled = self.active_len + self.buf.len() as u64;
            if filled + frame_len > self.ledger.cfg().segment_bytes
                && filled > SEGMENT_HEADER_LEN as u64
                && !(self.flush() && self.roll())
            {
                break;
            }
            let pos = self.active_len + self.buf.len() as u64;
            if let Err(e) = format::encode_tail_frame(self.next_offset, tail, &mut self.buf) {
                self.pending[me].error = Some(AppendError::Storage {
                    cause: format!("encoding record failed: {e}"),
                });
                break;
            }
            self.active.note(self.next_offset, pos);
            self.next_offset += 1;
            self.pending[me].staged += 1;
        }
        // The records are framed (or refused): their room goes back for a later chunk.
        self.ledger.recycle_records(records);
    }

    /// Writes the buffer at the end of the active segment. False if nothing more can be written
    /// in this batch. When the file system is full, what was partly written is cut back first,
    /// then the policy decides: retry (space freed, or wait under `Block`/`DropOldest`) or
    /// refuse the staged records (`Reject`, closing): a refused record is never stored.
    fn flush(&mut self) -> bool {
        if self.failed.is_some() || self.batch_refusal.is_some() {
            return false;
        }
        if self.buf.is_empty() {
            return true;
        }
        let n = self.buf.len() as u64;
        self.preallocate(self.active_len + n);
        let mut backoff = NO_SPACE_BACKOFF.0;
        loop {
            let e = match self.write_out() {
                Ok(()) => break,
                Err(e) => e,
            };
            if !is_no_space(&e) {
                self.fail("write", &e);
                return false;
            }
            if let Err(te) = self.active.file.truncate(self.active_len) {
                self.fail("truncate after a failed write to", &te);
                return false;
            }
            self.file_len = self.active_len;
            let cause = format!("write {} failed: {e}", self.active.path.display());
            match self.on_no_space(&cause, &mut backoff) {
                OnNoSpace::Retry => {}
                // Gathered records were answered: wait for space rather than refuse them.
                OnNoSpace::Refuse(_) if self.gathered.records > 0 && !self.ledger.is_closing() => {
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(NO_SPACE_BACKOFF.1);
                }
                OnNoSpace::Refuse(AppendError::Closed) if self.gathered.records > 0 => {
                    self.fail_with(cause);
                    return false;
                }
                OnNoSpace::Refuse(refusal) => {
                    self.unstage();
                    self.batch_refusal = Some(refusal);
                    return false;
                }
            }
        }
        self.ledger.clear_no_space();
        self.active_len += n;
        self.file_len = self.file_len.max(self.active_len);
        self.active.set_len(self.active_len);
        self.ledger.grew(n);
        self.appended += n;
        self.buf.clear();
        self.unsynced = true;
        self.ledger
            .release(std::mem::take(&mut self.gathered).reserved);
        for p in &mut self.pending {
            p.written = p.staged;
        }
        true
    }

    /// Whether the current batch's frames may wait in the buffer for the interval's sync
    /// instead of being written now (see the module's "Gathered writes").
    fn may_gather(&self) -> bool {
        let FsyncPolicy::Interval(d) = self.ledger.cfg().fsync else {
            return false;
        };
        self.sectors.is_some()
            && self.failed.is_none()
            && self.batch_refusal.is_none()
            && !self.buf.is_empty()
            && self.buf.len() <= MAX_GATHERED_BYTES
            && self.last_sync.elapsed() < d
    }

    /// Zero-fills ahead for the buffer's frames; whether they now lie inside the zeros.
    fn zeroed_for_buffer(&mut self) -> bool {
        let need = self.active_len + self.buf.len() as u64;
        self.preallocate(need);
        need <= self.file_len
    }

    /// Answers the current batch's staged records without writing them: they are written by
    /// the next sync.
    fn gather(&mut self) {
        for p in &mut self.pending {
            self.gathered.records += (p.staged - p.written) as u64;
            p.written = p.staged;
        }
        self.gathered.reserved += std::mem::take(&mut self.batch_reserved);
    }

    /// Whether something written or gathered waits for a sync.
    fn owes_sync(&self) -> bool {
        self.unsynced || self.gathered.records > 0
    }

    /// Writes what is gathered, then hands everything written to the syncer.
    fn sync_now(&mut self) {
        if self.gathered.records > 0 && !self.flush() {
            return;
        }
        if self.unsynced {
            self.request_sync();
        }
    }

    /// Writes the buffer at the end of the active segment: as whole sectors through the direct
    /// handle when there is one, else through the page cache.
    fn write_out(&mut self) -> io::Result<()> {
        if let Some(sectors) = &mut self.sectors {
            match sectors.write(&self.buf, self.active_len)? {
                Sent::Sectors { start, end } => {
                    // The sectors' bytes around the new ones are written too.
                    let extra = (end - start).saturating_sub(self.buf.len() as u64);
                    let counters = &self.ledger.counters;
                    counters.bytes_written.fetch_add(extra, Ordering::Relaxed);
                    counters.sector_writes.fetch_add(1, Ordering::Relaxed);
                    self.file_len = self.file_len.max(end);
                    return Ok(());
                }
                Sent::Refused => {
                    tracing::warn!(segment = %self.active.path.display(), "edge-log: the file system refused a direct (O_DIRECT) write of whole 512-byte sectors; log.sector_writes is off until restart, writing through the page cache");
                    self.sectors = None;
                    self.sectors_wanted = false;
                }
            }
        }
        write_all_at(self.active.file.as_ref(), &self.buf, self.active_len)
    }

    /// Opens the active segment for sector writes, if they are wanted and available.
    fn open_sectors(&mut self) {
        self.sectors = None;
        if !self.sectors_wanted {
            return;
        }
        let seg = &self.active;
        match SectorWriter::open(
            self.ledger.storage(),
            &seg.path,
            seg.file.as_ref(),
            self.active_len,
        ) {
            Ok(Some(sectors)) => self.sectors = Some(sectors),
            Ok(None) => {
                tracing::warn!(dir = %self.ledger.cfg().dir.display(), "edge-log: no direct I/O (O_DIRECT) on this file system; log.sector_writes is off, writing through the page cache");
                self.sectors_wanted = false;
            }
            Err(e) => {
                tracing::warn!(segment = %seg.path.display(), error = %e, "edge-log could not open the segment for sector writes; writing through the page cache");
            }
        }
    }

    /// With `preallocate`, keeps the active segment zero-filled at least a step past `need`:
    /// once fewer zeros than [`PREALLOCATE_STEP`] are left beyond it, the file grows by the
    /// next step(s). The fdatasyncs in between overwrite initialised blocks only (no metadata
    /// to commit).
    ///
    /// The zeros lie a step ahead of the frames, not where the next frames land: a write into
    /// a page the running fdatasync is writing back waits for it (stable pages), so frames
    /// written into just-zeroed pages made bulk appends ~40% slower (BENCHMARKS.md). A step
    /// later, those zeros were written back long ago. With `preallocate` alone, only while the
    /// zeros pay ([`ZeroPacing`]). Best effort: if the zeros cannot be written (a full disk),
    /// the frames are written without them, and no zeros are tried again for a step of frames
    /// (near a full disk, each try writes what space is left and cuts it back).
    fn preallocate(&mut self, need: u64) {
        if need + PREALLOCATE_STEP <= self.file_len || self.appended < self.zeros_again_at {
            return;
        }
        let fsyncs = self.ledger.counters.fsyncs.load(Ordering::Relaxed);
        if !self.zero_pacing.zeros_pay(self.appended, fsyncs) {
            return;
        }
        let cfg = self.ledger.cfg();
        let end = need.div_ceil(PREALLOCATE_STEP) * PREALLOCATE_STEP + 2 * PREALLOCATE_STEP;
        let end = end.min(cfg.max_segment_file()).max(need);
        if end <= self.file_len {
            return;
        }
        match write_zeros(self.active.file.as_ref(), self.file_len..end) {
            Ok(()) => {
                self.ledger
                    .counters
                    .bytes_written
                    .fetch_add(end - self.file_len, Ordering::Relaxed);
                self.file_len = end;
            }
            Err(e) => {
                tracing::debug!(error = %e, "edge-log could not preallocate; writing without for a step");
                let _ = self.active.file.truncate(self.file_len);
                self.zeros_again_at = self.appended + PREALLOCATE_STEP;
            }
        }
    }

    /// Fails (sticky) if a sync failed.
    fn check_syncer(&mut self) {
        if self.failed.is_none()
            && let Some(cause) = self.syncer.failure()
        {
            self.fail_with(cause);
        }
    }

    /// Hands everything written so far to the syncer (returns at once).
    fn request_sync(&mut self) {
        self.syncer.request(Target {
            seg: self.active.clone(),
            len: self.active_len,
            end: self.next_offset,
        });
        self.unsynced = false;
        self.last_sync = Instant::now();
    }

    /// Seals the active segment (synced) and starts the next one at `next_offset`. A full file
    /// system is handled as in [`Writer::flush`] (the partly created file is removed).
    fn roll(&mut self) -> bool {
        // The old segment is synced before the next one exists, so a segment is only ever
        // followed by another once it is complete on disk.
        if self.unsynced {
            self.request_sync();
        }
        if let Err(cause) = self.syncer.wait(self.next_offset) {
            self.fail_with(cause);
            return false;
        }
        // A sealed segment ends at its last frame: drop the zeros written ahead.
        if self.file_len > self.active_len {
            if let Err(e) = self.active.file.truncate(self.active_len) {
                tracing::warn!(segment = %self.active.path.display(), error = %e, "edge-log could not drop the zeros after a sealed segment's last frame (readers skip them)");
            }
            self.file_len = self.active_len;
        }
        let dir = self.ledger.cfg().dir.clone();
        let mut backoff = NO_SPACE_BACKOFF.0;
        loop {
            match create_segment(
                self.ledger.storage(),
                &dir,
                self.next_offset,
                &self.ledger.counters.fsyncs,
            ) {
                Ok(seg) => {
                    self.ledger.clear_no_space();
                    self.ledger.push_segment(seg.clone());
                    self.active_len = seg.len();
                    self.file_len = seg.len();
                    self.active = seg;
                    self.open_sectors();
                    return true;
                }
                Err(LogError::Io { source, .. }) if is_no_space(&source) => {
                    let cause = format!("creating a segment in {} failed: {source}", dir.display());
                    if let OnNoSpace::Refuse(refusal) = self.on_no_space(&cause, &mut backoff) {
                        self.batch_refusal = Some(refusal);
                        return false;
                    }
                }
                Err(e) => {
                    self.fail_with(e.to_string());
                    return false;
                }
            }
        }
    }

    fn refusal(&self) -> AppendError {
        match (&self.failed, &self.batch_refusal) {
            (Some(cause), _) => AppendError::Storage {
                cause: cause.clone(),
            },
            (None, Some(refusal)) => refusal.clone(),
            (None, None) => AppendError::Closed,
        }
    }

    fn finish_batch(&mut self) {
        if self.may_gather() && self.zeroed_for_buffer() {
            self.gather();
        } else {
            self.flush();
        }
        self.check_syncer();
        self.ledger.publish_next(self.next_offset);
        self.ledger
            .release(std::mem::take(&mut self.batch_reserved));
        for p in std::mem::take(&mut self.pending) {
            let error = (p.written < p.count).then(|| p.error.unwrap_or_else(|| self.refusal()));
            let _ = p.reply.send(ChunkAnswer {
                first: p.first,
                written: p.written,
                error,
            });
        }
        self.batch_refusal = None;
        if self.failed.is_none() {
            match self.ledger.cfg().fsync {
                FsyncPolicy::Always if self.unsynced => self.request_sync(),
                FsyncPolicy::Interval(d) if self.owes_sync() && self.last_sync.elapsed() >= d => {
                    self.sync_now();
                }
                FsyncPolicy::Never => self.ledger.publish_durable(self.next_offset),
                _ => {}
            }
        }
        self.ledger.space().notify_waiters();
    }
}

/// Bytes of frames per fdatasync up to which `preallocate`'s zeros pay for themselves. A
/// journal commit, which the zeros spare each fdatasync, writes a few 4 KiB blocks and flushes
/// the device; the zeros cost their own bytes, written back by the next sync, and the writer's
/// CPU. At one QoS 1 publisher's pace (~11 KiB per sync) the syncs took half as long with
/// zeros; at NATS core's bulk pace the zeros took a quarter more of the writer's CPU
/// (BENCHMARKS.md, "Zeros ahead").
pub(crate) const ZEROS_PAY_UP_TO: u64 = 32 << 10;

/// Whether the writer keeps zeros ahead of the frames, decided once at start from the
/// configuration and the file system ([`ZeroPacing::for_log`]); with `preallocate` alone, again
/// once per step of frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ZeroPacing {
    /// No zeros: neither `preallocate` nor `sector_writes`, or `preallocate` on a
    /// copy-on-write file system, where no overwrite is in place.
    Never,
    /// `sector_writes`: its gathered frames must lie inside the zeros.
    Always,
    /// `preallocate`: zeros while the fdatasyncs since the last decision covered at most
    /// [`ZEROS_PAY_UP_TO`] of frames each (and at the start, before anything is known).
    Paced {
        /// The writer's appended bytes and the log's fdatasyncs at the last decision.
        appended_at: u64,
        fsyncs_at: u64,
        /// The last decision, kept until another step of frames is written.
        pays: bool,
    },
}

impl ZeroPacing {
    /// `preallocate` at the start: zeros until a step of frames says otherwise.
    pub(crate) const PACED: ZeroPacing = ZeroPacing::Paced {
        appended_at: 0,
        fsyncs_at: 0,
        pays: true,
    };

    /// What a log with `cfg` on `storage` does; says once (INFO) when the file system makes
    /// `preallocate` pointless.
    pub(crate) fn for_log(cfg: &LogConfig, storage: &dyn Storage) -> ZeroPacing {
        if cfg.sector_writes {
            return ZeroPacing::Always;
        }
        if !cfg.preallocate {
            return ZeroPacing::Never;
        }
        match storage.copy_on_write(&cfg.dir) {
            Some(fs) => {
                tracing::info!(dir = %cfg.dir.display(), file_system = fs, "edge-log: the log is on a copy-on-write file system, which never overwrites in place; log.preallocate spares nothing there and writes no zeros ahead");
                ZeroPacing::Never
            }
            None => ZeroPacing::PACED,
        }
    }

    /// Called when the zeros ahead run short, with the writer's appended bytes and the log's
    /// fdatasyncs so far: whether to write more.
    pub(crate) fn zeros_pay(&mut self, appended: u64, fsyncs: u64) -> bool {
        let ZeroPacing::Paced {
            appended_at,
            fsyncs_at,
            pays,
        } = self
        else {
            return *self == ZeroPacing::Always;
        };
        let bytes = appended.saturating_sub(*appended_at);
        if bytes < PREALLOCATE_STEP {
            return *pays;
        }
        let syncs = fsyncs.saturating_sub(*fsyncs_at);
        *appended_at = appended;
        *fsyncs_at = fsyncs;
        *pays = syncs > 0 && bytes / syncs <= ZEROS_PAY_UP_TO;
        *pays
    }
}

/// Bytes of zeros one write of [`Writer::preallocate`] sends (a step is written in chunks, so
/// preallocating never holds a step's worth of memory).
const ZERO_CHUNK: usize = 64 << 10;

/// Writes zeros over `range` of `file`.
fn write_zeros(file: &dyn StorageFile, range: Range<u64>) -> io::Result<()> {
    let chunk = vec![0u8; (range.end - range.start).min(ZERO_CHUNK as u64) as usize];
    let mut pos = range.start;
    while pos < range.end {
        let n = (range.end - pos).min(chunk.len() as u64) as usize;
        write_all_at(file, &chunk[..n], pos)?;
        pos += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const STEP: u64 = PREALLOCATE_STEP;

    #[test]
    fn zeros_pay_at_the_start_and_while_syncs_are_small() {
        let mut p = ZeroPacing::PACED;
        assert!(p.zeros_pay(0, 0), "nothing known yet");
        assert!(p.zeros_pay(STEP - 1, 0), "decided once per step of frames");
        // A step in syncs of 32 KiB: they pay.
        assert!(p.zeros_pay(STEP, STEP / ZEROS_PAY_UP_TO));
        // The next step in syncs of 64 KiB: they do not, until another step is written.
        let syncs = STEP / ZEROS_PAY_UP_TO + STEP / (64 << 10);
        assert!(!p.zeros_pay(2 * STEP, syncs));
        assert!(!p.zeros_pay(3 * STEP - 1, syncs + 1000));
        // Small syncs again over that step: they pay again.
        assert!(p.zeros_pay(3 * STEP, syncs + 1000));
    }

    #[test]
    fn zeros_do_not_pay_when_a_step_was_written_without_a_sync() {
        let mut p = ZeroPacing::PACED;
        assert!(!p.zeros_pay(STEP, 0), "fsync = never, or a long interval");
        assert!(!p.zeros_pay(STEP + 100, 5));
        assert!(p.zeros_pay(2 * STEP + 100, 5 + STEP / 4096));
    }
}
