//! Cursor files: loading every persisted position at open, committing one crash-safely,
//! deleting. Knows the file layout ([`crate::format`]) and the storage, nothing of readers or the
//! writer.
//!
//! A cursor file holds two copies of the position (version 2: slots 4 KiB apart, each with a
//! sequence number and a checksum). A commit overwrites the older copy in place and syncs it:
//! a torn or failed write leaves the newer intact copy, which is the previous commit, so the
//! cursor resends a little and never skips forward. Overwriting allocated blocks needs no free
//! space and no directory change, so commits (and the retention they drive) keep working on a
//! full disk and wear flash less than a temp file, rename and directory sync per commit. New
//! files (and version 1 files, upgraded at their first commit) are written whole: temp file,
//! fdatasync, rename, directory fsync.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::error::LogError;
use crate::format::{self, CURSOR_SLOT_SPACING, CursorFile};
use crate::recovery::DamagedCursor;
use crate::segment::io_err;
use crate::storage::{Storage, read_full_at, write_all_at};

/// Whether `name` maps safely to a file name.
pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

/// What [`CursorFiles::load_all`] found.
#[derive(Debug, Default)]
pub(crate) struct Loaded {
    /// Committed position of every readable cursor.
    pub positions: BTreeMap<String, u64>,
    /// Cursors without a readable copy (`resumed_at` still to be decided).
    pub damaged: Vec<DamagedCursor>,
    /// Cursors with one damaged copy (the other one was used).
    pub one_copy_damaged: u64,
}

/// The sequence number and format of a cursor's file.
#[derive(Debug, Clone, Copy)]
struct FileState {
    /// Sequence number of the newest copy.
    seq: u64,
    /// A version 2 (two-copy) file: commits overwrite a slot in place.
    two_copies: bool,
}

/// The cursor files of one log directory.
#[derive(Debug)]
pub(crate) struct CursorFiles {
    storage: Arc<dyn Storage>,
    dir: PathBuf,
    files: Mutex<HashMap<String, FileState>>,
}

