//! The systemd notification protocol (`sd_notify`): READY, STATUS, WATCHDOG, RELOADING, STOPPING.
//!
//! Speaks the datagram protocol directly (a few lines over a Unix socket) instead of linking
//! libsystemd. Without `NOTIFY_SOCKET` (not under systemd) every call is a no-op.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::Duration;

/// Where notifications go, taken from the environment at startup.
#[derive(Debug)]
pub struct Notifier {
    target: Option<Target>,
    watchdog: Option<Duration>,
}

#[derive(Debug)]
enum Target {
    Path(PathBuf),
    Abstract(Vec<u8>),
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET` and `WATCHDOG_USEC`/`WATCHDOG_PID` from the environment.
    pub fn from_env() -> Notifier {
        let target = std::env::var_os("NOTIFY_SOCKET").and_then(|socket| {
            let bytes = socket.into_encoded_bytes();
            match bytes.split_first() {
                Some((b'@', name)) => Some(Target::Abstract(name.to_vec())),
                Some((b'/', _)) => String::from_utf8(bytes)
                    .ok()
                    .map(|p| Target::Path(p.into())),
                _ => None,
            }
        });
        let for_us = std::env::var("WATCHDOG_PID")
            .ok()
            .and_then(|pid| pid.parse::<u32>().ok())
            .is_none_or(|pid| pid == std::process::id());
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|usec| usec.parse::<u64>().ok())
            .filter(|&usec| usec > 0 && for_us)
            .map(Duration::from_micros);
        Notifier { target, watchdog }
    }

    /// Whether a service manager listens.
    pub fn enabled(&self) -> bool {
        self.target.is_some()
    }

    /// The watchdog interval systemd expects pings within, when enabled.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.target.as_ref().and(self.watchdog)
    }

    /// Sends one notification (`"READY=1"`, `"STATUS=..."`, newline-separated for several).
    pub fn notify(&self, state: &str) {
        let Some(target) = &self.target else { return };
        let result = UnixDatagram::unbound().and_then(|socket| match target {
            Target::Path(path) => socket.send_to(state.as_bytes(), path),
            Target::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                socket.send_to_addr(state.as_bytes(), &addr)
            }
        });
        if let Err(err) = result {
            tracing::warn!("sd_notify {state:?} failed: {err}");
        }
    }

    /// Tells systemd the broker is ready (log recovered, listeners bound).
    pub fn ready(&self) {
        self.notify("READY=1");
    }

    /// Sets the one-line status shown by `systemctl status`.
    pub fn status(&self, status: &str) {
        self.notify(&format!("STATUS={}", status.replace('\n', " ")));
    }

    /// Pets the watchdog.
    pub fn watchdog(&self) {
        self.notify("WATCHDOG=1");
    }

    /// Tells systemd a graceful stop has begun.
    pub fn stopping(&self) {
        self.notify("STOPPING=1");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_reach_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let listener = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier {
            target: Some(Target::Path(path)),
            watchdog: Some(Duration::from_secs(10)),
        };
        assert!(notifier.enabled());
        notifier.ready();
        notifier.status("3 connections\nbacklog 0");
        let mut buf = [0u8; 256];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STATUS=3 connections backlog 0");
        assert_eq!(notifier.watchdog_interval(), Some(Duration::from_secs(10)));
    }

    #[test]
    fn without_a_socket_nothing_is_sent_and_no_watchdog_is_due() {
        let notifier = Notifier {
            target: None,
            watchdog: Some(Duration::from_secs(10)),
        };
        assert!(!notifier.enabled());
        assert_eq!(notifier.watchdog_interval(), None);
        notifier.ready();
    }
}
