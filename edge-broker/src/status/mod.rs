//! `edge-broker status [--config FILE] [--watch]`: asks the running broker how it is doing.
//!
//! The broker is found through its config (`metrics.listen`; an unspecified address such as
//! `0.0.0.0` is asked on loopback) or `--metrics ADDR`. Two looks `--interval` apart give the
//! rates; `--watch` keeps looking and redraws, like `top`. Exit status: 0 when the broker is
//! healthy, stores publishes, and its uplink (if it forwards) is up, 1 otherwise or when it does not answer.
//!
//! - [`scrape`]: one look: `GET /healthz`, `GET /readyz`, `GET /metrics`, the Prometheus text
//!   parsed.
//! - [`view`]: what the screen says, computed from two looks, and how it is drawn.

pub mod scrape;
pub mod view;

use std::io::{IsTerminal, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::cli::StatusArgs;
use crate::config::{Config, ConfigError};
use scrape::{Scrape, ScrapeError};
use view::View;

/// Why `status` cannot ask the broker.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// The config does not load.
    #[error(transparent)]
    Config(Box<ConfigError>),
    /// `[metrics] enabled = false`.
    #[error(
        "{origin}: metrics are disabled ([metrics] enabled = false), and `status` reads them: \
         enable them (listen = \"127.0.0.1:9100\" keeps them on this machine), or pass --metrics ADDR"
    )]
    MetricsDisabled {
        /// The config file.
        origin: String,
    },
    /// `metrics.listen` has port 0: the port is only known to the running broker.
    #[error(
        "{origin}: metrics.listen {addr} takes a free port at start, unknown from here: pass \
         --metrics 127.0.0.1:PORT with the port of the broker's \"listening on\" line"
    )]
    EphemeralPort {
        /// The config file.
        origin: String,
        /// The configured address.
        addr: SocketAddr,
    },
    /// `--metrics` is not an address.
    #[error("--metrics {0:?}: expected HOST:PORT, e.g. 127.0.0.1:9100")]
    BadAddress(String),
    /// Nothing answered.
    #[error(
        "no edge-broker answers at {addr} (metrics.listen of {origin}): it is not running, or \
         listens elsewhere ({reason}). Check `systemctl status edge-broker` and \
         `journalctl -u edge-broker`"
    )]
    NotRunning {
        /// The address asked.
        addr: SocketAddr,
        /// Where the address came from.
        origin: String,
        /// The connect or read error.
        reason: std::io::Error,
    },
    /// Something else answered.
    #[error(transparent)]
    Scrape(ScrapeError),
}

/// Runs `edge-broker status`; prints the screen (or the error) and returns the exit status.
pub fn main(config: Option<&Path>, args: &StatusArgs) -> ExitCode {
    match status(config, args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("edge-broker status: {err}");
            ExitCode::FAILURE
        }
    }
}

/// The broker to ask: its metrics address, the config file named in messages, its budget
/// (known from a config file only: the built-in default may not be the broker's).
struct Target {
    addr: SocketAddr,
    origin: String,
    budget: Option<u64>,
}

fn target(config: Option<&Path>, args: &StatusArgs) -> Result<Target, StatusError> {
    let loaded = Config::load_with_env(config).map_err(|e| StatusError::Config(Box::new(e)))?;
    let origin = config
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("the built-in defaults"))
        .display()
        .to_string();
    let budget = config.map(|_| loaded.log.max_bytes.bytes());
    if let Some(text) = &args.metrics {
        let addr = text
            .to_socket_addrs()
            .ok()
            .and_then(|mut addrs| addrs.next())
            .ok_or_else(|| StatusError::BadAddress(text.clone()))?;
        return Ok(Target {
            addr,
            origin: format!("--metrics {text}"),
            budget,
        });
    }
    if !loaded.metrics.enabled {
        return Err(StatusError::MetricsDisabled { origin });
    }
    let mut addr = loaded.metrics.listen;
    if addr.port() == 0 {
        return Err(StatusError::EphemeralPort { origin, addr });
    }
    // A broker listening on every interface answers on loopback.
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => addr.set_ip(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        IpAddr::V6(ip) if ip.is_unspecified() => addr.set_ip(IpAddr::V6(Ipv6Addr::LOCALHOST)),
        _ => {}
    }
    Ok(Target {
        addr,
        origin,
        budget,
    })
}

fn look(target: &Target) -> Result<Scrape, StatusError> {
    Scrape::take(target.addr).map_err(|err| match err {
        ScrapeError::Unreachable { addr, source } => StatusError::NotRunning {
            addr,
            origin: target.origin.clone(),
            reason: source,
        },
        other => StatusError::Scrape(other),
    })
}

/// One screen (or, with `--watch`, one every interval until interrupted). Ok(healthy?).
fn status(config: Option<&Path>, args: &StatusArgs) -> Result<bool, StatusError> {
    let target = target(config, args)?;
    let mut before = look(&target)?;
    let mut out = std::io::stdout();
    let terminal = out.is_terminal();
    loop {
        std::thread::sleep(args.interval);
        let now = match look(&target) {
            Ok(now) => now,
            Err(err) if args.watch => {
                // Keep watching through a restart of the broker.
                let _ = writeln!(out, "{}edge-broker status: {err}", clear(terminal));
                let _ = out.flush();
                continue;
            }
            Err(err) => return Err(err),
        };
        let view = View::new(target.addr, Some(&before), &now, target.budget);
        if !args.watch {
            print!("{}", view.render());
            return Ok(view.is_good());
        }
        let _ = write!(out, "{}{}", clear(terminal), view.render());
        if !terminal {
            let _ = writeln!(out, "--");
        }
        let _ = out.flush();
        before = now;
    }
}

/// Clears a terminal before a redraw; a pipe gets frames one after the other.
fn clear(terminal: bool) -> &'static str {
    if terminal { "\x1b[H\x1b[2J" } else { "" }
}
