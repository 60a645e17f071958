//! Recovery under storage damage, on real files: damage in the middle of the tail segment keeps
//! every later record, damaged segment headers are rebuilt from the frames, a damaged last
//! frame's offset is never assigned again, and a payload that embeds a frame is never taken for
//! a record. Each case names what main did before (the regression it guards).

// Test code: unwrap/expect are fine here (clippy.toml intent); helpers are not #[test] fns.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};

use bytes::Bytes;
use common::{rec, same, small_config};
use edge_log::{Log, LogConfig, Record, format};

/// One segment holds everything (64 KiB), records of 50 bytes of payload.
fn one_segment(dir: &Path) -> LogConfig {
    LogConfig {
        segment_bytes: 64 << 10,
        max_bytes: 1 << 20,
        ..small_config(dir)
    }
}

/// Appends records `ids` (50-byte payloads) and waits until each is durable.
async fn append_durable(log: &Log, ids: std::ops::Range<u64>) {
    for i in ids {
        log.append(rec(i, 50))
            .await
            .unwrap()
            .durable()
            .await
            .unwrap();
    }
}

async fn write_and_close(cfg: &LogConfig, n: u64) {
    let (log, _) = Log::open(cfg.clone()).unwrap();
    append_durable(&log, 0..n).await;
    log.close().await.unwrap();
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

/// Byte range of every frame in a segment file.
fn frames(bytes: &[u8]) -> Vec<std::ops::Range<usize>> {
    let mut v = Vec::new();
    let mut pos = 24;
    while pos + 8 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        v.push(pos..pos + 8 + len);
        pos += 8 + len;
    }
    v
}

fn read_all(log: &Log) -> (Vec<Record>, u64) {
    let mut c = log.cursor("check").unwrap();
    let all = c.try_read(usize::MAX, usize::MAX).unwrap();
    let skipped = c.skipped();
    drop(c);
    log.remove_cursor("check").unwrap();
    (all, skipped)
}

/// The experiment and its relatives: one kind of damage a third of the way into the
/// tail segment. Main truncated the tail at the damage, dropping every later (acknowledged)
/// record; now only the records whose bytes were damaged are lost.
#[tokio::test]
async fn damage_in_the_middle_of_the_tail_keeps_every_later_record() {
    let n = 30u64;
    for kind in ["payload", "crc", "offset", "zeroed sector"] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = one_segment(dir.path());
        write_and_close(&cfg, n).await;
        let tail = segments(dir.path()).pop().unwrap();
        let mut bytes = std::fs::read(&tail).unwrap();
        let f = frames(&bytes);
        let victim = f[10].clone();
        let damaged = match kind {
            "payload" => victim.end - 3..victim.end - 2,
            "crc" => victim.start + 5..victim.start + 6,
            // The body's offset varint (after the variant byte): a discontinuity or garbage.
            "offset" => victim.start + 9..victim.start + 10,
            _ => victim.start + 7..victim.start + 7 + 512,
        };
        for b in &mut bytes[damaged.clone()] {
            *b = if kind == "zeroed sector" {
                0
            } else {
                *b ^ 0x5a
            };
        }
        std::fs::write(&tail, &bytes).unwrap();
        let lost: Vec<u64> = (0..n)
            .filter(|&i| {
                let r = &f[i as usize];
                r.start < damaged.end && damaged.start < r.end
            })
            .collect();
        assert!(!lost.is_empty() && lost.len() < 10, "{kind}: {lost:?}");

        let (log, report) = Log::open(cfg.clone()).unwrap();
        assert!(report.truncated.is_none(), "{kind}: {report}");
        assert_eq!(report.next_offset, n, "{kind}: {report}");
        assert_eq!(report.skipped.len(), 1, "{kind}: {report}");
        let s = &report.skipped[0];
        assert_eq!(
            s.offsets,
            lost[0]..lost[lost.len() - 1] + 1,
            "{kind}: {report}"
        );
        assert_eq!(s.segment, tail);
        assert!(report.to_string().contains("SKIPPED"), "{report}");
        assert_eq!(report.records_skipped(), lost.len() as u64);
        assert_eq!(log.stats().recovery_skipped, lost.len() as u64);
        let (all, skipped) = read_all(&log);
        let offsets: Vec<u64> = all.iter().map(|r| r.offset).collect();
        let want: Vec<u64> = (0..n).filter(|o| !lost.contains(o)).collect();
        assert_eq!(offsets, want, "{kind}");
        assert!(all.iter().all(|r| same(r, &rec(r.offset, 50))));
        assert_eq!(skipped, lost.len() as u64);
        // Appends continue after the last kept record, in a new segment; the damaged one is
        // sealed as it is.
        let a = log.append(rec(n, 50)).await.unwrap();
        assert_eq!(a.durable().await.unwrap(), n);
        assert_eq!(segments(dir.path()).len(), 2);
        log.close().await.unwrap();
        drop(log);
        let (log, again) = Log::open(cfg).unwrap();
        assert!(
            again.skipped.is_empty() && again.truncated.is_none(),
            "{again}"
        );
        assert_eq!(again.next_offset, n + 1);
        assert_eq!(read_all(&log).0.len(), want.len() + 1);
    }
}

