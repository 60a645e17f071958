//! Running the real `edge-broker` binary in a test.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// How long a broker may take to become ready before a test gives up.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// Path of the `edge-broker` binary built by this `cargo test` run.
///
/// Integration tests live in `target/<profile>/deps/`; the binary is in `target/<profile>/`.
pub fn broker_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("current test executable");
    // A binary of this crate (the benchmark harness) sits beside `edge-broker`.
    let beside = exe.parent().map(|dir| dir.join("edge-broker"));
    if let Some(binary) = beside.filter(|b| b.is_file()) {
        assert_fresh(&binary);
        return binary;
    }
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable sits in target/<profile>/deps");
    let binary = profile_dir.join("edge-broker");
    assert!(
        binary.exists(),
        "{} is missing: run the tests with `cargo test --workspace` (or `cargo build -p edge-broker` first)",
        binary.display()
    );
    assert_fresh(&binary);
    binary
}

/// `cargo test -p edge-tests` does not rebuild the broker binary: refuse to test a stale one.
fn assert_fresh(binary: &Path) {
    fn newest(dir: &Path) -> Option<std::time::SystemTime> {
        std::fs::read_dir(dir)
            .ok()?
            .filter_map(Result::ok)
            .filter_map(|entry| {
                let path = entry.path();
                if path.is_dir() {
                    newest(&path)
                } else if path.extension().is_some_and(|e| e == "rs") {
                    entry.metadata().ok()?.modified().ok()
                } else {
                    None
                }
            })
            .max()
    }
    let built = std::fs::metadata(binary).and_then(|m| m.modified()).ok();
    let root = crate::peers::repo_root();
    let sources = ["edge-broker/src", "log/src", "proto/src", "bridge/src"]
        .iter()
        .filter_map(|dir| newest(&root.join(dir)))
        .max();
    if let (Some(built), Some(sources)) = (built, sources) {
        assert!(
            built >= sources,
            "{} is older than its sources: run `cargo build -p edge-broker` or test with `cargo test --workspace`",
            binary.display()
        );
    }
}

/// What a one-shot run of the binary printed.
#[derive(Debug, Clone)]
pub struct CliOutput {
    /// Exit code (`None` when killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// Runs `edge-broker ARGS` to completion with `env` added (and `EDGE_BROKER_CONFIG` of the test
/// process removed).
pub fn run_cli<S: AsRef<std::ffi::OsStr>>(args: &[S], env: &[(&str, &str)]) -> CliOutput {
    let output = Command::new(broker_binary())
        .args(args)
        .envs(env.iter().copied())
        .env_remove("EDGE_BROKER_CONFIG")
        .output()
        .expect("run edge-broker");
    CliOutput {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Writes `<dir>/edge-broker.toml`: a `[node]` section with data in `<dir>/data`, then the body
/// with every listener it does not place on an ephemeral port. Returns the file's path.
pub fn write_config(dir: &Path, config_body: &str) -> PathBuf {
    let config = dir.join("edge-broker.toml");
    let text = format!(
        "[node]\nid = \"test-gw\"\ndata_dir = \"{}\"\n\n{}",
        dir.join("data").display(),
        with_ephemeral_listeners(config_body)
    );
    std::fs::write(&config, text).expect("write config");
    config
}

/// Sections with a `listen` address; tests never use the fixed default ports.
const LISTENER_SECTIONS: [&str; 3] = ["mqtt", "nats", "metrics"];

/// Adds `listen = "127.0.0.1:0"` to every listener section that does not set its own.
fn with_ephemeral_listeners(body: &str) -> String {
    let mut out = String::new();
    let mut section = String::new();
    let mut placed: Vec<String> = Vec::new();
    let mut pending: Option<String> = None;
    for line in body.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            if let Some(name) = pending.take() {
                out.push_str("listen = \"127.0.0.1:0\"\n");
                placed.push(name);
            }
            section = trimmed.trim_matches(|c| c == '[' || c == ']').to_owned();
            if LISTENER_SECTIONS.contains(&section.as_str()) {
                pending = Some(section.clone());
            }
        } else if trimmed.starts_with("listen") && pending.as_deref() == Some(section.as_str()) {
            placed.push(section.clone());
            pending = None;
        }
        out.push_str(line);
        out.push('\n');
    }
    if let Some(name) = pending.take() {
        out.push_str("listen = \"127.0.0.1:0\"\n");
        placed.push(name);
    }
    for name in LISTENER_SECTIONS {
        if !placed.iter().any(|p| p == name) && !body.contains(&format!("[{name}]")) {
            out.push_str(&format!("\n[{name}]\nlisten = \"127.0.0.1:0\"\n"));
        }
    }
    out
}

/// A running `edge-broker` process with its own data directory; killed on drop.
pub struct Broker {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    new_line: Receiver<String>,
    /// The temporary directory holding `edge-broker.toml` and `data/`.
    pub dir: PathBuf,
    _tempdir: Option<tempfile::TempDir>,
}

impl Broker {
    /// Starts a broker whose config is `config_body` with a `[node]` section pointing at a fresh
    /// temporary data directory prepended, and waits until it logs that it is ready.
    pub fn start(config_body: &str) -> Broker {
        let tempdir = tempfile::tempdir().expect("temp dir");
        let dir = tempdir.path().to_path_buf();
        let mut broker = Broker::start_in(&dir, config_body);
        broker._tempdir = Some(tempdir);
        broker
    }

