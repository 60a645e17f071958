//! A fault-injecting Kafka-protocol proxy: a **test-only server** that sits between a client and
//! a real broker (Tansu), passes the Kafka framing through, and misbehaves on demand the ways a
//! real cluster does but Tansu cannot on demand:
//!
//! - a Produce answered with an error code, either **instead of** passing the request on (the
//!   broker did not write it: `NOT_LEADER_OR_FOLLOWER`, `NOT_ENOUGH_REPLICAS`) or **after** the
//!   broker wrote it (`REQUEST_TIMED_OUT`, `NOT_ENOUGH_REPLICAS_AFTER_APPEND`: the client cannot
//!   tell, and its resend meets the records already there) — [`ProduceFault`];
//! - a throttle time in a Produce answer, and the connection muted that long, as a Kafka broker
//!   enforcing a quota does (KIP-219);
//! - a connection reset (RST) half-way through a Produce answer;
//! - every answer delayed ([`KafkaProxy::set_delay`]), or none at all ([`KafkaProxy::set_silent`]:
//!   connections are accepted, nothing is read or answered, like a broker behind a black hole);
//!   either from a given moment of a client's conversation ([`KafkaProxy::arm`]: at the next
//!   request of an API, say a client's first Produce while its other connections are still
//!   being set up).
//!
//! It also counts every request by API and time ([`KafkaProxy::max_per_second`]: does a client
//! spin?) and keeps what the broker said about aborted transactions in Fetch answers
//! ([`KafkaProxy::fetch_aborted_transactions`], the wire evidence of a Tansu shortcoming).
//!
//! The proxy does not rewrite Metadata or FindCoordinator: start the broker with
//! `--advertised-listener-url` pointing at the proxy ([`crate::kafka::Tansu::start_behind_proxy`]),
//! so clients keep coming back through it. Requests are parsed with the `kafka-protocol` crate
//! (only the Produce request and the Produce and Fetch answers are decoded). Blocking I/O, two
//! threads per connection; everything stops when the proxy is dropped.
//!
//! Checked against an independent client (librdkafka through confluent-kafka) by
//! `tests/tests/kafka_faults.rs`: with no faults it is transparent, and librdkafka reports each
//! injected fault.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{
    ApiKey, FetchResponse, ProduceRequest, ProduceResponse, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable};

/// Kafka error codes the fault tests inject.
pub mod codes {
    /// NOT_LEADER_OR_FOLLOWER: the leader moved; the request was not written.
    pub const NOT_LEADER_OR_FOLLOWER: i16 = 6;
    /// REQUEST_TIMED_OUT: the broker gave up waiting for replicas (the batch may be written).
    pub const REQUEST_TIMED_OUT: i16 = 7;
    /// NOT_ENOUGH_REPLICAS: too few in-sync replicas; the request was not written.
    pub const NOT_ENOUGH_REPLICAS: i16 = 19;
    /// NOT_ENOUGH_REPLICAS_AFTER_APPEND: written to the leader, not acknowledged by enough replicas.
    pub const NOT_ENOUGH_REPLICAS_AFTER_APPEND: i16 = 20;
}

/// What to do to one Produce request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProduceFault {
    /// Answer every partition with this error code without passing the request on: the broker
    /// never sees it.
    Refuse(i16),
    /// Pass the request on (the broker writes it), then replace the broker's answer with this
    /// error code for every partition.
    WrittenThenError(i16),
    /// Pass it on, put this throttle time into the answer, and hold the connection's next
    /// requests back that long (how a Kafka broker enforces a quota).
    Throttle(Duration),
    /// Pass it on, write half of the answer, then reset the connection (RST).
    ResetMidResponse,
}

/// One request the proxy saw.
#[derive(Debug, Clone, Copy)]
pub struct Seen {
    /// When it arrived.
    pub at: Instant,
    /// Its API key (0 Produce, 1 Fetch, 3 Metadata, 18 ApiVersions, 22 InitProducerId, ...).
    pub api_key: i16,
    /// Its size on the wire, the 4-byte length prefix included.
    pub bytes: usize,
}

