//! Behaviour tests: append/read, group commit, full-disk policies, faults, corruption, recovery.

// Test code: unwrap/expect are fine here (clippy.toml intent); helpers are not #[test] fns.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{rec, same, small_config};
use edge_log::testing::{CrashMode, FaultyStorage, MemStorage};
use edge_log::{AppendError, FsyncPolicy, Log, LogConfig, WhenFull};

async fn append_n(log: &Log, from: u64, n: u64, len: usize) -> Vec<u64> {
    let mut out = Vec::new();
    for i in from..from + n {
        let a = log.append(rec(i, len)).await.unwrap();
        out.push(a.durable().await.unwrap());
    }
    out
}

/// One 64 MiB segment holds everything these tests write.
fn one_big_segment(dir: &str) -> LogConfig {
    LogConfig {
        segment_bytes: 64 << 20,
        max_bytes: 1 << 30,
        max_record_bytes: 4096,
        ..LogConfig::new(dir)
    }
}

fn seg_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".seg"))
        .collect();
    v.sort();
    v
}

/// A `preallocate` log in `dir` with segments of `segment_bytes` and records up to 64 KiB.
fn preallocating(dir: &Path, segment_bytes: u64) -> LogConfig {
    LogConfig {
        segment_bytes,
        max_bytes: 64 << 20,
        max_record_bytes: 64 << 10,
        preallocate: true,
        ..LogConfig::new(dir)
    }
}

/// Bytes in the file of the log's only segment in `dir`.
fn only_segment_size(dir: &Path) -> u64 {
    let files = seg_files(dir);
    assert_eq!(files.len(), 1, "{files:?}");
    std::fs::metadata(dir.join(&files[0])).unwrap().len()
}

#[tokio::test]
async fn append_read_roll_reopen_on_real_disk() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_config(dir.path());
    let (log, report) = Log::open(cfg.clone()).unwrap();
    assert!(report.created, "{report}");
    let offsets = append_n(&log, 0, 40, 50).await;
    assert_eq!(offsets, (0..40).collect::<Vec<_>>());
    let stats = log.stats();
    assert!(stats.segments > 1, "expected rolls: {stats:?}");
    assert_eq!(stats.durable_end, 40);
    assert_eq!(stats.next_offset, 40);
    let mut c = log.cursor("bridge").unwrap();
    let got = c.read(100, usize::MAX).await.unwrap();
    assert_eq!(got.len(), 40);
    for (i, r) in got.iter().enumerate() {
        assert_eq!(r.offset, i as u64);
        assert!(same(r, &rec(i as u64, 50)));
    }
    // max_bytes limits a batch but always returns at least one record.
    c.seek(0);
    let one = c.try_read(100, 1).unwrap();
    assert_eq!(one.len(), 1);
    let enc = one[0].encoded_len();
    let two = c.try_read(100, 2 * enc).unwrap();
    assert_eq!(two.len(), 2);
    assert_eq!(two[0].offset, 1);
    c.commit(10).await.unwrap();
    log.close().await.unwrap();
    assert!(matches!(
        log.append(rec(0, 1)).await,
        Err(AppendError::Closed)
    ));
    drop(c);
    drop(log);

    let (log, report) = Log::open(cfg).unwrap();
    assert!(!report.created);
    assert!(report.truncated.is_none(), "{report}");
    assert_eq!(report.next_offset, 40);
    let line = report.to_string();
    assert!(
        line.contains("nothing truncated") && !line.contains('\n'),
        "{line}"
    );
    let mut c = log.cursor("bridge").unwrap();
    assert_eq!(c.committed(), 10);
    assert!(matches!(
        log.cursor("bridge"),
        Err(edge_log::LogError::CursorInUse { .. })
    ));
    assert!(matches!(
        log.cursor("../x"),
        Err(edge_log::LogError::InvalidCursorName { .. })
    ));
    let got = c.read(5, usize::MAX).await.unwrap();
    assert_eq!(
        got.iter().map(|r| r.offset).collect::<Vec<_>>(),
        vec![10, 11, 12, 13, 14]
    );
    assert_eq!(append_n(&log, 40, 1, 10).await, vec![40]);
}

#[tokio::test]
async fn read_waits_for_durable_records_and_is_cancel_safe() {
    let mem = MemStorage::new();
    let (log, _) = Log::open_with_storage(small_config("/d"), mem.clone()).unwrap();
    let mut c = log.cursor("c").unwrap();
    let r = tokio::time::timeout(Duration::from_millis(50), c.read(10, 1 << 20)).await;
    assert!(r.is_err(), "nothing to read yet");
    let l2 = log.clone();
    let h = tokio::spawn(async move { append_n(&l2, 0, 3, 10).await });
    let got = c.read(10, 1 << 20).await.unwrap();
    assert!(!got.is_empty());
    assert_eq!(got[0].offset, 0);
    h.await.unwrap();
}

