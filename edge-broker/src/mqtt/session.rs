//! MQTT sessions: what outlives a connection (subscriptions, queued and in-flight messages,
//! QoS 2 state), the registry that finds a session by client id, and how a persistent
//! session records its changes in the state journal.
//!
//! The persistent parts of [`SessionState`] are small collections ([`Subscriptions`],
//! [`DeliveryQueue`], [`Inflight`], [`InboundQos2`]) with the methods of the std ones they
//! wrap; every change through them is also appended to the journal (see [`crate::state`])
//! when the session is persistent. They live behind the session's lock, which is what
//! orders a session's records.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use edge_proto::mqtt::QoS;
use parking_lot::{Mutex, MutexGuard};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::hub::{Delivery, Mailbox};
use crate::metrics::front::{DropReason, FrontMetrics};
use crate::state::journal::Encoder;
use crate::state::record::{Record, SessionImage, StoredDelivery, StoredSubscription};
use crate::state::{Commit, Journal};

/// A subscription as the session remembers it (to restore it and to answer UNSUBSCRIBE).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscriptionRecord {
    /// Maximum QoS granted.
    pub qos: QoS,
    /// MQTT 5 No Local.
    pub no_local: bool,
    /// MQTT 5 Retain As Published.
    pub retain_as_published: bool,
    /// MQTT 5 subscription identifier.
    pub id: Option<u32>,
}

impl From<SubscriptionRecord> for StoredSubscription {
    fn from(r: SubscriptionRecord) -> Self {
        StoredSubscription {
            qos: r.qos,
            no_local: r.no_local,
            retain_as_published: r.retain_as_published,
            id: r.id,
        }
    }
}

impl From<StoredSubscription> for SubscriptionRecord {
    fn from(s: StoredSubscription) -> Self {
        SubscriptionRecord {
            qos: s.qos,
            no_local: s.no_local,
            retain_as_published: s.retain_as_published,
            id: s.id,
        }
    }
}

/// A QoS 1/2 message sent to the client and not yet fully acknowledged.
#[derive(Debug, Clone)]
pub struct Outbound {
    /// What was sent.
    pub delivery: Delivery,
    /// QoS 2: PUBREC received and PUBREL sent; only PUBCOMP is awaited.
    pub released: bool,
}

/// The mutable part of a session, behind the session's lock.
#[derive(Debug, Default)]
pub struct SessionState {
    /// A connection is attached.
    pub online: bool,
    /// Incremented per attached connection, so a replaced connection cannot detach its successor.
    pub generation: u64,
    /// Cancels the attached connection (session takeover).
    pub kick: Option<CancellationToken>,
    /// Session Expiry Interval in seconds (`u32::MAX` = never); recorded when the session
    /// goes offline.
    pub expiry_secs: u32,
    /// When the last connection ended (unix ms), while offline.
    pub disconnected_at_ms: Option<u64>,
    /// Subscriptions by full filter text (including any `$share/group/` prefix).
    pub subscriptions: Subscriptions,
    /// Deliveries not yet sent.
    pub queue: DeliveryQueue,
    /// Sent QoS 1/2 deliveries by packet id.
    pub inflight: Inflight,
    /// Last packet id handed out.
    pub last_packet_id: u16,
    /// Packet ids of received QoS 2 publishes waiting for PUBREL.
    pub inbound_qos2: InboundQos2,
    /// A will waiting for its delay interval.
    pub pending_will: Option<PendingWill>,
    /// The session has ended (clean start took over, or it expired): nothing may resume it.
    pub ended: bool,
    log: Option<SessionLog>,
}

/// A will message waiting for its delay interval (MQTT 5 §3.1.3.2.2).
#[derive(Debug, Clone, Default)]
pub struct PendingWill {
    /// Cancelled when the client reconnects in time: the will is not sent.
    pub abort: CancellationToken,
    /// Cancelled when the session ends first: the will is sent at once.
    pub fire: CancellationToken,
}

