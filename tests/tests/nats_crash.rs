//! Crash safety of durable NATS acks: a nats-py publisher records every `js.publish` ack it
//! got, the broker is SIGKILLed mid-stream, and every acknowledged seq must be in the log (read
//! with edge-log after the broker is dead) with the payload that was acknowledged for it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod nats_support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use edge_tests::broker::Broker;
use edge_tests::peers;
use nats_support::{nats_url, read_log};

#[test]
fn every_acknowledged_publish_survives_sigkill() {
    let mut broker = Broker::start(
        "[log]\nfsync = \"always\"\n\n[[route]]\nnats = \"crash.>\"\nkafka_topic = \"crash\"\n",
    );
    let acked_file = broker.dir.join("acked.txt");
    let mut publisher = Command::new(peers::python())
        .arg(nats_support::script())
        .args([
            "crash",
            "--url",
            &nats_url(&broker),
            "--subject",
            "crash.test",
        ])
        .args([
            "--count",
            "10000000",
            "--acked",
            acked_file.to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(publisher.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "STARTED", "publisher did not get going");
    std::thread::sleep(Duration::from_millis(800));
    broker.kill();
    let status = publisher.wait().unwrap();
    assert!(status.success(), "publisher failed: {status}");

    let acked: BTreeMap<u64, String> = std::fs::read_to_string(&acked_file)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(seq, payload)| (seq.parse().unwrap(), payload.to_owned()))
        .collect();
    assert!(
        acked.len() >= 200,
        "too few acks before the kill: {}",
        acked.len()
    );

    let records = read_log(&broker.data_dir());
    let stored: BTreeMap<u64, String> = records
        .iter()
        .map(|r| (r.offset, String::from_utf8_lossy(&r.payload).into_owned()))
        .collect();
    let missing: Vec<_> = acked
        .iter()
        .filter(|(seq, payload)| stored.get(seq) != Some(payload))
        .take(5)
        .collect();
    assert!(
        missing.is_empty(),
        "{} acked, {} stored; acknowledged but lost or different: {missing:?}",
        acked.len(),
        stored.len()
    );
    // The broker restarts on the same data and keeps appending after the survivors.
    let mut again = Broker::start_in(
        &broker.dir,
        "[log]\nfsync = \"always\"\n\n[[route]]\nnats = \"crash.>\"\nkafka_topic = \"crash\"\n",
    );
    let got = nats_support::scenario(&[
        "js",
        "--url",
        &nats_url(&again),
        "--subject",
        "crash.after",
        "--count",
        "1",
    ]);
    assert_eq!(got["acks"][0]["seq"].as_u64().unwrap(), stored.len() as u64);
    assert!(again.terminate(Duration::from_secs(25)).success());
}
