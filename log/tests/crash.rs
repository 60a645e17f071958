//! Process-crash test: a child process (this test binary re-executed in child mode) appends
//! from many tasks and prints every offset reported durable; the parent SIGKILLs it at a random
//! moment, reopens the log, and checks every reported record is there, intact, with dense offsets.
//! Loops several kill/reopen rounds on the same directory.
//!
//! The same binary serves `scripts/block-power-cut.sh`: `crash_child_entry` is its writer and
//! `crash_verify_entry` checks a directory against the `DURABLE` lines the writer printed.

// Test code: unwrap/expect are fine here (clippy.toml intent); helpers are not #[test] fns.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{rec, same};
use edge_log::{Log, LogConfig};

const CHILD_ENV: &str = "EDGE_LOG_CRASH_CHILD_DIR";
const ROUND_ENV: &str = "EDGE_LOG_CRASH_ROUND";
const VERIFY_DIR_ENV: &str = "EDGE_LOG_VERIFY_DIR";
const VERIFY_ACKED_ENV: &str = "EDGE_LOG_VERIFY_ACKED";
/// `1`: the log writes with `sector_writes` (children, verifier and the SIGKILL test alike).
const SECTOR_WRITES_ENV: &str = "EDGE_LOG_CRASH_SECTOR_WRITES";
/// A number N: the log syncs every N ms (`FsyncPolicy::Interval`; with sector writes, an
/// interval's appends are gathered into one write) instead of after every batch.
const INTERVAL_ENV: &str = "EDGE_LOG_CRASH_INTERVAL_MS";

fn config(dir: &std::path::Path) -> LogConfig {
    LogConfig {
        segment_bytes: 32 << 10,
        max_bytes: 1 << 30,
        max_record_bytes: 4096,
        sector_writes: std::env::var(SECTOR_WRITES_ENV).is_ok_and(|v| v == "1"),
        fsync: match std::env::var(INTERVAL_ENV)
            .ok()
            .and_then(|v| v.parse().ok())
        {
            Some(ms) => edge_log::FsyncPolicy::Interval(std::time::Duration::from_millis(ms)),
            None => edge_log::FsyncPolicy::Always,
        },
        ..LogConfig::new(dir)
    }
}

/// Child mode entry point. Inert unless the parent sets `EDGE_LOG_CRASH_CHILD_DIR`.
#[test]
fn crash_child_entry() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let round: u64 = std::env::var(ROUND_ENV).unwrap().parse().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let (log, _) = Log::open(config(std::path::Path::new(&dir))).unwrap();
        let out = std::sync::Arc::new(std::sync::Mutex::new(std::io::stdout()));
        let mut hs = Vec::new();
        for task in 0..16u64 {
            let log = log.clone();
            let out = out.clone();
            hs.push(tokio::spawn(async move {
                for i in 0.. {
                    let id = round * 100_000_000 + task * 1_000_000 + i;
                    let a = log.append(rec(id, 50 + (id % 150) as usize)).await.unwrap();
                    let off = a.durable().await.unwrap();
                    let mut o = out.lock().unwrap();
                    writeln!(o, "DURABLE {off} {id}").unwrap();
                    o.flush().unwrap();
                }
            }));
        }
        for h in hs {
            h.await.unwrap();
        }
    });
}

/// Verifier mode entry point (for `scripts/block-power-cut.sh`). Inert unless
/// `EDGE_LOG_VERIFY_DIR` (a log directory) and `EDGE_LOG_VERIFY_ACKED` (a file of `DURABLE
/// <offset> <id>` lines) are set: opens (recovers) the log and checks every listed record is
/// there, intact, at its offset; prints one `VERIFIED` line.
#[test]
fn crash_verify_entry() {
    let (Some(dir), Some(acked)) = (
        std::env::var_os(VERIFY_DIR_ENV),
        std::env::var_os(VERIFY_ACKED_ENV),
    ) else {
        return;
    };
    let acked: Vec<(u64, u64)> = std::fs::read_to_string(acked)
        .unwrap()
        .lines()
        .filter_map(|l| {
            let mut it = l.strip_prefix("DURABLE ")?.split(' ');
            Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
        })
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let (log, report) = Log::open(config(std::path::Path::new(&dir))).unwrap();
        let mut c = log.cursor("verify").unwrap();
        let all = c.try_read(usize::MAX, usize::MAX).unwrap();
        let by_offset: std::collections::HashMap<u64, &edge_log::Record> =
            all.iter().map(|r| (r.offset, r)).collect();
        let mut lost = Vec::new();
        for &(off, id) in &acked {
            match by_offset.get(&off) {
                Some(r) if same(r, &rec(id, 50 + (id % 150) as usize)) => {}
                _ => lost.push((off, id)),
            }
        }
        drop(c);
        log.remove_cursor("verify").unwrap();
        log.close().await.unwrap();
        println!(
            "VERIFIED acknowledged={} lost={} records={} skipped={} next_offset={} | {report}",
            acked.len(),
            lost.len(),
            all.len(),
            report.records_skipped(),
            report.next_offset
        );
        assert!(lost.is_empty(), "acknowledged records lost: {lost:?}");
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_append_loses_nothing_reported_durable() {
    let dir = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut reported: Vec<(u64, u64)> = Vec::new();
    let rounds = 10u64;
    for round in 0..rounds {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "crash_child_entry",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .env(ROUND_ENV, round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        // Kill after a varying number of durable records (pseudo-random per round).
        let kill_after = 200 + (round * 7919) % 900;
        let reader = std::thread::spawn(move || {
            let mut lines = Vec::new();
            let mut r = BufReader::new(stdout);
            let mut line = String::new();
            let start = Instant::now();
            while r.read_line(&mut line).unwrap_or(0) > 0 {
                if let Some(rest) = line.trim_end().strip_prefix("DURABLE ") {
                    let mut it = rest.split(' ');
                    let off: u64 = it.next().unwrap().parse().unwrap();
                    let id: u64 = it.next().unwrap().parse().unwrap();
                    lines.push((off, id));
                }
                line.clear();
                if lines.len() as u64 >= kill_after || start.elapsed() > Duration::from_secs(20) {
                    break;
                }
            }
            (lines, r)
        });
        let (mut lines, r) = reader.join().unwrap();
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        // Lines the child managed to print before dying are reported durable too.
        for l in r.lines().map_while(Result::ok) {
            if let Some(rest) = l.strip_prefix("DURABLE ") {
                let mut it = rest.split(' ');
                if let (Some(Ok(off)), Some(Ok(id))) =
                    (it.next().map(str::parse), it.next().map(str::parse))
                {
                    lines.push((off, id));
                }
            }
        }
        assert!(
            !lines.is_empty(),
            "child round {round} reported nothing; is the test binary runnable?"
        );
        reported.extend(lines);

        let (log, report) = Log::open(config(dir.path())).unwrap();
        let mut c = log.cursor("check").unwrap();
        let all = c.try_read(usize::MAX, usize::MAX).unwrap();
        assert_eq!(all.len() as u64, report.next_offset, "{report}");
        for (i, r) in all.iter().enumerate() {
            assert_eq!(r.offset, i as u64, "offsets must be dense");
        }
        for &(off, id) in &reported {
            let r = all.get(off as usize).unwrap_or_else(|| {
                panic!("durable offset {off} lost after round {round}: {report}")
            });
            assert!(
                same(r, &rec(id, 50 + (id % 150) as usize)),
                "record at {off} is not id {id}"
            );
        }
        drop(c);
        log.remove_cursor("check").unwrap();
        log.close().await.unwrap();
    }
    assert!(reported.len() as u64 >= rounds * 200);
}
