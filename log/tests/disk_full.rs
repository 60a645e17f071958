//! A full file system (ENOSPC, injected by the `FaultyStorage` fake: a real disk cannot be
//! filled and emptied on demand inside a test) and failed fdatasyncs: a refused record is never
//! stored, a full disk heals by itself when space returns, `health()` says which it is, and an
//! fdatasync failure stays sticky. Each case names what main did (the regression it guards).

// Test code: unwrap/expect are fine here (clippy.toml intent); helpers are not #[test] fns.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{rec, same, small_config};
use edge_log::testing::{FaultyStorage, MemStorage};
use edge_log::{AppendError, Full, Log, LogConfig, LogHealth, Storage, WhenFull};

fn segment_bytes(mem: &MemStorage, dir: &str) -> u64 {
    mem.list(Path::new(dir))
        .unwrap()
        .iter()
        .filter(|n| n.ends_with(".seg"))
        .map(|n| mem.contents(&Path::new(dir).join(n)).unwrap().len() as u64)
        .sum()
}

async fn durable(log: &Log, i: u64, len: usize) -> u64 {
    log.append(rec(i, len))
        .await
        .unwrap()
        .durable()
        .await
        .unwrap()
}

/// Main wrote the frames that fitted, refused the whole batch (sticky), and left the frames
/// on disk: after a restart they were there, so the device's resend became a second copy.
/// Now the partial write is cut back before the refusal and the disk heals without a restart.
#[tokio::test]
async fn a_refused_batch_is_never_stored_and_appends_resume_when_space_returns() {
    let mem = MemStorage::new();
    let faulty = FaultyStorage::new(mem.clone());
    let cfg = LogConfig {
        when_full: WhenFull::Reject,
        ..small_config("/r")
    };
    let (log, _) = Log::open_with_storage(cfg.clone(), faulty.clone()).unwrap();
    for i in 0..2 {
        durable(&log, i, 60).await;
    }
    let before = segment_bytes(&mem, "/r");
    // Room for two and a half of the five records.
    let frame = rec(2, 60).encoded_len() as u64;
    faulty
        .faults
        .space_left
        .store(frame * 5 / 2, Ordering::SeqCst);
    let batch: Vec<_> = (2..7).map(|i| rec(i, 60)).collect();
    let outcome = log.append_many(batch).await;
    assert!(
        outcome
            .outcomes()
            .iter()
            .all(|o| matches!(o, Err(AppendError::NoSpace { .. }))),
        "{:?}",
        outcome.outcomes()
    );
    assert_eq!(
        segment_bytes(&mem, "/r"),
        before,
        "the partial write is cut back"
    );
    assert!(matches!(log.health(), LogHealth::Full(Full::Disk { .. })));
    assert!(log.health().to_string().contains("no space"));
    // Reject: each append is tried (and refused while the disk is full). Cutting the partial
    // write back gave its bytes back; something else on the disk takes them.
    faulty.faults.space_left.store(0, Ordering::SeqCst);
    assert!(log.has_room(frame));
    assert!(matches!(
        log.append(rec(9, 60)).await,
        Err(AppendError::NoSpace { .. })
    ));
    // Space returns: appends are stored again, no restart.
    faulty.faults.space_left.store(u64::MAX, Ordering::SeqCst);
    assert_eq!(durable(&log, 10, 60).await, 2);
    assert_eq!(log.health(), LogHealth::Ok);
    log.close().await.unwrap();
    drop(log);
    let (log, report) = Log::open_with_storage(cfg, mem).unwrap();
    assert_eq!(report.next_offset, 3, "{report}");
    let mut c = log.cursor("c").unwrap();
    let got = c.try_read(100, usize::MAX).unwrap();
    assert_eq!(got.len(), 3);
    assert!(
        same(&got[2], &rec(10, 60)),
        "only the accepted record follows"
    );
}

