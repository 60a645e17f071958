//! edge-broker: the broker process.
//!
//! Crate map:
//! - [`cli`]: command-line arguments (`run`, `check`, `--config`).
//! - [`config`]: the TOML schema, built-in defaults and validation that names the bad field.
//! - [`logging`]: `tracing` setup for journald, terminals and JSON.
//! - [`shutdown`]: SIGTERM/SIGINT → one cancellation token, and the drain deadline.

pub mod cli;
pub mod config;
pub mod logging;
pub mod shutdown;
