//! What one MQTT connection holds: [`Connection`], the one state every room of the connection
//! works on (each room is an `impl Connection` of its own), why a connection ends ([`Exit`]),
//! the two things every room does with it (encode a packet into the output: `write`; hold the
//! output until a state change is durable: `hold_output`), and the records its fields keep:
//! topic aliases and facts ([`Topics`]), the state gate ([`Gate`]), the ingest queue's tags
//! ([`Ingest`]: [`Local`], [`Owed`]), the will ([`WillMessage`]); with the sizes of its buffers
//! and what one turn of the serve loop may wait for ([`Turn`]).
//!
//! Below the rooms: of its siblings it imports only [`super::facts`]; the rooms (`login`,
//! `inbound`, `outbound`, `subscribe`, `close`, `idle`) and the serve loop in `mod.rs` import it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::BytesMut;
use edge_proto::mqtt::{self, MqttString, Packet, ProtocolVersion, QoS, ReasonCode};
use tokio::time::{Instant, Sleep};

use super::facts::TopicFacts;
use crate::admission::Seat;
use crate::hub::LocalRoute;
use crate::ingest::IngestQueue;
use crate::input_pool::InputLease;
use crate::listener::{ReadBuffer, Stream};
use crate::message::Message;
use crate::mqtt::pace::Pace;
use crate::mqtt::server::MqttServer;
use crate::mqtt::session::Session;
use crate::state::{Commit, JournalError};

/// Stop reading a client (and moving its deliveries into its output) while this much output
/// waits for it: with 1,000 clients that do not read, 64 MiB of output at most.
pub(super) const OUT_HIGH_WATER: usize = 64 << 10;
/// Buffers of a new connection start this small: most gateway clients are idle most of the time.
pub(super) const INITIAL_BUFFER: usize = 512;
/// A busy connection reads in chunks of at least this much.
pub(super) const READ_CHUNK: usize = 8192;
/// How the read buffer is sized: [`INITIAL_BUFFER`] while quiet, [`READ_CHUNK`] in bursts.
pub(super) const READ_BUFFER: ReadBuffer = ReadBuffer {
    initial: INITIAL_BUFFER,
    chunk: READ_CHUNK,
};

/// Why a connection ended.
#[derive(Debug)]
pub(super) enum Exit {
    /// The client sent DISCONNECT; `with_will` for v5 reason 0x04.
    ClientDisconnect { with_will: bool },
    /// The socket closed or failed.
    Closed(String),
    /// Another connection took the session over.
    Kicked,
    /// The broker is shutting down.
    Shutdown,
    /// The client broke the protocol or a limit: DISCONNECT with this reason (v5), then close.
    Violation(ReasonCode, String),
    /// The broker has no room for what the client began to send (a large packet that does
    /// not fit in `max_partial_packet_bytes_total`): DISCONNECT 0x97 Quota exceeded (v5),
    /// then close as after a client's DISCONNECT; it may send it again later.
    Busy(String),
}

