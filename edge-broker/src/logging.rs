//! Diagnostics through `tracing`: plain lines for journald, timestamps on a terminal, JSON by option.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber.
///
/// Level: `RUST_LOG`, else `EDGE_BROKER_LOG`, else `info`. Format: JSON when
/// `EDGE_BROKER_LOG_FORMAT=json`; without timestamps when journald captures stderr
/// (`JOURNAL_STREAM` is set: the journal stamps lines itself).
pub fn init() {
    let filter = std::env::var("RUST_LOG")
        .or_else(|_| std::env::var("EDGE_BROKER_LOG"))
        .unwrap_or_else(|_| "info".to_owned());
    let filter = EnvFilter::try_new(&filter).unwrap_or_else(|err| {
        eprintln!("edge-broker: ignoring invalid log filter {filter:?}: {err}; using \"info\"");
        EnvFilter::new("info")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    let json = std::env::var("EDGE_BROKER_LOG_FORMAT").is_ok_and(|f| f == "json");
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let result = match (json, journald) {
        (true, _) => builder.json().try_init(),
        (false, true) => builder.without_time().with_ansi(false).try_init(),
        (false, false) => builder.try_init(),
    };
    if let Err(err) = result {
        eprintln!("edge-broker: could not install the log subscriber: {err}");
    }
}
