//! The journal writer: records appended under the caller's lock, one writer thread, group
//! commit, durability tickets, generations and their retirement.
//!
//! Appending only encodes into memory (no I/O, no waiting), so it may run under a session's
//! or the retained store's lock: that lock is what orders one entity's records. The writer
//! thread takes everything appended so far, writes it, makes it durable with one
//! `fdatasync` (policy `always`) and advances [`Journal::durable_position`]; a [`Commit`]
//! resolves once the position it was taken at is durable. A write or sync error is sticky:
//! nothing is reported durable after it.

use std::cell::Cell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use edge_log::storage::write_all_at;
use edge_log::{FsyncPolicy, Storage, StorageFile};
use tokio::sync::watch;

use super::file::{self, FileHeader, FrameBuf, HEADER_LEN};
use super::record::Record;
use crate::message::Message;

/// A generation is compacted (a checkpoint starts a new one) once it holds more than this
/// many bytes and more than twice what the previous checkpoint wrote.
pub const COMPACT_MIN_BYTES: u64 = 4 << 20;
/// Appended bytes not yet written above which [`Journal::backlogged`] says so (writers of
/// new state should wait) and a checkpoint pauses.
pub const BACKLOG_BYTES: u64 = 8 << 20;

/// Why the journal cannot make changes durable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JournalError {
    /// A write, sync or file operation failed; the journal refuses to report anything durable
    /// from then on (until the broker restarts).
    #[error("state journal failed: {0}")]
    Failed(String),
    /// The journal was closed before the change became durable.
    #[error("state journal closed")]
    Closed,
}

/// How far the writer got.
#[derive(Debug, Clone, Default)]
struct Progress {
    durable: u64,
    failed: Option<String>,
    closed: bool,
}

/// What the writer thread is handed, in order.
#[derive(Debug)]
enum Item {
    /// A sealed frame and the logical position just past it.
    Frame(Vec<u8>, u64),
    /// Start generation `n` (in a new file).
    Rotate(u64),
    /// Generation `n` holds a complete checkpoint: make it durable, give it its final name and
    /// delete every older generation.
    Retire(u64),
}

/// Per-generation ids of messages, so a message queued for many sessions is written once.
/// Keys are the address of the shared message; the `Weak` keeps that address from being
/// reused while the entry exists, so an entry always means the same message.
#[derive(Debug, Default)]
struct MessageIds {
    next: u64,
    by_address: HashMap<usize, (u64, Weak<Message>)>,
    sweep_above: usize,
}

impl MessageIds {
    /// The message's id, and whether it is new in this generation (then it must be defined).
    fn id(&mut self, message: &Arc<Message>) -> (u64, bool) {
        let address = Arc::as_ptr(message) as usize;
        if let Some((id, _)) = self.by_address.get(&address) {
            return (*id, false);
        }
        if self.by_address.len() >= self.sweep_above {
            self.by_address
                .retain(|_, (_, weak)| weak.strong_count() > 0);
            self.sweep_above = (self.by_address.len() * 2).max(1024);
        }
        let id = self.next;
        self.next += 1;
        self.by_address
            .insert(address, (id, Arc::downgrade(message)));
        (id, true)
    }
}

/// The appending side, behind the journal's lock.
#[derive(Debug)]
struct Appender {
    items: Vec<Item>,
    frame: FrameBuf,
    /// Logical bytes appended (frames, headers included) since the journal opened.
    position: u64,
    /// Logical bytes appended and not yet taken by the writer.
    pending: u64,
    generation: u64,
    generation_start: u64,
    messages: MessageIds,
    checkpoint_running: bool,
    last_checkpoint_bytes: u64,
    closing: bool,
    encode_failure: Option<String>,
}

impl Appender {
    fn push(&mut self, record: &Record) {
        if self.frame.is_empty() {
            self.position += file::FRAME_HEADER_LEN as u64;
            self.pending += file::FRAME_HEADER_LEN as u64;
        }
        match self.frame.push(record) {
            Ok(n) => {
                self.position += n as u64;
                self.pending += n as u64;
            }
            Err(err) => {
                self.encode_failure
                    .get_or_insert_with(|| format!("encoding a record failed: {err}"));
            }
        }
        if self.frame.len() >= file::FRAME_TARGET {
            self.seal();
        }
    }

    fn seal(&mut self) {
        if self.frame.is_empty() {
            return;
        }
        let frame = std::mem::take(&mut self.frame);
        match frame.seal() {
            Some(bytes) => self.items.push(Item::Frame(bytes, self.position)),
            None => {
                self.encode_failure
                    .get_or_insert_with(|| "a frame above 4 GiB".to_owned());
            }
        }
    }
}

