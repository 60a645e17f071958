//! One MQTT client connection: CONNECT, the packet loop, durable acknowledgements, delivery to
//! the client, keep alive, and what happens when it ends (will, session detach).
//!
//! The loop never blocks on one thing: it reads only while the connection's ingest queue does
//! not hold input back (so a full log pushes back through TCP), and meanwhile keeps writing
//! deliveries and acknowledgements. Publishes go through [`crate::ingest`]: checked, routed,
//! stored in order, delivered locally once written; acknowledgements leave in the order the
//! publishes came in, routed ones once durable.
//!
//! Generic over the byte stream: [`serve`] takes a plain TCP, TLS, WebSocket or (in tests)
//! in-memory connection as one [`Stream`].
//!
//! Rooms of the connection, from the top; each imports only rooms below it (none imports this
//! file), so imports run one way:
//! - this file: setup and login ([`serve`]), the packet loop of a logged-in connection (one
//!   turn: prepare, wait, handle the event; parking when idle), dispatch of the client's
//!   packets, and a parked connection's resumption (`impl Resume`: the loop again in a task of
//!   its own) → `login`, `state` (and every room's `impl Connection`);
//! - `login`: the CONNECT, login, seat, session attach or takeover, CONNACK → `inbound` (a
//!   will's message properties), `state`;
//! - `inbound`: decoding input, inbound PUBLISH into [`crate::ingest`], acks owed in order →
//!   `state`, `facts`;
//! - `outbound`: deliveries within the client's Receive Maximum, topic aliases, resends, the
//!   QoS 2 exchange of what we deliver → `state`;
//! - `subscribe`: SUBSCRIBE / UNSUBSCRIBE, retained messages at subscribe → `state`;
//! - `close`: DISCONNECT, the drain, the will, detaching the session → `state`;
//! - `idle`: parking a connection that has nothing to do ([`crate::mqtt::park`]), and taking
//!   it out of the lot when it is woken (`unpark`; this file then runs its loop again) →
//!   `state`, `facts`;
//! - `state`: the `Connection` every room works on (each adds an `impl Connection` of its
//!   own), why it ends (`Exit`), `write` and `hold_output`, and what its fields hold (topic
//!   aliases and facts, the state gate, the ingest queue's tags, the will, buffer sizes, what
//!   a turn waits for) → `facts`;
//! - `facts`: what was decided for the topics a client publishes to, kept while it repeats
//!   them.
//!
//! A packet decoded in `inbound` is handed to the dispatch here (`handle`), which calls the
//! room it is for: a method call on the one `Connection`, not an import.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::BytesMut;
use edge_proto::mqtt::{Packet, PubComp, ReasonCode};
use tokio::io::AsyncWriteExt;
use tokio::sync::futures::Notified;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

use super::server::MqttServer;
use super::session::Resume;
use crate::admission::Pending;
use crate::listener::{Stream, poll_read_some};
use crate::metrics::front::inc;
use crate::state::JournalError;

use login::{Arrival, read_connect};
use state::{Connection, Exit, INITIAL_BUFFER, Ingest, OUT_HIGH_WATER, READ_BUFFER, Turn};

mod close;
mod facts;
mod idle;
mod inbound;
mod login;
mod outbound;
mod state;
mod subscribe;

/// A drained write buffer of at most this many bytes is given back (see [`give_back_small`]).
const SMALL_OUTPUT: usize = 64;

/// Logs one client connection (plain TCP, TLS or a WebSocket's pipe) in, then serves it in a
/// task of its own (tracked by the server) until it ends; this future ends after the login.
///
/// Until it has logged in, the connection holds only its `pending` place: it may buffer a
/// CONNECT of at most `mqtt.max_connect_size` and must send it within `mqtt.connect_timeout`;
/// a seat among `mqtt.max_connections` is taken once the login succeeded.
pub fn serve(
    server: Arc<MqttServer>,
    stream: Stream,
    peer: SocketAddr,
    pending: Pending,
    shutdown: CancellationToken,
    certificate: Option<crate::auth::PeerCertificate>,
) -> impl Future<Output = ()> + Send + 'static {
    // An `async fn` keeps its arguments for its whole life (beside the locals they are moved
    // into): ~150 bytes more of every login's task. Boxed, they cost a pointer there, and
    // the box is freed when they are taken out.
    serve_arrival(Box::new(Arriving {
        server,
        stream,
        peer,
        pending,
        shutdown,
        certificate,
    }))
}

