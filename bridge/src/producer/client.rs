//! [`WireProducer`]: per-broker connections, Produce (acks=all), Metadata, CreateTopics,
//! InitProducerId. What it knows about the cluster is in `metadata`, the idempotent
//! producer's rules in [`Sequencer`](super::sequence::Sequencer); this file does the I/O.
//!
//! Several Produce requests may be in flight per connection (`max_in_flight`, 5 like Kafka's
//! limit for the idempotent producer). Order within a partition rests on three things:
//! requests are written in the order `send` was called, Kafka answers and appends the
//! requests of one connection in that order, and the idempotent producer's sequence numbers
//! make the broker refuse (OUT_OF_ORDER_SEQUENCE_NUMBER) a batch whose predecessor was not
//! written. After any failure the partition is blocked until the failed batch is resent (see
//! the sequencer). Without a producer id (idempotence off or refused), one request is in
//! flight per connection.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, CreateTopicsRequest, CreateTopicsResponse, InitProducerIdRequest,
    InitProducerIdResponse, MetadataRequest, MetadataResponse, ProduceRequest, ProduceResponse,
    ProducerId, TopicName, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;
use parking_lot::Mutex;

use super::batch::{BatchIdentity, EncodedBatch, encode_batch};
use super::conn::{ConnLimits, Connection, ConnectionSetups};
use super::error::{ErrorClass, ProduceError, codes};
use super::frame::{PAYLOAD_MARK, decode_response};
use super::metadata::{Leader, LostConnections, Metadata};
use super::pipeline::{Frame, Pipeline, Throttle};
use super::sasl::{SaslContext, SaslSettings, SaslStatus};
use super::sequence::{Attempt, Refusal, Sequencer, Session, Ticket};
use super::tls::TlsSettings;
use super::{Compression, KafkaProducer, ProduceAck, ProduceRecord};
use crate::topition::Topition;

/// Highest Produce version we speak (v9: flexible, topic names; v13 switches to topic ids).
const PRODUCE_MAX: i16 = 9;
/// Highest Metadata version we speak.
const METADATA_MAX: i16 = 9;
/// Highest CreateTopics version we speak.
const CREATE_TOPICS_MAX: i16 = 5;
/// Highest InitProducerId version we speak.
const INIT_PRODUCER_ID_MAX: i16 = 4;

/// Producer settings (the `[kafka]` config section).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerConfig {
    /// Bootstrap brokers, `host:port`.
    pub brokers: Vec<String>,
    /// Client id sent with every request.
    pub client_id: String,
    /// Record-batch compression.
    pub compression: Compression,
    /// How long to wait for any response; the produce outcome is unknown after it.
    pub request_timeout: Duration,
    /// How long a TCP connect may take.
    pub connect_timeout: Duration,
    /// Metadata older than this is refetched (picks up added partitions, moved leaders).
    pub metadata_max_age: Duration,
    /// Largest encoded batch we send (Kafka's `max.request.size`, default 1 MiB).
    pub max_request_bytes: usize,
    /// Largest response frame we accept.
    pub max_response_bytes: usize,
    /// Idempotent producer: a producer id from InitProducerId and per-partition sequence
    /// numbers, so a batch resent after an unknown-outcome error is written once. Retries
    /// must resend the identical batch (same records, same order).
    pub idempotent: bool,
    /// Connections opened to one broker at most; partition `p` uses connection
    /// `p % connections_per_broker`.
    pub connections_per_broker: usize,
    /// Produce requests in flight per connection at most (idempotent producer only; 1
    /// otherwise). Kafka keeps order for up to 5.
    pub max_in_flight: usize,
    /// TLS to every broker (Kafka's `SSL` listeners); `None` is plain TCP.
    pub tls: Option<TlsSettings>,
    /// SASL authentication on every connection; `None`: none.
    pub sasl: Option<SaslSettings>,
    /// Exactly-once delivery: the transactional.id every Produce carries. Producer id and
    /// epoch then come from the transaction session ([`super::txn_wire::TxnWire`]), never
    /// from an InitProducerId of the producer's own, and batches are marked transactional.
    pub transactional_id: Option<String>,
}

impl ProducerConfig {
    /// Defaults: lz4, 30 s request timeout, 10 s connect timeout, 60 s metadata age, 1 MiB
    /// requests, 16 MiB responses, idempotent, up to 4 connections per broker, 5 requests in
    /// flight per connection.
    pub fn new(brokers: Vec<String>) -> Self {
        Self {
            brokers,
            client_id: "edge-bridge".into(),
            compression: Compression::Lz4,
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            metadata_max_age: Duration::from_secs(60),
            max_request_bytes: 1024 * 1024,
            max_response_bytes: 16 * 1024 * 1024,
            idempotent: true,
            connections_per_broker: 4,
            max_in_flight: 5,
            tls: None,
            sasl: None,
            transactional_id: None,
        }
    }
}

