//! The TOML configuration: schema, built-in defaults, loading and validation.
//!
//! Every section rejects unknown keys, and every problem names the field it is about
//! (`log.fsync: ...`) and where it is set (its line, or the `EDGE_BROKER_*` variable), and all
//! of them are reported at once, so `edge-broker check` tells an operator exactly what to fix.
//!
//! - [`document`]: parsing that carries on past a bad key, overrides applied to the parsed
//!   tree, field locations.
//! - [`env`]: the `EDGE_BROKER_*` namespace: overrides versus process settings.
//! - [`summary`]: what `check` prints for a valid config.
//! - [`budget`]: the memory budget: every limit's worst case together against the unit's
//!   `MemoryMax`, and the warning when a config exceeds it.
//! - `units`: sizes, durations, listen addresses.

pub mod budget;
pub mod document;
pub mod env;
pub mod summary;
mod units;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::route::{RouteConfig, RouteError, Routes};
use document::Document;
use edge_bridge::dead_letter::DeadLetterSink;
use edge_bridge::forward::ForwardConfig;
use edge_bridge::producer::{Compression, ProducerConfig};
use edge_log::{FsyncPolicy, LogConfig, WhenFull};
use serde::{Deserialize, Deserializer, de};

pub use document::{Location, Problem};
pub use units::{ByteSize, HumanDuration, parse_duration, parse_listen, parse_size};

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {error}")]
    Read {
        /// The file we tried to read.
        path: PathBuf,
        /// The I/O error (not a `source`: the message already says it, once).
        error: std::io::Error,
    },
    /// Problems in the file and its environment overrides: every one found, in file order,
    /// each naming its field and where it is set.
    #[error("{}", describe_problems(origin, problems))]
    Problems {
        /// The file (or `(built-in defaults)`).
        origin: PathBuf,
        /// What is wrong, at least one.
        problems: Vec<Problem>,
    },
    /// An `EDGE_BROKER_*` environment override is malformed.
    #[error(transparent)]
    Environment(env::OverrideError),
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
    /// The dotted name of the field the error is about (the first one, when there are several).
    pub fn field(&self) -> &str {
        match self {
            ConfigError::Read { .. } => "(file)",
            ConfigError::Environment(e) => &e.variable,
            ConfigError::Problems { problems, .. } => {
                problems.first().map_or("(document)", |p| p.field.as_str())
            }
            ConfigError::Invalid { field, .. } => field,
            ConfigError::Route { error, .. } => route_error_field(error),
        }
    }

    /// Every problem, each with its field (an error that is not about fields has none).
    pub fn problems(&self) -> Vec<Problem> {
        match self {
            ConfigError::Problems { problems, .. } => problems.clone(),
            ConfigError::Invalid { field, message, .. } => vec![Problem {
                field: (*field).to_owned(),
                message: message.clone(),
                at: None,
            }],
            ConfigError::Route { error, .. } => {
                let field = route_error_field(error).to_owned();
                let message = error.to_string();
                let message = message
                    .strip_prefix(&format!("{field}: "))
                    .unwrap_or(&message)
                    .to_owned();
                vec![Problem {
                    field,
                    message,
                    at: None,
                }]
            }
            ConfigError::Read { .. } | ConfigError::Environment(_) => Vec::new(),
        }
    }
}

/// One problem on one line after the origin; several on lines of their own.
fn describe_problems(origin: &Path, problems: &[Problem]) -> String {
    match problems {
        [one] => format!("{}: {one}", origin.display()),
        many => {
            let mut text = format!("{}: {} problems:", origin.display(), many.len());
            for problem in many {
                text.push_str(&format!("\n  {problem}"));
            }
            text
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
    /// `[kafka]`: the upstream Kafka cluster and how the log is forwarded to it.
    pub kafka: KafkaSection,
    /// `[auth]`: users and topic permissions shared by MQTT and NATS.
    pub auth: AuthSection,
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
    /// Destination Kafka topic (required; a missing one is reported by validation, with the
    /// route's other problems).
    #[serde(default)]
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
    #[serde(deserialize_with = "units::listen::<1883, _>")]
    pub listen: SocketAddr,
    /// Address of a second listener speaking MQTT over TLS (usually port 8883); unset: none.
    #[serde(deserialize_with = "units::listen_opt::<8883, _>")]
    pub tls_listen: Option<SocketAddr>,
    /// PEM certificate chain (server certificate first) for `tls_listen` and `ws_tls_listen`.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of that certificate.
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificates; when set, TLS clients must present a certificate they issued.
    pub tls_client_ca: Option<PathBuf>,
    /// Address of a listener speaking MQTT over WebSockets (browsers, Node-RED; usually port
    /// 8083); unset: none.
    #[serde(deserialize_with = "units::listen_opt::<8083, _>")]
    pub ws_listen: Option<SocketAddr>,
    /// Address of a listener speaking MQTT over WebSockets over TLS (`wss://`, usually port
    /// 8084) with the certificate of `tls_cert`; unset: none.
    #[serde(deserialize_with = "units::listen_opt::<8084, _>")]
    pub ws_tls_listen: Option<SocketAddr>,
    /// The HTTP path the WebSocket listeners accept (`/mqtt`, what MQTT.js and Mosquitto's
    /// clients use); other paths get 404.
    pub ws_path: String,
    /// Most simultaneous client connections that logged in (TCP, TLS and WebSocket listeners together); more are
    /// refused with "server busy".
    pub max_connections: usize,
    /// Most connections that have not logged in yet (their own count: they never take the
    /// seats of `max_connections`); more are closed at once.
    pub max_pending_connections: usize,
    /// Most connections from one source address (IPv4, IPv6 /64) that have not logged in yet.
    pub max_pending_per_source: usize,
    /// Most connections from one source address, logged in or not (0: no limit).
    pub max_connections_per_source: usize,
    /// Largest CONNECT accepted before login (far below `max_packet_size`: a connection that
    /// has not logged in holds at most this much); `max_packet_size` if that is smaller.
    pub max_connect_size: ByteSize,
    /// Largest packet accepted from a client (advertised as Maximum Packet Size).
    pub max_packet_size: ByteSize,
    /// QoS 1/2 publishes a client may have unacknowledged (advertised as Receive Maximum).
    pub max_inflight: u16,
    /// Messages queued per session for a slow or offline client; more are dropped and counted.
    pub max_queued_messages: usize,
    /// Bytes one session may hold for its client, queued and in flight together (each
    /// delivery charged its topic, payload and 256 bytes of bookkeeping); more are dropped
    /// and counted (Mosquitto's option).
    pub max_queued_bytes: ByteSize,
    /// Bytes all sessions together may hold queued and in flight (the memory budget of
    /// deliveries); more are dropped and counted.
    pub max_queued_bytes_total: ByteSize,
    /// QoS 1/2 deliveries in flight towards a client at once (fewer if the client's Receive
    /// Maximum says so; 3.1.1 clients have none). Mosquitto's option.
    pub max_inflight_messages: u16,
    /// How long after a subscriber last made room in its full queue a publishing connection
    /// may still stop reading to wait for more, before the QoS 0 delivery is dropped and
    /// counted (`"0s"`: dropped at once; see `mqtt::pace`).
    pub slow_subscriber_wait: HumanDuration,
    /// Longest keep alive an MQTT 5 client may choose (`"0s"` = no limit): a longer one, or
    /// none, is lowered to it and announced as Server Keep Alive. MQTT 3.1.1 has no way to
    /// tell a client, so its keep alive stands (as Mosquitto 2 does). Mosquitto's option.
    pub max_keepalive: HumanDuration,
    /// The first spelling of `max_keepalive`, still accepted with a deprecation warning.
    pub max_keep_alive: Option<HumanDuration>,
    /// Longest session expiry a client may ask for; 3.1.1 persistent sessions get this.
    pub max_session_expiry: HumanDuration,
    /// Topic aliases accepted per connection (MQTT 5).
    pub topic_alias_maximum: u16,
    /// Accept clients without credentials. Unset: only when `auth.password_file` is not set
    /// (as Mosquitto 2 with a password file). A TLS client with a verified certificate is
    /// never anonymous.
    pub allow_anonymous: Option<bool>,
    /// With mutual TLS, the certificate's CN (or first DNS/e-mail/URI SAN) is the user name
    /// and the CONNECT user name and password are not used (Mosquitto's option).
    pub use_identity_as_username: bool,
    /// Time a new connection has to send CONNECT.
    pub connect_timeout: HumanDuration,
    /// Most retained topics kept; a retained message on a new topic beyond it is refused
    /// (MQTT 5 QoS 1/2: PUBACK/PUBREC 0x97; otherwise delivered without being retained).
    pub max_retained: usize,
    /// Most bytes of all retained messages together (topic, payload and properties), refused
    /// like `max_retained`.
    pub max_retained_bytes: ByteSize,
    /// Most persistent sessions (Session Expiry above zero; 3.1.1: clean session off),
    /// connected or waiting offline; a new one beyond it is refused (CONNACK 0x97 Quota
    /// exceeded; 3.1.1: 0x03 Server unavailable). Clean sessions end with their connection
    /// and are bounded by `max_connections` instead.
    pub max_sessions: usize,
    /// Most subscriptions of one client; more get SUBACK 0x97 (3.1.1: 0x80).
    pub max_subscriptions_per_client: usize,
    /// Most memory one client's subscriptions may take, charged as each filter's text plus
    /// 1 KiB per level (what a level takes in the subscription tree); refused like
    /// `max_subscriptions_per_client`.
    pub max_subscription_bytes_per_client: ByteSize,
    /// Longest client identifier accepted (bytes; at least the 23 MQTT requires); longer ones
    /// are refused (CONNACK 0x85 Client Identifier not valid; 3.1.1: 0x02).
    pub max_client_id_length: usize,
    /// Most levels in a topic filter a client may subscribe to; deeper ones are refused
    /// (SUBACK "Topic Filter invalid").
    pub max_topic_levels: usize,
    /// How often the `$SYS` topics are published (Mosquitto's name; `"0s"`: never).
    pub sys_interval: HumanDuration,
}

impl MqttSection {
    /// The CONNECT size accepted before login: `max_connect_size`, or `max_packet_size` if
    /// that is smaller.
    pub fn connect_size_limit(&self) -> u64 {
        self.max_connect_size
            .bytes()
            .min(self.max_packet_size.bytes())
    }

    /// Applies deprecated spellings where the current key is not set.
    fn resolve_deprecated(&mut self) {
        if let Some(old) = self.max_keep_alive
            && self.max_keepalive.0.is_zero()
        {
            self.max_keepalive = old;
        }
    }
}

/// Keys written with a deprecated spelling, each with what to write instead (`check` prints
/// them with its warnings; the broker logs them at start).
pub fn deprecations(config: &Config) -> Vec<String> {
    let mut found = Vec::new();
    if config.mqtt.max_keep_alive.is_some() {
        found.push(
            "mqtt.max_keep_alive is deprecated: write max_keepalive (Mosquitto's name for it)"
                .to_owned(),
        );
    }
    found
}

impl Default for MqttSection {
    fn default() -> Self {
        MqttSection {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 1883)),
            tls_listen: None,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            ws_listen: None,
            ws_tls_listen: None,
            ws_path: "/mqtt".to_owned(),
            max_connections: 500,
            max_pending_connections: DEFAULT_MAX_PENDING,
            max_pending_per_source: DEFAULT_MAX_PENDING_PER_SOURCE,
            max_connections_per_source: 0,
            max_connect_size: ByteSize(64 << 10),
            max_packet_size: ByteSize(1 << 20),
            max_inflight: 100,
            max_queued_messages: 1000,
            max_queued_bytes: ByteSize(1 << 20),
            max_queued_bytes_total: ByteSize(32 << 20),
            max_inflight_messages: 100,
            slow_subscriber_wait: HumanDuration(DEFAULT_SLOW_SUBSCRIBER_WAIT),
            max_keepalive: HumanDuration(Duration::ZERO),
            max_keep_alive: None,
            max_session_expiry: HumanDuration(Duration::from_secs(7 * 86_400)),
            topic_alias_maximum: 16,
            allow_anonymous: None,
            use_identity_as_username: false,
            connect_timeout: HumanDuration(Duration::from_secs(10)),
            max_retained: 10_000,
            max_retained_bytes: ByteSize(16 << 20),
            max_sessions: 1000,
            max_subscriptions_per_client: 100,
            max_subscription_bytes_per_client: ByteSize(32 << 10),
            max_client_id_length: 128,
            max_topic_levels: DEFAULT_MAX_TOPIC_LEVELS,
            sys_interval: HumanDuration(Duration::from_secs(10)),
        }
    }
}

