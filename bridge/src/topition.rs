//! [`Topition`]: one partition of one Kafka topic (the name is tansu's), the key of everything
//! the bridge keeps per partition: batches of a plan, sequence numbers, requests in flight.
//!
//! The topic name is shared (`Arc<str>`), so a clone is a reference count, not a copy of the
//! name: the producer looks its per-partition state up for every batch.

use std::fmt;
use std::sync::Arc;

/// A Kafka topic and one of its partitions.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Topition {
    topic: Arc<str>,
    partition: i32,
}

impl Topition {
    /// Partition `partition` of `topic`.
    pub fn new(topic: impl Into<Arc<str>>, partition: i32) -> Self {
        Self {
            topic: topic.into(),
            partition,
        }
    }

    /// The topic name.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The topic name, shared.
    pub fn topic_arc(&self) -> &Arc<str> {
        &self.topic
    }

    /// The partition index.
    pub fn partition(&self) -> i32 {
        self.partition
    }
}

impl fmt::Display for Topition {
    /// `topic/partition`, as error messages and logs write it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn topic_and_partition_make_the_identity() {
        let a = Topition::new("t", 1);
        let shared: Arc<str> = Arc::from("t");
        let b = Topition::new(Arc::clone(&shared), 1);
        assert_eq!(a, b);
        assert_ne!(a, Topition::new("t", 2));
        assert_ne!(a, Topition::new("u", 1));
        let set: HashSet<Topition> = [a.clone(), b, Topition::new("t", 2)].into();
        assert_eq!(set.len(), 2);
        assert_eq!(a.to_string(), "t/1");
        assert_eq!((a.topic(), a.partition()), ("t", 1));
        assert!(Topition::new("t", 1) < Topition::new("t", 2));
    }
}
