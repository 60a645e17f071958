//! The MQTT 3.1.1 and 5 front end.
//!
//! - [`listen`]: the listeners ([`listen::Listeners`]) and their accept loops (plain, TLS,
//!   WebSockets), which spawn a [`connection`] for every client; beside them until the stop,
//!   journal compaction, session expiry and saving session owners.
//! - [`server`]: [`MqttServer`], the state every connection shares: settings, session
//!   registry, retained store, publishing, wills (published through [`crate::ingest`]),
//!   expiry, the stop flag, the `$SYS` tree.
//! - [`connection`]: one client connection over any byte stream: [`connection::serve`] and the
//!   packet loop (its `mod.rs`), in rooms of one concern, each an `impl Connection` over the one
//!   state in `state` (the `Connection`, why it ends, what its fields hold): `login` (CONNECT,
//!   seat, session attach or takeover, CONNACK), `inbound` (its publishes through
//!   [`crate::ingest`], acks in arrival order, routed ones once durable), `outbound` (delivery
//!   within the client's Receive Maximum, topic aliases, resends), `subscribe` (SUBSCRIBE /
//!   UNSUBSCRIBE, retained at subscribe), `close` (DISCONNECT, drain, will, detach), `idle`
//!   (parking and unparking), `facts` (what was decided for recent topics). Imports run one way:
//!   `mod.rs` → rooms → `state` → `facts`.
//! - [`session`]: what outlives a connection, and how its changes are recorded: the session, its
//!   state and the registry by client id, with rooms for `collections` (subscriptions, queue, in
//!   flight, inbound QoS 2: journaled and charged) and `log` (where a persistent session's
//!   records go).
//! - [`pace`]: a publishing connection waiting (bounded) for room in a slower QoS 0
//!   subscriber's queue (`slow_subscriber_wait`).
//! - [`park`]: where idle connections wait without a task (`park_idle_after`): one epoll
//!   instance on a thread of its own, and the rules that keep a wake-up from being missed.
//! - [`retained`]: the retained message store (bounded in count and bytes).
//! - [`persist`]: [`MqttServer::open`], restoring sessions and retained messages at startup,
//!   checkpoints of the state journal ([`crate::state`]), metrics of saved state.
//! - [`limits`]: the caps on sessions, subscriptions per client and retained messages.
//! - [`sys`]: the `$SYS/broker/...` and `$SYS/edge/...` topics, published every
//!   `sys_interval`.
//!
//! Between these rooms imports run one way (none imports a room that imports it back):
//! `listen` → `connection`, `server`, `park`; `connection` → `server`, `session`, `park`, `pace`, `retained`, `limits`;
//! `persist` → `server`, `session`, `limits`; `server` → `session`, `park`, `retained`,
//! `limits`, `sys`. The state every connection reads is in `server`, which imports neither the
//! connections nor `persist`; only `listen` spawns connections.
//!
//! The difference from other brokers: a QoS 1/2 publish on a routed topic is acknowledged
//! (PUBACK / PUBREC) only once edge-log reports it durable under the configured fsync policy.
//! Clients may not publish into `$SYS/` or to a `$share/` name (as Mosquitto 2: v5 0x87 Not
//! authorized, 3.1.1 a plain acknowledgement; neither stored nor delivered).

pub mod connection;
pub mod limits;
pub mod listen;
pub mod pace;
pub mod park;
pub mod persist;
pub mod retained;
pub mod server;
pub mod session;
pub mod sys;

pub use server::MqttServer;
