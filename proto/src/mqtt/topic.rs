//! Topic names and topic filters (spec 4.7): validation, wildcard matching, and shared
//! subscriptions (`$share/{group}/{filter}`, spec 4.8.2).

/// Why a topic name or filter is invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// Topic names and filters must be at least one byte long.
    #[error("topic is empty")]
    Empty,
    /// More than 65,535 bytes.
    #[error("topic is {len} bytes long, more than 65535")]
    TooLong {
        /// Length in bytes.
        len: usize,
    },
    /// Contains U+0000.
    #[error("topic contains U+0000 at byte {offset}")]
    NullChar {
        /// Byte offset.
        offset: usize,
    },
    /// A topic name (as opposed to a filter) contains `+` or `#`.
    #[error("topic name contains the wildcard {wildcard:?} at byte {offset}")]
    WildcardInName {
        /// The wildcard found.
        wildcard: char,
        /// Byte offset.
        offset: usize,
    },
    /// `+` or `#` is not a whole level, or `#` is not the last level.
    #[error("wildcard misplaced in topic filter level {level}: {detail}")]
    MisplacedWildcard {
        /// Zero-based level index.
        level: usize,
        /// Which rule was broken.
        detail: &'static str,
    },
    /// `$share/` with an empty or wildcard share name, or without a filter after it.
    #[error("invalid shared subscription: {detail}")]
    InvalidShare {
        /// Which rule was broken.
        detail: &'static str,
    },
}

/// Longest topic an MQTT string can carry.
pub const MAX_TOPIC_LEN: usize = 65_535;

fn common(s: &str) -> Result<(), TopicError> {
    if s.is_empty() {
        return Err(TopicError::Empty);
    }
    if s.len() > MAX_TOPIC_LEN {
        return Err(TopicError::TooLong { len: s.len() });
    }
    if let Some(offset) = s.bytes().position(|b| b == 0) {
        return Err(TopicError::NullChar { offset });
    }
    Ok(())
}

/// Checks a topic name as used in PUBLISH: non-empty, at most 65,535 bytes, no U+0000, no
/// wildcards.
pub fn validate_name(topic: &str) -> Result<(), TopicError> {
    common(topic)?;
    if let Some(offset) = topic.bytes().position(|b| b == b'+' || b == b'#') {
        let wildcard = if topic.as_bytes().get(offset) == Some(&b'+') {
            '+'
        } else {
            '#'
        };
        return Err(TopicError::WildcardInName { wildcard, offset });
    }
    Ok(())
}

/// Checks a topic filter as used in SUBSCRIBE: non-empty, at most 65,535 bytes, no U+0000,
/// `+` only as a whole level, `#` only as the whole last level. A `$share/` filter is checked
/// as a shared subscription ([`parse_shared`]).
pub fn validate_filter(filter: &str) -> Result<(), TopicError> {
    common(filter)?;
    if filter.starts_with(SHARE_PREFIX) {
        return parse_shared(filter).map(|_| ());
    }
    validate_plain_filter(filter)
}

fn validate_plain_filter(filter: &str) -> Result<(), TopicError> {
    common(filter)?;
    let mut levels = filter.split('/').enumerate().peekable();
    while let Some((level, l)) = levels.next() {
        let last = levels.peek().is_none();
        if l.contains('#') && (l != "#" || !last) {
            return Err(TopicError::MisplacedWildcard {
                level,
                detail: "'#' must be the whole last level",
            });
        }
        if l.contains('+') && l != "+" {
            return Err(TopicError::MisplacedWildcard {
                level,
                detail: "'+' must be a whole level",
            });
        }
    }
    Ok(())
}

/// The `$` rule, in one place for every matcher of the broker (MQTT filters, NATS patterns,
/// routes, the subscription tree): topic names whose first level starts with `$` belong to
/// the server (spec 4.7.2, `$SYS/...`), and a filter whose first level is a wildcard never
/// matches them. `first_level` is the topic's first level (or the whole name: only its first
/// character counts). NATS subjects follow the same rule on their first token.
pub fn is_dollar(first_level: &str) -> bool {
    first_level.starts_with('$')
}

/// Whether a filter whose first level is a wildcard may match a topic whose first level is
/// `first_level` (see [`is_dollar`]).
pub fn wildcard_reaches(first_level: &str) -> bool {
    !is_dollar(first_level)
}

