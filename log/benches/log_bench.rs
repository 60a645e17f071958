//! edge-log benchmark: prints a markdown table. Run:
//! `cargo bench -p edge-log --bench log_bench` (release profile). Knobs:
//! `EDGE_LOG_BENCH_SCALE=0.1` (fewer records, smaller "1 GiB" log) and
//! `EDGE_LOG_BENCH_DIR=/var/tmp` (must be a real disk, not tmpfs),
//! `EDGE_LOG_BENCH_ONLY=always,prealloc,interval,never,sled,gateway,open` (a subset of the
//! groups, for side-by-side runs of one part).
//!
//! Write amplification = `/proc/self/io` write_bytes delta ÷ payload bytes. Linux accounts
//! write_bytes per page when a page is dirtied, so every fsync that re-dirties a partly filled
//! page counts that page again; filesystem journal writes (jbd2) are not included. "device amp"
//! is the bench directory's block device's sectors written (`/sys/dev/block/M:m/stat`) ÷
//! payload bytes: journal included, but so is everything else the machine writes meanwhile
//! (meaningful on a quiet machine only). Latency is append → durable, per record.
//!
//! The reference gateway (issue 17's flash-wear case): 50 sensors × 1 record/s × 200 B for
//! 60 s × scale, under each fsync policy: bytes written per payload byte (process and device),
//! per day, and the ack latency.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use edge_log::{FsyncPolicy, Log, LogConfig, NewRecord, Source, WhenFull};

const PAYLOAD: usize = 200;

