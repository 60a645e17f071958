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
use crate::format::{self, FRAME_HEADER_LEN, FrameError, HeaderCheck, SEGMENT_HEADER_LEN};
use crate::scan::{self, Damage, Frames, Next, Past};
use crate::segment::{Segment, create_segment, io_err};
use crate::storage::{Storage, StorageFile, read_full_at, write_all_at};

/// What recovery cut from the end of the tail segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncation {
    /// Byte range removed from the tail segment file.
    pub byte_range: std::ops::Range<u64>,
    /// Frames found in that range (best effort: walks frame lengths from the first bad one).
    pub records: u64,
    /// Why the first dropped frame was refused.
    pub reason: String,
    /// Offsets of the cut frames that are never assigned again: non-zero when the cut starts
    /// with a complete frame that fails its checksum (or does not decode), which may have been
    /// durable and read before the damage. A partial frame or a zero-filled end was never
    /// synced, so no reader saw it and its offsets are reused.
    pub offsets_retired: u64,
}

/// Records recovery could not keep in the middle of the tail segment: valid frames follow
/// them, and those were kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The segment file.
    pub segment: PathBuf,
    /// Offsets of the records that could not be read.
    pub offsets: std::ops::Range<u64>,
    /// The damaged bytes.
    pub byte_range: std::ops::Range<u64>,
    /// Why the first of them was refused.
    pub reason: String,
}

/// A segment header that was damaged and rebuilt from the file name and the frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderRepair {
    /// The segment file.
    pub segment: PathBuf,
    /// What was wrong with it.
    pub reason: String,
}

/// A cursor file that could not be read at open: no copy was valid. The cursor resumes at the
/// oldest retained offset (everything still on disk is sent again; upstream recognises the
/// duplicates by edge-node + edge-offset), never further, and its file is rewritten.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamagedCursor {
    /// The cursor name.
    pub name: String,
    /// The file.
    pub path: PathBuf,
    /// Why no copy could be used.
    pub reason: String,
    /// Where the cursor resumes (the oldest retained offset).
    pub resumed_at: u64,
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
    /// Valid records kept in the tail segment.
    pub tail_records: u64,
    /// Truncated end of the tail, if any.
    pub truncated: Option<Truncation>,
    /// Damage in the middle of the tail segment that was skipped (later records kept). The
    /// damaged segment is sealed as it is and appends continue in a new segment.
    pub skipped: Vec<Skipped>,
    /// Offsets of tail records whose damaged length field was rebuilt from their checksummed
    /// body (nothing lost).
    pub lengths_repaired: Vec<u64>,
    /// The tail segment's header was rewritten (a torn creation, or a damaged header over a
    /// segment without a readable frame).
    pub header_rewritten: bool,
    /// Damaged segment headers rebuilt from the file name and the frames (any segment).
    pub headers_repaired: Vec<HeaderRepair>,
    /// The log was created empty.
    pub created: bool,
    /// Persisted cursors found (damaged ones included).
    pub cursors: u64,
    /// Cursor files without a valid copy: they resume at the oldest retained offset.
    pub cursors_damaged: Vec<DamagedCursor>,
    /// Cursor files with one damaged copy (the other, an earlier or equal position, was used).
    pub cursor_copies_damaged: u64,
    /// Offsets skipped because a cursor had committed past the recovered end (their records
    /// were lost; see `FsyncPolicy::Never`).
    pub offsets_skipped: u64,
}

