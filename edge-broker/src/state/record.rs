//! The records of the state journal and the stored forms of messages, deliveries and
//! subscriptions (their postcard layout is the on-disk format: see the module docs of
//! [`crate::state`]; never reorder or change a field, add a variant or a new type instead).

use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::hub::Delivery;
use crate::message::{Message, MessageProperties, Origin};

/// A journal's unit of change. Records are applied in file order; `sid` is the writing
/// process's key of a session (see [`crate::state::model`] for how each one applies).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Record {
    /// 0: defines message `id` of this generation (written before its first reference).
    Message {
        /// Per-generation message id.
        id: u64,
        /// The message.
        message: StoredMessage,
    },
    /// 1: a new, empty session (replaces one with the same client id).
    SessionOpen {
        /// Session key.
        sid: u64,
        /// Client identifier.
        client_id: String,
        /// Session Expiry Interval in seconds (`u32::MAX` = never).
        expiry_secs: u32,
    },
    /// 2: a session's whole state (a checkpoint; replaces one with the same client id).
    SessionImage(SessionImage),
    /// 3: a connection attached to the session (resumed it).
    Online {
        /// Session key.
        sid: u64,
        /// Session Expiry Interval the connection asked for.
        expiry_secs: u32,
    },
    /// 4: the session's connection ended; the session waits offline.
    Offline {
        /// Session key.
        sid: u64,
        /// When (unix ms).
        at_ms: u64,
        /// Session Expiry Interval in force from then on.
        expiry_secs: u32,
    },
    /// 5: the session ended (clean start, expiry, expiry 0); it is gone.
    SessionEnd {
        /// Session key.
        sid: u64,
    },
    /// 6: a subscription was added or replaced.
    Subscribe {
        /// Session key.
        sid: u64,
        /// Full filter text, `$share/group/` prefix included.
        filter: String,
        /// Its options.
        options: StoredSubscription,
    },
    /// 7: a subscription was removed.
    Unsubscribe {
        /// Session key.
        sid: u64,
        /// Full filter text.
        filter: String,
    },
    /// 8: a QoS 1/2 delivery joined the back of the queue.
    Enqueue {
        /// Session key.
        sid: u64,
        /// The delivery.
        delivery: StoredDelivery,
    },
    /// 9: a QoS 1/2 delivery went back to the front of the queue.
    EnqueueFront {
        /// Session key.
        sid: u64,
        /// The delivery.
        delivery: StoredDelivery,
    },
    /// 10: the front QoS 1/2 delivery left the queue (sent, expired or discarded).
    Dequeue {
        /// Session key.
        sid: u64,
    },
    /// 11: the queue's QoS 1/2 deliveries are now exactly these.
    QueueImage {
        /// Session key.
        sid: u64,
        /// The deliveries, front first.
        deliveries: Vec<StoredDelivery>,
    },
    /// 12: a delivery was sent under `packet_id` and awaits its acknowledgement.
    InFlight {
        /// Session key.
        sid: u64,
        /// Packet identifier.
        packet_id: u16,
        /// QoS 2: PUBREC received, PUBREL sent.
        released: bool,
        /// The delivery.
        delivery: StoredDelivery,
    },
    /// 13: QoS 2 delivery `packet_id` got its PUBREC; PUBREL was sent.
    Released {
        /// Session key.
        sid: u64,
        /// Packet identifier.
        packet_id: u16,
    },
    /// 14: delivery `packet_id` is no longer in flight (acknowledged or discarded).
    Completed {
        /// Session key.
        sid: u64,
        /// Packet identifier.
        packet_id: u16,
    },
    /// 15: a QoS 2 publish from the client with `packet_id` awaits its PUBREL.
    InboundQos2 {
        /// Session key.
        sid: u64,
        /// Packet identifier.
        packet_id: u16,
    },
    /// 16: the client's QoS 2 publish `packet_id` is finished (PUBREL, or refused).
    InboundQos2Done {
        /// Session key.
        sid: u64,
        /// Packet identifier.
        packet_id: u16,
    },
    /// 17: message `id` is now its topic's retained message.
    RetainSet {
        /// Per-generation message id.
        id: u64,
    },
    /// 18: the topic has no retained message any more.
    RetainClear {
        /// The topic.
        topic: String,
    },
    /// 19: every session and retained message of the state has an image above this point
    /// in this generation: replay can start at this generation.
    CheckpointDone,
}

