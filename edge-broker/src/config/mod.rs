//! The TOML configuration: schema, built-in defaults, loading and validation.
//!
//! Every section rejects unknown keys, and every error names the field it is about
//! (`log.fsync: ...`), so `edge-broker check` tells an operator exactly what to fix.

mod units;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use edge_bridge::route::{RouteConfig, RouteError, Routes};
use edge_log::{FsyncPolicy, LogConfig, WhenFull};
use serde::{Deserialize, Deserializer, de};

pub use units::{ByteSize, HumanDuration, parse_duration, parse_size};

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file we tried to read.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not match the schema.
    #[error("{path}: {field}: {message}")]
    Parse {
        /// The file being parsed.
        path: PathBuf,
        /// Dotted path of the offending key (`log.fsync`), or `(document)` for syntax errors.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// A `[[route]]` entry is invalid.
    #[error("{}{error}", path.as_ref().map(|p| format!("{}: ", p.display())).unwrap_or_default())]
    Route {
        /// What is wrong with the route.
        error: RouteError,
        /// The file it came from, when known.
        path: Option<PathBuf>,
    },
    /// The values parse but do not make sense together.
    #[error("{}{field}: {message}", path.as_ref().map(|p| format!("{}: ", p.display())).unwrap_or_default())]
    Invalid {
        /// The file the values came from, when known.
        path: Option<PathBuf>,
        /// Dotted path of the offending key.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
}

impl ConfigError {
    /// The dotted name of the field the error is about.
    pub fn field(&self) -> &str {
        match self {
            ConfigError::Read { .. } => "(file)",
            ConfigError::Parse { field, .. } => field,
            ConfigError::Invalid { field, .. } => field,
            ConfigError::Route { error, .. } => route_error_field(error),
        }
    }
}

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[node]`: identity and data directory.
    pub node: NodeConfig,
    /// `[log]`: the durable event log.
    pub log: LogSection,
    /// `[mqtt]`: the MQTT listener and its limits.
    pub mqtt: MqttSection,
    /// `[nats]`: the NATS listener, authentication and durable-ack settings.
    pub nats: NatsSection,
    /// `[metrics]`: the Prometheus and health endpoint.
    pub metrics: MetricsSection,
    /// `[[route]]`: which published topics are stored and forwarded to which Kafka topic.
    #[serde(rename = "route")]
    pub routes: Vec<RouteSection>,
}

/// One `[[route]]`: an MQTT topic filter or NATS subject pattern → a Kafka topic and key.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSection {
    /// MQTT topic filter (`sensors/+/temperature`); exclusive with `nats`.
    pub mqtt: Option<String>,
    /// NATS subject pattern (`sensors.*.humidity`); exclusive with `mqtt`.
    pub nats: Option<String>,
    /// Destination Kafka topic.
    pub kafka_topic: String,
    /// Key template: `{topic.N}`, `{client_id}`, `{node.id}` and literal text; none = null key.
    pub key: Option<String>,
    /// Fixed partition instead of hashing the key.
    pub partition: Option<i32>,
}

impl RouteSection {
    fn to_route_config(&self) -> RouteConfig {
        RouteConfig {
            mqtt: self.mqtt.clone(),
            nats: self.nats.clone(),
            kafka_topic: self.kafka_topic.clone(),
            key: self.key.clone(),
            partition: self.partition,
        }
    }
}

/// `[mqtt]`: the MQTT 3.1.1/5 listener and its limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttSection {
    /// Serve MQTT at all.
    pub enabled: bool,
    /// Address to listen on (port 0 picks a free port, logged at startup).
    pub listen: SocketAddr,
    /// Most simultaneous client connections; more are refused with "server busy".
    pub max_connections: usize,
    /// Largest packet accepted from a client (advertised as Maximum Packet Size).
    pub max_packet_size: ByteSize,
    /// QoS 1/2 publishes a client may have unacknowledged (advertised as Receive Maximum).
    pub max_inflight: u16,
    /// Messages queued per session for a slow or offline client; more are dropped and counted.
    pub max_queued_messages: usize,
    /// Longest keep alive a client may choose (`"0s"` = no limit); longer ones are lowered.
    pub max_keep_alive: HumanDuration,
    /// Longest session expiry a client may ask for; 3.1.1 persistent sessions get this.
    pub max_session_expiry: HumanDuration,
    /// Topic aliases accepted per connection (MQTT 5).
    pub topic_alias_maximum: u16,
    /// Accept clients without a user name.
    pub allow_anonymous: bool,
    /// Time a new connection has to send CONNECT.
    pub connect_timeout: HumanDuration,
    /// Most retained topics kept.
    pub max_retained: usize,
}

impl Default for MqttSection {
    fn default() -> Self {
        MqttSection {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 1883)),
            max_connections: 1000,
            max_packet_size: ByteSize(1 << 20),
            max_inflight: 100,
            max_queued_messages: 1000,
            max_keep_alive: HumanDuration(Duration::ZERO),
            max_session_expiry: HumanDuration(Duration::from_secs(7 * 86_400)),
            topic_alias_maximum: 16,
            allow_anonymous: true,
            connect_timeout: HumanDuration(Duration::from_secs(10)),
            max_retained: 10_000,
        }
    }
}

/// One `[[nats.users]]` entry: a user name and its password.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsUser {
    /// User name the client sends in CONNECT `user`.
    pub user: String,
    /// Password the client sends in CONNECT `pass`.
    pub password: String,
}

/// `[nats]`: the NATS client-protocol listener and its limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsSection {
    /// Serve NATS at all.
    pub enabled: bool,
    /// Address to listen on (port 0 picks a free port, logged at startup).
    pub listen: SocketAddr,
    /// Most simultaneous client connections; more get `-ERR 'maximum connections exceeded'`.
    pub max_connections: usize,
    /// Largest PUB/HPUB payload (headers included), announced in INFO as `max_payload`.
    pub max_payload: ByteSize,
    /// Output a client may have waiting; a subscriber further behind is a slow consumer and is
    /// disconnected with `-ERR 'Slow Consumer'`.
    pub max_pending: ByteSize,
    /// Routed publishes a connection may have waiting for their durable ack; reading pauses beyond.
    pub max_inflight: usize,
    /// Most subscriptions per connection; more get `-ERR 'maximum subscriptions exceeded'`.
    pub max_subscriptions: usize,
    /// How often the server PINGs a client.
    pub ping_interval: HumanDuration,
    /// Unanswered PINGs after which the connection is stale and closed.
    pub max_pings_out: u32,
    /// Time a new connection has to send CONNECT (`-ERR 'Authentication Timeout'`).
    pub auth_timeout: HumanDuration,
    /// Token clients may authenticate with (CONNECT `auth_token`).
    pub token: Option<String>,
    /// Users clients may authenticate as (CONNECT `user`/`pass`).
    pub users: Vec<NatsUser>,
    /// Accept clients that present no credentials.
    pub allow_anonymous: bool,
    /// How long a `Nats-Msg-Id` is remembered for duplicate detection of durable publishes.
    pub duplicate_window: HumanDuration,
    /// Most message ids remembered (oldest forgotten first), bounding the window's memory.
    pub max_duplicate_ids: usize,
}

impl Default for NatsSection {
    fn default() -> Self {
        NatsSection {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 4222)),
            max_connections: 1000,
            max_payload: ByteSize(1 << 20),
            max_pending: ByteSize(8 << 20),
            max_inflight: 4096,
            max_subscriptions: 10_000,
            ping_interval: HumanDuration(Duration::from_secs(120)),
            max_pings_out: 2,
            auth_timeout: HumanDuration(Duration::from_secs(2)),
            token: None,
            users: Vec::new(),
            allow_anonymous: true,
            duplicate_window: HumanDuration(Duration::from_secs(120)),
            max_duplicate_ids: 100_000,
        }
    }
}

/// `[metrics]`: where `GET /metrics` and `GET /healthz` are served.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSection {
    /// Serve the endpoint at all.
    pub enabled: bool,
    /// Address to listen on (port 0 picks a free port, logged at startup).
    pub listen: SocketAddr,
}

impl Default for MetricsSection {
    fn default() -> Self {
        MetricsSection {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 9100)),
        }
    }
}

/// `[node]`: who this gateway is and where it keeps its data.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// Gateway id carried by every record forwarded upstream (`edge-node` header).
    pub id: String,
    /// Directory for the log, cursors and other state.
    pub data_dir: PathBuf,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            id: default_node_id(),
            data_dir: PathBuf::from("./edge-data"),
        }
    }
}

/// The machine's hostname when it makes a valid node id, else `edge-broker`.
fn default_node_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| validate_node_id(name).is_ok())
        .unwrap_or_else(|| "edge-broker".to_owned())
}

/// `[log]`: segment size, disk budget and durability policy of edge-log.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// A new segment file is started once the current one passes this size.
    pub segment_bytes: ByteSize,
    /// Hard disk budget for all segments.
    pub max_bytes: ByteSize,
    /// Largest single record accepted (frame included).
    pub max_record_bytes: ByteSize,
    /// When a device is told its event is stored: `always`, `interval:<dur>` or `never`.
    #[serde(deserialize_with = "deserialize_fsync")]
    pub fsync: FsyncPolicy,
    /// What an append does when the budget is used up: `block`, `drop_oldest` or `reject`.
    #[serde(deserialize_with = "deserialize_when_full")]
    pub when_full: WhenFull,
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection {
            segment_bytes: ByteSize(64 << 20),
            max_bytes: ByteSize(2 << 30),
            max_record_bytes: ByteSize(1 << 20),
            fsync: FsyncPolicy::Always,
            when_full: WhenFull::Block,
        }
    }
}

/// Parses the `log.fsync` setting.
pub fn parse_fsync(text: &str) -> Result<FsyncPolicy, String> {
    match text.trim() {
        "always" => Ok(FsyncPolicy::Always),
        "never" => Ok(FsyncPolicy::Never),
        other => match other.strip_prefix("interval:") {
            Some(interval) => {
                let interval = parse_duration(interval)?;
                if interval.is_zero() {
                    return Err("interval must be greater than zero (use \"always\")".to_owned());
                }
                Ok(FsyncPolicy::Interval(interval))
            }
            None => Err(format!(
                "invalid fsync policy {other:?}: expected \"always\", \"interval:<duration>\" (e.g. \"interval:100ms\") or \"never\""
            )),
        },
    }
}

/// Parses the `log.when_full` setting.
pub fn parse_when_full(text: &str) -> Result<WhenFull, String> {
    match text.trim() {
        "block" => Ok(WhenFull::Block),
        "drop_oldest" => Ok(WhenFull::DropOldest),
        "reject" => Ok(WhenFull::Reject),
        other => Err(format!(
            "invalid when_full policy {other:?}: expected \"block\", \"drop_oldest\" or \"reject\""
        )),
    }
}

fn deserialize_fsync<'de, D: Deserializer<'de>>(d: D) -> Result<FsyncPolicy, D::Error> {
    parse_fsync(&String::deserialize(d)?).map_err(de::Error::custom)
}

fn deserialize_when_full<'de, D: Deserializer<'de>>(d: D) -> Result<WhenFull, D::Error> {
    parse_when_full(&String::deserialize(d)?).map_err(de::Error::custom)
}

/// Node ids go into Kafka headers and file names: keep them short and unambiguous.
fn validate_node_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 128 {
        return Err(format!(
            "must be 1 to 128 characters, got {} characters",
            id.len()
        ));
    }
    if let Some(bad) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "{id:?} contains {bad:?}: use letters, digits, '-', '_' and '.' only"
        ));
    }
    Ok(())
}

/// Smallest segment we accept: smaller ones only multiply files and fsyncs.
const MIN_SEGMENT_BYTES: u64 = 64 << 10;

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Parses and validates config text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        let parse_error = |field: String, message: String| ConfigError::Parse {
            path: origin.to_owned(),
            field,
            message,
        };
        let deserializer = toml::Deserializer::parse(text)
            .map_err(|e| parse_error("(document)".to_owned(), describe(&e, text)))?;
        let config: Config = serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let field = e.path().to_string();
            parse_error(field, describe(e.inner(), text))
        })?;
        config.validate().map_err(|err| match err {
            ConfigError::Invalid { field, message, .. } => ConfigError::Invalid {
                path: Some(origin.to_owned()),
                field,
                message,
            },
            ConfigError::Route { error, .. } => ConfigError::Route {
                error,
                path: Some(origin.to_owned()),
            },
            other => other,
        })?;
        Ok(config)
    }

    /// Checks relations between values that the schema alone cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field, message| {
            Err(ConfigError::Invalid {
                path: None,
                field,
                message,
            })
        };
        if let Err(message) = validate_node_id(&self.node.id) {
            return invalid("node.id", message);
        }
        if self.node.data_dir.as_os_str().is_empty() {
            return invalid("node.data_dir", "must not be empty".to_owned());
        }
        let log = &self.log;
        if log.segment_bytes.bytes() < MIN_SEGMENT_BYTES {
            return invalid(
                "log.segment_bytes",
                format!(
                    "{} is too small: at least {}",
                    log.segment_bytes,
                    ByteSize(MIN_SEGMENT_BYTES)
                ),
            );
        }
        if log.max_bytes.bytes() < log.segment_bytes.bytes().saturating_mul(2) {
            return invalid(
                "log.max_bytes",
                format!(
                    "{} must be at least twice log.segment_bytes ({}) so one segment can be freed while another fills",
                    log.max_bytes, log.segment_bytes
                ),
            );
        }
        let mqtt = &self.mqtt;
        if mqtt.max_packet_size.bytes() < 64 || mqtt.max_packet_size.bytes() > 268_435_460 {
            return invalid(
                "mqtt.max_packet_size",
                format!(
                    "{} must be between 64B and 256MiB (the MQTT limit)",
                    mqtt.max_packet_size
                ),
            );
        }
        if mqtt.max_inflight == 0 {
            return invalid("mqtt.max_inflight", "must be at least 1".to_owned());
        }
        if mqtt.max_connections == 0 {
            return invalid("mqtt.max_connections", "must be at least 1".to_owned());
        }
        if mqtt.max_keep_alive.0 > Duration::from_secs(u64::from(u16::MAX)) {
            return invalid("mqtt.max_keep_alive", "must be at most 65535s".to_owned());
        }
        if mqtt.max_session_expiry.0 > Duration::from_secs(u64::from(u32::MAX)) {
            return invalid(
                "mqtt.max_session_expiry",
                "must be at most 4294967295s".to_owned(),
            );
        }
        if mqtt.connect_timeout.0.is_zero() {
            return invalid(
                "mqtt.connect_timeout",
                "must be greater than zero".to_owned(),
            );
        }
        let nats = &self.nats;
        if nats.max_payload.bytes() == 0 || nats.max_payload.bytes() > 64 << 20 {
            return invalid(
                "nats.max_payload",
                format!("{} must be between 1B and 64MiB", nats.max_payload),
            );
        }
        if nats.max_pending.bytes() < nats.max_payload.bytes() {
            return invalid(
                "nats.max_pending",
                format!(
                    "{} must be at least nats.max_payload ({})",
                    nats.max_pending, nats.max_payload
                ),
            );
        }
        if nats.max_connections == 0 {
            return invalid("nats.max_connections", "must be at least 1".to_owned());
        }
        if nats.max_inflight == 0 {
            return invalid("nats.max_inflight", "must be at least 1".to_owned());
        }
        if nats.ping_interval.0.is_zero() {
            return invalid("nats.ping_interval", "must be greater than zero".to_owned());
        }
        if nats.auth_timeout.0.is_zero() {
            return invalid("nats.auth_timeout", "must be greater than zero".to_owned());
        }
        if nats.max_duplicate_ids == 0 {
            return invalid("nats.max_duplicate_ids", "must be at least 1".to_owned());
        }
        if nats.token.as_deref() == Some("") {
            return invalid("nats.token", "must not be empty".to_owned());
        }
        if nats.users.iter().any(|u| u.user.is_empty()) {
            return invalid("nats.users", "every user needs a non-empty name".to_owned());
        }
        if !nats.allow_anonymous && nats.token.is_none() && nats.users.is_empty() {
            return invalid(
                "nats.allow_anonymous",
                "false needs nats.token or nats.users, or no client could connect".to_owned(),
            );
        }
        self.compile_routes()?;
        if log.max_record_bytes.bytes() == 0
            || log.max_record_bytes.bytes() > log.segment_bytes.bytes() / 2
        {
            return invalid(
                "log.max_record_bytes",
                format!(
                    "{} must be between 1 byte and half of log.segment_bytes ({})",
                    log.max_record_bytes, log.segment_bytes
                ),
            );
        }
        Ok(())
    }

    /// The compiled `[[route]]` entries.
    pub fn compile_routes(&self) -> Result<Routes, ConfigError> {
        let configs: Vec<RouteConfig> = self
            .routes
            .iter()
            .map(RouteSection::to_route_config)
            .collect();
        Routes::compile(&configs).map_err(|error| ConfigError::Route { error, path: None })
    }

    /// Directory of the MQTT server's state (sessions, retained messages).
    pub fn mqtt_state_dir(&self) -> PathBuf {
        self.node.data_dir.join("mqtt")
    }

    /// Directory of the event log inside the data directory.
    pub fn log_dir(&self) -> PathBuf {
        self.node.data_dir.join("log")
    }

    /// The edge-log configuration this file describes.
    pub fn log_config(&self) -> LogConfig {
        let mut config = LogConfig::new(self.log_dir());
        config.segment_bytes = self.log.segment_bytes.bytes();
        config.max_bytes = self.log.max_bytes.bytes();
        // validate() keeps this below segment_bytes / 2, far below u32::MAX for sane segments.
        config.max_record_bytes =
            u32::try_from(self.log.max_record_bytes.bytes()).unwrap_or(u32::MAX);
        config.fsync = self.log.fsync;
        config.when_full = self.log.when_full;
        config
    }
}

/// The config path a route error is about (`route[2].key`).
fn route_error_field(err: &RouteError) -> &str {
    match err {
        RouteError::NoFilter { field }
        | RouteError::BothFilters { field }
        | RouteError::BadFilter { field, .. }
        | RouteError::BadKafkaTopic { field, .. }
        | RouteError::BadKey { field, .. }
        | RouteError::BadPartition { field, .. } => field,
    }
}

/// One line for a TOML error: its message and where it is (`line 3, column 9`).
fn describe(error: &toml::de::Error, text: &str) -> String {
    let message = error.message().trim_end();
    match error.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("{message} (line {line}, column {column})")
        }
        None => message.to_owned(),
    }
}

/// How long `interval:` fsync may be before `check` warns that acknowledged events can be lost.
pub const LONG_FSYNC_INTERVAL: Duration = Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("test.toml"))
    }

    #[test]
    fn empty_file_gives_the_built_in_defaults() {
        let config = parse("").unwrap();
        assert_eq!(config.node.data_dir, PathBuf::from("./edge-data"));
        assert_eq!(config.log.segment_bytes, ByteSize(64 << 20));
        assert_eq!(config.log.fsync, FsyncPolicy::Always);
        assert_eq!(config.log.when_full, WhenFull::Block);
        assert_eq!(config.metrics.listen, "127.0.0.1:9100".parse().unwrap());
    }

    #[test]
    fn bad_addresses_name_the_field() {
        let err = parse("[metrics]\nlisten = \"localhost\"\n").unwrap_err();
        assert_eq!(err.field(), "metrics.listen");
    }

    #[test]
    fn architecture_example_parses() {
        let config = parse(
            r#"
            [node]
            id = "gw-01"
            data_dir = "/var/lib/edge-broker"
            [log]
            segment_bytes = "64MiB"
            max_bytes = "2GiB"
            fsync = "interval:100ms"
            when_full = "drop_oldest"
            "#,
        )
        .unwrap();
        assert_eq!(config.node.id, "gw-01");
        assert_eq!(config.log.max_bytes, ByteSize(2 << 30));
        assert_eq!(
            config.log.fsync,
            FsyncPolicy::Interval(Duration::from_millis(100))
        );
        assert_eq!(config.log.when_full, WhenFull::DropOldest);
        let log = config.log_config();
        assert_eq!(log.dir, PathBuf::from("/var/lib/edge-broker/log"));
        assert_eq!(log.segment_bytes, 64 << 20);
    }

    #[test]
    fn unknown_keys_are_errors_naming_the_key() {
        let err = parse("[log]\nsegment_byte = \"1MiB\"\n").unwrap_err();
        assert_eq!(err.field(), "log.segment_byte");
        assert!(err.to_string().contains("segment_byte"), "{err}");
        let err = parse("[nodes]\nid = \"x\"\n").unwrap_err();
        assert!(err.to_string().contains("nodes"), "{err}");
    }

    #[test]
    fn bad_values_name_the_field() {
        let err = parse("[log]\nfsync = \"sometimes\"\n").unwrap_err();
        assert_eq!(err.field(), "log.fsync");
        assert!(err.to_string().contains("sometimes"), "{err}");
        let err = parse("[log]\nsegment_bytes = \"64XB\"\n").unwrap_err();
        assert_eq!(err.field(), "log.segment_bytes");
        let err = parse("[log]\nwhen_full = \"wait\"\n").unwrap_err();
        assert_eq!(err.field(), "log.when_full");
        let err = parse("[node]\nid = \"gw 01\"\n").unwrap_err();
        assert_eq!(err.field(), "node.id");
    }

    #[test]
    fn inconsistent_sizes_are_rejected() {
        let err = parse("[log]\nsegment_bytes = \"64MiB\"\nmax_bytes = \"100MiB\"\n").unwrap_err();
        assert_eq!(err.field(), "log.max_bytes");
        let err = parse("[log]\nsegment_bytes = \"1KiB\"\n").unwrap_err();
        assert_eq!(err.field(), "log.segment_bytes");
    }

    #[test]
    fn routes_parse_and_bad_routes_name_the_field() {
        let config = parse(
            "[[route]]\nmqtt = \"sensors/+/temperature\"\nkafka_topic = \"t\"\nkey = \"{topic.2}\"\n\
             [[route]]\nnats = \"sensors.*.humidity\"\nkafka_topic = \"h\"\n",
        )
        .unwrap();
        assert_eq!(config.compile_routes().unwrap().len(), 2);
        let err = parse("[[route]]\nmqtt = \"a/#/b\"\nkafka_topic = \"t\"\n").unwrap_err();
        assert_eq!(err.field(), "route[0].mqtt");
        let err =
            parse("[[route]]\nmqtt = \"a\"\nkafka_topic = \"t\"\nkey = \"{nope}\"\n").unwrap_err();
        assert_eq!(err.field(), "route[0].key");
        let err = parse("[[route]]\nmqtt = \"a\"\nkafka = \"t\"\n").unwrap_err();
        assert!(err.to_string().contains("kafka"), "{err}");
    }

    #[test]
    fn nats_section_parses_and_bad_values_name_the_field() {
        let config = parse(
            "[nats]\nlisten = \"127.0.0.1:4333\"\nduplicate_window = \"30s\"\ntoken = \"s3cret\"\n\
             allow_anonymous = false\n[[nats.users]]\nuser = \"a\"\npassword = \"b\"\n",
        )
        .unwrap();
        assert_eq!(config.nats.listen, "127.0.0.1:4333".parse().unwrap());
        assert_eq!(config.nats.duplicate_window.0, Duration::from_secs(30));
        assert_eq!(config.nats.users.len(), 1);
        assert_eq!(
            parse("").unwrap().nats.listen,
            "127.0.0.1:4222".parse().unwrap()
        );
        let err = parse("[nats]\nallow_anonymous = false\n").unwrap_err();
        assert_eq!(err.field(), "nats.allow_anonymous");
        let err = parse("[nats]\nmax_payload = \"0B\"\n").unwrap_err();
        assert_eq!(err.field(), "nats.max_payload");
        let err = parse("[nats]\nduplicate_window = \"soon\"\n").unwrap_err();
        assert_eq!(err.field(), "nats.duplicate_window");
        let err = parse("[nats]\nlisten_on = \"x\"\n").unwrap_err();
        assert_eq!(err.field(), "nats.listen_on");
    }

    #[test]
    fn syntax_errors_are_reported_on_one_line() {
        let err = parse("[log\n").unwrap_err();
        assert_eq!(err.field(), "(document)");
        assert!(!err.to_string().contains('\n'), "{err}");
    }

    #[test]
    fn fsync_interval_must_be_positive() {
        assert!(parse_fsync("interval:0").is_err());
        assert!(parse_fsync("interval:10").is_err());
        assert_eq!(
            parse_fsync("interval:1s"),
            Ok(FsyncPolicy::Interval(Duration::from_secs(1)))
        );
    }
}
