//! Helpers shared by the NATS end-to-end tests: the nats-py scenario script, raw protocol
//! exchanges, a real nats-server for differential runs, and reading the broker's log.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use edge_tests::broker::Broker;
use edge_tests::peers;

/// `nats://ADDR` of the broker's NATS listener.
pub fn nats_url(broker: &Broker) -> String {
    format!("nats://{}", broker.listen_addr("nats.listen"))
}

/// The nats-py scenario script.
pub fn script() -> std::path::PathBuf {
    peers::repo_root().join("tests/tools/nats_client.py")
}

/// Runs a scenario of `tests/tools/nats_client.py` and parses the JSON it prints last.
pub fn scenario(args: &[&str]) -> serde_json::Value {
    let output = Command::new(peers::python())
        .arg(script())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run nats_client.py");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "nats_client.py {args:?} failed: {}\nstdout: {stdout}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let last = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON from nats_client.py {args:?}: {stdout}"));
    serde_json::from_str(last).unwrap()
}

/// Connects, reads INFO, sends `input`, and collects what the server writes until it closes
/// the connection or is quiet for `quiet`. Returns (INFO line, output, closed by server).
pub fn raw_exchange(addr: SocketAddr, input: &[u8], quiet: Duration) -> (String, String, bool) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut info = Vec::new();
    let mut byte = [0u8; 1];
    while !info.ends_with(b"\r\n") {
        let n = stream.read(&mut byte).unwrap();
        assert!(n > 0, "closed before INFO");
        info.push(byte[0]);
    }
    stream.write_all(input).unwrap();
    stream.set_read_timeout(Some(quiet)).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    let closed = loop {
        match stream.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                break false;
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
            Err(e) => panic!("read failed: {e}"),
        }
    };
    (
        String::from_utf8_lossy(&info).into_owned(),
        String::from_utf8_lossy(&out).into_owned(),
        closed,
    )
}

/// A real nats-server (Debian's) on an ephemeral 127.0.0.1 port; killed on drop.
pub struct NatsServer {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    _store: Option<tempfile::TempDir>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl NatsServer {
    /// Starts `nats-server -a 127.0.0.1 -p PORT` (with `-js -sd DIR` when `jetstream`).
    pub fn start(jetstream: bool) -> NatsServer {
        let program = peers::program("nats-server", "nats-server");
        for _ in 0..5 {
            let port = free_port();
            let mut command = Command::new(&program);
            command.args(["-a", "127.0.0.1", "-p", &port.to_string()]);
            let store = jetstream.then(|| tempfile::tempdir().unwrap());
            if let Some(dir) = &store {
                command.args(["-js", "-sd", dir.path().to_str().unwrap()]);
            }
            let child = command
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn nats-server");
            let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
            let mut server = NatsServer {
                child,
                addr,
                _store: store,
            };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if TcpStream::connect(addr).is_ok() {
                    return server;
                }
                if let Ok(Some(_)) = server.child.try_wait() {
                    break; // port taken meanwhile: try another
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = server.child.kill();
            let _ = server.child.wait();
        }
        panic!("nats-server did not start");
    }

    /// `nats://ADDR`.
    pub fn url(&self) -> String {
        format!("nats://{}", self.addr)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every record in the log at `<data_dir>/log`, read with a cursor after the broker stopped.
pub fn read_log(data_dir: &Path) -> Vec<edge_log::Record> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (log, _report) = edge_log::Log::open(edge_log::LogConfig::new(data_dir.join("log")))
            .expect("open the broker's log");
        let mut cursor = log.cursor("nats-test-reader").unwrap();
        let mut records = Vec::new();
        loop {
            let batch = cursor.try_read(1000, 16 << 20).unwrap();
            if batch.is_empty() {
                break;
            }
            records.extend(batch);
        }
        drop(cursor);
        log.close().await.unwrap();
        records
    })
}

/// GET /metrics from the broker.
pub fn metrics(broker: &Broker) -> String {
    let addr = broker.listen_addr("metrics.listen");
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(stream, "GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    text
}

/// The value of a metric sample line starting with `prefix`.
pub fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no metric {prefix:?} in:\n{text}"))
}
