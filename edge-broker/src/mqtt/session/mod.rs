//! MQTT sessions: what outlives a connection (subscriptions, queued and in-flight messages,
//! QoS 2 state), the registry that finds a session by client id, and how a persistent
//! session records its changes in the state journal.
//!
//! Here: [`Session`] and its [`QueueLimits`], the mutable [`SessionState`] behind the session's
//! lock (besides the collections below: packet ids, deliveries in flight and QoS 2 publishes
//! received, a will waiting for its delay, a parked connection), and the [`Registry`].
//! Invariants:
//! - A session's state changes only under its lock, which is what orders a session's records
//!   in the journal.
//! - What a clean, idle session never fills (`Exchanges`: in flight, inbound QoS 2, a delayed
//!   will) is boxed and made when first needed, recorded and charged like the rest.
//! - A parked connection is taken out and resumed under the lock, so nothing queued for it is
//!   missed by a connection parking.
//!
//! Rooms:
//! - `collections`: the persistent parts of [`SessionState`] ([`Subscriptions`],
//!   [`DeliveryQueue`], [`Inflight`], [`InboundQos2`]), small collections with the methods of
//!   the std ones they wrap, every change through them also appended to the journal; and what
//!   a queued or in-flight delivery is charged ([`delivery_cost`]).
//! - `log`: [`SessionLog`], where a persistent session's records go, and the ticket for those
//!   written so far.

use std::collections::{BTreeSet, HashMap};
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
use crate::state::record::{Record, SessionImage, StoredDelivery};

mod collections;
mod log;

use collections::Charge;
pub use collections::{
    DELIVERY_OVERHEAD, DeliveryQueue, IdHash, IdHasher, InboundQos2, Inflight, SubscriptionRecord,
    Subscriptions, delivery_cost,
};
pub use log::SessionLog;

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

    pub(super) fn delivery(qos: u8) -> Delivery {
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
}