/// Group commit, deterministically: while one fdatasync is held (a slow disk), 100 appends
/// are written in ten batches; when it returns, ONE more fdatasync covers all of them. (Replaces a ratio check
/// on free-running appenders, `fsyncs * 2 < records`, whose outcome depended on scheduling.)
#[tokio::test(flavor = "current_thread")]
async fn group_commit_one_fsync_covers_everything_queued_during_a_sync() {
    let mem = MemStorage::new();
    let faulty = FaultyStorage::new(mem.clone());
    let cfg = one_big_segment("/g");
    let (log, _) = Log::open_with_storage(cfg, faulty.clone()).unwrap();
    faulty.faults.hold_sync.store(true, Ordering::SeqCst);
    let first = {
        let log = log.clone();
        tokio::spawn(async move { log.append(rec(0, 200)).await.unwrap().durable().await })
    };
    while faulty.faults.held.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let syncs_before = faulty.faults.syncs.load(Ordering::SeqCst);
    let queued = 100u64;
    let mut hs = Vec::new();
    // Ten waves, each written (a batch of its own at least) before the next is sent: every
    // batch asks for a sync while the first one is held, and the requests coalesce.
    for wave in 0..10 {
        for i in 1 + wave * 10..=(wave + 1) * 10 {
            let log = log.clone();
            hs.push(tokio::spawn(async move {
                log.append(rec(i, 200)).await.unwrap().durable().await
            }));
        }
        while log.stats().next_offset < 1 + (wave + 1) * 10 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    faulty.faults.hold_sync.store(false, Ordering::SeqCst);
    assert_eq!(first.await.unwrap(), Ok(0));
    let mut offsets = Vec::new();
    for h in hs {
        offsets.push(h.await.unwrap().unwrap());
    }
    offsets.sort_unstable();
    assert_eq!(offsets, (1..=queued).collect::<Vec<_>>());
    let syncs = faulty.faults.syncs.load(Ordering::SeqCst) - syncs_before;
    assert_eq!(
        syncs, 2,
        "the held sync, then one for everything queued behind it"
    );
    assert_eq!(log.durable_end(), queued + 1);
}

/// Pipelined group commit: while an fdatasync runs, the next records are written (they get
/// their offsets) but become durable only after a later sync, in order; a sync that fails
/// stays sticky and nothing written after it becomes durable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_write_overlaps_a_running_fsync_and_durability_keeps_its_order() {
    for fail in [false, true] {
        let mem = MemStorage::new();
        let faulty = FaultyStorage::new(mem.clone());
        let (log, _) = Log::open_with_storage(small_config("/p"), faulty.clone()).unwrap();
        faulty.faults.hold_sync.store(true, Ordering::SeqCst);
        let a = log.append(rec(0, 10)).await.unwrap();
        while faulty.faults.held.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // The sync of record 0 is running; record 1 is written meanwhile.
        let b = tokio::time::timeout(Duration::from_secs(5), log.append(rec(1, 10)))
            .await
            .expect("written while the previous fdatasync runs")
            .unwrap();
        assert_eq!(b.offset, 1);
        assert_eq!(log.stats().next_offset, 2);
        assert_eq!(log.durable_end(), 0);
        let (a, b) = (tokio::spawn(a.durable()), tokio::spawn(b.durable()));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!a.is_finished() && !b.is_finished());
        faulty.faults.fail_sync.store(fail, Ordering::SeqCst);
        faulty.faults.hold_sync.store(false, Ordering::SeqCst);
        let (a, b) = (a.await.unwrap(), b.await.unwrap());
        if fail {
            assert!(matches!(a, Err(AppendError::Storage { .. })), "{a:?}");
            assert!(matches!(b, Err(AppendError::Storage { .. })), "{b:?}");
            assert_eq!(log.durable_end(), 0);
            assert!(log.failure().is_some());
            faulty.faults.fail_sync.store(false, Ordering::SeqCst);
            assert!(matches!(
                log.append(rec(2, 10)).await,
                Err(AppendError::Storage { .. })
            ));
        } else {
            assert_eq!((a, b), (Ok(0), Ok(1)));
            assert_eq!(log.durable_end(), 2);
            let lat = log.stats().fsync_latency;
            assert_eq!(lat.count, lat.buckets.iter().sum::<u64>());
            assert!(lat.count >= 1, "{lat:?}");
            assert!(
                lat.quantile(1.0) >= 0.016,
                "the held sync took 20 ms+: {lat:?}"
            );
            assert!(lat.sum_micros >= 20_000, "{lat:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_are_dense_and_all_durable() {
    let mem = MemStorage::new();
    let cfg = one_big_segment("/g");
    let (log, _) = Log::open_with_storage(cfg, mem.clone()).unwrap();
    let before = log.stats().fsyncs;
    let tasks = 64u64;
    let per = 20u64;
    let mut hs = Vec::new();
    for t in 0..tasks {
        let log = log.clone();
        hs.push(tokio::spawn(async move {
            for i in 0..per {
                let a = log.append(rec(t * 1000 + i, 200)).await.unwrap();
                a.durable().await.unwrap();
            }
        }));
    }
    for h in hs {
        h.await.unwrap();
    }
    let st = log.stats();
    let records = tasks * per;
    assert_eq!(st.durable_end, records);
    assert!(
        mem.syncs() >= st.fsyncs - before,
        "log counter must match storage syncs"
    );
    let mut c = log.cursor("all").unwrap();
    let got = c.try_read(10_000, usize::MAX).unwrap();
    let offsets: Vec<u64> = got.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, (0..records).collect::<Vec<_>>());
}

#[tokio::test]
async fn never_and_interval_policies_publish_durability() {
    for fsync in [
        FsyncPolicy::Never,
        FsyncPolicy::Interval(Duration::from_millis(20)),
    ] {
        let mem = MemStorage::new();
        let cfg = LogConfig {
            fsync,
            ..small_config("/p")
        };
        let (log, _) = Log::open_with_storage(cfg, mem.clone()).unwrap();
        let syncs0 = mem.syncs();
        let a = log.append(rec(0, 10)).await.unwrap();
        assert_eq!(a.durable().await.unwrap(), 0);
        if fsync == FsyncPolicy::Never {
            assert_eq!(mem.syncs(), syncs0, "never policy must not fsync");
        } else {
            assert!(
                mem.syncs() > syncs0,
                "interval policy syncs before reporting durable"
            );
        }
        assert_eq!(log.durable_end(), 1);
    }
}

#[tokio::test]
async fn block_waits_for_commit_while_other_tasks_run() {
    let mem = MemStorage::new();
    let cfg = LogConfig {
        segment_bytes: 1024,
        max_bytes: 2 * (1024 + 8 + 256 + 24),
        ..small_config("/b")
    };
    let (log, _) = Log::open_with_storage(cfg, mem.clone()).unwrap();
    let mut c = log.cursor("bridge").unwrap();
    let mut n = 0u64;
    // Fill until an append does not complete promptly.
    let blocked = loop {
        let fut = log.append(rec(n, 100));
        match tokio::time::timeout(Duration::from_millis(200), fut).await {
            Ok(a) => {
                a.unwrap().durable().await.unwrap();
                n += 1;
                assert!(n < 1000, "never filled");
            }
            Err(_) => break n,
        }
    };
    assert!(blocked > 5);
    // Another task (a ticker) keeps running while an append is blocked.
    let l2 = log.clone();
    let pending = tokio::spawn(async move { l2.append(rec(9999, 100)).await.map(|a| a.offset) });
    let ticks = tokio::spawn(async {
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        5
    });
    assert_eq!(ticks.await.unwrap(), 5);
    assert!(!pending.is_finished());
    let got = c.try_read(10_000, usize::MAX).unwrap();
    assert_eq!(got.len() as u64, blocked);
    c.commit(blocked).await.unwrap();
    let off = tokio::time::timeout(Duration::from_secs(5), pending)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(off, blocked);
    assert_eq!(log.stats().dropped_records, 0);
}

/// The backpressure API: `has_room` says whether an append of that many frame bytes would fit
/// now, `room` resolves when it does (a commit frees segments) or when the log closes.
#[tokio::test]
async fn has_room_and_room_follow_the_budget() {
    let mem = MemStorage::new();
    let cfg = LogConfig {
        segment_bytes: 1024,
        max_bytes: 2 * (1024 + 8 + 256 + 24),
        ..small_config("/h")
    };
    let (log, _) = Log::open_with_storage(cfg, mem).unwrap();
    let mut c = log.cursor("bridge").unwrap();
    let need = rec(0, 100).encoded_len() as u64;
    let mut n = 0;
    while log.has_room(need) {
        log.append(rec(n, 100))
            .await
            .unwrap()
            .durable()
            .await
            .unwrap();
        n += 1;
        assert!(n < 1000, "never filled");
    }
    assert!(n > 5);
    // No room: an append would wait (Block), and `room` waits too.
    assert!(
        tokio::time::timeout(Duration::from_millis(50), log.append(rec(n, 100)))
            .await
            .is_err()
    );
    let waiting = {
        let log = log.clone();
        tokio::spawn(async move { log.room(need).await })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!waiting.is_finished());
    let got = c.try_read(10_000, usize::MAX).unwrap();
    c.commit(got.last().unwrap().offset + 1).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("room after the commit freed segments")
        .unwrap();
    assert!(log.has_room(need));
    // Far more than the budget never fits; `room` still returns once the log closes.
    assert!(!log.has_room(1 << 30));
    let never = {
        let log = log.clone();
        tokio::spawn(async move { log.room(1 << 30).await })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!never.is_finished());
    log.close().await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), never)
        .await
        .expect("room returns when the log closes")
        .unwrap();
    assert!(!log.has_room(1));
}

