//! Diagnostics through `tracing`: plain lines for journald, timestamps on a terminal, JSON by option.

use std::io::IsTerminal;

use tracing_subscriber::filter::{ParseError, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::env;

/// The filter when none is set, or the one set does not parse.
const DEFAULT_FILTER: &str = "info";

/// Installs the global subscriber.
///
/// Level: `RUST_LOG`, else `EDGE_BROKER_LOGGING`, else `info`. Format: JSON when
/// `EDGE_BROKER_LOGGING_FORMAT=json`; without timestamps when journald captures stderr
/// (`JOURNAL_STREAM` is set: the journal stamps lines itself). The deprecated names
/// `EDGE_BROKER_LOG` and `EDGE_BROKER_LOG_FORMAT` still work and get a warning naming the new one.
pub fn init() {
    let settings = env::logging_settings(std::env::vars());
    let filter = match &settings.filter {
        Some((filter, variable)) => parse_filter(filter).unwrap_or_else(|err| {
            eprintln!(
                "edge-broker: ignoring invalid log filter {variable}={filter:?}: {err}; using \"{DEFAULT_FILTER}\""
            );
            default_filter()
        }),
        None => default_filter(),
    };
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let result = match (settings.json, journald) {
        (true, _) => builder.json().finish().with(filter).try_init(),
        (false, true) => builder
            .without_time()
            .with_ansi(false)
            .finish()
            .with(filter)
            .try_init(),
        (false, false) => builder.finish().with(filter).try_init(),
    };
    if let Err(err) = result {
        eprintln!("edge-broker: could not install the log subscriber: {err}");
    }
    for (old, new) in settings.deprecated {
        tracing::warn!(
            "{old} is deprecated: rename it {new} (EDGE_BROKER_LOG_* names are for [log] settings)"
        );
    }
}

/// Parses a filter: comma-separated `level` and `target=level` directives, e.g.
/// `warn,edge_bridge::forward=debug` (a target alone means all its levels).
///
/// `tracing_subscriber::filter::Targets`, not `EnvFilter`: the same directives without span and
/// field matching, which pulled a regex engine into the binary (issue 17, idle RSS).
pub fn parse_filter(filter: &str) -> Result<Targets, ParseError> {
    filter.parse()
}

/// The `info` filter.
fn default_filter() -> Targets {
    Targets::new().with_default(tracing::Level::INFO)
}

#[cfg(test)]
mod tests {
    use tracing::level_filters::LevelFilter;

    use super::*;

    #[test]
    fn directives_set_a_default_and_per_target_levels() {
        let targets = parse_filter("warn,edge_bridge::forward=debug,edge_log=off").unwrap();
        assert_eq!(targets.default_level(), Some(LevelFilter::WARN));
        assert!(targets.would_enable("edge_bridge::forward::retry", &tracing::Level::DEBUG));
        assert!(!targets.would_enable("edge_bridge::forward", &tracing::Level::TRACE));
        assert!(!targets.would_enable("edge_bridge::plan", &tracing::Level::INFO));
        assert!(!targets.would_enable("edge_log::writer", &tracing::Level::ERROR));
        assert!(targets.would_enable("edge_broker::app", &tracing::Level::WARN));
    }

    #[test]
    fn a_target_alone_enables_all_its_levels() {
        let targets = parse_filter("edge_broker::mqtt").unwrap();
        assert!(targets.would_enable("edge_broker::mqtt::session", &tracing::Level::TRACE));
        assert!(!targets.would_enable("edge_broker::nats", &tracing::Level::ERROR));
    }

    #[test]
    fn an_unknown_level_is_an_error() {
        let err = parse_filter("edge_broker=loud").unwrap_err();
        assert!(!err.to_string().is_empty());
    }

    #[test]
    fn the_default_is_info() {
        let targets = default_filter();
        assert!(targets.would_enable("edge_broker::app", &tracing::Level::INFO));
        assert!(!targets.would_enable("edge_broker::app", &tracing::Level::DEBUG));
    }
}
