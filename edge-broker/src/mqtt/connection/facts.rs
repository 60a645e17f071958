//! What a connection decided for the topics it publishes to ([`TopicFacts`]): everything
//! that depends on the topic alone, or on it and a generation (the auth rules', the route
//! table's, the hub's), kept while the client repeats its topics. A PUBLISH on a known topic
//! costs a comparison of its bytes with the kept topic's instead of a UTF-8 check, a topic
//! allocation, validation, the reserved-name and ACL checks, the route decision and the
//! hub's subscription match. (NATS keeps the same for its last subject: `SubjectFacts`.)
//!
//! Bounds: at most [`MAX_TOPICS`] topics of at most [`MAX_TOPIC_BYTES`] bytes each (a longer
//! topic is decided for each publish, as before), made at the first publish and freed when
//! the connection parks: an idle client holds none.
//!
//! Sizing: a sensor publishes to a handful of topics, in a round (one reading per quantity)
//! or repeating one; `mqtt-blast` rotates 16 per connection. A round of up to [`MAX_TOPICS`]
//! topics hits every time after the first; a client rotating through more than that (in
//! order) misses every time (first in, first out: so would least-recently-used), and pays
//! what a publish paid without the table plus the comparisons with the topics it holds.

use std::sync::Arc;

use edge_log::Destination;

use crate::hub::LocalRoute;

/// Topics kept per connection.
pub(super) const MAX_TOPICS: usize = 16;
/// Longer topics are not kept (a topic may be 64 KiB): at most 4 KiB of topics per connection.
pub(super) const MAX_TOPIC_BYTES: usize = 256;

/// What is known of one topic. Every answer is stamped with the generation it holds for.
#[derive(Debug)]
pub(super) struct Facts {
    /// The topic, validated; shared by every message and record published to it.
    pub(super) topic: Arc<str>,
    /// Refused by the rule that needs no configuration (`$SYS`, `$share`): refused (and
    /// counted) at every publish, without the ACL being asked.
    pub(super) reserved: bool,
    /// The auth generation under whose rules the connection's ACL allowed publishing here
    /// (`None`: not asked yet, or refused: a refusal is asked again, and counted, each time).
    pub(super) permitted: Option<u64>,
    /// Where it goes upstream, for a route table generation; kept from the topic's second
    /// publish on (see [`Facts::fresh`]).
    pub(super) route: Option<(u64, Option<Destination>)>,
    /// Where its messages go in the hub, for a hub generation (shared with each message's
    /// queue entry until it is delivered).
    pub(super) local: Option<Arc<LocalRoute>>,
    /// Kept for one publish only so far. A destination is not kept for it: keeping one
    /// shares its key (`Bytes`), one allocation more, freed by the log writer after the table
    /// forgets the topic; a client rotating through more topics than the table keeps would
    /// pay that for every publish (+139 instructions on the writer with 64 topics).
    pub(super) fresh: bool,
}

impl Facts {
    /// Nothing decided yet about `topic` (validated by the caller) but the reserved rule.
    pub(super) fn new(topic: Arc<str>, reserved: bool) -> Facts {
        Facts {
            topic,
            reserved,
            permitted: None,
            route: None,
            local: None,
            fresh: true,
        }
    }
}

/// A connection's recent topics and their [`Facts`], by topic bytes.
#[derive(Debug, Default)]
pub(super) struct TopicFacts {
    /// At most [`MAX_TOPICS`], in no order that matters.
    entries: Vec<Facts>,
    /// Where the last publish's topic is: a client that rotates through its topics finds the
    /// next one at the next place, one that repeats a topic finds it there.
    last: usize,
    /// The entry replaced when a new topic comes to a full table (first in, first out).
    victim: usize,
}

impl TopicFacts {
    /// The facts of `topic`, if kept.
    #[cfg(test)]
    pub(super) fn get(&mut self, topic: &[u8]) -> Option<&mut Facts> {
        let at = self.find(topic)?;
        Some(&mut self.entries[at])
    }

    /// The facts of `topic` (of at most [`MAX_TOPIC_BYTES`]): kept ones, or `make`'s, kept.
    pub(super) fn get_or_insert_with<E>(
        &mut self,
        topic: &[u8],
        make: impl FnOnce() -> Result<Facts, E>,
    ) -> Result<&mut Facts, E> {
        match self.find(topic) {
            Some(at) => Ok(&mut self.entries[at]),
            None => Ok(self.insert(make()?)),
        }
    }

