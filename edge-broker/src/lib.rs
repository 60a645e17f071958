//! edge-broker: the broker process.
//!
//! Crate map:
//! - [`cli`]: command-line arguments (`run`, `check`, `--config`).
//! - [`config`]: the TOML schema, built-in defaults and validation that names the bad field.
//! - [`logging`]: `tracing` setup for journald, terminals and JSON.
//! - [`shutdown`]: SIGTERM/SIGINT → one cancellation token, and the drain deadline.
//! - [`notify`]: systemd's sd_notify protocol (READY, STATUS, WATCHDOG, STOPPING).
//! - [`metrics`]: Prometheus text and the `/metrics` + `/healthz` endpoint.
//! - [`router`]: subscription filters and the subscription tree shared by MQTT and NATS.
//! - [`app`]: the running broker: data-dir lock, log recovery, serve, drain.

pub mod cli;
pub mod config;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod router;
pub mod shutdown;
