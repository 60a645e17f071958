//! The hub: every live subscription of every protocol, and fan-out of published messages to
//! the subscribers' mailboxes.
//!
//! Publishing never blocks on a subscriber: a delivery is pushed into the subscriber's bounded
//! mailbox, which decides (by its own limits) whether to keep it. A publisher that can pace
//! its input ([`Hub::publish_paced`]) may instead get a delivery back from a full mailbox
//! ([`Offer::Full`]) with the mailbox's [`Room`] to wait on: the waiting (bounded in time)
//! happens in the publisher's own task, never under the hub's lock.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use edge_proto::mqtt::{QoS, topic};
use parking_lot::RwLock;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::message::Message;
use crate::router::{Filter, SubscriptionTree};

/// One message on its way to one subscriber.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The message (shared by all its deliveries).
    pub message: Arc<Message>,
    /// QoS granted for this delivery: min(published, subscribed).
    pub qos: QoS,
    /// RETAIN flag to deliver with.
    pub retain: bool,
    /// Identifiers of the matching subscriptions (MQTT 5).
    pub subscription_ids: Vec<u32>,
}

/// Where deliveries for one subscriber go.
pub trait Mailbox: Send + Sync + std::fmt::Debug {
    /// Offers a delivery; returns false when the mailbox refused it (full, offline QoS 0).
    fn deliver(&self, delivery: Delivery) -> bool;

    /// Offers a delivery whose publisher can wait for room: a mailbox that lets publishers
    /// wait hands it back ([`Offer::Full`]) instead of dropping it. By default, as
    /// [`Mailbox::deliver`].
    fn offer(&self, delivery: Delivery) -> Offer {
        if self.deliver(delivery) {
            Offer::Taken
        } else {
            Offer::Refused
        }
    }

    /// Where a publisher handed an [`Offer::Full`] waits (`None`: this mailbox never hands
    /// one back).
    fn room(&self) -> Option<&Room> {
        None
    }
}

/// What a mailbox did with an offered delivery ([`Mailbox::offer`]).
#[derive(Debug)]
pub enum Offer {
    /// Kept.
    Taken,
    /// Refused for good (a drop is counted by the mailbox).
    Refused,
    /// Full for now: the delivery is handed back; the publisher may wait until the mailbox's
    /// [`Room`] has moved past `seen` and offer it again, but not past `until`.
    Full {
        /// The delivery, not kept.
        delivery: Delivery,
        /// [`Room::seen`] when it was refused (taken under the mailbox's lock).
        seen: u64,
        /// The mailbox's wait bound after the last room it made ([`Room::until`]).
        until: Instant,
    },
}

/// A full mailbox's signal to the publishers waiting for it: its consumer calls
/// [`Room::made`] when it takes deliveries out; a publisher waits with [`Room::since`].
///
/// Invariant: a waiter that saw `seen` is woken by every `made` after it: `made` bumps the
/// count before it looks for waiters, and a waiter registers before it compares the count
/// (all `SeqCst`), so one of the two sees the other.
#[derive(Debug)]
pub struct Room {
    /// Times room was made.
    made: AtomicU64,
    /// When room was last made (or the room was created), ms on [`Room`]'s monotonic clock.
    last_ms: AtomicU64,
    /// The mailbox took a delivery into an empty queue since room was last made: it was idle,
    /// not stalled ([`Room::had_room`]).
    idle: AtomicBool,
    /// A publisher waits: the next [`Room::made`] wakes it.
    wanted: AtomicBool,
    notify: Notify,
}

impl Default for Room {
    fn default() -> Room {
        Room {
            made: AtomicU64::new(0),
            last_ms: AtomicU64::new(monotonic_ms()),
            idle: AtomicBool::new(false),
            wanted: AtomicBool::new(false),
            notify: Notify::new(),
        }
    }
}

/// Milliseconds since the first call, on a monotonic clock.
fn monotonic_ms() -> u64 {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    let origin = *ORIGIN.get_or_init(Instant::now);
    u64::try_from(origin.elapsed().as_millis()).unwrap_or(u64::MAX)
}

impl Room {
    /// The count to wait past (read under the mailbox's lock when refusing).
    pub fn seen(&self) -> u64 {
        self.made.load(Ordering::SeqCst)
    }

    /// The consumer took deliveries out: wakes waiting publishers.
    pub fn made(&self) {
        self.made.fetch_add(1, Ordering::SeqCst);
        self.last_ms.store(monotonic_ms(), Ordering::Relaxed);
        self.idle.store(false, Ordering::Relaxed);
        if self.wanted.load(Ordering::SeqCst) && self.wanted.swap(false, Ordering::SeqCst) {
            self.notify.notify_waiters();
        }
    }

