//! The subscription tree: which subscribers want a topic, in time proportional to the topic's
//! depth rather than to the number of subscriptions.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::filter::{Filter, Level};

/// Subscriptions keyed by filter, with shared (load-balanced) groups.
///
/// `K` identifies a subscriber (a session), `V` is what the subscription carries (QoS, options,
/// identifiers). One subscriber has at most one subscription per filter and share group.
#[derive(Debug)]
pub struct SubscriptionTree<K, V> {
    root: Node<K, V>,
    len: usize,
}

#[derive(Debug)]
struct Node<K, V> {
    literal: HashMap<String, Node<K, V>>,
    one: Option<Box<Node<K, V>>>,
    /// Subscriptions whose filter ends here.
    here: Entries<K, V>,
    /// Subscriptions whose filter ends here with MQTT `#`.
    zero_or_more: Entries<K, V>,
    /// Subscriptions whose filter ends here with NATS `>`.
    one_or_more: Entries<K, V>,
}

#[derive(Debug)]
struct Entries<K, V> {
    direct: BTreeMap<K, V>,
    shared: BTreeMap<String, SharedGroup<K, V>>,
}

#[derive(Debug)]
struct SharedGroup<K, V> {
    members: BTreeMap<K, V>,
    next: AtomicUsize,
}

/// One delivery decided by [`SubscriptionTree::matches`].
#[derive(Debug, PartialEq, Eq)]
pub struct Matched<'a, K, V> {
    /// The subscriber.
    pub key: &'a K,
    /// Its subscription's data.
    pub value: &'a V,
    /// The share group the subscriber was picked from, if any.
    pub group: Option<&'a str>,
}

impl<K, V> Default for Node<K, V> {
    fn default() -> Self {
        Node {
            literal: HashMap::new(),
            one: None,
            here: Entries::default(),
            zero_or_more: Entries::default(),
            one_or_more: Entries::default(),
        }
    }
}

impl<K, V> Default for Entries<K, V> {
    fn default() -> Self {
        Entries {
            direct: BTreeMap::new(),
            shared: BTreeMap::new(),
        }
    }
}

impl<K: Ord + Clone, V> Entries<K, V> {
    fn is_empty(&self) -> bool {
        self.direct.is_empty() && self.shared.is_empty()
    }

    fn insert(&mut self, group: Option<&str>, key: K, value: V) -> Option<V> {
        match group {
            None => self.direct.insert(key, value),
            Some(group) => self
                .shared
                .entry(group.to_owned())
                .or_insert_with(|| SharedGroup {
                    members: BTreeMap::new(),
                    next: AtomicUsize::new(0),
                })
                .members
                .insert(key, value),
        }
    }

    fn remove(&mut self, group: Option<&str>, key: &K) -> Option<V> {
        match group {
            None => self.direct.remove(key),
            Some(group) => {
                let shared = self.shared.get_mut(group)?;
                let removed = shared.members.remove(key);
                if shared.members.is_empty() {
                    self.shared.remove(group);
                }
                removed
            }
        }
    }

    fn visit<'a>(&'a self, visit: &mut impl FnMut(Matched<'a, K, V>)) {
        for (key, value) in &self.direct {
            visit(Matched {
                key,
                value,
                group: None,
            });
        }
        for (name, group) in &self.shared {
            let n = group.members.len();
            if n == 0 {
                continue;
            }
            let pick = group.next.fetch_add(1, Ordering::Relaxed) % n;
            if let Some((key, value)) = group.members.iter().nth(pick) {
                visit(Matched {
                    key,
                    value,
                    group: Some(name),
                });
            }
        }
    }
}

impl<K: Ord + Clone, V> Node<K, V> {
    fn is_empty(&self) -> bool {
        self.literal.is_empty()
            && self.one.is_none()
            && self.here.is_empty()
            && self.zero_or_more.is_empty()
            && self.one_or_more.is_empty()
    }

