//! One NATS client connection.
//!
//! Everything sent to the client (INFO, +OK, -ERR, PING/PONG, MSG/HMSG from the hub) goes
//! through one bounded [`Outbox`], so a subscriber's messages and the replies to its own ops
//! leave in the order they were produced. When the outbox would exceed `nats.max_pending`, the
//! subscriber is a slow consumer: it gets `-ERR 'Slow Consumer'` and is disconnected.
//!
//! Routed publishes are submitted to the log in arrival order, up to
//! `MAX_APPENDS_IN_FLIGHT` per connection so they share fdatasyncs (group commit); with that
//! many waiting (a full log under `when_full = "block"`) the connection stops reading, so the
//! log pushes back through TCP, while output keeps flowing. A routed message reaches local
//! subscribers once it is written, and its PubAck goes to the reply subject once it is
//! durable; replies leave in the order the publishes came in.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use edge_log::{AppendError, Appended, Header, NewRecord, Source};
use edge_proto::nats::{
    ClientOp, Connect, HeaderMap, Limits, Pub, ServerError, ServerOp, Sub, Unsub, decode_client_op,
    encode_msg, subject,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Notify, OwnedSemaphorePermit};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::server::{NatsMetrics, NatsServer, hub_filter, nats_message};
use crate::hub::{Delivery, Mailbox, SubEntry};
use crate::message::{Message, now_ms};
use crate::router::Filter;

/// How long a closing connection waits for the log to take the publishes it already read.
const APPEND_DRAIN: Duration = Duration::from_secs(5);
/// How long a closing connection may take to flush its last bytes.
const CLOSE_FLUSH: Duration = Duration::from_secs(1);
/// Header naming a message id for duplicate detection (JetStream's).
const MSG_ID: &str = "Nats-Msg-Id";
/// Header asking that the message lands in a given stream (JetStream's).
const EXPECTED_STREAM: &str = "Nats-Expected-Stream";

/// Why a connection ended.
#[derive(Debug)]
enum Exit {
    /// The socket closed or failed, or the client broke the protocol (already answered).
    Closed(String),
    /// A protocol error was answered with `-ERR` (or silently) and the connection closes.
    Violation(String),
    /// The client could not keep up with its messages.
    SlowConsumer,
    /// The broker is shutting down.
    Shutdown,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// What the connection and its subscriptions write to the client.
#[derive(Debug)]
pub struct Outbox {
    state: Mutex<OutState>,
    wake: Notify,
    max_pending: usize,
    /// Hub key of the connection (publisher id, for `echo: false`).
    conn_key: u64,
    server: Arc<NatsServer>,
}

#[derive(Debug, Default)]
struct OutState {
    buf: BytesMut,
    /// Bytes taken out of `buf` and not yet written to the socket.
    writing: usize,
    slow: bool,
    closed: bool,
    echo: bool,
    headers: bool,
    /// Subscriptions that reached their UNSUB max and must leave the hub.
    finished: Vec<String>,
}

impl Outbox {
    fn lock(&self) -> MutexGuard<'_, OutState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues protocol output of the connection itself (not limited: it is small and paced
    /// by the client's own ops).
    fn push_op(&self, op: &ServerOp) {
        op.encode(&mut self.lock().buf);
        self.wake.notify_one();
    }

    /// Bytes waiting to be written to the client.
    fn pending(&self) -> usize {
        let state = self.lock();
        state.buf.len() + state.writing
    }

