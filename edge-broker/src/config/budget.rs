//! The memory budget: what every limit lets clients make the broker hold, at worst and all at
//! once, against the unit's `MemoryMax=744M` (`systemd/edge-broker.service`). The defaults fit
//! it; `edge-broker check` warns when a configuration does not (README, "The memory budget").
//!
//! Each row is a limit times what one unit of it holds, as measured on x86_64 (BENCHMARKS.md,
//! SECURITY.md). A logged-in client's input is its read buffer (one read) and, for a larger
//! packet, a lease from `max_partial_packet_bytes_total` ([`crate::input_pool`]), which its
//! record keeps until the log has written it. So what a log that takes nothing (full under
//! `when_full = "block"`) makes connections hold is the pool and, per connection, the batch
//! of small publishes it decoded from its last read (a row of its own). Of the kernel's memory,
//! charged to the unit's cgroup too, the budget counts the
//! send buffers of clients that stopped reading (`socket_unsent_limit`) and the receive
//! buffers of clients the broker does not read (`socket_receive_buffer`: before login,
//! paused by a full log or a slow subscriber, or merely behind).

use super::{ByteSize, Config};

/// `MemoryMax` of the packaged unit.
pub const MEMORY_MAX: u64 = 744 << 20;
/// What the broker takes with no client (code, runtime, log and journal buffers), measured
/// about 20 MiB, with room for the allocator's slack.
pub const BASE: u64 = 32 << 20;
/// What a connection that has not logged in holds besides its CONNECT (buffers, task).
const PENDING_OVERHEAD: u64 = 2 << 10;
/// Output an MQTT connection holds before it stops moving deliveries into it.
pub const MQTT_OUTPUT_PER_CONNECTION: u64 = 64 << 10;
/// A NATS connection's input buffer: a 64 KiB read, with room for a quarter more (a larger
/// op is leased from `max_partial_packet_bytes_total`).
pub const NATS_INPUT_PER_CONNECTION: u64 = 80 << 10;
/// An MQTT connection's input buffer: an 8 KiB read, and a packet of up to 8 KiB (a larger
/// one is leased from `max_partial_packet_bytes_total`).
pub const MQTT_INPUT_PER_CONNECTION: u64 = 16 << 10;
/// What an MQTT connection holds while a full log holds its last batch: up to 1,024 small
/// publishes decoded from one read, their records and bookkeeping (measured 100–124 KiB per
/// connection with its buffers, 200 clients streaming empty and 100-byte publishes; 51–64 KiB
/// since a batch reserves its room instead of doubling it).
pub const MQTT_HELD_FOR_LOG: u64 = 160 << 10;
/// The same for NATS: up to 2,048 PUBs from one 64 KiB read (measured 153–210 KiB with a
/// release build and 200 clients; 266 KiB with a debug one and 100 clients in CI, where what
/// filling the log costs once is shared by fewer; 168–196 KiB since a batch reserves its room
/// and a PUB waiting for the log takes two words, 200 clients).
pub const NATS_HELD_FOR_LOG: u64 = 320 << 10;
/// NATS output buffers grow by doubling: measured RSS is about three times the bytes waiting.
const NATS_OUTPUT_FACTOR: u64 = 3;
/// What the kernel's autotuning lets one connection's send buffer grow to when
/// `socket_unsent_limit` is `"0B"` (`net.ipv4.tcp_wmem`'s default maximum, 4 MiB).
const AUTOTUNED_SEND_BUFFER: u64 = 4 << 20;
/// What the kernel's autotuning lets one connection's receive buffer grow to when
/// `socket_receive_buffer` is `"0B"` (`net.ipv4.tcp_rmem`'s default maximum, 6 MiB).
const AUTOTUNED_RECEIVE_BUFFER: u64 = 6 << 20;
/// What a stalled client's socket holds beyond `socket_unsent_limit`: the segment being filled
/// when the limit was reached, and a first window in flight to a peer that never acknowledges
/// (measured 1.6 KiB over a 16 KiB limit with 500 stalled subscribers).
const UNSENT_OVERSHOOT: u64 = 16 << 10;
/// A persistent session without its subscriptions and deliveries (measured 1.7 KB).
const SESSION_BYTES: u64 = 1800;
/// Bookkeeping of one retained message besides its bytes (measured ~450 B).
const RETAINED_OVERHEAD: u64 = 450;
/// A delivery a publishing connection holds while it waits for room (`slow_subscriber_wait`),
/// with its slot: measured ~72 B, rounded up.
const WAITING_DELIVERY_BYTES: u64 = 128;
/// The state journal's backlog before connections waiting for a commit stop reading.
const JOURNAL_BACKLOG: u64 = 8 << 20;
/// What one chunk the Kafka forwarder holds costs per byte of `max_batch_bytes`: the log
/// bytes read, the records read back and planned for Kafka, the encoded batches. Draining a
/// backlog of 1,000,000 records at the defaults, with 16, 200 and 1,000-byte payloads, a
/// freshly started broker's peak RSS grew by 28, 38 and 24 MiB: at most 4.75 per byte.
const KAFKA_CHUNK_FACTOR: u64 = 5;

