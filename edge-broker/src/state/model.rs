//! The state a replay rebuilds: persistent sessions by client id and retained messages.
//!
//! [`StateModel::apply`] is lenient by design: a record about a session or message it does not
//! know is skipped (and counted), never an error. That is what makes a checkpoint's fuzzy
//! images correct (records of a session written before its image in the same generation
//! meet either the older state, which the image then replaces, or nothing) and what keeps
//! a damaged file from stopping a start.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use crate::hub::Delivery;
use crate::message::Message;

use super::record::{Record, SessionImage, StoredDelivery, StoredSubscription};

/// A persistent session as replayed.
#[derive(Debug, Clone, Default)]
pub struct ModelSession {
    /// Session Expiry Interval in seconds (`u32::MAX` = never).
    pub expiry_secs: u32,
    /// When the client went offline (unix ms); `None` if a connection was attached when the
    /// state was written (it went offline when that process stopped).
    pub disconnected_at_ms: Option<u64>,
    /// Subscriptions by full filter text.
    pub subscriptions: BTreeMap<String, StoredSubscription>,
    /// Queued QoS 1/2 deliveries, front first.
    pub queue: VecDeque<Delivery>,
    /// In-flight deliveries by packet id, with "PUBREL sent".
    pub inflight: BTreeMap<u16, (bool, Delivery)>,
    /// QoS 2 packet ids from the client awaiting PUBREL.
    pub inbound_qos2: BTreeSet<u16>,
}

/// Everything a replay restores.
#[derive(Debug, Default)]
pub struct StateModel {
    /// Sessions by client id.
    pub sessions: BTreeMap<String, ModelSession>,
    /// Retained messages by topic.
    pub retained: BTreeMap<String, Arc<Message>>,
    /// Records skipped because they named a session or message not known at that point.
    pub skipped: u64,
    sids: HashMap<u64, String>,
    messages: HashMap<u64, Arc<Message>>,
}

impl StateModel {
    /// An empty state.
    pub fn new() -> StateModel {
        StateModel::default()
    }

    /// A new generation file starts: message ids are per generation; session keys are per
    /// writing process, so they are forgotten when the writer changed.
    pub fn begin_generation(&mut self, same_writer: bool) {
        self.messages.clear();
        if !same_writer {
            self.sids.clear();
        }
    }

    /// Applies one record.
    pub fn apply(&mut self, record: Record) {
        match record {
            Record::Message { id, message } => {
                self.messages.insert(id, Arc::new(message.into()));
            }
            Record::SessionOpen {
                sid,
                client_id,
                expiry_secs,
            } => {
                let session = ModelSession {
                    expiry_secs,
                    ..ModelSession::default()
                };
                self.define(sid, client_id, session);
            }
            Record::SessionImage(image) => self.image(image),
            Record::Online { sid, expiry_secs } => {
                if let Some(s) = self.session(sid) {
                    s.disconnected_at_ms = None;
                    s.expiry_secs = expiry_secs;
                }
            }
            Record::Offline {
                sid,
                at_ms,
                expiry_secs,
            } => {
                if let Some(s) = self.session(sid) {
                    s.disconnected_at_ms = Some(at_ms);
                    s.expiry_secs = expiry_secs;
                }
            }
            Record::SessionEnd { sid } => match self.sids.remove(&sid) {
                Some(client_id) => {
                    self.sessions.remove(&client_id);
                }
                None => self.skipped += 1,
            },
            Record::Subscribe {
                sid,
                filter,
                options,
            } => {
                if let Some(s) = self.session(sid) {
                    s.subscriptions.insert(filter, options);
                }
            }
            Record::Unsubscribe { sid, filter } => {
                if let Some(s) = self.session(sid) {
                    s.subscriptions.remove(&filter);
                }
            }
            Record::Enqueue { sid, delivery } => {
                if let Some(d) = self.delivery(&delivery)
                    && let Some(s) = self.session(sid)
                {
                    s.queue.push_back(d);
                }
            }
            Record::EnqueueFront { sid, delivery } => {
                if let Some(d) = self.delivery(&delivery)
                    && let Some(s) = self.session(sid)
                {
                    s.queue.push_front(d);
                }
            }
            Record::Dequeue { sid } => {
                if let Some(s) = self.session(sid) {
                    s.queue.pop_front();
                }
            }
            Record::QueueImage { sid, deliveries } => {
                let queue = self.deliveries(&deliveries);
                if let Some(s) = self.session(sid) {
                    s.queue = queue;
                }
            }
            Record::InFlight {
                sid,
                packet_id,
                released,
                delivery,
            } => {
                if let Some(d) = self.delivery(&delivery)
                    && let Some(s) = self.session(sid)
                {
                    s.inflight.insert(packet_id, (released, d));
                }
            }
            Record::Released { sid, packet_id } => {
                if let Some(s) = self.session(sid)
                    && let Some((released, _)) = s.inflight.get_mut(&packet_id)
                {
                    *released = true;
                }
            }
            Record::Completed { sid, packet_id } => {
                if let Some(s) = self.session(sid) {
                    s.inflight.remove(&packet_id);
                }
            }
            Record::InboundQos2 { sid, packet_id } => {
                if let Some(s) = self.session(sid) {
                    s.inbound_qos2.insert(packet_id);
                }
            }
            Record::InboundQos2Done { sid, packet_id } => {
                if let Some(s) = self.session(sid) {
                    s.inbound_qos2.remove(&packet_id);
                }
            }
            Record::RetainSet { id } => match self.messages.get(&id) {
                Some(message) => {
                    self.retained
                        .insert(message.topic.to_string(), Arc::clone(message));
                }
                None => self.skipped += 1,
            },
            Record::RetainClear { topic } => {
                self.retained.remove(&topic);
            }
            Record::CheckpointDone => {}
        }
    }

