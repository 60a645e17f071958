//! The append API: [`Log`] opens a directory (recovery, then the writer thread), queues
//! appends and ordered batches for the writer with the disk budget reserved first, exposes
//! backpressure ([`Log::has_room`], [`Log::room`]), cursors, stats and close.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Sender;
use std::thread::JoinHandle;

use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use crate::batch::{Appended, Chunk, ChunkState, SubmittedBatch};
use crate::config::{LogConfig, WhenFull};
use crate::cursor::Cursor;
use crate::cursor_store::{CursorFiles, valid_name};
use crate::encoded::{self, EncodedRecords};
use crate::error::{AppendError, LogError};
use crate::format::FRAME_HEADER_LEN;
use crate::health::LogHealth;
use crate::ledger::{FSYNC_BUCKETS, Ledger};
use crate::record::NewRecord;
use crate::recovery::{self, RecoveryReport};
use crate::segment::io_err;
use crate::storage::{StdStorage, Storage};
use crate::writer::{ChunkAnswer, ChunkReq, Msg, Writer};

/// Chunks queued between appenders and the writer thread at most. The `slots` semaphore holds
/// the bound (a chunk carries its permit to the writer), so the channel itself is unbounded and
/// allocates as it fills: a bounded `sync_channel(1024)` wrote every slot's stamp up front,
/// 104 KiB resident in an idle broker (BENCHMARKS.md "Footprint").
const QUEUE_SLOTS: usize = 1024;
/// Queued bytes between appenders and the writer thread (raised to fit one max record).
const QUEUE_BYTES: u64 = 16 << 20;

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
    /// fdatasync calls on segment files (those of the histogram below, plus segment creation
    /// and recovery).
    pub fsyncs: u64,
    /// Bytes written to segment files (headers, frames, and the zeros written ahead with
    /// `preallocate`).
    pub bytes_written: u64,
    /// Writes sent to segments as whole 512-byte sectors through the direct handle
    /// (`sector_writes`; stays 0 where the file system refused it).
    pub sector_writes: u64,
    /// Records the last open could not keep because of damage in the tail segment (skipped in
    /// the middle, or retired with a damaged end); the offsets are in the
    /// [`RecoveryReport`]. Readers count what they skip later in `corrupt_skipped`.
    pub recovery_skipped: u64,
    /// Latency of the fdatasyncs that make appends durable.
    pub fsync_latency: FsyncLatency,
}

/// A histogram of fdatasync latency (the syncs that make appends durable), for a Prometheus
/// histogram: `buckets[i]` counts syncs that took at most [`FsyncLatency::BOUNDS`]`[i]`
/// seconds and more than the bound before (not cumulative); the last bucket is everything
/// slower than the last bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FsyncLatency {
    /// Syncs per bucket.
    pub buckets: [u64; FSYNC_BUCKETS.len() + 1],
    /// Number of syncs.
    pub count: u64,
    /// Total time, microseconds.
    pub sum_micros: u64,
}

impl FsyncLatency {
    /// Upper bounds of the buckets, in seconds (the last bucket is +Inf).
    pub const BOUNDS: [f64; FSYNC_BUCKETS.len()] = FSYNC_BUCKETS;

    /// Cumulative counts (`le` buckets of a Prometheus histogram), +Inf last.
    pub fn cumulative(&self) -> [u64; FSYNC_BUCKETS.len() + 1] {
        let mut out = self.buckets;
        for i in 1..out.len() {
            out[i] += out[i - 1];
        }
        out
    }

    /// The smallest bucket bound at or above the `q` quantile (0..=1), in seconds; +Inf if it
    /// falls in the last bucket, 0 if there were no syncs.
    pub fn quantile(&self, q: f64) -> f64 {
        if self.count == 0 {
            return 0.0;
        }
        let want = (q * self.count as f64).ceil().max(1.0) as u64;
        let cumulative = self.cumulative();
        match cumulative.iter().position(|&c| c >= want) {
            Some(i) if i < FSYNC_BUCKETS.len() => FSYNC_BUCKETS[i],
            _ => f64::INFINITY,
        }
    }
}

