//! Reading frames out of a segment file without trusting it: a buffered sequential scan,
//! resynchronisation after damage (shared by recovery and readers, so both skip exactly the
//! same bytes), and a best-effort count of the frames in a damaged range.

use std::io;

use bytes::Bytes;

use crate::format::{self, FRAME_HEADER_LEN, FrameError, MIN_FRAME_LEN};
use crate::record::Record;
use crate::storage::{StorageFile, read_full_at};

/// Read size used by recovery and readers.
pub(crate) const READ_CHUNK: usize = 256 << 10;

/// Bytes needed to read a frame header and the offset that opens every body version.
const PEEK: usize = FRAME_HEADER_LEN + 11;

/// A frame found by [`resync`].
#[derive(Debug)]
pub(crate) struct Found {
    /// File position of the frame.
    pub pos: u64,
    /// The record it holds.
    pub record: Record,
}

/// Where damage was met and what may follow it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Damage {
    /// File position where the frame of `at` should have started.
    pub pos: u64,
    /// The offset expected there.
    pub at: u64,
    /// Offsets at or above this cannot be in this segment (the next segment's base, or the
    /// durable end of the active one; `u64::MAX` when unknown, at recovery).
    pub limit: u64,
}

impl Damage {
    /// Whether a valid frame of `offset` at `pos` can follow the damage: its offset lies after
    /// the damaged one and below the limit, and the damaged bytes could hold the records in
    /// between (each takes at least [`MIN_FRAME_LEN`] bytes). The last rule keeps a stray
    /// checksum match in garbage from claiming a far-away offset.
    fn plausible(&self, offset: u64, pos: u64) -> bool {
        offset > self.at
            && offset < self.limit
            && (offset - self.at).saturating_mul(MIN_FRAME_LEN as u64)
                <= pos.saturating_sub(self.pos)
    }
}

/// Looks for the first frame after `damage` (searching from `from` to `file_len`)
/// whose length is plausible, whose CRC matches, whose body decodes and whose offset is a
/// plausible continuation ([`Damage`]). Runs of zero bytes are skipped quickly (a frame never
/// starts with a zero length).
pub(crate) fn resync(
    file: &dyn StorageFile,
    file_len: u64,
    damage: Damage,
    from: u64,
    max_record: u32,
) -> io::Result<Option<Found>> {
    let mut window = Bytes::new();
    let mut window_start = 0u64;
    let mut p = from.max(damage.pos + 1);
    while p + PEEK as u64 <= file_len {
        if p < window_start || p + PEEK as u64 > window_start + window.len() as u64 {
            let want = READ_CHUNK.min((file_len - p) as usize);
            let mut v = vec![0u8; want];
            let n = read_full_at(file, &mut v, p)?;
            v.truncate(n);
            window = Bytes::from(v);
            window_start = p;
            if window.len() < PEEK {
                break;
            }
        }
        let rel = (p - window_start) as usize;
        let w = &window[rel..];
        if w[..4] == [0, 0, 0, 0] {
            // A zero length: jump to three bytes before the next non-zero byte (the first
            // position whose length field can be non-zero).
            match w.iter().position(|&b| b != 0) {
                Some(i) => p += (i as u64).saturating_sub(3).max(1),
                None => p += (w.len() as u64).saturating_sub(3).max(1),
            }
            continue;
        }
        if let Ok((len, _)) = format::frame_header(w, max_record) {
            let end = p + (FRAME_HEADER_LEN + len) as u64;
            let plausible = end <= file_len
                && format::peek_offset(&w[FRAME_HEADER_LEN..PEEK])
                    .is_some_and(|o| damage.plausible(o, p));
            if plausible {
                let frame = if rel + FRAME_HEADER_LEN + len <= window.len() {
                    window.slice(rel..rel + FRAME_HEADER_LEN + len)
                } else {
                    let mut v = vec![0u8; FRAME_HEADER_LEN + len];
                    let n = read_full_at(file, &mut v, p)?;
                    v.truncate(n);
                    Bytes::from(v)
                };
                if let Ok((record, _)) = format::decode_frame(&frame, max_record)
                    && damage.plausible(record.offset, p)
                {
                    return Ok(Some(Found { pos: p, record }));
                }
            }
        }
        p += 1;
    }
    Ok(None)
}