struct BrokerSlot {
    addr: String,
    pipe: Option<Pipeline>,
    /// Uncompressed records of the batch being compressed (reused).
    scratch: BytesMut,
}

type Slot = Arc<tokio::sync::Mutex<BrokerSlot>>;

/// The producer identity a session uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerIdentity {
    /// Producer id assigned by the broker.
    pub producer_id: i64,
    /// Producer epoch.
    pub epoch: i16,
}

struct Inner {
    config: ProducerConfig,
    limits: ConnLimits,
    meta: Mutex<Metadata>,
    /// Connection used for Metadata, CreateTopics and InitProducerId.
    bootstrap: tokio::sync::Mutex<Option<Connection>>,
    /// Produce connections per (leader broker id, lane).
    slots: Mutex<HashMap<(i32, usize), Slot>>,
    /// Scratch buffers for `encode` (uncompressed records), reused across calls and threads.
    scratch_pool: Mutex<Vec<BytesMut>>,
    /// Session, sequence numbers and failures per partition.
    sequencer: Mutex<Sequencer>,
    /// One InitProducerId at a time.
    session_start: tokio::sync::Mutex<()>,
}

/// A request counted as in flight by the sequencer until its answer is handled (or it is
/// dropped unanswered).
struct InFlight {
    inner: Arc<Inner>,
    ticket: Option<Ticket>,
}

impl InFlight {
    fn ticket(&self) -> Option<&Ticket> {
        self.ticket.as_ref()
    }

    /// Hands the outcome to the sequencer.
    fn finish(mut self, outcome: Result<(), (&ProduceError, Option<BatchIdentity>)>) {
        if let Some(ticket) = self.ticket.take() {
            self.inner.sequencer.lock().finish(ticket, outcome);
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            self.inner.sequencer.lock().abandon(ticket);
        }
    }
}

