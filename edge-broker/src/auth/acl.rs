//! Topic permissions: Mosquitto's `acl_file` syntax, and the effective rules of one client.
//!
//! # Syntax (Mosquitto's, read as it is)
//!
//! ```text
//! # comment (only where '#' is the first character of the line)
//! topic [read|write|readwrite|deny] FILTER   # before any `user` line: anonymous clients
//! user NAME                                  # the lines below are NAME's, up to the next `user`
//! topic [read|write|readwrite|deny] FILTER
//! pattern [read|write|readwrite|deny] FILTER # every client; %u = user name, %c = client id
//! ```
//!
//! The access word is optional (default `readwrite`; needed when FILTER has a space). Filters
//! use MQTT wildcards and are MQTT topics: NATS subjects are mapped to MQTT topics before they
//! are checked, so one rule covers both protocols.
//!
//! # Meaning
//!
//! With an ACL, everything not granted is refused. For a client, the rules are its user's
//! `topic` lines (or the anonymous ones when it has no user name) plus every `pattern` line with
//! `%u`/`%c` substituted. A pattern whose user name or client id contains `+`, `#` or `/` does
//! not apply to that client (its substitution could widen the filter; Mosquitto refuses the
//! first two as well), and a `%u` pattern does not apply to anonymous clients.
//!
//! - publish to TOPIC: no `deny` rule matches TOPIC, and a `write`/`readwrite` rule does;
//! - subscribe to FILTER: some `read`/`readwrite` rule covers FILTER (every topic FILTER can
//!   match, that rule matches too) and no `deny` rule covers it. A granted subscription that
//!   overlaps a `deny` rule is *filtered*: each message is checked as a read of its topic;
//! - receive a message on TOPIC (filtered subscriptions, and every subscription after a reload
//!   changed the rules): no `deny` rule matches TOPIC, and a `read`/`readwrite` rule does.
//!
//! `deny` wins over any grant, as in Mosquitto. Unlike Mosquitto 2.0.11, which grants every
//! SUBSCRIBE and only filters deliveries, a subscription no rule can satisfy is refused at once
//! (SUBACK 0x80 / 0x87), so the client learns it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use edge_proto::mqtt::topic;

/// Largest ACL file read.
pub const MAX_FILE_BYTES: u64 = 16 << 20;

/// Why an ACL file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AclError {
    /// The file cannot be read.
    #[error("ACL file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_FILE_BYTES`].
    #[error("ACL file {path}: {bytes} bytes is more than the {max} accepted")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        bytes: u64,
        /// The limit.
        max: u64,
    },
    /// A line is not a valid rule.
    #[error("ACL file {path}, line {line}: {reason}")]
    Line {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
}

/// What a rule grants (or, for `deny`, takes away).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Subscribe and receive.
    Read,
    /// Publish.
    Write,
    /// Both.
    ReadWrite,
    /// Neither, whatever else grants it.
    Deny,
}

impl Access {
    fn parse(word: &str) -> Option<Access> {
        match word {
            "read" => Some(Access::Read),
            "write" => Some(Access::Write),
            "readwrite" => Some(Access::ReadWrite),
            "deny" => Some(Access::Deny),
            _ => None,
        }
    }
}

/// One `topic` line.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    access: Access,
    filter: String,
}

/// A parsed ACL file.
#[derive(Debug, Clone, Default)]
pub struct Acl {
    anonymous: Vec<Rule>,
    users: HashMap<String, Vec<Rule>>,
    patterns: Vec<Rule>,
}

impl Acl {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<Acl, AclError> {
        let read_error = |source| AclError::Read {
            path: path.to_owned(),
            source,
        };
        let bytes = std::fs::metadata(path).map_err(read_error)?.len();
        if bytes > MAX_FILE_BYTES {
            return Err(AclError::TooLarge {
                path: path.to_owned(),
                bytes,
                max: MAX_FILE_BYTES,
            });
        }
        let text = std::fs::read_to_string(path).map_err(read_error)?;
        Acl::parse(&text, path)
    }

