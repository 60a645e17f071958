//! Parked idle MQTT connections (`[mqtt] park_idle_after`, issue 17), end to end against the
//! real binary with real clients (the raw client of `tests/tools/mqtt_raw.py`, paho-mqtt,
//! mosquitto_pub) driven by `tests/tools/mqtt_parking.py`.
//!
//! A plain-TCP connection idle for `park_idle_after` gives up its task, timer and socket
//! registration and is watched by one shared epoll; it must be resumed by everything that can
//! concern it: its socket becoming readable or closed, a delivery to its session, a takeover
//! of its session, its keep-alive deadline, the broker stopping. Each test waits until the
//! gauge `edge_mqtt_connections_parked` shows the connections parked (polling, never a guessed
//! sleep), then does one of those things: a lost wakeup shows as an answer, a message or a
//! close that never comes. `park_idle_after = "200ms"` keeps the file quick.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use edge_tests::broker::{Broker, run_cli};
use edge_tests::mqtt::driver_scenario;
use edge_tests::pki::Pki;
use serde_json::{Value, json};

/// Parking after 200 ms of idleness.
const PARK: &str = "[mqtt]\npark_idle_after = \"200ms\"\n";

/// The harness's stop timeout: a broker must exit within it after SIGTERM.
const STOP: Duration = Duration::from_secs(20);

/// The gauge of connections parked now.
const PARKED: &str = "edge_mqtt_connections_parked";

/// Runs scenario `name` of `mqtt_parking.py` against `broker` (its MQTT listener and its
/// `/metrics`).
fn parking(broker: &Broker, name: &str, args: &[&str]) -> Value {
    let metrics = broker.listen_addr("metrics.listen").to_string();
    let mut all = vec![metrics.as_str()];
    all.extend_from_slice(args);
    driver_scenario("mqtt_parking.py", name, broker.mqtt_addr(), &all)
}

/// Starts a broker with `config`, runs one scenario per argument list, and stops the broker,
/// which must exit cleanly afterwards. Returns the observations.
fn run(config: &str, name: &str, runs: &[&[&str]]) -> Vec<Value> {
    let mut broker = Broker::start(config);
    let out = runs
        .iter()
        .map(|args| {
            let out = parking(&broker, name, args);
            eprintln!("{name} {args:?}: {out}");
            out
        })
        .collect();
    assert!(
        broker.terminate(STOP).success(),
        "the broker did not stop cleanly after {name}"
    );
    out
}

