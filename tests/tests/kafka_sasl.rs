//! Kafka SASL end to end: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 and OAUTHBEARER from the real
//! binary to Tansu, wrong credentials, a credential change while running, and re-authentication
//! when the session lifetime runs out (KIP-368).
//!
//! Tansu 0.6.0 cannot serve these tests itself (found while building them; see
//! `tests/tools/sasl_proxy.py`): without `--authentication` its SaslHandshake refuses every
//! mechanism (error 33, echoing the one asked for); with it, it offers SCRAM only, `tansu user
//! create` is refused as unauthenticated, and users created before enabling it were unknown
//! afterwards. So SASL is terminated by a **test-only proxy** in front of Tansu (SCRAM's server
//! side from PyPI `scramp`), which the first test checks with librdkafka (confluent-kafka) as an
//! independent client before edge-broker is tested against it. What reached Kafka is read back
//! with librdkafka too, through the same proxy.

// Test code: a panic with a message is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use edge_tests::broker::Broker;
use edge_tests::kafka::{Tansu, read_topic_sasl, wait_for_metric};
use edge_tests::peers::{program, python, repo_root};
use serde_json::{Value, json};

const TOPIC: &str = "sasl-sensors";

fn credentials(dir: &Path, users: Value) -> std::path::PathBuf {
    let path = dir.join("kafka-credentials.json");
    std::fs::write(&path, users.to_string()).unwrap();
    path
}

