//! Observability: Prometheus text rendering and the `/metrics` + `/healthz` endpoint.

pub mod http;
pub mod text;

pub use http::{Observe, serve};
pub use text::PromText;
