//! `sector_writes` on a real disk: every record comes back after rolls and a reopen, recovery
//! keeps the zeros after the last frame, and a file system that refuses direct writes costs
//! nothing but the saving.

// Test code: unwrap/expect are fine here (clippy.toml intent); helpers are not #[test] fns.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io;
use std::path::Path;
use std::sync::Arc;

use common::{rec, same};
use edge_log::{FsyncPolicy, Log, LogConfig, StdStorage, Storage, StorageFile};

/// A directory on the disk the build is on (`/tmp` may be a tmpfs without `O_DIRECT`).
fn disk_dir() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

fn config(dir: &Path) -> LogConfig {
    LogConfig {
        segment_bytes: 64 << 10,
        max_bytes: 64 << 20,
        max_record_bytes: 8 << 10,
        fsync: FsyncPolicy::Always,
        sector_writes: true,
        ..LogConfig::new(dir)
    }
}

/// Reads the whole log from its start and checks it holds exactly `records`, in order.
async fn read_back(log: &Log, records: &[edge_log::NewRecord]) {
    let mut cursor = log.cursor("check").unwrap();
    let got = cursor.read(1000, usize::MAX).await.unwrap();
    assert_eq!(got.len(), records.len());
    for (g, r) in got.iter().zip(records) {
        assert!(same(g, r), "record {} differs", g.offset);
    }
}

/// Appends records of sizes that end anywhere in a sector, one durable append at a time (a
/// sync each, as a gateway's sensors do), across segment rolls; then reads them all back,
/// closes, reopens and reads them again.
async fn round_trip(storage: Arc<dyn Storage>, dir: &Path) -> edge_log::LogStats {
    let cfg = config(dir);
    let (log, report) = Log::open_with_storage(cfg.clone(), storage.clone()).unwrap();
    assert!(report.created);
    let sizes = [1usize, 37, 200, 500, 511, 512, 513, 1500, 4000];
    let records: Vec<_> = (0..400u64)
        .map(|i| rec(i, sizes[i as usize % sizes.len()]))
        .collect();
    for r in &records {
        log.append(r.clone())
            .await
            .unwrap()
            .durable()
            .await
            .unwrap();
    }
    let stats = log.stats();
    assert!(stats.segments > 2, "expected rolls: {stats:?}");
    read_back(&log, &records).await;
    log.close().await.unwrap();

    let (log, report) = Log::open_with_storage(cfg, storage).unwrap();
    assert!(
        report.truncated.is_none() && report.skipped.is_empty(),
        "recovery cut or skipped something: {report}"
    );
    assert_eq!(report.next_offset, records.len() as u64);
    read_back(&log, &records).await;
    log.close().await.unwrap();
    stats
}

#[tokio::test]
async fn records_survive_sector_writes_rolls_and_a_reopen() {
    let dir = disk_dir();
    let stats = round_trip(Arc::new(StdStorage), dir.path()).await;
    // Every append after a segment's creation went out as sectors (this file system has
    // O_DIRECT: the build directory is on ext4 here; a tmpfs before Linux 6.6 has not).
    assert!(
        stats.sector_writes >= 390,
        "direct writes not used: {stats:?}"
    );
}

/// A named fake: the real storage, except that the direct handle refuses every write as
/// misaligned (`EINVAL`), as a device with 4 KiB logical sectors does with 512-byte writes.
#[derive(Debug)]
struct RefusingDirect;

#[derive(Debug)]
struct RefusingFile;

impl StorageFile for RefusingFile {
    fn size(&self) -> io::Result<u64> {
        Ok(0)
    }
    fn read_at(&self, _: &mut [u8], _: u64) -> io::Result<usize> {
        Err(io::Error::from_raw_os_error(libc_einval()))
    }
    fn write_at(&self, _: &[u8], _: u64) -> io::Result<usize> {
        Err(io::Error::from_raw_os_error(libc_einval()))
    }
    fn sync_data(&self) -> io::Result<()> {
        Ok(())
    }
    fn truncate(&self, _: u64) -> io::Result<()> {
        Ok(())
    }
}

/// EINVAL on Linux (every architecture).
fn libc_einval() -> i32 {
    22
}

impl Storage for RefusingDirect {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        StdStorage.create_dir_all(dir)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        StdStorage.list(dir)
    }
    fn open(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        StdStorage.open(path)
    }
    fn create(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        StdStorage.create(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        StdStorage.rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        StdStorage.remove(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        StdStorage.sync_dir(dir)
    }
    fn open_direct(&self, _: &Path) -> io::Result<Option<Arc<dyn StorageFile>>> {
        Ok(Some(Arc::new(RefusingFile)))
    }
}

#[tokio::test]
async fn a_refused_direct_write_falls_back_to_the_page_cache_and_loses_nothing() {
    let dir = disk_dir();
    let stats = round_trip(Arc::new(RefusingDirect), dir.path()).await;
    assert_eq!(stats.sector_writes, 0, "{stats:?}");
}

/// Under an interval policy the appends of one interval are answered at once and written
/// together by the interval's sync: one direct write, not one per append (issue 17's flash
/// goal: a device write per sync, not per record). Every record is durable after the sync and
/// reads back, before and after a reopen.
#[tokio::test]
async fn an_interval_gathers_its_appends_into_one_write() {
    let dir = disk_dir();
    let cfg = LogConfig {
        fsync: FsyncPolicy::Interval(std::time::Duration::from_secs(1)),
        ..config(dir.path())
    };
    let (log, _) = Log::open(cfg.clone()).unwrap();
    let records: Vec<_> = (0..200u64)
        .map(|i| rec(i, 100 + (i as usize % 7)))
        .collect();
    let mut last = None;
    for r in &records {
        // Answered with its offset before any write: local delivery does not wait.
        last = Some(log.append(r.clone()).await.unwrap());
    }
    let last = last.unwrap();
    assert_eq!(last.offset, 199);
    last.durable().await.unwrap();
    let stats = log.stats();
    // Gathered: one write per interval that saw appends (a stall of the machine may split
    // them over a few). Without gathering each append is its own write: 200.
    assert!(
        (1..=10).contains(&stats.sector_writes),
        "appends not gathered: {stats:?}"
    );
    read_back(&log, &records).await;
    log.close().await.unwrap();
    let (log, report) = Log::open(cfg).unwrap();
    assert_eq!(report.next_offset, 200);
    read_back(&log, &records).await;
    log.close().await.unwrap();
}

/// What is gathered when the log closes is written and synced by the close: nothing answered
/// is lost at a clean stop, although no interval's sync came.
#[tokio::test]
async fn a_close_writes_what_an_interval_gathered() {
    let dir = disk_dir();
    let cfg = LogConfig {
        fsync: FsyncPolicy::Interval(std::time::Duration::from_secs(3600)),
        ..config(dir.path())
    };
    let (log, _) = Log::open(cfg.clone()).unwrap();
    for i in 0..50u64 {
        log.append(rec(i, 300)).await.unwrap();
    }
    assert_eq!(
        log.stats().sector_writes,
        0,
        "written before the sync was due"
    );
    log.close().await.unwrap();
    let (log, report) = Log::open(cfg).unwrap();
    assert_eq!(report.next_offset, 50);
    let mut cursor = log.cursor("check").unwrap();
    assert_eq!(cursor.read(100, usize::MAX).await.unwrap().len(), 50);
    log.close().await.unwrap();
}
