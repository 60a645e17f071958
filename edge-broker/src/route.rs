//! `[[route]]` entries: which publishes are stored, and to which Kafka topic with which key
//! they go. Decided once per publish at ingest ([`RouteTable::decide`]); the decision is
//! stored with the record as its [`Destination`].
//!
//! A route has exactly one filter: an MQTT topic filter (`mqtt = "a/+/b/#"`, `+` one level,
//! `#` the rest, zero or more levels) or a NATS subject pattern (`nats = "a.*.b.>"`, `*` one
//! token, `>` one or more remaining tokens). An MQTT filter matches records that came in over
//! MQTT, a NATS pattern those that came in over NATS (cross-protocol topic translation is the
//! router's job, not the bridge's). As in MQTT, wildcards at the first level do not match
//! topics starting with `$` (for NATS too: a catch-all `>` route must not store `$JS.API`
//! requests). Routes are tried in config order; the first match wins. Validation and matching
//! are edge-proto's, the same the MQTT and NATS front ends apply to what clients send.
//!
//! The key template mixes literal text with `{topic.N}` (the N-th topic level / subject token,
//! 1-based), `{client_id}` and `{node.id}`; `{{` and `}}` are literal braces. A level the topic
//! does not have renders as empty text. No `key` means a null key (see
//! [`crate::partition::NullKeyPartitioner`]). `partition = N` pins every record of the route to
//! one partition instead of hashing the key.
//!
//! Every validation error names the offending field (`route[2].key`) for `edge-broker check`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use parking_lot::RwLock;
use smallvec::SmallVec;
use thiserror::Error;

use edge_log::{Destination, Record, Source};
use edge_proto::mqtt::topic;
use edge_proto::nats::subject;

/// Longest Kafka topic name the broker accepts.
pub const MAX_KAFKA_TOPIC_LEN: usize = 249;

/// One `[[route]]` table as written in the config file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteConfig {
    /// MQTT topic filter (exclusive with `nats`).
    pub mqtt: Option<String>,
    /// NATS subject pattern (exclusive with `mqtt`).
    pub nats: Option<String>,
    /// Destination Kafka topic.
    pub kafka_topic: String,
    /// Key template; `None` sends records with a null key.
    pub key: Option<String>,
    /// Fixed partition overriding the key hash.
    pub partition: Option<i32>,
}

/// A route that failed validation; `field` is the config path, e.g. `route[0].mqtt`.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum RouteError {
    /// Neither `mqtt` nor `nats` was given.
    #[error("{field}: a route needs one of `mqtt` or `nats`")]
    NoFilter {
        /// Config path of the route.
        field: String,
    },
    /// Both `mqtt` and `nats` were given.
    #[error("{field}: a route takes `mqtt` or `nats`, not both")]
    BothFilters {
        /// Config path of the route.
        field: String,
    },
    /// The topic filter / subject pattern is malformed.
    #[error("{field}: invalid filter {pattern:?}: {reason}")]
    BadFilter {
        /// Config path of the bad field.
        field: String,
        /// The filter as written.
        pattern: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The Kafka topic name is not one Kafka accepts.
    #[error("{field}: invalid Kafka topic {topic:?}: {reason}")]
    BadKafkaTopic {
        /// Config path of the bad field.
        field: String,
        /// The topic as written.
        topic: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The key template does not parse or refers to something that cannot exist.
    #[error("{field}: invalid key template {template:?}: {reason}")]
    BadKey {
        /// Config path of the bad field.
        field: String,
        /// The template as written.
        template: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The partition override is negative.
    #[error("{field}: partition must be >= 0, got {partition}")]
    BadPartition {
        /// Config path of the bad field.
        field: String,
        /// The value given.
        partition: i32,
    },
}

/// A validated topic filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    /// MQTT topic filter (`+` one level, `#` zero or more trailing levels).
    Mqtt(String),
    /// NATS subject pattern (`*` one token, `>` one or more trailing tokens).
    Nats(String),
}

/// One piece of a key template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPart {
    /// Text copied as is.
    Literal(String),
    /// `{topic.N}`, stored 0-based.
    TopicLevel(usize),
    /// `{client_id}`.
    ClientId,
    /// `{node.id}`.
    NodeId,
}

