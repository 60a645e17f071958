//! What the producer knows about the cluster: broker addresses and, per topic, the leader of
//! every partition. No I/O: the client fetches Metadata and stores the answer here.
//!
//! A topic's entry is used while it is fresh: younger than `metadata_max_age` **and** fetched
//! after the last lost connection. A lost connection (a broker closed it, an I/O error, a
//! timeout on an established connection) counts as "the cluster may have restarted": a Kafka restarted
//! on empty disks (Tansu's memory storage, a cluster rebuilt) no longer has the topics, and
//! only a Metadata request (with auto-creation allowed) or CreateTopics makes them again. A
//! Produce to a topic the broker does not have is not guaranteed to say so — Tansu 0.6
//! acknowledges it and keeps nothing a consumer can read — so every topic is looked up again
//! after a lost connection, not only the one whose request failed.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Counts lost connections; shared by every connection of a producer.
#[derive(Debug, Clone, Default)]
pub(crate) struct LostConnections(Arc<LostInner>);

#[derive(Debug, Default)]
struct LostInner {
    count: AtomicU64,
    /// The last loss (the error, naming the broker) and when.
    last: parking_lot::Mutex<Option<(String, Instant)>>,
}

/// How long a lost connection explains the errors that follow it.
const LOSS_EXPLAINS_FOR: Duration = Duration::from_secs(30);

impl LostConnections {
    /// Notes a lost connection: metadata fetched before now is stale.
    pub fn note(&self) {
        self.0.count.fetch_add(1, Ordering::SeqCst);
    }

    /// Remembers how a connection was lost (`what` names the broker) at `now`.
    pub fn describe(&self, what: String, now: Instant) {
        *self.0.last.lock() = Some((what, now));
    }

    /// The loss described within [`LOSS_EXPLAINS_FOR`] before `now`, if any.
    pub fn recent(&self, now: Instant) -> Option<String> {
        let last = self.0.last.lock();
        let (what, at) = last.as_ref()?;
        (now.saturating_duration_since(*at) < LOSS_EXPLAINS_FOR).then(|| what.clone())
    }

    /// Connections lost so far.
    pub fn count(&self) -> u64 {
        self.0.count.load(Ordering::SeqCst)
    }
}

#[derive(Debug)]
struct TopicMeta {
    /// Leader broker id per partition index; -1 when there is none.
    leaders: Vec<i32>,
    fetched: Instant,
    /// [`LostConnections::count`] when it was fetched.
    generation: u64,
}

/// Where a partition's batches go, as far as the cache knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Leader {
    /// Nothing fresh is known about the topic: fetch its metadata.
    Unknown,
    /// The topic has `partitions` partitions, fewer than asked for.
    NoPartition {
        /// Partitions the topic has.
        partitions: i32,
    },
    /// The partition has no leader, or one whose address is unknown.
    None,
    /// The leader's broker id and address.
    Broker(i32, String),
}

/// Broker addresses and partition leaders (see the module docs).
#[derive(Debug)]
pub(crate) struct Metadata {
    brokers: HashMap<i32, String>,
    topics: HashMap<String, TopicMeta>,
    max_age: Duration,
    lost: LostConnections,
}

impl Metadata {
    /// An empty cache whose entries live `max_age` or until a connection in `lost` is lost.
    pub fn new(max_age: Duration, lost: LostConnections) -> Self {
        Self {
            brokers: HashMap::new(),
            topics: HashMap::new(),
            max_age,
            lost,
        }
    }

    fn fresh(&self, topic: &str, now: Instant) -> Option<&TopicMeta> {
        self.topics.get(topic).filter(|t| {
            now.saturating_duration_since(t.fetched) < self.max_age
                && t.generation == self.lost.count()
        })
    }

    /// The partition count of `topic`, if fresh.
    pub fn partition_count(&self, topic: &str, now: Instant) -> Option<i32> {
        self.fresh(topic, now)
            .map(|t| i32::try_from(t.leaders.len()).unwrap_or(i32::MAX))
    }

