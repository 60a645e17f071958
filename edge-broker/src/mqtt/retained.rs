//! Retained messages: the last retained message per topic, sent to new subscribers; bounded
//! in count and bytes, and recorded in the state journal.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};

use crate::message::Message;
use crate::router::Filter;
use crate::state::Journal;
use crate::state::record::Record;

/// Which limit refused a retained message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetainedLimit {
    /// `[mqtt] max_retained`: the number of topics.
    Count,
    /// `[mqtt] max_retained_bytes`: the bytes of all retained messages.
    Bytes,
}

impl RetainedLimit {
    /// The config key of the limit (also its metric label).
    pub fn key(self) -> &'static str {
        match self {
            RetainedLimit::Count => "max_retained",
            RetainedLimit::Bytes => "max_retained_bytes",
        }
    }
}

/// Bytes a retained message is counted for: topic, payload and properties (what it takes in
/// memory and in the journal, give or take a few fixed-size fields).
pub fn weight(message: &Message) -> u64 {
    let p = &message.properties;
    let strings = p.content_type.as_ref().map_or(0, String::len)
        + p.response_topic.as_ref().map_or(0, String::len)
        + p.correlation_data.as_ref().map_or(0, bytes::Bytes::len)
        + p.user_properties
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>();
    (message.topic.len() + message.payload.len() + strings) as u64
}

#[derive(Debug, Default)]
struct Stored {
    messages: BTreeMap<String, Arc<Message>>,
    /// Bytes of the clients' retained messages (what the byte limit counts).
    bytes: u64,
    /// The broker's own `$SYS` topics among `messages` (a few dozen, fixed by the broker).
    server_topics: usize,
}

/// Whether `topic` is the broker's own (`$SYS/...`): kept outside the clients' limits and
/// counts, and never journaled (regenerated at start).
fn server_owned(topic: &str) -> bool {
    topic.starts_with(super::sys::PREFIX)
}

/// Retained messages by topic.
#[derive(Debug, Default)]
pub struct RetainedStore {
    stored: Mutex<Stored>,
    max_messages: usize,
    max_bytes: u64,
    journal: Mutex<Option<Arc<Journal>>>,
}

impl RetainedStore {
    /// An empty store holding at most `max_messages` topics and `max_bytes` bytes.
    pub fn new(max_messages: usize, max_bytes: u64) -> RetainedStore {
        RetainedStore {
            stored: Mutex::new(Stored::default()),
            max_messages,
            max_bytes,
            journal: Mutex::new(None),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Stored> {
        self.stored.lock()
    }

    /// From now on, every change is recorded in `journal`.
    pub fn record_to(&self, journal: Arc<Journal>) {
        *self.journal.lock() = Some(journal);
    }

    fn journal(&self) -> Option<Arc<Journal>> {
        self.journal.lock().clone()
    }

    /// Whether a retained message of `weight` bytes on `topic` would be kept now (`Err`: the
    /// limit that refuses it). Replacing a topic's message counts only the difference.
    pub fn admits(&self, topic: &str, weight: u64) -> Result<(), RetainedLimit> {
        Self::check(
            &self.lock(),
            self.max_messages,
            self.max_bytes,
            topic,
            weight,
        )
    }

    fn check(
        stored: &Stored,
        max_messages: usize,
        max_bytes: u64,
        topic: &str,
        add: u64,
    ) -> Result<(), RetainedLimit> {
        if server_owned(topic) {
            return Ok(());
        }
        let old = stored.messages.get(topic).map(|m| weight(m));
        if old.is_none() && stored.messages.len() - stored.server_topics >= max_messages {
            return Err(RetainedLimit::Count);
        }
        if stored.bytes - old.unwrap_or(0) + add > max_bytes {
            return Err(RetainedLimit::Bytes);
        }
        Ok(())
    }

    /// Stores `message` as its topic's retained message, or clears the topic when the payload
    /// is empty. `Err`: a limit refused it (the message is not kept; the old one stays).
    /// `$SYS` messages are neither limited nor journaled (see [`server_owned`]).
    pub fn set(&self, message: &Arc<Message>) -> Result<(), RetainedLimit> {
        let server = server_owned(&message.topic);
        let journal = self.journal().filter(|_| !server);
        let mut stored = self.lock();
        if message.payload.is_empty() {
            if let Some(old) = stored.messages.remove(&*message.topic) {
                Self::forget(&mut stored, &old);
                if let Some(journal) = &journal {
                    journal.append(|enc| {
                        enc.record(&Record::RetainClear {
                            topic: message.topic.to_string(),
                        })
                    });
                }
            }
            return Ok(());
        }
        Self::check(
            &stored,
            self.max_messages,
            self.max_bytes,
            &message.topic,
            weight(message),
        )?;
        if let Some(journal) = &journal {
            journal.append(|enc| {
                let id = enc.message(message);
                enc.record(&Record::RetainSet { id });
            });
        }
        if let Some(old) = stored
            .messages
            .insert(message.topic.to_string(), Arc::clone(message))
        {
            Self::forget(&mut stored, &old);
        }
        if server {
            stored.server_topics += 1;
        } else {
            stored.bytes += weight(message);
        }
        Ok(())
    }

    /// Takes a removed or replaced message out of the accounting.
    fn forget(stored: &mut Stored, old: &Message) {
        if server_owned(&old.topic) {
            stored.server_topics -= 1;
        } else {
            stored.bytes -= weight(old);
        }
    }

    /// Retained messages whose topic matches `filter` (expired ones are skipped).
    pub fn matching(&self, filter: &Filter, now_ms: u64) -> Vec<Arc<Message>> {
        self.lock()
            .messages
            .values()
            .filter(|m| {
                !m.is_expired(now_ms) && filter.matches(&m.topic.split('/').collect::<Vec<_>>())
            })
            .cloned()
            .collect()
    }

    /// Number of retained topics of clients (the broker's `$SYS` topics are not counted).
    pub fn len(&self) -> usize {
        let stored = self.lock();
        stored.messages.len() - stored.server_topics
    }

    /// Bytes of all retained messages, as the limit counts them.
    pub fn bytes(&self) -> u64 {
        self.lock().bytes
    }

    /// Whether nothing is retained.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends an image of every retained message (a checkpoint), a few topics at a time,
    /// each under the store's lock, pausing while the journal's backlog is large.
    pub fn write_images(&self, journal: &Journal) {
        const CHUNK: usize = 64;
        let mut after: Option<String> = None;
        loop {
            {
                let stored = self.lock();
                let range = match &after {
                    Some(topic) => stored
                        .messages
                        .range::<String, _>((
                            std::ops::Bound::Excluded(topic),
                            std::ops::Bound::Unbounded,
                        ))
                        .take(CHUNK)
                        .collect::<Vec<_>>(),
                    None => stored.messages.iter().take(CHUNK).collect(),
                };
                if range.is_empty() {
                    return;
                }
                journal.append(|enc| {
                    for (_, message) in range.iter().filter(|(topic, _)| !server_owned(topic)) {
                        let id = enc.message(message);
                        enc.record(&Record::RetainSet { id });
                    }
                });
                after = range.last().map(|(topic, _)| (*topic).clone());
            }
            journal.wait_backlog_below(crate::state::journal::BACKLOG_BYTES / 2);
        }
    }

    /// Restores messages at startup (within the limits; what does not fit is dropped and
    /// counted in the result).
    pub fn restore(&self, messages: impl IntoIterator<Item = Arc<Message>>) -> usize {
        let mut dropped = 0;
        let mut stored = self.lock();
        for message in messages {
            let add = weight(&message);
            match Self::check(
                &stored,
                self.max_messages,
                self.max_bytes,
                &message.topic,
                add,
            ) {
                Ok(()) => {
                    if let Some(old) = stored.messages.insert(message.topic.to_string(), message) {
                        stored.bytes -= weight(&old);
                    }
                    stored.bytes += add;
                }
                Err(_) => dropped += 1,
            }
        }
        dropped
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
            nats_subject: None,
        })
    }