    /// The mailbox took a delivery into an empty queue: it had room then, though its consumer
    /// had nothing to take out for a while. The wait bound's clock restarts when that queue is
    /// next found full ([`Room::until`]), so an idle subscriber that a burst fills is waited
    /// for, not taken for stalled. No clock is read here: this is on every delivery's path.
    pub fn had_room(&self) {
        if !self.idle.load(Ordering::Relaxed) {
            self.idle.store(true, Ordering::Relaxed);
        }
    }

    /// Until when a publisher may wait: `wait` after room was last made, or after the queue,
    /// empty since then, was first found full. A consumer that stopped taking deliveries out
    /// holds its publishers at most `wait` after it stopped, however many publishes and
    /// publishers meet it full.
    pub fn until(&self, wait: Duration) -> Instant {
        if self.idle.swap(false, Ordering::Relaxed) {
            self.last_ms.store(monotonic_ms(), Ordering::Relaxed);
        }
        let idle = monotonic_ms().saturating_sub(self.last_ms.load(Ordering::Relaxed));
        let now = Instant::now();
        now.checked_sub(Duration::from_millis(idle)).unwrap_or(now) + wait
    }

    /// Resolves once room was made after `seen`.
    pub async fn since(&self, seen: u64) {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            self.wanted.store(true, Ordering::SeqCst);
            if self.made.load(Ordering::SeqCst) != seen {
                return;
            }
            notified.await;
        }
    }
}

/// What offering a [`Waiting`] delivery again did.
#[derive(Debug)]
pub enum Retried {
    /// Kept.
    Kept,
    /// Refused for good (dropped and counted by the mailbox, e.g. its wait bound passed).
    Refused,
    /// Still full: wait again (with the mailbox's current `seen` and `until`).
    Full(Waiting),
}

/// Most deliveries of one publish handed back to wait ([`Hub::publish_paced`]); further full
/// mailboxes drop at once. Bounds what a waiting publisher holds (a publish matching hundreds
/// of full subscribers) to 16 × ~80 bytes.
pub const MAX_WAITING: usize = 16;

/// A delivery a full mailbox handed back to its publisher ([`Hub::publish_paced`]).
#[derive(Debug)]
pub struct Waiting {
    /// The delivery, not yet kept.
    pub delivery: Delivery,
    /// The mailbox that was full.
    pub mailbox: Arc<dyn Mailbox>,
    /// The mailbox's [`Room::seen`] when it refused.
    pub seen: u64,
    /// Past this, the delivery is given up ([`Offer::Full`]'s `until`).
    pub until: Instant,
}

impl Waiting {
    /// Offers the delivery again.
    pub fn retry(self) -> Retried {
        match self.mailbox.offer(self.delivery) {
            Offer::Taken => Retried::Kept,
            Offer::Refused => Retried::Refused,
            Offer::Full {
                delivery,
                seen,
                until,
            } => Retried::Full(Waiting {
                delivery,
                mailbox: self.mailbox,
                seen,
                until,
            }),
        }
    }

    /// Stops waiting: the delivery is offered one last time without waiting (dropped and
    /// counted if still full). Returns whether it was kept.
    pub fn give_up(self) -> bool {
        self.mailbox.deliver(self.delivery)
    }

    /// Resolves once the mailbox made room since it refused. The future owns what it waits
    /// on (a reference to the mailbox), so a publisher can keep it beside the delivery while
    /// it polls its other waits.
    pub fn room(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let (mailbox, seen) = (Arc::clone(&self.mailbox), self.seen);
        async move {
            if let Some(room) = mailbox.room() {
                room.since(seen).await;
            }
        }
    }
}

/// A subscription as the hub stores it.
#[derive(Debug, Clone)]
pub struct SubEntry {
    /// Maximum QoS granted.
    pub qos: QoS,
    /// Do not deliver the subscriber's own publications (MQTT 5 No Local).
    pub no_local: bool,
    /// Keep the RETAIN flag of live messages (MQTT 5 Retain As Published).
    pub retain_as_published: bool,
    /// Subscription identifier (MQTT 5).
    pub id: Option<u32>,
    /// Where matching messages go.
    pub mailbox: Arc<dyn Mailbox>,
}

/// Outcome of one publish through the hub.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FanOut {
    /// Deliveries accepted by mailboxes.
    pub delivered: usize,
    /// Deliveries refused by mailboxes (full queues, offline QoS 0).
    pub refused: usize,
    /// Deliveries handed back to the publisher to wait for room ([`Hub::publish_paced`]).
    pub waiting: usize,
}

