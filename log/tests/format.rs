//! Freezes the on-disk format: checked-in sample segments of every version must read back field
//! by field, and the current encoder must reproduce the current version's sample byte for byte.
//! Any format change fails here; add a version (and keep reading the old ones) instead of
//! editing a sample.
//!
//! - `tests/data/v1/`: segment format version 1 (records without a destination), written by
//!   builds before destinations were stored; still read, and sealed when found as the tail.
//! - `tests/data/v2/`: the current version.
//!
//! Regenerate the current sample (only for a deliberate new format version):
//! `EDGE_LOG_WRITE_SAMPLE=1 cargo test -p edge-log --test format`

// Test code: unwrap/expect are fine here (clippy.toml intent); helpers are not #[test] fns.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use bytes::Bytes;
use edge_log::{Destination, Header, Log, LogConfig, NewRecord, Source};

const SAMPLE_V1: &str = "tests/data/v1/00000000000000000000.seg";
const SAMPLE: &str = "tests/data/v2/00000000000000000000.seg";

fn sample_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(SAMPLE)
}

fn sample_v1_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(SAMPLE_V1)
}

fn sample_records() -> Vec<NewRecord> {
    vec![
        NewRecord {
            timestamp_ms: 1_763_769_600_000,
            source: Source::Mqtt,
            topic: "sensors/gw1/temperature".into(),
            client_id: "thermo-7".into(),
            destination: Destination {
                topic: "sensor-temperature".into(),
                key: Some(Bytes::from_static(b"gw1")),
                partition: None,
            },
            headers: vec![
                Header {
                    key: "unit".into(),
                    value: Bytes::from_static(b"celsius"),
                },
                Header {
                    key: "bin".into(),
                    value: Bytes::from_static(&[0, 255, 1]),
                },
            ],
            payload: Bytes::from_static(b"{\"t\":21.5}"),
        },
        NewRecord {
            timestamp_ms: 1_763_769_600_001,
            source: Source::Nats,
            topic: "sensors.gw1.humidity".into(),
            client_id: "".into(),
            destination: Destination::topic("sensor-humidity"),
            headers: vec![],
            payload: Bytes::from_static(&[0xde, 0xad, 0xbe, 0xef]),
        },
        NewRecord {
            timestamp_ms: u64::MAX,
            source: Source::Mqtt,
            topic: "t".into(),
            client_id: "c".into(),
            destination: Destination {
                topic: "pinned".into(),
                key: Some(Bytes::new()),
                partition: Some(-1),
            },
            headers: vec![],
            payload: Bytes::new(),
        },
    ]
}

/// Generates a segment with the sample records through the public API (the helper that made
/// the checked-in file).
async fn generate(dir: &Path) -> Vec<u8> {
    let (log, _) = Log::open(LogConfig::new(dir)).unwrap();
    for r in sample_records() {
        log.append(r).await.unwrap().durable().await.unwrap();
    }
    log.close().await.unwrap();
    std::fs::read(dir.join("00000000000000000000.seg")).unwrap()
}

#[tokio::test]
async fn encoder_reproduces_the_checked_in_sample() {
    let dir = tempfile::tempdir().unwrap();
    let fresh = generate(dir.path()).await;
    if std::env::var_os("EDGE_LOG_WRITE_SAMPLE").is_some() {
        std::fs::write(sample_path(), &fresh).unwrap();
    }
    let frozen = std::fs::read(sample_path()).expect("checked-in sample segment");
    assert_eq!(
        fresh, frozen,
        "the encoder no longer writes format version 2 byte for byte"
    );
}

/// The header and first frame of a sample, spelled out; returns the bytes.
fn check_layout(path: &Path, version: u16) -> Vec<u8> {
    let frozen = std::fs::read(path).expect("checked-in sample segment");
    assert_eq!(&frozen[0..8], b"EDGESEG\0");
    assert_eq!(&frozen[8..10], &version.to_le_bytes());
    assert_eq!(&frozen[10..12], &[0, 0]);
    assert_eq!(&frozen[12..20], &0u64.to_le_bytes());
    assert_eq!(
        &frozen[20..24],
        &crc32c::crc32c(&frozen[0..20]).to_le_bytes()
    );
    // First frame: len, crc over body, body begins with the variant index and offset 0.
    let len = u32::from_le_bytes(frozen[24..28].try_into().unwrap()) as usize;
    let crc = u32::from_le_bytes(frozen[28..32].try_into().unwrap());
    assert_eq!(crc, crc32c::crc32c(&frozen[32..32 + len]));
    let variant = u8::try_from(version - 1).unwrap();
    assert_eq!(
        &frozen[32..34],
        &[variant, 0],
        "variant V{version}, offset 0"
    );
    frozen
}