/// `[kafka]`: the upstream Kafka cluster and the forwarder's batching, retries and limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaSection {
    /// Forward the log to Kafka at all (needs at least one `[[route]]`).
    pub enabled: bool,
    /// Bootstrap brokers, `host:port`.
    pub brokers: Vec<String>,
    /// Client id sent to Kafka; default `edge-broker-<node.id>`.
    pub client_id: Option<String>,
    /// Record-batch compression: `none`, `gzip`, `snappy`, `lz4` or `zstd`.
    pub compression: String,
    /// How long a chunk that caught up with the log waits for more records (a backlog never waits).
    pub linger: HumanDuration,
    /// Most log bytes per forwarded chunk.
    pub max_batch_bytes: ByteSize,
    /// Most records per forwarded chunk.
    pub max_batch_records: usize,
    /// Largest produce request (one partition's batch); a single record above it is
    /// dead-lettered.
    pub max_request_bytes: ByteSize,
    /// How long to wait for any Kafka response.
    pub request_timeout: HumanDuration,
    /// First retry delay after an upstream error.
    pub retry_backoff_min: HumanDuration,
    /// Longest retry delay.
    pub retry_backoff_max: HumanDuration,
    /// While the uplink is down, how often a summary line is logged.
    pub outage_log_interval: HumanDuration,
    /// Upload cap in bytes per second for metered uplinks (unset: as fast as Kafka accepts).
    pub max_bytes_per_sec: Option<ByteSize>,
    /// Idempotent producer (producer id + sequence numbers).
    pub idempotent: bool,
    /// `at_least_once` (the default: any Kafka-compatible broker) or `exactly_once` (Kafka
    /// transactions with the position inside them; consumers read with
    /// `isolation.level=read_committed`).
    pub delivery: String,
    /// Exactly-once: how long Kafka lets a transaction stay open before aborting it.
    pub transaction_timeout: HumanDuration,
    /// Exactly-once: the longest a transaction stays open while records keep coming (it is
    /// stretched past 100 ms only when a commit costs more than a tenth of that); bounds the
    /// delay a read_committed consumer sees.
    pub max_transaction_interval: HumanDuration,
    /// Where records Kafka refuses for good go: a file path (default `<data_dir>/dead-letter`)
    /// or `kafka:<topic>`.
    pub dead_letter: Option<String>,
    /// Create missing Kafka topics (with `auto_create_partitions` partitions).
    pub auto_create_topics: bool,
    /// Partitions of topics the forwarder creates.
    pub auto_create_partitions: i32,
    /// Connect to the brokers over TLS (Kafka's `SSL` security protocol).
    pub tls: bool,
    /// PEM CA certificates trusted for the brokers; default the system bundle.
    pub tls_ca: Option<PathBuf>,
    /// PEM client certificate chain, for brokers that require one (with `tls_key`).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// SASL authentication to the brokers: `plain`, `scram-sha-256`, `scram-sha-512` or
    /// `oauthbearer`; unset: none. Over TLS when `tls = true`, else in plain TCP.
    pub sasl_mechanism: Option<String>,
    /// SASL user name (`plain`, `scram-*`).
    pub sasl_username: Option<String>,
    /// File holding the SASL password (`plain`, `scram-*`); read at every (re)connection, so a
    /// changed password is picked up without a restart.
    pub sasl_password_file: Option<PathBuf>,
    /// File holding the OAUTHBEARER token (a JWT); read again before the token expires.
    pub sasl_token_file: Option<PathBuf>,
}