    /// Parses ACL text; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Acl, AclError> {
        let mut acl = Acl::default();
        let mut user: Option<String> = None;
        for (index, line) in text.lines().enumerate() {
            let error = |reason: String| AclError::Line {
                path: path.to_owned(),
                line: index + 1,
                reason,
            };
            if line.starts_with('#') {
                continue;
            }
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let (keyword, rest) = line.split_once([' ', '\t']).unwrap_or((line, ""));
            let rest = rest.trim_start();
            match keyword {
                "user" => {
                    if rest.is_empty() {
                        return Err(error("`user` needs a user name".to_owned()));
                    }
                    user = Some(rest.to_owned());
                    acl.users.entry(rest.to_owned()).or_default();
                }
                "topic" | "pattern" => {
                    let rule = parse_rule(rest, keyword == "pattern").map_err(error)?;
                    match (keyword, &user) {
                        ("pattern", _) => acl.patterns.push(rule),
                        (_, Some(name)) => acl.users.entry(name.clone()).or_default().push(rule),
                        (_, None) => acl.anonymous.push(rule),
                    }
                }
                other => {
                    return Err(error(format!(
                        "unknown keyword {other:?}: expected topic, user or pattern"
                    )));
                }
            }
        }
        Ok(acl)
    }

    /// Number of `topic` and `pattern` lines.
    pub fn rule_count(&self) -> usize {
        self.anonymous.len()
            + self.patterns.len()
            + self.users.values().map(Vec::len).sum::<usize>()
    }

    /// The effective rules of a client: its user's (or the anonymous) rules and the patterns
    /// that apply to it, substituted.
    pub fn rules_for(&self, user: Option<&str>, client_id: &str) -> RuleSet {
        let mut set = RuleSet::default();
        let own = match user {
            Some(user) => self.users.get(user).map(Vec::as_slice).unwrap_or(&[]),
            None => &self.anonymous,
        };
        for rule in own {
            set.add(rule.access, rule.filter.clone());
        }
        let safe = |value: &str| !value.contains(['+', '#', '/']) && !value.is_empty();
        for rule in &self.patterns {
            let needs_user = rule.filter.contains("%u");
            let needs_client = rule.filter.contains("%c");
            let user_value = match (needs_user, user) {
                (false, _) => "",
                (true, Some(user)) if safe(user) => user,
                (true, _) => continue,
            };
            if needs_client && !safe(client_id) {
                continue;
            }
            let filter = rule
                .filter
                .replace("%u", user_value)
                .replace("%c", client_id);
            set.add(rule.access, filter);
        }
        set
    }
}

/// Parses what follows `topic` or `pattern`: an optional access word, then the filter.
fn parse_rule(rest: &str, pattern: bool) -> Result<Rule, String> {
    let (access, filter) = match rest.split_once([' ', '\t']) {
        Some((word, filter)) => match Access::parse(word) {
            Some(access) => (access, filter.trim()),
            None => (Access::ReadWrite, rest),
        },
        None => (Access::ReadWrite, rest),
    };
    if filter.is_empty() {
        return Err("a topic filter is needed".to_owned());
    }
    if filter.len() > usize::from(u16::MAX) {
        return Err("topic filter longer than 65535 bytes".to_owned());
    }
    // Patterns are checked with their placeholders standing for one level.
    let checked = if pattern {
        filter.replace("%u", "u").replace("%c", "c")
    } else {
        filter.to_owned()
    };
    topic::validate_filter(&checked)
        .map_err(|e| format!("invalid topic filter {filter:?}: {e}"))?;
    Ok(Rule {
        access,
        filter: filter.to_owned(),
    })
}

/// What a SUBSCRIBE gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscribeVerdict {
    /// Refused (SUBACK 0x80 / 0x87, NATS `-ERR 'Permissions Violation for Subscription ...'`).
    Denied,
    /// Granted; every message the filter matches may be read.
    Granted,
    /// Granted, but a `deny` rule overlaps it: each message is checked before delivery.
    Filtered,
}

