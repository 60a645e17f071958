//! The `edge-broker` binary: parses the command line and runs, checks or inspects.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use edge_broker::cli::{Cli, Command};
use edge_broker::config::{Config, env, summary};
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = cli.config.as_deref();
    match cli.command.unwrap_or(Command::Run) {
        Command::Check => check(config),
        Command::Status(args) => edge_broker::status::main(config, &args),
        Command::Log(command) => edge_broker::inspect::main(config, command),
        Command::Passwd { file, user } => passwd(&file, &user),
        Command::Run => {
            edge_broker::logging::init();
            for ignored in environment().ignored {
                tracing::warn!("ignoring {}: {}", ignored.variable, ignored.reason);
            }
            match run(config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    // Once: stderr is the log (the journal under systemd).
                    tracing::error!("{}", describe(&err));
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// The error and its causes, each cause once: most of our errors already say their cause
/// (`cannot listen on ADDR: Address already in use`), which `{:#}` would repeat.
fn describe(err: &anyhow::Error) -> String {
    let mut text = err.to_string();
    for cause in err.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

/// What the `EDGE_BROKER_*` variables of this process mean (malformed ones are reported when
/// the config is loaded).
fn environment() -> env::Scan {
    env::scan(std::env::vars(), &env::section_names()).unwrap_or_default()
}

/// `edge-broker check --config FILE`: prints every problem (naming the field and its line) or
/// a summary of what the config sets up, with warnings.
fn check(path: Option<&Path>) -> ExitCode {
    let Some(path) = path else {
        eprintln!("edge-broker check: no configuration given: use --config FILE");
        return ExitCode::from(2);
    };
    let found = environment();
    for (old, new) in &found.deprecated {
        println!("note: {old} is deprecated: rename it {new}");
    }
    for ignored in &found.ignored {
        println!("note: ignoring {}: {}", ignored.variable, ignored.reason);
    }
    for o in &found.overrides {
        println!("note: {} sets {}.{}", o.variable, o.section, o.key);
    }
    match Config::load_with_env(Some(path)) {
        Ok(config) => {
            print!("{}", summary::summary(&config, &path.display().to_string()));
            for warning in summary::warnings(&config) {
                println!("warning: {warning}");
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
    if config.routes.is_empty() {
        tracing::warn!(
            "no [[route]] configured: publishes reach local subscribers only; nothing is stored \
             in the log or forwarded to Kafka (`edge-broker check` shows what a config sets up)"
        );
    }
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