#[tokio::test]
async fn reject_returns_full() {
    let mem = MemStorage::new();
    let cfg = LogConfig {
        max_bytes: 2 * (1024 + 8 + 256 + 24),
        when_full: WhenFull::Reject,
        ..small_config("/r")
    };
    let (log, _) = Log::open_with_storage(cfg, mem).unwrap();
    let _c = log.cursor("bridge").unwrap();
    let mut n = 0;
    let err = loop {
        match log.append(rec(n, 100)).await {
            Ok(a) => {
                a.durable().await.unwrap();
                n += 1;
                assert!(n < 1000);
            }
            Err(e) => break e,
        }
    };
    match err {
        AppendError::Full {
            needed,
            used,
            max_bytes,
        } => {
            assert!(used + needed > max_bytes, "{used}+{needed} vs {max_bytes}");
        }
        other => panic!("expected Full, got {other:?}"),
    }
    assert_eq!(log.stats().dropped_records, 0);
}

#[tokio::test]
async fn drop_oldest_deletes_and_cursor_skips_visibly() {
    let mem = MemStorage::new();
    let cfg = LogConfig {
        max_bytes: 2 * (1024 + 8 + 256 + 24),
        when_full: WhenFull::DropOldest,
        ..small_config("/o")
    };
    let (log, _) = Log::open_with_storage(cfg, mem).unwrap();
    let mut c = log.cursor("bridge").unwrap();
    append_n(&log, 0, 100, 100).await;
    let st = log.stats();
    assert!(st.dropped_records > 0, "{st:?}");
    assert_eq!(st.oldest_offset, st.dropped_records);
    let got = c.try_read(1000, usize::MAX).unwrap();
    assert_eq!(c.skipped(), st.dropped_records);
    assert_eq!(got.first().unwrap().offset, st.oldest_offset);
    assert_eq!(got.last().unwrap().offset, 99);
    assert!(same(got.last().unwrap(), &rec(99, 100)));
}

#[tokio::test]
async fn zero_cursors_never_block() {
    let mem = MemStorage::new();
    let cfg = LogConfig {
        max_bytes: 2 * (1024 + 8 + 256 + 24),
        when_full: WhenFull::Block,
        ..small_config("/z")
    };
    let (log, _) = Log::open_with_storage(cfg.clone(), mem).unwrap();
    let done = tokio::time::timeout(Duration::from_secs(10), append_n(&log, 0, 200, 100)).await;
    assert!(done.is_ok(), "append blocked with zero cursors");
    let st = log.stats();
    assert!(st.bytes <= cfg.max_bytes + 24, "{st:?}");
    assert!(st.dropped_records > 0);
}