impl Default for KafkaSection {
    fn default() -> Self {
        KafkaSection {
            enabled: true,
            brokers: vec!["127.0.0.1:9092".to_owned()],
            client_id: None,
            compression: "lz4".to_owned(),
            linger: HumanDuration(Duration::from_millis(5)),
            max_batch_bytes: ByteSize(1 << 20),
            max_batch_records: 10_000,
            max_request_bytes: ByteSize(1 << 20),
            request_timeout: HumanDuration(Duration::from_secs(30)),
            retry_backoff_min: HumanDuration(Duration::from_millis(100)),
            retry_backoff_max: HumanDuration(Duration::from_secs(5)),
            outage_log_interval: HumanDuration(Duration::from_secs(60)),
            max_bytes_per_sec: None,
            idempotent: true,
            delivery: "at_least_once".to_owned(),
            transaction_timeout: HumanDuration(Duration::from_secs(60)),
            max_transaction_interval: HumanDuration(Duration::from_secs(1)),
            dead_letter: None,
            auto_create_topics: false,
            auto_create_partitions: 1,
            tls: false,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            sasl_mechanism: None,
            sasl_username: None,
            sasl_password_file: None,
            sasl_token_file: None,
        }
    }
}

/// One `[[nats.users]]` entry: a user name and its password.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsUser {
    /// User name the client sends in CONNECT `user`.
    pub user: String,
    /// Password the client sends in CONNECT `pass` (or `password_file`).
    pub password: Option<String>,
    /// File holding the password (systemd credentials: `$CREDENTIALS_DIRECTORY/NAME`).
    pub password_file: Option<PathBuf>,
}

/// `[nats]`: the NATS client-protocol listener and its limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsSection {
    /// Serve NATS at all.
    pub enabled: bool,
    /// Address to listen on (port 0 picks a free port, logged at startup).
    #[serde(deserialize_with = "units::listen::<4222, _>")]
    pub listen: SocketAddr,
    /// Most simultaneous client connections that logged in (sent CONNECT); more get
    /// `-ERR 'maximum connections exceeded'`.
    pub max_connections: usize,
    /// Most connections that have not sent CONNECT yet (their own count); more are closed.
    pub max_pending_connections: usize,
    /// Most connections from one source address (IPv4, IPv6 /64) without CONNECT yet.
    pub max_pending_per_source: usize,
    /// Most connections from one source address, logged in or not (0: no limit).
    pub max_connections_per_source: usize,
    /// Largest PUB/HPUB payload (headers included), announced in INFO as `max_payload`.
    pub max_payload: ByteSize,
    /// Output a client may have waiting; a subscriber further behind is a slow consumer and is
    /// disconnected with `-ERR 'Slow Consumer'`.
    pub max_pending: ByteSize,
    /// Output all connections together may have waiting; a message beyond it is dropped for
    /// that subscriber and counted (the memory budget of NATS deliveries).
    pub max_pending_total: ByteSize,
    /// Routed publishes a connection may have waiting for their durable ack; reading pauses beyond.
    pub max_inflight: usize,
    /// Most subscriptions per connection; more get `-ERR 'maximum subscriptions exceeded'`.
    pub max_subscriptions: usize,
    /// Most tokens in a subscription subject; deeper ones get `-ERR 'Invalid Subject'`.
    pub max_subject_tokens: usize,
    /// How often the server PINGs a client.
    pub ping_interval: HumanDuration,
    /// Unanswered PINGs after which the connection is stale and closed.
    pub max_pings_out: u32,
    /// Time a new connection has to send CONNECT (`-ERR 'Authentication Timeout'`).
    pub auth_timeout: HumanDuration,
    /// Token clients may authenticate with (CONNECT `auth_token`); ACL user `$token`.
    pub token: Option<String>,
    /// File holding the token (instead of `token`).
    pub token_file: Option<PathBuf>,
    /// Users clients may authenticate as (CONNECT `user`/`pass`), besides `auth.password_file`.
    pub users: Vec<NatsUser>,
    /// Accept clients that present no credentials. Unset: only when no credential is
    /// configured (`token`, `token_file`, `users`, `auth.password_file`).
    pub allow_anonymous: Option<bool>,
    /// How long a `Nats-Msg-Id` is remembered for duplicate detection of durable publishes.
    pub duplicate_window: HumanDuration,
    /// Most message ids remembered (oldest forgotten first), bounding the window's memory.
    pub max_duplicate_ids: usize,
    /// PEM certificate chain: when set (with `tls_key`), every client must use TLS (INFO
    /// `tls_required`, the client upgrades after INFO, as with nats-server's `tls {}`).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificates; when set, clients must present a certificate they issued.
    pub tls_client_ca: Option<PathBuf>,
}

impl Default for NatsSection {
    fn default() -> Self {
        NatsSection {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 4222)),
            max_connections: 500,
            max_pending_connections: DEFAULT_MAX_PENDING,
            max_pending_per_source: DEFAULT_MAX_PENDING_PER_SOURCE,
            max_connections_per_source: 0,
            max_payload: ByteSize(1 << 20),
            max_pending: ByteSize(8 << 20),
            max_pending_total: ByteSize(8 << 20),
            max_inflight: 4096,
            max_subscriptions: 10_000,
            max_subject_tokens: DEFAULT_MAX_TOPIC_LEVELS,
            ping_interval: HumanDuration(Duration::from_secs(120)),
            max_pings_out: 2,
            auth_timeout: HumanDuration(Duration::from_secs(2)),
            token: None,
            token_file: None,
            users: Vec::new(),
            allow_anonymous: None,
            duplicate_window: HumanDuration(Duration::from_secs(120)),
            max_duplicate_ids: 100_000,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
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
    #[serde(deserialize_with = "units::listen::<9100, _>")]
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

/// `[auth]`: users and topic permissions, shared by MQTT and NATS.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSection {
    /// Mosquitto's password file (`user:$7$...`, `$6$`); `edge-broker passwd FILE USER`
    /// writes it. Reloaded on SIGHUP.
    pub password_file: Option<PathBuf>,
    /// Mosquitto's ACL file (`topic`, `user`, `pattern` lines). Without it every
    /// authenticated client may publish and subscribe anywhere. Reloaded on SIGHUP.
    pub acl_file: Option<PathBuf>,
    /// Longest delay of a failed login's answer (it doubles per failure from 100 ms).
    pub max_login_delay: HumanDuration,
    /// Most source addresses whose failed logins are remembered.
    pub max_tracked_sources: usize,
}