    /// Like [`Broker::start`] with another `edge-broker` binary (benchmarks compare builds).
    pub fn start_binary(binary: &Path, config_body: &str) -> Broker {
        let tempdir = tempfile::tempdir().expect("temp dir");
        let dir = tempdir.path().to_path_buf();
        let mut broker = Broker::spawn_binary(binary, &dir, config_body, &[]);
        broker.wait_for_line("edge-broker ready", READY_TIMEOUT);
        broker._tempdir = Some(tempdir);
        broker
    }

    /// Like [`Broker::start`] in an existing directory (to restart on the same data).
    pub fn start_in(dir: &Path, config_body: &str) -> Broker {
        let broker = Broker::spawn_in(dir, config_body);
        broker.wait_for_line("edge-broker ready", READY_TIMEOUT);
        broker
    }

    /// Starts a broker without waiting for it to become ready.
    pub fn spawn_in(dir: &Path, config_body: &str) -> Broker {
        Broker::spawn_with_env(dir, config_body, &[])
    }

    /// Starts a broker with extra environment variables, without waiting for it to be ready.
    ///
    /// Every listener the body does not place itself listens on an ephemeral port.
    pub fn spawn_with_env(dir: &Path, config_body: &str, env: &[(&str, &str)]) -> Broker {
        Broker::spawn_binary(&broker_binary(), dir, config_body, env)
    }

    fn spawn_binary(binary: &Path, dir: &Path, config_body: &str, env: &[(&str, &str)]) -> Broker {
        let config = write_config(dir, config_body);
        let mut child = Command::new(binary)
            .arg("--config")
            .arg(&config)
            // EDGE_TESTS_BROKER_LOG=debug (or any RUST_LOG filter) to see more when debugging.
            .env(
                "RUST_LOG",
                std::env::var("EDGE_TESTS_BROKER_LOG").unwrap_or_else(|_| "info".to_owned()),
            )
            .env_remove("JOURNAL_STREAM")
            .env_remove("NOTIFY_SOCKET")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn edge-broker");
        let stderr = child.stderr.take().expect("piped stderr");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (sender, new_line) = channel();
        let collected = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                eprintln!("[edge-broker] {line}");
                collected.lock().expect("log lines").push(line.clone());
                if sender.send(line).is_err() {
                    // Nobody waits for lines any more; keep draining so the broker never blocks.
                }
            }
        });
        Broker {
            child,
            lines,
            new_line,
            dir: dir.to_path_buf(),
            _tempdir: None,
        }
    }

    /// The data directory (`<dir>/data`).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The address a listener bound, from its `listening on ADDR listener="FIELD"` log line.
    pub fn listen_addr(&self, field: &str) -> std::net::SocketAddr {
        let line = self.wait_for_line(&format!("listener=\"{field}\""), READY_TIMEOUT);
        line.split("listening on ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("no address in log line {line:?}"))
    }

    /// The MQTT listener's address.
    pub fn mqtt_addr(&self) -> std::net::SocketAddr {
        self.listen_addr("mqtt.listen")
    }

    /// The value of one sample of `/metrics` (`name` with its labels as rendered, e.g.
    /// `edge_auth_login_failures_total{protocol="mqtt"}`); `None` if it is not there.
    pub fn metric(&self, sample: &str) -> Option<f64> {
        crate::kafka::metric(self.listen_addr("metrics.listen"), sample)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every stderr line so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().expect("log lines").clone()
    }

    /// Waits until a stderr line contains `needle` and returns it; panics after `timeout` or if
    /// the broker exits first.
    pub fn wait_for_line(&self, needle: &str, timeout: Duration) -> String {
        if let Some(line) = self.lines().into_iter().find(|l| l.contains(needle)) {
            return line;
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.new_line.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => panic!(
                    "edge-broker did not log {needle:?} within {timeout:?}; its log:\n{}",
                    self.lines().join("\n")
                ),
                Err(RecvTimeoutError::Disconnected) => panic!(
                    "edge-broker exited before logging {needle:?}; its log:\n{}",
                    self.lines().join("\n")
                ),
            }
        }
    }

    /// Sends `signal` to the broker.
    pub fn signal(&self, signal: Signal) {
        let pid = i32::try_from(self.child.id()).expect("pid fits i32");
        kill(Pid::from_raw(pid), signal).expect("send signal");
    }

    /// Sends SIGTERM and waits for the exit, panicking if it takes longer than `timeout`.
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        self.signal(Signal::SIGTERM);
        self.wait_exit(timeout)
    }

    /// SIGKILLs the broker (a crash) and reaps it.
    pub fn kill(&mut self) {
        self.signal(Signal::SIGKILL);
        self.wait_exit(Duration::from_secs(10));
    }

    /// Waits for the process to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "edge-broker did not exit within {timeout:?}; its log:\n{}",
                self.lines().join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_default_to_ephemeral_ports_unless_placed() {
        let out = with_ephemeral_listeners("[mqtt]\nmax_inflight = 5\n[log]\nfsync = \"never\"\n");
        assert!(
            out.contains("[mqtt]\nmax_inflight = 5\nlisten = \"127.0.0.1:0\"\n[log]"),
            "{out}"
        );
        assert!(
            out.contains("[metrics]\nlisten = \"127.0.0.1:0\"\n"),
            "{out}"
        );
        assert!(out.contains("[nats]\nlisten = \"127.0.0.1:0\"\n"), "{out}");
        let out = with_ephemeral_listeners("[metrics]\nlisten = \"127.0.0.1:9\"\n");
        assert_eq!(out.matches("listen").count(), 3, "{out}");
        assert!(out.contains("127.0.0.1:9"));
    }
}