/// All subscriptions, shared by the MQTT and NATS front ends.
#[derive(Debug, Default)]
pub struct Hub {
    tree: RwLock<SubscriptionTree<u64, SubEntry>>,
    /// Bumped by every subscribe and unsubscribe (see [`Hub::generation`]).
    generation: AtomicU64,
}

impl Hub {
    /// An empty hub.
    pub fn new() -> Hub {
        Hub::default()
    }

    /// Adds or replaces `subscriber`'s subscription; returns whether one existed before.
    pub fn subscribe(
        &self,
        filter: &Filter,
        group: Option<&str>,
        subscriber: u64,
        entry: SubEntry,
    ) -> bool {
        let mut tree = self.tree.write();
        self.generation.fetch_add(1, Ordering::AcqRel);
        tree.insert(filter, group, subscriber, entry).is_some()
    }

    /// Removes `subscriber`'s subscription; returns whether it existed.
    pub fn unsubscribe(&self, filter: &Filter, group: Option<&str>, subscriber: u64) -> bool {
        let mut tree = self.tree.write();
        self.generation.fetch_add(1, Ordering::AcqRel);
        tree.remove(filter, group, &subscriber).is_some()
    }

    /// Changes whenever a subscription is added or removed: an answer of
    /// [`Hub::has_subscribers`] taken after reading it holds while it stays the same.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Whether any subscription matches `topic` (MQTT form).
    pub fn has_subscribers(&self, topic: &str) -> bool {
        let tree = self.tree.read();
        let mut any = false;
        with_levels(topic, |levels| tree.matches(levels, |_| any = true));
        any
    }

    /// The subscriptions that a message on any topic `<prefix>/<level>` reaches, whatever
    /// its last level is: calls `visit` with each one's subscriber and entry and returns
    /// true, when that answer is the same for every such topic (kept, it holds while
    /// [`Hub::generation`] stays the same). False when it is not: a subscription names a level
    /// right below `prefix`, or a share group matches (it picks a member per message).
    /// Reply subjects (`_INBOX.<id>.<n>`) differ in their last token only.
    pub fn reaches_any_last(&self, prefix: &str, mut visit: impl FnMut(u64, &SubEntry)) -> bool {
        let tree = self.tree.read();
        with_levels(prefix, |levels| {
            tree.matches_any_last(levels, |key, entry| visit(*key, entry))
        })
    }

    /// Number of subscriptions.
    pub fn len(&self) -> usize {
        self.tree.read().len()
    }

    /// Whether there are no subscriptions.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Delivers `message` to every matching subscriber.
    ///
    /// A subscriber with several matching (non-shared) subscriptions gets one copy at the
    /// highest granted QoS carrying all their subscription identifiers (MQTT 5 §3.3.4); each
    /// matching share group delivers to one of its members.
    pub fn publish(&self, message: &Arc<Message>) -> FanOut {
        self.fan_out(message, None)
    }

    /// As [`Hub::publish`], for a publisher that can pace its input: a full mailbox that
    /// lets publishers wait hands its delivery back into `waiting` instead of dropping it
    /// (while `waiting` holds fewer than [`MAX_WAITING`]; beyond, it is dropped at once).
    pub fn publish_paced(&self, message: &Arc<Message>, waiting: &mut Vec<Waiting>) -> FanOut {
        self.fan_out(message, Some(waiting))
    }

    fn fan_out(&self, message: &Arc<Message>, waiting: Option<&mut Vec<Waiting>>) -> FanOut {
        let tree = self.tree.read();
        let mut matched = Matched::default();
        let mut shared: Vec<(Delivery, Arc<dyn Mailbox>)> = Vec::new();
        with_levels(&message.topic, |levels| {
            tree.matches(levels, |m| {
                let entry = m.value;
                if m.group.is_none() && entry.no_local && message.publisher == Some(*m.key) {
                    return;
                }
                let delivery = Delivery {
                    message: Arc::clone(message),
                    qos: entry.qos.min(message.qos),
                    retain: entry.retain_as_published && message.retain,
                    subscription_ids: entry.id.into_iter().collect(),
                };
                let mailbox = Arc::clone(&entry.mailbox);
                match m.group {
                    Some(_) => shared.push((delivery, mailbox)),
                    None => matched.push(*m.key, delivery, mailbox),
                }
            })
        });
        drop(tree);
        offer_all(matched.merged().chain(shared), waiting)
    }