/// A damaged length field alone: the record's body still decodes with its checksum, so
/// recovery writes the true length back and nothing is lost (main: truncated the rest).
#[tokio::test]
async fn a_damaged_length_field_in_the_tail_is_repaired() {
    let n = 30u64;
    let dir = tempfile::tempdir().unwrap();
    let cfg = one_segment(dir.path());
    write_and_close(&cfg, n).await;
    let tail = segments(dir.path()).pop().unwrap();
    let mut bytes = std::fs::read(&tail).unwrap();
    let victim = frames(&bytes)[10].clone();
    // High byte of the length: the frame now claims to run past the end of the file.
    bytes[victim.start + 2] ^= 0x7f;
    std::fs::write(&tail, &bytes).unwrap();
    let (log, report) = Log::open(cfg.clone()).unwrap();
    assert_eq!(report.lengths_repaired, vec![10], "{report}");
    assert!(report.skipped.is_empty() && report.truncated.is_none());
    assert_eq!(report.next_offset, n);
    assert_eq!(read_all(&log).0.len() as u64, n);
    drop(log);
    let repaired = std::fs::read(&tail).unwrap();
    assert_eq!(repaired[victim.clone()], {
        let mut orig = bytes.clone();
        orig[victim.start + 2] ^= 0x7f;
        orig[victim].to_vec()
    });
}

/// A damaged tail header: main refused to open the log (the broker could not start); now the
/// header is rebuilt from the file name and the frames, and nothing is lost.
#[tokio::test]
async fn a_damaged_tail_header_is_rebuilt_from_the_frames() {
    for kind in ["magic", "crc", "base"] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = one_segment(dir.path());
        write_and_close(&cfg, 12).await;
        let tail = segments(dir.path()).pop().unwrap();
        let mut bytes = std::fs::read(&tail).unwrap();
        match kind {
            "magic" => bytes[1] ^= 0xff,
            "crc" => bytes[21] ^= 0xff,
            // A valid header naming another base offset.
            _ => bytes[..24].copy_from_slice(&format::segment_header(777)),
        }
        std::fs::write(&tail, &bytes).unwrap();
        let (log, report) = Log::open(cfg.clone()).unwrap();
        assert_eq!(report.headers_repaired.len(), 1, "{kind}: {report}");
        assert_eq!(report.headers_repaired[0].segment, tail);
        assert_eq!(report.next_offset, 12, "{kind}: {report}");
        assert!(report.truncated.is_none(), "{kind}: {report}");
        assert_eq!(read_all(&log).0.len(), 12);
        assert_eq!(log.append(rec(12, 50)).await.unwrap().offset, 12);
        log.close().await.unwrap();
        drop(log);
        let (_, again) = Log::open(cfg).unwrap();
        assert!(again.headers_repaired.is_empty(), "{again}");
    }
}