/// What [`serve`] is given, in one box.
struct Arriving {
    server: Arc<MqttServer>,
    stream: Stream,
    peer: SocketAddr,
    pending: Pending,
    shutdown: CancellationToken,
    certificate: Option<crate::auth::PeerCertificate>,
}

async fn serve_arrival(arriving: Box<Arriving>) {
    let Some(connection) = log_in(arriving).await else {
        return;
    };
    // The loop in a task of its own, which is all a logged-in client holds of a task for
    // its connection's life (a resumed connection's task runs the same loop): a task is
    // allocated at the size of its future's largest state, and the login's states, or even
    // a level of `async fn` around the loop, would size it.
    let server = Arc::clone(&connection.server);
    server.spawn_connection(
        serve_logged_in(connection),
        &tokio::runtime::Handle::current(),
    );
}

/// Bytes of the future of a logged-in connection's task (the packet loop): a task holds
/// this much inline for the connection's life (`tests/mqtt_connection.rs` keeps it small).
pub fn serve_loop_future_bytes() -> usize {
    fn size_of_future<F: Future>(_: fn(Box<Connection>) -> F) -> usize {
        std::mem::size_of::<F>()
    }
    size_of_future(serve_logged_in)
}

/// The packet loop of a logged-in connection, until it ends or parks ([`idle`]); a resumed
/// connection's task runs it again.
async fn serve_logged_in(mut connection: Box<Connection>) {
    // One reference of its own to the session, for the loop's life: each turn's wait on the
    // session's `wake` borrows it while the turn polls the connection.
    let session = Arc::clone(&connection.session);
    let exit = loop {
        let turn = match connection.prepare_turn() {
            Ok(turn) => turn,
            Err(exit) => break exit,
        };
        let event = {
            // Made before the checks below: a takeover or the shutdown after this point
            // (`notify_waiters`) wakes it even before it is polled. No token per connection:
            // see [`Session::kick`] and [`MqttServer::stop_connections`].
            let mut woken = std::pin::pin!(session.wake.notified());
            if let Some(exit) = connection.told_to_leave() {
                break exit;
            }
            // One poll function for the turn's waits instead of a `select!`, which holds
            // every branch's future at once in every waiting connection's task.
            let this = &mut *connection;
            std::future::poll_fn(move |cx| this.poll_turn(cx, woken.as_mut(), turn)).await
        };
        let idle = matches!(event, Event::Idle);
        if let Err(exit) = connection.on_event(event) {
            break exit;
        }
        if idle {
            match connection.park() {
                Ok(()) => return,
                Err(back) => connection = back,
            }
        }
    };
    drop(session);
    // Boxed: the end's state (drain and flush deadlines) lasts only while the connection
    // closes, while the task is allocated at its largest state for the connection's life.
    Box::pin(connection.finish(exit)).await;
}

/// A parked connection's way back: out of the lot and into the reactor again ([`idle`]),
/// then the packet loop in a task of its own, as after the login.
impl Resume for Connection {
    fn resume(mut self: Box<Self>, token: u64, socket: std::net::TcpStream) {
        let server = Arc::clone(&self.server);
        let Some(lot) = server.parking() else {
            // Unreachable: only the lot parks, and it is never unset.
            tracing::error!(client_id = %self.session.client_id, "a parked connection without its lot: closed");
            return;
        };
        self.unpark(lot, token, socket);
        server.spawn_connection(serve_logged_in(self), lot.runtime());
    }
}

