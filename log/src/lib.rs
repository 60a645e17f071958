//! edge-log: a segmented, crash-safe append-only event log with group commit, named cursors,
//! retention under a disk budget, and tail recovery.
//!
//! # Modules
//!
//! Public API:
//! - [`config`]: [`LogConfig`], [`FsyncPolicy`], [`WhenFull`].
//! - [`record`]: [`NewRecord`] (what ingress appends), [`Record`] (what cursors read),
//!   [`Destination`] (where it goes upstream, decided at ingest), [`Header`], [`Source`].
//! - [`log`]: the append API. [`Log`]: open, [`Log::append`], ordered batches
//!   ([`Log::submit_many`] / [`Log::append_many`]), backpressure ([`Log::has_room`],
//!   [`Log::room`]), cursors, [`LogStats`], close.
//! - [`batch`]: what appends hand back: [`Appended`], [`SubmittedBatch`] → [`AppendedBatch`],
//!   each with the one durability wait.
//! - [`recovery`]: what `open` does to a directory; [`RecoveryReport`], [`Truncation`].
//! - [`cursor`]: [`Cursor`], named persisted read positions over durable records.
//! - [`format`](mod@format): the byte layout below (encoders/decoders, `encoded_len`).
//! - [`storage`]: the [`Storage`] trait all file I/O goes through, and [`StdStorage`].
//! - [`error`]: [`LogError`], [`AppendError`], [`ReadError`].
//! - `testing` (feature `testing`): fakes `MemStorage` (power-cut model) and `FaultyStorage`.
//!
//! Inside (private), each a room of one concern; arrows are the only imports between them:
//! - `ledger`: the state writer, appenders and readers share (segment list, disk budget,
//!   cursor positions, durable end, sticky failure, counters), reached only through its
//!   methods. Writer and cursors never reach into each other.
//! - `writer`: the writer thread (stage → one write → roll → one fdatasync → publish) → ledger,
//!   segment.
//! - `segment`: one segment file and its sparse index; creating one crash-safely.
//! - `scan`: reading frames without trusting the file: sequential scan, resynchronisation
//!   after damage, frame counting → shared by `recovery` and `reader`.
//! - `reader`: a cursor's read-ahead frame reader over one segment → scan, segment.
//! - `cursor_store`: cursor files (load, crash-safe write, delete) → format, storage.
//! - `cursor` → ledger, reader, cursor_store; `log` → every room above; `format` → `record`.
//!
//! # On-disk layout (segment format version 2; version 1 is still read)
//!
//! ```text
//! <dir>/NNNNNNNNNNNNNNNNNNNN.seg     segment, named by its 20-digit zero-padded base offset
//! <dir>/cursors/<name>.cur           cursor file (<name>.cur.tmp while being replaced)
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
//! cursor file, 24 bytes:
//!   0..8 magic "EDGECUR\0" | 8..10 version u16 LE | 10..12 zero | 12..20 committed offset u64 LE |
//!   20..24 crc32c of bytes 0..20
//! ```
//!
//! Offsets are dense: record `n` of a segment has offset `base + n`, so segment `i` holds
//! `[base_i, base_{i+1})`. There is no index file: an in-memory sparse index (every 1024th
//! frame, noted by the writer and by readers) bounds the cost of a seek. The format is frozen by `tests/format.rs` against the checked-in
//! `tests/data/00000000000000000000.seg`.
//!
//! # Durability and visibility
//!
//! A single writer thread drains every queued append, writes them with one `write`, then
//! (`FsyncPolicy::Always`) issues ONE `fdatasync` and completes every waiter it covers (group
//! commit). [`Log::durable_end`] advances only after that sync, and cursors read only below it,
//! so an offset a crash could reuse never reaches a reader. With `Interval` records become
//! durable at the next periodic sync. With `Never`, "written to the OS" counts as durable: a
//! power cut can lose records that readers already saw, and their offsets will be reused.
//! Segment rolls sync the old segment, the new header and the directory.
//!
//! Write and fsync errors are sticky: after one, every append fails with
//! `AppendError::Storage` until the log is reopened; durability is never reported after a
//! failed fsync.
//!
//! # Recovery
//!
//! `open` scans only the tail segment and truncates it at the first bad record (partial frame,
//! zero-filled region, bad CRC, undecodable body, offset discontinuity), reporting what it cut
//! ([`RecoveryReport`]). Sealed segments are not scanned at open. A reader that meets a corrupt
//! frame in a sealed segment counts and logs it, then resynchronises at the next frame in the same
//! segment whose CRC is valid, whose body decodes and whose offset lies in the segment's range;
//! if there is none it skips to the next segment. A missing segment (or a sealed segment that
//! ends early) is skipped the same way. Skips are counted in `LogStats::corrupt_skipped` and
//! [`Cursor::skipped`].
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
pub mod error;
pub mod format;
mod ledger;
pub mod log;
mod reader;
pub mod record;
pub mod recovery;
mod scan;
mod segment;
pub mod storage;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod writer;

pub use batch::{Appended, AppendedBatch, SubmittedBatch};
pub use config::{FsyncPolicy, LogConfig, WhenFull};
pub use cursor::Cursor;
pub use error::{AppendError, LogError, ReadError};
pub use log::{Log, LogStats};
pub use record::{Destination, Header, NewRecord, Record, Source};
pub use recovery::{RecoveryReport, Truncation};
pub use storage::{StdStorage, Storage, StorageFile};