impl RecoveryReport {
    /// Records recovery could not keep because of damage: skipped in the middle of the tail,
    /// plus the offsets retired with a damaged cut (not a torn, never-synced end).
    pub fn records_skipped(&self) -> u64 {
        let middle: u64 = self
            .skipped
            .iter()
            .map(|s| s.offsets.end - s.offsets.start)
            .sum();
        middle + self.truncated.as_ref().map_or(0, |t| t.offsets_retired)
    }
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
            f.write_str(", tail header rewritten")?;
        }
        for h in &self.headers_repaired {
            write!(
                f,
                ", REPAIRED header of {} ({})",
                h.segment.display(),
                h.reason
            )?;
        }
        if !self.lengths_repaired.is_empty() {
            write!(
                f,
                ", REPAIRED the length field of {} record(s) (offsets {:?})",
                self.lengths_repaired.len(),
                self.lengths_repaired
            )?;
        }
        for s in &self.skipped {
            write!(
                f,
                ", SKIPPED {} damaged record(s) at offsets {}..{} (bytes {}..{} of {}: {}), later records kept",
                s.offsets.end - s.offsets.start,
                s.offsets.start,
                s.offsets.end,
                s.byte_range.start,
                s.byte_range.end,
                s.segment.display(),
                s.reason
            )?;
        }
        for c in &self.cursors_damaged {
            write!(
                f,
                ", DAMAGED cursor {:?} ({}): resumes at offset {} (resends, never skips)",
                c.name, c.reason, c.resumed_at
            )?;
        }
        if self.cursor_copies_damaged > 0 {
            write!(
                f,
                ", {} cursor file(s) with one damaged copy (the other used)",
                self.cursor_copies_damaged
            )?;
        }
        if self.offsets_skipped > 0 {
            write!(
                f,
                ", LOST {} committed offset(s): skipped ahead",
                self.offsets_skipped
            )?;
        }
        match &self.truncated {
            Some(t) => {
                write!(
                    f,
                    ", TRUNCATED {} byte(s) [{}..{}) holding {} record(s): {}",
                    t.byte_range.end - t.byte_range.start,
                    t.byte_range.start,
                    t.byte_range.end,
                    t.records,
                    t.reason
                )?;
                if t.offsets_retired > 0 {
                    write!(
                        f,
                        " ({} offset(s) retired, never reused)",
                        t.offsets_retired
                    )?;
                }
                Ok(())
            }
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

/// Recovers the segments of `cfg.dir`. `cursors` are the persisted cursor positions: offsets
/// below any of them are never assigned again.
///
/// Sealed segments are not scanned, only their headers checked (a damaged one is rebuilt from
/// the file name and the first frame); readers skip damage in them as they meet it. The tail
/// segment is scanned frame by frame: damage followed by valid frames is skipped (the valid
/// frames are kept, the segment is sealed and appends continue in a new one); damage with no
/// valid frame after it is a torn end and is cut.
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
        skipped: Vec::new(),
        lengths_repaired: Vec::new(),
        header_rewritten: false,
        headers_repaired: Vec::new(),
        created: bases.is_empty(),
        cursors: cursors.len() as u64,
        cursors_damaged: Vec::new(),
        cursor_copies_damaged: 0,
        offsets_skipped: 0,
    };
    let fsyncs = AtomicU64::new(0);
    let max = cfg.max_record_bytes;
    let mut next_offset;
    if let Some((&tail_base, sealed)) = bases.split_last() {
        for (i, &base) in sealed.iter().enumerate() {
            let path = dir.join(format::segment_name(base));
            let file = storage.open(&path).map_err(io_err("open segment", &path))?;
            let next_base = bases.get(i + 1).copied().unwrap_or(tail_base);
            if let Some(repair) =
                check_sealed_header(&path, file.as_ref(), base, next_base, max, &fsyncs)?
            {
                report.headers_repaired.push(repair);
            }
            let len = file.size().map_err(io_err("stat segment", &path))?;
            segments.push(Arc::new(Segment::new(base, path, file, len)));
        }
        let path = dir.join(format::segment_name(tail_base));
        let file = storage.open(&path).map_err(io_err("open segment", &path))?;
        let tail = recover_tail(cfg, &path, file.as_ref(), tail_base, &fsyncs)?;
        report.tail_records = tail.records;
        report.header_rewritten = tail.header_rewritten;
        report.headers_repaired.extend(tail.header_repair);
        let retired = tail.truncated.as_ref().map_or(0, |t| t.offsets_retired);
        report.truncated = tail.truncated;
        let damaged = !tail.skipped.is_empty() || retired > 0;
        report.skipped = tail.skipped;
        report.lengths_repaired = tail.lengths_repaired;
        next_offset = tail.next + retired;
        if tail.version == format::SEGMENT_VERSION && !damaged {
            segments.push(Arc::new(Segment::new(tail_base, path, file, tail.len)));
        } else if tail.next == tail_base && !damaged {
            // An empty tail of an older version: rewrite its header in place.
            rewrite_header(&path, file.as_ref(), tail_base, &fsyncs)?;
            segments.push(Arc::new(Segment::new(
                tail_base,
                path,
                file,
                SEGMENT_HEADER_LEN as u64,
            )));
        } else {
            // Sealed as it is: an older version's tail (a segment never mixes in newer
            // bodies), or a damaged one (the active segment holds only valid, dense frames,
            // and retired offsets are a gap only a segment boundary can express).
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
    write_header(path, file, base, format::SEGMENT_VERSION, fsyncs)
}

/// Writes the header in place (the frames after it stay) and syncs it.
fn write_header(
    path: &Path,
    file: &dyn StorageFile,
    base: u64,
    version: u16,
    fsyncs: &AtomicU64,
) -> Result<(), LogError> {
    write_all_at(file, &format::segment_header_of_version(base, version), 0)
        .map_err(io_err("write segment header", path))?;
    file.sync_data()
        .map_err(io_err("fdatasync segment", path))?;
    fsyncs.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// What is wrong with a segment header, if anything (a newer version is an error, not damage:
/// this build must not take a newer build's segment for garbage).
fn header_problem(
    path: &Path,
    file: &dyn StorageFile,
    base: u64,
) -> Result<Option<String>, LogError> {
    let mut head = [0u8; SEGMENT_HEADER_LEN];
    let n = read_full_at(file, &mut head, 0).map_err(io_err("read segment header", path))?;
    Ok(match format::check_segment_header(&head[..n]) {
        HeaderCheck::Ok { base: b, .. } if b == base => None,
        HeaderCheck::Ok { base: b, .. } => Some(format!(
            "header says base offset {b}, file name says {base}"
        )),
        HeaderCheck::Bad(reason) => Some(reason),
        HeaderCheck::Torn => Some("torn or zeroed header".into()),
        HeaderCheck::Version(found) => {
            return Err(LogError::UnsupportedVersion {
                path: path.to_path_buf(),
                found,
                supported: format::SEGMENT_VERSION,
            });
        }
    })
}

/// The version of a segment's header, read back (after [`header_problem`] found none).
fn header_version(path: &Path, file: &dyn StorageFile) -> Result<u16, LogError> {
    let mut head = [0u8; SEGMENT_HEADER_LEN];
    let n = read_full_at(file, &mut head, 0).map_err(io_err("read segment header", path))?;
    Ok(match format::check_segment_header(&head[..n]) {
        HeaderCheck::Ok { version, .. } => version,
        _ => format::SEGMENT_VERSION,
    })
}

/// Checks a sealed segment's header and rebuilds a damaged one from the file name (the base)
/// and the first frame that decodes (the version of its body).
fn check_sealed_header(
    path: &Path,
    file: &dyn StorageFile,
    base: u64,
    next_base: u64,
    max: u32,
    fsyncs: &AtomicU64,
) -> Result<Option<HeaderRepair>, LogError> {
    let Some(reason) = header_problem(path, file, base)? else {
        return Ok(None);
    };
    let len = file.size().map_err(io_err("stat segment", path))?;
    let mut frames = Frames::new(file, len, SEGMENT_HEADER_LEN as u64, max);
    let first = match frames.next().map_err(io_err("read segment", path))? {
        Next::Frame(rec, _) => Some(rec),
        _ => {
            let damage = Damage {
                pos: SEGMENT_HEADER_LEN as u64,
                at: base,
                limit: next_base,
            };
            scan::resync(file, len, damage, damage.pos + 1, max)
                .map_err(io_err("read segment", path))?
                .map(|f| f.record)
        }
    };
    let version = first
        .as_ref()
        .map_or(format::SEGMENT_VERSION, format::version_of);
    tracing::error!(segment = %path.display(), %reason, version, "edge-log rebuilt a damaged segment header from the file name and its frames");
    write_header(path, file, base, version, fsyncs)?;
    Ok(Some(HeaderRepair {
        segment: path.to_path_buf(),
        reason,
    }))
}

struct TailScan {
    /// Valid records kept.
    records: u64,
    /// One past the last valid record's offset (the base if there is none).
    next: u64,
    /// Bytes kept.
    len: u64,
    truncated: Option<Truncation>,
    skipped: Vec<Skipped>,
    header_rewritten: bool,
    header_repair: Option<HeaderRepair>,
    lengths_repaired: Vec<u64>,
    /// Segment format version of the tail.
    version: u16,
}

/// Scans the tail segment: keeps every valid frame (resynchronising past damage followed by
/// valid frames), cuts a torn end, and rebuilds a damaged header.
fn recover_tail(
    cfg: &LogConfig,
    path: &Path,
    file: &dyn StorageFile,
    base: u64,
    fsyncs: &AtomicU64,
) -> Result<TailScan, LogError> {
    let len = file.size().map_err(io_err("stat segment", path))?;
    let problem = header_problem(path, file, base)?;
    let max = cfg.max_record_bytes;
    let mut frames = Frames::new(file, len, SEGMENT_HEADER_LEN as u64, max);
    let mut expected = base;
    let mut records = 0u64;
    let mut first_version = None;
    let mut skipped = Vec::new();
    let mut lengths_repaired = Vec::new();
    // The torn or damaged end: where it starts, why, and whether it starts with a complete
    // frame (which may have been durable).
    let end = loop {
        let pos = frames.pos;
        let found = match frames.next().map_err(io_err("read segment", path))? {
            Next::End => break None,
            Next::Frame(rec, n) => Ok((rec, n)),
            Next::Bad(e) => match scan::past_bad_frame(file, pos, len, &e, max)
                .map_err(io_err("read segment", path))?
            {
                Past::Repaired(rec, n) => {
                    if rec.offset == expected {
                        // Only the length field was damaged: put the true length back.
                        let fixed = u32::try_from(n - FRAME_HEADER_LEN).unwrap_or(u32::MAX);
                        write_all_at(file, &fixed.to_le_bytes(), pos)
                            .map_err(io_err("repair frame length", path))?;
                        tracing::error!(segment = %path.display(), offset = expected, position = pos, "edge-log repaired a damaged frame length (the record's checksum matches)");
                        lengths_repaired.push(expected);
                    }
                    Ok((rec, n))
                }
                Past::Torn => break Some((pos, "partial frame at end of file".into(), false)),
                Past::SearchFrom(from) => Err(match e {
                    FrameError::BadLength(0) => ("zero-filled region".into(), false, from),
                    FrameError::Incomplete => ("partial frame at end of file".into(), false, from),
                    other => (other.to_string(), true, from),
                }),
            },
        };
        let (reason, complete, from) = match found {
            Ok((rec, n)) if rec.offset == expected => {
                first_version.get_or_insert(format::version_of(&rec));
                expected += 1;
                records += 1;
                frames.advance(n);
                continue;
            }
            Ok((rec, n)) => (
                format!(
                    "offset discontinuity: expected {expected}, found {}",
                    rec.offset
                ),
                true,
                pos + n as u64,
            ),
            Err(bad) => bad,
        };
        let damage = Damage {
            pos,
            at: expected,
            limit: u64::MAX,
        };
        match scan::resync(file, len, damage, from, max).map_err(io_err("read segment", path))? {
            Some(found) => {
                let to = found.record.offset;
                tracing::error!(segment = %path.display(), from = expected, to, bytes_from = pos, bytes_to = found.pos, %reason, "edge-log skipped damaged records in the tail segment; later records kept");
                skipped.push(Skipped {
                    segment: path.to_path_buf(),
                    offsets: expected..to,
                    byte_range: pos..found.pos,
                    reason,
                });
                expected = to;
                frames.advance((found.pos - pos) as usize);
            }
            None => break Some((pos, reason, complete)),
        }
    };
    if !lengths_repaired.is_empty() && end.is_none() {
        file.sync_data()
            .map_err(io_err("fdatasync segment", path))?;
        fsyncs.fetch_add(1, Ordering::Relaxed);
    }

    let no_frames = records == 0;
    let mut truncated = None;
    let mut header_rewritten = false;
    let mut header_repair = None;
    let mut kept = frames.pos;
    if let (Some(reason), true) = (&problem, no_frames) {
        // Nothing readable: a segment whose creation was cut off (or a damaged one holding
        // nothing): start it again.
        rewrite_header(path, file, base, fsyncs)?;
        header_rewritten = true;
        kept = SEGMENT_HEADER_LEN as u64;
        truncated = (len > 0).then(|| Truncation {
            byte_range: 0..len,
            records: 0,
            reason: reason.clone(),
            offsets_retired: 0,
        });
        if !reason.starts_with("torn") {
            header_repair = Some(HeaderRepair {
                segment: path.to_path_buf(),
                reason: reason.clone(),
            });
        }
    } else {
        // Preallocated: zeros from the last frame to the end of the file are space written
        // ahead, not a torn write; they stay.
        let end = match end {
            Some((pos, _, false))
                if cfg.zeros_ahead()
                    && scan::all_zero(file, pos, len).map_err(io_err("read segment", path))? =>
            {
                kept = pos;
                None
            }
            other => other,
        };
        if let Some((pos, reason, complete)) = end {
            let cut = scan::count_frames(file, pos, len, max);
            let offsets_retired = if complete { cut } else { 0 };
            tracing::warn!(segment = %path.display(), from = pos, to = len, records = cut, offsets_retired, %reason, "edge-log truncating tail segment");
            file.truncate(pos)
                .map_err(io_err("truncate segment", path))?;
            file.sync_data()
                .map_err(io_err("fdatasync segment", path))?;
            fsyncs.fetch_add(1, Ordering::Relaxed);
            kept = pos;
            truncated = Some(Truncation {
                byte_range: pos..len,
                records: cut,
                reason,
                offsets_retired,
            });
        }
        if let Some(reason) = problem.clone() {
            let version = first_version.unwrap_or(format::SEGMENT_VERSION);
            tracing::error!(segment = %path.display(), %reason, version, "edge-log rebuilt a damaged tail segment header from the file name and its frames");
            write_header(path, file, base, version, fsyncs)?;
            header_repair = Some(HeaderRepair {
                segment: path.to_path_buf(),
                reason,
            });
        }
    }
    // What a previous process wrote without syncing may still sit in the page cache: sync it
    // now, so nothing counted durable after open can vanish in a later power cut.
    file.sync_data()
        .map_err(io_err("fdatasync segment", path))?;
    fsyncs.fetch_add(1, Ordering::Relaxed);
    let version = match (&problem, first_version) {
        (None, _) => header_version(path, file)?,
        (Some(_), Some(v)) if !no_frames => v,
        _ => format::SEGMENT_VERSION,
    };
    Ok(TailScan {
        records,
        next: expected,
        len: kept,
        truncated,
        skipped,
        header_rewritten,
        header_repair,
        lengths_repaired,
        version,
    })
}
