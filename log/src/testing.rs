//! Test fakes (feature `testing` or `cfg(test)`): [`MemStorage`], an in-memory file system with a
//! power-cut model (also cut at a planned point in the middle of the log's work), and
//! [`FaultyStorage`], a wrapper injecting ENOSPC, EIO on fsync, short writes and a held (slow)
//! fsync. They exist only to produce faults a real disk cannot produce on demand.

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::storage::{Storage, StorageFile};

/// What survives of unsynced data when [`MemStorage::crash`] simulates a power cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashMode {
    /// Every byte not covered by a `sync_data` is lost.
    DropUnsynced,
    /// Up to this many unsynced bytes past the synced prefix survive (a torn tail).
    TornTail(usize),
    /// The unsynced region keeps its length but reads back as zeros (delayed allocation).
    ZeroFill,
}

#[derive(Debug, Default)]
struct Inode {
    data: Vec<u8>,
    synced: Vec<u8>,
}

#[derive(Debug, Default)]
struct MemFs {
    names: HashMap<PathBuf, Arc<Mutex<Inode>>>,
    durable_names: HashMap<PathBuf, Arc<Mutex<Inode>>>,
    dirs: HashSet<PathBuf>,
}

/// In-memory file system with a power-cut model: file data is durable only up to the last
/// `sync_data`, directory entries only after `sync_dir`. Handles opened before a
/// [`crash`](MemStorage::crash) fail with EIO afterwards (the old process is dead).
/// [`crash_after`](MemStorage::crash_after) cuts the power in the middle of whatever the log
/// is doing: after that many more mutating operations, and then every mutation fails until
/// [`revive`](MemStorage::revive) (the next process).
#[derive(Debug, Default)]
pub struct MemStorage {
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    fs: Mutex<MemFs>,
    generation: AtomicU64,
    syncs: AtomicU64,
    /// Mutating operations left before a planned power cut, and its mode.
    plan: Mutex<Option<(u64, CrashMode)>>,
    /// The power was cut by a plan and the process has not been revived.
    dead: AtomicBool,
    /// `open_direct` gives a handle ([`MemStorage::with_direct_io`]).
    direct_io: AtomicBool,
    /// `copy_on_write` says btrfs ([`MemStorage::copy_on_write`]).
    copy_on_write: AtomicBool,
}

impl Shared {
    /// The current power generation (one per process between cuts).
    fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Counts a directory operation of the process of `generation` against a planned power
    /// cut and locks the file system for it; as [`MemFile::mutating`], a cut between the
    /// count and the lock (or before the count) fails it.
    fn mutating_fs(&self, generation: u64) -> io::Result<parking_lot::MutexGuard<'_, MemFs>> {
        self.step()?;
        let fs = self.fs.lock();
        if self.generation() != generation {
            return Err(io::Error::from_raw_os_error(5));
        }
        Ok(fs)
    }

    /// Counts one mutating operation against a planned power cut; fails once it happened.
    fn step(&self) -> io::Result<()> {
        if self.dead.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(5));
        }
        let mut plan = self.plan.lock();
        match &mut *plan {
            Some((0, mode)) => {
                let mode = *mode;
                *plan = None;
                drop(plan);
                self.dead.store(true, Ordering::SeqCst);
                self.crash(mode);
                Err(io::Error::from_raw_os_error(5))
            }
            Some((left, _)) => {
                *left -= 1;
                Ok(())
            }
            None => Ok(()),
        }
    }

    fn crash(&self, mode: CrashMode) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        let mut fs = self.fs.lock();
        fs.names = fs.durable_names.clone();
        for inode in fs.names.values() {
            let mut inode = inode.lock();
            let Inode { data, synced } = &mut *inode;
            let appended = data.len() > synced.len() && data.starts_with(synced);
            let new = match mode {
                CrashMode::DropUnsynced => synced.clone(),
                CrashMode::TornTail(keep) if appended => {
                    let end = data.len().min(synced.len() + keep);
                    data[..end].to_vec()
                }
                CrashMode::ZeroFill if appended => {
                    let mut v = synced.clone();
                    v.resize(data.len(), 0);
                    v
                }
                _ => synced.clone(),
            };
            *data = new.clone();
            *synced = new;
        }
    }
}

#[derive(Debug)]
struct MemFile {
    inode: Arc<Mutex<Inode>>,
    generation: u64,
    shared: Arc<Shared>,
}