/// One limit's share of the budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// What is held, and the keys that bound it.
    pub what: &'static str,
    /// The limit times the unit, in words.
    pub bound: String,
    /// Bytes at worst.
    pub bytes: u64,
}

/// Every row of the budget for `config` (MQTT and NATS rows only when they are enabled).
pub fn rows(config: &Config) -> Vec<Row> {
    let mut rows = Vec::new();
    let m = &config.mqtt;
    if m.enabled {
        let pending = m.max_pending_connections as u64;
        rows.push(Row {
            what: "MQTT connections not logged in",
            bound: format!(
                "max_pending_connections {pending} × (max_connect_size {} + 2 KiB)",
                m.max_connect_size
            ),
            bytes: pending * (m.connect_size_limit() + PENDING_OVERHEAD),
        });
        let connections = m.max_connections as u64;
        rows.push(Row {
            what: "MQTT input buffers",
            bound: format!("max_connections {connections} × 16 KiB"),
            bytes: connections * MQTT_INPUT_PER_CONNECTION,
        });
        rows.push(partial_packets(
            "MQTT packets larger than a read, arriving",
            m.max_partial_packet_bytes_total,
        ));
        rows.push(Row {
            what: "MQTT publishes a full log holds",
            bound: format!("max_connections {connections} × 160 KiB (one read's batch each)"),
            bytes: connections * MQTT_HELD_FOR_LOG,
        });
        rows.push(Row {
            what: "MQTT output waiting in connections",
            bound: format!("max_connections {connections} × 64 KiB"),
            bytes: connections * MQTT_OUTPUT_PER_CONNECTION,
        });
        rows.push(kernel_send_buffers(
            "MQTT kernel send buffers",
            connections,
            m.socket_unsent_limit,
        ));
        rows.push(kernel_receive_buffers(
            "MQTT kernel receive buffers",
            connections,
            pending,
            m.socket_receive_buffer,
        ));
        rows.push(Row {
            what: "MQTT deliveries queued and in flight",
            bound: format!("max_queued_bytes_total {}", m.max_queued_bytes_total),
            bytes: m.max_queued_bytes_total.bytes(),
        });
        if !m.slow_subscriber_wait.0.is_zero() {
            let waiting = crate::hub::MAX_WAITING as u64;
            rows.push(Row {
                what: "MQTT deliveries waiting for room",
                bound: format!(
                    "max_connections {connections} × {waiting} × 128 B (slow_subscriber_wait)"
                ),
                bytes: connections * waiting * WAITING_DELIVERY_BYTES,
            });
        }
        let holders = (m.max_sessions + m.max_connections) as u64;
        rows.push(Row {
            what: "MQTT subscriptions",
            bound: format!(
                "(max_sessions {} + max_connections {}) × max_subscription_bytes_per_client {}",
                m.max_sessions, m.max_connections, m.max_subscription_bytes_per_client
            ),
            bytes: holders * m.max_subscription_bytes_per_client.bytes(),
        });
        rows.push(Row {
            what: "MQTT persistent sessions",
            bound: format!("max_sessions {} × 1.8 KB", m.max_sessions),
            bytes: m.max_sessions as u64 * SESSION_BYTES,
        });
        rows.push(Row {
            what: "MQTT retained messages",
            bound: format!(
                "max_retained_bytes {} + max_retained {} × 450 B",
                m.max_retained_bytes, m.max_retained
            ),
            bytes: m.max_retained_bytes.bytes() + m.max_retained as u64 * RETAINED_OVERHEAD,
        });
        rows.push(Row {
            what: "MQTT state journal backlog",
            bound: "8 MiB".to_owned(),
            bytes: JOURNAL_BACKLOG,
        });
    }
    let n = &config.nats;
    if n.enabled {
        let pending = n.max_pending_connections as u64;
        rows.push(Row {
            what: "NATS connections not logged in",
            bound: format!("max_pending_connections {pending} × (80 KiB buffer + 4 KiB payload)"),
            bytes: pending * (NATS_INPUT_PER_CONNECTION + (4 << 10)),
        });
        let connections = n.max_connections as u64;
        rows.push(Row {
            what: "NATS input buffers",
            bound: format!("max_connections {connections} × 80 KiB"),
            bytes: connections * NATS_INPUT_PER_CONNECTION,
        });
        rows.push(partial_packets(
            "NATS PUBs larger than a read, arriving",
            n.max_partial_packet_bytes_total,
        ));
        rows.push(Row {
            what: "NATS publishes a full log holds",
            bound: format!("max_connections {connections} × 320 KiB (one read's batch each)"),
            bytes: connections * NATS_HELD_FOR_LOG,
        });
        rows.push(kernel_send_buffers(
            "NATS kernel send buffers",
            connections,
            n.socket_unsent_limit,
        ));
        rows.push(kernel_receive_buffers(
            "NATS kernel receive buffers",
            connections,
            pending,
            n.socket_receive_buffer,
        ));
        rows.push(Row {
            what: "NATS output waiting in connections",
            bound: format!("3 × max_pending_total {}", n.max_pending_total),
            bytes: NATS_OUTPUT_FACTOR * n.max_pending_total.bytes(),
        });
    }
    let k = &config.kafka;
    if k.enabled {
        let chunks = edge_bridge::forward::CHUNKS_HELD as u64;
        rows.push(Row {
            what: "Kafka forwarder draining a backlog",
            bound: format!(
                "{chunks} chunks × {KAFKA_CHUNK_FACTOR} × max_batch_bytes {}",
                k.max_batch_bytes
            ),
            bytes: chunks * KAFKA_CHUNK_FACTOR * k.max_batch_bytes.bytes(),
        });
    }
    rows
}