/// A parsed key template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyTemplate {
    parts: Vec<KeyPart>,
}

/// A validated route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// What it matches.
    pub filter: Filter,
    /// Destination Kafka topic (shared by every record the route takes).
    pub kafka_topic: Arc<str>,
    /// Key template, if records get a key.
    pub key: Option<KeyTemplate>,
    /// Fixed partition, if set.
    pub partition: Option<i32>,
}

/// All routes of a config, in order; the first match wins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routes {
    routes: Vec<Route>,
}

impl Routes {
    /// Validates every route; the error names the first bad field.
    pub fn compile(configs: &[RouteConfig]) -> Result<Self, RouteError> {
        let routes = configs
            .iter()
            .enumerate()
            .map(|(i, c)| Route::compile(i + 1, c))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { routes })
    }

    /// Every problem of every route, in order; empty when they all compile.
    pub fn problems(configs: &[RouteConfig]) -> Vec<RouteError> {
        configs
            .iter()
            .enumerate()
            .flat_map(|(i, c)| Route::problems(i + 1, c))
            .collect()
    }

    /// The first route matching a record from `source` on `topic`.
    pub fn find(&self, source: Source, topic: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.matches(source, topic))
    }

    /// Where a publish from `source` on `topic` goes upstream (the first matching route, its
    /// key rendered), or `None` when no route takes it (it is not stored).
    pub fn decide(
        &self,
        source: Source,
        topic: &str,
        client_id: &str,
        node_id: &str,
    ) -> Option<Destination> {
        self.find(source, topic)
            .map(|route| route.destination(source, topic, client_id, node_id))
    }

    /// The routes in config order.
    pub fn iter(&self) -> impl Iterator<Item = &Route> {
        self.routes.iter()
    }

    /// Number of routes.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// True when no route is configured.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

/// The routes in force, shared by the MQTT and NATS front ends (which decide each routed
/// publish's destination once, at ingest) and the forwarder (which asks only about records
/// written before destinations were stored with them). A reload swaps the table in place.
#[derive(Debug)]
pub struct RouteTable {
    routes: RwLock<Arc<Routes>>,
    generation: AtomicU64,
    node_id: String,
}

impl RouteTable {
    /// A table of `routes` on gateway `node_id` (for `{node.id}` in keys).
    pub fn new(routes: Routes, node_id: &str) -> Arc<RouteTable> {
        Arc::new(RouteTable {
            routes: RwLock::new(Arc::new(routes)),
            generation: AtomicU64::new(0),
            node_id: node_id.to_owned(),
        })
    }

    /// The routes now.
    pub fn current(&self) -> Arc<Routes> {
        Arc::clone(&self.routes.read())
    }

    /// Where a publish by `client_id` from `source` on `topic` goes, or `None`: not stored.
    pub fn decide(&self, source: Source, topic: &str, client_id: &str) -> Option<Destination> {
        self.routes
            .read()
            .decide(source, topic, client_id, &self.node_id)
    }

