//! The command-line contract: `--version`, `check`, running until SIGTERM, the data-dir lock and
//! log recovery at start, all through the real binary.

// Helpers outside #[test] fns fail the test by panicking, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Duration;

use edge_tests::broker::{Broker, broker_binary};

fn check(config: &str) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edge-broker.toml");
    std::fs::write(&path, config).unwrap();
    let output = Command::new(broker_binary())
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn version_names_the_binary_and_release() {
    let output = Command::new(broker_binary())
        .arg("--version")
        .output()
        .unwrap();
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        stdout.trim(),
        format!("edge-broker {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn check_accepts_a_valid_config() {
    let (ok, stdout, stderr) = check(
        "[node]\nid = \"gw-01\"\ndata_dir = \"/var/lib/edge-broker\"\n\
         [log]\nsegment_bytes = \"64MiB\"\nmax_bytes = \"2GiB\"\nfsync = \"interval:100ms\"\nwhen_full = \"reject\"\n",
    );
    assert!(ok, "stderr: {stderr}");
    assert!(stdout.contains("ok"), "{stdout}");
}

#[test]
fn check_warns_that_fsync_never_gives_up_the_promise() {
    let (ok, stdout, stderr) = check("[log]\nfsync = \"never\"\n");
    assert!(ok, "stderr: {stderr}");
    assert!(
        stdout.contains("warning: log.fsync = \"never\""),
        "{stdout}"
    );
}

#[test]
fn check_names_the_bad_field_and_fails() {
    for (config, field) in [
        ("[log]\nfsync = \"sometimes\"\n", "log.fsync"),
        ("[log]\nmax_bytes = \"lots\"\n", "log.max_bytes"),
        ("[log]\nwhen_ful = \"block\"\n", "log.when_ful"),
        ("[node]\nid = \"has space\"\n", "node.id"),
        ("[storage]\n", "storage"),
        (
            "[kafka]\nmax_transaction_interval = \"40s\"\n",
            "kafka.max_transaction_interval",
        ),
        (
            "[kafka]\nmax_transaction_interval = \"10ms\"\n",
            "kafka.max_transaction_interval",
        ),
    ] {
        let (ok, _, stderr) = check(config);
        assert!(!ok, "{config:?} was accepted");
        assert!(
            stderr.contains(field),
            "error for {config:?} does not name {field}: {stderr}"
        );
    }
}

#[test]
fn check_without_a_config_is_a_usage_error() {
    let output = Command::new(broker_binary()).arg("check").output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--config"));
}

#[test]
fn sigterm_shuts_down_cleanly() {
    let mut broker = Broker::start("");
    assert!(broker.data_dir().join("log").is_dir());
    let status = broker.terminate(Duration::from_secs(25));
    assert!(status.success(), "exit status {status}");
}

#[test]
fn a_second_broker_on_the_same_data_dir_is_refused() {
    let mut first = Broker::start("");
    let mut second = Broker::spawn_in(&first.dir, "");
    let status = second.wait_exit(Duration::from_secs(10));
    assert!(!status.success());
    second.wait_for_line("in use by another edge-broker", Duration::from_secs(1));
    assert!(first.terminate(Duration::from_secs(25)).success());
}

#[test]
fn restart_recovers_a_torn_tail_and_reports_it() {
    let mut first = Broker::start("");
    let log_dir = first.data_dir().join("log");
    assert!(first.terminate(Duration::from_secs(25)).success());

    let mut segments: Vec<_> = std::fs::read_dir(&log_dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "seg"))
        .collect();
    segments.sort();
    let tail = segments
        .last()
        .expect("the log has a segment after its first start");
    let clean_len = std::fs::metadata(tail).unwrap().len();
    // A torn write: a frame header promising 100 bytes, then only garbage and zeros.
    let mut bytes = std::fs::read(tail).unwrap();
    bytes.extend_from_slice(&100u32.to_le_bytes());
    bytes.extend_from_slice(&[0xAB; 7]);
    bytes.extend_from_slice(&[0; 20]);
    std::fs::write(tail, &bytes).unwrap();

    let dir = first.dir.clone();
    let mut second = Broker::start_in(&dir, "");
    let line = second.wait_for_line("log recovered", Duration::from_secs(1));
    assert!(
        line.contains("TRUNCATED 31 byte(s)"),
        "recovery did not report the torn tail: {line}"
    );
    assert_eq!(std::fs::metadata(tail).unwrap().len(), clean_len);
    assert!(second.terminate(Duration::from_secs(25)).success());
}

fn run_cli(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let out = edge_tests::broker::run_cli(args, env);
    (out.code, out.stdout, out.stderr)
}

