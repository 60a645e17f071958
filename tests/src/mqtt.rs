//! MQTT peers: the scenario driver (`tests/tools/mqtt_scenarios.py`, real clients) and Debian's
//! Mosquitto as the reference broker for differential tests.

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::peers::{ChildGuard, program, python, repo_root};

/// How long one scenario may run before the test gives up on it.
pub const SCENARIO_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `mqtt_scenarios.py NAME HOST PORT ARGS...` and returns its JSON observations; panics
/// with the scenario's stderr when it fails or hangs.
pub fn scenario(name: &str, addr: SocketAddr, args: &[&str]) -> serde_json::Value {
    driver_scenario("mqtt_scenarios.py", name, addr, args)
}

/// Runs `tests/tools/DRIVER NAME HOST PORT ARGS...`, a scenario driver shaped like
/// `mqtt_scenarios.py` (one JSON line on success; exit 1 with the reason on stderr), and
/// returns its JSON observations; panics with the scenario's stderr when it fails or hangs.
pub fn driver_scenario(
    driver: &str,
    name: &str,
    addr: SocketAddr,
    args: &[&str],
) -> serde_json::Value {
    let mut child = Command::new(python())
        .arg(repo_root().join("tests/tools").join(driver))
        .arg(name)
        .arg(addr.ip().to_string())
        .arg(addr.port().to_string())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the scenario driver");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let mut guard = ChildGuard(child);
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + SCENARIO_TIMEOUT;
    let status = loop {
        if let Some(status) = guard.0.try_wait().expect("try_wait") {
            break Some(status);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    drop(guard);
    let out = out_reader.join().unwrap_or_default();
    let err = err_reader.join().unwrap_or_default();
    match status {
        Some(status) if status.success() => {
            let line = out.lines().last().unwrap_or("");
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("scenario {name}: bad JSON {line:?}: {e}"))
        }
        Some(status) => panic!("scenario {name} against {addr} failed ({status}):\n{err}{out}"),
        None => panic!("scenario {name} against {addr} hung for {SCENARIO_TIMEOUT:?}:\n{err}"),
    }
}

/// Runs `tests/tools/hostile.py SCENARIO HOST PORT PID ARGS...` (`args[0]` is the scenario)
/// against the broker process `pid` listening on `addr`; returns its JSON observations.
pub fn hostile(pid: u32, addr: SocketAddr, args: &[&str]) -> serde_json::Value {
    let out = Command::new(python())
        .arg(repo_root().join("tests/tools/hostile.py"))
        .arg(args[0])
        .arg(addr.ip().to_string())
        .arg(addr.port().to_string())
        .arg(pid.to_string())
        .args(&args[1..])
        .output()
        .expect("run tests/tools/hostile.py");
    assert!(
        out.status.success(),
        "hostile.py {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON from hostile.py");
    eprintln!("hostile.py {args:?}: {out}");
    out
}

/// A free loopback port (bound and released; good enough for a test peer started right after).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

/// Debian's Mosquitto on an ephemeral loopback port; stopped on drop.
pub struct Mosquitto {
    /// The process.
    pub child: ChildGuard,
    /// Where it listens.
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    /// Starts `mosquitto -c` with `listener PORT 127.0.0.1`, anonymous access and `extra`
    /// config lines (default: `persistence false`), and waits until it accepts connections.
    pub fn start(extra: &str) -> Mosquitto {
        let binary = program("mosquitto", "mosquitto");
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let extra = if extra.contains("persistence") {
            extra.to_owned()
        } else {
            format!("persistence false\n{extra}")
        };
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!("listener {port} 127.0.0.1\nallow_anonymous true\n{extra}\n"),
        )
        .expect("write mosquitto.conf");
        let child = Command::new(binary)
            .arg("-c")
            .arg(&conf)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn mosquitto");
        let mut child = ChildGuard(child);
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).is_err() {
            if let Some(status) = child.0.try_wait().expect("try_wait") {
                panic!("mosquitto exited at startup ({status}) with config {extra:?}");
            }
            assert!(
                Instant::now() < deadline,
                "mosquitto did not listen on {addr}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Mosquitto {
            child,
            addr,
            _dir: dir,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.0.id()
    }
}

/// Bytes a process caused to be written to storage (`write_bytes` of `/proc/PID/io`: counted
/// in pages as they are dirtied, so every `fdatasync` of a partly written page counts it again,
/// as the flash sees it).
pub fn io_write_bytes(pid: u32) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).expect("read /proc/PID/io");
    io.lines()
        .find_map(|l| l.strip_prefix("write_bytes:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("write_bytes in /proc/PID/io")
}

/// Resident set size of a process in KiB (`VmRSS` of `/proc/PID/status`).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// One paho-mqtt session (`tests/tools/ws_clients.py`): over WebSockets unless `spec` sets
/// `"transport": "tcp"`; returns its JSON observations (CONNACK code, one result per step).
pub fn paho(addr: SocketAddr, spec: serde_json::Value) -> serde_json::Value {
    let out = Command::new(python())
        .arg(repo_root().join("tests/tools/ws_clients.py"))
        .args([
            addr.ip().to_string(),
            addr.port().to_string(),
            spec.to_string(),
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run ws_clients.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "ws_clients.py: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap_or("")).expect("JSON from ws_clients.py")
}