#[tokio::test]
async fn retention_deletes_only_below_every_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(small_config(dir.path())).unwrap();
    let mut a = log.cursor("a").unwrap();
    let mut b = log.cursor("b").unwrap();
    append_n(&log, 0, 60, 50).await;
    let segs = seg_files(dir.path()).len();
    assert!(segs >= 4);
    a.commit(60).await.unwrap();
    assert_eq!(
        seg_files(dir.path()).len(),
        segs,
        "b still needs everything"
    );
    b.commit(30).await.unwrap();
    let left = seg_files(dir.path());
    assert!(left.len() < segs);
    let oldest = log.stats().oldest_offset;
    assert!(oldest <= 30 && oldest > 0, "oldest {oldest}");
    assert!(matches!(
        b.commit(1000).await,
        Err(edge_log::LogError::CommitBeyondDurable { .. })
    ));
    b.seek(30);
    assert_eq!(b.try_read(1, usize::MAX).unwrap()[0].offset, 30);
}

#[tokio::test]
async fn fsync_failure_is_sticky_and_never_reports_durable() {
    let mem = MemStorage::new();
    let faulty = FaultyStorage::new(mem.clone());
    let (log, _) = Log::open_with_storage(small_config("/f"), faulty.clone()).unwrap();
    append_n(&log, 0, 3, 10).await;
    faulty.faults.fail_sync.store(true, Ordering::SeqCst);
    let a = log.append(rec(3, 10)).await.unwrap();
    assert_eq!(a.offset, 3);
    assert!(matches!(
        a.durable().await,
        Err(AppendError::Storage { .. })
    ));
    assert_eq!(log.durable_end(), 3);
    // Sticky: even with the disk healthy again, appends fail until reopen.
    faulty.faults.fail_sync.store(false, Ordering::SeqCst);
    assert!(matches!(
        log.append(rec(4, 10)).await,
        Err(AppendError::Storage { .. })
    ));
    let mut c = log.cursor("c").unwrap();
    assert_eq!(
        c.try_read(100, usize::MAX).unwrap().len(),
        3,
        "reader must not see the unsynced record"
    );
    drop(c);
    assert!(
        log.close().await.is_err(),
        "close reports the sticky failure"
    );
    drop(log);
    mem.crash(CrashMode::DropUnsynced);
    let (log, report) = Log::open_with_storage(small_config("/f"), mem.clone()).unwrap();
    assert_eq!(report.next_offset, 3, "{report}");
    assert_eq!(append_n(&log, 3, 1, 10).await, vec![3]);
}

#[tokio::test]
async fn short_writes_are_completed() {
    let mem = MemStorage::new();
    let faulty = FaultyStorage::new(mem.clone());
    faulty.faults.short_writes.store(true, Ordering::SeqCst);
    let (log, _) = Log::open_with_storage(small_config("/s"), faulty).unwrap();
    append_n(&log, 0, 30, 60).await;
    let mut c = log.cursor("c").unwrap();
    let got = c.try_read(100, usize::MAX).unwrap();
    assert_eq!(got.len(), 30);
    assert!(got.iter().all(|r| same(r, &rec(r.offset, 60))));
}

#[tokio::test]
async fn power_cut_keeps_durable_records_torn_and_zero_tails_truncated() {
    for mode in [
        CrashMode::DropUnsynced,
        CrashMode::TornTail(13),
        CrashMode::ZeroFill,
    ] {
        let mem = MemStorage::new();
        let cfg = LogConfig {
            fsync: FsyncPolicy::Interval(Duration::from_secs(3600)),
            ..small_config("/c")
        };
        let (log, _) = Log::open_with_storage(cfg.clone(), mem.clone()).unwrap();
        // With a long interval, only what rolled segments synced is durable.
        for i in 0..30 {
            log.append(rec(i, 50)).await.unwrap();
        }
        let written = log.stats().next_offset;
        mem.crash(mode);
        drop(log);
        let (log, report) = Log::open_with_storage(cfg.clone(), mem.clone()).unwrap();
        assert!(report.next_offset < written, "{mode:?}: {report}");
        if mode != CrashMode::DropUnsynced {
            assert!(report.truncated.is_some(), "{mode:?}: {report}");
        }
        let mut c = log.cursor("c").unwrap();
        let got = c.try_read(1000, usize::MAX).unwrap();
        assert_eq!(got.len() as u64, report.next_offset);
        assert!(
            got.iter()
                .enumerate()
                .all(|(i, r)| r.offset == i as u64 && same(r, &rec(i as u64, 50)))
        );
    }
}

fn corrupt_setup(dir: &Path) -> LogConfig {
    small_config(dir)
}

async fn write_and_close(cfg: &LogConfig, n: u64) {
    let (log, _) = Log::open(cfg.clone()).unwrap();
    append_n(&log, 0, n, 50).await;
    log.close().await.unwrap();
}

#[tokio::test]
async fn bit_flip_in_sealed_segment_is_skipped_and_resynced() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = corrupt_setup(dir.path());
    write_and_close(&cfg, 40).await;
    let segs = seg_files(dir.path());
    let first = dir.path().join(&segs[0]);
    let mut bytes = std::fs::read(&first).unwrap();
    // Flip a bit in the payload of the second record.
    let l0 = u32::from_le_bytes(bytes[24..28].try_into().unwrap()) as usize;
    let second = 24 + 8 + l0;
    bytes[second + 8 + 20] ^= 0x10;
    std::fs::write(&first, &bytes).unwrap();
    let (log, report) = Log::open(cfg).unwrap();
    assert!(
        report.truncated.is_none(),
        "sealed segments are not scanned at open: {report}"
    );
    let mut c = log.cursor("c").unwrap();
    let got = c.try_read(1000, usize::MAX).unwrap();
    let offsets: Vec<u64> = got.iter().map(|r| r.offset).collect();
    assert!(!offsets.contains(&1));
    assert_eq!(offsets[0], 0);
    assert_eq!(offsets[1], 2, "resync must continue at the next frame");
    assert_eq!(got.len(), 39);
    assert_eq!(c.skipped(), 1);
    assert_eq!(log.stats().corrupt_skipped, 1);
}

