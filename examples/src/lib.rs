//! edge-examples: runnable examples for edge-broker users (see `examples/README.md`).
//!
//! Rust examples live in `examples/examples/` (`cargo run -p edge-examples --example
//! mqtt_sensors -- --help`); the Python ones, the sample config and the demo script sit next to
//! this crate: `mqtt_sensors.py`, `nats_sensors.py`, `kafka_consumer.py`, `edge-broker.toml`,
//! `demo.sh`. This library itself is empty.
