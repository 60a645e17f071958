//! The Kafka forwarder inside the broker process: opened (its log cursor created) before any
//! client can publish, run as a task under the broker's cancellation token, finished within a
//! deadline on shutdown, and rendered into `/metrics` (with the uplink's state and last error,
//! which `edge-broker status` shows).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use edge_bridge::forward::{CURSOR_NAME, Forwarder};
use edge_bridge::metrics::{ERROR_KINDS, ForwardMetrics};
use edge_bridge::position::LogIdentity;
use edge_bridge::producer::txn::{TxnConfig, TxnSession};
use edge_bridge::producer::txn_wire::TxnWire;
use edge_bridge::producer::{ConnectionSetups, SetupStep, WireProducer};
use edge_bridge::uplink::UplinkState;
use edge_log::Log;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::metrics::PromText;
use crate::route::RouteTable;

/// A running forwarder.
#[derive(Debug)]
pub struct KafkaBridge {
    handle: JoinHandle<()>,
    abort: CancellationToken,
    metrics: Arc<ForwardMetrics>,
    sasl: Option<Arc<edge_bridge::producer::sasl::SaslStatus>>,
    setups: Arc<ConnectionSetups>,
}

/// Why the forwarder could not start.
#[derive(Debug, thiserror::Error)]
pub enum BridgeStartError {
    /// The producer could not be configured.
    #[error("kafka: {0}")]
    Producer(edge_bridge::producer::ProduceError),
    /// The forwarder's cursor could not be opened.
    #[error("kafka: {0}")]
    Forwarder(edge_bridge::forward::ForwardError),
    /// Exactly-once delivery: the log's identity could not be kept.
    #[error("kafka: {0}")]
    Identity(edge_bridge::position::IdentityError),
}

/// Starts the forwarder when `[kafka]` is enabled and routes exist (None otherwise). Its cursor
/// exists when this returns, so retention keeps every routed record until it is forwarded.
pub fn start(
    config: &Config,
    log: &Log,
    routes: &Arc<RouteTable>,
    shutdown: &CancellationToken,
) -> Result<Option<KafkaBridge>, BridgeStartError> {
    if routes.current().is_empty() {
        return Ok(None);
    }
    if !config.kafka.enabled {
        tracing::warn!(
            "[kafka] enabled = false: routed events are kept in the log only (up to log.max_bytes)"
        );
        return Ok(None);
    }
    let producer =
        WireProducer::new(config.kafka_producer_config()).map_err(BridgeStartError::Producer)?;
    let sasl = producer.sasl_status();
    let setups = producer.connection_setups();
    let producer_for_txn = producer.clone();
    let forwarder = Forwarder::open(
        log,
        CURSOR_NAME,
        Arc::clone(routes) as Arc<dyn edge_bridge::plan::Router>,
        producer,
        config.forward_config(),
    )
    .map_err(BridgeStartError::Forwarder)?;
    let metrics = forwarder.metrics();
    let abort = CancellationToken::new();
    let handle = if config.exactly_once() {
        // The position committed in Kafka is only taken for this log: its identity lives in
        // the log's directory and goes with it.
        let identity =
            LogIdentity::load_or_create(&config.log_dir()).map_err(BridgeStartError::Identity)?;
        let transactional_id = config.transactional_id();
        let wire = TxnWire::new(
            producer_for_txn,
            &transactional_id,
            &identity.group(&config.node.id),
        );
        let session = TxnSession::new(
            wire,
            TxnConfig {
                transactional_id,
                transaction_timeout: config.kafka.transaction_timeout.0,
                waits: config.forward_config().retry_waits(),
            },
        );
        let forwarder = forwarder.exactly_once(session, identity);
        tokio::spawn(forwarder.run(shutdown.clone(), abort.clone()))
    } else {
        tokio::spawn(forwarder.run(shutdown.clone(), abort.clone()))
    };
    Ok(Some(KafkaBridge {
        handle,
        abort,
        metrics,
        sasl,
        setups,
    }))
}

impl KafkaBridge {
    /// The forwarder's counters.
    pub fn metrics(&self) -> Arc<ForwardMetrics> {
        Arc::clone(&self.metrics)
    }

    /// The producer's connection set-ups (established, failed by step).
    pub fn connection_setups(&self) -> Arc<ConnectionSetups> {
        Arc::clone(&self.setups)
    }

