//! The running broker: takes the data directory, recovers the log, serves until cancelled,
//! then drains within [`DRAIN_DEADLINE`](crate::shutdown::DRAIN_DEADLINE).

use std::fs::{File, OpenOptions};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use edge_log::Log;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{ByteSize, Config, SocketBuffers};
use crate::hub::Hub;
use crate::metrics::front::MqttGauges;
use crate::metrics::{FrontMetrics, Observe, PromText};
use crate::mqtt::MqttServer;
use crate::nats::NatsServer;
use crate::notify::Notifier;
use crate::reload::{Reload, spawn_reloader};
use crate::route::RouteTable;
use crate::shutdown::DRAIN_DEADLINE;

/// Why the broker could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The data directory could not be created or locked.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Another process holds the data directory.
    #[error(
        "data directory {path} is in use by another edge-broker (lock file {lock} is held); \
         two brokers on one log would corrupt it"
    )]
    DataDirInUse {
        /// The directory.
        path: PathBuf,
        /// The lock file.
        lock: PathBuf,
    },
    /// The log could not be opened or recovered.
    #[error("cannot open the event log in {path}: {source}")]
    OpenLog {
        /// The log directory.
        path: PathBuf,
        /// What went wrong.
        source: edge_log::LogError,
    },
    /// The log could not be flushed and closed during shutdown.
    #[error("closing the event log failed: {0}")]
    CloseLog(edge_log::LogError),
    /// A listener could not be bound.
    #[error("{field}: cannot listen on {addr}: {source}")]
    Bind {
        /// The config field naming the address.
        field: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The configuration is invalid (caught by `check`, repeated here for `run`).
    #[error(transparent)]
    Config(crate::config::ConfigError),
    /// A listener's TLS certificate, key or client CA could not be loaded.
    #[error("TLS listener: {0}")]
    Tls(crate::tls::TlsError),
    /// The password file, ACL file or a NATS secret file could not be loaded.
    #[error("auth: {0}")]
    Auth(crate::auth::AuthLoadError),
    /// Signal handlers could not be installed.
    #[error("cannot install the SIGHUP handler: {0}")]
    Signals(std::io::Error),
    /// The Kafka forwarder could not start.
    #[error(transparent)]
    Kafka(#[from] crate::forwarder::BridgeStartError),
    /// A blocking task panicked or was cancelled.
    #[error("internal task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// An exclusive lock on the data directory, held for the life of the process.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    /// Creates `dir` if needed and takes its `LOCK` file, failing if another process holds it.
    pub fn acquire(dir: &Path) -> Result<DataDirLock, RunError> {
        let io_error = |source| RunError::DataDir {
            path: dir.to_owned(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io_error)?;
        let lock = dir.join("LOCK");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock)
            .map_err(io_error)?;
        match file.try_lock() {
            Ok(()) => Ok(DataDirLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(RunError::DataDirInUse {
                path: dir.to_owned(),
                lock,
            }),
            Err(std::fs::TryLockError::Error(source)) => Err(io_error(source)),
        }
    }
}

/// How often `STATUS=` is refreshed for `systemctl status`.
const STATUS_INTERVAL: Duration = Duration::from_secs(5);

/// Runs the broker until `shutdown` is cancelled, then drains.
pub async fn run(
    config: Config,
    config_path: Option<PathBuf>,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    let notifier = Arc::new(Notifier::from_env());
    let _lock = DataDirLock::acquire(&config.node.data_dir)?;
    let log_config = config.log_config();
    let log_dir = log_config.dir.clone();
    let (log, report) = tokio::task::spawn_blocking(move || Log::open(log_config))
        .await?
        .map_err(|source| RunError::OpenLog {
            path: log_dir.clone(),
            source,
        })?;
    tracing::info!(dir = %log_dir.display(), "log recovered: {report}");
    let routes = RouteTable::new(
        config.compile_routes().map_err(RunError::Config)?,
        &config.node.id,
    );
    let hub = Arc::new(Hub::new());
    for warning in crate::auth::check::security_warnings(&config, config_path.as_deref())
        .into_iter()
        .chain(crate::config::deprecations(&config))
    {
        tracing::warn!("{warning}");
    }
    let auth = crate::auth::Auth::new(&config, Some(config.mqtt_state_dir().join("owners.bin")))
        .map_err(RunError::Auth)?;
    // Before any client can publish: the forwarder's cursor keeps routed records from retention.
    let kafka = crate::forwarder::start(&config, &log, &routes, &shutdown)?;

    let observer = Arc::new(Observer {
        node_id: config.node.id.clone(),
        log: log.clone(),
        log_progress: LogProgress::new(&config.log.fsync),
        ready: AtomicBool::new(false),
        hub: Arc::clone(&hub),
        mqtt: parking_lot::Mutex::new(None),
        kafka: kafka.as_ref().map(crate::forwarder::KafkaBridge::metrics),
        kafka_sasl: kafka
            .as_ref()
            .and_then(crate::forwarder::KafkaBridge::sasl_status),
        kafka_setups: kafka
            .as_ref()
            .map(crate::forwarder::KafkaBridge::connection_setups),
        nats: parking_lot::Mutex::new(None),
        auth: Arc::clone(&auth),
    });
    if config.metrics.enabled {
        let listener = bind("metrics.listen", config.metrics.listen).await?;
        tokio::spawn(crate::metrics::serve(
            listener,
            Arc::clone(&observer) as Arc<dyn Observe>,
            shutdown.clone(),
        ));
    }

    let mut servers = Vec::new();
    let mut mqtt = None;
    if config.mqtt.enabled {
        let state_dir = config.mqtt_state_dir();
        let server = MqttServer::open(
            config.mqtt.clone(),
            Arc::clone(&hub),
            log.clone(),
            Arc::clone(&routes),
            state_dir,
            Arc::clone(&auth),
        );
        let m = &config.mqtt;
        let buffers = m.socket_buffers();
        let listener = bind_clients("mqtt.listen", m.listen, buffers).await?;
        if let (Some(cert), Some(key)) = (&m.tls_cert, &m.tls_key)
            && (m.tls_listen.is_some() || m.ws_tls_listen.is_some())
        {
            let acceptor = crate::tls::acceptor(cert, key, m.tls_client_ca.as_deref())
                .map_err(RunError::Tls)?;
            server.tls.replace(Some(acceptor));
        }
        let secure = server.tls.current().is_some();
        let bind_opt = async |field, addr: Option<SocketAddr>, needs_tls: bool| match addr {
            Some(addr) if secure || !needs_tls => {
                bind_clients(field, addr, buffers).await.map(Some)
            }
            _ => Ok(None),
        };
        let listeners = crate::mqtt::listen::Listeners {
            plain: listener,
            tls: bind_opt("mqtt.tls_listen", m.tls_listen, true).await?,
            ws: bind_opt("mqtt.ws_listen", m.ws_listen, false).await?,
            ws_tls: bind_opt("mqtt.ws_tls_listen", m.ws_tls_listen, true).await?,
        };
        servers.push(tokio::spawn(
            Arc::clone(&server).serve(listeners, shutdown.clone()),
        ));
        server.spawn_sys_tree(
            backlog_source(
                log.clone(),
                kafka.as_ref().map(crate::forwarder::KafkaBridge::metrics),
                config.log.max_bytes.bytes(),
            ),
            shutdown.clone(),
        );
        mqtt = Some(server);
    }
    let mut reloadable: Vec<Arc<dyn Reload>> = vec![
        Arc::clone(&routes) as Arc<dyn Reload>,
        Arc::clone(&auth) as Arc<dyn Reload>,
    ];
    if let Some(mqtt) = &mqtt {
        reloadable.push(Arc::clone(mqtt) as Arc<dyn Reload>);
    }
    *observer.mqtt.lock() = mqtt;
    if config.nats.enabled {
        let server = NatsServer::new(
            config.nats.clone(),
            Arc::clone(&hub),
            log.clone(),
            Arc::clone(&routes),
            &config.node.id,
            Arc::clone(&auth),
        );
        let n = &config.nats;
        let listener = bind_clients("nats.listen", n.listen, n.socket_buffers()).await?;
        if let (Some(cert), Some(key)) = (&config.nats.tls_cert, &config.nats.tls_key) {
            let acceptor = crate::tls::acceptor(cert, key, config.nats.tls_client_ca.as_deref())
                .map_err(RunError::Tls)?;
            server.tls.replace(Some(acceptor));
        }
        servers.push(tokio::spawn(
            Arc::clone(&server).serve(listener, shutdown.clone()),
        ));
        reloadable.push(Arc::clone(&server) as Arc<dyn Reload>);
        *observer.nats.lock() = Some(server);
    }
    spawn_reloader(
        config_path,
        config.clone(),
        reloadable,
        Arc::clone(&notifier),
        shutdown.clone(),
    )
    .map_err(RunError::Signals)?;

    let stats = log.stats();
    observer.ready.store(true, Ordering::SeqCst);
    notifier.ready();
    tracing::info!(
        node = %config.node.id,
        "edge-broker ready: {} route(s); the log holds {} record(s) (offsets {}..{}) in {} segment(s), {} on disk of the {} budget",
        routes.current().len(),
        stats.records,
        stats.oldest_offset,
        stats.next_offset,
        stats.segments,
        crate::config::ByteSize(stats.bytes).human(),
        config.log.max_bytes.human(),
    );
    tokio::spawn(report_to_service_manager(
        Arc::clone(&notifier),
        Arc::clone(&observer),
        shutdown.clone(),
    ));

    shutdown.cancelled().await;
    observer.ready.store(false, Ordering::SeqCst);
    notifier.stopping();
    // Front ends first (they finish acknowledging what is durable), then the log.
    let front_ends = async {
        for server in servers {
            let _ = server.await;
        }
    };
    if tokio::time::timeout(DRAIN_DEADLINE / 2, front_ends)
        .await
        .is_err()
    {
        tracing::warn!(
            "client connections did not close within {:?}",
            DRAIN_DEADLINE / 2
        );
    }
    if let Some(kafka) = kafka {
        kafka.finish(DRAIN_DEADLINE / 4).await;
    }
    drain(&log).await
}

/// The `$SYS/edge/backlog/...` values: what the forwarder still owes Kafka, or (without
/// forwarding) everything the log holds.
fn backlog_source(
    log: Log,
    kafka: Option<Arc<edge_bridge::metrics::ForwardMetrics>>,
    max_bytes: u64,
) -> crate::mqtt::sys::BacklogSource {
    Box::new(move || {
        let stats = log.stats();
        let budget_percent = 100.0 * stats.bytes as f64 / max_bytes.max(1) as f64;
        match &kafka {
            Some(m) => crate::mqtt::sys::Backlog {
                records: m.lag_records(stats.durable_end),
                bytes: m.lag_bytes(stats.durable_end),
                oldest_age_seconds: m.oldest_age_seconds(stats.durable_end),
                budget_percent,
                uplink: m.uplink_state().as_str(),
            },
            None => crate::mqtt::sys::Backlog {
                records: stats.records,
                // An empty log still has its segment headers on disk.
                bytes: if stats.records == 0 { 0 } else { stats.bytes },
                oldest_age_seconds: 0.0,
                budget_percent,
                uplink: "disabled",
            },
        }
    })
}

/// Binds a TCP listener and logs the address it got (port 0 picks one).
async fn bind(field: &'static str, addr: SocketAddr) -> Result<TcpListener, RunError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| RunError::Bind {
            field,
            addr,
            source,
        })?;
    let bound = listener.local_addr().unwrap_or(addr);
    tracing::info!(listener = field, "listening on {bound}");
    Ok(listener)
}