#[test]
fn a_variable_of_another_program_does_not_stop_the_broker() {
    // examples/demo.sh documents EDGE_BROKER_BIN=...; the broker used to refuse to start on it.
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::spawn_with_env(dir.path(), "", &[("EDGE_BROKER_BIN", "/usr/bin/x")]);
    broker.wait_for_line("edge-broker ready", edge_tests::broker::READY_TIMEOUT);
    assert!(broker.terminate(Duration::from_secs(25)).success());
}

#[test]
fn logging_variables_have_their_own_names_and_the_old_ones_still_work() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker =
        Broker::spawn_with_env(dir.path(), "", &[("EDGE_BROKER_LOGGING_FORMAT", "json")]);
    let ready = broker.wait_for_line("edge-broker ready", edge_tests::broker::READY_TIMEOUT);
    assert!(ready.starts_with('{'), "JSON lines expected: {ready}");
    assert!(
        !broker.lines().iter().any(|l| l.contains("deprecated")),
        "{:?}",
        broker.lines()
    );
    assert!(broker.terminate(Duration::from_secs(25)).success());

    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::spawn_with_env(dir.path(), "", &[("EDGE_BROKER_LOG_FORMAT", "json")]);
    let ready = broker.wait_for_line("edge-broker ready", edge_tests::broker::READY_TIMEOUT);
    assert!(ready.starts_with('{'), "the old name still works: {ready}");
    broker.wait_for_line(
        "EDGE_BROKER_LOG_FORMAT is deprecated: rename it EDGE_BROKER_LOGGING_FORMAT",
        Duration::from_secs(1),
    );
    assert!(broker.terminate(Duration::from_secs(25)).success());
}

#[test]
fn help_lists_every_variable_the_env_file_and_the_code_read() {
    let (code, help, _) = run_cli(&["--help"], &[]);
    assert_eq!(code, Some(0));
    let root = edge_tests::peers::repo_root();
    let mut names = Vec::new();
    // systemd/edge-broker.env says `edge-broker --help` lists every variable it mentions.
    for line in std::fs::read_to_string(root.join("systemd/edge-broker.env"))
        .unwrap()
        .lines()
    {
        let line = line.trim_start_matches('#').trim();
        if let Some((name, _)) = line.split_once('=')
            && !name.is_empty()
            && name.chars().all(|c| c.is_ascii_uppercase() || c == '_')
        {
            names.push(name.to_owned());
        }
    }
    assert!(names.len() >= 2, "no variables found in the env file");
    // And every variable the broker's code reads by name.
    let mut sources = vec![root.join("edge-broker/src")];
    while let Some(dir) = sources.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                sources.push(path);
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for pattern in [
                "env::var(\"",
                "env::var_os(\"",
                "env = \"",
                "CREDENTIALS_DIRECTORY: &str = \"",
            ] {
                for piece in text.split(pattern).skip(1) {
                    names.push(piece.split('"').next().unwrap().to_owned());
                }
            }
        }
    }
    let sections = ["NODE", "LOG", "MQTT", "NATS", "METRICS", "KAFKA"];
    for name in names {
        let is_override = sections
            .iter()
            .any(|s| name.starts_with(&format!("EDGE_BROKER_{s}_")))
            && !name.starts_with("EDGE_BROKER_LOGGING");
        if is_override {
            assert!(help.contains("EDGE_BROKER_<SECTION>_<KEY>"), "{help}");
        } else {
            assert!(help.contains(&name), "--help does not list {name}:\n{help}");
        }
    }
}

#[test]
fn check_reports_every_problem_with_its_line() {
    let (ok, _, stderr) = check(
        "[mqtt]\nlisten = \"127.0.0.1\"\nmax_inflight = 0\n\n\
         [[route]]\nnats = \"machines/+/status\"\nkafka_topic = \"machines\"\nkey = \"{topic.2}\"\n",
    );
    assert!(!ok);
    for want in [
        "3 problems",
        "mqtt.listen: \"127.0.0.1\" has no port: write \"127.0.0.1:1883\"",
        "(line 2, column 10)",
        "mqtt.max_inflight: must be at least 1 (line 3",
        "route[1].nats: ",
        "write nats = \"machines.*.status\"",
        "(line 6, column 8)",
    ] {
        assert!(stderr.contains(want), "{want:?} missing:\n{stderr}");
    }
    // Count the problems: three, and route[1].key is not blamed for the filter's mistake.
    assert!(!stderr.contains("route[1].key"), "{stderr}");
    let (ok, _, stderr) = check("[route]\nmqtt = \"a/#\"\nkafka_topic = \"a\"\n");
    assert!(!ok);
    assert!(stderr.contains("write [[route]]"), "{stderr}");
}

