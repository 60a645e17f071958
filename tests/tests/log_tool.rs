//! `edge-broker log …` against real data directories: one a running broker is writing (read
//! without disturbing it), and the dead letters of a real refusal by a Kafka-protocol broker
//! (Tansu), re-queued after the cause is fixed and delivered.

// Helpers outside #[test] fns fail the test by panicking, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use edge_tests::broker::{Broker, run_cli};
use edge_tests::kafka::{Tansu, create_topic, read_topic, wait_for_metric};
use edge_tests::peers::{program, python, repo_root};

fn log_cli(args: &[&str], config: Option<&Path>) -> (Option<i32>, String, String) {
    let mut all: Vec<std::ffi::OsString> = vec!["log".into()];
    all.extend(args.iter().map(|a| a.into()));
    if let Some(config) = config {
        all.push("--config".into());
        all.push(config.into());
    }
    let out = run_cli(&all, &[]);
    (out.code, out.stdout, out.stderr)
}

/// Publishes `count` QoS 1 messages `msg-N` on `sensors/dev-{N%4}/t` (MQTT 5, user property
/// unit=C) and waits until all are acknowledged.
fn publish(addr: std::net::SocketAddr, count: usize) {
    let status = Command::new(python())
        .arg(repo_root().join("tests/tools/mqtt_pub_acked.py"))
        .args([&addr.ip().to_string(), &addr.port().to_string()])
        .args(["sensors/dev-{k}/t", &count.to_string(), "--keys", "4"])
        .args([
            "--version",
            "5",
            "--inflight",
            "1",
            "--user-property",
            "unit=C",
        ])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
}

fn mosquitto_pub_file(addr: std::net::SocketAddr, topic: &str, file: &Path) {
    let status = Command::new(program("mosquitto_pub", "mosquitto-clients"))
        .args(["-h", "127.0.0.1", "-p", &addr.port().to_string(), "-q", "1"])
        .args(["-t", topic, "-f"])
        .arg(file)
        .status()
        .unwrap();
    assert!(status.success(), "mosquitto_pub failed");
}

/// Size and modification time of every file under `dir`.
fn files(dir: &Path) -> BTreeMap<PathBuf, (u64, SystemTime)> {
    let mut found = BTreeMap::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(d).unwrap() {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                dirs.push(entry.path());
            } else {
                found.insert(entry.path(), (meta.len(), meta.modified().unwrap()));
            }
        }
    }
    found
}

#[test]
fn stat_dump_and_tail_read_a_running_brokers_data_dir_without_disturbing_it() {
    // Kafka is unreachable: the forwarder's cursor exists and stays at 0.
    let broker = Broker::start(
        "[kafka]\nbrokers = [\"127.0.0.1:1\"]\nretry_backoff_max = \"1s\"\n\
         [[route]]\nmqtt = \"sensors/+/t\"\nkafka_topic = \"sensors\"\nkey = \"{topic.2}\"\n",
    );
    let config = broker.dir.join("edge-broker.toml");
    let addr = broker.mqtt_addr();
    publish(addr, 50);
    let binary = broker.dir.join("binary.bin");
    std::fs::write(&binary, (0..=255u8).collect::<Vec<u8>>()).unwrap();
    mosquitto_pub_file(addr, "sensors/dev-bin/t", &binary);
    let data_dir = broker.data_dir();
    // The log and the lock (the MQTT session snapshots beside them change on their own).
    let watched = || {
        let mut found = files(&data_dir.join("log"));
        found.extend(
            files(&data_dir)
                .into_iter()
                .filter(|(p, _)| p.ends_with("LOCK")),
        );
        found
    };
    let before = watched();

    let (code, out, err) = log_cli(&["stat"], Some(&config));
    assert_eq!(code, Some(0), "{err}");
    for want in [
        format!("running (pid {} holds LOCK)", broker.pid()),
        "offsets    0..51 held (51 record(s))".to_owned(),
        "00000000000000000000.seg".to_owned(),
        "kafka: committed 0, 51 record(s) behind (the Kafka forwarder)".to_owned(),
        "of the 2.0 GiB budget".to_owned(),
        "no dead letters".to_owned(),
    ] {
        assert!(out.contains(&want), "{want:?} missing:\n{out}");
    }

    let (code, out, err) = log_cli(&["dump", "--from", "3", "-n", "2"], Some(&config));
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        out.matches("\noffset ").count() + usize::from(out.starts_with("offset ")),
        2,
        "{out}"
    );
    for want in [
        "offset 3  ",
        "mqtt \"sensors/dev-3/t\"  client \"acked-publisher\"",
        "-> kafka sensors, key \"dev-3\", partition by key",
        "header \"unit\" = \"C\"",
        "payload 5 B: \"msg-3\"",
        "offset 4  ",
    ] {
        assert!(out.contains(want), "{want:?} missing:\n{out}");
    }

    let (code, out, _) = log_cli(&["dump", "--from", "50", "--json"], Some(&config));
    assert_eq!(code, Some(0));
    let records: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 1, "{out}");
    let r = &records[0];
    assert_eq!(r["offset"], 50);
    assert_eq!(r["topic"], "sensors/dev-bin/t");
    assert_eq!(r["destination"]["kafka_topic"], "sensors");
    assert_eq!(r["destination"]["key"]["value"], "dev-bin");
    assert_eq!(r["payload_encoding"], "hex");
    assert_eq!(r["payload_bytes"], 256);
    assert!(r["payload"].as_str().unwrap().starts_with("000102"), "{r}");

    let (code, out, _) = log_cli(&["tail", "-n", "1", "--max-payload", "4"], Some(&config));
    assert_eq!(code, Some(0));
    assert!(
        out.starts_with("offset 50 ")
            && out.contains("payload 256 B: hex 00010203 … (252 more bytes)"),
        "{out}"
    );

    // A data directory given as such; JSON.
    let (code, out, _) = log_cli(&["stat", data_dir.to_str().unwrap(), "--json"], None);
    assert_eq!(code, Some(0));
    let stat: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(stat["next_offset"], 51);
    assert_eq!(stat["broker_running"], true);
    assert_eq!(stat["cursors"][0]["lag"], 51);
    assert_eq!(stat["segments"][0]["version"], 2);

    let (code, _, err) = log_cli(&["dump", "--from", "500"], Some(&config));
    assert_eq!(code, Some(1));
    assert!(
        err.contains("offset 500 is not in the log, which holds offsets 0..51"),
        "{err}"
    );

    // Nothing was written, and the broker goes on serving.
    assert_eq!(watched(), before, "the tools changed the data directory");
    publish(addr, 1);
    let (_, out, _) = log_cli(&["stat"], Some(&config));
    assert!(out.contains("0..52 held"), "{out}");
}

