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
use std::num::NonZeroU64;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use edge_proto::mqtt::QoS;
use parking_lot::{Mutex, MutexGuard};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::hub::{Delivery, Mailbox, Offer, Room};
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
    /// Session Expiry Interval in seconds (`u32::MAX` = never); recorded when the session
    /// goes offline.
    pub expiry_secs: u32,
    /// When the last connection ended (unix ms), while offline
    /// ([`SessionState::disconnected_at_ms`]). Not an `Option<u64>`: that took 16 bytes of
    /// every session, and made it a 320-byte malloc chunk instead of 304.
    disconnected_at: Option<NonZeroU64>,
    /// Subscriptions by full filter text (including any `$share/group/` prefix).
    pub subscriptions: Subscriptions,
    /// Deliveries not yet sent.
    pub queue: DeliveryQueue,
    /// Last packet id handed out.
    pub last_packet_id: u16,
    /// Deliveries in flight, QoS 2 publishes received, a delayed will: made when first
    /// needed ([`SessionState::inflight_mut`]).
    exchanges: Option<Box<Exchanges>>,
    /// The session has ended (clean start took over, or it expired): nothing may resume it.
    pub ended: bool,
    log: Option<SessionLog>,
    /// The attached connection, while it is parked ([`crate::mqtt::park`]): taken out and
    /// resumed by whatever arrives for it here (a delivery, a takeover, the broker
    /// stopping), under this lock, so nothing queued is missed by a connection parking.
    /// Boxed: 40 bytes inline in every session, for the time a connection is parked.
    parked: Option<Box<Parked>>,
}

/// A connection parked while idle, with its socket ([`crate::mqtt::park`]).
pub struct Parked {
    /// Its registration with the parking lot.
    pub token: u64,
    /// The client's socket, out of the runtime's reactor while parked.
    pub socket: std::net::TcpStream,
    /// Keeps the broker's drain waiting for the connection while it is parked.
    pub tracked: tokio_util::task::task_tracker::TaskTrackerToken,
    /// The connection, resumed with its socket.
    pub connection: Box<dyn Resume>,
}

impl std::fmt::Debug for Parked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parked")
            .field("token", &self.token)
            .finish()
    }
}

impl Parked {
    /// Serves the connection again (a task of its own), with its socket.
    pub fn resume(self) {
        self.connection.resume(self.token, self.socket);
        // Dropped once the resumed connection's task is tracked.
        drop(self.tracked);
    }
}

/// A parked connection, as the session holds it (the connection's type lives in
/// `mqtt::connection`, which depends on this module).
pub trait Resume: Send {
    /// Serves the connection again with `socket`; `token` is its parking lot registration,
    /// which this ends.
    fn resume(self: Box<Self>, token: u64, socket: std::net::TcpStream);
}

/// The parts of a session that a clean, idle one never fills, boxed: inline they were 96
/// bytes of every session.
#[derive(Debug, Default)]
struct Exchanges {
    /// Sent QoS 1/2 deliveries by packet id.
    inflight: Inflight,
    /// Packet ids of received QoS 2 publishes waiting for PUBREL.
    inbound_qos2: InboundQos2,
    /// A will waiting for its delay interval.
    pending_will: Option<PendingWill>,
}

/// What a session without [`Exchanges`] reads.
static NO_INFLIGHT: Inflight = Inflight {
    map: HashMap::with_hasher(IdHash),
    charge: Charge {
        bytes: 0,
        total: None,
    },
    log: None,
};
/// The same for QoS 2 publishes received.
static NO_INBOUND_QOS2: InboundQos2 = InboundQos2 {
    set: BTreeSet::new(),
    log: None,
};

/// A will message waiting for its delay interval (MQTT 5 §3.1.3.2.2).
#[derive(Debug, Clone, Default)]
pub struct PendingWill {
    /// Cancelled when the client reconnects in time: the will is not sent.
    pub abort: CancellationToken,
    /// Cancelled when the session ends first: the will is sent at once.
    pub fire: CancellationToken,
}

impl SessionState {
    /// When the last connection ended (unix ms), while offline.
    pub fn disconnected_at_ms(&self) -> Option<u64> {
        self.disconnected_at.map(NonZeroU64::get)
    }