    /// Replaces the routes (SIGHUP reload); publishes from now on are routed by the new table.
    pub fn replace(&self, routes: Routes) {
        *self.routes.write() = Arc::new(routes);
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// Changes whenever the routes are replaced (connections cache decisions per generation).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}

impl edge_bridge::plan::Router for RouteTable {
    fn destination(&self, record: &Record) -> Option<Destination> {
        self.decide(record.source, &record.topic, &record.client_id)
    }
}

impl Route {
    /// Validates the `number`-th `[[route]]` table of the file, counting from 1 like
    /// `{topic.N}` (errors name it `route[1]`, `route[2]`, …); the error is its first problem.
    pub fn compile(number: usize, config: &RouteConfig) -> Result<Self, RouteError> {
        Route::build(number, config).map_err(|errors| {
            errors
                .into_iter()
                .next()
                .unwrap_or_else(|| RouteError::NoFilter {
                    field: format!("route[{number}]"),
                })
        })
    }

    /// Every problem of the `number`-th `[[route]]` table; empty when it compiles.
    pub fn problems(number: usize, config: &RouteConfig) -> Vec<RouteError> {
        Route::build(number, config).err().unwrap_or_default()
    }

    fn build(number: usize, config: &RouteConfig) -> Result<Self, Vec<RouteError>> {
        let at = |name: &str| format!("route[{number}].{name}");
        let mut errors = Vec::new();
        let filter = match (&config.mqtt, &config.nats) {
            (Some(f), None) => parse_mqtt_filter(f).map_err(|reason| RouteError::BadFilter {
                field: at("mqtt"),
                pattern: f.clone(),
                reason,
            }),
            (None, Some(p)) => parse_nats_pattern(p).map_err(|reason| RouteError::BadFilter {
                field: at("nats"),
                pattern: p.clone(),
                reason,
            }),
            (None, None) => Err(RouteError::NoFilter {
                field: format!("route[{number}]"),
            }),
            (Some(_), Some(_)) => Err(RouteError::BothFilters {
                field: format!("route[{number}]"),
            }),
        }
        .map_err(|error| errors.push(error))
        .ok();
        if let Err(reason) = validate_kafka_topic(&config.kafka_topic) {
            errors.push(RouteError::BadKafkaTopic {
                field: at("kafka_topic"),
                topic: config.kafka_topic.clone(),
                reason,
            });
        }
        let key = match &config.key {
            None => None,
            Some(t) => match KeyTemplate::parse(t) {
                Ok(template) => {
                    if let Some(max) = filter.as_ref().and_then(Filter::max_levels)
                        && let Some(n) = template.max_topic_level()
                        && n >= max
                    {
                        errors.push(RouteError::BadKey {
                            field: at("key"),
                            template: t.clone(),
                            reason: format!(
                                "{{topic.{}}} but the filter only matches topics of {max} levels",
                                n + 1
                            ),
                        });
                    }
                    Some(template)
                }
                Err(reason) => {
                    errors.push(RouteError::BadKey {
                        field: at("key"),
                        template: t.clone(),
                        reason,
                    });
                    None
                }
            },
        };
        if let Some(p) = config.partition
            && p < 0
        {
            errors.push(RouteError::BadPartition {
                field: at("partition"),
                partition: p,
            });
        }
        match filter {
            Some(filter) if errors.is_empty() => Ok(Self {
                filter,
                kafka_topic: Arc::from(config.kafka_topic.as_str()),
                key,
                partition: config.partition,
            }),
            _ => Err(errors),
        }
    }

    /// True if this route takes a record from `source` published on `topic`.
    pub fn matches(&self, source: Source, name: &str) -> bool {
        match (&self.filter, source) {
            (Filter::Mqtt(filter), Source::Mqtt) => topic::matches(filter, name),
            (Filter::Nats(pattern), Source::Nats) => {
                let wildcard_first = matches!(pattern.split('.').next(), Some("*" | ">"));
                (!wildcard_first || topic::wildcard_reaches(name))
                    && subject::matches(pattern, name)
            }
            _ => false,
        }
    }

    /// The destination of a publish this route takes: its topic, rendered key and partition.
    pub fn destination(
        &self,
        source: Source,
        topic: &str,
        client_id: &str,
        node_id: &str,
    ) -> Destination {
        let key = self.key.as_ref().map(|template| {
            // Rendered on the stack and copied once: one allocation per routed publish, where
            // a `Vec` turned into `Bytes` costs two (`Bytes::from` allocates a shared header
            // when the `Vec` has spare capacity).
            let mut out = SmallVec::<[u8; 64]>::new();
            template.render(source, topic, client_id, node_id, &mut out);
            Bytes::copy_from_slice(&out)
        });
        Destination {
            topic: Arc::clone(&self.kafka_topic),
            key,
            partition: self.partition,
        }
    }

    /// Renders the key for a record into `out` (cleared first); false when the route has no key.
    pub fn render_key(
        &self,
        source: Source,
        topic: &str,
        client_id: &str,
        node_id: &str,
        out: &mut Vec<u8>,
    ) -> bool {
        out.clear();
        match &self.key {
            None => false,
            Some(t) => {
                t.render(source, topic, client_id, node_id, out);
                true
            }
        }
    }
}

impl Filter {
    /// The number of levels every matching topic has, when fixed (no `#` / `>`).
    pub fn max_levels(&self) -> Option<usize> {
        let (pattern, separator, rest) = match self {
            Filter::Mqtt(f) => (f, '/', "#"),
            Filter::Nats(p) => (p, '.', ">"),
        };
        let levels = pattern.split(separator);
        if levels.clone().any(|l| l == rest) {
            None
        } else {
            Some(levels.count())
        }
    }
}

impl KeyTemplate {
    /// Parses `{topic.N}`, `{client_id}`, `{node.id}`, `{{`, `}}` and literal text.
    pub fn parse(template: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = template;
        let mut pos = 0;
        while let Some(idx) = rest.find(['{', '}']) {
            literal.push_str(&rest[..idx]);
            let brace = rest.as_bytes()[idx];
            let after = &rest[idx + 1..];
            if brace == b'{' {
                if let Some(more) = after.strip_prefix('{') {
                    literal.push('{');
                    rest = more;
                    pos += idx + 2;
                    continue;
                }
                let Some(end) = after.find('}') else {
                    return Err(format!("unclosed '{{' at byte {}", pos + idx));
                };
                let part = parse_placeholder(&after[..end])?;
                if !literal.is_empty() {
                    parts.push(KeyPart::Literal(std::mem::take(&mut literal)));
                }
                parts.push(part);
                rest = &after[end + 1..];
                pos += idx + end + 2;
            } else {
                if let Some(more) = after.strip_prefix('}') {
                    literal.push('}');
                    rest = more;
                    pos += idx + 2;
                    continue;
                }
                return Err(format!(
                    "unmatched '}}' at byte {} (write '}}}}' for a literal brace)",
                    pos + idx
                ));
            }
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            parts.push(KeyPart::Literal(literal));
        }
        if parts.is_empty() {
            return Err("empty template (leave `key` out for a null key)".into());
        }
        Ok(Self { parts })
    }

    /// The pieces, in order.
    pub fn parts(&self) -> &[KeyPart] {
        &self.parts
    }

    /// Highest 0-based topic level referenced, if any.
    pub fn max_topic_level(&self) -> Option<usize> {
        self.parts
            .iter()
            .filter_map(|p| match p {
                KeyPart::TopicLevel(n) => Some(*n),
                _ => None,
            })
            .max()
    }

    /// Appends the rendered key to `out`; missing topic levels render as nothing.
    pub fn render(
        &self,
        source: Source,
        topic: &str,
        client_id: &str,
        node_id: &str,
        out: &mut impl KeyBuffer,
    ) {
        let sep = match source {
            Source::Mqtt => b'/',
            Source::Nats => b'.',
        };
        for part in &self.parts {
            match part {
                KeyPart::Literal(s) => out.put(s.as_bytes()),
                KeyPart::TopicLevel(n) => {
                    // Split on the byte: the separators are ASCII, and a byte loop is several
                    // times cheaper than `str::split(char)` on short topics (hot: per record).
                    if let Some(level) = topic.as_bytes().split(|b| *b == sep).nth(*n) {
                        out.put(level);
                    }
                }
                KeyPart::ClientId => out.put(client_id.as_bytes()),
                KeyPart::NodeId => out.put(node_id.as_bytes()),
            }
        }
    }
}

/// Where a key is rendered: the forwarder's reused `Vec`, or a stack buffer at ingest.
pub trait KeyBuffer {
    /// Appends `bytes`.
    fn put(&mut self, bytes: &[u8]);
}

impl KeyBuffer for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

impl KeyBuffer for SmallVec<[u8; 64]> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

fn parse_placeholder(name: &str) -> Result<KeyPart, String> {
    match name {
        "client_id" => Ok(KeyPart::ClientId),
        "node.id" => Ok(KeyPart::NodeId),
        _ => {
            let Some(n) = name.strip_prefix("topic.") else {
                return Err(format!(
                    "unknown placeholder {{{name}}}; use {{topic.N}}, {{client_id}} or {{node.id}}"
                ));
            };
            match n.parse::<usize>() {
                Ok(n) if n >= 1 => Ok(KeyPart::TopicLevel(n - 1)),
                _ => Err(format!(
                    "{{topic.{n}}}: N must be a whole number from 1 (levels count from 1)"
                )),
            }
        }
    }
}

fn parse_mqtt_filter(filter: &str) -> Result<Filter, String> {
    if filter.starts_with(topic::SHARE_PREFIX) {
        return Err("a shared subscription ($share/...) is not a route filter".to_owned());
    }
    topic::validate_filter(filter).map_err(|e| e.to_string())?;
    Ok(Filter::Mqtt(filter.to_owned()))
}

fn parse_nats_pattern(pattern: &str) -> Result<Filter, String> {
    if let Some(hint) = mqtt_style(pattern) {
        return Err(hint);
    }
    subject::validate_subscribe(pattern).map_err(|e| e.to_string())?;
    Ok(Filter::Nats(pattern.to_owned()))
}

/// Why a NATS pattern is an MQTT filter in disguise (`machines/+/status`: legal as a
/// one-token subject, but never what was meant), with the subject to write instead.
fn mqtt_style(pattern: &str) -> Option<String> {
    let levels: Vec<&str> = pattern.split('/').collect();
    let wildcard = levels.iter().any(|l| *l == "+" || *l == "#");
    let slashes_only = levels.len() > 1 && !pattern.contains('.');
    if !(wildcard || slashes_only) {
        return None;
    }
    let subject = levels
        .iter()
        .map(|l| match *l {
            "+" => "*",
            "#" => ">",
            l => l,
        })
        .collect::<Vec<_>>()
        .join(".");
    Some(format!(
        "this is an MQTT topic filter: NATS subjects separate tokens with '.', '*' matches one \
         token and '>' the rest; write nats = \"{subject}\" (or mqtt = \"{pattern}\" to route \
         MQTT publishes)"
    ))
}

fn validate_kafka_topic(topic: &str) -> Result<(), &'static str> {
    if topic.is_empty() {
        return Err("missing or empty: every route needs the Kafka topic it forwards to");
    }
    if topic == "." || topic == ".." {
        return Err("'.' and '..' are not allowed");
    }
    if topic.len() > MAX_KAFKA_TOPIC_LEN {
        return Err("longer than 249 characters");
    }
    if !topic
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return Err("only ASCII letters, digits, '.', '_' and '-' are allowed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        /// Route matching (edge-proto's byte-wise matcher) and `{topic.N}` key levels agree with
        /// plain `str::split` references, including `$` topics, empty levels and multi-byte UTF-8.
        #[test]
        fn matching_and_key_levels_agree_with_splitting_the_str(
            filter in "(\\+|[a$é]{0,2})(/(\\+|[a$é]{0,2})){0,3}(/#)?|#",
            name in "[a$é]{0,2}(/[a$é]{0,2}){0,4}",
            level in 0usize..5,
        ) {
            proptest::prop_assert_eq!(topic::matches(&filter, &name), str_matches(&filter, &name));
            let template = KeyTemplate::parse(&format!("{{topic.{}}}", level + 1)).unwrap();
            let mut out = Vec::new();
            template.render(Source::Mqtt, &name, "c", "n", &mut out);
            let want = name.split('/').nth(level).unwrap_or("");
            proptest::prop_assert_eq!(out, want.as_bytes().to_vec());
        }
    }

    /// MQTT matching written on `str::split`, as the reference for the proptest above.
    fn str_matches(filter: &str, topic: &str) -> bool {
        if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
            return false;
        }
        let (mut f, mut t) = (filter.split('/'), topic.split('/'));
        loop {
            match (f.next(), t.next()) {
                (Some("#"), _) => return true,
                (Some("+"), Some(_)) => {}
                (Some(fl), Some(tl)) if fl == tl => {}
                (None, None) => return true,
                _ => return false,
            }
        }
    }

