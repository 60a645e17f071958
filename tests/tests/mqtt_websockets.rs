//! MQTT over WebSockets: the real `edge-broker` binary with `mqtt.ws_listen` / `ws_tls_listen`,
//! paho-mqtt's own `websockets` transport (`tests/tools/ws_clients.py`), Mosquitto's clients on
//! the TCP listener beside it, and MQTT.js in Debian's headless Chromium driven by
//! playwright-core (`tests/browser/`): a dashboard page served on 127.0.0.1 that subscribes and
//! shows a live value.
//!
//! Needs mosquitto-clients, chromium, Node.js and `npm ci` in `tests/browser`
//! (`./tests/run.sh` installs them).

// Helpers outside #[test] fns fail the test by panicking, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use edge_tests::broker::Broker;
use edge_tests::mqtt::paho;
use edge_tests::peers::{ChildGuard, program, repo_root};
use edge_tests::pki::Pki;
use serde_json::{Value, json};

fn mosquitto_pub(addr: SocketAddr, topic: &str, message: &str, retain: bool) {
    let mut command = Command::new(program("mosquitto_pub", "mosquitto-clients"));
    command
        .args(["-h", "127.0.0.1", "-p", &addr.port().to_string()])
        .args(["-q", "1", "-t", topic, "-m", message]);
    if retain {
        command.arg("-r");
    }
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "mosquitto_pub: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A `mosquitto_sub` on the TCP listener waiting for `count` messages on `topic`.
fn mosquitto_sub(addr: SocketAddr, topic: &str, count: usize) -> ChildGuard {
    ChildGuard(
        Command::new(program("mosquitto_sub", "mosquitto-clients"))
            .args(["-h", "127.0.0.1", "-p", &addr.port().to_string()])
            .args(["-q", "1", "-t", topic, "-C", &count.to_string(), "-W", "30"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    )
}

fn output_of(mut child: ChildGuard) -> String {
    let status = child.0.wait().unwrap();
    let mut out = String::new();
    child
        .0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(status.success(), "mosquitto_sub failed ({status}): {out}");
    out
}

/// Gives a TCP subscriber time to have its SUBSCRIBE acknowledged.
fn settle() {
    std::thread::sleep(Duration::from_millis(500));
}

const ROUTED: &str = "[[route]]\nmqtt = \"sensors/+/temperature\"\nkafka_topic = \"t\"\n";

#[test]
fn paho_over_websockets_and_tcp_devices_share_one_broker() {
    let broker = Broker::start(&format!("[mqtt]\nws_listen = \"127.0.0.1:0\"\n{ROUTED}"));
    let tcp = broker.mqtt_addr();
    let ws = broker.listen_addr("mqtt.ws_listen");

    // TCP → WebSocket: a retained alarm from a device reaches a WebSocket subscriber.
    mosquitto_pub(tcp, "alarms/door", "open", true);
    // WebSocket → TCP: a routed QoS 1 publish over WebSockets is stored, acknowledged and
    // delivered to a TCP subscriber.
    let tcp_sub = mosquitto_sub(tcp, "sensors/+/temperature", 1);
    settle();
    let session = paho(
        ws,
        json!({"client_id": "ws-dev-1", "steps": [
            {"sub": "alarms/#", "qos": 1},
            {"pub": "sensors/ws-1/temperature", "payload": "21.5", "qos": 1},
            {"recv": 1.0},
        ]}),
    );
    assert_eq!(session["rc"], 0, "{session}");
    assert_eq!(session["results"][0], 1, "SUBACK granted QoS 1: {session}");
    assert_eq!(session["results"][1], 0, "PUBACK success: {session}");
    assert_eq!(
        session["results"][2],
        json!([{"topic": "alarms/door", "payload": "open", "retain": true}]),
        "{session}"
    );
    assert_eq!(output_of(tcp_sub).trim(), "21.5");
    assert!(
        broker
            .metric("edge_messages_stored_total{protocol=\"mqtt\"}")
            .unwrap()
            >= 1.0,
        "the WebSocket publish went through the log"
    );

    // MQTT 3.1.1 over WebSockets too.
    let old = paho(
        ws,
        json!({"v5": false, "steps": [{"pub": "x/y", "qos": 1}]}),
    );
    assert_eq!(old["rc"], 0, "{old}");
    assert_eq!(old["results"][0], 0, "{old}");
}

/// Sends an HTTP upgrade request and returns the status line of the answer.
fn upgrade_status(addr: SocketAddr, path: &str, protocol: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Protocol: {protocol}\r\n\r\n"
    )
    .unwrap();
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).unwrap();
    line.trim().to_owned()
}

#[test]
fn a_wrong_path_or_subprotocol_is_refused_and_counted() {
    let broker = Broker::start("[mqtt]\nws_listen = \"127.0.0.1:0\"\nws_path = \"/broker\"\n");
    let ws = broker.listen_addr("mqtt.ws_listen");
    let failures = "edge_websocket_handshake_failures_total";
    assert_eq!(broker.metric(failures), Some(0.0));

    assert!(
        upgrade_status(ws, "/broker", "mqtt").starts_with("HTTP/1.1 101"),
        "the configured path is upgraded"
    );
    assert!(upgrade_status(ws, "/mqtt", "mqtt").starts_with("HTTP/1.1 404"));
    assert!(upgrade_status(ws, "/broker", "chat").starts_with("HTTP/1.1 400"));
    // Plain MQTT bytes on the WebSocket port are not an upgrade.
    let mut raw = TcpStream::connect(ws).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    raw.write_all(&[0x10, 0x0c, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60, 0, 0])
        .unwrap();
    let mut reply = Vec::new();
    let _ = raw.read_to_end(&mut reply);
    assert!(!reply.starts_with(&[0x20]), "no CONNACK: {reply:?}");

    edge_tests::kafka::wait_for_metric(
        broker.listen_addr("metrics.listen"),
        failures,
        Duration::from_secs(10),
        |v| v >= 3.0,
    );
    let wrong = paho(ws, json!({"path": "/mqtt"}));
    assert_ne!(
        wrong["rc"], 0,
        "paho on the wrong path must not connect: {wrong}"
    );
    let right = paho(ws, json!({"path": "/broker"}));
    assert_eq!(right["rc"], 0, "{right}");
}

#[test]
fn websocket_clients_count_towards_max_connections() {
    let broker = Broker::start("[mqtt]\nws_listen = \"127.0.0.1:0\"\nmax_connections = 1\n");
    let ws = broker.listen_addr("mqtt.ws_listen");
    let tcp = broker.mqtt_addr();
    let holder = mosquitto_sub(tcp, "hold/#", 1);
    edge_tests::kafka::wait_for_metric(
        broker.listen_addr("metrics.listen"),
        "edge_connections{protocol=\"mqtt\"}",
        Duration::from_secs(10),
        |v| v >= 1.0,
    );
    let refused = paho(ws, json!({}));
    assert_eq!(refused["rc"], 0x89, "CONNACK Server busy: {refused}");
    drop(holder);
    edge_tests::kafka::wait_for_metric(
        broker.listen_addr("metrics.listen"),
        "edge_connections{protocol=\"mqtt\"}",
        Duration::from_secs(10),
        |v| v == 0.0,
    );
    let admitted = paho(ws, json!({}));
    assert_eq!(admitted["rc"], 0, "{admitted}");
}

#[test]
fn secure_websockets_use_the_mqtt_certificate() {
    let pki = Pki::new();
    let broker = Broker::start(&format!(
        "[mqtt]\nws_tls_listen = \"127.0.0.1:0\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
        pki.path("server.crt").display(),
        pki.path("server.key").display()
    ));
    let wss = broker.listen_addr("mqtt.ws_tls_listen");
    let ca = pki.path("ca.crt");
    let session = paho(
        wss,
        json!({"ca": ca, "steps": [
            {"sub": "dash/#", "qos": 1},
            {"pub": "dash/t", "payload": "over-wss", "qos": 1},
            {"recv": 0.5},
        ]}),
    );
    assert_eq!(session["rc"], 0, "{session}");
    assert_eq!(session["results"][2][0]["payload"], "over-wss", "{session}");
    let untrusted = paho(wss, json!({"ca": pki.path("other-ca.crt")}));
    assert!(
        untrusted["error"]
            .as_str()
            .is_some_and(|e| e.contains("SSL")),
        "a client that does not trust the CA must not connect: {untrusted}"
    );
}

/// The browser side: `tests/browser/dashboard.mjs` serves `dashboard.html` (MQTT.js) on
/// 127.0.0.1, opens it in headless Chromium, and reports once the page has subscribed; a device
/// then publishes over TCP and the page must show the value. The page's own publish reaches a
/// TCP subscriber.
#[test]
fn mqtt_js_in_headless_chromium_shows_a_live_value() {
    let browser_dir = repo_root().join("tests/browser");
    assert!(
        browser_dir.join("node_modules/mqtt").is_dir()
            && browser_dir.join("node_modules/playwright-core").is_dir(),
        "MQTT.js and playwright-core are not installed: run ./tests/run.sh (npm ci in tests/browser)"
    );
    program("chromium", "chromium");
    let broker = Broker::start("[mqtt]\nws_listen = \"127.0.0.1:0\"\n");
    let ws = broker.listen_addr("mqtt.ws_listen");
    let tcp = broker.mqtt_addr();
    let hello = mosquitto_sub(tcp, "dashboards/hello", 1);
    settle();

    let mut page = ChildGuard(
        Command::new(program("node", "nodejs"))
            .arg(browser_dir.join("dashboard.mjs"))
            .args([&format!("ws://{ws}/mqtt"), "sensors/+/temperature", "23.25"])
            .current_dir(&browser_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(page.0.stdout.take().unwrap()).lines();
    let first = lines.next().map(Result::unwrap).unwrap_or_default();
    if first != "subscribed" {
        let mut err = String::new();
        let _ = page.0.stderr.take().unwrap().read_to_string(&mut err);
        panic!("the page did not subscribe: {first}\n{err}");
    }
    mosquitto_pub(tcp, "sensors/dev-7/temperature", "23.25", false);
    let report: Value = serde_json::from_str(
        &lines
            .next()
            .map(Result::unwrap)
            .expect("dashboard.mjs reports what the page shows"),
    )
    .unwrap();
    assert_eq!(report["value"], "23.25", "{report}");
    assert!(page.0.wait().unwrap().success());
    assert_eq!(output_of(hello).trim(), "browser");
}
