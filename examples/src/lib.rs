//! edge-examples: runnable examples for edge-broker users (see `examples/README.md`).
//!
//! The examples themselves are scripts and a config next to this crate: `mqtt_sensors.py`,
//! `nats_sensors.py`, `kafka_consumer.py`, `edge-broker.toml` and `demo.sh`. This library is
//! empty; the crate keeps a place in the workspace for Rust examples (`cargo run --example`).
