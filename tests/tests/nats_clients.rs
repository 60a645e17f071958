//! The NATS front end with a real client (nats-py) and real MQTT clients (mosquitto):
//! publish/subscribe, wildcards, queue groups, UNSUB max, headers, request/reply, durable
//! `js.publish` acks whose seq is the log offset, duplicate detection, cross-protocol delivery,
//! authentication, keepalive, slow consumers, and publishes into `$SYS` refused.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod nats_support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use edge_tests::broker::Broker;
use edge_tests::peers;
use nats_support::{metric, metrics, nats_url, raw_exchange, read_log, scenario};

const ROUTED: &str = r#"
[log]
fsync = "always"

[[route]]
nats = "sensors.*.temp"
kafka_topic = "temps"
"#;

#[test]
fn pubsub_wildcards_headers_request_reply_and_no_responders() {
    let mut broker = Broker::start("");
    let got = scenario(&["pubsub", "--url", &nats_url(&broker)]);
    assert_eq!(got["exact"], serde_json::json!(["a.b"]));
    assert_eq!(got["star"], serde_json::json!(["a.b", "a.c"]));
    assert_eq!(got["gt"], serde_json::json!(["a.b", "a.b.c", "a.c"]));
    assert_eq!(
        got["headers"],
        serde_json::json!({"K1": "v1", "Trace": "t-9"})
    );
    assert_eq!(got["header_body"], "with-headers");
    assert_eq!(got["reply"], "pong:ping");
    assert_eq!(got["no_responders"], true, "{got}");
    assert!(broker.terminate(Duration::from_secs(25)).success());
}

#[test]
fn publishing_into_sys_is_a_permissions_violation_and_the_connection_goes_on() {
    // Even a route on `$SYS` stores nothing: the check comes before routing.
    let mut broker = Broker::start("[[route]]\nnats = \"$SYS.>\"\nkafka_topic = \"sys\"\n");
    let got = scenario(&["sys", "--url", &nats_url(&broker)]);
    let errors = got["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{got}");
    // (nats-py reports nats-server's -ERR text in lower case.)
    assert!(
        errors[0]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("permissions violation for publish to \"$sys.req.server.ping\""),
        "{got}"
    );
    assert_eq!(
        got["received"],
        serde_json::json!(["$JS.API.INFO"]),
        "{got}"
    );
    assert_eq!(got["connected"], true, "{got}");
    let text = metrics(&broker);
    assert_eq!(
        metric(
            &text,
            "edge_publishes_denied_total{protocol=\"nats\",reason=\"reserved_topic\"}"
        ),
        1.0
    );
    assert_eq!(metric(&text, "edge_log_records "), 0.0);
    assert!(broker.terminate(Duration::from_secs(25)).success());
}

#[test]
fn queue_groups_share_and_unsub_max_stops_delivery() {
    let mut broker = Broker::start("");
    let got = scenario(&["queue", "--url", &nats_url(&broker), "--messages", "30"]);
    assert_eq!(
        got["workers_total"], 30,
        "each message to one member: {got}"
    );
    assert_eq!(got["workers_used"], 3, "round robin over 3 members: {got}");
    assert_eq!(got["plain"], 30, "{got}");
    assert_eq!(got["limited"], 3, "UNSUB 3 delivers exactly 3: {got}");
    assert!(broker.terminate(Duration::from_secs(25)).success());
}