    /// Where every message on `topic` from `publisher` goes while [`Hub::generation`] stays
    /// what it is now ([`LocalRoute`]): asked once per topic by a publishing connection, used
    /// by [`Hub::publish_routed`] for each of its messages.
    pub fn local_route(&self, topic: &str, publisher: Option<u64>) -> LocalRoute {
        // Read before the tree: a change since makes the route stale, never wrong.
        let generation = self.generation();
        let tree = self.tree.read();
        let mut found: Vec<(u64, Target)> = Vec::new();
        // Per message: a share group (it picks a member each time), or more matching
        // subscriptions than a route lists subscribers (then none is collected beyond).
        let mut each_message = false;
        with_levels(topic, |levels| {
            tree.matches(levels, |m| {
                if m.group.is_some() || found.len() == MAX_ROUTE_TARGETS {
                    each_message = true;
                } else if !(m.value.no_local && publisher == Some(*m.key)) {
                    found.push((*m.key, Target::of(m.value)));
                }
            })
        });
        drop(tree);
        // As `Matched::merged`: one target per subscriber, in subscriber order, its
        // subscriptions' identifiers in match order.
        found.sort_by_key(|(subscriber, _)| *subscriber);
        let mut targets: Vec<(u64, Target)> = Vec::with_capacity(found.len());
        for (subscriber, target) in found {
            match targets.last_mut() {
                Some((last, into)) if *last == subscriber => into.merge(target),
                _ => targets.push((subscriber, target)),
            }
        }
        let targets = if each_message {
            Targets::EachMessage
        } else if targets.is_empty() {
            Targets::Nobody
        } else {
            Targets::Fixed(targets.into_iter().map(|(_, target)| target).collect())
        };
        LocalRoute {
            generation,
            targets,
        }
    }

    /// As [`Hub::publish`] (with `waiting`: [`Hub::publish_paced`]) for a message on the
    /// topic `route` was asked for, by its publisher: delivered to the route's targets while
    /// it is current, by the tree as always when it is stale or depends on the message.
    pub fn publish_routed(
        &self,
        route: &LocalRoute,
        message: &Arc<Message>,
        waiting: Option<&mut Vec<Waiting>>,
    ) -> FanOut {
        match &route.targets {
            Targets::Fixed(targets) if route.generation == self.generation() => {
                let deliveries = targets.iter().filter_map(|t| {
                    let mailbox = t.mailbox.upgrade()?;
                    Some((t.delivery(message), mailbox))
                });
                offer_all(deliveries, waiting)
            }
            Targets::Nobody if route.generation == self.generation() => FanOut::default(),
            _ => self.fan_out(message, waiting),
        }
    }
}

/// Most subscriptions a [`LocalRoute`] is made of; a topic matching more is matched per
/// message.
const MAX_ROUTE_TARGETS: usize = 8;

/// Where the messages one publisher sends on one topic go, decided by the subscription tree
/// once for a hub generation ([`Hub::local_route`]): a connection that repeats its topics
/// keeps one per topic and its messages skip the tree ([`Hub::publish_routed`]). It holds
/// its subscribers' mailboxes weakly: a stale route (the generation moved) is never used, and
/// it keeps no departed subscriber's queue alive.
#[derive(Debug)]
pub struct LocalRoute {
    generation: u64,
    targets: Targets,
}

impl LocalRoute {
    /// The hub generation the route was decided under.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether a message on the topic reaches anyone (a route that depends on the message
    /// may: a share group, or more subscriptions than a route is made of).
    pub fn anyone(&self) -> bool {
        !matches!(self.targets, Targets::Nobody)
    }
}

#[derive(Debug)]
enum Targets {
    /// No subscription matches.
    Nobody,
    /// These subscribers, in subscriber order (of at most [`MAX_ROUTE_TARGETS`] subscriptions).
    Fixed(Box<[Target]>),
    /// A share group matches (it picks a member per message), or too many subscriptions: the
    /// tree decides for each message.
    EachMessage,
}

/// One subscriber of a [`LocalRoute`]: its matching subscriptions merged.
#[derive(Debug)]
struct Target {
    /// The highest QoS its subscriptions grant (a delivery gets the lower of it and the
    /// message's: the highest of each subscription's lower).
    qos: QoS,
    /// Whether one of them keeps the RETAIN flag.
    retain_as_published: bool,
    /// Their identifiers, in match order.
    ids: Vec<u32>,
    mailbox: std::sync::Weak<dyn Mailbox>,
}

impl Target {
    fn of(entry: &SubEntry) -> Target {
        Target {
            qos: entry.qos,
            retain_as_published: entry.retain_as_published,
            ids: entry.id.into_iter().collect(),
            mailbox: Arc::downgrade(&entry.mailbox),
        }
    }