    /// Where `topic` is kept. Looks where a rotation or a repetition puts it first.
    fn find(&mut self, topic: &[u8]) -> Option<usize> {
        let n = self.entries.len();
        if n == 0 {
            return None;
        }
        let next = if self.last + 1 == n { 0 } else { self.last + 1 };
        let at = [next, self.last]
            .into_iter()
            .find(|&i| self.entries[i].topic.as_bytes() == topic)
            .or_else(|| {
                self.entries
                    .iter()
                    .position(|f| f.topic.as_bytes() == topic)
            })?;
        self.last = at;
        Some(at)
    }

    /// Keeps `facts` (of a topic not kept, of at most [`MAX_TOPIC_BYTES`]), in place of the
    /// oldest topic when the table is full.
    pub(super) fn insert(&mut self, facts: Facts) -> &mut Facts {
        let at = if self.entries.len() < MAX_TOPICS {
            if self.entries.len() == self.entries.capacity() {
                // From one (a sensor with one topic holds one entry, not `Vec`'s first four),
                // doubling up to the bound.
                let more = self.entries.len().clamp(1, MAX_TOPICS - self.entries.len());
                self.entries.reserve_exact(more);
            }
            self.entries.push(facts);
            self.entries.len() - 1
        } else {
            let at = self.victim;
            self.victim = (at + 1) % MAX_TOPICS;
            self.entries[at] = facts;
            at
        };
        self.last = at;
        &mut self.entries[at]
    }

    /// Topics kept.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::VecDeque;

    fn facts(topic: &str) -> Facts {
        Facts::new(topic.into(), false)
    }

    /// A client rotating through its topics, or repeating one, finds each where it looks
    /// first, and every topic it keeps is found.
    #[test]
    fn a_round_of_topics_is_found_after_the_first_round() {
        let mut table = TopicFacts::default();
        let topics: Vec<String> = (0..MAX_TOPICS).map(|i| format!("sensors/{i}/t")).collect();
        for topic in &topics {
            assert!(table.get(topic.as_bytes()).is_none());
            table.insert(facts(topic));
        }
        for _ in 0..3 {
            for topic in &topics {
                let found = table.get(topic.as_bytes()).map(|f| Arc::clone(&f.topic));
                assert_eq!(found.as_deref(), Some(topic.as_str()));
            }
        }
        assert!(
            table.get(b"sensors/0").is_none(),
            "a prefix is another topic"
        );
        assert!(table.get(b"sensors/0/tt").is_none());
        assert_eq!(table.len(), MAX_TOPICS);
        assert_eq!(table.entries.capacity(), MAX_TOPICS);
    }

    /// A client with one topic holds one entry's room.
    #[test]
    fn one_topic_takes_one_entry() {
        let mut table = TopicFacts::default();
        table.insert(facts("a/b"));
        assert_eq!(table.entries.capacity(), 1);
    }

    proptest! {
        /// Model: the table holds exactly the last [`MAX_TOPICS`] distinct topics inserted
        /// (first in, first out), whatever the order of publishes; a kept topic is found with
        /// its own facts, and it is never kept twice.
        #[test]
        fn the_table_keeps_the_newest_distinct_topics(
            publishes in proptest::collection::vec(0u8..40, 0..300),
        ) {
            let mut table = TopicFacts::default();
            let mut model: VecDeque<String> = VecDeque::new();
            for p in publishes {
                let topic = format!("t/{p}");
                let found = table.get(topic.as_bytes()).map(|f| f.topic.to_string());
                prop_assert_eq!(found.is_some(), model.contains(&topic));
                if let Some(found) = found {
                    prop_assert_eq!(found, topic);
                } else {
                    table.insert(facts(&topic));
                    if model.len() == MAX_TOPICS {
                        model.pop_front();
                    }
                    model.push_back(topic);
                }
                prop_assert!(table.len() <= MAX_TOPICS);
                prop_assert_eq!(table.len(), model.len());
                for kept in &model {
                    prop_assert!(table.get(kept.as_bytes()).is_some());
                }
            }
        }
    }
}