/// One logged-in client connection, as every room of it sees it: `login` makes it, and the
/// serve loop (`mod.rs`), `inbound`, `outbound`, `subscribe`, `close` and `idle` each add an
/// `impl Connection` of their own.
pub(super) struct Connection {
    pub(super) server: Arc<MqttServer>,
    /// The `[mqtt]` limits this connection started with (a reload affects later connections).
    pub(super) settings: Arc<crate::config::MqttSection>,
    pub(super) session: Arc<Session>,
    pub(super) generation: u64,
    pub(super) version: ProtocolVersion,
    pub(super) peer: SocketAddr,
    /// The client's bytes, both ways: one box (two halves were an `Arc` of the socket and a
    /// box each).
    pub(super) stream: Stream,
    pub(super) inbuf: BytesMut,
    /// The last read filled the buffer's room or was not small (see [`ReadBuffer`]).
    pub(super) read_burst: bool,
    /// The lease of the large packet at the front of `inbuf`, if one is arriving
    /// ([`crate::input_pool`]); `inbuf` is then sized for it.
    pub(super) large_input: InputLease,
    pub(super) outbuf: BytesMut,
    pub(super) client_max_packet: u32,
    pub(super) client_receive_max: u16,
    pub(super) client_alias_max: u16,
    pub(super) problem_info: bool,
    /// Topic aliases (MQTT 5) and the facts of recent topics published to, made when the
    /// first alias is used or the first publish comes (two empty maps were 96 bytes in every
    /// connection); dropped when the connection parks unless it holds aliases.
    pub(super) topics: Option<Box<Topics>>,
    /// The keep alive granted, ×1.5, in milliseconds (at most 65,535 s × 1.5: a `u32`, where
    /// an `Option<Duration>` took 16 bytes); `None`: none.
    pub(super) keep_alive_ms: Option<NonZeroU32>,
    pub(super) last_read: Instant,
    /// When the connection last had something to do, in milliseconds after `last_read`
    /// (a `u32`, not a second `Instant`: 16 bytes): it is parked `park_idle_after` later.
    pub(super) stirred_ms: u32,
    /// The client sent nothing since its CONNECT and got no delivery: the connection parks as
    /// soon as it has nothing to do (a device that connects and reports now and then, every
    /// device after a reconnection storm), not `park_idle_after` later. (In the padding
    /// `stirred_ms` left.)
    pub(super) fresh: bool,
    /// The keep-alive and parking timer (`poll_timer` in `mod.rs`), made at the first wait with a
    /// deadline and dropped when the connection parks: boxed, the serve future holds a
    /// pointer instead of a `Sleep` (most of its size), and no loop turn makes a new timer.
    pub(super) timer: Option<Pin<Box<Sleep>>>,
    pub(super) read_paused: bool,
    /// The publishes on their way to the log and the acks owed (boxed: the connection future
    /// holds the connection several times over, ~900 bytes per idle client inline).
    /// Made at the first publish (an idle client, or one that only subscribes, has none).
    pub(super) ingest: Option<Box<Ingest>>,
    /// What this client may publish and subscribe to.
    pub(super) permissions: crate::auth::Permissions,
    /// The will (boxed: a `Message` is ~200 bytes, and most clients set no will; inline it
    /// was a third of every connection).
    pub(super) will: Option<Box<WillMessage>>,
    pub(super) connect_expiry: u32,
    /// State changes the output waits for: nothing more is written to the client until they
    /// are durable (acks of subscriptions, of publishes queued for persistent sessions).
    /// Boxed with its wait: most connections have none most of the time.
    pub(super) gate: Option<Box<Gate>>,
    /// This client's place among `mqtt.max_connections`, given back when the connection ends.
    pub(super) _seat: Seat,
    /// PUBRECs owed for QoS 2 publishes in `inbound_qos2` (counted there already): see
    /// [`Connection::receive_inflight`].
    pub(super) qos2_answers: u32,
    /// QoS 0 deliveries of this client's publish waiting for room in slower subscribers'
    /// queues (made at the first local delivery, and only if `slow_subscriber_wait` > 0):
    /// while they wait, no input is taken.
    pub(super) pace: Option<Box<Pace>>,
}

impl Connection {
    /// Encodes a packet into the output buffer, respecting the client's maximum packet size.
    pub(super) fn write(&mut self, packet: &Packet) -> bool {
        match mqtt::encode_limited(
            packet,
            self.version,
            self.client_max_packet,
            &mut self.outbuf,
        ) {
            Ok(_) => true,
            Err(err) => {
                tracing::debug!(client_id = %self.session.client_id, "not sending {}: {err}", packet.packet_type());
                false
            }
        }
    }

    /// Holds the output until `commit` (if any) is durable.
    pub(super) fn hold_output(&mut self, commit: Option<Commit>) {
        if let Some(commit) = commit.filter(|c| !c.is_durable()) {
            match &mut self.gate {
                Some(gate) if commit.position() <= gate.commit.position() => {}
                Some(gate) => **gate = Gate::new(commit),
                None => self.gate = Some(Box::new(Gate::new(commit))),
            }
        }
    }
}

/// What a connection keeps of topics: its MQTT 5 topic aliases, and what it decided for the
/// topics its client publishes to.
#[derive(Default)]
pub(super) struct Topics {
    /// Set by the client's PUBLISHes.
    pub(super) inbound: HashMap<u16, MqttString>,
    /// Told to the client in our PUBLISHes, by topic.
    pub(super) outbound: HashMap<String, u16>,
    /// The client's recent topics (freed when the connection parks).
    pub(super) facts: TopicFacts,
}

impl Topics {
    /// Whether it holds no alias (its facts can be given back with the box).
    pub(super) fn has_no_aliases(&self) -> bool {
        self.inbound.is_empty() && self.outbound.is_empty()
    }
}