/// An `aborted_transactions` list of one partition in a Fetch answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedPartition {
    /// Topic name, or its id (Fetch v13 and later name topics by id only).
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// The answer's high watermark.
    pub high_watermark: i64,
    /// The answer's last stable offset.
    pub last_stable_offset: i64,
    /// (producer id, first offset) of each aborted transaction the broker listed; None if the
    /// field was null (Kafka sends null for `read_uncommitted` fetches).
    pub aborted: Option<Vec<(i64, i64)>>,
    /// Bytes of record batches in the answer.
    pub record_bytes: usize,
}

/// The scripted behaviour, shared by every connection.
#[derive(Debug, Default)]
struct Script {
    /// Faults for the next Produce requests, one each, in order.
    queued: VecDeque<ProduceFault>,
    /// A fault for every Produce request while no queued one is left.
    every: Option<ProduceFault>,
    /// Delay before each answer.
    delay: Duration,
    /// Read and answer nothing.
    silent: bool,
    /// A fault that starts with the next request of an API (see [`KafkaProxy::arm`]).
    armed: Option<(i16, Armed)>,
}

/// A standing fault [`KafkaProxy::arm`] starts at a given request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Armed {
    /// [`KafkaProxy::set_delay`] with this delay.
    Delay(Duration),
    /// [`KafkaProxy::set_silent`]: the request that starts it is passed on, its answer and
    /// everything after it is held.
    Silent,
}

#[derive(Default)]
struct Shared {
    script: Mutex<Script>,
    seen: Mutex<Vec<Seen>>,
    fetched: Mutex<Vec<FetchedPartition>>,
    /// When the fault set by [`KafkaProxy::arm`] started.
    armed_started: Mutex<Option<Instant>>,
    /// Clones of every socket, to shut them down when the proxy goes.
    sockets: Mutex<Vec<TcpStream>>,
    connections: Mutex<usize>,
    stop: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A running proxy on 127.0.0.1; stopped (every connection closed) on drop.
pub struct KafkaProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<std::thread::JoinHandle<()>>,
}

/// Largest frame the proxy passes (requests and answers).
const MAX_FRAME: usize = 128 << 20;

impl KafkaProxy {
    /// Listens on `listen` (a bound listener, so its port can be advertised by the broker
    /// before the broker exists) and passes connections on to `upstream`.
    pub fn start(listen: TcpListener, upstream: SocketAddr) -> Self {
        let addr = listen.local_addr().expect("proxy address");
        let shared = Arc::new(Shared::default());
        let accepting = Arc::clone(&shared);
        let accept = std::thread::spawn(move || {
            for client in listen.incoming() {
                if accepting.stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                *lock(&accepting.connections) += 1;
                let shared = Arc::clone(&accepting);
                std::thread::spawn(move || serve(client, upstream, shared));
            }
        });
        Self {
            addr,
            shared,
            accept: Some(accept),
        }
    }

    /// Binds a free 127.0.0.1 port for a proxy to be started on with [`KafkaProxy::start`].
    pub fn bind() -> TcpListener {
        TcpListener::bind("127.0.0.1:0").expect("bind the proxy's port")
    }

    /// `127.0.0.1:PORT` of the proxy.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Applies `fault` to the next `count` Produce requests (after those already queued).
    pub fn queue_produce_faults(&self, fault: ProduceFault, count: usize) {
        lock(&self.shared.script)
            .queued
            .extend(std::iter::repeat_n(fault, count));
    }

    /// Applies `fault` to every Produce request from now on (None: none), once the queued ones
    /// are used up.
    pub fn set_produce_fault(&self, fault: Option<ProduceFault>) {
        lock(&self.shared.script).every = fault;
    }

    /// Produce faults queued and not used yet.
    pub fn queued_faults(&self) -> usize {
        lock(&self.shared.script).queued.len()
    }

    /// Delays every answer by `delay` (zero: none).
    pub fn set_delay(&self, delay: Duration) {
        lock(&self.shared.script).delay = delay;
    }

    /// While silent, nothing is read from clients and nothing is answered; new connections
    /// are still accepted (by the kernel) and wait too.
    pub fn set_silent(&self, silent: bool) {
        lock(&self.shared.script).silent = silent;
    }