/// The pool of large packets that clients are still sending: all of them together.
fn partial_packets(what: &'static str, pool: ByteSize) -> Row {
    Row {
        what,
        bound: format!("max_partial_packet_bytes_total {pool}"),
        bytes: pool.bytes(),
    }
}

/// What the kernel holds for `connections` subscribers that stopped reading, charged to the
/// unit's cgroup: `socket_unsent_limit` and [`UNSENT_OVERSHOOT`] each, or
/// [`AUTOTUNED_SEND_BUFFER`] without a limit.
fn kernel_send_buffers(what: &'static str, connections: u64, limit: ByteSize) -> Row {
    if limit.bytes() == 0 {
        return Row {
            what,
            bound: format!(
                "max_connections {connections} × 4 MiB (socket_unsent_limit \"0B\": autotuned)"
            ),
            bytes: connections * AUTOTUNED_SEND_BUFFER,
        };
    }
    Row {
        what,
        bound: format!(
            "max_connections {connections} × (socket_unsent_limit {limit} + 16 KiB under way)"
        ),
        bytes: connections * (limit.bytes() + UNSENT_OVERSHOOT),
    }
}

/// What the kernel holds for clients whose bytes the broker does not read, charged to the
/// unit's cgroup: every socket, logged in (`connections`) or not yet (`pending`), may fill
/// `socket_receive_buffer` (the whole buffer, as `ss` shows it), or
/// [`AUTOTUNED_RECEIVE_BUFFER`] without one.
fn kernel_receive_buffers(
    what: &'static str,
    connections: u64,
    pending: u64,
    size: ByteSize,
) -> Row {
    let sockets = connections + pending;
    let (unit, per_socket) = match size.bytes() {
        0 => (
            "6 MiB (socket_receive_buffer \"0B\": autotuned)".to_owned(),
            AUTOTUNED_RECEIVE_BUFFER,
        ),
        bytes => (format!("socket_receive_buffer {size}"), bytes),
    };
    Row {
        what,
        bound: format!(
            "(max_connections {connections} + max_pending_connections {pending}) × {unit}"
        ),
        bytes: sockets * per_socket,
    }
}