/// Binds a listener of client connections ([`bind`]) whose sockets hold at most about
/// `buffers.unsent_limit` unsent and `buffers.receive_buffer` received in the kernel (0: left
/// to the kernel). A limit the kernel refuses or cuts is said, naming its field; the listener
/// serves anyway.
async fn bind_clients(
    field: &'static str,
    addr: SocketAddr,
    buffers: SocketBuffers,
) -> Result<TcpListener, RunError> {
    let listener = bind(field, addr).await?;
    let unsent = buffers.unsent_limit;
    if unsent.bytes() != 0
        && let Err(err) = crate::listener::limit_unsent(&listener, unsent.bytes())
    {
        tracing::warn!(
            listener = field,
            "{} = \"{unsent}\" not applied: a client that stops reading may make the kernel hold up to net.ipv4.tcp_wmem's maximum for it: {err}",
            buffers.unsent_limit_field
        );
    }
    let receive = buffers.receive_buffer;
    if receive.bytes() != 0 {
        match crate::listener::fix_receive_buffer(&listener, receive.bytes()) {
            Ok(granted) if granted < receive.bytes() => tracing::warn!(
                listener = field,
                "{} = \"{receive}\" cut to {} by the kernel (net.core.rmem_max is half that): clients get the smaller buffer",
                buffers.receive_buffer_field,
                ByteSize(granted)
            ),
            Ok(_) => {}
            Err(err) => tracing::warn!(
                listener = field,
                "{} = \"{receive}\" not applied: a client the broker does not read may make the kernel hold up to net.ipv4.tcp_rmem's maximum for it: {err}",
                buffers.receive_buffer_field
            ),
        }
    }
    Ok(listener)
}

