//! Observability: Prometheus text rendering and the `/metrics`, `/healthz`, `/readyz` endpoint.
//!
//! - [`text`]: the Prometheus text format writer ([`PromText`]).
//! - [`front`]: the counters of the MQTT and NATS front ends ([`FrontMetrics`]) and their families.
//! - [`process`]: the standard `process_*` families (memory, CPU, file descriptors, start
//!   time) from `/proc/self`.
//! - [`http`]: the tiny HTTP server for `/metrics`, `/healthz` and `/readyz` ([`Observe`]).

pub mod front;
pub mod http;
pub mod process;
pub mod text;

pub use front::{DropReason, FrontMetrics, Protocol};
pub use http::{Observe, serve};
pub use text::PromText;
