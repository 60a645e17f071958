//! Running as a service: `/metrics` and `/healthz` scraped over HTTP, and the sd_notify
//! conversation with a real `NOTIFY_SOCKET` owned by the test.

// Helpers outside #[test] fns fail the test by panicking, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use edge_tests::broker::Broker;

fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[test]
fn metrics_and_health_are_served() {
    let mut broker = Broker::start("");
    let addr = broker.listen_addr("metrics.listen");
    let (status, body) = http_get(addr, "/healthz");
    assert_eq!(status, 200, "{body}");
    let (status, body) = http_get(addr, "/readyz");
    assert_eq!((status, body.as_str()), (200, "ready\n"));
    let (status, body) = http_get(addr, "/metrics");
    assert_eq!(status, 200);
    for family in [
        "# TYPE edge_log_bytes gauge",
        "# TYPE edge_log_fsyncs_total counter",
        "edge_build_info{version=",
        "node=\"test-gw\"",
        "edge_ready 1",
        "edge_log_state{state=\"ok\"} 1",
    ] {
        assert!(body.contains(family), "/metrics lacks {family:?}:\n{body}");
    }
    let (status, _) = http_get(addr, "/nope");
    assert_eq!(status, 404);
    assert!(broker.terminate(Duration::from_secs(25)).success());
}

/// A datagram socket standing in for systemd's `NOTIFY_SOCKET`, and its path.
fn notify_socket(dir: &std::path::Path) -> (UnixDatagram, std::path::PathBuf) {
    let path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    (socket, path)
}

#[test]
fn sd_notify_ready_status_watchdog_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let (socket, socket_path) = notify_socket(dir.path());
    let mut broker = Broker::spawn_with_env(
        dir.path(),
        "",
        &[
            ("NOTIFY_SOCKET", socket_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "400000"),
        ],
    );
    let mut buf = [0u8; 512];
    let mut next = || {
        let n = socket
            .recv(&mut buf)
            .expect("a notification from edge-broker");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    assert_eq!(next(), "READY=1");
    // With a 400 ms watchdog the broker reports at least every 200 ms: status, then a ping.
    let mut seen_status = false;
    let mut pings = 0;
    while pings < 3 {
        let message = next();
        if message.starts_with("STATUS=log ") {
            seen_status = true;
        } else if message == "WATCHDOG=1" {
            pings += 1;
        } else {
            panic!("unexpected notification {message:?}");
        }
    }
    assert!(seen_status);
    broker.signal(nix::sys::signal::Signal::SIGTERM);
    loop {
        let message = next();
        if message == "STOPPING=1" {
            break;
        }
        assert!(
            message == "WATCHDOG=1" || message.starts_with("STATUS="),
            "unexpected notification {message:?}"
        );
    }
    assert!(broker.wait_exit(Duration::from_secs(25)).success());
}

/// Reads one gauge or counter from the `/metrics` text.
fn metric(addr: SocketAddr, name: &str) -> f64 {
    let (_, body) = http_get(addr, "/metrics");
    body.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("/metrics has no {name}:\n{body}"))
}

fn publish_qos1(addr: SocketAddr, topic: &str) {
    let status = std::process::Command::new(edge_tests::peers::program(
        "mosquitto_pub",
        "mosquitto-clients",
    ))
    .args(["-h", &addr.ip().to_string(), "-p", &addr.port().to_string()])
    .args(["-t", topic, "-m", "x", "-q", "1"])
    .status()
    .unwrap();
    assert!(status.success());
}

#[test]
fn sighup_swaps_routes_without_dropping_connections() {
    let dir = tempfile::tempdir().unwrap();
    let (socket, socket_path) = notify_socket(dir.path());
    let route = |filter: &str| format!("[[route]]\nmqtt = \"{filter}\"\nkafka_topic = \"t\"\n");
    let mut broker = Broker::spawn_with_env(
        dir.path(),
        &route("a/#"),
        &[("NOTIFY_SOCKET", socket_path.to_str().unwrap())],
    );
    broker.wait_for_line("edge-broker ready", Duration::from_secs(20));
    let mqtt = broker.mqtt_addr();
    let metrics = broker.listen_addr("metrics.listen");

    publish_qos1(mqtt, "b/1");
    assert_eq!(
        metric(metrics, "edge_log_records"),
        0.0,
        "b/1 is not routed yet"
    );

    edge_tests::broker::write_config(dir.path(), &route("b/#"));
    broker.signal(nix::sys::signal::Signal::SIGHUP);
    broker.wait_for_line("configuration reloaded", Duration::from_secs(10));
    let mut buf = [0u8; 512];
    let mut seen = Vec::new();
    while !seen.ends_with(&["READY=1".to_owned()]) || !seen.contains(&"RELOADING=1".to_owned()) {
        let n = socket.recv(&mut buf).unwrap();
        let message = String::from_utf8_lossy(&buf[..n]).into_owned();
        if !message.starts_with("STATUS=") {
            seen.push(message);
        }
    }
    assert_eq!(seen, ["READY=1", "RELOADING=1", "READY=1"]);

    publish_qos1(mqtt, "b/2");
    assert_eq!(
        metric(metrics, "edge_log_records"),
        1.0,
        "b/2 is routed after the reload"
    );
    publish_qos1(mqtt, "a/1");
    assert_eq!(
        metric(metrics, "edge_log_records"),
        1.0,
        "a/1 is no longer routed"
    );

    // A broken config is refused and the running one stays.
    std::fs::write(
        dir.path().join("edge-broker.toml"),
        "[log]\nfsync = \"maybe\"\n",
    )
    .unwrap();
    broker.signal(nix::sys::signal::Signal::SIGHUP);
    broker.wait_for_line("reload refused", Duration::from_secs(10));
    publish_qos1(mqtt, "b/3");
    assert_eq!(metric(metrics, "edge_log_records"), 2.0);
    assert!(broker.terminate(Duration::from_secs(25)).success());
}

#[test]
fn sighup_applies_mqtt_limits_to_new_connections() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::start_in(dir.path(), "");
    let mqtt = broker.mqtt_addr();
    publish_qos1(mqtt, "open/1");

    edge_tests::broker::write_config(dir.path(), "[mqtt]\nallow_anonymous = false\n");
    broker.signal(nix::sys::signal::Signal::SIGHUP);
    broker.wait_for_line("configuration reloaded", Duration::from_secs(10));
    let refused = std::process::Command::new(edge_tests::peers::program(
        "mosquitto_pub",
        "mosquitto-clients",
    ))
    .args(["-h", &mqtt.ip().to_string(), "-p", &mqtt.port().to_string()])
    .args(["-t", "open/2", "-m", "x", "-q", "1"])
    .output()
    .unwrap();
    assert!(
        !refused.status.success(),
        "an anonymous client is refused after the reload"
    );
    assert!(
        !broker
            .lines()
            .iter()
            .any(|l| l.contains("take effect after a restart")),
        "MQTT limits reload without a restart"
    );
    assert!(broker.terminate(Duration::from_secs(25)).success());
}
