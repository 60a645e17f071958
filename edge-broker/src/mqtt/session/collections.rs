//! The persistent parts of a session's state ([`SessionState`](super::SessionState)): small
//! collections ([`Subscriptions`], [`DeliveryQueue`], [`Inflight`], [`InboundQos2`]) with the
//! methods of the std ones they wrap; every change through them is also appended to the journal
//! (see [`crate::state`]) when the session is persistent (a [`SessionLog`] set). They live
//! behind the session's lock, which is what orders a session's records.
//!
//! Invariants:
//! - Only QoS 1/2 deliveries in the queue are recorded; QoS 0 ones are never journaled.
//! - Each queued or in-flight delivery is charged [`delivery_cost`], mirrored into the front
//!   end's total, and given back when it leaves or its collection is dropped.
//! - The in-flight table is hashed by packet id ([`IdHash`]: not keyed, as the broker chooses
//!   the ids) and read in id order.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use edge_proto::mqtt::QoS;

use crate::hub::Delivery;
use crate::state::record::{Record, StoredDelivery, StoredSubscription};

use super::{Outbound, SessionLog};

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

/// A session's subscriptions by full filter text; changes are recorded.
#[derive(Debug, Default)]
pub struct Subscriptions {
    pub(super) map: BTreeMap<String, SubscriptionRecord>,
    bytes: u64,
    pub(super) log: Option<SessionLog>,
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
        let cost = crate::mqtt::limits::subscription_cost(&filter);
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
            self.bytes -= crate::mqtt::limits::subscription_cost(filter);
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
    /// see [`crate::mqtt::limits::subscription_cost`]).
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
pub(super) struct Charge {
    pub(super) bytes: u64,
    pub(super) total: Option<Arc<AtomicU64>>,
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
    pub(super) fn attach(&mut self, total: Arc<AtomicU64>) {
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
    pub(super) items: VecDeque<Delivery>,
    pub(super) charge: Charge,
    pub(super) log: Option<SessionLog>,
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
    pub(super) map: HashMap<u16, Outbound, IdHash>,
    pub(super) charge: Charge,
    pub(super) log: Option<SessionLog>,
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
    pub(super) set: BTreeSet<u16>,
    pub(super) log: Option<SessionLog>,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mqtt::session::tests::delivery;

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
