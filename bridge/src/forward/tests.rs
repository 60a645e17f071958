//! The forwarder over a real edge-log, with named fake producers injecting what a real broker
//! cannot do on demand.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::time::Instant;

use bytes::Bytes;
use edge_log::{Destination, LogConfig, NewRecord, Source};

use super::planning::Planning;
use super::*;
use crate::metrics::UplinkState;
use crate::plan::NoRoutes;
use crate::producer::{Attempt, ProduceAck, ProduceError, ProduceRecord, codes};
use crate::topition::Topition;

/// Runs `fwd` until it has committed `n` records (10 s at most), then stops it.
async fn run_until_committed<P: KafkaProducer + Clone + 'static>(
    fwd: Forwarder<P>,
    n: u64,
) -> Arc<ForwardMetrics> {
    let metrics = fwd.metrics();
    let (stop, abort) = (CancellationToken::new(), CancellationToken::new());
    let task = tokio::spawn(fwd.run(stop.clone(), abort.clone()));
    let deadline = Instant::now() + Duration::from_secs(10);
    while metrics.committed.load(Ordering::Relaxed) < n {
        assert!(Instant::now() < deadline, "not all committed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.cancel();
    task.await.unwrap();
    metrics
}

fn reset() -> ProduceError {
    ProduceError::Io {
        broker: "b".into(),
        source: std::io::ErrorKind::ConnectionReset.into(),
    }
}

fn refused(code: i16) -> ProduceError {
    ProduceError::refused("Produce", "t", 0, code, None)
}

/// The `edge-offset` header of a record the forwarder produced.
fn edge_offset(r: &ProduceRecord) -> u64 {
    r.edge.as_ref().unwrap().offset
}

/// Injects what a real broker cannot do on demand: the first `fail_first` produce calls fail
/// with a connection reset (outcome unknown), any batch holding a `BIG` value is refused with
/// MESSAGE_TOO_LARGE, a batch over `max_request_bytes` (encoded without compression) is refused
/// before it leaves as the real producer refuses it, while `down` every call fails (and
/// probes too), and the batches `refusing` names are refused with TOPIC_AUTHORIZATION_FAILED
/// (the cluster's ACLs; each refused send's attempt and record count is kept; refusing
/// everything, probes are refused SASL_AUTHENTICATION_FAILED). It answers at once (the trait's
/// default `send`), and counts `produce` calls (the forwarder sends only through `send`, so
/// none come from it) and probes.
#[derive(Clone, Default)]
struct FaultyProducer {
    fail_first: Arc<Mutex<usize>>,
    down: Arc<AtomicBool>,
    written: Arc<Mutex<Vec<(i32, u64, Bytes)>>>,
    sends: Arc<AtomicUsize>,
    /// Sends with `Attempt::First` (the others are resends).
    first_sends: Arc<AtomicUsize>,
    max_request_bytes: Option<usize>,
    refusing: Arc<Mutex<Refuse>>,
    refused: Arc<Mutex<Vec<(Attempt, usize)>>>,
    probes: Arc<AtomicUsize>,
}

/// Which batches [`FaultyProducer`]'s cluster refuses, and why.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Refuse {
    #[default]
    Nothing,
    /// Every batch, TOPIC_AUTHORIZATION_FAILED (and every probe, SASL_AUTHENTICATION_FAILED).
    Everything,
    /// This partition's batches, TOPIC_AUTHORIZATION_FAILED (an ACL on one route's topic).
    Partition(i32),
    /// Every batch, NOT_ENOUGH_REPLICAS: too few in-sync replicas, nothing written (a
    /// cluster with a broker down, for as long as it is down).
    Replicas,
}

impl Refuse {
    /// The error code a batch to `tp` is refused with, if it is.
    fn code(self, tp: &Topition) -> Option<i16> {
        match self {
            Refuse::Everything => Some(codes::TOPIC_AUTHORIZATION_FAILED),
            Refuse::Partition(p) if p == tp.partition() => Some(codes::TOPIC_AUTHORIZATION_FAILED),
            Refuse::Replicas => Some(codes::NOT_ENOUGH_REPLICAS),
            _ => None,
        }
    }
}

impl KafkaProducer for FaultyProducer {
    async fn send(
        &self,
        tp: &Topition,
        records: &[ProduceRecord],
        _encoded: Option<EncodedBatch>,
        attempt: Attempt,
    ) -> ProduceAck {
        self.sends.fetch_add(1, Ordering::SeqCst);
        if attempt == Attempt::First {
            self.first_sends.fetch_add(1, Ordering::SeqCst);
        }
        if let Some(code) = self.refusing.lock().unwrap().code(tp) {
            self.refused.lock().unwrap().push((attempt, records.len()));
            return ProduceAck::ready(Err(refused(code)));
        }
        ProduceAck::ready(self.write(tp, records))
    }

    async fn produce(
        &self,
        _tp: &Topition,
        _records: &[ProduceRecord],
    ) -> Result<i64, ProduceError> {
        panic!("the forwarder has one sending path: send");
    }

    async fn partition_count(&self, _topic: &str) -> Result<i32, ProduceError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(reset());
        }
        Ok(3)
    }

    async fn probe(&self) -> Result<(), ProduceError> {
        self.probes.fetch_add(1, Ordering::SeqCst);
        if self.down.load(Ordering::SeqCst) {
            Err(reset())
        } else if *self.refusing.lock().unwrap() == Refuse::Everything {
            Err(refused(codes::SASL_AUTHENTICATION_FAILED))
        } else {
            Ok(())
        }
    }

    async fn create_topic(&self, _topic: &str, _partitions: i32) -> Result<bool, ProduceError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(reset());
        }
        Ok(true)
    }
}

