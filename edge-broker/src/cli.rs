//! Command-line interface: `edge-broker [run] [--config FILE]`, `check`, `status`, `log …`,
//! `passwd FILE USER`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::env;

/// Durable MQTT/NATS broker for gateways that forwards every event to Kafka.
///
/// Without a subcommand it runs the broker; without --config it runs on built-in defaults
/// (MQTT on 127.0.0.1:1883, NATS on 127.0.0.1:4222, data in ./edge-data, no routes: nothing is
/// stored or forwarded until the config has `[[route]]` entries).
#[derive(Debug, Parser)]
#[command(
    name = "edge-broker",
    version,
    about,
    after_help = env::help_text(&env::section_names())
)]
pub struct Cli {
    /// Configuration file (TOML).
    #[arg(
        long,
        short = 'c',
        global = true,
        value_name = "FILE",
        env = "EDGE_BROKER_CONFIG"
    )]
    pub config: Option<PathBuf>,

    /// What to do; `run` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the broker until SIGTERM or SIGINT (the default).
    Run,
    /// Validate a configuration and print what it sets up: 0 when valid, 1 naming every bad
    /// field otherwise.
    Check,
    /// Create or update USER in Mosquitto's password file FILE (a `$7$` PBKDF2-SHA512 hash).
    /// The password is read from the terminal without echo, or from the first line of
    /// standard input when it is not a terminal; never from the command line.
    Passwd {
        /// The password file (created 0600 if missing; other lines and the mode are kept).
        file: PathBuf,
        /// The user name.
        user: String,
    },
    /// Ask the running broker (over its metrics listener) how it is doing: uplink, backlog,
    /// rates, connections, last error.
    Status(StatusArgs),
    /// Inspect the data directory without disturbing a running broker (read-only), and
    /// re-queue dead letters.
    #[command(subcommand)]
    Log(LogCommand),
}

/// `edge-broker status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Refresh until interrupted (like `top`).
    #[arg(long, short = 'w')]
    pub watch: bool,
    /// Time between the two samples that give the rates, and between refreshes.
    #[arg(long, short = 'i', value_name = "DURATION", default_value = "2s", value_parser = parse_interval)]
    pub interval: std::time::Duration,
    /// Metrics address to ask instead of the config's `metrics.listen` (HOST:PORT).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
}

/// `edge-broker log …`: read-only views of a data directory, and the dead-letter re-queue.
#[derive(Debug, Subcommand)]
pub enum LogCommand {
    /// Segments, offsets, format versions, cursors and their lag, bytes against the budget.
    Stat(LogTarget),
    /// Records from an offset on: topic, destination, headers, payload.
    Dump(DumpArgs),
    /// The last records of the log.
    Tail(TailArgs),
    /// The dead-letter file: records Kafka refused for good.
    DeadLetters(DeadLetterArgs),
    /// Append dead letters to the log again (broker stopped), routed by the config's routes.
    Requeue(RequeueArgs),
}

/// Which data directory: `--config FILE` (its `node.data_dir`) or a directory given here.
#[derive(Debug, Args)]
pub struct LogTarget {
    /// Data directory (the config's `node.data_dir` when omitted).
    #[arg(value_name = "DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Output JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// How record payloads are shown.
#[derive(Debug, Args)]
pub struct PayloadArgs {
    /// Payloads as hex (default: text when printable UTF-8, else hex).
    #[arg(long)]
    pub hex: bool,
    /// Most payload bytes shown per record (0: all).
    #[arg(long, value_name = "BYTES", default_value_t = 256)]
    pub max_payload: usize,
}

/// `edge-broker log dump`.
#[derive(Debug, Args)]
pub struct DumpArgs {
    /// Where to read.
    #[command(flatten)]
    pub target: LogTarget,
    /// First offset (default: the oldest held).
    #[arg(long, value_name = "OFFSET")]
    pub from: Option<u64>,
    /// Most records (0: to the end).
    #[arg(long, short = 'n', value_name = "N", default_value_t = 100)]
    pub count: usize,
    /// Payload display.
    #[command(flatten)]
    pub payload: PayloadArgs,
}

/// `edge-broker log tail`.
#[derive(Debug, Args)]
pub struct TailArgs {
    /// Where to read.
    #[command(flatten)]
    pub target: LogTarget,
    /// How many of the last records.
    #[arg(long, short = 'n', value_name = "N", default_value_t = 10)]
    pub count: usize,
    /// Payload display.
    #[command(flatten)]
    pub payload: PayloadArgs,
}

/// `edge-broker log dead-letters`.
#[derive(Debug, Args)]
pub struct DeadLetterArgs {
    /// Where to read.
    #[command(flatten)]
    pub target: LogTarget,
    /// Payload display.
    #[command(flatten)]
    pub payload: PayloadArgs,
}

/// `edge-broker log requeue`.
#[derive(Debug, Args)]
pub struct RequeueArgs {
    /// Only the dead letters of these original offsets (default: all).
    #[arg(long = "offset", value_name = "OFFSET")]
    pub offsets: Vec<u64>,
    /// Show what would be re-queued, change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

fn parse_interval(text: &str) -> Result<std::time::Duration, String> {
    let interval = crate::config::parse_duration(text)?;
    if interval < std::time::Duration::from_millis(100) {
        return Err("must be at least 100ms".to_owned());
    }
    Ok(interval)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn config_may_come_before_or_after_the_subcommand() {
        let cli = Cli::try_parse_from(["edge-broker", "--config", "a.toml", "check"]).unwrap();
        assert_eq!(cli.config, Some(PathBuf::from("a.toml")));
        assert!(matches!(cli.command, Some(Command::Check)));
        let cli = Cli::try_parse_from(["edge-broker", "run", "--config", "b.toml"]).unwrap();
        assert_eq!(cli.config, Some(PathBuf::from("b.toml")));
        let cli = Cli::try_parse_from(["edge-broker"]).unwrap();
        assert!(cli.command.is_none());
        let cli = Cli::try_parse_from(["edge-broker", "passwd", "pw", "alice"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Passwd { user, .. }) if user == "alice"));
        assert!(
            Cli::try_parse_from(["edge-broker", "passwd", "pw", "alice", "secret"]).is_err(),
            "no password on the command line"
        );
    }

    #[test]
    fn the_names_operators_type() {
        let cli = Cli::try_parse_from([
            "edge-broker",
            "log",
            "dump",
            "--config",
            "c.toml",
            "--from",
            "17",
        ])
        .unwrap();
        assert_eq!(cli.config, Some(PathBuf::from("c.toml")));
        assert!(matches!(
            cli.command,
            Some(Command::Log(LogCommand::Dump(DumpArgs {
                from: Some(17),
                ..
            })))
        ));
        let cli =
            Cli::try_parse_from(["edge-broker", "log", "stat", "/var/lib/edge-broker"]).unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Log(LogCommand::Stat(LogTarget {
                data_dir: Some(_),
                ..
            })))
        ));
        let cli =
            Cli::try_parse_from(["edge-broker", "status", "-c", "c.toml", "--watch"]).unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Status(StatusArgs { watch: true, .. }))
        ));
        assert!(
            Cli::try_parse_from(["edge-broker", "status", "--interval", "1ms"]).is_err(),
            "an interval below 100ms is refused"
        );
    }
}
