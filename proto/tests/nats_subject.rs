//! The NATS ↔ MQTT name mapping against nats-server's own conversion table
//! (`TestMQTTTopicAndSubjectConversion` / `TestMQTTFilterConversion` in nats-server's
//! `server/mqtt_test.go`), both ways, plus properties over generated topics and filters.

// Test helpers outside #[test] fns panic on purpose, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use edge_proto::nats::subject::{
    SubjectError, matches, mqtt_filter_parent_subject, mqtt_filter_to_nats_subject,
    mqtt_topic_to_nats_subject, nats_subject_to_mqtt_filter, nats_subject_to_mqtt_topic,
    nats_subject_to_mqtt_topic_shared, validate_publish, validate_subscribe,
};
use proptest::prelude::*;

/// (MQTT topic, NATS subject) pairs from nats-server's test table.
const TOPICS: &[(&str, &str)] = &[
    ("/", "/./"),
    ("//", "/././"),
    ("///", "/./././"),
    ("////", "/././././"),
    ("foo", "foo"),
    ("/foo", "/.foo"),
    ("//foo", "/./.foo"),
    ("///foo", "/././.foo"),
    ("///foo/", "/././.foo./"),
    ("///foo//", "/././.foo././"),
    ("///foo///", "/././.foo./././"),
    ("//.foo.//", "/././/foo//././"),
    ("foo/bar", "foo.bar"),
    ("/foo/bar", "/.foo.bar"),
    ("/foo/bar/", "/.foo.bar./"),
    ("foo/bar/baz", "foo.bar.baz"),
    ("/foo/bar/baz", "/.foo.bar.baz"),
    ("/foo/bar/baz/", "/.foo.bar.baz./"),
    ("bar/", "bar./"),
    ("bar//", "bar././"),
    ("bar///", "bar./././"),
    ("foo//bar", "foo./.bar"),
    ("foo///bar", "foo././.bar"),
    ("foo////bar", "foo./././.bar"),
    (".", "//"),
    ("..", "////"),
    ("...", "//////"),
    ("./", "//./"),
    (".//.", "//././/"),
    ("././.", "//.//.//"),
    ("././/.", "//.//././/"),
    (".foo", "//foo"),
    ("foo.", "foo//"),
    (".foo.", "//foo//"),
    ("foo../bar/", "foo////.bar./"),
    ("foo../bar/.", "foo////.bar.//"),
    ("/foo/", "/.foo./"),
    ("./foo/.", "//.foo.//"),
    ("foo.bar/baz", "foo//bar.baz"),
];

/// (MQTT filter, NATS subject) pairs from nats-server's filter test table.
const FILTERS: &[(&str, &str)] = &[
    ("+", "*"),
    ("/+", "/.*"),
    ("+/", "*./"),
    ("/+/", "/.*./"),
    ("foo/+", "foo.*"),
    ("foo/+/", "foo.*./"),
    ("foo/+/bar", "foo.*.bar"),
    ("foo/+/+", "foo.*.*"),
    ("foo/+/+/", "foo.*.*./"),
    ("foo/+/+/bar", "foo.*.*.bar"),
    ("foo//+", "foo./.*"),
    ("foo//+/", "foo./.*./"),
    ("foo//+//", "foo./.*././"),
    ("foo//+//bar", "foo./.*./.bar"),
    ("foo///+///bar", "foo././.*././.bar"),
    ("foo.bar///+///baz", "foo//bar././.*././.baz"),
    ("#", ">"),
    ("/#", "/.>"),
    ("/foo/#", "/.foo.>"),
    ("foo/#", "foo.>"),
    ("foo//#", "foo./.>"),
    ("foo///#", "foo././.>"),
    ("foo/bar/#", "foo.bar.>"),
    ("foo/bar.baz/#", "foo.bar//baz.>"),
];

#[test]
fn topics_match_nats_server_table_both_ways() {
    for (topic, subject) in TOPICS {
        assert_eq!(
            mqtt_topic_to_nats_subject(topic).as_deref(),
            Ok(*subject),
            "topic {topic:?}"
        );
        assert_eq!(
            nats_subject_to_mqtt_topic(subject).as_deref(),
            Ok(*topic),
            "subject {subject:?}"
        );
        assert!(
            validate_publish(subject).is_ok(),
            "{subject:?} is publishable"
        );
        // A topic name is also a valid filter and maps the same way.
        assert_eq!(mqtt_filter_to_nats_subject(topic).as_deref(), Ok(*subject));
    }
}

#[test]
fn filters_match_nats_server_table_both_ways() {
    for (filter, subject) in FILTERS {
        assert_eq!(
            mqtt_filter_to_nats_subject(filter).as_deref(),
            Ok(*subject),
            "filter {filter:?}"
        );
        assert_eq!(
            nats_subject_to_mqtt_filter(subject).as_deref(),
            Ok(*filter),
            "subject {subject:?}"
        );
        assert!(
            validate_subscribe(subject).is_ok(),
            "{subject:?} is subscribable"
        );
    }
}

#[test]
fn errors_match_nats_server_table() {
    assert!(matches!(
        mqtt_topic_to_nats_subject("foo/+"),
        Err(SubjectError::WildcardNotAllowed(_))
    ));
    assert!(matches!(
        mqtt_topic_to_nats_subject("foo/#"),
        Err(SubjectError::WildcardNotAllowed(_))
    ));
    assert!(matches!(
        mqtt_topic_to_nats_subject("foo bar"),
        Err(SubjectError::Whitespace(_))
    ));
}