#[test]
fn js_publish_acks_with_the_log_offset_after_durability_and_detects_duplicates() {
    let mut broker = Broker::start(ROUTED);
    let url = nats_url(&broker);
    let first = scenario(&[
        "js",
        "--url",
        &url,
        "--subject",
        "sensors.kitchen.temp",
        "--count",
        "5",
        "--msg-id-prefix",
        "evt",
        "--expect-error-stream",
        "not-temps",
    ]);
    let acks = first["acks"].as_array().unwrap();
    let seqs: Vec<u64> = acks.iter().map(|a| a["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, vec![0, 1, 2, 3, 4], "seq is the log offset: {first}");
    assert!(
        acks.iter()
            .all(|a| a["stream"] == "temps" && a["duplicate"] == false)
    );
    assert_eq!(
        first["error"]["code"], 400,
        "nats-py raised the API error: {first}"
    );

    // The same message ids again: answered as duplicates with the original seqs, not stored.
    let again = scenario(&[
        "js",
        "--url",
        &url,
        "--subject",
        "sensors.kitchen.temp",
        "--count",
        "5",
        "--msg-id-prefix",
        "evt",
    ]);
    let acks = again["acks"].as_array().unwrap();
    assert!(acks.iter().all(|a| a["duplicate"] == true), "{again}");
    let seqs: Vec<u64> = acks.iter().map(|a| a["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, vec![0, 1, 2, 3, 4]);
    let text = metrics(&broker);
    assert_eq!(metric(&text, "edge_log_records "), 5.0);
    assert_eq!(metric(&text, "edge_nats_duplicates_total "), 5.0);

    // A non-routed subject with a reply is plain request/reply: no PubAck, nothing stored.
    let (_, out, _) = raw_exchange(
        broker.listen_addr("nats.listen"),
        b"CONNECT {\"verbose\":false}\r\nSUB _INBOX.me 1\r\nPUB other.subject _INBOX.me 2\r\nhi\r\n\
          PUB sensors.x.temp 3\r\nbye\r\nPING\r\n",
        Duration::from_millis(500),
    );
    assert_eq!(out, "PONG\r\n", "no ack for plain publishes: {out:?}");

    assert!(broker.terminate(Duration::from_secs(25)).success());
    let records = read_log(&broker.data_dir());
    assert_eq!(records.len(), 6, "5 events + one routed PUB without reply");
    for (i, record) in records.iter().take(5).enumerate() {
        assert_eq!(record.offset, i as u64);
        assert_eq!(record.source, edge_log::Source::Nats);
        assert_eq!(record.topic, "sensors.kitchen.temp");
        assert_eq!(&record.payload[..], format!("event-{i}").as_bytes());
        let id = record
            .headers
            .iter()
            .find(|h| h.key == "Nats-Msg-Id")
            .unwrap();
        assert_eq!(&id.value[..], format!("evt-{i}").as_bytes());
    }
    assert_eq!(&records[5].payload[..], b"bye");
}

fn spawn_mosquitto_sub(port: u16, topic: &str, count: usize) -> std::process::Child {
    Command::new(peers::program("mosquitto_sub", "mosquitto-clients"))
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-V",
            "mqttv5",
            "-v",
        ])
        .args(["-t", topic, "-C", &count.to_string(), "-W", "15"])
        .args(["-F", "%t %p %P"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn mosquitto_sub")
}

#[test]
fn nats_publishes_reach_mqtt_subscribers_and_mqtt_publishes_reach_nats() {
    let mut broker = Broker::start(ROUTED);
    let url = nats_url(&broker);
    let mqtt_port = broker.mqtt_addr().port();

    // NATS → MQTT, plain and routed, with the `.` ↔ `//` escape and headers as user properties.
    let mut sub = spawn_mosquitto_sub(mqtt_port, "#", 2);
    std::thread::sleep(Duration::from_millis(700));
    scenario(&[
        "pub",
        "--url",
        &url,
        "--subject",
        "cross.v1//2.x",
        "--payload",
        "plain",
        "--headers",
    ]);
    scenario(&[
        "pub",
        "--url",
        &url,
        "--subject",
        "sensors.hall.temp",
        "--payload",
        "21.5",
    ]);
    let mut out = String::new();
    sub.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    assert!(sub.wait().unwrap().success(), "mosquitto_sub: {out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines[0].starts_with("cross/v1.2/x plain"), "{out}");
    assert!(
        lines[0].contains("Src:nats-py"),
        "headers become user properties: {out}"
    );
    assert!(lines[1].starts_with("sensors/hall/temp 21.5"), "{out}");

    // MQTT → NATS.
    let mut nats_sub = Command::new(peers::python())
        .arg(nats_support::script())
        .args([
            "sub",
            "--url",
            &url,
            "--subject",
            "m.>",
            "--count",
            "2",
            "--timeout",
            "15",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(nats_sub.stdout.take().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "READY");
    let publish = |topic: &str, payload: &str, extra: &[&str]| {
        let status = Command::new(peers::program("mosquitto_pub", "mosquitto-clients"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &mqtt_port.to_string(),
                "-V",
                "mqttv5",
            ])
            .args(["-t", topic, "-m", payload])
            .args(extra)
            .status()
            .unwrap();
        assert!(status.success());
    };
    publish("m/x.y", "one", &[]);
    publish("m//z", "two", &["-D", "publish", "user-property", "k", "v"]);
    line.clear();
    reader.read_line(&mut line).unwrap();
    assert!(nats_sub.wait().unwrap().success());
    let got: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(got["messages"][0]["subject"], "m.x//y", "{got}");
    assert_eq!(got["messages"][0]["data"], "one");
    assert_eq!(got["messages"][1]["subject"], "m./.z", "{got}");
    assert_eq!(got["messages"][1]["headers"]["k"], "v", "{got}");
    assert!(broker.terminate(Duration::from_secs(25)).success());
}

#[test]
fn token_and_user_password_authentication() {
    let mut broker = Broker::start(
        "[nats]\nallow_anonymous = false\ntoken = \"s3cret\"\n\
         [[nats.users]]\nuser = \"dev\"\npassword = \"pw\"\n",
    );
    let addr = broker.listen_addr("nats.listen");
    let quiet = Duration::from_millis(400);
    let (info, out, closed) = raw_exchange(addr, b"PING\r\n", quiet);
    assert!(info.contains("\"auth_required\":true"), "{info}");
    assert_eq!(out, "-ERR 'Authorization Violation'\r\n");
    assert!(closed);
    let (_, out, closed) = raw_exchange(addr, b"CONNECT {\"auth_token\":\"nope\"}\r\n", quiet);
    assert_eq!(
        (out.as_str(), closed),
        ("-ERR 'Authorization Violation'\r\n", true)
    );
    let (_, out, closed) = raw_exchange(
        addr,
        b"CONNECT {\"user\":\"dev\",\"pass\":\"bad\"}\r\n",
        quiet,
    );
    assert_eq!(
        (out.as_str(), closed),
        ("-ERR 'Authorization Violation'\r\n", true)
    );
    let (_, out, closed) = raw_exchange(
        addr,
        b"CONNECT {\"auth_token\":\"s3cret\"}\r\nPING\r\n",
        quiet,
    );
    assert_eq!((out.as_str(), closed), ("+OK\r\nPONG\r\n", false));
    let (_, out, closed) = raw_exchange(
        addr,
        b"CONNECT {\"user\":\"dev\",\"pass\":\"pw\",\"verbose\":false}\r\nPING\r\n",
        quiet,
    );
    assert_eq!((out.as_str(), closed), ("PONG\r\n", false));
    // No CONNECT within auth_timeout (2s by default).
    let (_, out, closed) = raw_exchange(addr, b"", Duration::from_secs(4));
    assert_eq!(
        (out.as_str(), closed),
        ("-ERR 'Authentication Timeout'\r\n", true)
    );
    assert!(broker.terminate(Duration::from_secs(25)).success());
}

#[test]
fn unanswered_pings_make_a_stale_connection() {
    let mut broker = Broker::start("[nats]\nping_interval = \"200ms\"\nmax_pings_out = 2\n");
    let addr = broker.listen_addr("nats.listen");
    let start = Instant::now();
    let (_, out, closed) = raw_exchange(
        addr,
        b"CONNECT {\"verbose\":false}\r\n",
        Duration::from_secs(3),
    );
    assert_eq!(out, "PING\r\nPING\r\n-ERR 'Stale Connection'\r\n");
    assert!(closed);
    assert!(start.elapsed() < Duration::from_secs(3));
    // A client that answers stays.
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    stream
        .write_all(b"CONNECT {\"verbose\":false}\r\n")
        .unwrap();
    let deadline = Instant::now() + Duration::from_millis(1500);
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => panic!("closed although PONGs were sent: {seen}"),
            Ok(n) => {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                if text.contains("PING") {
                    stream.write_all(b"PONG\r\n").unwrap();
                }
                seen.push_str(&text);
            }
            Err(_) => {}
        }
    }
    assert!(!seen.contains("Stale"), "{seen}");
    assert!(broker.terminate(Duration::from_secs(25)).success());
}

#[test]
fn a_subscriber_that_does_not_read_is_disconnected_as_slow_consumer() {
    let mut broker = Broker::start("[nats]\nmax_payload = \"16KiB\"\nmax_pending = \"256KiB\"\n");
    let addr = broker.listen_addr("nats.listen");
    let mut slow = TcpStream::connect(addr).unwrap();
    slow.write_all(b"CONNECT {\"verbose\":false}\r\nSUB big 1\r\nPING\r\n")
        .unwrap();
    // Wait for PONG so the subscription exists, then stop reading.
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("PONG") {
        let n = slow.read(&mut buf).unwrap();
        seen.extend_from_slice(&buf[..n]);
    }
    let mut publisher = TcpStream::connect(addr).unwrap();
    publisher
        .write_all(b"CONNECT {\"verbose\":false}\r\n")
        .unwrap();
    let payload = vec![b'x'; 16 * 1024];
    let mut frame = b"PUB big 16384\r\n".to_vec();
    frame.extend_from_slice(&payload);
    frame.extend_from_slice(b"\r\n");
    // Far more than socket buffers plus max_pending can hold (64 MiB).
    for _ in 0..4096 {
        if publisher.write_all(&frame).is_err() {
            break;
        }
    }
    publisher.write_all(b"PING\r\n").unwrap();
    let mut reply = BufReader::new(publisher.try_clone().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        reply.read_line(&mut line).unwrap();
        if line.starts_with("PONG") {
            break;
        }
    }
    // Now drain the slow subscriber: its stream ends with the error, then EOF.
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut all = Vec::new();
    slow.read_to_end(&mut all).unwrap();
    // The connection is closed (read_to_end saw EOF). The -ERR is best effort, as in
    // nats-server: it can only reach a client that reads again before the close deadline; when
    // it arrives it is the last thing on the stream.
    let tail = String::from_utf8_lossy(&all[all.len().saturating_sub(64)..]).into_owned();
    if tail.contains("-ERR") {
        assert!(tail.ends_with("-ERR 'Slow Consumer'\r\n"), "{tail:?}");
    }
    let text = metrics(&broker);
    assert_eq!(metric(&text, "edge_nats_slow_consumers_total "), 1.0);
    assert!(all.len() < 64 << 20, "the backlog was bounded");
    assert!(broker.terminate(Duration::from_secs(25)).success());
}

/// Reads from `stream` until `needle` shows up or `timeout` passes; returns what was read.
fn read_until(stream: &mut TcpStream, needle: &str, timeout: Duration) -> String {
    stream
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    let mut buf = [0u8; 65536];
    while Instant::now() < deadline && !String::from_utf8_lossy(&seen).contains(needle) {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    String::from_utf8_lossy(&seen).into_owned()
}

/// Creates `<dir>/data/log` (64 KiB segments, 128 KiB budget) with a cursor that never moves,
/// so retention can free nothing and the log fills up.
fn log_with_stuck_cursor(dir: &std::path::Path) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut config = edge_log::LogConfig::new(dir.join("data/log"));
        config.segment_bytes = 64 << 10;
        config.max_bytes = 128 << 10;
        config.max_record_bytes = 4 << 10;
        let (log, _) = edge_log::Log::open(config).unwrap();
        drop(log.cursor("stuck").unwrap());
        log.close().await.unwrap();
    });
}

const SMALL_LOG: &str = "[log]\nsegment_bytes = \"64KiB\"\nmax_bytes = \"128KiB\"\n\
                         max_record_bytes = \"4KiB\"\n";

#[test]
fn a_full_rejecting_log_answers_js_publish_with_a_503_error() {
    let dir = tempfile::tempdir().unwrap();
    log_with_stuck_cursor(dir.path());
    let mut broker = Broker::start_in(
        dir.path(),
        &format!(
            "{SMALL_LOG}when_full = \"reject\"\n\n[[route]]\nnats = \"full.>\"\nkafka_topic = \"full\"\n"
        ),
    );
    let got = scenario(&[
        "fill",
        "--url",
        &nats_url(&broker),
        "--subject",
        "full.x",
        "--count",
        "5000",
    ]);
    let acked = got["acked"].as_u64().unwrap();
    assert!(acked > 50 && acked < 5000, "{got}");
    assert_eq!(
        got["error"]["code"], 503,
        "nats-py raised the JetStream error: {got}"
    );
    assert_eq!(got["error"]["type"], "ServiceUnavailableError", "{got}");
    let text = metrics(&broker);
    assert_eq!(
        metric(&text, "edge_log_records "),
        acked as f64,
        "refused = not stored"
    );
    assert!(metric(&text, "edge_publishes_refused_total{protocol=\"nats\"} ") >= 1.0);
    assert!(broker.terminate(Duration::from_secs(25)).success());
}

#[test]
fn a_full_blocking_log_stops_reading_the_publisher_but_keeps_writing_to_it() {
    let dir = tempfile::tempdir().unwrap();
    // A cursor that never moves: retention cannot free anything, so when_full = block blocks.
    {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut config = edge_log::LogConfig::new(dir.path().join("data/log"));
            config.segment_bytes = 64 << 10;
            config.max_bytes = 128 << 10;
            config.max_record_bytes = 4 << 10;
            let (log, _) = edge_log::Log::open(config).unwrap();
            drop(log.cursor("stuck").unwrap());
            log.close().await.unwrap();
        });
    }
    let mut broker = Broker::start_in(
        dir.path(),
        "[log]\nsegment_bytes = \"64KiB\"\nmax_bytes = \"128KiB\"\nmax_record_bytes = \"4KiB\"\n\
         when_full = \"block\"\n\n[[route]]\nnats = \"full.>\"\nkafka_topic = \"full\"\n",
    );
    let addr = broker.listen_addr("nats.listen");
    let mut publisher = TcpStream::connect(addr).unwrap();
    publisher
        .write_all(b"CONNECT {\"verbose\":false}\r\nSUB side 1\r\nPING\r\n")
        .unwrap();
    assert!(read_until(&mut publisher, "PONG", Duration::from_secs(5)).contains("PONG"));
    // 3000 routed events of 300 B: far more than 128 KiB of log plus the in-flight window.
    let payload = "p".repeat(300);
    let mut burst = String::new();
    for _ in 0..3000 {
        burst.push_str(&format!("PUB full.x {}\r\n{payload}\r\n", payload.len()));
    }
    burst.push_str("PING\r\n");
    publisher.write_all(burst.as_bytes()).unwrap();
    let out = read_until(&mut publisher, "PONG", Duration::from_secs(2));
    assert!(
        !out.contains("PONG"),
        "the blocked publisher's PING must wait: {out:?}"
    );
    // Another connection still works, and its message still reaches the blocked publisher.
    let (_, other, closed) = raw_exchange(
        addr,
        b"CONNECT {\"verbose\":false}\r\nPUB side 5\r\nhello\r\nPING\r\n",
        Duration::from_millis(500),
    );
    assert_eq!((other.as_str(), closed), ("PONG\r\n", false));
    let out = read_until(&mut publisher, "hello", Duration::from_secs(5));
    assert!(out.contains("MSG side 1 5\r\nhello\r\n"), "{out:?}");
    assert!(!out.contains("PONG"), "{out:?}");
    let text = metrics(&broker);
    assert!(metric(&text, "edge_log_records ") < 3000.0, "{text}");
    // Shutdown does not hang on the blocked appends.
    assert!(broker.terminate(Duration::from_secs(25)).success());
}

#[test]
fn pipelined_durable_publishes_enter_the_log_in_publish_order() {
    let mut broker = Broker::start(ROUTED);
    let got = scenario(&[
        "ordered",
        "--url",
        &nats_url(&broker),
        "--subject",
        "sensors.line.temp",
        "--count",
        "20000",
    ]);
    assert_eq!(got["count"], 20000, "{got}");
    assert_eq!(
        got["overtaken"], 0,
        "acks (log offsets) out of publish order: {got}"
    );
    assert_eq!(got["first"], 0);
    assert_eq!(got["last"], 19999);
    assert!(broker.terminate(Duration::from_secs(25)).success());
    let records = read_log(&broker.data_dir());
    for (i, record) in records.iter().enumerate() {
        assert_eq!(
            &record.payload[..],
            format!("o-{i}").as_bytes(),
            "offset {i}"
        );
    }
}

/// The connection answers PubAcks (and skips local delivery nobody can get) without the hub
/// while every hub subscription is its own: the fan-out must still match the hub's, before and
/// after another client subscribes to the same subjects.
#[test]
fn pubacks_and_routed_messages_reach_other_subscribers_too() {
    let mut broker = Broker::start(ROUTED);
    let addr = broker.listen_addr("nats.listen");
    let mut a = TcpStream::connect(addr).unwrap();
    a.write_all(
        b"CONNECT {\"verbose\":false}\r\nSUB _INBOX.a.* 1\r\nSUB sensors.*.temp 2\r\nPING\r\n",
    )
    .unwrap();
    read_until(&mut a, "PONG", Duration::from_secs(10));
    // Alone in the hub: its own subscriptions get the routed message (echo) and the ack.
    a.write_all(b"PUB sensors.x.temp _INBOX.a.1 2\r\nhi\r\nPING\r\n")
        .unwrap();
    let got = read_until(&mut a, "\"seq\":0}", Duration::from_secs(10));
    assert!(got.contains("MSG sensors.x.temp 2 2\r\nhi\r\n"), "{got:?}");
    assert!(got.contains("MSG _INBOX.a.1 1 "), "{got:?}");

    let mut b = TcpStream::connect(addr).unwrap();
    b.write_all(b"CONNECT {\"verbose\":false}\r\nSUB _INBOX.> 9\r\nSUB sensors.> 8\r\nPING\r\n")
        .unwrap();
    read_until(&mut b, "PONG", Duration::from_secs(10));
    a.write_all(b"PUB sensors.y.temp _INBOX.a.2 2\r\nho\r\n")
        .unwrap();
    let got_b = read_until(&mut b, "\"seq\":1}", Duration::from_secs(10));
    assert!(
        got_b.contains("MSG sensors.y.temp 8 2\r\nho\r\n"),
        "{got_b:?}"
    );
    assert!(got_b.contains("MSG _INBOX.a.2 9 "), "{got_b:?}");
    let got_a = read_until(&mut a, "\"seq\":1}", Duration::from_secs(10));
    assert!(got_a.contains("MSG _INBOX.a.2 1 "), "{got_a:?}");

    // B leaves the subjects: A is alone again, B gets nothing more.
    b.write_all(b"UNSUB 9\r\nUNSUB 8\r\nPING\r\n").unwrap();
    read_until(&mut b, "PONG", Duration::from_secs(10));
    a.write_all(b"PUB sensors.z.temp _INBOX.a.3 2\r\nhu\r\n")
        .unwrap();
    let got_a = read_until(&mut a, "\"seq\":2}", Duration::from_secs(10));
    assert!(got_a.contains("MSG _INBOX.a.3 1 "), "{got_a:?}");
    b.write_all(b"PING\r\n").unwrap();
    let got_b = read_until(&mut b, "PONG", Duration::from_secs(10));
    assert!(!got_b.contains("MSG"), "{got_b:?}");
    assert!(broker.terminate(Duration::from_secs(25)).success());
}

/// A publisher repeating one routed subject: a subscriber that arrives (or leaves) between two
/// of its publishes gets exactly the publishes made while it was subscribed (the connection's
/// "nobody listens here" shortcut follows subscription changes).
#[test]
fn a_subscriber_joining_between_repeated_routed_publishes_gets_the_later_ones() {
    let mut broker = Broker::start(ROUTED);
    let addr = broker.listen_addr("nats.listen");
    let mut a = TcpStream::connect(addr).unwrap();
    a.write_all(b"CONNECT {\"verbose\":false}\r\nSUB _INBOX.a.* 1\r\nPING\r\n")
        .unwrap();
    read_until(&mut a, "PONG", Duration::from_secs(10));
    a.write_all(b"PUB sensors.q.temp _INBOX.a.1 5\r\nfirst\r\n")
        .unwrap();
    read_until(&mut a, "\"seq\":0}", Duration::from_secs(10));

    let mut b = TcpStream::connect(addr).unwrap();
    b.write_all(b"CONNECT {\"verbose\":false}\r\nSUB sensors.q.temp 5\r\nPING\r\n")
        .unwrap();
    read_until(&mut b, "PONG", Duration::from_secs(10));
    a.write_all(b"PUB sensors.q.temp _INBOX.a.2 6\r\nsecond\r\n")
        .unwrap();
    read_until(&mut a, "\"seq\":1}", Duration::from_secs(10));
    let got_b = read_until(&mut b, "second", Duration::from_secs(10));
    assert!(
        got_b.contains("MSG sensors.q.temp 5 6\r\nsecond\r\n"),
        "{got_b:?}"
    );
    assert!(!got_b.contains("first"), "{got_b:?}");

    b.write_all(b"UNSUB 5\r\nPING\r\n").unwrap();
    read_until(&mut b, "PONG", Duration::from_secs(10));
    a.write_all(b"PUB sensors.q.temp _INBOX.a.3 5\r\nthird\r\n")
        .unwrap();
    read_until(&mut a, "\"seq\":2}", Duration::from_secs(10));
    b.write_all(b"PING\r\n").unwrap();
    let got_b = read_until(&mut b, "PONG", Duration::from_secs(10));
    assert!(!got_b.contains("MSG"), "{got_b:?}");
    assert!(broker.terminate(Duration::from_secs(25)).success());
}

/// With `[nats] tls_cert`/`tls_key` every client must use TLS: INFO says `tls_required`, nats-py
/// upgrades and its `js.publish` gets durable PubAcks over TLS; a client that goes on in plain
/// text gets nothing and is counted as a failed handshake.
#[test]
fn with_a_certificate_every_nats_client_must_use_tls() {
    let pki = edge_tests::pki::Pki::new();
    let mut broker = Broker::start(&format!(
        "{ROUTED}\n[nats]\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
        pki.path("server.crt").display(),
        pki.path("server.key").display()
    ));
    let url = nats_url(&broker);
    let ca = pki.path("ca.crt");
    let out = scenario(&[
        "js",
        "--url",
        &url,
        "--subject",
        "sensors.porch.temp",
        "--count",
        "3",
        "--tls-ca",
        ca.to_str().unwrap(),
    ]);
    let seqs: Vec<u64> = out["acks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![0, 1, 2], "durable PubAcks over TLS: {out}");

    let addr = broker.listen_addr("nats.listen");
    let (info, output, _) = raw_exchange(
        addr,
        b"CONNECT {\"verbose\":false}\r\nPING\r\n",
        Duration::from_secs(2),
    );
    assert!(info.contains("\"tls_required\":true"), "{info}");
    assert!(
        !output.contains("PONG"),
        "plain text after INFO must not be served: {output:?}"
    );
    let m = metrics(&broker);
    let failures = metric(&m, "edge_tls_handshake_failures_total{protocol=\"nats\"}");
    assert!(failures >= 1.0, "the plain client is counted: {failures}");
    assert!(broker.terminate(Duration::from_secs(20)).success());
}