/// The effective rules of one client (user and client id substituted).
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    deny: Vec<String>,
    read: Vec<String>,
    write: Vec<String>,
    /// The same filters as tries: a topic is matched in time proportional to its levels, not
    /// to the number of rules (the per-publish and per-delivery checks).
    deny_trie: FilterTrie,
    read_trie: FilterTrie,
    write_trie: FilterTrie,
}

impl RuleSet {
    fn add(&mut self, access: Access, filter: String) {
        match access {
            Access::Read => {
                self.read_trie.insert(&filter);
                self.read.push(filter);
            }
            Access::Write => {
                self.write_trie.insert(&filter);
                self.write.push(filter);
            }
            Access::ReadWrite => {
                self.read_trie.insert(&filter);
                self.write_trie.insert(&filter);
                self.read.push(filter.clone());
                self.write.push(filter);
            }
            Access::Deny => {
                self.deny_trie.insert(&filter);
                self.deny.push(filter);
            }
        }
    }

    /// Whether the client may publish to `topic_name`.
    pub fn may_publish(&self, topic_name: &str) -> bool {
        !self.deny_trie.matches(topic_name) && self.write_trie.matches(topic_name)
    }

    /// Whether the client may receive a message published to `topic_name`.
    pub fn may_read(&self, topic_name: &str) -> bool {
        !self.deny_trie.matches(topic_name) && self.read_trie.matches(topic_name)
    }

    /// Whether (and how) the client may subscribe to `filter` (without any `$share/` prefix).
    pub fn subscribe(&self, filter: &str) -> SubscribeVerdict {
        if !self.read.iter().any(|r| covers(r, filter))
            || self.deny.iter().any(|d| covers(d, filter))
        {
            SubscribeVerdict::Denied
        } else if self.deny.iter().any(|d| overlaps(d, filter)) {
            SubscribeVerdict::Filtered
        } else {
            SubscribeVerdict::Granted
        }
    }
}

/// A set of MQTT topic filters as a trie of levels, matched without recursion.
#[derive(Debug, Clone, Default)]
pub struct FilterTrie {
    nodes: Vec<TrieNode>,
}

#[derive(Debug, Clone, Default)]
struct TrieNode {
    literal: HashMap<Box<str>, usize, Fnv>,
    plus: Option<usize>,
    /// A filter ends with `/#` here (or is `#` at the root): matches this level and below.
    hash: bool,
    /// A filter ends exactly here.
    end: bool,
}

impl FilterTrie {
    /// Adds a (valid) filter.
    pub fn insert(&mut self, filter: &str) {
        if self.nodes.is_empty() {
            self.nodes.push(TrieNode::default());
        }
        let mut at = 0;
        for level in filter.split('/') {
            if level == "#" {
                self.nodes[at].hash = true;
                return;
            }
            let next = self.nodes.len();
            let child = if level == "+" {
                *self.nodes[at].plus.get_or_insert(next)
            } else {
                *self.nodes[at].literal.entry(level.into()).or_insert(next)
            };
            if child == next {
                self.nodes.push(TrieNode::default());
            }
            at = child;
        }
        self.nodes[at].end = true;
    }

    /// Whether any filter matches the (valid) topic name, with MQTT's rule that wildcards at
    /// the root do not match `$` topics. An explicit stack: at most two branches per level.
    pub fn matches(&self, topic_name: &str) -> bool {
        if self.nodes.is_empty() {
            return false;
        }
        let levels: smallvec::SmallVec<[&str; 16]> = topic_name.split('/').collect();
        let dollar = topic_name.starts_with('$');
        let mut stack: smallvec::SmallVec<[(usize, usize); 16]> = smallvec::smallvec![(0, 0)];
        while let Some((at, depth)) = stack.pop() {
            let node = &self.nodes[at];
            let wild_ok = !(dollar && at == 0);
            if node.hash && wild_ok {
                return true;
            }
            let Some(level) = levels.get(depth) else {
                if node.end {
                    return true;
                }
                continue;
            };
            if let Some(&child) = node.literal.get(*level) {
                stack.push((child, depth + 1));
            }
            if let Some(child) = node.plus.filter(|_| wild_ok) {
                stack.push((child, depth + 1));
            }
        }
        false
    }
}