/// A damaged header of a sealed segment: main's readers skipped the whole segment; now its
/// records are read (the frames carry their offsets), and the next open rebuilds the header.
#[tokio::test]
async fn a_damaged_sealed_header_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_config(dir.path());
    let (log, _) = Log::open(cfg.clone()).unwrap();
    append_durable(&log, 0..40).await;
    let segs = segments(dir.path());
    assert!(segs.len() >= 3);
    let mut bytes = std::fs::read(&segs[1]).unwrap();
    bytes[3] ^= 0xff;
    std::fs::write(&segs[1], &bytes).unwrap();
    // While running: the reader reads through the damaged header.
    let (all, skipped) = read_all(&log);
    assert_eq!(all.len(), 40);
    assert_eq!(skipped, 0);
    log.close().await.unwrap();
    drop(log);
    // At the next open the header is rebuilt.
    let (log, report) = Log::open(cfg).unwrap();
    assert_eq!(report.headers_repaired.len(), 1, "{report}");
    assert_eq!(report.headers_repaired[0].segment, segs[1]);
    assert!(report.to_string().contains("REPAIRED header"));
    let (all, _) = read_all(&log);
    assert_eq!(
        all.iter().map(|r| r.offset).collect::<Vec<_>>(),
        (0..40).collect::<Vec<_>>()
    );
    let head = std::fs::read(&segs[1]).unwrap();
    let base: u64 = segs[1]
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(head[..24], format::segment_header(base));
}

/// A flipped byte in the LAST record of the tail: nothing valid follows, so it is cut; but the
/// record was durable and a reader had forwarded it, so its offset must never name another
/// record (main reused it: upstream, edge-node + edge-offset would then name two records).
#[tokio::test]
async fn a_damaged_last_record_is_cut_and_its_offset_never_reused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = one_segment(dir.path());
    let (log, _) = Log::open(cfg.clone()).unwrap();
    let mut c = log.cursor("bridge").unwrap();
    append_durable(&log, 0..10).await;
    let seen = c.try_read(100, usize::MAX).unwrap();
    assert_eq!(seen.last().unwrap().offset, 9, "forwarded up to offset 9");
    c.commit(5).await.unwrap();
    drop(c);
    log.close().await.unwrap();
    drop(log);
    let tail = segments(dir.path()).pop().unwrap();
    let mut bytes = std::fs::read(&tail).unwrap();
    let last = frames(&bytes).pop().unwrap();
    bytes[last.end - 4] ^= 0x01;
    std::fs::write(&tail, &bytes).unwrap();
    let (log, report) = Log::open(cfg).unwrap();
    let t = report.truncated.clone().unwrap();
    assert_eq!(t.offsets_retired, 1, "{report}");
    assert_eq!(report.next_offset, 10, "{report}");
    assert!(report.to_string().contains("retired"));
    let a = log.append(rec(100, 50)).await.unwrap();
    assert_eq!(a.durable().await.unwrap(), 10, "offset 9 is never reused");
    let mut c = log.cursor("bridge").unwrap();
    let got = c.try_read(100, usize::MAX).unwrap();
    assert_eq!(
        got.iter().map(|r| r.offset).collect::<Vec<_>>(),
        vec![5, 6, 7, 8, 10]
    );
    assert_eq!(c.skipped(), 1);
    assert!(same(got.last().unwrap(), &rec(100, 50)));
}

/// Resynchronising after damage must not take a frame embedded in a damaged (or torn) record's
/// payload for a record: a device could otherwise plant a record with any destination.
#[tokio::test]
async fn a_payload_that_embeds_a_frame_is_never_taken_for_a_record() {
    for torn in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LogConfig {
            max_record_bytes: 4096,
            ..one_segment(dir.path())
        };
        let (log, _) = Log::open(cfg.clone()).unwrap();
        append_durable(&log, 0..5).await;
        // Record 5 carries a valid frame claiming offset 6 to a topic of the device's choice.
        let mut forged = rec(6, 10);
        forged.destination = edge_log::Destination::topic("forged");
        let mut embedded = Vec::new();
        format::encode_frame(&format::body_ref(6, &forged), &mut embedded).unwrap();
        let mut carrier = rec(5, 0);
        let mut payload = vec![b'x'; 100];
        payload.extend_from_slice(&embedded);
        payload.extend_from_slice(&[b'y'; 100]);
        carrier.payload = Bytes::from(payload);
        log.append(carrier).await.unwrap().durable().await.unwrap();
        append_durable(&log, 6..9).await;
        log.close().await.unwrap();
        drop(log);
        let tail = segments(dir.path()).pop().unwrap();
        let mut bytes = std::fs::read(&tail).unwrap();
        let carrier_at = frames(&bytes)[5].clone();
        if torn {
            // Cut inside the carrier, just after the embedded frame.
            bytes.truncate(carrier_at.start + 8 + 60 + 100 + embedded.len());
        } else {
            bytes[carrier_at.start + 8 + 30] ^= 0xff;
        }
        std::fs::write(&tail, &bytes).unwrap();
        let (log, report) = Log::open(cfg).unwrap();
        let (all, _) = read_all(&log);
        assert!(
            all.iter()
                .all(|r| &*r.destination.as_ref().unwrap().topic != "forged"),
            "torn={torn}: a forged record was read: {report}"
        );
        let offsets: Vec<u64> = all.iter().map(|r| r.offset).collect();
        if torn {
            assert_eq!(offsets, vec![0, 1, 2, 3, 4], "{report}");
        } else {
            assert_eq!(offsets, vec![0, 1, 2, 3, 4, 6, 7, 8], "{report}");
        }
    }
}