impl CursorFiles {
    /// The cursor files in `dir` (not read yet).
    pub fn new(storage: Arc<dyn Storage>, dir: PathBuf) -> CursorFiles {
        CursorFiles {
            storage,
            dir,
            files: Mutex::new(HashMap::new()),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.cur"))
    }

    /// Loads every persisted cursor (`<name>.cur`), deleting leftover temp files. A file
    /// without a valid copy (or that cannot be read) is reported, never an error: a bad state
    /// file must not stop the broker from starting.
    pub fn load_all(&self) -> Result<Loaded, LogError> {
        let mut out = Loaded::default();
        let names = self
            .storage
            .list(&self.dir)
            .map_err(io_err("list directory", &self.dir))?;
        let mut files = self.files.lock();
        for name in names {
            let path = self.dir.join(&name);
            if name.ends_with(".cur.tmp") {
                let _ = self.storage.remove(&path);
                continue;
            }
            let Some(cursor) = name.strip_suffix(".cur") else {
                continue;
            };
            match self.read(&path) {
                Ok(file) => {
                    if let Some(reason) = &file.damaged_copy {
                        tracing::warn!(cursor, path = %path.display(), %reason, "edge-log cursor file has one damaged copy; using the other");
                        out.one_copy_damaged += 1;
                    }
                    files.insert(
                        cursor.to_owned(),
                        FileState {
                            seq: file.slot.seq,
                            two_copies: file.version == format::CURSOR_VERSION,
                        },
                    );
                    out.positions.insert(cursor.to_owned(), file.slot.committed);
                }
                Err(reason) => out.damaged.push(DamagedCursor {
                    name: cursor.to_owned(),
                    path,
                    reason,
                    resumed_at: 0,
                }),
            }
        }
        Ok(out)
    }

    fn read(&self, path: &Path) -> Result<CursorFile, String> {
        let file = self
            .storage
            .open(path)
            .map_err(|e| format!("cannot open: {e}"))?;
        let mut buf = vec![0u8; format::CURSOR_FILE_V2_LEN as usize + 1];
        let n =
            read_full_at(file.as_ref(), &mut buf, 0).map_err(|e| format!("cannot read: {e}"))?;
        format::parse_cursor(&buf[..n])
    }

    /// Persists `committed` for `name` crash-safely: overwrites the older copy of a two-copy
    /// file and syncs it; writes a new file whole (also upgrading a version 1 file).
    pub fn commit(&self, name: &str, committed: u64) -> Result<(), LogError> {
        let mut files = self.files.lock();
        let path = self.path(name);
        match files.get(name).copied() {
            Some(FileState {
                seq,
                two_copies: true,
            }) => {
                let next = seq + 1;
                let file = self
                    .storage
                    .open(&path)
                    .map_err(io_err("open cursor", &path))?;
                let at = (next % 2) * CURSOR_SLOT_SPACING;
                write_all_at(file.as_ref(), &format::cursor_slot(next, committed), at)
                    .map_err(io_err("write cursor", &path))?;
                file.sync_data()
                    .map_err(io_err("fdatasync cursor", &path))?;
                files.insert(
                    name.to_owned(),
                    FileState {
                        seq: next,
                        two_copies: true,
                    },
                );
            }
            _ => {
                self.write_whole(name, committed)?;
                files.insert(
                    name.to_owned(),
                    FileState {
                        seq: 1,
                        two_copies: true,
                    },
                );
            }
        }
        Ok(())
    }

    /// Writes a fresh two-copy file: temp file, fdatasync, rename, directory fsync.
    fn write_whole(&self, name: &str, committed: u64) -> Result<(), LogError> {
        let tmp = self.dir.join(format!("{name}.cur.tmp"));
        let dst = self.path(name);
        let file = self
            .storage
            .create(&tmp)
            .map_err(io_err("create cursor temp", &tmp))?;
        write_all_at(file.as_ref(), &format::cursor_slot(0, committed), 0)
            .map_err(io_err("write cursor temp", &tmp))?;
        write_all_at(
            file.as_ref(),
            &format::cursor_slot(1, committed),
            CURSOR_SLOT_SPACING,
        )
        .map_err(io_err("write cursor temp", &tmp))?;
        file.sync_data()
            .map_err(io_err("fdatasync cursor temp", &tmp))?;
        drop(file);
        self.storage
            .rename(&tmp, &dst)
            .map_err(io_err("rename cursor", &dst))?;
        self.storage
            .sync_dir(&self.dir)
            .map_err(io_err("sync cursor directory", &self.dir))?;
        Ok(())
    }

    /// Deletes a cursor's file durably.
    pub fn remove(&self, name: &str) -> Result<(), LogError> {
        let path = self.path(name);
        self.files.lock().remove(name);
        self.storage
            .remove(&path)
            .map_err(io_err("remove cursor", &path))?;
        self.storage
            .sync_dir(&self.dir)
            .map_err(io_err("sync cursor directory", &self.dir))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{CrashMode, MemStorage};

    #[test]
    fn cursor_names_map_safely_to_files() {
        assert!(valid_name("kafka-bridge.v1_a"));
        for bad in ["", ".hidden", "a/b", "..", "a b", &"x".repeat(65)] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn commits_alternate_copies_and_survive_a_damaged_one() {
        let mem = MemStorage::new();
        let dir = PathBuf::from("/c");
        mem.create_dir_all(&dir).unwrap();
        let files = CursorFiles::new(mem.clone(), dir.clone());
        for committed in [10, 20, 30] {
            files.commit("k", committed).unwrap();
        }
        mem.crash(CrashMode::DropUnsynced);
        let reopened = CursorFiles::new(mem.clone(), dir.clone());
        assert_eq!(reopened.load_all().unwrap().positions["k"], 30);
        // Damage the newest copy: the previous commit is used (resend, never skip forward).
        let path = dir.join("k.cur");
        let bytes = mem.contents(&path).unwrap();
        let newest = if format::parse_cursor_slot(&bytes[..32]).unwrap().committed == 30 {
            0
        } else {
            CURSOR_SLOT_SPACING as usize
        };
        mem.modify(&path, |d| d[newest + 21] ^= 0xff).unwrap();
        let loaded = CursorFiles::new(mem.clone(), dir.clone())
            .load_all()
            .unwrap();
        assert_eq!(loaded.positions["k"], 20);
        assert_eq!(loaded.one_copy_damaged, 1);
        // Both damaged: reported, not an error.
        mem.modify(&path, |d| d.iter_mut().for_each(|b| *b ^= 0x55))
            .unwrap();
        let loaded = CursorFiles::new(mem.clone(), dir.clone())
            .load_all()
            .unwrap();
        assert!(loaded.positions.is_empty());
        assert_eq!(loaded.damaged.len(), 1);
        assert_eq!(loaded.damaged[0].name, "k");
    }

    #[test]
    fn a_version_1_file_is_read_and_upgraded_at_the_first_commit() {
        let mem = MemStorage::new();
        let dir = PathBuf::from("/c");
        mem.create_dir_all(&dir).unwrap();
        let f = mem.create(&dir.join("old.cur")).unwrap();
        f.write_at(&format::cursor_file(7), 0).unwrap();
        let files = CursorFiles::new(mem.clone(), dir.clone());
        assert_eq!(files.load_all().unwrap().positions["old"], 7);
        files.commit("old", 9).unwrap();
        let bytes = mem.contents(&dir.join("old.cur")).unwrap();
        assert_eq!(bytes.len() as u64, format::CURSOR_FILE_V2_LEN);
        let parsed = format::parse_cursor(&bytes).unwrap();
        assert_eq!(
            (parsed.version, parsed.slot.committed),
            (format::CURSOR_VERSION, 9)
        );
    }
}
