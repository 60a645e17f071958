//! Routing published messages to subscribers, across MQTT and NATS.
//!
//! - [`filter`]: subscription filters as levels, with each protocol's wildcard meaning.
//! - [`tree`]: the subscription tree, with shared (load-balanced) groups.

pub mod filter;
pub mod tree;

pub use filter::{Filter, FilterError, Level};
pub use tree::{Matched, SubscriptionTree};
