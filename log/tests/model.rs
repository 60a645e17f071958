//! Model check: random appends (concurrent), reads, commits, power cuts and tail truncation
//! against a plain Vec model. Invariants: every record reported durable is read back intact
//! and in order after any crash; offsets are dense; readers never see non-durable records.
//! More cases: `PROPTEST_CASES=500 cargo test -p edge-log --test model`.

// Test code: unwrap/expect are fine here (clippy.toml intent); helpers are not #[test] fns.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{rec, same};
use edge_log::testing::{CrashMode, MemStorage};
use edge_log::{FsyncPolicy, Log, LogConfig, NewRecord, WhenFull};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Append {
        n: usize,
        len: usize,
        wait: bool,
    },
    /// One ordered batch; lengths above ~200 make records over max_record_bytes (refused alone).
    AppendMany {
        lens: Vec<usize>,
        wait: bool,
    },
    Read {
        max: usize,
    },
    Commit,
    Crash(CrashMode),
    TruncateTail {
        bytes: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1usize..8, 0usize..120, any::<bool>()).prop_map(|(n, len, wait)| Op::Append { n, len, wait }),
        2 => (proptest::collection::vec(prop_oneof![6 => 0usize..120, 1 => 250usize..300], 0..12), any::<bool>())
            .prop_map(|(lens, wait)| Op::AppendMany { lens, wait }),
        2 => (1usize..20).prop_map(|max| Op::Read { max }),
        1 => Just(Op::Commit),
        1 => prop_oneof![
            Just(CrashMode::DropUnsynced),
            (1usize..64).prop_map(CrashMode::TornTail),
            Just(CrashMode::ZeroFill),
        ].prop_map(Op::Crash),
        1 => (1u64..80).prop_map(|bytes| Op::TruncateTail { bytes }),
    ]
}

/// How the log under test writes and syncs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `fsync = always`.
    Always,
    /// Interval(1h): only segment rolls sync, so crashes lose a lot: the hard case.
    Interval,
    /// Interval(1h) with `sector_writes` on a fake file system with direct I/O: batches are
    /// gathered in memory until a roll or close writes and syncs them.
    IntervalSectors,
}

fn mode() -> impl Strategy<Value = Mode> {
    prop_oneof![
        Just(Mode::Always),
        Just(Mode::Interval),
        Just(Mode::IntervalSectors)
    ]
}

fn config(mode: Mode) -> LogConfig {
    LogConfig {
        segment_bytes: 512,
        max_bytes: 64 << 20,
        fsync: if mode == Mode::Always {
            FsyncPolicy::Always
        } else {
            FsyncPolicy::Interval(Duration::from_secs(3600))
        },
        when_full: WhenFull::Block,
        max_record_bytes: 256,
        sector_writes: mode == Mode::IntervalSectors,
        ..LogConfig::new("/model")
    }
}

fn tail_segment(mem: &MemStorage) -> PathBuf {
    use edge_log::Storage;
    let mut names: Vec<String> = mem
        .list(Path::new("/model"))
        .unwrap()
        .into_iter()
        .filter(|n| n.ends_with(".seg"))
        .collect();
    names.sort();
    Path::new("/model").join(names.last().unwrap())
}

struct Model {
    /// Every record appended and not lost, by offset.
    /// None: an offset skipped at recovery because a cursor had committed past a cut.
    records: Vec<Option<NewRecord>>,
    /// Offsets below this were reported durable and must survive.
    durable: u64,
    committed: u64,
    position: u64,
}