/// What one turn of the serve loop may wait for, decided before it waits.
#[derive(Debug, Clone, Copy)]
pub(super) struct Turn {
    /// Deliveries of this client's publish wait for room ([`Connection::pacing`]).
    pub(super) pacing: bool,
    /// The ingest queue has publishes on their way to the log.
    pub(super) ingest: bool,
    /// Output waits for state changes to be durable.
    pub(super) gate: bool,
    /// Output to write (and no gate).
    pub(super) write: bool,
    /// Input may be read.
    pub(super) read: bool,
    /// The keep-alive deadline runs (not while the log holds input back).
    pub(super) keep_alive: bool,
    /// Nothing is in flight on the connection's side: it parks once idle long enough
    /// (`idle`).
    pub(super) park: bool,
}

/// A state change the output waits for, and the wait for it.
pub(super) struct Gate {
    pub(super) commit: Commit,
    /// Made at its first poll and kept until the gate opens or moves. It owns a clone of the
    /// commit, so that the turn can poll it beside the rest of the connection.
    wait: Option<DurableWait>,
}

/// [`Gate`]'s wait.
type DurableWait = Pin<Box<dyn Future<Output = Result<(), JournalError>> + Send>>;

impl Gate {
    fn new(commit: Commit) -> Gate {
        Gate { commit, wait: None }
    }

    pub(super) fn poll_durable(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), JournalError>> {
        let commit = &self.commit;
        let wait = self.wait.get_or_insert_with(|| {
            let commit = commit.clone();
            Box::pin(async move { commit.durable().await })
        });
        wait.as_mut().poll(cx)
    }
}

/// A PUBACK or PUBREC owed to the client (QoS 1 or 2), in the ingest queue's answer order.
#[derive(Debug, Clone, Copy)]
pub(super) struct Owed {
    pub(super) packet_id: u16,
    pub(super) qos: QoS,
    /// A QoS 2 publish counted in the session's `inbound_qos2` already (see
    /// [`Connection::receive_inflight`]).
    pub(super) in_qos2_set: bool,
    /// The reason code when the answer is settled without the log ([`crate::ingest::Outcome::Given`]).
    pub(super) reason: ReasonCode,
}

/// The connection's ingest queue: a routed publish carries its message for local delivery.
pub(super) type Ingest = IngestQueue<Local, Owed>;

/// What a routed publish leaves for after it is written.
#[derive(Debug)]
pub(super) enum Local {
    /// Its message, for local delivery (and the retained store), with the publisher's route
    /// for its topic if it has one.
    Deliver(Arc<Message>, Option<Arc<LocalRoute>>),
    /// Nothing (nobody subscribed when it came, and it is not retained): its topic, to say
    /// which publish the log refused, if it does.
    Quiet(Arc<str>),
}

impl Local {
    pub(super) fn topic(&self) -> &str {
        match self {
            Local::Deliver(message, _) => &message.topic,
            Local::Quiet(topic) => topic,
        }
    }
}

/// A will message waiting for the connection to end.
pub(super) struct WillMessage {
    pub(super) message: Message,
    pub(super) delay_secs: u32,
}

#[cfg(test)]
mod tests {
    /// Every logged-in client holds one boxed `Connection` for its whole life (10,000 idle
    /// clients: 10,000 of them). What most clients never use is boxed (the will, the ingest
    /// queue, topic aliases, pacing): with the will inline it was 656 bytes; 464 with the
    /// kick and shutdown tokens and its own pointer to the client id (the session's is read);
    /// 432 with the permissions' empty verdict cache inline (32 bytes) and the packet size
    /// cap copied from the settings it keeps (with `client_receive_max` a `u16`, 8 bytes of
    /// padding). 384: a box of 400 bytes with malloc's header, where it was 464. 368 with the
    /// state gate (a commit ticket, 24 bytes) boxed with its wait: a chunk of 384. 352 with
    /// one stream instead of two halves (two fat pointers): a chunk of 368. 328 with the
    /// seat's source address as bytes (a `u128` aligned the seat and the connection to 16),
    /// the keep alive in a `u32` of milliseconds and the QoS 2 answers counted in a `u32`: a
    /// chunk of 336. 336 with when it last had something to do (`stirred_ms` and `fresh`, for
    /// parking, which saves far more: the task, the timer and the socket's registration).
    /// 344 with the lease of a large packet arriving (a pointer): still a chunk of 352.
    #[test]
    fn a_connection_holds_what_an_idle_client_needs_inline_only() {
        const CONNECTION_MAX: usize = 344;
        let size = std::mem::size_of::<super::Connection>();
        eprintln!("Connection: {size} bytes");
        assert!(size <= CONNECTION_MAX, "Connection: {size} bytes");
    }
}
