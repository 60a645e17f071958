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
