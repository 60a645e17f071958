//! MQTT ingress benchmark: edge-broker against Debian's Mosquitto, same load generator, same
//! machine, same run. Prints a table (no assertions). Both brokers get the same room to queue
//! for a subscriber: 100,000 messages per session, and for edge-broker 64 MiB in bytes (per
//! session and in all), since Mosquitto caps no bytes by default.
//!
//! `cargo build --release -p edge-broker && cargo run --release -p edge-tests --bin mqtt-bench`
//! (`MQTT_BENCH_SCALE=0.2` for a quicker, noisier run; `MQTT_BENCH_PERSISTENT_SUB=1` makes the
//! subscriber a persistent session, clean session off, whose deliveries are saved).
//!
//! Options: `--edge-broker LABEL=PATH` (repeatable) measures those builds instead of the
//! `edge-broker` beside this binary, one after the other in the same run (before/after a
//! change); `--no-mosquitto` leaves out the Mosquitto rows; `--results FILE` appends every
//! number as a JSON line (`{"bench":"mqtt","tag":TAG,"row":KEY,"metric":NAME,"value":X}`,
//! `--tag TAG` names the round) for `bench/table.py`.
//!
//! `--gateway SECS` measures flash wear instead (issue 17's reference gateway): 50 QoS 1
//! publishers × 1 message/s × 200 B (spread over each second; device bytes counted for SECS
//! seconds after a 5 s warm-up), against
//! edge-broker under each fsync policy (routed; `preallocate = false`, `preallocate` (the
//! default), `sector_writes`) and Mosquitto
//! with persistence. Per case: the block device's bytes written (`/sys/dev/block/M:m/stat` of
//! the device holding the temporary directory, so journal and metadata included: point
//! `TMPDIR` at a file system nothing else writes to), as a multiple of the payload and per day,
//! and PUBLISH→PUBACK p50/p99. The Kafka forwarder is off (its cursor commits are not counted).
//! `--gateway-cases interval-50ms-sectors,always-sectors` runs only those policies (`--help`
//! lists them).
//!
//! The load generator is a raw MQTT 3.1.1 client on blocking sockets (one thread per
//! connection): QoS 1 publishers keep a window of 100 publishes in flight, the subscriber
//! acknowledges as it reads. Throughput = messages the subscriber received / time from the
//! first publish to the last delivery. Latency = PUBLISH→PUBACK with one publish in flight,
//! measured in turns with as many 4 KiB append + fdatasync on the temporary directory's file
//! system (the broker's data is there): the PUBACK goal's anchor, taken in the same minutes.

// A benchmark harness fails loudly: a panic with a message is its error report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufWriter, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc::sync_channel;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use edge_tests::broker::Broker;
use edge_tests::mqtt::{Mosquitto, rss_kib};

const PAYLOAD: usize = 200;
const WINDOW: usize = 100;
const TOPIC: &str = "bench/t";

fn varint(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let mut byte = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if n == 0 {
            return;
        }
    }
}

fn frame(first: u8, body: &[u8], out: &mut Vec<u8>) {
    out.push(first);
    varint(body.len(), out);
    out.extend_from_slice(body);
}

