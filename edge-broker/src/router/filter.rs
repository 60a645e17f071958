//! Subscription filters in one namespace for both protocols.
//!
//! The router works on topic *levels*: MQTT `a/b/c` and NATS `a.b.c` are both `[a, b, c]`
//! (the name mapping between the protocols happens at the edge, in each ingress). Wildcards keep
//! their protocol's meaning: MQTT `+` and NATS `*` match exactly one level; MQTT `#` matches the
//! parent level and any number of levels below it (`a/#` matches `a`), NATS `>` matches one or
//! more levels (`a.>` does not match `a`).

use std::fmt;

use edge_proto::mqtt::topic;

/// One level of a filter.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Level {
    /// Matches exactly this text.
    Literal(String),
    /// MQTT `+` / NATS `*`: any single level.
    One,
    /// MQTT `#`: zero or more trailing levels (must be last).
    ZeroOrMore,
    /// NATS `>`: one or more trailing levels (must be last).
    OneOrMore,
}

/// A parsed, validated subscription filter.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Filter {
    levels: Vec<Level>,
}

/// Why a filter was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// Empty filter string.
    #[error("filter is empty")]
    Empty,
    /// A multi-level wildcard that is not the last level, or not alone in its level.
    #[error("filter {filter:?}: '{wildcard}' must be a whole level and the last one")]
    MisplacedMultiWildcard {
        /// The filter as given.
        filter: String,
        /// `#` or `>`.
        wildcard: char,
    },
    /// A single-level wildcard sharing its level with other characters.
    #[error("filter {filter:?}: '{wildcard}' must be a whole level")]
    MisplacedSingleWildcard {
        /// The filter as given.
        filter: String,
        /// `+` or `*`.
        wildcard: char,
    },
    /// More levels than the limit the filter was parsed under.
    #[error("filter has more than {max} levels")]
    TooDeep {
        /// The limit.
        max: usize,
    },
    /// NATS subjects may not have empty tokens.
    #[error("subject {filter:?} has an empty token")]
    EmptyToken {
        /// The subject as given.
        filter: String,
    },
}

impl Filter {
    /// Parses an MQTT topic filter (`sensors/+/temp`, `sensors/#`).
    pub fn mqtt(filter: &str) -> Result<Filter, FilterError> {
        Filter::mqtt_within(filter, usize::MAX)
    }

    /// Parses an MQTT topic filter of at most `max_levels` levels (counted before anything is
    /// allocated): the form for filters that come from clients.
    pub fn mqtt_within(filter: &str, max_levels: usize) -> Result<Filter, FilterError> {
        if filter.is_empty() {
            return Err(FilterError::Empty);
        }
        check_depth(filter, b'/', max_levels)?;
        let parts: Vec<&str> = filter.split('/').collect();
        let last = parts.len() - 1;
        let mut levels = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            let level = match *part {
                "#" if i == last => Level::ZeroOrMore,
                "+" => Level::One,
                p if p.contains('#') => {
                    return Err(FilterError::MisplacedMultiWildcard {
                        filter: filter.to_owned(),
                        wildcard: '#',
                    });
                }
                p if p.contains('+') => {
                    return Err(FilterError::MisplacedSingleWildcard {
                        filter: filter.to_owned(),
                        wildcard: '+',
                    });
                }
                p => Level::Literal(p.to_owned()),
            };
            levels.push(level);
        }
        Ok(Filter { levels })
    }

    /// Parses a NATS subscription subject (`sensors.*.temp`, `sensors.>`).
    pub fn nats(subject: &str) -> Result<Filter, FilterError> {
        Filter::nats_within(subject, usize::MAX)
    }

    /// Parses a NATS subscription subject of at most `max_tokens` tokens.
    pub fn nats_within(subject: &str, max_tokens: usize) -> Result<Filter, FilterError> {
        if subject.is_empty() {
            return Err(FilterError::Empty);
        }
        check_depth(subject, b'.', max_tokens)?;
        let parts: Vec<&str> = subject.split('.').collect();
        let last = parts.len() - 1;
        let mut levels = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            let level = match *part {
                "" => {
                    return Err(FilterError::EmptyToken {
                        filter: subject.to_owned(),
                    });
                }
                ">" if i == last => Level::OneOrMore,
                ">" => {
                    return Err(FilterError::MisplacedMultiWildcard {
                        filter: subject.to_owned(),
                        wildcard: '>',
                    });
                }
                "*" => Level::One,
                p => Level::Literal(p.to_owned()),
            };
            levels.push(level);
        }
        Ok(Filter { levels })
    }

    /// The parsed levels.
    pub fn levels(&self) -> &[Level] {
        &self.levels
    }

    /// Whether the filter starts with a wildcard (such filters never match `$`-topics).
    pub fn starts_with_wildcard(&self) -> bool {
        !matches!(self.levels.first(), Some(Level::Literal(_)))
    }

    /// Whether `topic` (already split into levels) matches, including MQTT's rule that
    /// filters starting with a wildcard do not match topics starting with `$`.
    pub fn matches<S: AsRef<str>>(&self, topic: &[S]) -> bool {
        if self.starts_with_wildcard()
            && topic
                .first()
                .is_some_and(|l| !topic::wildcard_reaches(l.as_ref()))
        {
            return false;
        }
        let mut t = 0;
        for level in &self.levels {
            match level {
                Level::ZeroOrMore => return true,
                Level::OneOrMore => return t < topic.len(),
                Level::One => {
                    if t >= topic.len() {
                        return false;
                    }
                }
                Level::Literal(text) => {
                    if topic.get(t).is_none_or(|l| l.as_ref() != text) {
                        return false;
                    }
                }
            }
            t += 1;
        }
        t == topic.len()
    }
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, level) in self.levels.iter().enumerate() {
            if i > 0 {
                f.write_str("/")?;
            }
            match level {
                Level::Literal(text) => f.write_str(text)?,
                Level::One => f.write_str("+")?,
                Level::ZeroOrMore => f.write_str("#")?,
                Level::OneOrMore => f.write_str(">")?,
            }
        }
        Ok(())
    }
}

