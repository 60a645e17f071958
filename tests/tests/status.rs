//! `edge-broker status` against the real binary: a running broker forwarding to a real
//! Kafka-protocol broker (Tansu) while a real MQTT client (paho) publishes, the same broker with
//! its uplink cut, `--watch`, and the messages for a broker that is not running or has its
//! metrics disabled.

// Helpers outside #[test] fns fail the test by panicking, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use edge_tests::broker::{Broker, broker_binary, run_cli};
use edge_tests::kafka::{Tansu, wait_for_metric};
use edge_tests::peers::{ChildGuard, python, repo_root};

fn status(config: &std::path::Path, extra: &[&str]) -> (Option<i32>, String, String) {
    let mut args: Vec<std::ffi::OsString> = vec!["status".into(), "--config".into()];
    args.push(config.into());
    args.extend(["--interval", "1s"].iter().chain(extra).map(|a| a.into()));
    let out = run_cli(&args, &[]);
    (out.code, out.stdout, out.stderr)
}

/// A paho publisher sending `count` QoS 1 messages on `sensors/dev-N/t` as fast as acked.
fn publisher(addr: std::net::SocketAddr, count: usize) -> ChildGuard {
    ChildGuard(
        Command::new(python())
            .arg(repo_root().join("tests/tools/mqtt_pub_acked.py"))
            .args([&addr.ip().to_string(), &addr.port().to_string()])
            .args(["sensors/dev-{k}/t", &count.to_string(), "--keys", "4"])
            .args(["--inflight", "10"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// The config file `Broker` wrote, with the metrics port it bound (status reads the file, and
/// a port picked at start is not in it).
fn metrics_arg(broker: &Broker) -> String {
    broker.listen_addr("metrics.listen").to_string()
}

#[test]
fn status_shows_uplink_backlog_rates_and_clients_then_the_outage() {
    let mut tansu = Tansu::start();
    let mut broker = Broker::start(&format!(
        "[kafka]\nbrokers = [\"{}\"]\nretry_backoff_min = \"50ms\"\nretry_backoff_max = \"300ms\"\n\
         request_timeout = \"2s\"\nauto_create_topics = true\n\
         [[route]]\nmqtt = \"sensors/+/t\"\nkafka_topic = \"status-test\"\nkey = \"{{topic.2}}\"\n",
        tansu.bootstrap()
    ));
    let config = broker.dir.join("edge-broker.toml");
    let metrics = broker.listen_addr("metrics.listen");
    let _publisher = publisher(broker.mqtt_addr(), 1_000_000);
    wait_for_metric(
        metrics,
        "edge_kafka_forwarded_records_total",
        Duration::from_secs(30),
        |v| v > 0.0,
    );
    let (code, out, err) = status(&config, &["--metrics", &metrics_arg(&broker)]);
    assert_eq!(code, Some(0), "{out}{err}");
    let ingest: f64 = out
        .split("ingest ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .map(|n| n.replace(',', "").parse().unwrap())
        .unwrap_or_else(|| panic!("no ingest rate:\n{out}"));
    assert!(ingest > 0.0, "the publisher is running:\n{out}");
    for want in [
        "(node test-gw)",
        ": healthy",
        "uplink   up",
        "backlog  ",
        "% of the budget",
        "forward ",
        "clients  mqtt 1, nats 0",
    ] {
        assert!(out.contains(want), "{want:?} missing:\n{out}");
    }

    // The uplink goes away: the backlog grows and status says so (and exits 1).
    tansu.stop();
    wait_for_metric(
        metrics,
        "edge_kafka_upstream_up",
        Duration::from_secs(30),
        |v| v == 0.0,
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let out = loop {
        let (code, out, err) = status(&config, &["--metrics", &metrics_arg(&broker)]);
        if out.contains("uplink   DOWN") && out.contains("not draining while the uplink is down") {
            assert_eq!(code, Some(1), "{out}{err}");
            break out;
        }
        assert!(Instant::now() < deadline, "no outage in:\n{out}{err}");
    };
    assert!(out.contains("errors   "), "{out}");
    assert!(
        out.contains("unreachable") || out.contains("connection_reset"),
        "the Kafka errors are named:\n{out}"
    );
    assert!(broker.terminate(Duration::from_secs(25)).success());
}

#[test]
fn watch_redraws_until_interrupted() {
    // A fixed port in the config, as on a gateway: status finds the broker from the file alone.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = free.local_addr().unwrap().port();
    drop(free);
    let broker = Broker::start(&format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n"));
    let config = broker.dir.join("edge-broker.toml");
    let mut child = ChildGuard(
        Command::new(broker_binary())
            .args(["status", "--watch", "--interval", "200ms", "--config"])
            .arg(&config)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let mut frames = 0;
    let mut lines = BufReader::new(stdout).lines();
    let deadline = Instant::now() + Duration::from_secs(20);
    while frames < 3 {
        assert!(Instant::now() < deadline, "only {frames} frames");
        let line = lines.next().unwrap().unwrap();
        if line.starts_with("edge-broker ") && line.ends_with(": healthy") {
            frames += 1;
        }
    }
    assert!(child.0.try_wait().unwrap().is_none(), "still watching");
}

#[test]
fn a_broker_that_is_not_running_or_has_no_metrics_is_explained() {
    let dir = tempfile::tempdir().unwrap();
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = free.local_addr().unwrap().port();
    drop(free);
    let config = dir.path().join("edge-broker.toml");
    std::fs::write(&config, format!("[metrics]\nlisten = \"0.0.0.0:{port}\"\n")).unwrap();
    let (code, out, err) = status(&config, &[]);
    assert_eq!(code, Some(1));
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains(&format!("no edge-broker answers at 127.0.0.1:{port}"))
            && err.contains("it is not running"),
        "{err}"
    );
    std::fs::write(&config, "[metrics]\nenabled = false\n").unwrap();
    let (code, _, err) = status(&config, &[]);
    assert_eq!(code, Some(1));
    assert!(err.contains("metrics are disabled"), "{err}");
}