/// Whether clients may publish to a topic whose first level is `first_level`: not into the
/// server's own `$SYS` tree, and not to a `$share` name (a shared-subscription prefix, never a
/// topic). Mosquitto 2 refuses exactly these two (any other `$`-topic is an ordinary topic for
/// publishing, reached only by filters that name its first level).
pub fn client_may_publish(first_level: &str) -> bool {
    !matches!(first_level, "$SYS" | "$share")
}

/// The first level of a topic name or filter (everything before the first `/`).
pub fn first_level(topic: &str) -> &str {
    before(topic, b'/')
}

/// Everything of `name` before the first `separator` byte (an ASCII separator: `/` for MQTT,
/// `.` for NATS), or all of it.
pub fn before(name: &str, separator: u8) -> &str {
    match name.bytes().position(|b| b == separator) {
        Some(i) => &name[..i],
        None => name,
    }
}

/// The levels of a topic name or filter: the same as `topic.split('/')`, found by scanning
/// bytes for the ASCII `/` (which never occurs inside a multi-byte UTF-8 character), several
/// times cheaper on short topics than `str::split(char)`'s searcher; it runs per publish.
pub fn levels(topic: &str) -> Levels<'_> {
    Levels { rest: Some(topic) }
}

/// The iterator of [`levels`].
#[derive(Debug, Clone)]
pub struct Levels<'a> {
    rest: Option<&'a str>,
}

impl<'a> Iterator for Levels<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let rest = self.rest?;
        match rest.bytes().position(|b| b == b'/') {
            Some(i) => {
                self.rest = Some(&rest[i + 1..]);
                Some(&rest[..i])
            }
            None => {
                self.rest = None;
                Some(rest)
            }
        }
    }
}