    /// Whether Kafka accepts our SASL credentials (`None` without SASL).
    pub fn sasl_status(&self) -> Option<Arc<edge_bridge::producer::sasl::SaslStatus>> {
        self.sasl.clone()
    }

    /// After shutdown was requested: lets the chunks in flight finish for up to `deadline`,
    /// then aborts them (uncommitted: they stay in the log and the next start sends them) and
    /// waits for the task, which says how many records it leaves for the next start.
    pub async fn finish(mut self, deadline: Duration) {
        if tokio::time::timeout(deadline, &mut self.handle)
            .await
            .is_err()
        {
            let uplink = self.metrics.uplink_state();
            tracing::warn!(
                ?deadline,
                uplink = uplink.as_str(),
                "Kafka did not acknowledge the last records within the shutdown deadline; \
                 nothing is lost: they stay in the log and are sent at the next start"
            );
            self.abort.cancel();
            let _ = self.handle.await;
        }
    }
}

/// Renders whether the upstream accepts our SASL credentials.
pub fn render_sasl(text: &mut PromText, sasl: &edge_bridge::producer::sasl::SaslStatus) {
    text.gauge(
        "edge_kafka_upstream_authenticated",
        "1 while Kafka accepts our SASL credentials, 0 after a refusal (or before the first success).",
        &[(&[], f64::from(u8::from(sasl.authenticated())))],
    );
    text.counter(
        "edge_kafka_sasl_authentications_total",
        "SASL authentications and re-authentications with Kafka, by result.",
        &[
            (&[("result", "ok")], sasl.successes.load(Ordering::Relaxed)),
            (
                &[("result", "failed")],
                sasl.failures.load(Ordering::Relaxed),
            ),
        ],
    );
}

/// Renders the producer's connection set-ups: while a slow or silent Kafka keeps the first
/// connection from completing, nothing is forwarded and no request outcome is told yet; these
/// say which step fails and how.
pub fn render_connection_setups(text: &mut PromText, setups: &ConnectionSetups) {
    text.counter(
        "edge_kafka_connections_established_total",
        "Connections to Kafka brokers set up (TCP, TLS, ApiVersions, SASL), probes included.",
        &[(&[], setups.established.load(Ordering::Relaxed))],
    );
    text.counter(
        "edge_kafka_wire_bytes_total",
        "Bytes written to (sent) and read from (received) Kafka sockets: records, retries, \
         probes and handshakes, TLS included, TCP/IP headers not. What the uplink costs.",
        &[
            (
                &[("direction", "sent")],
                setups.wire.sent.load(Ordering::Relaxed),
            ),
            (
                &[("direction", "received")],
                setups.wire.received.load(Ordering::Relaxed),
            ),
        ],
    );
    let samples: Vec<([(&str, &str); 2], u64)> = SetupStep::ALL
        .iter()
        .flat_map(|&step| {
            [("timeout", true), ("error", false)].map(|(reason, timed_out)| {
                (
                    [("step", step.as_str()), ("reason", reason)],
                    setups.failed(step, timed_out),
                )
            })
        })
        .collect();
    text.counter(
        "edge_kafka_connection_setup_failures_total",
        "Connections to Kafka brokers that could not be set up, by the step that failed \
         (tcp_connect, tls_handshake, api_versions, sasl) and why (timeout: it ran out of time; \
         error: refused, reset, credentials); probes included.",
        &samples
            .iter()
            .map(|(labels, n)| (&labels[..], *n))
            .collect::<Vec<_>>(),
    );
}

/// Characters of an error message shown in `edge_kafka_last_error_info`.
const MAX_ERROR_LABEL: usize = 300;

