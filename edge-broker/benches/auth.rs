//! What authentication and topic permissions cost (issue 12).
//!
//! ```text
//! cargo bench -p edge-broker --bench auth [-- --messages N --rounds R --devices D]
//! ```
//!
//! 1. Publish throughput with and without an ACL of 100 rules, side by side in one run, for
//!    MQTT (QoS 0) and NATS (core PUB): one publisher connection pipelining N 200-byte messages
//!    over 16 rotating topics (a device's handful: the answer caches hit) or 4096 (every check
//!    misses the caches and walks the rule tries), one subscriber on the whole tree whose
//!    subscription a `deny` rule overlaps (so every delivery is checked too). Throughput =
//!    deliveries / time from the first publish to the last delivery. "no auth" runs without
//!    `[auth]`; "ACL" with a password file and 100 rules per user (99 that do not match, then
//!    the one that grants), the worst case for the linear rule scan.
//! 2. Logins: D devices (distinct users of one password file, `$7$` PBKDF2-SHA512) connect at
//!    once; time until every CONNACK arrived, first with a cold cache, then again (a reconnect
//!    storm, the verified-credentials cache hit). Iteration counts: 101 (what mosquitto_passwd
//!    and `edge-broker passwd` write) and 10 000, plus the cost of one verification.
//!
//! Servers run in-process (2 worker threads), clients on their own runtime; everything on
//! 127.0.0.1. Prints Markdown tables (best of R rounds). Benchmarks never assert timings.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::{SocketAddr, TcpListener};
use std::num::NonZeroU32;
use std::path::Path;
use std::time::{Duration, Instant};

