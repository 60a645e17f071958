//! Ordered batches (`Log::submit_many` / `Log::append_many`): order, refusals, durability only
//! after the fsync (MemStorage power-cut fake), sticky failures, full-disk policies, and a
//! proptest of pipelined batches from one task racing single appends from others.

// Test code: unwrap/expect are fine here (clippy.toml intent); helpers are not #[test] fns.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{rec, same, small_config};
use edge_log::testing::{CrashMode, FaultyStorage, MemStorage};
use edge_log::{AppendError, EncodedRecords, FsyncPolicy, Log, LogConfig, NewRecord, WhenFull};
use proptest::prelude::*;

/// Reads every durable record from a fresh cursor.
fn read_all(log: &Log) -> Vec<edge_log::Record> {
    let mut c = log.cursor("check").unwrap();
    let all = c.try_read(usize::MAX, usize::MAX).unwrap();
    drop(c);
    log.remove_cursor("check").unwrap();
    all
}

#[tokio::test]
async fn batch_keeps_order_refuses_too_large_alone_and_spans_chunks() {
    let mem = MemStorage::new();
    let (log, _) = Log::open_with_storage(small_config("/b"), mem).unwrap();
    // small_config: segment 1024 B => chunks of at most 1024 B, so 40 records take several.
    assert_eq!(log.max_chunk_bytes(), 1024);
    let records: Vec<NewRecord> = (0..40)
        .map(|i| rec(i, if i % 9 == 4 { 1000 } else { 60 + i as usize }))
        .collect();
    let mut batch = log.append_many(records.clone()).await;
    assert_eq!(batch.outcomes().len(), 40);
    let mut next = 0;
    let mut kept = Vec::new();
    for (i, (r, outcome)) in records.iter().zip(batch.outcomes()).enumerate() {
        if i % 9 == 4 {
            assert!(
                matches!(outcome, Err(AppendError::TooLarge { max: 256, .. })),
                "record {i}: {outcome:?}"
            );
        } else {
            assert_eq!(outcome, &Ok(next), "record {i}");
            next += 1;
            kept.push(r.clone());
        }
    }
    assert_eq!(batch.accepted(), kept.len());
    batch.durable().await.unwrap();
    assert_eq!(log.durable_end(), next);
    let back = read_all(&log);
    assert_eq!(back.len(), kept.len());
    for (r, w) in back.iter().zip(&kept) {
        assert!(same(r, w), "record {} differs", r.offset);
    }
    assert!(log.stats().segments > 1, "the batch crossed segment rolls");
    // Empty batches and all-refused batches are answered at once.
    let mut empty = log.append_many(Vec::new()).await;
    assert!(empty.outcomes().is_empty());
    empty.durable().await.unwrap();
    let mut refused = log.append_many(vec![rec(99, 1000)]).await;
    assert!(matches!(
        refused.outcomes(),
        [Err(AppendError::TooLarge { .. })]
    ));
    refused.durable().await.unwrap();
}

#[tokio::test]
async fn batch_is_durable_only_after_the_fsync() {
    // Interval(1h): nothing syncs on its own, so a power cut loses the batch.
    let mem = MemStorage::new();
    let cfg = LogConfig {
        fsync: FsyncPolicy::Interval(Duration::from_secs(3600)),
        segment_bytes: 64 << 10,
        ..small_config("/d")
    };
    let (log, _) = Log::open_with_storage(cfg.clone(), mem.clone()).unwrap();
    let syncs = mem.syncs();
    let mut batch = log.append_many((0..5).map(|i| rec(i, 50)).collect()).await;
    assert!(batch.outcomes().iter().all(Result::is_ok));
    assert!(
        tokio::time::timeout(Duration::from_millis(100), batch.durable())
            .await
            .is_err(),
        "durable before any fsync"
    );
    assert_eq!(mem.syncs(), syncs, "no fsync happened");
    assert_eq!(log.durable_end(), 0);
    mem.crash(CrashMode::DropUnsynced);
    drop(batch);
    drop(log);
    let (log, report) = Log::open_with_storage(cfg, mem.clone()).unwrap();
    assert_eq!(report.next_offset, 0, "unsynced batch survived: {report}");
    drop(log);

    // Always: durable() resolves after the fsync, and the batch survives the power cut.
    let (log, _) = Log::open_with_storage(small_config("/d2"), mem.clone()).unwrap();
    let records: Vec<NewRecord> = (0..5).map(|i| rec(i, 50)).collect();
    let syncs = mem.syncs();
    let mut batch = log.append_many(records.clone()).await;
    batch.durable().await.unwrap();
    assert!(mem.syncs() > syncs, "durable without an fsync");
    mem.crash(CrashMode::DropUnsynced);
    drop(batch);
    drop(log);
    let (log, report) = Log::open_with_storage(small_config("/d2"), mem).unwrap();
    assert_eq!(report.next_offset, 5, "{report}");
    let back = read_all(&log);
    for (r, w) in back.iter().zip(&records) {
        assert!(same(r, w));
    }
}