#[test]
fn dead_letters_are_listed_and_requeued_once_the_cause_is_fixed() {
    let tansu = Tansu::start();
    let bootstrap = tansu.bootstrap();
    create_topic(&bootstrap, "sensors", 1);
    let body = |max_request: &str| {
        format!(
            "[kafka]\nbrokers = [\"{bootstrap}\"]\nmax_request_bytes = \"{max_request}\"\n\
             retry_backoff_max = \"500ms\"\n\
             [[route]]\nmqtt = \"sensors/+/t\"\nkafka_topic = \"sensors\"\nkey = \"{{topic.2}}\"\n"
        )
    };
    // A record above max_request_bytes is refused for good: dead-lettered.
    let mut broker = Broker::start(&body("8KiB"));
    let config = broker.dir.join("edge-broker.toml");
    let metrics = broker.listen_addr("metrics.listen");
    let big = broker.dir.join("big.bin");
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    // Random hex text: incompressible enough for lz4 to stay above the limit, and readable
    // back as UTF-8.
    let noise: String = (0..40_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from_digit((x >> 60) as u32, 16).unwrap()
        })
        .collect();
    std::fs::write(&big, &noise).unwrap();
    mosquitto_pub_file(broker.mqtt_addr(), "sensors/dev-big/t", &big);
    publish(broker.mqtt_addr(), 3);
    wait_for_metric(
        metrics,
        "edge_kafka_dead_letters_total",
        Duration::from_secs(30),
        |v| v == 1.0,
    );
    wait_for_metric(
        metrics,
        "edge_kafka_lag_records",
        Duration::from_secs(30),
        |v| v == 0.0,
    );

    let (code, out, err) = log_cli(&["dead-letters"], Some(&config));
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("1 dead letter(s) in "), "{out}");
    assert!(
        out.contains("offset 0 ") && out.contains("mqtt \"sensors/dev-big/t\""),
        "{out}"
    );
    assert!(
        out.contains("-> kafka sensors partition 0: REFUSED: "),
        "{out}"
    );
    assert!(out.contains("payload 40000 B: \""), "{out}");
    let (_, out, _) = log_cli(&["stat"], Some(&config));
    assert!(out.contains("1 dead letter(s) in "), "{out}");

    // While the broker runs, requeue refuses (and changes nothing).
    let (code, _, err) = log_cli(&["requeue"], Some(&config));
    assert_eq!(code, Some(1));
    assert!(err.contains("the broker is running"), "{err}");

    // Fix the cause (a larger request limit), stop the broker, re-queue, start again.
    assert!(broker.terminate(Duration::from_secs(25)).success());
    edge_tests::broker::write_config(&broker.dir, &body("1MiB"));
    let (code, out, err) = log_cli(&["requeue", "--dry-run"], Some(&config));
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("would re-queue offset 0 -> kafka sensors"),
        "{out}"
    );
    let (code, out, err) = log_cli(&["requeue"], Some(&config));
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("re-queued offset 0 as offset 4 -> kafka sensors"),
        "{out}"
    );
    assert!(out.contains("The old file is kept as "), "{out}");
    let (_, out, _) = log_cli(&["dead-letters"], Some(&config));
    assert!(out.starts_with("no dead letters"), "{out}");
    let (_, out, _) = log_cli(&["requeue"], Some(&config));
    assert!(
        out.starts_with("no dead letters to re-queue"),
        "a second run adds nothing: {out}"
    );

    let dir = broker.dir.clone();
    let broker = Broker::start_in(&dir, &body("1MiB"));
    let metrics = broker.listen_addr("metrics.listen");
    wait_for_metric(
        metrics,
        "edge_kafka_lag_records",
        Duration::from_secs(30),
        |v| v == 0.0,
    );
    let records = read_topic(&bootstrap, "sensors", 4);
    let requeued: Vec<_> = records
        .iter()
        .filter(|r| r.header("edge-requeued-from").is_some())
        .collect();
    assert_eq!(requeued.len(), 1, "{records:?}");
    let r = requeued[0];
    assert_eq!(r.header("edge-requeued-from"), Some("0"));
    assert_eq!(r.header("edge-offset"), Some("4"));
    assert_eq!(r.header("edge-topic"), Some("sensors/dev-big/t"));
    assert_eq!(r.key.as_deref(), Some("dev-big"));
    assert_eq!(
        r.value.as_deref(),
        Some(noise.as_str()),
        "the payload comes back whole"
    );
    drop(broker);
}
