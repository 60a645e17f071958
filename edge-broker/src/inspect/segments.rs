//! Read-only access to a log directory beside a running broker (or without one): segment
//! headers, records in offset order, cursor positions. Only edge-log's public format functions
//! are used (`edge_log::format`), files are opened read-only, and no lock is taken, so the
//! broker is never disturbed; a segment deleted by retention while it is read is reported as
//! such.
//!
//! Beside a running broker the tail segment may end in a record still being written: that is
//! reported as an incomplete tail, not as damage. A damaged frame inside a segment ends the
//! reading of that segment (the rest is not shown); the broker's own readers resynchronise past
//! it, see edge-log's recovery rules.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use edge_log::Record;
use edge_log::format::{self, FrameError, HeaderCheck, SEGMENT_HEADER_LEN};

/// How much of a segment file is read at a time.
const READ_CHUNK: usize = 1 << 20;

/// A segment could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    /// The log directory (or a file in it) could not be read.
    #[error("{path}: {error}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// No log there.
    #[error("{0} has no log segments (is it a data directory? the log lives in <data_dir>/log)")]
    NoLog(PathBuf),
}

/// One segment file, from its name and header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// The file.
    pub path: PathBuf,
    /// Base offset (from the file name).
    pub base: u64,
    /// File size in bytes.
    pub bytes: u64,
    /// Format version from the header, when the header is valid.
    pub version: Option<u16>,
    /// What is wrong with the header, if anything.
    pub problem: Option<String>,
}

/// What reading one segment to its end found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SegmentEnd {
    /// Whole records read.
    pub records: u64,
    /// One past the last record's offset (the base when there is none).
    pub next_offset: u64,
    /// Bytes after the last whole record that are not (yet) a whole record.
    pub incomplete_tail: u64,
    /// Damage that ended the reading early: byte position and reason.
    pub damage: Option<(u64, String)>,
    /// The file was gone when it was opened: retention deleted it after it was listed.
    pub deleted: bool,
}

/// The segments of `log_dir`, by base offset, with their headers checked.
pub fn list(log_dir: &Path) -> Result<Vec<Segment>, SegmentError> {
    let io = |error| SegmentError::Io {
        path: log_dir.to_owned(),
        error,
    };
    let mut segments = Vec::new();
    for entry in std::fs::read_dir(log_dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name();
        let Some(base) = name.to_str().and_then(format::parse_segment_name) else {
            continue;
        };
        let path = entry.path();
        let (bytes, header) = match read_header(&path) {
            Ok(found) => found,
            // Deleted by retention between the listing and now: no longer part of the log.
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
            Err(error) => return Err(SegmentError::Io { path, error }),
        };
        let (version, problem) = match format::check_segment_header(&header) {
            HeaderCheck::Ok { base: b, version } if b == base => (Some(version), None),
            HeaderCheck::Ok { base: b, .. } => (None, Some(format!("header says base {b}"))),
            HeaderCheck::Torn => (None, Some("torn header (creation cut off)".to_owned())),
            HeaderCheck::Bad(why) => (None, Some(why)),
            HeaderCheck::Version(v) => (
                None,
                Some(format!("format version {v}, newer than this build reads")),
            ),
        };
        segments.push(Segment {
            path,
            base,
            bytes,
            version,
            problem,
        });
    }
    if segments.is_empty() {
        return Err(SegmentError::NoLog(log_dir.to_owned()));
    }
    segments.sort_by_key(|s| s.base);
    Ok(segments)
}

fn read_header(path: &Path) -> std::io::Result<(u64, Vec<u8>)> {
    let mut file = File::open(path)?;
    let bytes = file.metadata()?.len();
    let mut header = Vec::with_capacity(SEGMENT_HEADER_LEN);
    file.by_ref()
        .take(SEGMENT_HEADER_LEN as u64)
        .read_to_end(&mut header)?;
    Ok((bytes, header))
}

/// Reads `segment`'s records in order, handing each to `visit` until it breaks; returns what
/// the reading found. `max_record` caps a frame's body (the config's `log.max_record_bytes`).
pub fn read(
    segment: &Segment,
    max_record: u32,
    mut visit: impl FnMut(Record) -> ControlFlow<()>,
) -> Result<SegmentEnd, SegmentError> {
    let io = |error| SegmentError::Io {
        path: segment.path.clone(),
        error,
    };
    let mut end = SegmentEnd {
        next_offset: segment.base,
        ..SegmentEnd::default()
    };
    if segment.version.is_none() {
        return Ok(end);
    }
    let mut file = match File::open(&segment.path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            end.deleted = true;
            return Ok(end);
        }
        Err(error) => return Err(io(error)),
    };
    // The header was checked by `list`.
    file.seek(SeekFrom::Start(SEGMENT_HEADER_LEN as u64))
        .map_err(io)?;
    let mut window = Bytes::new();
    let mut at = SEGMENT_HEADER_LEN as u64; // file position of window[0]
    let mut eof = false;
    loop {
        match format::decode_frame(&window, max_record) {
            Ok((record, len)) => {
                end.records += 1;
                end.next_offset = record.offset + 1;
                window = window.slice(len..);
                at += len as u64;
                if visit(record).is_break() {
                    return Ok(end);
                }
            }
            Err(FrameError::Incomplete) if !eof => {
                // Keep the partial frame, append the next chunk (a frame larger than a chunk
                // takes several rounds).
                let mut next = Vec::with_capacity(window.len() + READ_CHUNK);
                next.extend_from_slice(&window);
                let before = next.len();
                file.by_ref()
                    .take(READ_CHUNK as u64)
                    .read_to_end(&mut next)
                    .map_err(io)?;
                eof = next.len() - before < READ_CHUNK;
                window = Bytes::from(next);
            }
            Err(FrameError::Incomplete) => {
                end.incomplete_tail = window.len() as u64;
                return Ok(end);
            }
            Err(other) => {
                end.damage = Some((at, other.to_string()));
                return Ok(end);
            }
        }
    }
}