/// Waits for the CONNECT (within `mqtt.connect_timeout`) and logs the client in: its
/// connection, CONNACK written; `None` when it closed, was refused or the broker stops.
async fn log_in(arriving: Box<Arriving>) -> Option<Box<Connection>> {
    let Arriving {
        server,
        mut stream,
        peer,
        pending,
        shutdown,
        certificate,
    } = *arriving;
    // Taken when the CONNECT's first bytes are there (`read_connect`).
    let mut inbuf = BytesMut::new();
    let settings = server.settings();
    let max_connect = u32::try_from(settings.connect_size_limit()).unwrap_or(u32::MAX);
    let evicted = pending.eviction();
    let connect = tokio::select! {
        _ = shutdown.cancelled() => return None,
        _ = evicted.cancelled() => {
            tracing::debug!(%peer, "MQTT connection evicted before CONNECT: mqtt.max_pending_connections reached");
            return None;
        }
        read = tokio::time::timeout(
            settings.connect_timeout.0,
            read_connect(&mut stream, &mut inbuf, max_connect),
        ) => match read {
            Ok(Ok(connect)) => connect,
            Ok(Err((why, unsupported_level))) => {
                if unsupported_level {
                    // MQTT 3.1.1 §3.1.2.2 [MQTT-3.1.2-2]: CONNACK 0x01 (unacceptable protocol
                    // level), in the 3.1.1 form every client version can read, then close.
                    let _ = stream.write_all(&[0x20, 0x02, 0x00, 0x01]).await;
                    let _ = stream.shutdown().await;
                }
                inc(&server.metrics.protocol_errors);
                if inbuf.is_empty() {
                    tracing::debug!(%peer, "MQTT connection closed without sending anything (a port probe?): {why}");
                } else {
                    tracing::info!(%peer, "MQTT connection closed before CONNECT completed: {why}");
                }
                return None;
            }
            Err(_) => {
                tracing::info!(%peer, "MQTT client sent no CONNECT within {:?}", settings.connect_timeout.0);
                return None;
            }
        },
    };
    // Not kept for the connection's life: the task holds what lives across its awaits.
    drop((evicted, settings));
    // What was read beyond the CONNECT starts the session's input; the CONNECT's own room
    // (up to max_connect_size) is not kept for the connection's life.
    if inbuf.capacity() > INITIAL_BUFFER.max(inbuf.len() * 2) {
        inbuf = BytesMut::from(&inbuf[..]);
    }
    // The login's state (CONNECT, credentials, the CONNACK being built) is boxed apart from
    // the CONNECT wait's: this future is no larger than the larger of the two.
    let accepted = Box::pin(Connection::accept(
        Arc::clone(&server),
        connect,
        stream,
        inbuf,
        Arrival {
            peer,
            pending,
            certificate,
        },
    ))
    .await;
    match accepted {
        Ok(connection) => connection,
        Err(err) => {
            tracing::info!(%peer, "MQTT connection failed during CONNECT: {err}");
            None
        }
    }
}

impl Connection {
    /// Before a turn of the serve loop waits: takes the input read and the deliveries
    /// queued, then decides what the turn may wait for.
    fn prepare_turn(&mut self) -> Result<Turn, Exit> {
        self.process_input()?;
        self.pump_outbound();
        // The log's backpressure: while the ingest queue holds input back (a submission
        // waits for log space, or this client's unanswered publishes reached their bound),
        // the socket is not read.
        let pacing = self.pacing();
        let log_paused = pacing || self.ingest_holds_input();
        let read = !log_paused
            && self.outbuf.len() < OUT_HIGH_WATER
            && !(self.gate.is_some() && self.server.state_backlogged());
        // Keep alive measures the client, not the log's backpressure: while the broker does
        // not read because the client's publishes wait for the log, the timer stops, and
        // restarts on resuming. (A client that does not read its deliveries still times out.)
        if log_paused {
            self.read_paused = true;
        } else if self.read_paused {
            self.read_paused = false;
            self.last_read = Instant::now();
        }
        if read {
            if self.inbuf.is_empty() && !self.read_burst {
                // Quiet and drained: wait for bytes without a buffer (most gateway clients,
                // most of the time); `read_some` takes one when bytes are there.
                self.inbuf = BytesMut::new();
            } else if !self.large_input.is_held() {
                // A busy client (or a packet bigger than the buffer) reads in large steps
                // rather than the 64 bytes a full BytesMut would add per read; a quiet one
                // keeps a small buffer, and gives a burst's back.
                READ_BUFFER.prepare(&mut self.inbuf, self.read_burst);
            }
        }
        let mut turn = Turn {
            pacing,
            ingest: self.ingest.as_deref().is_some_and(Ingest::is_busy) && !pacing,
            gate: self.gate.is_some(),
            write: !self.outbuf.is_empty() && self.gate.is_none(),
            read,
            keep_alive: !log_paused,
            park: false,
        };
        turn.park = self.may_park(&turn);
        Ok(turn)
    }