/// A session's whole persistent state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionImage {
    /// Session key.
    pub sid: u64,
    /// Client identifier.
    pub client_id: String,
    /// Session Expiry Interval in seconds.
    pub expiry_secs: u32,
    /// When the client went offline (unix ms); `None` while a connection is attached.
    pub disconnected_at_ms: Option<u64>,
    /// Subscriptions by full filter text.
    pub subscriptions: Vec<(String, StoredSubscription)>,
    /// Queued QoS 1/2 deliveries, front first.
    pub queue: Vec<StoredDelivery>,
    /// In-flight deliveries: packet id, PUBREL sent, delivery.
    pub inflight: Vec<(u16, bool, StoredDelivery)>,
    /// QoS 2 packet ids from the client awaiting PUBREL.
    pub inbound_qos2: Vec<u16>,
}

/// A delivery as recorded: the message by per-generation id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredDelivery {
    /// Message id (defined earlier in the same generation).
    pub message: u64,
    /// Granted QoS.
    #[serde(with = "crate::message::qos_byte")]
    pub qos: edge_proto::mqtt::QoS,
    /// RETAIN flag to deliver with.
    pub retain: bool,
    /// Subscription identifiers.
    pub subscription_ids: Vec<u32>,
}

impl StoredDelivery {
    /// The recorded form of `delivery` whose message has id `message`.
    pub fn new(delivery: &Delivery, message: u64) -> StoredDelivery {
        StoredDelivery {
            message,
            qos: delivery.qos,
            retain: delivery.retain,
            subscription_ids: delivery.subscription_ids.clone(),
        }
    }

    /// The live delivery, given the message its id stands for.
    pub fn to_delivery(&self, message: Arc<Message>) -> Delivery {
        Delivery {
            message,
            qos: self.qos,
            retain: self.retain,
            subscription_ids: self.subscription_ids.clone(),
        }
    }
}

/// Subscription options as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSubscription {
    /// Maximum QoS granted.
    #[serde(with = "crate::message::qos_byte")]
    pub qos: edge_proto::mqtt::QoS,
    /// MQTT 5 No Local.
    pub no_local: bool,
    /// MQTT 5 Retain As Published.
    pub retain_as_published: bool,
    /// MQTT 5 subscription identifier.
    pub id: Option<u32>,
}

/// A message as stored, field for field the layout the snapshot files of the first release
/// used (`sessions.bin`, `retained.bin`), so both formats share it; frozen.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StoredMessage {
    /// Topic.
    pub topic: String,
    /// Payload.
    pub payload: Bytes,
    /// QoS published with.
    #[serde(with = "crate::message::qos_byte")]
    pub qos: edge_proto::mqtt::QoS,
    /// RETAIN flag as published.
    pub retain: bool,
    /// Properties.
    pub properties: StoredProperties,
    /// When the broker received it (unix ms).
    pub received_ms: u64,
    /// Protocol it came in on: 0 = MQTT, 1 = NATS.
    pub origin: StoredOrigin,
}

/// Message properties as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StoredProperties {
    /// Payload format indicator.
    pub payload_utf8: Option<bool>,
    /// Message expiry interval in seconds.
    pub expiry_secs: Option<u32>,
    /// Content type.
    pub content_type: Option<String>,
    /// Response topic.
    pub response_topic: Option<String>,
    /// Correlation data.
    pub correlation_data: Option<Bytes>,
    /// User properties in order.
    pub user_properties: Vec<(String, String)>,
}

/// Protocol of origin as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StoredOrigin {
    /// MQTT.
    Mqtt,
    /// NATS.
    Nats,
}

impl From<&Message> for StoredMessage {
    fn from(m: &Message) -> Self {
        let p = &m.properties;
        StoredMessage {
            topic: m.topic.to_string(),
            payload: m.payload.clone(),
            qos: m.qos,
            retain: m.retain,
            properties: StoredProperties {
                payload_utf8: p.payload_utf8,
                expiry_secs: p.expiry_secs,
                content_type: p.content_type.clone(),
                response_topic: p.response_topic.clone(),
                correlation_data: p.correlation_data.clone(),
                user_properties: p.user_properties.clone(),
            },
            received_ms: m.received_ms,
            origin: match m.origin {
                Origin::Mqtt => StoredOrigin::Mqtt,
                Origin::Nats => StoredOrigin::Nats,
            },
        }
    }
}

impl From<StoredMessage> for Message {
    fn from(m: StoredMessage) -> Self {
        let p = m.properties;
        Message {
            topic: m.topic.into(),
            payload: m.payload,
            qos: m.qos,
            retain: m.retain,
            properties: MessageProperties {
                payload_utf8: p.payload_utf8,
                expiry_secs: p.expiry_secs,
                content_type: p.content_type,
                response_topic: p.response_topic,
                correlation_data: p.correlation_data,
                user_properties: p.user_properties,
            },
            received_ms: m.received_ms,
            origin: match m.origin {
                StoredOrigin::Mqtt => Origin::Mqtt,
                StoredOrigin::Nats => Origin::Nats,
            },
            publisher: None,
            nats_subject: None,
        }
    }
}
