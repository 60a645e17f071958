//! [`WireProducer`]: metadata cache + per-broker connections + Produce (acks=all).
//!
//! Several Produce requests may be in flight per connection (`max_in_flight`, 5 like Kafka's
//! limit for the idempotent producer). Order within a partition rests on three things:
//! requests are written in the order `send` was called, Kafka answers and appends the
//! requests of one connection in that order, and the idempotent producer's sequence numbers
//! make the broker refuse (OUT_OF_ORDER_SEQUENCE_NUMBER) a batch whose predecessor was not
//! written. After any failure the partition is blocked: `send` refuses, and `produce` (the
//! resend) waits until nothing is in flight, rewinds the sequence to the first failed batch and
//! sends it again. Without a producer id (idempotence off or refused), one request is in flight
//! per connection.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, CreateTopicsRequest, CreateTopicsResponse, InitProducerIdRequest,
    InitProducerIdResponse, MetadataRequest, MetadataResponse, ProduceRequest, ProduceResponse,
    ProducerId, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::batch::{BatchIdentity, EncodedBatch, encode_batch};
use super::conn::{ConnLimits, Connection, Frame, Pipeline, Throttle, decode_response};
use super::tls::TlsSettings;
use super::{
    Compression, ErrorClass, KafkaProducer, ProduceAck, ProduceError, ProduceRecord, code_name,
    codes,
};

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
        }
    }
}

#[derive(Debug)]
struct TopicMeta {
    /// Leader broker id per partition index; -1 when there is none.
    leaders: Vec<i32>,
    fetched: Instant,
}

#[derive(Debug, Default)]
struct MetaCache {
    brokers: HashMap<i32, String>,
    topics: HashMap<String, TopicMeta>,
}

struct BrokerSlot {
    addr: String,
    pipe: Option<Pipeline>,
    /// Uncompressed records of the batch being compressed (reused).
    scratch: BytesMut,
}

type Slot = Arc<tokio::sync::Mutex<BrokerSlot>>;

/// Producer id, epoch and the next sequence number per topic-partition.
#[derive(Debug)]
struct Idempotence {
    producer_id: i64,
    epoch: i16,
    sequences: HashMap<(String, i32), i32>,
}

/// The producer identity a produce used, to advance or reset afterwards.
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
    meta: Mutex<MetaCache>,
    /// Connection used for Metadata and CreateTopics.
    bootstrap: tokio::sync::Mutex<Option<Connection>>,
    /// One connection per leader broker id.
    slots: Mutex<HashMap<(i32, usize), Slot>>,
    /// Scratch buffers for `encode` (uncompressed records), reused across calls and threads.
    scratch_pool: Mutex<Vec<BytesMut>>,
    /// Idempotent-producer state; None until InitProducerId succeeded (or when disabled).
    idempotence: Mutex<Option<Idempotence>>,
    /// Requests in flight and failures per topic-partition (kept across producer ids).
    partitions: Mutex<HashMap<(String, i32), PartitionState>>,
}

/// Where the first failed batch of a partition was, to resend from it.
#[derive(Debug, Clone, Copy)]
struct Failure {
    /// Its place in the partition's send order.
    index: u64,
    /// Its producer identity (None if it failed before a sequence number was assigned).
    identity: Option<BatchIdentity>,
}