impl SessionState {
    /// Starts (`Some`) or stops (`None`) recording this session's changes.
    pub fn set_log(&mut self, log: Option<SessionLog>) {
        self.subscriptions.log.clone_from(&log);
        self.queue.log.clone_from(&log);
        self.inflight.log.clone_from(&log);
        self.inbound_qos2.log.clone_from(&log);
        self.log = log;
    }

    /// Where this session's changes are recorded (`None`: not persistent).
    pub fn log(&self) -> Option<&SessionLog> {
        self.log.as_ref()
    }

    /// Appends an image of the whole session (a checkpoint), as seen under its lock.
    pub fn write_image(&self, client_id: &str, enc: &mut Encoder<'_>, sid: u64) {
        let mut stored = |d: &Delivery| StoredDelivery::new(d, enc.message(&d.message));
        let queue = self
            .queue
            .items
            .iter()
            .filter(|d| d.qos != QoS::AtMostOnce)
            .map(&mut stored)
            .collect();
        let inflight = self
            .inflight
            .map
            .iter()
            .map(|(id, out)| (*id, out.released, stored(&out.delivery)))
            .collect();
        enc.record(&Record::SessionImage(SessionImage {
            sid,
            client_id: client_id.to_owned(),
            expiry_secs: self.expiry_secs,
            disconnected_at_ms: if self.online {
                None
            } else {
                self.disconnected_at_ms
            },
            subscriptions: self
                .subscriptions
                .map
                .iter()
                .map(|(filter, r)| (filter.clone(), (*r).into()))
                .collect(),
            queue,
            inflight,
            inbound_qos2: self.inbound_qos2.set.iter().copied().collect(),
        }));
    }

    /// The next packet id not in flight, or `None` when all 65535 are.
    pub fn next_packet_id(&mut self) -> Option<u16> {
        for _ in 0..u16::MAX {
            self.last_packet_id = self.last_packet_id.checked_add(1).unwrap_or(1);
            if !self.inflight.contains_key(&self.last_packet_id) {
                return Some(self.last_packet_id);
            }
        }
        None
    }
}

/// Where a persistent session's changes go: the journal, and the session's key in it.
#[derive(Debug, Clone)]
pub struct SessionLog {
    journal: Arc<Journal>,
    sid: u64,
    /// Journal position just past this session's latest record.
    last: Arc<AtomicU64>,
}

