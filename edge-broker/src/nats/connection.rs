//! One NATS client connection.
//!
//! Everything sent to the client (INFO, +OK, -ERR, PING/PONG, MSG/HMSG from the hub) goes
//! through one bounded [`Outbox`], so a subscriber's messages and the replies to its own ops
//! leave in the order they were produced. When the outbox would exceed `nats.max_pending`, the
//! subscriber is a slow consumer: it gets `-ERR 'Slow Consumer'` and is disconnected.
//!
//! Publishes go through [`crate::ingest`]: checked, routed, and (if a `[[route]]` takes them)
//! collected while a read buffer is decoded and handed to the log as one ordered batch by the
//! connection's [`IngestQueue`]. While the log holds a submission back (full under
//! `when_full = "block"`), or the connection's unsettled records or owed replies reach their
//! bounds, it stops reading, so the log pushes back through TCP, while output keeps flowing. A
//! routed message reaches local subscribers once it is written, and its PubAck goes to the
//! reply subject once it is durable; replies leave in the order the publishes came in, and a
//! PONG waits until the routed publishes before its PING are written.
//!
//! Generic over the byte stream: [`serve_stream`] serves the two halves of any connection
//! (plain TCP, TLS, or in tests an in-memory one); [`serve`] adds TCP's and TLS's setup.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use edge_log::{AppendError, Destination, Source};
use edge_proto::mqtt::QoS;
use edge_proto::nats::{
    ClientOp, Connect, HeaderMap, LastSubject, Limits, Pub, ServerError, ServerOp, Sub, Unsub,
    decode_client_op_reusing, encode_msg, subject,
};
use parking_lot::{Mutex, MutexGuard};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::server::{NatsServer, nats_message, nats_message_at};
use crate::admission::{Pending, Seat};
use crate::auth::acl::SubscribeVerdict;
use crate::hub::{Delivery, Mailbox, SubEntry};
use crate::ingest::{self, Answer, Event, IngestLimits, IngestQueue, Outcome, Publisher};
use crate::listener::{ReadBuffer, ReadHalf, WriteHalf, read_some};
use crate::message::{Message, now_ms};
use crate::metrics::front::{DropReason, inc};
use crate::router::Filter;

/// Bytes read from the socket at once (at most), by a client that sends bursts.
const READ_CHUNK: usize = 64 << 10;
/// The read buffer of a new or quiet connection: most gateway clients are idle most of the
/// time, and an idle connection keeps only this much (a burst grows it to [`READ_CHUNK`]).
const INITIAL_BUFFER: usize = 512;
/// How the read buffer is sized: [`INITIAL_BUFFER`] while quiet, [`READ_CHUNK`] in bursts.
const READ_BUFFER: ReadBuffer = ReadBuffer {
    initial: INITIAL_BUFFER,
    chunk: READ_CHUNK,
};
/// How long a closing connection waits for the log to take the publishes it already read.
const INGEST_DRAIN: Duration = Duration::from_secs(5);
/// How long a closing connection may take to flush its last bytes.
const CLOSE_FLUSH: Duration = Duration::from_secs(1);
/// Output buffer room kept once it is drained; beyond it the buffer is freed.
const KEEP_OUTPUT_CAPACITY: usize = 64 << 10;
/// Largest payload a connection may send before CONNECT: what it buffers before it said who it
/// is stays as small as a control line (nats-server's 4 KiB).
const PRE_CONNECT_PAYLOAD: usize = 4096;
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

/// What the connection and its subscriptions write to the client.
#[derive(Debug)]
pub struct Outbox {
    state: Mutex<OutState>,
    wake: Notify,
    max_pending: usize,
    /// `nats.max_pending_total`: output of all connections together.
    max_pending_total: u64,
    /// Hub key of the connection (publisher id, for `echo: false`).
    conn_key: u64,
    server: Arc<NatsServer>,
}

#[derive(Debug, Default)]
struct OutState {
    buf: BytesMut,
    /// Bytes taken out of `buf` and not yet written to the socket.
    writing: usize,
    /// What `buf` and `writing` were last charged to [`NatsServer::pending_bytes`].
    charged: usize,
    slow: bool,
    closed: bool,
    echo: bool,
    headers: bool,
    /// Subscriptions that reached their UNSUB max and must leave the hub.
    finished: Vec<String>,
}

