//! NATS subjects: validation, wildcard matching, and the NATS ↔ MQTT name mapping.
//!
//! A subject is a `.`-separated list of tokens. In a subscription, a token `*` matches exactly
//! one token and a last token `>` matches one or more tokens. `*` or `>` inside a longer token
//! (`a*`) is a literal character, as in nats-server.
//!
//! # NATS ↔ MQTT mapping
//!
//! The mapping is nats-server's own (the scheme of its MQTT support since 2.10, whose test
//! table `TestMQTTTopicAndSubjectConversion` is reproduced in `tests/nats_subject.rs`):
//!
//! | MQTT topic                 | NATS subject       | rule |
//! |----------------------------|--------------------|------|
//! | `a/b`                      | `a.b`              | level separator `/` becomes `.` |
//! | `a.b`                      | `a//b`             | a `.` inside a level is escaped as `//` |
//! | `/a` (leading `/`)         | `/.a`              | an empty level becomes the token `/` |
//! | `a/` (trailing `/`)        | `a./`              | same rule at the end |
//! | `a//b` (empty level)       | `a./.b`            | same rule in the middle |
//! | `/`                        | `/./`              | two empty levels |
//! | `+` (filter)               | `*`                | single-level wildcard |
//! | `#` (filter, last level)   | `>`                | multi-level wildcard |
//!
//! Equivalently: split the topic at `/`; map an empty level to `/`, any other level to itself
//! with every `.` replaced by `//`; join with `.`. The mapping is a bijection between valid MQTT
//! topic names and the subjects it produces, so `nats_subject_to_mqtt_topic` refuses subjects
//! that are not such an image (nats-server instead silently drops stray `/`s, turning `a/b`
//! into `ab`). Refused in both directions: whitespace (` `, `\t`, `\r`, `\n`, `\f`) and DEL, as
//! in nats-server; a topic level that is exactly `*` or `>` (it would become a NATS wildcard);
//! `+`/`#` in topic names. In filters `+` and `#` must fill a whole level and `#` must be last
//! (MQTT 3.1.1 §4.7.1; nats-server leaves this to its subscription list).
//!
//! MQTT's `a/#` also matches `a` itself while NATS `a.>` does not: a bridge subscribing for an
//! MQTT filter must add [`mqtt_filter_parent_subject`] as a second NATS pattern, as nats-server
//! does.

use std::cell::RefCell;
use std::sync::Arc;

/// Why a subject, topic or filter was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubjectError {
    /// The subject/topic is empty.
    #[error("empty subject")]
    Empty,
    /// A token between two `.` (or at either end) is empty.
    #[error("subject {0:?} has an empty token")]
    EmptyToken(String),
    /// Whitespace or a control character in the subject/topic.
    #[error("subject {0:?} contains whitespace")]
    Whitespace(String),
    /// A wildcard where none is allowed (publish subject, MQTT topic name).
    #[error("{0:?} contains a wildcard where none is allowed")]
    WildcardNotAllowed(String),
    /// `>` (or MQTT `#`) not as the last token, or `+`/`#` not filling a whole level.
    #[error("{0:?} misplaces a wildcard")]
    MisplacedWildcard(String),
    /// An MQTT level that is exactly `*` or `>` would turn into a NATS wildcard.
    #[error("MQTT topic {0:?} has a level that is a NATS wildcard")]
    NatsWildcardInTopic(String),
    /// A NATS subject that is not the image of any MQTT topic under the mapping.
    #[error("NATS subject {0:?} has no MQTT topic equivalent")]
    NotMappable(String),
}

