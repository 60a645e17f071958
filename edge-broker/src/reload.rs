//! SIGHUP: re-read the configuration and apply what can change without dropping connections.
//!
//! Routes are swapped in place (new publishes are routed by the new table at once), and MQTT
//! and NATS limits and NATS credentials apply to connections made after the reload. Changes to
//! anything else — listeners, connection caps, the log, Kafka — are reported as needing a restart, and a config
//! that does not validate is refused with the reason, keeping the running one. systemd hears
//! `RELOADING=1` before and `READY=1` after.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::notify::Notifier;

/// Something that takes new settings while running.
pub trait Reload: Send + Sync {
    /// Applies the reloadable parts of `config`.
    fn reload(&self, config: &Config);
}

/// The route table is swapped whole; a config whose routes do not compile keeps the old one.
impl Reload for crate::route::RouteTable {
    fn reload(&self, config: &Config) {
        match config.compile_routes() {
            Ok(routes) => self.replace(routes),
            Err(err) => tracing::error!("reload: routes not replaced: {err}"),
        }
    }
}

/// Reloads on every SIGHUP until `shutdown`.
pub fn spawn_reloader(
    path: Option<PathBuf>,
    current: Config,
    targets: Vec<Arc<dyn Reload>>,
    notifier: Arc<Notifier>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let mut hangup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        let mut current = current;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                received = hangup.recv() => if received.is_none() { return },
            }
            notifier.notify("RELOADING=1");
            match Config::load_with_env(path.as_deref()) {
                Ok(new) => {
                    for section in sections_needing_restart(&current, &new) {
                        tracing::warn!(
                            "reload: changes to [{section}] take effect after a restart"
                        );
                    }
                    for target in &targets {
                        target.reload(&new);
                    }
                    tracing::info!(routes = new.routes.len(), "configuration reloaded");
                    current = new;
                }
                Err(err) => {
                    tracing::error!("reload refused, keeping the running configuration: {err}")
                }
            }
            notifier.ready();
        }
    });
    Ok(())
}

/// Sections whose changes are not applied by a reload.
pub fn sections_needing_restart(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    if format!("{:?}", old.node) != format!("{:?}", new.node) {
        changed.push("node");
    }
    if format!("{:?}", old.log) != format!("{:?}", new.log) {
        changed.push("log");
    }
    // MQTT limits and TLS certificates apply to new connections; only these need a restart.
    let (a, b) = (&old.mqtt, &new.mqtt);
    if (
        a.enabled,
        a.listen,
        a.max_connections,
        a.max_retained,
        a.max_retained_bytes,
        a.sys_interval,
        a.socket_buffers(),
        crate::admission::AdmissionLimits::mqtt(a),
    ) != (
        b.enabled,
        b.listen,
        b.max_connections,
        b.max_retained,
        b.max_retained_bytes,
        b.sys_interval,
        b.socket_buffers(),
        crate::admission::AdmissionLimits::mqtt(b),
    ) || (a.tls_listen, a.ws_listen, a.ws_tls_listen, &a.ws_path)
        != (b.tls_listen, b.ws_listen, b.ws_tls_listen, &b.ws_path)
    {
        changed.push("mqtt");
    }
    let (a, b) = (&old.nats, &new.nats);
    // The kernel's buffers are set on the listeners, which their connections inherit.
    if (a.enabled, a.listen, a.socket_buffers()) != (b.enabled, b.listen, b.socket_buffers())
        || crate::admission::AdmissionLimits::nats(a) != crate::admission::AdmissionLimits::nats(b)
        || (a.duplicate_window, a.max_duplicate_ids) != (b.duplicate_window, b.max_duplicate_ids)
    {
        changed.push("nats");
    }
    if format!("{:?}", old.kafka) != format!("{:?}", new.kafka) {
        changed.push("kafka");
    }
    if format!("{:?}", old.metrics) != format!("{:?}", new.metrics) {
        changed.push("metrics");
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn only_changed_sections_are_reported() {
        let old = Config::parse("", Path::new("a")).unwrap();
        let new = Config::parse(
            "[log]\nfsync = \"never\"\n[[route]]\nmqtt = \"a\"\nkafka_topic = \"t\"\n",
            Path::new("b"),
        )
        .unwrap();
        assert_eq!(sections_needing_restart(&old, &new), vec!["log"]);
        let limits = Config::parse("[mqtt]\nmax_inflight = 7\n", Path::new("c")).unwrap();
        assert!(sections_needing_restart(&old, &limits).is_empty());
        // The pools of large packets arriving take a new limit in place.
        let pools = "[mqtt]\nmax_partial_packet_bytes_total = \"32MiB\"\n\
                     [nats]\nmax_partial_packet_bytes_total = \"2MiB\"\n";
        let pools = Config::parse(pools, Path::new("c")).unwrap();
        assert!(sections_needing_restart(&old, &pools).is_empty());
        let listener = Config::parse("[mqtt]\nlisten = \"127.0.0.1:1\"\n", Path::new("d")).unwrap();
        assert_eq!(sections_needing_restart(&old, &listener), vec!["mqtt"]);
        assert!(sections_needing_restart(&old, &old).is_empty());
        // Set on the listeners: a changed kernel buffer is not applied until a restart.
        for changed in [
            "[mqtt]\nsocket_unsent_limit = \"64KiB\"\n[nats]\nsocket_unsent_limit = \"0B\"\n",
            "[mqtt]\nsocket_receive_buffer = \"0B\"\n[nats]\nsocket_receive_buffer = \"1MiB\"\n",
        ] {
            let new = Config::parse(changed, Path::new("e")).unwrap();
            assert_eq!(sections_needing_restart(&old, &new), vec!["mqtt", "nats"]);
        }
    }
}