impl MemFile {
    fn alive(&self) -> io::Result<()> {
        if self.shared.generation.load(Ordering::SeqCst) != self.generation {
            return Err(io::Error::from_raw_os_error(5));
        }
        Ok(())
    }

    /// Counts a mutation against a planned power cut and locks the inode for it. The handle
    /// is checked alive *under the lock*: a power cut that comes between the count and the
    /// lock (another thread's operation ran out the plan) fails this operation, and one that
    /// comes later waits for the lock, so the operation happened before it. Without that, a
    /// `sync_data` overtaken by the cut could apply to the files as they are after it and
    /// answer Ok to the dead process: an acknowledgement of data the cut had dropped.
    fn mutating(&self) -> io::Result<parking_lot::MutexGuard<'_, Inode>> {
        self.alive()?;
        self.shared.step()?;
        let inode = self.inode.lock();
        self.alive()?;
        Ok(inode)
    }
}

impl StorageFile for MemFile {
    fn size(&self) -> io::Result<u64> {
        self.alive()?;
        Ok(self.inode.lock().data.len() as u64)
    }
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        self.alive()?;
        let inode = self.inode.lock();
        let pos = pos as usize;
        if pos >= inode.data.len() {
            return Ok(0);
        }
        let n = buf.len().min(inode.data.len() - pos);
        buf[..n].copy_from_slice(&inode.data[pos..pos + n]);
        Ok(n)
    }
    fn write_at(&self, buf: &[u8], pos: u64) -> io::Result<usize> {
        let mut inode = self.mutating()?;
        let pos = pos as usize;
        if inode.data.len() < pos + buf.len() {
            inode.data.resize(pos + buf.len(), 0);
        }
        inode.data[pos..pos + buf.len()].copy_from_slice(buf);
        Ok(buf.len())
    }
    fn sync_data(&self) -> io::Result<()> {
        let mut inode = self.mutating()?;
        let Inode { data, synced } = &mut *inode;
        synced.clear();
        synced.extend_from_slice(data);
        self.shared.syncs.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn truncate(&self, len: u64) -> io::Result<()> {
        self.mutating()?.data.resize(len as usize, 0);
        Ok(())
    }
}

impl MemStorage {
    /// An empty in-memory file system.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// An empty in-memory file system whose files also open for direct I/O (a fake of
    /// `O_DIRECT` for `sector_writes`): the direct handle refuses, like Linux, a write whose
    /// position or length is not a multiple of 512 bytes (`EINVAL`), and otherwise writes the
    /// same file, unsynced until `sync_data` (the device's write cache).
    pub fn with_direct_io() -> Arc<Self> {
        let mem = Self::default();
        mem.shared.direct_io.store(true, Ordering::SeqCst);
        Arc::new(mem)
    }

    /// An empty in-memory file system that says it is copy on write (btrfs: a fake of
    /// `statfs`), so `preallocate` writes no zeros on it.
    pub fn copy_on_write() -> Arc<Self> {
        let mem = Self::default();
        mem.shared.copy_on_write.store(true, Ordering::SeqCst);
        Arc::new(mem)
    }

    /// Number of `sync_data` calls so far.
    pub fn syncs(&self) -> u64 {
        self.shared.syncs.load(Ordering::SeqCst)
    }

    /// Simulates a power cut: unsynced data and unsynced directory entries are lost (per
    /// `mode`), and every handle opened before now fails with EIO.
    pub fn crash(&self, mode: CrashMode) {
        self.shared.crash(mode);
    }

    /// Plans a power cut after `ops` more mutating operations (writes, syncs, truncations,
    /// creates, renames, removes, directory syncs), wherever the log then is. Until
    /// [`MemStorage::revive`], every mutation fails with EIO.
    pub fn crash_after(&self, ops: u64, mode: CrashMode) {
        *self.shared.plan.lock() = Some((ops, mode));
    }

    /// Whether a planned power cut has happened (and the storage was not revived).
    pub fn crashed(&self) -> bool {
        self.shared.dead.load(Ordering::SeqCst)
    }

    /// The next process starts after a planned power cut: mutations work again.
    pub fn revive(&self) {
        *self.shared.plan.lock() = None;
        self.shared.dead.store(false, Ordering::SeqCst);
    }

