//! Command-line interface: `edge-broker [run] [--config FILE]`, `edge-broker check --config FILE`,
//! `edge-broker passwd FILE USER`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Durable MQTT/NATS broker for gateways that forwards every event to Kafka.
///
/// Without a subcommand it runs the broker; without --config it runs on built-in defaults
/// (MQTT on 127.0.0.1:1883, NATS on 127.0.0.1:4222, data in ./edge-data).
#[derive(Debug, Parser)]
#[command(name = "edge-broker", version, about, long_about = None)]
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
    /// Validate a configuration file and exit: 0 when valid, 1 naming the bad field otherwise.
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
}
