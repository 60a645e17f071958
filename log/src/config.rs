//! Log configuration: sizes, fsync policy, behaviour when the disk budget is full.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::LogError;
use crate::format::{FRAME_HEADER_LEN, SEGMENT_HEADER_LEN};

/// When an append counts as durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// After the fdatasync covering the record (group commit: one sync covers every queued append).
    Always,
    /// After the next periodic sync (at most this long after the write).
    Interval(Duration),
    /// Once written to the OS. A power cut can lose such records and their offsets may be reused.
    Never,
}

/// What `append` does when the disk budget (`max_bytes`) is exhausted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenFull {
    /// Wait until retention frees space (a cursor commit); other tasks keep running.
    Block,
    /// Delete the oldest sealed segment even if unforwarded; count the dropped records.
    DropOldest,
    /// Fail with `AppendError::Full`.
    Reject,
}

/// Configuration of a [`crate::Log`].
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// Data directory for segments (and `cursors/`).
    pub dir: PathBuf,
    /// Roll to a new segment once the active one would grow past this (default 64 MiB).
    pub segment_bytes: u64,
    /// Hard disk budget for segment files (default 2 GiB).
    pub max_bytes: u64,
    /// Durability policy (default `Always`).
    pub fsync: FsyncPolicy,
    /// Full-disk policy (default `Block`).
    pub when_full: WhenFull,
    /// Largest record body accepted on append; larger frames are corrupt on read (default 16 MiB).
    pub max_record_bytes: u32,
    /// Keep the active segment zero-filled at least [`PREALLOCATE_STEP`] ahead of the writer
    /// (default off). Appends then overwrite blocks that are already allocated and
    /// initialised, so an fdatasync has no file-system metadata to commit (no journal write
    /// per sync: faster syncs, gentler on flash); the file grows a step at a time instead of at
    /// every write. Costs the zeros (one write of each segment's bytes ahead of its data) and
    /// up to three steps of disk beyond `max_bytes`, so they are written only while the
    /// fdatasyncs are small (up to 32 KiB of frames each, decided once per step): under bulk
    /// load the frames are appended without them (module `writer`, "Zeros ahead"). None on
    /// copy-on-write file systems (btrfs, ZFS, bcachefs: [`crate::Storage::copy_on_write`]),
    /// which never overwrite in place.
    pub preallocate: bool,
    /// Write new bytes to the active segment as whole 512-byte sectors through an `O_DIRECT`
    /// handle (default off; Linux file systems with direct I/O, else the page cache as
    /// before): at a gateway's rate a sync then sends the device the few sectors that changed,
    /// not the whole 4 KiB page holding the end (module `sectors`). Zero-fills ahead like
    /// `preallocate`. Under [`FsyncPolicy::Interval`] the appends of an interval are answered at
    /// once and written together by its sync (one write per sync, not per append).
    pub sector_writes: bool,
}

/// How far ahead of the writer a preallocated segment is zero-filled at least, and the unit it
/// grows by (see [`LogConfig::preallocate`]).
pub const PREALLOCATE_STEP: u64 = 1 << 20;

impl LogConfig {
    /// Defaults for a data directory: 64 MiB segments, 2 GiB budget, fsync always, block when full.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            segment_bytes: 64 << 20,
            max_bytes: 2 << 30,
            fsync: FsyncPolicy::Always,
            when_full: WhenFull::Block,
            max_record_bytes: 16 << 20,
            preallocate: false,
            sector_writes: false,
        }
    }

    /// Whether the active segment is zero-filled ahead of the writer (`preallocate`, or
    /// `sector_writes`, whose last sector is written with zeros after the end).
    pub fn zeros_ahead(&self) -> bool {
        self.preallocate || self.sector_writes
    }

    /// Largest possible segment file: a roll happens before a record would cross
    /// `segment_bytes`, unless the segment is empty and the record alone is larger.
    pub fn max_segment_file(&self) -> u64 {
        self.segment_bytes
            .max((SEGMENT_HEADER_LEN + FRAME_HEADER_LEN) as u64 + u64::from(self.max_record_bytes))
    }

    /// Checks the values can work together.
    pub fn validate(&self) -> Result<(), LogError> {
        if self.segment_bytes < 256 {
            return Err(LogError::Config {
                field: "segment_bytes",
                reason: format!("{} is below the minimum of 256", self.segment_bytes),
            });
        }
        if !(64..=1 << 30).contains(&self.max_record_bytes) {
            return Err(LogError::Config {
                field: "max_record_bytes",
                reason: format!("{} is outside 64..=1GiB", self.max_record_bytes),
            });
        }
        if self.max_bytes < 2 * self.max_segment_file() {
            return Err(LogError::Config {
                field: "max_bytes",
                reason: format!(
                    "{} must hold at least two full segments ({} bytes) so retention can free space",
                    self.max_bytes,
                    2 * self.max_segment_file()
                ),
            });
        }
        if self.fsync == FsyncPolicy::Interval(std::time::Duration::ZERO) {
            return Err(LogError::Config {
                field: "fsync",
                reason: "interval must be above zero (use Always)".into(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_bad_field() {
        assert!(LogConfig::new("/x").validate().is_ok());
        let field = |c: LogConfig| match c.validate() {
            Err(LogError::Config { field, .. }) => field,
            other => panic!("expected a config error, got {other:?}"),
        };
        let base = LogConfig::new("/x");
        assert_eq!(
            field(LogConfig {
                segment_bytes: 10,
                ..base.clone()
            }),
            "segment_bytes"
        );
        assert_eq!(
            field(LogConfig {
                max_record_bytes: 1,
                ..base.clone()
            }),
            "max_record_bytes"
        );
        assert_eq!(
            field(LogConfig {
                max_bytes: 100 << 20,
                ..base.clone()
            }),
            "max_bytes"
        );
        assert_eq!(
            field(LogConfig {
                fsync: FsyncPolicy::Interval(Duration::ZERO),
                ..base
            }),
            "fsync"
        );
    }
}