/// Encodes records for [`Journal::append`]; defines messages on first use in a generation.
pub struct Encoder<'a> {
    appender: &'a mut Appender,
}

impl Encoder<'_> {
    /// The id of `message` in this generation, writing its definition first if it has none.
    pub fn message(&mut self, message: &Arc<Message>) -> u64 {
        let (id, new) = self.appender.messages.id(message);
        if new {
            self.appender.push(&Record::Message {
                id,
                message: message.as_ref().into(),
            });
        }
        id
    }

    /// Appends a record.
    pub fn record(&mut self, record: &Record) {
        self.appender.push(record);
    }
}

/// Counters of the journal, rendered on `/metrics`.
#[derive(Debug, Default)]
pub struct JournalStats {
    /// Bytes written to journal files (flash wear).
    pub bytes_written: AtomicU64,
    /// `fdatasync` calls.
    pub fsyncs: AtomicU64,
    /// Checkpoints completed (startup included).
    pub checkpoints: AtomicU64,
    /// Bytes of the journal files on disk now.
    pub disk_bytes: AtomicU64,
}

#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    storage: Arc<dyn Storage>,
    fsync: FsyncPolicy,
    incarnation: u64,
    appender: Mutex<Appender>,
    /// Signalled when there is work for the writer.
    work: Condvar,
    /// Signalled by the writer after every batch.
    done: Condvar,
    progress: watch::Sender<Progress>,
    stats: JournalStats,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Appender> {
        self.appender.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for the writer to finish a batch (or 100 ms: a wakeup may come between the
    /// caller's check and its wait).
    fn wait_done<'a>(&self, appender: MutexGuard<'a, Appender>) -> MutexGuard<'a, Appender> {
        self.done
            .wait_timeout(appender, Duration::from_millis(100))
            .map(|(guard, _)| guard)
            .unwrap_or_else(|p| p.into_inner().0)
    }
}

thread_local! {
    /// The journal (address of its shared part) and the highest position appended on this
    /// thread inside [`Journal::collect`].
    static COLLECTING: Cell<Option<(usize, u64)>> = const { Cell::new(None) };
}

/// The state journal of one data directory.
#[derive(Debug)]
pub struct Journal {
    shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

/// Waits for a journal position to become durable (cheap to clone and keep).
#[derive(Debug, Clone)]
pub struct Commit {
    position: u64,
    progress: watch::Receiver<Progress>,
}

impl Commit {
    /// The position this ticket waits for.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Whether it is durable already.
    pub fn is_durable(&self) -> bool {
        self.progress.borrow().durable >= self.position
    }

    /// The later of two tickets of the same journal.
    pub fn max(self, other: Commit) -> Commit {
        if other.position > self.position {
            other
        } else {
            self
        }
    }

    /// Resolves once everything appended up to the ticket's position is durable.
    pub async fn durable(&self) -> Result<(), JournalError> {
        let mut rx = self.progress.clone();
        let position = self.position;
        let seen = rx
            .wait_for(|p| p.durable >= position || p.failed.is_some() || p.closed)
            .await
            .map(|p| p.clone())
            .unwrap_or_else(|_| self.progress.borrow().clone());
        if seen.durable >= position {
            Ok(())
        } else if let Some(cause) = seen.failed {
            Err(JournalError::Failed(cause))
        } else {
            Err(JournalError::Closed)
        }
    }
}

impl Journal {
    /// Starts generation `generation` in `dir`, in a `.tmp` file that gets its final name
    /// when its first checkpoint is complete ([`Journal::end_checkpoint`]); older generations
    /// are deleted then. `incarnation` identifies this process in the file headers.
    pub fn create(
        storage: Arc<dyn Storage>,
        dir: &Path,
        fsync: FsyncPolicy,
        generation: u64,
        incarnation: u64,
    ) -> Result<Journal, JournalError> {
        let fail = |op: &str, e: std::io::Error| {
            JournalError::Failed(format!("{op} in {}: {e}", dir.display()))
        };
        storage
            .create_dir_all(dir)
            .map_err(|e| fail("creating the directory", e))?;
        let path = tmp_path(dir, generation);
        let file = storage
            .create(&path)
            .map_err(|e| fail("creating a journal file", e))?;
        let header = FileHeader {
            generation,
            incarnation,
        }
        .encode();
        write_all_at(file.as_ref(), &header, 0).map_err(|e| fail("writing a header", e))?;
        let (progress, _) = watch::channel(Progress::default());
        let shared = Arc::new(Shared {
            dir: dir.to_owned(),
            storage,
            fsync,
            incarnation,
            appender: Mutex::new(Appender {
                items: Vec::new(),
                frame: FrameBuf::default(),
                position: 0,
                pending: 0,
                generation,
                generation_start: 0,
                messages: MessageIds::default(),
                checkpoint_running: true,
                last_checkpoint_bytes: 0,
                closing: false,
                encode_failure: None,
            }),
            work: Condvar::new(),
            done: Condvar::new(),
            progress,
            stats: JournalStats::default(),
        });
        shared
            .stats
            .bytes_written
            .fetch_add(HEADER_LEN as u64, Ordering::Relaxed);
        let mut writer = Writer {
            shared: Arc::clone(&shared),
            file,
            path,
            generation,
            file_len: HEADER_LEN as u64,
            older_bytes: 0,
            written: 0,
            unsynced: true,
            last_sync: Instant::now(),
            retire: None,
            failed: None,
        };
        let handle = std::thread::Builder::new()
            .name("edge-state-journal".into())
            .spawn(move || writer.run())
            .map_err(|e| fail("starting the writer thread", e))?;
        Ok(Journal {
            shared,
            writer: Mutex::new(Some(handle)),
        })
    }