#[derive(Debug)]
struct LogInner {
    ledger: Arc<Ledger>,
    files: Arc<CursorFiles>,
    tx: Mutex<Option<Sender<Msg>>>,
    slots: Arc<Semaphore>,
    queue_bytes: Arc<Semaphore>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for LogInner {
    fn drop(&mut self) {
        self.ledger.start_closing();
        self.tx.lock().take();
        if let Some(h) = self.writer.lock().take() {
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

/// Returns reserved budget if an append is cancelled before reaching the writer.
struct Reservation<'a> {
    ledger: &'a Ledger,
    bytes: u64,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.ledger.release(self.bytes);
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
        let files = Arc::new(CursorFiles::new(storage.clone(), cursor_dir));
        let loaded = files.load_all()?;
        let mut cursors = loaded.positions;
        let mut recovered = recovery::recover(&config, storage.as_ref(), &cursors)?;
        // A cursor whose file has no valid copy resumes at the oldest retained offset: it
        // resends what is still here rather than skip anything (never stops the open).
        let oldest = recovered.report.oldest_offset;
        for mut damaged in loaded.damaged {
            damaged.resumed_at = oldest;
            tracing::error!(cursor = %damaged.name, path = %damaged.path.display(), reason = %damaged.reason, resumed_at = oldest, "edge-log cursor file has no valid copy; the cursor resends from the oldest retained offset");
            if let Err(e) = files.commit(&damaged.name, oldest) {
                tracing::error!(cursor = %damaged.name, error = %e, "edge-log could not rewrite a damaged cursor file");
            }
            cursors.insert(damaged.name.clone(), oldest);
            recovered.report.cursors += 1;
            recovered.report.cursors_damaged.push(damaged);
        }
        recovered.report.cursor_copies_damaged = loaded.one_copy_damaged;
        let active = recovered
            .segments
            .last()
            .cloned()
            .ok_or_else(|| LogError::Writer {
                reason: "no active segment after recovery".into(),
            })?;
        let ledger = Arc::new(Ledger::new(
            config.clone(),
            storage,
            recovered.segments,
            cursors,
            recovered.next_offset,
            recovered.fsyncs,
        ));
        ledger
            .counters
            .recovery_skipped
            .store(recovered.report.records_skipped(), Ordering::Relaxed);
        ledger.retain();
        let (tx, handle) = Writer::spawn(ledger.clone(), active, recovered.next_offset)?;
        let queue_bytes = queue_capacity(&config) as usize;
        Ok((
            Log {
                inner: Arc::new(LogInner {
                    ledger,
                    files,
                    tx: Mutex::new(Some(tx)),
                    slots: Arc::new(Semaphore::new(QUEUE_SLOTS)),
                    queue_bytes: Arc::new(Semaphore::new(queue_bytes)),
                    writer: Mutex::new(Some(handle)),
                }),
            },
            recovered.report,
        ))
    }

    /// Appends one record: resolves once it is written (or, with `sector_writes` under an
    /// interval policy, gathered to be written by the next sync) and has an offset (waits for space
    /// under `WhenFull::Block`; other tasks keep running). Dropping the future while it waits
    /// for space appends nothing; dropping it after the record was queued may still append it.
    ///
    /// Concurrent `append` futures (even of one task) may reach the writer in any order; use
    /// [`Log::submit_many`] / [`Log::append_many`] when records must keep their order.
    pub async fn append(&self, record: NewRecord) -> Result<Appended, AppendError> {
        let mut records = EncodedRecords::new();
        let tail = records.push_record(&record);
        let need = self.frame_len_checked(tail)?;
        let rx = self.inner.ledger.subscribe();
        let reply = self.queue(records, need).await?;
        let answer = reply.await.map_err(|_| AppendError::Closed)?;
        match answer {
            ChunkAnswer {
                first, written: 1, ..
            } => Ok(Appended { offset: first, rx }),
            ChunkAnswer { error, .. } => Err(error.unwrap_or(AppendError::Closed)),
        }
    }

    /// Queues `records` for the writer **in order**, as one hand-off per chunk (a chunk holds
    /// up to [`Log::max_chunk_bytes`] of frames, so ordinary batches are one chunk), and
    /// resolves once every chunk is queued; [`SubmittedBatch::written`] then yields the offsets.
    ///
    /// Ordering: the accepted records of one batch get increasing offsets in the order given,
    /// contiguous within a chunk; batches submitted one after the other by one caller (each
    /// `submit_many` awaited before the next starts) are appended in that order. Nothing is
    /// dropped silently: every record gets an outcome in [`crate::AppendedBatch::outcomes`]:
    /// - a record over `max_record_bytes` is refused alone (`AppendError::TooLarge`), the others
    ///   are appended;
    /// - the disk budget is reserved per chunk: under `WhenFull::Block` this waits for space
    ///   (the caller is held back, which is the backpressure); under `Reject` a chunk that does
    ///   not fit is refused whole (`AppendError::Full` for each of its records);
    /// - a sticky storage failure or a closed log refuses the chunks not yet written; a
    ///   failure while a chunk is being written refuses the records of it not yet written
    ///   (those written before keep their offsets but never become durable, as with
    ///   [`Log::append`]).
    ///
    /// Dropping the future while it waits appends the chunks already queued and none after.
    /// The records are encoded on the caller's thread: [`Log::submit_encoded`].
    pub async fn submit_many(&self, records: Vec<NewRecord>) -> SubmittedBatch {
        let bytes = records.iter().map(encoded::tail_len).sum();
        let mut encoded = self.encoded_records(records.len(), bytes);
        for record in &records {
            encoded.push_record(record);
        }
        self.submit_encoded(encoded).await
    }

    /// [`Log::submit_many`] for records the caller encoded ([`EncodedRecords`]): the writer
    /// only frames them. Every promise of [`Log::submit_many`] holds.
    pub async fn submit_encoded(&self, records: EncodedRecords) -> SubmittedBatch {
        let limit = self.max_chunk_bytes();
        let len = records.len();
        let mut refused = Vec::new();
        let mut chunks = Vec::new();
        let rx = self.inner.ledger.subscribe();
        // The usual case: every record fits and the batch is one chunk; hand it over as it is.
        let mut total = 0u64;
        let mut fits = 0;
        for tail in records.tails() {
            match self.frame_len_checked(tail.len()) {
                Ok(need) if total + need <= limit => {
                    total += need;
                    fits += 1;
                }
                _ => break,
            }
        }
        if fits == len {
            if len > 0 {
                chunks.push(self.queue_chunk(records, total).await);
            }
            return SubmittedBatch {
                len,
                refused,
                chunks,
                rx,
            };
        }
        // A record too large, or more than a chunk: the tails are copied into chunks.
        let mut cur = EncodedRecords::new();
        let mut cur_bytes = 0u64;
        for (i, tail) in records.tails().enumerate() {
            let need = match self.frame_len_checked(tail.len()) {
                Ok(need) => need,
                Err(e) => {
                    refused.push((i, e));
                    continue;
                }
            };
            if !cur.is_empty() && cur_bytes + need > limit {
                let full = std::mem::take(&mut cur);
                chunks.push(self.queue_chunk(full, cur_bytes).await);
                cur_bytes = 0;
            }
            cur.push_tail(tail);
            cur_bytes += need;
        }
        if !cur.is_empty() {
            chunks.push(self.queue_chunk(cur, cur_bytes).await);
        }
        SubmittedBatch {
            len,
            refused,
            chunks,
            rx,
        }
    }

    /// An empty [`EncodedRecords`] to collect a later [`Log::submit_encoded`] in, with room for
    /// at least `records` records of `bytes` tail bytes: one the writer emptied if the log kept
    /// one (no allocation, and no fresh pages, on the submitting thread), else a new one. Room
    /// for the bytes up front spares a batch growing its buffer by doubling, each time copied
    /// (a tenth of a NATS connection task's instructions, counted by callgrind).
    pub fn encoded_records(&self, records: usize, bytes: usize) -> EncodedRecords {
        match self.inner.ledger.take_spare_records() {
            Some(mut spare) => {
                spare.reserve(records, bytes);
                spare
            }
            None => EncodedRecords::with_capacity(records, bytes),
        }
    }

    /// [`Log::submit_many`], then waits until the batch is written ([`SubmittedBatch::written`]).
    pub async fn append_many(&self, records: Vec<NewRecord>) -> crate::AppendedBatch {
        self.submit_many(records).await.written().await
    }

    /// Largest chunk [`Log::submit_many`] hands to the writer at once (bytes of frames).
    pub fn max_chunk_bytes(&self) -> u64 {
        let cfg = self.inner.ledger.cfg();
        let one = u64::from(cfg.max_record_bytes) + FRAME_HEADER_LEN as u64;
        cfg.segment_bytes.max(one).min(queue_capacity(cfg))
    }

    /// Bytes a record whose tail is `tail_len` bytes takes on disk (at most), or `TooLarge`.
    fn frame_len_checked(&self, tail_len: usize) -> Result<u64, AppendError> {
        let max = self.inner.ledger.cfg().max_record_bytes;
        let frame = encoded::frame_len_max(tail_len) as u64;
        let body = frame - FRAME_HEADER_LEN as u64;
        if body > u64::from(max) {
            return Err(AppendError::TooLarge { size: body, max });
        }
        Ok(frame)
    }

    async fn queue_chunk(&self, records: EncodedRecords, need: u64) -> Chunk {
        let count = records.len();
        Chunk {
            count,
            state: match self.queue(records, need).await {
                Ok(rx) => ChunkState::Queued(rx),
                Err(e) => ChunkState::Refused(e),
            },
        }
    }

    /// Reserves `need` bytes of budget and queue space (waiting as the policy says), then
    /// hands the chunk to the writer. Returns the receiver of the writer's answer.
    async fn queue(
        &self,
        records: EncodedRecords,
        need: u64,
    ) -> Result<oneshot::Receiver<ChunkAnswer>, AppendError> {
        let ledger = self.inner.ledger.as_ref();
        loop {
            let notified = ledger.space().notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match ledger.try_reserve(need) {
                Ok(()) => break,
                Err(AppendError::Full { .. })
                    if ledger.cfg().when_full == WhenFull::Block
                        || (ledger.cfg().when_full == WhenFull::DropOldest
                            && ledger.has_reservations()) =>
                {
                    // DropOldest only waits when queued appends hold the budget: the writer
                    // releases it within one batch.
                    notified.await;
                }
                Err(e) => return Err(e),
            }
        }
        let reservation = Reservation {
            ledger,
            bytes: need,
        };
        let slot = self
            .inner
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| AppendError::Closed)?;
        let permits = need.min(queue_capacity(ledger.cfg()));
        let bytes_permit: OwnedSemaphorePermit = self
            .inner
            .queue_bytes
            .clone()
            .acquire_many_owned(u32::try_from(permits).unwrap_or(u32::MAX))
            .await
            .map_err(|_| AppendError::Closed)?;
        let (reply, reply_rx) = oneshot::channel();
        let tx = self.inner.tx.lock().clone().ok_or(AppendError::Closed)?;
        tx.send(Msg::Chunk(ChunkReq {
            records,
            reserved: need,
            reply,
            permits: (slot, bytes_permit),
        }))
        .map_err(|_| AppendError::Closed)?;
        std::mem::forget(reservation);
        Ok(reply_rx)
    }

    /// Whether the disk budget has room for `bytes` more bytes of frames right now (counting
    /// the sealed segments the `when_full` policy would delete to make room): an append of
    /// records whose [`NewRecord::encoded_len`] sum to `bytes` would neither wait (`Block`) nor
    /// be refused as full (`Reject`). False once the log failed or closed. The answer can change
    /// as soon as it is given (other appenders, commits); use it to decide whether to take more
    /// input, not as a reservation.
    pub fn has_room(&self, bytes: u64) -> bool {
        self.inner.ledger.has_room(bytes)
    }

    /// Resolves once [`Log::has_room`]`(bytes)` is true, or at once if the log failed or
    /// closed (the next append then says why). Cancel-safe: drop it to stop waiting.
    pub async fn room(&self, bytes: u64) {
        let ledger = self.inner.ledger.as_ref();
        loop {
            let notified = ledger.space().notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if ledger.has_room(bytes) || ledger.is_done() {
                return;
            }
            notified.await;
        }
    }

    /// Opens (or creates at the oldest offset) a named cursor, persisted under `dir/cursors`.
    pub fn cursor(&self, name: &str) -> Result<Cursor, LogError> {
        Cursor::open(self.inner.ledger.clone(), self.inner.files.clone(), name)
    }

    /// Deletes a persisted cursor (it no longer holds back retention). Fails if a handle is open.
    pub fn remove_cursor(&self, name: &str) -> Result<(), LogError> {
        if !valid_name(name) {
            return Err(LogError::InvalidCursorName { name: name.into() });
        }
        let ledger = &self.inner.ledger;
        if ledger.forget_cursor(name)? {
            self.inner.files.remove(name)?;
            ledger.retain();
        }
        Ok(())
    }

    /// Counters and gauges for metrics.
    pub fn stats(&self) -> LogStats {
        let ledger = &self.inner.ledger;
        let snap = ledger.snapshot();
        let next = ledger.next_offset();
        let c = &ledger.counters;
        LogStats {
            bytes: snap.bytes,
            segments: snap.segments,
            records: next.saturating_sub(snap.oldest),
            oldest_offset: snap.oldest,
            next_offset: next,
            durable_end: ledger.durable_end(),
            dropped_records: c.dropped_records.load(Ordering::Relaxed),
            corrupt_skipped: c.corrupt_skipped.load(Ordering::Relaxed),
            fsyncs: c.fsyncs.load(Ordering::Relaxed),
            bytes_written: c.bytes_written.load(Ordering::Relaxed),
            sector_writes: c.sector_writes.load(Ordering::Relaxed),
            recovery_skipped: c.recovery_skipped.load(Ordering::Relaxed),
            fsync_latency: {
                let buckets: [u64; FSYNC_BUCKETS.len() + 1] =
                    std::array::from_fn(|i| c.fsync_buckets[i].load(Ordering::Relaxed));
                FsyncLatency {
                    count: buckets.iter().sum(),
                    buckets,
                    sum_micros: c.fsync_micros.load(Ordering::Relaxed),
                }
            },
        }
    }

    /// Offset one past the last durable record (what readers may see).
    pub fn durable_end(&self) -> u64 {
        self.inner.ledger.durable_end()
    }

    /// Whether the log takes appends now: `Ok`; `Full` (the budget or the disk: appends wait
    /// or are refused, and it heals by itself when space returns); `Failed` (a write or
    /// fdatasync failed: every append is refused until reopen); `Closed`. For readiness and
    /// `/healthz`; see [`LogHealth`].
    pub fn health(&self) -> LogHealth {
        self.inner.ledger.health()
    }

    /// The storage failure that stopped appends (sticky until reopen), if any.
    pub fn failure(&self) -> Option<String> {
        self.inner.ledger.failure()
    }

    /// The configuration the log was opened with.
    pub fn config(&self) -> &LogConfig {
        self.inner.ledger.cfg()
    }

    /// Flushes and syncs everything written, stops the writer; later appends fail with `Closed`.
    pub async fn close(&self) -> Result<(), LogError> {
        self.inner.ledger.start_closing();
        let Some(tx) = self.inner.tx.lock().take() else {
            return Ok(());
        };
        let (reply, rx) = oneshot::channel();
        // The channel is unbounded (the `slots` semaphore bounds chunks): this never blocks.
        if tx.send(Msg::Close(reply)).is_err() {
            return Err(LogError::Closed);
        }
        rx.await.map_err(|_| LogError::Writer {
            reason: "writer exited before confirming close".into(),
        })?
    }
}

/// Bytes the queue between appenders and the writer holds (at least one maximal record).
fn queue_capacity(cfg: &LogConfig) -> u64 {
    QUEUE_BYTES.max(u64::from(cfg.max_record_bytes) + 64)
}
