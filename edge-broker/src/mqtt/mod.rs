//! The MQTT 3.1.1 and 5 front end.
//!
//! - [`server`]: listener, session registry, retained store, wills, expiry.
//! - [`connection`]: one client connection: CONNECT, packet loop, durable acks, delivery.
//! - [`session`]: what outlives a connection, and how its changes are recorded.
//! - [`retained`]: the retained message store (bounded in count and bytes).
//! - [`persist`]: restoring sessions and retained messages at startup, checkpoints of the
//!   state journal ([`crate::state`]), metrics of saved state.
//! - [`limits`]: the caps on sessions, subscriptions per client and retained messages.
//!
//! The difference from other brokers: a QoS 1/2 publish on a routed topic is acknowledged
//! (PUBACK / PUBREC) only once edge-log reports it durable under the configured fsync policy.

pub mod connection;
pub mod limits;
pub mod persist;
pub mod retained;
pub mod server;
pub mod session;

pub use server::{MqttMetrics, MqttServer};