    fn push_raw(&self, bytes: &[u8]) {
        self.lock().buf.extend_from_slice(bytes);
        self.wake.notify_one();
    }
}

/// One subscription's mailbox in the hub: encodes deliveries as MSG/HMSG into the outbox.
#[derive(Debug)]
struct SubMailbox {
    outbox: Arc<Outbox>,
    sid: String,
    /// UNSUB max messages (0 = unlimited).
    max: AtomicU64,
    delivered: AtomicU64,
}

impl Mailbox for SubMailbox {
    fn deliver(&self, delivery: Delivery) -> bool {
        let message = &delivery.message;
        let server = &self.outbox.server;
        let Ok(subject) = subject::mqtt_topic_to_nats_subject(&message.topic) else {
            NatsMetrics::inc(&server.metrics.unmappable);
            return false;
        };
        let reply = message
            .properties
            .response_topic
            .as_deref()
            .and_then(|t| subject::mqtt_topic_to_nats_subject(t).ok());
        let mut state = self.outbox.lock();
        if state.closed {
            return false;
        }
        if !state.echo && message.publisher == Some(self.outbox.conn_key) {
            return true;
        }
        let max = self.max.load(Ordering::Relaxed);
        let n = self.delivered.fetch_add(1, Ordering::Relaxed) + 1;
        if max > 0 && n > max {
            return false;
        }
        let headers =
            (state.headers && !message.properties.user_properties.is_empty()).then(|| {
                let mut h = HeaderMap::new();
                for (k, v) in &message.properties.user_properties {
                    h.append(k.as_str(), v.as_str());
                }
                let mut b = BytesMut::new();
                h.encode(&mut b);
                b
            });
        let size = subject.len()
            + self.sid.len()
            + reply.as_ref().map_or(0, String::len)
            + headers.as_ref().map_or(0, |h| h.len())
            + message.payload.len()
            + 48;
        if state.buf.len() + state.writing + size > self.outbox.max_pending {
            state.slow = true;
            drop(state);
            NatsMetrics::inc(&server.metrics.dropped_slow);
            self.outbox.wake.notify_one();
            return false;
        }
        encode_msg(
            &mut state.buf,
            &subject,
            &self.sid,
            reply.as_deref(),
            headers.as_deref(),
            &message.payload,
        );
        if max > 0 && n == max {
            state.finished.push(self.sid.clone());
        }
        drop(state);
        NatsMetrics::inc(&server.metrics.sent);
        self.outbox.wake.notify_one();
        true
    }
}

/// A subscription as the connection remembers it.
struct SubRecord {
    key: u64,
    subject: String,
    filter: Option<Filter>,
    group: Option<String>,
    mailbox: Arc<SubMailbox>,
}

/// Routed publishes a connection may have submitted to the log and not yet seen written.
/// Several in flight let one connection's records share an fdatasync (group commit).
///
/// Order: the appends are first polled in arrival order, outside tokio's cooperative budget
/// (a budget-starved append would otherwise be overtaken by a later one), which is the order
/// they enter the log as long as edge-log's submission queue (1024 slots, 16 MiB) has room.
/// One connection alone stays below that (256 records, 4 MiB); when several busy connections
/// together fill it, a waiting append can be overtaken by a later one of the same connection
/// (edge-log's `append` does not promise FIFO between concurrent callers). Such overtakes are
/// counted in `edge_nats_reordered_appends_total`.
const MAX_APPENDS_IN_FLIGHT: usize = 256;
/// Payload bytes of those appends a connection may hold (memory bound per connection).
const MAX_APPEND_BYTES_IN_FLIGHT: usize = 4 << 20;

/// Which of a connection's appends made progress (by sequence number), and the connection's
/// task to wake: a connection with many appends in flight polls only those.
#[derive(Debug, Default)]
struct WokenAppends {
    state: Mutex<(Vec<u64>, Option<std::task::Waker>)>,
}

impl WokenAppends {
    fn mark(&self, id: u64) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.0.push(id);
        if let Some(task) = state.1.as_ref() {
            task.wake_by_ref();
        }
    }
}

/// The waker one append's future gets.
#[derive(Debug)]
struct AppendWaker {
    id: u64,
    woken: Arc<WokenAppends>,
}

impl std::task::Wake for AppendWaker {
    fn wake(self: Arc<Self>) {
        self.woken.mark(self.id);
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.mark(self.id);
    }
}

/// A routed publish on its way into the log (the log may be full and blocking).
struct PendingAppend {
    /// Sequence number within the connection (consecutive in the queue).
    id: u64,
    state: AppendState,
    waker: std::task::Waker,
    /// Payload and header bytes held.
    bytes: usize,
    message: Option<Arc<Message>>,
    reply: Option<String>,
    stream: String,
    msg_id: Option<String>,
}

/// A reply owed on a reply subject, in arrival order.
struct PendingAck {
    reply: String,
    stream: String,
    msg_id: Option<String>,
    outcome: AckOutcome,
}

enum AppendState {
    /// Still running: polled in arrival order, so records enter the log in that order.
    Running(BoxFuture<Result<Appended, AppendError>>),
    /// Finished, waiting for the publishes before it.
    Done(Result<Appended, AppendError>),
    /// Handed on.
    Taken,
}