    /// Records when the last connection ended (`None`: online again). (A time of 0 ms is
    /// kept as 1 ms.)
    pub fn set_disconnected_at_ms(&mut self, at_ms: Option<u64>) {
        self.disconnected_at = at_ms.map(|ms| NonZeroU64::new(ms).unwrap_or(NonZeroU64::MIN));
    }

    /// Starts (`Some`) or stops (`None`) recording this session's changes.
    pub fn set_log(&mut self, log: Option<SessionLog>) {
        self.subscriptions.log.clone_from(&log);
        self.queue.log.clone_from(&log);
        if let Some(exchanges) = &mut self.exchanges {
            exchanges.inflight.log.clone_from(&log);
            exchanges.inbound_qos2.log.clone_from(&log);
        }
        self.log = log;
    }

    /// Sent QoS 1/2 deliveries by packet id.
    pub fn inflight(&self) -> &Inflight {
        self.exchanges
            .as_ref()
            .map_or(&NO_INFLIGHT, |e| &e.inflight)
    }

    /// The same, to change.
    pub fn inflight_mut(&mut self) -> &mut Inflight {
        &mut self.exchanges_mut().inflight
    }

    /// Packet ids of received QoS 2 publishes waiting for PUBREL.
    pub fn inbound_qos2(&self) -> &InboundQos2 {
        self.exchanges
            .as_ref()
            .map_or(&NO_INBOUND_QOS2, |e| &e.inbound_qos2)
    }

    /// The same, to change.
    pub fn inbound_qos2_mut(&mut self) -> &mut InboundQos2 {
        &mut self.exchanges_mut().inbound_qos2
    }

    /// Forgets a QoS 2 publish received (PUBREL, or refused): whether it was known. A session
    /// that never took one makes no [`Exchanges`] for it (a client's PUBREL for an unknown id
    /// would otherwise give every idle session the box back).
    pub fn forget_inbound_qos2(&mut self, packet_id: u16) -> bool {
        self.exchanges
            .as_mut()
            .is_some_and(|e| e.inbound_qos2.remove(&packet_id))
    }

    /// Takes the will waiting for its delay interval, if any.
    pub fn take_pending_will(&mut self) -> Option<PendingWill> {
        self.exchanges.as_mut()?.pending_will.take()
    }

    /// Holds `parked` until something arrives for it ([`SessionState::take_parked`]).
    pub fn park(&mut self, parked: Parked) {
        debug_assert!(
            self.parked.is_none(),
            "a session holds one parked connection"
        );
        self.parked = Some(Box::new(parked));
    }

    /// The parked connection, taken out to be resumed: any (`None`), or only the one parked
    /// under `token` (an older registration's event finds nothing).
    pub fn take_parked(&mut self, token: Option<u64>) -> Option<Parked> {
        match (&self.parked, token) {
            (Some(parked), Some(token)) if parked.token != token => None,
            _ => self.parked.take().map(|parked| *parked),
        }
    }

    /// Sets the will waiting for its delay interval.
    pub fn set_pending_will(&mut self, will: PendingWill) {
        self.exchanges_mut().pending_will = Some(will);
    }

    /// The boxed parts, made now if missing: recorded like the rest of the session, and
    /// charged to the same total as its queue.
    fn exchanges_mut(&mut self) -> &mut Exchanges {
        let (log, total) = (&self.log, &self.queue.charge.total);
        self.exchanges.get_or_insert_with(|| {
            let mut exchanges = Box::<Exchanges>::default();
            exchanges.inflight.log.clone_from(log);
            exchanges.inbound_qos2.log.clone_from(log);
            if let Some(total) = total {
                exchanges.inflight.charge.attach(Arc::clone(total));
            }
            exchanges
        })
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
            .inflight()
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
                self.disconnected_at_ms()
            },
            subscriptions: self
                .subscriptions
                .map
                .iter()
                .map(|(filter, r)| (filter.clone(), (*r).into()))
                .collect(),
            queue,
            inflight,
            inbound_qos2: self.inbound_qos2().set.iter().copied().collect(),
        }));
    }

    /// The next packet id not in flight, or `None` when all 65535 are.
    pub fn next_packet_id(&mut self) -> Option<u16> {
        for _ in 0..u16::MAX {
            self.last_packet_id = self.last_packet_id.checked_add(1).unwrap_or(1);
            if !self.inflight().contains_key(&self.last_packet_id) {
                return Some(self.last_packet_id);
            }
        }
        None
    }
}