fn has_ws(s: &str) -> bool {
    s.bytes()
        .any(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n' | b'\x0c' | b'\x7f'))
}

/// Checks a subject for PUB: non-empty, no empty token, no whitespace, no wildcard token.
pub fn validate_publish(subject: &str) -> Result<(), SubjectError> {
    if subject.is_empty() {
        return Err(SubjectError::Empty);
    }
    if has_ws(subject) {
        return Err(SubjectError::Whitespace(subject.to_owned()));
    }
    for t in subject.split('.') {
        match t {
            "" => return Err(SubjectError::EmptyToken(subject.to_owned())),
            "*" | ">" => return Err(SubjectError::WildcardNotAllowed(subject.to_owned())),
            _ => {}
        }
    }
    Ok(())
}

/// Checks a subject for SUB: non-empty, no empty token, no whitespace, `>` only as last token.
pub fn validate_subscribe(subject: &str) -> Result<(), SubjectError> {
    if subject.is_empty() {
        return Err(SubjectError::Empty);
    }
    if has_ws(subject) {
        return Err(SubjectError::Whitespace(subject.to_owned()));
    }
    let mut seen_fwc = false;
    for t in subject.split('.') {
        if t.is_empty() {
            return Err(SubjectError::EmptyToken(subject.to_owned()));
        }
        if seen_fwc {
            return Err(SubjectError::MisplacedWildcard(subject.to_owned()));
        }
        seen_fwc = t == ">";
    }
    Ok(())
}

/// True when the subject has no wildcard token.
pub fn is_literal(subject: &str) -> bool {
    subject.split('.').all(|t| t != "*" && t != ">")
}

/// Whether `subject` (a literal subject) matches `pattern` (a subscription subject).
///
/// Token-wise: `*` matches any one token, a final `>` matches one or more remaining tokens,
/// anything else must be equal. Invalid inputs simply do not match.
pub fn matches(pattern: &str, subject: &str) -> bool {
    let mut p = pattern.split('.');
    let mut s = subject.split('.');
    loop {
        match (p.next(), s.next()) {
            (None, None) => return true,
            (Some(">"), Some(st)) => return !st.is_empty() && p.next().is_none(),
            (Some(pt), Some(st)) => {
                if st.is_empty() || pt.is_empty() || (pt != "*" && pt != st) {
                    return false;
                }
            }
            _ => return false,
        }
    }
}

fn topic_level_to_token(level: &str, out: &mut String) {
    if level.is_empty() {
        out.push('/');
    } else {
        for c in level.chars() {
            if c == '.' {
                out.push_str("//");
            } else {
                out.push(c);
            }
        }
    }
}

fn check_topic_text(topic: &str) -> Result<(), SubjectError> {
    if topic.is_empty() {
        return Err(SubjectError::Empty);
    }
    if has_ws(topic) {
        return Err(SubjectError::Whitespace(topic.to_owned()));
    }
    Ok(())
}

/// The fast path of both name mappings: a name made only of non-empty runs of ASCII letters,
/// digits, `_` and `-` separated by `from` maps to itself with `from` replaced by `to` (no
/// escape, no empty level, no wildcard can occur). `None`: take the general path.
fn swap_plain_separators(name: &str, from: u8, to: u8) -> Option<String> {
    let mut out = String::with_capacity(name.len());
    swap_plain_separators_into(name, from, to, &mut out).then_some(out)
}

/// [`swap_plain_separators`] into `out` (cleared first); false when `name` is not plain (`out`
/// then holds nothing meaningful).
fn swap_plain_separators_into(name: &str, from: u8, to: u8, out: &mut String) -> bool {
    let bytes = name.as_bytes();
    // A separator at the start, after another one, or at the end marks an empty level/token.
    let mut after_separator = true;
    for &b in bytes {
        if b == from {
            if after_separator {
                return false;
            }
            after_separator = true;
        } else if PLAIN[usize::from(b)] {
            after_separator = false;
        } else {
            return false;
        }
    }
    if after_separator {
        return false;
    }
    // One copy, then the separators swapped in place (a loop the compiler vectorises); the
    // bytes are ASCII, so the UTF-8 check of the result takes its ASCII fast path.
    let mut swapped = std::mem::take(out).into_bytes();
    swapped.clear();
    swapped.extend_from_slice(bytes);
    for b in &mut swapped {
        if *b == from {
            *b = to;
        }
    }
    match String::from_utf8(swapped) {
        Ok(swapped) => {
            *out = swapped;
            true
        }
        Err(_) => false, // cannot happen: ASCII in, ASCII out
    }
}

/// Whether `token` is one plain token (not empty; ASCII letters, digits, `_` and `-` only):
/// it maps to itself as one MQTT level, so a subject `<prefix>.<token>` maps exactly when
/// `<prefix>` does (to the prefix's topic, `/`, the token). Reply subjects end in one.
pub fn is_plain_token(token: &str) -> bool {
    !token.is_empty() && token.bytes().all(|b| PLAIN[usize::from(b)])
}

/// The bytes of a plain level or token: ASCII letters, digits, `_` and `-`.
const PLAIN: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric() || c == b'_' || c == b'-';
        b += 1;
    }
    table
};

