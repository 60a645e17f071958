//! [`TxnWire`]: the wire side of [`TxnBroker`], the transactional protocol over the
//! producer's own connections (TLS and SASL included, `conn`): FindCoordinator, InitProducerId
//! with the transactional.id, AddPartitionsToTxn (v0–v3: Tansu 0.6 answers v4+ with a panic),
//! AddOffsetsToTxn, TxnOffsetCommit, EndTxn, and OffsetFetch of the committed position.
//!
//! Each coordinator (transaction, group) gets a connection of its own, opened to the address
//! the last FindCoordinator named. A request that cannot be sent there, or gets no answer, is
//! answered [`TxnReply::Lost`] and the connection dropped; an unknown coordinator is answered
//! `NOT_COORDINATOR`, so the session finds it again ([`super::txn::react`]). A granted
//! InitProducerId starts the producer's session with the new epoch
//! ([`WireProducer::start_transactional_session`]): the batches of the transaction carry it.

use std::collections::HashMap;

use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::txn_offset_commit_request::{
    TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, AddPartitionsToTxnRequest,
    AddPartitionsToTxnResponse, ApiKey, EndTxnRequest, EndTxnResponse, FindCoordinatorRequest,
    FindCoordinatorResponse, GroupId, InitProducerIdRequest, InitProducerIdResponse,
    OffsetFetchRequest, OffsetFetchResponse, ProducerId, TopicName, TransactionalId,
    TxnOffsetCommitRequest, TxnOffsetCommitResponse,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use super::client::{ProducerIdentity, WireProducer};
use super::conn::Connection;
use super::error::{ProduceError, codes};
use super::txn::{CoordinatorKind, TopicPartition, TxnBroker, TxnReply, TxnRequest};
use crate::position::KafkaPosition;

/// Highest FindCoordinator version we speak (v4 batches keys).
const FIND_COORDINATOR_MAX: i16 = 3;
/// Highest InitProducerId version we speak.
const INIT_PRODUCER_ID_MAX: i16 = 4;
/// Highest AddPartitionsToTxn version we speak (v4+ is KIP-890's batched form).
const ADD_PARTITIONS_MAX: i16 = 3;
/// Highest AddOffsetsToTxn version we speak.
const ADD_OFFSETS_MAX: i16 = 3;
/// Highest TxnOffsetCommit version we speak.
const TXN_OFFSET_COMMIT_MAX: i16 = 3;
/// Highest EndTxn version we speak.
const END_TXN_MAX: i16 = 3;
/// Highest OffsetFetch version we speak (v7: `require_stable`; v8 batches groups).
const OFFSET_FETCH_MAX: i16 = 7;
/// UNSTABLE_OFFSET_COMMIT: a transaction holding an offset of the group is still open.
pub const UNSTABLE_OFFSET_COMMIT: i16 = 88;

/// The topic-partition whose offset in the forwarder's group is its position. Kafka checks
/// that the partition of an offset commit exists, so the forwarder creates this topic (one
/// partition; every gateway has a group of its own).
pub const POSITION_TOPIC: &str = "edge-bridge-positions";

/// A coordinator as FindCoordinator named it, and our connection to it.
#[derive(Default)]
struct Coordinator {
    addr: Option<String>,
    conn: Option<Connection>,
}

/// The transactional protocol over [`WireProducer`]'s connections (see the module docs).
pub struct TxnWire {
    producer: WireProducer,
    transactional_id: String,
    group: String,
    coordinators: tokio::sync::Mutex<HashMap<CoordinatorKind, Coordinator>>,
}

impl std::fmt::Debug for TxnWire {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TxnWire")
            .field("transactional_id", &self.transactional_id)
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

/// What a request on a coordinator connection came to.
enum Sent<T> {
    Answer(T),
    Reply(TxnReply),
}

impl TxnWire {
    /// The protocol for `transactional_id`, committing positions to `group`, through
    /// `producer` (whose `transactional_id` must be the same).
    pub fn new(producer: WireProducer, transactional_id: &str, group: &str) -> Self {
        Self {
            producer,
            transactional_id: transactional_id.to_owned(),
            group: group.to_owned(),
            coordinators: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The transactional.id.
    pub fn transactional_id(&self) -> &str {
        &self.transactional_id
    }

    /// The group the position is committed to.
    pub fn group(&self) -> &str {
        &self.group
    }

    fn txn_id(&self) -> TransactionalId {
        TransactionalId(StrBytes::from_string(self.transactional_id.clone()))
    }

    fn group_id(&self) -> GroupId {
        GroupId(StrBytes::from_string(self.group.clone()))
    }

    /// The position the group committed (read_committed: `require_stable`, so an open
    /// transaction holding an offset is answered UNSTABLE_OFFSET_COMMIT rather than skipped).
    /// Ok(None): no position committed.
    async fn fetch(&self) -> Result<Option<KafkaPosition>, ProduceError> {
        let found = self.call(TxnRequest::FindCoordinator(CoordinatorKind::Group));
        match found.await {
            TxnReply::Ok => {}
            other => return Err(reply_error("FindCoordinator", other)),
        }
        let req = OffsetFetchRequest::default()
            .with_group_id(self.group_id())
            .with_require_stable(true)
            .with_topics(Some(vec![
                OffsetFetchRequestTopic::default()
                    .with_name(TopicName(StrBytes::from_static_str(POSITION_TOPIC)))
                    .with_partition_indexes(vec![0]),
            ]));
        let resp: OffsetFetchResponse = match self
            .on_coordinator(
                CoordinatorKind::Group,
                ApiKey::OffsetFetch,
                "OffsetFetch",
                1,
                OFFSET_FETCH_MAX,
                &req,
            )
            .await
        {
            Sent::Answer(resp) => resp,
            Sent::Reply(reply) => return Err(reply_error("OffsetFetch", reply)),
        };
        if resp.error_code != 0 {
            return Err(refused("OffsetFetch", resp.error_code));
        }
        let Some(p) = resp
            .topics
            .iter()
            .filter(|t| t.name.0.as_str() == POSITION_TOPIC)
            .flat_map(|t| t.partitions.iter())
            .find(|p| p.partition_index == 0)
        else {
            return Ok(None);
        };
        if p.error_code != 0 {
            return Err(refused("OffsetFetch", p.error_code));
        }
        Ok(u64::try_from(p.committed_offset)
            .ok()
            .map(|next| KafkaPosition {
                next,
                metadata: p.metadata.as_ref().map(|m| m.to_string()),
            }))
    }

    /// FindCoordinator through the bootstrap connection; remembers the address.
    async fn find(&self, kind: CoordinatorKind) -> TxnReply {
        let (key, key_type) = match kind {
            CoordinatorKind::Transaction => (self.transactional_id.clone(), 1),
            CoordinatorKind::Group => (self.group.clone(), 0),
        };
        let req = FindCoordinatorRequest::default()
            .with_key(StrBytes::from_string(key))
            .with_key_type(key_type);
        let resp: Result<FindCoordinatorResponse, _> = self
            .producer
            .bootstrap_call(
                ApiKey::FindCoordinator,
                "FindCoordinator",
                1,
                FIND_COORDINATOR_MAX,
                &req,
            )
            .await;
        match resp {
            Err(e) => unanswered(&e),
            Ok(r) if r.error_code != 0 => TxnReply::Refused(r.error_code),
            Ok(r) => {
                let addr = format!("{}:{}", r.host.as_str(), r.port);
                let mut coordinators = self.coordinators.lock().await;
                let c = coordinators.entry(kind).or_default();
                if c.addr.as_deref() != Some(addr.as_str()) {
                    c.conn = None;
                }
                c.addr = Some(addr);
                TxnReply::Ok
            }
        }
    }

    /// Sends `req` to the `kind` coordinator on its own connection (opened when needed).
    async fn on_coordinator<Req: Encodable, Resp: Decodable>(
        &self,
        kind: CoordinatorKind,
        api: ApiKey,
        name: &'static str,
        need: i16,
        ours: i16,
        req: &Req,
    ) -> Sent<Resp> {
        let mut coordinators = self.coordinators.lock().await;
        let c = coordinators.entry(kind).or_default();
        let Some(addr) = c.addr.clone() else {
            return Sent::Reply(TxnReply::Refused(codes::NOT_COORDINATOR));
        };
        let conn = match c.conn.as_mut() {
            Some(conn) if conn.usable() => conn,
            _ => match Connection::connect(&addr, self.producer.limits()).await {
                Ok(conn) => c.conn.insert(conn),
                Err(e) => {
                    // Gone (or moved): find it again before the next try.
                    c.addr = None;
                    c.conn = None;
                    return Sent::Reply(unanswered(&e));
                }
            },
        };
        let result = match conn.version(api, name, need, ours) {
            Ok(v) => conn.call(api, v, req).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(resp) => Sent::Answer(resp),
            Err(e) => {
                if !conn.usable() {
                    c.conn = None;
                }
                match e {
                    ProduceError::UnsupportedVersion { .. } => {
                        Sent::Reply(TxnReply::Refused(codes::UNSUPPORTED_VERSION))
                    }
                    e => Sent::Reply(unanswered(&e)),
                }
            }
        }
    }

    async fn init(&self, recover: Option<ProducerIdentity>, timeout_ms: i32) -> TxnReply {
        let (pid, epoch, need) = match recover {
            Some(id) => (id.producer_id, id.epoch, 3),
            None => (-1, -1, 0),
        };
        let req = InitProducerIdRequest::default()
            .with_transactional_id(Some(self.txn_id()))
            .with_transaction_timeout_ms(timeout_ms)
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch);
        let resp: InitProducerIdResponse = match self
            .on_coordinator(
                CoordinatorKind::Transaction,
                ApiKey::InitProducerId,
                "InitProducerId",
                need,
                INIT_PRODUCER_ID_MAX,
                &req,
            )
            .await
        {
            Sent::Answer(r) => r,
            Sent::Reply(reply) => return reply,
        };
        if resp.error_code != 0 {
            return TxnReply::Refused(resp.error_code);
        }
        let identity = ProducerIdentity {
            producer_id: resp.producer_id.0,
            epoch: resp.producer_epoch,
        };
        self.producer.start_transactional_session(identity);
        TxnReply::Initialised(identity)
    }

    async fn add_partitions(
        &self,
        identity: ProducerIdentity,
        partitions: &[TopicPartition],
    ) -> TxnReply {
        let mut topics: Vec<AddPartitionsToTxnTopic> = Vec::new();
        for p in partitions {
            match topics.iter_mut().find(|t| t.name.0.as_str() == p.topic) {
                Some(t) => t.partitions.push(p.partition),
                None => topics.push(
                    AddPartitionsToTxnTopic::default()
                        .with_name(TopicName(StrBytes::from_string(p.topic.clone())))
                        .with_partitions(vec![p.partition]),
                ),
            }
        }
        let req = AddPartitionsToTxnRequest::default()
            .with_v3_and_below_transactional_id(self.txn_id())
            .with_v3_and_below_producer_id(ProducerId(identity.producer_id))
            .with_v3_and_below_producer_epoch(identity.epoch)
            .with_v3_and_below_topics(topics);
        let resp: AddPartitionsToTxnResponse = match self
            .on_coordinator(
                CoordinatorKind::Transaction,
                ApiKey::AddPartitionsToTxn,
                "AddPartitionsToTxn",
                0,
                ADD_PARTITIONS_MAX,
                &req,
            )
            .await
        {
            Sent::Answer(r) => r,
            Sent::Reply(reply) => return reply,
        };
        // The partition that failed, not the ones refused because of it.
        let codes_seen: Vec<i16> = resp
            .results_by_topic_v3_and_below
            .iter()
            .flat_map(|t| t.results_by_partition.iter())
            .map(|p| p.partition_error_code)
            .chain([resp.error_code])
            .filter(|c| *c != 0)
            .collect();
        let cause = codes_seen
            .iter()
            .find(|c| **c != codes::OPERATION_NOT_ATTEMPTED)
            .or(codes_seen.first());
        match cause {
            Some(code) => TxnReply::Refused(*code),
            None => TxnReply::Ok,
        }
    }

    async fn add_offsets(&self, identity: ProducerIdentity) -> TxnReply {
        let req = AddOffsetsToTxnRequest::default()
            .with_transactional_id(self.txn_id())
            .with_producer_id(ProducerId(identity.producer_id))
            .with_producer_epoch(identity.epoch)
            .with_group_id(self.group_id());
        match self
            .on_coordinator::<_, AddOffsetsToTxnResponse>(
                CoordinatorKind::Transaction,
                ApiKey::AddOffsetsToTxn,
                "AddOffsetsToTxn",
                0,
                ADD_OFFSETS_MAX,
                &req,
            )
            .await
        {
            Sent::Answer(r) => code_reply(r.error_code),
            Sent::Reply(reply) => reply,
        }
    }

    async fn commit_offsets(
        &self,
        identity: ProducerIdentity,
        next: u64,
        metadata: String,
    ) -> TxnReply {
        let offset = i64::try_from(next).unwrap_or(i64::MAX);
        let req = TxnOffsetCommitRequest::default()
            .with_transactional_id(self.txn_id())
            .with_group_id(self.group_id())
            .with_producer_id(ProducerId(identity.producer_id))
            .with_producer_epoch(identity.epoch)
            .with_generation_id(-1)
            .with_topics(vec![
                TxnOffsetCommitRequestTopic::default()
                    .with_name(TopicName(StrBytes::from_static_str(POSITION_TOPIC)))
                    .with_partitions(vec![
                        TxnOffsetCommitRequestPartition::default()
                            .with_partition_index(0)
                            .with_committed_offset(offset)
                            .with_committed_leader_epoch(-1)
                            .with_committed_metadata(Some(StrBytes::from_string(metadata))),
                    ]),
            ]);
        match self
            .on_coordinator::<_, TxnOffsetCommitResponse>(
                CoordinatorKind::Group,
                ApiKey::TxnOffsetCommit,
                "TxnOffsetCommit",
                0,
                TXN_OFFSET_COMMIT_MAX,
                &req,
            )
            .await
        {
            Sent::Answer(r) => {
                let code = r
                    .topics
                    .iter()
                    .flat_map(|t| t.partitions.iter())
                    .map(|p| p.error_code)
                    .find(|c| *c != 0)
                    .unwrap_or(0);
                code_reply(code)
            }
            Sent::Reply(reply) => reply,
        }
    }

    async fn end(&self, identity: ProducerIdentity, commit: bool) -> TxnReply {
        let req = EndTxnRequest::default()
            .with_transactional_id(self.txn_id())
            .with_producer_id(ProducerId(identity.producer_id))
            .with_producer_epoch(identity.epoch)
            .with_committed(commit);
        match self
            .on_coordinator::<_, EndTxnResponse>(
                CoordinatorKind::Transaction,
                ApiKey::EndTxn,
                "EndTxn",
                0,
                END_TXN_MAX,
                &req,
            )
            .await
        {
            Sent::Answer(r) => code_reply(r.error_code),
            Sent::Reply(reply) => reply,
        }
    }
}

impl TxnBroker for TxnWire {
    async fn call(&self, request: TxnRequest) -> TxnReply {
        match request {
            TxnRequest::FindCoordinator(kind) => self.find(kind).await,
            TxnRequest::InitProducerId {
                recover,
                transaction_timeout,
            } => {
                let ms = i32::try_from(transaction_timeout.as_millis()).unwrap_or(i32::MAX);
                self.init(recover, ms).await
            }
            TxnRequest::AddPartitions {
                identity,
                partitions,
            } => self.add_partitions(identity, &partitions).await,
            TxnRequest::AddOffsets { identity } => self.add_offsets(identity).await,
            TxnRequest::CommitOffsets { identity, position } => {
                self.commit_offsets(identity, position.next, position.metadata)
                    .await
            }
            TxnRequest::EndTxn { identity, commit } => self.end(identity, commit).await,
        }
    }

    async fn fetch_position(&self) -> Result<Option<KafkaPosition>, ProduceError> {
        self.fetch().await
    }
}

fn code_reply(code: i16) -> TxnReply {
    if code == 0 {
        TxnReply::Ok
    } else {
        TxnReply::Refused(code)
    }
}

fn refused(api: &'static str, code: i16) -> ProduceError {
    ProduceError::refused(api, POSITION_TOPIC, 0, code, None)
}

/// The reply of a request `e` kept from an answer: refused (our credentials or certificate),
/// or lost (the outcome unknown).
fn unanswered(e: &ProduceError) -> TxnReply {
    if e.is_auth_failure() {
        TxnReply::Unauthenticated(e.to_string())
    } else {
        TxnReply::Lost(e.to_string())
    }
}

/// A reply that is not an answer, as an error of `api`.
fn reply_error(api: &'static str, reply: TxnReply) -> ProduceError {
    match reply {
        TxnReply::Refused(code) => refused(api, code),
        TxnReply::Lost(why) | TxnReply::Unauthenticated(why) => ProduceError::Io {
            broker: "coordinator".into(),
            source: std::io::Error::other(why),
        },
        TxnReply::Ok | TxnReply::Initialised(_) => ProduceError::Protocol {
            broker: "coordinator".into(),
            reason: format!("unexpected answer to {api}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use edge_tests::kafka::{Tansu, read_topic_isolated};
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::producer::txn::{TxnConfig, TxnError, TxnPosition, TxnSession};
    use crate::producer::{KafkaProducer, ProduceRecord, ProducerConfig};
    use crate::topition::Topition;

    fn session(bootstrap: &str, id: &str) -> (WireProducer, TxnSession<TxnWire>) {
        let mut config = ProducerConfig::new(vec![bootstrap.to_owned()]);
        config.transactional_id = Some(id.to_owned());
        let producer = WireProducer::new(config).unwrap();
        let wire = TxnWire::new(producer.clone(), id, &format!("{id}.group"));
        let session = TxnSession::new(
            wire,
            TxnConfig {
                transactional_id: id.to_owned(),
                transaction_timeout: Duration::from_secs(60),
                waits: crate::backoff::RetryWaits {
                    min: Duration::from_millis(20),
                    max: Duration::from_millis(200),
                    refused_max: Duration::from_millis(200),
                },
            },
        );
        (producer, session)
    }

    fn records(tag: &str, n: usize) -> Vec<ProduceRecord> {
        (0..n)
            .map(|i| ProduceRecord {
                value: Some(Bytes::from(format!("{tag}{i}"))),
                ..Default::default()
            })
            .collect()
    }

    fn part(topic: &str) -> TopicPartition {
        TopicPartition {
            topic: topic.into(),
            partition: 0,
        }
    }

    fn position(next: u64) -> TxnPosition {
        TxnPosition {
            next,
            metadata: format!("edge-log={next:016x}"),
        }
    }

    /// Our wire side of the transactional protocol against Tansu, read back by librdkafka
    /// (read_committed): a committed transaction's records appear with the position committed
    /// in it; the records of a transaction still open do not (the last stable offset holds
    /// the reader); an aborted transaction's position is not applied.
    #[tokio::test]
    async fn transactions_commit_records_and_the_position_together() {
        let tansu = Tansu::start();
        let b = tansu.bootstrap();
        let (producer, mut txn) = session(&b, "wire-gw");
        producer.create_topic("wire", 1, 1).await.unwrap();
        producer.create_topic(POSITION_TOPIC, 1, 1).await.unwrap();
        let cancel = CancellationToken::new();
        assert_eq!(txn.broker().fetch_position().await.unwrap(), None);
        let first = txn.init(&cancel).await.unwrap();

        txn.add_partitions(&[part("wire")], &cancel).await.unwrap();
        let tp = Topition::new("wire", 0);
        assert_eq!(producer.produce(&tp, &records("a", 3)).await.unwrap(), 0);
        txn.commit(position(3), &cancel).await.unwrap();
        let got = txn.broker().fetch_position().await.unwrap().unwrap();
        assert_eq!(got.next, 3);
        // Tansu 0.6 keeps the offset but answers OffsetFetch with empty metadata; this is why
        // the group's name carries the log identity (`crate::position`).
        assert!(
            matches!(
                got.metadata.as_deref(),
                Some("" | "edge-log=0000000000000003") | None
            ),
            "{got:?}"
        );

        // Aborted: its position is not applied.
        txn.add_partitions(&[part("wire")], &cancel).await.unwrap();
        producer.produce(&tp, &records("x", 2)).await.unwrap();
        txn.abort(&cancel).await.unwrap();
        assert_ne!(txn.identity(), Some(first), "a new epoch after the abort");
        assert_eq!(
            txn.broker().fetch_position().await.unwrap().unwrap().next,
            3
        );

        // Committed again in the new epoch; then one left open.
        txn.add_partitions(&[part("wire")], &cancel).await.unwrap();
        producer.produce(&tp, &records("c", 2)).await.unwrap();
        txn.commit(position(5), &cancel).await.unwrap();
        txn.add_partitions(&[part("wire")], &cancel).await.unwrap();
        producer.produce(&tp, &records("open", 1)).await.unwrap();

        let seen: Vec<String> = read_topic_isolated(&b, "wire", 5, "read_committed")
            .into_iter()
            .filter_map(|r| r.value)
            .collect();
        // Tansu 0.6 shows the aborted records to read_committed consumers (bridge/README.md,
        // "What Tansu 0.6 supports"); the open transaction holds the reader before "open0".
        assert_eq!(seen, ["a0", "a1", "a2", "x0", "x1", "c0", "c1"]);
        assert_eq!(
            txn.broker().fetch_position().await.unwrap().unwrap().next,
            5
        );
    }

    /// A second producer with the same transactional.id fences the first: its next step is
    /// refused, and on Tansu (no KIP-588 recovery) it stops as fenced, for good.
    #[tokio::test]
    async fn a_second_instance_fences_the_first() {
        let tansu = Tansu::start();
        let b = tansu.bootstrap();
        let (producer, mut one) = session(&b, "twin");
        producer.create_topic("twin", 1, 1).await.unwrap();
        producer.create_topic(POSITION_TOPIC, 1, 1).await.unwrap();
        let cancel = CancellationToken::new();
        one.init(&cancel).await.unwrap();
        one.add_partitions(&[part("twin")], &cancel).await.unwrap();
        one.commit(position(1), &cancel).await.unwrap();

        let (_p2, mut two) = session(&b, "twin");
        two.init(&cancel).await.unwrap();
        let err = one
            .add_partitions(&[part("twin")], &cancel)
            .await
            .unwrap_err();
        assert!(matches!(err, TxnError::Fenced { .. }), "{err}");
        assert!(err.to_string().contains("twin"), "{err}");
        let again = one.commit(position(2), &cancel).await.unwrap_err();
        assert!(matches!(again, TxnError::Fenced { .. }), "{again}");
        // The new instance goes on.
        two.add_partitions(&[part("twin")], &cancel).await.unwrap();
        two.commit(position(2), &cancel).await.unwrap();
    }
}