    /// Edits a file's bytes in place (both the live and the durable copy): for corruption tests.
    pub fn modify(&self, path: &Path, f: impl FnOnce(&mut Vec<u8>)) -> io::Result<()> {
        let fs = self.shared.fs.lock();
        let inode = fs
            .names
            .get(path)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        let mut inode = inode.lock();
        f(&mut inode.data);
        inode.synced = inode.data.clone();
        Ok(())
    }

    /// A copy of a file's current bytes.
    pub fn contents(&self, path: &Path) -> Option<Vec<u8>> {
        let fs = self.shared.fs.lock();
        fs.names.get(path).map(|i| i.lock().data.clone())
    }

    /// A handle of the process of `generation` (dead after the next cut).
    fn handle(&self, inode: Arc<Mutex<Inode>>, generation: u64) -> Arc<dyn StorageFile> {
        Arc::new(MemFile {
            inode,
            generation,
            shared: self.shared.clone(),
        })
    }
}

/// A direct handle of [`MemStorage::with_direct_io`]: whole sectors only.
#[derive(Debug)]
struct DirectMemFile(Arc<dyn StorageFile>);

impl StorageFile for DirectMemFile {
    fn size(&self) -> io::Result<u64> {
        self.0.size()
    }
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        self.0.read_at(buf, pos)
    }
    fn write_at(&self, buf: &[u8], pos: u64) -> io::Result<usize> {
        if !pos.is_multiple_of(512) || !buf.len().is_multiple_of(512) {
            return Err(io::Error::from_raw_os_error(22));
        }
        self.0.write_at(buf, pos)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn truncate(&self, len: u64) -> io::Result<()> {
        self.0.truncate(len)
    }
}

impl Storage for MemStorage {
    fn copy_on_write(&self, _dir: &Path) -> Option<&'static str> {
        self.shared
            .copy_on_write
            .load(Ordering::SeqCst)
            .then_some("btrfs")
    }
    fn open_direct(&self, path: &Path) -> io::Result<Option<Arc<dyn StorageFile>>> {
        if !self.shared.direct_io.load(Ordering::SeqCst) {
            return Ok(None);
        }
        Ok(Some(Arc::new(DirectMemFile(self.open(path)?))))
    }
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut fs = self.shared.mutating_fs(self.shared.generation())?;
        for a in dir.ancestors() {
            fs.dirs.insert(a.to_path_buf());
        }
        Ok(())
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let fs = self.shared.fs.lock();
        if !fs.dirs.contains(dir) {
            return Err(io::Error::from(io::ErrorKind::NotFound));
        }
        Ok(fs
            .names
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name().and_then(|n| n.to_str()).map(str::to_owned))
            .collect())
    }
    fn open(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        // A process the power cut killed opens nothing more (its handle would outlive it).
        if self.shared.dead.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(5));
        }
        let generation = self.shared.generation();
        let inode = {
            let fs = self.shared.fs.lock();
            fs.names
                .get(path)
                .cloned()
                .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?
        };
        Ok(self.handle(inode, generation))
    }
    fn create(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        // The handle belongs to the process that created the file: dead after a cut.
        let generation = self.shared.generation();
        let inode = {
            let mut fs = self.shared.mutating_fs(generation)?;
            let parent = path.parent().map(Path::to_path_buf).unwrap_or_default();
            if !fs.dirs.contains(&parent) {
                return Err(io::Error::from(io::ErrorKind::NotFound));
            }
            match fs.names.get(path) {
                Some(i) => {
                    i.lock().data.clear();
                    i.clone()
                }
                None => {
                    let i = Arc::new(Mutex::new(Inode::default()));
                    fs.names.insert(path.to_path_buf(), i.clone());
                    i
                }
            }
        };
        Ok(self.handle(inode, generation))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut fs = self.shared.mutating_fs(self.shared.generation())?;
        let inode = fs
            .names
            .remove(from)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        fs.names.insert(to.to_path_buf(), inode);
        Ok(())
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut fs = self.shared.mutating_fs(self.shared.generation())?;
        fs.names
            .remove(path)
            .map(|_| ())
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut fs = self.shared.mutating_fs(self.shared.generation())?;
        let MemFs {
            names,
            durable_names,
            ..
        } = &mut *fs;
        durable_names.retain(|p, _| p.parent() != Some(dir));
        for (p, i) in names.iter() {
            if p.parent() == Some(dir) {
                durable_names.insert(p.clone(), i.clone());
            }
        }
        Ok(())
    }
}