/// Refuses text with more than `max` `separator`-separated parts.
fn check_depth(text: &str, separator: u8, max: usize) -> Result<(), FilterError> {
    let parts = text
        .bytes()
        .filter(|&b| b == separator)
        .count()
        .saturating_add(1);
    if parts > max {
        return Err(FilterError::TooDeep { max });
    }
    Ok(())
}

/// Splits an MQTT topic name into levels.
pub fn mqtt_levels(topic: &str) -> Vec<&str> {
    topic.split('/').collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(filter: &str, topic: &str) -> bool {
        Filter::mqtt(filter).unwrap().matches(&mqtt_levels(topic))
    }

    fn n(subject: &str, topic: &str) -> bool {
        Filter::nats(subject)
            .unwrap()
            .matches(&topic.split('.').collect::<Vec<_>>())
    }

    #[test]
    fn mqtt_wildcards_follow_the_spec_examples() {
        // MQTT 5.0 §4.7.1.2 / §4.7.1.3
        assert!(m("sport/tennis/player1/#", "sport/tennis/player1"));
        assert!(m("sport/tennis/player1/#", "sport/tennis/player1/ranking"));
        assert!(m(
            "sport/tennis/player1/#",
            "sport/tennis/player1/score/wimbledon"
        ));
        assert!(m("sport/#", "sport"));
        assert!(m("#", "a/b/c"));
        assert!(m("sport/tennis/+", "sport/tennis/player1"));
        assert!(!m("sport/tennis/+", "sport/tennis/player1/ranking"));
        assert!(!m("sport/+", "sport"));
        assert!(m("sport/+", "sport/"));
        assert!(m("+/+", "/finance"));
        assert!(m("/+", "/finance"));
        assert!(!m("+", "/finance"));
    }

    #[test]
    fn dollar_topics_are_not_matched_by_root_wildcards() {
        assert!(!m("#", "$SYS/broker/load"));
        assert!(!m("+/monitor/Clients", "$SYS/monitor/Clients"));
        assert!(m("$SYS/#", "$SYS/monitor/Clients"));
        assert!(m("$SYS/monitor/+", "$SYS/monitor/Clients"));
    }

    #[test]
    fn nats_wildcards_keep_their_meaning() {
        assert!(n("a.*.c", "a.b.c"));
        assert!(n("a.>", "a.b.c"));
        assert!(!n("a.>", "a"));
        assert!(!n("a.*", "a.b.c"));
        assert!(n(">", "a"));
    }

    #[test]
    fn invalid_filters_are_refused() {
        assert!(matches!(
            Filter::mqtt("a/#/b"),
            Err(FilterError::MisplacedMultiWildcard { .. })
        ));
        assert!(matches!(
            Filter::mqtt("a/b#"),
            Err(FilterError::MisplacedMultiWildcard { .. })
        ));
        assert!(matches!(
            Filter::mqtt("a+/b"),
            Err(FilterError::MisplacedSingleWildcard { .. })
        ));
        assert_eq!(Filter::mqtt(""), Err(FilterError::Empty));
        assert!(matches!(
            Filter::nats("a..b"),
            Err(FilterError::EmptyToken { .. })
        ));
        assert!(matches!(
            Filter::nats("a.>.b"),
            Err(FilterError::MisplacedMultiWildcard { .. })
        ));
    }

    #[test]
    fn depth_limits_count_levels_and_tokens() {
        assert_eq!(Filter::mqtt_within("a/b/c", 3).unwrap().levels().len(), 3);
        assert_eq!(
            Filter::mqtt_within("a/b/c/#", 3),
            Err(FilterError::TooDeep { max: 3 })
        );
        assert_eq!(
            Filter::mqtt_within("//", 2),
            Err(FilterError::TooDeep { max: 2 })
        );
        assert!(Filter::nats_within("a.b.>", 3).is_ok());
        assert_eq!(
            Filter::nats_within("a.b.c.d", 3),
            Err(FilterError::TooDeep { max: 3 })
        );
    }

    #[test]
    fn display_round_trips_mqtt_filters() {
        for text in ["a/+/c", "#", "/a//b/#", "$SYS/+"] {
            assert_eq!(Filter::mqtt(text).unwrap().to_string(), text);
        }
    }
}