/// Keeps `STATUS=` current and pets the watchdog while the broker makes progress.
///
/// The watchdog is only fed from a task on the broker's own runtime and only while the log is
/// healthy, so a wedged runtime or a failed log gets the service restarted by systemd.
async fn report_to_service_manager(
    notifier: Arc<Notifier>,
    observer: Arc<Observer>,
    shutdown: CancellationToken,
) {
    if !notifier.enabled() {
        return;
    }
    let tick = notifier
        .watchdog_interval()
        .map_or(STATUS_INTERVAL, |interval| {
            (interval / 2).min(STATUS_INTERVAL)
        });
    let mut ticker = tokio::time::interval(tick);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        notifier.status(&observer.status_line());
        match observer.health() {
            Ok(()) => {
                if notifier.watchdog_interval().is_some() {
                    notifier.watchdog();
                }
            }
            Err(why) => tracing::error!("not feeding the watchdog: {why}"),
        }
    }
}

/// What `/metrics`, `/healthz` and `STATUS=` report about the running broker.
struct Observer {
    node_id: String,
    log: Log,
    log_progress: LogProgress,
    ready: AtomicBool,
    hub: Arc<Hub>,
    mqtt: parking_lot::Mutex<Option<Arc<MqttServer>>>,
    nats: parking_lot::Mutex<Option<Arc<NatsServer>>>,
    kafka: Option<Arc<edge_bridge::metrics::ForwardMetrics>>,
    kafka_sasl: Option<Arc<edge_bridge::producer::sasl::SaslStatus>>,
    kafka_setups: Option<Arc<edge_bridge::producer::ConnectionSetups>>,
    auth: Arc<crate::auth::Auth>,
}

