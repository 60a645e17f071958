//! The `$SYS` tree, read by real clients: paho-mqtt (over WebSockets and TCP,
//! `tests/tools/ws_clients.py`) and `mosquitto_sub`, against the real `edge-broker` binary with
//! `mqtt.sys_interval = "1s"`; who may read it is decided by a Mosquitto ACL file.
//!
//! Needs mosquitto and mosquitto-clients (`./tests/run.sh` installs them).

// Helpers outside #[test] fns fail the test by panicking, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::process::Command;

use edge_tests::broker::Broker;
use edge_tests::mqtt::paho;
use edge_tests::peers::program;
use serde_json::{Value, json};

/// The received messages of a `recv` step as topic → (payload, retain): the first message of
/// each topic, or with `last` the last one.
fn by_topic(messages: &Value, last: bool) -> HashMap<String, (String, bool)> {
    let mut topics = HashMap::new();
    for m in messages.as_array().unwrap() {
        let value = (
            m["payload"].as_str().unwrap().to_owned(),
            m["retain"].as_bool().unwrap(),
        );
        let topic = m["topic"].as_str().unwrap().to_owned();
        if last {
            topics.insert(topic, value);
        } else {
            topics.entry(topic).or_insert(value);
        }
    }
    topics
}

#[test]
fn sys_topics_are_published_retained_and_follow_the_broker() {
    let broker = Broker::start("[mqtt]\nws_listen = \"127.0.0.1:0\"\nsys_interval = \"1s\"\n");
    let ws = broker.listen_addr("mqtt.ws_listen");
    let tcp = broker.mqtt_addr();

    // A client arriving after the first round gets every topic at once, retained.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let first = paho(
        ws,
        json!({"steps": [
            {"sub": "$SYS/#", "qos": 0},
            {"recv": 0.5},
            {"pub": "sensors/a/t", "payload": "1", "qos": 1},
            {"pub": "sensors/a/t", "payload": "2", "qos": 1},
            {"recv": 2.5},
        ]}),
    );
    assert_eq!(first["rc"], 0, "{first}");
    let at_once = by_topic(&first["results"][1], false);
    for topic in [
        "$SYS/broker/version",
        "$SYS/broker/uptime",
        "$SYS/broker/clients/connected",
        "$SYS/broker/clients/total",
        "$SYS/broker/messages/received",
        "$SYS/broker/messages/sent",
        "$SYS/broker/load/messages/received/1min",
        "$SYS/broker/load/connections/15min",
        "$SYS/edge/backlog/records",
        "$SYS/edge/backlog/bytes",
        "$SYS/edge/backlog/oldest_age_seconds",
        "$SYS/edge/backlog/budget_percent",
        "$SYS/edge/backlog/uplink",
    ] {
        let (_, retained) = at_once
            .get(topic)
            .unwrap_or_else(|| panic!("{topic} missing from {at_once:?}"));
        assert!(retained, "{topic} is delivered as a retained message");
    }
    assert!(
        at_once["$SYS/broker/version"]
            .0
            .starts_with("edge-broker version ")
    );
    assert!(at_once["$SYS/broker/uptime"].0.ends_with(" seconds"));
    let mut all = first["results"][1].as_array().unwrap().clone();
    all.extend(first["results"][4].as_array().unwrap().iter().cloned());
    let latest = by_topic(&Value::Array(all), true);
    assert_eq!(
        latest["$SYS/broker/clients/connected"].0, "1",
        "this client, once a round saw it"
    );
    // The next rounds publish what changed: the two publishes are counted, live (not retained).
    let later = by_topic(&first["results"][4], true);
    let (received, retained) = later
        .get("$SYS/broker/messages/received")
        .unwrap_or_else(|| panic!("no new messages/received in {later:?}"));
    assert_eq!(received, "2");
    assert!(!retained, "a live update is not flagged retained");
    assert!(later.contains_key("$SYS/broker/uptime"));

    // `#` does not match `$SYS` (MQTT §4.7.2), and clients cannot write into it.
    let everything = paho(
        tcp,
        json!({"transport": "tcp", "steps": [
            {"sub": "#", "qos": 0},
            {"pub": "$SYS/broker/version", "payload": "forged", "qos": 1},
            {"recv": 1.5},
        ]}),
    );
    let seen = by_topic(&everything["results"][2], false);
    assert!(
        seen.keys().all(|t| !t.starts_with("$SYS")),
        "# matched $SYS topics: {seen:?}"
    );
    let version = Command::new(program("mosquitto_sub", "mosquitto-clients"))
        .args(["-h", "127.0.0.1", "-p", &tcp.port().to_string()])
        .args(["-t", "$SYS/broker/version", "-C", "1", "-W", "10"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&version.stdout).starts_with("edge-broker version"),
        "the forged value did not replace the broker's: {}",
        String::from_utf8_lossy(&version.stdout)
    );
}