/// How to get past a bad frame at `pos` (`error` is why it did not decode).
#[derive(Debug)]
pub(crate) enum Past {
    /// Only its length field was damaged: here is the record and its true frame length.
    Repaired(Record, usize),
    /// Search for the next frame from this position: the end the frame claims when its length
    /// is plausible and the frame complete (its own body is never searched, so a payload that
    /// embeds a frame cannot be taken for the next one), else the next byte.
    SearchFrom(u64),
    /// A frame announced past the end of the file that is not a damaged length: a torn write.
    /// Nothing after it can be a frame (it would be inside the torn frame's body).
    Torn,
}

/// Decides how to continue after the bad frame at `pos` (see [`Past`]).
pub(crate) fn past_bad_frame(
    file: &dyn StorageFile,
    pos: u64,
    file_len: u64,
    error: &FrameError,
    max_record: u32,
) -> io::Result<Past> {
    let mut head = [0u8; FRAME_HEADER_LEN];
    let n = read_full_at(file, &mut head, pos)?;
    let claimed = format::frame_header(&head[..n], max_record)
        .ok()
        .map(|(len, _)| pos + (FRAME_HEADER_LEN + len) as u64);
    match (error, claimed) {
        (FrameError::BadCrc | FrameError::Undecodable(_), Some(end)) if end <= file_len => {
            return Ok(Past::SearchFrom(end));
        }
        (FrameError::BadLength(0), _) => return Ok(Past::SearchFrom(pos + 1)),
        _ => {}
    }
    // A length above the cap, or a frame announced past the end of the file: a damaged
    // length field if the body decodes by itself with the stored checksum.
    let want = (FRAME_HEADER_LEN as u64 + u64::from(max_record)).min(file_len.saturating_sub(pos));
    let mut v = vec![0u8; want as usize];
    let got = read_full_at(file, &mut v, pos)?;
    v.truncate(got);
    if let Some((record, len)) = format::decode_ignoring_length(&Bytes::from(v), max_record) {
        return Ok(Past::Repaired(record, len));
    }
    Ok(match claimed {
        Some(end) if end > file_len => Past::Torn,
        _ => Past::SearchFrom(pos + 1),
    })
}

/// Whether `[pos, len)` of the file holds only zero bytes.
pub(crate) fn all_zero(file: &dyn StorageFile, mut pos: u64, len: u64) -> io::Result<bool> {
    let mut buf = vec![0u8; READ_CHUNK];
    while pos < len {
        let want = READ_CHUNK.min((len - pos) as usize);
        let n = read_full_at(file, &mut buf[..want], pos)?;
        if n == 0 {
            return Ok(true);
        }
        if buf[..n].iter().any(|&b| b != 0) {
            return Ok(false);
        }
        pos += n as u64;
    }
    Ok(true)
}

/// Best-effort count of frames in `[pos, len)`: walks plausible length fields (at least one
/// when the range is not empty).
pub(crate) fn count_frames(file: &dyn StorageFile, mut pos: u64, len: u64, max: u32) -> u64 {
    let mut n = 0;
    let mut head = [0u8; FRAME_HEADER_LEN];
    while pos < len {
        match read_full_at(file, &mut head, pos) {
            Ok(FRAME_HEADER_LEN) => {}
            _ => return n + 1,
        }
        match format::frame_header(&head, max) {
            Ok((l, _)) => {
                n += 1;
                pos += (FRAME_HEADER_LEN + l) as u64;
            }
            Err(_) => return n + 1,
        }
    }
    n
}

/// What [`Frames::next`] found at the current position.
#[derive(Debug)]
pub(crate) enum Next {
    /// A frame that decodes: its record and length. The caller checks the offset.
    Frame(Record, usize),
    /// The end of the file, exactly at a frame boundary.
    End,
    /// Bytes that are not a valid frame (the reason; `Incomplete` at the end of the file).
    Bad(FrameError),
}

/// A buffered sequential scan over the frames of one file (recovery's view of a segment).
#[derive(Debug)]
pub(crate) struct Frames<'a> {
    file: &'a dyn StorageFile,
    len: u64,
    max: u32,
    /// File position of the next frame.
    pub pos: u64,
    buf: Bytes,
    buf_start: u64,
}

impl<'a> Frames<'a> {
    /// A scan of `file` (of `len` bytes) from `pos`.
    pub fn new(file: &'a dyn StorageFile, len: u64, pos: u64, max: u32) -> Self {
        Self {
            file,
            len,
            max,
            pos,
            buf: Bytes::new(),
            buf_start: pos,
        }
    }