/// Detects a wedged log writer: records written but not made durable for too long.
struct LogProgress {
    limit: Duration,
    last: parking_lot::Mutex<(u64, std::time::Instant)>,
}

impl LogProgress {
    fn new(fsync: &edge_log::FsyncPolicy) -> LogProgress {
        let limit = match fsync {
            edge_log::FsyncPolicy::Interval(interval) => (*interval * 3).max(WEDGED_AFTER),
            _ => WEDGED_AFTER,
        };
        LogProgress {
            limit,
            last: parking_lot::Mutex::new((0, std::time::Instant::now())),
        }
    }

    /// `Err` when durability has not advanced for `limit` while records wait for it.
    fn check(&self, stats: &edge_log::LogStats) -> Result<(), String> {
        let mut last = self.last.lock();
        if stats.durable_end != last.0 || stats.next_offset <= stats.durable_end {
            *last = (stats.durable_end, std::time::Instant::now());
            return Ok(());
        }
        let stuck = last.1.elapsed();
        if stuck > self.limit {
            return Err(format!(
                "log writer wedged: offsets {}..{} written but not durable for {stuck:?}",
                stats.durable_end, stats.next_offset
            ));
        }
        Ok(())
    }
}

/// How long records may wait for their fsync before the broker counts as wedged.
const WEDGED_AFTER: Duration = Duration::from_secs(10);

