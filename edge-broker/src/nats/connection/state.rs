//! What one NATS connection holds: [`Connection`], the one state every room of the connection
//! works on (each room is an `impl Connection` of its own), why a connection ends ([`Exit`]),
//! the answers every room gives (`+OK` when verbose, `-ERR`), and the records its fields keep:
//! its subscriptions ([`SubRecord`]), its place with [`crate::admission`] ([`Admitted`]), what
//! its routed publishes carry through the ingest queue ([`Written`], [`Reply`]: [`Ingest`]),
//! and where replies under a prefix go ([`ReplyRoute`]).
//!
//! Below the rooms: it imports only [`super::outbox`] and [`super::facts`], and the rooms
//! (`login`, `publish`, `settle`, `subscribe`, and the serve loop in `mod.rs`) import it.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use edge_proto::nats::{Connect, LastSubject, Limits, ReplySubject, ServerError, ServerOp};
use tokio_util::sync::CancellationToken;

use super::super::server::NatsServer;
use super::facts::SubjectFacts;
use super::outbox::{Outbox, SubMailbox};
use crate::admission::{Pending, Seat};
use crate::ingest::IngestQueue;
use crate::input_pool::InputLease;
use crate::listener::{ReadHalf, WriteHalf};
use crate::message::Message;
use crate::router::Filter;

/// Why a connection ended.
#[derive(Debug)]
pub(super) enum Exit {
    /// The socket closed or failed, or the client broke the protocol (already answered).
    Closed(String),
    /// A protocol error was answered with `-ERR` (or silently) and the connection closes.
    Violation(String),
    /// The client could not keep up with its messages.
    SlowConsumer,
    /// The broker is shutting down.
    Shutdown,
    /// The broker has no room for the large PUB the client began (it does not fit in
    /// `nats.max_partial_packet_bytes_total`): closed without `-ERR`, so that clients
    /// reconnect and send it again (nats.go closes for good on an `-ERR` it does not know).
    Busy(String),
}

/// One client connection, as every room of it sees it: the serve loop (`mod.rs`), `login`,
/// `publish`, `settle` and `subscribe` each add an `impl Connection` of their own.
pub(super) struct Connection {
    pub(super) server: Arc<NatsServer>,
    /// The `[nats]` limits this connection started with (a reload affects later connections).
    pub(super) settings: Arc<crate::config::NatsSection>,
    pub(super) outbox: Arc<Outbox>,
    pub(super) peer: SocketAddr,
    pub(super) conn_key: u64,
    pub(super) reader: ReadHalf,
    pub(super) writer: WriteHalf,
    pub(super) inbuf: BytesMut,
    /// The last read filled the buffer's room or was not small: the client sends bursts, so
    /// it reads in `READ_CHUNK`s; otherwise its buffer stays at `INITIAL_BUFFER`.
    pub(super) read_burst: bool,
    /// The lease of the large PUB at the front of `inbuf`, if one is arriving
    /// ([`crate::input_pool`]); `inbuf` is then sized for it.
    pub(super) large_input: InputLease,
    pub(super) outbuf: BytesMut,
    pub(super) limits: Limits,
    pub(super) connect: Option<Box<Connect>>,
    pub(super) client_id: Arc<str>,
    pub(super) subs: HashMap<String, SubRecord>,
    /// Routed publishes on their way to the log, and the replies owed (boxed: the connection
    /// future holds the connection several times over).
    pub(super) ingest: Box<Ingest>,
    /// PINGs waiting for the routed publishes before them (each: the ingest mark at the PING).
    pub(super) pongs: VecDeque<u64>,
    /// The last PUB subject the decoder handed out (shared while it repeats).
    pub(super) last_subject: LastSubject,
    /// What was decided for the last PUB subject (reused while the subject repeats).
    pub(super) subject_facts: Option<SubjectFacts>,
    /// The last PUB decoded whole carried a reply subject: a publisher that asks for replies
    /// (a JetStream client) asks every time, so the next PUB is not peeked for the stored
    /// fast path (`store_repeated_pub`), which would only scan its line twice.
    pub(super) last_pub_replied: bool,
    /// Where replies under the last reply-subject prefix go (reused while it repeats).
    pub(super) reply_route: Option<ReplyRoute>,
    /// A reply subject written out whole (a decoded one is kept in two parts), reused.
    pub(super) reply_text: String,
    /// Successful CONNECTs so far: a subscription remembers the one it was made under.
    pub(super) logins: u64,
    /// PubAck bodies are split off this buffer (one allocation for many).
    pub(super) ack_bodies: BytesMut,
    /// A CONNECT waiting for [`crate::auth::Auth::login`] (nothing else is read meanwhile).
    pub(super) pending_connect: Option<Box<Connect>>,
    /// What this client may publish and subscribe to (anonymous until CONNECT logs in).
    pub(super) permissions: crate::auth::Permissions,
    pub(super) pings_out: u32,
    /// PUB/HPUBs decoded from the read buffer being processed, not yet in the metrics.
    pub(super) received: u64,
    /// Wall clock (unix ms) read once per read buffer: routed records' ingest time.
    pub(super) now_ms: u64,
    /// `now_ms` is from an earlier read buffer.
    pub(super) clock_stale: bool,
    pub(super) shutdown: CancellationToken,
    /// The pending place before CONNECT, the seat after.
    pub(super) admitted: Admitted,
    /// Cancelled when the connection is evicted before CONNECT (`max_pending_connections`).
    pub(super) evict: CancellationToken,
}