/// Maps an MQTT topic name (PUBLISH) to the NATS subject nats-server uses for it.
///
/// `a/b` → `a.b`, `a.b` → `a//b`, `/a` → `/.a`, `a/` → `a./`, `a//b` → `a./.b`.
/// Refuses `+`/`#`, whitespace, and levels that are exactly `*` or `>`.
pub fn mqtt_topic_to_nats_subject(topic: &str) -> Result<String, SubjectError> {
    let mut subject = String::with_capacity(topic.len() + 4);
    mqtt_topic_to_nats_subject_into(topic, &mut subject)?;
    Ok(subject)
}

/// [`mqtt_topic_to_nats_subject`] into `out` (cleared first), to reuse one buffer for many
/// names. On an error `out` holds nothing meaningful.
pub fn mqtt_topic_to_nats_subject_into(topic: &str, out: &mut String) -> Result<(), SubjectError> {
    if swap_plain_separators_into(topic, b'/', b'.', out) {
        return Ok(());
    }
    topic_to_subject_escaped(topic, out)
}

/// [`mqtt_topic_to_nats_subject`] for any topic (escapes, empty levels, refusals).
fn topic_to_subject_escaped(topic: &str, out: &mut String) -> Result<(), SubjectError> {
    check_topic_text(topic)?;
    if topic.contains(['+', '#']) {
        return Err(SubjectError::WildcardNotAllowed(topic.to_owned()));
    }
    out.clear();
    for (i, level) in topic.split('/').enumerate() {
        if level == "*" || level == ">" {
            return Err(SubjectError::NatsWildcardInTopic(topic.to_owned()));
        }
        if i > 0 {
            out.push('.');
        }
        topic_level_to_token(level, out);
    }
    Ok(())
}

/// Maps an MQTT topic filter (SUBSCRIBE) to a NATS subscription subject.
///
/// As [`mqtt_topic_to_nats_subject`], plus a level `+` → `*` and a last level `#` → `>`.
pub fn mqtt_filter_to_nats_subject(filter: &str) -> Result<String, SubjectError> {
    check_topic_text(filter)?;
    let levels: Vec<&str> = filter.split('/').collect();
    let last = levels.len() - 1;
    let mut out = String::with_capacity(filter.len() + 4);
    for (i, level) in levels.iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        match *level {
            "+" => out.push('*'),
            "#" if i == last => out.push('>'),
            "*" | ">" => return Err(SubjectError::NatsWildcardInTopic(filter.to_owned())),
            l if l.contains(['+', '#']) => {
                return Err(SubjectError::MisplacedWildcard(filter.to_owned()));
            }
            l => topic_level_to_token(l, &mut out),
        }
    }
    Ok(out)
}

/// For a NATS pattern produced from an MQTT filter ending in `#` (`a.>`), the extra pattern
/// (`a`) that makes it also match the parent level, as MQTT requires. `None` otherwise.
pub fn mqtt_filter_parent_subject(nats_pattern: &str) -> Option<&str> {
    nats_pattern
        .strip_suffix(".>")
        .filter(|parent| !parent.is_empty())
}

fn token_to_topic_level(subject: &str, token: &str, out: &mut String) -> Result<(), SubjectError> {
    if token == "/" {
        return Ok(()); // empty level
    }
    if token.is_empty() {
        return Err(SubjectError::EmptyToken(subject.to_owned()));
    }
    let b = token.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'/' {
            if b.get(i + 1) == Some(&b'/') {
                out.push('.');
                i += 2;
                continue;
            }
            return Err(SubjectError::NotMappable(subject.to_owned()));
        }
        // Copy one UTF-8 char starting at i.
        let ch_len = token[i..].chars().next().map_or(1, char::len_utf8);
        out.push_str(&token[i..i + ch_len]);
        i += ch_len;
    }
    Ok(())
}

