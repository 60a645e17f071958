//! Acknowledged publishes and what reached Kafka, for the end-to-end bridge tests: a paho
//! publisher that reports every message the broker acknowledged, and the checks every
//! forwarding test makes of what the independent reader found (nothing acknowledged missing,
//! log order per partition, duplicates only as recognisable copies).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use crate::kafka::{ReadRecord, wait_for_metric};
use crate::peers::{ChildGuard, python, repo_root};

/// A paho publisher (tests/tools/mqtt_pub_acked.py) and the numbers it saw acknowledged.
pub struct Publisher {
    child: ChildGuard,
    acks: Receiver<u64>,
    /// The message numbers acknowledged so far (as collected by the `wait_*` methods).
    pub acked: BTreeSet<u64>,
    done: Receiver<()>,
}

impl Publisher {
    /// Starts publishing `count` messages `msg-<n>` (QoS 1, MQTT 5, 50 in flight) to
    /// `sensors/dev-<n % 8>/t` on `addr`; `extra` are more arguments for the script.
    pub fn start(addr: SocketAddr, count: usize, extra: &[&str]) -> Publisher {
        let mut child = Command::new(python())
            .arg(repo_root().join("tests/tools/mqtt_pub_acked.py"))
            .args([
                &addr.ip().to_string(),
                &addr.port().to_string(),
                "sensors/dev-{k}/t",
            ])
            .arg(count.to_string())
            .args([
                "--qos",
                "1",
                "--version",
                "5",
                "--inflight",
                "50",
                "--keys",
                "8",
            ])
            .args(extra)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (sender, acks) = channel();
        let (done_tx, done) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(n) = line.strip_prefix("ACK ") {
                    let _ = sender.send(n.parse::<u64>().unwrap());
                } else if line == "DONE" {
                    let _ = done_tx.send(());
                }
            }
        });
        Publisher {
            child: ChildGuard(child),
            acks,
            acked: BTreeSet::new(),
            done,
        }
    }

    /// Collects acks until at least `n` were seen (panics after `timeout`).
    pub fn wait_acked(&mut self, n: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.acked.len() < n {
            assert!(
                Instant::now() < deadline,
                "only {} of {n} acks after {timeout:?}",
                self.acked.len()
            );
            if let Ok(a) = self.acks.recv_timeout(Duration::from_millis(100)) {
                self.acked.insert(a);
            }
        }
        self.acked.extend(self.acks.try_iter());
    }

    /// Waits for DONE (every publish acknowledged).
    pub fn wait_done(&mut self, timeout: Duration) {
        self.done
            .recv_timeout(timeout)
            .unwrap_or_else(|_| panic!("publisher not done after {timeout:?}"));
        let _ = self.child.0.wait();
        self.acked.extend(self.acks.try_iter());
    }

    /// Stops publishing (the script is killed) and collects the acks it printed before.
    pub fn stop(&mut self) {
        let _ = self.child.0.kill();
        let _ = self.child.0.wait();
        self.drain_until_quiet(Duration::from_millis(200));
    }

    /// Collects acks until none arrived for `quiet`.
    pub fn drain_until_quiet(&mut self, quiet: Duration) {
        while let Ok(a) = self.acks.recv_timeout(quiet) {
            self.acked.insert(a);
        }
    }
}

/// Waits until the forwarder has nothing left to send (lag 0), up to a minute.
pub fn wait_forwarded(metrics: SocketAddr) {
    wait_for_metric(
        metrics,
        "edge_kafka_lag_records",
        Duration::from_secs(60),
        |v| v == 0.0,
    );
}

/// The message number of a record whose value is `msg-<n>` (padded with dots by the
/// publisher's `--size`).
pub fn msg_number(r: &ReadRecord) -> u64 {
    r.value
        .as_deref()
        .and_then(|v| v.strip_prefix("msg-"))
        .and_then(|n| n.trim_end_matches('.').parse().ok())
        .unwrap_or_else(|| panic!("unexpected value in {r:?}"))
}

/// Per partition, in Kafka offset order, the log offsets must increase once duplicates (a
/// replayed record already seen) are set aside; and duplicates carry the same edge-offset.
pub fn assert_log_order_and_duplicates(records: &[ReadRecord]) {
    let mut by_partition: BTreeMap<i32, Vec<&ReadRecord>> = BTreeMap::new();
    for r in records {
        by_partition.entry(r.partition).or_default().push(r);
    }
    let mut offset_of: HashMap<u64, u64> = HashMap::new();
    for (p, mut rs) in by_partition {
        rs.sort_by_key(|r| r.offset);
        let mut last = None;
        for r in rs {
            let n = msg_number(r);
            let eo = r.edge_offset();
            if let Some(prev) = offset_of.insert(n, eo) {
                assert_eq!(
                    prev, eo,
                    "duplicate of msg-{n} with a different edge-offset"
                );
                continue;
            }
            if let Some(last) = last {
                assert!(
                    eo > last,
                    "partition {p}: edge-offset {eo} (msg-{n}) after {last}: out of log order"
                );
            }
            last = Some(eo);
        }
    }
}