    /// Decodes the frame at `pos` without advancing. A frame is only `Incomplete` once the
    /// buffer holds as many bytes as its length field claims or the file ends first (a frame
    /// longer than [`READ_CHUNK`] is never taken for a torn or damaged one).
    pub fn next(&mut self) -> io::Result<Next> {
        if self.pos >= self.len {
            return Ok(Next::End);
        }
        // The frame length known to the read made for this frame, if any (0: its header was
        // not in the buffer, so the read was only a chunk).
        let mut read = None;
        loop {
            let rel = self.pos.checked_sub(self.buf_start).map(|r| r as usize);
            let view = match rel {
                Some(r) if r <= self.buf.len() => self.buf.slice(r..),
                _ => Bytes::new(),
            };
            match format::decode_frame(&view, self.max) {
                Ok((rec, n)) => return Ok(Next::Frame(rec, n)),
                Err(FrameError::Incomplete) => {
                    let frame = format::frame_header(&view, self.max)
                        .map_or(0, |(l, _)| FRAME_HEADER_LEN + l);
                    // A first read; a second only when the first did not know the length and
                    // the header is now readable. At most two: a frame still incomplete after
                    // them runs past the end of the file.
                    if !read.is_none_or(|first| first == 0 && frame > 0) {
                        return Ok(Next::Bad(FrameError::Incomplete));
                    }
                    let want = frame.max(READ_CHUNK).min((self.len - self.pos) as usize);
                    let mut v = vec![0u8; want];
                    let got = read_full_at(self.file, &mut v, self.pos)?;
                    v.truncate(got);
                    self.buf = Bytes::from(v);
                    self.buf_start = self.pos;
                    read = Some(frame);
                }
                Err(e) => return Ok(Next::Bad(e)),
            }
        }
    }

    /// Moves past a frame of `n` bytes.
    pub fn advance(&mut self, n: usize) {
        self.pos += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Destination, NewRecord, Source};
    use crate::storage::Storage;
    use crate::testing::MemStorage;
    use std::path::Path;

    fn frame(offset: u64, payload: &[u8]) -> Vec<u8> {
        let r = NewRecord {
            timestamp_ms: 1,
            source: Source::Mqtt,
            topic: "t".into(),
            client_id: "c".into(),
            destination: Destination::topic("k"),
            headers: Vec::new(),
            payload: Bytes::copy_from_slice(payload),
        };
        let mut out = Vec::new();
        format::encode_frame(&format::body_ref(offset, &r), &mut out).unwrap();
        out
    }

    fn file_with(bytes: &[u8]) -> std::sync::Arc<dyn StorageFile> {
        let mem = MemStorage::new();
        mem.create_dir_all(Path::new("/s")).unwrap();
        let f = mem.create(Path::new("/s/f")).unwrap();
        f.write_at(bytes, 0).unwrap();
        f
    }

    #[test]
    fn resync_skips_zeros_and_damage_and_honours_the_plausibility_bound() {
        let mut bytes = frame(10, b"first");
        let bad = bytes.len() as u64;
        bytes.extend_from_slice(&[0u8; 5000]);
        bytes.extend_from_slice(&[7u8; 33]);
        let next_pos = bytes.len() as u64;
        bytes.extend_from_slice(&frame(12, b"after"));
        let f = file_with(&bytes);
        let len = bytes.len() as u64;
        let damage = Damage {
            pos: bad,
            at: 11,
            limit: u64::MAX,
        };
        let found = resync(f.as_ref(), len, damage, 0, 1024).unwrap().unwrap();
        assert_eq!((found.pos, found.record.offset), (next_pos, 12));
        // A frame claiming an offset the damaged bytes could not have held is not accepted.
        let far = Damage {
            pos: next_pos - 20,
            at: 5,
            limit: u64::MAX,
        };
        assert!(resync(f.as_ref(), len, far, 0, 1024).unwrap().is_none());
        // Nor one at or past the limit, nor one at or below the damaged offset.
        for (at, limit) in [(11, 12), (12, u64::MAX)] {
            let d = Damage {
                pos: bad,
                at,
                limit,
            };
            assert!(resync(f.as_ref(), len, d, 0, 1024).unwrap().is_none());
        }
    }

