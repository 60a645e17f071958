//! [`WireProducer`]: metadata cache + per-broker connections + Produce (acks=all).

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

use super::batch::{BatchIdentity, encode_batch};
use super::conn::{ConnLimits, Connection};
use super::tls::TlsSettings;
use super::{
    Compression, ErrorClass, KafkaProducer, ProduceError, ProduceRecord, code_name, codes,
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
    /// `p % connections_per_broker`, with one request in flight on each.
    pub connections_per_broker: usize,
    /// TLS to every broker (Kafka's `SSL` listeners); `None` is plain TCP.
    pub tls: Option<TlsSettings>,
}

impl ProducerConfig {
    /// Defaults: lz4, 30 s request timeout, 10 s connect timeout, 60 s metadata age, 1 MiB
    /// requests, 16 MiB responses, idempotent, up to 4 connections per broker.
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
    conn: Option<Connection>,
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
    /// Idempotent-producer state; None until InitProducerId succeeded (or when disabled).
    idempotence: Mutex<Option<Idempotence>>,
}

/// Our Kafka producer: a few connections per broker, one request in flight per connection,
/// acks=all, a request timeout, TCP_NODELAY. Cheap to clone; clones share connections.
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
                idempotence: Mutex::new(None),
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

    /// The batch identity for the next batch to `topic`/`partition`.
    fn batch_identity(&self, topic: &str, partition: i32) -> BatchIdentity {
        match lock(&self.inner.idempotence).as_ref() {
            None => BatchIdentity::default(),
            Some(i) if i.producer_id < 0 => BatchIdentity::default(),
            Some(i) => BatchIdentity {
                producer_id: i.producer_id,
                producer_epoch: i.epoch,
                base_sequence: i
                    .sequences
                    .get(&(topic.to_owned(), partition))
                    .copied()
                    .unwrap_or(0),
            },
        }
    }

    /// Advances the partition's sequence past a written batch of `count` records.
    fn advance_sequence(&self, identity: BatchIdentity, topic: &str, partition: i32, count: usize) {
        if let Some(i) = lock(&self.inner.idempotence).as_mut()
            && i.producer_id == identity.producer_id
            && i.epoch == identity.producer_epoch
        {
            // Sequence numbers wrap to 0 after i32::MAX, as in the Java client.
            let next =
                (i64::from(identity.base_sequence) + count as i64) % (i64::from(i32::MAX) + 1);
            i.sequences
                .insert((topic.to_owned(), partition), next as i32);
        }
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
                    conn: None,
                    scratch: BytesMut::new(),
                }))
            })
            .clone();
        Ok((slot, addr))
    }

    async fn produce_inner(
        &self,
        topic: &str,
        partition: i32,
        records: &[ProduceRecord],
    ) -> Result<i64, ProduceError> {
        if records.is_empty() {
            return Err(ProduceError::EmptyBatch);
        }
        if self.inner.config.idempotent && lock(&self.inner.idempotence).is_none() {
            match self.init_producer_id().await {
                Ok(()) => {}
                Err(e)
                    if e.class() == ErrorClass::Fatal
                        && matches!(e, ProduceError::Broker { .. }) =>
                {
                    // E.g. an old cluster without the IdempotentWrite ACL: keep forwarding,
                    // at-least-once without broker-side deduplication.
                    tracing::warn!(error = %e, "InitProducerId refused; producing without idempotence");
                    *lock(&self.inner.idempotence) = Some(Idempotence {
                        producer_id: -1,
                        epoch: -1,
                        sequences: HashMap::new(),
                    });
                }
                Err(e) => return Err(e),
            }
        }
        let (slot, addr) = self.leader_slot(topic, partition).await?;
        let mut slot = slot.lock().await;
        if slot.addr != addr {
            // The broker id now advertises another address.
            slot.addr = addr;
            slot.conn = None;
        }
        if slot.conn.is_none() {
            slot.conn = Some(Connection::connect(&slot.addr, &self.inner.limits).await?);
        }
        let BrokerSlot { conn, scratch, .. } = &mut *slot;
        let Some(c) = conn.as_mut() else {
            return Err(ProduceError::NoBrokers);
        };
        let version = c.version(ApiKey::Produce, "Produce", 3, PRODUCE_MAX)?;
        // Read under the slot lock: batches to one partition are serialised here, so each
        // gets the sequence number following the previous one.
        let identity = self.batch_identity(topic, partition);
        let mut out = BytesMut::new();
        encode_batch(
            records,
            self.inner.config.compression,
            identity,
            scratch,
            &mut out,
        )?;
        if out.len() > self.inner.config.max_request_bytes {
            return Err(ProduceError::BatchTooLarge {
                bytes: out.len(),
                max: self.inner.config.max_request_bytes,
            });
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
                            .with_records(Some(out.freeze())),
                    ]),
            ]);
        let resp: ProduceResponse = match c.call(ApiKey::Produce, version, &req).await {
            Ok(r) => r,
            Err(e) => {
                if e.poisons_connection() {
                    *conn = None;
                }
                return Err(e);
            }
        };
        let found = resp
            .responses
            .iter()
            .filter(|t| t.name.0.as_str() == topic)
            .flat_map(|t| t.partition_responses.iter())
            .find(|p| p.index == partition);
        let Some(p) = found else {
            return Err(ProduceError::Protocol {
                broker: slot.addr.clone(),
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
        self.advance_sequence(identity, topic, partition, records.len());
        Ok(p.base_offset)
    }
}

impl KafkaProducer for WireProducer {
    async fn produce(
        &self,
        topic: &str,
        partition: i32,
        records: &[ProduceRecord],
    ) -> Result<i64, ProduceError> {
        let result = self.produce_inner(topic, partition, records).await;
        if let Err(e) = &result {
            if e.stales_metadata() {
                self.forget(topic);
            }
            if e.resets_producer_id() {
                // The broker lost or rejected our producer state: start a new producer
                // session (fresh id, sequences from 0) on the next produce.
                *lock(&self.inner.idempotence) = None;
            }
        }
        result
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