/// FNV-1a: keys are short topic levels, the tables are built from the ACL file (not from
/// client input), so a fast non-keyed hash is safe here and several times cheaper than SipHash.
pub type Fnv = std::hash::BuildHasherDefault<FnvHasher>;

/// The FNV-1a 64-bit hasher behind [`Fnv`].
#[derive(Debug, Clone, Copy)]
pub struct FnvHasher(u64);

impl Default for FnvHasher {
    fn default() -> Self {
        FnvHasher(0xcbf2_9ce4_8422_2325)
    }
}

impl std::hash::Hasher for FnvHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0 ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// Recent answers for topics (a device repeats a few): at most [`VerdictCache::ENTRIES`]
/// names of at most [`VerdictCache::MAX_NAME`] bytes each; emptied when full or when the rules
/// change. Its keys come from clients, so it is bounded in count and bytes; a colliding FNV
/// key costs a comparison, never a wrong answer (keys are compared in full).
///
/// Boxed, made at the first answer: every connection holds one (in its `Permissions`), and
/// without an ACL or publishes it stays empty; inline, the empty map was 32 bytes of each.
#[derive(Debug, Default)]
pub struct VerdictCache {
    // The point is the pointer-sized empty state, not to move the map's table.
    #[allow(clippy::box_collection)]
    answers: Option<Box<HashMap<Box<str>, bool, Fnv>>>,
}

impl VerdictCache {
    /// Most names remembered.
    pub const ENTRIES: usize = 64;
    /// Longest name remembered (longer ones are checked every time).
    pub const MAX_NAME: usize = 256;

    /// The remembered answer for `name`.
    pub fn get(&self, name: &str) -> Option<bool> {
        self.answers.as_ref()?.get(name).copied()
    }

    /// Remembers `answer` for `name`.
    pub fn put(&mut self, name: &str, answer: bool) {
        if name.len() > Self::MAX_NAME {
            return;
        }
        let answers = self.answers.get_or_insert_with(Box::default);
        if answers.len() >= Self::ENTRIES {
            answers.clear();
        }
        answers.insert(name.into(), answer);
    }

    /// Forgets everything (the rules changed).
    pub fn clear(&mut self) {
        if let Some(answers) = &mut self.answers {
            answers.clear();
        }
    }
}

/// MQTT's rule that a filter starting with a wildcard does not match `$` topics (4.7.2).
fn dollar_mismatch(outer: &str, inner: &str) -> bool {
    inner.starts_with('$') && (outer.starts_with('+') || outer.starts_with('#'))
}

/// Whether every topic `inner` matches is matched by `outer` (both valid MQTT filters).
pub fn covers(outer: &str, inner: &str) -> bool {
    if dollar_mismatch(outer, inner) {
        return false;
    }
    let mut o = outer.split('/');
    let mut i = inner.split('/');
    loop {
        match (o.next(), i.next()) {
            // `a/#` covers `a` and everything below it.
            (Some("#"), _) => return true,
            (None, None) => return true,
            // `inner` ends here: only a final `#` of `outer` still matches (`a` ⊂ `a/#`).
            (Some(ol), None) => return ol == "#",
            (None, Some(_)) => return false,
            (Some(_), Some("#")) => return false,
            (Some("+"), Some(_)) => {}
            (Some(_), Some("+")) => return false,
            (Some(ol), Some(il)) if ol == il => {}
            _ => return false,
        }
    }
}