/// Our Kafka producer: a few connections per broker, up to `max_in_flight` requests in flight
/// per connection, acks=all, a request timeout, TCP_NODELAY. Cheap to clone; clones share connections.
#[derive(Clone)]
pub struct WireProducer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for WireProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WireProducer")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl WireProducer {
    /// A producer for `config`; connects lazily on first use.
    pub fn new(config: ProducerConfig) -> Result<Self, ProduceError> {
        if config.brokers.is_empty() {
            return Err(ProduceError::NoBrokers);
        }
        let lost = LostConnections::default();
        let limits = ConnLimits {
            connect_timeout: config.connect_timeout,
            request_timeout: config.request_timeout,
            max_response_bytes: config.max_response_bytes,
            client_id: StrBytes::from_string(config.client_id.clone()),
            tls: config.tls.as_ref().map(super::tls::connector).transpose()?,
            sasl: config.sasl.clone().map(|settings| {
                Arc::new(SaslContext {
                    settings,
                    status: Arc::new(SaslStatus::default()),
                })
            }),
            lost: lost.clone(),
            setups: Arc::default(),
        };
        Ok(Self {
            inner: Arc::new(Inner {
                meta: Mutex::new(Metadata::new(config.metadata_max_age, lost)),
                sequencer: Mutex::new(Sequencer::new(config.idempotent)),
                config,
                limits,
                bootstrap: tokio::sync::Mutex::new(None),
                slots: Mutex::new(HashMap::new()),
                scratch_pool: Mutex::new(Vec::new()),
                session_start: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// The settings this producer runs with.
    pub fn config(&self) -> &ProducerConfig {
        &self.inner.config
    }

    /// The connection settings (timeouts, TLS, SASL) every connection uses.
    pub(super) fn limits(&self) -> &ConnLimits {
        &self.inner.limits
    }

    /// Whether the brokers accept our SASL credentials (`None` without SASL).
    pub fn sasl_status(&self) -> Option<Arc<SaslStatus>> {
        self.inner
            .limits
            .sasl
            .as_ref()
            .map(|c| Arc::clone(&c.status))
    }

    /// Connection set-ups of this producer (every connection, probes included), for `/metrics`.
    pub fn connection_setups(&self) -> Arc<ConnectionSetups> {
        Arc::clone(&self.inner.limits.setups)
    }

    /// Creates `topic` with `partitions` partitions; Ok(false) if it already existed.
    pub async fn create_topic(
        &self,
        topic: &str,
        partitions: i32,
        replication_factor: i16,
    ) -> Result<bool, ProduceError> {
        let req = CreateTopicsRequest::default()
            .with_topics(vec![
                CreatableTopic::default()
                    .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
                    .with_num_partitions(partitions)
                    .with_replication_factor(replication_factor),
            ])
            .with_timeout_ms(self.timeout_ms());
        let resp: CreateTopicsResponse = self
            .bootstrap_call(
                ApiKey::CreateTopics,
                "CreateTopics",
                2,
                CREATE_TOPICS_MAX,
                &req,
            )
            .await?;
        self.forget(topic);
        let Some(t) = resp.topics.iter().find(|t| t.name.0.as_str() == topic) else {
            return Err(ProduceError::Protocol {
                broker: "bootstrap".into(),
                reason: format!("CreateTopics response does not mention {topic}"),
            });
        };
        match t.error_code {
            0 => Ok(true),
            codes::TOPIC_ALREADY_EXISTS => Ok(false),
            code => Err(ProduceError::refused(
                "CreateTopics",
                topic,
                -1,
                code,
                t.error_message.as_ref().map(|m| m.to_string()),
            )),
        }
    }

    /// The idempotent producer id and epoch in use, if a session is active.
    pub fn producer_identity(&self) -> Option<ProducerIdentity> {
        match self.inner.sequencer.lock().session() {
            Session::Active { producer_id, epoch } => Some(ProducerIdentity { producer_id, epoch }),
            Session::Needed | Session::Off => None,
        }
    }

    /// Gets a producer id and epoch from the broker (InitProducerId, no transactional id).
    async fn init_producer_id(&self) -> Result<ProducerIdentity, ProduceError> {
        let req = InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_transaction_timeout_ms(i32::MAX)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
        let resp: InitProducerIdResponse = self
            .bootstrap_call(
                ApiKey::InitProducerId,
                "InitProducerId",
                0,
                INIT_PRODUCER_ID_MAX,
                &req,
            )
            .await?;
        if resp.error_code != 0 {
            return Err(ProduceError::refused(
                "InitProducerId",
                "",
                -1,
                resp.error_code,
                None,
            ));
        }
        Ok(ProducerIdentity {
            producer_id: resp.producer_id.0,
            epoch: resp.producer_epoch,
        })
    }

    /// Starts the session of a new transaction epoch (the transaction session got `identity`
    /// from InitProducerId with the transactional.id).
    pub(crate) fn start_transactional_session(&self, identity: ProducerIdentity) {
        self.inner
            .sequencer
            .lock()
            .restart_session(identity.producer_id, identity.epoch);
    }

    /// Starts a producer session if the sequencer needs one.
    async fn ensure_session(&self) -> Result<(), ProduceError> {
        let _one = self.inner.session_start.lock().await;
        if !self.inner.sequencer.lock().needs_session() {
            return Ok(());
        }
        if let Some(id) = &self.inner.config.transactional_id {
            // Only the transaction session may start an epoch (it aborts and resends).
            return Err(ProduceError::NoTransaction {
                transactional_id: id.clone(),
            });
        }
        match self.init_producer_id().await {
            Ok(id) => {
                self.inner
                    .sequencer
                    .lock()
                    .start_session(id.producer_id, id.epoch);
                Ok(())
            }
            Err(e)
                if e.class() == ErrorClass::Fatal && matches!(e, ProduceError::Broker { .. }) =>
            {
                // E.g. an old cluster without the IdempotentWrite ACL: keep forwarding,
                // at-least-once without broker-side deduplication.
                tracing::warn!(error = %e, "InitProducerId refused; producing without idempotence");
                self.inner.sequencer.lock().go_without_sessions();
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// After a failed request: forget what it showed to be stale.
    fn note_failure(&self, tp: &Topition, error: &ProduceError) {
        if error.stales_metadata() {
            self.forget(tp.topic());
        }
    }

    /// Drops cached metadata for `topic`; the next use refetches it.
    pub fn forget(&self, topic: &str) {
        self.inner.meta.lock().forget(topic);
    }

    fn timeout_ms(&self) -> i32 {
        // Ask the broker to give up before we do, so it can answer with REQUEST_TIMED_OUT.
        let ms = self.inner.config.request_timeout.as_millis() * 3 / 4;
        i32::try_from(ms).unwrap_or(i32::MAX)
    }

    /// A new connection to the first bootstrap (or known) broker that accepts one.
    async fn connect_any(&self) -> Result<Connection, ProduceError> {
        let mut candidates = self.inner.config.brokers.clone();
        candidates.extend(self.inner.meta.lock().broker_addrs());
        let mut last = ProduceError::NoBrokers;
        for addr in candidates {
            match Connection::connect(&addr, &self.inner.limits).await {
                Ok(c) => return Ok(c),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Sends a request on the bootstrap connection, connecting to any known broker if needed.
    /// A kept connection that turns out dead (the broker restarted since, or the renewal of
    /// its SASL session failed) is replaced once right away, so the first request after an
    /// outage does not fail for it; a connection left unusable is never kept.
    pub(super) async fn bootstrap_call<Req, Resp>(
        &self,
        api: ApiKey,
        name: &'static str,
        need: i16,
        ours: i16,
        req: &Req,
    ) -> Result<Resp, ProduceError>
    where
        Req: kafka_protocol::protocol::Encodable,
        Resp: kafka_protocol::protocol::Decodable,
    {
        let mut guard = self.inner.bootstrap.lock().await;
        loop {
            let fresh = guard.is_none();
            let conn = match guard.as_mut() {
                Some(conn) => conn,
                None => guard.insert(self.connect_any().await?),
            };
            let result = match conn.version(api, name, need, ours) {
                Ok(v) => conn.call(api, v, req).await,
                Err(e) => Err(e),
            };
            let usable = conn.usable();
            match result {
                Err(e) if !usable => {
                    *guard = None;
                    self.inner.limits.lost.note();
                    self.inner
                        .limits
                        .lost
                        .describe(e.to_string(), Instant::now());
                    if fresh {
                        return Err(e);
                    }
                }
                result => return result,
            }
        }
    }

    /// Fetches metadata for `topic` (auto-creating it if the broker allows) into the cache;
    /// returns its partition count.
    async fn refresh(&self, topic: &str) -> Result<i32, ProduceError> {
        let generation = self.inner.limits.lost.count();
        let req = MetadataRequest::default()
            .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(
                TopicName(StrBytes::from_string(topic.to_owned())),
            ))]))
            .with_allow_auto_topic_creation(true);
        let resp: MetadataResponse = self
            .bootstrap_call(ApiKey::Metadata, "Metadata", 4, METADATA_MAX, &req)
            .await?;
        let brokers = resp
            .brokers
            .iter()
            .map(|b| (b.node_id.0, format!("{}:{}", b.host.as_str(), b.port)));
        let Some(t) = resp
            .topics
            .iter()
            .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == topic))
        else {
            return Err(ProduceError::Protocol {
                broker: "bootstrap".into(),
                reason: format!("Metadata response does not mention {topic}"),
            });
        };
        let mut meta = self.inner.meta.lock();
        if t.error_code != 0 {
            meta.forget(topic);
            return Err(ProduceError::refused(
                "Metadata",
                topic,
                -1,
                t.error_code,
                None,
            ));
        }
        let count = t
            .partitions
            .iter()
            .map(|p| p.partition_index + 1)
            .max()
            .unwrap_or(0)
            .max(0) as usize;
        let mut leaders = vec![-1; count];
        for p in &t.partitions {
            if let Some(slot) = usize::try_from(p.partition_index)
                .ok()
                .and_then(|i| leaders.get_mut(i))
            {
                *slot = if p.error_code == 0 { p.leader_id.0 } else { -1 };
            }
        }
        meta.update(brokers, topic, leaders, generation, Instant::now());
        Ok(i32::try_from(count).unwrap_or(i32::MAX))
    }

    /// The connection slot of `tp`'s leader (metadata refreshed when missing or stale).
    async fn leader_slot(&self, tp: &Topition) -> Result<(Slot, String), ProduceError> {
        let (topic, partition) = (tp.topic(), tp.partition());
        let mut leader = self
            .inner
            .meta
            .lock()
            .leader(topic, partition, Instant::now());
        if leader == Leader::Unknown {
            self.refresh(topic).await?;
            leader = self
                .inner
                .meta
                .lock()
                .leader(topic, partition, Instant::now());
        }
        let (id, addr) = match leader {
            Leader::Broker(id, addr) => (id, addr),
            Leader::NoPartition { partitions } => {
                return Err(ProduceError::UnknownPartition {
                    topic: topic.to_owned(),
                    partition,
                    partitions,
                });
            }
            // No leader, or a connection was lost while fetching: try again later.
            Leader::None | Leader::Unknown => {
                self.forget(topic);
                return Err(ProduceError::NoLeader {
                    topic: topic.to_owned(),
                    partition,
                    after_loss: self.inner.limits.lost.recent(Instant::now()),
                });
            }
        };
        // Partitions spread over up to `connections_per_broker` connections to their leader,
        // so batches for different partitions travel in parallel.
        let lane = partition as usize % self.inner.config.connections_per_broker.max(1);
        let slot = self
            .inner
            .slots
            .lock()
            .entry((id, lane))
            .or_insert_with(|| {
                Arc::new(tokio::sync::Mutex::new(BrokerSlot {
                    addr: addr.clone(),
                    pipe: None,
                    scratch: BytesMut::new(),
                }))
            })
            .clone();
        Ok((slot, addr))
    }

    /// The identity for `ticket`'s batch of `count` records, starting a session if needed.
    async fn assign(&self, ticket: &Ticket, count: usize) -> Result<BatchIdentity, ProduceError> {
        loop {
            let assigned = self.inner.sequencer.lock().assign(ticket, count);
            match assigned {
                Ok(identity) => return Ok(identity),
                Err(Refusal::NoSession) => self.ensure_session().await?,
                Err(Refusal::Blocked) => return Err(blocked(ticket.topition())),
            }
        }
    }

    /// Encodes the batch (or stamps the one encoded ahead) and writes the Produce request (the
    /// send half). On an error, the identity the batch got, if any, comes back with it.
    async fn write_request(
        &self,
        request: &InFlight,
        records: &[ProduceRecord],
        encoded: Option<EncodedBatch>,
    ) -> Result<(Sent, BatchIdentity), (ProduceError, Option<BatchIdentity>)> {
        let Some(ticket) = request.ticket() else {
            return Err((ProduceError::EmptyBatch, None));
        };
        let tp = ticket.topition();
        if records.is_empty() {
            return Err((ProduceError::EmptyBatch, None));
        }
        self.ensure_session().await.map_err(|e| (e, None))?;
        let (slot, addr) = self.leader_slot(tp).await.map_err(|e| (e, None))?;
        let mut slot = slot.lock().await;
        if slot.addr != addr {
            // The broker id now advertises another address.
            slot.addr = addr;
            slot.pipe = None;
        }
        // Without sequence numbers the broker cannot refuse a batch that would overtake a
        // failed one: keep one request in flight then.
        let in_flight = if self.inner.sequencer.lock().pipelined() {
            self.inner.config.max_in_flight
        } else {
            1
        };
        if !slot
            .pipe
            .as_ref()
            .is_some_and(|p| p.usable() && p.max_in_flight() <= in_flight.max(1))
        {
            slot.pipe = None;
            let conn = Connection::connect(&slot.addr, &self.inner.limits)
                .await
                .map_err(|e| (e, None))?;
            slot.pipe = Some(conn.into_pipeline(in_flight));
        }
        let BrokerSlot { pipe, scratch, .. } = &mut *slot;
        let Some(c) = pipe.as_mut() else {
            return Err((ProduceError::NoBrokers, None));
        };
        let version = c
            .version(ApiKey::Produce, "Produce", 3, PRODUCE_MAX)
            .map_err(|e| (e, None))?;
        // Assigned under the slot lock: batches to one partition get consecutive sequence
        // numbers in the order they are written.
        let mut identity = self
            .assign(ticket, records.len())
            .await
            .map_err(|e| (e, None))?;
        identity.transactional = self.inner.config.transactional_id.is_some();
        let out = match encoded.filter(|e| {
            e.count() == records.len() && e.compression() == self.inner.config.compression
        }) {
            Some(e) => e.stamp(identity),
            None => {
                let mut out = BytesMut::new();
                encode_batch(
                    records,
                    self.inner.config.compression,
                    identity,
                    scratch,
                    &mut out,
                )
                .map_err(|e| (e, Some(identity)))?;
                out.freeze()
            }
        };
        if out.len() > self.inner.config.max_request_bytes {
            return Err((
                ProduceError::BatchTooLarge {
                    bytes: out.len(),
                    max: self.inner.config.max_request_bytes,
                },
                Some(identity),
            ));
        }
        let req = ProduceRequest::default()
            .with_transactional_id(
                self.inner
                    .config
                    .transactional_id
                    .as_ref()
                    .map(|id| TransactionalId(StrBytes::from_string(id.clone()))),
            )
            .with_acks(-1)
            .with_timeout_ms(self.timeout_ms())
            .with_topic_data(vec![
                TopicProduceData::default()
                    .with_name(TopicName(StrBytes::from_string(tp.topic().to_owned())))
                    .with_partition_data(vec![
                        PartitionProduceData::default()
                            .with_index(tp.partition())
                            // Written in place of the mark, not copied into the request.
                            .with_records(Some(Bytes::from_static(PAYLOAD_MARK))),
                    ]),
            ]);
        let (rx, correlation_id) = c
            .send(ApiKey::Produce, version, &req, Some(&out))
            .await
            .map_err(|e| (e, Some(identity)))?;
        Ok((
            Sent {
                rx,
                meta: SentMeta {
                    correlation_id,
                    version,
                    broker: c.broker().to_owned(),
                    throttle: c.throttle(),
                    throttle_cap: self.inner.config.request_timeout,
                },
            },
            identity,
        ))
    }

    /// Sends a batch (see [`KafkaProducer::send`]).
    async fn send_batch(
        &self,
        tp: &Topition,
        records: &[ProduceRecord],
        encoded: Option<EncodedBatch>,
        attempt: Attempt,
    ) -> ProduceAck {
        let begun = self.inner.sequencer.lock().begin(tp, attempt);
        let request = match begun {
            Ok(ticket) => InFlight {
                inner: Arc::clone(&self.inner),
                ticket: Some(ticket),
            },
            Err(_) => return ProduceAck::ready(Err(blocked(tp))),
        };
        let (sent, identity) = match self.write_request(&request, records, encoded).await {
            Ok(x) => x,
            Err((e, identity)) => {
                self.note_failure(tp, &e);
                request.finish(Err((&e, identity)));
                return ProduceAck::ready(Err(e));
            }
        };
        let this = self.clone();
        let tp = tp.clone();
        ProduceAck::pending(async move {
            let result = match sent.rx.await {
                Ok(Ok(body)) => produce_result(&sent.meta, &tp, body),
                Ok(Err(e)) => Err(e),
                Err(_) => Err(ProduceError::Io {
                    broker: sent.meta.broker.clone(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::ConnectionAborted,
                        "connection closed with the request in flight",
                    ),
                }),
            };
            match &result {
                Ok(_) => request.finish(Ok(())),
                Err(e) => {
                    this.note_failure(&tp, e);
                    request.finish(Err((e, Some(identity))));
                }
            }
            result
        })
    }
}

/// The refusal of a batch that would overtake a failed one.
fn blocked(tp: &Topition) -> ProduceError {
    ProduceError::Blocked {
        topic: tp.topic().to_owned(),
        partition: tp.partition(),
    }
}

/// A produce request written to a connection.
struct Sent {
    rx: tokio::sync::oneshot::Receiver<Frame>,
    meta: SentMeta,
}

/// What the response to a written request must match.
struct SentMeta {
    correlation_id: i32,
    version: i16,
    broker: String,
    /// The connection's throttle, set from the answer's throttle time.
    throttle: Throttle,
    /// The longest throttle honoured (the request timeout).
    throttle_cap: Duration,
}

/// The base offset from a Produce response frame, or the partition's error.
fn produce_result(sent: &SentMeta, tp: &Topition, body: bytes::Bytes) -> Result<i64, ProduceError> {
    let (topic, partition) = (tp.topic(), tp.partition());
    let resp: ProduceResponse = decode_response(
        &sent.broker,
        ApiKey::Produce,
        sent.version,
        sent.correlation_id,
        body,
    )?;
    if resp.throttle_time_ms > 0 {
        let time = Duration::from_millis(resp.throttle_time_ms.unsigned_abs().into());
        if sent.throttle.hold(time, sent.throttle_cap) {
            tracing::warn!(broker = %sent.broker, throttle_ms = resp.throttle_time_ms, "Kafka broker is throttling this producer (a quota); holding requests on the connection back that long");
        }
    }
    let found = resp
        .responses
        .iter()
        .filter(|t| t.name.0.as_str() == topic)
        .flat_map(|t| t.partition_responses.iter())
        .find(|p| p.index == partition);
    let Some(p) = found else {
        return Err(ProduceError::Protocol {
            broker: sent.broker.clone(),
            reason: format!("Produce response does not mention {tp}"),
        });
    };
    if p.error_code != 0 {
        return Err(ProduceError::refused(
            "Produce",
            topic,
            partition,
            p.error_code,
            p.error_message.as_ref().map(|m| m.to_string()),
        ));
    }
    Ok(p.base_offset)
}

impl KafkaProducer for WireProducer {
    async fn send(
        &self,
        tp: &Topition,
        records: &[ProduceRecord],
        encoded: Option<EncodedBatch>,
        attempt: Attempt,
    ) -> ProduceAck {
        self.send_batch(tp, records, encoded, attempt).await
    }

    fn encode(&self, records: &[ProduceRecord]) -> Option<EncodedBatch> {
        let mut scratch = self.inner.scratch_pool.lock().pop().unwrap_or_default();
        let encoded = EncodedBatch::encode(records, self.inner.config.compression, &mut scratch);
        self.inner.scratch_pool.lock().push(scratch);
        encoded.ok()
    }

    async fn produce(&self, tp: &Topition, records: &[ProduceRecord]) -> Result<i64, ProduceError> {
        self.send_batch(tp, records, None, Attempt::Resend)
            .await
            .await
    }

    async fn partition_count(&self, topic: &str) -> Result<i32, ProduceError> {
        let cached = self
            .inner
            .meta
            .lock()
            .partition_count(topic, Instant::now());
        match cached {
            Some(n) => Ok(n),
            None => self.refresh(topic).await,
        }
    }

    async fn create_topic(&self, topic: &str, partitions: i32) -> Result<bool, ProduceError> {
        WireProducer::create_topic(self, topic, partitions, 1).await
    }

    fn forget_topic(&self, topic: &str) {
        self.forget(topic);
    }

    /// Opens a new connection to a bootstrap broker (TCP connect and ApiVersions) and keeps it
    /// as the bootstrap connection; the kept one may be dead after an outage.
    async fn probe(&self) -> Result<(), ProduceError> {
        let conn = self.connect_any().await?;
        *self.inner.bootstrap.lock().await = Some(conn);
        Ok(())
    }

    fn credentials(&self) -> Option<u64> {
        let sasl = self.inner.limits.sasl.as_ref()?;
        Some(sasl.settings.fingerprint())
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use edge_tests::kafka::Tansu;

    use super::*;

    /// `err` is the broker's DUPLICATE_SEQUENCE_NUMBER.
    fn assert_duplicate_sequence(err: &ProduceError) {
        assert!(
            matches!(
                err,
                ProduceError::Broker {
                    code: codes::DUPLICATE_SEQUENCE_NUMBER,
                    ..
                }
            ),
            "{err}"
        );
    }

    fn records(n: usize, tag: &str) -> Vec<ProduceRecord> {
        (0..n)
            .map(|i| ProduceRecord {
                value: Some(Bytes::from(format!("{tag}-{i}"))),
                ..Default::default()
            })
            .collect()
    }

    fn set_sequence(p: &WireProducer, topic: &str, seq: i32) {
        p.inner
            .sequencer
            .lock()
            .set_next_sequence(&Topition::new(topic, 0), seq);
    }

    fn tp(topic: &str) -> Topition {
        Topition::new(topic, 0)
    }

    /// Tansu enforces the idempotent producer's sequence numbers like Kafka: a batch after a
    /// gap (its predecessor was not written) is refused with OUT_OF_ORDER_SEQUENCE_NUMBER, which
    /// is what keeps a pipelined batch from overtaking a failed one. A resent batch it already
    /// has is answered with DUPLICATE_SEQUENCE_NUMBER — which we do not count as written
    /// (after a Tansu restart it said so for batches it had lost): a new producer session
    /// resends it, a recognisable duplicate at worst.
    #[tokio::test]
    async fn tansu_refuses_sequence_gaps_and_recognises_duplicates() {
        let tansu = Tansu::start();
        let p = WireProducer::new(ProducerConfig::new(vec![tansu.bootstrap()])).unwrap();
        p.create_topic("seq", 1, 1).await.unwrap();
        assert_eq!(p.produce(&tp("seq"), &records(3, "a")).await.unwrap(), 0);

        // The same batch again with the same sequence (a resend after a lost answer).
        set_sequence(&p, "seq", 0);
        let err = p.produce(&tp("seq"), &records(3, "a")).await.unwrap_err();
        assert_duplicate_sequence(&err);
        assert_eq!(
            p.producer_identity(),
            None,
            "a new producer session follows"
        );
        assert_eq!(p.produce(&tp("seq"), &records(1, "b")).await.unwrap(), 3);
        let pid = p.producer_identity().unwrap();

        // A gap of 5, as if a batch in between had failed.
        set_sequence(&p, "seq", 9);
        let err = p.produce(&tp("seq"), &records(2, "gap")).await.unwrap_err();
        assert!(
            matches!(
                err,
                ProduceError::Broker {
                    code: codes::OUT_OF_ORDER_SEQUENCE_NUMBER,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(
            p.producer_identity(),
            None,
            "a new producer session follows"
        );
        // The resend starts a new session and is written right after "b".
        assert_eq!(p.produce(&tp("seq"), &records(2, "gap")).await.unwrap(), 4);
        assert_ne!(p.producer_identity(), Some(pid));
    }

    /// A batch encoded ahead gets its producer identity when it is written, not when it was
    /// encoded: here a new producer session starts in between (as after
    /// DUPLICATE_SEQUENCE_NUMBER), and Kafka holds the batch under the new id at sequence 0.
    #[tokio::test]
    async fn batches_encoded_ahead_get_the_identity_of_the_moment_they_are_written() {
        let tansu = Tansu::start();
        let p = WireProducer::new(ProducerConfig::new(vec![tansu.bootstrap()])).unwrap();
        p.create_topic("ahead", 1, 1).await.unwrap();
        let (a, b) = (records(3, "a"), records(2, "b"));
        // Both encoded before the producer even has an id.
        let (ea, eb) = (p.encode(&a).unwrap(), p.encode(&b).unwrap());
        let ack = p.send(&tp("ahead"), &a, Some(ea), Attempt::First).await;
        assert_eq!(ack.await.unwrap(), 0);
        let first = p.producer_identity().unwrap();
        p.inner.sequencer.lock().end_session();
        let ack = p.send(&tp("ahead"), &b, Some(eb), Attempt::First).await;
        assert_eq!(ack.await.unwrap(), 3);
        let second = p.producer_identity().unwrap();
        assert_ne!(first, second);
        // The same records again under (second id, sequence 0): Kafka already has them.
        set_sequence(&p, "ahead", 0);
        let err = p.produce(&tp("ahead"), &b).await.unwrap_err();
        assert_duplicate_sequence(&err);
        // The resend (a new session again) unblocks the partition.
        assert_eq!(p.produce(&tp("ahead"), &b).await.unwrap(), 5);
        // An encoding that does not match the records is not used: they are encoded afresh.
        let c = records(4, "c");
        let stale = p.encode(&records(1, "other")).unwrap();
        let ack = p.send(&tp("ahead"), &c, Some(stale), Attempt::First).await;
        assert_eq!(ack.await.unwrap(), 7);
    }

    /// Many requests in flight on one connection are appended in the order they were sent; a
    /// failed one blocks the partition until `produce` resends it.
    #[tokio::test]
    async fn pipelined_sends_keep_order_and_a_failure_blocks_the_partition() {
        let tansu = Tansu::start();
        let mut config = ProducerConfig::new(vec![tansu.bootstrap()]);
        config.max_request_bytes = 64 * 1024;
        config.compression = Compression::None;
        let p = WireProducer::new(config).unwrap();
        p.create_topic("pipe", 1, 1).await.unwrap();
        let mut acks = Vec::new();
        for i in 0..20 {
            acks.push(
                p.send(
                    &tp("pipe"),
                    &records(50, &format!("b{i}")),
                    None,
                    Attempt::First,
                )
                .await,
            );
        }
        let mut offsets = Vec::new();
        for ack in acks {
            offsets.push(ack.await.unwrap());
        }
        assert_eq!(offsets, (0..20).map(|i| i * 50).collect::<Vec<i64>>());

        // A batch refused before it is written (too large) blocks the partition.
        let big = vec![ProduceRecord {
            value: Some(Bytes::from(vec![b'x'; 100 * 1024])),
            ..Default::default()
        }];
        let err = p
            .send(&tp("pipe"), &big, None, Attempt::First)
            .await
            .await
            .unwrap_err();
        assert!(matches!(err, ProduceError::BatchTooLarge { .. }), "{err}");
        let err = p
            .send(&tp("pipe"), &records(1, "after"), None, Attempt::First)
            .await
            .await
            .unwrap_err();
        assert!(matches!(err, ProduceError::Blocked { .. }), "{err}");
        assert_eq!(err.class(), ErrorClass::Retriable);
        // The resend (produce) lifts the block and
        // continues the sequence where the failed batch would have started.
        assert_eq!(
            p.produce(&tp("pipe"), &records(1, "resent")).await.unwrap(),
            1000
        );
        assert_eq!(
            p.send(&tp("pipe"), &records(1, "next"), None, Attempt::First)
                .await
                .await
                .unwrap(),
            1001
        );
    }

    /// The password is revoked on the Kafka side while a session runs: the bootstrap
    /// connection's renewal (KIP-368) fails, and Kafka closes a connection whose authentication
    /// failed. It must not be kept: once the operator fixes the password file, the next
    /// metadata request connects afresh and works. (It was kept, and every later request
    /// renewed the session again on the closed socket, "broken pipe", for as long as the
    /// broker ran: the forwarder never recovered.)
    #[tokio::test]
    async fn a_failed_renewal_drops_the_connection_and_a_fixed_password_recovers() {
        let dir = tempfile::tempdir().unwrap();
        let creds = dir.path().join("credentials.json");
        let password = dir.path().join("password");
        std::fs::write(&creds, r#"{"users": {"gw": "one"}}"#).unwrap();
        std::fs::write(&password, "one").unwrap();
        // Sessions of 400 ms: renewed before a request once 340 ms have passed.
        let tansu = Tansu::start_sasl(&creds, 400);
        let mut config = ProducerConfig::new(vec![tansu.bootstrap()]);
        config.sasl = Some(SaslSettings {
            mechanism: super::super::sasl::Mechanism::ScramSha512,
            username: "gw".into(),
            secret_file: password.clone(),
        });
        let p = WireProducer::new(config).unwrap();
        p.create_topic("revoked", 1, 1).await.unwrap();

        std::fs::write(&creds, r#"{"users": {"gw": "two"}}"#).unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        p.forget("revoked");
        let err = p.partition_count("revoked").await.unwrap_err();
        assert!(matches!(err, ProduceError::Authentication { .. }), "{err}");

        std::fs::write(&password, "two").unwrap();
        p.forget("revoked");
        assert_eq!(p.partition_count("revoked").await.unwrap(), 1);
        assert_eq!(
            p.produce(&tp("revoked"), &records(1, "after"))
                .await
                .unwrap(),
            0
        );
    }

    /// The demo's replay bug (issue 16): Kafka restarts empty (Tansu's memory storage) while
    /// the producer has fresh metadata for two topics. Only requests to the first fail and make
    /// it look the topic up again (auto-creating it); the second one's requests went to a topic
    /// the new broker did not have — Tansu acknowledged them and no consumer ever saw them.
    /// Every topic must be looked up again once a connection was lost.
    #[tokio::test]
    async fn after_kafka_restarted_empty_every_topic_is_created_again() {
        let mut tansu = Tansu::start();
        let p = WireProducer::new(ProducerConfig::new(vec![tansu.bootstrap()])).unwrap();
        for topic in ["first", "second"] {
            p.create_topic(topic, 1, 1).await.unwrap();
            p.produce(&tp(topic), &records(1, "before")).await.unwrap();
        }
        tansu.restart();
        // Requests fail until the pipelines notice the restart; then each topic gets a record.
        for topic in ["first", "second"] {
            let deadline = Instant::now() + Duration::from_secs(20);
            while let Err(e) = p.produce(&tp(topic), &records(1, "after")).await {
                assert!(Instant::now() < deadline, "{topic}: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        for topic in ["first", "second"] {
            let got = edge_tests::kafka::read_topic(&tansu.bootstrap(), topic, 1);
            let values: Vec<_> = got.iter().filter_map(|r| r.value.as_deref()).collect();
            assert_eq!(values, ["after-0"], "{topic}: what the new Kafka holds");
        }
    }
}
