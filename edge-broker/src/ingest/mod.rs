//! The one ingest path of every publish, shared by MQTT publishes, MQTT wills and NATS
//! publishes:
//!
//! ```text
//! decoded publish ─▶ check ─▶ route ─▶ queue ─────────────▶ log (submit_encoded, in order)
//!  (front end)      (check)  (RouteTable   (queue: one per       │ written ─▶ deliver locally (hub)
//!                             ::decide,     connection)          │ durable ─▶ answer, in arrival order
//!                             once)                              ▼            (PUBACK/PUBREC, PubAck)
//!                                                             forwarder (the destination travels
//!                                                                        with the record)
//! ```
//!
//! - [`check`]: the permission check between decoding and ingest ([`check::check_publish`]:
//!   the reserved-name rule and the ACL, also callable one by one).
//! - [`record`]: the log record a routed publish becomes (destination, headers, payload).
//! - [`queue`]: [`IngestQueue`], a connection's ordered batches to the log (encoded on the
//!   connection's thread: the log's writer only frames them) and the answers it owes;
//!   [`queue::ingest_one`] for a will, which has no connection left.
//!
//! A publish no route takes skips the log: it is delivered at once and its answer (if any)
//! still waits for the answers before it. The route decision is made once per publish
//! ([`crate::route::RouteTable::decide`]) and stored with the record, so the forwarder never
//! matches again.

pub mod check;
pub mod queue;
pub mod record;

pub use check::{Denied, Publisher, check_permitted, check_publish, check_reserved};
pub use queue::{Answer, Event, IngestLimits, IngestQueue, Outcome};
