//! Topic helpers: properties of wildcard matching, and a differential check of filter
//! validation and matching against rumqttc's `mqttbytes` topic functions (which, unlike the
//! spec, refuse every `$` topic, so those are compared against the spec rule instead).

// Test helpers outside #[test] fns: panicking on a broken invariant is the point.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use edge_proto::mqtt::topic::{matches, parse_shared, validate_filter, validate_name};
use proptest::prelude::*;

fn level() -> impl Strategy<Value = String> {
    prop_oneof![Just(String::new()), "[ab$]{1,2}"]
}

fn topic() -> impl Strategy<Value = String> {
    proptest::collection::vec(level(), 1..5).prop_map(|l| l.join("/"))
}

/// Strings over the characters that matter for filters.
fn filter_like() -> impl Strategy<Value = String> {
    "[ab/+#$]{1,8}"
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Filters derived from a topic by replacing levels with `+` and/or cutting the tail with
    /// `#` match it (unless the topic starts with `$` and the filter with a wildcard).
    #[test]
    fn derived_filters_match(t in topic(), plus in proptest::collection::vec(any::<bool>(), 5), cut in 0usize..6) {
        prop_assume!(validate_name(&t).is_ok());
        let levels: Vec<&str> = t.split('/').collect();
        let mut f: Vec<String> = levels
            .iter()
            .zip(plus.iter().chain(std::iter::repeat(&false)))
            .map(|(l, p)| if *p { "+".to_owned() } else { (*l).to_owned() })
            .collect();
        if cut < f.len() {
            f.truncate(cut);
            f.push("#".to_owned());
        }
        let filter = f.join("/");
        prop_assert!(validate_filter(&filter).is_ok(), "{filter}");
        let dollar_blocked = t.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#'));
        prop_assert_eq!(matches(&filter, &t), !dollar_blocked, "{} vs {}", filter, t);
    }

    /// Filter validation and matching agree with rumqttc on non-`$` topics.
    #[test]
    fn agrees_with_rumqttc(f in filter_like(), t in topic()) {
        if !f.starts_with("$share/") {
            prop_assert_eq!(validate_filter(&f).is_ok(), rumqttc::mqttbytes::valid_filter(&f), "filter {}", f);
        }
        if validate_filter(&f).is_ok() && validate_name(&t).is_ok() && !t.starts_with('$') {
            prop_assert_eq!(matches(&f, &t), rumqttc::mqttbytes::matches(&t, &f), "{} vs {}", f, t);
        }
    }

    /// A shared subscription's inner filter is exactly what matching uses.
    #[test]
    fn shared_filters(group in "[a-z]{1,4}", f in filter_like()) {
        let shared = format!("$share/{group}/{f}");
        match parse_shared(&shared) {
            Ok(Some(s)) => {
                prop_assert_eq!(s.group, group.as_str());
                prop_assert_eq!(s.filter, f.as_str());
                prop_assert!(validate_filter(&f).is_ok());
            }
            Ok(None) => prop_assert!(false, "not recognised as shared"),
            Err(_) => prop_assert!(validate_filter(&f).is_err() || f.starts_with("$share/")),
        }
    }
}
