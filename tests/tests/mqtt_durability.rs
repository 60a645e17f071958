//! The promise, tested with a real MQTT client: every publish the broker acknowledged (PUBACK
//! for QoS 1, PUBREC→PUBCOMP for QoS 2) is in the log after the broker is killed mid-stream.

// Helpers outside #[test] fns fail the test by panicking, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc::channel;
use std::time::{Duration, Instant};

use edge_log::{Log, LogConfig};
use edge_tests::broker::Broker;
use edge_tests::peers::{ChildGuard, python, repo_root};

const CONFIG: &str = "[log]\nsegment_bytes = \"256KiB\"\nmax_record_bytes = \"64KiB\"\nfsync = \"always\"\n\n\
    [[route]]\nmqtt = \"sensors/#\"\nkafka_topic = \"sensors\"\n";

/// Every payload stored in the log directory, read with edge-log itself after the broker died.
fn stored_payloads(log_dir: &Path) -> BTreeSet<String> {
    let (log, _report) = Log::open(LogConfig::new(log_dir)).unwrap();
    let mut cursor = log.cursor("test-verify").unwrap();
    let mut payloads = BTreeSet::new();
    loop {
        let batch = cursor.try_read(10_000, 64 << 20).unwrap();
        if batch.is_empty() {
            break;
        }
        for record in batch {
            payloads.insert(String::from_utf8(record.payload.to_vec()).unwrap());
        }
    }
    payloads
}

fn kill_mid_stream_and_check(qos: u8, version: &str) {
    let mut broker = Broker::start(CONFIG);
    let addr = broker.mqtt_addr();
    let mut publisher = Command::new(python())
        .arg(repo_root().join("tests/tools/mqtt_pub_acked.py"))
        .args([
            &addr.ip().to_string(),
            &addr.port().to_string(),
            "sensors/crash",
            "200000",
        ])
        .args([
            "--qos",
            &qos.to_string(),
            "--version",
            version,
            "--inflight",
            "100",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = publisher.stdout.take().unwrap();
    let mut publisher = ChildGuard(publisher);
    let (sender, acks) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(n) = line.strip_prefix("ACK ") {
                let _ = sender.send(n.parse::<u64>().unwrap());
            }
        }
    });

    // Let a few thousand acknowledgements through, then cut the power to the process.
    let mut acked = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.len() < 3_000 {
        assert!(
            Instant::now() < deadline,
            "only {} acks in 60 s",
            acked.len()
        );
        if let Ok(n) = acks.recv_timeout(Duration::from_secs(1)) {
            acked.insert(n);
        }
    }
    broker.kill();
    let exit_deadline = Instant::now() + Duration::from_secs(20);
    while publisher.0.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < exit_deadline,
            "publisher did not notice the broker died"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    acked.extend(acks.try_iter());

    let stored = stored_payloads(&broker.data_dir().join("log"));
    let missing: Vec<u64> = acked
        .iter()
        .copied()
        .filter(|n| !stored.contains(&format!("msg-{n}")))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged messages are not in the log (first: {:?})",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(10)]
    );
    eprintln!(
        "QoS {qos} v{version}: {} acknowledged, {} stored, none lost",
        acked.len(),
        stored.len()
    );

    // The broker restarts on the same data and recovers cleanly.
    let dir = broker.dir.clone();
    let mut restarted = Broker::start_in(&dir, CONFIG);
    restarted.wait_for_line("log recovered", Duration::from_secs(1));
    assert!(restarted.terminate(Duration::from_secs(25)).success());
}

#[test]
fn acknowledged_qos1_publishes_survive_sigkill() {
    kill_mid_stream_and_check(1, "311");
}

#[test]
fn acknowledged_qos2_publishes_survive_sigkill() {
    kill_mid_stream_and_check(2, "5");
}