impl Outbox {
    fn lock(&self) -> MutexGuard<'_, OutState> {
        self.state.lock()
    }

    /// Brings this outbox's share of the server's pending output up to date (under its lock).
    fn charge(&self, state: &mut OutState) {
        let now = state.buf.len() + state.writing;
        let total = &self.server.pending_bytes;
        if now >= state.charged {
            total.fetch_add((now - state.charged) as u64, Ordering::Relaxed);
        } else {
            total.fetch_sub((state.charged - now) as u64, Ordering::Relaxed);
        }
        state.charged = now;
    }

    /// Queues protocol output of the connection itself (not limited: it is small and paced
    /// by the client's own ops).
    fn push_op(&self, op: &ServerOp) {
        let mut state = self.lock();
        op.encode(&mut state.buf);
        self.charge(&mut state);
        drop(state);
        self.wake.notify_one();
    }

    /// Bytes waiting to be written to the client.
    fn pending(&self) -> usize {
        let state = self.lock();
        state.buf.len() + state.writing
    }

    fn push_raw(&self, bytes: &[u8]) {
        let mut state = self.lock();
        state.buf.extend_from_slice(bytes);
        self.charge(&mut state);
        drop(state);
        self.wake.notify_one();
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        let charged = self.state.get_mut().charged;
        self.server
            .pending_bytes
            .fetch_sub(charged as u64, Ordering::Relaxed);
    }
}

thread_local! {
    /// The NATS subject of the message being delivered (see [`SubMailbox::deliver`]).
    static SUBJECT_SCRATCH: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
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
        // The subject is mapped into a per-thread buffer: no allocation per delivery.
        SUBJECT_SCRATCH.with_borrow_mut(|subject| {
            if subject::mqtt_topic_to_nats_subject_into(&message.topic, subject).is_err() {
                server.metrics.dropped(DropReason::UnmappableSubject);
                return false;
            }
            let reply = message
                .properties
                .response_topic
                .as_deref()
                .and_then(|t| subject::mqtt_topic_to_nats_subject(t).ok());
            self.push_msg(
                subject,
                reply.as_deref(),
                &message.properties.user_properties,
                &message.payload,
                message.publisher,
            )
        })
    }
}