#[tokio::test]
async fn missing_middle_segment_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = corrupt_setup(dir.path());
    write_and_close(&cfg, 40).await;
    let segs = seg_files(dir.path());
    assert!(segs.len() >= 3);
    let gone_base: u64 = segs[1].trim_end_matches(".seg").parse().unwrap();
    let next_base: u64 = segs[2].trim_end_matches(".seg").parse().unwrap();
    std::fs::remove_file(dir.path().join(&segs[1])).unwrap();
    let (log, _) = Log::open(cfg).unwrap();
    let mut c = log.cursor("c").unwrap();
    let got = c.try_read(1000, usize::MAX).unwrap();
    let offsets: Vec<u64> = got.iter().map(|r| r.offset).collect();
    let expected: Vec<u64> = (0..gone_base).chain(next_base..40).collect();
    assert_eq!(offsets, expected);
    assert_eq!(c.skipped(), next_base - gone_base);
    assert_eq!(log.stats().corrupt_skipped, next_base - gone_base);
}

#[tokio::test]
async fn truncated_and_zero_filled_tail_on_real_disk() {
    for zero in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = corrupt_setup(dir.path());
        write_and_close(&cfg, 5).await;
        let segs = seg_files(dir.path());
        let tail = dir.path().join(segs.last().unwrap());
        let mut bytes = std::fs::read(&tail).unwrap();
        let len = bytes.len();
        if zero {
            bytes.extend_from_slice(&[0u8; 100]);
        } else {
            bytes.truncate(len - 7);
        }
        std::fs::write(&tail, &bytes).unwrap();
        let (log, report) = Log::open(cfg.clone()).unwrap();
        let t = report.truncated.clone().unwrap();
        if zero {
            assert_eq!(t.byte_range, len as u64..len as u64 + 100);
            assert!(t.reason.contains("zero"), "{report}");
            assert_eq!(report.next_offset, 5);
        } else {
            assert_eq!(report.next_offset, 4, "{report}");
            assert_eq!(t.records, 1);
        }
        assert!(report.to_string().contains("TRUNCATED"));
        let mut c = log.cursor("c").unwrap();
        assert_eq!(
            c.try_read(100, usize::MAX).unwrap().len() as u64,
            report.next_offset
        );
        // Appends continue densely after the cut.
        let next = report.next_offset;
        assert_eq!(append_n(&log, next, 1, 10).await, vec![next]);
    }
}

#[tokio::test]
async fn too_large_is_refused() {
    let mem = MemStorage::new();
    let (log, _) = Log::open_with_storage(small_config("/t"), mem).unwrap();
    assert!(matches!(
        log.append(rec(0, 1000)).await,
        Err(AppendError::TooLarge { max: 256, .. })
    ));
    assert_eq!(append_n(&log, 0, 1, 10).await, vec![0]);
}

#[test]
fn config_validation() {
    let mut c = LogConfig::new("/x");
    assert!(c.validate().is_ok());
    c.max_bytes = c.segment_bytes;
    assert!(matches!(
        c.validate(),
        Err(edge_log::LogError::Config {
            field: "max_bytes",
            ..
        })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reader_follows_concurrent_appenders_across_rolls() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        fsync: FsyncPolicy::Never,
        ..small_config(dir.path())
    };
    let (log, _) = Log::open(cfg).unwrap();
    let mut c = log.cursor("follow").unwrap();
    let total = 8 * 150u64;
    let mut hs = Vec::new();
    for t in 0..8u64 {
        let log = log.clone();
        hs.push(tokio::spawn(async move {
            for i in 0..150 {
                log.append(rec(t * 1000 + i, 40))
                    .await
                    .unwrap()
                    .durable()
                    .await
                    .unwrap();
            }
        }));
    }
    let mut seen = 0u64;
    while seen < total {
        let batch = tokio::time::timeout(Duration::from_secs(10), c.read(64, 4096))
            .await
            .unwrap()
            .unwrap();
        for r in batch {
            assert_eq!(r.offset, seen, "dense, in order, no duplicates");
            assert!(r.offset < log.durable_end());
            seen += 1;
        }
        if seen.is_multiple_of(200) && seen < total {
            c.commit(seen).await.unwrap();
        }
    }
    for h in hs {
        h.await.unwrap();
    }
    assert!(log.stats().segments > 1);
    // Seeking back to the committed position replays the same records.
    let committed = c.committed();
    c.seek(committed);
    let again = c.try_read(3, usize::MAX).unwrap();
    assert_eq!(
        again.iter().map(|r| r.offset).collect::<Vec<_>>(),
        vec![committed, committed + 1, committed + 2]
    );
}

#[tokio::test]
async fn offsets_committed_by_a_cursor_are_never_reused() {
    // With fsync=never a power cut can lose records a cursor already committed (forwarded).
    let mem = MemStorage::new();
    let cfg = LogConfig {
        fsync: FsyncPolicy::Never,
        ..small_config("/n")
    };
    let (log, _) = Log::open_with_storage(cfg.clone(), mem.clone()).unwrap();
    let mut c = log.cursor("bridge").unwrap();
    append_n(&log, 0, 5, 10).await;
    assert_eq!(c.try_read(10, usize::MAX).unwrap().len(), 5);
    c.commit(5).await.unwrap();
    mem.crash(CrashMode::DropUnsynced);
    drop(c);
    drop(log);
    let (log, report) = Log::open_with_storage(cfg, mem).unwrap();
    assert_eq!(report.offsets_skipped, 5, "{report}");
    assert!(report.to_string().contains("LOST 5"));
    assert_eq!(
        append_n(&log, 100, 1, 10).await,
        vec![5],
        "offset 5 onwards, never 0..5 again"
    );
    let mut c = log.cursor("bridge").unwrap();
    let got = c.try_read(10, usize::MAX).unwrap();
    assert_eq!(got.len(), 1);
    assert!(same(&got[0], &rec(100, 10)));
}

#[tokio::test]
async fn corrupt_length_and_zeroed_frames_in_sealed_segments() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = corrupt_setup(dir.path());
    write_and_close(&cfg, 60).await;
    let segs = seg_files(dir.path());
    assert!(segs.len() >= 4);
    let frame_starts = |bytes: &[u8]| {
        let mut v = Vec::new();
        let mut pos = 24;
        while pos < bytes.len() {
            v.push(pos);
            pos += 8 + u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        }
        v
    };
    // Segment 0: garbage length field in frame 2 -> its body still decodes with the stored
    // checksum: the reader reads it (nothing lost).
    let p0 = dir.path().join(&segs[0]);
    let mut b0 = std::fs::read(&p0).unwrap();
    let f0 = frame_starts(&b0);
    b0[f0[2]..f0[2] + 4].copy_from_slice(&0x00ff_ffffu32.to_le_bytes());
    std::fs::write(&p0, &b0).unwrap();
    // Segment 1: its last frame zero-filled -> nothing to resync to, skip to segment 2.
    let p1 = dir.path().join(&segs[1]);
    let mut b1 = std::fs::read(&p1).unwrap();
    let f1 = frame_starts(&b1);
    let last = *f1.last().unwrap();
    let n1 = f1.len() as u64;
    b1[last..].fill(0);
    std::fs::write(&p1, &b1).unwrap();
    let base1: u64 = segs[1].trim_end_matches(".seg").parse().unwrap();

    let (log, _) = Log::open(cfg).unwrap();
    let mut c = log.cursor("c").unwrap();
    let got = c.try_read(1000, usize::MAX).unwrap();
    let offsets: Vec<u64> = got.iter().map(|r| r.offset).collect();
    let lost = [base1 + n1 - 1];
    let expected: Vec<u64> = (0..60).filter(|o| !lost.contains(o)).collect();
    assert_eq!(offsets, expected);
    assert!(got.iter().all(|r| same(r, &rec(r.offset, 50))));
    assert_eq!(c.skipped(), 1);
    assert_eq!(log.stats().corrupt_skipped, 1);
}