    fn mqtt(f: &str) -> Route {
        Route::compile(
            1,
            &RouteConfig {
                mqtt: Some(f.into()),
                kafka_topic: "t".into(),
                ..Default::default()
            },
        )
        .unwrap()
    }

    fn nats(p: &str) -> Route {
        Route::compile(
            1,
            &RouteConfig {
                nats: Some(p.into()),
                kafka_topic: "t".into(),
                ..Default::default()
            },
        )
        .unwrap()
    }

    #[test]
    fn mqtt_filters_match_like_the_spec() {
        let cases: &[(&str, &str, bool)] = &[
            ("sensors/+/temperature", "sensors/a/temperature", true),
            ("sensors/+/temperature", "sensors//temperature", true),
            ("sensors/+/temperature", "sensors/a/b/temperature", false),
            ("sensors/+/temperature", "sensors/a/temperature/x", false),
            ("sensors/#", "sensors", true),
            ("sensors/#", "sensors/a/b/c", true),
            ("sensors/#", "sensor", false),
            ("#", "a/b", true),
            ("#", "$SYS/x", false),
            ("+/x", "$SYS/x", false),
            ("$SYS/#", "$SYS/x", true),
            ("a/b", "a/b", true),
            ("a/b", "a/b/", false),
            ("+", "", true),
        ];
        for (f, t, want) in cases {
            assert_eq!(mqtt(f).matches(Source::Mqtt, t), *want, "{f} vs {t}");
        }
        assert!(
            !mqtt("#").matches(Source::Nats, "a"),
            "MQTT route must not take NATS records"
        );
    }

