//! Diagnostics through `tracing`: plain lines for journald, timestamps on a terminal, JSON by option.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::env;

/// Installs the global subscriber.
///
/// Level: `RUST_LOG`, else `EDGE_BROKER_LOGGING`, else `info`. Format: JSON when
/// `EDGE_BROKER_LOGGING_FORMAT=json`; without timestamps when journald captures stderr
/// (`JOURNAL_STREAM` is set: the journal stamps lines itself). The deprecated names
/// `EDGE_BROKER_LOG` and `EDGE_BROKER_LOG_FORMAT` still work and get a warning naming the new one.
pub fn init() {
    let settings = env::logging_settings(std::env::vars());
    let filter = match &settings.filter {
        Some((filter, variable)) => EnvFilter::try_new(filter).unwrap_or_else(|err| {
            eprintln!(
                "edge-broker: ignoring invalid log filter {variable}={filter:?}: {err}; using \"info\""
            );
            EnvFilter::new("info")
        }),
        None => EnvFilter::new("info"),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let result = match (settings.json, journald) {
        (true, _) => builder.json().try_init(),
        (false, true) => builder.without_time().with_ansi(false).try_init(),
        (false, false) => builder.try_init(),
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