#[test]
fn check_summarizes_what_the_config_sets_up() {
    let (ok, stdout, stderr) = check(
        "[node]\nid = \"gw-9\"\ndata_dir = \"/var/lib/edge-broker\"\n\
         [mqtt]\nlisten = \"0.0.0.0:1883\"\n[log]\nmax_bytes = \"1GiB\"\nfsync = \"always\"\n\
         [kafka]\nbrokers = [\"kafka-1:9092\", \"kafka-2:9092\"]\n\
         [[route]]\nmqtt = \"sensors/+/temperature\"\nkafka_topic = \"sensor-temperature\"\nkey = \"{topic.2}\"\n",
    );
    assert!(ok, "{stderr}");
    for want in [
        ": ok (node gw-9, data in /var/lib/edge-broker)",
        "mqtt 0.0.0.0:1883, nats 127.0.0.1:4222, metrics http://127.0.0.1:9100/metrics",
        "1GiB budget in 64MiB segments at /var/lib/edge-broker/log; fsync always",
        "kafka-1:9092, kafka-2:9092",
        "route[1]  mqtt sensors/+/temperature -> sensor-temperature, key {topic.2}",
    ] {
        assert!(stdout.contains(want), "{want:?} missing:\n{stdout}");
    }
    assert!(!stdout.contains("fsync Always"), "{stdout}");
    let (ok, stdout, _) = check("");
    assert!(ok);
    assert!(
        stdout.contains("warning: no [[route]]: nothing is stored"),
        "{stdout}"
    );
}

#[test]
fn a_missing_config_file_is_reported_once() {
    let (code, _, stderr) = run_cli(&["--config", "/nonexistent/edge-broker.toml"], &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(
        stderr.matches("No such file").count(),
        1,
        "one line, said once:\n{stderr}"
    );
    // The example config used to say a missing file runs on defaults.
    let example =
        std::fs::read_to_string(edge_tests::peers::repo_root().join("examples/edge-broker.toml"))
            .unwrap();
    assert!(
        !example.contains("a missing file runs on"),
        "examples/edge-broker.toml still claims a missing file runs on defaults"
    );
}

#[test]
fn startup_says_what_is_stored_and_probes_stay_quiet() {
    // NATS with credentials: a silent connection runs into the authentication timeout.
    let mut broker =
        Broker::start("[nats]\ntoken = \"t\"\nallow_anonymous = false\nauth_timeout = \"200ms\"\n");
    broker.wait_for_line(
        "no [[route]] configured: publishes reach local subscribers only; nothing is stored",
        Duration::from_secs(1),
    );
    let ready = broker.wait_for_line("edge-broker ready", Duration::from_secs(1));
    assert!(
        ready.contains("0 route(s); the log holds 0 record(s)")
            && ready.contains("24 B on disk of the 2.0 GiB budget"),
        "{ready}"
    );
    // Port probes: connect, send nothing, close. Then a real (bad) client, so we know the
    // broker has handled connections by the time its line appears.
    let mqtt = broker.mqtt_addr();
    let nats = broker.listen_addr("nats.listen");
    let held = std::net::TcpStream::connect(nats).unwrap();
    for addr in [mqtt, nats] {
        drop(std::net::TcpStream::connect(addr).unwrap());
    }
    std::thread::sleep(Duration::from_millis(500));
    drop(held);
    {
        use std::io::Write;
        let mut bad = std::net::TcpStream::connect(mqtt).unwrap();
        bad.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    }
    broker.wait_for_line("invalid CONNECT", Duration::from_secs(5));
    let quiet_for = std::time::Instant::now();
    while quiet_for.elapsed() < Duration::from_millis(300) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let probe_lines: Vec<String> = broker
        .lines()
        .into_iter()
        .filter(|l| {
            (l.contains("connection closed") || l.contains("NATS client disconnected"))
                && !l.contains("invalid CONNECT")
        })
        .collect();
    assert!(probe_lines.is_empty(), "probes logged: {probe_lines:?}");
    assert!(broker.terminate(Duration::from_secs(25)).success());
}

#[test]
fn a_listener_that_cannot_bind_is_reported_once() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::spawn_in(
        dir.path(),
        &format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n"),
    );
    assert!(!broker.wait_exit(Duration::from_secs(20)).success());
    let line = broker.wait_for_line("metrics.listen: cannot listen on", Duration::from_secs(1));
    assert_eq!(
        line.matches("Address already in use").count(),
        1,
        "the cause said once: {line}"
    );
}