    #[test]
    fn nats_patterns_match_like_the_server() {
        let cases: &[(&str, &str, bool)] = &[
            ("sensors.*.humidity", "sensors.a.humidity", true),
            ("sensors.*.humidity", "sensors.a.b.humidity", false),
            ("sensors.>", "sensors.a", true),
            ("sensors.>", "sensors.a.b", true),
            ("sensors.>", "sensors", false),
            (">", "a", true),
            ("a.b", "a.b.c", false),
            (">", "$JS.API.STREAM.CREATE.x", false),
            ("*.x", "$SYS.x", false),
            ("$SYS.>", "$SYS.x", true),
        ];
        for (p, s, want) in cases {
            assert_eq!(nats(p).matches(Source::Nats, s), *want, "{p} vs {s}");
        }
        assert!(!nats(">").matches(Source::Mqtt, "a"));
    }

    #[test]
    fn bad_filters_name_the_field() {
        let bad_mqtt = ["", "a/#/b", "a/b+", "a#", "x\0", "$share/g/a/#"];
        for f in bad_mqtt {
            let err = Route::compile(
                3,
                &RouteConfig {
                    mqtt: Some(f.into()),
                    kafka_topic: "t".into(),
                    ..Default::default()
                },
            )
            .unwrap_err();
            assert!(
                matches!(&err, RouteError::BadFilter { field, .. } if field == "route[3].mqtt"),
                "{f}: {err}"
            );
        }
        for p in ["", "a..b", ".a", "a.", "a.>.b", "a b"] {
            let err = Route::compile(
                1,
                &RouteConfig {
                    nats: Some(p.into()),
                    kafka_topic: "t".into(),
                    ..Default::default()
                },
            )
            .unwrap_err();
            assert!(err.to_string().starts_with("route[1].nats: "), "{p}: {err}");
        }
        let both = RouteConfig {
            mqtt: Some("a".into()),
            nats: Some("a".into()),
            kafka_topic: "t".into(),
            ..Default::default()
        };
        assert_eq!(
            Route::compile(1, &both),
            Err(RouteError::BothFilters {
                field: "route[1]".into()
            })
        );
        let none = RouteConfig {
            kafka_topic: "t".into(),
            ..Default::default()
        };
        assert_eq!(
            Route::compile(1, &none),
            Err(RouteError::NoFilter {
                field: "route[1]".into()
            })
        );
    }