    /// Starts `fault` when the next request of `api_key` arrives (before it is passed on, so
    /// its own answer is affected too), on whichever connection: a fault that meets a client
    /// at an exact step of its conversation, however fast or slow the machine is.
    pub fn arm(&self, api_key: i16, fault: Armed) {
        lock(&self.shared.script).armed = Some((api_key, fault));
    }

    /// True while a fault set by [`KafkaProxy::arm`] waits for its request.
    pub fn is_armed(&self) -> bool {
        lock(&self.shared.script).armed.is_some()
    }

    /// When the fault set by [`KafkaProxy::arm`] started (None: not yet).
    pub fn armed_started(&self) -> Option<Instant> {
        *lock(&self.shared.armed_started)
    }

    /// Ends every fault: no queued or standing Produce faults, no delay, not silent, nothing
    /// armed.
    pub fn clear(&self) {
        *lock(&self.shared.script) = Script::default();
    }

    /// Every request seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        lock(&self.shared.seen).clone()
    }

    /// Requests of `api_key` seen so far.
    pub fn count(&self, api_key: i16) -> usize {
        lock(&self.shared.seen)
            .iter()
            .filter(|s| s.api_key == api_key)
            .count()
    }

    /// Bytes of the requests of `api_key` (None: of any API) that arrived between `from` and
    /// `to`.
    pub fn bytes(&self, api_key: Option<i16>, from: Instant, to: Instant) -> usize {
        lock(&self.shared.seen)
            .iter()
            .filter(|s| api_key.is_none_or(|k| s.api_key == k) && s.at >= from && s.at <= to)
            .map(|s| s.bytes)
            .sum()
    }

    /// Client connections accepted so far.
    pub fn connections(&self) -> usize {
        *lock(&self.shared.connections)
    }

    /// The most requests of `api_key` (None: of any API) that arrived within one second,
    /// between `from` and `to`.
    pub fn max_per_second(&self, api_key: Option<i16>, from: Instant, to: Instant) -> usize {
        let times: Vec<Instant> = lock(&self.shared.seen)
            .iter()
            .filter(|s| api_key.is_none_or(|k| s.api_key == k) && s.at >= from && s.at <= to)
            .map(|s| s.at)
            .collect();
        let mut best = 0;
        let mut start = 0;
        for (end, at) in times.iter().enumerate() {
            while *at - times[start] >= Duration::from_secs(1) {
                start += 1;
            }
            best = best.max(end + 1 - start);
        }
        best
    }

    /// What every Fetch answer so far said per partition (aborted transactions, LSO).
    pub fn fetch_aborted_transactions(&self) -> Vec<FetchedPartition> {
        lock(&self.shared.fetched).clone()
    }
}

impl Drop for KafkaProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        lock(&self.shared.script).silent = false;
        for s in lock(&self.shared.sockets).drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
        // Wake the accept loop so it sees `stop`.
        let _ = TcpStream::connect(self.addr);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

/// What the answer thread must do for one request, in request order.
enum Pending {
    /// Read the broker's answer and pass it on (after `fault`, if any).
    Upstream {
        api_key: i16,
        version: i16,
        fault: Option<ProduceFault>,
        /// The connection's mute deadline, for `Throttle`.
        muted: Arc<Mutex<Option<Instant>>>,
    },
    /// Send this answer made up by the proxy.
    Made(Bytes),
}