/// Waits until the gauge of parked connections reads `want`, for up to 10 s.
fn wait_parked(broker: &Broker, want: f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = broker.metric(PARKED);
        if now == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{PARKED} is {now:?} after 10 s, not {want}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Case 1: An idle client (keep alive 0, and 60 s) is parked (gauge 1, still counted in
/// `edge_connections`); three SUBSCRIBEs and a PINGREQ, each sent while it is parked, are
/// answered (SUBACK with the packet id, granted QoS 1; PINGRESP) and it is parked again after
/// each; DISCONNECT from the parked state brings both gauges to 0. With keep alive 60 s the
/// parked connection has a deadline registered that cannot be what wakes it in time.
#[test]
fn an_idle_client_is_parked_and_each_packet_wakes_it() {
    let runs: [&[&str]; 3] = [&["5", "0"], &["311", "0"], &["5", "60"]];
    for out in run(PARK, "idle_then_subscribe", &runs) {
        assert_eq!(out["suback_codes"], json!([[1], [1], [1]]), "{out}");
    }
}

/// Case 2: A parked subscriber with a persistent session and a QoS 0 and a QoS 1 subscription
/// receives every message published while it is parked (3 rounds of 10 per QoS, parked
/// again before each round), in order per subscription, at its QoS: paho-mqtt on 3.1.1 and
/// 5, which acknowledges at once, and a raw v5 client that sends its PUBACKs only a second
/// later (when the broker may have parked it again). The PUBACKs were all taken:
/// reconnecting to the session (present) redelivers nothing, and the session still routes.
#[test]
fn a_parked_subscriber_receives_every_publish_in_order_and_its_acks_are_taken() {
    let outs = run(
        PARK,
        "parked_subscriber",
        &[&["311", "paho"], &["5", "paho"], &["5", "raw"]],
    );
    for out in outs {
        assert_eq!(out["q0_received"], 30, "{out}");
        assert_eq!(out["q1_received"], 30, "{out}");
        assert_eq!(out["in_order"], true, "{out}");
        assert_eq!(out["session_present"], true, "{out}");
        assert_eq!(out["redelivered"], json!([]), "PUBACKs lost: {out}");
        assert_eq!(out["after_reconnect"], json!(["last"]), "{out}");
    }
}

/// Case 2, racing: 32 publishes spaced 0.1 to 0.3 s apart (a fixed pseudo-random sequence)
/// around the 200 ms park threshold, so deliveries keep meeting a subscriber that is just
/// parking or resuming (and PUBACKs a publisher doing the same): each arrives once, in order
/// per subscription (QoS 0 and 1, 3.1.1 and 5), and nothing is left to redeliver.
#[test]
fn deliveries_racing_the_park_threshold_all_arrive() {
    for out in run(PARK, "racing_deliveries", &[&["5", "32"], &["311", "32"]]) {
        assert_eq!(out["received"], 32, "{out}");
        assert_eq!(out["session_present"], true, "{out}");
        assert_eq!(out["redelivered"], json!([]), "PUBACKs lost: {out}");
    }
}

/// QoS 2 both ways, the client's half of each exchange sent only once both clients are
/// parked again: the publisher's PUBREL gets PUBCOMP, the subscriber's PUBREC gets PUBREL and
/// its PUBCOMP is taken (reconnecting to its persistent session finds nothing owed), on
/// MQTT 5 and 3.1.1.
#[test]
fn qos_2_exchanges_continue_from_the_parked_state() {
    for out in run(PARK, "qos2_while_parked", &[&["5"], &["311"]]) {
        assert_eq!(out["session_present"], true, "{out}");
        assert_eq!(out["redelivered"], json!([]), "{out}");
    }
}

/// Case 3a: A client with keep alive 2 s and a will that goes silent right after CONNACK (or
/// after one SUBSCRIBE) is parked (with its will subscriber: gauge 2); its keep-alive deadline
/// wakes it: the broker closes the socket (MQTT 5: DISCONNECT 0x8D first, as for an unparked
/// one) and publishes the will.
#[test]
fn a_silent_parked_client_is_disconnected_at_its_keep_alive_deadline() {
    let runs: [&[&str]; 3] = [
        &["5", "2", "nothing"],
        &["311", "2", "nothing"],
        &["5", "2", "subscribe"],
    ];
    let outs = run(PARK, "keepalive_silent", &runs);
    let rcs: Vec<&Value> = outs.iter().map(|o| &o["disconnect_rc"]).collect();
    assert_eq!(rcs, [&json!(0x8D), &Value::Null, &json!(0x8D)], "{outs:?}");
    for out in outs {
        assert_eq!(out["wills"], json!(["silent-gone"]), "{out}");
    }
}

/// Case 3b: A client with keep alive 1 s that sends PINGREQ every 0.5 s, each only once the gauge
/// shows it parked, gets PINGRESP six times and stays connected (3 s in all: past 1.5 × keep
/// alive, so each ping must move the parked connection's deadline).
#[test]
fn a_parked_client_that_pings_stays_connected_across_park_cycles() {
    for out in run(PARK, "keepalive_pings", &[&["5"], &["311"]]) {
        assert_eq!(out["pingresps"], 6, "{out}");
    }
}

/// Case 4: A second connection with the client id of a parked one: the parked one is closed
/// (MQTT 5: DISCONNECT 0x8E; 3.1.1: the socket closed, no DISCONNECT) and its will published;
/// the second gets its CONNACK (session present when the session was persistent, not when it
/// was clean) and then the session's deliveries.
#[test]
fn a_takeover_closes_the_parked_connection() {
    let outs = run(
        PARK,
        "takeover",
        &[
            &["5", "persistent"],
            &["311", "persistent"],
            &["5", "clean"],
        ],
    );
    let rcs: Vec<&Value> = outs.iter().map(|o| &o["old_disconnect_rc"]).collect();
    assert_eq!(rcs, [&json!(0x8E), &Value::Null, &json!(0x8E)], "{outs:?}");
    let present: Vec<&Value> = outs.iter().map(|o| &o["session_present"]).collect();
    assert_eq!(
        present,
        [&json!(true), &json!(true), &json!(false)],
        "{outs:?}"
    );
    for out in &outs {
        assert_eq!(
            out["new_connection_got"],
            json!(["after takeover"]),
            "{out}"
        );
    }
    // The old connection's will, as for an unparked one (mqtt_conformance.rs, takeover).
    for out in &outs {
        assert_eq!(out["wills"], json!(["gone"]), "{out}");
    }
}

/// Case 5: SIGTERM with four parked clients (three MQTT 5, one 3.1.1): the MQTT 5 clients receive
/// DISCONNECT 0x8B (server shutting down), the 3.1.1 client sees its socket closed, and the
/// broker exits 0 within the stop timeout.
#[test]
fn sigterm_closes_parked_connections_and_the_broker_exits_cleanly() {
    let mut broker = Broker::start(PARK);
    let (addr, metrics) = (broker.mqtt_addr(), broker.listen_addr("metrics.listen"));
    let driver = std::thread::spawn(move || {
        let metrics = metrics.to_string();
        driver_scenario(
            "mqtt_parking.py",
            "shutdown",
            addr,
            &[metrics.as_str(), "3", "1"],
        )
    });
    wait_parked(&broker, 4.0);
    let status = broker.terminate(STOP);
    assert!(status.success(), "exit status {status}");
    let out = driver.join().expect("the shutdown scenario");
    eprintln!("shutdown: {out}");
    assert_eq!(
        out["closed"],
        json!([
            {"v5": true, "rc": 0x8B},
            {"v5": true, "rc": 0x8B},
            {"v5": true, "rc": 0x8B},
            {"v5": false, "rc": null},
        ]),
        "{out}"
    );
}

/// Case 6: A parked client with a will closes its socket without DISCONNECT (an orderly close, or
/// a reset with SO_LINGER 0): the will is published to a subscriber, and the parked gauge and
/// `edge_connections{protocol="mqtt"}` drop from 2 to 1.
#[test]
fn a_parked_client_closing_its_socket_publishes_its_will() {
    let outs = run(
        PARK,
        "close_without_disconnect",
        &[&["5", "fin"], &["5", "rst"], &["311", "fin"]],
    );
    let wills: Vec<&Value> = outs.iter().map(|o| &o["wills"]).collect();
    assert_eq!(
        wills,
        [
            &json!(["fin-gone"]),
            &json!(["rst-gone"]),
            &json!(["fin-gone"])
        ],
        "{outs:?}"
    );
}

/// Case 7: 300 idle subscribers of one topic (MQTT 5 and 3.1.1, QoS 0 and 1) are all parked
/// (gauge 300, all counted open); one mosquitto_pub publish reaches every one of them exactly
/// once, at its QoS; then all are parked again. Then 10 rounds of one QoS 0 publish, each
/// 180 to 220 ms after the one before (around the 200 ms threshold, once all got it): every
/// round reaches all 300, parked, parking or just resumed.
#[test]
fn three_hundred_parked_subscribers_all_receive_one_publish() {
    let out = run(PARK, "many_parked", &[&["300", "10", "0.2"]]);
    assert_eq!(out[0]["delivered"], 300, "{}", out[0]);
}

/// Case 8: `park_idle_after = "0s"` turns parking off: an idle client stays unparked (the gauge,
/// sampled every 0.1 s for 6 s, longer than the default of 5 s, reads 0 each time) and still
/// receives, and answers PINGREQ.
#[test]
fn park_idle_after_zero_turns_parking_off() {
    let out = run(
        "[mqtt]\npark_idle_after = \"0s\"\n",
        "never_parked",
        &[&["6"]],
    );
    assert_eq!(out[0]["max_parked"], 0.0, "{}", out[0]);
    assert!(out[0]["samples"].as_u64().unwrap() > 0, "{}", out[0]);
}

/// Parking is on by default (`park_idle_after` unset: 5 s): an idle client gets parked.
#[test]
fn idle_clients_are_parked_by_default() {
    run("", "parks_eventually", &[&["20"]]);
}

/// TLS and WebSocket connections are never parked: beside two idle TCP clients (parked:
/// gauge 2), idle paho clients over TLS and over WebSockets leave the gauge at 2 for 2 s, and
/// still receive.
#[test]
fn tls_and_websocket_connections_are_never_parked() {
    let pki = Pki::new();
    let mut broker = Broker::start(&format!(
        "{PARK}ws_listen = \"127.0.0.1:0\"\ntls_listen = \"127.0.0.1:0\"\n\
         tls_cert = \"{}\"\ntls_key = \"{}\"\n",
        pki.path("server.crt").display(),
        pki.path("server.key").display()
    ));
    let ws = broker.listen_addr("mqtt.ws_listen").port().to_string();
    let tls = broker.listen_addr("mqtt.tls_listen").port().to_string();
    let ca = pki.path("ca.crt").display().to_string();
    let out = parking(
        &broker,
        "tls_and_websocket_not_parked",
        &[ws.as_str(), tls.as_str(), ca.as_str(), "2"],
    );
    assert!(out["samples"].as_u64().unwrap() > 0, "{out}");
    assert!(broker.terminate(STOP).success());
}

/// Case 9: `edge-broker check` refuses `park_idle_after = "soon"` as a bad duration of
/// `mqtt.park_idle_after` (not as an unknown key), and accepts "200ms" and "0s".
#[test]
fn a_bad_park_idle_after_fails_the_check_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let check = |value: &str| {
        let path = dir.path().join("edge-broker.toml");
        std::fs::write(&path, format!("[mqtt]\npark_idle_after = {value}\n")).unwrap();
        let path = path.to_str().unwrap().to_owned();
        run_cli(&["check", "--config", path.as_str()], &[])
    };
    let bad = check("\"soon\"");
    assert_ne!(bad.code, Some(0), "\"soon\" was accepted: {}", bad.stdout);
    assert!(
        bad.stderr.contains("mqtt.park_idle_after"),
        "the error does not name mqtt.park_idle_after: {}",
        bad.stderr
    );
    assert!(
        bad.stderr.contains("invalid duration \"soon\"") && !bad.stderr.contains("unknown field"),
        "not refused as a bad duration: {}",
        bad.stderr
    );
    for good in ["\"200ms\"", "\"0s\""] {
        let out = check(good);
        assert_eq!(out.code, Some(0), "{good} refused: {}", out.stderr);
    }
}