#[tokio::test]
async fn batch_fsync_failure_is_sticky_and_never_durable() {
    let mem = MemStorage::new();
    let faulty = FaultyStorage::new(mem.clone());
    let (log, _) = Log::open_with_storage(small_config("/f"), faulty.clone()).unwrap();
    log.append_many(vec![rec(0, 10)])
        .await
        .durable()
        .await
        .unwrap();
    faulty.faults.fail_sync.store(true, Ordering::SeqCst);
    let mut batch = log.append_many((1..4).map(|i| rec(i, 10)).collect()).await;
    assert_eq!(batch.outcomes(), &[Ok(1), Ok(2), Ok(3)], "written");
    assert!(matches!(
        batch.durable().await,
        Err(AppendError::Storage { .. })
    ));
    assert_eq!(log.durable_end(), 1);
    faulty.faults.fail_sync.store(false, Ordering::SeqCst);
    let later = log.append_many(vec![rec(4, 10), rec(5, 1000)]).await;
    assert!(matches!(
        later.outcomes(),
        [
            Err(AppendError::Storage { .. }),
            Err(AppendError::TooLarge { .. })
        ]
    ));
}

#[tokio::test]
async fn batch_under_reject_is_refused_whole_and_under_block_waits() {
    let budget = 2 * (1024 + 8 + 256 + 24);
    for policy in [WhenFull::Reject, WhenFull::Block] {
        let mem = MemStorage::new();
        let cfg = LogConfig {
            max_bytes: budget,
            when_full: policy,
            ..small_config("/r")
        };
        let (log, _) = Log::open_with_storage(cfg, mem).unwrap();
        let mut cursor = log.cursor("bridge").unwrap();
        // Fill the budget with single records (a cursor holds everything back).
        let mut n = 0;
        while log.stats().bytes + 200 < budget {
            log.append(rec(n, 100))
                .await
                .unwrap()
                .durable()
                .await
                .unwrap();
            n += 1;
        }
        let records: Vec<NewRecord> = (100..110).map(|i| rec(i, 100)).collect();
        match policy {
            WhenFull::Reject => {
                let batch = log.append_many(records).await;
                assert!(
                    batch
                        .outcomes()
                        .iter()
                        .all(|o| matches!(o, Err(AppendError::Full { .. }))),
                    "{:?}",
                    batch.outcomes()
                );
            }
            _ => {
                let log2 = log.clone();
                let waiting = tokio::spawn(async move { log2.append_many(records).await });
                tokio::time::sleep(Duration::from_millis(100)).await;
                assert!(!waiting.is_finished(), "a full log under block must wait");
                let got = cursor.try_read(usize::MAX, usize::MAX).unwrap();
                cursor.commit(got.last().unwrap().offset + 1).await.unwrap();
                let batch = tokio::time::timeout(Duration::from_secs(5), waiting)
                    .await
                    .expect("batch still blocked after the commit freed space")
                    .unwrap();
                let offsets: Vec<u64> = batch
                    .outcomes()
                    .iter()
                    .map(|o| *o.as_ref().unwrap())
                    .collect();
                assert_eq!(offsets, (n..n + 10).collect::<Vec<_>>());
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_refuses_later_batches() {
    let mem = MemStorage::new();
    let (log, _) = Log::open_with_storage(small_config("/c"), mem).unwrap();
    log.close().await.unwrap();
    let batch = log.append_many(vec![rec(0, 10), rec(1, 10)]).await;
    assert!(
        batch
            .outcomes()
            .iter()
            .all(|o| matches!(o, Err(AppendError::Closed)))
    );
}

/// One task submits batches back to back (each `submit_many` awaited, the written/durable
/// waits collected and awaited later) while other tasks hammer single appends and the queue
/// is small enough to fill: the task's records must come out in submission order.
async fn pipelined(batches: Vec<Vec<usize>>, singles: usize) -> Result<(), TestCaseError> {
    let mem = MemStorage::new();
    let cfg = LogConfig {
        segment_bytes: 4096,
        max_record_bytes: 256,
        max_bytes: 64 << 20,
        ..LogConfig::new("/p")
    };
    let (log, _) = Log::open_with_storage(cfg, mem).unwrap();
    let mut noise = Vec::new();
    for t in 0..4u64 {
        let log = log.clone();
        noise.push(tokio::spawn(async move {
            for i in 0..singles as u64 {
                log.append(rec(1_000_000 + t * 10_000 + i, 40))
                    .await
                    .unwrap();
            }
        }));
    }
    let mut submitted = Vec::new();
    let mut sent: Vec<NewRecord> = Vec::new();
    let mut id = 0;
    for lens in batches {
        let records: Vec<NewRecord> = lens
            .iter()
            .map(|&len| {
                id += 1;
                rec(id, len)
            })
            .collect();
        sent.extend(records.iter().cloned());
        submitted.push(log.submit_many(records).await);
    }
    let mut last: Option<u64> = None;
    let mut mine = Vec::new();
    for s in submitted {
        let mut b = s.written().await;
        for outcome in b.outcomes() {
            match outcome {
                Ok(off) => {
                    prop_assert!(
                        last.is_none_or(|l| *off > l),
                        "offset {} after {:?}",
                        off,
                        last
                    );
                    last = Some(*off);
                    mine.push(Some(*off));
                }
                Err(AppendError::TooLarge { .. }) => mine.push(None),
                Err(e) => prop_assert!(false, "unexpected refusal {}", e),
            }
        }
        b.durable().await.unwrap();
    }
    for h in noise {
        h.await.unwrap();
    }
    let back = read_all(&log);
    for (w, off) in sent.iter().zip(&mine) {
        match off {
            Some(off) => {
                let r = &back[*off as usize];
                prop_assert!(same(r, w), "record at {} is not the one submitted", off);
            }
            None => prop_assert!(w.payload.len() >= 200),
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn pipelined_batches_keep_submission_order(
        batches in proptest::collection::vec(
            proptest::collection::vec(prop_oneof![8 => 0usize..150, 1 => 250usize..300], 0..60),
            1..30,
        ),
        singles in 0usize..300,
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(pipelined(batches, singles))?;
    }
}

/// The writer holds a batch's records until it answers the batch (the appenders drop them), so
/// a batch ends after 4 MiB of frames even when segment rolls empty its write buffer in
/// between. 12 MiB of 64 KiB segments is queued while the writer waits for a held sync inside
/// a roll; then the disk syncs only so many more times, too few for the whole queue. Each
/// 4 MiB batch is answered; before the bound counted the batch's own bytes, the buffer never
/// reached 4 MiB, the writer took the whole queue into one batch and nothing was answered
/// before the disk stalled again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_batch_ends_after_4_mib_even_when_segments_roll_inside_it() {
    let faulty = FaultyStorage::new(MemStorage::new());
    let cfg = LogConfig {
        segment_bytes: 64 << 10,
        max_bytes: 1 << 30,
        max_record_bytes: 4096,
        fsync: FsyncPolicy::Always,
        ..LogConfig::new("/b")
    };
    let (log, _) = Log::open_with_storage(cfg, faulty.clone()).unwrap();
    let faults = &faulty.faults;
    faults.hold_sync.store(true, Ordering::SeqCst);
    assert_eq!(log.append(rec(0, 10)).await.unwrap().offset, 0);
    while faults.held.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // 200 chunks of 15 records of 4 KB (one chunk each, about one segment roll each).
    let mut next = 1u64;
    let mut submitted = Vec::new();
    for _ in 0..200 {
        let records: Vec<NewRecord> = (next..next + 15).map(|i| rec(i, 4000)).collect();
        next += 15;
        submitted.push(log.submit_many(records).await);
    }
    // The writer is stuck in a roll inside the batch of chunk 0 or 1; 4 MiB is about 70
    // chunks, 70 rolls, 140 syncs (the old segment's, the new one's). Allow twice that.
    let syncs = faults.syncs.load(Ordering::SeqCst);
    faults.hold_from_sync.store(syncs + 280, Ordering::SeqCst);
    faults.hold_sync.store(false, Ordering::SeqCst);
    let mut submitted = submitted.into_iter();
    let first_two: Vec<_> = submitted.by_ref().take(2).collect();
    for batch in first_two {
        let answered = tokio::time::timeout(Duration::from_secs(20), batch.written()).await;
        if answered.is_err() {
            // Let the writer go on, so that the test fails instead of hanging in the drop.
            faults.hold_from_sync.store(0, Ordering::SeqCst);
        }
        let written =
            answered.expect("the batch in the writer was answered before the disk stalled again");
        assert!(written.outcomes().iter().all(|o| o.is_ok()));
    }
    faults.hold_from_sync.store(0, Ordering::SeqCst);
    let mut expected = 31u64;
    for batch in submitted {
        let written = batch.written().await;
        let offsets: Vec<u64> = written
            .outcomes()
            .iter()
            .map(|o| *o.as_ref().unwrap())
            .collect();
        assert_eq!(offsets, (expected..expected + 15).collect::<Vec<_>>());
        expected += 15;
    }
    assert_eq!(log.stats().next_offset, next);
}

/// The writer hands each chunk's emptied [`EncodedRecords`] back, and
/// [`Log::encoded_records`] gives them out again (the submitting thread then neither allocates
/// nor touches fresh pages per batch); the log keeps at most 4, of 16 to 1024 records and at
/// most 256 KiB of room, and gives the largest first.
#[tokio::test]
async fn emptied_encoded_records_come_back_for_the_next_batch() {
    let mem = MemStorage::new();
    let config = LogConfig {
        segment_bytes: 1 << 20,
        max_bytes: 16 << 20,
        ..small_config("/v")
    };
    let (log, _) = Log::open_with_storage(config, mem).unwrap();
    let batch = |room: usize, n: u64, size: usize| {
        let mut records = EncodedRecords::with_capacity(room, 0);
        for i in 0..n {
            records.push_record(&rec(i, size));
        }
        records
    };
    let append = |records: EncodedRecords| {
        let log = log.clone();
        async move {
            log.submit_encoded(records)
                .await
                .written()
                .await
                .durable()
                .await
                .unwrap();
        }
    };
    // Nothing kept yet: a new, empty one with the room asked for.
    let fresh = log.encoded_records(8, 64);
    assert!(fresh.is_empty() && fresh.capacity() >= 8 && fresh.bytes_capacity() >= 64);

    append(batch(100, 100, 20)).await;
    let reused = log.encoded_records(1, 0);
    assert!(
        reused.is_empty() && reused.capacity() >= 100 && reused.bytes_capacity() > 0,
        "the batch's own room comes back"
    );
    drop(reused);

    // Too few records' room (a single record's), too many, or too many bytes: not kept.
    append(batch(1, 1, 20)).await;
    log.append(rec(7, 20)).await.unwrap();
    append(batch(2000, 10, 20)).await;
    append(batch(32, 20, 20 << 10)).await;
    assert_eq!(log.encoded_records(0, 0).capacity(), 0, "nothing was kept");

    // At most four are kept, the largest given out first.
    for room in [32, 64, 48, 40, 200, 300] {
        append(batch(room, 5, 20)).await;
    }
    let rooms: Vec<usize> = (0..5)
        .map(|_| log.encoded_records(0, 0).capacity())
        .collect();
    assert_eq!(rooms, [64, 48, 40, 32, 0], "the first four kept, then none");
}