#[derive(Debug, Default)]
struct PartitionState {
    /// Requests sent and not answered yet.
    in_flight: usize,
    /// Requests started so far (the send order).
    started: u64,
    /// Set by a failure; `send` refuses until `produce` resent from here.
    failed: Option<Failure>,
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

/// Keeps a request counted as in flight until its answer was handled (or it was dropped).
struct InFlight {
    inner: Arc<Inner>,
    key: (String, i32),
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(st) = lock(&self.inner.partitions).get_mut(&self.key) {
            st.in_flight = st.in_flight.saturating_sub(1);
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

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks leaves only cache data behind; keep going.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl WireProducer {
    /// A producer for `config`; connects lazily on first use.
    pub fn new(config: ProducerConfig) -> Result<Self, ProduceError> {
        if config.brokers.is_empty() {
            return Err(ProduceError::NoBrokers);
        }
        let limits = ConnLimits {
            connect_timeout: config.connect_timeout,
            request_timeout: config.request_timeout,
            max_response_bytes: config.max_response_bytes,
            client_id: StrBytes::from_string(config.client_id.clone()),
            tls: config.tls.as_ref().map(super::tls::connector).transpose()?,
        };
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                limits,
                meta: Mutex::new(MetaCache::default()),
                bootstrap: tokio::sync::Mutex::new(None),
                slots: Mutex::new(HashMap::new()),
                scratch_pool: Mutex::new(Vec::new()),
                idempotence: Mutex::new(None),
                partitions: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The settings this producer runs with.
    pub fn config(&self) -> &ProducerConfig {
        &self.inner.config
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
            code => Err(ProduceError::Broker {
                api: "CreateTopics",
                topic: topic.to_owned(),
                partition: -1,
                code,
                name: code_name(code),
                message: t.error_message.as_ref().map(|m| m.to_string()),
            }),
        }
    }

    /// The idempotent producer id and epoch in use, if one was assigned.
    pub fn producer_identity(&self) -> Option<ProducerIdentity> {
        lock(&self.inner.idempotence)
            .as_ref()
            .filter(|i| i.producer_id >= 0)
            .map(|i| ProducerIdentity {
                producer_id: i.producer_id,
                epoch: i.epoch,
            })
    }

    /// Gets a producer id and epoch from the broker (InitProducerId, no transactional id).
    async fn init_producer_id(&self) -> Result<(), ProduceError> {
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
            return Err(ProduceError::Broker {
                api: "InitProducerId",
                topic: String::new(),
                partition: -1,
                code: resp.error_code,
                name: code_name(resp.error_code),
                message: None,
            });
        }
        *lock(&self.inner.idempotence) = Some(Idempotence {
            producer_id: resp.producer_id.0,
            epoch: resp.producer_epoch,
            sequences: HashMap::new(),
        });
        Ok(())
    }

    /// The batch identity for the next batch of `count` records to `topic`/`partition`; the
    /// partition's sequence moves past it (a failure rewinds it, see `record_failure`).
    fn next_identity(&self, topic: &str, partition: i32, count: usize) -> BatchIdentity {
        match lock(&self.inner.idempotence).as_mut() {
            Some(i) if i.producer_id >= 0 => {
                let seq = i
                    .sequences
                    .entry((topic.to_owned(), partition))
                    .or_insert(0);
                let base = *seq;
                // Sequence numbers wrap to 0 after i32::MAX, as in the Java client.
                *seq = ((i64::from(base) + count as i64) % (i64::from(i32::MAX) + 1)) as i32;
                BatchIdentity {
                    producer_id: i.producer_id,
                    producer_epoch: i.epoch,
                    base_sequence: base,
                }
            }
            _ => BatchIdentity::default(),
        }
    }

    /// Blocks the partition after a failed request (keeping the earliest failure) and resets
    /// the producer id if the broker lost or rejected our state — unless this failure only
    /// followed an earlier one (a batch refused because its predecessor was not written).
    fn record_failure(&self, topic: &str, partition: i32, failure: Failure, error: &ProduceError) {
        if error.stales_metadata() {
            self.forget(topic);
        }
        let first = {
            let mut parts = lock(&self.inner.partitions);
            let st = parts.entry((topic.to_owned(), partition)).or_default();
            match st.failed {
                Some(f) if f.index <= failure.index => false,
                _ => {
                    st.failed = Some(failure);
                    true
                }
            }
        };
        if first && error.resets_producer_id() {
            let mut idem = lock(&self.inner.idempotence);
            let current = idem
                .as_ref()
                .map(|i| (i.producer_id, i.epoch))
                .unwrap_or((-1, -1));
            let ours = failure
                .identity
                .map(|b| (b.producer_id, b.producer_epoch))
                .unwrap_or((-1, -1));
            if current == ours {
                // Start a new producer session (fresh id, sequences from 0) on the next
                // produce.
                *idem = None;
            }
        }
    }

    /// Counts a new request to the partition. A resend (`resync`) lifts the block of an
    /// earlier failure once nothing is in flight and rewinds the sequence to the failed batch;
    /// otherwise a blocked partition refuses.
    fn start_request(
        &self,
        topic: &str,
        partition: i32,
        resync: bool,
    ) -> Result<(u64, InFlight), ProduceError> {
        let key = (topic.to_owned(), partition);
        let mut parts = lock(&self.inner.partitions);
        let st = parts.entry(key.clone()).or_default();
        if let Some(f) = st.failed {
            if !resync || st.in_flight > 0 {
                return Err(ProduceError::Blocked {
                    topic: topic.to_owned(),
                    partition,
                });
            }
            st.failed = None;
            if let Some(b) = f.identity
                && let Some(i) = lock(&self.inner.idempotence).as_mut()
                && i.producer_id == b.producer_id
                && i.epoch == b.producer_epoch
            {
                i.sequences.insert(key.clone(), b.base_sequence);
            }
        }
        st.in_flight += 1;
        st.started += 1;
        let index = st.started;
        drop(parts);
        Ok((
            index,
            InFlight {
                inner: Arc::clone(&self.inner),
                key,
            },
        ))
    }

    /// Drops cached metadata for `topic`; the next use refetches it.
    pub fn forget(&self, topic: &str) {
        lock(&self.inner.meta).topics.remove(topic);
    }

    fn timeout_ms(&self) -> i32 {
        // Ask the broker to give up before we do, so it can answer with REQUEST_TIMED_OUT.
        let ms = self.inner.config.request_timeout.as_millis() * 3 / 4;
        i32::try_from(ms).unwrap_or(i32::MAX)
    }

    /// Sends a request on the bootstrap connection, trying every known broker to connect.
    async fn bootstrap_call<Req, Resp>(
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
        if guard.is_none() {
            let mut candidates = self.inner.config.brokers.clone();
            candidates.extend(lock(&self.inner.meta).brokers.values().cloned());
            let mut last = ProduceError::NoBrokers;
            for addr in candidates {
                match Connection::connect(&addr, &self.inner.limits).await {
                    Ok(c) => {
                        *guard = Some(c);
                        break;
                    }
                    Err(e) => last = e,
                }
            }
            if guard.is_none() {
                return Err(last);
            }
        }
        let Some(conn) = guard.as_mut() else {
            return Err(ProduceError::NoBrokers);
        };
        let result = match conn.version(api, name, need, ours) {
            Ok(v) => conn.call(api, v, req).await,
            Err(e) => Err(e),
        };
        if let Err(e) = &result
            && e.poisons_connection()
        {
            *guard = None;
        }
        result
    }

    /// Fetches metadata for `topic` (auto-creating it if the broker allows) into the cache.
    async fn refresh(&self, topic: &str) -> Result<(), ProduceError> {
        let req = MetadataRequest::default()
            .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(
                TopicName(StrBytes::from_string(topic.to_owned())),
            ))]))
            .with_allow_auto_topic_creation(true);
        let resp: MetadataResponse = self
            .bootstrap_call(ApiKey::Metadata, "Metadata", 4, METADATA_MAX, &req)
            .await?;
        let mut meta = lock(&self.inner.meta);
        for b in &resp.brokers {
            meta.brokers
                .insert(b.node_id.0, format!("{}:{}", b.host.as_str(), b.port));
        }
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
        if t.error_code != 0 {
            meta.topics.remove(topic);
            return Err(ProduceError::Broker {
                api: "Metadata",
                topic: topic.to_owned(),
                partition: -1,
                code: t.error_code,
                name: code_name(t.error_code),
                message: None,
            });
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
        meta.topics.insert(
            topic.to_owned(),
            TopicMeta {
                leaders,
                fetched: Instant::now(),
            },
        );
        Ok(())
    }

    /// Cached (fresh) partition leaders of `topic`, refreshing when missing or stale.
    async fn leaders(&self, topic: &str) -> Result<Vec<i32>, ProduceError> {
        {
            let meta = lock(&self.inner.meta);
            if let Some(t) = meta.topics.get(topic)
                && t.fetched.elapsed() < self.inner.config.metadata_max_age
            {
                return Ok(t.leaders.clone());
            }
        }
        self.refresh(topic).await?;
        let meta = lock(&self.inner.meta);
        Ok(meta
            .topics
            .get(topic)
            .map(|t| t.leaders.clone())
            .unwrap_or_default())
    }

    async fn leader_slot(
        &self,
        topic: &str,
        partition: i32,
    ) -> Result<(Slot, String), ProduceError> {
        let leaders = self.leaders(topic).await?;
        let leader = usize::try_from(partition)
            .ok()
            .and_then(|i| leaders.get(i))
            .copied()
            .ok_or_else(|| ProduceError::UnknownPartition {
                topic: topic.to_owned(),
                partition,
                partitions: leaders.len() as i32,
            })?;
        let no_leader = || ProduceError::NoLeader {
            topic: topic.to_owned(),
            partition,
        };
        if leader < 0 {
            self.forget(topic);
            return Err(no_leader());
        }
        let Some(addr) = lock(&self.inner.meta).brokers.get(&leader).cloned() else {
            self.forget(topic);
            return Err(no_leader());
        };
        // Partitions spread over up to `connections_per_broker` connections to their leader,
        // so batches for different partitions travel in parallel while each partition keeps
        // one batch in flight (its order and sequence numbers stay simple).
        let lane = partition as usize % self.inner.config.connections_per_broker.max(1);
        let slot = lock(&self.inner.slots)
            .entry((leader, lane))
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

    /// Gets a producer id if none is there yet (idempotent producers).
    async fn ensure_producer_id(&self) -> Result<(), ProduceError> {
        if !self.inner.config.idempotent || lock(&self.inner.idempotence).is_some() {
            return Ok(());
        }
        match self.init_producer_id().await {
            Ok(()) => Ok(()),
            Err(e)
                if e.class() == ErrorClass::Fatal && matches!(e, ProduceError::Broker { .. }) =>
            {
                // E.g. an old cluster without the IdempotentWrite ACL: keep forwarding,
                // at-least-once without broker-side deduplication.
                tracing::warn!(error = %e, "InitProducerId refused; producing without idempotence");
                *lock(&self.inner.idempotence) = Some(Idempotence {
                    producer_id: -1,
                    epoch: -1,
                    sequences: HashMap::new(),
                });
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Encodes the batch (or stamps the one encoded ahead) and writes the Produce request (the
    /// send half). On an error, the identity the batch got, if any, comes back with it.
    async fn write_request(
        &self,
        topic: &str,
        partition: i32,
        records: &[ProduceRecord],
        encoded: Option<EncodedBatch>,
    ) -> Result<(Sent, BatchIdentity), (ProduceError, Option<BatchIdentity>)> {
        if records.is_empty() {
            return Err((ProduceError::EmptyBatch, None));
        }
        self.ensure_producer_id().await.map_err(|e| (e, None))?;
        let (slot, addr) = self
            .leader_slot(topic, partition)
            .await
            .map_err(|e| (e, None))?;
        let mut slot = slot.lock().await;
        if slot.addr != addr {
            // The broker id now advertises another address.
            slot.addr = addr;
            slot.pipe = None;
        }
        if !slot.pipe.as_ref().is_some_and(Pipeline::usable) {
            slot.pipe = None;
            let conn = Connection::connect(&slot.addr, &self.inner.limits)
                .await
                .map_err(|e| (e, None))?;
            let idempotent = self.producer_identity().is_some_and(|i| i.producer_id >= 0);
            // Without sequence numbers the broker cannot refuse a batch that would overtake a
            // failed one: keep one request in flight then.
            let in_flight = if idempotent {
                self.inner.config.max_in_flight
            } else {
                1
            };
            slot.pipe = Some(conn.into_pipeline(in_flight));
        }
        let BrokerSlot { pipe, scratch, .. } = &mut *slot;
        let Some(c) = pipe.as_mut() else {
            return Err((ProduceError::NoBrokers, None));
        };
        let version = c
            .version(ApiKey::Produce, "Produce", 3, PRODUCE_MAX)
            .map_err(|e| (e, None))?;
        // Taken under the slot lock: batches to one partition get consecutive sequence numbers
        // in the order they are written.
        let identity = self.next_identity(topic, partition, records.len());
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
            .with_acks(-1)
            .with_timeout_ms(self.timeout_ms())
            .with_topic_data(vec![
                TopicProduceData::default()
                    .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
                    .with_partition_data(vec![
                        PartitionProduceData::default()
                            .with_index(partition)
                            .with_records(Some(out)),
                    ]),
            ]);
        let (rx, correlation_id) = c
            .send(ApiKey::Produce, version, &req)
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

    /// Sends a batch; `resync` is set for `produce`, which may resend after a failure.
    async fn send_batch(
        &self,
        topic: &str,
        partition: i32,
        records: &[ProduceRecord],
        resync: bool,
        encoded: Option<EncodedBatch>,
    ) -> ProduceAck {
        let (index, in_flight) = match self.start_request(topic, partition, resync) {
            Ok(x) => x,
            Err(e) => return Box::pin(std::future::ready(Err(e))),
        };
        let (sent, identity) = match self.write_request(topic, partition, records, encoded).await {
            Ok(x) => x,
            Err((e, identity)) => {
                self.record_failure(topic, partition, Failure { index, identity }, &e);
                drop(in_flight);
                return Box::pin(std::future::ready(Err(e)));
            }
        };
        let this = self.clone();
        let topic = topic.to_owned();
        Box::pin(async move {
            // Counted as in flight until the failure (if any) is recorded.
            let _in_flight = in_flight;
            let result = match sent.rx.await {
                Ok(Ok(body)) => produce_result(&sent.meta, &topic, partition, body),
                Ok(Err(e)) => Err(e),
                Err(_) => Err(ProduceError::Io {
                    broker: sent.meta.broker.clone(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::ConnectionAborted,
                        "connection closed with the request in flight",
                    ),
                }),
            };
            match result {
                Ok(offset) => Ok(offset),
                Err(e) => {
                    let failure = Failure {
                        index,
                        identity: Some(identity),
                    };
                    this.record_failure(&topic, partition, failure, &e);
                    Err(e)
                }
            }
        })
    }
}

/// The base offset from a Produce response frame, or the partition's error.
fn produce_result(
    sent: &SentMeta,
    topic: &str,
    partition: i32,
    body: bytes::Bytes,
) -> Result<i64, ProduceError> {
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
            reason: format!("Produce response does not mention {topic}/{partition}"),
        });
    };
    if p.error_code != 0 {
        return Err(ProduceError::Broker {
            api: "Produce",
            topic: topic.to_owned(),
            partition,
            code: p.error_code,
            name: code_name(p.error_code),
            message: p.error_message.as_ref().map(|m| m.to_string()),
        });
    }
    Ok(p.base_offset)
}

impl KafkaProducer for WireProducer {
    async fn produce(
        &self,
        topic: &str,
        partition: i32,
        records: &[ProduceRecord],
    ) -> Result<i64, ProduceError> {
        self.send_batch(topic, partition, records, true, None)
            .await
            .await
    }

    async fn send(&self, topic: &str, partition: i32, records: &[ProduceRecord]) -> ProduceAck {
        self.send_batch(topic, partition, records, false, None)
            .await
    }

    fn encode(&self, records: &[ProduceRecord]) -> Option<EncodedBatch> {
        let mut scratch = lock(&self.inner.scratch_pool).pop().unwrap_or_default();
        let encoded = EncodedBatch::encode(records, self.inner.config.compression, &mut scratch);
        lock(&self.inner.scratch_pool).push(scratch);
        encoded.ok()
    }

    async fn send_encoded(
        &self,
        topic: &str,
        partition: i32,
        records: &[ProduceRecord],
        encoded: Option<EncodedBatch>,
    ) -> ProduceAck {
        self.send_batch(topic, partition, records, false, encoded)
            .await
    }

    async fn partition_count(&self, topic: &str) -> Result<i32, ProduceError> {
        let n = self.leaders(topic).await?.len();
        Ok(i32::try_from(n).unwrap_or(i32::MAX))
    }

    async fn create_topic(&self, topic: &str, partitions: i32) -> Result<bool, ProduceError> {
        WireProducer::create_topic(self, topic, partitions, 1).await
    }

    fn forget_topic(&self, topic: &str) {
        self.forget(topic);
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
        let mut g = lock(&p.inner.idempotence);
        g.as_mut()
            .unwrap()
            .sequences
            .insert((topic.to_owned(), 0), seq);
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
        assert_eq!(p.produce("seq", 0, &records(3, "a")).await.unwrap(), 0);

        // The same batch again with the same sequence (a resend after a lost answer).
        set_sequence(&p, "seq", 0);
        let err = p.produce("seq", 0, &records(3, "a")).await.unwrap_err();
        assert_duplicate_sequence(&err);
        assert_eq!(
            p.producer_identity(),
            None,
            "a new producer session follows"
        );
        assert_eq!(p.produce("seq", 0, &records(1, "b")).await.unwrap(), 3);
        let pid = p.producer_identity().unwrap();

        // A gap of 5, as if a batch in between had failed.
        set_sequence(&p, "seq", 9);
        let err = p.produce("seq", 0, &records(2, "gap")).await.unwrap_err();
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
        assert_eq!(p.produce("seq", 0, &records(2, "gap")).await.unwrap(), 4);
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
        let ack = p.send_encoded("ahead", 0, &a, Some(ea)).await;
        assert_eq!(ack.await.unwrap(), 0);
        let first = p.producer_identity().unwrap();
        *lock(&p.inner.idempotence) = None;
        let ack = p.send_encoded("ahead", 0, &b, Some(eb)).await;
        assert_eq!(ack.await.unwrap(), 3);
        let second = p.producer_identity().unwrap();
        assert_ne!(first, second);
        // The same records again under (second id, sequence 0): Kafka already has them.
        set_sequence(&p, "ahead", 0);
        let err = p.produce("ahead", 0, &b).await.unwrap_err();
        assert_duplicate_sequence(&err);
        // The resend (a new session again) unblocks the partition.
        assert_eq!(p.produce("ahead", 0, &b).await.unwrap(), 5);
        // An encoding that does not match the records is not used: they are encoded afresh.
        let c = records(4, "c");
        let stale = p.encode(&records(1, "other")).unwrap();
        let ack = p.send_encoded("ahead", 0, &c, Some(stale)).await;
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
            acks.push(p.send("pipe", 0, &records(50, &format!("b{i}"))).await);
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
        let err = p.send("pipe", 0, &big).await.await.unwrap_err();
        assert!(matches!(err, ProduceError::BatchTooLarge { .. }), "{err}");
        let err = p
            .send("pipe", 0, &records(1, "after"))
            .await
            .await
            .unwrap_err();
        assert!(matches!(err, ProduceError::Blocked { .. }), "{err}");
        assert_eq!(err.class(), ErrorClass::Retriable);
        // The resend (produce) lifts the block and
        // continues the sequence where the failed batch would have started.
        assert_eq!(
            p.produce("pipe", 0, &records(1, "resent")).await.unwrap(),
            1000
        );
        assert_eq!(
            p.send("pipe", 0, &records(1, "next")).await.await.unwrap(),
            1001
        );
    }
}
