//! One segment file: its base offset, written length, and a sparse in-memory index of frame
//! positions. Shared read-only (plus `len` and the index) by the writer, recovery and readers.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::error::LogError;
use crate::format::{self, SEGMENT_HEADER_LEN};
use crate::storage::{Storage, StorageFile, write_all_at};

/// Spacing of the sparse segment index, in records.
pub(crate) const INDEX_EVERY: u64 = 1024;

/// One segment file.
#[derive(Debug)]
pub(crate) struct Segment {
    /// Offset of its first record (also in the file name and header).
    pub base: u64,
    /// The file.
    pub path: PathBuf,
    /// The open file.
    pub file: Arc<dyn StorageFile>,
    /// Bytes written to it (what readers may look at; durability is `Ledger::durable_end`).
    len: AtomicU64,
    /// Bytes covered by an fdatasync.
    synced: AtomicU64,
    /// Sparse in-memory index: (offset, file position) of every INDEX_EVERY-th record seen by
    /// the writer or a reader. Makes a seek cost at most INDEX_EVERY frame decodes.
    index: Mutex<Vec<(u64, u64)>>,
}

impl Segment {
    pub fn new(base: u64, path: PathBuf, file: Arc<dyn StorageFile>, len: u64) -> Self {
        Self {
            base,
            path,
            file,
            len: AtomicU64::new(len),
            synced: AtomicU64::new(len),
            index: Mutex::new(Vec::new()),
        }
    }

    /// Bytes written to the file so far.
    pub fn len(&self) -> u64 {
        self.len.load(Ordering::Acquire)
    }

    /// Publishes a new written length (writer only).
    pub fn set_len(&self, len: u64) {
        self.len.store(len, Ordering::Release);
    }

    /// Bytes covered by an fdatasync (a new segment object is synced as far as it goes).
    pub fn synced(&self) -> u64 {
        self.synced.load(Ordering::Acquire)
    }

    /// An fdatasync covered the first `len` bytes (syncer only).
    pub fn set_synced(&self, len: u64) {
        self.synced.fetch_max(len, Ordering::AcqRel);
    }

    /// The writer cut the file back to `len` bytes.
    pub fn cut(&self, len: u64) {
        self.set_len(len);
        self.synced.fetch_min(len, Ordering::AcqRel);
    }

    /// Records where the frame of `offset` starts (only every INDEX_EVERY-th offset is kept).
    pub fn note(&self, offset: u64, pos: u64) {
        if !offset.is_multiple_of(INDEX_EVERY) || offset == self.base {
            return;
        }
        let mut idx = self.index.lock();
        if let Err(i) = idx.binary_search_by_key(&offset, |&(o, _)| o) {
            idx.insert(i, (offset, pos));
        }
    }

    /// Forgets index entries at or above `offset` (the writer cut those frames back).
    pub fn forget_from(&self, offset: u64) {
        self.index.lock().retain(|&(o, _)| o < offset);
    }

    /// The indexed frame closest at or below `target`.
    pub fn lookup(&self, target: u64) -> Option<(u64, u64)> {
        let idx = self.index.lock();
        let i = idx.partition_point(|&(o, _)| o <= target);
        i.checked_sub(1).map(|i| idx[i])
    }
}

/// Maps an I/O error to a [`LogError::Io`] naming the operation and the file.
pub(crate) fn io_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> LogError + 'a {
    move |source| LogError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Creates the segment starting at `base` crash-safely: header, fdatasync, directory fsync.
/// On failure the partly created file is removed (best effort), so a retry starts clean.
pub(crate) fn create_segment(
    storage: &dyn Storage,
    dir: &Path,
    base: u64,
    fsyncs: &AtomicU64,
) -> Result<Arc<Segment>, LogError> {
    let path = dir.join(format::segment_name(base));
    let created = (|| {
        let file = storage
            .create(&path)
            .map_err(io_err("create segment", &path))?;
        write_all_at(file.as_ref(), &format::segment_header(base), 0)
            .map_err(io_err("write segment header", &path))?;
        file.sync_data()
            .map_err(io_err("fdatasync segment", &path))?;
        fsyncs.fetch_add(1, Ordering::Relaxed);
        storage
            .sync_dir(dir)
            .map_err(io_err("sync directory", dir))?;
        Ok(file)
    })();
    match created {
        Ok(file) => Ok(Arc::new(Segment::new(
            base,
            path,
            file,
            SEGMENT_HEADER_LEN as u64,
        ))),
        Err(e) => {
            let _ = storage.remove(&path);
            Err(e)
        }
    }
}
