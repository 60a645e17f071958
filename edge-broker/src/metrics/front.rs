//! The counters of a front end (MQTT or NATS: one type for both) and their rendering, side by
//! side: families both protocols share get one sample per protocol (`protocol="mqtt"|"nats"`).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use edge_bridge::metrics::LatencyHistogram;

use edge_proto::mqtt::QoS;

use super::PromText;
use crate::ingest::check::Denied;

/// Which front end a [`FrontMetrics`] counts for (its `protocol` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// MQTT 3.1.1 / 5.
    Mqtt,
    /// The NATS client protocol.
    Nats,
}

impl Protocol {
    /// The `protocol` label value.
    pub fn label(self) -> &'static str {
        match self {
            Protocol::Mqtt => "mqtt",
            Protocol::Nats => "nats",
        }
    }
}

/// Why a message was not delivered to a subscriber (`edge_messages_dropped_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// MQTT: the message expired before it could be sent.
    Expired,
    /// MQTT: larger than the client's Maximum Packet Size.
    TooLargeForClient,
    /// MQTT: the session's queue (`mqtt.max_queued_messages`) was full.
    QueueFull,
    /// MQTT: the session held `mqtt.max_queued_bytes` queued and in flight.
    QueueBytes,
    /// MQTT: all sessions together held `mqtt.max_queued_bytes_total`.
    QueueBudget,
    /// MQTT: queued for a session that ended (clean start, disconnect with expiry 0, expiry)
    /// before they were sent.
    SessionEnded,
    /// NATS: the subscriber's output (`nats.max_pending`) was full.
    SlowConsumer,
    /// NATS: all connections' output together (`nats.max_pending_total`) was full.
    PendingBudget,
    /// NATS: a subject or topic with no equivalent in the other protocol.
    UnmappableSubject,
}

impl DropReason {
    const ALL: [DropReason; 9] = [
        DropReason::Expired,
        DropReason::TooLargeForClient,
        DropReason::QueueFull,
        DropReason::QueueBytes,
        DropReason::QueueBudget,
        DropReason::SessionEnded,
        DropReason::SlowConsumer,
        DropReason::PendingBudget,
        DropReason::UnmappableSubject,
    ];

    fn label(self) -> &'static str {
        match self {
            DropReason::Expired => "expired",
            DropReason::TooLargeForClient => "too_large_for_client",
            DropReason::QueueFull => "queue_full",
            DropReason::QueueBytes => "queue_bytes",
            DropReason::QueueBudget => "queue_budget",
            DropReason::SessionEnded => "session_ended",
            DropReason::SlowConsumer => "slow_consumer",
            DropReason::PendingBudget => "pending_budget",
            DropReason::UnmappableSubject => "unmappable_subject",
        }
    }

    /// Whether the reason can happen in `protocol` (only those are rendered).
    fn applies_to(self, protocol: Protocol) -> bool {
        match self {
            DropReason::Expired
            | DropReason::TooLargeForClient
            | DropReason::QueueFull
            | DropReason::QueueBytes
            | DropReason::QueueBudget
            | DropReason::SessionEnded => protocol == Protocol::Mqtt,
            DropReason::SlowConsumer
            | DropReason::PendingBudget
            | DropReason::UnmappableSubject => protocol == Protocol::Nats,
        }
    }
}

/// `reason` labels of `edge_publishes_denied_total`, indexed like [`FrontMetrics::denied`].
const DENIED_REASONS: [&str; 2] = ["reserved_topic", "not_permitted"];

fn denied_index(denied: &Denied) -> usize {
    match denied {
        Denied::ReservedTopic { .. } => 0,
        Denied::NotPermitted { .. } => 1,
    }
}