/// Fault switches shared by a [`FaultyStorage`] and its files.
#[derive(Debug, Default)]
pub struct Faults {
    /// `sync_data` fails with EIO while set.
    pub fail_sync: AtomicBool,
    /// Writes fail with ENOSPC once this many more bytes were written (u64::MAX = never).
    /// Deleting or truncating a file gives its bytes back (like a real file system; every
    /// byte written is charged, overwrites too).
    pub space_left: AtomicU64,
    /// Write calls refused with ENOSPC.
    pub refused_writes: AtomicU64,
    /// Each write call writes at most 3 bytes (exercises short-write handling).
    pub short_writes: AtomicBool,
    /// Number of successful `sync_data` calls.
    pub syncs: AtomicU64,
    /// While set, `sync_data` waits before syncing (a slow disk held still), so a test can
    /// queue work behind a running sync.
    pub hold_sync: AtomicBool,
    /// `sync_data` calls waiting on `hold_sync` right now.
    pub held: AtomicU64,
    /// When not 0, `sync_data` also waits as under `hold_sync` once `syncs` reached this
    /// count (a disk that stalls after so many syncs), until it is set back to 0.
    pub hold_from_sync: AtomicU64,
}

impl Faults {
    /// Gives `bytes` back to `space_left` (a file deleted or cut), if space is counted.
    fn give_back(&self, bytes: u64) {
        let _ = self
            .space_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                (left != u64::MAX).then(|| left.saturating_add(bytes))
            });
    }

    /// Whether `sync_data` waits now (`hold_sync`, or `hold_from_sync` reached).
    fn holding(&self) -> bool {
        let from = self.hold_from_sync.load(Ordering::SeqCst);
        self.hold_sync.load(Ordering::SeqCst)
            || (from != 0 && self.syncs.load(Ordering::SeqCst) >= from)
    }
}

/// Wraps a storage and injects ENOSPC, EIO on fsync and short writes on demand.
#[derive(Debug)]
pub struct FaultyStorage {
    inner: Arc<dyn Storage>,
    /// The switches.
    pub faults: Arc<Faults>,
}

impl FaultyStorage {
    /// Wraps `inner` with every fault switched off.
    pub fn new(inner: Arc<dyn Storage>) -> Arc<Self> {
        let faults = Faults {
            space_left: AtomicU64::new(u64::MAX),
            ..Faults::default()
        };
        Arc::new(Self {
            inner,
            faults: Arc::new(faults),
        })
    }
}

#[derive(Debug)]
struct FaultyFile {
    inner: Arc<dyn StorageFile>,
    faults: Arc<Faults>,
}

impl StorageFile for FaultyFile {
    fn size(&self) -> io::Result<u64> {
        self.inner.size()
    }
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        self.inner.read_at(buf, pos)
    }
    fn write_at(&self, buf: &[u8], pos: u64) -> io::Result<usize> {
        let mut n = buf.len();
        if self.faults.short_writes.load(Ordering::SeqCst) {
            n = n.min(3);
        }
        let left = self.faults.space_left.load(Ordering::SeqCst);
        if left != u64::MAX {
            if left == 0 {
                self.faults.refused_writes.fetch_add(1, Ordering::SeqCst);
                return Err(io::Error::from_raw_os_error(28));
            }
            n = n.min(left as usize);
            self.faults.space_left.fetch_sub(n as u64, Ordering::SeqCst);
        }
        self.inner.write_at(&buf[..n], pos)
    }
    fn sync_data(&self) -> io::Result<()> {
        if self.faults.holding() {
            self.faults.held.fetch_add(1, Ordering::SeqCst);
            while self.faults.holding() {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            self.faults.held.fetch_sub(1, Ordering::SeqCst);
        }
        if self.faults.fail_sync.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(5));
        }
        self.inner.sync_data()?;
        self.faults.syncs.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn truncate(&self, len: u64) -> io::Result<()> {
        let size = self.inner.size()?;
        self.inner.truncate(len)?;
        self.faults.give_back(size.saturating_sub(len));
        Ok(())
    }
}