impl Observer {
    fn status_line(&self) -> String {
        let stats = self.log.stats();
        let connections = self
            .mqtt
            .lock()
            .as_ref()
            .map_or(0, |m| m.metrics.connections.load(Ordering::Relaxed));
        let nats = self
            .nats
            .lock()
            .as_ref()
            .map_or(0, |n| n.metrics.connections.load(Ordering::Relaxed));
        format!(
            "log {} records, {} bytes in {} segments; next offset {}; {connections} MQTT clients, {nats} NATS clients",
            stats.records, stats.bytes, stats.segments, stats.next_offset
        )
    }
}

impl Observe for Observer {
    fn metrics_text(&self) -> String {
        let stats = self.log.stats();
        let mut text = PromText::new();
        text.gauge(
            "edge_build_info",
            "Build and node identity (always 1).",
            &[(
                &[
                    ("version", env!("CARGO_PKG_VERSION")),
                    ("node", &self.node_id),
                ],
                1.0,
            )],
        );
        text.gauge(
            "edge_ready",
            "1 when the broker takes publishes (GET /readyz says why not).",
            &[(&[], f64::from(u8::from(self.readiness().is_ok())))],
        );
        let state = log_state(&self.log.health());
        let labels = LOG_STATES.map(|s| [("state", s)]);
        text.gauge(
            "edge_log_state",
            "1 for the state the log is in: ok, full_budget, full_disk, failed (restart needed) or closed.",
            &labels
                .iter()
                .map(|l| (&l[..], f64::from(u8::from(l[0].1 == state))))
                .collect::<Vec<_>>(),
        );
        text.gauge(
            "edge_log_bytes",
            "Bytes of log segments on disk.",
            &[(&[], stats.bytes as f64)],
        );
        text.gauge(
            "edge_log_segments",
            "Log segment files on disk.",
            &[(&[], stats.segments as f64)],
        );
        text.gauge(
            "edge_log_records",
            "Records held in the log.",
            &[(&[], stats.records as f64)],
        );
        text.gauge(
            "edge_log_oldest_offset",
            "Offset of the oldest record held.",
            &[(&[], stats.oldest_offset as f64)],
        );
        text.gauge(
            "edge_log_next_offset",
            "Offset the next appended record gets.",
            &[(&[], stats.next_offset as f64)],
        );
        text.gauge(
            "edge_log_durable_end_offset",
            "One past the last durable record.",
            &[(&[], stats.durable_end as f64)],
        );
        text.counter(
            "edge_log_dropped_records_total",
            "Records deleted unforwarded because the log was full (when_full = drop_oldest).",
            &[(&[("reason", "log_full")], stats.dropped_records)],
        );
        text.counter(
            "edge_log_corrupt_records_total",
            "Corrupt records found and skipped while reading sealed segments.",
            &[(&[], stats.corrupt_skipped)],
        );
        text.gauge(
            "edge_log_max_bytes",
            "The log's disk budget (log.max_bytes).",
            &[(&[], self.log.config().max_bytes as f64)],
        );
        text.counter(
            "edge_log_fsyncs_total",
            "fdatasync calls on the log.",
            &[(&[], stats.fsyncs)],
        );
        let fsync = &stats.fsync_latency;
        text.histogram(
            "edge_log_fsync_seconds",
            "Latency of the fdatasyncs that make appends durable (every acknowledgement waits for one).",
            &edge_log::FsyncLatency::BOUNDS,
            &fsync.buckets,
            fsync.sum_micros as f64 / 1e6,
        );
        text.counter(
            "edge_log_written_bytes_total",
            "Bytes written to log files (flash wear).",
            &[(&[], stats.bytes_written)],
        );
        text.counter(
            "edge_log_sector_writes_total",
            "Log writes sent as whole 512-byte sectors (log.sector_writes; 0 if the file system refused direct I/O).",
            &[(&[], stats.sector_writes)],
        );
        let mqtt = self.mqtt.lock().clone();
        let nats = self.nats.lock().clone();
        let fronts: Vec<&FrontMetrics> = mqtt
            .iter()
            .map(|m| &*m.metrics)
            .chain(nats.iter().map(|n| &*n.metrics))
            .collect();
        let gauges = mqtt.as_ref().map(|m| MqttGauges {
            sessions: m.sessions.len(),
            retained: m.retained.len(),
            parked: m.parked(),
        });
        crate::metrics::front::render(&mut text, &fronts, gauges);
        let admissions: Vec<(&str, &crate::admission::Admission)> = mqtt
            .iter()
            .map(|m| ("mqtt", &*m.admission))
            .chain(nats.iter().map(|n| ("nats", &*n.admission)))
            .collect();
        crate::admission::Admission::render(&mut text, &admissions);
        if let Some(mqtt) = mqtt.as_deref() {
            mqtt.render_state(&mut text);
        }
        if let Some(kafka) = &self.kafka {
            crate::forwarder::render(&mut text, kafka, stats.durable_end);
        }
        if let Some(sasl) = &self.kafka_sasl {
            crate::forwarder::render_sasl(&mut text, sasl);
        }
        if let Some(setups) = &self.kafka_setups {
            crate::forwarder::render_connection_setups(&mut text, setups);
        }
        crate::auth::render(&mut text, &self.auth);
        crate::metrics::process::ProcessReading::current().render(&mut text);
        text.gauge(
            "edge_subscriptions",
            "Subscriptions of all protocols.",
            &[(&[], self.hub.len() as f64)],
        );
        text.finish()
    }

