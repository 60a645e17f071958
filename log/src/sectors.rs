//! Sector writes ([`crate::LogConfig::sector_writes`]): the active segment's new bytes reach
//! the device as whole 512-byte sectors through a second, `O_DIRECT` handle, instead of the
//! 4 KiB page (the file system's block) that the page cache writes back at each fdatasync.
//!
//! At a gateway's rate one sync covers a few hundred bytes. Through the page cache every sync
//! writes the whole page holding the segment's end again — 4 KiB for ~1 KiB of new records at
//! ten syncs a second, four times the payload before anything else. A direct write sends the
//! sectors from the one holding the previous end to the one holding the new end: the new bytes
//! plus at most 511 bytes before them and 511 after.
//!
//! Invariants:
//! - `tail` holds the segment's bytes from [`sector_start`]`(len)` to `len`, where `len` is the
//!   writer's end of the segment: a direct write sends them again, unchanged, ahead of the new
//!   bytes, so the frames already in that sector are rewritten with the same bytes, never lost.
//!   (Through the page cache the whole 4 KiB page holding them is rewritten at each sync; here
//!   one sector is. A device that tore a 512-byte write at a power cut could damage records
//!   acknowledged before it, in both cases; recovery then resyncs past the damage and keeps
//!   what follows, RELIABILITY.md.)
//! - The bytes after the new end up to the end of its sector are written as zeros: the segment
//!   is zero-filled ahead of the writer ([`crate::LogConfig::zeros_ahead`]), so they were zeros
//!   already, and recovery keeps zeros after the last frame.
//! - The fdatasync stays the syncer's, on the buffered handle of the same file: it flushes the
//!   device's write cache, which `O_DIRECT` alone does not.
//! - A write the handle refuses as misaligned (`EINVAL`: a device with larger logical sectors,
//!   a file system without `O_DIRECT`) has written nothing; the writer then turns sector writes
//!   off for the rest of the log's life (one warning) and writes the same bytes, at the same
//!   place, through the page cache.

use std::io;
use std::sync::Arc;

use crate::storage::{Storage, StorageFile, read_full_at, write_all_at};

/// The unit of a direct write: offsets and lengths are multiples of it.
pub(crate) const SECTOR: u64 = 512;

/// Alignment of the memory handed to a direct write (a page: enough for every device).
const MEMORY_ALIGN: usize = 4096;

/// Staging memory kept between writes; a burst's larger window is given back after it.
const STAGING_KEEP: usize = 64 << 10;

/// Where the sector holding byte `pos` starts.
pub(crate) fn sector_start(pos: u64) -> u64 {
    pos - pos % SECTOR
}

/// The active segment's `O_DIRECT` handle and the bytes of its last, partly filled sector.
#[derive(Debug)]
pub(crate) struct SectorWriter {
    file: Arc<dyn StorageFile>,
    /// The segment's bytes from `sector_start(len)` to `len` (see the module's invariants).
    tail: Vec<u8>,
    /// Reused memory for the aligned window of each write.
    staging: Vec<u8>,
}

/// What one direct write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sent {
    /// Written, sectors `[start, end)` of the file.
    Sectors { start: u64, end: u64 },
    /// Refused as misaligned: nothing was written.
    Refused,
}