    /// Polls what `turn` waits for, in this order (the first ready one ends the turn):
    /// pacing, the ingest queue, the state gate, the write, the read, the session's `wake`
    /// (`woken`), the keep-alive deadline.
    fn poll_turn(
        &mut self,
        cx: &mut Context<'_>,
        woken: Pin<&mut Notified<'_>>,
        turn: Turn,
    ) -> Poll<Event> {
        if turn.pacing
            && let Some(pace) = &mut self.pace
            && pace.poll_woken(cx).is_ready()
        {
            return Poll::Ready(Event::Paced);
        }
        if turn.ingest
            && let Some(ingest) = &mut self.ingest
            && ingest.poll_progress(cx).is_ready()
        {
            return Poll::Ready(Event::Ingest);
        }
        if turn.gate
            && let Some(gate) = &mut self.gate
            && let Poll::Ready(durable) = gate.poll_durable(cx)
        {
            return Poll::Ready(Event::Durable(durable));
        }
        if turn.write
            && let Poll::Ready(written) =
                tokio_util::io::poll_write_buf(Pin::new(&mut self.stream), cx, &mut self.outbuf)
        {
            give_back_small(&mut self.outbuf);
            return Poll::Ready(Event::Written(written.map(|_| ())));
        }
        if turn.read
            && let Poll::Ready(read) = poll_read_some(
                &mut self.stream,
                &mut self.inbuf,
                &READ_BUFFER,
                self.read_burst,
                cx,
            )
        {
            return Poll::Ready(Event::Read(read));
        }
        if woken.poll(cx).is_ready() {
            return Poll::Ready(Event::Woken);
        }
        let keep_alive = self.keep_alive_deadline().filter(|_| turn.keep_alive);
        if turn.park && self.fresh && keep_alive.is_none_or(|at| at > Instant::now()) {
            // Without a timer: most idle clients never need one.
            return Poll::Ready(Event::Idle);
        }
        let park = self.park_deadline().filter(|_| turn.park);
        let deadline = match (keep_alive, park) {
            (Some(k), Some(p)) => Some(k.min(p)),
            (k, p) => k.or(p),
        };
        if poll_timer(&mut self.timer, deadline, cx).is_ready() {
            // The earlier of the two passed (the keep alive when both did).
            return Poll::Ready(if keep_alive == deadline {
                Event::KeepAliveExpired
            } else {
                Event::Idle
            });
        }
        Poll::Pending
    }

    /// What a turn's wait ended with.
    fn on_event(&mut self, event: Event) -> Result<(), Exit> {
        if !matches!(
            event,
            Event::Idle | Event::KeepAliveExpired | Event::Read(_)
        ) {
            self.stir();
        }
        if matches!(event, Event::Woken | Event::Ingest | Event::Paced) {
            // A delivery, or the client's publishes (read already): no longer fresh. Its own
            // CONNACK written, or a state change made durable, leaves it fresh.
            self.fresh = false;
        }
        match event {
            Event::Paced => {
                if let Some(pace) = &mut self.pace {
                    pace.settle();
                }
            }
            Event::Ingest => self.take_ingest()?,
            Event::Durable(Err(err)) => {
                return Err(Exit::Violation(
                    ReasonCode::UnspecifiedError,
                    format!("session state not saved: {err}"),
                ));
            }
            Event::Durable(Ok(())) => self.gate = None,
            Event::Written(Err(err)) => return Err(Exit::Closed(format!("write failed: {err}"))),
            Event::Written(Ok(())) | Event::Woken | Event::Idle => {}
            Event::Read(Ok((0, _))) => {
                return Err(Exit::Closed("connection closed by client".to_owned()));
            }
            Event::Read(Ok((n, room))) => {
                // The bytes of a large packet arriving do not move the keep-alive clock (the
                // packet does once whole: `decode_input`): a client trickling them would keep
                // its lease of the shared pool for as long as it liked.
                if !self.large_input.is_held() {
                    self.last_read = Instant::now();
                }
                self.stirred_ms = 0;
                self.fresh = false;
                self.read_burst = READ_BUFFER.is_burst(n, room);
            }
            Event::Read(Err(err)) => return Err(Exit::Closed(format!("read failed: {err}"))),
            Event::KeepAliveExpired => {
                let why = if self.large_input.is_held() {
                    "keep alive timeout: a large packet was not whole in time"
                } else {
                    "keep alive timeout"
                };
                return Err(Exit::Violation(
                    ReasonCode::KeepAliveTimeout,
                    why.to_owned(),
                ));
            }
        }
        Ok(())
    }