    fn merge(&mut self, other: Target) {
        self.qos = self.qos.max(other.qos);
        self.retain_as_published |= other.retain_as_published;
        self.ids.extend(other.ids);
    }

    /// What `Hub::fan_out` delivers this subscriber of `message`.
    fn delivery(&self, message: &Arc<Message>) -> Delivery {
        Delivery {
            message: Arc::clone(message),
            qos: self.qos.min(message.qos),
            retain: self.retain_as_published && message.retain,
            subscription_ids: self.ids.clone(),
        }
    }
}

/// Offers each delivery to its mailbox (see [`Hub::publish_paced`] for `waiting`).
fn offer_all(
    deliveries: impl Iterator<Item = (Delivery, Arc<dyn Mailbox>)>,
    mut waiting: Option<&mut Vec<Waiting>>,
) -> FanOut {
    let mut fan_out = FanOut::default();
    for (delivery, mailbox) in deliveries {
        let Some(waiting) = waiting.as_deref_mut() else {
            if mailbox.deliver(delivery) {
                fan_out.delivered += 1;
            } else {
                fan_out.refused += 1;
            }
            continue;
        };
        match mailbox.offer(delivery) {
            Offer::Taken => fan_out.delivered += 1,
            Offer::Refused => fan_out.refused += 1,
            Offer::Full {
                delivery,
                seen,
                until,
            } => {
                let one = Waiting {
                    delivery,
                    mailbox,
                    seen,
                    until,
                };
                if waiting.len() < MAX_WAITING {
                    fan_out.waiting += 1;
                    waiting.push(one);
                } else if one.give_up() {
                    fan_out.delivered += 1;
                } else {
                    fan_out.refused += 1;
                }
            }
        }
    }
    fan_out
}

/// The non-shared matches of one publish. The first is kept inline: most topics have one
/// subscriber, and then nothing is allocated.
#[derive(Default)]
struct Matched {
    first: Option<(u64, Delivery, Arc<dyn Mailbox>)>,
    more: Vec<(u64, Delivery, Arc<dyn Mailbox>)>,
}

impl Matched {
    fn push(&mut self, subscriber: u64, delivery: Delivery, mailbox: Arc<dyn Mailbox>) {
        if self.first.is_none() {
            self.first = Some((subscriber, delivery, mailbox));
        } else {
            self.more.push((subscriber, delivery, mailbox));
        }
    }

    /// One delivery per subscriber, in subscriber order: a subscriber with several matching
    /// subscriptions gets the highest QoS, RETAIN if any asks for it, and every identifier.
    fn merged(self) -> impl Iterator<Item = (Delivery, Arc<dyn Mailbox>)> {
        let Matched { first, mut more } = self;
        let mut merged: Vec<(u64, Delivery, Arc<dyn Mailbox>)> = Vec::new();
        let single = if more.is_empty() {
            first
        } else {
            if let Some(first) = first {
                more.insert(0, first);
            }
            // Stable: a subscriber's identifiers stay in match order.
            more.sort_by_key(|(subscriber, ..)| *subscriber);
            for (subscriber, delivery, mailbox) in more {
                match merged.last_mut() {
                    Some((last, into, _)) if *last == subscriber => {
                        into.qos = into.qos.max(delivery.qos);
                        into.retain |= delivery.retain;
                        into.subscription_ids.extend(delivery.subscription_ids);
                    }
                    _ => merged.push((subscriber, delivery, mailbox)),
                }
            }
            None
        };
        single
            .into_iter()
            .chain(merged)
            .map(|(_, delivery, mailbox)| (delivery, mailbox))
    }
}

