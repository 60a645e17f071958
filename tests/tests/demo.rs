//! `examples/demo.sh` stays working: run as documented (`EDGE_BROKER_BIN=... examples/demo.sh`,
//! which used to stop the broker from starting), against real Tansu, real sensor clients and a
//! real Kafka consumer, it must show events in Kafka before the outage and the replay after
//! it, and say so in its verdict (exit 0). Needs `.venv` with examples/requirements.txt (the
//! test peers' requirements include them).

// Helpers outside #[test] fns fail the test by panicking, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use edge_tests::broker::broker_binary;
use edge_tests::peers::{python, repo_root};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// The demo and everything it started, as one process group: TERMed (the demo's own cleanup
/// stops its children) and reaped on drop.
struct Demo(std::process::Child);

impl Drop for Demo {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = killpg(Pid::from_raw(self.0.id() as i32), Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline && matches!(self.0.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = killpg(Pid::from_raw(self.0.id() as i32), Signal::SIGKILL);
            let _ = self.0.wait();
        }
    }
}

fn demo() -> Command {
    let mut command = Command::new("bash");
    command
        .arg(repo_root().join("examples/demo.sh"))
        .env("PYTHON", python())
        .env_remove("EDGE_BROKER_BIN")
        .env_remove("EDGE_BROKER_CONFIG")
        .process_group(0);
    command
}

#[test]
fn the_demo_shows_kafka_delivery_the_outage_and_the_replay() {
    let mut child = demo()
        .env("EDGE_BROKER_BIN", broker_binary())
        .env("DEMO_STEP_SECS", "4")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut demo = Demo(child);
    let out = std::thread::spawn(move || std::io::read_to_string(stdout).unwrap());
    let err = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap());
    let deadline = Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Some(status) = demo.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the demo ran for 3 minutes");
        std::thread::sleep(Duration::from_millis(200));
    };
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    let report = format!("--- stdout\n{out}\n--- stderr\n{err}");
    for want in [
        "== 1. starting Tansu",
        ": ok (node demo-gw,",
        "== 4. cutting the uplink",
        "uplink   DOWN",
        "== 5. uplink back",
        "OK: the consumer saw ",
        "OK: after the uplink came back the consumer saw ",
    ] {
        assert!(out.contains(want), "{want:?} missing:\n{report}");
    }
    assert!(!out.contains("PROBLEM"), "{report}");
    assert!(status.success(), "{report}");
}

#[test]
fn the_demo_finds_the_binary_under_cargo_target_dir() {
    let target = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(target.path().join("debug")).unwrap();
    std::os::unix::fs::symlink(broker_binary(), target.path().join("debug/edge-broker")).unwrap();
    let output = demo()
        .arg("--binary")
        .env("CARGO_TARGET_DIR", target.path())
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        target
            .path()
            .join("debug/edge-broker")
            .display()
            .to_string()
    );
}