/// The rows together, plus [`BASE`].
pub fn worst_case(config: &Config) -> u64 {
    BASE + rows(config).iter().map(|r| r.bytes).sum::<u64>()
}

/// A warning when the worst case of the limits together exceeds [`MEMORY_MAX`], naming the
/// largest rows.
pub fn warning(config: &Config) -> Option<String> {
    let total = worst_case(config);
    if total <= MEMORY_MAX {
        return None;
    }
    let mut rows = rows(config);
    rows.sort_by_key(|r| std::cmp::Reverse(r.bytes));
    let largest: Vec<String> = rows
        .iter()
        .take(3)
        .map(|r| format!("{} {} MiB ({})", r.what, r.bytes >> 20, r.bound))
        .collect();
    Some(format!(
        "limits above the memory budget: at worst {} MiB together with the broker's own {} MiB, above the unit's MemoryMax={} MiB; largest: {}",
        total >> 20,
        BASE >> 20,
        MEMORY_MAX >> 20,
        largest.join("; ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn parse(toml: &str) -> Config {
        Config::parse(toml, Path::new("t.toml")).unwrap()
    }

    #[test]
    fn the_defaults_fit_the_unit() {
        let config = parse("");
        let total = worst_case(&config);
        assert!(total <= MEMORY_MAX, "{} MiB", total >> 20);
        assert_eq!(warning(&config), None);
    }

    /// A kernel buffer left to autotuning ("0B") is counted at autotuning's maximum, and the
    /// budget names its row: 4 MiB per stalled subscriber's send buffer, 6 MiB per receive
    /// buffer of a client the broker does not read.
    #[test]
    fn an_autotuned_kernel_buffer_is_named_in_the_budget() {
        for (config, row) in [
            (
                "[mqtt]\nsocket_unsent_limit = \"0B\"\n",
                "MQTT kernel send buffers 2000 MiB",
            ),
            (
                "[nats]\nsocket_receive_buffer = \"0B\"\n",
                "NATS kernel receive buffers 3768 MiB",
            ),
        ] {
            let config = parse(config);
            let w = warning(&config).unwrap();
            assert!(w.contains(row), "{w}");
        }
    }

    /// The chunks a Kafka forwarder holds while it drains a backlog grow with
    /// `max_batch_bytes`; without a forwarder they are not counted.
    #[test]
    fn the_forwarder_chunks_follow_max_batch_bytes() {
        let forwarder = |config: &str| {
            let config = parse(config);
            rows(&config)
                .into_iter()
                .find(|r| r.what == "Kafka forwarder draining a backlog")
                .map(|r| r.bytes >> 20)
        };
        assert_eq!(forwarder(""), Some(40));
        assert_eq!(
            forwarder("[kafka]\nmax_batch_bytes = \"4MiB\"\n"),
            Some(160)
        );
        assert_eq!(forwarder("[kafka]\nenabled = false\n"), None);
        let config = parse("[kafka]\nmax_batch_bytes = \"16MiB\"\n");
        let w = warning(&config).unwrap();
        assert!(
            w.contains("Kafka forwarder draining a backlog 640 MiB"),
            "{w}"
        );
    }

    #[test]
    fn limits_above_the_budget_are_named() {
        let config = parse("[mqtt]\nmax_queued_bytes_total = \"512MiB\"\n");
        let w = warning(&config).unwrap();
        assert!(
            w.contains("MQTT deliveries queued and in flight 512 MiB"),
            "{w}"
        );
    }
}