    #[test]
    fn kafka_topic_and_partition_are_validated() {
        for t in ["", ".", "..", "a b", "a/b", &"x".repeat(250)] {
            let err = Route::compile(
                2,
                &RouteConfig {
                    mqtt: Some("a".into()),
                    kafka_topic: t.to_string(),
                    ..Default::default()
                },
            )
            .unwrap_err();
            assert!(
                err.to_string().starts_with("route[2].kafka_topic: "),
                "{t}: {err}"
            );
        }
        let ok = Route::compile(
            1,
            &RouteConfig {
                mqtt: Some("a".into()),
                kafka_topic: "Sensor_temp-1.v2".into(),
                partition: Some(3),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(ok.partition, Some(3));
        let err = Route::compile(
            5,
            &RouteConfig {
                mqtt: Some("a".into()),
                kafka_topic: "t".into(),
                partition: Some(-1),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "route[5].partition: partition must be >= 0, got -1"
        );
    }

    #[test]
    fn key_templates_parse_and_render() {
        let t = KeyTemplate::parse("{node.id}/{topic.2}-{client_id}{{x}}").unwrap();
        assert_eq!(
            t.parts(),
            &[
                KeyPart::NodeId,
                KeyPart::Literal("/".into()),
                KeyPart::TopicLevel(1),
                KeyPart::Literal("-".into()),
                KeyPart::ClientId,
                KeyPart::Literal("{x}".into()),
            ]
        );
        let mut out = Vec::new();
        t.render(
            Source::Mqtt,
            "sensors/dev7/temperature",
            "c9",
            "gw-01",
            &mut out,
        );
        assert_eq!(out, b"gw-01/dev7-c9{x}");
        out.clear();
        t.render(Source::Nats, "sensors.dev8.humidity", "c", "n", &mut out);
        assert_eq!(out, b"n/dev8-c{x}");
        out.clear();
        KeyTemplate::parse("{topic.5}|")
            .unwrap()
            .render(Source::Mqtt, "a/b", "", "", &mut out);
        assert_eq!(out, b"|", "missing levels render empty");
        let r = Route::compile(
            1,
            &RouteConfig {
                mqtt: Some("sensors/+/t".into()),
                kafka_topic: "t".into(),
                key: Some("{topic.2}".into()),
                ..Default::default()
            },
        )
        .unwrap();
        let mut key = Vec::new();
        assert!(r.render_key(Source::Mqtt, "sensors/dev1/t", "c", "n", &mut key));
        assert_eq!(key, b"dev1");
        assert!(!mqtt("a").render_key(Source::Mqtt, "a", "c", "n", &mut key));
        assert!(key.is_empty());
        // The stored key (rendered on the stack) is the forwarder's, below and above the
        // stack buffer's 64 bytes.
        let r = Route::compile(
            1,
            &RouteConfig {
                mqtt: Some("#".into()),
                kafka_topic: "t".into(),
                key: Some("{node.id}:{topic.2}:{client_id}".into()),
                ..Default::default()
            },
        )
        .unwrap();
        for level in ["d", &"é".repeat(40)] {
            let topic = format!("s/{level}/t");
            let stored = r.destination(Source::Mqtt, &topic, "c9", "gw").key.unwrap();
            assert!(r.render_key(Source::Mqtt, &topic, "c9", "gw", &mut key));
            assert_eq!(stored.as_ref(), key.as_slice());
            assert_eq!(stored.as_ref(), format!("gw:{level}:c9").as_bytes());
        }
    }

    #[test]
    fn bad_key_templates_name_the_field_and_reason() {
        let cases = [
            ("{topic.0}", "N must be a whole number from 1"),
            ("{topic.x}", "N must be a whole number from 1"),
            ("{nodeid}", "unknown placeholder {nodeid}"),
            ("{topic.1", "unclosed '{'"),
            ("a}b", "unmatched '}'"),
            ("", "empty template"),
            ("{topic.4}", "only matches topics of 3 levels"),
        ];
        for (tpl, reason) in cases {
            let err = Route::compile(
                7,
                &RouteConfig {
                    mqtt: Some("a/+/c".into()),
                    kafka_topic: "t".into(),
                    key: Some(tpl.into()),
                    ..Default::default()
                },
            )
            .unwrap_err();
            let msg = err.to_string();
            assert!(msg.starts_with("route[7].key: "), "{tpl}: {msg}");
            assert!(msg.contains(reason), "{tpl}: {msg}");
        }
        // With '#' the level count is open, so a high level is fine.
        assert!(
            Route::compile(
                1,
                &RouteConfig {
                    mqtt: Some("a/#".into()),
                    kafka_topic: "t".into(),
                    key: Some("{topic.9}".into()),
                    ..Default::default()
                },
            )
            .is_ok()
        );
    }

    #[test]
    fn a_nats_route_written_like_an_mqtt_filter_is_refused_with_the_subject_to_write() {
        for (pattern, subject) in [
            ("machines/+/status", "machines.*.status"),
            ("machines/#", "machines.>"),
            ("machines/status", "machines.status"),
        ] {
            let err = Route::compile(
                2,
                &RouteConfig {
                    nats: Some(pattern.into()),
                    kafka_topic: "t".into(),
                    key: Some("{topic.2}".into()),
                    ..Default::default()
                },
            )
            .unwrap_err();
            let msg = err.to_string();
            assert!(msg.starts_with("route[2].nats: "), "{pattern}: {msg}");
            assert!(
                msg.contains(&format!("write nats = \"{subject}\"")),
                "{pattern}: {msg}"
            );
        }
        // '/' inside a token of a real NATS subject stays legal.
        assert!(nats("a.b/c.*").matches(Source::Nats, "a.b/c.d"));
    }

    #[test]
    fn every_problem_of_every_route_is_reported() {
        let problems = Routes::problems(&[
            RouteConfig {
                mqtt: Some("a/#/b".into()),
                kafka_topic: "bad topic".into(),
                partition: Some(-1),
                ..Default::default()
            },
            RouteConfig {
                mqtt: Some("a".into()),
                kafka_topic: "ok".into(),
                ..Default::default()
            },
            RouteConfig {
                nats: Some("x.*".into()),
                key: Some("{nope}".into()),
                ..Default::default()
            },
        ]);
        let fields: Vec<String> = problems
            .iter()
            .map(|p| p.to_string().split(':').next().unwrap().to_owned())
            .collect();
        assert_eq!(
            fields,
            [
                "route[1].mqtt",
                "route[1].kafka_topic",
                "route[1].partition",
                "route[3].kafka_topic",
                "route[3].key"
            ]
        );
        assert!(
            problems[3].to_string().contains("missing"),
            "{}",
            problems[3]
        );
    }

    #[test]
    fn first_matching_route_wins() {
        let routes = Routes::compile(&[
            RouteConfig {
                mqtt: Some("s/+/temp".into()),
                kafka_topic: "temp".into(),
                ..Default::default()
            },
            RouteConfig {
                mqtt: Some("s/#".into()),
                kafka_topic: "all".into(),
                ..Default::default()
            },
            RouteConfig {
                nats: Some("s.>".into()),
                kafka_topic: "nats".into(),
                ..Default::default()
            },
        ])
        .unwrap();
        assert_eq!(routes.len(), 3);
        assert_eq!(
            routes
                .find(Source::Mqtt, "s/1/temp")
                .map(|r| &*r.kafka_topic),
            Some("temp")
        );
        assert_eq!(
            routes
                .find(Source::Mqtt, "s/1/hum")
                .map(|r| &*r.kafka_topic),
            Some("all")
        );
        assert_eq!(
            routes.find(Source::Nats, "s.1").map(|r| &*r.kafka_topic),
            Some("nats")
        );
        assert!(routes.find(Source::Nats, "x.1").is_none());
        let err = Routes::compile(&[
            RouteConfig {
                mqtt: Some("a".into()),
                kafka_topic: "t".into(),
                ..Default::default()
            },
            RouteConfig {
                mqtt: Some("a".into()),
                kafka_topic: "bad topic".into(),
                ..Default::default()
            },
        ])
        .unwrap_err();
        assert!(
            err.to_string().starts_with("route[2].kafka_topic"),
            "the second [[route]] is route[2]: {err}"
        );
    }
}
