//! The MQTT 3.1.1 and 5 front end.
//!
//! - [`server`]: listener, session registry, retained store, wills, expiry, state snapshots.
//! - [`connection`]: one client connection: CONNECT, packet loop, durable acks, delivery.
//! - [`session`]: what outlives a connection, and its snapshot form.
//! - [`retained`]: the retained message store.
//!
//! The difference from other brokers: a QoS 1/2 publish on a routed topic is acknowledged
//! (PUBACK / PUBREC) only once edge-log reports it durable under the configured fsync policy.

pub mod connection;
pub mod retained;
pub mod server;
pub mod session;

pub use server::{MqttServer, MqttStartError};