    #[test]
    fn past_a_bad_frame_never_searches_its_own_body() {
        // A frame whose payload embeds a valid frame claiming the next offset.
        let embedded = frame(11, b"forged");
        let mut payload = vec![b'x'; 40];
        payload.extend_from_slice(&embedded);
        payload.extend_from_slice(&[b'y'; 40]);
        let mut bytes = frame(10, &payload);
        let end_of_carrier = bytes.len() as u64;
        bytes.extend_from_slice(&frame(11, b"real"));
        // Damage the carrier's body: its own body must not be searched.
        bytes[30] ^= 0xff;
        let f = file_with(&bytes);
        let len = bytes.len() as u64;
        let past = past_bad_frame(f.as_ref(), 0, len, &FrameError::BadCrc, 1024).unwrap();
        assert!(
            matches!(past, Past::SearchFrom(p) if p == end_of_carrier),
            "{past:?}"
        );
        let damage = Damage {
            pos: 0,
            at: 10,
            limit: u64::MAX,
        };
        let found = resync(f.as_ref(), len, damage, end_of_carrier, 1024)
            .unwrap()
            .unwrap();
        assert_eq!(found.record.payload.as_ref(), b"real");
        // Torn inside the carrier: nothing after it is searched either.
        let torn = &bytes[..50];
        let f = file_with(torn);
        let past = past_bad_frame(f.as_ref(), 0, 50, &FrameError::Incomplete, 1024).unwrap();
        assert!(matches!(past, Past::Torn), "{past:?}");
        // A damaged length over an intact frame is repaired.
        let mut bytes = frame(10, b"intact");
        let good_len = bytes.len();
        bytes.extend_from_slice(&frame(11, b"next"));
        bytes[2] = 0x7f;
        let f = file_with(&bytes);
        let past = past_bad_frame(
            f.as_ref(),
            0,
            bytes.len() as u64,
            &FrameError::BadLength(0),
            1 << 20,
        );
        assert!(matches!(past, Ok(Past::SearchFrom(1))));
        let past = past_bad_frame(
            f.as_ref(),
            0,
            bytes.len() as u64,
            &FrameError::Incomplete,
            1 << 24,
        )
        .unwrap();
        assert!(
            matches!(past, Past::Repaired(ref r, n) if r.offset == 10 && n == good_len),
            "{past:?}"
        );
    }

    #[test]
    fn frames_scan_reports_end_and_bad_bytes() {
        let mut bytes = frame(0, b"a");
        bytes.extend_from_slice(&frame(1, b"b"));
        let good = bytes.len() as u64;
        bytes.extend_from_slice(&[0u8; 9]);
        let f = file_with(&bytes);
        let mut frames = Frames::new(f.as_ref(), bytes.len() as u64, 0, 1024);
        for want in 0..2 {
            match frames.next().unwrap() {
                Next::Frame(r, n) => {
                    assert_eq!(r.offset, want);
                    frames.advance(n);
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(frames.pos, good);
        assert!(matches!(
            frames.next().unwrap(),
            Next::Bad(FrameError::BadLength(0))
        ));
        let mut at_end = Frames::new(f.as_ref(), good, good, 1024);
        assert!(matches!(at_end.next().unwrap(), Next::End));
        assert_eq!(count_frames(f.as_ref(), 0, good, 1024), 2);
    }

    /// Frames longer than a read chunk decode whole whether the scan met them with their
    /// header outside its buffer (its length unknown) or split across the buffer's end; one cut
    /// short by the end of the file is still `Incomplete`.
    #[test]
    fn frames_scan_reads_frames_longer_than_a_read_chunk() {
        let sized = |offset: u64, len: usize| frame(offset, &vec![offset as u8 + 1; len]);
        let overhead = sized(0, READ_CHUNK).len() - READ_CHUNK;
        let payloads = [
            // Met with an empty buffer.
            READ_CHUNK + 1000,
            // Read whole by the chunk read after frame 0, which then holds 4 bytes of the next
            // frame's header.
            READ_CHUNK - 4 - overhead,
            3 * READ_CHUNK,
        ];
        let frames: Vec<Vec<u8>> = (0..).zip(payloads).map(|(o, n)| sized(o, n)).collect();
        assert_eq!(frames[1].len(), READ_CHUNK - 4);
        let mut bytes = frames.concat();
        let good = bytes.len() as u64;
        let torn = sized(3, 2 * READ_CHUNK);
        bytes.extend_from_slice(&torn[..torn.len() - 1]);
        let f = file_with(&bytes);
        let max = 4 * READ_CHUNK as u32;
        let mut scan = Frames::new(f.as_ref(), bytes.len() as u64, 0, max);
        for (offset, frame) in frames.iter().enumerate() {
            match scan.next().unwrap() {
                Next::Frame(r, n) => {
                    assert_eq!((r.offset, n), (offset as u64, frame.len()));
                    assert_eq!(r.payload, vec![offset as u8 + 1; payloads[offset]]);
                    scan.advance(n);
                }
                other => panic!("frame {offset}: {other:?}"),
            }
        }
        assert_eq!(scan.pos, good);
        assert!(matches!(
            scan.next().unwrap(),
            Next::Bad(FrameError::Incomplete)
        ));
    }
}
