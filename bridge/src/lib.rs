//! edge-bridge: forwards records from an edge-log cursor to Kafka, in order, with batching,
//! murmur2 partitioning, retries and backoff. Each record carries its destination (Kafka topic,
//! key, pinned partition), decided once by the broker's routes when it was ingested; only
//! records written before destinations were stored are routed here, through a [`plan::Router`]
//! the broker supplies.
//!
//! Modules, each owning one thing:
//! - [`topition`]: [`topition::Topition`], a topic and one of its partitions.
//! - [`partition`]: Kafka's default partitioner (Java `Utils.murmur2`, `toPositive % n`) and the
//!   null-key policy (sticky per batch, round-robin across batches).
//! - [`headers`]: the `edge-node` / `edge-offset` / `edge-source` / `edge-topic` headers plus
//!   user headers, built from an [`edge_log::Record`]; owns [`headers::RecordHeader`] (one Kafka
//!   record header, re-exported as `producer::RecordHeader`).
//! - [`plan`]: one chunk of log records → per-partition batches (destination, partition,
//!   headers), log order kept per partition.
//! - [`forward`]: the forwarder — reader (named log cursor → chunks, commits), planning stage
//!   (the one planner), sender (the one sending path: pipelined sends, resends, splits, dead
//!   letters), pacing.
//! - [`uplink`]: the uplink's state for `/metrics` (decided here, kept in [`metrics`]), an
//!   outage told in a few log lines, and the retry wait a probe cuts short when Kafka is back.
//! - [`backoff`]: jittered exponential backoff with a cap.
//! - [`position`]: where exactly-once forwarding resumes: the local cursor or the position
//!   committed to Kafka in the last transaction (log identity, the rules).
//! - [`dead_letter`]: where records Kafka refuses for good go (JSON-lines file or a topic).
//! - [`metrics`]: the forwarder's counters and gauges (records, bytes, errors by kind, lag,
//!   uplink state, last error); owns [`metrics::UplinkState`] (re-exported as
//!   `uplink::UplinkState`).
//! - [`producer`]: the [`producer::KafkaProducer`] trait, error classification in
//!   [`producer::error`] ([`producer::ProduceError`], [`producer::ErrorClass`], Kafka's error
//!   codes; re-exported as `producer::…`), and [`producer::WireProducer`], our producer on the
//!   `kafka-protocol` crate (TCP_NODELAY, request timeout, acks=all, pure-Rust compression),
//!   with the idempotent producer's state machine in [`producer::sequence`].
//!
//! Arrows, the only imports between them (one way, no circles):
//! - `topition`, `partition`, `headers`, `backoff`, `position`: import no other module.
//! - `producer` → headers, topition, backoff, position. Inside it, `producer::error` imports no
//!   other module; the producer's parts import their errors from it, not from `producer`.
//! - `metrics` → producer; `uplink` → metrics, producer, backoff.
//! - `plan` → headers, partition, producer, topition; `dead_letter` → headers, producer,
//!   topition.
//! - `forward` → plan, producer, uplink, metrics, dead_letter, position, backoff, topition.

pub mod backoff;
pub mod dead_letter;
pub mod forward;
pub mod headers;
pub mod metrics;
pub mod partition;
pub mod plan;
pub mod position;
pub mod producer;
pub mod topition;
pub mod uplink;
