//! MQTT sessions: what outlives a connection (subscriptions, queued and in-flight messages,
//! QoS 2 state), the registry that finds a session by client id, and session snapshots.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use edge_proto::mqtt::QoS;
use parking_lot::{Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::hub::{Delivery, Mailbox};
use crate::message::Message;
use crate::metrics::front::{DropReason, FrontMetrics};

/// A subscription as the session remembers it (to restore it and to answer UNSUBSCRIBE).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionRecord {
    /// Maximum QoS granted.
    #[serde(with = "crate::message::qos_byte")]
    pub qos: QoS,
    /// MQTT 5 No Local.
    pub no_local: bool,
    /// MQTT 5 Retain As Published.
    pub retain_as_published: bool,
    /// MQTT 5 subscription identifier.
    pub id: Option<u32>,
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
    /// Session Expiry Interval in seconds (`u32::MAX` = never).
    pub expiry_secs: u32,
    /// When the last connection ended (unix ms), while offline.
    pub disconnected_at_ms: Option<u64>,
    /// Subscriptions by full filter text (including any `$share/group/` prefix).
    pub subscriptions: BTreeMap<String, SubscriptionRecord>,
    /// Deliveries not yet sent.
    pub queue: VecDeque<Delivery>,
    /// Sent QoS 1/2 deliveries by packet id.
    pub inflight: BTreeMap<u16, Outbound>,
    /// Last packet id handed out.
    pub last_packet_id: u16,
    /// Packet ids of received QoS 2 publishes waiting for PUBREL.
    pub inbound_qos2: BTreeSet<u16>,
    /// A will waiting for its delay interval.
    pub pending_will: Option<PendingWill>,
    /// The session has ended (clean start took over, or it expired): nothing may resume it.
    pub ended: bool,
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

    /// Locks the session state (a panic elsewhere does not make it unusable).
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

/// A delivery as stored in a snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredDelivery {
    /// The message.
    pub message: Message,
    /// Granted QoS.
    #[serde(with = "crate::message::qos_byte")]
    pub qos: QoS,
    /// RETAIN flag to deliver with.
    pub retain: bool,
    /// Subscription identifiers.
    pub subscription_ids: Vec<u32>,
}

impl StoredDelivery {
    /// Captures a live delivery.
    pub fn from_delivery(delivery: &Delivery) -> StoredDelivery {
        StoredDelivery {
            message: (*delivery.message).clone(),
            qos: delivery.qos,
            retain: delivery.retain,
            subscription_ids: delivery.subscription_ids.clone(),
        }
    }

    /// Turns it back into a live delivery.
    pub fn into_delivery(self) -> Delivery {
        Delivery {
            message: Arc::new(self.message),
            qos: self.qos,
            retain: self.retain,
            subscription_ids: self.subscription_ids,
        }
    }
}

/// A persistent session as saved across broker restarts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionSnapshot {
    /// Client identifier.
    pub client_id: String,
    /// Session Expiry Interval in seconds.
    pub expiry_secs: u32,
    /// When the client went offline (unix ms); `None` if it was online at save time.
    pub disconnected_at_ms: Option<u64>,
    /// Subscriptions by full filter text.
    pub subscriptions: Vec<(String, SubscriptionRecord)>,
    /// In-flight deliveries: packet id, PUBREL sent, delivery.
    pub inflight: Vec<(u16, bool, StoredDelivery)>,
    /// Queued deliveries.
    pub queue: Vec<StoredDelivery>,
    /// QoS 2 packet ids awaiting PUBREL.
    pub inbound_qos2: Vec<u16>,
}

impl SessionSnapshot {
    /// Captures a session's persistent state.
    pub fn capture(session: &Session) -> SessionSnapshot {
        let state = session.lock();
        SessionSnapshot {
            client_id: session.client_id.clone(),
            expiry_secs: state.expiry_secs,
            disconnected_at_ms: state.disconnected_at_ms,
            subscriptions: state
                .subscriptions
                .iter()
                .map(|(filter, record)| (filter.clone(), *record))
                .collect(),
            inflight: state
                .inflight
                .iter()
                .map(|(id, out)| {
                    (
                        *id,
                        out.released,
                        StoredDelivery::from_delivery(&out.delivery),
                    )
                })
                .collect(),
            queue: state
                .queue
                .iter()
                .map(StoredDelivery::from_delivery)
                .collect(),
            inbound_qos2: state.inbound_qos2.iter().copied().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{MessageProperties, Origin};
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