impl Default for AuthSection {
    fn default() -> Self {
        AuthSection {
            password_file: None,
            acl_file: None,
            max_login_delay: HumanDuration(Duration::from_secs(2)),
            max_tracked_sources: 4096,
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
    /// Keep the active segment zero-filled 1 MiB ahead of the writer, so an fdatasync has no
    /// file-system metadata (no journal write) to commit: fewer bytes reach the flash.
    pub preallocate: bool,
    /// Write new log bytes as whole 512-byte sectors (O_DIRECT) instead of rewriting the 4 KiB
    /// page holding the end at every sync: fewer bytes reach the flash at low rates. With an
    /// `interval:` fsync, an interval's events are written together by its sync.
    pub sector_writes: bool,
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection {
            segment_bytes: ByteSize(64 << 20),
            max_bytes: ByteSize(2 << 30),
            max_record_bytes: ByteSize(1 << 20),
            fsync: FsyncPolicy::Always,
            when_full: WhenFull::Block,
            preallocate: false,
            sector_writes: false,
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
/// `tls_listen` and `ws_tls_listen` need a certificate and key, the files need one of them,
/// and they must load.
fn validate_mqtt_tls(mqtt: &MqttSection) -> Result<(), (&'static str, String)> {
    let files = (&mqtt.tls_cert, &mqtt.tls_key, &mqtt.tls_client_ca);
    let listener = match (mqtt.tls_listen, mqtt.ws_tls_listen) {
        (Some(_), _) => Some("mqtt.tls_listen"),
        (None, Some(_)) => Some("mqtt.ws_tls_listen"),
        (None, None) => None,
    };
    match listener {
        None if files == (&None, &None, &None) => Ok(()),
        None => Err((
            "mqtt.tls_listen",
            "must be set when mqtt.tls_cert, mqtt.tls_key or mqtt.tls_client_ca is (the address of the TLS listener, e.g. \"0.0.0.0:8883\"; or mqtt.ws_tls_listen for WebSockets over TLS)".to_owned(),
        )),
        Some(field) if mqtt.tls_cert.is_none() => Err((
            "mqtt.tls_cert",
            format!("is needed by {field} (a PEM certificate chain)"),
        )),
        Some(_) => check_tls_files(TlsFields::MQTT, files),
    }
}

/// The WebSocket path is what a client's URL ends with: one absolute path, no query.
fn validate_ws_path(path: &str) -> Result<(), (&'static str, String)> {
    let valid = path.starts_with('/')
        && path.len() <= 256
        && path
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'?' && b != b'#');
    if valid {
        Ok(())
    } else {
        Err((
            "mqtt.ws_path",
            format!(
                "{path:?} must be an absolute URL path such as \"/mqtt\" (at most 256 printable ASCII characters, no query)"
            ),
        ))
    }
}

/// The config fields of one listener's TLS files, for error messages.
struct TlsFields {
    cert: &'static str,
    key: &'static str,
    client_ca: &'static str,
}

impl TlsFields {
    const MQTT: TlsFields = TlsFields {
        cert: "mqtt.tls_cert",
        key: "mqtt.tls_key",
        client_ca: "mqtt.tls_client_ca",
    };
    const NATS: TlsFields = TlsFields {
        cert: "nats.tls_cert",
        key: "nats.tls_key",
        client_ca: "nats.tls_client_ca",
    };
}

/// A certificate needs its key (and the other way round), a client CA needs both, and the
/// files must load; the error names the field of the file that does not.
fn check_tls_files(
    fields: TlsFields,
    (cert, key, client_ca): (&Option<PathBuf>, &Option<PathBuf>, &Option<PathBuf>),
) -> Result<(), (&'static str, String)> {
    match (cert, key) {
        (None, None) if client_ca.is_none() => Ok(()),
        (None, _) => Err((
            fields.cert,
            format!(
                "is needed by {}",
                if key.is_some() {
                    fields.key
                } else {
                    fields.client_ca
                }
            ),
        )),
        (Some(_), None) => Err((
            fields.key,
            format!("is needed by {} (its PEM private key)", fields.cert),
        )),
        (Some(cert), Some(key)) => match crate::tls::acceptor(cert, key, client_ca.as_deref()) {
            Ok(_) => Ok(()),
            Err(err @ crate::tls::TlsError::Key { .. }) => Err((fields.key, err.to_string())),
            Err(err @ crate::tls::TlsError::ClientCa { .. }) => {
                Err((fields.client_ca, err.to_string()))
            }
            Err(err) => Err((fields.cert, err.to_string())),
        },
    }
}

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

/// Default depth limit of subscription filters (MQTT levels, NATS tokens): far beyond any real
/// topic tree, far below what a client could send in one packet.
pub const DEFAULT_MAX_TOPIC_LEVELS: usize = 128;

/// Default `max_pending_connections` of MQTT and NATS: connections that have not logged in.
pub const DEFAULT_MAX_PENDING: usize = 128;

/// Default `max_pending_per_source`: what one address may hold of [`DEFAULT_MAX_PENDING`].
pub const DEFAULT_MAX_PENDING_PER_SOURCE: usize = 64;

/// Default `mqtt.slow_subscriber_wait` (see BENCHMARKS.md, "QoS 0 to a slower subscriber").
pub const DEFAULT_SLOW_SUBSCRIBER_WAIT: Duration = Duration::from_secs(2);

/// Largest `mqtt.slow_subscriber_wait` accepted.
const MAX_SLOW_SUBSCRIBER_WAIT: Duration = Duration::from_secs(10);

/// Smallest segment we accept: smaller ones only multiply files and fsyncs.
const MIN_SEGMENT_BYTES: u64 = 64 << 10;

/// What validation found, collected so that `check` reports every problem at once.
#[derive(Debug, Default)]
struct Findings(Vec<ConfigError>);

impl Findings {
    /// `field` has a value that does not make sense (with the others).
    fn invalid(&mut self, field: &'static str, message: impl Into<String>) {
        self.0.push(ConfigError::Invalid {
            path: None,
            field,
            message: message.into(),
        });
    }

    /// Records the problem of a check that returns `(field, message)`.
    fn check(&mut self, result: Result<(), (&'static str, String)>) {
        if let Err((field, message)) = result {
            self.invalid(field, message);
        }
    }
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::parse(&read(path)?, path)
    }

    /// The effective config: the file (or the built-in defaults without one) with the
    /// `EDGE_BROKER_<SECTION>_<KEY>` overrides of the process environment applied.
    pub fn load_with_env(path: Option<&Path>) -> Result<Config, ConfigError> {
        let text = match path {
            Some(path) => read(path)?,
            None => String::new(),
        };
        let origin = path.unwrap_or(Path::new("(built-in defaults)"));
        let found =
            env::scan(std::env::vars(), &env::section_names()).map_err(ConfigError::Environment)?;
        Config::parse_with(&text, origin, &found.overrides)
    }

    /// Parses and validates config text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        Config::parse_with(text, origin, &[])
    }

    /// Parses config text, applies `overrides` and validates the result. The error holds every
    /// problem found, in file order, each with its line (or the variable that set it).
    pub fn parse_with(
        text: &str,
        origin: &Path,
        overrides: &[env::Override],
    ) -> Result<Config, ConfigError> {
        let problems = |problems| ConfigError::Problems {
            origin: origin.to_owned(),
            problems,
        };
        let document = Document::parse(text, overrides).map_err(problems)?;
        let (mut config, mut found) = document.deserialize::<Config>();
        if let Some(config) = &mut config
            && let Err((field, message)) = config.resolve_credential_paths()
        {
            found.push(Problem {
                field: field.to_owned(),
                message,
                at: document.locate(field),
            });
        }
        if let Some(config) = &mut config {
            config.mqtt.resolve_deprecated();
        }
        if let Some(config) = &config {
            // A key that did not parse was replaced by its default: leave out what validation
            // says about it (or because of it), which would only confuse.
            let reported: Vec<String> = found.iter().map(|p| p.field.clone()).collect();
            for problem in config.findings().iter().flat_map(ConfigError::problems) {
                if reported
                    .iter()
                    .any(|f| problem.field == *f || problem.message.contains(f.as_str()))
                {
                    continue;
                }
                found.push(Problem {
                    at: document.locate(&problem.field),
                    ..problem
                });
            }
        }
        match config {
            Some(config) if found.is_empty() => Ok(config),
            _ => {
                // File order; overrides after the file, then what is set nowhere.
                found.sort_by_key(|p| match &p.at {
                    Some(Location::Line { line, column }) => (0, *line, *column),
                    Some(Location::Variable(_)) => (1, 0, 0),
                    None => (2, 0, 0),
                });
                Err(problems(found))
            }
        }
    }

    /// Checks relations between values that the schema alone cannot express; the error holds
    /// every problem found.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut found = self.findings();
        match found.len() {
            0 => Ok(()),
            1 => Err(found.remove(0)),
            _ => Err(ConfigError::Problems {
                origin: PathBuf::from("(config)"),
                problems: found.iter().flat_map(ConfigError::problems).collect(),
            }),
        }
    }

    /// Every problem validation finds, section by section.
    fn findings(&self) -> Vec<ConfigError> {
        let mut found = Findings::default();
        self.check_node_and_log(&mut found);
        self.check_mqtt(&mut found);
        self.check_nats(&mut found);
        if let Err(error) = self.validate_auth() {
            found.0.push(error);
        }
        found.0.extend(
            Routes::problems(&self.route_configs())
                .into_iter()
                .map(|error| ConfigError::Route { error, path: None }),
        );
        self.check_kafka(&mut found);
        found.0
    }

    fn check_node_and_log(&self, found: &mut Findings) {
        if let Err(message) = validate_node_id(&self.node.id) {
            found.invalid("node.id", message);
        }
        if self.node.data_dir.as_os_str().is_empty() {
            found.invalid("node.data_dir", "must not be empty");
        }
        let log = &self.log;
        if log.segment_bytes.bytes() < MIN_SEGMENT_BYTES {
            found.invalid(
                "log.segment_bytes",
                format!(
                    "{} is too small: at least {}",
                    log.segment_bytes,
                    ByteSize(MIN_SEGMENT_BYTES)
                ),
            );
        }
        if log.max_bytes.bytes() < log.segment_bytes.bytes().saturating_mul(2) {
            found.invalid(
                "log.max_bytes",
                format!(
                    "{} must be at least twice log.segment_bytes ({}) so one segment can be freed while another fills",
                    log.max_bytes, log.segment_bytes
                ),
            );
        }
        if log.max_record_bytes.bytes() == 0
            || log.max_record_bytes.bytes() > log.segment_bytes.bytes() / 2
        {
            found.invalid(
                "log.max_record_bytes",
                format!(
                    "{} must be between 1 byte and half of log.segment_bytes ({})",
                    log.max_record_bytes, log.segment_bytes
                ),
            );
        }
    }

    fn check_mqtt(&self, found: &mut Findings) {
        let mqtt = &self.mqtt;
        if mqtt.max_packet_size.bytes() < 64 || mqtt.max_packet_size.bytes() > 268_435_460 {
            found.invalid(
                "mqtt.max_packet_size",
                format!(
                    "{} must be between 64B and 256MiB (the MQTT limit)",
                    mqtt.max_packet_size
                ),
            );
        }
        if mqtt.max_inflight == 0 {
            found.invalid("mqtt.max_inflight", "must be at least 1");
        }
        if mqtt.max_inflight_messages == 0 {
            found.invalid("mqtt.max_inflight_messages", "must be at least 1");
        }
        if mqtt.max_queued_bytes > mqtt.max_queued_bytes_total {
            found.invalid(
                "mqtt.max_queued_bytes",
                format!(
                    "{} must be at most mqtt.max_queued_bytes_total ({})",
                    mqtt.max_queued_bytes, mqtt.max_queued_bytes_total
                ),
            );
        }
        for (field, value) in [
            ("mqtt.max_connections", mqtt.max_connections),
            ("mqtt.max_pending_connections", mqtt.max_pending_connections),
            ("mqtt.max_pending_per_source", mqtt.max_pending_per_source),
        ] {
            if value == 0 {
                found.invalid(field, "must be at least 1");
            }
        }
        if mqtt.max_connect_size.bytes() < 64 {
            found.invalid(
                "mqtt.max_connect_size",
                format!("{} must be at least 64B", mqtt.max_connect_size),
            );
        }
        for (field, value) in [
            ("mqtt.max_keepalive", Some(mqtt.max_keepalive)),
            ("mqtt.max_keep_alive", mqtt.max_keep_alive),
        ] {
            if value.is_some_and(|v| v.0 > Duration::from_secs(u64::from(u16::MAX))) {
                found.invalid(field, "must be at most 65535s");
            }
        }
        if mqtt.max_session_expiry.0 > Duration::from_secs(u64::from(u32::MAX)) {
            found.invalid("mqtt.max_session_expiry", "must be at most 4294967295s");
        }
        if mqtt.max_topic_levels == 0 {
            found.invalid("mqtt.max_topic_levels", "must be at least 1");
        }
        for (field, value) in [
            ("mqtt.max_sessions", mqtt.max_sessions as u64),
            (
                "mqtt.max_subscriptions_per_client",
                mqtt.max_subscriptions_per_client as u64,
            ),
            (
                "mqtt.max_subscription_bytes_per_client",
                mqtt.max_subscription_bytes_per_client.bytes(),
            ),
        ] {
            if value == 0 {
                found.invalid(field, "must be at least 1");
            }
        }
        if mqtt.max_client_id_length < 23 {
            found.invalid(
                "mqtt.max_client_id_length",
                "must be at least 23 (MQTT requires accepting client ids of 1 to 23 bytes)",
            );
        }
        if mqtt.connect_timeout.0.is_zero() {
            found.invalid("mqtt.connect_timeout", "must be greater than zero");
        }
        found.check(validate_mqtt_tls(mqtt));
        found.check(validate_ws_path(&mqtt.ws_path));
        if mqtt.slow_subscriber_wait.0 > MAX_SLOW_SUBSCRIBER_WAIT {
            found.invalid(
                "mqtt.slow_subscriber_wait",
                "must be at most 10s (a subscriber that never reads holds its publishers that long)",
            );
        }
        let sys = mqtt.sys_interval.0;
        if !sys.is_zero() && sys < Duration::from_secs(1) {
            found.invalid(
                "mqtt.sys_interval",
                "must be \"0s\" (no $SYS topics) or at least 1s",
            );
        }
    }

    fn check_nats(&self, found: &mut Findings) {
        let nats = &self.nats;
        if nats.max_subject_tokens == 0 {
            found.invalid("nats.max_subject_tokens", "must be at least 1");
        }
        found.check(check_tls_files(
            TlsFields::NATS,
            (&nats.tls_cert, &nats.tls_key, &nats.tls_client_ca),
        ));
        if nats.max_payload.bytes() == 0 || nats.max_payload.bytes() > 64 << 20 {
            found.invalid(
                "nats.max_payload",
                format!("{} must be between 1B and 64MiB", nats.max_payload),
            );
        }
        if nats.max_pending_total < nats.max_pending {
            found.invalid(
                "nats.max_pending_total",
                format!(
                    "{} must be at least nats.max_pending ({})",
                    nats.max_pending_total, nats.max_pending
                ),
            );
        }
        if nats.max_pending.bytes() < nats.max_payload.bytes() {
            found.invalid(
                "nats.max_pending",
                format!(
                    "{} must be at least nats.max_payload ({})",
                    nats.max_pending, nats.max_payload
                ),
            );
        }
        for (field, value) in [
            ("nats.max_connections", nats.max_connections),
            ("nats.max_pending_connections", nats.max_pending_connections),
            ("nats.max_pending_per_source", nats.max_pending_per_source),
        ] {
            if value == 0 {
                found.invalid(field, "must be at least 1");
            }
        }
        if nats.max_inflight == 0 {
            found.invalid("nats.max_inflight", "must be at least 1");
        }
        if nats.ping_interval.0.is_zero() {
            found.invalid("nats.ping_interval", "must be greater than zero");
        }
        if nats.auth_timeout.0.is_zero() {
            found.invalid("nats.auth_timeout", "must be greater than zero");
        }
        if nats.max_duplicate_ids == 0 {
            found.invalid("nats.max_duplicate_ids", "must be at least 1");
        }
        if nats.token.as_deref() == Some("") {
            found.invalid("nats.token", "must not be empty");
        }
        if nats.token.is_some() && nats.token_file.is_some() {
            found.invalid(
                "nats.token_file",
                "give nats.token or nats.token_file, not both",
            );
        }
        if nats.users.iter().any(|u| u.user.is_empty()) {
            found.invalid("nats.users", "every user needs a non-empty name");
        }
        if let Some(i) = nats
            .users
            .iter()
            .position(|u| u.password.is_some() == u.password_file.is_some())
        {
            found.invalid(
                "nats.users",
                format!(
                    "nats.users[{}] needs exactly one of password and password_file",
                    i + 1
                ),
            );
        }
        if nats.allow_anonymous == Some(false) && !self.nats_has_credentials() {
            found.invalid(
                "nats.allow_anonymous",
                "false needs nats.token, nats.token_file, nats.users or auth.password_file, or no client could connect",
            );
        }
    }

    /// Whether any NATS credential is configured (then anonymous is off unless asked for).
    pub fn nats_has_credentials(&self) -> bool {
        let n = &self.nats;
        n.token.is_some()
            || n.token_file.is_some()
            || !n.users.is_empty()
            || self.auth.password_file.is_some()
    }

    /// Whether MQTT clients without credentials are accepted: `mqtt.allow_anonymous`, or when
    /// unset, only without `auth.password_file`.
    pub fn mqtt_anonymous_allowed(&self) -> bool {
        self.mqtt
            .allow_anonymous
            .unwrap_or(self.auth.password_file.is_none())
    }

    /// Whether NATS clients without credentials are accepted: `nats.allow_anonymous`, or when
    /// unset, only when no credential is configured.
    pub fn nats_anonymous_allowed(&self) -> bool {
        self.nats
            .allow_anonymous
            .unwrap_or(!self.nats_has_credentials())
    }

    /// Resolves `$CREDENTIALS_DIRECTORY/...` in every file path that may hold a secret.
    fn resolve_credential_paths(&mut self) -> Result<(), (&'static str, String)> {
        let resolve = |field: &'static str, path: &mut Option<PathBuf>| {
            if let Some(p) = path.as_mut() {
                *p = crate::auth::secret::resolve(p).map_err(|e| (field, e.to_string()))?;
            }
            Ok::<(), (&'static str, String)>(())
        };
        resolve("auth.password_file", &mut self.auth.password_file)?;
        resolve("auth.acl_file", &mut self.auth.acl_file)?;
        resolve("nats.token_file", &mut self.nats.token_file)?;
        for user in &mut self.nats.users {
            resolve("nats.users", &mut user.password_file)?;
        }
        resolve("mqtt.tls_key", &mut self.mqtt.tls_key)?;
        resolve("nats.tls_key", &mut self.nats.tls_key)?;
        resolve("kafka.tls_key", &mut self.kafka.tls_key)?;
        resolve(
            "kafka.sasl_password_file",
            &mut self.kafka.sasl_password_file,
        )?;
        resolve("kafka.sasl_token_file", &mut self.kafka.sasl_token_file)?;
        Ok(())
    }

    /// The auth files load, and the MQTT identity settings make sense.
    fn validate_auth(&self) -> Result<(), ConfigError> {
        let invalid = |field, message: String| {
            Err(ConfigError::Invalid {
                path: None,
                field,
                message,
            })
        };
        if self.mqtt.use_identity_as_username && self.mqtt.tls_client_ca.is_none() {
            return invalid(
                "mqtt.use_identity_as_username",
                "needs mqtt.tls_client_ca (mutual TLS: the identity comes from the client certificate)"
                    .to_owned(),
            );
        }
        if self.auth.max_tracked_sources == 0 {
            return invalid("auth.max_tracked_sources", "must be at least 1".to_owned());
        }
        if self.auth.max_login_delay.0 > Duration::from_secs(60) {
            return invalid("auth.max_login_delay", "must be at most 60s".to_owned());
        }
        if let Some(path) = &self.auth.password_file
            && let Err(e) = crate::auth::password::PasswordFile::load(path)
        {
            return invalid("auth.password_file", e.to_string());
        }
        if let Some(path) = &self.auth.acl_file
            && let Err(e) = crate::auth::acl::Acl::load(path)
        {
            return invalid("auth.acl_file", e.to_string());
        }
        if let Some(path) = &self.nats.token_file
            && let Err(e) = crate::auth::secret::read(path)
        {
            return invalid("nats.token_file", e.to_string());
        }
        for user in &self.nats.users {
            if let Some(path) = &user.password_file
                && let Err(e) = crate::auth::secret::read(path)
            {
                return invalid("nats.users", e.to_string());
            }
        }
        Ok(())
    }

    /// `[kafka] sasl_*`: a known mechanism with what it needs.
    fn validate_kafka_sasl(&self) -> Result<(), (&'static str, String)> {
        let k = &self.kafka;
        let Some(name) = &k.sasl_mechanism else {
            return match (&k.sasl_username, &k.sasl_password_file, &k.sasl_token_file) {
                (None, None, None) => Ok(()),
                _ => Err((
                    "kafka.sasl_mechanism",
                    "must be set when kafka.sasl_username, sasl_password_file or sasl_token_file is"
                        .to_owned(),
                )),
            };
        };
        let mechanism: edge_bridge::producer::sasl::Mechanism =
            name.parse()
                .map_err(|e: edge_bridge::producer::sasl::UnknownMechanism| {
                    ("kafka.sasl_mechanism", e.to_string())
                })?;
        let (needed, file_field) =
            if mechanism == edge_bridge::producer::sasl::Mechanism::OAuthBearer {
                (&k.sasl_token_file, "kafka.sasl_token_file")
            } else {
                if k.sasl_username.as_deref().is_none_or(str::is_empty) {
                    return Err((
                        "kafka.sasl_username",
                        format!("is needed by sasl_mechanism = {name:?}"),
                    ));
                }
                (&k.sasl_password_file, "kafka.sasl_password_file")
            };
        let Some(path) = needed else {
            return Err((
                file_field,
                format!("is needed by sasl_mechanism = {name:?}"),
            ));
        };
        if k.enabled
            && let Err(e) = crate::auth::secret::read(path)
        {
            return Err((file_field, e.to_string()));
        }
        Ok(())
    }

    /// The producer's SASL settings, if `kafka.sasl_mechanism` is set.
    fn kafka_sasl_settings(&self) -> Option<edge_bridge::producer::sasl::SaslSettings> {
        let k = &self.kafka;
        let mechanism = k.sasl_mechanism.as_deref()?.parse().ok()?;
        let secret_file = if mechanism == edge_bridge::producer::sasl::Mechanism::OAuthBearer {
            k.sasl_token_file.clone()?
        } else {
            k.sasl_password_file.clone()?
        };
        Some(edge_bridge::producer::sasl::SaslSettings {
            mechanism,
            username: k.sasl_username.clone().unwrap_or_default(),
            secret_file,
        })
    }

    fn check_kafka(&self, found: &mut Findings) {
        let k = &self.kafka;
        if k.enabled && k.brokers.is_empty() {
            found.invalid("kafka.brokers", "must name at least one host:port");
        }
        for broker in &k.brokers {
            let port = broker
                .rsplit_once(':')
                .map(|(host, port)| (host, port.parse::<u16>()));
            if !matches!(port, Some((host, Ok(p))) if !host.is_empty() && p > 0) {
                found.invalid(
                    "kafka.brokers",
                    format!("{broker:?} is not host:port (e.g. \"kafka-1.example.net:9092\")"),
                );
            }
        }
        if let Err(e) = k.compression.parse::<Compression>() {
            found.invalid("kafka.compression", e.to_string());
        }
        match k.delivery.as_str() {
            "at_least_once" => {}
            "exactly_once" => {
                if !k.idempotent {
                    found.invalid(
                        "kafka.idempotent",
                        "must be true with kafka.delivery = \"exactly_once\"",
                    );
                }
                if k.dead_letter
                    .as_deref()
                    .is_some_and(|d| d.starts_with("kafka:"))
                {
                    found.invalid(
                        "kafka.dead_letter",
                        "a dead-letter topic is not supported with kafka.delivery = \"exactly_once\" yet; use a file",
                    );
                }
            }
            other => found.invalid(
                "kafka.delivery",
                format!("{other:?}: expected \"at_least_once\" or \"exactly_once\""),
            ),
        }
        if k.transaction_timeout.0 < Duration::from_secs(1)
            || k.transaction_timeout.0 > Duration::from_secs(15 * 60)
        {
            found.invalid(
                "kafka.transaction_timeout",
                "must be between 1s and 15m (Kafka's default transaction.max.timeout.ms)",
            );
        }
        if k.max_transaction_interval.0 < edge_bridge::forward::TXN_INTERVAL
            || k.max_transaction_interval.0 > Duration::from_secs(60)
            || k.max_transaction_interval.0 * 2 > k.transaction_timeout.0
        {
            found.invalid(
                "kafka.max_transaction_interval",
                "must be between 100ms and 60s, and at most half of kafka.transaction_timeout",
            );
        }
        if k.client_id.as_deref().is_some_and(str::is_empty) {
            found.invalid("kafka.client_id", "must not be empty");
        }
        if k.linger.0 > Duration::from_secs(10) {
            found.invalid("kafka.linger", "must be at most 10s");
        }
        if k.max_batch_records == 0 {
            found.invalid("kafka.max_batch_records", "must be at least 1");
        }
        if k.max_batch_bytes.bytes() < 1024 {
            found.invalid("kafka.max_batch_bytes", "must be at least 1KiB");
        }
        if k.max_request_bytes.bytes() < 1024 || k.max_request_bytes.bytes() > 1 << 30 {
            found.invalid("kafka.max_request_bytes", "must be between 1KiB and 1GiB");
        }
        if k.request_timeout.0 < Duration::from_millis(10) {
            found.invalid("kafka.request_timeout", "must be at least 10ms");
        }
        if k.retry_backoff_min.0.is_zero() {
            found.invalid("kafka.retry_backoff_min", "must be greater than zero");
        }
        if k.retry_backoff_max.0 < k.retry_backoff_min.0 {
            found.invalid(
                "kafka.retry_backoff_max",
                format!(
                    "{:?} is below kafka.retry_backoff_min ({:?})",
                    k.retry_backoff_max.0, k.retry_backoff_min.0
                ),
            );
        }
        if k.outage_log_interval.0 < Duration::from_secs(1) {
            found.invalid("kafka.outage_log_interval", "must be at least 1s");
        }
        if k.max_bytes_per_sec.is_some_and(|b| b.bytes() == 0) {
            found.invalid(
                "kafka.max_bytes_per_sec",
                "must be greater than zero (leave it out for no cap)",
            );
        }
        if k.auto_create_partitions < 1 {
            found.invalid("kafka.auto_create_partitions", "must be at least 1");
        }
        found.check(self.validate_kafka_tls());
        found.check(self.validate_kafka_sasl());
        if let Some(dl) = &k.dead_letter {
            match dl.strip_prefix("kafka:") {
                Some(topic) if topic.is_empty() || topic.len() > 249 => found.invalid(
                    "kafka.dead_letter",
                    "kafka:<topic> needs a topic name of 1 to 249 characters",
                ),
                None if dl.is_empty() => {
                    found.invalid("kafka.dead_letter", "must be a file path or kafka:<topic>")
                }
                _ => {}
            }
        }
    }
    /// TLS files need `kafka.tls = true`, a client certificate needs its key, and the files
    /// must load (checked only when forwarding is enabled).
    fn validate_kafka_tls(&self) -> Result<(), (&'static str, String)> {
        let k = &self.kafka;
        let files = [
            ("kafka.tls_ca", &k.tls_ca),
            ("kafka.tls_cert", &k.tls_cert),
            ("kafka.tls_key", &k.tls_key),
        ];
        if !k.tls {
            return match files.iter().find(|(_, f)| f.is_some()) {
                Some((field, _)) => Err(("kafka.tls", format!("must be true when {field} is set"))),
                None => Ok(()),
            };
        }
        match (&k.tls_cert, &k.tls_key) {
            (Some(_), None) => {
                return Err(("kafka.tls_key", "is needed by kafka.tls_cert".to_owned()));
            }
            (None, Some(_)) => {
                return Err(("kafka.tls_cert", "is needed by kafka.tls_key".to_owned()));
            }
            _ => {}
        }
        let Some(settings) = self.kafka_tls_settings().filter(|_| k.enabled) else {
            return Ok(());
        };
        edge_bridge::producer::tls::connector(&settings)
            .map(|_| ())
            .map_err(|err| {
                let message = err.to_string();
                let field = files
                    .iter()
                    .find(|(_, f)| {
                        f.as_ref()
                            .is_some_and(|p| message.contains(&*p.to_string_lossy()))
                    })
                    .map_or("kafka.tls_ca", |(field, _)| *field);
                (field, message)
            })
    }

    /// The producer's TLS settings, if `kafka.tls` is on.
    fn kafka_tls_settings(&self) -> Option<edge_bridge::producer::tls::TlsSettings> {
        let k = &self.kafka;
        k.tls.then(|| edge_bridge::producer::tls::TlsSettings {
            ca: k.tls_ca.clone(),
            cert: k.tls_cert.clone(),
            key: k.tls_key.clone(),
        })
    }

    /// The Kafka producer settings of `[kafka]`.
    pub fn kafka_producer_config(&self) -> ProducerConfig {
        let k = &self.kafka;
        let mut config = ProducerConfig::new(k.brokers.clone());
        config.client_id = k
            .client_id
            .clone()
            .unwrap_or_else(|| format!("edge-broker-{}", self.node.id));
        config.compression = k.compression.parse().unwrap_or_default();
        config.request_timeout = k.request_timeout.0;
        config.connect_timeout = k.request_timeout.0.min(Duration::from_secs(10));
        config.max_request_bytes =
            usize::try_from(k.max_request_bytes.bytes()).unwrap_or(usize::MAX);
        config.idempotent = k.idempotent;
        if self.exactly_once() {
            config.transactional_id = Some(self.transactional_id());
        }
        config.tls = self.kafka_tls_settings();
        config.sasl = self.kafka_sasl_settings();
        config
    }

    /// True with `[kafka] delivery = "exactly_once"`.
    pub fn exactly_once(&self) -> bool {
        self.kafka.delivery == "exactly_once"
    }

    /// The transactional.id of exactly-once delivery: `edge-bridge.<node.id>`.
    pub fn transactional_id(&self) -> String {
        format!("edge-bridge.{}", self.node.id)
    }

    /// The forwarder settings of `[kafka]`.
    pub fn forward_config(&self) -> ForwardConfig {
        let k = &self.kafka;
        let mut config = ForwardConfig::new(&self.node.id);
        config.linger = k.linger.0;
        config.max_batch_bytes = usize::try_from(k.max_batch_bytes.bytes()).unwrap_or(usize::MAX);
        config.max_batch_records = k.max_batch_records;
        config.backoff_min = k.retry_backoff_min.0;
        config.backoff_max = k.retry_backoff_max.0;
        config.outage_log_interval = k.outage_log_interval.0;
        config.max_bytes_per_sec = k.max_bytes_per_sec.map(ByteSize::bytes);
        config.max_transaction_interval = k.max_transaction_interval.0;
        config.auto_create_partitions = k.auto_create_topics.then_some(k.auto_create_partitions);
        config.dead_letter = match k.dead_letter.as_deref() {
            None => DeadLetterSink::File(self.node.data_dir.join("dead-letter")),
            Some(dl) => match dl.strip_prefix("kafka:") {
                Some(topic) => DeadLetterSink::Topic(topic.to_owned()),
                None => DeadLetterSink::File(self.node.data_dir.join(dl)),
            },
        };
        config
    }

    /// The compiled `[[route]]` entries.
    pub fn compile_routes(&self) -> Result<Routes, ConfigError> {
        Routes::compile(&self.route_configs())
            .map_err(|error| ConfigError::Route { error, path: None })
    }

    /// The `[[route]]` entries as the route module takes them.
    fn route_configs(&self) -> Vec<RouteConfig> {
        self.routes
            .iter()
            .map(RouteSection::to_route_config)
            .collect()
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
        config.preallocate = self.log.preallocate;
        config.sector_writes = self.log.sector_writes;
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

/// The text of a config file.
fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
        path: path.to_owned(),
        error,
    })
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
    fn kafka_tls_settings_name_the_field() {
        let cases = [
            ("tls_ca = \"ca.pem\"", "kafka.tls"),
            ("tls = true\ntls_cert = \"c.pem\"", "kafka.tls_key"),
            (
                "tls = true\ntls_ca = \"/nonexistent/ca.pem\"",
                "kafka.tls_ca",
            ),
        ];
        for (body, field) in cases {
            let err = parse(&format!("[kafka]\n{body}\n")).unwrap_err();
            assert_eq!(err.field(), field, "{body}: {err}");
        }
        let off = parse("[kafka]\nenabled = false\ntls = true\ntls_ca = \"/nonexistent/ca.pem\"\n");
        assert!(off.is_ok(), "files are not loaded while forwarding is off");
    }

