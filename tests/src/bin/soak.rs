//! The soak run of RELIABILITY.md (not a CI test): the broker under a steady MQTT QoS 1 load
//! for an hour, the Kafka uplink flapping every few minutes and a `kill -9` of the broker every
//! ten, then every acknowledged message looked for in Kafka.
//!
//! The uplink flaps one of two ways. By default (`--durable-kafka 0`) Tansu keeps its topic in
//! memory behind a TCP proxy (the test harness's Kafka proxy, no faults injected) and a flap
//! drops the proxy: every connection to Kafka is cut and the port refuses new ones until it is
//! listening again — a network outage. With `--durable-kafka 1` Tansu itself is stopped and
//! restarted on S3 storage (a Kafka restart); an hour's topic is then too many S3 objects for
//! the emulator to serve back (RELIABILITY.md), so use it for short runs.
//!
//! `cargo build --workspace && cargo run -p edge-tests --bin soak -- [--minutes 60] [--rate 100]
//! [--flap-every 180] [--down-for 20] [--kill-every 600] [--sample-every 30] [--durable-kafka 0] [--read-timeout 1800]
//! [--linger-ms 1000]` (times in seconds unless named)
//!
//! Prints one row per sample (broker RSS, open file descriptors, bytes in the data directory,
//! messages acknowledged, forwarder lag) and a summary; exits 1 if an acknowledged message is
//! missing from Kafka. Resource use is judged by eye and by the summary's first/last-quarter
//! comparison: each broker life starts from zero, so the maxima per quarter are compared.

// A harness binary: a failed step ends the run with a message, like a test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use edge_tests::acked::{Publisher, msg_number, wait_forwarded};
use edge_tests::broker::Broker;
use edge_tests::kafka::{Tansu, create_topic, metric, read_topic_available};
use edge_tests::kafka_proxy::KafkaProxy;

/// Kafka as the soak sees it, and how its uplink flaps.
enum Uplink {
    /// Tansu on S3 storage: a flap stops Tansu; the end of it restarts it.
    Restarted(Tansu),
    /// Tansu in memory behind a proxy: a flap drops the proxy (connections cut, the port
    /// refusing); the end of it listens on the same port again.
    Proxied {
        /// Kept running (stopped when dropped).
        _tansu: Tansu,
        proxy: Option<KafkaProxy>,
        listen: std::net::SocketAddr,
        upstream: std::net::SocketAddr,
    },
}

impl Uplink {
    fn start(durable: bool) -> Uplink {
        if durable {
            return Uplink::Restarted(Tansu::start_durable());
        }
        let (tansu, proxy) = Tansu::start_behind_proxy(false);
        let upstream = tansu.direct().parse().expect("Tansu's address");
        Uplink::Proxied {
            _tansu: tansu,
            listen: proxy.addr(),
            proxy: Some(proxy),
            upstream,
        }
    }

    fn bootstrap(&self) -> String {
        match self {
            Uplink::Restarted(tansu) => tansu.bootstrap(),
            Uplink::Proxied { listen, .. } => listen.to_string(),
        }
    }

    fn down(&mut self) {
        match self {
            Uplink::Restarted(tansu) => tansu.stop(),
            Uplink::Proxied { proxy, .. } => drop(proxy.take()),
        }
    }

    fn up(&mut self) {
        match self {
            Uplink::Restarted(tansu) => tansu.restart(),
            Uplink::Proxied {
                proxy,
                listen,
                upstream,
                ..
            } => {
                // std's listener sets SO_REUSEADDR: the port is free again once dropped.
                let listener =
                    std::net::TcpListener::bind(*listen).expect("rebind the proxy's port");
                *proxy = Some(KafkaProxy::start(listener, *upstream));
            }
        }
    }
}

const TOPIC: &str = "soak";

/// The run's knobs, from the command line.
struct Plan {
    minutes: u64,
    rate: u64,
    flap_every: Duration,
    down_for: Duration,
    kill_every: Duration,
    sample_every: Duration,
    /// Tansu on S3 storage, restarted at each flap, rather than in memory behind a proxy that
    /// is cut at each flap.
    durable_kafka: bool,
    /// How long reading everything back may take.
    read_timeout: Duration,
    /// The forwarder's `[kafka] linger`: how long a chunk that caught up waits for more. At a
    /// sensor's rate a short linger sends a batch per record, and Tansu on S3 keeps one object
    /// per batch — hundreds of thousands in an hour, which it then serves too slowly to read back.
    linger: Duration,
}

