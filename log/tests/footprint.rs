//! What an open, idle log costs in resident memory. Its own test binary, so no other test's
//! threads or allocations run beside the reading.

// Test code: unwrap/expect are fine here (clippy.toml intent).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use edge_log::{Log, LogConfig};

/// Anonymous resident memory of this process (`RssAnon`: heap, stacks; not the code, which
/// counts in `RssFile`), in KiB.
fn anon_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("RssAnon in /proc/self/status")
}

/// Opening an empty log starts two threads (writer and syncer: their stacks and allocator
/// arenas, ~60 KiB here) and touches little else. The writer's queue used to be a bounded
/// `sync_channel(1024)`, whose slots are all written when it is made: 104 KiB more (164 KiB
/// measured), resident for as long as the broker runs, idle or not (BENCHMARKS.md "Footprint").
/// The queue is bounded by semaphores now and allocates as it fills.
#[tokio::test(flavor = "current_thread")]
async fn an_idle_log_holds_no_queue_up_front() {
    let dir = tempfile::tempdir().unwrap();
    let before = anon_kib();
    let (log, _) = Log::open(LogConfig::new(dir.path())).unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let after = anon_kib();
    log.close().await.unwrap();
    let grown = after.saturating_sub(before);
    println!("RssAnon {before} KiB -> {after} KiB (+{grown}) opening an empty log");
    assert!(
        grown < 100,
        "an idle log made the process {grown} KiB larger ({before} -> {after} KiB)"
    );
}