/// A cursor: a named, persisted read position (`log/cursors/<name>.cur`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CursorPosition {
    /// The cursor's name (`kafka` is the forwarder's).
    pub name: String,
    /// Committed offset (everything below is done), or why the file does not parse.
    pub committed: Result<u64, String>,
}

/// The cursors of `log_dir` by name.
pub fn cursors(log_dir: &Path) -> Vec<CursorPosition> {
    let Ok(entries) = std::fs::read_dir(log_dir.join("cursors")) else {
        return Vec::new();
    };
    let mut found: Vec<CursorPosition> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().to_str()?.strip_suffix(".cur")?.to_owned();
            let committed = std::fs::read(entry.path())
                .map_err(|e| e.to_string())
                .and_then(|bytes| committed_offset(&bytes));
            Some(CursorPosition { name, committed })
        })
        .collect();
    found.sort_by(|a, b| a.name.cmp(&b.name));
    found
}

/// The committed offset of a cursor file (edge-log's format; when the two-copy cursor files of
/// the log's next format land, `format::parse_cursor` replaces this).
fn committed_offset(bytes: &[u8]) -> Result<u64, String> {
    format::parse_cursor(bytes).map(|file| file.slot.committed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use edge_log::{Destination, Log, LogConfig, NewRecord, Source};
    use std::sync::Arc;

    /// A real log directory holding `n` records in segments of 64 KiB (several segments).
    pub(crate) async fn log_with(dir: &Path, n: u64) {
        let mut config = LogConfig::new(dir);
        config.segment_bytes = 64 << 10;
        config.max_bytes = 64 << 20;
        let (log, _) = Log::open(config).unwrap();
        for i in 0..n {
            let appended = log
                .append(NewRecord {
                    timestamp_ms: 1_700_000_000_000 + i,
                    source: Source::Mqtt,
                    topic: format!("sensors/dev-{}/t", i % 3).into(),
                    client_id: Arc::from("c1"),
                    destination: Destination::topic("sensors"),
                    headers: vec![],
                    payload: Bytes::from(vec![b'x'; 1000]),
                })
                .await
                .unwrap();
            appended.durable().await.unwrap();
        }
        log.close().await.unwrap();
    }

    #[tokio::test]
    async fn every_record_is_read_in_order_across_segments() {
        let dir = tempfile::tempdir().unwrap();
        log_with(dir.path(), 300).await;
        let segments = list(dir.path()).unwrap();
        assert!(segments.len() > 2, "{segments:?}");
        let mut offsets = Vec::new();
        for s in &segments {
            assert_eq!(s.version, Some(format::SEGMENT_VERSION));
            let end = read(s, 1 << 20, |r| {
                offsets.push(r.offset);
                ControlFlow::Continue(())
            })
            .unwrap();
            assert_eq!(end.incomplete_tail, 0);
            assert!(end.damage.is_none());
        }
        assert_eq!(offsets, (0..300).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_record_being_written_is_an_incomplete_tail_and_damage_is_located() {
        let dir = tempfile::tempdir().unwrap();
        log_with(dir.path(), 3).await;
        let segment = list(dir.path()).unwrap().pop().unwrap();
        let clean = segment.bytes;
        let mut bytes = std::fs::read(&segment.path).unwrap();
        bytes.extend_from_slice(&900u32.to_le_bytes());
        bytes.extend_from_slice(&[1, 2, 3]);
        std::fs::write(&segment.path, &bytes).unwrap();
        let end = read(&segment, 1 << 20, |_| ControlFlow::Continue(())).unwrap();
        assert_eq!(
            (end.records, end.next_offset, end.incomplete_tail),
            (3, 3, 7)
        );
        bytes.truncate(clean as usize);
        bytes[clean as usize - 5] ^= 0xff; // inside the last record's body
        std::fs::write(&segment.path, &bytes).unwrap();
        let end = read(&segment, 1 << 20, |_| ControlFlow::Continue(())).unwrap();
        assert_eq!(end.records, 2);
        assert!(!end.deleted);
        let (at, why) = end.damage.unwrap();
        assert!(
            at > SEGMENT_HEADER_LEN as u64 && why.contains("crc"),
            "{at} {why}"
        );
        // Retention deleted it after the listing: reported, not an error.
        std::fs::remove_file(&segment.path).unwrap();
        let end = read(&segment, 1 << 20, |_| ControlFlow::Continue(())).unwrap();
        assert!(end.deleted && end.records == 0);
    }
}