fn librdkafka_produce(bootstrap: &str, args: &[&str]) -> Value {
    let out = Command::new(python())
        .arg(repo_root().join("tests/tools/kafka_sasl_produce.py"))
        .args(["--bootstrap", bootstrap, "--topic", "proxy-check"])
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap_or_else(|e| {
        panic!(
            "kafka_sasl_produce.py: {e}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn config(bootstrap: &str, sasl: &str) -> String {
    format!(
        "[kafka]\nbrokers = [\"{bootstrap}\"]\nlinger = \"5ms\"\nrequest_timeout = \"3s\"\n\
         retry_backoff_min = \"100ms\"\nretry_backoff_max = \"500ms\"\nauto_create_topics = true\n\
         {sasl}\n[[route]]\nmqtt = \"sensors/+/t\"\nkafka_topic = \"{TOPIC}\"\n"
    )
}

/// Publishes `lines` as QoS 1 messages with mosquitto_pub (each acknowledged: in the log).
fn publish(broker: &Broker, first: usize, count: usize) {
    let addr = broker.mqtt_addr();
    let mut child = Command::new(program("mosquitto_pub", "mosquitto-clients"))
        .args(["-h", "127.0.0.1", "-p", &addr.port().to_string()])
        .args(["-t", "sensors/dev/t", "-q", "1", "-l"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for n in first..first + count {
        writeln!(stdin, "msg-{n}").unwrap();
    }
    drop(stdin);
    assert!(child.wait().unwrap().success(), "mosquitto_pub failed");
}

/// The `[kafka]` SASL keys for a password mechanism.
fn with_password(mechanism: &str, password_file: &Path) -> String {
    format!(
        "sasl_mechanism = \"{mechanism}\"\nsasl_username = \"gw\"\nsasl_password_file = \"{}\"",
        password_file.display()
    )
}

/// Waits until the proxy has refused `count` authentications (the forwarder keeps retrying).
fn wait_for_refusals(tansu: &Tansu, count: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while tansu.sasl_stats()["failed"].as_u64().unwrap_or(0) < count {
        assert!(
            std::time::Instant::now() < deadline,
            "fewer than {count} refused authentications: the retries no longer reach Kafka: {}",
            tansu.sasl_stats()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn values(records: &[edge_tests::kafka::ReadRecord]) -> Vec<String> {
    let mut v: Vec<String> = records.iter().filter_map(|r| r.value.clone()).collect();
    v.sort_by_key(|s| s.trim_start_matches("msg-").parse::<u64>().unwrap_or(0));
    v
}

fn expected(count: usize) -> Vec<String> {
    (0..count).map(|n| format!("msg-{n}")).collect()
}

fn secret_file(dir: &Path, name: &str, value: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("{value}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

#[test]
fn the_test_proxy_is_verified_with_librdkafka_first() {
    let dir = tempfile::tempdir().unwrap();
    let creds = credentials(
        dir.path(),
        json!({"users": {"alice": "a-pw"}, "tokens": ["tok-1"]}),
    );
    let tansu = Tansu::start_sasl(&creds, 0);
    let bootstrap = tansu.bootstrap();
    for mechanism in ["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"] {
        let ok = librdkafka_produce(
            &bootstrap,
            &[
                "--mechanism",
                mechanism,
                "--user",
                "alice",
                "--password",
                "a-pw",
            ],
        );
        assert_eq!(ok["ok"], true, "{mechanism}: {ok}");
        let wrong = librdkafka_produce(
            &bootstrap,
            &[
                "--mechanism",
                mechanism,
                "--user",
                "alice",
                "--password",
                "nope",
            ],
        );
        assert_eq!(
            wrong["ok"], false,
            "{mechanism} with a wrong password: {wrong}"
        );
    }
    let ok = librdkafka_produce(
        &bootstrap,
        &["--mechanism", "OAUTHBEARER", "--token", "tok-1"],
    );
    assert_eq!(ok["ok"], true, "{ok}");
    let wrong = librdkafka_produce(
        &bootstrap,
        &["--mechanism", "OAUTHBEARER", "--token", "tok-x"],
    );
    assert_eq!(wrong["ok"], false, "{wrong}");
    let read = read_topic_sasl(
        &bootstrap,
        "proxy-check",
        4,
        ("SCRAM-SHA-512", "alice", "a-pw"),
    );
    assert_eq!(read.len(), 4, "what librdkafka produced is in Tansu");
}

#[test]
fn every_mechanism_forwards_through_sasl() {
    let dir = tempfile::tempdir().unwrap();
    let creds = credentials(
        dir.path(),
        json!({"users": {"gw": "gw-pw"}, "tokens": ["jwt-ish-token"]}),
    );
    let password = secret_file(dir.path(), "kafka-password", "gw-pw");
    let token = secret_file(dir.path(), "kafka-token", "jwt-ish-token");
    let tansu = Tansu::start_sasl(&creds, 0);
    let bootstrap = tansu.bootstrap();
    let mut sent = 0;
    for (mechanism, sasl) in [
        ("plain", with_password("plain", &password)),
        ("scram-sha-256", with_password("scram-sha-256", &password)),
        ("scram-sha-512", with_password("scram-sha-512", &password)),
        (
            "oauthbearer",
            format!(
                "sasl_mechanism = \"oauthbearer\"\nsasl_token_file = \"{}\"",
                token.display()
            ),
        ),
    ] {
        let broker = Broker::start(&config(&bootstrap, &sasl));
        publish(&broker, sent, 10);
        sent += 10;
        let metrics = broker.listen_addr("metrics.listen");
        wait_for_metric(
            metrics,
            "edge_kafka_lag_records",
            Duration::from_secs(30),
            |v| v == 0.0,
        );
        assert_eq!(
            broker.metric("edge_kafka_upstream_authenticated"),
            Some(1.0),
            "{mechanism}"
        );
    }
    let read = read_topic_sasl(&bootstrap, TOPIC, sent, ("SCRAM-SHA-256", "gw", "gw-pw"));
    assert_eq!(values(&read), expected(sent));
    let stats = tansu.sasl_stats();
    for wire in ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] {
        assert!(
            stats["by_mechanism"][wire].as_u64().unwrap_or(0) >= 1,
            "{wire}: {stats}"
        );
    }
}

#[test]
fn wrong_credentials_log_once_lose_nothing_and_a_fixed_password_file_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let creds = credentials(dir.path(), json!({"users": {"gw": "right"}}));
    let password = secret_file(dir.path(), "kafka-password", "wrong");
    let tansu = Tansu::start_sasl(&creds, 0);
    let bootstrap = tansu.bootstrap();
    let broker = Broker::start(&config(
        &bootstrap,
        &with_password("scram-sha-256", &password),
    ));
    publish(&broker, 0, 20);
    let metrics = broker.listen_addr("metrics.listen");
    // Several refused attempts (the forwarder backs off and retries) ...
    wait_for_refusals(&tansu, 4);
    // ... one ERROR line, and /metrics says the upstream is not authenticated.
    let errors = broker
        .lines()
        .iter()
        .filter(|l| l.contains("ERROR") && l.contains("SASL"))
        .count();
    assert_eq!(errors, 1, "{:#?}", broker.lines());
    assert_eq!(
        broker.metric("edge_kafka_upstream_authenticated"),
        Some(0.0)
    );
    assert!(
        broker
            .metric("edge_kafka_errors_total{kind=\"auth\"}")
            .unwrap()
            >= 1.0
    );
    assert_eq!(
        broker.metric("edge_kafka_lag_records"),
        Some(20.0),
        "nothing is lost or skipped"
    );

    // Refused attempts slow down to `auth_retry_backoff_max` (1 min by default), not
    // `retry_backoff_max` (500 ms here): each is a connection and its handshake on a metered
    // uplink, and no retry fixes a password.
    let before = tansu.sasl_stats()["failed"].as_u64().unwrap_or(0);
    std::thread::sleep(Duration::from_secs(15));
    let failed = tansu.sasl_stats()["failed"].as_u64().unwrap_or(0);
    let refused = failed - before;
    let wire = |direction: &str| {
        broker
            .metric(&format!(
                "edge_kafka_wire_bytes_total{{direction=\"{direction}\"}}"
            ))
            .unwrap_or_default()
    };
    eprintln!(
        "{refused} refused authentications in 15 s; {:.0} bytes sent and {:.0} received per \
         refused attempt so far",
        wire("sent") / failed as f64,
        wire("received") / failed as f64
    );
    assert!(
        refused <= 8,
        "{refused} refused authentications in 15 s: retried at retry_backoff_max"
    );

    // The operator fixes the password file: tried within a second or so, no restart.
    secret_file(dir.path(), "kafka-password", "right");
    let fixed = std::time::Instant::now();
    wait_for_metric(
        metrics,
        "edge_kafka_lag_records",
        Duration::from_secs(30),
        |v| v == 0.0,
    );
    let recovered = fixed.elapsed();
    eprintln!("forwarded {recovered:?} after the password file was fixed");
    assert!(
        recovered < Duration::from_secs(10),
        "the fixed password file was tried only after {recovered:?}"
    );
    broker.wait_for_line(
        "Kafka SASL authentication works again",
        Duration::from_secs(5),
    );
    assert_eq!(
        broker.metric("edge_kafka_upstream_authenticated"),
        Some(1.0)
    );
    let read = read_topic_sasl(&bootstrap, TOPIC, 20, ("SCRAM-SHA-256", "gw", "right"));
    assert_eq!(values(&read), expected(20));
}

#[test]
fn sessions_are_renewed_before_they_expire_and_a_revoked_password_is_noticed() {
    let dir = tempfile::tempdir().unwrap();
    let creds = credentials(dir.path(), json!({"users": {"gw": "one"}}));
    let password = secret_file(dir.path(), "kafka-password", "one");
    // Sessions last 1.5 s: the proxy closes a connection used after that without renewal.
    let tansu = Tansu::start_sasl(&creds, 1500);
    let bootstrap = tansu.bootstrap();
    let broker = Broker::start(&config(
        &bootstrap,
        &with_password("scram-sha-512", &password),
    ));
    let metrics = broker.listen_addr("metrics.listen");
    for round in 0..8 {
        publish(&broker, round * 5, 5);
        std::thread::sleep(Duration::from_millis(600));
    }
    wait_for_metric(
        metrics,
        "edge_kafka_lag_records",
        Duration::from_secs(30),
        |v| v == 0.0,
    );
    let stats = tansu.sasl_stats();
    assert!(
        stats["reauthenticated"].as_u64().unwrap_or(0) >= 2,
        "{stats}"
    );
    assert_eq!(stats["expired"], json!(0), "renewed in time: {stats}");

    // The Kafka side revokes the password while the gateway runs: the next renewal fails.
    credentials(dir.path(), json!({"users": {"gw": "two"}}));
    publish(&broker, 40, 5);
    // (Not "authentication with": with EDGE_TESTS_BROKER_LOG=debug a DEBUG line says so first.)
    let line = broker.wait_for_line("Kafka uplink refused us", Duration::from_secs(15));
    assert!(line.contains("ERROR"), "{line}");
    assert_eq!(
        broker.metric("edge_kafka_upstream_authenticated"),
        Some(0.0)
    );
    // The operator takes longer than a retry to fix it. Meanwhile the renewal of the bootstrap
    // connection's session (unused since the start, so due) fails too and Kafka closes that
    // connection: the forwarder must connect afresh, not retry on the closed one for ever.
    wait_for_refusals(&tansu, 4);
    secret_file(dir.path(), "kafka-password", "two");
    wait_for_metric(
        metrics,
        "edge_kafka_lag_records",
        Duration::from_secs(30),
        |v| v == 0.0,
    );
    let read = read_topic_sasl(&bootstrap, TOPIC, 45, ("SCRAM-SHA-512", "gw", "two"));
    assert_eq!(values(&read), expected(45));
}

/// Exactly-once delivery started with a refused password: its start (a connection before the
/// transaction session) retries at the refusal's backoff, not every probe interval (100 ms for
/// the first 6 s, then one a second for as long as the refusal lasted), and says so.
#[test]
fn exactly_once_started_with_a_refused_password_retries_sparsely() {
    let dir = tempfile::tempdir().unwrap();
    let creds = credentials(dir.path(), json!({"users": {"gw": "right"}}));
    let password = secret_file(dir.path(), "kafka-password", "wrong");
    let tansu = Tansu::start_sasl(&creds, 0);
    let body = config(
        &tansu.bootstrap(),
        &format!(
            "{}\ndelivery = \"exactly_once\"",
            with_password("scram-sha-256", &password)
        ),
    );
    let broker = Broker::start(&body);
    wait_for_refusals(&tansu, 1);
    std::thread::sleep(Duration::from_secs(6));
    let refused = tansu.sasl_stats()["failed"].as_u64().unwrap_or(0);
    eprintln!("{refused} refused authentications in the first ~6 s");
    // 0.1, 0.2, 0.4, 0.8, 1.6, 3.2 s at most (each drawn from [half, whole]): 7 attempts.
    assert!(
        refused <= 8,
        "{refused} refused authentications in ~6 s: retried every probe interval"
    );
    assert_eq!(
        broker.metric("edge_kafka_uplink_state{state=\"auth_failed\"}"),
        Some(1.0),
        "told as a refusal"
    );
}
