//! Every loader of saved MQTT state against hostile bytes (like the codecs' fuzz tests; the
//! cargo-fuzz target `state_load` runs the same for longer): arbitrary files, bit flips,
//! truncations and huge length fields in journal generations and in the legacy snapshot
//! files. A load never panics, never fails the start, keeps what it can read, and moves
//! what it cannot read aside instead of deleting it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use edge_broker::state::file::{FileHeader, HEADER_LEN};
use edge_broker::state::{LoadReport, StateModel, replay};
use edge_log::Storage;
use edge_log::testing::MemStorage;
use proptest::prelude::*;

fn data(rel: &str) -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)).unwrap()
}

fn journal_sample() -> Vec<u8> {
    data("tests/data/state/00000000000000000001.journal")
}

const JOURNAL: &str = "00000000000000000001.journal";

/// Loads a directory holding `files`; checks what must hold for any input.
fn load(files: &[(&str, Vec<u8>)]) -> (StateModel, LoadReport, MemStorage) {
    let storage = MemStorage::default();
    let dir = PathBuf::from("/state");
    storage.create_dir_all(&dir).unwrap();
    for (name, bytes) in files {
        let f = storage.create(&dir.join(name)).unwrap();
        edge_log::storage::write_all_at(f.as_ref(), bytes, 0).unwrap();
    }
    let (model, report) = replay::load(&storage, &dir);
    for q in &report.quarantined {
        let moved = q.moved_to.as_ref().expect("moved aside");
        let original = files
            .iter()
            .find(|(n, _)| dir.join(n) == q.path)
            .map(|(_, b)| b.clone())
            .unwrap();
        assert_eq!(
            storage.contents(moved),
            Some(original),
            "a quarantined file keeps its bytes"
        );
        assert!(storage.contents(&q.path).is_none());
        assert!(!q.why.is_empty());
    }
    (model, report, storage)
}