/// Opens a copy of `frozen` as the only segment and reads every record back.
fn read_back(frozen: &[u8]) -> (tempfile::TempDir, Log, Vec<edge_log::Record>) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("00000000000000000000.seg"), frozen).unwrap();
    let (log, report) = Log::open(LogConfig::new(dir.path())).unwrap();
    assert!(report.truncated.is_none(), "{report}");
    assert_eq!(report.next_offset, 3);
    let mut c = log.cursor("t").unwrap();
    let got = c.try_read(10, usize::MAX).unwrap();
    assert_eq!(got.len(), 3);
    let want = sample_records();
    for (i, (r, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(r.offset, i as u64);
        assert_eq!(r.timestamp_ms, w.timestamp_ms);
        assert_eq!(r.source, w.source);
        assert_eq!(r.topic, *w.topic);
        assert_eq!(*r.client_id, *w.client_id);
        assert_eq!(r.headers, w.headers);
        assert_eq!(r.payload, w.payload);
    }
    assert_eq!(got[0].headers[1].value.as_ref(), &[0, 255, 1]);
    assert_eq!(got[2].timestamp_ms, u64::MAX);
    let total: usize = 24 + got.iter().map(|r| r.encoded_len()).sum::<usize>();
    assert_eq!(total, frozen.len());
    (dir, log, got)
}

#[tokio::test]
async fn checked_in_sample_reads_back_every_field() {
    let frozen = check_layout(&sample_path(), 2);
    let (_dir, _log, got) = read_back(&frozen);
    for (r, w) in got.iter().zip(sample_records()) {
        assert_eq!(r.destination.as_ref(), Some(&w.destination));
    }
}

/// A data directory written before destinations were stored: its records read back without
/// one, and the version 1 tail is sealed, so new records start a version 2 segment at the
/// next offset and the old file is never changed.
#[tokio::test]
async fn a_version_1_log_reads_back_and_new_records_go_to_a_new_segment() {
    let frozen = check_layout(&sample_v1_path(), 1);
    let (dir, log, got) = read_back(&frozen);
    assert!(got.iter().all(|r| r.destination.is_none()));
    let offset = log
        .append(sample_records().remove(0))
        .await
        .unwrap()
        .durable()
        .await
        .unwrap();
    assert_eq!(offset, 3);
    log.close().await.unwrap();
    let old = std::fs::read(dir.path().join("00000000000000000000.seg")).unwrap();
    assert_eq!(old, frozen, "the version 1 segment is left as it was");
    let new = std::fs::read(dir.path().join("00000000000000000003.seg")).unwrap();
    assert_eq!(&new[8..10], &2u16.to_le_bytes());
    let (log, report) = Log::open(LogConfig::new(dir.path())).unwrap();
    assert_eq!(report.next_offset, 4, "{report}");
    let mut c = log.cursor("t").unwrap();
    let all = c.try_read(10, usize::MAX).unwrap();
    assert_eq!(all.len(), 4);
    assert!(all[..3].iter().all(|r| r.destination.is_none()));
    assert_eq!(
        all[3].destination,
        Some(sample_records().remove(0).destination)
    );
}

/// Cursor files, spelled out: version 2 (two 32-byte copies 4 KiB apart, the newer sequence
/// number wins) as this build writes it, and version 1 (one 24-byte copy) as older builds
/// wrote it, which is still read.
#[tokio::test]
async fn cursor_files_of_both_versions_have_the_documented_layout() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(LogConfig::new(dir.path())).unwrap();
    for r in sample_records() {
        log.append(r).await.unwrap().durable().await.unwrap();
    }
    let mut c = log.cursor("bridge").unwrap();
    c.commit(2).await.unwrap();
    c.commit(3).await.unwrap();
    drop(c);
    log.close().await.unwrap();
    drop(log);
    let bytes = std::fs::read(dir.path().join("cursors/bridge.cur")).unwrap();
    assert_eq!(bytes.len(), 4096 + 32);
    let slot = |at: usize| {
        let s = &bytes[at..at + 32];
        assert_eq!(&s[0..8], b"EDGECUR\0");
        assert_eq!(&s[8..10], &2u16.to_le_bytes());
        assert_eq!(&s[10..12], &[0, 0]);
        assert_eq!(&s[28..32], &crc32c::crc32c(&s[0..28]).to_le_bytes());
        let word = |i: usize| u64::from_le_bytes(s[i..i + 8].try_into().unwrap());
        (word(12), word(20))
    };
    // Created with seq 0 and 1 (both at offset 0), then commits seq 2 (slot 0) and 3 (slot 1).
    assert_eq!(slot(0), (2, 2));
    assert_eq!(slot(4096), (3, 3));

    // Version 1: magic, version 1, zero, committed u64, crc32c of bytes 0..20.
    let mut v1 = Vec::new();
    v1.extend_from_slice(b"EDGECUR\0");
    v1.extend_from_slice(&1u16.to_le_bytes());
    v1.extend_from_slice(&[0, 0]);
    v1.extend_from_slice(&1u64.to_le_bytes());
    let crc = crc32c::crc32c(&v1);
    v1.extend_from_slice(&crc.to_le_bytes());
    std::fs::write(dir.path().join("cursors/old.cur"), &v1).unwrap();
    let (log, report) = Log::open(LogConfig::new(dir.path())).unwrap();
    assert!(report.cursors_damaged.is_empty(), "{report}");
    assert_eq!(log.cursor("old").unwrap().committed(), 1);
    assert_eq!(log.cursor("bridge").unwrap().committed(), 3);
}