/// Maps a NATS subject back to an MQTT topic name (the inverse of
/// [`mqtt_topic_to_nats_subject`]).
///
/// Refuses wildcards, whitespace, empty tokens, `+`/`#`, and `/` used other than as the
/// escapes `/` (whole token) and `//`: e.g. `a/b` has no MQTT equivalent.
pub fn nats_subject_to_mqtt_topic(subject: &str) -> Result<String, SubjectError> {
    match swap_plain_separators(subject, b'.', b'/') {
        Some(topic) => Ok(topic),
        None => subject_to_topic_escaped(subject),
    }
}

/// [`nats_subject_to_mqtt_topic`] as a shared string, made with one allocation: a plain
/// subject is swapped in a per-thread scratch buffer (kept at its largest subject) and
/// copied once into the `Arc`, where converting the `String` would allocate twice.
pub fn nats_subject_to_mqtt_topic_shared(subject: &str) -> Result<Arc<str>, SubjectError> {
    thread_local! {
        static SCRATCH: RefCell<String> = const { RefCell::new(String::new()) };
    }
    SCRATCH.with_borrow_mut(|scratch| {
        if swap_plain_separators_into(subject, b'.', b'/', scratch) {
            Ok(Arc::from(scratch.as_str()))
        } else {
            subject_to_topic_escaped(subject).map(Arc::from)
        }
    })
}

/// [`nats_subject_to_mqtt_topic`] for any subject (escapes, empty levels, refusals).
fn subject_to_topic_escaped(subject: &str) -> Result<String, SubjectError> {
    check_topic_text(subject)?;
    if subject.contains(['+', '#']) {
        return Err(SubjectError::NotMappable(subject.to_owned()));
    }
    let mut out = String::with_capacity(subject.len());
    for (i, token) in subject.split('.').enumerate() {
        if token == "*" || token == ">" {
            return Err(SubjectError::WildcardNotAllowed(subject.to_owned()));
        }
        if i > 0 {
            out.push('/');
        }
        token_to_topic_level(subject, token, &mut out)?;
    }
    if out.is_empty() {
        // The lone token `/` would be the empty topic.
        return Err(SubjectError::NotMappable(subject.to_owned()));
    }
    Ok(out)
}

