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

fn legacy_sample(name: &str) -> Vec<u8> {
    std::fs::read(
        edge_tests::peers::repo_root()
            .join("edge-broker/tests/data/legacy")
            .join(name),
    )
    .unwrap()
}

fn mqtt_state_files(broker: &Broker) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(broker.data_dir().join("mqtt"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// An upgrade through the .deb: the data directory of the first release (snapshot files
/// sessions.bin / retained.bin, checked in as written by it) is migrated on the first start,
/// and the old files are kept renamed.
#[test]
fn a_data_directory_of_the_first_release_is_migrated_on_first_start() {
    let dir = tempfile::tempdir().unwrap();
    let mqtt = dir.path().join("data/mqtt");
    std::fs::create_dir_all(&mqtt).unwrap();
    for name in ["sessions.bin", "retained.bin"] {
        std::fs::write(mqtt.join(name), legacy_sample(name)).unwrap();
    }
    let config = "[mqtt]\nmax_session_expiry = \"4294967295s\"\n";
    let mut broker = Broker::start_in(dir.path(), config);
    broker.wait_for_line(
        "migrating them to the state journal",
        Duration::from_secs(1),
    );
    assert_eq!(
        mqtt_state_files(&broker),
        [
            "00000000000000000001.journal",
            "retained.bin.migrated",
            "sessions.bin.migrated"
        ]
    );
    // A restart right away (before any client) replays the journal, not the old files.
    assert!(broker.terminate(STOP).success());
    let mut broker = Broker::start_in(dir.path(), config);
    broker.wait_for_line("replayed the MQTT state journal", Duration::from_secs(1));
    scenario("legacy_sample_check", broker.mqtt_addr(), &["1"]);
    assert!(broker.terminate(STOP).success());
}

/// What a client was told is saved survives a crash right after the acknowledgement
/// (SIGKILL: the snapshot of the first release could be up to a second behind).
#[test]
fn acknowledged_session_changes_survive_a_crash() {
    for round in 0..3 {
        let mut broker = Broker::start(CONFIG);
        let cid = format!("durable-{round}");
        scenario("durable_setup", broker.mqtt_addr(), &[&cid]);
        broker.kill();
        let dir = broker.dir.clone();
        let mut restarted = Broker::start_in(&dir, CONFIG);
        scenario("durable_check", restarted.mqtt_addr(), &[&cid]);
        assert!(restarted.terminate(STOP).success());
    }
}

/// Every way a state file can be unloadable: the broker starts, the file is moved aside
/// (never deleted), the log names it and why, `/metrics` counts it, and the rest loads.
#[test]
fn unloadable_state_files_are_moved_aside_and_the_broker_starts() {
    let sessions = legacy_sample("sessions.bin");
    let retained = legacy_sample("retained.bin");
    let mut flipped = sessions.clone();
    flipped[100] ^= 0x20;
    let mut huge = sessions.clone();
    huge[12..20].copy_from_slice(&u64::MAX.to_le_bytes());
    let journal_sample = std::fs::read(
        edge_tests::peers::repo_root()
            .join("edge-broker/tests/data/state/00000000000000000001.journal"),
    )
    .unwrap();
    let mut other_version = journal_sample.clone();
    other_version[8] = 9;
    let cases: Vec<(&str, &str, Vec<u8>, &str)> = vec![
        ("damaged", "sessions.bin", flipped, "checksum mismatch"),
        (
            "truncated",
            "sessions.bin",
            sessions[..200].to_vec(),
            "length does not match",
        ),
        (
            "garbage",
            "sessions.bin",
            b"\x00garbage, not state".repeat(50),
            "wrong magic",
        ),
        ("huge length", "sessions.bin", huge, "length does not match"),
        (
            "journal garbage",
            "00000000000000000001.journal",
            b"EBSTATE\0 and then nothing valid".repeat(3),
            "bad header",
        ),
        (
            "journal of another version",
            "00000000000000000001.journal",
            other_version,
            "bad header",
        ),
    ];
    for (what, name, bytes, why) in cases {
        let dir = tempfile::tempdir().unwrap();
        let mqtt = dir.path().join("data/mqtt");
        std::fs::create_dir_all(&mqtt).unwrap();
        std::fs::write(mqtt.join(name), &bytes).unwrap();
        std::fs::write(mqtt.join("retained.bin"), &retained).unwrap();
        let mut broker = Broker::start_in(dir.path(), "");
        let line = broker.wait_for_line("cannot be loaded", Duration::from_secs(1));
        assert!(
            line.contains(&mqtt.join(name).display().to_string()) && line.contains(why),
            "{what}: the log names the file and why: {line}"
        );
        let files = mqtt_state_files(&broker);
        let aside: Vec<&String> = files
            .iter()
            .filter(|f| f.starts_with(&format!("{name}.damaged-")))
            .collect();
        assert_eq!(aside.len(), 1, "{what}: moved aside: {files:?}");
        assert_eq!(
            std::fs::read(mqtt.join(aside[0])).unwrap(),
            bytes,
            "{what}: intact"
        );
        let metrics = broker.listen_addr("metrics.listen");
        assert_eq!(
            edge_tests::kafka::metric(metrics, "edge_state_files_quarantined_total"),
            Some(1.0),
            "{what}"
        );
        // The other file still loads (with no usable journal, the legacy files are read).
        let held = scenario("retained_count", broker.mqtt_addr(), &["legacy-retained/#"]);
        assert_eq!(held["count"], 2, "{what}: {held}");
        assert!(broker.terminate(STOP).success(), "{what}");
    }
}
