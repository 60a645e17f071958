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
//!
//! Rooms of the connection, from the top; each imports only rooms below it:
//! - this file: setup ([`serve`], [`serve_stream`]), the serve loop (read, decode, write,
//!   PING), dispatch of client ops, and the end of the connection → every room below;
//! - `login`: CONNECT, credentials, and trading the pending place for a seat → `state`;
//! - `publish`: PUB/HPUB: the ACL check, local delivery of plain publishes, routed publishes
//!   into the ingest queue → `settle` (replies known at once, their JSON bodies), `state`,
//!   `facts`;
//! - `settle`: what comes back from the log: local delivery once written, PONGs, PubAcks and
//!   other replies in order (and their JSON bodies) → `state`, `outbox`;
//! - `subscribe`: SUB/UNSUB and the hub subscriptions they make → `state`, `outbox`;
//! - `state`: the `Connection` every room works on (each adds an
//!   `impl Connection` of its own), why it ends, `+OK` and `-ERR`, and the records its fields
//!   keep (subscriptions, admission, ingest tags, reply routes) → `facts`, `outbox`;
//! - `facts`: what was decided for the subject of the last PUB, kept while it repeats;
//! - `outbox`: the bounded output shared with the connection's subscriptions ([`Outbox`],
//!   the hub mailbox that encodes MSG/HMSG).
//!
//! Rooms that need the server's shared state read it from [`super::server`]; none imports
//! [`super::listen`], which spawns connections.

mod facts;
mod login;
mod outbox;
mod publish;
mod settle;
mod state;
mod subscribe;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use bytes::BytesMut;
use edge_proto::mqtt::QoS;
use edge_proto::nats::{
    ClientOp, LastSubject, Limits, ServerError, ServerOp, decode_client_op_reusing,
};
use parking_lot::Mutex;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::server::NatsServer;
use crate::admission::Pending;
use crate::ingest::{IngestLimits, IngestQueue};
use crate::input_pool::InputLease;
use crate::listener::{ReadBuffer, ReadHalf, WriteHalf, read_some};
use crate::message::now_ms;
use crate::metrics::front::inc;
use outbox::OutState;
pub use outbox::Outbox;
use state::{Admitted, Connection, Exit};

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
        pending: AtomicUsize::new(0),
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
        large_input: InputLease::default(),
        outbuf: BytesMut::new(),
        connect: None,
        client_id,
        subs: HashMap::new(),
        pongs: VecDeque::new(),
        last_subject: LastSubject::default(),
        subject_facts: None,
        last_pub_replied: false,
        reply_route: None,
        reply_text: String::new(),
        logins: 0,
        ack_bodies: BytesMut::new(),
        pending_connect: None,
        permissions,
        pings_out: 0,
        received: 0,
        now_ms: now_ms(),
        clock_stale: true,
        shutdown,
        evict: pending.eviction(),
        admitted: Admitted::Pending(Some(pending)),
    });
    let exit = connection.serve_loop().await;
    connection.finish(exit).await;
}
impl Connection {
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
                } else if !self.large_input.is_held() {
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

    /// Decodes and handles buffered ops while nothing holds input back. Routed publishes are
    /// collected into one batch, handed to the log when the buffer is drained (or the batch is
    /// full).
    fn process_input(&mut self) -> Result<(), Exit> {
        let result = self.decode_input();
        // Counted once per buffer: the count is right at every scrape after the buffer.
        let received = std::mem::take(&mut self.received);
        self.server.metrics.received_many(QoS::AtMostOnce, received);
        self.ingest.submit();
        self.take_ingest();
        result
    }

    fn decode_input(&mut self) -> Result<(), Exit> {
        // Read the clock once per buffer, and only if it holds a routed publish.
        self.clock_stale = true;
        // A large PUB now whole is the first to be decoded: its lease goes with it.
        let mut arriving = self.large_input.take_whole(self.inbuf.len());
        let pushed = self.ingest.pushed();
        while self.can_process() {
            if self.store_repeated_pub() {
                if arriving.is_held() {
                    let lease = std::mem::take(&mut arriving);
                    self.ingest.keep_until_written(lease, pushed);
                }
                continue;
            }
            match decode_client_op_reusing(&mut self.inbuf, &self.limits, &mut self.last_subject) {
                Ok(Some(op)) => {
                    self.handle(op)?;
                    if arriving.is_held() {
                        let lease = std::mem::take(&mut arriving);
                        self.ingest.keep_until_written(lease, pushed);
                    }
                }
                Ok(None) => return self.lease_awaited_op(),
                Err(err) => {
                    // The op was consumed (or the connection closes): its lease, if any, too.
                    arriving = InputLease::default();
                    if let Some(line) = err.err_line() {
                        self.outbox.push_raw(line.as_bytes());
                    }
                    if err.closes_connection() {
                        return Err(Exit::Violation(err.to_string()));
                    }
                }
            }
        }
        if arriving.is_held() {
            // Input held back before it was decoded: the lease stays with its op.
            self.large_input = arriving;
        }
        Ok(())
    }

    /// Once decoding waits for the rest of a PUB larger than a read: its lease from
    /// `nats.max_partial_packet_bytes_total`, taken before its bytes come, or the connection
    /// is refused ([`crate::input_pool`]).
    fn lease_awaited_op(&mut self) -> Result<(), Exit> {
        // While it holds at most a quarter of a read, the buffer does not grow beyond one
        // (`ReadBuffer::prepare`): only a fuller one is looked at (its line scanned again).
        let awaited = (self.inbuf.len() > READ_CHUNK / 4)
            .then(|| edge_proto::nats::awaited_op_len(&self.inbuf, &self.limits))
            .flatten();
        self.large_input
            .cover(
                &self.server.input_pool,
                &mut self.inbuf,
                awaited,
                READ_CHUNK,
            )
            .map_err(|refused| {
                inc(&self.server.metrics.partial_refused);
                Exit::Busy(refused.to_string())
            })
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
            Exit::Busy(why) => {
                tracing::info!(peer = %self.peer, client = %self.client_id, "NATS client disconnected: {why}")
            }
            Exit::Shutdown => {}
        }
        metrics.connected(-1);
    }
}