/// Maps a NATS subscription subject to an MQTT topic filter (the inverse of
/// [`mqtt_filter_to_nats_subject`]): `*` → `+`, a last `>` → `#`.
pub fn nats_subject_to_mqtt_filter(subject: &str) -> Result<String, SubjectError> {
    check_topic_text(subject)?;
    if subject.contains(['+', '#']) {
        return Err(SubjectError::NotMappable(subject.to_owned()));
    }
    let tokens: Vec<&str> = subject.split('.').collect();
    let last = tokens.len() - 1;
    let mut out = String::with_capacity(subject.len());
    for (i, token) in tokens.iter().enumerate() {
        if i > 0 {
            out.push('/');
        }
        match *token {
            "*" => out.push('+'),
            ">" if i == last => out.push('#'),
            ">" => return Err(SubjectError::MisplacedWildcard(subject.to_owned())),
            t => token_to_topic_level(subject, t, &mut out)?,
        }
    }
    if out.is_empty() {
        return Err(SubjectError::NotMappable(subject.to_owned()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn plain_tokens_are_letters_digits_underscores_and_dashes() {
        for token in ["a", "Z9", "_INBOX", "x-y_z", "123"] {
            assert!(is_plain_token(token), "{token}");
        }
        for token in [
            "", "/", "a//b", "*", ">", "$JS", "a.b", "a b", "+", "#", "é",
        ] {
            assert!(!is_plain_token(token), "{token}");
        }
    }

    proptest! {
        /// A plain last token maps to itself: `<prefix>.<token>` maps exactly when the prefix
        /// does, to the prefix's topic and the token as one more level.
        #[test]
        fn a_plain_last_token_maps_to_one_level_of_its_own(
            prefix in "[a-z_./é*>+#$ -]{0,8}",
            token in "[a-zA-Z0-9_./é*>+#$ -]{0,4}",
        ) {
            if is_plain_token(&token) {
                let subject = format!("{prefix}.{token}");
                let whole = nats_subject_to_mqtt_topic(&subject);
                match nats_subject_to_mqtt_topic(&prefix) {
                    Ok(topic) => prop_assert_eq!(whole, Ok(format!("{topic}/{token}"))),
                    // The lone token `/` is refused alone (the empty topic), not as a prefix.
                    Err(_) if prefix == "/" => prop_assert!(whole.is_ok()),
                    Err(_) => prop_assert!(whole.is_err(), "{:?} maps, {:?} does not", subject, prefix),
                }
            }
        }

        #[test]
        fn the_plain_fast_path_agrees_with_the_general_mapping(name in "[a-zA-Z0-9_./é*>+# -]{0,12}") {
            if let Some(subject) = swap_plain_separators(&name, b'/', b'.') {
                let mut escaped = String::from("left over");
                prop_assert_eq!(topic_to_subject_escaped(&name, &mut escaped), Ok(()));
                prop_assert_eq!(escaped, subject);
            }
            if let Some(topic) = swap_plain_separators(&name, b'.', b'/') {
                prop_assert_eq!(subject_to_topic_escaped(&name), Ok(topic));
            }
        }
    }

    /// The fast path as it was first written, byte by byte: the model the table-driven one
    /// must equal, including when it declines.
    fn swap_model(name: &str, from: u8, to: u8) -> Option<String> {
        let plain = |level: &[u8]| {
            !level.is_empty()
                && level
                    .iter()
                    .all(|&b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        };
        name.as_bytes()
            .split(|&b| b == from)
            .all(plain)
            .then(|| name.replace(char::from(from), &char::from(to).to_string()))
    }

    proptest! {
        #[test]
        fn the_plain_fast_path_equals_its_model(
            name in "[a-zA-Z0-9_./é*>+# \\x00-\\x1f\\x7f-]{0,24}",
            left_over in "[a-z.]{0,8}",
        ) {
            for (from, to) in [(b'.', b'/'), (b'/', b'.')] {
                let mut out = left_over.clone();
                let swapped = swap_plain_separators_into(&name, from, to, &mut out).then_some(out);
                prop_assert_eq!(swapped, swap_model(&name, from, to));
            }
        }
    }

    #[test]
    fn the_plain_fast_path_takes_only_plain_names() {
        assert_eq!(
            swap_plain_separators("_INBOX.ab-C.9", b'.', b'/').as_deref(),
            Some("_INBOX/ab-C/9")
        );
        for name in ["", ".", "a.", ".a", "a..b", "a/b", "a.*", "a.>", "é", "a b"] {
            assert_eq!(swap_plain_separators(name, b'.', b'/'), None, "{name:?}");
        }
    }

    #[test]
    fn publish_subjects() {
        assert!(validate_publish("foo.bar").is_ok());
        assert!(
            validate_publish("foo.b*r.>x").is_ok(),
            "wildcard chars inside tokens are literal"
        );
        assert_eq!(validate_publish(""), Err(SubjectError::Empty));
        assert!(matches!(
            validate_publish("foo..bar"),
            Err(SubjectError::EmptyToken(_))
        ));
        assert!(matches!(
            validate_publish(".foo"),
            Err(SubjectError::EmptyToken(_))
        ));
        assert!(matches!(
            validate_publish("foo."),
            Err(SubjectError::EmptyToken(_))
        ));
        assert!(matches!(
            validate_publish("foo.*"),
            Err(SubjectError::WildcardNotAllowed(_))
        ));
        assert!(matches!(
            validate_publish(">"),
            Err(SubjectError::WildcardNotAllowed(_))
        ));
        assert!(matches!(
            validate_publish("foo bar"),
            Err(SubjectError::Whitespace(_))
        ));
        assert!(matches!(
            validate_publish("foo\tbar"),
            Err(SubjectError::Whitespace(_))
        ));
    }

    #[test]
    fn subscribe_subjects() {
        assert!(validate_subscribe("foo.*.bar").is_ok());
        assert!(validate_subscribe("foo.>").is_ok());
        assert!(validate_subscribe(">").is_ok());
        assert!(validate_subscribe("*").is_ok());
        assert!(matches!(
            validate_subscribe("foo.>.bar"),
            Err(SubjectError::MisplacedWildcard(_))
        ));
        assert!(matches!(
            validate_subscribe("foo..bar"),
            Err(SubjectError::EmptyToken(_))
        ));
        assert!(matches!(
            validate_subscribe("foo\r"),
            Err(SubjectError::Whitespace(_))
        ));
        assert_eq!(validate_subscribe(""), Err(SubjectError::Empty));
    }

    #[test]
    fn matching() {
        assert!(matches("foo.bar", "foo.bar"));
        assert!(!matches("foo.bar", "foo.baz"));
        assert!(matches("foo.*", "foo.bar"));
        assert!(!matches("foo.*", "foo.bar.baz"));
        assert!(!matches("foo.*", "foo"));
        assert!(matches("foo.>", "foo.bar"));
        assert!(matches("foo.>", "foo.bar.baz"));
        assert!(!matches("foo.>", "foo"));
        assert!(matches(">", "a"));
        assert!(matches("*.*", "a.b"));
        assert!(!matches("*.*", "a"));
        assert!(matches("a*.b", "a*.b"), "a* is a literal token");
        assert!(!matches("a*.b", "ax.b"));
        assert!(
            !matches("foo.>.bar", "foo.x.bar"),
            "invalid pattern never matches"
        );
        assert!(!matches("foo.*", "foo."));
    }

    #[test]
    fn is_literal_checks_whole_tokens() {
        assert!(is_literal("a.b*"));
        assert!(!is_literal("a.*"));
        assert!(!is_literal("a.>"));
    }

    #[test]
    fn mqtt_filters_both_ways() {
        for (mqtt, nats) in [
            ("+", "*"),
            ("#", ">"),
            ("/+", "/.*"),
            ("+/", "*./"),
            ("foo/+/bar", "foo.*.bar"),
            ("foo//+//bar", "foo./.*./.bar"),
            ("foo.bar///+///baz", "foo//bar././.*././.baz"),
            ("/foo/#", "/.foo.>"),
            ("foo//#", "foo./.>"),
            ("foo/bar.baz/#", "foo.bar//baz.>"),
        ] {
            assert_eq!(
                mqtt_filter_to_nats_subject(mqtt).as_deref(),
                Ok(nats),
                "{mqtt}"
            );
            assert_eq!(
                nats_subject_to_mqtt_filter(nats).as_deref(),
                Ok(mqtt),
                "{nats}"
            );
        }
        assert!(matches!(
            mqtt_filter_to_nats_subject("foo/#/bar"),
            Err(SubjectError::MisplacedWildcard(_))
        ));
        assert!(matches!(
            mqtt_filter_to_nats_subject("foo+/bar"),
            Err(SubjectError::MisplacedWildcard(_))
        ));
        assert!(matches!(
            mqtt_filter_to_nats_subject("a/*"),
            Err(SubjectError::NatsWildcardInTopic(_))
        ));
        assert!(matches!(
            nats_subject_to_mqtt_filter("a.>.b"),
            Err(SubjectError::MisplacedWildcard(_))
        ));
    }

    #[test]
    fn parent_subject_for_multi_level_filters() {
        assert_eq!(mqtt_filter_parent_subject("foo.>"), Some("foo"));
        assert_eq!(mqtt_filter_parent_subject(">"), None);
        assert_eq!(mqtt_filter_parent_subject("foo.*"), None);
    }

    #[test]
    fn mqtt_topics_refused() {
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
        assert!(matches!(
            mqtt_topic_to_nats_subject("a/>"),
            Err(SubjectError::NatsWildcardInTopic(_))
        ));
        assert_eq!(mqtt_topic_to_nats_subject(""), Err(SubjectError::Empty));
        assert!(matches!(
            nats_subject_to_mqtt_topic("a/b"),
            Err(SubjectError::NotMappable(_))
        ));
        assert!(matches!(
            nats_subject_to_mqtt_topic("a.///"),
            Err(SubjectError::NotMappable(_))
        ));
        assert!(matches!(
            nats_subject_to_mqtt_topic("a..b"),
            Err(SubjectError::EmptyToken(_))
        ));
        assert!(matches!(
            nats_subject_to_mqtt_topic("a.*"),
            Err(SubjectError::WildcardNotAllowed(_))
        ));
    }
}
