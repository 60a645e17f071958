//! The subscription tree: which subscribers want a topic, in time proportional to the topic's
//! depth rather than to the number of subscriptions.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};

use edge_proto::mqtt::topic;
use smallvec::SmallVec;

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
    literal: Children<K, V>,
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
            literal: Children::Few(Vec::new()),
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
        // Most entry lists a match passes are empty: two length checks, no iterators.
        if self.is_empty() {
            return;
        }
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

impl<K, V> Entries<K, V> {
    /// Visits the direct subscriptions, unless a share group is here (it picks a member per
    /// message, so no answer holds for more than one): then false, nothing visited.
    fn visit_direct<'a>(&'a self, visit: &mut impl FnMut(&'a K, &'a V)) -> bool {
        if !self.shared.is_empty() {
            return false;
        }
        for (key, value) in &self.direct {
            visit(key, value);
        }
        true
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

    /// Whether this node holds nothing but the child on `level` (so removing that child, once
    /// it is empty, leaves this node empty too).
    fn only_child_is(&self, level: &Level) -> bool {
        let entries_empty =
            self.here.is_empty() && self.zero_or_more.is_empty() && self.one_or_more.is_empty();
        entries_empty
            && match level {
                Level::One => self.literal.is_empty(),
                Level::Literal(text) => {
                    self.one.is_none() && self.literal.len() == 1 && self.literal.contains_key(text)
                }
                Level::ZeroOrMore | Level::OneOrMore => false,
            }
    }

    fn child(&self, level: &Level) -> Option<&Node<K, V>> {
        match level {
            Level::One => self.one.as_deref(),
            Level::Literal(text) => self.literal.get(text),
            Level::ZeroOrMore | Level::OneOrMore => None,
        }
    }

    fn child_mut(&mut self, level: &Level) -> Option<&mut Node<K, V>> {
        match level {
            Level::One => self.one.as_deref_mut(),
            Level::Literal(text) => self.literal.get_mut(text),
            Level::ZeroOrMore | Level::OneOrMore => None,
        }
    }

    fn remove_child(&mut self, level: &Level) {
        match level {
            Level::One => self.one = None,
            Level::Literal(text) => {
                self.literal.remove(text);
            }
            Level::ZeroOrMore | Level::OneOrMore => {}
        }
    }
}

/// Tearing a tree down walks it with a heap stack: a deep filter must not recurse in `drop`.
impl<K, V> Drop for Node<K, V> {
    fn drop(&mut self) {
        let mut stack: Vec<Node<K, V>> = self.literal.take_nodes();
        stack.extend(self.one.take().map(|node| *node));
        while let Some(mut node) = stack.pop() {
            stack.extend(node.literal.take_nodes());
            stack.extend(node.one.take().map(|node| *node));
            // `node` has no children left: dropping it does not recurse.
        }
    }
}

/// A node's literal children. A level has a handful of them in most trees (a gateway's topics
/// differ in a few places), and comparing a few short names costs less than one SipHash of the
/// level, so up to [`Children::FEW`] they are a list searched in order. From there on they are
/// a `HashMap` (SipHash with random keys: no collisions a client can aim for when it
/// subscribes to many names under one level). It does not go back to a list.
#[derive(Debug)]
enum Children<K, V> {
    Few(Vec<(String, Node<K, V>)>),
    Many(HashMap<String, Node<K, V>>),
}

impl<K, V> Children<K, V> {
    /// The most children kept as a list.
    const FEW: usize = 8;