/// Where a persistent session's changes go: the journal, and the session's key in it.
///
/// One pointer: a session keeps five copies (itself and each recorded collection), and most
/// sessions (clean ones) have none.
#[derive(Debug, Clone)]
pub struct SessionLog(Arc<SessionLogInner>);

#[derive(Debug)]
struct SessionLogInner {
    journal: Arc<Journal>,
    sid: u64,
    /// Journal position just past this session's latest record.
    last: AtomicU64,
}

impl SessionLog {
    /// Records of session `sid` go to `journal`.
    pub fn new(journal: Arc<Journal>, sid: u64) -> SessionLog {
        SessionLog(Arc::new(SessionLogInner {
            journal,
            sid,
            last: AtomicU64::new(0),
        }))
    }

    /// The session's key in the journal.
    pub fn sid(&self) -> u64 {
        self.0.sid
    }

    /// Appends records made by `f` (given the encoder and this session's key).
    pub fn record(&self, f: impl FnOnce(&mut Encoder<'_>, u64)) {
        let SessionLogInner { journal, sid, last } = &*self.0;
        let position = journal.append(|enc| f(enc, *sid));
        last.fetch_max(position, Ordering::AcqRel);
    }

    /// A ticket for this session's records so far (`None` if it has none).
    pub fn commit(&self) -> Option<Commit> {
        let last = self.0.last.load(Ordering::Acquire);
        (last > 0).then(|| self.0.journal.commit_at(last))
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

/// Memory a queued or in-flight delivery is charged besides its message's topic and payload:
/// the `Delivery` and its slot, the `Message` header and its properties (measured about
/// 200 bytes on x86_64; the message itself is shared by its subscribers, so charging it to
/// each is an upper bound).
pub const DELIVERY_OVERHEAD: u64 = 256;

/// What `max_queued_bytes` and `max_queued_bytes_total` charge for `delivery`.
pub fn delivery_cost(delivery: &Delivery) -> u64 {
    let message = &delivery.message;
    (message.topic.len() + message.payload.len()) as u64 + DELIVERY_OVERHEAD
}

/// The bytes one collection holds, mirrored into the front end's total (`None` in tests that
/// build a bare session): given back when the collection is dropped.
#[derive(Debug, Default)]
struct Charge {
    bytes: u64,
    total: Option<Arc<AtomicU64>>,
}

impl Charge {
    fn add(&mut self, delivery: &Delivery) {
        let cost = delivery_cost(delivery);
        self.bytes += cost;
        if let Some(total) = &self.total {
            total.fetch_add(cost, Ordering::Relaxed);
        }
    }

    fn sub(&mut self, delivery: &Delivery) {
        let cost = delivery_cost(delivery).min(self.bytes);
        self.bytes -= cost;
        if let Some(total) = &self.total {
            total.fetch_sub(cost, Ordering::Relaxed);
        }
    }

    /// Moves what is charged so far onto `total`.
    fn attach(&mut self, total: Arc<AtomicU64>) {
        total.fetch_add(self.bytes, Ordering::Relaxed);
        if let Some(old) = self.total.replace(total) {
            old.fetch_sub(self.bytes, Ordering::Relaxed);
        }
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        if let Some(total) = &self.total {
            total.fetch_sub(self.bytes, Ordering::Relaxed);
        }
    }
}

/// Deliveries waiting to be sent, oldest first; changes to the QoS 1/2 ones are recorded.
#[derive(Debug, Default)]
pub struct DeliveryQueue {
    items: VecDeque<Delivery>,
    charge: Charge,
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
        self.charge.add(&delivery);
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
        self.charge.add(&delivery);
        self.items.push_front(delivery);
    }

    /// Bytes the queued deliveries are charged ([`delivery_cost`]).
    pub fn bytes(&self) -> u64 {
        self.charge.bytes
    }

    /// Takes the oldest delivery.
    pub fn pop_front(&mut self) -> Option<Delivery> {
        let delivery = self.items.pop_front()?;
        self.charge.sub(&delivery);
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
        let charge = &mut self.charge;
        let mut keep = keep;
        self.items.retain(|d| {
            let kept = keep(d);
            if !kept {
                charge.sub(d);
            }
            kept
        });
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

/// Hashes a packet id by one multiplication (Fibonacci hashing): ids are handed out in
/// sequence, so they spread over the table's buckets, and the high bits hashbrown uses for
/// its control bytes differ between neighbours.
///
/// Not keyed, and safe so: the broker chooses packet ids, not the client. A client that
/// acknowledges some deliveries and keeps others can only choose which of the broker's ids stay
/// in the table, never more of them than its Receive Maximum (at most `max_inflight_messages`).
#[derive(Debug, Clone, Copy, Default)]
pub struct IdHash;

/// The [`IdHash`] hasher: the last `u16` written, multiplied.
#[derive(Debug, Default)]
pub struct IdHasher(u64);

impl std::hash::BuildHasher for IdHash {
    type Hasher = IdHasher;

    fn build_hasher(&self) -> IdHasher {
        IdHasher(0)
    }
}

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0.wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }

    fn write_u16(&mut self, id: u16) {
        self.0 = u64::from(id);
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `u16` keys use this hasher; anything else still hashes, byte by byte.
        for byte in bytes {
            self.0 = (self.0 << 8 | u64::from(*byte)).rotate_left(5);
        }
    }
}

/// QoS 1/2 deliveries sent and not yet acknowledged, by packet id; changes are recorded.
///
/// A hash table rather than an ordered map: each QoS 1 delivery looks its id up three or four
/// times (a free id, insert, the PUBACK's get and remove), ~570 instructions a delivery in a
/// `BTreeMap` of 100 (callgrind, BENCHMARKS.md). Id order is needed only to resend after a
/// reconnect and to write a session image, which sort.
#[derive(Debug, Default)]
pub struct Inflight {
    map: HashMap<u16, Outbound, IdHash>,
    charge: Charge,
    log: Option<SessionLog>,
}

impl Inflight {
    /// Bytes the deliveries in flight are charged ([`delivery_cost`]).
    pub fn bytes(&self) -> u64 {
        self.charge.bytes
    }

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
        self.charge.add(&outbound.delivery);
        let replaced = self.map.insert(packet_id, outbound);
        if let Some(old) = &replaced {
            self.charge.sub(&old.delivery);
        }
        replaced
    }

    /// Ends delivery `packet_id` (acknowledged or discarded); returns it if it was in flight.
    pub fn remove(&mut self, packet_id: &u16) -> Option<Outbound> {
        let removed = self.map.remove(packet_id);
        if let Some(out) = &removed {
            self.charge.sub(&out.delivery);
        }
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
        let mut all: Vec<_> = self.map.iter().collect();
        all.sort_unstable_by_key(|(id, _)| **id);
        all.into_iter()
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
    /// The client identifier (one allocation shared with the registry's key, the connection
    /// and its permissions).
    pub client_id: Arc<str>,
    /// Most deliveries (and bytes) queued while the client is slow or offline; more are dropped.
    /// Shared by the sessions made under the same settings.
    limits: Arc<QueueLimits>,
    state: Mutex<SessionState>,
    /// Wakes the attached connection when deliveries arrive, when it is taken over
    /// ([`Session::kick`]) and when the broker stops.
    pub wake: Notify,
    /// Connections of this generation and older are to leave (taken over): an atomic the
    /// serve loop reads each turn, instead of a cancellation token per connection (a tree
    /// node and a slot in the shutdown token's children, ~130 bytes per idle client).
    kicked: AtomicU64,
    /// Wakes publishers waiting for room in the queue: the attached connection calls
    /// [`Room::made`] when it takes deliveries out (and the session going offline).
    pub room: Room,
    /// The MQTT front end's counters (deliveries dropped because the queue was full).
    metrics: Arc<FrontMetrics>,
}

/// What a session may hold for its client (`[mqtt]` keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    /// `max_queued_messages`: deliveries queued.
    pub max_messages: usize,
    /// `max_queued_bytes`: bytes queued and in flight ([`delivery_cost`]).
    pub max_bytes: u64,
    /// `max_queued_bytes_total`: bytes queued and in flight in all sessions together.
    pub max_total_bytes: u64,
    /// `slow_subscriber_wait`: how long after this session last made room a publisher may
    /// wait for it (zero: never).
    pub max_wait: Duration,
}

impl QueueLimits {
    /// The limits of `[mqtt]`.
    pub fn of(settings: &crate::config::MqttSection) -> QueueLimits {
        QueueLimits {
            max_messages: settings.max_queued_messages,
            max_bytes: settings.max_queued_bytes.bytes(),
            max_total_bytes: settings.max_queued_bytes_total.bytes(),
            max_wait: settings.slow_subscriber_wait.0,
        }
    }
}

impl Session {
    /// A fresh, empty session counting into `metrics` (its queued bytes into
    /// [`FrontMetrics::queued_bytes`]).
    pub fn new(
        key: u64,
        client_id: Arc<str>,
        limits: Arc<QueueLimits>,
        metrics: Arc<FrontMetrics>,
    ) -> Session {
        let mut state = SessionState::default();
        state.queue.charge.attach(Arc::clone(&metrics.queued_bytes));
        Session {
            key,
            client_id,
            limits,
            state: Mutex::new(state),
            wake: Notify::new(),
            kicked: AtomicU64::new(0),
            room: Room::default(),
            metrics,
        }
    }