enum AckOutcome {
    /// Ready to send (duplicate answer, error).
    Ready(Bytes),
    /// Waiting for the log to make the record durable.
    Durable(BoxFuture<Result<u64, AppendError>>),
}

/// Serves one TCP connection until it ends.
pub async fn serve(
    server: Arc<NatsServer>,
    stream: TcpStream,
    peer: SocketAddr,
    permit: Option<OwnedSemaphorePermit>,
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let local = stream.local_addr().ok();
    let (reader, mut writer) = stream.into_split();
    let conn_key = server.next_key();
    let info = ServerOp::Info(Box::new(server.info(conn_key, peer, local)));
    let Some(permit) = permit else {
        tracing::warn!(%peer, "refusing NATS client: nats.max_connections reached");
        let mut out = BytesMut::new();
        info.encode(&mut out);
        out.extend_from_slice(ServerError::MaxConnectionsExceeded.err_line().as_bytes());
        let _ = tokio::time::timeout(CLOSE_FLUSH, async {
            let _ = writer.write_all(&out).await;
            let _ = writer.shutdown().await;
        })
        .await;
        return;
    };
    let settings = server.settings();
    let outbox = Arc::new(Outbox {
        state: Mutex::new(OutState {
            echo: true,
            ..OutState::default()
        }),
        wake: Notify::new(),
        max_pending: settings.max_pending.bytes() as usize,
        conn_key,
        server: Arc::clone(&server),
    });
    outbox.push_op(&info);
    server.metrics.connections.fetch_add(1, Ordering::Relaxed);
    NatsMetrics::inc(&server.metrics.connections_total);
    let mut connection = Connection {
        limits: Limits {
            max_payload: settings.max_payload.bytes() as usize,
            ..Limits::default()
        },
        settings,
        server,
        outbox,
        peer,
        conn_key,
        reader,
        writer,
        inbuf: BytesMut::with_capacity(16 << 10),
        outbuf: BytesMut::new(),
        connect: None,
        client_id: format!("nats-{}", conn_key - super::server::NATS_KEY_BASE),
        subs: HashMap::new(),
        appends: VecDeque::new(),
        append_bytes: 0,
        last_offset: None,
        pongs: VecDeque::new(),
        next_append: 0,
        woken: Arc::new(WokenAppends::default()),
        woken_scratch: Vec::new(),
        acks: VecDeque::new(),
        pings_out: 0,
        shutdown,
    };
    let exit = connection.serve_loop().await;
    connection.finish(exit).await;
    drop(permit);
}

struct Connection {
    server: Arc<NatsServer>,
    /// The `[nats]` limits this connection started with (a reload affects later connections).
    settings: Arc<crate::config::NatsSection>,
    outbox: Arc<Outbox>,
    peer: SocketAddr,
    conn_key: u64,
    reader: OwnedReadHalf,
    writer: OwnedWriteHalf,
    inbuf: BytesMut,
    outbuf: BytesMut,
    limits: Limits,
    connect: Option<Box<Connect>>,
    client_id: String,
    subs: HashMap<String, SubRecord>,
    appends: VecDeque<PendingAppend>,
    append_bytes: usize,
    last_offset: Option<u64>,
    /// PINGs waiting for the appends before them (each: the first append id after the PING).
    pongs: VecDeque<u64>,
    next_append: u64,
    woken: Arc<WokenAppends>,
    woken_scratch: Vec<u64>,
    acks: VecDeque<PendingAck>,
    pings_out: u32,
    shutdown: CancellationToken,
}

impl Connection {
    fn verbose(&self) -> bool {
        self.connect.as_ref().is_some_and(|c| c.verbose)
    }

    fn ok(&self) {
        if self.verbose() {
            self.outbox.push_op(&ServerOp::Ok);
        }
    }

    /// Whether more input may be handled: not while the log holds many of this client's
    /// publishes, and not while the client does not read what it gets (bounded output).
    fn can_process(&self) -> bool {
        self.appends.len() < MAX_APPENDS_IN_FLIGHT
            && self.append_bytes < MAX_APPEND_BYTES_IN_FLIGHT
            && self.acks.len() < self.settings.max_inflight
            && self.outbox.pending() < self.outbox.max_pending
    }