    fn health(&self) -> Result<(), String> {
        if !self.ready.load(Ordering::SeqCst) {
            return Err("not ready: starting or shutting down".to_owned());
        }
        if let Some(failure) = self.log.failure() {
            return Err(format!(
                "the log refuses appends after a storage error: {failure}"
            ));
        }
        self.log_progress.check(&self.log.stats())
    }

    fn readiness(&self) -> Result<(), String> {
        self.health()?;
        match self.log.health() {
            edge_log::LogHealth::Ok => Ok(()),
            other => Err(format!("the log does not store publishes now: {other}")),
        }
    }
}

/// The `state` labels of `edge_log_state`.
const LOG_STATES: [&str; 5] = ["ok", "full_budget", "full_disk", "failed", "closed"];

/// The `edge_log_state` label of `health`.
fn log_state(health: &edge_log::LogHealth) -> &'static str {
    use edge_log::{Full, LogHealth};
    match health {
        LogHealth::Ok => "ok",
        LogHealth::Full(Full::Budget { .. }) => "full_budget",
        LogHealth::Full(Full::Disk { .. }) => "full_disk",
        LogHealth::Failed { .. } => "failed",
        LogHealth::Closed => "closed",
    }
}

/// Flushes and closes the log, giving up after the drain deadline.
async fn drain(log: &Log) -> Result<(), RunError> {
    match tokio::time::timeout(DRAIN_DEADLINE, log.close()).await {
        Ok(result) => result.map_err(RunError::CloseLog)?,
        Err(_) => tracing::error!(
            deadline = ?DRAIN_DEADLINE,
            "log did not close within the drain deadline; unsynced records are recovered at next start"
        ),
    }
    tracing::info!("shutdown complete");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_data_dir_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDirLock::acquire(dir.path()).unwrap();
        let err = DataDirLock::acquire(dir.path()).unwrap_err();
        assert!(matches!(err, RunError::DataDirInUse { .. }), "{err}");
        drop(first);
        DataDirLock::acquire(dir.path()).unwrap();
    }
}