    fn len(&self) -> usize {
        match self {
            Children::Few(list) => list.len(),
            Children::Many(map) => map.len(),
        }
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn get(&self, level: &str) -> Option<&Node<K, V>> {
        match self {
            Children::Few(list) => list
                .iter()
                .find(|(name, _)| name == level)
                .map(|(_, node)| node),
            Children::Many(map) => map.get(level),
        }
    }

    fn get_mut(&mut self, level: &str) -> Option<&mut Node<K, V>> {
        match self {
            Children::Few(list) => list
                .iter_mut()
                .find(|(name, _)| name == level)
                .map(|(_, node)| node),
            Children::Many(map) => map.get_mut(level),
        }
    }

    fn contains_key(&self, level: &str) -> bool {
        self.get(level).is_some()
    }

    /// The child on `level`, made empty if there was none.
    fn get_or_insert(&mut self, level: &str) -> &mut Node<K, V> {
        if let Children::Few(list) = self
            && list.len() >= Self::FEW
            && !list.iter().any(|(name, _)| name == level)
        {
            *self = Children::Many(std::mem::take(list).into_iter().collect());
        }
        match self {
            Children::Few(list) => {
                let at = match list.iter().position(|(name, _)| name == level) {
                    Some(at) => at,
                    None => {
                        list.push((level.to_owned(), Node::default()));
                        list.len() - 1
                    }
                };
                &mut list[at].1
            }
            Children::Many(map) => map.entry(level.to_owned()).or_default(),
        }
    }

    fn remove(&mut self, level: &str) {
        match self {
            Children::Few(list) => list.retain(|(name, _)| name != level),
            Children::Many(map) => {
                map.remove(level);
            }
        }
    }

    /// Takes every child out (for dropping a tree without recursion).
    fn take_nodes(&mut self) -> Vec<Node<K, V>> {
        match self {
            Children::Few(list) => list.drain(..).map(|(_, node)| node).collect(),
            Children::Many(map) => map.drain().map(|(_, node)| node).collect(),
        }
    }
}

/// Where a filter's subscriptions live: the path of child levels to walk from the root, then
/// which entry list of the node reached.
fn split_filter(levels: &[Level]) -> (&[Level], Slot) {
    match levels.last() {
        Some(Level::ZeroOrMore) => (&levels[..levels.len() - 1], Slot::ZeroOrMore),
        Some(Level::OneOrMore) => (&levels[..levels.len() - 1], Slot::OneOrMore),
        _ => (levels, Slot::Here),
    }
}

/// One of a node's entry lists.
#[derive(Debug, Clone, Copy)]
enum Slot {
    Here,
    ZeroOrMore,
    OneOrMore,
}

impl<K, V> Node<K, V> {
    fn slot_mut(&mut self, slot: Slot) -> &mut Entries<K, V> {
        match slot {
            Slot::Here => &mut self.here,
            Slot::ZeroOrMore => &mut self.zero_or_more,
            Slot::OneOrMore => &mut self.one_or_more,
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
        let (path, slot) = split_filter(filter.levels());
        let mut node = &mut self.root;
        for level in path {
            node = match level {
                Level::Literal(text) => node.literal.get_or_insert(text),
                _ => node.one.get_or_insert_with(Box::default),
            };
        }
        let old = node.slot_mut(slot).insert(group, key, value);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// Removes `key`'s subscription to `filter` (in share `group`); returns its value.
    pub fn remove(&mut self, filter: &Filter, group: Option<&str>, key: &K) -> Option<V> {
        let (path, slot) = split_filter(filter.levels());
        let mut node = &mut self.root;
        for level in path {
            node = node.child_mut(level)?;
        }
        let removed = node.slot_mut(slot).remove(group, key)?;
        self.len -= 1;
        self.prune(path);
        Some(removed)
    }

    /// Calls `visit` for every subscription matching `topic` (split into levels): every direct
    /// subscriber, and one member (round robin) of each matching share group. A subscriber with
    /// several matching filters is visited once per filter; merging is the caller's policy.
    pub fn matches<'a, S: AsRef<str>>(
        &'a self,
        topic: &[S],
        mut visit: impl FnMut(Matched<'a, K, V>),
    ) {
        // Depth-first with a stack of (node, index of the next topic level) instead of
        // recursion: the depth comes from clients. Each node pushes at most two children, so
        // the stack stays within twice the topic's depth; sixteen entries cover real topics
        // without touching the heap.
        let mut stack: SmallVec<[(&'a Node<K, V>, usize); 16]> = SmallVec::new();
        stack.push((&self.root, 0));
        while let Some((node, at)) = stack.pop() {
            let Some(level) = topic.get(at) else {
                node.here.visit(&mut visit);
                node.zero_or_more.visit(&mut visit);
                continue;
            };
            let level = level.as_ref();
            // MQTT 4.7.2: wildcards at the first level do not match `$`-topics.
            if at != 0 || topic::wildcard_reaches(level) {
                node.zero_or_more.visit(&mut visit);
                node.one_or_more.visit(&mut visit);
                if let Some(one) = &node.one {
                    stack.push((one, at + 1));
                }
            }
            if let Some(child) = node.literal.get(level) {
                stack.push((child, at + 1));
            }
        }
    }

    /// The subscriptions that every topic made of `prefix` and one more level matches,
    /// whatever that level is: calls `visit` for each and returns true, when they are the same
    /// for every such topic. Returns false (having visited some or none: the caller forgets
    /// them) when the answer may depend on the last level (a subscription names a level right
    /// below the prefix), when a share group matches (it picks a member per message), or when
    /// `prefix` is empty (a first level may be a `$` one).
    pub fn matches_any_last<'a, S: AsRef<str>>(
        &'a self,
        prefix: &[S],
        mut visit: impl FnMut(&'a K, &'a V),
    ) -> bool {
        if prefix.is_empty() {
            return false;
        }
        let last = prefix.len();
        let mut stack: SmallVec<[(&'a Node<K, V>, usize); 16]> = SmallVec::new();
        stack.push((&self.root, 0));
        while let Some((node, at)) = stack.pop() {
            if at > last {
                // Past the last level: the topic ends here.
                if !(node.here.visit_direct(&mut visit)
                    && node.zero_or_more.visit_direct(&mut visit))
                {
                    return false;
                }
                continue;
            }
            // `None`: the last level, any name.
            let level = prefix.get(at).map(AsRef::as_ref);
            if at != 0 || level.is_some_and(topic::wildcard_reaches) {
                if !(node.zero_or_more.visit_direct(&mut visit)
                    && node.one_or_more.visit_direct(&mut visit))
                {
                    return false;
                }
                if let Some(one) = &node.one {
                    stack.push((one, at + 1));
                }
            }
            match level {
                Some(level) => {
                    if let Some(child) = node.literal.get(level) {
                        stack.push((child, at + 1));
                    }
                }
                None if !node.literal.is_empty() => return false,
                None => {}
            }
        }
        true
    }

    /// After a removal under `path`: drops the highest node on the path whose subtree is now
    /// empty (every node below it held nothing but the next one on the path).
    fn prune(&mut self, path: &[Level]) {
        // nodes[i] is the node reached after i levels of the path.
        let mut nodes: Vec<&Node<K, V>> = Vec::with_capacity(path.len() + 1);
        let mut node = &self.root;
        nodes.push(node);
        for level in path {
            match node.child(level) {
                Some(child) => node = child,
                None => return,
            }
            nodes.push(node);
        }
        if !node.is_empty() {
            return;
        }
        // Walk up while the parent would become empty too; never removes the root.
        let mut cut = path.len();
        while cut > 1 && nodes[cut - 1].only_child_is(&path[cut - 1]) {
            cut -= 1;
        }
        if cut == 0 {
            return;
        }
        let mut parent = &mut self.root;
        for level in &path[..cut - 1] {
            match parent.child_mut(level) {
                Some(child) => parent = child,
                None => return,
            }
        }
        parent.remove_child(&path[cut - 1]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::filter::mqtt_levels;
    use proptest::prelude::*;

    fn child<'a, K, V>(node: &'a Node<K, V>, level: &str) -> &'a Node<K, V> {
        node.literal.get(level).expect("child exists")
    }

    #[test]
    fn many_names_under_one_level_move_from_the_list_to_a_map() {
        let mut tree = SubscriptionTree::new();
        let names: Vec<String> = (0..3 * Children::<u32, ()>::FEW)
            .map(|i| format!("dev-{i}"))
            .collect();
        for (i, name) in names.iter().enumerate() {
            let filter = Filter::mqtt(&format!("gw/{name}/cmd")).unwrap();
            tree.insert(&filter, None, i, "cmd");
            let gw = child(&tree.root, "gw");
            let many = matches!(gw.literal, Children::Many(_));
            assert_eq!(many, i >= Children::<u32, ()>::FEW, "after {} names", i + 1);
        }
        for (i, name) in names.iter().enumerate() {
            assert_eq!(collect_keys(&tree, &format!("gw/{name}/cmd")), vec![i]);
        }
        for (i, name) in names.iter().enumerate().filter(|(i, _)| i % 2 == 0) {
            let filter = Filter::mqtt(&format!("gw/{name}/cmd")).unwrap();
            assert_eq!(tree.remove(&filter, None, &i), Some("cmd"));
        }
        for (i, name) in names.iter().enumerate() {
            let want = if i % 2 == 0 { vec![] } else { vec![i] };
            assert_eq!(collect_keys(&tree, &format!("gw/{name}/cmd")), want);
        }
        assert_eq!(collect_keys(&tree, "gw/dev-x/cmd"), Vec::<usize>::new());
    }

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
    fn a_reply_prefix_has_one_answer_until_a_level_below_it_is_named() {
        fn keys(tree: &SubscriptionTree<u32, &str>, prefix: &[&str]) -> Option<Vec<u32>> {
            let mut out = Vec::new();
            let answered = tree.matches_any_last(prefix, |key, _| out.push(*key));
            out.sort();
            answered.then_some(out)
        }
        let mut tree = SubscriptionTree::new();
        tree.insert(&Filter::mqtt("_INBOX/p/+").unwrap(), None, 1, "own");
        tree.insert(&Filter::mqtt("#").unwrap(), None, 2, "all");
        tree.insert(
            &Filter::mqtt("_INBOX/q/+").unwrap(),
            None,
            3,
            "other prefix",
        );
        tree.insert(&Filter::mqtt("_INBOX/p/+/more").unwrap(), None, 6, "deeper");
        assert_eq!(keys(&tree, &["_INBOX", "p"]), Some(vec![1, 2]));
        tree.insert(&Filter::mqtt("_INBOX/p/7").unwrap(), None, 4, "one reply");
        assert_eq!(keys(&tree, &["_INBOX", "p"]), None, "_INBOX/p/7 differs");
        assert_eq!(keys(&tree, &["_INBOX", "q"]), Some(vec![2, 3]));
        tree.insert(&Filter::mqtt("_INBOX/#").unwrap(), Some("g"), 5, "group");
        assert_eq!(
            keys(&tree, &["_INBOX", "q"]),
            None,
            "a group picks per message"
        );
        assert_eq!(
            keys(&tree, &["$SYS"]),
            Some(vec![]),
            "# does not reach $SYS/x"
        );
        assert_eq!(keys(&tree, &[]), None, "a first level may be a $ one");
    }

    #[test]
    fn dollar_topics_skip_root_wildcards_in_the_tree_too() {
        let mut tree = SubscriptionTree::new();
        tree.insert(&Filter::mqtt("#").unwrap(), None, 1, "all");
        tree.insert(&Filter::mqtt("$SYS/#").unwrap(), None, 2, "sys");
        assert_eq!(collect(&tree, "$SYS/load"), vec![(2, "sys")]);
        assert_eq!(collect(&tree, "a/$b"), vec![(1, "all")]);
    }

    /// A filter as deep as a client can send (one SUBSCRIBE of ~200 KB): inserting, matching,
    /// removing and dropping it must not recurse. With recursion this overflowed the stack.
    #[test]
    fn a_very_deep_filter_does_not_recurse() {
        const DEPTH: usize = 100_000;
        let text = vec!["a"; DEPTH].join("/");
        let filter = Filter::mqtt(&text).unwrap();
        let plus = Filter::mqtt(&vec!["+"; DEPTH].join("/")).unwrap();
        let hash = Filter::mqtt(&format!("{text}/#")).unwrap();
        let mut tree = SubscriptionTree::new();
        tree.insert(&filter, None, 1u32, "deep");
        tree.insert(&plus, None, 2, "plus");
        tree.insert(&hash, Some("g"), 3, "hash");
        let levels = mqtt_levels(&text);
        let mut found = Vec::new();
        tree.matches(&levels, |m| found.push(*m.key));
        found.sort();
        assert_eq!(found, vec![1, 2, 3]);
        assert_eq!(tree.remove(&filter, None, &1), Some("deep"));
        assert_eq!(tree.remove(&plus, None, &2), Some("plus"));
        assert_eq!(tree.len(), 1);
        // Dropped with the deep '#' subscription still in it.
        drop(tree);

        let mut tree = SubscriptionTree::new();
        tree.insert(&hash, None, 3u32, "hash");
        assert_eq!(tree.remove(&hash, None, &3), Some("hash"));
        assert!(tree.root.is_empty(), "the whole deep path was pruned");
    }

    #[test]
    fn pruning_keeps_nodes_other_filters_need() {
        let mut tree = SubscriptionTree::new();
        let long = Filter::mqtt("a/b/c/d").unwrap();
        let short = Filter::mqtt("a/b").unwrap();
        let side = Filter::mqtt("a/x/c/d").unwrap();
        let plus = Filter::mqtt("a/+/c").unwrap();
        for (key, filter) in [&long, &short, &side, &plus].into_iter().enumerate() {
            tree.insert(filter, None, key, "v");
        }
        assert_eq!(tree.remove(&long, None, &0), Some("v"));
        assert_eq!(collect_keys(&tree, "a/b"), vec![1]);
        assert_eq!(collect_keys(&tree, "a/x/c/d"), vec![2]);
        assert_eq!(collect_keys(&tree, "a/q/c"), vec![3]);
        assert!(child(child(&tree.root, "a"), "b").literal.is_empty());
        assert_eq!(tree.remove(&short, None, &1), Some("v"));
        assert!(!child(&tree.root, "a").literal.contains_key("b"));
        assert_eq!(tree.remove(&plus, None, &3), Some("v"));
        assert!(child(&tree.root, "a").one.is_none());
        assert_eq!(tree.remove(&side, None, &2), Some("v"));
        assert!(tree.root.is_empty());
        assert_eq!(tree.remove(&side, None, &2), None);
    }

    fn collect_keys(tree: &SubscriptionTree<usize, &'static str>, topic: &str) -> Vec<usize> {
        let mut out = Vec::new();
        tree.matches(&mqtt_levels(topic), |m| out.push(*m.key));
        out.sort();
        out
    }

    /// Levels from a small alphabet (so filters and topics meet), with more names than a
    /// list of children holds ([`Children::FEW`]).
    fn level() -> impl Strategy<Value = String> {
        prop::sample::select(vec![
            "a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "$c", "",
        ])
        .prop_map(str::to_owned)
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
            filters in prop::collection::vec(filter_text(), 1..32),
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

        /// Where `matches_any_last` answers for a prefix, its answer is what `matches` gives
        /// for the prefix and any last level (names of the alphabet and one no filter has);
        /// and it answers whenever no filter names a level right below the prefix and no
        /// share group matches.
        #[test]
        fn an_answer_for_any_last_level_is_the_answer_for_each(
            filters in prop::collection::vec((filter_text(), any::<bool>()), 1..24),
            prefix in prop::collection::vec(level(), 1..4),
        ) {
            let mut tree = SubscriptionTree::new();
            let parsed: Vec<(Filter, bool)> = filters
                .iter()
                .map(|(f, shared)| (Filter::mqtt(f).unwrap(), *shared && f.len() % 3 == 0))
                .collect();
            for (i, (filter, shared)) in parsed.iter().enumerate() {
                tree.insert(filter, shared.then_some("g"), i, ());
            }
            let mut any = Vec::new();
            let answered = tree.matches_any_last(&prefix, |key, _| any.push(*key));
            let mut lasts: Vec<String> = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "$c", ""]
                .into_iter()
                .map(str::to_owned)
                .collect();
            lasts.push("zz".to_owned());
            if answered {
                any.sort();
                for last in &lasts {
                    let mut topic = prefix.clone();
                    topic.push(last.clone());
                    let mut each = Vec::new();
                    tree.matches(&topic, |m| {
                        assert!(m.group.is_none(), "no share group when answered");
                        each.push(*m.key);
                    });
                    each.sort();
                    prop_assert_eq!(&each, &any, "topic {:?}", topic);
                }
            } else {
                // Refused only for a named level right below the prefix or a share group
                // that any of these topics reaches.
                let named = parsed.iter().any(|(filter, _)| {
                    let levels = filter.levels();
                    levels.len() > prefix.len()
                        && matches!(levels[prefix.len()], Level::Literal(_))
                        && levels.iter().zip(&prefix).enumerate().all(|(i, (level, name))| {
                            match level {
                                Level::Literal(text) => text == name,
                                Level::One => i != 0 || topic::wildcard_reaches(name),
                                _ => false,
                            }
                        })
                });
                let grouped = lasts.iter().any(|last| {
                    let mut topic = prefix.clone();
                    topic.push(last.clone());
                    parsed.iter().any(|(filter, shared)| *shared && filter.matches(&topic))
                });
                prop_assert!(named || grouped, "refused without a reason");
            }
        }

        /// Removing any subset keeps exactly the others matching, and removing all leaves an
        /// empty root (pruning never drops a node another filter still needs).
        #[test]
        fn removal_keeps_the_rest_and_prunes_everything(
            filters in prop::collection::btree_set(filter_text(), 1..32),
            remove_mask in prop::collection::vec(any::<bool>(), 32),
            topic in prop::collection::vec(level(), 1..5),
        ) {
            let parsed: Vec<Filter> = filters.iter().map(|f| Filter::mqtt(f).unwrap()).collect();
            let mut tree = SubscriptionTree::new();
            for (i, filter) in parsed.iter().enumerate() {
                tree.insert(filter, None, i, ());
            }
            for (i, filter) in parsed.iter().enumerate() {
                if remove_mask[i] {
                    prop_assert_eq!(tree.remove(filter, None, &i), Some(()));
                }
            }
            let mut from_tree = Vec::new();
            tree.matches(&topic, |m| from_tree.push(*m.key));
            from_tree.sort();
            let expected: Vec<usize> = (0..parsed.len())
                .filter(|&i| !remove_mask[i] && parsed[i].matches(&topic))
                .collect();
            prop_assert_eq!(from_tree, expected);
            for (i, filter) in parsed.iter().enumerate() {
                if !remove_mask[i] {
                    prop_assert_eq!(tree.remove(filter, None, &i), Some(()));
                }
            }
            prop_assert!(tree.root.is_empty());
            prop_assert!(tree.is_empty());
        }
    }
}