    /// Tells the attached connection (if any) to leave: the session is taken over. Its serve
    /// loop sees it at its next turn ([`Session::is_kicked`]), woken if it waits, resumed if
    /// it is parked.
    pub fn kick(&self) {
        let parked = {
            let mut state = self.lock();
            self.kicked.fetch_max(state.generation, Ordering::SeqCst);
            // Under the lock: a connection parking checks the flag under it too.
            state.take_parked(None)
        };
        // `notify_waiters` reaches every `Notified` made before it, polled or not: a loop
        // that makes its `Notified` before reading the flag cannot miss the kick.
        self.wake.notify_waiters();
        if let Some(parked) = parked {
            parked.resume();
        }
    }

    /// Whether the connection of `generation` was told to leave ([`Session::kick`]).
    pub fn is_kicked(&self, generation: u64) -> bool {
        self.kicked.load(Ordering::SeqCst) >= generation
    }

    /// Locks the session state.
    pub fn lock(&self) -> MutexGuard<'_, SessionState> {
        self.state.lock()
    }
}

impl Session {
    /// Queues `delivery` if the limits allow. When they do not, an online QoS 0 delivery that
    /// `may_wait` is handed back ([`Offer::Full`]) for its publisher to wait for room, while
    /// this session made room within `max_wait` and unless only the total budget is full
    /// (room in it is made by other sessions); anything else is dropped and counted.
    fn put(&self, delivery: Delivery, may_wait: bool) -> Offer {
        let parked = {
            let mut state = self.lock();
            if !state.online && delivery.qos == QoS::AtMostOnce {
                return Offer::Refused;
            }
            let cost = delivery_cost(&delivery);
            let full = if state.queue.len() >= self.limits.max_messages {
                Some(DropReason::QueueFull)
            } else if state.queue.bytes() + state.inflight().bytes() + cost > self.limits.max_bytes
            {
                Some(DropReason::QueueBytes)
            } else if self.metrics.queued_bytes.load(Ordering::Relaxed) + cost
                > self.limits.max_total_bytes
            {
                Some(DropReason::QueueBudget)
            } else {
                None
            };
            if let Some(reason) = full {
                let until = self.room.until(self.limits.max_wait);
                if may_wait
                    && state.online
                    && delivery.qos == QoS::AtMostOnce
                    && reason != DropReason::QueueBudget
                    && until > tokio::time::Instant::now()
                {
                    let seen = self.room.seen();
                    return Offer::Full {
                        delivery,
                        seen,
                        until,
                    };
                }
                drop(state);
                self.metrics.dropped(reason);
                return Offer::Refused;
            }
            if state.queue.is_empty() {
                self.room.had_room();
            }
            state.queue.push_back(delivery);
            state.take_parked(None)
        };
        self.wake.notify_one();
        if let Some(parked) = parked {
            parked.resume();
        }
        Offer::Taken
    }
}