#[tokio::test]
async fn interval_records_are_invisible_until_synced() {
    let mem = MemStorage::new();
    let cfg = LogConfig {
        fsync: FsyncPolicy::Interval(Duration::from_secs(3600)),
        segment_bytes: 64 << 10,
        max_bytes: 1 << 20,
        ..small_config("/i")
    };
    let (log, _) = Log::open_with_storage(cfg, mem.clone()).unwrap();
    let mut c = log.cursor("c").unwrap();
    let a = log.append(rec(0, 10)).await.unwrap();
    log.append(rec(1, 10)).await.unwrap();
    assert_eq!(log.stats().next_offset, 2);
    assert_eq!(log.durable_end(), 0);
    assert!(
        c.try_read(10, usize::MAX).unwrap().is_empty(),
        "written but unsynced"
    );
    let waiter = tokio::spawn(a.durable());
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!waiter.is_finished());
    log.close().await.unwrap();
    assert_eq!(waiter.await.unwrap(), Ok(0), "close syncs and publishes");
    assert_eq!(c.try_read(10, usize::MAX).unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seek_anywhere_uses_the_sparse_index_and_reads_the_right_record() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        segment_bytes: 4 << 20,
        max_bytes: 16 << 20,
        fsync: FsyncPolicy::Never,
        ..small_config(dir.path())
    };
    let total = 5000u64;
    for reopen in [false, true] {
        let (log, _) = Log::open(cfg.clone()).unwrap();
        if !reopen {
            let mut hs = Vec::new();
            for t in 0..4 {
                let log = log.clone();
                hs.push(tokio::spawn(async move {
                    for i in 0..total / 4 {
                        log.append(rec(t * 10_000 + i, 20)).await.unwrap();
                    }
                }));
            }
            for h in hs {
                h.await.unwrap();
            }
        }
        let mut c = log.cursor("seeker").unwrap();
        // Warm the index on the reopened log by reading through once.
        while !c.try_read(1000, usize::MAX).unwrap().is_empty() {}
        for target in [4321, 1024, 1023, 0, 4999, 2048, 2047, 3] {
            c.seek(target);
            let got = c.try_read(2, usize::MAX).unwrap();
            assert_eq!(got[0].offset, target);
            assert_eq!(c.position(), (target + 2).min(total));
        }
        log.close().await.unwrap();
    }
}

#[tokio::test]
async fn tail_with_undecodable_body_or_offset_gap_is_truncated_and_its_offset_retired() {
    use edge_log::format;
    for case in ["undecodable", "discontinuity"] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LogConfig {
            segment_bytes: 1 << 20,
            max_bytes: 4 << 20,
            ..corrupt_setup(dir.path())
        };
        write_and_close(&cfg, 3).await;
        let tail = dir.path().join(&seg_files(dir.path())[0]);
        let mut bytes = std::fs::read(&tail).unwrap();
        let good_len = bytes.len() as u64;
        let mut frame = Vec::new();
        if case == "undecodable" {
            // Valid length and CRC, but variant 9 does not exist.
            let body = [9u8, 1, 2, 3];
            frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
            frame.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
            frame.extend_from_slice(&body);
        } else {
            // A perfectly valid frame that claims offset 7 where 3 is expected.
            let r = rec(7, 10);
            let body = format::body_ref(7, &r);
            format::encode_frame(&body, &mut frame).unwrap();
        }
        let frame_len = frame.len() as u64;
        bytes.extend_from_slice(&frame);
        std::fs::write(&tail, &bytes).unwrap();
        let (log, report) = Log::open(cfg).unwrap();
        let t = report.truncated.clone().unwrap();
        assert_eq!(
            t.byte_range,
            good_len..good_len + frame_len,
            "{case}: {report}"
        );
        assert_eq!(t.records, 1);
        let want = if case == "undecodable" {
            "undecodable"
        } else {
            "offset discontinuity"
        };
        assert!(t.reason.contains(want), "{case}: {report}");
        // A complete frame that fails may have been durable and read: its offset is retired.
        assert_eq!(t.offsets_retired, 1, "{case}: {report}");
        assert_eq!(report.tail_records, 3);
        assert_eq!(report.next_offset, 4);
        assert_eq!(log.stats().recovery_skipped, 1);
        assert_eq!(append_n(&log, 3, 1, 10).await, vec![4]);
    }
}

