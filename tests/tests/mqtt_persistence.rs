//! MQTT state that must outlive the broker process (retained messages, persistent sessions with
//! their subscriptions and queued QoS 1 messages), and routed publishes when the log is full.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use edge_log::{Log, LogConfig};
use edge_tests::broker::Broker;
use edge_tests::mqtt::scenario;

const CONFIG: &str = "[log]\nfsync = \"always\"\n";
const STOP: Duration = Duration::from_secs(20);

#[test]
fn retained_messages_survive_a_restart() {
    let mut broker = Broker::start(CONFIG);
    scenario("retained_set", broker.mqtt_addr(), &["keep-me"]);
    assert!(broker.terminate(STOP).success());
    let dir = broker.dir.clone();
    let mut restarted = Broker::start_in(&dir, CONFIG);
    restarted.wait_for_line(
        "restored persistent MQTT sessions and retained messages",
        Duration::from_secs(1),
    );
    scenario("retained_check", restarted.mqtt_addr(), &["keep-me"]);
    assert!(restarted.terminate(STOP).success());
}

#[test]
fn persistent_sessions_survive_a_restart() {
    let mut broker = Broker::start(CONFIG);
    scenario("persist_setup", broker.mqtt_addr(), &["durable-client"]);
    assert!(broker.terminate(STOP).success());
    let dir = broker.dir.clone();
    let mut restarted = Broker::start_in(&dir, CONFIG);
    scenario("persist_check", restarted.mqtt_addr(), &["durable-client"]);
    assert!(restarted.terminate(STOP).success());
}

#[test]
fn in_flight_deliveries_are_resent_after_a_restart() {
    let mut broker = Broker::start(CONFIG);
    let out = scenario(
        "persist_inflight_setup",
        broker.mqtt_addr(),
        &["inflight-client"],
    );
    let packet_id = out["packet_id"].to_string();
    assert!(broker.terminate(STOP).success());
    let dir = broker.dir.clone();
    let mut restarted = Broker::start_in(&dir, CONFIG);
    scenario(
        "persist_inflight_check",
        restarted.mqtt_addr(),
        &["inflight-client", &packet_id],
    );
    assert!(restarted.terminate(STOP).success());
}

#[test]
fn pipelined_routed_publishes_keep_their_order_in_acks_deliveries_and_log() {
    let config =
        "[log]\nfsync = \"always\"\n\n[[route]]\nmqtt = \"ord/#\"\nkafka_topic = \"ord\"\n";
    let mut broker = Broker::start(config);
    scenario("routed_order", broker.mqtt_addr(), &["2000"]);
    assert!(broker.terminate(STOP).success());
    let (log, _) = Log::open(LogConfig::new(broker.data_dir().join("log"))).unwrap();
    let mut cursor = log.cursor("order-check").unwrap();
    let mut payloads = Vec::new();
    loop {
        let batch = cursor.try_read(10_000, 64 << 20).unwrap();
        if batch.is_empty() {
            break;
        }
        payloads.extend(
            batch
                .into_iter()
                .map(|r| String::from_utf8(r.payload.to_vec()).unwrap()),
        );
    }
    let expected: Vec<String> = (0..2000).map(|i| format!("m{i}")).collect();
    assert_eq!(
        payloads, expected,
        "the log holds the client's publishes in order"
    );
}

/// A tiny routed log that can fill up: `full/#` is routed, and a cursor that never moves
/// (created before the broker starts, like a bridge whose uplink is down) holds every segment.
fn full_log_config(when_full: &str) -> String {
    format!(
        "[log]\nfsync = \"always\"\nsegment_bytes = \"64KiB\"\nmax_bytes = \"128KiB\"\n\
         max_record_bytes = \"16KiB\"\nwhen_full = \"{when_full}\"\n\n\
         [[route]]\nmqtt = \"full/#\"\nkafka_topic = \"full\"\n"
    )
}

fn hold_log(dir: &Path) {
    let (log, _) = Log::open(LogConfig::new(dir.join("data/log"))).unwrap();
    drop(log.cursor("stalled-uplink").unwrap());
}

#[test]
fn full_log_rejects_with_0x97_in_v5_and_closes_v311() {
    let dir = tempfile::tempdir().unwrap();
    hold_log(dir.path());
    let mut broker = Broker::start_in(dir.path(), &full_log_config("reject"));
    let out = scenario("log_reject", broker.mqtt_addr(), &[]);
    eprintln!("{out}");
    assert!(out["accepted_before_full"].as_u64().unwrap() > 10, "{out}");
    assert!(broker.terminate(STOP).success());
}

#[test]
fn full_log_blocks_the_publisher_but_not_others() {
    let dir = tempfile::tempdir().unwrap();
    hold_log(dir.path());
    let mut broker = Broker::start_in(dir.path(), &full_log_config("block"));
    let out = scenario("log_block", broker.mqtt_addr(), &[]);
    eprintln!("{out}");
    assert!(out["acked_before_stall"].as_u64().unwrap() > 10, "{out}");
    // A blocked append must not hold shutdown past its drain deadline.
    assert!(broker.terminate(STOP).success());
}