impl FaultyProducer {
    fn write(&self, tp: &Topition, records: &[ProduceRecord]) -> Result<i64, ProduceError> {
        {
            let mut f = self.fail_first.lock().unwrap();
            if *f > 0 || self.down.load(Ordering::SeqCst) {
                *f = f.saturating_sub(1);
                return Err(reset());
            }
        }
        if records.iter().any(|r| r.value.as_deref() == Some(b"BIG")) {
            return Err(refused(codes::MESSAGE_TOO_LARGE));
        }
        if let Some(max) = self.max_request_bytes {
            let mut out = bytes::BytesMut::new();
            let (none, id) = (crate::producer::Compression::None, Default::default());
            crate::producer::encode_batch(records, none, id, &mut Default::default(), &mut out)?;
            if out.len() > max {
                return Err(ProduceError::BatchTooLarge {
                    bytes: out.len(),
                    max,
                });
            }
        }
        let mut w = self.written.lock().unwrap();
        for r in records {
            w.push((tp.partition(), edge_offset(r), r.value.clone().unwrap()));
        }
        Ok(0)
    }
}

async fn log_with(dir: &std::path::Path, payloads: &[&str]) -> Log {
    let (log, _) = Log::open(LogConfig::new(dir)).unwrap();
    for (i, p) in payloads.iter().enumerate() {
        log.append(NewRecord {
            timestamp_ms: 1_000 + i as u64,
            source: Source::Mqtt,
            topic: format!("s/dev-{}/t", i % 5).into(),
            client_id: "c".into(),
            destination: Destination {
                topic: "t".into(),
                key: Some(Bytes::from(format!("dev-{}", i % 5))),
                partition: None,
            },
            headers: Vec::new(),
            payload: Bytes::from(p.to_string()),
        })
        .await
        .unwrap()
        .durable()
        .await
        .unwrap();
    }
    log
}

fn payloads(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("m{i}")).collect()
}

fn refs(payloads: &[String]) -> Vec<&str> {
    payloads.iter().map(String::as_str).collect()
}

/// Every record of these tests carries its destination.
fn routes() -> Arc<dyn Router> {
    Arc::new(NoRoutes)
}

/// A forwarder on cursor `kafka` of `log`.
fn open<P: KafkaProducer + Clone + 'static>(
    log: &Log,
    producer: P,
    config: ForwardConfig,
) -> Forwarder<P> {
    Forwarder::open(log, "kafka", routes(), producer, config).unwrap()
}

/// 20 records, Kafka down, and a forwarder that backs off 5 s between attempts: long enough
/// that only a probe can start the replay promptly once Kafka is back.
async fn kafka_down_with_long_backoff(
    dir: &std::path::Path,
) -> (Log, FaultyProducer, ForwardConfig) {
    let log = log_with(&dir.join("log"), &refs(&payloads(20))).await;
    let producer = FaultyProducer::default();
    producer.down.store(true, Ordering::SeqCst);
    let mut config = config(dir);
    config.backoff_min = Duration::from_secs(5);
    config.backoff_max = Duration::from_secs(5);
    (log, producer, config)
}

fn config(dir: &std::path::Path) -> ForwardConfig {
    let mut c = ForwardConfig::new("gw");
    c.max_batch_records = 7;
    c.backoff_min = Duration::from_millis(1);
    c.backoff_max = Duration::from_millis(5);
    c.auth_backoff_max = Duration::from_millis(5);
    c.dead_letter = DeadLetterSink::File(dir.join("dl"));
    c
}