#[tokio::test]
async fn close_releases_blocked_appenders_and_readers() {
    let mem = MemStorage::new();
    let cfg = LogConfig {
        max_bytes: 2 * (1024 + 8 + 256 + 24),
        ..small_config("/k")
    };
    let (log, _) = Log::open_with_storage(cfg, mem).unwrap();
    let mut c = log.cursor("bridge").unwrap();
    let mut n = 0;
    while tokio::time::timeout(Duration::from_millis(100), async {
        log.append(rec(n, 100))
            .await
            .unwrap()
            .durable()
            .await
            .unwrap()
    })
    .await
    .is_ok()
    {
        n += 1;
    }
    let l2 = log.clone();
    let blocked = tokio::spawn(async move { l2.append(rec(0, 100)).await.map(|a| a.offset) });
    while !c.try_read(1000, usize::MAX).unwrap().is_empty() {}
    let reader = tokio::spawn(async move { c.read(10, usize::MAX).await.map(|r| r.len()) });
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!blocked.is_finished() && !reader.is_finished());
    log.close().await.unwrap();
    assert_eq!(blocked.await.unwrap(), Err(AppendError::Closed));
    assert!(matches!(
        reader.await.unwrap(),
        Err(edge_log::ReadError::Closed)
    ));
}

/// `preallocate`: the active segment is zero-filled a step ahead of the writer (the file grows
/// once per step), a sealed segment ends at its last frame, and the zeros at the end of the
/// tail are kept at open, not reported as a torn write.
#[tokio::test]
async fn preallocated_segments_grow_a_step_at_a_time_and_reopen_clean() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = preallocating(dir.path(), 3 << 20);
    let (log, _) = Log::open(cfg.clone()).unwrap();
    append_n(&log, 0, 20, 100).await;
    let size = only_segment_size(dir.path());
    assert_eq!(size % edge_log::PREALLOCATE_STEP, 0, "{size}");
    assert!(size > log.stats().bytes, "zeros written ahead");
    // Big records: the segment fills, rolls, and the sealed one ends at its last frame.
    for i in 20..120 {
        log.append(rec(i, 250)).await.unwrap();
    }
    let mut big = rec(200, 0);
    big.payload = bytes::Bytes::from(vec![7u8; 60 << 10]);
    let mut n = 120;
    while log.stats().segments < 2 {
        log.append(big.clone())
            .await
            .unwrap()
            .durable()
            .await
            .unwrap();
        n += 1;
    }
    let files = seg_files(dir.path());
    let sealed = std::fs::read(dir.path().join(&files[0])).unwrap();
    assert!(
        sealed.len() as u64 <= cfg.segment_bytes && sealed[sealed.len() - 1] == 7,
        "a sealed segment ends with its last frame"
    );
    log.close().await.unwrap();
    drop(log);
    let (log, report) = Log::open(cfg.clone()).unwrap();
    assert!(
        report.truncated.is_none(),
        "zeros ahead are not a torn write: {report}"
    );
    assert_eq!(report.next_offset, n);
    assert_eq!(append_n(&log, n, 1, 10).await, vec![n]);
    let mut c = log.cursor("c").unwrap();
    assert_eq!(c.try_read(10_000, usize::MAX).unwrap().len() as u64, n + 1);
}

/// `preallocate`: the zeros stay at least a step ahead of the frames, so a frame never lands
/// in a page zeroed (and being written back) just before; and never more than three steps.
#[tokio::test]
async fn preallocated_zeros_stay_a_step_ahead_of_the_frames() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(preallocating(dir.path(), 16 << 20)).unwrap();
    let step = edge_log::PREALLOCATE_STEP;
    let mut sizes = std::collections::BTreeSet::new();
    for i in 0..700 {
        let appended = log.append(rec(i, 10 << 10)).await.unwrap();
        appended.durable().await.unwrap();
        let size = only_segment_size(dir.path());
        let data = log.stats().bytes;
        assert!(
            size >= data + step && size <= data + 3 * step,
            "record {i}: {data} B of frames in a file of {size} B"
        );
        sizes.insert(size);
    }
    assert!(
        sizes.len() >= 3 && sizes.iter().all(|s| s % step == 0),
        "the file grew by whole steps: {sizes:?}"
    );
}

/// `preallocate` under bulk load: once a step of frames was written with fdatasyncs larger
/// than the zeros pay for (here none at all), the frames are appended without zeros ahead.
#[tokio::test]
async fn preallocate_stops_the_zeros_under_bulk_load() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        fsync: FsyncPolicy::Interval(Duration::from_secs(3600)),
        ..preallocating(dir.path(), 16 << 20)
    };
    let (log, _) = Log::open(cfg).unwrap();
    let mut ahead = Vec::new();
    for i in 0..600 {
        log.append(rec(i, 10 << 10)).await.unwrap();
        ahead.push(only_segment_size(dir.path()) - log.stats().bytes);
    }
    assert!(
        ahead[0] >= edge_log::PREALLOCATE_STEP,
        "zeros at first: {}",
        ahead[0]
    );
    assert_eq!(ahead.last(), Some(&0), "then none: {ahead:?}");
}