impl Plan {
    fn from_args() -> Plan {
        let mut plan = Plan {
            minutes: 60,
            rate: 100,
            flap_every: Duration::from_secs(180),
            down_for: Duration::from_secs(20),
            kill_every: Duration::from_secs(600),
            sample_every: Duration::from_secs(30),
            durable_kafka: false,
            read_timeout: Duration::from_secs(1800),
            linger: Duration::from_millis(1000),
        };
        let args: Vec<String> = std::env::args().skip(1).collect();
        for pair in args.chunks(2) {
            let [flag, value] = pair else {
                panic!(
                    "usage: soak [--minutes N] [--rate PER_S] [--flap-every S] [--down-for S] [--kill-every S] [--sample-every S] [--durable-kafka 0/1] [--read-timeout S] [--linger-ms MS]"
                );
            };
            let n: u64 = value
                .parse()
                .unwrap_or_else(|_| panic!("{flag}: not a number: {value}"));
            match flag.as_str() {
                "--minutes" => plan.minutes = n,
                "--rate" => plan.rate = n,
                "--flap-every" => plan.flap_every = Duration::from_secs(n),
                "--down-for" => plan.down_for = Duration::from_secs(n),
                "--kill-every" => plan.kill_every = Duration::from_secs(n),
                "--sample-every" => plan.sample_every = Duration::from_secs(n),
                "--durable-kafka" => plan.durable_kafka = n != 0,
                "--read-timeout" => plan.read_timeout = Duration::from_secs(n),
                "--linger-ms" => plan.linger = Duration::from_millis(n),
                other => panic!("unknown flag {other}"),
            }
        }
        plan
    }
}