    #[test]
    fn set_replace_clear_and_match() {
        let store = RetainedStore::new(10, 1 << 20);
        assert!(store.set(&msg("a/b", b"1")).is_ok());
        assert!(store.set(&msg("a/b", b"2")).is_ok());
        assert!(store.set(&msg("a/c", b"3")).is_ok());
        let found = store.matching(&Filter::mqtt("a/+").unwrap(), 0);
        assert_eq!(found.len(), 2);
        assert_eq!(&found[0].payload[..], b"2");
        assert!(store.set(&msg("a/b", b"")).is_ok());
        assert_eq!(store.len(), 1);
        assert_eq!(store.bytes(), 4);
    }

    /// The broker's `$SYS` topics never take the clients' room, nor are refused when the
    /// clients filled it (a full store must not freeze `$SYS`).
    #[test]
    fn sys_topics_are_outside_the_limits_and_counts() {
        let store = RetainedStore::new(1, 10);
        assert!(store.set(&msg("a", b"123456789")).is_ok());
        assert!(store.set(&msg("$SYS/broker/uptime", b"5 seconds")).is_ok());
        assert!(store.set(&msg("$SYS/broker/uptime", b"15 seconds")).is_ok());
        assert_eq!((store.len(), store.bytes()), (1, 10));
        assert_eq!(store.set(&msg("b", b"1")), Err(RetainedLimit::Count));
        assert!(store.set(&msg("$SYS/broker/uptime", b"")).is_ok());
        assert_eq!((store.len(), store.bytes()), (1, 10));
        let found = store.matching(&Filter::mqtt("$SYS/#").unwrap(), 0);
        assert!(found.is_empty());
    }

    #[test]
    fn the_count_limit_refuses_new_topics_only() {
        let store = RetainedStore::new(1, 1 << 20);
        assert!(store.set(&msg("a", b"1")).is_ok());
        assert_eq!(store.set(&msg("b", b"1")), Err(RetainedLimit::Count));
        assert!(store.set(&msg("a", b"2")).is_ok());
    }

    #[test]
    fn the_byte_limit_counts_replacements_by_their_difference() {
        let store = RetainedStore::new(100, 10);
        assert!(store.set(&msg("a", b"1234")).is_ok()); // 5 bytes
        assert!(store.set(&msg("b", b"1234")).is_ok()); // 10 bytes
        assert_eq!(store.set(&msg("c", b"1")), Err(RetainedLimit::Bytes));
        assert_eq!(store.admits("a", 6), Err(RetainedLimit::Bytes));
        assert!(store.set(&msg("a", b"1")).is_ok(), "smaller replacement");
        assert!(store.set(&msg("c", b"12")).is_ok(), "room again");
        assert_eq!(store.bytes(), 10);
        assert_eq!(store.restore([msg("d", b"x")]), 1, "over the byte limit");
    }
}
