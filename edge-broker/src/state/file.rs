//! Journal file layout: the header, frames of records, file names (encoding and checked
//! decoding; the I/O goes through edge-log's [`Storage`] trait).

use edge_log::{StorageFile, storage::read_full_at};

use super::record::Record;

/// First bytes of every journal file.
pub const MAGIC: &[u8; 8] = b"EBSTATE\0";
/// The journal format version this build writes and reads.
pub const VERSION: u16 = 1;
/// Bytes of the file header.
pub const HEADER_LEN: usize = 32;
/// Bytes of a frame header (`len`, `crc32c`).
pub const FRAME_HEADER_LEN: usize = 8;
/// A frame is closed once its body reaches this size (a single larger record makes a larger
/// frame).
pub const FRAME_TARGET: usize = 64 << 10;
/// Extension of a generation file; `.tmp` is appended while a startup checkpoint is written.
pub const EXTENSION: &str = "journal";

/// Why a journal file, or part of it, cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// The header is not one this build wrote.
    #[error("bad header: {0}")]
    Header(&'static str),
    /// The file's header names another generation than its file name.
    #[error("header says generation {found}, the file name {expected}")]
    Generation {
        /// From the file name.
        expected: u64,
        /// From the header.
        found: u64,
    },
    /// A frame cannot be read at this position.
    #[error("bad frame at byte {at}: {why}")]
    Frame {
        /// Byte position of the frame in the file.
        at: u64,
        /// What is wrong.
        why: &'static str,
    },
    /// A frame whose checksum holds contains something that is not a record.
    #[error("undecodable record in the frame at byte {at}: {why}")]
    Record {
        /// Byte position of the frame in the file.
        at: u64,
        /// The decoder's complaint.
        why: String,
    },
}

/// The header at the start of every generation file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileHeader {
    /// Generation number (also in the file name).
    pub generation: u64,
    /// Identity of the process that wrote the file: session keys (`sid`) are that process's.
    pub incarnation: u64,
}