fn string(s: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Reads whole MQTT frames from a socket.
struct Frames {
    stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Frames {
    fn new(stream: TcpStream) -> Frames {
        Frames {
            stream,
            buf: vec![0; 1 << 16],
            start: 0,
            end: 0,
        }
    }

    /// The next frame's first byte and body (copied out only when asked).
    fn next(&mut self, mut visit: impl FnMut(u8, &[u8])) -> std::io::Result<()> {
        loop {
            let avail = &self.buf[self.start..self.end];
            if avail.len() >= 2 {
                let (mut len, mut mult, mut i) = (0usize, 1usize, 1usize);
                let mut complete = false;
                while i < avail.len() && i <= 4 {
                    len += usize::from(avail[i] & 0x7f) * mult;
                    mult *= 128;
                    i += 1;
                    if avail[i - 1] & 0x80 == 0 {
                        complete = true;
                        break;
                    }
                }
                if complete && avail.len() >= i + len {
                    visit(avail[0], &avail[i..i + len]);
                    self.start += i + len;
                    return Ok(());
                }
            }
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            let n = self.stream.read(&mut self.buf[self.end..])?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.end += n;
        }
    }

    /// Whether a whole frame is already buffered (so reading will not block).
    fn buffered(&self) -> bool {
        self.end - self.start >= 2
    }
}

fn connect(addr: SocketAddr, client_id: &str) -> (TcpStream, Frames) {
    connect_session(addr, client_id, true)
}

/// Connects with clean session on (`clean`) or off (a persistent session).
fn connect_session(addr: SocketAddr, client_id: &str, clean: bool) -> (TcpStream, Frames) {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_nodelay(true).unwrap();
    let mut body = Vec::new();
    string("MQTT", &mut body);
    // 3.1.1, clean session (or not), no keep alive
    body.extend_from_slice(&[4, if clean { 0x02 } else { 0 }, 0, 0]);
    string(client_id, &mut body);
    let mut out = Vec::new();
    frame(0x10, &body, &mut out);
    let mut writer = stream.try_clone().unwrap();
    writer.write_all(&out).unwrap();
    let mut frames = Frames::new(stream);
    let mut rc = 0xff;
    frames
        .next(|first, body| {
            assert_eq!(first >> 4, 2, "CONNACK");
            rc = body[1];
        })
        .expect("CONNACK");
    assert_eq!(rc, 0, "CONNECT refused");
    (writer, frames)
}

fn publish_frame(qos: u8, packet_id: u16, payload: &[u8], out: &mut Vec<u8>) {
    let mut body = Vec::with_capacity(payload.len() + 16);
    string(TOPIC, &mut body);
    if qos > 0 {
        body.extend_from_slice(&packet_id.to_be_bytes());
    }
    body.extend_from_slice(payload);
    frame(0x30 | (qos << 1), &body, out);
}

/// A subscriber on `bench/#` that counts deliveries (and acknowledges QoS 1) until it has
/// `expected` or nothing came for `idle`. Returns (count, time of the last delivery).
fn spawn_subscriber(
    addr: SocketAddr,
    qos: u8,
    expected: u64,
    ready: Arc<Barrier>,
) -> std::thread::JoinHandle<(u64, Instant)> {
    let persistent = std::env::var_os("MQTT_BENCH_PERSISTENT_SUB").is_some();
    std::thread::spawn(move || {
        let (mut writer, mut frames) = connect_session(addr, "bench-sub", !persistent);
        let mut body = vec![0, 1];
        string("bench/#", &mut body);
        body.push(qos);
        let mut out = Vec::new();
        frame(0x82, &body, &mut out);
        writer.write_all(&out).unwrap();
        frames.next(|first, _| assert_eq!(first >> 4, 9)).unwrap();
        frames
            .stream
            .set_read_timeout(Some(Duration::from_secs(3)))
            .unwrap();
        ready.wait();
        let mut writer = BufWriter::with_capacity(1 << 16, writer);
        let mut count = 0;
        let mut last = Instant::now();
        while count < expected {
            let mut ack = None;
            let got = frames.next(|first, body| {
                if first >> 4 == 3 {
                    count += 1;
                    if (first >> 1) & 3 == 1 {
                        let topic_len = usize::from(u16::from_be_bytes([body[0], body[1]]));
                        ack = Some([body[2 + topic_len], body[3 + topic_len]]);
                    }
                }
            });
            if got.is_err() {
                break; // idle: the rest was dropped
            }
            last = Instant::now();
            if let Some(id) = ack {
                writer.write_all(&[0x40, 2, id[0], id[1]]).unwrap();
            }
            if !frames.buffered() {
                writer.flush().unwrap();
            }
        }
        let _ = writer.flush();
        if persistent {
            // Ends the persistent session (a clean-session connect replaces it), so the next
            // run does not start with this one's leftovers.
            drop((writer, frames));
            drop(connect_session(addr, "bench-sub", true));
        }
        (count, last)
    })
}

/// One publisher sending `count` messages; QoS 1 keeps `WINDOW` in flight.
fn publisher(addr: SocketAddr, id: usize, qos: u8, count: u64, start: Arc<Barrier>) {
    let (writer, mut frames) = connect(addr, &format!("bench-pub-{id}"));
    let payload = vec![b'x'; PAYLOAD];
    start.wait();
    let mut writer = BufWriter::with_capacity(1 << 16, writer);
    let mut out = Vec::with_capacity(512);
    if qos == 0 {
        for _ in 0..count {
            out.clear();
            publish_frame(0, 0, &payload, &mut out);
            writer.write_all(&out).unwrap();
        }
        writer.flush().unwrap();
        return;
    }
    let (credit_tx, credit_rx) = sync_channel::<()>(WINDOW);
    for _ in 0..WINDOW {
        credit_tx.send(()).unwrap();
    }
    let reader = std::thread::spawn(move || {
        let mut acked = 0;
        while acked < count {
            if frames.next(|first, _| assert_eq!(first >> 4, 4)).is_err() {
                break;
            }
            acked += 1;
            let _ = credit_tx.send(());
        }
    });
    let mut packet_id: u16 = 0;
    for _ in 0..count {
        if credit_rx.try_recv().is_err() {
            writer.flush().unwrap();
            if credit_rx.recv().is_err() {
                break;
            }
        }
        packet_id = packet_id.checked_add(1).unwrap_or(1);
        out.clear();
        publish_frame(1, packet_id, &payload, &mut out);
        writer.write_all(&out).unwrap();
    }
    writer.flush().unwrap();
    reader.join().unwrap();
}

/// Messages per second delivered to one subscriber from `publishers` publishers.
fn throughput(addr: SocketAddr, qos: u8, publishers: usize, total: u64) -> (f64, f64) {
    let per = total / publishers as u64;
    let expected = per * publishers as u64;
    let ready = Arc::new(Barrier::new(2));
    let sub = spawn_subscriber(addr, qos, expected, Arc::clone(&ready));
    let start = Arc::new(Barrier::new(publishers + 1));
    let pubs: Vec<_> = (0..publishers)
        .map(|i| {
            let start = Arc::clone(&start);
            std::thread::spawn(move || publisher(addr, i, qos, per, start))
        })
        .collect();
    ready.wait();
    std::thread::sleep(Duration::from_millis(100)); // publishers connected
    start.wait();
    let t0 = Instant::now();
    for p in pubs {
        p.join().unwrap();
    }
    let (received, last) = sub.join().unwrap();
    let secs = last.duration_since(t0).as_secs_f64().max(1e-6);
    (
        received as f64 / secs,
        100.0 * received as f64 / expected as f64,
    )
}

/// Samples in microseconds, summarised.
#[derive(Debug, Clone, Copy)]
struct Percentiles {
    p50: f64,
    p99: f64,
}

impl Percentiles {
    fn of(mut samples: Vec<f64>) -> Percentiles {
        samples.sort_by(f64::total_cmp);
        let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
        Percentiles {
            p50: at(0.5),
            p99: at(0.99),
        }
    }
}

/// PUBLISH→PUBACK with one publish in flight, and the disk's fdatasync measured in turns with it.
#[derive(Debug, Clone, Copy)]
struct Latency {
    puback: Percentiles,
    /// A 4 KiB append + fdatasync (as `bench/run.sh`'s machine probe) on the file system of
    /// the temporary directory, where the broker keeps its data.
    fdatasync: Percentiles,
}

/// Turns in which [`latency`] alternates PUBACKs and fdatasyncs.
const LATENCY_TURNS: usize = 6;

/// PUBLISH→PUBACK latency with one publish in flight (`count` samples), and as many fdatasyncs
/// of the disk under the broker, taken in turns with them: the goal's anchor measured in the
/// same minutes, so the disk's noise (this VM's fdatasync p99 moves 2–5× between minutes) hits
/// both alike.
fn latency(addr: SocketAddr, count: usize) -> Latency {
    use std::os::unix::fs::FileExt;
    let (mut writer, mut frames) = connect(addr, "bench-lat");
    let payload = vec![b'x'; PAYLOAD];
    let mut out = Vec::new();
    let probe = tempfile::tempfile().unwrap();
    let block = vec![b'x'; 4096];
    let mut probe_end = 0u64;
    let mut acks = Vec::with_capacity(count);
    let mut syncs = Vec::with_capacity(count);
    for turn in 0..LATENCY_TURNS {
        let share = count / LATENCY_TURNS + usize::from(turn < count % LATENCY_TURNS);
        for _ in 0..share {
            out.clear();
            publish_frame(1, (acks.len() % 60_000 + 1) as u16, &payload, &mut out);
            let t = Instant::now();
            writer.write_all(&out).unwrap();
            frames.next(|first, _| assert_eq!(first >> 4, 4)).unwrap();
            acks.push(t.elapsed().as_secs_f64() * 1e6);
        }
        for _ in 0..share {
            probe.write_all_at(&block, probe_end).unwrap();
            probe_end += block.len() as u64;
            let t = Instant::now();
            probe.sync_data().unwrap();
            syncs.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    Latency {
        puback: Percentiles::of(acks),
        fdatasync: Percentiles::of(syncs),
    }
}

/// RSS (KiB) idle, and with `clients` idle connections.
fn rss(addr: SocketAddr, pid: u32, clients: usize) -> (u64, u64) {
    std::thread::sleep(Duration::from_millis(300));
    let idle = rss_kib(pid);
    let conns: Vec<_> = (0..clients)
        .map(|i| connect(addr, &format!("idle-{i}")))
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let loaded = rss_kib(pid);
    drop(conns);
    (idle, loaded)
}

struct Row {
    name: String,
    key: String,
    cells: Vec<String>,
    /// (metric, value) pairs for `--results`.
    values: Vec<(&'static str, f64)>,
}

/// Appends `rows`' values to the `--results` file as JSON lines.
fn write_results(path: &Path, bench: &str, tag: &str, rows: &[Row]) {
    use std::fmt::Write as _;
    let mut text = String::new();
    for row in rows {
        for (metric, value) in &row.values {
            writeln!(
                text,
                r#"{{"bench":"{bench}","tag":"{tag}","row":"{}","metric":"{metric}","value":{value}}}"#,
                row.key
            )
            .unwrap();
        }
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
    file.write_all(text.as_bytes()).unwrap();
}

fn run(name: &str, key: &str, addr: SocketAddr, pid: u32, scale: f64) -> Row {
    let n = |x: f64| (x * scale) as u64;
    // RSS first, before the load makes the allocators grow.
    let (idle, loaded) = rss(addr, pid, 1000);
    let (q0_1, q0_1d) = throughput(addr, 0, 1, n(200_000.0));
    let (q0_10, q0_10d) = throughput(addr, 0, 10, n(200_000.0));
    let (q1_1, q1_1d) = throughput(addr, 1, 1, n(100_000.0));
    let (q1_10, q1_10d) = throughput(addr, 1, 10, n(100_000.0));
    let lat = latency(addr, n(3000.0).max(200) as usize);
    let peak = rss_kib(pid);
    let rate = |r: f64, d: f64| {
        if d < 99.95 {
            format!("{:.0}k ({d:.0}%)", r / 1000.0)
        } else {
            format!("{:.0}k", r / 1000.0)
        }
    };
    Row {
        name: name.to_owned(),
        key: key.to_owned(),
        values: vec![
            ("qos0_1", q0_1),
            ("qos0_1_delivered_pct", q0_1d),
            ("qos0_10", q0_10),
            ("qos0_10_delivered_pct", q0_10d),
            ("qos1_1", q1_1),
            ("qos1_10", q1_10),
            ("puback_p50_us", lat.puback.p50),
            ("puback_p99_us", lat.puback.p99),
            ("fdatasync_p50_us", lat.fdatasync.p50),
            ("fdatasync_p99_us", lat.fdatasync.p99),
            ("rss_idle_kib", idle as f64),
            ("rss_1000_idle_kib", loaded as f64),
            ("rss_after_kib", peak as f64),
        ],
        cells: vec![
            rate(q0_1, q0_1d),
            rate(q0_10, q0_10d),
            rate(q1_1, q1_1d),
            rate(q1_10, q1_10d),
            format!("{:.0} / {:.0}", lat.puback.p50, lat.puback.p99),
            format!("{:.0} / {:.0}", lat.fdatasync.p50, lat.fdatasync.p99),
            format!("{:.1}", idle as f64 / 1024.0),
            format!("{:.1}", loaded as f64 / 1024.0),
            format!("{:.1}", peak as f64 / 1024.0),
        ],
    }
}

fn start_edge(binary: Option<&Path>, config: &str) -> Broker {
    match binary {
        Some(binary) => Broker::start_binary(binary, config),
        None => Broker::start(config),
    }
}

fn edge(binary: Option<&Path>, config: &str, name: &str, key: &str, scale: f64) -> Row {
    let mut broker = start_edge(binary, config);
    let row = run(name, key, broker.mqtt_addr(), broker.pid(), scale);
    broker.terminate(Duration::from_secs(30));
    row
}

/// Bytes written so far to the block device holding `dir` (`/sys/dev/block/M:m/stat`, field 7:
/// sectors of 512 bytes), or None where the kernel does not say.
fn device_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(dir).ok()?.dev();
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    let stat = std::fs::read_to_string(format!("/sys/dev/block/{major}:{minor}/stat")).ok()?;
    let sectors: u64 = stat.split_whitespace().nth(6)?.parse().ok()?;
    Some(sectors * 512)
}

/// Issue 17's reference gateway against one broker: 50 QoS 1 publishers, each sending one
/// 200-byte message per second (phases spread over the second) for `secs` seconds and waiting
/// for its PUBACK. Returns every PUBLISH→PUBACK latency.
fn gateway_load(addr: SocketAddr, secs: u64) -> Vec<Duration> {
    const SENSORS: u64 = 50;
    let start = Instant::now() + Duration::from_millis(200);
    let threads: Vec<_> = (0..SENSORS)
        .map(|s| {
            std::thread::spawn(move || {
                let (mut writer, mut frames) = connect(addr, &format!("sensor-{s}"));
                let payload = vec![b'x'; PAYLOAD];
                let mut out = Vec::new();
                let mut lat = Vec::new();
                for i in 0..secs {
                    let at =
                        start + Duration::from_millis(s * 1000 / SENSORS) + Duration::from_secs(i);
                    if let Some(wait) = at.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    out.clear();
                    publish_frame(1, (i % 60_000 + 1) as u16, &payload, &mut out);
                    let t = Instant::now();
                    writer.write_all(&out).unwrap();
                    frames.next(|first, _| assert_eq!(first >> 4, 4)).unwrap();
                    lat.push(t.elapsed());
                }
                lat
            })
        })
        .collect();
    threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect()
}

/// Seconds of load before the device counter starts: the segment's creation and its first
/// preallocated zeros (once per 64 MiB segment, ~1.5 % of a day's bytes) are start-up, not wear.
const GATEWAY_WARM_UP: u64 = 5;

/// One flash-wear case: device bytes written while the reference gateway runs against a
/// broker whose data lives under `dir`, from the end of the warm-up until `stop` returns
/// (what the broker writes on its way out counts).
fn gateway_case(
    name: &str,
    key: &str,
    addr: SocketAddr,
    dir: &Path,
    secs: u64,
    stop: impl FnOnce(),
) -> Row {
    std::thread::sleep(Duration::from_millis(500));
    let probe_dir = dir.to_path_buf();
    let warm = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200) + Duration::from_secs(GATEWAY_WARM_UP));
        (device_bytes(&probe_dir), Instant::now())
    });
    let mut lat = gateway_load(addr, GATEWAY_WARM_UP + secs);
    stop();
    let (dev0, t0) = warm.join().unwrap();
    let elapsed = t0.elapsed().as_secs_f64();
    let device = dev0
        .zip(device_bytes(dir))
        .map(|(a, b)| b.saturating_sub(a) as f64);
    lat.sort();
    let at = |q: f64| lat[((lat.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3;
    // The payload of the measured window: 50 sensors x 1 message/s.
    let payload = (50 * secs) as f64 * PAYLOAD as f64;
    let day = 86_400.0 / elapsed;
    let mut values = vec![
        ("ack_p50_ms", at(0.5)),
        ("ack_p99_ms", at(0.99)),
        ("messages", lat.len() as f64),
    ];
    if let Some(d) = device {
        values.push(("device_x_payload", d / payload));
        values.push(("device_gb_day", d * day / 1e9));
    }
    Row {
        name: name.to_owned(),
        key: key.to_owned(),
        cells: vec![
            lat.len().to_string(),
            device.map_or("-".into(), |d| format!("{:.1}x", d / payload)),
            device.map_or("-".into(), |d| format!("{:.2}", d * day / 1e9)),
            format!("{:.2}", at(0.5)),
            format!("{:.2}", at(0.99)),
        ],
        values,
    }
}

/// `--gateway SECS`: the flash-wear table (`cases`: only the policies whose key, e.g.
/// `interval-50ms-sectors`, is listed; all when empty).
fn gateway(
    builds: &[(String, Option<PathBuf>)],
    mosquitto: bool,
    secs: u64,
    cases: &[String],
) -> Vec<Row> {
    let mut rows = Vec::new();
    // (fsync, [log] key set to true: "preallocate", "sector_writes" or none)
    let policies = [
        ("always", None),
        ("always", Some("preallocate")),
        ("always", Some("sector_writes")),
        ("interval:100ms", None),
        ("interval:100ms", Some("preallocate")),
        ("interval:100ms", Some("sector_writes")),
        ("interval:50ms", Some("sector_writes")),
    ];
    for (label, binary) in builds {
        for (fsync, write_key) in policies {
            let case = format!(
                "{}{}",
                fsync.replace(':', "-"),
                match write_key {
                    Some("preallocate") => "-prealloc",
                    Some(_) => "-sectors",
                    None => "",
                }
            );
            if !cases.is_empty() && !cases.contains(&case) {
                continue;
            }
            // preallocate is on by default: the plain cases turn it off.
            let extra = write_key.map_or("preallocate = false\n".to_owned(), |k| {
                format!("{k} = true\n")
            });
            let config = format!(
                "[log]\nfsync = \"{fsync}\"\n{extra}\n[kafka]\nenabled = false\n\n\
                 [[route]]\nmqtt = \"bench/#\"\nkafka_topic = \"bench\"\n"
            );
            let mut broker = start_edge(binary.as_deref(), &config);
            let dir = broker.dir.clone();
            let addr = broker.mqtt_addr();
            let suffix = write_key.map_or(", preallocate = false".to_owned(), |k| format!(", {k}"));
            let key = format!("{label}/{case}");
            rows.push(gateway_case(
                &format!("{label}, fsync={fsync}{suffix}"),
                &key,
                addr,
                &dir,
                secs,
                || {
                    broker.terminate(Duration::from_secs(30));
                },
            ));
        }
    }
    if mosquitto {
        let mosq =
            Mosquitto::start("persistence true\npersistence_location ./\nautosave_interval 1\n");
        let dir = tempfile::tempdir().unwrap();
        let addr = mosq.addr;
        rows.push(gateway_case(
            "mosquitto 2.0.11, persistence true, autosave_interval 1",
            "mosquitto/persist",
            addr,
            dir.path(),
            secs,
            move || drop(mosq),
        ));
    }
    rows
}

fn main() {
    let scale: f64 = std::env::var("MQTT_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut builds: Vec<(String, Option<PathBuf>)> = Vec::new();
    let mut mosquitto = true;
    let mut results: Option<PathBuf> = None;
    let mut tag = String::new();
    let mut gateway_secs: Option<u64> = None;
    let mut gateway_cases: Vec<String> = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--edge-broker" => {
                let spec = it.next().expect("--edge-broker LABEL=PATH");
                let (label, path) = spec.split_once('=').expect("--edge-broker LABEL=PATH");
                builds.push((label.to_owned(), Some(PathBuf::from(path))));
            }
            "--no-mosquitto" => mosquitto = false,
            "--results" => results = Some(PathBuf::from(it.next().expect("--results FILE"))),
            "--tag" => tag = it.next().expect("--tag TAG").clone(),
            "--gateway" => {
                gateway_secs = Some(
                    it.next()
                        .and_then(|s| s.parse().ok())
                        .expect("--gateway SECS"),
                );
            }
            "--gateway-cases" => {
                let list = it.next().expect("--gateway-cases CASE,CASE");
                gateway_cases = list.split(',').map(str::to_owned).collect();
            }
            "--help" | "-h" => {
                println!(
                    "mqtt-bench [--edge-broker LABEL=PATH]... [--no-mosquitto] [--results FILE] \
                     [--tag TAG] [--gateway SECS [--gateway-cases CASE,CASE]]\n\
                     cases: always, always-prealloc, always-sectors, interval-100ms, \
                     interval-100ms-prealloc, interval-100ms-sectors, interval-50ms-sectors\n\
                     MQTT_BENCH_SCALE=0.2 for a quicker, noisier run"
                );
                return;
            }
            other => panic!("unknown argument {other:?} (try --help)"),
        }
    }
    if builds.is_empty() {
        builds.push(("edge-broker".to_owned(), None));
    }
    if let Some(secs) = gateway_secs {
        let rows = gateway(&builds, mosquitto, secs, &gateway_cases);
        println!(
            "| broker | PUBACKs | device bytes / payload | device GB/day | ack p50 ms | ack p99 ms |"
        );
        println!("|---|---:|---:|---:|---:|---:|");
        for row in &rows {
            println!("| {} | {} |", row.name, row.cells.join(" | "));
        }
        println!(
            "\nReference gateway: 50 QoS 1 publishers x 1 msg/s x {PAYLOAD} B, device bytes over \
             {secs} s after a {GATEWAY_WARM_UP} s warm-up (payload {:.2} GB/day); device = the \
             block device under {}",
            50.0 * PAYLOAD as f64 * 86_400.0 / 1e9,
            std::env::temp_dir().display()
        );
        if let Some(path) = &results {
            write_results(path, "flash", &tag, &rows);
        }
        return;
    }
    let limits = "max_connections = 5000\nmax_queued_messages = 100000\nmax_queued_bytes = \"64MiB\"\nmax_queued_bytes_total = \"64MiB\"\n";
    let mosq_limits = "max_queued_messages 100000\nmax_inflight_messages 100\n";
    let mut rows = Vec::new();
    for (label, binary) in &builds {
        rows.push(edge(
            binary.as_deref(),
            &format!("[mqtt]\n{limits}\n[log]\nfsync = \"never\"\n"),
            &format!("{label}, local topic (no log)"),
            &format!("{label}/local"),
            scale,
        ));
        rows.push(edge(
            binary.as_deref(),
            &format!(
                "[mqtt]\n{limits}\n[log]\nfsync = \"always\"\nsegment_bytes = \"64MiB\"\n\
                 max_bytes = \"4GiB\"\n\n[[route]]\nmqtt = \"bench/#\"\nkafka_topic = \"bench\"\n"
            ),
            &format!("{label}, routed, fsync=always"),
            &format!("{label}/routed"),
            scale,
        ));
    }
    let references: &[(&str, &str, &str)] = if mosquitto {
        &[
            (
                "mosquitto 2.0.11, persistence false",
                "mosquitto/nopersist",
                "persistence false\n",
            ),
            (
                "mosquitto 2.0.11, persistence true",
                "mosquitto/persist",
                "persistence true\npersistence_location ./\nautosave_interval 1\n",
            ),
        ]
    } else {
        &[]
    };
    for &(name, key, extra) in references {
        let mosquitto = Mosquitto::start(&format!("{extra}{mosq_limits}"));
        rows.push(run(name, key, mosquitto.addr, mosquitto.pid(), scale));
    }
    let header = [
        "broker",
        "QoS0 1→1",
        "QoS0 10→1",
        "QoS1 1→1",
        "QoS1 10→1",
        "PUBACK p50/p99 µs",
        "fdatasync p50/p99 µs",
        "RSS idle MB",
        "RSS 1000 idle MB",
        "RSS after MB",
    ];
    println!("| {} |", header.join(" | "));
    println!("|{}", "---|".repeat(header.len()));
    for row in &rows {
        println!("| {} | {} |", row.name, row.cells.join(" | "));
    }
    if let Some(path) = &results {
        write_results(path, "mqtt", &tag, &rows);
    }
    println!(
        "\n200-byte payloads, msg/s delivered to one subscriber (percent delivered if below 100); \
         scale {scale}"
    );
}
