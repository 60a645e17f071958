//! edge-log: a segmented, crash-safe append-only event log with group commit, named cursors,
//! retention under a disk budget, and tail recovery.
//!
//! # Modules
//!
//! Public API:
//! - [`config`]: [`LogConfig`], [`FsyncPolicy`], [`WhenFull`].
//! - [`record`]: [`NewRecord`] (what ingress appends), [`Record`] (what cursors read),
//!   [`Destination`] (where it goes upstream, decided at ingest), [`Header`], [`Source`],
//!   [`RecordFields`] (a record's fields, borrowed).
//! - [`encoded`]: [`EncodedRecords`], records encoded by the appender but for their offsets
//!   (what the writer frames), from a [`NewRecord`] or borrowed [`RecordFields`] → format.
//! - [`log`]: the append API. [`Log`]: open, [`Log::append`], ordered batches
//!   ([`Log::submit_encoded`], [`Log::submit_many`] / [`Log::append_many`]), backpressure
//!   ([`Log::has_room`], [`Log::room`]), [`Log::health`], cursors, [`LogStats`], close.
//! - [`batch`]: what appends hand back: [`Appended`], [`SubmittedBatch`] → [`AppendedBatch`],
//!   each with the one durability wait.
//! - [`recovery`]: what `open` does to a directory; [`RecoveryReport`], [`Truncation`].
//! - [`cursor`]: [`Cursor`], named persisted read positions over durable records.
//! - [`format`](mod@format): the byte layout below (encoders/decoders, `encoded_len`).
//! - [`storage`]: the [`Storage`] trait all file I/O goes through, and [`StdStorage`].
//! - [`error`]: [`LogError`], [`AppendError`], [`ReadError`].
//! - [`health`]: [`LogHealth`] (ok / full by budget or disk / failed / closed), [`Full`].
//! - `testing` (feature `testing`): fakes `MemStorage` (power-cut model) and `FaultyStorage`.
//!
//! Inside (private), each a room of one concern; arrows are the only imports between them:
//! - `ledger`: the state writer, appenders and readers share (segment list, disk budget,
//!   cursor positions, durable end, sticky failure, counters), reached only through its
//!   methods. Writer and cursors never reach into each other.
//! - `writer`: the writer thread (stage: frame the appenders' encoded records → one write →
//!   roll; cut back and retry or refuse on a full disk; with sector writes under an interval
//!   policy, a batch's frames gathered until the interval's sync) → ledger, segment, syncer,
//!   sectors.
//! - `syncer`: the fdatasync thread (coalesced targets, durability published in order, a failed
//!   sync sticky) → ledger, segment.
//! - `segment`: one segment file and its sparse index; creating one crash-safely.
//! - `sectors`: with `sector_writes`, the active segment's new bytes written as whole 512-byte
//!   sectors through a second, `O_DIRECT` handle → storage.
//! - `scan`: reading frames without trusting the file: sequential scan, resynchronisation
//!   after damage, frame counting → shared by `recovery` and `reader`.
//! - `reader`: a cursor's read-ahead frame reader over one segment → scan, segment.
//! - `cursor_store`: cursor files (load, two-copy commit, delete) → format, storage.
//! - `cursor` → ledger, reader, cursor_store; `log` → every room above; `format` → `record`.
//!
//! # On-disk layout (segment format version 2; version 1 is still read)
//!
//! ```text
//! <dir>/NNNNNNNNNNNNNNNNNNNN.seg     segment, named by its 20-digit zero-padded base offset
//! <dir>/cursors/<name>.cur           cursor file (<name>.cur.tmp while being created whole)
//!
//! segment header, 24 bytes:
//!   0..8    magic  "EDGESEG\0"
//!   8..10   format version, u16 LE (= 2; 1 in segments written before version 2)
//!   10..12  reserved, zero
//!   12..20  base offset, u64 LE (must match the file name)
//!   20..24  crc32c (Castagnoli) of bytes 0..20, u32 LE
//! then frames back to back until end of file:
//!   0..4    len: body length, u32 LE (1..=max_record_bytes)
//!   4..8    crc32c of the body, u32 LE
//!   8..     body: postcard encoding of `RecordBody`
//!
//! RecordBody (postcard: varint variant index, then fields in order; integers are LEB128 varints,
//! strings and byte strings are varint length + bytes, Option is a 0/1 byte then the value,
//! i32 is a zigzag varint):
//!   variant 1 = V2 { offset u64, timestamp_ms u64, source (varint: 0 = mqtt, 1 = nats),
//!                    topic str, client_id str,
//!                    kafka_topic str, key Option<bytes>, partition Option<i32>,
//!                    headers: varint count × { key str, value bytes }, payload bytes }
//!   variant 0 = V1 { offset u64, timestamp_ms u64, source, topic str, client_id str,
//!                    headers, payload }  — no destination; only in version 1 segments
//!
//! A segment holds bodies of its own version or older: a version 1 tail segment found at open
//! is sealed (a new version 2 segment starts at the next offset) before anything is appended,
//! so an older build never meets a body it cannot read inside a segment it accepts, and
//! refuses version 2 segments instead of taking them for damage.
//!
//! cursor file, version 2 (written by this build), 4128 bytes: two copies ("slots") of 32 bytes
//! at file positions 0 and 4096 (different 4 KiB blocks), each:
//!   0..8 magic "EDGECUR\0" | 8..10 version u16 LE (= 2) | 10..12 zero | 12..20 sequence u64 LE |
//!   20..28 committed offset u64 LE | 28..32 crc32c of bytes 0..28
//! The valid slot with the higher sequence number holds the committed position. Commit `n`
//! overwrites slot `n % 2` in place and syncs it, so a torn commit leaves the previous one.
//! cursor file, version 1 (older builds; read, and rewritten as version 2 at the first commit),
//! 24 bytes:
//!   0..8 magic "EDGECUR\0" | 8..10 version u16 LE (= 1) | 10..12 zero |
//!   12..20 committed offset u64 LE | 20..24 crc32c of bytes 0..20
//! ```
//!
//! Offsets are dense: record `n` of a segment has offset `base + n`, so segment `i` holds
//! `[base_i, base_{i+1})` (unless storage damage destroyed frames: every body carries its own
//! offset, so the records after damage keep theirs; see Recovery). There is no index file: an in-memory sparse index (every 1024th
//! frame, noted by the writer and by readers) bounds the cost of a seek. The format is frozen
//! by `tests/format.rs` against the checked-in `tests/data/v*/00000000000000000000.seg` and the
//! spelled-out cursor layouts.
//!
//! # Durability and visibility
//!
//! A single writer thread drains every queued append and writes them with one `write`; a
//! syncer thread runs the `fdatasync` (`FsyncPolicy::Always`: after every write) while the
//! writer goes on writing the next batch. Requests made while a sync runs coalesce, so ONE
//! `fdatasync` covers everything written before it started (group commit, pipelined).
//! [`Log::durable_end`] advances only after the sync that covers it, in order, and cursors
//! read only below it, so an offset a crash could reuse never reaches a reader. With `Interval`
//! records become durable at the next periodic sync. With `Never`, "written to the OS" counts
//! as durable: a power cut can lose records that readers already saw, and their offsets will be
//! reused. Segment rolls wait for the old segment's sync, then sync the new header and the
//! directory. `open` syncs the tail it recovered (a previous process may have left unsynced
//! data in the page cache). [`LogStats::fsync_latency`] is the sync latency histogram,
//! [`LogStats::bytes_written`] the bytes written to segments.
//!
//! # Storage errors, a full disk, health
//!
//! **A refused record is never stored.** Records are answered only after their write
//! succeeded; when a write fails, what it wrote is cut back (truncated) before the records are
//! refused.
//!
//! **A full file system heals by itself.** ENOSPC (or a quota) from a write or a segment
//! creation is not sticky: the partial write is cut back, then the oldest sealed segment is
//! deleted if the `when_full` policy allows it under pressure (as for the budget), else under
//! `Block` and `DropOldest` the writer retries with backoff (10 ms doubling to 500 ms) and
//! appends wait (backpressure), under `Reject` the batch is refused with
//! `AppendError::NoSpace` and the next one is tried. The first successful write ends it. Cursor
//! commits overwrite allocated blocks, so they (and the retention they drive) work on a full
//! disk.
//!
//! **Other write errors and every fdatasync error are sticky**: after one, every append fails
//! with `AppendError::Storage` until the log is reopened, and durability is never reported
//! after a failed fdatasync (the kernel may have dropped the pages it could not write). What
//! was written but is now never to be durable is cut back to the last synced length (best
//! effort: with the disk failing, the cut may not persist).
//!
//! [`Log::health`] says which state the log is in ([`LogHealth`]: `Ok`, `Full` by the budget or
//! the disk, `Failed`, `Closed`) for readiness and `/healthz`; [`Log::has_room`] and
//! [`Log::room`] are the backpressure to act on.
//!
//! # Recovery
//!
//! `open` checks the header of every sealed segment and scans the tail segment frame by frame
//! ([`RecoveryReport`] says what it found and did; the same goes to the log at warn/error):
//! - **Damage in the middle of the tail** (a bad frame with a valid frame after it): the
//!   records whose bytes are damaged are skipped ([`RecoveryReport::skipped`]: offsets, bytes,
//!   reason), every later record is kept. The damaged segment is sealed as it is and appends
//!   continue in a new segment, so the active segment only ever holds valid, dense frames.
//! - **A torn or damaged end** (a bad frame with no valid frame after it) is cut
//!   ([`RecoveryReport::truncated`]).
//! - **A damaged length field** whose body still decodes by itself with the stored checksum
//!   is written back: nothing is lost ([`RecoveryReport::lengths_repaired`]).
//! - **A damaged segment header** (any segment) is rebuilt from the file name (the base) and
//!   the first frame (the version); a tail without any readable frame is started again.
//!
//! Resynchronising after a bad frame looks for the next frame whose CRC is valid, whose body
//! decodes, whose offset lies above the damaged one (and below the next segment's base, or the
//! durable end), and whose offset the damaged bytes could have led up to (each skipped record
//! takes at least [`format::MIN_FRAME_LEN`] bytes). A bad frame's own body is never searched
//! when its length is plausible and it ends inside the file, and nothing is searched after a
//! frame announced past the end of the file (a torn write): a payload that embeds a frame is
//! never taken for a record. Readers resynchronise the same way (`scan`) in any segment; a
//! segment that ends early or is missing is skipped to the next. Reader skips are counted in
//! `LogStats::corrupt_skipped` and [`Cursor::skipped`], recovery's in
//! `LogStats::recovery_skipped`.
//!
//! **Offsets are never reused.** Invariant: once an offset may have been seen by a reader (and
//! so by Kafka, where `edge-node` + `edge-offset` identify a record), no other record ever gets
//! it. Readers only see durable offsets, and recovery assigns the next offset after
//! - the last record kept in the tail (a skipped record keeps its place: the records after it
//!   carry their own offsets in their bodies, so nothing is renumbered);
//! - every offset of a cut end that starts with a complete frame failing its checksum (it may
//!   have been durable and read): those offsets are retired ([`Truncation::offsets_retired`])
//!   and appends continue in a new segment after the gap. A partial frame or a zero-filled end
//!   was never synced (fdatasync completes before durability is published), so no reader saw
//!   it and its offsets are reused;
//! - every cursor's committed position (with `FsyncPolicy::Never` readers may have seen what
//!   a power cut then lost).
//!
//! This holds as long as storage keeps what it acknowledged as synced; when it does not, the
//! loss is reported. Not covered: a deleted or truncated *tail* file (the previous segment then
//! looks complete and its successor's offsets are assigned again unless a cursor passed them).
//!
//! # Retention and the disk budget
//!
//! Whole sealed segments below the minimum committed position of all cursors are deleted on
//! commit. With zero cursors no reader needs the data: segments are kept until the budget is
//! reached, then the oldest sealed segments are deleted to make room under every policy (counted
//! in `dropped_records`), so appends never block forever. When the budget is reached with cursors
//! behind: `Block` waits for a commit, `DropOldest` deletes the oldest sealed segment anyway
//! (cursors behind it skip forward, counted), `Reject` fails with `AppendError::Full`.
//! `max_bytes` must hold at least two maximal segments. The budget counts segment files
//! (cursor files and filesystem overhead are not counted); a segment roll may overshoot it by
//! one 24-byte header.
//!
//! Only one process may open a directory at a time (not enforced by a lock file).

pub mod batch;
pub mod config;
pub mod cursor;
mod cursor_store;
pub mod encoded;
pub mod error;
pub mod format;
pub mod health;
mod ledger;
pub mod log;
mod reader;
pub mod record;
pub mod recovery;
mod scan;
mod sectors;
mod segment;
pub mod storage;
mod syncer;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod writer;

pub use batch::{Appended, AppendedBatch, SubmittedBatch};
pub use config::{FsyncPolicy, LogConfig, PREALLOCATE_STEP, WhenFull};
pub use cursor::Cursor;
pub use encoded::EncodedRecords;
pub use error::{AppendError, LogError, ReadError};
pub use health::{Full, LogHealth};
pub use log::{FsyncLatency, Log, LogStats};
pub use record::{Destination, Header, NewRecord, Record, RecordFields, Source, Text};
pub use recovery::{DamagedCursor, HeaderRepair, RecoveryReport, Skipped, Truncation};
pub use storage::{StdStorage, Storage, StorageFile};
