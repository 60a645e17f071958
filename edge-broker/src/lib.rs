//! edge-broker: the broker process.
//!
//! Crate map:
//! - [`cli`]: command-line arguments (`run`, `check`, `status`, `log …`, `--config`).
//! - [`config`]: the TOML schema, built-in defaults, `EDGE_BROKER_*` overrides, validation that
//!   reports every problem with its field and line, and the summary `check` prints.
//! - [`auth`]: who may connect and what they may touch: Mosquitto password and ACL files,
//!   one identity model for MQTT and NATS, failed-login delays, session ownership, secrets
//!   from files.
//! - [`logging`]: `tracing` setup for journald, terminals and JSON.
//! - [`status`]: `edge-broker status`: asks the running broker's `/metrics` and `/healthz`.
//! - [`inspect`]: `edge-broker log …`: read-only views of a data directory; dead-letter requeue.
//! - [`shutdown`]: SIGTERM/SIGINT → one cancellation token, and the drain deadline.
//! - [`notify`]: systemd's sd_notify protocol (READY, STATUS, WATCHDOG, STOPPING).
//! - [`reload`]: SIGHUP re-reads the config and swaps routes in place.
//! - [`metrics`]: Prometheus text, the front ends' counters rendered beside them, and the
//!   `/metrics` + `/healthz` endpoint.
//! - [`route`]: `[[route]]` entries and the shared [`route::RouteTable`]: which publishes are
//!   stored, and their Kafka destination, decided once at ingest.
//! - [`router`]: subscription filters and the subscription tree shared by MQTT and NATS.
//! - [`message`]: the protocol-neutral message delivered to subscribers.
//! - [`hub`]: all live subscriptions and fan-out into subscribers' bounded mailboxes (and the
//!   room a paced MQTT publisher waits on when one is full).
//! - [`ingest`]: the one path of every publish (MQTT, wills, NATS): permission check, route
//!   decision, ordered batches to the log, local delivery once written, answers once durable.
//! - [`admission`]: who may hold a connection: seats for clients that logged in, a separate
//!   count of connections that have not, per-source caps.
//! - [`listener`]: the bounded accept loop shared by the MQTT and NATS front ends, the
//!   byte-stream halves connections are served over (TCP, TLS, or in tests in-memory pipes),
//!   and the read-buffer policy both use (small while quiet, large chunks in bursts).
//! - [`input_pool`]: the bytes of packets larger than a read that clients are still sending,
//!   leased from one pool per protocol (`max_partial_packet_bytes_total`).
//! - [`websocket`]: MQTT over WebSockets: the upgrade (path, `mqtt` subprotocol) and the pump
//!   that serves a WebSocket client through the same byte-stream halves as TCP.
//! - [`tls`]: rustls server configuration for the MQTT and NATS TLS listeners (optionally mutual).
//! - [`mqtt`]: the MQTT 3.1.1/5 server (sessions, retained messages, wills, durable acks;
//!   one connection in `mqtt/connection/`: login, inbound, outbound, subscribe, close).
//! - [`nats`]: the NATS server (client protocol, cross-protocol delivery, durable PubAcks;
//!   one connection in `nats/connection/`: outbox, login, publish, settle, subscribe).
//! - [`state`]: the state journal of persistent MQTT sessions and retained messages (format,
//!   writer, replay, migration of the first release's snapshot files).
//! - [`state_file`]: small state files written crash-safely (MQTT session owners).
//! - [`forwarder`]: the Kafka forwarder task (edge-bridge) in the broker, and its metrics.
//! - [`app`]: the running broker: data-dir lock, log recovery, serve, drain.

pub mod admission;
pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod forwarder;
pub mod hub;
pub mod ingest;
pub mod input_pool;
pub mod inspect;
pub mod listener;
pub mod logging;
pub mod message;
pub mod metrics;
pub mod mqtt;
pub mod nats;
pub mod notify;
pub mod reload;
pub mod route;
pub mod router;
pub mod shutdown;
pub mod state;
pub mod state_file;
pub mod status;
pub mod tls;
pub mod websocket;