/// Per partition, the log offsets Kafka got first must increase (a resend of a record seen
/// already is set aside); returns the set of offsets written.
fn assert_in_log_order(written: &[(i32, u64, Bytes)]) -> BTreeSet<u64> {
    let mut per_partition: HashMap<i32, Vec<u64>> = HashMap::new();
    let mut seen = BTreeSet::new();
    for (p, offset, value) in written {
        assert_eq!(
            value,
            &Bytes::from(format!("m{offset}")),
            "edge-offset names the record"
        );
        let v = per_partition.entry(*p).or_default();
        if seen.insert(*offset) {
            assert!(
                v.last().is_none_or(|l| l < offset),
                "partition {p} out of order: {offset} after {v:?}"
            );
            v.push(*offset);
        }
    }
    seen
}

/// A chunk whose share for a partition exceeds `max_request_bytes` leaves in batches within
/// it: nothing is refused as too large and split on the way. Before, each such share was sent
/// whole, refused, and sent again in halves until the halves fit. When the first batch fails,
/// the partition's later batches of the same chunk follow it in order.
#[tokio::test]
async fn a_chunk_over_the_request_limit_leaves_in_batches_within_it() {
    for fail_first in [0, 1] {
        let dir = tempfile::tempdir().unwrap();
        let log = log_with(&dir.path().join("log"), &refs(&payloads(200))).await;
        let producer = FaultyProducer {
            max_request_bytes: Some(2048),
            fail_first: Arc::new(Mutex::new(fail_first)),
            ..Default::default()
        };
        let mut config = config(dir.path());
        config.max_batch_records = 200;
        config.max_request_bytes = 2048;
        let metrics = run_until_committed(open(&log, producer.clone(), config), 200).await;
        let seen = assert_in_log_order(&producer.written.lock().unwrap());
        assert_eq!(seen, (0..200).collect());
        assert_eq!(metrics.errors_of("rejected"), 0);
        let first = producer.first_sends.load(Ordering::SeqCst);
        assert!(first > 6, "one chunk over 3 partitions in {first} batches");
        if fail_first == 0 {
            assert_eq!(producer.sends.load(Ordering::SeqCst), first, "no resends");
        }
    }
}

/// A batch that cannot reach Kafka (a connection reset before it left) holds the rest of its
/// round: they are not sent, each to spend its own timeout on the same cause before the round
/// is settled and told, but answered NotSent and resent with it after its wait. Only the
/// batch that failed is counted; nothing is lost.
#[tokio::test]
async fn a_batch_that_cannot_reach_kafka_holds_the_rest_of_its_round() {
    let dir = tempfile::tempdir().unwrap();
    // 5 records, 5 keys over 3 partitions: one chunk, one batch per partition it hit.
    let log = log_with(&dir.path().join("log"), &refs(&payloads(5))).await;
    let producer = FaultyProducer {
        fail_first: Arc::new(Mutex::new(1)),
        ..Default::default()
    };
    let metrics = run_until_committed(open(&log, producer.clone(), config(dir.path())), 5).await;
    let partitions: BTreeSet<i32> = producer
        .written
        .lock()
        .unwrap()
        .iter()
        .map(|(p, ..)| *p)
        .collect();
    assert!(partitions.len() > 1, "{partitions:?}");
    assert_eq!(
        producer.first_sends.load(Ordering::SeqCst),
        1,
        "the batches after the failed one were sent anyway"
    );
    assert_eq!(
        producer.sends.load(Ordering::SeqCst),
        1 + partitions.len(),
        "all of them resent in one round"
    );
    let seen = assert_in_log_order(&producer.written.lock().unwrap());
    assert_eq!(seen, (0..5).collect());
    let errors: u64 = metrics
        .errors
        .iter()
        .map(|e| e.load(Ordering::Relaxed))
        .sum();
    assert_eq!(errors, 1, "only the batch that failed is counted");
}

/// While the cluster refuses our writes (its ACLs), every resend is one record: a round of
/// resends every `auth_retry_backoff_max` until someone fixes the ACLs would otherwise send a whole
/// chunk each time (a backlog's chunk is up to `max_batch_bytes`, 1 MiB), paid for on a metered
/// uplink and written by nobody. When the probe is taken the rest follows at once; nothing is
/// lost, in log order, once. The same when only one partition is refused (an ACL on one of
/// the routes' topics), the others' batches taken, and when the cluster has too few in-sync
/// replicas (a broker down for maintenance: every resend a whole chunk every 5 s, for hours).
#[tokio::test]
async fn writes_refused_by_the_cluster_are_probed_with_one_record() {
    for refuse in [Refuse::Everything, Refuse::Partition(0), Refuse::Replicas] {
        refused_writes_are_probed_with_one_record(refuse).await;
    }
}