    fn entries_mut(&mut self, levels: &[Level]) -> &mut Entries<K, V> {
        match levels.split_first() {
            None => &mut self.here,
            Some((Level::ZeroOrMore, _)) => &mut self.zero_or_more,
            Some((Level::OneOrMore, _)) => &mut self.one_or_more,
            Some((Level::One, rest)) => self.one.get_or_insert_with(Box::default).entries_mut(rest),
            Some((Level::Literal(text), rest)) => self
                .literal
                .entry(text.clone())
                .or_default()
                .entries_mut(rest),
        }
    }

    /// Removes and prunes empty nodes on the way back up.
    fn remove(&mut self, levels: &[Level], group: Option<&str>, key: &K) -> Option<V> {
        match levels.split_first() {
            None => self.here.remove(group, key),
            Some((Level::ZeroOrMore, _)) => self.zero_or_more.remove(group, key),
            Some((Level::OneOrMore, _)) => self.one_or_more.remove(group, key),
            Some((Level::One, rest)) => {
                let child = self.one.as_mut()?;
                let removed = child.remove(rest, group, key);
                if child.is_empty() {
                    self.one = None;
                }
                removed
            }
            Some((Level::Literal(text), rest)) => {
                let child = self.literal.get_mut(text)?;
                let removed = child.remove(rest, group, key);
                if child.is_empty() {
                    self.literal.remove(text);
                }
                removed
            }
        }
    }

    fn walk<'a, S: AsRef<str>>(
        &'a self,
        topic: &[S],
        at_root: bool,
        visit: &mut impl FnMut(Matched<'a, K, V>),
    ) {
        let Some((level, rest)) = topic.split_first() else {
            self.here.visit(visit);
            self.zero_or_more.visit(visit);
            return;
        };
        let level = level.as_ref();
        // MQTT 4.7.2: wildcards at the first level do not match topics starting with '$'.
        if !(at_root && level.starts_with('$')) {
            self.zero_or_more.visit(visit);
            self.one_or_more.visit(visit);
            if let Some(one) = &self.one {
                one.walk(rest, false, visit);
            }
        }
        if let Some(child) = self.literal.get(level) {
            child.walk(rest, false, visit);
        }
    }
}

impl<K: Ord + Clone, V> Default for SubscriptionTree<K, V> {
    fn default() -> Self {
        SubscriptionTree {
            root: Node::default(),
            len: 0,
        }
    }
}