impl SubMailbox {
    /// Encodes one MSG/HMSG into the outbox, within the subscription's UNSUB max and the
    /// connection's output bound (beyond it the connection is a slow consumer).
    fn push_msg(
        &self,
        subject: &str,
        reply: Option<&str>,
        user_properties: &[(String, String)],
        payload: &[u8],
        publisher: Option<u64>,
    ) -> bool {
        let server = &self.outbox.server;
        let mut state = self.outbox.lock();
        if state.closed {
            return false;
        }
        if !state.echo && publisher == Some(self.outbox.conn_key) {
            return true;
        }
        let max = self.max.load(Ordering::Relaxed);
        let n = self.delivered.fetch_add(1, Ordering::Relaxed) + 1;
        if max > 0 && n > max {
            return false;
        }
        let headers = (state.headers && !user_properties.is_empty()).then(|| {
            let mut h = HeaderMap::new();
            for (k, v) in user_properties {
                h.append(k.as_str(), v.as_str());
            }
            let mut b = BytesMut::new();
            h.encode(&mut b);
            b
        });
        let size = subject.len()
            + self.sid.len()
            + reply.map_or(0, str::len)
            + headers.as_ref().map_or(0, |h| h.len())
            + payload.len()
            + 48;
        if state.buf.len() + state.writing + size > self.outbox.max_pending {
            state.slow = true;
            drop(state);
            server.metrics.dropped(DropReason::SlowConsumer);
            self.outbox.wake.notify_one();
            return false;
        }
        if server.pending_bytes.load(Ordering::Relaxed) + size as u64
            > self.outbox.max_pending_total
        {
            // All connections together hold nats.max_pending_total: this message is dropped
            // for this subscriber (it is not to blame for the others).
            drop(state);
            server.metrics.dropped(DropReason::PendingBudget);
            return false;
        }
        encode_msg(
            &mut state.buf,
            subject,
            &self.sid,
            reply,
            headers.as_deref(),
            payload,
        );
        self.outbox.charge(&mut state);
        if max > 0 && n == max {
            state.finished.push(self.sid.clone());
        }
        drop(state);
        server.metrics.sent(QoS::AtMostOnce);
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

/// What a routed publish carries to the moment the log wrote it.
struct Written {
    /// Delivered to local subscribers (`None`: nobody subscribed when it came in).
    message: Option<Arc<Message>>,
    /// A `Nats-Msg-Id` to remember once written, when nobody waits for a reply (a reply
    /// remembers it only once durable, so a duplicate is never acknowledged early).
    remember: Option<MsgId>,
}

/// A `Nats-Msg-Id` in the duplicate window of a stream.
struct MsgId {
    stream: Arc<str>,
    id: String,
}

/// A reply owed on a reply subject, in arrival order.
struct Reply {
    subject: String,
    body: ReplyBody,
}

enum ReplyBody {
    /// Known when the publish came in (duplicate, wrong stream).
    Given(Bytes),
    /// A PubAck once the record is durable (an error if it is refused or never durable).
    PubAck {
        stream: Arc<str>,
        msg_id: Option<String>,
    },
}

/// The connection's ingest queue.
type Ingest = IngestQueue<Written, Reply>;

/// Serves one TCP connection until it ends. With `tls`, INFO goes out in plain text (with
/// `tls_required`) and the rest of the connection runs over TLS, as with nats-server.
pub async fn serve(
    server: Arc<NatsServer>,
    mut stream: TcpStream,
    tls: Option<TlsAcceptor>,
    peer: SocketAddr,
    pending: Pending,
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let local = stream.local_addr().ok();
    let conn_key = server.next_key();
    let mut info = server.info(conn_key, peer, local);
    info.tls_required = tls.is_some();
    let info = ServerOp::Info(Box::new(info));
    let (halves, info) = match &tls {
        Some(acceptor) => {
            let mut out = BytesMut::new();
            info.encode(&mut out);
            if stream.write_all(&out).await.is_err() {
                return;
            }
            let deadline = server.settings().auth_timeout.0;
            let evicted = pending.eviction();
            // Boxed: the handshake's state lasts only as long as the handshake, while a task
            // is allocated at the size of its largest state.
            let handshake = tokio::select! {
                handshake = Box::pin(crate::listener::tls(acceptor, stream, deadline)) => handshake,
                _ = evicted.cancelled() => return,
            };
            match handshake {
                // INFO is sent: the TLS session starts with the client's CONNECT.
                Ok(halves) => (halves, None),
                Err(err) => {
                    inc(&server.metrics.tls_handshake_failures);
                    tracing::info!(%peer, "NATS: TLS handshake failed: {err}");
                    return;
                }
            }
        }
        None => (crate::listener::plain(stream), Some(info)),
    };
    run(server, halves, conn_key, info, peer, pending, shutdown).await;
}

/// Serves one client over an established byte stream (INFO first, no TLS upgrade) until it
/// ends. It holds its `pending` place until CONNECT logs it in, then takes a seat (or is
/// refused with `-ERR 'maximum connections exceeded'`).
pub async fn serve_stream(
    server: Arc<NatsServer>,
    halves: (ReadHalf, WriteHalf),
    peer: SocketAddr,
    pending: Pending,
    shutdown: CancellationToken,
) {
    let conn_key = server.next_key();
    let info = ServerOp::Info(Box::new(server.info(conn_key, peer, None)));
    run(
        server,
        halves,
        conn_key,
        Some(info),
        peer,
        pending,
        shutdown,
    )
    .await;
}

/// Runs a connection whose INFO is `info` (`None`: already sent).
async fn run(
    server: Arc<NatsServer>,
    (reader, writer): (ReadHalf, WriteHalf),
    conn_key: u64,
    info: Option<ServerOp>,
    peer: SocketAddr,
    pending: Pending,
    shutdown: CancellationToken,
) {
    let settings = server.settings();
    let outbox = Arc::new(Outbox {
        state: Mutex::new(OutState {
            echo: true,
            ..OutState::default()
        }),
        wake: Notify::new(),
        max_pending: settings.max_pending.bytes() as usize,
        max_pending_total: settings.max_pending_total.bytes(),
        conn_key,
        server: Arc::clone(&server),
    });
    if let Some(info) = &info {
        outbox.push_op(info);
    }
    server.metrics.connected(1);
    let client_id: Arc<str> = format!("nats-{}", conn_key - super::server::NATS_KEY_BASE).into();
    let permissions = server.auth.permissions(
        crate::auth::Protocol::Nats,
        crate::auth::Identity {
            user: None,
            client_id: Arc::clone(&client_id),
        },
    );
    // Boxed: the task's future then holds a pointer, not the connection (by value, `finish`
    // taking `self` would keep it twice more).
    let mut connection = Box::new(Connection {
        limits: Limits {
            // Until CONNECT, a payload no larger than a control line (see `seat`).
            max_payload: (settings.max_payload.bytes() as usize).min(PRE_CONNECT_PAYLOAD),
            ..Limits::default()
        },
        ingest: Box::new(
            IngestQueue::new(
                server.log.clone(),
                IngestLimits {
                    max_answers: settings.max_inflight,
                    ..IngestLimits::default()
                },
            )
            .measure_acks(Arc::clone(&server.metrics.ack_latency)),
        ),
        settings,
        server,
        outbox,
        peer,
        conn_key,
        reader,
        writer,
        inbuf: BytesMut::new(),
        read_burst: false,
        outbuf: BytesMut::new(),
        connect: None,
        client_id,
        subs: HashMap::new(),
        pongs: VecDeque::new(),
        last_subject: LastSubject::default(),
        subject_facts: None,
        ack_bodies: BytesMut::new(),
        pending_connect: None,
        permissions,
        pings_out: 0,
        now_ms: now_ms(),
        clock_stale: true,
        shutdown,
        evict: pending.eviction(),
        admitted: Admitted::Pending(Some(pending)),
    });
    let exit = connection.serve_loop().await;
    connection.finish(exit).await;
}

/// Where a connection stands with [`crate::admission`].
#[derive(Debug)]
enum Admitted {
    /// No CONNECT yet: a pending place (taken by `seat`).
    Pending(Option<Pending>),
    /// Logged in: a seat among `nats.max_connections`.
    Seated {
        /// Given back when the connection ends.
        _seat: Seat,
    },
}

struct Connection {
    server: Arc<NatsServer>,
    /// The `[nats]` limits this connection started with (a reload affects later connections).
    settings: Arc<crate::config::NatsSection>,
    outbox: Arc<Outbox>,
    peer: SocketAddr,
    conn_key: u64,
    reader: ReadHalf,
    writer: WriteHalf,
    inbuf: BytesMut,
    /// The last read filled the buffer's room or was not small: the client sends bursts, so
    /// it reads in [`READ_CHUNK`]s; otherwise its buffer stays at [`INITIAL_BUFFER`].
    read_burst: bool,
    outbuf: BytesMut,
    limits: Limits,
    connect: Option<Box<Connect>>,
    client_id: Arc<str>,
    subs: HashMap<String, SubRecord>,
    /// Routed publishes on their way to the log, and the replies owed (boxed: the connection
    /// future holds the connection several times over).
    ingest: Box<Ingest>,
    /// PINGs waiting for the routed publishes before them (each: the ingest mark at the PING).
    pongs: VecDeque<u64>,
    /// The last PUB subject the decoder handed out (shared while it repeats).
    last_subject: LastSubject,
    /// What was decided for the last PUB subject (reused while the subject repeats).
    subject_facts: Option<SubjectFacts>,
    /// PubAck bodies are split off this buffer (one allocation for many).
    ack_bodies: BytesMut,
    /// A CONNECT waiting for [`crate::auth::Auth::login`] (nothing else is read meanwhile).
    pending_connect: Option<Box<Connect>>,
    /// What this client may publish and subscribe to (anonymous until CONNECT logs in).
    permissions: crate::auth::Permissions,
    pings_out: u32,
    /// Wall clock (unix ms) read once per read buffer: routed records' ingest time.
    now_ms: u64,
    /// `now_ms` is from an earlier read buffer.
    clock_stale: bool,
    shutdown: CancellationToken,
    /// The pending place before CONNECT, the seat after.
    admitted: Admitted,
    /// Cancelled when the connection is evicted before CONNECT (`max_pending_connections`).
    evict: CancellationToken,
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
        !self.ingest.holds_input()
            && self.outbox.pending() < self.outbox.max_pending
            && self.pending_connect.is_none()
    }

    /// Moves output from the shared outbox into the socket buffer; reports a slow consumer.
    fn refill(&mut self) -> Result<(), Exit> {
        let mut state = self.outbox.lock();
        if state.slow {
            return Err(Exit::SlowConsumer);
        }
        if self.outbuf.is_empty() && !state.buf.is_empty() {
            // Swap rather than split: the drained buffer keeps its allocation for the next
            // round of output.
            std::mem::swap(&mut self.outbuf, &mut state.buf);
        }
        state.writing = self.outbuf.len();
        self.outbox.charge(&mut state);
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
            if let Some(connect) = self.pending_connect.take() {
                // Boxed: the login's state is needed once, the loop's for the connection's life.
                if let Err(exit) = Box::pin(self.login(connect)).await {
                    return exit;
                }
                continue;
            }
            if let Err(exit) = self.refill() {
                return exit;
            }
            let can_read = self.can_process();
            if can_read {
                if self.inbuf.is_empty() && !self.read_burst {
                    // Quiet and drained: wait for bytes without a buffer (`read_some` takes
                    // one when bytes are there), as MQTT connections do.
                    self.inbuf = BytesMut::new();
                } else {
                    // A client sending bursts reads big chunks (a whole client write becomes
                    // one batch for the log); a quiet one keeps a small buffer.
                    READ_BUFFER.prepare(&mut self.inbuf, self.read_burst);
                }
            }
            // Every connection must send CONNECT in time, with or without credentials to check:
            // one that does not holds a pending place and its buffers for nothing.
            let awaiting_auth = self.connect.is_none();
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => return Exit::Shutdown,
                () = self.ingest.progress(), if self.ingest.is_busy() => self.take_ingest(),
                written = self.writer.write_buf(&mut self.outbuf), if !self.outbuf.is_empty() => {
                    if let Err(err) = written {
                        return Exit::Closed(format!("write failed: {err}"));
                    }
                    if self.outbuf.is_empty() && self.outbuf.capacity() > KEEP_OUTPUT_CAPACITY {
                        // A burst grew it: give the memory back rather than keep it for a
                        // connection that may stay quiet (nats.max_pending_total counts bytes
                        // waiting, not room).
                        self.outbuf = BytesMut::new();
                    }
                }
                read = read_some(&mut self.reader, &mut self.inbuf, &READ_BUFFER, self.read_burst), if can_read => match read {
                    Ok((0, _)) => return Exit::Closed("connection closed by client".to_owned()),
                    Ok((n, room)) => self.read_burst = READ_BUFFER.is_burst(n, room),
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
                _ = self.evict.cancelled(), if awaiting_auth => {
                    return Exit::Closed("evicted before CONNECT: nats.max_pending_connections reached".to_owned());
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

    /// Decodes and handles buffered ops while nothing holds input back. Routed publishes are
    /// collected into one batch, handed to the log when the buffer is drained (or the batch is
    /// full).
    fn process_input(&mut self) -> Result<(), Exit> {
        let result = self.decode_input();
        self.ingest.submit();
        self.take_ingest();
        result
    }

    fn decode_input(&mut self) -> Result<(), Exit> {
        // Read the clock once per buffer, and only if it holds a routed publish.
        self.clock_stale = true;
        while self.can_process() {
            match decode_client_op_reusing(&mut self.inbuf, &self.limits, &mut self.last_subject) {
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
                if self.ingest.all_written() {
                    self.outbox.push_op(&ServerOp::Pong);
                } else {
                    // PONG means "everything before the PING is done": routed publishes
                    // included, so a client's flush() returns once they are stored.
                    self.pongs.push_back(self.ingest.mark());
                }
                Ok(())
            }
            ClientOp::Pong => {
                self.pings_out = 0;
                Ok(())
            }
        }
    }

    /// CONNECT: logged in by the serve loop (it may wait: failed logins are delayed).
    fn on_connect(&mut self, connect: Box<Connect>) -> Result<(), Exit> {
        self.pending_connect = Some(connect);
        Ok(())
    }

    async fn login(&mut self, connect: Box<Connect>) -> Result<(), Exit> {
        let credentials = crate::auth::Credentials {
            user: connect.user.clone(),
            password: connect.pass.clone().map(String::into_bytes),
            token: connect.auth_token.clone(),
            ..Default::default()
        };
        let auth = Arc::clone(&self.server.auth);
        let login = auth.login(crate::auth::Protocol::Nats, self.peer.ip(), credentials);
        let user = match login.await {
            Ok(user) => user,
            Err(why) => {
                tracing::info!(peer = %self.peer, user = ?connect.user, "NATS authorization failed: {why}");
                return Err(self.error(ServerError::AuthorizationViolation));
            }
        };
        self.seat()?;
        {
            let mut state = self.outbox.lock();
            state.echo = connect.echo;
            state.headers = connect.headers;
        }
        if let Some(name) = connect.name.as_deref().filter(|n| !n.is_empty()) {
            self.client_id = name.into();
            // The route key may depend on the client id.
            self.subject_facts = None;
        }
        self.permissions = auth.permissions(
            crate::auth::Protocol::Nats,
            crate::auth::Identity {
                user,
                client_id: Arc::clone(&self.client_id),
            },
        );
        tracing::debug!(peer = %self.peer, client = %self.client_id, "NATS client connected");
        self.connect = Some(connect);
        self.ok();
        Ok(())
    }

    /// After a successful login: trades the pending place for a seat (or refuses the client,
    /// `max_connections`) and lifts the small pre-CONNECT payload limit.
    fn seat(&mut self) -> Result<(), Exit> {
        if let Admitted::Pending(pending) = &mut self.admitted
            && let Some(pending) = pending.take()
        {
            match pending.seat() {
                Ok(seat) => self.admitted = Admitted::Seated { _seat: seat },
                Err(refusal) => {
                    tracing::warn!(peer = %self.peer, "refusing NATS client: nats.{}", refusal.key());
                    return Err(self.error(ServerError::MaxConnectionsExceeded));
                }
            }
        }
        self.limits.max_payload = self.settings.max_payload.bytes() as usize;
        Ok(())
    }

    fn on_pub(&mut self, publish: Pub) -> Result<(), Exit> {
        self.server.metrics.received(QoS::AtMostOnce);
        let headers_ok = self.connect.as_ref().is_some_and(|c| c.headers);
        if publish.headers.is_some() && !headers_ok {
            // nats-server closes without -ERR on HPUB from a client that did not ask for headers.
            return Err(Exit::Violation(
                "HPUB without headers in CONNECT".to_owned(),
            ));
        }
        // One test per PUB: the decoder hands out the same `Arc` while the subject repeats, and
        // what depends on the subject alone was decided for it already.
        let facts = match &mut self.subject_facts {
            Some(facts) if Arc::ptr_eq(&facts.subject, &publish.subject) => facts,
            facts => facts.insert(SubjectFacts::of(&publish.subject)),
        };
        let pedantic = self.connect.as_ref().is_some_and(|c| c.pedantic);
        let valid = facts.valid;
        if !valid && pedantic {
            self.outbox
                .push_raw(ServerError::InvalidPublishSubject.err_line().as_bytes());
            return Ok(());
        }
        let mut publisher = Publisher {
            source: Source::Nats,
            client_id: &self.client_id,
            permissions: Some(&mut self.permissions),
        };
        let checked = match &facts.reserved {
            Some(denied) => Err(denied.clone()),
            None => ingest::check_permitted(&mut publisher, &publish.subject),
        };
        if let Err(denied) = checked {
            // As nats-server for a subject outside the publish permissions: -ERR, no +OK, the
            // connection stays; nothing is stored or delivered.
            self.server.metrics.denied(&denied);
            tracing::debug!(client = %self.client_id, "publish denied: {denied}");
            self.outbox.push_raw(
                ServerError::PublishPermissionViolation(publish.subject.to_string())
                    .err_line()
                    .as_bytes(),
            );
            return Ok(());
        }
        let header_map = publish
            .headers
            .as_deref()
            .and_then(|h| HeaderMap::decode(h).ok());
        let destination = if valid {
            self.destination(&publish.subject)
        } else {
            None
        };
        match destination {
            Some(destination) => self.routed_pub(publish, header_map, destination),
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
            QoS::AtMostOnce,
        );
        let delivered = match message {
            Some(message) => self.server.publish_local(&message).delivered,
            None => {
                self.server.metrics.dropped(DropReason::UnmappableSubject);
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

    /// Where a publish on `subject` (the last PUB's, in [`SubjectFacts`]) goes upstream, if it
    /// is stored (kept while the route table stays the same: publishers tend to repeat the
    /// subject; the key may depend on the client id, so CONNECT forgets it).
    fn destination(&mut self, subject: &str) -> Option<Destination> {
        let generation = self.server.routes.generation();
        if let Some(facts) = &self.subject_facts
            && let Some((g, destination)) = &facts.route
            && *g == generation
        {
            return destination.clone();
        }
        let destination = self.server.destination(subject, &self.client_id);
        if let Some(facts) = &mut self.subject_facts {
            facts.route = Some((generation, destination.clone()));
        }
        destination
    }

    /// Whether a publish on `subject` (the last PUB's) would reach a local subscriber (kept
    /// while the hub's subscriptions stay the same). Routed publishes nobody subscribes to are
    /// stored without building a message for local delivery.
    fn has_local_subscribers(&mut self, subject: &str) -> bool {
        let hub = &self.server.hub;
        let generation = hub.generation();
        if let Some(facts) = &self.subject_facts
            && let Some((g, any)) = facts.local
            && g == generation
        {
            return any;
        }
        let any = subject::nats_subject_to_mqtt_topic(subject)
            .is_ok_and(|topic| hub.has_subscribers(&topic));
        if let Some(facts) = &mut self.subject_facts {
            facts.local = Some((generation, any));
        }
        any
    }

    fn routed_pub(&mut self, publish: Pub, headers: Option<HeaderMap>, destination: Destination) {
        let stream = Arc::clone(&destination.topic);
        let msg_id = headers
            .as_ref()
            .and_then(|h| h.get(MSG_ID))
            .map(str::to_owned);
        if let Some(expected) = headers.as_ref().and_then(|h| h.get(EXPECTED_STREAM))
            && expected != &*stream
        {
            if let Some(reply) = publish.reply {
                let body = error_json(400, 10060, "expected stream does not match");
                self.give_reply(reply, body);
            }
            self.ok();
            return;
        }
        if let Some(id) = msg_id.as_deref() {
            let seen = self
                .server
                .dedup
                .lock()
                .get(&stream, id, std::time::Instant::now());
            if let Some(seq) = seen {
                inc(&self.server.metrics.duplicates);
                if let Some(reply) = publish.reply {
                    let body = ack_json(&stream, seq, true);
                    self.give_reply(reply, body);
                }
                self.ok();
                return;
            }
        }
        // Subscribers get the message without the reply subject: that reply belongs to the
        // durable acknowledgement.
        if self.clock_stale {
            self.now_ms = now_ms();
            self.clock_stale = false;
        }
        let message = if self.has_local_subscribers(&publish.subject) {
            nats_message_at(
                &publish.subject,
                None,
                headers.as_ref(),
                publish.payload.clone(),
                Some(self.conn_key),
                QoS::AtLeastOnce,
                self.now_ms,
            )
        } else {
            None
        };
        let record = ingest::record::nats(
            publish.subject,
            Arc::clone(&self.client_id),
            headers.as_ref(),
            publish.payload,
            self.now_ms,
            destination,
        );
        let (remember, reply) = match publish.reply {
            Some(subject) => (
                None,
                Some(Reply {
                    subject,
                    body: ReplyBody::PubAck { stream, msg_id },
                }),
            ),
            None => (msg_id.map(|id| MsgId { stream, id }), None),
        };
        self.ingest
            .push_routed(record, Written { message, remember }, reply);
        self.ok();
    }

    /// Queues a reply known now; it leaves after the replies before it.
    fn give_reply(&mut self, subject: String, body: Bytes) {
        self.ingest.push_answer(Reply {
            subject,
            body: ReplyBody::Given(body),
        });
    }

    /// Takes what the ingest queue has ready: routed publishes the log wrote reach local
    /// subscribers (refusals are counted), PONGs whose publishes are written go out, then the
    /// replies that are due, in order.
    fn take_ingest(&mut self) {
        let server = Arc::clone(&self.server);
        let metrics = &server.metrics;
        while let Some(event) = self.ingest.next_event() {
            match event {
                Event::Written { local, offset } => {
                    inc(&metrics.stored);
                    if let Some(message) = &local.message {
                        server.publish_local(message);
                    }
                    if let Some(MsgId { stream, id }) = &local.remember {
                        // Nobody waits; the id is remembered now so a resend is not stored twice.
                        server
                            .dedup
                            .lock()
                            .insert(stream, id, offset, std::time::Instant::now());
                    }
                }
                Event::Refused { error, .. } => {
                    inc(&metrics.refused);
                    tracing::warn!(client = %self.client_id, "publish refused by the log: {error}");
                }
            }
        }
        while self
            .pongs
            .front()
            .is_some_and(|&mark| self.ingest.written_through(mark))
        {
            self.pongs.pop_front();
            self.outbox.push_op(&ServerOp::Pong);
        }
        while let Some(answer) = self.ingest.next_answer() {
            self.send_reply(answer);
        }
    }

    /// Publishes a reply that is due on its reply subject.
    fn send_reply(&mut self, answer: Answer<Reply>) {
        let Reply { subject, body } = answer.tag;
        let body = match (body, answer.outcome) {
            (ReplyBody::Given(body), _) => body,
            (ReplyBody::PubAck { stream, msg_id }, Outcome::Durable(seq)) => {
                inc(&self.server.metrics.acks);
                if let Some(id) = msg_id.as_deref() {
                    self.server
                        .dedup
                        .lock()
                        .insert(&stream, id, seq, std::time::Instant::now());
                }
                // PubAck bodies share one allocation, split off per reply.
                if self.ack_bodies.capacity() < ACK_BODY_ESTIMATE {
                    self.ack_bodies.reserve(ACK_BODY_ESTIMATE * 256);
                }
                write_ack_json(&mut self.ack_bodies, &stream, seq);
                self.ack_bodies.split().freeze()
            }
            (ReplyBody::PubAck { .. }, Outcome::Refused(error)) => {
                let code = if matches!(error, AppendError::TooLarge { .. }) {
                    400
                } else {
                    503
                };
                error_json(code, 10077, &error.to_string())
            }
            (ReplyBody::PubAck { .. }, Outcome::NotDurable(error)) => {
                // Written but never made durable (fsync failed): never acknowledge it.
                tracing::error!(client = %self.client_id, "publish not durable: {error}");
                inc(&self.server.metrics.refused);
                error_json(503, 10077, &error.to_string())
            }
            // A PubAck is settled by the log, never given.
            (ReplyBody::PubAck { .. }, Outcome::Given) => return,
        };
        // Server-originated (no publisher): delivered even to a publisher with echo off.
        if let Some(message) = nats_message_at(
            &subject,
            None,
            None,
            body,
            None,
            QoS::AtMostOnce,
            self.now_ms,
        ) {
            self.server.publish_local(&message);
        } else {
            self.server.metrics.dropped(DropReason::UnmappableSubject);
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
        if sub.subject.bytes().filter(|&b| b == b'.').count() >= self.settings.max_subject_tokens {
            self.outbox
                .push_raw(ServerError::InvalidSubject.err_line().as_bytes());
            return;
        }
        // Permissions are checked on the MQTT filter the subject maps to.
        let filter_text = super::server::hub_filter_text(&sub.subject);
        if let Some(text) = &filter_text
            && self.permissions.subscribe(text) == SubscribeVerdict::Denied
        {
            let err = ServerError::SubscribePermissionViolation(sub.subject.clone());
            self.outbox.push_raw(err.err_line().as_bytes());
            return;
        }
        let filter = filter_text
            .as_deref()
            .and_then(|text| Filter::mqtt(text).ok().map(|f| (f, text)));
        let key = self.server.next_key();
        let mailbox = Arc::new(SubMailbox {
            outbox: Arc::clone(&self.outbox),
            sid: sub.sid.clone(),
            max: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
        });
        match &filter {
            Some((filter, text)) => {
                self.server.hub.subscribe(
                    filter,
                    sub.queue_group.as_deref(),
                    key,
                    SubEntry {
                        qos: QoS::AtLeastOnce,
                        no_local: false,
                        retain_as_published: false,
                        id: None,
                        mailbox: self
                            .permissions
                            .guard(text, Arc::clone(&mailbox) as Arc<dyn Mailbox>),
                    },
                );
            }
            None => {
                self.server.metrics.dropped(DropReason::UnmappableSubject);
                tracing::debug!(subject = %sub.subject, "NATS subscription has no MQTT equivalent; it receives nothing");
            }
        }
        self.subs.insert(
            sub.sid,
            SubRecord {
                key,
                subject: sub.subject,
                filter: filter.map(|(filter, _)| filter),
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
    async fn finish(mut self: Box<Self>, exit: Exit) {
        // Publishes already read are stored (and delivered) even though the client is gone.
        self.ingest.submit();
        let drain = async {
            while !self.ingest.all_written() && self.ingest.is_busy() {
                self.ingest.progress().await;
                self.take_ingest();
            }
        };
        if tokio::time::timeout(INGEST_DRAIN, drain).await.is_err() {
            tracing::warn!(client = %self.client_id, "routed publishes of a closed connection not stored in time");
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
                inc(&metrics.protocol_errors);
                if self.connect.is_some() {
                    tracing::info!(peer = %self.peer, client = %self.client_id, "NATS client disconnected: {why}")
                } else {
                    tracing::debug!(peer = %self.peer, "NATS connection closed before CONNECT (a port probe?): {why}")
                }
            }
            Exit::SlowConsumer => {
                inc(&metrics.slow_consumers);
                tracing::info!(peer = %self.peer, client = %self.client_id, "NATS client disconnected: slow consumer");
            }
            Exit::Closed(why) => {
                tracing::debug!(peer = %self.peer, client = %self.client_id, "NATS client gone: {why}")
            }
            Exit::Shutdown => {}
        }
        metrics.connected(-1);
    }
}

/// A JetStream PubAck body. Stream names are Kafka topic names (`[A-Za-z0-9._-]`, validated
/// with the routes), so they need no JSON escaping.
fn ack_json(stream: &str, seq: u64, duplicate: bool) -> Bytes {
    let dup = if duplicate { ",\"duplicate\":true" } else { "" };
    Bytes::from(format!("{{\"stream\":\"{stream}\",\"seq\":{seq}{dup}}}"))
}

/// Typical PubAck body length (`{"stream":"<name>","seq":<offset>}`) for reserving room.
const ACK_BODY_ESTIMATE: usize = 48;

/// Writes `{"stream":"<stream>","seq":<seq>}` (the hot path: no formatting machinery).
fn write_ack_json(out: &mut BytesMut, stream: &str, seq: u64) {
    out.extend_from_slice(b"{\"stream\":\"");
    out.extend_from_slice(stream.as_bytes());
    out.extend_from_slice(b"\",\"seq\":");
    let mut digits = [0u8; 20];
    let mut n = seq;
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
    out.extend_from_slice(b"}");
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

/// What a connection decided for the subject of its last PUB: everything that depends on the
/// subject alone (or on it and a generation), so a PUB repeating the subject costs one pointer
/// test ([`Arc::ptr_eq`] with the decoder's shared subject) instead of validating, splitting
/// and comparing the subject for each decision.
#[derive(Debug)]
struct SubjectFacts {
    /// The subject, as the decoder shares it.
    subject: Arc<str>,
    /// It is a valid publish subject (no wildcards, no empty tokens).
    valid: bool,
    /// Refused by the rule that needs no configuration (`$SYS`, `$share`); the ACL is asked
    /// for every PUB.
    reserved: Option<ingest::Denied>,
    /// Where it goes upstream, for a route table generation.
    route: Option<(u64, Option<Destination>)>,
    /// Whether a local subscriber would get it, for a hub generation.
    local: Option<(u64, bool)>,
}

impl SubjectFacts {
    fn of(subject: &Arc<str>) -> SubjectFacts {
        SubjectFacts {
            subject: Arc::clone(subject),
            valid: subject::validate_publish(subject).is_ok(),
            reserved: ingest::check_reserved(Source::Nats, subject).err(),
            route: None,
            local: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_ack_body_equals_the_formatted_one() {
        let mut out = BytesMut::new();
        for seq in [0, 7, 10, 99, 12345, u64::MAX] {
            write_ack_json(&mut out, "bench-x", seq);
            assert_eq!(out.split().freeze(), ack_json("bench-x", seq, false));
        }
    }

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