    /// Moves output from the shared outbox into the socket buffer; reports a slow consumer.
    fn refill(&mut self) -> Result<(), Exit> {
        let mut state = self.outbox.lock();
        if state.slow {
            return Err(Exit::SlowConsumer);
        }
        if self.outbuf.is_empty() && !state.buf.is_empty() {
            self.outbuf = state.buf.split();
        }
        state.writing = self.outbuf.len();
        let finished = std::mem::take(&mut state.finished);
        drop(state);
        for sid in finished {
            self.remove_sub(&sid);
        }
        Ok(())
    }

    async fn serve_loop(&mut self) -> Exit {
        let ping_every = self.settings.ping_interval.0;
        let mut ping = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
        // Ticks missed while input was held back must not arrive as a burst of PINGs.
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let auth_deadline = Instant::now() + self.settings.auth_timeout.0;
        loop {
            if let Err(exit) = self.process_input() {
                return exit;
            }
            if let Err(exit) = self.refill() {
                return exit;
            }
            let can_read = self.can_process();
            let awaiting_auth = self.connect.is_none() && self.server.auth_required();
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => return Exit::Shutdown,
                () = poll_appends(&mut self.appends, &self.woken, &mut self.woken_scratch), if !self.appends.is_empty() => {
                    self.take_finished_appends();
                }
                durable = poll_front_ack(&mut self.acks), if !self.acks.is_empty() => {
                    self.send_front_ack(durable);
                }
                written = self.writer.write_buf(&mut self.outbuf), if !self.outbuf.is_empty() => {
                    if let Err(err) = written {
                        return Exit::Closed(format!("write failed: {err}"));
                    }
                }
                read = self.reader.read_buf(&mut self.inbuf), if can_read => match read {
                    Ok(0) => return Exit::Closed("connection closed by client".to_owned()),
                    Ok(_) => {}
                    Err(err) => return Exit::Closed(format!("read failed: {err}")),
                },
                _ = self.outbox.wake.notified() => {}
                _ = ping.tick(), if can_read => {
                    // Not while input is held back: the client's PONGs could not be read.
                    if self.pings_out >= self.settings.max_pings_out {
                        return self.error(ServerError::StaleConnection);
                    }
                    self.pings_out += 1;
                    self.outbox.push_op(&ServerOp::Ping);
                }
                _ = tokio::time::sleep_until(auth_deadline), if awaiting_auth => {
                    return self.error(ServerError::AuthenticationTimeout);
                }
            }
        }
    }

    /// Queues a session-level `-ERR`; returns the exit when it closes the connection.
    fn error(&self, err: ServerError) -> Exit {
        self.outbox.push_raw(err.err_line().as_bytes());
        Exit::Violation(err.err_message().into_owned())
    }

    /// Decodes and handles buffered ops while nothing holds input back.
    fn process_input(&mut self) -> Result<(), Exit> {
        while self.can_process() {
            match decode_client_op(&mut self.inbuf, &self.limits) {
                Ok(Some(op)) => self.handle(op)?,
                Ok(None) => return Ok(()),
                Err(err) => {
                    if let Some(line) = err.err_line() {
                        self.outbox.push_raw(line.as_bytes());
                    }
                    if err.closes_connection() {
                        return Err(Exit::Violation(err.to_string()));
                    }
                }
            }
        }
        Ok(())
    }

    fn handle(&mut self, op: ClientOp) -> Result<(), Exit> {
        if self.connect.is_none()
            && self.server.auth_required()
            && !matches!(op, ClientOp::Connect(_))
        {
            return Err(self.error(ServerError::AuthorizationViolation));
        }
        match op {
            ClientOp::Connect(connect) => self.on_connect(connect),
            ClientOp::Pub(publish) => self.on_pub(publish),
            ClientOp::Sub(sub) => {
                self.on_sub(sub);
                Ok(())
            }
            ClientOp::Unsub(unsub) => {
                self.on_unsub(unsub);
                Ok(())
            }
            ClientOp::Ping => {
                if self.appends.is_empty() {
                    self.outbox.push_op(&ServerOp::Pong);
                } else {
                    // PONG means "everything before the PING is done": routed publishes
                    // included, so a client's flush() returns once they are stored.
                    self.pongs.push_back(self.next_append);
                }
                Ok(())
            }
            ClientOp::Pong => {
                self.pings_out = 0;
                Ok(())
            }
        }
    }

    fn on_connect(&mut self, connect: Box<Connect>) -> Result<(), Exit> {
        if !self.server.authorize(
            connect.auth_token.as_deref(),
            connect.user.as_deref(),
            connect.pass.as_deref(),
        ) {
            tracing::info!(peer = %self.peer, user = ?connect.user, "NATS authorization failed");
            return Err(self.error(ServerError::AuthorizationViolation));
        }
        {
            let mut state = self.outbox.lock();
            state.echo = connect.echo;
            state.headers = connect.headers;
        }
        if let Some(name) = connect.name.as_deref().filter(|n| !n.is_empty()) {
            self.client_id = name.to_owned();
        }
        tracing::debug!(peer = %self.peer, client = %self.client_id, "NATS client connected");
        self.connect = Some(connect);
        self.ok();
        Ok(())
    }

    fn on_pub(&mut self, publish: Pub) -> Result<(), Exit> {
        NatsMetrics::inc(&self.server.metrics.received);
        let headers_ok = self.connect.as_ref().is_some_and(|c| c.headers);
        if publish.headers.is_some() && !headers_ok {
            // nats-server closes without -ERR on HPUB from a client that did not ask for headers.
            return Err(Exit::Violation(
                "HPUB without headers in CONNECT".to_owned(),
            ));
        }
        let pedantic = self.connect.as_ref().is_some_and(|c| c.pedantic);
        let valid = subject::validate_publish(&publish.subject).is_ok();
        if !valid && pedantic {
            self.outbox
                .push_raw(ServerError::InvalidPublishSubject.err_line().as_bytes());
            return Ok(());
        }
        let header_map = publish
            .headers
            .as_deref()
            .and_then(|h| HeaderMap::decode(h).ok());
        let stream = if valid {
            self.server.route_for(&publish.subject)
        } else {
            None
        };
        match stream {
            Some(stream) => self.routed_pub(publish, header_map, stream),
            None => {
                // nats-server acknowledges (+OK) before it delivers.
                self.ok();
                self.plain_pub(&publish, header_map.as_ref());
            }
        }
        Ok(())
    }

    /// A publish that is not stored: deliver, and answer "no responders" if asked and nobody got it.
    fn plain_pub(&mut self, publish: &Pub, headers: Option<&HeaderMap>) {
        let message = nats_message(
            &publish.subject,
            publish.reply.as_deref(),
            headers,
            publish.payload.clone(),
            Some(self.conn_key),
            0,
        );
        let delivered = match message {
            Some(message) => self.server.publish_local(&message).delivered,
            None => {
                NatsMetrics::inc(&self.server.metrics.unmappable);
                0
            }
        };
        let wants_503 = self
            .connect
            .as_ref()
            .is_some_and(|c| c.no_responders && c.headers);
        if delivered == 0
            && wants_503
            && let Some(reply) = publish.reply.as_deref()
        {
            self.no_responders(reply);
        }
    }

    /// nats-server's "no responders": an HMSG with status 503 to the requester's own
    /// subscriptions on the reply subject.
    fn no_responders(&self, reply: &str) {
        let mut block = BytesMut::new();
        HeaderMap::with_status(503, None).encode(&mut block);
        let mut state = self.outbox.lock();
        for record in self.subs.values() {
            if subject::matches(&record.subject, reply) {
                encode_msg(
                    &mut state.buf,
                    reply,
                    &record.mailbox.sid,
                    None,
                    Some(&block),
                    &[],
                );
            }
        }
        drop(state);
        self.outbox.wake.notify_one();
    }

    fn routed_pub(&mut self, publish: Pub, headers: Option<HeaderMap>, stream: String) {
        let msg_id = headers
            .as_ref()
            .and_then(|h| h.get(MSG_ID))
            .map(str::to_owned);
        if let Some(expected) = headers.as_ref().and_then(|h| h.get(EXPECTED_STREAM))
            && expected != stream
        {
            if let Some(reply) = publish.reply {
                let body = error_json(400, 10060, "expected stream does not match");
                self.queue_ready(reply, stream, body);
            }
            self.ok();
            return;
        }
        if let Some(id) = msg_id.as_deref() {
            let seen = self
                .server
                .dedup
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&stream, id, std::time::Instant::now());
            if let Some(seq) = seen {
                NatsMetrics::inc(&self.server.metrics.duplicates);
                if let Some(reply) = publish.reply {
                    let body = ack_json(&stream, seq, true);
                    self.queue_ready(reply, stream, body);
                }
                self.ok();
                return;
            }
        }
        // Subscribers get the message without the reply subject: that reply belongs to the
        // durable acknowledgement.
        let message = nats_message(
            &publish.subject,
            None,
            headers.as_ref(),
            publish.payload.clone(),
            Some(self.conn_key),
            1,
        );
        let record = NewRecord {
            timestamp_ms: now_ms(),
            source: Source::Nats,
            topic: publish.subject,
            client_id: self.client_id.clone(),
            headers: headers
                .as_ref()
                .map(|h| {
                    h.iter()
                        .map(|(k, v)| Header {
                            key: k.to_owned(),
                            value: Bytes::copy_from_slice(v.as_bytes()),
                        })
                        .collect()
                })
                .unwrap_or_default(),
            payload: publish.payload,
        };
        let log = self.server.log.clone();
        let bytes = record.payload.len()
            + record
                .headers
                .iter()
                .map(|h| h.key.len() + h.value.len())
                .sum::<usize>();
        self.append_bytes += bytes;
        let id = self.next_append;
        self.next_append += 1;
        self.woken.mark(id);
        self.appends.push_back(PendingAppend {
            bytes,
            state: AppendState::Running(Box::pin(tokio::task::unconstrained(async move {
                log.append(record).await
            }))),
            id,
            waker: std::task::Waker::from(Arc::new(AppendWaker {
                id,
                woken: Arc::clone(&self.woken),
            })),
            message,
            reply: publish.reply,
            stream,
            msg_id,
        });
        self.ok();
    }

    fn queue_ready(&mut self, reply: String, stream: String, body: Bytes) {
        self.acks.push_back(PendingAck {
            reply,
            stream,
            msg_id: None,
            outcome: AckOutcome::Ready(body),
        });
    }

    /// The log took (or refused) a routed publish: deliver it locally and queue its ack.
    fn on_appended(&mut self, pending: PendingAppend, appended: Result<Appended, AppendError>) {
        match appended {
            Ok(appended) => {
                if self.last_offset.is_some_and(|last| appended.offset < last) {
                    NatsMetrics::inc(&self.server.metrics.reordered);
                    tracing::warn!(client = %self.client_id, offset = appended.offset, "routed publish overtaken in the log by a later one of the same connection");
                }
                self.last_offset = Some(
                    self.last_offset
                        .map_or(appended.offset, |l| l.max(appended.offset)),
                );
                NatsMetrics::inc(&self.server.metrics.stored);
                if let Some(message) = &pending.message {
                    self.server.publish_local(message);
                }
                match pending.reply {
                    Some(reply) => self.acks.push_back(PendingAck {
                        reply,
                        stream: pending.stream,
                        msg_id: pending.msg_id,
                        outcome: AckOutcome::Durable(Box::pin(appended.durable())),
                    }),
                    None => {
                        // Nobody waits; the id is remembered now so a resend is not stored twice.
                        if let Some(id) = pending.msg_id {
                            self.server
                                .dedup
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .insert(
                                    &pending.stream,
                                    &id,
                                    appended.offset,
                                    std::time::Instant::now(),
                                );
                        }
                    }
                }
            }
            Err(err) => {
                NatsMetrics::inc(&self.server.metrics.refused);
                tracing::warn!(client = %self.client_id, "publish refused by the log: {err}");
                if let Some(reply) = pending.reply {
                    let code = if matches!(err, AppendError::TooLarge { .. }) {
                        400
                    } else {
                        503
                    };
                    let body = error_json(code, 10077, &err.to_string());
                    self.queue_ready(reply, pending.stream, body);
                }
            }
        }
    }

    /// The front reply is ready: publish it on its reply subject.
    fn send_front_ack(&mut self, durable: Option<Result<u64, AppendError>>) {
        let Some(ack) = self.acks.pop_front() else {
            return;
        };
        let body = match (ack.outcome, durable) {
            (AckOutcome::Ready(body), _) => body,
            (AckOutcome::Durable(_), Some(Ok(seq))) => {
                NatsMetrics::inc(&self.server.metrics.acks);
                if let Some(id) = ack.msg_id.as_deref() {
                    self.server
                        .dedup
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(&ack.stream, id, seq, std::time::Instant::now());
                }
                ack_json(&ack.stream, seq, false)
            }
            (AckOutcome::Durable(_), Some(Err(err))) => {
                // Written but never made durable (fsync failed): never acknowledge it.
                tracing::error!(client = %self.client_id, "publish not durable: {err}");
                NatsMetrics::inc(&self.server.metrics.refused);
                error_json(503, 10077, &err.to_string())
            }
            (AckOutcome::Durable(_), None) => return,
        };
        // Server-originated: delivered even to a publisher with echo off.
        if let Some(message) = nats_message(&ack.reply, None, None, body, None, 0) {
            self.server.publish_local(&message);
        } else {
            NatsMetrics::inc(&self.server.metrics.unmappable);
        }
    }

    fn on_sub(&mut self, sub: Sub) {
        if self.subs.contains_key(&sub.sid) {
            self.ok();
            return;
        }
        if self.subs.len() >= self.settings.max_subscriptions {
            self.outbox
                .push_raw(ServerError::MaxSubscriptionsExceeded.err_line().as_bytes());
            return;
        }
        let key = self.server.next_key();
        let mailbox = Arc::new(SubMailbox {
            outbox: Arc::clone(&self.outbox),
            sid: sub.sid.clone(),
            max: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
        });
        let filter = hub_filter(&sub.subject);
        match &filter {
            Some(filter) => {
                self.server.hub.subscribe(
                    filter,
                    sub.queue_group.as_deref(),
                    key,
                    SubEntry {
                        qos: 1,
                        no_local: false,
                        retain_as_published: false,
                        id: None,
                        mailbox: Arc::clone(&mailbox) as Arc<dyn Mailbox>,
                    },
                );
            }
            None => {
                NatsMetrics::inc(&self.server.metrics.unmappable);
                tracing::debug!(subject = %sub.subject, "NATS subscription has no MQTT equivalent; it receives nothing");
            }
        }
        self.subs.insert(
            sub.sid,
            SubRecord {
                key,
                subject: sub.subject,
                filter,
                group: sub.queue_group,
                mailbox,
            },
        );
        self.ok();
    }

    fn on_unsub(&mut self, unsub: Unsub) {
        if let Some(record) = self.subs.get(&unsub.sid) {
            match unsub.max_msgs {
                Some(max) if record.mailbox.delivered.load(Ordering::Relaxed) < max => {
                    record.mailbox.max.store(max, Ordering::Relaxed);
                }
                _ => self.remove_sub(&unsub.sid),
            }
        }
        self.ok();
    }

    fn remove_sub(&mut self, sid: &str) {
        if let Some(record) = self.subs.remove(sid)
            && let Some(filter) = &record.filter
        {
            self.server
                .hub
                .unsubscribe(filter, record.group.as_deref(), record.key);
        }
    }

    /// Ends the connection: last `-ERR`, flush, subscriptions out of the hub.
    /// Hands on finished appends in arrival order, then any PONG that waited for them.
    fn take_finished_appends(&mut self) {
        while let Some(front) = self.appends.front_mut() {
            let AppendState::Done(_) = front.state else {
                break;
            };
            let Some(mut pending) = self.appends.pop_front() else {
                break;
            };
            self.append_bytes -= pending.bytes;
            if let AppendState::Done(result) =
                std::mem::replace(&mut pending.state, AppendState::Taken)
            {
                self.on_appended(pending, result);
            }
        }
        let done_below = self.appends.front().map_or(self.next_append, |p| p.id);
        while self.pongs.front().is_some_and(|&after| after <= done_below) {
            self.pongs.pop_front();
            self.outbox.push_op(&ServerOp::Pong);
        }
    }

    async fn finish(mut self, exit: Exit) {
        // Publishes already read are stored (and delivered) even though the client is gone.
        if !self.appends.is_empty() {
            let drain = async {
                while !self.appends.is_empty() {
                    poll_appends(&mut self.appends, &self.woken, &mut self.woken_scratch).await;
                    self.take_finished_appends();
                }
            };
            if tokio::time::timeout(APPEND_DRAIN, drain).await.is_err() {
                tracing::warn!(client = %self.client_id, left = self.appends.len(), "routed publishes of a closed connection not stored in time");
            }
        }
        if matches!(exit, Exit::SlowConsumer) {
            let mut state = self.outbox.lock();
            // The backlog is dropped: the error goes out right after what is being written.
            state.buf.clear();
            state
                .buf
                .extend_from_slice(ServerError::SlowConsumer.err_line().as_bytes());
        }
        let sids: Vec<String> = self.subs.keys().cloned().collect();
        for sid in sids {
            self.remove_sub(&sid);
        }
        let rest = {
            let mut state = self.outbox.lock();
            state.closed = true;
            state.buf.split()
        };
        self.outbuf.unsplit(rest);
        crate::listener::flush_and_close(&mut self.writer, &mut self.outbuf, CLOSE_FLUSH).await;
        let metrics = &self.server.metrics;
        match &exit {
            Exit::Violation(why) => {
                NatsMetrics::inc(&metrics.protocol_errors);
                tracing::info!(peer = %self.peer, client = %self.client_id, "NATS client disconnected: {why}");
            }
            Exit::SlowConsumer => {
                NatsMetrics::inc(&metrics.slow_consumers);
                tracing::info!(peer = %self.peer, client = %self.client_id, "NATS client disconnected: slow consumer");
            }
            Exit::Closed(why) => {
                tracing::debug!(peer = %self.peer, client = %self.client_id, "NATS client gone: {why}")
            }
            Exit::Shutdown => {}
        }
        metrics.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A JetStream PubAck body. Stream names are Kafka topic names (`[A-Za-z0-9._-]`, validated
/// with the routes), so they need no JSON escaping.
fn ack_json(stream: &str, seq: u64, duplicate: bool) -> Bytes {
    let dup = if duplicate { ",\"duplicate\":true" } else { "" };
    Bytes::from(format!("{{\"stream\":\"{stream}\",\"seq\":{seq}{dup}}}"))
}

/// A JetStream API error body (nats clients raise it from `js.publish`).
fn error_json(code: u16, err_code: u32, description: &str) -> Bytes {
    Bytes::from(
        serde_json::json!({
            "error": { "code": code, "err_code": err_code, "description": description }
        })
        .to_string(),
    )
}

/// Drives the appends that made progress, oldest first (so they reach the log in arrival
/// order), and resolves once the oldest one has finished. Cancel-safe: results stay queued.
async fn poll_appends(
    appends: &mut VecDeque<PendingAppend>,
    woken: &WokenAppends,
    scratch: &mut Vec<u64>,
) {
    std::future::poll_fn(|cx| {
        {
            let mut state = woken.state.lock().unwrap_or_else(|p| p.into_inner());
            if !state.1.as_ref().is_some_and(|t| t.will_wake(cx.waker())) {
                state.1 = Some(cx.waker().clone());
            }
            std::mem::swap(&mut state.0, scratch);
        }
        scratch.sort_unstable();
        scratch.dedup();
        let first = appends.front().map_or(0, |p| p.id);
        for id in scratch.drain(..) {
            let Some(pending) = id
                .checked_sub(first)
                .and_then(|i| usize::try_from(i).ok())
                .and_then(|i| appends.get_mut(i))
            else {
                continue;
            };
            if let AppendState::Running(future) = &mut pending.state {
                let mut own = std::task::Context::from_waker(&pending.waker);
                if let Poll::Ready(result) = future.as_mut().poll(&mut own) {
                    pending.state = AppendState::Done(result);
                }
            }
        }
        match appends.front().map(|p| &p.state) {
            Some(AppendState::Done(_)) => Poll::Ready(()),
            _ => Poll::Pending,
        }
    })
    .await
}

/// Waits for the front reply to be ready (later ones wait their turn). `None` for a ready one.
async fn poll_front_ack(acks: &mut VecDeque<PendingAck>) -> Option<Result<u64, AppendError>> {
    std::future::poll_fn(|cx| match acks.front_mut().map(|a| &mut a.outcome) {
        Some(AckOutcome::Ready(_)) => Poll::Ready(None),
        Some(AckOutcome::Durable(future)) => future.as_mut().poll(cx).map(Some),
        None => Poll::Pending,
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_and_error_bodies_are_jetstream_shaped() {
        assert_eq!(
            &ack_json("edge", 5, false)[..],
            br#"{"stream":"edge","seq":5}"#
        );
        let dup: serde_json::Value = serde_json::from_slice(&ack_json("s", 1, true)).unwrap();
        assert_eq!(dup["duplicate"], true);
        let err: serde_json::Value =
            serde_json::from_slice(&error_json(503, 10077, "log full")).unwrap();
        assert_eq!(err["error"]["code"], 503);
        assert_eq!(err["error"]["description"], "log full");
    }
}
