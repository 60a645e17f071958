//! The small file-I/O trait the log runs on, and its real implementation on `std::fs`.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

/// File-system operations the log needs. The real one is [`StdStorage`]; tests inject faults
/// through fakes in the `testing` module.
pub trait Storage: Send + Sync + fmt::Debug {
    /// Creates a directory and its parents.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// File names (not paths) in a directory.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Opens an existing file for reading and writing.
    fn open(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>>;
    /// Creates a file (truncating an existing one) for reading and writing.
    fn create(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>>;
    /// Atomically renames a file.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Deletes a file.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Makes the directory's entries (creates, renames, removes) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Opens an existing file a second time for direct writes that bypass the page cache
    /// (`O_DIRECT`: offsets, lengths and memory aligned to the device's sectors; see
    /// [`crate::LogConfig::sector_writes`]). `Ok(None)` where the platform or file system has
    /// no direct I/O, and by default (the fakes).
    fn open_direct(&self, _path: &Path) -> io::Result<Option<Arc<dyn StorageFile>>> {
        Ok(None)
    }
    /// The name of the file system holding `dir` if it never overwrites a file's blocks in
    /// place (copy on write: btrfs, ZFS, bcachefs), where zeros written ahead
    /// ([`crate::LogConfig::preallocate`]) spare nothing. `None` otherwise, where it cannot be
    /// told, and by default (the fakes).
    fn copy_on_write(&self, _dir: &Path) -> Option<&'static str> {
        None
    }
}

/// An open file.
pub trait StorageFile: Send + Sync + fmt::Debug {
    /// Current length in bytes.
    fn size(&self) -> io::Result<u64>;
    /// Reads at a position; fewer bytes (0 at EOF) is not an error.
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize>;
    /// Writes at a position; may write fewer bytes than given.
    fn write_at(&self, buf: &[u8], pos: u64) -> io::Result<usize>;
    /// Makes written data durable (fdatasync).
    fn sync_data(&self) -> io::Result<()>;
    /// Truncates or extends to `len` bytes.
    fn truncate(&self, len: u64) -> io::Result<()>;
}

/// Writes all of `buf` at `pos`, looping over short writes.
pub fn write_all_at(f: &dyn StorageFile, mut buf: &[u8], mut pos: u64) -> io::Result<()> {
    while !buf.is_empty() {
        match f.write_at(buf, pos) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "wrote 0 bytes")),
            Ok(n) => {
                buf = &buf[n..];
                pos += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads into `buf` at `pos` until it is full or EOF; returns the bytes read.
pub fn read_full_at(f: &dyn StorageFile, buf: &mut [u8], pos: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match f.read_at(&mut buf[done..], pos + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// The real storage: `std::fs`, positional I/O, `fdatasync` via `File::sync_data`.
#[derive(Debug, Default, Clone, Copy)]
pub struct StdStorage;

#[derive(Debug)]
struct StdFile(File);

impl StorageFile for StdFile {
    fn size(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        self.0.read_at(buf, pos)
    }
    fn write_at(&self, buf: &[u8], pos: u64) -> io::Result<usize> {
        self.0.write_at(buf, pos)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn truncate(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
}

impl Storage for StdStorage {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            if let Some(name) = entry.file_name().to_str() {
                names.push(name.to_owned());
            }
        }
        Ok(names)
    }
    fn open(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        let f = OpenOptions::new().read(true).write(true).open(path)?;
        Ok(Arc::new(StdFile(f)))
    }
    fn create(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        Ok(Arc::new(StdFile(f)))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
    #[cfg(target_os = "linux")]
    fn open_direct(&self, path: &Path) -> io::Result<Option<Arc<dyn StorageFile>>> {
        use std::os::unix::fs::OpenOptionsExt;
        match OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
        {
            Ok(f) => Ok(Some(Arc::new(StdFile(f)))),
            // The file system has no O_DIRECT (EINVAL).
            Err(e) if e.kind() == io::ErrorKind::InvalidInput => Ok(None),
            Err(e) => Err(e),
        }
    }
    #[cfg(target_os = "linux")]
    fn copy_on_write(&self, dir: &Path) -> Option<&'static str> {
        let st = nix::sys::statfs::statfs(dir).ok()?;
        // The magic is a signed word of the platform's width: its low 32 bits name the file
        // system.
        copy_on_write_fs(st.filesystem_type().0 as u32)
    }
}

/// The copy-on-write file system a `statfs` magic number names, if it is one (see
/// [`Storage::copy_on_write`]; magic numbers from Linux's `magic.h` and OpenZFS).
fn copy_on_write_fs(magic: u32) -> Option<&'static str> {
    match magic {
        0x9123_683E => Some("btrfs"),
        0x2FC1_2FC1 => Some("zfs"),
        0xCA45_1A4E => Some("bcachefs"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_on_write_file_systems_are_told_by_their_magic() {
        assert_eq!(copy_on_write_fs(0x9123_683E), Some("btrfs"));
        assert_eq!(copy_on_write_fs(0x2FC1_2FC1), Some("zfs"));
        assert_eq!(copy_on_write_fs(0xCA45_1A4E), Some("bcachefs"));
        // ext4, xfs, f2fs, tmpfs overwrite in place.
        for magic in [0xEF53, 0x5846_5342, 0xF2F5_2010, 0x0102_1994] {
            assert_eq!(copy_on_write_fs(magic), None, "{magic:#x}");
        }
        // On 32-bit ARM the word is signed: btrfs's magic arrives negative.
        let word = i64::from(0x9123_683E_u32 as i32);
        assert_eq!(copy_on_write_fs(word as u32), Some("btrfs"));
    }
}
