//! MQTT 3.1.1 and 5 behaviour of edge-broker, checked end to end with real clients (paho-mqtt,
//! mosquitto_pub, and a raw-socket client for exact bytes) driven by
//! `tests/tools/mqtt_scenarios.py`. Each scenario asserts inside the driver and fails with its
//! reason; scenarios that compare with Mosquitto live in `mqtt_differential.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use edge_tests::broker::Broker;
use edge_tests::mqtt::scenario;
use edge_tests::peers::program;

/// Short limits so timeouts are observable quickly.
const CONFIG: &str = "[mqtt]\nconnect_timeout = \"2s\"\n\n[log]\nfsync = \"never\"\n";

fn run(name: &str, args: &[&str]) -> serde_json::Value {
    run_with(CONFIG, name, args)
}

fn run_with(config: &str, name: &str, args: &[&str]) -> serde_json::Value {
    let mut broker = Broker::start(config);
    let result = scenario(name, broker.mqtt_addr(), args);
    assert!(
        broker
            .terminate(std::time::Duration::from_secs(20))
            .success(),
        "broker did not stop cleanly after {name}"
    );
    result
}

#[test]
fn paho_v5_and_v311_qos_0_1_2_both_directions() {
    run("paho_roundtrip", &["5"]);
    run("paho_roundtrip", &["311"]);
}

#[test]
fn mosquitto_clients_v5_and_v311() {
    program("mosquitto_sub", "mosquitto-clients");
    run("mosquitto_clients", &["mqttv5"]);
    run("mosquitto_clients", &["mqttv311"]);
}

#[test]
fn raw_packet_id_flows_v5_and_v311() {
    run("qos_flows", &["5"]);
    run("qos_flows", &["311"]);
}

#[test]
fn client_id_assignment() {
    let out = run("client_ids", &[]);
    assert_eq!(out["v311_refused_rc"], 2);
}

#[test]
fn clean_session_v311() {
    run("clean_session", &[]);
}

#[test]
fn session_expiry_v5() {
    run("session_expiry", &[]);
}

#[test]
fn keep_alive_is_enforced_at_one_and_a_half_times() {
    run("keepalive", &["5"]);
    run("keepalive", &["311"]);
}

/// `[mqtt] max_keepalive` (Mosquitto's name): MQTT 5 clients are told Server Keep Alive and
/// held to it; a 3.1.1 client keeps its own, as with Mosquitto 2.0.11 (which answers 3.1.1
/// clients with keep alive 0, 5 or 60 under `max_keepalive 10` with CONNACK 0 and no change).
/// The first spelling, `max_keep_alive`, still works, with a deprecation warning.
#[test]
fn server_keep_alive_lowers_the_clients() {
    let out = run_with(
        "[mqtt]\nmax_keepalive = \"2s\"\n",
        "server_keep_alive",
        &["2"],
    );
    assert_eq!(out["v311_keepalive_60_open_after_4s"], true, "{out}");
    let mut broker = Broker::start("[mqtt]\nmax_keep_alive = \"2s\"\n");
    broker.wait_for_line(
        "mqtt.max_keep_alive is deprecated",
        std::time::Duration::from_secs(5),
    );
    scenario("server_keep_alive", broker.mqtt_addr(), &["2"]);
    assert!(
        broker
            .terminate(std::time::Duration::from_secs(20))
            .success()
    );
}

#[test]
fn session_takeover_closes_the_old_connection_with_0x8e() {
    let out = run("takeover", &["5"]);
    assert_eq!(out["old_disconnect_rc"], 0x8E, "{out}");
    assert_eq!(out["session_present"], true, "{out}");
    assert_eq!(out["wills"], serde_json::json!(["gone"]), "{out}");
    // 3.1.1: the old connection is closed (no DISCONNECT exists) and its will is published,
    // as for any connection closed without DISCONNECT (§3.1.2.5).
    let out = run("takeover", &["311"]);
    assert_eq!(out["session_present"], true, "{out}");
    assert_eq!(out["old_disconnect_rc"], serde_json::Value::Null, "{out}");
    assert_eq!(out["wills"], serde_json::json!(["gone"]), "{out}");
}

#[test]
fn anonymous_clients_and_wrong_passwords_refused_when_not_allowed() {
    program("mosquitto_pub", "mosquitto-clients");
    let dir = tempfile::tempdir().unwrap();
    let passwd = dir.path().join("passwd");
    let status = std::process::Command::new(program("mosquitto_passwd", "mosquitto"))
        .arg("-c")
        .arg("-b")
        .arg(&passwd)
        .args(["sensor", "secret"])
        .status()
        .unwrap();
    assert!(status.success());
    let config = format!(
        "[mqtt]\nallow_anonymous = false\n[auth]\npassword_file = \"{}\"\n",
        passwd.display()
    );
    run_with(&config, "auth", &[]);
}