impl SessionLog {
    /// Records of session `sid` go to `journal`.
    pub fn new(journal: Arc<Journal>, sid: u64) -> SessionLog {
        SessionLog {
            journal,
            sid,
            last: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The session's key in the journal.
    pub fn sid(&self) -> u64 {
        self.sid
    }

    /// Appends records made by `f` (given the encoder and this session's key).
    pub fn record(&self, f: impl FnOnce(&mut Encoder<'_>, u64)) {
        let position = self.journal.append(|enc| f(enc, self.sid));
        self.last.fetch_max(position, Ordering::AcqRel);
    }

    /// A ticket for this session's records so far (`None` if it has none).
    pub fn commit(&self) -> Option<Commit> {
        let last = self.last.load(Ordering::Acquire);
        (last > 0).then(|| self.journal.commit_at(last))
    }

    fn delivery(&self, which: fn(u64, StoredDelivery) -> Record, delivery: &Delivery) {
        self.record(|enc, sid| {
            let stored = StoredDelivery::new(delivery, enc.message(&delivery.message));
            enc.record(&which(sid, stored));
        });
    }
}

/// A session's subscriptions by full filter text; changes are recorded.
#[derive(Debug, Default)]
pub struct Subscriptions {
    map: BTreeMap<String, SubscriptionRecord>,
    bytes: u64,
    log: Option<SessionLog>,
}

impl Subscriptions {
    /// Adds or replaces a subscription; returns the one it replaced.
    pub fn insert(
        &mut self,
        filter: String,
        record: SubscriptionRecord,
    ) -> Option<SubscriptionRecord> {
        if let Some(log) = &self.log {
            log.record(|enc, sid| {
                enc.record(&Record::Subscribe {
                    sid,
                    filter: filter.clone(),
                    options: StoredSubscription::from(record),
                })
            });
        }
        let cost = super::limits::subscription_cost(&filter);
        let replaced = self.map.insert(filter, record);
        if replaced.is_none() {
            self.bytes += cost;
        }
        replaced
    }

    /// Removes a subscription; returns it if it existed.
    pub fn remove(&mut self, filter: &str) -> Option<SubscriptionRecord> {
        let removed = self.map.remove(filter);
        if removed.is_some() {
            self.bytes -= super::limits::subscription_cost(filter);
        }
        if removed.is_some()
            && let Some(log) = &self.log
        {
            log.record(|enc, sid| {
                enc.record(&Record::Unsubscribe {
                    sid,
                    filter: filter.to_owned(),
                })
            });
        }
        removed
    }

    /// The subscription for `filter`.
    pub fn get(&self, filter: &str) -> Option<&SubscriptionRecord> {
        self.map.get(filter)
    }

    /// Whether there is a subscription for `filter`.
    pub fn contains_key(&self, filter: &str) -> bool {
        self.map.contains_key(filter)
    }

    /// Filter texts in order.
    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.map.keys()
    }

    /// Subscriptions in filter order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &SubscriptionRecord)> {
        self.map.iter()
    }

    /// Number of subscriptions.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Memory the subscriptions are charged (what `max_subscription_bytes_per_client` counts:
    /// see [`super::limits::subscription_cost`]).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// Deliveries waiting to be sent, oldest first; changes to the QoS 1/2 ones are recorded.
#[derive(Debug, Default)]
pub struct DeliveryQueue {
    items: VecDeque<Delivery>,
    log: Option<SessionLog>,
}

impl DeliveryQueue {
    /// Adds a delivery at the back.
    pub fn push_back(&mut self, delivery: Delivery) {
        if delivery.qos != QoS::AtMostOnce
            && let Some(log) = &self.log
        {
            log.delivery(|sid, delivery| Record::Enqueue { sid, delivery }, &delivery);
        }
        self.items.push_back(delivery);
    }

    /// Puts a delivery back at the front.
    pub fn push_front(&mut self, delivery: Delivery) {
        if delivery.qos != QoS::AtMostOnce
            && let Some(log) = &self.log
        {
            log.delivery(
                |sid, delivery| Record::EnqueueFront { sid, delivery },
                &delivery,
            );
        }
        self.items.push_front(delivery);
    }

    /// Takes the oldest delivery.
    pub fn pop_front(&mut self) -> Option<Delivery> {
        let delivery = self.items.pop_front()?;
        if delivery.qos != QoS::AtMostOnce
            && let Some(log) = &self.log
        {
            log.record(|enc, sid| enc.record(&Record::Dequeue { sid }));
        }
        Some(delivery)
    }

    /// The oldest delivery.
    pub fn front(&self) -> Option<&Delivery> {
        self.items.front()
    }

    /// Keeps only the deliveries for which `keep` is true.
    pub fn retain(&mut self, keep: impl FnMut(&Delivery) -> bool) {
        let recorded =
            |items: &VecDeque<Delivery>| items.iter().filter(|d| d.qos != QoS::AtMostOnce).count();
        let before = recorded(&self.items);
        self.items.retain(keep);
        if recorded(&self.items) != before
            && let Some(log) = &self.log
        {
            let items = &self.items;
            log.record(|enc, sid| {
                let deliveries = items
                    .iter()
                    .filter(|d| d.qos != QoS::AtMostOnce)
                    .map(|d| StoredDelivery::new(d, enc.message(&d.message)))
                    .collect();
                enc.record(&Record::QueueImage { sid, deliveries });
            });
        }
    }

    /// Deliveries, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &Delivery> {
        self.items.iter()
    }

    /// Number of deliveries.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// QoS 1/2 deliveries sent and not yet acknowledged, by packet id; changes are recorded.
#[derive(Debug, Default)]
pub struct Inflight {
    map: BTreeMap<u16, Outbound>,
    log: Option<SessionLog>,
}

impl Inflight {
    /// Records a delivery sent under `packet_id`; returns one it replaced.
    pub fn insert(&mut self, packet_id: u16, outbound: Outbound) -> Option<Outbound> {
        if let Some(log) = &self.log {
            log.record(|enc, sid| {
                let stored = StoredDelivery::new(
                    &outbound.delivery,
                    enc.message(&outbound.delivery.message),
                );
                enc.record(&Record::InFlight {
                    sid,
                    packet_id,
                    released: outbound.released,
                    delivery: stored,
                });
            });
        }
        self.map.insert(packet_id, outbound)
    }

    /// Ends delivery `packet_id` (acknowledged or discarded); returns it if it was in flight.
    pub fn remove(&mut self, packet_id: &u16) -> Option<Outbound> {
        let removed = self.map.remove(packet_id);
        if removed.is_some()
            && let Some(log) = &self.log
        {
            log.record(|enc, sid| {
                enc.record(&Record::Completed {
                    sid,
                    packet_id: *packet_id,
                })
            });
        }
        removed
    }

    /// QoS 2 delivery `packet_id` got its PUBREC (PUBREL is sent next); false if unknown.
    pub fn release(&mut self, packet_id: u16) -> bool {
        let Some(out) = self.map.get_mut(&packet_id) else {
            return false;
        };
        if !out.released {
            out.released = true;
            if let Some(log) = &self.log {
                log.record(|enc, sid| enc.record(&Record::Released { sid, packet_id }));
            }
        }
        true
    }

    /// The delivery in flight as `packet_id`.
    pub fn get(&self, packet_id: &u16) -> Option<&Outbound> {
        self.map.get(packet_id)
    }

    /// Whether `packet_id` is in flight.
    pub fn contains_key(&self, packet_id: &u16) -> bool {
        self.map.contains_key(packet_id)
    }

    /// Deliveries in packet id order.
    pub fn iter(&self) -> impl Iterator<Item = (&u16, &Outbound)> {
        self.map.iter()
    }

    /// Number in flight.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether none is in flight.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// Packet ids of QoS 2 publishes received and not yet released; changes are recorded.
#[derive(Debug, Default)]
pub struct InboundQos2 {
    set: BTreeSet<u16>,
    log: Option<SessionLog>,
}

impl InboundQos2 {
    /// Notes `packet_id` as received; false if it already was.
    pub fn insert(&mut self, packet_id: u16) -> bool {
        let new = self.set.insert(packet_id);
        if new && let Some(log) = &self.log {
            log.record(|enc, sid| enc.record(&Record::InboundQos2 { sid, packet_id }));
        }
        new
    }

    /// Forgets `packet_id` (PUBREL, or the publish was refused); false if unknown.
    pub fn remove(&mut self, packet_id: &u16) -> bool {
        let known = self.set.remove(packet_id);
        if known && let Some(log) = &self.log {
            log.record(|enc, sid| {
                enc.record(&Record::InboundQos2Done {
                    sid,
                    packet_id: *packet_id,
                })
            });
        }
        known
    }

    /// Whether `packet_id` was received and not released.
    pub fn contains(&self, packet_id: &u16) -> bool {
        self.set.contains(packet_id)
    }

    /// Packet ids in order.
    pub fn iter(&self) -> impl Iterator<Item = &u16> {
        self.set.iter()
    }

    /// Number waiting for PUBREL.
    pub fn len(&self) -> usize {
        self.set.len()
    }

    /// Whether none is waiting.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }
}

/// One client's session.
#[derive(Debug)]
pub struct Session {
    /// Unique key of this session in the hub.
    pub key: u64,
    /// The client identifier.
    pub client_id: String,
    /// Most deliveries queued while the client is slow or offline; more are dropped.
    max_queued: usize,
    state: Mutex<SessionState>,
    /// Wakes the attached connection when deliveries arrive.
    pub wake: Notify,
    /// The MQTT front end's counters (deliveries dropped because the queue was full).
    metrics: Arc<FrontMetrics>,
}

impl Session {
    /// A fresh, empty session counting into `metrics`.
    pub fn new(
        key: u64,
        client_id: String,
        max_queued: usize,
        metrics: Arc<FrontMetrics>,
    ) -> Session {
        Session {
            key,
            client_id,
            max_queued,
            state: Mutex::new(SessionState::default()),
            wake: Notify::new(),
            metrics,
        }
    }

    /// Locks the session state.
    pub fn lock(&self) -> MutexGuard<'_, SessionState> {
        self.state.lock()
    }
}

impl Mailbox for Session {
    fn deliver(&self, delivery: Delivery) -> bool {
        {
            let mut state = self.lock();
            if !state.online && delivery.qos == QoS::AtMostOnce {
                return false;
            }
            if state.queue.len() >= self.max_queued {
                drop(state);
                self.metrics.dropped(DropReason::QueueFull);
                return false;
            }
            state.queue.push_back(delivery);
        }
        self.wake.notify_one();
        true
    }
}

/// All sessions by client id.
#[derive(Debug, Default)]
pub struct Registry {
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    next_key: AtomicU64,
}

impl Registry {
    /// An empty registry; session keys start at `first_key` (NATS connections use another range).
    pub fn new(first_key: u64) -> Registry {
        Registry {
            sessions: Mutex::new(HashMap::new()),
            next_key: AtomicU64::new(first_key),
        }
    }

    /// Locks the map of sessions.
    pub fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<Session>>> {
        self.sessions.lock()
    }

    /// A key for a new session.
    pub fn next_key(&self) -> u64 {
        self.next_key.fetch_add(1, Ordering::Relaxed)
    }

    /// Number of sessions (online and offline).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether there are no sessions.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Message, MessageProperties, Origin};
    use crate::metrics::front::Protocol;

    fn metrics() -> Arc<FrontMetrics> {
        Arc::new(FrontMetrics::new(Protocol::Mqtt))
    }

    fn delivery(qos: u8) -> Delivery {
        let qos = QoS::from_u8(qos).unwrap();
        Delivery {
            message: Arc::new(Message {
                topic: "t".into(),
                payload: bytes::Bytes::from_static(b"p"),
                qos,
                retain: false,
                properties: MessageProperties::default(),
                received_ms: 1,
                origin: Origin::Mqtt,
                publisher: None,
            }),
            qos,
            retain: false,
            subscription_ids: vec![],
        }
    }

    #[test]
    fn offline_sessions_queue_qos1_but_not_qos0() {
        let session = Session::new(1, "c".into(), 10, metrics());
        assert!(!session.deliver(delivery(0)));
        assert!(session.deliver(delivery(1)));
        session.lock().online = true;
        assert!(session.deliver(delivery(0)));
        assert_eq!(session.lock().queue.len(), 2);
    }

    #[test]
    fn full_queues_drop_and_count() {
        let session = Session::new(1, "c".into(), 2, metrics());
        assert!(session.deliver(delivery(1)));
        assert!(session.deliver(delivery(1)));
        assert!(!session.deliver(delivery(1)));
        assert_eq!(session.metrics.dropped_count(DropReason::QueueFull), 1);
    }

    #[test]
    fn packet_ids_skip_those_in_flight_and_wrap() {
        let mut state = SessionState {
            last_packet_id: u16::MAX - 1,
            ..Default::default()
        };
        state.inflight.insert(
            u16::MAX,
            Outbound {
                delivery: delivery(1),
                released: false,
            },
        );
        assert_eq!(state.next_packet_id(), Some(1));
        assert_eq!(state.next_packet_id(), Some(2));
    }
}