    #[test]
    fn websocket_listeners_name_their_fields() {
        let ok = parse("[mqtt]\nws_listen = \"127.0.0.1:8083\"\n").unwrap();
        assert_eq!(
            ok.mqtt.ws_listen,
            Some(SocketAddr::from(([127, 0, 0, 1], 8083)))
        );
        assert_eq!(ok.mqtt.ws_path, "/mqtt");
        let cases = [
            ("ws_tls_listen = \"127.0.0.1:8084\"", "mqtt.tls_cert"),
            ("ws_path = \"mqtt\"", "mqtt.ws_path"),
            ("ws_path = \"/mqtt?x=1\"", "mqtt.ws_path"),
            ("ws_tls_listen = \"127.0.0.1\"", "mqtt.ws_tls_listen"),
            ("sys_interval = \"100ms\"", "mqtt.sys_interval"),
            (
                "slow_subscriber_wait = \"11s\"",
                "mqtt.slow_subscriber_wait",
            ),
        ];
        for (body, field) in cases {
            let err = parse(&format!("[mqtt]\n{body}\n")).unwrap_err();
            assert_eq!(err.field(), field, "{body}: {err}");
        }
    }

    #[test]
    fn tls_settings_come_as_a_set_and_a_bad_file_is_named() {
        let cases = [
            ("tls_cert = \"c.pem\"", "mqtt.tls_listen"),
            ("tls_client_ca = \"ca.pem\"", "mqtt.tls_listen"),
            ("tls_listen = \"127.0.0.1:8883\"", "mqtt.tls_cert"),
            (
                "tls_listen = \"127.0.0.1:8883\"\ntls_cert = \"c.pem\"",
                "mqtt.tls_key",
            ),
            (
                "tls_listen = \"127.0.0.1:8883\"\ntls_cert = \"/nonexistent/c.pem\"\ntls_key = \"k.pem\"",
                "mqtt.tls_cert",
            ),
        ];
        for (body, field) in cases {
            let err = parse(&format!("[mqtt]\n{body}\n")).unwrap_err();
            assert_eq!(err.field(), field, "{body}: {err}");
        }
        let err = parse(
            "[mqtt]\ntls_listen = \"127.0.0.1:8883\"\ntls_cert = \"/nonexistent/c.pem\"\ntls_key = \"k.pem\"\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/c.pem"), "{err}");
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
    fn sector_writes_reach_the_log_and_are_off_by_default() {
        assert!(!parse("").unwrap().log_config().sector_writes);
        let config = parse("[log]\nsector_writes = true\n").unwrap();
        assert!(config.log_config().sector_writes);
        let err = parse("[log]\nsector_writes = 1\n").unwrap_err();
        assert_eq!(err.field(), "log.sector_writes");
    }