async fn refused_writes_are_probed_with_one_record(refuse: Refuse) {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with(&dir.path().join("log"), &refs(&payloads(40))).await;
    let producer = FaultyProducer::default();
    *producer.refusing.lock().unwrap() = refuse;
    let fwd = open(&log, producer.clone(), config(dir.path()));
    let metrics = fwd.metrics();
    let (stop, abort) = (CancellationToken::new(), CancellationToken::new());
    let task = tokio::spawn(fwd.run(stop.clone(), abort.clone()));
    let deadline = Instant::now() + Duration::from_secs(10);
    let resends = |p: &FaultyProducer| -> Vec<usize> {
        let refused = p.refused.lock().unwrap();
        refused
            .iter()
            .filter(|(a, _)| *a == Attempt::Resend)
            .map(|(_, n)| *n)
            .collect()
    };
    while resends(&producer).len() < 10 {
        assert!(Instant::now() < deadline, "too few resends");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    match refuse {
        Refuse::Everything => assert_eq!(metrics.uplink_state(), UplinkState::AuthFailed),
        Refuse::Replicas => assert_eq!(metrics.uplink_state(), UplinkState::Down),
        _ => {}
    }
    let sizes = resends(&producer);
    assert!(
        sizes.iter().all(|&n| n == 1),
        "{refuse:?}: resends of {sizes:?} records"
    );
    let first: Vec<usize> = producer
        .refused
        .lock()
        .unwrap()
        .iter()
        .filter(|(a, _)| *a == Attempt::First)
        .map(|(_, n)| *n)
        .collect();
    assert!(
        first.iter().any(|&n| n > 1),
        "first sends are whole: {first:?}"
    );
    *producer.refusing.lock().unwrap() = Refuse::Nothing;
    let deadline = Instant::now() + Duration::from_secs(10);
    while metrics.committed.load(Ordering::Relaxed) < 40 {
        assert!(Instant::now() < deadline, "not all committed once allowed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.cancel();
    task.await.unwrap();
    let written = producer.written.lock().unwrap().clone();
    assert_eq!(assert_in_log_order(&written), (0..40).collect());
    assert_eq!(written.len(), 40, "each record written once");
    assert_eq!(metrics.uplink_state(), UplinkState::Up);
}

#[tokio::test]
async fn forwards_in_log_order_through_resets_and_dead_letters_the_poison_record() {
    let dir = tempfile::tempdir().unwrap();
    let mut payloads = payloads(40);
    payloads[13] = "BIG".into();
    let log = log_with(&dir.path().join("log"), &refs(&payloads)).await;
    let producer = FaultyProducer {
        fail_first: Arc::new(Mutex::new(3)),
        ..Default::default()
    };
    let fwd = open(&log, producer.clone(), config(dir.path()));
    let metrics = run_until_committed(fwd, 40).await;

    let written = producer.written.lock().unwrap().clone();
    let seen = assert_in_log_order(&written);
    let expected: BTreeSet<u64> = (0..40).filter(|o| *o != 13).collect();
    assert_eq!(seen, expected, "every record but the poison one");
    assert_eq!(metrics.dead_letters.load(Ordering::Relaxed), 1);
    assert_eq!(metrics.errors_of("connection_reset"), 3);
    assert!(metrics.errors_of("rejected") >= 1);
    let dl = std::fs::read_to_string(dir.path().join("dl")).unwrap();
    assert!(dl.contains("\"offset\":13,"), "{dl}");
    assert_eq!(log.cursor("kafka").unwrap().committed(), 40);
    assert_eq!(metrics.uplink_state(), UplinkState::Up);
}

#[tokio::test]
async fn a_backlog_cut_by_the_byte_limit_is_not_lingered_over() {
    // Chunks of a few records, limited by bytes (one record short of the limit, as a byte
    // limit always ends), and a linger far longer than the test may run: if a byte-limited
    // chunk counted as short, the first one would wait the linger out and nothing would be
    // committed. Only the tail chunk, which caught up with the log, may linger.
    let dir = tempfile::tempdir().unwrap();
    let payloads: Vec<String> = (0..40).map(|i| format!("m{i:02}")).collect();
    let log = log_with(&dir.path().join("log"), &refs(&payloads)).await;
    let one = log
        .cursor("probe")
        .unwrap()
        .try_read(1, usize::MAX)
        .unwrap()[0]
        .encoded_len();
    let mut config = config(dir.path());
    config.max_batch_records = 1_000;
    config.max_batch_bytes = one * 5 + one / 2;
    config.linger = Duration::from_secs(3_600);
    let producer = FaultyProducer::default();
    let fwd = open(&log, producer.clone(), config);
    let (stop, abort) = (CancellationToken::new(), CancellationToken::new());
    let task = tokio::spawn(fwd.run(stop.clone(), abort.clone()));
    let deadline = Instant::now() + Duration::from_secs(10);
    while producer.written.lock().unwrap().len() < 35 {
        assert!(
            Instant::now() < deadline,
            "the backlog waited for the linger"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    abort.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn nothing_is_committed_while_kafka_fails_and_abort_stops_the_retries() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with(&dir.path().join("log"), &["a", "b", "c"]).await;
    let producer = FaultyProducer::default();
    producer.down.store(true, Ordering::SeqCst);
    let fwd = open(&log, producer, config(dir.path()));
    let metrics = fwd.metrics();
    let (stop, abort) = (CancellationToken::new(), CancellationToken::new());
    let task = tokio::spawn(fwd.run(stop.clone(), abort.clone()));
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.cancel();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!task.is_finished(), "stop waits for the chunk in flight");
    abort.cancel();
    task.await.unwrap();
    assert!(metrics.errors_of("connection_reset") > 3);
    assert_eq!(metrics.lag_records(log.durable_end()), 3);
    assert_eq!(metrics.uplink_state(), UplinkState::Down);
    let last = metrics.last_error.lock().clone().unwrap();
    assert_eq!(last.kind, "connection_reset");
    assert_eq!(log.cursor("kafka").unwrap().committed(), 0);
}

/// Issue 17: while the uplink is down the forwarder backs off (here 5 s between attempts),
/// but probes the cluster ([`crate::uplink::probe_interval`]: every 100 ms early in an
/// outage); when Kafka is back, the replay starts within a probe interval, not at the end of
/// the backoff.
#[tokio::test]
async fn a_probe_ends_the_backoff_when_kafka_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let (log, producer, config) = kafka_down_with_long_backoff(dir.path()).await;
    let fwd = open(&log, producer.clone(), config);
    let metrics = fwd.metrics();
    let (stop, abort) = (CancellationToken::new(), CancellationToken::new());
    let task = tokio::spawn(fwd.run(stop.clone(), abort.clone()));
    // Down long enough that the first attempts failed and the 5 s waits began.
    let deadline = Instant::now() + Duration::from_secs(5);
    while metrics.errors_of("connection_reset") == 0 {
        assert!(Instant::now() < deadline, "no attempt failed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    back_within_a_probe(
        &producer,
        &metrics,
        "the replay waited for the backoff (5 s) instead of the probe",
    )
    .await;
    stop.cancel();
    task.await.unwrap();
    assert_eq!(metrics.uplink_state(), UplinkState::Up);
}

/// Brings `producer` back up and waits until the log's 20 records are committed: within 2 s
/// (a few probe intervals), not after a 5 s backoff (`waited` says what a timeout means).
async fn back_within_a_probe(producer: &FaultyProducer, metrics: &ForwardMetrics, waited: &str) {
    producer.down.store(false, Ordering::SeqCst);
    let back = Instant::now();
    while metrics.committed.load(Ordering::Relaxed) < 20 {
        assert!(back.elapsed() < Duration::from_millis(2000), "{waited}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A named fake transaction coordinator sharing a [`FaultyProducer`]'s `down`: no answer
/// while it is down, otherwise every step granted (InitProducerId: epoch 0) and no position.
struct DownCoordinator {
    down: Arc<AtomicBool>,
}

impl crate::producer::txn::TxnBroker for DownCoordinator {
    async fn call(
        &self,
        request: crate::producer::txn::TxnRequest,
    ) -> crate::producer::txn::TxnReply {
        use crate::producer::txn::{TxnReply, TxnRequest};
        if self.down.load(Ordering::SeqCst) {
            return TxnReply::Lost("connection refused".into());
        }
        match request {
            TxnRequest::InitProducerId { .. } => {
                TxnReply::Initialised(crate::producer::ProducerIdentity {
                    producer_id: 1,
                    epoch: 0,
                })
            }
            _ => TxnReply::Ok,
        }
    }

    async fn fetch_position(&self) -> Result<Option<crate::position::KafkaPosition>, ProduceError> {
        Ok(None)
    }
}

/// An exactly-once forwarder on cursor `kafka` of `log`, its coordinator a [`DownCoordinator`]
/// sharing `producer`'s `down`, its session waiting as `config` says.
fn open_exactly_once(
    log: &Log,
    producer: &FaultyProducer,
    config: ForwardConfig,
) -> Forwarder<FaultyProducer, DownCoordinator> {
    let session = TxnSession::new(
        DownCoordinator {
            down: Arc::clone(&producer.down),
        },
        crate::producer::txn::TxnConfig {
            transactional_id: "edge-bridge.gw".into(),
            transaction_timeout: Duration::from_secs(60),
            waits: config.retry_waits(),
        },
    );
    open(log, producer.clone(), config).exactly_once(session, crate::position::LogIdentity(1))
}

/// Exactly once, started while Kafka is down (a gateway booting in an outage): the
/// transaction session's own retries back off (here 2.5..5 s), but the start waits for a
/// probe first, so forwarding begins within a probe interval of Kafka's return. (Before,
/// FindCoordinator's backoff decided: 2.4 s late in the 1M drain benchmark.)
#[tokio::test]
async fn exactly_once_started_while_kafka_is_down_begins_when_a_probe_answers() {
    let dir = tempfile::tempdir().unwrap();
    let (log, producer, config) = kafka_down_with_long_backoff(dir.path()).await;
    let fwd = open_exactly_once(&log, &producer, config);
    let metrics = fwd.metrics();
    let (stop, abort) = (CancellationToken::new(), CancellationToken::new());
    let task = tokio::spawn(fwd.run(stop.clone(), abort.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    back_within_a_probe(
        &producer,
        &metrics,
        "the start waited for the transaction session's backoff instead of a probe",
    )
    .await;
    stop.cancel();
    task.await.unwrap();
    assert_eq!(metrics.transactions.load(Ordering::Relaxed), 1);
}

/// Exactly once, started while the cluster refuses our credentials: the start retries at the
/// refusal's backoff (here 0.5 s doubling), not every probe interval (each attempt is a
/// connection and a SASL handshake on the uplink: before, one a second for as long as the
/// refusal lasted, 86,400 a day), says so (`auth_failed`), and begins once the refusal ends.
#[tokio::test]
async fn exactly_once_started_while_refused_retries_at_the_refusal_backoff() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with(&dir.path().join("log"), &refs(&payloads(20))).await;
    let producer = FaultyProducer::default();
    *producer.refusing.lock().unwrap() = Refuse::Everything;
    let mut config = config(dir.path());
    config.backoff_min = Duration::from_millis(500);
    config.backoff_max = Duration::from_millis(500);
    config.auth_backoff_max = Duration::from_secs(60);
    let fwd = open_exactly_once(&log, &producer, config);
    let metrics = fwd.metrics();
    let (stop, abort) = (CancellationToken::new(), CancellationToken::new());
    let task = tokio::spawn(fwd.run(stop.clone(), abort.clone()));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let probes = producer.probes.load(Ordering::SeqCst);
    // 0.25–0.5, 0.5–1, 1–2 s: at most 4 attempts in 3 s.
    assert!(probes <= 4, "{probes} attempts in 3 s while refused");
    assert_eq!(metrics.uplink_state(), UplinkState::AuthFailed);
    *producer.refusing.lock().unwrap() = Refuse::Nothing;
    let deadline = Instant::now() + Duration::from_secs(10);
    while metrics.committed.load(Ordering::Relaxed) < 20 {
        assert!(
            Instant::now() < deadline,
            "not started once the refusal ended"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.cancel();
    task.await.unwrap();
    assert_eq!(metrics.transactions.load(Ordering::Relaxed), 1);
}

/// Partition counts per topic ("ta" 2, "tb" 3) unless `ta_gone`; counts its lookups.
#[derive(Clone, Default)]
struct Counts {
    ta_gone: Arc<AtomicBool>,
    lookups: Arc<Mutex<Vec<String>>>,
}

impl KafkaProducer for Counts {
    async fn produce(&self, tp: &Topition, _r: &[ProduceRecord]) -> Result<i64, ProduceError> {
        Err(ProduceError::NoLeader {
            topic: tp.topic().to_owned(),
            partition: tp.partition(),
            after_loss: None,
        })
    }

    async fn partition_count(&self, topic: &str) -> Result<i32, ProduceError> {
        self.lookups.lock().unwrap().push(topic.to_owned());
        match topic {
            "ta" if !self.ta_gone.load(Ordering::SeqCst) => Ok(2),
            "tb" => Ok(3),
            _ => Err(ProduceError::UnknownPartition {
                topic: topic.to_owned(),
                partition: 0,
                partitions: 0,
            }),
        }
    }
}

/// The planning stage looks up the previous chunk's topics and plans without a route match;
/// a topic new in this chunk is looked up and the chunk planned again; an earlier topic that
/// fails now does not hold up a chunk that does not need it, and one the chunk needs is
/// retried until it is known (or the stage is cancelled).
#[tokio::test]
async fn planning_reuses_the_previous_chunks_topics_and_retries_a_missing_one() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with(&dir.path().join("log"), &[]).await;
    let p = Counts::default();
    let metrics = Arc::new(ForwardMetrics::default());
    let uplink = Uplink::new(log, Arc::clone(&metrics), Duration::from_secs(60));
    let planning = Planning::new(
        Planner::new(routes(), "gw"),
        p.clone(),
        uplink,
        &config(dir.path()),
        Arc::clone(&metrics),
    );
    // `a/<k>` goes to "ta" keyed by its second level, `b/<k>` to "tb" without a key, others
    // nowhere (written before destinations were stored, and no route takes them).
    let rec = |offset: u64, topic: &str| Record {
        offset,
        timestamp_ms: 1,
        source: Source::Mqtt,
        topic: topic.into(),
        client_id: "c".into(),
        destination: match topic.split_once('/') {
            Some(("a", key)) => Some(Destination {
                topic: "ta".into(),
                key: Some(Bytes::copy_from_slice(key.as_bytes())),
                partition: None,
            }),
            Some(("b", _)) => Some(Destination::topic("tb")),
            _ => None,
        },
        headers: Vec::new(),
        payload: Bytes::from_static(b"x"),
    };
    let cancel = CancellationToken::new();
    let placed = |plan: &Plan| -> Vec<(Topition, Vec<u64>)> {
        plan.batches
            .iter()
            .map(|b| (b.tp.clone(), b.offsets.clone()))
            .collect()
    };

    let one = [rec(0, "a/1"), rec(1, "a/2"), rec(2, "a/1")];
    let plan = planning.plan(&one, &cancel).await.unwrap();
    assert_eq!(
        plan.batches.iter().map(|b| b.records.len()).sum::<usize>(),
        3
    );
    assert!(
        plan.batches
            .iter()
            .all(|b| b.tp.topic() == "ta" && b.tp.partition() < 2)
    );

    let two = [rec(3, "a/1"), rec(4, "b/x"), rec(5, "b/y"), rec(6, "zzz")];
    let plan = planning.plan(&two, &cancel).await.unwrap();
    // The same plan as with every count known up front (the first attempt stopped at the
    // first "tb" record, before the keyless rotation moved).
    let counts = HashMap::from([("ta".to_owned(), 2), ("tb".to_owned(), 3)]);
    let want = Planner::new(routes(), "gw").plan(&two, &counts).unwrap();
    assert_eq!(placed(&plan), placed(&want));
    assert_eq!(plan.unrouted, vec![6]);
    assert_eq!(*p.lookups.lock().unwrap(), ["ta", "ta", "tb"]);

    p.ta_gone.store(true, Ordering::SeqCst);
    let three = [rec(7, "b/x")];
    let plan = planning.plan(&three, &cancel).await.unwrap();
    assert_eq!(placed(&plan).len(), 1);
    // A chunk that needs the failing topic is retried until the stage is cancelled.
    let stopper = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        stopper.cancel();
    });
    assert!(planning.plan(&one, &cancel).await.is_none());
    let ta_lookups = p
        .lookups
        .lock()
        .unwrap()
        .iter()
        .filter(|t| *t == "ta")
        .count();
    assert!(ta_lookups > 4, "retried: {ta_lookups} lookups of ta");
    assert_eq!(metrics.uplink_state(), UplinkState::Down);
}

/// A broker that keeps a partition's records in order the way Kafka and Tansu do with the
/// idempotent producer (see the Tansu test in `producer::client`): it handles requests in the
/// order they arrive and appends a batch only if it continues the log (its first `edge-offset`
/// follows the last one appended); a batch after a gap is refused with
/// OUT_OF_ORDER_SEQUENCE_NUMBER and a batch it has already is acknowledged (written once).
/// Answers arrive 20 ms late, so later requests are in flight when one fails; request number
/// `fail_request` fails with NOT_LEADER_OR_FOLLOWER (not appended). At every request it checks
/// that the cursor never got ahead of what the log holds, and it counts `produce` calls (the
/// forwarder must not make any: one sending path).
#[derive(Clone, Default)]
struct OrderedFaultyBroker {
    fail_request: usize,
    requests: Arc<Mutex<usize>>,
    log: Arc<Mutex<Vec<u64>>>,
    outstanding: Arc<AtomicUsize>,
    max_outstanding: Arc<AtomicUsize>,
    resends: Arc<AtomicUsize>,
    metrics: Arc<Mutex<Option<Arc<ForwardMetrics>>>>,
}

impl OrderedFaultyBroker {
    fn handle(&self, records: &[ProduceRecord]) -> Result<i64, ProduceError> {
        let mut log = self.log.lock().unwrap();
        if let Some(m) = self.metrics.lock().unwrap().as_ref() {
            let committed = m.committed.load(Ordering::SeqCst);
            assert!(
                committed <= log.len() as u64,
                "cursor committed {committed} with only {} records in Kafka",
                log.len()
            );
        }
        let n = {
            let mut r = self.requests.lock().unwrap();
            *r += 1;
            *r
        };
        if n == self.fail_request {
            return Err(refused(codes::NOT_LEADER_OR_FOLLOWER));
        }
        let offsets: Vec<u64> = records.iter().map(edge_offset).collect();
        let expected = log.len() as u64;
        match offsets[0].cmp(&expected) {
            std::cmp::Ordering::Equal => {
                log.extend(offsets);
                Ok(expected as i64)
            }
            // Already there: acknowledged without writing it again.
            std::cmp::Ordering::Less => Ok(-1),
            std::cmp::Ordering::Greater => Err(refused(codes::OUT_OF_ORDER_SEQUENCE_NUMBER)),
        }
    }
}

impl KafkaProducer for OrderedFaultyBroker {
    async fn produce(&self, _tp: &Topition, _r: &[ProduceRecord]) -> Result<i64, ProduceError> {
        panic!("the forwarder has one sending path: send");
    }

    async fn send(
        &self,
        _tp: &Topition,
        records: &[ProduceRecord],
        _encoded: Option<EncodedBatch>,
        attempt: Attempt,
    ) -> ProduceAck {
        if attempt == Attempt::Resend {
            self.resends.fetch_add(1, Ordering::SeqCst);
        }
        let result = self.handle(records);
        let outstanding = Arc::clone(&self.outstanding);
        let now = outstanding.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_outstanding.fetch_max(now, Ordering::SeqCst);
        ProduceAck::pending(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            outstanding.fetch_sub(1, Ordering::SeqCst);
            result
        })
    }

    async fn partition_count(&self, _topic: &str) -> Result<i32, ProduceError> {
        Ok(1)
    }
}

#[tokio::test]
async fn a_failed_request_with_later_ones_in_flight_is_resent_first_and_commits_wait() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with(&dir.path().join("log"), &refs(&payloads(60))).await;
    // Request 3 (the third chunk) fails while the chunks after it are in flight.
    let broker = OrderedFaultyBroker {
        fail_request: 3,
        ..Default::default()
    };
    let fwd = open(&log, broker.clone(), config(dir.path()));
    *broker.metrics.lock().unwrap() = Some(fwd.metrics());
    let metrics = run_until_committed(fwd, 60).await;

    assert!(
        broker.max_outstanding.load(Ordering::SeqCst) >= 2,
        "several requests were in flight"
    );
    let log_now = broker.log.lock().unwrap().clone();
    assert_eq!(
        log_now,
        (0..60).collect::<Vec<u64>>(),
        "every record once, in log order"
    );
    let refused = metrics.errors_of("broker_retriable");
    assert!(
        refused >= 2,
        "the failure and at least one refused follower: {refused}"
    );
    assert!(broker.resends.load(Ordering::SeqCst) >= 1, "resent as such");
    assert_eq!(log.cursor("kafka").unwrap().committed(), 60);
}

/// A partition vanishes under a plan (the topic came back with fewer partitions): the
/// records of the batch are planned again on the partitions there are, and all arrive. Named
/// fake: a topic whose partitions 1 and 2 disappear at the first batch sent to them.
#[derive(Clone, Default)]
struct ShrinkingTopic {
    shrunk: Arc<AtomicBool>,
    written: Arc<Mutex<Vec<(i32, u64, Bytes)>>>,
}

impl KafkaProducer for ShrinkingTopic {
    async fn produce(&self, tp: &Topition, records: &[ProduceRecord]) -> Result<i64, ProduceError> {
        // The first batch sent to a partition above 0 finds the topic shrunk to 1 partition.
        if tp.partition() > 0 && !self.shrunk.swap(true, Ordering::SeqCst) {
            return Err(ProduceError::UnknownPartition {
                topic: tp.topic().to_owned(),
                partition: tp.partition(),
                partitions: 1,
            });
        }
        if tp.partition() > 0 {
            return Err(ProduceError::UnknownPartition {
                topic: tp.topic().to_owned(),
                partition: tp.partition(),
                partitions: 1,
            });
        }
        let mut w = self.written.lock().unwrap();
        for r in records {
            w.push((tp.partition(), edge_offset(r), r.value.clone().unwrap()));
        }
        Ok(0)
    }

    async fn partition_count(&self, _topic: &str) -> Result<i32, ProduceError> {
        Ok(if self.shrunk.load(Ordering::SeqCst) {
            1
        } else {
            3
        })
    }
}

#[tokio::test]
async fn records_of_a_vanished_partition_are_planned_again() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with(&dir.path().join("log"), &refs(&payloads(30))).await;
    let producer = ShrinkingTopic::default();
    let fwd = open(&log, producer.clone(), config(dir.path()));
    run_until_committed(fwd, 30).await;
    let written = producer.written.lock().unwrap().clone();
    assert!(
        written.iter().all(|(p, _, _)| *p == 0),
        "the one partition left"
    );
    let offsets: BTreeSet<u64> = written.iter().map(|(_, o, _)| *o).collect();
    assert_eq!(offsets, (0..30).collect(), "every record");
    // Keys moved partitions; each key's records stay in log order.
    for key in 0..5 {
        let of_key: Vec<u64> = written
            .iter()
            .map(|(_, o, _)| *o)
            .filter(|o| o % 5 == key)
            .collect();
        assert!(
            of_key.windows(2).all(|w| w[0] < w[1]),
            "key {key}: {of_key:?}"
        );
    }
    assert!(producer.shrunk.load(Ordering::SeqCst));
}
