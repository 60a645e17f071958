//! The NATS server: the NATS client protocol on top of the shared hub and the durable log.
//!
//! - [`server`]: [`NatsServer`] (listener, INFO, routes, metrics, cross-protocol publishing).
//! - [`connection`]: one client connection (CONNECT/auth, PUB/HPUB, SUB/UNSUB, PING/PONG,
//!   durable PubAcks, slow-consumer handling, backpressure from the log).
//! - [`dedup`]: the `Nats-Msg-Id` duplicate window.
//!
//! Names: a NATS subject `a.b.c` is the MQTT topic `a/b/c` in the hub, by
//! [`edge_proto::nats::subject`]'s mapping (`.` inside an MQTT level is `//` in NATS, an empty
//! MQTT level is the token `/`). A NATS subscription `a.>` is stored as the MQTT filter `a/+/#`
//! (one or more levels), `*` as `+`.

pub mod connection;
pub mod dedup;
pub mod server;

pub use server::{NatsMetrics, NatsServer};
