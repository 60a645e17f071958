//! Error types of the log: opening/cursor errors, append errors, read errors.

use std::io;
use std::path::PathBuf;

/// Errors from opening the log, cursor management and closing.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// A file operation failed.
    #[error("log storage {op} failed on {path}: {source}")]
    Io {
        /// What the log was doing.
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The configuration cannot work.
    #[error("invalid log config: {field} {reason}")]
    Config {
        /// Config field at fault.
        field: &'static str,
        /// Why it is refused.
        reason: String,
    },
    /// A file that must be intact is not (segment header, cursor file).
    #[error("corrupt {what} in {path}: {reason}")]
    Corrupt {
        /// What kind of structure is damaged.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Details.
        reason: String,
    },
    /// A file was written by a newer (or unknown) format version.
    #[error("{path} has format version {found}; this build reads version {supported}")]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// Version found in the header.
        found: u16,
        /// Version this build understands.
        supported: u16,
    },
    /// Cursor names are restricted so they map safely to file names.
    #[error(
        "invalid cursor name {name:?}: use 1-64 chars of [A-Za-z0-9_.-], not starting with '.'"
    )]
    InvalidCursorName {
        /// The refused name.
        name: String,
    },
    /// Only one handle per cursor name may be open at a time.
    #[error("cursor {name:?} is already open")]
    CursorInUse {
        /// The cursor name.
        name: String,
    },
    /// A cursor cannot commit past what is durable.
    #[error("cursor {name:?} cannot commit {requested}: durable end is {durable_end}")]
    CommitBeyondDurable {
        /// The cursor name.
        name: String,
        /// Offset asked for.
        requested: u64,
        /// Current durable end.
        durable_end: u64,
    },
    /// An earlier write or fsync failed; the log refuses further writes until reopened.
    #[error("log storage failed earlier and refuses writes until reopened: {cause}")]
    Sticky {
        /// The first failure.
        cause: String,
    },
    /// The log was closed.
    #[error("log is closed")]
    Closed,
    /// The background writer thread could not be started or died.
    #[error("log writer thread failed: {reason}")]
    Writer {
        /// What happened.
        reason: String,
    },
}

/// Errors from [`crate::Log::append`] and [`crate::Appended::durable`].
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AppendError {
    /// The disk budget is exhausted and the policy is `WhenFull::Reject` (or nothing can be freed).
    #[error("log full: {used} of {max_bytes} bytes used, record needs {needed} more")]
    Full {
        /// Bytes the record needs on disk (upper bound).
        needed: u64,
        /// Bytes in use (segments + queued).
        used: u64,
        /// The configured budget.
        max_bytes: u64,
    },
    /// The encoded record is larger than `max_record_bytes`.
    #[error("record of {size} bytes exceeds max_record_bytes {max}")]
    TooLarge {
        /// Encoded body size.
        size: u64,
        /// Configured limit.
        max: u32,
    },
    /// The file system has no space (ENOSPC): nothing of the record was kept (a partial write
    /// was cut back). Not sticky: appends are stored again once space returns
    /// (`WhenFull::Reject`; under `Block` the writer waits for space instead).
    #[error("log storage full; record not stored: {cause}")]
    NoSpace {
        /// The error, with the file.
        cause: String,
    },
    /// A write or fsync failed (now or earlier: the error is sticky until reopen).
    #[error("log storage failed; record not durable: {cause}")]
    Storage {
        /// The first failure.
        cause: String,
    },
    /// The log was closed before the record was written.
    #[error("log is closed")]
    Closed,
}

/// Errors from [`crate::Cursor::read`].
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Reading a segment failed.
    #[error("reading {path} failed: {source}")]
    Io {
        /// The segment file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Durable data in the active segment could not be decoded and no later frame was found.
    #[error("corrupt record at offset {offset} in {path}: {reason}")]
    Corrupt {
        /// The segment file.
        path: PathBuf,
        /// Offset that could not be read.
        offset: u64,
        /// Details.
        reason: String,
    },
    /// The log was closed and no more records will arrive.
    #[error("log is closed")]
    Closed,
}