/// A cursor file with no valid copy: main refused to open the log (the broker exited 1).
/// Now the cursor resumes at the oldest retained offset (resends, never skips), the report
/// says so, and the file is rewritten.
#[tokio::test]
async fn a_corrupted_cursor_file_does_not_stop_open_and_the_cursor_resends() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_config(dir.path());
    let (log, _) = Log::open(cfg.clone()).unwrap();
    let mut c = log.cursor("bridge").unwrap();
    append_durable(&log, 0..40).await;
    c.try_read(100, usize::MAX).unwrap();
    c.commit(30).await.unwrap();
    drop(c);
    log.close().await.unwrap();
    drop(log);
    let file = dir.path().join("cursors/bridge.cur");
    let mut bytes = std::fs::read(&file).unwrap();
    bytes.iter_mut().for_each(|b| *b ^= 0xa5);
    std::fs::write(&file, &bytes).unwrap();

    let (log, report) = Log::open(cfg.clone()).unwrap();
    assert_eq!(report.cursors_damaged.len(), 1, "{report}");
    let damaged = &report.cursors_damaged[0];
    assert_eq!(damaged.name, "bridge");
    assert_eq!(damaged.resumed_at, report.oldest_offset);
    assert!(damaged.resumed_at <= 30, "never skips forward: {report}");
    assert!(report.to_string().contains("DAMAGED cursor"));
    let mut c = log.cursor("bridge").unwrap();
    assert_eq!(c.committed(), report.oldest_offset);
    let got = c.try_read(100, usize::MAX).unwrap();
    assert_eq!(got.first().unwrap().offset, report.oldest_offset);
    assert_eq!(got.last().unwrap().offset, 39);
    drop(c);
    log.close().await.unwrap();
    drop(log);
    let (_, again) = Log::open(cfg).unwrap();
    assert!(again.cursors_damaged.is_empty(), "rewritten: {again}");
}

/// The newest copy of a cursor file damaged (a torn commit): the previous commit is used, so
/// the cursor resends a little and never skips forward.
#[tokio::test]
async fn a_damaged_newest_cursor_copy_falls_back_to_the_previous_commit() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = one_segment(dir.path());
    let (log, _) = Log::open(cfg.clone()).unwrap();
    let mut c = log.cursor("bridge").unwrap();
    append_durable(&log, 0..30).await;
    c.commit(10).await.unwrap();
    c.commit(20).await.unwrap();
    drop(c);
    log.close().await.unwrap();
    drop(log);
    let file = dir.path().join("cursors/bridge.cur");
    let mut bytes = std::fs::read(&file).unwrap();
    let slot = |b: &[u8]| format::parse_cursor_slot(b).unwrap().committed;
    let newest = if slot(&bytes[..32]) == 20 { 0 } else { 4096 };
    assert_eq!(slot(&bytes[newest..newest + 32]), 20);
    bytes[newest + 22] ^= 0x01;
    std::fs::write(&file, &bytes).unwrap();
    let (log, report) = Log::open(cfg).unwrap();
    assert_eq!(report.cursor_copies_damaged, 1, "{report}");
    assert!(report.cursors_damaged.is_empty());
    assert_eq!(log.cursor("bridge").unwrap().committed(), 10);
}