fn flip(mut bytes: Vec<u8>, flips: &[(usize, u8)]) -> Vec<u8> {
    for &(at, bit) in flips {
        if !bytes.is_empty() {
            let i = at % bytes.len();
            bytes[i] ^= 1 << (bit % 8);
        }
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_journal_files_never_stop_a_load(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let (_, report, _) = load(&[(JOURNAL, bytes)]);
        prop_assert!(report.next_generation >= 2);
    }

    #[test]
    fn arbitrary_bytes_after_a_valid_header_are_a_torn_tail_at_worst(
        body in prop::collection::vec(any::<u8>(), 0..2048),
    ) {
        let mut bytes = FileHeader { generation: 1, incarnation: 9 }.encode().to_vec();
        bytes.extend(body);
        let (_, report, _) = load(&[(JOURNAL, bytes)]);
        prop_assert!(report.quarantined.is_empty(), "{:?}", report);
        prop_assert_eq!(report.generations, vec![1]);
    }

    #[test]
    fn bit_flips_and_truncations_of_the_journal_sample(
        flips in prop::collection::vec((any::<usize>(), any::<u8>()), 1..4),
        cut in any::<usize>(),
    ) {
        let sample = journal_sample();
        let mut bytes = flip(sample.clone(), &flips);
        bytes.truncate(cut % (sample.len() + 1));
        let (model, report, _) = load(&[(JOURNAL, bytes.clone())]);
        if bytes.len() >= HEADER_LEN && FileHeader::decode(&bytes).is_ok() {
            prop_assert!(report.quarantined.is_empty());
        } else {
            prop_assert_eq!(report.quarantined.len(), 1);
            prop_assert!(model.sessions.is_empty() && model.retained.is_empty());
        }
    }

    #[test]
    fn a_damaged_older_generation_does_not_matter_once_a_newer_one_has_a_checkpoint(
        flips in prop::collection::vec((any::<usize>(), any::<u8>()), 1..3),
    ) {
        let sample = journal_sample();
        let body = sample.len() - HEADER_LEN;
        let flips: Vec<(usize, u8)> = flips.iter().map(|&(at, bit)| (HEADER_LEN + at % body, bit)).collect();
        let mut newer = FileHeader { generation: 2, incarnation: 1 }.encode().to_vec();
        newer.extend_from_slice(&sample[HEADER_LEN..]);
        let (_, report, _) = load(&[(JOURNAL, flip(sample, &flips)), ("00000000000000000002.journal", newer)]);
        // The newer generation carries the checkpoint: the older one is not even needed.
        prop_assert_eq!(report.generations, vec![2]);
    }

    #[test]
    fn arbitrary_and_damaged_legacy_files_are_moved_aside_or_loaded(
        which in 0..2usize,
        flips in prop::collection::vec((any::<usize>(), any::<u8>()), 0..3),
        cut in any::<usize>(),
        garbage in prop::collection::vec(any::<u8>(), 0..256),
        use_garbage in any::<bool>(),
    ) {
        let name = ["sessions.bin", "retained.bin"][which];
        let bytes = if use_garbage {
            garbage
        } else {
            let sample = data(&format!("tests/data/legacy/{name}"));
            let mut bytes = flip(sample.clone(), &flips);
            if cut % 3 == 0 {
                bytes.truncate(cut % (sample.len() + 1));
            }
            bytes
        };
        let (model, report, _) = load(&[(name, bytes)]);
        let loaded = !(model.sessions.is_empty() && model.retained.is_empty());
        prop_assert!(loaded != (report.quarantined.len() == 1), "{:?}", report);
    }
}

#[test]
fn huge_length_fields_are_checked_against_the_file_before_allocating() {
    // A frame claiming 4 GiB in a file of a few bytes.
    let mut bytes = FileHeader {
        generation: 1,
        incarnation: 1,
    }
    .encode()
    .to_vec();
    bytes.extend_from_slice(&u32::MAX.to_le_bytes());
    bytes.extend_from_slice(&[0; 12]);
    let (_, report, _) = load(&[(JOURNAL, bytes)]);
    let torn = report.torn.expect("cut as a torn tail");
    assert!(torn.why.contains("past the end of the file"), "{torn:?}");

    // A legacy file whose header claims 2^64-1 body bytes.
    let mut legacy = data("tests/data/legacy/sessions.bin");
    legacy[12..20].copy_from_slice(&u64::MAX.to_le_bytes());
    let (model, report, _) = load(&[("sessions.bin", legacy)]);
    assert!(model.sessions.is_empty());
    assert!(report.quarantined[0].why.contains("length"), "{report:?}");

    // A legacy body whose vector length prefix claims billions of sessions.
    let mut body = vec![0xff, 0xff, 0xff, 0xff, 0x0f];
    body.extend_from_slice(&[0; 8]);
    let mut legacy = b"EBSESS01".to_vec();
    legacy.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    legacy.extend_from_slice(&(body.len() as u64).to_le_bytes());
    legacy.extend_from_slice(&body);
    let (_, report, _) = load(&[("sessions.bin", legacy)]);
    assert!(report.quarantined[0].why.contains("decode"), "{report:?}");
}

#[test]
fn a_journal_of_another_version_is_moved_aside_not_misread() {
    let mut bytes = journal_sample();
    bytes[8] = 2; // format version 2: a newer build wrote it
    let crc = crc32c::crc32c(&bytes[..28]);
    bytes[28..32].copy_from_slice(&crc.to_le_bytes());
    let (model, report, storage) = load(&[(JOURNAL, bytes)]);
    assert!(model.sessions.is_empty());
    assert_eq!(report.quarantined.len(), 1);
    assert!(report.quarantined[0].why.contains("version"), "{report:?}");
    let moved = report.quarantined[0].moved_to.as_ref().unwrap();
    let name = moved.file_name().unwrap().to_str().unwrap();
    assert!(
        name.starts_with("00000000000000000001.journal.damaged-"),
        "{name}"
    );
    assert_eq!(
        report.next_generation, 2,
        "its generation number is not reused"
    );
    assert!(storage.list(Path::new("/state")).unwrap().len() == 1);
}

#[test]
fn a_damaged_older_generation_is_replayed_up_to_the_damage_and_moved_aside() {
    let mut older = journal_sample();
    let last = older.len() - 3;
    older[last] ^= 0x40; // in the last frame, after the checkpoint
    let newer = FileHeader {
        generation: 2,
        incarnation: 1,
    }
    .encode()
    .to_vec();
    let (model, report, _) = load(&[(JOURNAL, older), ("00000000000000000002.journal", newer)]);
    assert_eq!(report.generations, vec![1, 2]);
    assert_eq!(report.quarantined.len(), 1, "{report:?}");
    assert!(report.quarantined[0].why.contains("checksum"), "{report:?}");
    assert!(report.torn.is_none());
    assert_eq!(
        model.sessions.keys().collect::<Vec<_>>(),
        ["imaged"],
        "what the checkpoint holds survives; the damaged frame's changes do not"
    );
}