    fn define(&mut self, sid: u64, client_id: String, session: ModelSession) {
        // Whatever key named this client before belongs to a session that is replaced now.
        self.sids.retain(|_, c| *c != client_id);
        self.sids.insert(sid, client_id.clone());
        self.sessions.insert(client_id, session);
    }

    fn image(&mut self, image: SessionImage) {
        let session = ModelSession {
            expiry_secs: image.expiry_secs,
            disconnected_at_ms: image.disconnected_at_ms,
            subscriptions: image.subscriptions.into_iter().collect(),
            queue: self.deliveries(&image.queue),
            inflight: image
                .inflight
                .iter()
                .filter_map(|(id, released, d)| Some((*id, (*released, self.delivery(d)?))))
                .collect(),
            inbound_qos2: image.inbound_qos2.into_iter().collect(),
        };
        self.define(image.sid, image.client_id, session);
    }

    fn session(&mut self, sid: u64) -> Option<&mut ModelSession> {
        let found = self
            .sids
            .get(&sid)
            .and_then(|client_id| self.sessions.get_mut(client_id));
        if found.is_none() {
            self.skipped += 1;
        }
        found
    }

    fn delivery(&mut self, stored: &StoredDelivery) -> Option<Delivery> {
        match self.messages.get(&stored.message) {
            Some(message) => Some(stored.to_delivery(Arc::clone(message))),
            None => {
                self.skipped += 1;
                None
            }
        }
    }

    fn deliveries(&mut self, stored: &[StoredDelivery]) -> VecDeque<Delivery> {
        stored.iter().filter_map(|d| self.delivery(d)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::record::{StoredMessage, StoredOrigin, StoredProperties, StoredSubscription};

    fn stored(topic: &str) -> StoredMessage {
        StoredMessage {
            topic: topic.into(),
            payload: bytes::Bytes::from_static(b"p"),
            qos: edge_proto::mqtt::QoS::AtLeastOnce,
            retain: false,
            properties: StoredProperties::default(),
            received_ms: 5,
            origin: StoredOrigin::Mqtt,
        }
    }

    fn delivery(id: u64) -> StoredDelivery {
        StoredDelivery {
            message: id,
            qos: edge_proto::mqtt::QoS::AtLeastOnce,
            retain: false,
            subscription_ids: vec![],
        }
    }

    #[test]
    fn records_before_an_image_are_replaced_by_it_and_unknown_ones_skipped() {
        let mut m = StateModel::new();
        m.apply(Record::Dequeue { sid: 9 });
        assert_eq!(m.skipped, 1);
        m.apply(Record::SessionOpen {
            sid: 1,
            client_id: "c".into(),
            expiry_secs: 60,
        });
        m.apply(Record::Message {
            id: 0,
            message: stored("a"),
        });
        m.apply(Record::Enqueue {
            sid: 1,
            delivery: delivery(0),
        });
        m.apply(Record::Enqueue {
            sid: 1,
            delivery: delivery(0),
        });
        m.apply(Record::Dequeue { sid: 1 });
        m.apply(Record::InFlight {
            sid: 1,
            packet_id: 4,
            released: false,
            delivery: delivery(0),
        });
        m.apply(Record::Released {
            sid: 1,
            packet_id: 4,
        });
        let s = &m.sessions["c"];
        assert_eq!(s.queue.len(), 1);
        assert!(s.inflight[&4].0);
        // A checkpoint image under a new key replaces the session wholesale.
        m.apply(Record::SessionImage(SessionImage {
            sid: 2,
            client_id: "c".into(),
            expiry_secs: 30,
            disconnected_at_ms: Some(7),
            subscriptions: vec![(
                "a/#".into(),
                StoredSubscription {
                    qos: edge_proto::mqtt::QoS::AtLeastOnce,
                    no_local: false,
                    retain_as_published: false,
                    id: None,
                },
            )],
            queue: vec![],
            inflight: vec![],
            inbound_qos2: vec![3],
        }));
        m.apply(Record::Dequeue { sid: 1 }); // the old key is gone
        let s = &m.sessions["c"];
        assert_eq!((s.expiry_secs, s.queue.len(), s.inflight.len()), (30, 0, 0));
        assert_eq!(s.subscriptions.len(), 1);
        m.apply(Record::SessionEnd { sid: 2 });
        assert!(m.sessions.is_empty());
    }

    #[test]
    fn message_ids_are_per_generation_and_keys_per_writer() {
        let mut m = StateModel::new();
        m.apply(Record::SessionOpen {
            sid: 1,
            client_id: "c".into(),
            expiry_secs: 60,
        });
        m.apply(Record::Message {
            id: 0,
            message: stored("t"),
        });
        m.apply(Record::RetainSet { id: 0 });
        m.begin_generation(true);
        m.apply(Record::RetainSet { id: 0 });
        assert_eq!(
            m.skipped, 1,
            "id 0 of the previous generation is unknown now"
        );
        m.apply(Record::Online {
            sid: 1,
            expiry_secs: 9,
        });
        assert_eq!(m.skipped, 1, "the same writer's keys carry over");
        m.begin_generation(false);
        m.apply(Record::Online {
            sid: 1,
            expiry_secs: 9,
        });
        assert_eq!(m.skipped, 2, "another writer's keys do not");
        assert_eq!(m.retained.len(), 1);
        assert_eq!(m.sessions.len(), 1);
    }
}
