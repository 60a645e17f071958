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
    let (status, body) = http_get(addr, "/metrics");
    assert_eq!(status, 200);
    for family in [
        "# TYPE edge_log_bytes gauge",
        "# TYPE edge_log_fsyncs_total counter",
        "edge_build_info{version=",
        "node=\"test-gw\"",
        "edge_ready 1",
    ] {
        assert!(body.contains(family), "/metrics lacks {family:?}:\n{body}");
    }
    let (status, _) = http_get(addr, "/nope");
    assert_eq!(status, 404);
    assert!(broker.terminate(Duration::from_secs(25)).success());
}

#[test]
fn sd_notify_ready_status_watchdog_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
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