    #[test]
    fn preallocate_reaches_the_log_and_is_off_by_default() {
        assert!(!parse("").unwrap().log_config().preallocate);
        let config = parse("[log]\npreallocate = true\n").unwrap();
        assert!(config.log_config().preallocate);
        let err = parse("[log]\npreallocate = \"yes\"\n").unwrap_err();
        assert_eq!(err.field(), "log.preallocate");
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
        assert_eq!(err.field(), "route[1].mqtt");
        let err =
            parse("[[route]]\nmqtt = \"a\"\nkafka_topic = \"t\"\nkey = \"{nope}\"\n").unwrap_err();
        assert_eq!(err.field(), "route[1].key");
        let err = parse("[[route]]\nmqtt = \"a\"\nkafka = \"t\"\n").unwrap_err();
        assert!(err.to_string().contains("kafka"), "{err}");
    }

    #[test]
    fn kafka_section_parses_and_bad_values_name_the_field() {
        let config = parse(
            "[node]\nid = \"gw-01\"\ndata_dir = \"/d\"\n[kafka]\nbrokers = [\"k1:9092\", \"k2:9093\"]\n\
             compression = \"zstd\"\nlinger = \"20ms\"\nmax_batch_bytes = \"256KiB\"\n\
             max_bytes_per_sec = \"64KiB\"\ndead_letter = \"kafka:dlq\"\nauto_create_topics = true\n",
        )
        .unwrap();
        let p = config.kafka_producer_config();
        assert_eq!(p.brokers, vec!["k1:9092", "k2:9093"]);
        assert_eq!(p.client_id, "edge-broker-gw-01");
        assert_eq!(p.compression, Compression::Zstd);
        let f = config.forward_config();
        assert_eq!(f.linger, Duration::from_millis(20));
        assert_eq!(f.outage_log_interval, Duration::from_secs(60));
        assert_eq!(f.max_batch_bytes, 256 << 10);
        assert_eq!(f.max_bytes_per_sec, Some(64 << 10));
        assert_eq!(f.auto_create_partitions, Some(1));
        assert_eq!(f.dead_letter, DeadLetterSink::Topic("dlq".into()));
        let d = parse("[node]\ndata_dir = \"/d\"\n")
            .unwrap()
            .forward_config();
        assert_eq!(d.dead_letter, DeadLetterSink::File("/d/dead-letter".into()));
        for (text, field) in [
            ("brokers = []", "kafka.brokers"),
            ("brokers = [\"nohost\"]", "kafka.brokers"),
            ("compression = \"brotli\"", "kafka.compression"),
            ("max_batch_records = 0", "kafka.max_batch_records"),
            (
                "retry_backoff_min = \"1s\"\nretry_backoff_max = \"10ms\"",
                "kafka.retry_backoff_max",
            ),
            ("max_bytes_per_sec = 0", "kafka.max_bytes_per_sec"),
            (
                "outage_log_interval = \"10ms\"",
                "kafka.outage_log_interval",
            ),
            ("dead_letter = \"kafka:\"", "kafka.dead_letter"),
            ("lingerr = \"1ms\"", "kafka.lingerr"),
        ] {
            let err = parse(&format!("[kafka]\n{text}\n")).unwrap_err();
            assert_eq!(err.field(), field, "{text}: {err}");
        }
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
    fn every_problem_is_reported_in_file_order_with_its_line() {
        let text = "[log]\nfsync = \"sometimes\"\nsegment_bytes = \"64XB\"\n\
                    [mqtt]\nlisten = \"localhost\"\nmax_inflight = 0\n\
                    [[route]]\nnats = \"machines/+/status\"\nkafka_topic = \"m\"\nkey = \"{topic.2}\"\n\
                    [[route]]\nmqtt = \"a\"\nkafka_topic = \"bad topic\"\n";
        let err = parse(text).unwrap_err();
        let problems = err.problems();
        let found: Vec<(&str, Option<usize>)> = problems
            .iter()
            .map(|p| {
                let line = match p.at {
                    Some(Location::Line { line, .. }) => Some(line),
                    _ => None,
                };
                (p.field.as_str(), line)
            })
            .collect();
        assert_eq!(
            found,
            [
                ("log.fsync", Some(2)),
                ("log.segment_bytes", Some(3)),
                ("mqtt.listen", Some(5)),
                ("mqtt.max_inflight", Some(6)),
                ("route[1].nats", Some(8)),
                ("route[2].kafka_topic", Some(13)),
            ],
            "{err}"
        );
        let text = err.to_string();
        assert!(
            text.starts_with("test.toml: 6 problems:\n  log.fsync: "),
            "{text}"
        );
        assert!(
            text.contains("write nats = \"machines.*.status\""),
            "{text}"
        );
        assert!(
            !text.contains("route[1].key"),
            "the key is not blamed for the filter's mistake: {text}"
        );
    }

    #[test]
    fn a_route_table_with_single_brackets_says_to_write_double_ones() {
        let err = parse("[route]\nmqtt = \"a\"\nkafka_topic = \"t\"\n").unwrap_err();
        assert_eq!(err.field(), "route");
        assert!(err.to_string().contains("write [[route]]"), "{err}");
        let err = parse(
            "[route]\nmqtt = \"a\"\nkafka_topic = \"t\"\n[route]\nmqtt = \"b\"\nkafka_topic = \"u\"\n",
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("write [[route]]"), "{text}");
        assert!(text.contains("line 4"), "{text}");
        assert_eq!(
            err.problems().len(),
            1,
            "reported once, not for each key: {text}"
        );
    }

    #[test]
    fn listen_addresses_say_what_is_expected() {
        for (value, want) in [
            ("localhost:1883", None),
            ("127.0.0.1", Some("write \"127.0.0.1:1883\"")),
            ("gw.local:1883", Some("e.g. \"0.0.0.0:1883\"")),
        ] {
            let result = parse(&format!("[mqtt]\nlisten = \"{value}\"\n"));
            match want {
                None => assert_eq!(
                    result.unwrap().mqtt.listen,
                    "127.0.0.1:1883".parse().unwrap()
                ),
                Some(want) => {
                    let err = result.unwrap_err();
                    assert_eq!(err.field(), "mqtt.listen");
                    assert!(err.to_string().contains(want), "{value}: {err}");
                }
            }
        }
        let err = parse("[nats]\nlisten = \"0.0.0.0\"\n").unwrap_err();
        assert!(err.to_string().contains("\"0.0.0.0:4222\""), "{err}");
    }

    #[test]
    fn a_bad_override_names_its_variable_and_a_good_one_applies() {
        let overrides = env::scan(
            [
                ("EDGE_BROKER_LOG_FSYNC".to_owned(), "sometimes".to_owned()),
                ("EDGE_BROKER_MQTT_MAX_INFLIGHT".to_owned(), "7".to_owned()),
            ],
            &env::section_names(),
        )
        .unwrap()
        .overrides;
        let err = Config::parse_with(
            "[log]\nfsync = \"always\"\n",
            Path::new("t.toml"),
            &overrides,
        )
        .unwrap_err();
        assert_eq!(err.field(), "log.fsync");
        assert!(
            err.to_string().contains("(from EDGE_BROKER_LOG_FSYNC)"),
            "{err}"
        );
        let config = Config::parse_with("", Path::new("t.toml"), &overrides[1..]).unwrap();
        assert_eq!(config.mqtt.max_inflight, 7);
    }

    #[test]
    fn a_missing_file_is_described_once() {
        let err = Config::load(Path::new("/nonexistent/edge.toml")).unwrap_err();
        let text = format!("{:#}", anyhow::Error::from(err));
        assert_eq!(
            text.matches("No such file").count(),
            1,
            "the reason appears once: {text}"
        );
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