use edge_broker::auth::password::PasswordHash;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// Topics a publisher rotates over: a device's handful (the per-connection answer caches
/// hit), and many (every check misses them and walks the rules).
const FEW_TOPICS: usize = 16;
const MANY_TOPICS: usize = 4096;
const PAYLOAD: [u8; 200] = [b'x'; 200];

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn arg(name: &str, default: usize) -> usize {
    std::env::args()
        .skip_while(|a| a != name)
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Server {
    mqtt: SocketAddr,
    nats: SocketAddr,
    shutdown: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Server {
    /// `auth`: the `[auth]` section (or nothing), with `{dir}` standing for the data directory.
    fn start(files: impl FnOnce(&Path) -> String) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let auth = files(dir.path());
        let (mqtt, nats, metrics) = (free_port(), free_port(), free_port());
        let text = format!(
            "[node]\nid = \"bench\"\ndata_dir = \"{}\"\n[mqtt]\nlisten = \"127.0.0.1:{mqtt}\"\n\
             max_connections = 5000\nmax_queued_messages = 1000000\n\
             [nats]\nlisten = \"127.0.0.1:{nats}\"\nmax_pending = \"256MiB\"\n\
             [metrics]\nlisten = \"127.0.0.1:{metrics}\"\n{auth}",
            dir.path().join("data").display()
        );
        let config = edge_broker::config::Config::parse(&text, Path::new("bench.toml")).unwrap();
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
        let server = Server {
            mqtt: SocketAddr::from(([127, 0, 0, 1], mqtt)),
            nats: SocketAddr::from(([127, 0, 0, 1], nats)),
            shutdown,
            thread: Some(thread),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(server.nats).is_err() {
            assert!(Instant::now() < deadline, "broker did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn hash(password: &str, iterations: u32) -> String {
    let mut salt = vec![0u8; 12];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut salt).unwrap();
    let iterations = NonZeroU32::new(iterations).unwrap();
    let mut out = vec![0u8; 64];
    ring::pbkdf2::derive(
        ring::pbkdf2::PBKDF2_HMAC_SHA512,
        iterations,
        &salt,
        password.as_bytes(),
        &mut out,
    );
    PasswordHash::Pbkdf2Sha512 {
        iterations,
        salt,
        hash: out,
    }
    .encode()
}

/// `[auth]` with users pub/sub and an ACL of 100 rules per user.
fn acl_files(dir: &Path) -> String {
    let passwd = dir.join("passwd");
    let acl = dir.join("acl");
    std::fs::write(
        &passwd,
        format!("pub:{}\nsub:{}\n", hash("pw", 101), hash("pw", 101)),
    )
    .unwrap();
    let mut text = String::from("user pub\n");
    for i in 0..99 {
        text.push_str(&format!("topic write other/{i}/#\n"));
    }
    text.push_str("topic write bench/#\nuser sub\n");
    for i in 0..98 {
        text.push_str(&format!("topic deny other/{i}/x\n"));
    }
    // Overlaps the subscription: every delivery is checked.
    text.push_str("topic deny bench/secret\ntopic read bench/#\n");
    std::fs::write(&acl, text).unwrap();
    format!(
        "[auth]\npassword_file = \"{}\"\nacl_file = \"{}\"\n",
        passwd.display(),
        acl.display()
    )
}

fn mqtt_string(s: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn mqtt_frame(first: u8, body: &[u8], out: &mut Vec<u8>) {
    out.push(first);
    let mut n = body.len();
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
}

/// Connects (MQTT 3.1.1, clean session) and waits for CONNACK; returns the stream and its code.
async fn mqtt_connect(
    addr: SocketAddr,
    client: &str,
    user: Option<(&str, &str)>,
) -> (TcpStream, u8) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let mut body = Vec::new();
    mqtt_string("MQTT", &mut body);
    body.extend_from_slice(&[4, if user.is_some() { 0xC2 } else { 0x02 }, 0, 60]);
    mqtt_string(client, &mut body);
    if let Some((u, p)) = user {
        mqtt_string(u, &mut body);
        mqtt_string(p, &mut body);
    }
    let mut out = Vec::new();
    mqtt_frame(0x10, &body, &mut out);
    stream.write_all(&out).await.unwrap();
    let mut ack = [0u8; 4];
    stream.read_exact(&mut ack).await.unwrap();
    (stream, ack[3])
}

/// Reads MQTT frames until `n` PUBLISH arrived (or SUBACK first).
async fn count_frames(stream: &mut TcpStream, first_byte: u8, n: usize) {
    let mut buf = vec![0u8; 1 << 20];
    let (mut start, mut end, mut seen) = (0usize, 0usize, 0usize);
    while seen < n {
        // Parse what is buffered.
        loop {
            if end - start < 2 {
                break;
            }
            let (mut len, mut mult, mut i) = (0usize, 1usize, start + 1);
            let mut complete = false;
            while i < end {
                let b = buf[i];
                len += usize::from(b & 0x7f) * mult;
                mult *= 128;
                i += 1;
                if b & 0x80 == 0 {
                    complete = true;
                    break;
                }
            }
            if !complete || end - i < len {
                break;
            }
            if buf[start] & 0xf0 == first_byte {
                seen += 1;
            }
            start = i + len;
        }
        if seen >= n {
            return;
        }
        if start == end {
            start = 0;
            end = 0;
        } else if end == buf.len() {
            buf.copy_within(start..end, 0);
            end -= start;
            start = 0;
        }
        let read = stream.read(&mut buf[end..]).await.unwrap();
        assert!(read > 0, "connection closed after {seen} of {n}");
        end += read;
    }
}

async fn mqtt_throughput(addr: SocketAddr, n: usize, auth: bool, topics: usize) -> f64 {
    let creds = auth.then_some(("sub", "pw"));
    let (mut sub, rc) = mqtt_connect(addr, "bench-sub", creds).await;
    assert_eq!(rc, 0);
    let mut out = Vec::new();
    let mut body = vec![0, 1];
    mqtt_string("bench/#", &mut body);
    body.push(0);
    mqtt_frame(0x82, &body, &mut out);
    sub.write_all(&out).await.unwrap();
    count_frames(&mut sub, 0x90, 1).await;
    let creds = auth.then_some(("pub", "pw"));
    let (mut publisher, rc) = mqtt_connect(addr, "bench-pub", creds).await;
    assert_eq!(rc, 0);
    let receiver = tokio::spawn(async move { count_frames(&mut sub, 0x30, n).await });
    let started = Instant::now();
    let mut batch = Vec::with_capacity(1 << 20);
    for i in 0..n {
        let mut body = Vec::with_capacity(240);
        mqtt_string(&format!("bench/{}/t", i % topics), &mut body);
        body.extend_from_slice(&PAYLOAD);
        mqtt_frame(0x30, &body, &mut batch);
        if batch.len() > 256 << 10 {
            publisher.write_all(&batch).await.unwrap();
            batch.clear();
        }
    }
    publisher.write_all(&batch).await.unwrap();
    receiver.await.unwrap();
    n as f64 / started.elapsed().as_secs_f64()
}

async fn nats_connect(addr: SocketAddr, auth: Option<(&str, &str)>) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let connect = match auth {
        Some((u, p)) => {
            format!("CONNECT {{\"verbose\":false,\"user\":\"{u}\",\"pass\":\"{p}\"}}\r\nPING\r\n")
        }
        None => "CONNECT {\"verbose\":false}\r\nPING\r\n".to_owned(),
    };
    stream.write_all(connect.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !seen.windows(6).any(|w| w == b"PONG\r\n") {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(
            n > 0,
            "NATS connection closed: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    stream
}

async fn nats_throughput(addr: SocketAddr, n: usize, auth: bool, topics: usize) -> f64 {
    let mut sub = nats_connect(addr, auth.then_some(("sub", "pw"))).await;
    sub.write_all(b"SUB bench.> 1\r\nPING\r\n").await.unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut tail = Vec::new();
    while !tail.windows(6).any(|w| w == b"PONG\r\n") {
        let k = sub.read(&mut buf).await.unwrap();
        tail.extend_from_slice(&buf[..k]);
    }
    let mut publisher = nats_connect(addr, auth.then_some(("pub", "pw"))).await;
    // Each MSG is "MSG bench.N.t 1 200\r\n" + 200 bytes + "\r\n": count them by bytes.
    let expected: usize = (0..n)
        .map(|i| format!("MSG bench.{}.t 1 200\r\n", i % topics).len() + 202)
        .sum();
    let receiver = tokio::spawn(async move {
        let mut got = 0usize;
        while got < expected {
            let k = sub.read(&mut buf).await.unwrap();
            assert!(k > 0, "subscriber closed after {got} of {expected} bytes");
            got += k;
        }
    });
    let started = Instant::now();
    let mut batch = Vec::with_capacity(1 << 20);
    for i in 0..n {
        batch.extend_from_slice(format!("PUB bench.{}.t 200\r\n", i % topics).as_bytes());
        batch.extend_from_slice(&PAYLOAD);
        batch.extend_from_slice(b"\r\n");
        if batch.len() > 256 << 10 {
            publisher.write_all(&batch).await.unwrap();
            batch.clear();
        }
    }
    publisher.write_all(&batch).await.unwrap();
    receiver.await.unwrap();
    n as f64 / started.elapsed().as_secs_f64()
}

/// `devices` users in one password file with `iterations` rounds.
fn device_files(dir: &Path, devices: usize, iterations: u32) -> String {
    let passwd = dir.join("passwd");
    let mut text = String::new();
    for d in 0..devices {
        text.push_str(&format!(
            "dev-{d}:{}\n",
            hash(&format!("pw-{d}"), iterations)
        ));
    }
    std::fs::write(&passwd, text).unwrap();
    format!("[auth]\npassword_file = \"{}\"\n", passwd.display())
}

/// All `devices` connect at once; returns the time until the last CONNACK.
async fn login_storm(addr: SocketAddr, devices: usize) -> Duration {
    let started = Instant::now();
    let tasks: Vec<_> = (0..devices)
        .map(|d| {
            tokio::spawn(async move {
                let (stream, rc) = mqtt_connect(
                    addr,
                    &format!("dev-{d}"),
                    Some((&format!("dev-{d}"), &format!("pw-{d}"))),
                )
                .await;
                assert_eq!(rc, 0, "dev-{d} refused");
                stream
            })
        })
        .collect();
    let mut streams = Vec::with_capacity(devices);
    for task in tasks {
        streams.push(task.await.unwrap());
    }
    let elapsed = started.elapsed();
    drop(streams);
    elapsed
}

/// A mailbox that takes everything (the guard's cost alone).
#[derive(Debug)]
struct Sink;

impl edge_broker::hub::Mailbox for Sink {
    fn deliver(&self, _: edge_broker::hub::Delivery) -> bool {
        true
    }
}

/// Nanoseconds per call of `f` over `calls` calls.
fn per_call(calls: usize, mut f: impl FnMut(usize) -> bool) -> f64 {
    let started = Instant::now();
    let mut yes = 0usize;
    for i in 0..calls {
        yes += usize::from(std::hint::black_box(f(i)));
    }
    std::hint::black_box(yes);
    started.elapsed().as_nanos() as f64 / calls as f64
}

/// The checks alone, in this process, on the 100-rule ACL of the throughput runs.
fn check_costs() {
    use edge_broker::auth::{Auth, Identity, Protocol};
    let dir = tempfile::tempdir().unwrap();
    let text = acl_files(dir.path());
    let config = edge_broker::config::Config::parse(&text, Path::new("bench.toml")).unwrap();
    let auth = Auth::new(&config, None).unwrap();
    let identity = |user: &str| Identity {
        user: Some(user.into()),
        client_id: "c".into(),
    };
    let topics: Vec<String> = (0..MANY_TOPICS).map(|i| format!("bench/{i}/t")).collect();
    let calls = 2_000_000;
    let mut publisher = auth.permissions(Protocol::Mqtt, identity("pub"));
    let publish_few = per_call(calls, |i| publisher.may_publish(&topics[i % FEW_TOPICS]));
    let publish_many = per_call(calls, |i| publisher.may_publish(&topics[i % MANY_TOPICS]));
    let messages: Vec<_> = topics
        .iter()
        .map(|t| {
            std::sync::Arc::new(edge_broker::message::Message {
                topic: t.as_str().into(),
                payload: bytes::Bytes::from_static(&PAYLOAD),
                qos: edge_proto::mqtt::QoS::AtMostOnce,
                retain: false,
                properties: Default::default(),
                received_ms: 0,
                origin: edge_broker::message::Origin::Mqtt,
                publisher: None,
                nats_subject: None,
            })
        })
        .collect();
    let delivery = |i: usize, modulo: usize| edge_broker::hub::Delivery {
        message: std::sync::Arc::clone(&messages[i % modulo]),
        qos: edge_proto::mqtt::QoS::AtMostOnce,
        retain: false,
        subscription_ids: Vec::new(),
    };
    let sink: std::sync::Arc<dyn edge_broker::hub::Mailbox> = std::sync::Arc::new(Sink);
    let bare = per_call(calls, |i| sink.deliver(delivery(i, FEW_TOPICS)));
    let filtered = auth.guard(identity("sub"), "bench/#", std::sync::Arc::clone(&sink));
    let filtered_few = per_call(calls, |i| filtered.deliver(delivery(i, FEW_TOPICS)));
    let filtered_many = per_call(calls, |i| filtered.deliver(delivery(i, MANY_TOPICS)));
    let granted = auth.guard(identity("sub"), "bench/+/t", std::sync::Arc::clone(&sink));
    let granted_few = per_call(calls, |i| granted.deliver(delivery(i, FEW_TOPICS)));
    println!("\n### The checks alone (100-rule ACL, {calls} calls each, ns per call)\n");
    println!("| check | 16 topics | 4096 topics |");
    println!("|---|---:|---:|");
    println!("| publish (`Permissions::may_publish`) | {publish_few:.1} | {publish_many:.1} |");
    println!(
        "| delivery, a deny rule overlaps the subscription (guard − bare mailbox) | {:.1} | {:.1} |",
        filtered_few - bare,
        filtered_many - bare
    );
    println!(
        "| delivery, subscription granted outright (guard − bare mailbox) | {:.1} | – |",
        granted_few - bare
    );
}

fn main() {
    if std::env::args().any(|a| a == "--checks-only") {
        check_costs();
        return;
    }
    let n = arg("--messages", 300_000);
    let rounds = arg("--rounds", 3);
    let devices = arg("--devices", 1000);
    let client = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    // --- 1. permission checks on the publish path ---------------------------------------
    // rows: (protocol, topics) × (no auth, ACL); columns of `all`: every round's rate.
    let cases = [
        ("MQTT QoS 0", FEW_TOPICS),
        ("MQTT QoS 0", MANY_TOPICS),
        ("NATS core", FEW_TOPICS),
        ("NATS core", MANY_TOPICS),
    ];
    let mut all: Vec<[Vec<f64>; 2]> = vec![Default::default(); cases.len()];
    for _ in 0..rounds {
        for (column, auth) in [(0, false), (1, true)] {
            let server = Server::start(|dir| if auth { acl_files(dir) } else { String::new() });
            for (row, (protocol, topics)) in cases.iter().enumerate() {
                let rate = if protocol.starts_with("MQTT") {
                    client.block_on(mqtt_throughput(server.mqtt, n, auth, *topics))
                } else {
                    client.block_on(nats_throughput(server.nats, n, auth, *topics))
                };
                all[row][column].push(rate);
            }
        }
    }
    println!("\n### Permission checks on the publish path ({n} msgs of 200 B, best of {rounds})\n");
    println!(
        "| protocol | topics | no auth (msg/s) | ACL, 100 rules (msg/s) | ACL / no auth | all rounds (no auth; ACL) |"
    );
    println!("|---|---:|---:|---:|---:|---|");
    let fmt = |v: &[f64]| {
        v.iter()
            .map(|r| format!("{r:.0}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let best = |v: &[f64]| v.iter().copied().fold(0f64, f64::max);
    for ((protocol, topics), [plain, acl]) in cases.iter().zip(&all) {
        println!(
            "| {protocol} | {topics} | {:.0} | {:.0} | {:.3} | {}; {} |",
            best(plain),
            best(acl),
            best(acl) / best(plain),
            fmt(plain),
            fmt(acl)
        );
    }

    check_costs();

    // --- 2. logins -------------------------------------------------------------------------
    println!(
        "\n### Logins: {devices} devices connect at once (distinct users, $7$ PBKDF2-SHA512)\n"
    );
    println!(
        "| iterations | one verification | storm, cold (all CONNACKs) | storm again (cache) |"
    );
    println!("|---:|---:|---:|---:|");
    for iterations in [101u32, 10_000] {
        let verifier = PasswordHash::parse(&hash("pw", iterations)).unwrap();
        let reps = if iterations > 1000 { 50 } else { 2000 };
        let started = Instant::now();
        for _ in 0..reps {
            assert!(verifier.verify(b"pw"));
        }
        let one = started.elapsed() / reps;
        let server = Server::start(|dir| device_files(dir, devices, iterations));
        let cold = client.block_on(login_storm(server.mqtt, devices));
        let warm = client.block_on(login_storm(server.mqtt, devices));
        println!("| {iterations} | {one:.2?} | {cold:.2?} | {warm:.2?} |");
    }
}
