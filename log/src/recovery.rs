//! Opening a directory: finds the segments, scans the tail, repairs what a crash left, and
//! decides the next offset. Produces the segment list the ledger starts from
//! and the [`RecoveryReport`].

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::LogConfig;
use crate::error::LogError;
use crate::format::{self, FrameError, HeaderCheck, SEGMENT_HEADER_LEN};
use crate::scan::{self, Frames, Next};
use crate::segment::{Segment, create_segment, io_err};
use crate::storage::{Storage, StorageFile, read_full_at, write_all_at};

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

/// The outcome of recovery: what the ledger and the writer start from.
pub(crate) struct Recovered {
    /// Segments, sorted; the last one is the active segment.
    pub segments: Vec<Arc<Segment>>,
    /// Offset the next append gets.
    pub next_offset: u64,
    /// fdatasync calls made while recovering.
    pub fsyncs: u64,
    /// What was found and repaired.
    pub report: RecoveryReport,
}

/// Prepares the directory (creating it durably) and recovers its segments. `cursors` are the
/// persisted cursor positions: offsets at or below any of them are never assigned again.
pub(crate) fn recover(
    cfg: &LogConfig,
    storage: &dyn Storage,
    cursors: &BTreeMap<String, u64>,
) -> Result<Recovered, LogError> {
    let dir = cfg.dir.as_path();
    let mut bases: Vec<u64> = storage
        .list(dir)
        .map_err(io_err("list directory", dir))?
        .iter()
        .filter_map(|n| format::parse_segment_name(n))
        .collect();
    bases.sort_unstable();

    let mut segments = Vec::with_capacity(bases.len().max(1));
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
            segments.push(Arc::new(Segment::new(base, path, file, len)));
        }
        let path = dir.join(format::segment_name(tail_base));
        let file = storage.open(&path).map_err(io_err("open segment", &path))?;
        let tail = recover_tail(cfg, &path, file.as_ref(), tail_base, &fsyncs)?;
        report.tail_records = tail.records;
        report.truncated = tail.truncated;
        report.header_rewritten = tail.header_rewritten;
        next_offset = tail_base + tail.records;
        if tail.version == format::SEGMENT_VERSION {
            segments.push(Arc::new(Segment::new(tail_base, path, file, tail.len)));
        } else if tail.records == 0 {
            // An empty tail of an older version: rewrite its header in place.
            rewrite_header(&path, file.as_ref(), tail_base, &fsyncs)?;
            segments.push(Arc::new(Segment::new(
                tail_base,
                path,
                file,
                SEGMENT_HEADER_LEN as u64,
            )));
        } else {
            // An older version's tail is sealed as it is: new records go to a segment of the
            // current version (a segment never mixes in newer bodies).
            segments.push(Arc::new(Segment::new(tail_base, path, file, tail.len)));
            segments.push(create_segment(storage, dir, next_offset, &fsyncs)?);
        }
    } else {
        // No segment: continue after every cursor so offsets are never reused.
        let base = cursors.values().copied().max().unwrap_or(0);
        segments.push(create_segment(storage, dir, base, &fsyncs)?);
        next_offset = base;
    }
    // A cursor committed past the recovered end (possible only with FsyncPolicy::Never or a
    // damaged disk): start a new segment at its position so offsets already forwarded
    // upstream are never reused. Readers see the gap as missing records.
    let mut next_offset = next_offset;
    let max_committed = cursors.values().copied().max().unwrap_or(0);
    if max_committed > next_offset {
        tracing::warn!(
            from = next_offset,
            to = max_committed,
            "edge-log skipping offsets already committed by a cursor"
        );
        segments.push(create_segment(storage, dir, max_committed, &fsyncs)?);
        report.offsets_skipped = max_committed - next_offset;
        next_offset = max_committed;
    }
    report.segments = segments.len() as u64;
    report.oldest_offset = segments.first().map_or(0, |s| s.base);
    report.next_offset = next_offset;
    report.tail_segment = segments.last().map(|s| s.path.clone()).unwrap_or_default();
    Ok(Recovered {
        segments,
        next_offset,
        fsyncs: fsyncs.load(Ordering::Relaxed),
        report,
    })
}

/// Writes a fresh header (current version) over the whole file: it holds no record.
fn rewrite_header(
    path: &Path,
    file: &dyn StorageFile,
    base: u64,
    fsyncs: &AtomicU64,
) -> Result<(), LogError> {
    file.truncate(0).map_err(io_err("truncate segment", path))?;
    write_all_at(file, &format::segment_header(base), 0)
        .map_err(io_err("write segment header", path))?;
    file.sync_data()
        .map_err(io_err("fdatasync segment", path))?;
    fsyncs.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

struct TailScan {
    records: u64,
    len: u64,
    truncated: Option<Truncation>,
    header_rewritten: bool,
    /// Segment format version of the tail.
    version: u16,
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
            rewrite_header(path, file, base, fsyncs)?;
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
    let mut frames = Frames::new(file, len, SEGMENT_HEADER_LEN as u64, max);
    let mut expected = base;
    let bad = loop {
        match frames.next().map_err(io_err("read segment", path))? {
            Next::End => break None,
            Next::Frame(rec, n) if rec.offset == expected => {
                expected += 1;
                frames.advance(n);
            }
            Next::Frame(rec, _) => {
                break Some(format!(
                    "offset discontinuity: expected {expected}, found {}",
                    rec.offset
                ));
            }
            Next::Bad(e) => {
                break Some(match e {
                    FrameError::Incomplete => "partial frame at end of file".into(),
                    FrameError::BadLength(0) => "zero-filled region".into(),
                    other => other.to_string(),
                });
            }
        }
    };
    let pos = frames.pos;
    let mut truncated = None;
    if let Some(reason) = bad {
        let records = scan::count_frames(file, pos, len, max);
        tracing::warn!(segment = %path.display(), from = pos, to = len, records, %reason, "edge-log truncating tail segment");
        file.truncate(pos)
            .map_err(io_err("truncate segment", path))?;
        file.sync_data()
            .map_err(io_err("fdatasync segment", path))?;
        fsyncs.fetch_add(1, Ordering::Relaxed);
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