/// Counters of one front end, shared by its connections (and, for MQTT, its sessions).
#[derive(Debug)]
pub struct FrontMetrics {
    protocol: Protocol,
    /// Clients connected now.
    pub connections: AtomicI64,
    /// Connections accepted since start.
    pub connections_total: AtomicU64,
    /// Publishes received, by QoS (NATS core: all QoS 0, at most once).
    received: [AtomicU64; 3],
    /// Messages sent to subscribers, by QoS (NATS: all QoS 0).
    sent: [AtomicU64; 3],
    /// Messages not delivered, by [`DropReason`].
    dropped: [AtomicU64; DropReason::ALL.len()],
    /// Publishes the permission check refused, by [`DENIED_REASONS`].
    denied: [AtomicU64; DENIED_REASONS.len()],
    /// Routed publishes the log refused (full, too large, failed) or never made durable.
    pub refused: AtomicU64,
    /// Routed publishes written to the log.
    pub stored: AtomicU64,
    /// Durable acknowledgements sent (NATS PubAcks; rendered for NATS).
    pub acks: AtomicU64,
    /// NATS: publishes answered as duplicates of a `Nats-Msg-Id` within the window.
    pub duplicates: AtomicU64,
    /// Connections closed for protocol violations or malformed input.
    pub protocol_errors: AtomicU64,
    /// NATS: connections closed as slow consumers.
    pub slow_consumers: AtomicU64,
    /// TLS connections that failed or timed out in the handshake.
    pub tls_handshake_failures: AtomicU64,
    /// MQTT: WebSocket connections whose upgrade failed, timed out or was refused.
    pub ws_handshake_failures: AtomicU64,
    /// Time from reading a routed publish that is owed an answer (MQTT QoS 1/2, NATS with a
    /// reply subject) to its durable acknowledgement being ready (stored and fdatasynced,
    /// and every earlier answer of the connection given).
    pub ack_latency: Arc<LatencyHistogram>,
    /// MQTT: bytes all sessions hold queued and in flight (what `max_queued_bytes_total` caps).
    pub queued_bytes: Arc<AtomicU64>,
    /// Bytes of large packets clients are sending now or a full log holds, leased from the
    /// protocol's pool (`max_partial_packet_bytes_total`, [`crate::input_pool`]).
    pub partial_bytes: Arc<AtomicU64>,
    /// Connections closed because their large packet did not fit in that pool.
    pub partial_refused: AtomicU64,
    /// MQTT: publishes whose connection stopped reading to wait for room in a subscriber's
    /// queue (`mqtt.slow_subscriber_wait`), by how the wait ended: `[kept, dropped]`.
    pub publisher_waits: [AtomicU64; 2],
    /// MQTT: microseconds publishing connections spent waiting for room.
    pub publisher_wait_micros: AtomicU64,
}

/// Bucket bounds (seconds) of [`FrontMetrics::ack_latency`]: an fdatasync on an SD card takes
/// from under a millisecond to a second.
pub const ACK_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048,
];