impl Mailbox for Session {
    fn deliver(&self, delivery: Delivery) -> bool {
        matches!(self.put(delivery, false), Offer::Taken)
    }

    /// QoS 0 deliveries to an online session whose own queue is full are handed back for the
    /// publisher to wait (QoS 1/2 ones, and offline sessions, are as [`Mailbox::deliver`]).
    fn offer(&self, delivery: Delivery) -> Offer {
        self.put(delivery, true)
    }

    fn room(&self) -> Option<&Room> {
        Some(&self.room)
    }
}

/// All sessions by client id.
#[derive(Debug, Default)]
pub struct Registry {
    sessions: Mutex<HashMap<Arc<str>, Arc<Session>>>,
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
    pub fn lock(&self) -> MutexGuard<'_, HashMap<Arc<str>, Arc<Session>>> {
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

    fn limits(max_messages: usize, max_bytes: u64, max_total_bytes: u64) -> Arc<QueueLimits> {
        Arc::new(QueueLimits {
            max_messages,
            max_bytes,
            max_total_bytes,
            max_wait: Duration::from_secs(60),
        })
    }

    /// Every logged-in client holds one `Session` (in an `Arc`) for its connection's life,
    /// clean or not: 10,000 idle clients, 10,000 of them. It was 416 bytes with the queue
    /// limits inline (the same 32 bytes in every session, now shared) and the deliveries in
    /// flight, QoS 2 publishes received and a delayed will inline (96 bytes, now boxed when
    /// first used): 288, an `Arc` of 304 bytes where it was 432. 280 with the disconnection
    /// time an `Option<NonZeroU64>` (8 bytes, not 16): an `Arc` of 296, a 304-byte chunk
    /// instead of 320. 288 with a parked connection's place (a box: 40 bytes inline), which
    /// saves the connection far more while it is parked (`mqtt::park`).
    #[test]
    fn a_session_holds_what_an_idle_client_needs_inline_only() {
        const SESSION_MAX: usize = 288;
        let size = std::mem::size_of::<Session>();
        eprintln!(
            "Session: {size} bytes, SessionState: {}",
            std::mem::size_of::<SessionState>()
        );
        assert!(size <= SESSION_MAX, "Session: {size} bytes");
    }

