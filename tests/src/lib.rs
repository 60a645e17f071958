//! edge-tests: helpers for end-to-end tests that run the real `edge-broker` binary against real
//! peers on 127.0.0.1 (the tests themselves live in `tests/tests/`).
//!
//! Crate map:
//! - [`acked`]: a publisher that reports what the broker acknowledged, and the checks of what
//!   reached Kafka (nothing missing, log order per partition, recognisable duplicates).
//! - [`broker`]: start `edge-broker` with a config in a temporary data directory, wait until it
//!   is ready, read its log lines, stop it with SIGTERM or SIGKILL.
//! - [`kafka`]: a real Kafka-protocol broker (Tansu) on an ephemeral port, and an independent
//!   reader (librdkafka through confluent-kafka) of what reached it.
//! - [`kafka_proxy`]: a fault-injecting Kafka-protocol proxy (errors in Produce answers,
//!   throttling, resets mid-answer, slow or silent brokers) that counts requests per second.
//! - [`txn_reader`]: a wire-level read_committed reader (drops the batches of aborted
//!   transactions by their control markers) for brokers whose Fetch answers do not list them.
//! - [`mqtt`]: the MQTT scenario driver (real clients), Mosquitto as a reference broker, RSS.
//! - [`pki`]: a CA, server and device certificates for TLS tests (rcgen, PEM files).
//! - [`peers`]: find the peer programs (mosquitto, nats-server, Python clients) or fail saying
//!   how to install them.

// This crate exists to fail tests loudly: a panic with a clear message is its error report.
#![allow(clippy::expect_used, clippy::unwrap_used)]

pub mod acked;
pub mod broker;
pub mod kafka;
pub mod kafka_proxy;
pub mod mqtt;
pub mod peers;
pub mod pki;
pub mod txn_reader;