/// Calls `f` with the levels of `topic` (split at `/`), on the stack for up to 16 levels.
fn with_levels<R>(topic: &str, f: impl FnOnce(&[&str]) -> R) -> R {
    const ON_STACK: usize = 16;
    let mut stack = [""; ON_STACK];
    let mut n = 0;
    for level in topic::levels(topic) {
        if n == ON_STACK {
            let levels: Vec<&str> = topic::levels(topic).collect();
            return f(&levels);
        }
        stack[n] = level;
        n += 1;
    }
    f(&stack[..n])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{MessageProperties, Origin};
    use parking_lot::Mutex;

    #[derive(Debug, Default)]
    struct Collect(Mutex<Vec<Delivery>>);
    impl Mailbox for Collect {
        fn deliver(&self, delivery: Delivery) -> bool {
            self.0.lock().push(delivery);
            true
        }
    }

    fn message(topic: &str, qos: u8, publisher: Option<u64>) -> Arc<Message> {
        let qos = QoS::from_u8(qos).unwrap();
        Arc::new(Message {
            topic: topic.into(),
            payload: bytes::Bytes::from_static(b"x"),
            qos,
            retain: true,
            properties: MessageProperties::default(),
            received_ms: 0,
            origin: Origin::Mqtt,
            publisher,
            nats_subject: None,
        })
    }

    fn entry(qos: u8, id: Option<u32>, mailbox: &Arc<Collect>) -> SubEntry {
        let qos = QoS::from_u8(qos).unwrap();
        SubEntry {
            qos,
            no_local: false,
            retain_as_published: false,
            id,
            mailbox: Arc::clone(mailbox) as Arc<dyn Mailbox>,
        }
    }

    #[test]
    fn overlapping_subscriptions_deliver_once_at_max_qos_with_all_ids() {
        let hub = Hub::new();
        let inbox = Arc::new(Collect::default());
        hub.subscribe(
            &Filter::mqtt("a/+").unwrap(),
            None,
            1,
            entry(0, Some(7), &inbox),
        );
        hub.subscribe(
            &Filter::mqtt("a/#").unwrap(),
            None,
            1,
            entry(1, Some(9), &inbox),
        );
        let out = hub.publish(&message("a/b", 2, None));
        assert_eq!(out.delivered, 1);
        let got = inbox.0.lock();
        assert_eq!(got[0].qos, QoS::AtLeastOnce);
        let mut ids = got[0].subscription_ids.clone();
        ids.sort();
        assert_eq!(ids, vec![7, 9]);
        assert!(
            !got[0].retain,
            "retain is cleared unless retain-as-published"
        );
    }

    #[test]
    fn many_subscribers_each_get_one_merged_copy_in_subscriber_order() {
        let hub = Hub::new();
        let inbox = Arc::new(Collect::default());
        // Subscribers 0..50 in reverse, each with an exact and a wildcard subscription.
        for key in (0..50u64).rev() {
            let id = u32::try_from(key).unwrap();
            hub.subscribe(
                &Filter::mqtt("s/t").unwrap(),
                None,
                key,
                entry(0, Some(id), &inbox),
            );
            hub.subscribe(
                &Filter::mqtt("s/#").unwrap(),
                None,
                key,
                entry(1, Some(100 + id), &inbox),
            );
        }
        assert_eq!(hub.publish(&message("s/t", 1, None)).delivered, 50);
        let got = inbox.0.lock();
        let ids: Vec<Vec<u32>> = got
            .iter()
            .map(|d| {
                let mut ids = d.subscription_ids.clone();
                ids.sort();
                ids
            })
            .collect();
        let expected: Vec<Vec<u32>> = (0..50).map(|i| vec![i, 100 + i]).collect();
        assert_eq!(
            ids, expected,
            "one copy per subscriber, in key order, with both ids"
        );
        assert!(got.iter().all(|d| d.qos == QoS::AtLeastOnce));
    }

    /// A mailbox with room for `room` deliveries, that lets publishers wait.
    #[derive(Debug)]
    struct Bounded {
        kept: Mutex<Vec<Delivery>>,
        capacity: Mutex<usize>,
        room: Room,
    }
    impl Bounded {
        fn new(capacity: usize) -> Arc<Bounded> {
            Arc::new(Bounded {
                kept: Mutex::default(),
                capacity: Mutex::new(capacity),
                room: Room::default(),
            })
        }
    }
    impl Mailbox for Bounded {
        fn deliver(&self, delivery: Delivery) -> bool {
            matches!(self.offer(delivery), Offer::Taken)
        }
        fn offer(&self, delivery: Delivery) -> Offer {
            let mut kept = self.kept.lock();
            if kept.len() < *self.capacity.lock() {
                kept.push(delivery);
                Offer::Taken
            } else {
                Offer::Full {
                    delivery,
                    seen: self.room.seen(),
                    until: self.room.until(Duration::from_secs(1)),
                }
            }
        }
        fn room(&self) -> Option<&Room> {
            Some(&self.room)
        }
    }

    #[test]
    fn a_waiting_delivery_fits_its_share_of_the_memory_budget() {
        // The budget charges 128 B per waiting delivery: room for the Vec's growth.
        assert!(std::mem::size_of::<Waiting>() <= 96);
    }

    #[tokio::test]
    async fn a_paced_publish_hands_back_what_full_mailboxes_refuse() {
        let hub = Hub::new();
        let fast = Arc::new(Collect::default());
        let slow = Bounded::new(0);
        hub.subscribe(&Filter::mqtt("t").unwrap(), None, 1, entry(0, None, &fast));
        let mut slow_entry = entry(0, None, &fast);
        slow_entry.mailbox = Arc::clone(&slow) as Arc<dyn Mailbox>;
        hub.subscribe(&Filter::mqtt("t").unwrap(), None, 2, slow_entry);
        // Not paced: refused at once.
        let out = hub.publish(&message("t", 0, None));
        assert_eq!((out.delivered, out.refused, out.waiting), (1, 1, 0));
        // Paced: handed back, then kept once the mailbox made room.
        let mut waiting = Vec::new();
        let out = hub.publish_paced(&message("t", 0, None), &mut waiting);
        assert_eq!((out.delivered, out.refused, out.waiting), (1, 0, 1));
        let one = waiting.pop().unwrap();
        let Retried::Full(one) = one.retry() else {
            panic!("still full");
        };
        *slow.capacity.lock() = 1;
        slow.room.made();
        one.room().await;
        assert!(matches!(one.retry(), Retried::Kept));
        assert_eq!(slow.kept.lock().len(), 1);
        assert_eq!(fast.0.lock().len(), 2);
    }

    #[test]
    fn no_local_skips_the_publisher_only() {
        let hub = Hub::new();
        let mine = Arc::new(Collect::default());
        let other = Arc::new(Collect::default());
        let mut own = entry(1, None, &mine);
        own.no_local = true;
        hub.subscribe(&Filter::mqtt("t").unwrap(), None, 1, own);
        hub.subscribe(&Filter::mqtt("t").unwrap(), None, 2, entry(1, None, &other));
        assert_eq!(hub.publish(&message("t", 1, Some(1))).delivered, 1);
        assert!(mine.0.lock().is_empty());
        assert_eq!(other.0.lock().len(), 1);
    }

    #[test]
    fn unsubscribe_stops_delivery() {
        let hub = Hub::new();
        let inbox = Arc::new(Collect::default());
        let filter = Filter::mqtt("x/#").unwrap();
        assert!(!hub.subscribe(&filter, None, 3, entry(0, None, &inbox)));
        assert!(hub.subscribe(&filter, None, 3, entry(1, None, &inbox)));
        assert!(hub.unsubscribe(&filter, None, 3));
        assert_eq!(hub.publish(&message("x/y", 0, None)), FanOut::default());
        assert!(hub.is_empty());
    }

    #[test]
    fn generation_moves_with_every_subscription_change() {
        let hub = Hub::new();
        let inbox = Arc::new(Collect::default());
        let filter = Filter::mqtt("a/+/c").unwrap();
        let g0 = hub.generation();
        assert!(!hub.has_subscribers("a/b/c"));
        hub.subscribe(&filter, None, 1, entry(0, None, &inbox));
        let g1 = hub.generation();
        assert_ne!(g0, g1);
        assert!(hub.has_subscribers("a/b/c"));
        assert!(!hub.has_subscribers("a/b"));
        hub.unsubscribe(&filter, None, 1);
        assert_ne!(hub.generation(), g1);
        assert!(!hub.has_subscribers("a/b/c"));
    }

    #[test]
    fn topics_deeper_than_the_stack_buffer_match_too() {
        let hub = Hub::new();
        let inbox = Arc::new(Collect::default());
        let deep: Vec<String> = (0..40).map(|i| format!("l{i}")).collect();
        let topic = deep.join("/");
        hub.subscribe(
            &Filter::mqtt(&topic).unwrap(),
            None,
            1,
            entry(0, None, &inbox),
        );
        hub.subscribe(
            &Filter::mqtt("l0/#").unwrap(),
            None,
            2,
            entry(0, None, &inbox),
        );
        assert!(hub.has_subscribers(&topic));
        assert_eq!(hub.publish(&message(&topic, 0, None)).delivered, 2);
        let deeper = message(&format!("{topic}/more"), 0, None);
        assert_eq!(
            hub.publish(&deeper).delivered,
            1,
            "only l0/# matches one level deeper"
        );
        assert!(!hub.has_subscribers("l1/l2"));
    }

    /// One subscriber's deliveries, as compared: (QoS, RETAIN, identifiers).
    fn seen(inbox: &Collect) -> Vec<(QoS, bool, Vec<u32>)> {
        let got = inbox.0.lock();
        got.iter()
            .map(|d| (d.qos, d.retain, d.subscription_ids.clone()))
            .collect()
    }

    type Sub = (usize, u64, u8, bool, bool, Option<u32>);

    /// Two hubs with the same subscriptions (each subscriber its own mailbox per hub).
    fn twin_hubs(subs: &[Sub]) -> [(Hub, Vec<Arc<Collect>>); 2] {
        const FILTERS: [&str; 7] = ["a/b", "a/+", "a/#", "#", "+/b", "x/y", "a/b/c"];
        std::array::from_fn(|_| {
            let hub = Hub::new();
            let inboxes: Vec<Arc<Collect>> = (0..4).map(|_| Arc::default()).collect();
            for &(filter, subscriber, qos, no_local, rap, id) in subs {
                let mut e = entry(qos, id, &inboxes[subscriber as usize]);
                e.no_local = no_local;
                e.retain_as_published = rap;
                hub.subscribe(&Filter::mqtt(FILTERS[filter]).unwrap(), None, subscriber, e);
            }
            (hub, inboxes)
        })
    }

    proptest::proptest! {
        /// A message delivered by a route ([`Hub::publish_routed`]) reaches exactly whom the
        /// tree delivers it to, with the same QoS, RETAIN and identifiers, in the same order:
        /// overlapping subscriptions, No Local, Retain As Published, and more matching
        /// subscriptions than a route is made of.
        #[test]
        fn a_route_delivers_what_the_tree_delivers(
            subs in proptest::collection::vec(
                (0usize..7, 0u64..4, 0u8..3, proptest::bool::ANY, proptest::bool::ANY,
                 proptest::option::of(1u32..5)),
                0..12,
            ),
            topic in proptest::sample::select(vec!["a/b", "a/c", "x/y", "a/b/c"]),
            qos in 0u8..3,
            retain in proptest::bool::ANY,
            publisher in proptest::option::of(0u64..4),
        ) {
            let [(tree_hub, by_tree), (route_hub, by_route)] = twin_hubs(&subs);
            let mut m = (*message(topic, qos, publisher)).clone();
            m.retain = retain;
            let m = Arc::new(m);
            let want = tree_hub.publish(&m);
            let route = route_hub.local_route(topic, publisher);
            proptest::prop_assert_eq!(route.anyone(), want.delivered > 0);
            let got = route_hub.publish_routed(&route, &m, None);
            proptest::prop_assert_eq!(got, want);
            for (a, b) in by_tree.iter().zip(&by_route) {
                proptest::prop_assert_eq!(seen(a), seen(b));
            }
        }
    }

    /// A route is used only while the hub's subscriptions are what they were: a subscriber
    /// that arrives after it was made gets the next message, one that leaves does not.
    #[test]
    fn a_stale_route_is_not_used() {
        let hub = Hub::new();
        let (one, two) = (Arc::new(Collect::default()), Arc::new(Collect::default()));
        hub.subscribe(&Filter::mqtt("a/+").unwrap(), None, 1, entry(1, None, &one));
        let route = hub.local_route("a/b", None);
        assert!(matches!(&route.targets, Targets::Fixed(t) if t.len() == 1));
        hub.subscribe(&Filter::mqtt("a/b").unwrap(), None, 2, entry(1, None, &two));
        hub.publish_routed(&route, &message("a/b", 1, None), None);
        assert_eq!((one.0.lock().len(), two.0.lock().len()), (1, 1));
        let route = hub.local_route("a/b", None);
        hub.unsubscribe(&Filter::mqtt("a/+").unwrap(), None, 1);
        hub.publish_routed(&route, &message("a/b", 1, None), None);
        assert_eq!((one.0.lock().len(), two.0.lock().len()), (1, 2));
        // Nobody, then someone.
        let empty = Hub::new();
        let nobody = empty.local_route("a/b", None);
        assert!(!nobody.anyone());
        empty.subscribe(&Filter::mqtt("#").unwrap(), None, 1, entry(0, None, &one));
        assert_eq!(
            empty
                .publish_routed(&nobody, &message("a/b", 0, None), None)
                .delivered,
            1
        );
    }

    /// A share group picks a member per message, so a route to it is left to the tree.
    #[test]
    fn a_share_group_is_matched_per_message() {
        let hub = Hub::new();
        let (one, two) = (Arc::new(Collect::default()), Arc::new(Collect::default()));
        let filter = Filter::mqtt("a/b").unwrap();
        hub.subscribe(&filter, Some("g"), 1, entry(1, None, &one));
        hub.subscribe(&filter, Some("g"), 2, entry(1, None, &two));
        let route = hub.local_route("a/b", None);
        assert!(route.anyone() && matches!(route.targets, Targets::EachMessage));
        for _ in 0..4 {
            assert_eq!(
                hub.publish_routed(&route, &message("a/b", 1, None), None)
                    .delivered,
                1
            );
        }
        assert_eq!(one.0.lock().len() + two.0.lock().len(), 4);
    }
}