#[test]
fn multi_level_filter_also_matches_parent_level() {
    // MQTT: "foo/#" matches "foo"; NATS needs "foo.>" plus "foo".
    let pattern = mqtt_filter_to_nats_subject("foo/#").unwrap();
    let parent = mqtt_filter_parent_subject(&pattern).unwrap();
    let foo = mqtt_topic_to_nats_subject("foo").unwrap();
    assert!(!matches(&pattern, &foo));
    assert!(matches(parent, &foo));
    // Cases from nats-server's TestMQTTSub: which NATS publishes an MQTT "foo/+" or "foo/#"
    // subscriber receives.
    let plus = mqtt_filter_to_nats_subject("foo/+").unwrap();
    for (subject, ok) in [
        ("foo.bar.baz", false),
        ("foo.bar./", false),
        ("foo.bar", true),
        ("foo./", true),
        ("foo", false),
        ("/.foo", false),
    ] {
        assert_eq!(matches(&plus, subject), ok, "foo/+ vs {subject}");
    }
    for (subject, ok) in [
        ("foo.bar.baz./", true),
        ("foo.bar.baz", true),
        ("foo.bar./", true),
        ("foo.bar", true),
        ("foo./", true),
        ("foo", true),
        ("/.foo", false),
    ] {
        let hit = matches(&pattern, subject) || matches(parent, subject);
        assert_eq!(hit, ok, "foo/# vs {subject}");
    }
}

fn mqtt_level() -> impl Strategy<Value = String> {
    "[a-z0-9.$*>-]{0,4}".prop_filter("exact * or > is a NATS wildcard", |l| l != "*" && l != ">")
}

fn mqtt_topic() -> impl Strategy<Value = String> {
    prop::collection::vec(mqtt_level(), 1..6)
        .prop_map(|l| l.join("/"))
        .prop_filter("non-empty", |t| !t.is_empty())
}

fn mqtt_filter() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(
            prop_oneof![3 => mqtt_level(), 1 => Just("+".to_string())],
            1..6,
        ),
        any::<bool>(),
    )
        .prop_map(|(mut l, hash)| {
            if hash {
                l.push("#".into());
            }
            l.join("/")
        })
        .prop_filter("non-empty", |t| !t.is_empty())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn topic_mapping_is_a_bijection(topic in mqtt_topic()) {
        let subject = mqtt_topic_to_nats_subject(&topic).unwrap();
        prop_assert!(validate_publish(&subject).is_ok(), "{} -> {}", topic, subject);
        prop_assert_eq!(subject.split('.').count(), topic.split('/').count(), "one token per level");
        prop_assert_eq!(nats_subject_to_mqtt_topic(&subject), Ok(topic));
    }

    #[test]
    fn filter_mapping_is_a_bijection(filter in mqtt_filter()) {
        let subject = mqtt_filter_to_nats_subject(&filter).unwrap();
        prop_assert!(validate_subscribe(&subject).is_ok(), "{} -> {}", filter, subject);
        prop_assert_eq!(nats_subject_to_mqtt_filter(&subject), Ok(filter));
    }

    #[test]
    fn filter_matching_commutes_with_mapping(filter in mqtt_filter(), topic in mqtt_topic()) {
        // MQTT semantics computed on levels, compared with NATS matching on mapped names.
        let f: Vec<&str> = filter.split('/').collect();
        let t: Vec<&str> = topic.split('/').collect();
        let mqtt_match = {
            let mut i = 0;
            let mut ok = true;
            loop {
                match (f.get(i), t.get(i)) {
                    (Some(&"#"), _) => break,
                    (Some(&"+"), Some(_)) => {}
                    (Some(a), Some(b)) if a == b => {}
                    (None, None) => break,
                    _ => { ok = false; break; }
                }
                i += 1;
            }
            ok
        };
        let pattern = mqtt_filter_to_nats_subject(&filter).unwrap();
        let subject = mqtt_topic_to_nats_subject(&topic).unwrap();
        let nats_match = matches(&pattern, &subject)
            || mqtt_filter_parent_subject(&pattern).is_some_and(|p| matches(p, &subject))
            || (pattern == ">");
        prop_assert_eq!(mqtt_match, nats_match, "{} vs {} ({} vs {})", filter, topic, pattern, subject);
    }

    #[test]
    fn reverse_mapping_refuses_or_roundtrips(subject in "[a-z/.*>]{1,10}") {
        let filter = nats_subject_to_mqtt_filter(&subject);
        if let Ok(f) = &filter {
            prop_assert_eq!(mqtt_filter_to_nats_subject(f), Ok(subject.clone()));
        }
        if let Ok(topic) = nats_subject_to_mqtt_topic(&subject) {
            prop_assert_eq!(mqtt_topic_to_nats_subject(&topic), Ok(subject.clone()));
        }
    }

    /// The shared form is the same mapping (one scratch buffer per thread, reused by
    /// subjects of every length, plain or escaped, refused or not).
    #[test]
    fn the_shared_topic_is_the_same_mapping(subjects in proptest::collection::vec("[a-z0-9_/.*>+# -]{0,12}", 1..8)) {
        for subject in &subjects {
            prop_assert_eq!(
                nats_subject_to_mqtt_topic_shared(subject).map(|t| t.to_string()),
                nats_subject_to_mqtt_topic(subject)
            );
        }
    }
}