/// `preallocate` on a copy-on-write file system (the fake `MemStorage` says btrfs, as `statfs`
/// would): no zeros ahead, since nothing is overwritten in place there; on the same fake
/// saying nothing, the zeros are written.
#[tokio::test]
async fn preallocate_writes_no_zeros_on_a_copy_on_write_file_system() {
    use edge_log::Storage;
    use edge_log::testing::MemStorage;
    let dir = Path::new("/cow");
    for (mem, zeros) in [
        (MemStorage::new(), true),
        (MemStorage::copy_on_write(), false),
    ] {
        let cfg = LogConfig {
            preallocate: true,
            ..LogConfig::new(dir)
        };
        let (log, _) = Log::open_with_storage(cfg, mem.clone()).unwrap();
        append_n(&log, 0, 10, 100).await;
        let seg = mem
            .list(dir)
            .unwrap()
            .into_iter()
            .find(|n| n.ends_with(".seg"));
        let size = mem.open(&dir.join(seg.unwrap())).unwrap().size().unwrap();
        let data = log.stats().bytes;
        assert_eq!(
            size > data,
            zeros,
            "{data} B of frames in a file of {size} B"
        );
    }
}

/// The WARN and ERROR events emitted on the thread where it is the default subscriber
/// (`tracing::subscriber::set_default`), each as its fields (`message`, `offset`, ...).
#[derive(Clone, Default)]
struct Warnings(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl Warnings {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

impl tracing::Subscriber for Warnings {
    fn enabled(&self, meta: &tracing::Metadata<'_>) -> bool {
        *meta.level() <= tracing::Level::WARN
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        struct Fields(String);
        impl tracing::field::Visit for Fields {
            fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                self.0 += &format!("{}={v:?} ", f.name());
            }
        }
        let mut fields = Fields(format!("{} ", event.metadata().level()));
        event.record(&mut fields);
        self.0.lock().unwrap().push(fields.0);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// Records whose frames are larger than a reader's read-ahead (600 KiB and 1.5 MiB, beside
/// small ones) read back intact through a fresh cursor, after seeks back and after a reopen,
/// and are not taken for damage: no "damaged length field" warning (or any other) for a
/// healthy log. A damaged length field on such a record is still repaired, and reported.
#[tokio::test]
async fn records_larger_than_the_read_ahead_are_not_taken_for_damage() {
    let warnings = Warnings::default();
    let _guard = tracing::subscriber::set_default(warnings.clone());
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        segment_bytes: 3 << 20,
        max_bytes: 64 << 20,
        max_record_bytes: 2 << 20,
        ..LogConfig::new(dir.path())
    };
    let sizes = [
        600 << 10,
        1536 << 10,
        100,
        1536 << 10,
        600 << 10,
        40,
        1536 << 10,
    ];
    let n = sizes.len() as u64;
    let (log, _) = Log::open(cfg.clone()).unwrap();
    for (i, &len) in sizes.iter().enumerate() {
        let a = log.append(rec(i as u64, len)).await.unwrap();
        assert_eq!(a.durable().await.unwrap(), i as u64);
    }
    assert!(log.stats().segments > 1, "sealed and active segments");
    let intact = |got: &[edge_log::Record], from: u64| {
        for (k, r) in got.iter().enumerate() {
            let i = from + k as u64;
            assert_eq!(r.offset, i);
            assert!(same(r, &rec(i, sizes[i as usize])), "record {i} differs");
        }
    };
    // A fresh cursor reads them all in order.
    let mut c = log.cursor("c").unwrap();
    let got = c.try_read(100, usize::MAX).unwrap();
    assert_eq!(got.len() as u64, n);
    intact(&got, 0);
    // Seeks back, one record at a time (each placement starts with an empty read-ahead).
    for i in (0..n).rev() {
        c.seek(i);
        let got = c.try_read(1, usize::MAX).unwrap();
        assert_eq!(got.len(), 1);
        intact(&got, i);
    }
    assert_eq!(c.skipped(), 0);
    assert_eq!(log.stats().corrupt_skipped, 0);
    assert_eq!(warnings.take(), Vec::<String>::new(), "a healthy log");
    log.close().await.unwrap();
    drop((c, log));
    // Reopened: the tail segment is scanned, and read again by a new cursor.
    let (log, report) = Log::open(cfg.clone()).unwrap();
    assert!(report.lengths_repaired.is_empty(), "{report}");
    assert!(
        report.truncated.is_none() && report.skipped.is_empty(),
        "{report}"
    );
    let mut c = log.cursor("d").unwrap();
    let got = c.try_read(100, usize::MAX).unwrap();
    assert_eq!(got.len() as u64, n);
    intact(&got, 0);
    assert_eq!(log.stats().corrupt_skipped, 0);
    assert_eq!(warnings.take(), Vec::<String>::new(), "a healthy log");
    log.close().await.unwrap();
    drop((c, log));

    // The control: the length field of record 1 (1.5 MiB, in the sealed first segment)
    // damaged. The record still reads back whole, and the repair is reported, once.
    let first = dir.path().join(&seg_files(dir.path())[0]);
    let mut bytes = std::fs::read(&first).unwrap();
    let f1 = 24 + 8 + u32::from_le_bytes(bytes[24..28].try_into().unwrap()) as usize;
    bytes[f1..f1 + 4].copy_from_slice(&0x00ff_ffffu32.to_le_bytes());
    std::fs::write(&first, &bytes).unwrap();
    let (log, _) = Log::open(cfg).unwrap();
    let mut c = log.cursor("e").unwrap();
    let got = c.try_read(100, usize::MAX).unwrap();
    assert_eq!(got.len() as u64, n);
    intact(&got, 0);
    let warned = warnings.take();
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert!(
        warned[0].contains("length field is damaged") && warned[0].contains("offset=1 "),
        "{warned:?}"
    );
}
