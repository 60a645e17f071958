//! The NATS server: the NATS client protocol on top of the shared hub and the durable log.
//!
//! - [`listen`]: the listener's accept loop ([`NatsServer::serve`]), which spawns a
//!   [`connection`] for every client.
//! - [`server`]: [`NatsServer`], the state every connection shares (settings, INFO, auth, hub
//!   keys, routes, metrics), and the mapping of subjects and messages onto the hub.
//! - [`connection`]: one client connection over any byte stream, in rooms: the serve loop
//!   (PING/PONG, backpressure from the log, slow consumers), `login` (CONNECT/auth), `publish`
//!   (PUB/HPUB through [`crate::ingest`]), `settle` (local delivery once written, durable
//!   PubAcks), `subscribe` (SUB/UNSUB); below them `state` (the `Connection` they all work on
//!   and the records it keeps), `facts` (per-subject decisions) and `outbox` (bounded output,
//!   MSG/HMSG).
//! - [`dedup`]: the `Nats-Msg-Id` duplicate window.
//!
//! Between these rooms imports run one way (none imports a room that imports it back):
//! `listen` → `connection`, `server`; `connection` → `server`; `server` → `dedup`. The state
//! every connection reads is in `server`, which imports no connection; only `listen` spawns
//! connections.
//!
//! # Names across protocols
//!
//! The hub keys everything by MQTT topic; NATS names are mapped at the edge with
//! [`edge_proto::nats::subject`] (nats-server's own MQTT mapping):
//!
//! | NATS subject  | MQTT topic | rule |
//! |---------------|------------|------|
//! | `a.b.c`       | `a/b/c`    | `.` separates tokens, `/` separates levels |
//! | `a.v1//2`     | `a/v1.2`   | a `.` inside an MQTT level is `//` in NATS |
//! | `/.a`, `a./`  | `/a`, `a/` | an empty MQTT level is the token `/` |
//! | `a.*` (SUB)   | `a/+`      | one token / level |
//! | `a.>` (SUB)   | `a/+/#`    | one or more tokens (NATS `>` never matches `a` itself) |
//!
//! A subject with no MQTT equivalent (a lone `/` inside a token, such as `a/b`) is accepted but
//! reaches nobody (counted as `edge_messages_dropped_total{reason="unmappable_subject"}`), and
//! so is an MQTT topic with a level `*` or `>` on its way to NATS subscribers. NATS headers
//! travel as MQTT 5 user properties (in order, repeated keys kept); a header block that is empty
//! or carries only a status line is delivered without headers. A NATS reply subject travels as
//! the MQTT 5 response topic, so MQTT 5 clients can answer NATS requests and vice versa.
//! Wildcard subscriptions match `$`-subjects only by a literal first token (MQTT's rule). A
//! client may not publish into `$SYS` (the MQTT `$SYS/` tree): it gets nats-server's
//! `-ERR 'Permissions Violation for Publish to "..."'` and the connection stays; other
//! `$`-subjects (`$JS.API...`) are ordinary.
//!
//! # Durable publishes (JetStream-compatible acks)
//!
//! A PUB/HPUB on a subject matched by a `[[route]]` with `nats = "..."` is appended to the log.
//! With a reply subject it is answered there with `{"stream":"<kafka_topic>","seq":<offset>}`
//! once the record is durable (after the fdatasync under `fsync = "always"`), which is what
//! `js.publish()` waits for: the stream name is the matching route's Kafka topic and `seq` is
//! the log offset. `Nats-Msg-Id` is remembered per stream for `nats.duplicate_window` (at most
//! `nats.max_duplicate_ids`): a repeat is answered `"duplicate":true` with the first seq and is
//! not stored again. `Nats-Expected-Stream` that does not match gets error 400. A log that
//! refuses the append (full under `reject`, too large, failed) answers
//! `{"error":{"code":503|400,...}}`, which nats clients raise. Subscribers get routed messages
//! without the reply subject (that reply belongs to the ack). A request on a non-routed
//! subject is plain request/reply.
//!
//! Hub keys of NATS connections and subscriptions start at [`server::NATS_KEY_BASE`] (`1 << 62`);
//! every subscription has its own key, so overlapping subscriptions of one connection each get
//! their copy, as in nats-server. Queue groups are the hub's share groups (a NATS queue group
//! and an MQTT `$share` group of the same name on the same filter are one group).

pub mod connection;
pub mod dedup;
pub mod listen;
pub mod server;

pub use server::NatsServer;