/// Renders the forwarder's metrics; `durable_end` is the log's (for lag and age).
pub fn render(text: &mut PromText, m: &ForwardMetrics, durable_end: u64) {
    let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    text.counter(
        "edge_kafka_forwarded_records_total",
        "Records Kafka acknowledged (resends count again).",
        &[(&[], load(&m.records))],
    );
    text.counter(
        "edge_kafka_forwarded_bytes_total",
        "Key, value and header bytes Kafka acknowledged.",
        &[(&[], load(&m.bytes))],
    );
    let produce = m.produce_latency.snapshot();
    text.histogram(
        "edge_kafka_produce_seconds",
        "From sending a produce request to seeing Kafka's successful acknowledgement (acks=all).",
        produce.bounds,
        &produce.counts,
        produce.sum_seconds,
    );
    text.counter(
        "edge_kafka_batches_total",
        "Chunks of the log delivered and committed.",
        &[(&[], load(&m.batches))],
    );
    let labels: Vec<[(&str, &str); 1]> = ERROR_KINDS.iter().map(|k| [("kind", *k)]).collect();
    text.counter(
        "edge_kafka_errors_total",
        "Failed attempts by kind (each is retried; nothing is dropped).",
        &labels
            .iter()
            .zip(&m.errors)
            .map(|(l, c)| (&l[..], load(c)))
            .collect::<Vec<_>>(),
    );
    text.counter(
        "edge_kafka_transactions_total",
        "Exactly-once delivery: Kafka transactions, by outcome (committed with the position inside, or aborted and resent).",
        &[
            (&[("outcome", "committed")], load(&m.transactions)),
            (&[("outcome", "aborted")], load(&m.transactions_aborted)),
        ],
    );
    text.counter(
        "edge_kafka_dead_letters_total",
        "Records Kafka refused for good, written to the dead letter.",
        &[(&[], load(&m.dead_letters))],
    );
    text.counter(
        "edge_kafka_unrouted_records_total",
        "Records skipped because no route matches them any more.",
        &[(&[], load(&m.unrouted))],
    );
    text.gauge(
        "edge_kafka_lag_records",
        "Records in the log not yet acknowledged by Kafka.",
        &[(&[], m.lag_records(durable_end) as f64)],
    );
    text.gauge(
        "edge_kafka_lag_bytes",
        "Estimated log bytes not yet acknowledged by Kafka (lag x mean record size).",
        &[(&[], m.lag_bytes(durable_end) as f64)],
    );
    text.gauge(
        "edge_kafka_oldest_unforwarded_age_seconds",
        "Age of the oldest record not yet acknowledged by Kafka (0 when caught up).",
        &[(&[], m.oldest_age_seconds(durable_end))],
    );
    text.gauge(
        "edge_kafka_replay_in_progress",
        "1 while a backlog is being drained in full batches.",
        &[(
            &[],
            f64::from(u8::from(m.replaying.load(Ordering::Relaxed))),
        )],
    );
    let uplink = m.uplink_state();
    text.gauge(
        "edge_kafka_upstream_up",
        "0 while produce or metadata requests to Kafka fail (or Kafka refuses us).",
        &[(&[], f64::from(u8::from(!uplink.is_down())))],
    );
    let states: Vec<[(&str, &str); 1]> = UplinkState::ALL
        .iter()
        .map(|s| [("state", s.as_str())])
        .collect();
    text.gauge(
        "edge_kafka_uplink_state",
        "The uplink's state: 1 for the current one of connecting, up, down, auth_failed, fenced \
         (TLS certificate, SASL credentials or ACLs refused; fenced: exactly-once stopped).",
        &states
            .iter()
            .zip(UplinkState::ALL)
            .map(|(l, s)| (&l[..], f64::from(u8::from(s == uplink))))
            .collect::<Vec<_>>(),
    );
    text.gauge(
        "edge_kafka_uplink_state_changed_timestamp_seconds",
        "When the uplink entered its current state (unix seconds; 0 if it never changed).",
        &[(&[], m.uplink_since_ms() as f64 / 1000.0)],
    );
    if let Some(last) = m.last_error.lock().clone() {
        let message: String = last.message.chars().take(MAX_ERROR_LABEL).collect();
        text.gauge(
            "edge_kafka_last_error_info",
            "The last failed Kafka request: its kind and message (always 1).",
            &[(&[("kind", last.kind), ("error", &message)], 1.0)],
        );
        text.gauge(
            "edge_kafka_last_error_timestamp_seconds",
            "When the last Kafka request failed (unix seconds).",
            &[(&[], last.at_ms as f64 / 1000.0)],
        );
    }
    text.gauge(
        "edge_kafka_committed_offset",
        "The forwarder's committed log offset (everything below is in Kafka).",
        &[(&[], load(&m.committed) as f64)],
    );
}