fn scale() -> f64 {
    std::env::var("EDGE_LOG_BENCH_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.0)
}

/// Whether the group `name` runs (`EDGE_LOG_BENCH_ONLY`, default all).
fn only(name: &str) -> bool {
    match std::env::var("EDGE_LOG_BENCH_ONLY") {
        Ok(list) => list.split(',').any(|g| g.trim() == name),
        Err(_) => true,
    }
}

fn scaled(n: u64) -> u64 {
    ((n as f64 * scale()) as u64).max(16)
}

fn bench_root() -> PathBuf {
    std::env::var_os("EDGE_LOG_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/var/tmp".into())
}

fn write_bytes() -> u64 {
    let io = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
    io.lines()
        .find_map(|l| l.strip_prefix("write_bytes: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Sectors written to the block device holding `dir` so far, in bytes (None if unknown).
fn device_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(dir).ok()?.dev();
    let major = ((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0xfff);
    let minor = ((dev >> 12) & 0xffff_ff00) | (dev & 0xff);
    let stat = std::fs::read_to_string(format!("/sys/dev/block/{major}:{minor}/stat")).ok()?;
    let sectors: u64 = stat.split_whitespace().nth(6)?.parse().ok()?;
    Some(sectors * 512)
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn record(i: u64) -> NewRecord {
    let mut payload = vec![0u8; PAYLOAD];
    for (j, b) in payload.iter_mut().enumerate() {
        *b = (i as usize * 31 + j) as u8;
    }
    NewRecord {
        timestamp_ms: 1_763_769_600_000 + i,
        source: Source::Mqtt,
        topic: format!("sensors/{}/temp", i % 16).into(),
        client_id: format!("dev-{}", i % 64).into(),
        destination: edge_log::Destination::topic("t"),
        headers: Vec::new(),
        payload: Bytes::from(payload),
    }
}

fn config(dir: &Path, fsync: FsyncPolicy) -> LogConfig {
    LogConfig {
        fsync,
        max_bytes: 64 << 30,
        when_full: WhenFull::Reject,
        ..LogConfig::new(dir)
    }
}

fn policy_name(fsync: FsyncPolicy) -> String {
    match fsync {
        FsyncPolicy::Always => "always".into(),
        FsyncPolicy::Never => "never".into(),
        FsyncPolicy::Interval(d) => format!("interval:{}ms", d.as_millis()),
    }
}

struct Row {
    name: String,
    records: u64,
    secs: f64,
    fsyncs: Option<u64>,
    amp: f64,
    device_amp: Option<f64>,
    /// p50 and p99 append → durable.
    latency: Option<(Duration, Duration)>,
}

impl Row {
    fn print(&self) {
        let rps = self.records as f64 / self.secs;
        let mbps = rps * PAYLOAD as f64 / 1e6;
        let fpr = match self.fsyncs {
            Some(f) => format!("{:.4}", f as f64 / self.records as f64),
            None => "-".into(),
        };
        let dev = self.device_amp.map_or("-".into(), |a| format!("{a:.2}x"));
        let lat = self.latency.map_or("- | -".into(), |(p50, p99)| {
            format!(
                "{:.2} | {:.2}",
                p50.as_secs_f64() * 1e3,
                p99.as_secs_f64() * 1e3
            )
        });
        println!(
            "| {} | {} | {:.2} | {:.0} | {:.2} | {} | {:.2}x | {} | {} |",
            self.name, self.records, self.secs, rps, mbps, fpr, self.amp, dev, lat
        );
    }
}

async fn edge_append(
    root: &Path,
    fsync: FsyncPolicy,
    preallocate: bool,
    tasks: u64,
    total: u64,
) -> (Row, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix("edge-log-bench")
        .tempdir_in(root)
        .unwrap()
        .keep();
    let cfg = LogConfig {
        preallocate,
        ..config(&dir, fsync)
    };
    let (log, _) = Log::open(cfg).unwrap();
    let per = total / tasks;
    let io0 = write_bytes();
    let dev0 = device_bytes(&dir);
    let f0 = log.stats().fsyncs;
    let start = Instant::now();
    let mut hs = Vec::new();
    for t in 0..tasks {
        let log = log.clone();
        hs.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per as usize);
            for i in 0..per {
                let t0 = Instant::now();
                let a = log.append(record(t * per + i)).await.unwrap();
                a.durable().await.unwrap();
                lat.push(t0.elapsed());
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for h in hs {
        lat.extend(h.await.unwrap());
    }
    let secs = start.elapsed().as_secs_f64();
    log.close().await.unwrap();
    let records = per * tasks;
    let fsyncs = log.stats().fsyncs - f0;
    let payload = (records * PAYLOAD as u64) as f64;
    let amp = (write_bytes() - io0) as f64 / payload;
    let device_amp = dev0
        .zip(device_bytes(&dir))
        .map(|(a, b)| (b - a) as f64 / payload);
    lat.sort_unstable();
    let latency = Some((percentile(&lat, 0.5), percentile(&lat, 0.99)));
    let name = format!(
        "edge-log append, fsync={}{}, {tasks} appenders",
        policy_name(fsync),
        if preallocate { ", preallocate" } else { "" }
    );
    (
        Row {
            name,
            records,
            secs,
            fsyncs: Some(fsyncs),
            amp,
            device_amp,
            latency,
        },
        dir,
    )
}

async fn sled_append(root: &Path, durable: bool, tasks: u64, total: u64) -> Row {
    let dir = tempfile::Builder::new()
        .prefix("sled-bench")
        .tempdir_in(root)
        .unwrap();
    let db = Arc::new(sled::Config::new().path(dir.path()).open().unwrap());
    let per = total / tasks;
    let io0 = write_bytes();
    let start = Instant::now();
    let mut hs = Vec::new();
    for t in 0..tasks {
        let db = db.clone();
        hs.push(tokio::spawn(async move {
            for i in 0..per {
                let r = record(t * per + i);
                let id = db.generate_id().unwrap();
                // Value = the same fields edge-log stores (topic, client id, ts, payload).
                let mut v = Vec::with_capacity(PAYLOAD + 48);
                v.extend_from_slice(&r.timestamp_ms.to_le_bytes());
                v.extend_from_slice(r.topic.as_bytes());
                v.extend_from_slice(r.client_id.as_bytes());
                v.extend_from_slice(&r.payload);
                db.insert(id.to_be_bytes(), v).unwrap();
                if durable && tasks == 1 {
                    db.flush_async().await.unwrap();
                } else if durable {
                    // Concurrent flush_async deadlocks in sled 0.34.x (spacejam/sled#1308);
                    // the usual workaround is a blocking flush per writer.
                    let db = db.clone();
                    tokio::task::spawn_blocking(move || db.flush())
                        .await
                        .unwrap()
                        .unwrap();
                }
            }
        }));
    }
    for h in hs {
        h.await.unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    db.flush().unwrap();
    let records = per * tasks;
    let amp = (write_bytes() - io0) as f64 / (records * PAYLOAD as u64) as f64;
    drop(db);
    let how = match (durable, tasks) {
        (false, _) => " (no flush)",
        (true, 1) => " + flush_async",
        (true, _) => " + flush (spawn_blocking)",
    };
    let name = format!("sled 0.34 insert{how}, {tasks} appenders");
    Row {
        name,
        records,
        secs,
        fsyncs: None,
        amp,
        device_amp: None,
        latency: None,
    }
}

async fn replay(dir: &Path) -> Row {
    let (log, _) = Log::open(config(dir, FsyncPolicy::Always)).unwrap();
    let mut c = log.cursor("bench").unwrap();
    let end = log.durable_end();
    let start = Instant::now();
    let mut n = 0u64;
    let mut checksum = 0u64;
    while c.position() < end {
        let batch = c.read(1000, 1 << 20).await.unwrap();
        n += batch.len() as u64;
        checksum = checksum.wrapping_add(batch.iter().map(|r| r.payload[0] as u64).sum::<u64>());
    }
    let secs = start.elapsed().as_secs_f64();
    std::hint::black_box(checksum);
    Row {
        name: "edge-log replay from a cursor (batches of 1000, warm page cache)".into(),
        records: n,
        secs,
        fsyncs: None,
        amp: 0.0,
        device_amp: None,
        latency: None,
    }
}

async fn open_big(root: &Path) -> (u64, f64, String) {
    let target = (scale() * (1u64 << 30) as f64) as u64;
    let dir = tempfile::Builder::new()
        .prefix("edge-log-1g")
        .tempdir_in(root)
        .unwrap();
    let cfg = config(dir.path(), FsyncPolicy::Never);
    {
        let (log, _) = Log::open(cfg.clone()).unwrap();
        let mut hs = Vec::new();
        for t in 0..8u64 {
            let log = log.clone();
            hs.push(tokio::spawn(async move {
                let mut i = 0;
                // Stop just short of the budget so the tail segment is nearly full: the
                // worst case for open, which scans the whole tail.
                while log.stats().bytes + (2 << 20) < target {
                    for _ in 0..256 {
                        log.append(record(t * 1_000_000_000 + i)).await.unwrap();
                        i += 1;
                    }
                }
            }));
        }
        for h in hs {
            h.await.unwrap();
        }
        log.close().await.unwrap();
    }
    let start = Instant::now();
    let (log, report) = Log::open(cfg).unwrap();
    let secs = start.elapsed().as_secs_f64();
    let bytes = log.stats().bytes;
    drop(log);
    (bytes, secs, report.to_string())
}

/// Issue 17's reference gateway: 50 sensors, each appending one 200-byte record per second
/// (spread over the second), for `secs` seconds. Prints bytes written per payload byte
/// (process and device), per day, and the ack latency.
async fn reference_gateway(root: &Path, fsync: FsyncPolicy, preallocate: bool, secs: u64) {
    let dir = tempfile::Builder::new()
        .prefix("edge-log-gateway")
        .tempdir_in(root)
        .unwrap();
    let cfg = LogConfig {
        preallocate,
        ..config(dir.path(), fsync)
    };
    let (log, _) = Log::open(cfg).unwrap();
    let sensors = 50u64;
    let io0 = write_bytes();
    let dev0 = device_bytes(dir.path());
    let start = Instant::now();
    let mut hs = Vec::new();
    for s in 0..sensors {
        let log = log.clone();
        hs.push(tokio::spawn(async move {
            let phase = Duration::from_millis(s * 1000 / sensors);
            let mut tick = tokio::time::interval_at(
                tokio::time::Instant::now() + phase,
                Duration::from_secs(1),
            );
            let mut lat = Vec::new();
            for i in 0..secs {
                tick.tick().await;
                let t0 = Instant::now();
                let a = log.append(record(s * 1_000_000 + i)).await.unwrap();
                a.durable().await.unwrap();
                lat.push(t0.elapsed());
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for h in hs {
        lat.extend(h.await.unwrap());
    }
    let elapsed = start.elapsed().as_secs_f64();
    log.close().await.unwrap();
    let payload = (lat.len() * PAYLOAD) as f64;
    let process = (write_bytes() - io0) as f64;
    let device = dev0
        .zip(device_bytes(dir.path()))
        .map(|(a, b)| (b - a) as f64);
    lat.sort_unstable();
    let day = 86_400.0 / elapsed;
    let policy = format!(
        "{}{}",
        policy_name(fsync),
        if preallocate { ", preallocate" } else { "" }
    );
    println!(
        "| {policy} | {} | {:.1}x | {:.2} | {} | {} | {:.2} | {:.2} |",
        lat.len(),
        process / payload,
        process * day / 1e9,
        device.map_or("-".into(), |d| format!("{:.1}x", d / payload)),
        device.map_or("-".into(), |d| format!("{:.2}", d * day / 1e9)),
        percentile(&lat, 0.5).as_secs_f64() * 1e3,
        percentile(&lat, 0.99).as_secs_f64() * 1e3,
    );
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let root = bench_root();
    println!(
        "edge-log bench: {PAYLOAD}-byte payloads, dir {}, scale {}",
        root.display(),
        scale()
    );
    println!();
    println!(
        "| case | records | seconds | records/s | payload MB/s | fsyncs/record | write amp | device amp | p50 ms | p99 ms |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    rt.block_on(async {
        let mut dirs = Vec::new();
        let mut groups: Vec<(&str, FsyncPolicy, bool, u64, u64)> = Vec::new();
        for (tasks, total) in [(1, 500), (8, 4_000), (64, 20_000), (512, 100_000)] {
            groups.push(("always", FsyncPolicy::Always, false, tasks, total));
        }
        for (tasks, total) in [(1, 500), (64, 20_000)] {
            groups.push(("prealloc", FsyncPolicy::Always, true, tasks, total));
        }
        let interval = FsyncPolicy::Interval(Duration::from_millis(100));
        groups.push(("interval", interval, false, 512, 20_000));
        for (tasks, total) in [(1, 200_000), (64, 200_000)] {
            groups.push(("never", FsyncPolicy::Never, false, tasks, total));
        }
        for (group, fsync, preallocate, tasks, total) in groups {
            if only(group) {
                let (row, dir) = edge_append(&root, fsync, preallocate, tasks, scaled(total)).await;
                row.print();
                dirs.push(dir);
            }
        }
        if only("never")
            && let Some(replay_dir) = dirs.last()
        {
            replay(replay_dir).await.print();
        }
        if only("sled") {
            for (durable, tasks, total) in [
                (true, 1, 500),
                (true, 64, 20_000),
                (true, 512, 100_000),
                (false, 64, 200_000),
            ] {
                sled_append(&root, durable, tasks, scaled(total))
                    .await
                    .print();
            }
        }
        for d in dirs {
            let _ = std::fs::remove_dir_all(d);
        }
        if only("gateway") {
            let secs = ((60.0 * scale()) as u64).max(5);
            println!();
            println!(
                "reference gateway: 50 sensors x 1 record/s x {PAYLOAD} B for {secs} s (payload {:.2} GB/day)",
                50.0 * PAYLOAD as f64 * 86_400.0 / 1e9
            );
            println!();
            println!(
                "| fsync | records | process bytes / payload | process GB/day | device bytes / payload | device GB/day | p50 ms | p99 ms |"
            );
            println!("|---|---:|---:|---:|---:|---:|---:|---:|");
            for fsync in [FsyncPolicy::Always, interval] {
                for preallocate in [false, true] {
                    reference_gateway(&root, fsync, preallocate, secs).await;
                }
            }
        }
        if !only("open") {
            return;
        }
        let (bytes, secs, report) = open_big(&root).await;
        println!();
        println!(
            "open-to-ready with a {:.0} MiB log (warm page cache): {:.3} s",
            bytes as f64 / (1 << 20) as f64,
            secs
        );
        println!("  {report}");
    });
}
