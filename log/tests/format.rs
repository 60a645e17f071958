//! Freezes the on-disk format: a checked-in sample segment must read back field by field, and
//! the current encoder must reproduce it byte for byte. Any format change fails here; bump
//! FORMAT_VERSION (and keep reading version 1) instead of editing the sample.
//!
//! Regenerate (only for a deliberate new format version):
//! `EDGE_LOG_WRITE_SAMPLE=1 cargo test -p edge-log --test format`

// Test code: unwrap/expect are fine here (clippy.toml intent); helpers are not #[test] fns.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use bytes::Bytes;
use edge_log::{Header, Log, LogConfig, NewRecord, Source};

const SAMPLE: &str = "tests/data/00000000000000000000.seg";

fn sample_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(SAMPLE)
}

fn sample_records() -> Vec<NewRecord> {
    vec![
        NewRecord {
            timestamp_ms: 1_763_769_600_000,
            source: Source::Mqtt,
            topic: "sensors/gw1/temperature".into(),
            client_id: "thermo-7".into(),
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
            headers: vec![],
            payload: Bytes::from_static(&[0xde, 0xad, 0xbe, 0xef]),
        },
        NewRecord {
            timestamp_ms: u64::MAX,
            source: Source::Mqtt,
            topic: "t".into(),
            client_id: "c".into(),
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
        "the encoder no longer writes format version 1 byte for byte"
    );
}

#[tokio::test]
async fn checked_in_sample_reads_back_every_field() {
    let frozen = std::fs::read(sample_path()).expect("checked-in sample segment");
    // Header bytes, spelled out.
    assert_eq!(&frozen[0..8], b"EDGESEG\0");
    assert_eq!(&frozen[8..10], &1u16.to_le_bytes());
    assert_eq!(&frozen[10..12], &[0, 0]);
    assert_eq!(&frozen[12..20], &0u64.to_le_bytes());
    assert_eq!(
        &frozen[20..24],
        &crc32c::crc32c(&frozen[0..20]).to_le_bytes()
    );
    // First frame: len, crc over body, body begins with variant 0 and offset 0.
    let len = u32::from_le_bytes(frozen[24..28].try_into().unwrap()) as usize;
    let crc = u32::from_le_bytes(frozen[28..32].try_into().unwrap());
    assert_eq!(crc, crc32c::crc32c(&frozen[32..32 + len]));
    assert_eq!(&frozen[32..34], &[0, 0], "variant V1, offset 0");

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("00000000000000000000.seg"), &frozen).unwrap();
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
        assert_eq!(r.topic, w.topic);
        assert_eq!(*r.client_id, *w.client_id);
        assert_eq!(r.headers, w.headers);
        assert_eq!(r.payload, w.payload);
    }
    assert_eq!(got[0].headers[1].value.as_ref(), &[0, 255, 1]);
    assert_eq!(got[2].timestamp_ms, u64::MAX);
    let total: usize = 24 + got.iter().map(|r| r.encoded_len()).sum::<usize>();
    assert_eq!(total, frozen.len());
}