/// One look at the broker process.
struct Sample {
    at: Duration,
    life: u32,
    rss_kib: u64,
    fds: usize,
    disk_bytes: u64,
    acked: usize,
    lag: Option<f64>,
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

fn disk_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match entry.metadata() {
                Ok(m) if m.is_dir() => stack.push(entry.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

fn config(bootstrap: &str, linger: Duration) -> String {
    let linger = linger.as_millis();
    format!(
        "[log]\nsegment_bytes = \"4MiB\"\n\
         [kafka]\nbrokers = [\"{bootstrap}\"]\nlinger = \"{linger}ms\"\nrequest_timeout = \"3s\"\n\
         retry_backoff_min = \"50ms\"\nretry_backoff_max = \"2s\"\n\
         [[route]]\nmqtt = \"sensors/+/t\"\nkafka_topic = \"{TOPIC}\"\nkey = \"{{topic.2}}\"\n"
    )
}

/// A publisher for broker life `life`: its own block of message numbers.
fn publisher(broker: &Broker, plan: &Plan, life: u32) -> Publisher {
    let count = usize::try_from(plan.rate * plan.minutes * 60 + 1).unwrap();
    let first = (u64::from(life) * 1_000_000_000).to_string();
    let rate = plan.rate.to_string();
    let client_id = format!("soak-{life}");
    Publisher::start(
        broker.mqtt_addr(),
        count,
        &[
            "--rate",
            &rate,
            "--first",
            &first,
            "--client-id",
            &client_id,
        ],
    )
}

fn main() -> std::process::ExitCode {
    let plan = Plan::from_args();
    let mut uplink = Uplink::start(plan.durable_kafka);
    let bootstrap = uplink.bootstrap();
    create_topic(&bootstrap, TOPIC, 4);
    let data = tempfile::tempdir().unwrap();
    let body = config(&bootstrap, plan.linger);
    let mut broker = Broker::start_in(data.path(), &body);
    let mut life = 0u32;
    let mut publishing = publisher(&broker, &plan, life);
    let mut acked: BTreeSet<u64> = BTreeSet::new();
    let mut samples = Vec::new();
    let (mut flaps, mut kills) = (0u32, 0u32);

    let start = Instant::now();
    let end = start + Duration::from_secs(plan.minutes * 60);
    let mut next_flap = start + plan.flap_every;
    let mut next_kill = start + plan.kill_every;
    let mut next_sample = start;
    let mut up_again: Option<Instant> = None;
    println!(
        "soak: {plan_minutes} min at {rate} msg/s; data in {dir}",
        plan_minutes = plan.minutes,
        rate = plan.rate,
        dir = data.path().display()
    );
    println!(
        "{:>7} {:>4} {:>9} {:>5} {:>12} {:>9} {:>8}",
        "t(s)", "life", "RSS KiB", "fds", "data bytes", "acked", "lag"
    );
    while Instant::now() < end {
        let now = Instant::now();
        publishing.drain_until_quiet(Duration::from_millis(5));
        if up_again.is_some_and(|t| now >= t) {
            uplink.up();
            up_again = None;
        }
        if now >= next_flap && up_again.is_none() {
            uplink.down();
            flaps += 1;
            up_again = Some(now + plan.down_for);
            next_flap = now + plan.flap_every;
        }
        if now >= next_kill {
            broker.kill();
            kills += 1;
            publishing.drain_until_quiet(Duration::from_millis(500));
            acked.extend(&publishing.acked);
            life += 1;
            broker = Broker::start_in(data.path(), &body);
            publishing = publisher(&broker, &plan, life);
            next_kill = now + plan.kill_every;
        }
        if now >= next_sample {
            let pid = broker.pid();
            let sample = Sample {
                at: now - start,
                life,
                rss_kib: rss_kib(pid),
                fds: open_fds(pid),
                disk_bytes: disk_bytes(data.path()),
                acked: acked.len() + publishing.acked.len(),
                lag: metric(
                    broker.listen_addr("metrics.listen"),
                    "edge_kafka_lag_records",
                ),
            };
            println!(
                "{:>7} {:>4} {:>9} {:>5} {:>12} {:>9} {:>8}",
                sample.at.as_secs(),
                sample.life,
                sample.rss_kib,
                sample.fds,
                sample.disk_bytes,
                sample.acked,
                sample.lag.map_or("-".to_owned(), |l| format!("{l:.0}"))
            );
            samples.push(sample);
            next_sample = now + plan.sample_every;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    if up_again.is_some() {
        uplink.up();
    }
    publishing.stop();
    acked.extend(&publishing.acked);
    wait_forwarded(broker.listen_addr("metrics.listen"));
    // Tansu on S3 serves a topic of many batch objects slowly: give the read time.
    let records = read_topic_available(&bootstrap, TOPIC, acked.len(), plan.read_timeout);
    let got: BTreeSet<u64> = records.iter().map(msg_number).collect();
    let missing: Vec<u64> = acked.difference(&got).copied().collect();
    let duplicates = records.len() - got.len();
    summarise(&samples);
    println!(
        "{} acknowledged, {} in Kafka ({} distinct, {duplicates} duplicates), {} missing; {flaps} uplink flaps, {kills} kill -9",
        acked.len(),
        records.len(),
        got.len(),
        missing.len()
    );
    if !missing.is_empty() {
        println!(
            "MISSING (first 20): {:?}",
            &missing[..missing.len().min(20)]
        );
        for l in 0..=life {
            let block = u64::from(l) * 1_000_000_000..u64::from(l + 1) * 1_000_000_000;
            let acked_in = acked.range(block.clone()).count();
            let missing_in = missing.iter().filter(|n| block.contains(n)).count();
            println!("  life {l}: {acked_in} acknowledged, {missing_in} missing");
        }
        let mut per_partition = std::collections::BTreeMap::new();
        for r in &records {
            let e = per_partition
                .entry(r.partition)
                .or_insert((0usize, i64::MAX, -1i64));
            e.0 += 1;
            e.1 = e.1.min(r.offset);
            e.2 = e.2.max(r.offset);
        }
        println!("  read per partition (count, first offset, last offset): {per_partition:?}");
        // Returned, not `process::exit`: the peers (Tansu, its S3 emulator) are stopped by
        // their guards' drops, which `exit` would skip and leave them running.
        return std::process::ExitCode::FAILURE;
    }
    std::process::ExitCode::SUCCESS
}

/// The maxima of the first and last quarter of the run, side by side.
fn summarise(samples: &[Sample]) {
    let quarter = samples.len() / 4;
    if quarter == 0 {
        return;
    }
    let max = |part: &[Sample], f: fn(&Sample) -> u64| part.iter().map(f).max().unwrap_or(0);
    let (first, last) = (&samples[..quarter], &samples[samples.len() - quarter..]);
    println!(
        "{:<22} {:>14} {:>14}",
        "max per quarter", "first quarter", "last quarter"
    );
    for (name, f) in [
        ("RSS KiB", (|s: &Sample| s.rss_kib) as fn(&Sample) -> u64),
        ("open fds", |s: &Sample| s.fds as u64),
        ("data dir bytes", |s: &Sample| s.disk_bytes),
    ] {
        println!("{name:<22} {:>14} {:>14}", max(first, f), max(last, f));
    }
}
