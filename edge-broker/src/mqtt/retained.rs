//! Retained messages: the last retained message per topic, sent to new subscribers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::{Mutex, MutexGuard};

use crate::message::Message;
use crate::router::Filter;

/// Retained messages by topic.
#[derive(Debug, Default)]
pub struct RetainedStore {
    messages: Mutex<BTreeMap<String, Arc<Message>>>,
    dirty: AtomicBool,
    max_messages: usize,
}

impl RetainedStore {
    /// An empty store holding at most `max_messages` topics.
    pub fn new(max_messages: usize) -> RetainedStore {
        RetainedStore {
            messages: Mutex::new(BTreeMap::new()),
            dirty: AtomicBool::new(false),
            max_messages,
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Arc<Message>>> {
        self.messages.lock()
    }

    /// Stores `message` as its topic's retained message, or clears the topic when the payload
    /// is empty. Returns false when a new topic would exceed the limit (the message is not kept).
    pub fn set(&self, message: &Arc<Message>) -> bool {
        let mut messages = self.lock();
        let accepted = if message.payload.is_empty() {
            messages.remove(&message.topic);
            true
        } else if messages.len() >= self.max_messages && !messages.contains_key(&message.topic) {
            false
        } else {
            messages.insert(message.topic.clone(), Arc::clone(message));
            true
        };
        if accepted {
            self.dirty.store(true, Ordering::Release);
        }
        accepted
    }

    /// Retained messages whose topic matches `filter` (expired ones are skipped).
    pub fn matching(&self, filter: &Filter, now_ms: u64) -> Vec<Arc<Message>> {
        self.lock()
            .values()
            .filter(|m| {
                !m.is_expired(now_ms) && filter.matches(&m.topic.split('/').collect::<Vec<_>>())
            })
            .cloned()
            .collect()
    }

    /// Number of retained topics.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether nothing is retained.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// All messages, for a snapshot; clears the dirty flag.
    pub fn snapshot(&self) -> Vec<Message> {
        self.dirty.store(false, Ordering::Release);
        self.lock().values().map(|m| (**m).clone()).collect()
    }

    /// Whether something changed since the last snapshot.
    pub fn is_dirty(&self) -> bool {
        self.dirty.load(Ordering::Acquire)
    }

    /// Restores messages from a snapshot.
    pub fn restore(&self, messages: Vec<Message>) {
        let mut map = self.lock();
        for message in messages {
            map.insert(message.topic.clone(), Arc::new(message));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{MessageProperties, Origin};

    fn msg(topic: &str, payload: &'static [u8]) -> Arc<Message> {
        Arc::new(Message {
            topic: topic.into(),
            payload: bytes::Bytes::from_static(payload),
            qos: edge_proto::mqtt::QoS::AtLeastOnce,
            retain: true,
            properties: MessageProperties::default(),
            received_ms: 0,
            origin: Origin::Mqtt,
            publisher: None,
        })
    }

    #[test]
    fn set_replace_clear_and_match() {
        let store = RetainedStore::new(10);
        assert!(store.set(&msg("a/b", b"1")));
        assert!(store.set(&msg("a/b", b"2")));
        assert!(store.set(&msg("a/c", b"3")));
        let found = store.matching(&Filter::mqtt("a/+").unwrap(), 0);
        assert_eq!(found.len(), 2);
        assert_eq!(&found[0].payload[..], b"2");
        assert!(store.set(&msg("a/b", b"")));
        assert_eq!(store.len(), 1);
        assert!(store.is_dirty());
        assert_eq!(store.snapshot().len(), 1);
        assert!(!store.is_dirty());
    }

    #[test]
    fn the_limit_refuses_new_topics_only() {
        let store = RetainedStore::new(1);
        assert!(store.set(&msg("a", b"1")));
        assert!(!store.set(&msg("b", b"1")));
        assert!(store.set(&msg("a", b"2")));
    }
}