#[test]
fn sys_topics_reach_only_users_the_acl_lets_read_them() {
    let dir = tempfile::tempdir().unwrap();
    let passwords = dir.path().join("passwords");
    for user in ["ops", "device"] {
        let mut command = Command::new(program("mosquitto_passwd", "mosquitto"));
        if !passwords.exists() {
            command.arg("-c");
        }
        let status = command
            .arg("-b")
            .arg(&passwords)
            .args([user, "secret"])
            .status()
            .unwrap();
        assert!(status.success());
    }
    let acl = dir.path().join("acl");
    std::fs::write(
        &acl,
        "user ops\ntopic read $SYS/#\n\nuser device\ntopic readwrite sensors/#\ntopic read #\n",
    )
    .unwrap();
    let broker = Broker::start(&format!(
        "[mqtt]\nsys_interval = \"1s\"\n[auth]\npassword_file = \"{}\"\nacl_file = \"{}\"\n",
        passwords.display(),
        acl.display()
    ));
    let tcp = broker.mqtt_addr();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let read = |user: &str| {
        paho(
            tcp,
            json!({"transport": "tcp", "user": user, "password": "secret", "steps": [
                {"sub": "$SYS/broker/#", "qos": 0},
                {"recv": 2.5},
            ]}),
        )
    };
    let ops = read("ops");
    assert_eq!(ops["rc"], 0, "{ops}");
    assert!(
        by_topic(&ops["results"][1], false).contains_key("$SYS/broker/uptime"),
        "ops may read $SYS: {ops}"
    );
    let device = read("device");
    assert_eq!(device["rc"], 0, "{device}");
    assert_eq!(
        device["results"][1],
        json!([]),
        "a device whose ACL does not name $SYS reads nothing of it: {device}"
    );
}

/// `$SYS` messages are regenerated, not saved: after a restart with `sys_interval = "0s"` none
/// is left in the retained store (and none cost a journal write before).
#[test]
fn sys_messages_are_not_saved_and_interval_zero_publishes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::start_in(dir.path(), "[mqtt]\nsys_interval = \"1s\"\n");
    let session = paho(
        broker.mqtt_addr(),
        json!({"transport": "tcp", "steps": [
            {"sub": "$SYS/broker/version", "qos": 0},
            {"recv": 1.5},
        ]}),
    );
    assert_eq!(
        session["results"][1][0]["topic"], "$SYS/broker/version",
        "{session}"
    );
    // A normal retained message is saved, to show the journal works.
    let kept = Command::new(program("mosquitto_pub", "mosquitto-clients"))
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &broker.mqtt_addr().port().to_string(),
        ])
        .args(["-t", "plain/retained", "-m", "kept", "-r", "-q", "1"])
        .status()
        .unwrap();
    assert!(kept.success());
    assert!(
        broker
            .terminate(std::time::Duration::from_secs(20))
            .success()
    );
    drop(broker);

    let broker = Broker::start_in(dir.path(), "[mqtt]\nsys_interval = \"0s\"\n");
    let session = paho(
        broker.mqtt_addr(),
        json!({"transport": "tcp", "steps": [
            {"sub": "$SYS/#", "qos": 0},
            {"sub": "plain/#", "qos": 0},
            {"recv": 1.5},
        ]}),
    );
    assert_eq!(
        session["results"][2],
        json!([{"topic": "plain/retained", "payload": "kept", "retain": true}]),
        "{session}"
    );
}