    /// Encodes records (through `f`) at the end of the journal; returns the position just
    /// past them. Never blocks on I/O.
    pub fn append(&self, f: impl FnOnce(&mut Encoder<'_>)) -> u64 {
        let (position, first) = {
            let mut appender = self.shared.lock();
            // The writer takes everything at once and checks for more (under this lock)
            // before it waits: only the first append after a take needs to wake it.
            let first = appender.pending == 0;
            f(&mut Encoder {
                appender: &mut appender,
            });
            (appender.position, first)
        };
        if first {
            self.shared.work.notify_one();
        }
        let me = Arc::as_ptr(&self.shared) as usize;
        COLLECTING.with(|c| {
            if let Some((journal, max)) = c.get()
                && journal == me
            {
                c.set(Some((journal, max.max(position))));
            }
        });
        position
    }

    /// Runs `f` and returns what it appended to this journal on this thread, as a ticket
    /// (`None`: nothing).
    pub fn collect<R>(&self, f: impl FnOnce() -> R) -> (R, Option<Commit>) {
        let me = Arc::as_ptr(&self.shared) as usize;
        let outer = COLLECTING.with(|c| c.replace(Some((me, 0))));
        let result = f();
        let collected = COLLECTING.with(|c| c.replace(outer));
        let commit = match collected {
            Some((_, position)) if position > 0 => Some(self.commit_at(position)),
            _ => None,
        };
        if let (Some((journal, max)), Some(commit)) = (outer, &commit)
            && journal == me
        {
            COLLECTING.with(|c| c.set(Some((journal, max.max(commit.position)))));
        }
        (result, commit)
    }

    /// A ticket for everything appended so far.
    pub fn commit(&self) -> Commit {
        let position = self.shared.lock().position;
        self.commit_at(position)
    }

    /// A ticket for everything appended up to `position`.
    pub fn commit_at(&self, position: u64) -> Commit {
        Commit {
            position,
            progress: self.shared.progress.subscribe(),
        }
    }

    /// Everything up to this position is durable.
    pub fn durable_position(&self) -> u64 {
        self.shared.progress.borrow().durable
    }

    /// The first storage failure, if there was one.
    pub fn failure(&self) -> Option<String> {
        self.shared.progress.borrow().failed.clone()
    }

    /// Whether more than [`BACKLOG_BYTES`] wait to be written: sources of new state should
    /// pause until their own changes are durable.
    pub fn backlogged(&self) -> bool {
        self.shared.lock().pending > BACKLOG_BYTES
    }

    /// Blocks until at most `bytes` wait to be written (or the journal failed or closed).
    pub fn wait_backlog_below(&self, bytes: u64) {
        let mut appender = self.shared.lock();
        while appender.pending > bytes && !appender.closing && self.failure().is_none() {
            appender = self.shared.wait_done(appender);
        }
    }

    /// Blocks until everything appended so far is durable.
    pub fn flush_blocking(&self) -> Result<(), JournalError> {
        let target = {
            let mut appender = self.shared.lock();
            appender.seal();
            appender.position
        };
        self.shared.work.notify_one();
        let mut appender = self.shared.lock();
        loop {
            let progress = self.shared.progress.borrow().clone();
            if progress.durable >= target {
                return Ok(());
            }
            if let Some(cause) = progress.failed {
                return Err(JournalError::Failed(cause));
            }
            if progress.closed {
                return Err(JournalError::Closed);
            }
            appender = self.shared.wait_done(appender);
        }
    }

    /// Whether the current generation has grown enough to be compacted.
    pub fn wants_checkpoint(&self) -> bool {
        let a = self.shared.lock();
        let bytes = a.position - a.generation_start;
        !a.checkpoint_running
            && !a.closing
            && bytes > COMPACT_MIN_BYTES
            && bytes > 2 * a.last_checkpoint_bytes
    }

    /// Starts a new generation for a checkpoint; the caller then appends an image of every
    /// entity and calls [`Journal::end_checkpoint`]. `None` if one is running already.
    pub fn begin_checkpoint(&self) -> Option<u64> {
        let generation = {
            let mut a = self.shared.lock();
            if a.checkpoint_running || a.closing {
                return None;
            }
            a.seal();
            a.checkpoint_running = true;
            a.generation += 1;
            let generation = a.generation;
            a.items.push(Item::Rotate(generation));
            a.generation_start = a.position;
            a.messages = MessageIds::default();
            generation
        };
        self.shared.work.notify_one();
        Some(generation)
    }

    /// Marks the running checkpoint complete: once that is durable, older generations are
    /// deleted.
    pub fn end_checkpoint(&self) {
        {
            let mut a = self.shared.lock();
            a.push(&Record::CheckpointDone);
            a.seal();
            let generation = a.generation;
            a.items.push(Item::Retire(generation));
            a.last_checkpoint_bytes = a.position - a.generation_start;
            a.checkpoint_running = false;
        }
        self.shared
            .stats
            .checkpoints
            .fetch_add(1, Ordering::Relaxed);
        self.shared.work.notify_one();
    }

    /// The generation appends go to.
    pub fn generation(&self) -> u64 {
        self.shared.lock().generation
    }

    /// Identity of this process in the file headers.
    pub fn incarnation(&self) -> u64 {
        self.shared.incarnation
    }

    /// Counters.
    pub fn stats(&self) -> &JournalStats {
        &self.shared.stats
    }

    /// Writes and syncs everything appended, then stops the writer. Later appends are kept
    /// in memory only and never become durable.
    pub fn close(&self) -> Result<(), JournalError> {
        {
            let mut a = self.shared.lock();
            a.seal();
            a.closing = true;
        }
        self.shared.work.notify_one();
        let handle = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
        match self.failure() {
            Some(cause) => Err(JournalError::Failed(cause)),
            None => Ok(()),
        }
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

fn tmp_path(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("{}.tmp", file::file_name(generation)))
}

/// The writer thread's state.
struct Writer {
    shared: Arc<Shared>,
    file: Arc<dyn StorageFile>,
    path: PathBuf,
    generation: u64,
    file_len: u64,
    /// Bytes of older generations still on disk.
    older_bytes: u64,
    /// Logical position written so far.
    written: u64,
    unsynced: bool,
    last_sync: Instant,
    /// A generation to retire once everything before it is durable.
    retire: Option<u64>,
    failed: Option<String>,
}

impl Writer {
    fn run(&mut self) {
        loop {
            let (items, closing) = {
                let mut a = self.shared.lock();
                loop {
                    if let Some(cause) = a.encode_failure.take() {
                        drop(a);
                        self.fail(cause);
                        a = self.shared.lock();
                    }
                    if !a.items.is_empty() || !a.frame.is_empty() || a.closing {
                        break;
                    }
                    let wait = match self.shared.fsync {
                        FsyncPolicy::Interval(d) if self.unsynced => {
                            let due =
                                (self.last_sync + d).saturating_duration_since(Instant::now());
                            if due.is_zero() {
                                break;
                            }
                            due
                        }
                        _ => Duration::from_secs(3600),
                    };
                    a = self
                        .shared
                        .work
                        .wait_timeout(a, wait)
                        .map(|(guard, _)| guard)
                        .unwrap_or_else(|p| p.into_inner().0);
                }
                a.seal();
                a.pending = 0;
                (std::mem::take(&mut a.items), a.closing)
            };
            for item in items {
                self.handle(item);
            }
            let sync_now = match self.shared.fsync {
                FsyncPolicy::Always => true,
                FsyncPolicy::Interval(d) => closing || self.last_sync.elapsed() >= d,
                FsyncPolicy::Never => closing,
            };
            if self.unsynced && (sync_now || self.retire.is_some()) {
                self.sync();
            }
            let durable = match self.shared.fsync {
                FsyncPolicy::Never => self.written,
                _ if !self.unsynced => self.written,
                _ => self.shared.progress.borrow().durable,
            };
            if let Some(generation) = self.retire.take() {
                self.retire_below(generation);
            }
            self.publish(durable);
            if closing {
                self.shared.progress.send_modify(|p| p.closed = true);
                self.shared.done.notify_all();
                return;
            }
        }
    }

    fn handle(&mut self, item: Item) {
        if self.failed.is_some() {
            return;
        }
        match item {
            Item::Frame(bytes, end) => {
                if let Err(e) = write_all_at(self.file.as_ref(), &bytes, self.file_len) {
                    self.fail(format!("writing {}: {e}", self.path.display()));
                    return;
                }
                self.file_len += bytes.len() as u64;
                self.written = end;
                self.unsynced = true;
                self.count_written(bytes.len() as u64);
            }
            Item::Rotate(generation) => self.rotate(generation),
            Item::Retire(generation) => self.retire = Some(generation),
        }
    }

    fn count_written(&self, n: u64) {
        let stats = &self.shared.stats;
        stats.bytes_written.fetch_add(n, Ordering::Relaxed);
        stats
            .disk_bytes
            .store(self.older_bytes + self.file_len, Ordering::Relaxed);
    }

    fn rotate(&mut self, generation: u64) {
        // Everything of the old generation is durable before the new one exists.
        if self.unsynced {
            self.sync();
        }
        if self.failed.is_some() {
            return;
        }
        self.publish(self.written);
        let path = self.shared.dir.join(file::file_name(generation));
        let header = FileHeader {
            generation,
            incarnation: self.shared.incarnation,
        }
        .encode();
        let created = self.shared.storage.create(&path).and_then(|f| {
            write_all_at(f.as_ref(), &header, 0)?;
            f.sync_data()?;
            self.shared.storage.sync_dir(&self.shared.dir)?;
            Ok(f)
        });
        match created {
            Ok(file) => {
                self.older_bytes += self.file_len;
                self.file = file;
                self.path = path;
                self.generation = generation;
                self.file_len = HEADER_LEN as u64;
                self.count_written(HEADER_LEN as u64);
            }
            Err(e) => self.fail(format!("creating {}: {e}", path.display())),
        }
    }

    fn sync(&mut self) {
        if self.failed.is_some() {
            return;
        }
        match self.file.sync_data() {
            Ok(()) => {
                self.unsynced = false;
                self.last_sync = Instant::now();
                self.shared.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => self.fail(format!("fdatasync {}: {e}", self.path.display())),
        }
    }

    /// Generation `generation` (the current one) holds a durable checkpoint: give its file
    /// its final name and delete all older generations.
    fn retire_below(&mut self, generation: u64) {
        if self.failed.is_some() || self.unsynced {
            return;
        }
        let storage = &self.shared.storage;
        let dir = &self.shared.dir;
        let tmp = tmp_path(dir, generation);
        if self.path == tmp {
            let done = dir.join(file::file_name(generation));
            if let Err(e) = storage.rename(&tmp, &done) {
                self.fail(format!("renaming {}: {e}", tmp.display()));
                return;
            }
            self.path = done;
        }
        let names = match storage.list(dir) {
            Ok(names) => names,
            Err(e) => {
                self.fail(format!("listing {}: {e}", dir.display()));
                return;
            }
        };
        for name in names {
            let old = file::parse_file_name(&name).is_some_and(|g| g < generation)
                || name
                    .strip_suffix(".tmp")
                    .and_then(file::parse_file_name)
                    .is_some_and(|g| g < generation);
            if old && let Err(e) = storage.remove(&dir.join(&name)) {
                tracing::warn!("cannot delete the retired state journal {name}: {e}");
            }
        }
        if let Err(e) = storage.sync_dir(dir) {
            self.fail(format!("syncing {}: {e}", dir.display()));
            return;
        }
        self.older_bytes = 0;
        self.count_written(0);
    }

    fn publish(&self, durable: u64) {
        self.shared.progress.send_if_modified(|p| {
            if durable > p.durable {
                p.durable = durable;
                true
            } else {
                false
            }
        });
        self.shared.done.notify_all();
    }

    fn fail(&mut self, cause: String) {
        if self.failed.is_some() {
            return;
        }
        tracing::error!(%cause, "state journal failure: session and retained changes are no longer saved");
        self.failed = Some(cause.clone());
        self.shared
            .progress
            .send_modify(|p| p.failed = Some(cause.clone()));
        self.shared.done.notify_all();
    }
}