/// Serves one client connection: this thread reads requests, another writes answers.
fn serve(client: TcpStream, upstream: SocketAddr, shared: Arc<Shared>) {
    let Ok(broker) = TcpStream::connect(upstream) else {
        // The broker is down: the client sees its connection closed, as with a dead broker.
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = broker.set_nodelay(true);
    let (Ok(client_w), Ok(broker_r)) = (client.try_clone(), broker.try_clone()) else {
        return;
    };
    {
        let mut sockets = lock(&shared.sockets);
        for s in [&client, &broker] {
            if let Ok(s) = s.try_clone() {
                sockets.push(s);
            }
        }
    }
    if shared.stop.load(Ordering::SeqCst) {
        return;
    }
    let (tx, rx) = channel();
    let answering = Arc::clone(&shared);
    let answers = std::thread::spawn(move || answer(rx, broker_r, client_w, answering));
    read_requests(client, broker, tx, &shared);
    let _ = answers.join();
}

/// Waits while the proxy is silent; false once it is stopping.
fn wait_while_silent(shared: &Shared) -> bool {
    while lock(&shared.script).silent {
        if shared.stop.load(Ordering::SeqCst) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    !shared.stop.load(Ordering::SeqCst)
}

/// Reads one length-prefixed frame (None at EOF or on an error or an oversized frame).
fn read_frame(from: &mut TcpStream) -> Option<Bytes> {
    let mut len = [0u8; 4];
    from.read_exact(&mut len).ok()?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return None;
    }
    let mut body = vec![0u8; len];
    from.read_exact(&mut body).ok()?;
    Some(Bytes::from(body))
}

fn write_frame(to: &mut TcpStream, body: &[u8]) -> std::io::Result<()> {
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(body);
    to.write_all(&frame)
}

fn read_requests(
    mut client: TcpStream,
    mut broker: TcpStream,
    answers: Sender<Pending>,
    shared: &Shared,
) {
    let muted: Arc<Mutex<Option<Instant>>> = Arc::default();
    loop {
        if !wait_while_silent(shared) {
            break;
        }
        let Some(body) = read_frame(&mut client) else {
            break;
        };
        let mute_until = *lock(&muted);
        if let Some(until) = mute_until {
            // A throttled connection: the broker reads nothing more until the time is up.
            std::thread::sleep(until.saturating_duration_since(Instant::now()));
        }
        if body.len() < 8 {
            break;
        }
        let api_key = i16::from_be_bytes([body[0], body[1]]);
        let version = i16::from_be_bytes([body[2], body[3]]);
        lock(&shared.seen).push(Seen {
            at: Instant::now(),
            api_key,
            bytes: 4 + body.len(),
        });
        let fault = {
            let mut script = lock(&shared.script);
            if let Some((key, armed)) = script.armed
                && key == api_key
            {
                script.armed = None;
                match armed {
                    Armed::Delay(delay) => script.delay = delay,
                    Armed::Silent => script.silent = true,
                }
                *lock(&shared.armed_started) = Some(Instant::now());
            }
            if api_key == ApiKey::Produce as i16 {
                script.queued.pop_front().or(script.every)
            } else {
                None
            }
        };
        let pending = match fault {
            Some(ProduceFault::Refuse(code)) => match refusal(&body, version, code) {
                Some(made) => Pending::Made(made),
                None => break,
            },
            fault => {
                if write_frame(&mut broker, &body).is_err() {
                    break;
                }
                Pending::Upstream {
                    api_key,
                    version,
                    fault,
                    muted: Arc::clone(&muted),
                }
            }
        };
        if answers.send(pending).is_err() {
            break;
        }
    }
    let _ = client.shutdown(Shutdown::Read);
    let _ = broker.shutdown(Shutdown::Write);
}

fn answer(
    pending: Receiver<Pending>,
    mut broker: TcpStream,
    mut client: TcpStream,
    shared: Arc<Shared>,
) {
    while let Ok(next) = pending.recv() {
        let (body, reset) = match next {
            Pending::Made(body) => (body, false),
            Pending::Upstream {
                api_key,
                version,
                fault,
                muted,
            } => {
                let Some(body) = read_frame(&mut broker) else {
                    break;
                };
                if api_key == ApiKey::Fetch as i16 {
                    note_fetch(&body, version, &shared);
                }
                match fault {
                    Some(ProduceFault::WrittenThenError(code)) => {
                        match rewrite_produce(&body, version, |r| set_error(r, code)) {
                            Some(b) => (b, false),
                            None => break,
                        }
                    }
                    Some(ProduceFault::Throttle(d)) => {
                        *lock(&muted) = Some(Instant::now() + d);
                        let ms = i32::try_from(d.as_millis()).unwrap_or(i32::MAX);
                        match rewrite_produce(&body, version, |r| r.throttle_time_ms = ms) {
                            Some(b) => (b, false),
                            None => break,
                        }
                    }
                    Some(ProduceFault::ResetMidResponse) => (body, true),
                    Some(ProduceFault::Refuse(_)) | None => (body, false),
                }
            }
        };
        if !wait_while_silent(&shared) {
            break;
        }
        let delay = lock(&shared.script).delay;
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        if reset {
            let mut frame = (body.len() as u32).to_be_bytes().to_vec();
            frame.extend_from_slice(&body[..body.len() / 2]);
            let _ = client.write_all(&frame);
            reset_connection(&client);
            let _ = broker.shutdown(Shutdown::Both);
            break;
        }
        if write_frame(&mut client, &body).is_err() {
            break;
        }
    }
    let _ = client.shutdown(Shutdown::Both);
    let _ = broker.shutdown(Shutdown::Both);
}

/// Closes `s` with an RST (SO_LINGER 0), not a FIN.
fn reset_connection(s: &TcpStream) {
    let linger = nix::libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    let _ = nix::sys::socket::setsockopt(s, nix::sys::socket::sockopt::Linger, &linger);
    let _ = s.shutdown(Shutdown::Both);
}

/// A Produce answer with `code` for every partition of the request in `body`.
fn refusal(body: &Bytes, version: i16, code: i16) -> Option<Bytes> {
    let mut buf = body.clone();
    let header =
        RequestHeader::decode(&mut buf, ApiKey::Produce.request_header_version(version)).ok()?;
    let request = ProduceRequest::decode(&mut buf, version).ok()?;
    let mut response = ProduceResponse::default();
    for t in &request.topic_data {
        let partitions = t
            .partition_data
            .iter()
            .map(|p| PartitionProduceResponse::default().with_index(p.index))
            .collect();
        response.responses.push(
            TopicProduceResponse::default()
                .with_name(t.name.clone())
                .with_topic_id(t.topic_id)
                .with_partition_responses(partitions),
        );
    }
    set_error(&mut response, code);
    encode_response(header.correlation_id, version, &response)
}

fn set_error(response: &mut ProduceResponse, code: i16) {
    for t in &mut response.responses {
        for p in &mut t.partition_responses {
            p.error_code = code;
            p.base_offset = -1;
        }
    }
}

/// Decodes a Produce answer, changes it with `edit`, encodes it again.
fn rewrite_produce(
    body: &Bytes,
    version: i16,
    edit: impl FnOnce(&mut ProduceResponse),
) -> Option<Bytes> {
    let mut buf = body.clone();
    let header =
        ResponseHeader::decode(&mut buf, ApiKey::Produce.response_header_version(version)).ok()?;
    let mut response = ProduceResponse::decode(&mut buf, version).ok()?;
    edit(&mut response);
    encode_response(header.correlation_id, version, &response)
}

fn encode_response(correlation_id: i32, version: i16, response: &ProduceResponse) -> Option<Bytes> {
    let mut out = BytesMut::new();
    ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(&mut out, ApiKey::Produce.response_header_version(version))
        .ok()?;
    response.encode(&mut out, version).ok()?;
    Some(out.freeze())
}

/// Records what a Fetch answer said about each partition.
fn note_fetch(body: &Bytes, version: i16, shared: &Shared) {
    let mut buf = body.clone();
    let Ok(_) = ResponseHeader::decode(&mut buf, ApiKey::Fetch.response_header_version(version))
    else {
        return;
    };
    let Ok(response) = FetchResponse::decode(&mut buf, version) else {
        return;
    };
    let mut fetched = lock(&shared.fetched);
    for t in &response.responses {
        for p in &t.partitions {
            // Fetch v13 and later name topics by id only.
            let topic = if t.topic.0.is_empty() {
                t.topic_id.to_string()
            } else {
                t.topic.0.to_string()
            };
            fetched.push(FetchedPartition {
                topic: topic.clone(),
                partition: p.partition_index,
                high_watermark: p.high_watermark,
                last_stable_offset: p.last_stable_offset,
                aborted: p.aborted_transactions.as_ref().map(|a| {
                    a.iter()
                        .map(|a| (a.producer_id.0, a.first_offset))
                        .collect()
                }),
                record_bytes: p.records.as_ref().map_or(0, Bytes::len),
            });
        }
    }
}