/// Under `Block` (the default) a full disk holds appends back like a full budget and they
/// complete when space returns (main: the error was sticky until a restart, while readiness
/// still said ready).
#[tokio::test]
async fn a_full_disk_under_block_waits_and_resumes_by_itself() {
    let mem = MemStorage::new();
    let faulty = FaultyStorage::new(mem.clone());
    let (log, _) = Log::open_with_storage(small_config("/b"), faulty.clone()).unwrap();
    durable(&log, 0, 60).await;
    assert_eq!(log.health(), LogHealth::Ok);
    faulty.faults.space_left.store(10, Ordering::SeqCst);
    let pending = {
        let log = log.clone();
        tokio::spawn(async move { durable(&log, 1, 60).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!pending.is_finished(), "waits for space");
    assert!(matches!(log.health(), LogHealth::Full(Full::Disk { .. })));
    assert!(!log.has_room(1), "no room while the writer waits for space");
    let room = {
        let log = log.clone();
        tokio::spawn(async move { log.room(1).await })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!room.is_finished());
    assert!(log.failure().is_none(), "not sticky");
    faulty.faults.space_left.store(u64::MAX, Ordering::SeqCst);
    let offset = tokio::time::timeout(Duration::from_secs(5), pending)
        .await
        .expect("resumes when space returns")
        .unwrap();
    assert_eq!(offset, 1);
    tokio::time::timeout(Duration::from_secs(5), room)
        .await
        .expect("room once space returned")
        .unwrap();
    assert_eq!(log.health(), LogHealth::Ok);
    assert_eq!(durable(&log, 2, 60).await, 2);
    let mut c = log.cursor("c").unwrap();
    let got = c.try_read(100, usize::MAX).unwrap();
    assert_eq!(got.len(), 3);
    assert!(same(&got[1], &rec(1, 60)));
}

/// The disk fills exactly when a segment must roll: the half-created segment is removed and
/// creating it is retried until space returns.
#[tokio::test]
async fn a_full_disk_while_rolling_a_segment_retries() {
    let mem = MemStorage::new();
    let faulty = FaultyStorage::new(mem.clone());
    let cfg = small_config("/roll");
    let (log, _) = Log::open_with_storage(cfg.clone(), faulty.clone()).unwrap();
    let mut i = 0;
    // Fill the first segment up to the record that needs a roll.
    while log.stats().bytes + rec(i, 100).encoded_len() as u64 <= cfg.segment_bytes {
        durable(&log, i, 100).await;
        i += 1;
    }
    assert_eq!(log.stats().segments, 1);
    faulty.faults.space_left.store(0, Ordering::SeqCst);
    let pending = {
        let log = log.clone();
        tokio::spawn(async move { durable(&log, i, 100).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!pending.is_finished());
    assert!(matches!(log.health(), LogHealth::Full(Full::Disk { .. })));
    let names = mem.list(Path::new("/roll")).unwrap();
    assert_eq!(
        names.iter().filter(|n| n.ends_with(".seg")).count(),
        1,
        "the half-created segment is removed: {names:?}"
    );
    faulty.faults.space_left.store(u64::MAX, Ordering::SeqCst);
    let offset = tokio::time::timeout(Duration::from_secs(5), pending)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(offset, i);
    assert_eq!(log.stats().segments, 2);
    assert_eq!(log.health(), LogHealth::Ok);
}

/// With `drop_oldest` (or no cursor at all) a full disk is handled like a full budget: the
/// oldest sealed segment is deleted (counted in `dropped_records`) and the write goes through.
#[tokio::test]
async fn a_full_disk_under_drop_oldest_deletes_the_oldest_segment() {
    let mem = MemStorage::new();
    let faulty = FaultyStorage::new(mem.clone());
    let cfg = LogConfig {
        when_full: WhenFull::DropOldest,
        ..small_config("/d")
    };
    let (log, _) = Log::open_with_storage(cfg, faulty.clone()).unwrap();
    let _behind = log.cursor("bridge").unwrap();
    for i in 0..30 {
        durable(&log, i, 100).await;
    }
    let segments = log.stats().segments;
    assert!(segments >= 3);
    faulty.faults.space_left.store(0, Ordering::SeqCst);
    let offset = tokio::time::timeout(Duration::from_secs(5), durable(&log, 30, 100))
        .await
        .expect("deleting the oldest segment made room");
    assert_eq!(offset, 30);
    let st = log.stats();
    assert!(st.dropped_records > 0, "{st:?}");
    assert!(st.segments < segments + 1, "{st:?}");
    assert_eq!(log.health(), LogHealth::Ok);
}

/// `close` while the writer waits for space: the waiting append is released with `Closed`.
#[tokio::test]
async fn close_while_waiting_for_space_releases_the_append() {
    let mem = MemStorage::new();
    let faulty = FaultyStorage::new(mem.clone());
    let (log, _) = Log::open_with_storage(small_config("/c"), faulty.clone()).unwrap();
    faulty.faults.space_left.store(0, Ordering::SeqCst);
    let pending = {
        let log = log.clone();
        tokio::spawn(async move { log.append(rec(0, 60)).await.map(|a| a.offset) })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!pending.is_finished());
    tokio::time::timeout(Duration::from_secs(5), log.close())
        .await
        .expect("close returns")
        .unwrap();
    assert_eq!(pending.await.unwrap(), Err(AppendError::Closed));
    assert_eq!(log.health(), LogHealth::Closed);
    assert_eq!(segment_bytes(&mem, "/c"), 24, "nothing of it stored");
}

/// An fdatasync failure stays sticky (its data may be gone from the page cache), and what was
/// written but will never be durable is cut back (main left it: refused, yet found after a
/// restart).
#[tokio::test]
async fn an_fsync_failure_is_sticky_and_cuts_back_what_will_never_be_durable() {
    let mem = MemStorage::new();
    let faulty = FaultyStorage::new(mem.clone());
    let cfg = small_config("/f");
    let (log, _) = Log::open_with_storage(cfg.clone(), faulty.clone()).unwrap();
    for i in 0..2 {
        durable(&log, i, 60).await;
    }
    let before = segment_bytes(&mem, "/f");
    faulty.faults.fail_sync.store(true, Ordering::SeqCst);
    let a = log.append(rec(2, 60)).await.unwrap();
    assert!(matches!(
        a.durable().await,
        Err(AppendError::Storage { .. })
    ));
    assert!(matches!(log.health(), LogHealth::Failed { .. }));
    assert!(log.health().to_string().contains("restart"));
    assert_eq!(segment_bytes(&mem, "/f"), before, "cut back");
    faulty.faults.fail_sync.store(false, Ordering::SeqCst);
    assert!(matches!(
        log.append(rec(3, 60)).await,
        Err(AppendError::Storage { .. })
    ));
    assert!(log.close().await.is_err());
    drop(log);
    let (_, report) = Log::open_with_storage(cfg, mem).unwrap();
    assert_eq!(
        report.next_offset, 2,
        "the refused record is not stored: {report}"
    );
}

/// `preallocate` near a full disk. Main tried the zeros ahead again at every write once they
/// had failed: each try wrote what space was left in zeros, met ENOSPC and cut them back, so
/// every fdatasync of a nearly full gateway paid for a failed megabyte. Now a refusal holds the
/// zeros off for a step of frames; the records are written all along.
#[tokio::test]
async fn preallocate_near_a_full_disk_tries_the_zeros_once_a_step() {
    let mem = MemStorage::new();
    let faulty = FaultyStorage::new(mem.clone());
    let cfg = LogConfig {
        segment_bytes: 64 << 20,
        max_bytes: 1 << 30,
        preallocate: true,
        ..LogConfig::new("/p")
    };
    let (log, _) = Log::open_with_storage(cfg, faulty.clone()).unwrap();
    // Room for half a step: the zeros (a step and more) never fit, the frames do.
    let room = edge_log::PREALLOCATE_STEP / 2;
    faulty.faults.space_left.store(room, Ordering::SeqCst);
    let len = 1000;
    for i in 0..200 {
        assert_eq!(durable(&log, i, len).await, i);
    }
    let refused = faulty.faults.refused_writes.load(Ordering::SeqCst);
    assert_eq!(refused, 1, "zeros tried again within a step of frames");
    let frames = segment_bytes(&mem, "/p");
    assert!(
        frames >= 200 * len as u64 && frames < room,
        "only the frames stay: {frames} B"
    );
    // A step of frames later the zeros are tried (and refused) once more.
    let per = rec(0, len).encoded_len() as u64;
    let more = edge_log::PREALLOCATE_STEP / per;
    faulty.faults.space_left.store(2 * room, Ordering::SeqCst);
    for i in 200..200 + more {
        durable(&log, i, len).await;
    }
    assert_eq!(faulty.faults.refused_writes.load(Ordering::SeqCst), 2);
    log.close().await.unwrap();
}
