//! Power cuts at random points, at scale, on the `MemStorage` power-cut model (a fake: a real
//! disk cannot lose its page cache on demand inside a test; `scripts/power-cut-loop.sh` does
//! it at the block level where the machine allows). Each round opens the log on the same
//! storage, runs appenders (single appends and ordered batches, both fsync policies that
//! acknowledge durability, with and without preallocated segments), a forwarder that reads, "sends" and commits (so retention deletes
//! segments), and cuts the power after a random number of storage operations, wherever the
//! log then is: in a write, an fdatasync, a segment roll, a cursor commit, a deletion. Then:
//! - every acknowledged record the forwarder has not committed is there, intact, at its offset;
//! - an offset the forwarder saw is never given to another record (and new appends start
//!   above every offset it saw);
//! - the committed position is the last commit that returned (or one in flight at the cut);
//! - recovery never mistakes a power cut for damage (nothing skipped or retired).
//!
//! `EDGE_LOG_POWER_CUT_ROUNDS=2000 EDGE_LOG_POWER_CUT_SEED=7 cargo test -p edge-log --test
//! power_cut` for a longer run.

// Test code: unwrap/expect are fine here (clippy.toml intent); helpers are not #[test] fns.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::rec;
use edge_log::testing::{CrashMode, MemStorage};
use edge_log::{FsyncPolicy, Log, LogConfig, NewRecord, WhenFull};
use parking_lot::Mutex;

/// xorshift64*: a seeded generator, so a failing seed can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What the outside world knows, across rounds.
#[derive(Default)]
struct World {
    /// Acknowledged (durable) records: offset -> id.
    acked: BTreeMap<u64, u64>,
    /// Records the forwarder read ("Kafka saw"): offset -> id.
    seen: BTreeMap<u64, u64>,
    /// Last commit that returned Ok, and the highest one attempted.
    committed_ok: u64,
    committed_attempt: u64,
}

/// The id a test record carries (its timestamp minus the base `rec` uses).
fn id_of(r: &edge_log::Record) -> u64 {
    r.timestamp_ms - 1_700_000_000_000
}

fn record(id: u64, rng: &mut Rng) -> NewRecord {
    rec(id, rng.below(200) as usize)
}