impl FileHeader {
    /// The header's bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[..8].copy_from_slice(MAGIC);
        out[8..10].copy_from_slice(&VERSION.to_le_bytes());
        out[12..20].copy_from_slice(&self.generation.to_le_bytes());
        out[20..28].copy_from_slice(&self.incarnation.to_le_bytes());
        let crc = crc32c::crc32c(&out[..28]);
        out[28..32].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes and checks a header.
    pub fn decode(bytes: &[u8]) -> Result<FileHeader, FormatError> {
        if bytes.len() < HEADER_LEN {
            return Err(FormatError::Header("shorter than a header"));
        }
        if &bytes[..8] != MAGIC {
            return Err(FormatError::Header("wrong magic: not a state journal"));
        }
        if crc32c::crc32c(&bytes[..28]) != u32_at(bytes, 28) {
            return Err(FormatError::Header("checksum mismatch"));
        }
        if u16::from_le_bytes([bytes[8], bytes[9]]) != VERSION {
            return Err(FormatError::Header(
                "unknown format version (written by another build)",
            ));
        }
        if bytes[10..12] != [0, 0] {
            return Err(FormatError::Header("reserved bytes are not zero"));
        }
        Ok(FileHeader {
            generation: u64_at(bytes, 12),
            incarnation: u64_at(bytes, 20),
        })
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(x)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

/// File name of generation `generation`.
pub fn file_name(generation: u64) -> String {
    format!("{generation:020}.{EXTENSION}")
}

/// The generation a file name stands for (`Some` only for exactly [`file_name`]'s form).
pub fn parse_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(EXTENSION)?.strip_suffix('.')?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// A frame being filled with records: 8 bytes reserved for the header, then the body.
#[derive(Debug)]
pub struct FrameBuf {
    bytes: Vec<u8>,
}

impl Default for FrameBuf {
    fn default() -> Self {
        FrameBuf {
            bytes: vec![0; FRAME_HEADER_LEN],
        }
    }
}

impl FrameBuf {
    /// Whether no record was added yet.
    pub fn is_empty(&self) -> bool {
        self.bytes.len() == FRAME_HEADER_LEN
    }

    /// Bytes of the frame so far, header included.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Appends one record; returns the bytes it took.
    pub fn push(&mut self, record: &Record) -> Result<usize, postcard::Error> {
        let before = self.bytes.len();
        match postcard::to_extend(record, std::mem::take(&mut self.bytes)) {
            Ok(bytes) => {
                self.bytes = bytes;
                Ok(self.bytes.len() - before)
            }
            Err(err) => {
                // The buffer went with the failed encoder; the frame is lost (and the
                // journal fails), but the buffer stays a well-formed empty frame.
                *self = FrameBuf::default();
                Err(err)
            }
        }
    }

    /// Fills in the header and returns the frame's bytes; `None` if the body is too large for
    /// a frame (never for records of an MQTT packet's size).
    pub fn seal(mut self) -> Option<Vec<u8>> {
        let body_len = u32::try_from(self.bytes.len() - FRAME_HEADER_LEN).ok()?;
        let crc = crc32c::crc32c(&self.bytes[FRAME_HEADER_LEN..]);
        self.bytes[..4].copy_from_slice(&body_len.to_le_bytes());
        self.bytes[4..8].copy_from_slice(&crc.to_le_bytes());
        Some(self.bytes)
    }
}

/// Reads the frames of one file in order, one body at a time (memory: the largest frame).
pub struct FrameReader<'a> {
    file: &'a dyn StorageFile,
    pos: u64,
    len: u64,
    body: Vec<u8>,
}

impl<'a> FrameReader<'a> {
    /// Frames of `file` (of `len` bytes) from byte `pos` (just past the header).
    pub fn new(file: &'a dyn StorageFile, pos: u64, len: u64) -> FrameReader<'a> {
        FrameReader {
            file,
            pos,
            len,
            body: Vec::new(),
        }
    }

    /// Where the next frame starts (after an error: where the bad frame starts).
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// The next frame's position and body; `Ok(None)` at the end of the file. A frame's
    /// length is checked against the bytes left in the file before anything is allocated.
    pub fn next_frame(&mut self) -> Result<Option<(u64, &[u8])>, FormatError> {
        let at = self.pos;
        let left = self.len.saturating_sub(at);
        if left == 0 {
            return Ok(None);
        }
        let bad = |why| FormatError::Frame { at, why };
        if left < FRAME_HEADER_LEN as u64 {
            return Err(bad("partial frame header"));
        }
        let mut header = [0u8; FRAME_HEADER_LEN];
        match read_full_at(self.file, &mut header, at) {
            Ok(n) if n == FRAME_HEADER_LEN => {}
            Ok(_) => return Err(bad("file ended inside a frame header")),
            Err(_) => return Err(bad("read failed")),
        }
        let body_len = u64::from(u32_at(&header, 0));
        if body_len == 0 {
            return Err(bad("zero length (zero-filled or unwritten)"));
        }
        if body_len > left - FRAME_HEADER_LEN as u64 {
            return Err(bad("length runs past the end of the file"));
        }
        let body_len = usize::try_from(body_len).map_err(|_| bad("length too large"))?;
        self.body.clear();
        self.body.resize(body_len, 0);
        match read_full_at(self.file, &mut self.body, at + FRAME_HEADER_LEN as u64) {
            Ok(n) if n == body_len => {}
            Ok(_) => return Err(bad("file ended inside a frame")),
            Err(_) => return Err(bad("read failed")),
        }
        if crc32c::crc32c(&self.body) != u32_at(&header, 4) {
            return Err(bad("checksum mismatch"));
        }
        self.pos = at + (FRAME_HEADER_LEN + body_len) as u64;
        Ok(Some((at, &self.body)))
    }
}

/// Decodes the records of one frame body, in order.
pub fn decode_records(at: u64, mut body: &[u8]) -> Result<Vec<Record>, FormatError> {
    let mut records = Vec::new();
    while !body.is_empty() {
        let (record, rest) =
            postcard::take_from_bytes::<Record>(body).map_err(|e| FormatError::Record {
                at,
                why: e.to_string(),
            })?;
        records.push(record);
        body = rest;
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_refuses_damage() {
        let h = FileHeader {
            generation: 7,
            incarnation: 0xdead_beef,
        };
        let bytes = h.encode();
        assert_eq!(FileHeader::decode(&bytes), Ok(h));
        for i in 0..HEADER_LEN {
            let mut bad = bytes;
            bad[i] ^= 0x10;
            assert!(FileHeader::decode(&bad).is_err(), "flip in byte {i}");
        }
        assert!(FileHeader::decode(&bytes[..31]).is_err());
    }

    #[test]
    fn file_names_parse_only_in_their_exact_form() {
        assert_eq!(parse_file_name(&file_name(42)), Some(42));
        assert_eq!(parse_file_name("00000000000000000042.journal.tmp"), None);
        assert_eq!(parse_file_name("42.journal"), None);
        assert_eq!(parse_file_name("0000000000000000004x.journal"), None);
        assert_eq!(parse_file_name("sessions.bin"), None);
    }
}
