//! Duplicate detection for durable publishes: `Nats-Msg-Id` → the log offset it was stored at,
//! remembered for a time window and bounded in count (oldest forgotten first).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Message ids seen within the window, per stream.
#[derive(Debug)]
pub struct DuplicateWindow {
    window: Duration,
    max_ids: usize,
    ids: HashMap<(String, String), (u64, Instant)>,
    order: VecDeque<(Instant, (String, String))>,
}

impl DuplicateWindow {
    /// An empty window remembering ids for `window`, at most `max_ids` of them.
    pub fn new(window: Duration, max_ids: usize) -> DuplicateWindow {
        DuplicateWindow {
            window,
            max_ids: max_ids.max(1),
            ids: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Number of ids remembered.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether no id is remembered.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    fn expire(&mut self, now: Instant) {
        while let Some((at, _)) = self.order.front() {
            if now.saturating_duration_since(*at) < self.window && self.order.len() <= self.max_ids
            {
                break;
            }
            if let Some((at, key)) = self.order.pop_front()
                && self.ids.get(&key).is_some_and(|(_, seen)| *seen == at)
            {
                self.ids.remove(&key);
            }
        }
    }

    /// The offset `id` was stored at in `stream`, if it was seen within the window.
    pub fn get(&mut self, stream: &str, id: &str, now: Instant) -> Option<u64> {
        self.expire(now);
        self.ids
            .get(&(stream.to_owned(), id.to_owned()))
            .map(|(seq, _)| *seq)
    }

    /// Remembers that `id` was stored in `stream` at offset `seq` (the first store wins).
    pub fn insert(&mut self, stream: &str, id: &str, seq: u64, now: Instant) {
        let key = (stream.to_owned(), id.to_owned());
        if self.ids.contains_key(&key) {
            return;
        }
        self.ids.insert(key.clone(), (seq, now));
        self.order.push_back((now, key));
        self.expire(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_remembered_within_the_window_only() {
        let start = Instant::now();
        let mut w = DuplicateWindow::new(Duration::from_secs(10), 100);
        w.insert("s", "a", 7, start);
        assert_eq!(w.get("s", "a", start + Duration::from_secs(9)), Some(7));
        assert_eq!(w.get("other", "a", start), None, "ids are per stream");
        w.insert("s", "a", 9, start + Duration::from_secs(1));
        assert_eq!(w.get("s", "a", start), Some(7), "the first store wins");
        assert_eq!(w.get("s", "a", start + Duration::from_secs(10)), None);
        assert!(w.is_empty());
    }

    #[test]
    fn memory_is_bounded_by_count() {
        let now = Instant::now();
        let mut w = DuplicateWindow::new(Duration::from_secs(3600), 3);
        for i in 0..10u64 {
            w.insert("s", &i.to_string(), i, now);
        }
        assert_eq!(w.len(), 3);
        assert_eq!(w.get("s", "0", now), None);
        assert_eq!(w.get("s", "9", now), Some(9));
    }
}