fn config(round: u64) -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        max_bytes: 64 << 20,
        max_record_bytes: 1024,
        fsync: if round.is_multiple_of(3) {
            FsyncPolicy::Interval(Duration::from_millis(2))
        } else {
            FsyncPolicy::Always
        },
        when_full: WhenFull::Block,
        preallocate: round.is_multiple_of(2),
        ..LogConfig::new("/pc")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_records_survive_power_cuts_at_random_points() {
    let rounds = env("EDGE_LOG_POWER_CUT_ROUNDS", 30);
    let seed = env("EDGE_LOG_POWER_CUT_SEED", 0x5eed);
    let mut rng = Rng(seed | 1);
    let mem = MemStorage::new();
    let world = Arc::new(Mutex::new(World::default()));
    let next_id = Arc::new(AtomicU64::new(0));
    let mut total_acked = 0usize;
    for round in 0..rounds {
        let ctx = format!("seed {seed}, round {round}");
        let (log, report) = Log::open_with_storage(config(round), mem.clone()).unwrap();
        assert_eq!(report.records_skipped(), 0, "{ctx}: {report}");
        assert!(report.skipped.is_empty() && report.headers_repaired.is_empty());
        check(&log, &world.lock(), report.next_offset, &ctx);

        let ops = 20 + rng.below(3000);
        let mode = match rng.below(3) {
            0 => CrashMode::DropUnsynced,
            1 => CrashMode::TornTail(1 + rng.below(300) as usize),
            _ => CrashMode::ZeroFill,
        };
        mem.crash_after(ops, mode);
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for t in 0..3u64 {
            let log = log.clone();
            let world = world.clone();
            let next_id = next_id.clone();
            let stop = stop.clone();
            let mut rng = Rng((seed ^ (round << 8) ^ t) | 1);
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let n = 1 + rng.below(8);
                    let batch: Vec<(u64, NewRecord)> = (0..n)
                        .map(|_| {
                            let id = next_id.fetch_add(1, Ordering::SeqCst);
                            (id, record(id, &mut rng))
                        })
                        .collect();
                    if n == 1 {
                        let (id, r) = batch.into_iter().next().unwrap();
                        let Ok(a) = log.append(r).await else { break };
                        let Ok(off) = a.durable().await else { break };
                        world.lock().acked.insert(off, id);
                    } else {
                        let (ids, records): (Vec<u64>, Vec<NewRecord>) = batch.into_iter().unzip();
                        let mut b = log.append_many(records).await;
                        if b.durable().await.is_err() {
                            break;
                        }
                        let mut w = world.lock();
                        // A chunk cut by the failure is answered in part: only the records
                        // with an offset are acknowledged.
                        for (id, o) in ids.iter().zip(b.outcomes()) {
                            if let Ok(offset) = o {
                                w.acked.insert(*offset, *id);
                            }
                        }
                    }
                }
            }));
        }
        {
            let log = log.clone();
            let world = world.clone();
            let stop = stop.clone();
            let mut rng = Rng((seed ^ round ^ 0xf0f0) | 1);
            tasks.push(tokio::spawn(async move {
                let Ok(mut c) = log.cursor("bridge") else {
                    return;
                };
                while !stop.load(Ordering::SeqCst) {
                    let Ok(got) = c.try_read(64, 16 << 10) else {
                        break;
                    };
                    if got.is_empty() {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        continue;
                    }
                    {
                        let mut w = world.lock();
                        for r in &got {
                            let id = id_of(r);
                            if let Some(before) = w.seen.insert(r.offset, id) {
                                assert_eq!(before, id, "offset {} changed identity", r.offset);
                            }
                        }
                    }
                    if rng.below(3) == 0 {
                        let to = c.position();
                        {
                            let mut w = world.lock();
                            w.committed_attempt = w.committed_attempt.max(to);
                        }
                        if c.commit(to).await.is_err() {
                            break;
                        }
                        let mut w = world.lock();
                        w.committed_ok = w.committed_ok.max(to);
                    }
                }
            }));
        }
        let cut = async {
            while !mem.crashed() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(30), cut)
            .await
            .unwrap_or_else(|_| panic!("{ctx}: the power cut never came"));
        stop.store(true, Ordering::SeqCst);
        for t in tasks {
            tokio::time::timeout(Duration::from_secs(10), t)
                .await
                .unwrap_or_else(|_| panic!("{ctx}: a task hung after the power cut"))
                .unwrap();
        }
        drop(log);
        mem.revive();
        total_acked = world.lock().acked.len();
    }
    let (log, report) = Log::open_with_storage(config(rounds), mem.clone()).unwrap();
    check(&log, &world.lock(), report.next_offset, "final");
    let w = world.lock();
    assert!(
        total_acked as u64 > rounds * 5,
        "too little work to mean anything: {total_acked} acknowledged in {rounds} rounds"
    );
    assert!(w.committed_ok > 0 && !w.seen.is_empty());
    eprintln!(
        "power cuts: {rounds} rounds, {} records acknowledged, {} read by the forwarder, committed up to {}",
        w.acked.len(),
        w.seen.len(),
        w.committed_ok
    );
}

/// The invariants after a reopen (see the file's doc).
fn check(log: &Log, w: &World, next_offset: u64, ctx: &str) {
    let bridge = log.cursor("bridge").unwrap();
    let committed = bridge.committed();
    assert!(
        committed >= w.committed_ok && committed <= w.committed_attempt.max(w.committed_ok),
        "{ctx}: committed {committed}, last ok {}, highest attempted {}",
        w.committed_ok,
        w.committed_attempt
    );
    drop(bridge);
    if let Some((&max_seen, _)) = w.seen.last_key_value() {
        assert!(
            next_offset > max_seen,
            "{ctx}: next offset {next_offset} would reuse offset {max_seen} the forwarder saw"
        );
    }
    let mut c = log.cursor("check").unwrap();
    c.seek(committed);
    let all = c.try_read(usize::MAX, usize::MAX).unwrap();
    assert_eq!(c.skipped(), 0, "{ctx}: a power cut is not damage");
    drop(c);
    log.remove_cursor("check").unwrap();
    let by_offset: BTreeMap<u64, u64> = all.iter().map(|r| (r.offset, id_of(r))).collect();
    for (&offset, &id) in w.acked.range(committed..) {
        assert_eq!(
            by_offset.get(&offset),
            Some(&id),
            "{ctx}: acknowledged record {id} at offset {offset} lost or changed"
        );
    }
    for (offset, id) in &by_offset {
        if let Some(seen) = w.seen.get(offset) {
            assert_eq!(seen, id, "{ctx}: offset {offset} now names another record");
        }
    }
}
