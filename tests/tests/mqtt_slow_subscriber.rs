//! QoS 0 to a subscriber slower than its publisher (`[mqtt] slow_subscriber_wait`, issue 17),
//! against the real binary with real clients: the publisher is paced (its socket not read)
//! while the subscriber's queue is full, for a bounded time, instead of the deliveries being
//! dropped; a subscriber that stopped reading holds the publisher once, and every drop is
//! counted.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use edge_tests::broker::Broker;
use edge_tests::mqtt::{Mosquitto, hostile};
use edge_tests::peers::{ChildGuard, program};

const STOP: Duration = Duration::from_secs(20);

/// `mosquitto_pub -l` sending `lines` lines at QoS 0 to one `mosquitto_sub` (the bench's
/// shape, `bench/run.sh --only qos0`): how many lines the subscriber received (it ends at
/// `lines`, or once nothing arrived for 2 s).
fn lines_through(addr: SocketAddr, lines: usize) -> usize {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("lines");
    let text: String = (0..lines)
        .map(|i| format!("line {i:06} of the QoS 0 fan-out test, padded to look like a reading\n"))
        .collect();
    std::fs::write(&input, text).unwrap();
    let received = dir.path().join("received");
    let port = addr.port().to_string();
    let count = lines.to_string();
    let base = ["-h", "127.0.0.1", "-p", port.as_str()];
    let sub = Command::new(program("mosquitto_sub", "mosquitto-clients"))
        .args(base)
        .args(["-t", "slow/#", "-q", "0", "-C", count.as_str()])
        .stdout(std::fs::File::create(&received).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn mosquitto_sub");
    let mut sub = ChildGuard(sub);
    std::thread::sleep(Duration::from_millis(500));
    let published = Command::new(program("mosquitto_pub", "mosquitto-clients"))
        .args(base)
        .args(["-t", "slow/line", "-q", "0", "-l"])
        .stdin(std::fs::File::open(&input).unwrap())
        .status()
        .expect("run mosquitto_pub");
    assert!(published.success(), "mosquitto_pub: {published}");
    let count_lines = || {
        std::fs::read(&received)
            .map(|b| b.iter().filter(|&&c| c == b'\n').count())
            .unwrap_or(0)
    };
    let (mut last, mut since) = (usize::MAX, Instant::now());
    while sub.0.try_wait().unwrap().is_none() {
        let n = count_lines();
        if n != last {
            (last, since) = (n, Instant::now());
        } else if since.elapsed() > Duration::from_secs(2) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(sub);
    count_lines()
}

/// The shape: `mosquitto_pub -l` 100,000 lines into one `mosquitto_sub`. Mosquitto
/// delivers every line (its one thread reads the publisher only as fast as it writes to the
/// subscriber). edge-broker dropped 50–70 % of them when the subscriber's queue (1,000
/// messages) was full; now the publisher waits for room, and delivers as many as Mosquitto.
#[test]
fn a_slower_subscriber_receives_what_mosquitto_delivers() {
    const LINES: usize = 100_000;
    let mosquitto = Mosquitto::start("");
    let anchor = lines_through(mosquitto.addr, LINES);
    drop(mosquitto);
    let mut broker = Broker::start("");
    let delivered = lines_through(broker.mqtt_addr(), LINES);
    let dropped = dropped(&broker, &["queue_full", "queue_bytes", "queue_budget"]);
    eprintln!("Mosquitto delivered {anchor}, edge-broker {delivered} (dropped {dropped})");
    assert!(
        delivered >= anchor,
        "edge-broker delivered {delivered} of {LINES}, Mosquitto {anchor}; dropped {dropped}"
    );
    assert_eq!(dropped, 0.0);
    assert!(broker.terminate(STOP).success());
}

/// Runs `tests/tools/hostile.py slow_subscriber` (a fast subscriber, a slow or never-reading
/// one, a QoS 0 publisher) against `broker`.
fn slow_subscriber(broker: &Broker, mode: &str, count: usize, size: usize) -> serde_json::Value {
    let (count, size) = (count.to_string(), size.to_string());
    hostile(
        broker.pid(),
        broker.mqtt_addr(),
        &["slow_subscriber", mode, &count, &size],
    )
}

/// `edge_mqtt_publisher_waits_total{outcome}`.
fn waits(broker: &Broker, outcome: &str) -> f64 {
    broker
        .metric(&format!(
            "edge_mqtt_publisher_waits_total{{outcome=\"{outcome}\"}}"
        ))
        .unwrap()
}

/// MQTT deliveries dropped for the given reasons (`edge_messages_dropped_total`).
fn dropped(broker: &Broker, reasons: &[&str]) -> f64 {
    reasons
        .iter()
        .map(|reason| {
            broker
                .metric(&format!(
                    "edge_messages_dropped_total{{protocol=\"mqtt\",reason=\"{reason}\"}}"
                ))
                .unwrap()
        })
        .sum()
}

/// Drops of a full session queue, in messages or bytes.
const QUEUE_FULL: &[&str] = &["queue_full", "queue_bytes"];

/// A `slow_subscriber never` run (a fast subscriber, one that never reads, 5,000 × 1 KB) on a
/// broker with `config`. Each of the 10,000 deliveries was sent, or dropped and counted,
/// except what the stalled one's queue held when its clean session ended: at most
/// `max_queued_bytes` (1 MiB) of it.
fn never_reading(config: &str) -> (Broker, serde_json::Value) {
    const COUNT: usize = 5_000;
    let broker = Broker::start(config);
    let out = slow_subscriber(&broker, "never", COUNT, 1000);
    let sent = broker
        .metric("edge_messages_sent_total{protocol=\"mqtt\",qos=\"0\"}")
        .unwrap();
    let dropped = dropped(&broker, QUEUE_FULL);
    assert!(dropped > 0.0, "{out}");
    // What a queued delivery is charged: topic, payload and 256 bytes of bookkeeping.
    let cost = ("pace/t".len() + 1000 + 256) as f64;
    let held = 2.0 * COUNT as f64 - sent - dropped;
    assert!(
        (0.0..=(1u64 << 20) as f64 / cost).contains(&held),
        "sent {sent}, dropped {dropped}, neither {held}: {out}"
    );
    (broker, out)
}

/// A fast subscriber beside one that reads slower than the publisher sends (10,000 × 1 KB,
/// more than the kernel's socket buffers and the 1 MiB queue hold): the publisher is paced to
/// the slow one (it waited for room, never in vain), so both receive everything and nothing
/// is dropped. What the fast one pays is the slow one's pace, no loss. (Dropping at once, the
/// slow one lost over half.)
#[test]
fn a_slow_subscriber_paces_the_publisher_and_the_fast_one_loses_nothing() {
    const COUNT: usize = 10_000;
    // Room shows each time its socket's unsent bytes fell below half `socket_unsent_limit`
    // (~7 ms apart at this reader's 2 MB/s; ~1 s with the kernel's autotuned 4 MiB buffer
    // before the limit), more on a loaded machine. The wait covers that.
    let mut broker = Broker::start("[mqtt]\nslow_subscriber_wait = \"5s\"\n");
    let out = slow_subscriber(&broker, "slow", COUNT, 1000);
    assert_eq!(out["fast"], COUNT, "{out}");
    assert_eq!(out["slow"], COUNT, "{out}");
    assert_eq!(dropped(&broker, QUEUE_FULL), 0.0, "{out}");
    assert!(
        waits(&broker, "kept") >= 1.0,
        "the publisher was never paced? {out}"
    );
    assert_eq!(waits(&broker, "dropped"), 0.0, "{out}");
    assert!(broker.terminate(STOP).success());
}

/// A fast subscriber beside one that never reads: the publisher waits for the stalled one
/// once (until `slow_subscriber_wait` after it last made room), not at every publish; after
/// that the stalled one's deliveries are dropped at once and counted, the fast one receives
/// everything, and memory stays bounded by the stalled session's `max_queued_bytes` (1 MiB).
#[test]
fn a_subscriber_that_never_reads_holds_the_publisher_once() {
    let (mut broker, out) = never_reading("");
    assert_eq!(out["fast"], 5_000, "{out}");
    assert_eq!(waits(&broker, "dropped"), 1.0, "held more than once: {out}");
    let growth = out["rss_growth_kib"].as_i64().unwrap();
    assert!(growth < 32 << 10, "RSS grew {growth} KiB: {out}");
    assert!(broker.terminate(STOP).success());
}

/// `slow_subscriber_wait = "0s"` is the old policy (drop at once): the publisher never waits.
#[test]
fn a_zero_wait_drops_at_once() {
    let (mut broker, out) = never_reading("[mqtt]\nslow_subscriber_wait = \"0s\"\n");
    let waited = waits(&broker, "dropped") + waits(&broker, "kept");
    assert_eq!(waited, 0.0, "{out}");
    assert!(broker.terminate(STOP).success());
}
