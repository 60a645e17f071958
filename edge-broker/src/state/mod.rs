//! The MQTT state journal: persistent sessions and retained messages, saved change by change.
//!
//! # Modules
//! - [`record`]: [`Record`], the unit of change, and the stored forms of messages,
//!   deliveries and subscriptions.
//! - [`file`](mod@file): the byte layout below (header, frames, file names).
//! - [`journal`]: [`Journal`], appending under the caller's lock, the writer thread, group
//!   commit, durability tickets ([`Commit`]), generations and checkpoints.
//! - [`model`]: [`StateModel`], what a replay rebuilds, and how each record applies.
//! - [`replay`]: loading at startup; moving unloadable files aside.
//! - [`legacy`]: the snapshot files of the first release, migrated on first start.
//!
//! # Why a journal
//!
//! The first release rewrote `sessions.bin` and `retained.bin` whole, once a second when
//! anything changed: bytes written grew with the size of the state, not with the change
//! (5,000 offline sessions subscribed to `#` and 200 publishes of 1 KB wrote 1.4 GB in 5 s;
//! 300 retained messages of 1 MiB rewrote 315 MB every second), and a power cut lost up to a
//! second of acknowledged changes. The journal appends what changed (a subscription, a
//! delivery queued, acknowledged, a retained message set); a message queued for many
//! sessions is written once per generation and referenced by id. A change a client is told
//! about (SUBACK, the PUBACK of a message queued for a persistent session, a retained
//! message) is durable first. Records are not kept in edge-log: its retention follows the
//! Kafka forwarder's cursor and its disk budget may drop data (`when_full = "drop_oldest"`),
//! while session state must live as long as the session. BENCHMARKS.md has the numbers.
//!
//! # On-disk layout (journal format version 1)
//!
//! ```text
//! <data_dir>/mqtt/NNNNNNNNNNNNNNNNNNNN.journal      generation N (20 digits, zero-padded)
//! <data_dir>/mqtt/NNNNNNNNNNNNNNNNNNNN.journal.tmp  generation N while its first checkpoint
//!                                                   is written at startup
//! <data_dir>/mqtt/NAME.damaged-YYYYMMDDTHHMMSSZ     a state file that could not be loaded
//! <data_dir>/mqtt/sessions.bin.migrated             legacy files after their migration
//!
//! file header, 32 bytes:
//!   0..8    magic "EBSTATE\0"
//!   8..10   format version, u16 LE (= 1)
//!   10..12  reserved, zero
//!   12..20  generation, u64 LE (must match the file name)
//!   20..28  incarnation, u64 LE: the writing process (session keys are per process)
//!   28..32  crc32c (Castagnoli) of bytes 0..28, u32 LE
//! then frames back to back until end of file:
//!   0..4    len: body length, u32 LE (>= 1; never past the end of the file)
//!   4..8    crc32c of the body, u32 LE
//!   8..     body: one or more records back to back, each a postcard `Record`
//!
//! Record (postcard: varint variant index, then fields in order; integers are LEB128
//! varints, strings and byte strings are varint length + bytes, Option is a 0/1 byte then
//! the value, Vec is a varint count then the elements, a tuple its fields in order):
//!   0  Message { id u64, message StoredMessage }
//!   1  SessionOpen { sid u64, client_id str, expiry_secs u32 }
//!   2  SessionImage { sid, client_id str, expiry_secs u32, disconnected_at_ms Option<u64>,
//!                     subscriptions Vec<(filter str, StoredSubscription)>,
//!                     queue Vec<StoredDelivery>, inflight Vec<(packet_id u16, released bool,
//!                     StoredDelivery)>, inbound_qos2 Vec<u16> }
//!   3  Online { sid, expiry_secs u32 }    4  Offline { sid, at_ms u64, expiry_secs u32 }
//!   5  SessionEnd { sid }
//!   6  Subscribe { sid, filter str, StoredSubscription }   7  Unsubscribe { sid, filter str }
//!   8  Enqueue { sid, StoredDelivery }    9  EnqueueFront { sid, StoredDelivery }
//!   10 Dequeue { sid }                    11 QueueImage { sid, Vec<StoredDelivery> }
//!   12 InFlight { sid, packet_id u16, released bool, StoredDelivery }
//!   13 Released { sid, packet_id u16 }   14 Completed { sid, packet_id u16 }
//!   15 InboundQos2 { sid, packet_id u16 } 16 InboundQos2Done { sid, packet_id u16 }
//!   17 RetainSet { id u64 }               18 RetainClear { topic str }
//!   19 CheckpointDone
//! StoredMessage = { topic str, payload bytes, qos u8, retain bool,
//!                   properties { payload_utf8 Option<bool>, expiry_secs Option<u32>,
//!                   content_type Option<str>, response_topic Option<str>,
//!                   correlation_data Option<bytes>, user_properties Vec<(str, str)> },
//!                   received_ms u64, origin (0 = mqtt, 1 = nats) }
//! StoredDelivery = { message id u64, qos u8, retain bool, subscription_ids Vec<u32> }
//! StoredSubscription = { qos u8, no_local bool, retain_as_published bool, id Option<u32> }
//! ```
//!
//! The format is frozen by `tests/state_format.rs` against the checked-in
//! `tests/data/state/00000000000000000001.journal`.
//!
//! # Invariants
//!
//! 1. All records of one session are appended under that session's lock, and all retained
//!    records under the retained store's lock, so each entity's records are in the order its
//!    changes happened.
//! 2. A message id is defined (record 0) in the same generation before its first reference;
//!    ids restart in every generation.
//! 3. Only sessions with a Session Expiry Interval above zero are recorded, and only their
//!    QoS 1/2 deliveries (QoS 0 ones do not outlive a connection).
//! 4. A generation holding `CheckpointDone` holds an image of every session and retained
//!    message that existed when it began, each taken under that entity's lock, after any of
//!    its earlier records in that generation. Replaying it from an empty state gives the
//!    state of its end; replay starts at the newest such generation and continues through
//!    the newer ones.
//! 5. Every start writes a new generation with a complete checkpoint, as a `.tmp` file
//!    renamed once durable; older generations are deleted only after that. A running broker
//!    starts a new generation (checkpoint) once the current one exceeds 4 MiB and twice what
//!    the last checkpoint wrote, and deletes the older ones once that checkpoint is durable.
//! 6. A client hears of a change only once it is durable: SUBACK, the PUBACK/PUBREC of a
//!    publish that queued QoS 1/2 deliveries for persistent sessions or set a retained
//!    message wait for the covering `fdatasync` (one sync covers every change appended before
//!    it: group commit). `[log] fsync` chooses the policy for the journal too.
//! 7. Nothing in a state file can stop a start: a file that cannot be loaded (bad header,
//!    wrong version, unreadable, a damaged frame in an older generation, a legacy file that
//!    does not decode) is renamed aside, logged with its path and reason, counted in
//!    `edge_state_files_quarantined_total`, and the broker starts without it. Bytes after the
//!    last readable frame of the newest generation are the torn tail of a power cut: cut,
//!    logged, not counted. A frame's length is checked against the bytes left in the file
//!    before anything is allocated for it.

pub mod file;
pub mod journal;
pub mod legacy;
pub mod model;
pub mod record;
pub mod replay;

pub use journal::{Commit, Journal, JournalError, JournalStats};
pub use model::{ModelSession, StateModel};
pub use record::Record;
pub use replay::{LoadReport, Quarantined, TornTail};