    /// Whether the broker stops or another connection took the session over.
    fn told_to_leave(&self) -> Option<Exit> {
        if self.server.is_stopping() {
            Some(Exit::Shutdown)
        } else if self.session.is_kicked(self.generation) {
            Some(Exit::Kicked)
        } else {
            None
        }
    }

    /// One packet of the client (a PUBLISH is taken by reference where input is decoded).
    fn handle(&mut self, packet: Packet) -> Result<(), Exit> {
        match packet {
            Packet::Publish(mut publish) => self.on_publish(&mut publish, &mut None),
            Packet::PubAck(ack) => {
                self.on_puback(ack.packet_id);
                Ok(())
            }
            Packet::PubRec(rec) => self.on_pubrec(rec),
            Packet::PubRel(rel) => {
                let known = self.session.lock().forget_inbound_qos2(rel.packet_id);
                let mut comp = PubComp::new(rel.packet_id);
                if !known {
                    comp.reason_code = ReasonCode::PacketIdentifierNotFound;
                }
                self.write(&Packet::PubComp(comp));
                Ok(())
            }
            Packet::PubComp(comp) => {
                let mut state = self.session.lock();
                if state
                    .inflight()
                    .get(&comp.packet_id)
                    .is_some_and(|o| o.released)
                {
                    state.inflight_mut().remove(&comp.packet_id);
                    drop(state);
                    self.session.room.made();
                }
                Ok(())
            }
            Packet::Subscribe(subscribe) => self.on_subscribe(subscribe),
            Packet::Unsubscribe(unsubscribe) => self.on_unsubscribe(unsubscribe),
            Packet::PingReq => {
                self.write(&Packet::PingResp);
                Ok(())
            }
            Packet::Disconnect(disconnect) => self.on_disconnect(disconnect),
            Packet::Connect(_) => Err(Exit::Violation(
                ReasonCode::ProtocolError,
                "second CONNECT".to_owned(),
            )),
            Packet::Auth(_) => Err(Exit::Violation(
                ReasonCode::ProtocolError,
                "AUTH without an authentication method".to_owned(),
            )),
            other => Err(Exit::Violation(
                ReasonCode::ProtocolError,
                format!("{} is not sent by clients", other.packet_type()),
            )),
        }
    }
}

/// What ended a turn's wait ([`Connection::poll_turn`]).
#[derive(Debug)]
enum Event {
    Paced,
    Ingest,
    Durable(Result<(), JournalError>),
    Written(std::io::Result<()>),
    Read(std::io::Result<(usize, usize)>),
    Woken,
    KeepAliveExpired,
    /// Idle for `mqtt.park_idle_after` with nothing in flight: the connection parks.
    Idle,
}

/// Gives back the write buffer once a write drained it, if its allocation holds at most
/// [`SMALL_OUTPUT`] bytes: a CONNACK, an ack, a PINGRESP, what an idle client was last sent
/// (a 32-byte malloc chunk of every idle connection otherwise). A larger one (a subscriber's
/// deliveries) is kept, so a busy subscriber's writes do not allocate it again and again.
/// (The allocation, not the capacity left: a drained buffer's capacity counts from where the
/// write stopped, which can be near the end of a large one.)
fn give_back_small(outbuf: &mut BytesMut) {
    if outbuf.is_empty() && !outbuf.try_reclaim(SMALL_OUTPUT + 1) {
        *outbuf = BytesMut::new();
    }
}

