//! The `edge-broker` binary: parses the command line and runs or checks a configuration.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use edge_broker::cli::{Cli, Command};
use edge_broker::config::{Config, LONG_FSYNC_INTERVAL};
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Run) {
        Command::Check => check(cli.config.as_deref()),
        Command::Passwd { file, user } => passwd(&file, &user),
        Command::Run => {
            edge_broker::logging::init();
            match run(cli.config.as_deref()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    tracing::error!("{err:#}");
                    eprintln!("edge-broker: {err:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// `edge-broker check --config FILE`: prints what is wrong (naming the field) or a summary.
fn check(path: Option<&Path>) -> ExitCode {
    let Some(path) = path else {
        eprintln!("edge-broker check: no configuration given: use --config FILE");
        return ExitCode::from(2);
    };
    match Config::load_with_env(Some(path)) {
        Ok(config) => {
            println!(
                "{}: ok (node {}, data in {}, fsync {:?}, when_full {:?})",
                path.display(),
                config.node.id,
                config.node.data_dir.display(),
                config.log.fsync,
                config.log.when_full
            );
            if config.log.fsync == edge_log::FsyncPolicy::Never {
                println!(
                    "warning: log.fsync = \"never\": devices are acknowledged before their events are on disk; a power cut can lose acknowledged events"
                );
            }
            if let edge_log::FsyncPolicy::Interval(interval) = config.log.fsync
                && interval > LONG_FSYNC_INTERVAL
            {
                println!(
                    "warning: log.fsync interval {interval:?}: devices are acknowledged up to that long before their events are on disk"
                );
            }
            for warning in edge_broker::auth::check::security_warnings(&config, Some(path)) {
                println!("warning: {warning}");
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("edge-broker check: {err}");
            ExitCode::FAILURE
        }
    }
}

/// `edge-broker passwd FILE USER`: sets USER's password in Mosquitto's format.
fn passwd(file: &Path, user: &str) -> ExitCode {
    let password = match read_password() {
        Ok(password) => password,
        Err(err) => {
            eprintln!("edge-broker passwd: {err:#}");
            return ExitCode::FAILURE;
        }
    };
    match edge_broker::auth::password::update_file(file, user, password.as_bytes()) {
        Ok(()) => {
            eprintln!("{}: password of {user:?} set", file.display());
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("edge-broker passwd: {err}");
            ExitCode::FAILURE
        }
    }
}

/// The new password: typed twice without echo on a terminal, else the first line of stdin.
fn read_password() -> anyhow::Result<String> {
    use std::io::{BufRead, IsTerminal, Write};
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        let mut line = String::new();
        stdin
            .lock()
            .read_line(&mut line)
            .context("cannot read the password from standard input")?;
        let password = line.trim_end_matches(['\n', '\r']).to_owned();
        anyhow::ensure!(!password.is_empty(), "empty password on standard input");
        return Ok(password);
    }
    let prompt = |text: &str| -> anyhow::Result<String> {
        eprint!("{text}");
        std::io::stderr().flush()?;
        let saved = nix::sys::termios::tcgetattr(std::io::stdin())?;
        let mut quiet = saved.clone();
        quiet
            .local_flags
            .remove(nix::sys::termios::LocalFlags::ECHO);
        nix::sys::termios::tcsetattr(
            std::io::stdin(),
            nix::sys::termios::SetArg::TCSAFLUSH,
            &quiet,
        )?;
        let mut line = String::new();
        let read = std::io::stdin().lock().read_line(&mut line);
        nix::sys::termios::tcsetattr(
            std::io::stdin(),
            nix::sys::termios::SetArg::TCSAFLUSH,
            &saved,
        )?;
        eprintln!();
        read?;
        Ok(line.trim_end_matches(['\n', '\r']).to_owned())
    };
    let first = prompt("Password: ")?;
    anyhow::ensure!(!first.is_empty(), "empty password");
    let second = prompt("Reenter password: ")?;
    anyhow::ensure!(first == second, "the passwords do not match");
    Ok(first)
}

fn run(path: Option<&Path>) -> anyhow::Result<()> {
    if path.is_none() {
        tracing::info!("no --config given: running on built-in defaults");
    }
    let config = Config::load_with_env(path)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("edge-broker")
        // Blocking work (log open, state snapshots) is rare; keep well under the unit's TasksMax.
        .max_blocking_threads(16)
        .build()
        .context("cannot start the tokio runtime")?;
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        edge_broker::shutdown::spawn_signal_listener(shutdown.clone())
            .context("cannot install signal handlers")?;
        edge_broker::app::run(config, path.map(Path::to_path_buf), shutdown).await?;
        Ok(())
    })
}