    #[test]
    fn queues_are_bounded_in_bytes_per_session_and_together() {
        let metrics = metrics();
        let cost = delivery_cost(&delivery(1));
        let a = Session::new(
            1,
            "a".into(),
            limits(100, 3 * cost, 5 * cost),
            Arc::clone(&metrics),
        );
        let b = Session::new(
            2,
            "b".into(),
            limits(100, 3 * cost, 5 * cost),
            Arc::clone(&metrics),
        );
        for _ in 0..3 {
            assert!(a.deliver(delivery(1)));
        }
        assert!(!a.deliver(delivery(1)), "a's own bytes are full");
        assert_eq!(metrics.dropped_count(DropReason::QueueBytes), 1);
        assert!(b.deliver(delivery(1)) && b.deliver(delivery(1)));
        assert!(!b.deliver(delivery(1)), "the total is full");
        assert_eq!(metrics.dropped_count(DropReason::QueueBudget), 1);
        // In flight counts too, and what leaves is given back.
        {
            let mut state = a.lock();
            let sent = state.queue.pop_front().unwrap();
            state.inflight_mut().insert(
                1,
                Outbound {
                    delivery: sent,
                    released: false,
                },
            );
            assert_eq!(state.queue.bytes() + state.inflight().bytes(), 3 * cost);
            state.inflight_mut().remove(&1);
        }
        assert_eq!(metrics.queued_bytes.load(Ordering::Relaxed), 4 * cost);
        drop(a);
        assert_eq!(metrics.queued_bytes.load(Ordering::Relaxed), 2 * cost);
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
                nats_subject: None,
            }),
            qos,
            retain: false,
            subscription_ids: vec![],
        }
    }

    /// A subscriber whose queue stayed empty longer than `slow_subscriber_wait` (nothing to
    /// take out, so no room "made") and that a burst then fills is waited for: it is idle, not
    /// stalled. (It was dropped at once: 201 of 5,000 in `mqtt_slow_subscriber` under load.)
    #[test]
    fn an_idle_subscriber_filled_by_a_burst_is_waited_for() {
        let metrics = metrics();
        let wait = Duration::from_millis(50);
        let s = Session::new(
            1,
            "s".into(),
            Arc::new(QueueLimits {
                max_wait: wait,
                ..*limits(1, u64::MAX, u64::MAX)
            }),
            Arc::clone(&metrics),
        );
        s.lock().online = true;
        std::thread::sleep(2 * wait);
        assert!(matches!(s.offer(delivery(0)), Offer::Taken));
        assert!(
            matches!(s.offer(delivery(0)), Offer::Full { .. }),
            "an idle subscriber's full queue dropped at once"
        );
        assert_eq!(metrics.dropped_count(DropReason::QueueFull), 0);
    }

    /// The serve loop makes its `Notified` before it reads the kick flag, and polls it later:
    /// a kick in between must still wake it (`notify_one` would leave the permit to whichever
    /// connection of the session polls first, the one that took over included).
    #[tokio::test]
    async fn a_kick_wakes_a_notified_made_before_it_and_spares_the_newer_connection() {
        let session = Session::new(1, "c".into(), limits(10, 1 << 20, 1 << 30), metrics());
        session.lock().generation = 1;
        let old = session.wake.notified();
        assert!(!session.is_kicked(1));
        session.kick();
        session.lock().generation = 2; // the connection that took over
        let new = session.wake.notified();
        assert!(session.is_kicked(1));
        assert!(!session.is_kicked(2));
        tokio::time::timeout(Duration::from_secs(5), old)
            .await
            .expect("the kicked connection is woken");
        drop(new);
    }

    /// A PUBREL for an id the session never took (any client may send one) answers "not
    /// found" without making the boxed exchanges an idle session does without.
    #[test]
    fn an_unknown_pubrel_makes_no_exchanges() {
        let session = Session::new(1, "c".into(), limits(10, 1 << 20, 1 << 30), metrics());
        let mut state = session.lock();
        assert!(!state.forget_inbound_qos2(7));
        assert!(state.exchanges.is_none());
        state.inbound_qos2_mut().insert(7);
        assert!(state.forget_inbound_qos2(7));
        assert!(!state.forget_inbound_qos2(7));
    }

    #[test]
    fn offline_sessions_queue_qos1_but_not_qos0() {
        let session = Session::new(1, "c".into(), limits(10, 1 << 20, 1 << 30), metrics());
        assert!(!session.deliver(delivery(0)));
        assert!(session.deliver(delivery(1)));
        session.lock().online = true;
        assert!(session.deliver(delivery(0)));
        assert_eq!(session.lock().queue.len(), 2);
    }

    #[test]
    fn full_queues_drop_and_count() {
        let session = Session::new(1, "c".into(), limits(2, 1 << 20, 1 << 30), metrics());
        assert!(session.deliver(delivery(1)));
        assert!(session.deliver(delivery(1)));
        assert!(!session.deliver(delivery(1)));
        assert_eq!(session.metrics.dropped_count(DropReason::QueueFull), 1);
    }

    /// The policy of `slow_subscriber_wait`, as the session applies it: a full online queue
    /// hands QoS 0 deliveries back to wait (not counted as dropped); QoS 1/2 drop as before.
    #[test]
    fn full_queues_hand_qos0_back_to_wait_and_drop_qos1() {
        let session = Session::new(1, "c".into(), limits(2, 1 << 20, 1 << 30), metrics());
        session.lock().online = true;
        assert!(session.deliver(delivery(0)) && session.deliver(delivery(0)));
        let Offer::Full { delivery: back, .. } = session.offer(delivery(0)) else {
            panic!("a full queue hands an online QoS 0 delivery back");
        };
        assert_eq!(back.qos, QoS::AtMostOnce);
        assert_eq!(session.metrics.dropped_count(DropReason::QueueFull), 0);
        assert_eq!(session.lock().queue.len(), 2);
        assert!(matches!(session.offer(delivery(1)), Offer::Refused));
        assert_eq!(session.metrics.dropped_count(DropReason::QueueFull), 1);
        // `deliver` (wills, $SYS, NATS publishers) never hands back.
        assert!(!session.deliver(delivery(0)));
        assert_eq!(session.metrics.dropped_count(DropReason::QueueFull), 2);
    }

    #[tokio::test]
    async fn a_waiter_wakes_on_room_made_before_or_after_it_waits() {
        let session = Arc::new(Session::new(
            1,
            "c".into(),
            limits(1, 1 << 20, 1 << 30),
            metrics(),
        ));
        session.lock().online = true;
        assert!(session.deliver(delivery(0)));
        let Offer::Full { seen, .. } = session.offer(delivery(0)) else {
            panic!("full");
        };
        // Made before waiting: resolves at once.
        session.lock().queue.pop_front();
        session.room.made();
        session.room.since(seen).await;
        assert!(matches!(session.offer(delivery(0)), Offer::Taken));
        // Made while waiting: wakes the waiter.
        let Offer::Full { seen, .. } = session.offer(delivery(0)) else {
            panic!("full again");
        };
        let waiter = tokio::spawn({
            let session = Arc::clone(&session);
            async move { session.room.since(seen).await }
        });
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(!waiter.is_finished(), "no room made yet");
        session.lock().queue.pop_front();
        session.room.made();
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("woken by room")
            .unwrap();
    }

    #[test]
    fn a_session_that_made_no_room_for_its_wait_drops_at_once_until_it_reads() {
        let mut limits = *limits(1, 1 << 20, 1 << 30);
        limits.max_wait = Duration::from_millis(20);
        let session = Session::new(1, "c".into(), Arc::new(limits), metrics());
        session.lock().online = true;
        assert!(session.deliver(delivery(0)));
        assert!(matches!(session.offer(delivery(0)), Offer::Full { .. }));
        std::thread::sleep(Duration::from_millis(50));
        assert!(matches!(session.offer(delivery(0)), Offer::Refused));
        assert_eq!(session.metrics.dropped_count(DropReason::QueueFull), 1);
        session.lock().queue.pop_front();
        session.room.made();
        assert!(matches!(session.offer(delivery(0)), Offer::Taken));
        assert!(matches!(session.offer(delivery(0)), Offer::Full { .. }));
        // Offline sessions never make a publisher wait for QoS 0.
        session.lock().online = false;
        assert!(matches!(session.offer(delivery(0)), Offer::Refused));
    }

    #[test]
    fn packet_ids_skip_those_in_flight_and_wrap() {
        let mut state = SessionState {
            last_packet_id: u16::MAX - 1,
            ..Default::default()
        };
        state.inflight_mut().insert(
            u16::MAX,
            Outbound {
                delivery: delivery(1),
                released: false,
            },
        );
        assert_eq!(state.next_packet_id(), Some(1));
        assert_eq!(state.next_packet_id(), Some(2));
    }

    /// The in-flight table is a hash table: lookups, removals and the byte charge hold for
    /// ids across the whole range, and `iter` (resends, session images) is in id order
    /// whatever order the ids came in.
    #[test]
    fn inflight_is_read_in_id_order_and_charged_exactly() {
        let mut inflight = Inflight::default();
        let cost = delivery_cost(&delivery(1));
        let ids: Vec<u16> = (0..2000u32)
            .map(|i| u16::try_from((i * 7919) % 65535 + 1).unwrap())
            .collect();
        for (n, id) in ids.iter().enumerate() {
            let out = Outbound {
                delivery: delivery(1),
                released: n % 2 == 0,
            };
            assert!(inflight.insert(*id, out).is_none());
        }
        assert_eq!((inflight.len(), inflight.bytes()), (2000, 2000 * cost));
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        assert_eq!(
            inflight.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
            sorted
        );
        for id in ids.iter().step_by(2) {
            assert!(inflight.get(id).is_some_and(|o| o.released));
            assert!(inflight.remove(id).is_some());
            assert!(!inflight.contains_key(id) && inflight.remove(id).is_none());
        }
        assert_eq!((inflight.len(), inflight.bytes()), (1000, 1000 * cost));
        let left: Vec<u16> = inflight.iter().map(|(id, _)| *id).collect();
        assert!(left.windows(2).all(|w| w[0] < w[1]) && left.len() == 1000);
        assert!(
            ids.iter()
                .skip(1)
                .step_by(2)
                .all(|id| inflight.contains_key(id))
        );
    }
}