#[test]
fn unacknowledged_deliveries_are_resent_with_dup_after_reconnect() {
    run("redelivery_dup", &["311"]);
    run("redelivery_dup", &["5"]);
}

#[test]
fn will_delay_interval() {
    run("will_delay", &[]);
}

#[test]
fn topic_aliases_both_directions() {
    run_with("[mqtt]\ntopic_alias_maximum = 4\n", "topic_alias", &[]);
}

/// More QoS 1/2 publishes than the Receive Maximum announced (`mqtt.max_inflight`) get
/// DISCONNECT 0x93, as an MQTT 5 conformance client expects; once the connection merely
/// stopped being read. Routed (acks wait for the log) and local publishes, QoS 1 and 2.
#[test]
fn a_client_beyond_the_receive_maximum_gets_disconnect_0x93() {
    let config = "[mqtt]\nmax_inflight = 5\n\n[log]\nfsync = \"always\"\n\n\
                  [[route]]\nmqtt = \"rmf/#\"\nkafka_topic = \"t\"\n";
    let mut broker = Broker::start(config);
    for (qos, topic) in [
        ("1", "rmf/t"),
        ("2", "rmf/t"),
        ("1", "local/t"),
        ("2", "local/t"),
    ] {
        let out = scenario("receive_maximum_flood", broker.mqtt_addr(), &[qos, topic]);
        assert_eq!(out["receive_maximum"], 5, "{out}");
        assert_eq!(out["disconnect"], 0x93, "QoS {qos} to {topic}: {out}");
    }
    assert!(
        broker
            .terminate(std::time::Duration::from_secs(20))
            .success()
    );
}

#[test]
fn receive_maximum_limits_deliveries_in_flight() {
    run("receive_maximum", &[]);
}

#[test]
fn maximum_packet_size_both_directions() {
    run_with(
        "[mqtt]\nmax_packet_size = \"1KiB\"\n",
        "max_packet",
        &["1024"],
    );
}

#[test]
fn resend_respects_the_new_maximum_packet_size() {
    run("resend_too_large", &[]);
}

#[test]
fn message_expiry_interval() {
    run("message_expiry", &[]);
}

#[test]
fn an_expired_message_in_flight_is_not_resent() {
    run("expired_in_flight", &[]);
}

/// Deliveries queued for a session that ends are counted in `/metrics` as dropped.
#[test]
fn deliveries_queued_when_a_session_ends_are_counted_as_dropped() {
    let mut broker = Broker::start(CONFIG);
    let sample = "edge_messages_dropped_total{protocol=\"mqtt\",reason=\"session_ended\"}";
    assert_eq!(broker.metric(sample), Some(0.0));
    let out = scenario("session_end_drops", broker.mqtt_addr(), &[]);
    let queued = out["queued"].as_f64().unwrap();
    // The DISCONNECT is processed after the scenario returns: wait for the count.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while broker.metric(sample) != Some(queued) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(broker.metric(sample), Some(queued));
    assert!(
        broker
            .terminate(std::time::Duration::from_secs(20))
            .success()
    );
}

#[test]
fn publish_properties_pass_through() {
    let out = run("properties", &[]);
    assert_eq!(out["bad_utf8_payload_rc"], 0x99, "{out}");
}

#[test]
fn request_response_information() {
    run("response_info", &[]);
}

#[test]
fn bad_input_closes_only_the_offending_connection() {
    let out = run("bad_input", &[]);
    eprintln!("{out}");
}

#[test]
fn connections_over_the_limit_are_refused_as_server_busy() {
    run_with("[mqtt]\nmax_connections = 2\n", "server_busy", &["2"]);
}

#[test]
fn shutdown_tells_v5_clients_server_shutting_down() {
    let mut broker = Broker::start(CONFIG);
    let addr = broker.mqtt_addr();
    let driver = std::thread::spawn(move || scenario("shutdown_notice", addr, &[]));
    // The driver connects within a second (python startup included).
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(
        broker
            .terminate(std::time::Duration::from_secs(20))
            .success()
    );
    driver.join().expect("scenario");
}

#[test]
fn silent_connections_are_closed_after_connect_timeout() {
    // The driver checks the close came after 2 s (minus scheduling slack) and not much later.
    let out = run("connect_timeout", &["2"]);
    assert!(out["closed_after"].as_u64().is_some(), "{out}");
}