/// Ready when `deadline` passes (never without one), on the connection's one timer (keep
/// alive and parking). The deadline moves later with almost every event of a busy
/// connection (parking counts from its last one): the timer is moved only when the deadline
/// comes earlier, or when it fires before the deadline, once per quiet spell instead of once
/// per event (moving a timer takes a lock of the runtime's timer wheel).
fn poll_timer(
    timer: &mut Option<Pin<Box<Sleep>>>,
    deadline: Option<Instant>,
    cx: &mut Context<'_>,
) -> Poll<()> {
    let Some(deadline) = deadline else {
        return Poll::Pending;
    };
    let timer = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
    if deadline < timer.deadline() {
        timer.as_mut().reset(deadline);
    }
    while timer.as_mut().poll(cx).is_ready() {
        if timer.deadline() >= deadline {
            return Poll::Ready(());
        }
        // Fired at an earlier deadline that has since moved: wait for the real one.
        timer.as_mut().reset(deadline);
    }
    Poll::Pending
}

#[cfg(test)]
mod tests {
    use bytes::{Buf, BytesMut};

    /// A drained write buffer that held a CONNACK-sized write is given back (an idle client
    /// kept its CONNACK's allocation for its whole life); one that held a subscriber's
    /// deliveries (also when the write stopped near its end), or still holds bytes, is kept.
    #[test]
    fn a_small_drained_write_buffer_is_given_back_and_a_large_one_kept() {
        let mut connack = BytesMut::new();
        connack.extend_from_slice(&[0x20, 0x02, 0x00, 0x00]);
        connack.advance(4);
        super::give_back_small(&mut connack);
        assert_eq!(connack.capacity(), 0);

        for written in [4000, 4090] {
            let mut deliveries = BytesMut::with_capacity(4096);
            deliveries.extend_from_slice(&[0x30; 4096][..written]);
            deliveries.advance(written);
            super::give_back_small(&mut deliveries);
            deliveries.reserve(100);
            assert!(deliveries.capacity() >= 4000, "{}", deliveries.capacity());
        }

        let mut partly = BytesMut::new();
        partly.extend_from_slice(&[0x20, 0x02, 0x00, 0x00]);
        partly.advance(2);
        super::give_back_small(&mut partly);
        assert_eq!(&partly[..], &[0x00, 0x00]);
    }

    /// The one timer fires at the deadline it is asked for: at the earliest when the deadline
    /// comes earlier, not at an earlier deadline that moved later (it is moved lazily), and
    /// never without one.
    #[tokio::test(start_paused = true)]
    async fn the_timer_fires_at_the_deadline_it_is_asked_for_now() {
        use std::task::{Context, Poll, Waker};
        use std::time::Duration;
        use tokio::time::{Instant, advance};

        let mut cx = Context::from_waker(Waker::noop());
        let mut timer = None;
        let start = Instant::now();
        let at = |ms| Some(start + Duration::from_millis(ms));
        assert!(super::poll_timer(&mut timer, None, &mut cx).is_pending());
        assert!(timer.is_none(), "no deadline, no timer");
        assert!(super::poll_timer(&mut timer, at(100), &mut cx).is_pending());
        // Moved later: the timer keeps its earlier deadline, and firing there is not enough.
        assert!(super::poll_timer(&mut timer, at(300), &mut cx).is_pending());
        advance(Duration::from_millis(150)).await;
        assert_eq!(
            super::poll_timer(&mut timer, at(300), &mut cx),
            Poll::Pending
        );
        advance(Duration::from_millis(140)).await;
        assert_eq!(
            super::poll_timer(&mut timer, at(300), &mut cx),
            Poll::Pending
        );
        advance(Duration::from_millis(20)).await;
        assert_eq!(
            super::poll_timer(&mut timer, at(300), &mut cx),
            Poll::Ready(())
        );
        // Moved earlier: it fires there.
        assert!(super::poll_timer(&mut timer, at(1000), &mut cx).is_pending());
        assert!(super::poll_timer(&mut timer, at(400), &mut cx).is_pending());
        advance(Duration::from_millis(100)).await;
        assert_eq!(
            super::poll_timer(&mut timer, at(400), &mut cx),
            Poll::Ready(())
        );
    }
}