/// True if the (valid) filter matches the (valid) topic name. Per spec 4.7.2, filters
/// starting with a wildcard do not match topic names starting with `$` ([`is_dollar`]). A
/// `$share/` filter must be unwrapped with [`parse_shared`] first.
pub fn matches(filter: &str, topic: &str) -> bool {
    if (filter.starts_with('+') || filter.starts_with('#')) && !wildcard_reaches(topic) {
        return false;
    }
    // Split on the byte `/` (ASCII, so the same levels as splitting the `str`): several times
    // cheaper than `str::split(char)` on short topics, and this runs per routed record.
    let mut f = filter.as_bytes().split(|b| *b == b'/');
    let mut t = topic.as_bytes().split(|b| *b == b'/');
    loop {
        match (f.next(), t.next()) {
            (Some(b"#"), _) => return true,
            (Some(b"+"), Some(_)) => {}
            (Some(fl), Some(tl)) if fl == tl => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// The prefix of a shared subscription filter.
pub const SHARE_PREFIX: &str = "$share/";

/// A parsed `$share/{group}/{filter}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedFilter<'a> {
    /// The share name.
    pub group: &'a str,
    /// The topic filter after the share name.
    pub filter: &'a str,
}

/// Parses a shared subscription. `Ok(None)` if `filter` does not start with `$share/`;
/// `Err` if it does but the share name is empty or holds `+`/`#`, or the filter after it is
/// missing or invalid.
pub fn parse_shared(filter: &str) -> Result<Option<SharedFilter<'_>>, TopicError> {
    let Some(rest) = filter.strip_prefix(SHARE_PREFIX) else {
        return Ok(None);
    };
    let Some((group, inner)) = rest.split_once('/') else {
        return Err(TopicError::InvalidShare {
            detail: "no topic filter after the share name",
        });
    };
    if group.is_empty() {
        return Err(TopicError::InvalidShare {
            detail: "empty share name",
        });
    }
    if group.contains(['+', '#']) {
        return Err(TopicError::InvalidShare {
            detail: "share name contains a wildcard",
        });
    }
    if inner.is_empty() {
        return Err(TopicError::InvalidShare {
            detail: "empty topic filter after the share name",
        });
    }
    validate_plain_filter(inner)?;
    Ok(Some(SharedFilter {
        group,
        filter: inner,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// The byte scans give `str::split`'s levels and first token, empty levels, `$` and
        /// multi-byte UTF-8 (whose bytes are never ASCII) included.
        #[test]
        fn levels_and_before_are_str_split(name in "[a/.$é\u{2F00}]{0,12}") {
            proptest::prop_assert_eq!(levels(&name).collect::<Vec<_>>(), name.split('/').collect::<Vec<_>>());
            proptest::prop_assert_eq!(first_level(&name), name.split('/').next().unwrap_or(""));
            proptest::prop_assert_eq!(before(&name, b'.'), name.split('.').next().unwrap_or(""));
        }
    }

    #[test]
    fn the_dollar_rule_and_what_clients_may_publish() {
        assert!(is_dollar("$SYS") && is_dollar("$share") && is_dollar("$foo"));
        assert!(!is_dollar("SYS") && !is_dollar("") && !is_dollar("a$"));
        assert!(!wildcard_reaches("$SYS") && wildcard_reaches("sensors"));
        for forbidden in ["$SYS", "$share"] {
            assert!(!client_may_publish(forbidden), "{forbidden}");
        }
        for allowed in ["$foo", "$SYSTEM", "sensors", "", "SYS"] {
            assert!(client_may_publish(allowed), "{allowed}");
        }
        assert_eq!(first_level("$SYS/broker/load"), "$SYS");
        assert_eq!(first_level("a"), "a");
        assert_eq!(first_level("/a"), "");
    }

    #[test]
    fn names() {
        assert!(validate_name("a/b/c").is_ok());
        assert!(validate_name("/").is_ok());
        assert!(validate_name("$SYS/x").is_ok());
        assert_eq!(validate_name(""), Err(TopicError::Empty));
        assert!(matches!(
            validate_name("a/+"),
            Err(TopicError::WildcardInName {
                wildcard: '+',
                offset: 2
            })
        ));
        assert!(matches!(
            validate_name("a/#"),
            Err(TopicError::WildcardInName { wildcard: '#', .. })
        ));
        assert!(matches!(
            validate_name("a\0"),
            Err(TopicError::NullChar { offset: 1 })
        ));
        let long = "a".repeat(65_536);
        assert_eq!(
            validate_name(&long),
            Err(TopicError::TooLong { len: 65_536 })
        );
        assert!(validate_name(&long[1..]).is_ok());
    }

    #[test]
    fn filters() {
        for ok in [
            "#",
            "+",
            "a/#",
            "+/+",
            "a/+/c",
            "/+",
            "+/",
            "$SYS/#",
            "a//b",
            "$share/g/a/#",
        ] {
            assert!(validate_filter(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "a#",
            "a/#/b",
            "a+",
            "a/b+/c",
            "##",
            "#/",
            "$share/g",
            "$share//a",
            "$share/g+/a",
            "$share/g/",
            "$share/g/a#",
        ] {
            assert!(validate_filter(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn matching() {
        let yes = [
            ("#", "a"),
            ("#", "a/b/c"),
            ("a/#", "a"),
            ("a/#", "a/b"),
            ("a/+", "a/b"),
            ("a/+", "a/"),
            ("+/+", "/a"),
            ("+", ""),
            ("a/b", "a/b"),
            ("+/b/#", "x/b"),
            ("$SYS/#", "$SYS/load"),
            ("$SYS/+", "$SYS/load"),
        ];
        for (f, t) in yes {
            assert!(matches(f, t), "{f} should match {t}");
        }
        let no = [
            ("a/+", "a"),
            ("a/+", "a/b/c"),
            ("a/b", "a/b/c"),
            ("a/b/c", "a/b"),
            ("+", "/a"),
            ("#", "$SYS/load"),
            ("+/load", "$SYS/load"),
            ("a", "A"),
        ];
        for (f, t) in no {
            assert!(!matches(f, t), "{f} should not match {t}");
        }
    }

    #[test]
    fn shared() {
        assert_eq!(parse_shared("a/b"), Ok(None));
        assert_eq!(
            parse_shared("$share/grp/sensors/+/t"),
            Ok(Some(SharedFilter {
                group: "grp",
                filter: "sensors/+/t"
            }))
        );
        assert_eq!(
            parse_shared("$share/grp//"),
            Ok(Some(SharedFilter {
                group: "grp",
                filter: "/"
            }))
        );
        assert!(parse_shared("$share/").is_err());
        assert!(parse_shared("$share/grp").is_err());
        assert!(parse_shared("$share/#/a").is_err());
        assert!(parse_shared("$share/g/a/#/b").is_err());
        // `$shared/...` or `$SHARE/...` is an ordinary filter.
        assert_eq!(parse_shared("$SHARE/g/a"), Ok(None));
    }
}