/// Whether some topic matches both `a` and `b` (valid MQTT filters).
pub fn overlaps(a: &str, b: &str) -> bool {
    if dollar_mismatch(a, b) || dollar_mismatch(b, a) {
        return false;
    }
    let mut x = a.split('/');
    let mut y = b.split('/');
    loop {
        match (x.next(), y.next()) {
            (Some("#"), _) | (_, Some("#")) => return true,
            (None, None) => return true,
            (Some(_), None) | (None, Some(_)) => return false,
            (Some("+"), Some(_)) | (Some(_), Some("+")) => {}
            (Some(l), Some(r)) if l == r => {}
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn acl(text: &str) -> Acl {
        Acl::parse(text, Path::new("acl")).unwrap()
    }

    const FILE: &str = "\
# anonymous clients
topic read public/#
user alice
topic read sensors/#
topic deny sensors/secret
topic write sensors/alice/#
user bob
topic readwrite bob/#
topic write has space/x y
pattern readwrite devices/%u/#
pattern write clients/%c
";

    #[test]
    fn users_patterns_and_anonymous_rules_apply_to_the_right_clients() {
        let acl = acl(FILE);
        assert_eq!(acl.rule_count(), 8);
        let alice = acl.rules_for(Some("alice"), "a1");
        assert!(alice.may_publish("sensors/alice/t"));
        assert!(!alice.may_publish("sensors/bob/t"));
        assert!(!alice.may_publish("bob/x"));
        assert!(alice.may_publish("devices/alice/x"), "pattern %u");
        assert!(!alice.may_publish("devices/bob/x"));
        assert!(alice.may_publish("clients/a1"), "pattern %c");
        assert!(!alice.may_publish("clients/a2"));
        assert!(alice.may_read("sensors/x"));
        assert!(!alice.may_read("sensors/secret"), "deny wins");
        assert!(
            !alice.may_read("public/x"),
            "anonymous rules are not alice's"
        );

        let anon = acl.rules_for(None, "c");
        assert!(anon.may_read("public/news"));
        assert!(!anon.may_publish("public/news"));
        assert!(!anon.may_read("devices/c/x"));
        assert!(anon.may_publish("clients/c"));

        let bob = acl.rules_for(Some("bob"), "b");
        assert!(bob.may_publish("has space/x y"));
        let stranger = acl.rules_for(Some("mallory"), "m");
        assert!(!stranger.may_read("sensors/x"));
        assert!(stranger.may_publish("devices/mallory/1"));
    }

    #[test]
    fn wildcards_in_names_do_not_widen_patterns() {
        let acl = acl("pattern readwrite devices/%u/#\npattern write c/%c\n");
        for name in ["+", "#", "a/b", "x+"] {
            let set = acl.rules_for(Some(name), name);
            assert!(!set.may_publish("devices/a/x"), "{name}");
            assert!(!set.may_publish("c/a"), "{name}");
        }
    }

    #[test]
    fn subscriptions_must_be_covered_and_overlapping_denies_filter() {
        let alice = acl(FILE).rules_for(Some("alice"), "a1");
        assert_eq!(alice.subscribe("#"), SubscribeVerdict::Denied);
        assert_eq!(alice.subscribe("sensors/+/t"), SubscribeVerdict::Granted);
        assert_eq!(alice.subscribe("sensors/x"), SubscribeVerdict::Granted);
        assert_eq!(alice.subscribe("sensors/#"), SubscribeVerdict::Filtered);
        assert_eq!(alice.subscribe("sensors/+"), SubscribeVerdict::Filtered);
        assert_eq!(alice.subscribe("sensors/secret"), SubscribeVerdict::Denied);
        assert_eq!(
            alice.subscribe("devices/alice/#"),
            SubscribeVerdict::Granted
        );
        assert_eq!(alice.subscribe("devices/+/x"), SubscribeVerdict::Denied);
    }

    #[test]
    fn bad_lines_name_the_line() {
        for (text, reason) in [
            ("topic", "topic filter"),
            ("user", "user name"),
            ("topic read a/#/b", "invalid topic filter"),
            ("topics read a", "unknown keyword"),
            ("pattern write a%u/#/x", "invalid topic filter"),
        ] {
            let err = Acl::parse(&format!("# x\n{text}\n"), Path::new("acl")).unwrap_err();
            let message = err.to_string();
            assert!(message.contains("line 2"), "{text}: {message}");
            assert!(message.contains(reason), "{text}: {message}");
        }
    }

    #[test]
    fn the_verdict_cache_is_bounded_in_count_and_name_length() {
        let mut cache = VerdictCache::default();
        for i in 0..1000 {
            cache.put(&format!("t/{i}"), i % 2 == 0);
            assert!(cache.answers.as_ref().map_or(0, |a| a.len()) <= VerdictCache::ENTRIES);
        }
        assert_eq!(cache.get("t/998"), Some(true));
        assert_eq!(cache.get("t/999"), Some(false));
        cache.put(&"x".repeat(VerdictCache::MAX_NAME + 1), true);
        assert_eq!(cache.get(&"x".repeat(VerdictCache::MAX_NAME + 1)), None);
    }

    #[test]
    fn covers_and_overlaps_by_example() {
        for (outer, inner, expected) in [
            ("#", "a/b", true),
            ("a/#", "a", true),
            ("a/#", "a/+/c", true),
            ("a/+", "a/#", false),
            ("a/+", "a/+", true),
            ("a/b", "a/+", false),
            ("+/b", "x/b", true),
            ("#", "$SYS/x", false),
            ("$SYS/#", "$SYS/x", true),
            ("a/+/#", "a", false),
        ] {
            assert_eq!(covers(outer, inner), expected, "{outer} ⊇ {inner}");
        }
        assert!(overlaps("a/+", "+/b"));
        assert!(overlaps("a/#", "a"));
        assert!(!overlaps("a/b", "a/c"));
        assert!(!overlaps("a/+", "a"));
    }

    fn level() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("a".to_owned()),
            Just("b".to_owned()),
            Just("+".to_owned()),
            Just("".to_owned())
        ]
    }

    fn filter() -> impl Strategy<Value = String> {
        (prop::collection::vec(level(), 1..4), any::<bool>()).prop_map(|(levels, hash)| {
            let mut f = levels.join("/");
            if hash {
                f.push_str("/#");
            }
            f
        })
    }

    fn topic_name() -> impl Strategy<Value = String> {
        prop::collection::vec(prop_oneof![Just("a"), Just("b"), Just("")], 1..6)
            .prop_map(|levels| levels.join("/"))
    }

    proptest! {
        // The trie answers what matching every filter one by one answers.
        #[test]
        fn the_trie_agrees_with_the_plain_matcher(
            filters in prop::collection::vec(filter(), 0..12),
            topics in prop::collection::vec(topic_name(), 1..20),
        ) {
            let mut trie = FilterTrie::default();
            for f in &filters {
                trie.insert(f);
            }
            for t in topics.iter().chain([&"$SYS/a".to_owned()]) {
                let expected = filters.iter().any(|f| topic::matches(f, t));
                prop_assert_eq!(trie.matches(t), expected, "{:?} vs {}", filters, t);
            }
        }

        // Model check against the plain matcher: `covers` never claims a topic the outer
        // filter does not match, and `overlaps` never misses a topic both match.
        #[test]
        fn covers_and_overlaps_agree_with_matching(
            outer in filter(), inner in filter(), topics in prop::collection::vec(topic_name(), 1..20)
        ) {
            for t in &topics {
                let both = topic::matches(&outer, t) && topic::matches(&inner, t);
                if covers(&outer, &inner) && topic::matches(&inner, t) {
                    prop_assert!(topic::matches(&outer, t), "{outer} ⊇ {inner} but not for {t}");
                }
                if both {
                    prop_assert!(overlaps(&outer, &inner), "{outer} ∩ {inner} has {t}");
                }
            }
        }
    }
}