impl Connection {
    pub(super) fn verbose(&self) -> bool {
        self.connect.as_ref().is_some_and(|c| c.verbose)
    }

    pub(super) fn ok(&self) {
        if self.verbose() {
            self.outbox.push_op(&ServerOp::Ok);
        }
    }

    /// Queues a session-level `-ERR`; returns the exit when it closes the connection.
    pub(super) fn error(&self, err: ServerError) -> Exit {
        self.outbox.push_raw(err.err_line().as_bytes());
        Exit::Violation(err.err_message().into_owned())
    }
}

/// A subscription as the connection remembers it.
pub(super) struct SubRecord {
    pub(super) key: u64,
    pub(super) subject: String,
    pub(super) filter: Option<Filter>,
    pub(super) group: Option<String>,
    pub(super) mailbox: Arc<SubMailbox>,
    /// [`Connection::logins`] when it was made: its hub entry is guarded by the ACL of the
    /// identity logged in then.
    pub(super) login: u64,
}

/// Where a connection stands with [`crate::admission`].
#[derive(Debug)]
pub(super) enum Admitted {
    /// No CONNECT yet: a pending place (taken by `seat`).
    Pending(Option<Pending>),
    /// Logged in: a seat among `nats.max_connections`.
    Seated {
        /// Given back when the connection ends.
        _seat: Seat,
    },
}

/// What a routed publish carries to the moment the log wrote it.
pub(super) struct Written {
    /// Delivered to local subscribers (`None`: nobody subscribed when it came in).
    pub(super) message: Option<Arc<Message>>,
    /// A `Nats-Msg-Id` to remember once written, when nobody waits for a reply (a reply
    /// remembers it only once durable, so a duplicate is never acknowledged early). Boxed:
    /// few publishes carry one, and a batch holds one `Written` per routed PUB.
    pub(super) remember: Option<Box<MsgId>>,
}

// Two words per routed PUB waiting for the log (a full log holds a batch of up to 2,048 per
// connection: the budget's `NATS_HELD_FOR_LOG`); unboxed, the id took four more.
const _: () = assert!(std::mem::size_of::<Written>() == 2 * std::mem::size_of::<usize>());

/// A `Nats-Msg-Id` in the duplicate window of a stream.
pub(super) struct MsgId {
    pub(super) stream: Arc<str>,
    pub(super) id: String,
}

/// A reply owed on a reply subject, in arrival order.
pub(super) struct Reply {
    /// As decoded: under a repeating prefix, the prefix shared and the last token inline.
    pub(super) subject: ReplySubject,
    pub(super) body: ReplyBody,
}

pub(super) enum ReplyBody {
    /// Known when the publish came in (duplicate, wrong stream).
    Given(Bytes),
    /// A PubAck once the record is durable (an error if it is refused or never durable).
    PubAck {
        stream: Arc<str>,
        msg_id: Option<String>,
    },
}

/// The connection's ingest queue.
pub(super) type Ingest = IngestQueue<Written, Reply>;

/// Where the replies under one reply-subject prefix go (`_INBOX.<id>.` of `_INBOX.<id>.<n>`),
/// decided once per prefix and hub generation. A JetStream client subscribes `_INBOX.<id>.*`
/// and gets every PubAck there: a reply repeating the prefix then needs neither a message for
/// the hub (its subject mapped to an MQTT topic) nor a walk of the hub's tree.
pub(super) struct ReplyRoute {
    /// The prefix, up to and including its last `.`.
    pub(super) prefix: Box<str>,
    /// The hub generation the answer holds for.
    pub(super) generation: u64,
    /// `Some`: every reply under the prefix reaches exactly these subscriptions of this
    /// connection, in subscriber order (none: it reaches nobody); `None`: the hub decides
    /// (someone else subscribes, a share group or a subscription naming a last token
    /// matches, or the prefix has no MQTT topic).
    pub(super) own: Option<Vec<Arc<SubMailbox>>>,
}