impl SectorWriter {
    /// Opens the segment at `path` (buffered handle `file`, `len` bytes written) for sector
    /// writes; `None` where the storage has no direct I/O.
    pub fn open(
        storage: &dyn Storage,
        path: &std::path::Path,
        file: &dyn StorageFile,
        len: u64,
    ) -> io::Result<Option<SectorWriter>> {
        let Some(direct) = storage.open_direct(path)? else {
            return Ok(None);
        };
        let start = sector_start(len);
        let mut tail = vec![0; (len - start) as usize];
        if read_full_at(file, &mut tail, start)? != tail.len() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "segment shorter than its written length",
            ));
        }
        Ok(Some(SectorWriter {
            file: direct,
            tail,
            staging: Vec::new(),
        }))
    }

    /// Writes `data` at `at`, the segment's current end, as whole sectors.
    pub fn write(&mut self, data: &[u8], at: u64) -> io::Result<Sent> {
        let start = sector_start(at);
        debug_assert_eq!(at - start, self.tail.len() as u64, "tail out of step");
        let end = at + data.len() as u64;
        let padded = end.div_ceil(SECTOR) * SECTOR;
        let n = (padded - start) as usize;
        self.staging.clear();
        self.staging.resize(n + MEMORY_ALIGN, 0);
        let skip = self.staging.as_ptr().align_offset(MEMORY_ALIGN);
        let window = &mut self.staging[skip..skip + n];
        let (old, rest) = window.split_at_mut(self.tail.len());
        old.copy_from_slice(&self.tail);
        rest[..data.len()].copy_from_slice(data);
        match write_all_at(self.file.as_ref(), window, start) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::InvalidInput => return Ok(Sent::Refused),
            Err(e) => return Err(e),
        }
        let new_start = (sector_start(end) - start) as usize;
        let kept = (end - sector_start(end)) as usize;
        self.tail.clear();
        self.tail
            .extend_from_slice(&window[new_start..new_start + kept]);
        if self.staging.capacity() > STAGING_KEEP {
            self.staging = Vec::new();
        }
        Ok(Sent::Sectors { start, end: padded })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::StdStorage;

    /// A directory on the disk the workspace is on (`/tmp` may be a tmpfs without O_DIRECT).
    fn disk_dir() -> tempfile::TempDir {
        let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tmp");
        std::fs::create_dir_all(&base).unwrap();
        tempfile::tempdir_in(base).unwrap()
    }

    #[test]
    fn sector_starts() {
        assert_eq!(sector_start(0), 0);
        assert_eq!(sector_start(511), 0);
        assert_eq!(sector_start(512), 512);
        assert_eq!(sector_start(1500), 1024);
    }

    /// Appends of every size through the direct handle leave the file holding exactly the
    /// appended bytes (read through the page cache), zeros after them, and each write covers
    /// only the sectors from the old end's to the new end's.
    #[test]
    fn appends_land_whole_and_cover_only_their_sectors() {
        let dir = disk_dir();
        let path = dir.path().join("seg");
        let storage = StdStorage;
        let file = storage.create(&path).unwrap();
        write_all_at(file.as_ref(), &[0u8; 64 << 10], 0).unwrap();
        write_all_at(file.as_ref(), b"HEADER", 0).unwrap();
        let mut expect = b"HEADER".to_vec();
        let mut writer = SectorWriter::open(&storage, &path, file.as_ref(), 6)
            .unwrap()
            .expect("O_DIRECT on the target directory's file system");
        for (i, size) in [1usize, 10, 300, 511, 512, 513, 1000, 4096, 5000, 7]
            .into_iter()
            .enumerate()
        {
            let data: Vec<u8> = (0..size).map(|j| (i * 31 + j) as u8 | 1).collect();
            let at = expect.len() as u64;
            let sent = writer.write(&data, at).unwrap();
            expect.extend_from_slice(&data);
            let end = expect.len() as u64;
            assert_eq!(
                sent,
                Sent::Sectors {
                    start: sector_start(at),
                    end: end.div_ceil(SECTOR) * SECTOR
                }
            );
            let mut back = vec![0xAAu8; expect.len() + 600];
            let n = read_full_at(file.as_ref(), &mut back, 0).unwrap();
            assert_eq!(n, back.len());
            assert_eq!(&back[..expect.len()], &expect[..], "after write {i}");
            assert!(back[expect.len()..].iter().all(|&b| b == 0), "zeros after");
        }
    }

    /// A writer opened on a segment that already holds bytes keeps them (the tail is read).
    #[test]
    fn reopening_keeps_the_partial_sector() {
        let dir = disk_dir();
        let path = dir.path().join("seg");
        let storage = StdStorage;
        let file = storage.create(&path).unwrap();
        let first: Vec<u8> = (0..700u32).map(|i| (i % 251) as u8 + 1).collect();
        write_all_at(file.as_ref(), &first, 0).unwrap();
        let mut writer = SectorWriter::open(&storage, &path, file.as_ref(), 700)
            .unwrap()
            .expect("O_DIRECT on the target directory's file system");
        writer.write(b"more", 700).unwrap();
        let mut back = vec![0u8; 704];
        read_full_at(file.as_ref(), &mut back, 0).unwrap();
        assert_eq!(&back[..700], &first[..]);
        assert_eq!(&back[700..], b"more");
    }
}