    /// The leader of `topic`/`partition`.
    pub fn leader(&self, topic: &str, partition: i32, now: Instant) -> Leader {
        let Some(t) = self.fresh(topic, now) else {
            return Leader::Unknown;
        };
        let Some(&id) = usize::try_from(partition)
            .ok()
            .and_then(|i| t.leaders.get(i))
        else {
            return Leader::NoPartition {
                partitions: i32::try_from(t.leaders.len()).unwrap_or(i32::MAX),
            };
        };
        match self.brokers.get(&id) {
            Some(addr) if id >= 0 => Leader::Broker(id, addr.clone()),
            _ => Leader::None,
        }
    }

    /// Stores a Metadata answer: broker addresses, and `topic`'s leaders per partition.
    /// `generation` is [`LostConnections::count`] from before the request was sent.
    pub fn update(
        &mut self,
        brokers: impl IntoIterator<Item = (i32, String)>,
        topic: &str,
        leaders: Vec<i32>,
        generation: u64,
        now: Instant,
    ) {
        self.brokers.extend(brokers);
        self.topics.insert(
            topic.to_owned(),
            TopicMeta {
                leaders,
                fetched: now,
                generation,
            },
        );
    }

    /// Drops what is known about `topic`.
    pub fn forget(&mut self, topic: &str) {
        self.topics.remove(topic);
    }

    /// Addresses of every broker seen in metadata.
    pub fn broker_addrs(&self) -> Vec<String> {
        self.brokers.values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(lost: &LostConnections) -> Metadata {
        let mut m = Metadata::new(Duration::from_secs(60), lost.clone());
        m.update(
            [(1, "b1:9092".to_owned()), (2, "b2:9092".to_owned())],
            "a",
            vec![1, 2, -1],
            lost.count(),
            Instant::now(),
        );
        m.update([], "b", vec![2], lost.count(), Instant::now());
        m
    }

    #[test]
    fn leaders_partitions_and_missing_ones() {
        let lost = LostConnections::default();
        let m = cache(&lost);
        let now = Instant::now();
        assert_eq!(m.partition_count("a", now), Some(3));
        assert_eq!(m.leader("a", 1, now), Leader::Broker(2, "b2:9092".into()));
        assert_eq!(m.leader("a", 2, now), Leader::None, "no leader");
        assert_eq!(m.leader("a", 3, now), Leader::NoPartition { partitions: 3 });
        assert_eq!(
            m.leader("a", -1, now),
            Leader::NoPartition { partitions: 3 }
        );
        assert_eq!(m.leader("zzz", 0, now), Leader::Unknown);
        assert_eq!(m.broker_addrs().len(), 2);
    }

    #[test]
    fn entries_expire_with_age() {
        let lost = LostConnections::default();
        let m = cache(&lost);
        let later = Instant::now() + Duration::from_secs(61);
        assert_eq!(m.partition_count("a", later), None);
        assert_eq!(m.leader("b", 0, later), Leader::Unknown);
    }

    /// The demo's replay bug (issue 16): after Kafka restarted empty, only the topic whose
    /// request failed was looked up again; the others stayed cached, their produce requests
    /// went to topics the new broker did not have. Any lost connection now stales them all.
    #[test]
    fn a_recent_loss_explains_later_errors_an_old_one_does_not() {
        let lost = LostConnections::default();
        let t0 = Instant::now();
        assert_eq!(lost.recent(t0), None);
        lost.describe("I/O with Kafka broker a:9092: reset".into(), t0);
        assert_eq!(
            lost.recent(t0 + Duration::from_secs(1)).as_deref(),
            Some("I/O with Kafka broker a:9092: reset")
        );
        assert_eq!(lost.recent(t0 + LOSS_EXPLAINS_FOR), None);
    }

    #[test]
    fn a_lost_connection_stales_every_topic() {
        let lost = LostConnections::default();
        let mut m = cache(&lost);
        let now = Instant::now();
        let before = lost.count();
        lost.note();
        assert_eq!(m.partition_count("a", now), None);
        assert_eq!(m.partition_count("b", now), None);
        // An answer to a request sent before the loss is stale already.
        m.update([], "a", vec![1], before, now);
        assert_eq!(m.partition_count("a", now), None);
        m.update([], "a", vec![1], lost.count(), now);
        assert_eq!(m.partition_count("a", now), Some(1));
        m.forget("a");
        assert_eq!(m.partition_count("a", now), None);
    }
}