/// Adds one to `counter`.
pub fn inc(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Adds `n` to `counter` (a count gathered over a read buffer: one atomic add, not `n`).
pub fn add(counter: &AtomicU64, n: u64) {
    if n > 0 {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

fn load(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

impl FrontMetrics {
    /// Zeroed counters for `protocol`.
    pub fn new(protocol: Protocol) -> FrontMetrics {
        FrontMetrics {
            protocol,
            connections: AtomicI64::new(0),
            connections_total: AtomicU64::new(0),
            received: Default::default(),
            sent: Default::default(),
            dropped: Default::default(),
            denied: Default::default(),
            refused: AtomicU64::new(0),
            stored: AtomicU64::new(0),
            acks: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            protocol_errors: AtomicU64::new(0),
            slow_consumers: AtomicU64::new(0),
            tls_handshake_failures: AtomicU64::new(0),
            ws_handshake_failures: AtomicU64::new(0),
            ack_latency: Arc::new(LatencyHistogram::new(ACK_BUCKETS)),
            queued_bytes: Arc::new(AtomicU64::new(0)),
            partial_bytes: Arc::new(AtomicU64::new(0)),
            partial_refused: AtomicU64::new(0),
            publisher_waits: Default::default(),
            publisher_wait_micros: AtomicU64::new(0),
        }
    }

    /// The front end these counters belong to.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Adds `delta` to the connection gauge (and the total on connect).
    pub fn connected(&self, delta: i64) {
        self.connections.fetch_add(delta, Ordering::Relaxed);
        if delta > 0 {
            inc(&self.connections_total);
        }
    }

    /// Counts a publish received at `qos`.
    pub fn received(&self, qos: QoS) {
        inc(&self.received[qos as usize]);
    }

    /// Counts `n` publishes received at `qos`.
    pub fn received_many(&self, qos: QoS, n: u64) {
        add(&self.received[qos as usize], n);
    }

    /// Publishes received so far (every QoS).
    pub fn received_total(&self) -> u64 {
        self.received.iter().map(load).sum()
    }

    /// Messages sent to subscribers so far (every QoS).
    pub fn sent_total(&self) -> u64 {
        self.sent.iter().map(load).sum()
    }

    /// Counts a message sent to a subscriber at `qos`.
    pub fn sent(&self, qos: QoS) {
        inc(&self.sent[qos as usize]);
    }

    /// Counts a message not delivered.
    pub fn dropped(&self, why: DropReason) {
        self.dropped_many(why, 1);
    }

    /// Counts `n` messages not delivered for `why`.
    pub fn dropped_many(&self, why: DropReason, n: u64) {
        if let Some(at) = DropReason::ALL.iter().position(|r| *r == why) {
            self.dropped[at].fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Messages not delivered for `why` so far.
    pub fn dropped_count(&self, why: DropReason) -> u64 {
        DropReason::ALL
            .iter()
            .position(|r| *r == why)
            .map_or(0, |at| load(&self.dropped[at]))
    }

    /// Counts a publish the permission check refused.
    pub fn denied(&self, why: &Denied) {
        inc(&self.denied[denied_index(why)]);
    }

    /// Publishes refused by the permission check so far (every reason).
    pub fn denied_count(&self) -> u64 {
        self.denied.iter().map(load).sum()
    }
}

/// What a front end adds beyond its counters (MQTT's session and retained stores).
#[derive(Debug, Clone, Copy, Default)]
pub struct MqttGauges {
    /// Sessions, online and offline.
    pub sessions: usize,
    /// Retained messages held.
    pub retained: usize,
    /// Connections parked while idle (`mqtt::park`).
    pub parked: usize,
}

/// Renders the families of the front ends that run (MQTT first, then NATS), each family once
/// with one sample per protocol, then the families only one protocol has.
pub fn render(text: &mut PromText, fronts: &[&FrontMetrics], mqtt: Option<MqttGauges>) {
    let labels: Vec<(&FrontMetrics, [(&str, &str); 1])> = fronts
        .iter()
        .map(|f| (*f, [("protocol", f.protocol.label())]))
        .collect();
    let per_front = |value: &dyn Fn(&FrontMetrics) -> u64| -> Vec<(&[(&str, &str)], u64)> {
        labels.iter().map(|(f, l)| (&l[..], value(f))).collect()
    };
    let gauges: Vec<(&[(&str, &str)], f64)> = labels
        .iter()
        .map(|(f, l)| (&l[..], f.connections.load(Ordering::Relaxed) as f64))
        .collect();
    text.gauge("edge_connections", "Client connections open now.", &gauges);
    text.counter(
        "edge_connections_accepted_total",
        "Client connections accepted.",
        &per_front(&|f| load(&f.connections_total)),
    );

    // Both protocols carry the same labels (protocol, qos), so a query can sum over either:
    // NATS core messages are all counted at QoS 0 (at most once).
    let qos_labels: Vec<[(&str, &str); 2]> = fronts
        .iter()
        .flat_map(|f| {
            ["0", "1", "2"]
                .into_iter()
                .map(|q| [("protocol", f.protocol.label()), ("qos", q)])
        })
        .collect();
    let by_qos = |counters: &dyn Fn(&FrontMetrics) -> &[AtomicU64; 3]| {
        let values = fronts.iter().flat_map(|f| counters(f).iter().map(load));
        qos_labels
            .iter()
            .map(|l| &l[..])
            .zip(values)
            .collect::<Vec<(&[(&str, &str)], u64)>>()
    };
    text.counter(
        "edge_messages_received_total",
        "Messages published by clients.",
        &by_qos(&|f| &f.received),
    );
    text.counter(
        "edge_messages_sent_total",
        "Messages delivered to subscribers.",
        &by_qos(&|f| &f.sent),
    );

    let drops: Vec<(Protocol, &'static str, u64)> = fronts
        .iter()
        .flat_map(|f| {
            DropReason::ALL
                .iter()
                .zip(&f.dropped)
                .filter(|(r, _)| r.applies_to(f.protocol))
                .map(|(r, c)| (f.protocol, r.label(), load(c)))
        })
        .collect();
    by_reason(
        text,
        "edge_messages_dropped_total",
        "Messages not delivered, by reason.",
        &drops,
    );
    text.counter(
        "edge_messages_stored_total",
        "Routed publishes written to the log.",
        &per_front(&|f| load(&f.stored)),
    );
    text.counter(
        "edge_publishes_refused_total",
        "Publishes the log refused (full, too large or failed).",
        &per_front(&|f| load(&f.refused)),
    );
    let denied: Vec<(Protocol, &'static str, u64)> = fronts
        .iter()
        .flat_map(|f| {
            DENIED_REASONS
                .iter()
                .zip(&f.denied)
                .map(|(r, c)| (f.protocol, *r, load(c)))
        })
        .collect();
    by_reason(
        text,
        "edge_publishes_denied_total",
        "Publishes refused by the permission check (not stored, not delivered), by reason.",
        &denied,
    );
    let partial: Vec<(&[(&str, &str)], f64)> = labels
        .iter()
        .map(|(f, l)| (&l[..], f.partial_bytes.load(Ordering::Relaxed) as f64))
        .collect();
    text.gauge(
        "edge_partial_packet_bytes",
        "Bytes of packets larger than a read that clients are sending now, or that wait for the log to write them (max_partial_packet_bytes_total).",
        &partial,
    );
    text.counter(
        "edge_partial_packets_refused_total",
        "Connections closed because the packet they began did not fit in max_partial_packet_bytes_total.",
        &per_front(&|f| load(&f.partial_refused)),
    );
    text.counter(
        "edge_protocol_errors_total",
        "Connections closed for protocol violations.",
        &per_front(&|f| load(&f.protocol_errors)),
    );
    if let Some(gauges) = mqtt {
        text.gauge(
            "edge_mqtt_sessions",
            "MQTT sessions (online and offline).",
            &[(&[], gauges.sessions as f64)],
        );
        text.gauge(
            "edge_mqtt_retained_messages",
            "Retained messages held.",
            &[(&[], gauges.retained as f64)],
        );
        text.gauge(
            "edge_mqtt_connections_parked",
            "MQTT connections parked while idle (mqtt.park_idle_after): open, and counted in edge_connections, without a task of their own.",
            &[(&[], gauges.parked as f64)],
        );
        if let Some(mqtt) = fronts.iter().find(|f| f.protocol == Protocol::Mqtt) {
            text.gauge(
                "edge_mqtt_queued_bytes",
                "Bytes all MQTT sessions hold queued and in flight (mqtt.max_queued_bytes_total).",
                &[(&[], mqtt.queued_bytes.load(Ordering::Relaxed) as f64)],
            );
            text.counter(
                "edge_mqtt_publisher_waits_total",
                "MQTT publishes whose connection stopped reading to wait for room in a subscriber's queue (mqtt.slow_subscriber_wait), by outcome (kept: every waiting delivery was queued; dropped: some were dropped, counted in edge_messages_dropped_total).",
                &[
                    (&[("outcome", "kept")], load(&mqtt.publisher_waits[0])),
                    (&[("outcome", "dropped")], load(&mqtt.publisher_waits[1])),
                ],
            );
            text.counter_f64(
                "edge_mqtt_publisher_wait_seconds_total",
                "Time MQTT publishing connections spent waiting for room in subscribers' queues.",
                load(&mqtt.publisher_wait_micros) as f64 / 1e6,
            );
        }
    }
    text.counter(
        "edge_tls_handshake_failures_total",
        "TLS connections that failed or timed out in the handshake.",
        &per_front(&|f| load(&f.tls_handshake_failures)),
    );
    let acks: Vec<([(&str, &str); 1], edge_bridge::metrics::HistogramSnapshot)> = fronts
        .iter()
        .map(|f| ([("protocol", f.protocol.label())], f.ack_latency.snapshot()))
        .collect();
    let series: Vec<super::text::HistogramSeries<'_>> = acks
        .iter()
        .map(|(l, s)| (&l[..], &s.counts[..], s.sum_seconds))
        .collect();
    text.histograms(
        "edge_durable_ack_seconds",
        "From reading a routed publish owed an answer to its durable acknowledgement (stored, fdatasynced, earlier answers given).",
        ACK_BUCKETS,
        &series,
    );
    if let Some(mqtt) = fronts.iter().find(|f| f.protocol == Protocol::Mqtt) {
        text.counter(
            "edge_websocket_handshake_failures_total",
            "MQTT over WebSockets: upgrades that failed, timed out or were refused (path, subprotocol).",
            &[(&[], load(&mqtt.ws_handshake_failures))],
        );
    }
    if let Some(nats) = fronts.iter().find(|f| f.protocol == Protocol::Nats) {
        text.counter(
            "edge_nats_stored_total",
            "Routed NATS publishes appended to the log.",
            &[(&[], load(&nats.stored))],
        );
        text.counter(
            "edge_nats_acks_total",
            "Durable PubAcks sent on reply subjects.",
            &[(&[], load(&nats.acks))],
        );
        text.counter(
            "edge_nats_duplicates_total",
            "Publishes answered as duplicates of a Nats-Msg-Id seen within the window.",
            &[(&[], load(&nats.duplicates))],
        );
        text.counter(
            "edge_nats_slow_consumers_total",
            "NATS connections closed as slow consumers.",
            &[(&[], load(&nats.slow_consumers))],
        );
    }
}

/// A counter family labelled by protocol and reason.
fn by_reason(text: &mut PromText, name: &str, help: &str, samples: &[(Protocol, &str, u64)]) {
    let labels: Vec<[(&str, &str); 2]> = samples
        .iter()
        .map(|(p, r, _)| [("protocol", p.label()), ("reason", *r)])
        .collect();
    let samples: Vec<(&[(&str, &str)], u64)> = labels
        .iter()
        .zip(samples)
        .map(|(l, (_, _, v))| (&l[..], *v))
        .collect();
    text.counter(name, help, &samples);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn family<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
        text.lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
            .collect()
    }

    #[test]
    fn shared_families_get_one_sample_per_protocol() {
        let mqtt = FrontMetrics::new(Protocol::Mqtt);
        let nats = FrontMetrics::new(Protocol::Nats);
        mqtt.received(QoS::ExactlyOnce);
        nats.received(QoS::AtMostOnce);
        nats.received(QoS::AtMostOnce);
        mqtt.dropped(DropReason::QueueFull);
        nats.dropped(DropReason::SlowConsumer);
        mqtt.connected(1);
        let mut text = PromText::new();
        render(
            &mut text,
            &[&mqtt, &nats],
            Some(MqttGauges {
                sessions: 3,
                retained: 1,
                parked: 2,
            }),
        );
        let text = text.finish();
        assert_eq!(
            text.matches("# TYPE edge_messages_received_total").count(),
            1
        );
        assert_eq!(
            family(&text, "edge_messages_received_total"),
            [
                "edge_messages_received_total{protocol=\"mqtt\",qos=\"0\"} 0",
                "edge_messages_received_total{protocol=\"mqtt\",qos=\"1\"} 0",
                "edge_messages_received_total{protocol=\"mqtt\",qos=\"2\"} 1",
                "edge_messages_received_total{protocol=\"nats\",qos=\"0\"} 2",
                "edge_messages_received_total{protocol=\"nats\",qos=\"1\"} 0",
                "edge_messages_received_total{protocol=\"nats\",qos=\"2\"} 0",
            ]
        );
        assert!(
            text.contains(
                "edge_messages_dropped_total{protocol=\"mqtt\",reason=\"queue_full\"} 1\n"
            )
        );
        assert!(text.contains(
            "edge_messages_dropped_total{protocol=\"nats\",reason=\"slow_consumer\"} 1\n"
        ));
        assert!(!text.contains("protocol=\"nats\",reason=\"queue_full\""));
        assert!(text.contains("edge_connections{protocol=\"mqtt\"} 1\n"));
        assert!(text.contains("edge_mqtt_sessions 3\n"));
        assert!(text.contains("edge_mqtt_connections_parked 2\n"));
        assert!(text.contains("edge_nats_slow_consumers_total 0\n"));
    }

    #[test]
    fn nats_alone_renders_no_mqtt_families() {
        let nats = FrontMetrics::new(Protocol::Nats);
        let mut text = PromText::new();
        render(&mut text, &[&nats], None);
        let text = text.finish();
        assert!(!text.contains("protocol=\"mqtt\""));
        assert!(!text.contains("edge_mqtt_sessions"));
        assert!(text.contains(
            "edge_publishes_denied_total{protocol=\"nats\",reason=\"reserved_topic\"} 0\n"
        ));
    }
}