impl Storage for FaultyStorage {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.inner.create_dir_all(dir)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.inner.list(dir)
    }
    fn open(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        Ok(Arc::new(FaultyFile {
            inner: self.inner.open(path)?,
            faults: self.faults.clone(),
        }))
    }
    fn create(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        Ok(Arc::new(FaultyFile {
            inner: self.inner.create(path)?,
            faults: self.faults.clone(),
        }))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        let size = self.inner.open(path).and_then(|f| f.size()).unwrap_or(0);
        self.inner.remove(path)?;
        self.faults.give_back(size);
        Ok(())
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        if self.faults.fail_sync.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(5));
        }
        self.inner.sync_dir(dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `sync_data` counted before a planned power cut but reaching the file after it
    /// (another thread's operation ran the plan out meanwhile) fails and syncs nothing: it
    /// must not answer Ok to the dead process for bytes the cut dropped. Before the check
    /// under the inode lock, the power-cut test saw this about once in 100 runs on a loaded
    /// machine, as "acknowledged record ... lost".
    #[test]
    fn a_sync_overtaken_by_the_power_cut_fails() {
        let mem = MemStorage::new();
        let dir = Path::new("/d");
        mem.create_dir_all(dir).unwrap();
        let f = mem.create(&dir.join("f")).unwrap();
        mem.sync_dir(dir).unwrap();
        f.write_at(b"unsynced", 0).unwrap();
        let inode = mem.shared.fs.lock().names[&dir.join("f")].clone();
        let held = inode.lock(); // the sync waits here, after its count
        mem.crash_after(1, CrashMode::DropUnsynced);
        let generation = mem.shared.generation();
        let sync = std::thread::spawn({
            let f = f.clone();
            move || f.sync_data()
        });
        while !matches!(*mem.shared.plan.lock(), Some((0, _))) {
            std::thread::yield_now();
        }
        // Time to reach the lock (past every check made before it).
        std::thread::sleep(std::time::Duration::from_millis(50));
        let cut = std::thread::spawn({
            let mem = mem.clone();
            move || mem.create_dir_all(Path::new("/e"))
        });
        while mem.shared.generation() == generation {
            std::thread::yield_now();
        }
        drop(held);
        assert!(
            cut.join().unwrap().is_err(),
            "the operation that cut the power"
        );
        assert!(
            sync.join().unwrap().is_err(),
            "a sync the power cut overtook answered Ok"
        );
        mem.revive();
        assert_eq!(mem.contents(&dir.join("f")).unwrap(), b"");
    }

    #[test]
    fn power_cut_model() {
        let mem = MemStorage::new();
        let dir = Path::new("/d");
        mem.create_dir_all(dir).unwrap();
        let a = mem.create(&dir.join("a")).unwrap();
        a.write_at(b"hello", 0).unwrap();
        a.sync_data().unwrap();
        mem.sync_dir(dir).unwrap();
        a.write_at(b" world", 5).unwrap();
        let b = mem.create(&dir.join("b")).unwrap();
        b.write_at(b"x", 0).unwrap();
        b.sync_data().unwrap(); // data synced, directory entry not
        mem.crash(CrashMode::TornTail(3));
        assert_eq!(mem.contents(&dir.join("a")).unwrap(), b"hello wo");
        assert!(
            mem.contents(&dir.join("b")).is_none(),
            "unsynced dir entry vanishes"
        );
        assert!(
            a.write_at(b"z", 0).is_err(),
            "old handles are dead after a crash"
        );
        let a = mem.open(&dir.join("a")).unwrap();
        a.write_at(b"!!", 8).unwrap();
        mem.crash(CrashMode::ZeroFill);
        assert_eq!(mem.contents(&dir.join("a")).unwrap(), b"hello wo\0\0");
        mem.crash(CrashMode::DropUnsynced);
        assert_eq!(mem.contents(&dir.join("a")).unwrap(), b"hello wo\0\0");
        assert_eq!(mem.syncs(), 2);
    }

    #[test]
    fn faulty_storage_injects() {
        let f = FaultyStorage::new(MemStorage::new());
        f.create_dir_all(Path::new("/d")).unwrap();
        let file = f.create(Path::new("/d/x")).unwrap();
        f.faults.short_writes.store(true, Ordering::SeqCst);
        assert_eq!(file.write_at(b"abcdef", 0).unwrap(), 3);
        f.faults.space_left.store(2, Ordering::SeqCst);
        assert_eq!(file.write_at(b"abcdef", 3).unwrap(), 2);
        assert_eq!(
            file.write_at(b"abcdef", 5).unwrap_err().raw_os_error(),
            Some(28)
        );
        f.faults.fail_sync.store(true, Ordering::SeqCst);
        assert_eq!(file.sync_data().unwrap_err().raw_os_error(), Some(5));
    }
}