impl<K: Ord + Clone, V> SubscriptionTree<K, V> {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of subscriptions.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no subscriptions.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds or replaces `key`'s subscription to `filter` (in share `group`); returns the old value.
    pub fn insert(&mut self, filter: &Filter, group: Option<&str>, key: K, value: V) -> Option<V> {
        let old = self
            .root
            .entries_mut(filter.levels())
            .insert(group, key, value);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// Removes `key`'s subscription to `filter` (in share `group`); returns its value.
    pub fn remove(&mut self, filter: &Filter, group: Option<&str>, key: &K) -> Option<V> {
        let removed = self.root.remove(filter.levels(), group, key);
        if removed.is_some() {
            self.len -= 1;
        }
        removed
    }

    /// Calls `visit` for every subscription matching `topic` (split into levels): every direct
    /// subscriber, and one member (round robin) of each matching share group. A subscriber with
    /// several matching filters is visited once per filter; merging is the caller's policy.
    pub fn matches<'a, S: AsRef<str>>(
        &'a self,
        topic: &[S],
        mut visit: impl FnMut(Matched<'a, K, V>),
    ) {
        self.root.walk(topic, true, &mut visit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::filter::mqtt_levels;
    use proptest::prelude::*;

    fn collect(
        tree: &SubscriptionTree<u32, &'static str>,
        topic: &str,
    ) -> Vec<(u32, &'static str)> {
        let mut out = Vec::new();
        tree.matches(&mqtt_levels(topic), |m| out.push((*m.key, *m.value)));
        out.sort();
        out
    }

    #[test]
    fn overlapping_filters_each_match() {
        let mut tree = SubscriptionTree::new();
        tree.insert(&Filter::mqtt("a/+").unwrap(), None, 1, "plus");
        tree.insert(&Filter::mqtt("a/#").unwrap(), None, 1, "hash");
        tree.insert(&Filter::mqtt("a/b").unwrap(), None, 2, "exact");
        assert_eq!(
            collect(&tree, "a/b"),
            vec![(1, "hash"), (1, "plus"), (2, "exact")]
        );
        assert_eq!(collect(&tree, "a"), vec![(1, "hash")]);
        assert_eq!(tree.len(), 3);
    }

    #[test]
    fn remove_prunes_and_forgets() {
        let mut tree = SubscriptionTree::new();
        let filter = Filter::mqtt("x/+/z").unwrap();
        tree.insert(&filter, None, 7, "v");
        assert_eq!(tree.insert(&filter, None, 7, "w"), Some("v"));
        assert_eq!(tree.remove(&filter, None, &7), Some("w"));
        assert_eq!(tree.remove(&filter, None, &7), None);
        assert!(tree.is_empty());
        assert!(tree.root.is_empty());
    }

    #[test]
    fn share_groups_deliver_to_one_member_in_turn() {
        let mut tree = SubscriptionTree::new();
        let filter = Filter::mqtt("jobs/#").unwrap();
        for key in [1, 2, 3] {
            tree.insert(&filter, Some("workers"), key, "w");
        }
        tree.insert(&filter, None, 9, "observer");
        let mut picked = Vec::new();
        for _ in 0..6 {
            let got = collect(&tree, "jobs/1");
            assert_eq!(got.len(), 2, "one worker plus the observer: {got:?}");
            assert!(got.contains(&(9, "observer")));
            picked.extend(got.into_iter().filter(|(k, _)| *k != 9).map(|(k, _)| k));
        }
        assert_eq!(picked, vec![1, 2, 3, 1, 2, 3]);
        tree.remove(&filter, Some("workers"), &2);
        assert_eq!(collect(&tree, "jobs/1").len(), 2);
    }

    #[test]
    fn dollar_topics_skip_root_wildcards_in_the_tree_too() {
        let mut tree = SubscriptionTree::new();
        tree.insert(&Filter::mqtt("#").unwrap(), None, 1, "all");
        tree.insert(&Filter::mqtt("$SYS/#").unwrap(), None, 2, "sys");
        assert_eq!(collect(&tree, "$SYS/load"), vec![(2, "sys")]);
        assert_eq!(collect(&tree, "a/$b"), vec![(1, "all")]);
    }

    fn level() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("a".to_owned()),
            Just("b".to_owned()),
            Just("$c".to_owned()),
            Just(String::new())
        ]
    }

    fn filter_text() -> impl Strategy<Value = String> {
        prop::collection::vec(prop_oneof![level(), Just("+".to_owned())], 1..4).prop_flat_map(
            |levels| {
                (Just(levels), any::<bool>()).prop_map(|(mut levels, hash)| {
                    if hash {
                        levels.push("#".to_owned());
                    }
                    let text = levels.join("/");
                    if text.is_empty() {
                        "a".to_owned()
                    } else {
                        text
                    }
                })
            },
        )
    }

    proptest! {
        /// The tree and the plain matcher agree on every filter/topic pair.
        #[test]
        fn tree_agrees_with_filter_matching(
            filters in prop::collection::vec(filter_text(), 1..12),
            topic in prop::collection::vec(level(), 1..5),
        ) {
            let mut tree = SubscriptionTree::new();
            let parsed: Vec<Filter> = filters.iter().map(|f| Filter::mqtt(f).unwrap()).collect();
            for (i, filter) in parsed.iter().enumerate() {
                tree.insert(filter, None, i, ());
            }
            let mut from_tree = Vec::new();
            tree.matches(&topic, |m| from_tree.push(*m.key));
            from_tree.sort();
            from_tree.dedup();
            let mut expected: Vec<usize> = Vec::new();
            for (i, filter) in parsed.iter().enumerate() {
                if filter.matches(&topic) && !parsed[..i].contains(filter) {
                    expected.push(i);
                }
            }
            // Duplicated filters keep only the first key's entry per key; compare by filter.
            let tree_filters: std::collections::BTreeSet<&Filter> = from_tree.iter().map(|&i| &parsed[i]).collect();
            let want_filters: std::collections::BTreeSet<&Filter> = expected.iter().map(|&i| &parsed[i]).collect();
            prop_assert_eq!(tree_filters, want_filters);
        }
    }
}