async fn run(ops: Vec<Op>, mode: Mode) -> Result<(), TestCaseError> {
    let always = mode == Mode::Always;
    let mem = if mode == Mode::IntervalSectors {
        MemStorage::with_direct_io()
    } else {
        MemStorage::new()
    };
    let cfg = config(mode);
    let (mut log, _) = Log::open_with_storage(cfg.clone(), mem.clone()).unwrap();
    let mut cursor = log.cursor("m").unwrap();
    let mut m = Model {
        records: Vec::new(),
        durable: 0,
        committed: 0,
        position: 0,
    };
    let mut id = 0u64;
    for op in ops {
        match op {
            Op::Append { n, len, wait } => {
                let mut hs = Vec::new();
                for _ in 0..n {
                    let r = rec(id, len);
                    id += 1;
                    let log = log.clone();
                    hs.push(tokio::spawn(async move {
                        let a = log.append(r.clone()).await.unwrap();
                        let off = a.offset;
                        let durable = if wait && always {
                            Some(a.durable().await.unwrap())
                        } else {
                            None
                        };
                        (off, r, durable)
                    }));
                }
                let mut got = Vec::new();
                for h in hs {
                    got.push(h.await.unwrap());
                }
                got.sort_by_key(|g| g.0);
                for (off, r, durable) in got {
                    prop_assert_eq!(off, m.records.len() as u64, "offsets must be dense");
                    m.records.push(Some(r));
                    if let Some(d) = durable {
                        m.durable = m.durable.max(d + 1);
                    }
                }
                m.durable = m.durable.max(log.durable_end());
            }
            Op::AppendMany { lens, wait } => {
                let records: Vec<NewRecord> = lens
                    .iter()
                    .map(|&len| {
                        id += 1;
                        rec(id - 1, len)
                    })
                    .collect();
                let mut batch = log.append_many(records.clone()).await;
                prop_assert_eq!(batch.outcomes().len(), records.len());
                let mut last = None;
                for (r, outcome) in records.iter().zip(batch.outcomes()) {
                    match outcome {
                        Ok(off) => {
                            prop_assert_eq!(
                                *off,
                                m.records.len() as u64,
                                "batch offsets must be dense and in order"
                            );
                            m.records.push(Some(r.clone()));
                            last = Some(*off);
                        }
                        Err(edge_log::AppendError::TooLarge { .. }) => {
                            prop_assert!(r.payload.len() >= 200, "refused a record that fits");
                        }
                        Err(e) => prop_assert!(false, "unexpected refusal: {}", e),
                    }
                }
                if wait && always {
                    batch.durable().await.unwrap();
                    if let Some(last) = last {
                        prop_assert!(log.durable_end() > last);
                        m.durable = m.durable.max(last + 1);
                    }
                }
                m.durable = m.durable.max(log.durable_end());
            }
            Op::Read { max } => {
                let end = log.durable_end();
                m.durable = m.durable.max(end);
                let got = cursor.try_read(max, usize::MAX).unwrap();
                for r in &got {
                    prop_assert_eq!(r.offset, m.position);
                    prop_assert!(r.offset < end, "reader saw non-durable offset {}", r.offset);
                    prop_assert!(
                        m.records[r.offset as usize]
                            .as_ref()
                            .is_some_and(|w| same(r, w))
                    );
                    m.position += 1;
                }
                prop_assert_eq!(
                    got.len(),
                    max.min(end.saturating_sub(m.position - got.len() as u64) as usize)
                );
            }
            Op::Commit => {
                cursor.commit(m.position).await.unwrap();
                m.committed = m.committed.max(m.position);
            }
            Op::Crash(_) | Op::TruncateTail { .. } => {
                m.durable = m.durable.max(log.durable_end());
                let mode = match op {
                    Op::Crash(mode) => mode,
                    _ => CrashMode::DropUnsynced,
                };
                mem.crash(mode);
                drop(cursor);
                drop(log);
                let mut must_keep = m.durable;
                if let Op::TruncateTail { bytes } = op {
                    let tail = tail_segment(&mem);
                    let base: u64 = tail.file_stem().unwrap().to_str().unwrap().parse().unwrap();
                    // Cut the frames' end, not zeros after it (with `sector_writes` the
                    // segment is zero-filled ahead of the writer).
                    let data = mem.contents(&tail).unwrap();
                    let len = data.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1) as u64;
                    let cut = len.saturating_sub(bytes).max(24);
                    mem.modify(&tail, |d| d.truncate(cut as usize)).unwrap();
                    // Records of the tail segment whose frame ends at or before the cut survive.
                    let mut end = 24u64;
                    let mut keep = base;
                    for (i, r) in m.records.iter().enumerate().skip(base as usize) {
                        let Some(r) = r else { break };
                        let rr = edge_log::Record {
                            offset: i as u64,
                            timestamp_ms: r.timestamp_ms,
                            source: r.source,
                            topic: (*r.topic).into(),
                            client_id: (*r.client_id).into(),
                            destination: Some(r.destination.clone()),
                            headers: r.headers.clone(),
                            payload: r.payload.clone(),
                        };
                        end += rr.encoded_len() as u64;
                        if end > cut {
                            break;
                        }
                        keep = i as u64 + 1;
                    }
                    // Cutting durable bytes loses exactly the frames past the cut.
                    // A cursor committed past the cut makes the log skip ahead to its position.
                    must_keep = keep.max(m.committed);
                }
                let (l, report) = Log::open_with_storage(cfg.clone(), mem.clone()).unwrap();
                log = l;
                let next = report.next_offset;
                prop_assert!(
                    next >= must_keep,
                    "lost durable records: next {} < durable {} ({})",
                    next,
                    must_keep,
                    report
                );
                if matches!(op, Op::TruncateTail { .. }) {
                    prop_assert_eq!(
                        next,
                        must_keep,
                        "truncation must keep every whole frame: {}",
                        report
                    );
                }
                prop_assert!(
                    next <= (m.records.len() as u64).max(m.committed),
                    "invented records: {}",
                    report
                );
                m.records.truncate(next as usize);
                m.records.resize(next as usize, None);
                m.durable = next;
                cursor = log.cursor("m").unwrap();
                prop_assert_eq!(
                    cursor.committed(),
                    m.committed,
                    "committed position must survive"
                );
                m.position = m.committed;
                // Everything retained reads back intact and dense.
                let mut check = log.cursor("check").unwrap();
                let oldest = log.stats().oldest_offset;
                prop_assert!(
                    oldest <= m.committed,
                    "retention deleted uncommitted data: oldest {}",
                    oldest
                );
                let all = check.try_read(usize::MAX, usize::MAX).unwrap();
                let expected = m.records[check.committed() as usize..]
                    .iter()
                    .flatten()
                    .count();
                prop_assert_eq!(all.len(), expected);
                for r in &all {
                    prop_assert!(
                        m.records[r.offset as usize]
                            .as_ref()
                            .is_some_and(|w| same(r, w)),
                        "record {} differs",
                        r.offset
                    );
                }
                drop(check);
                log.remove_cursor("check").unwrap();
            }
        }
    }
    Ok(())
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(128)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]
    #[test]
    fn log_matches_model(ops in proptest::collection::vec(op(), 1..40), mode in mode()) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(run(ops, mode))?;
    }
}
