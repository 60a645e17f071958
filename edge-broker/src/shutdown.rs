//! Turns SIGTERM/SIGINT into the cancellation of the process-wide [`CancellationToken`].

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// How long a graceful shutdown may take before the process gives up waiting.
/// Shorter than the unit's `TimeoutStopSec` (30 s) so systemd never has to SIGKILL us.
pub const DRAIN_DEADLINE: std::time::Duration = std::time::Duration::from_secs(20);

/// Cancels `token` on the first SIGTERM or SIGINT; a second signal exits at once.
pub fn spawn_signal_listener(token: CancellationToken) -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(signal = name, "shutting down: draining");
        token.cancel();
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
        tracing::warn!("second signal: exiting without draining");
        std::process::exit(130);
    });
    Ok(())
}
